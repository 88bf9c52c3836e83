/* pattern.c — see pattern.h. */
#include "pattern.h"

#include <ctype.h>

bool
tp_pattern_match(const char *p, const char *s, size_t len)
{
    const char *end = s + len, *star = NULL, *resume = NULL;
    while (s < end) {
        if (*p == '*') {
            star = p++;
            resume = s;
        } else if (*p != '\0' && tolower((unsigned char)*p) == tolower((unsigned char)*s)) {
            p++, s++;
        } else if (star != NULL) {
            p = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}
