/*
 * mcp-gw — the tools and data plane: an MCP gateway that brokers clients' access to MCP servers.
 * The MCP endpoint arrives with the mcp-gw issue; this file wires the daemon's life.
 */
#include "daemon.h"
#include "snapshot.h"

static const tp_daemon_spec_t mcp_gw = {
    .name = "mcp-gw",
    .summary = "Triplane MCP gateway: per-identity policy in front of every MCP server.",
    .state_ops = &pol_snapshot_state_ops,
};

int
main(int argc, char **argv)
{
    return tp_daemon_main(&mcp_gw, argc, argv);
}
