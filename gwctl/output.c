#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gwctl.h"
#include "mem.h"

tp_store_t *
gwctl_open_store(gwctl_t *g, bool create)
{
    tp_store_options_t so = { .busy_timeout_ms = g->busy_timeout_ms, .create = create };
    tp_store_t *store = NULL;
    char *err = NULL;
    if (tp_store_open(g->store_path, &so, &store, &err) != 0) {
        fprintf(stderr, "gwctl: %s\n", err != NULL ? err : "cannot open the store");
        free(err);
        return NULL;
    }
    return store;
}

void
gwctl_print_json(json_t *value)
{
    char *text = json_dumps(value, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (text != NULL)
        printf("%s\n", text);
    free(text);
    json_decref(value);
}

void
gwctl_print_table(const char *const *cells, size_t rows, size_t cols)
{
    size_t *width = tp_calloc(cols, sizeof(*width));
    for (size_t r = 0; r < rows; r++) {
        for (size_t c = 0; c < cols; c++) {
            size_t n = strlen(cells[r * cols + c]);
            if (n > width[c])
                width[c] = n;
        }
    }
    for (size_t r = 0; r < rows; r++) {
        for (size_t c = 0; c < cols; c++) {
            const char *cell = cells[r * cols + c];
            if (c + 1 == cols)
                printf("%s\n", cell);
            else
                printf("%-*s  ", (int)width[c], cell);
        }
    }
    free(width);
}

bool
gwctl_wants_help(const gwctl_command_t *cmd, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: gwctl %s%s\n%s\n", cmd->name, cmd->usage, cmd->summary);
            return true;
        }
    }
    return false;
}
