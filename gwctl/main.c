/*
 * gwctl — the Triplane admin command line: global options, then a subcommand.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "gwctl.h"
#include "mem.h"

#define DEFAULT_CONFIG_PATH "/etc/triplane/triplane.yaml"
#define DEFAULT_TIMEOUT_MS  2000 /* a daemon that has not answered by then is reported as such */

static const gwctl_command_t *const commands[] = {
    /* the store and the daemons */
    &gwctl_cmd_init,
    &gwctl_cmd_status,
    &gwctl_cmd_config,
    &gwctl_cmd_reload,
    /* identity, policy and quotas */
    &gwctl_cmd_principal,
    &gwctl_cmd_team,
    &gwctl_cmd_key,
    &gwctl_cmd_policy,
    &gwctl_cmd_limit,
    &gwctl_cmd_budget,
    &gwctl_cmd_apply,
    /* the kill switch */
    &gwctl_cmd_kill,
    &gwctl_cmd_release,
    &gwctl_cmd_kills,
    /* the planes' own state */
    &gwctl_cmd_mcp,
    &gwctl_cmd_agent,
    &gwctl_cmd_tasks,
    &gwctl_cmd_model,
    &gwctl_cmd_responses,
    /* what happened */
    &gwctl_cmd_usage,
    &gwctl_cmd_audit,
};
#define NUM_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void
usage(FILE *out)
{
    fprintf(out, "usage: gwctl [--config PATH] [--store PATH] [--control-dir DIR] [--json] [--timeout MS] COMMAND "
                 "[ARGS]\n\nCommands:\n");
    for (size_t i = 0; i < NUM_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(out, "\nEach location comes from its flag, else its environment variable (TRIPLANE_CONFIG, "
                 "TRIPLANE_STORE,\nTRIPLANE_CONTROL_DIR), else the configuration file, else the default.\n"
                 "Run 'gwctl COMMAND --help' for a command's options.\n");
}

static const char *
env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : fallback;
}

/* Fills the store path and control dir from flags, environment, configuration and defaults. */
static int
resolve_locations(gwctl_t *g, const char *store_flag, const char *dir_flag, bool config_given)
{
    tp_config_t cfg = { 0 };
    struct stat st;
    bool use_config = config_given || stat(g->config_path, &st) == 0;
    if (use_config) {
        char *errors = NULL;
        if (tp_config_load(g->config_path, &cfg, &errors) != 0) {
            fprintf(stderr, "gwctl: %s", errors != NULL ? errors : "configuration invalid\n");
            free(errors);
            return -1;
        }
    } else {
        g->config_path = NULL;
        char *errors = NULL;
        tp_config_load_string("(defaults)", "", &cfg, &errors);
        free(errors);
    }
    g->store_path = tp_strdup(store_flag != NULL ? store_flag : env_or("TRIPLANE_STORE", cfg.store.path));
    g->control_dir = tp_strdup(dir_flag != NULL ? dir_flag : env_or("TRIPLANE_CONTROL_DIR", cfg.control.dir));
    g->busy_timeout_ms = cfg.store.busy_timeout_ms;
    tp_config_free(&cfg);
    return 0;
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },      { "store", required_argument, NULL, 's' },
        { "control-dir", required_argument, NULL, 'd' }, { "json", no_argument, NULL, 'j' },
        { "timeout", required_argument, NULL, 't' },     { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },           { NULL, 0, NULL, 0 },
    };
    gwctl_t g = { .timeout_ms = DEFAULT_TIMEOUT_MS };
    const char *store_flag = NULL, *dir_flag = NULL, *config_flag = NULL;
    int c;
    /* "+": stop at the first non-option, which is the command; its options are its own. */
    while ((c = getopt_long(argc, argv, "+c:s:d:jt:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_flag = optarg;
            break;
        case 's':
            store_flag = optarg;
            break;
        case 'd':
            dir_flag = optarg;
            break;
        case 'j':
            g.json = true;
            break;
        case 't':
            g.timeout_ms = atoi(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("gwctl %s\n", TP_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    if (g.timeout_ms <= 0) {
        fprintf(stderr, "gwctl: --timeout must be a positive number of milliseconds\n");
        return 2;
    }
    const char *name = argv[optind];
    const gwctl_command_t *cmd = NULL;
    for (size_t i = 0; i < NUM_COMMANDS; i++) {
        if (strcmp(commands[i]->name, name) == 0)
            cmd = commands[i];
    }
    if (cmd == NULL) {
        fprintf(stderr, "gwctl: unknown command '%s'\n\n", name);
        usage(stderr);
        return 2;
    }
    int cargc = argc - optind;
    char **cargv = argv + optind;
    if (gwctl_wants_help(cmd, cargc, cargv))
        return 0;
    const char *env_config = getenv("TRIPLANE_CONFIG");
    bool config_given = config_flag != NULL || (env_config != NULL && env_config[0] != '\0');
    g.config_path = config_flag != NULL ? config_flag : env_or("TRIPLANE_CONFIG", DEFAULT_CONFIG_PATH);
    if (resolve_locations(&g, store_flag, dir_flag, config_given) != 0)
        return 2;
    optind = 1; /* commands parse their own options with getopt */
    int rv = cmd->run(&g, cargc, cargv);
    free(g.store_path);
    free(g.control_dir);
    return rv;
}
