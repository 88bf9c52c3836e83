/* gwctl init: create the store, or migrate it to this build's schema. */
#include <stdio.h>

#include "gwctl.h"

static int
run_init(gwctl_t *g, int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "gwctl init: unexpected argument '%s'\n", argv[1]);
        return 2;
    }
    tp_store_t *store = gwctl_open_store(g, true);
    if (store == NULL)
        return 1;
    int version = tp_store_schema_version(store);
    if (g->json)
        gwctl_print_json(json_pack("{s:s, s:i}", "store", g->store_path, "schema_version", version));
    else
        printf("store %s is ready at schema version %d\n", g->store_path, version);
    tp_store_close(store);
    return 0;
}

const gwctl_command_t gwctl_cmd_init = {
    .name = "init",
    .summary = "Create the store, or migrate it to this version's schema (safe to run again).",
    .usage = "",
    .run = run_init,
};
