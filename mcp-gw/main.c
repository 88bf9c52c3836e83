/*
 * mcp-gw — the tools and data plane: an MCP gateway that brokers clients' access to MCP servers.
 * The MCP endpoint arrives with the mcp-gw issue; this file wires the daemon's life.
 */
#include "daemon.h"
#include "gate.h"
#include "snapshot.h"

/* Authentication, kill switches, rules and quotas for this plane; lives as long as the daemon. */
static pol_gate_t *gate;

static int
setup(tp_daemon_t *d, char **err)
{
    gate = pol_gate_new(d, "mcp", err);
    return gate != NULL ? 0 : -1;
}

static const tp_daemon_spec_t mcp_gw = {
    .name = "mcp-gw",
    .summary = "Triplane MCP gateway: per-identity policy in front of every MCP server.",
    .state_ops = &pol_snapshot_state_ops,
    .setup = setup,
};

int
main(int argc, char **argv)
{
    return tp_daemon_main(&mcp_gw, argc, argv);
}
