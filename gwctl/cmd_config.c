/* gwctl config: the configuration reference, and a check of the configuration file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "gwctl.h"

static int
run_config(gwctl_t *g, int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "reference") == 0) {
        char *doc = tp_config_reference();
        fputs(doc, stdout);
        free(doc);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "check") == 0) {
        if (g->config_path == NULL) {
            fprintf(stderr, "gwctl config check: no configuration file (use --config or TRIPLANE_CONFIG)\n");
            return 2;
        }
        /* The file was already loaded and validated to find the store and control dir. */
        printf("%s: ok\n", g->config_path);
        return 0;
    }
    fprintf(stderr, "usage: gwctl config reference|check\n");
    return 2;
}

const gwctl_command_t gwctl_cmd_config = {
    .name = "config",
    .summary = "Print the configuration reference, or check the configuration file.",
    .usage = " reference|check\n  reference  print every configuration key as Markdown (docs/configuration.md)\n"
             "  check      validate the configuration file; errors name file:line:key",
    .run = run_config,
};
