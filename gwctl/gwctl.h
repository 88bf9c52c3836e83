/*
 * gwctl.h — what every gwctl command shares: the resolved global options and small output helpers.
 *
 * Where things are comes from, in order: the command-line flag, the environment variable,
 * the configuration file, the built-in default.
 *   --config PATH       TRIPLANE_CONFIG       (default /etc/triplane/triplane.yaml, if it exists)
 *   --store PATH        TRIPLANE_STORE        (store.path in the configuration)
 *   --control-dir DIR   TRIPLANE_CONTROL_DIR  (control.dir in the configuration)
 *   --json              print JSON instead of tables
 */
#ifndef GWCTL_H
#define GWCTL_H

#include <stdbool.h>

#include <jansson.h>

#include "store.h"

typedef struct gwctl {
    const char *config_path; /* NULL when no configuration file is used */
    char *store_path;
    char *control_dir;
    int busy_timeout_ms;
    bool json;
    int timeout_ms; /* control-socket deadline */
} gwctl_t;

typedef struct gwctl_command {
    const char *name;
    const char *summary;
    const char *usage; /* printed by `gwctl NAME --help` after "usage: gwctl NAME" */
    /* Runs the command with its own arguments (argv[0] is the command name). Returns the exit
     * status: 0 success, 1 failure, 2 usage error. */
    int (*run)(gwctl_t *g, int argc, char **argv);
} gwctl_command_t;

/* Opens the store (creating and migrating it when `create`); prints the error and returns NULL
 * on failure. */
tp_store_t *gwctl_open_store(gwctl_t *g, bool create);

/* Asks every running daemon to rebuild its state snapshot from the store now (control command
 * `refresh`, answered once every worker uses it). Quiet when no daemon runs; warns on stderr,
 * naming it, when a daemon does not confirm (it still converges at its next watch tick). */
void gwctl_notify_daemons(gwctl_t *g);

/* Prints a JSON value to stdout (indented) and releases it. */
void gwctl_print_json(json_t *value);

/* Prints rows as an aligned table: `cells` is rows × cols strings, row 0 is the header. */
void gwctl_print_table(const char *const *cells, size_t rows, size_t cols);

/* True when argv holds -h or --help; prints the command's usage to stdout then. */
bool gwctl_wants_help(const gwctl_command_t *cmd, int argc, char **argv);

extern const gwctl_command_t gwctl_cmd_config;
extern const gwctl_command_t gwctl_cmd_init;
extern const gwctl_command_t gwctl_cmd_status;
extern const gwctl_command_t gwctl_cmd_reload;
extern const gwctl_command_t gwctl_cmd_principal;
extern const gwctl_command_t gwctl_cmd_team;
extern const gwctl_command_t gwctl_cmd_key;
extern const gwctl_command_t gwctl_cmd_policy;
extern const gwctl_command_t gwctl_cmd_limit;
extern const gwctl_command_t gwctl_cmd_budget;
extern const gwctl_command_t gwctl_cmd_usage;
extern const gwctl_command_t gwctl_cmd_audit;
extern const gwctl_command_t gwctl_cmd_apply;
extern const gwctl_command_t gwctl_cmd_mcp;
extern const gwctl_command_t gwctl_cmd_agent;
extern const gwctl_command_t gwctl_cmd_tasks;
extern const gwctl_command_t gwctl_cmd_model;
extern const gwctl_command_t gwctl_cmd_responses;
extern const gwctl_command_t gwctl_cmd_kill;
extern const gwctl_command_t gwctl_cmd_release;
extern const gwctl_command_t gwctl_cmd_kills;

#endif
