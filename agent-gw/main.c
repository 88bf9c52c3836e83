/*
 * agent-gw — the agent plane: an A2A gateway that mediates agent-to-agent messages.
 * The A2A routes arrive with the agent-gw issue; this file wires the daemon's life.
 */
#include "daemon.h"
#include "snapshot.h"

static const tp_daemon_spec_t agent_gw = {
    .name = "agent-gw",
    .summary = "Triplane A2A gateway: a governed peer graph between agents, with a kill switch.",
    .state_ops = &pol_snapshot_state_ops,
};

int
main(int argc, char **argv)
{
    return tp_daemon_main(&agent_gw, argc, argv);
}
