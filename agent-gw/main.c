/*
 * agent-gw — the agent plane: an A2A gateway that mediates agent-to-agent messages.
 * The A2A routes arrive with the agent-gw issue; this file wires the daemon's life.
 */
#include "daemon.h"
#include "gate.h"
#include "snapshot.h"

/* Authentication, kill switches, rules and quotas for this plane; lives as long as the daemon. */
static pol_gate_t *gate;

static int
setup(tp_daemon_t *d, char **err)
{
    gate = pol_gate_new(d, "agent", err);
    return gate != NULL ? 0 : -1;
}

static const tp_daemon_spec_t agent_gw = {
    .name = "agent-gw",
    .summary = "Triplane A2A gateway: a governed peer graph between agents, with a kill switch.",
    .state_ops = &pol_snapshot_state_ops,
    .setup = setup,
};

int
main(int argc, char **argv)
{
    return tp_daemon_main(&agent_gw, argc, argv);
}
