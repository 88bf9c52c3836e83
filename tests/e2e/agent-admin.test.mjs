// agent-gw from the operator's side, at the gwctl level: the agent registry (configured agents
// and those added with gwctl agent add|rm|list), the peer graph the policy allows (gwctl agent
// graph), and the task ledger (gwctl tasks list|show) over rows seeded as agent-gw records them.
// No daemon runs: the configuration and the store are what these commands read.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Stack } from './lib/stack.mjs';

// Two configured agents, under agent_gw in the stack's configuration file.
const AGENTS = [
  'agents:',
  '  - name: planner',
  '    url: http://127.0.0.1:9001/a2a/v1',
  '    labels: [team=ml]',
  '  - name: coder',
  '    url: https://coder.example:8443/rpc',
  '    card_url: https://cards.example/coder.json',
  '    version: "1.0"',
];

// The rows of a gwctl table, as arrays of cells (columns are separated by two spaces or more).
function table(stdout) {
  return stdout.trimEnd().split('\n').map((l) => l.trim().split(/ {2,}/));
}

function ok(r) {
  assert.equal(r.status, 0, `gwctl failed: ${r.stderr}`);
  return r;
}

describe('gwctl agent and gwctl tasks', () => {
  let stack;
  // gwctl with the stack's configuration, where the configured agents are.
  const gw = (...args) => stack.gwctl('--config', stack.configPath, ...args);
  const auditCount = (action) => Number(stack.sql(`SELECT count(*) FROM audit_log WHERE action = '${action}'`));

  before(async () => {
    stack = await Stack.start({ daemons: [], extra: { agent_gw: AGENTS } });
    ok(stack.gwctl('init'));
  });
  after(async () => {
    await stack?.close();
  });

  test('list shows the configured agents, their versions and default card URLs', () => {
    const rows = table(ok(gw('agent', 'list')).stdout);
    assert.deepEqual(rows, [
      ['NAME', 'SOURCE', 'VERSION', 'URL', 'LABELS'],
      ['coder', 'config', '1.0', 'https://coder.example:8443/rpc', '-'],
      ['planner', 'config', '0.3', 'http://127.0.0.1:9001/a2a/v1', 'team=ml'],
    ]);
    const listed = JSON.parse(ok(gw('--json', 'agent', 'list')).stdout);
    assert.equal(listed.find((a) => a.name === 'planner').card_url, 'http://127.0.0.1:9001/.well-known/agent-card.json');
    assert.equal(listed.find((a) => a.name === 'coder').card_url, 'https://cards.example/coder.json');
  });

  test('add stores an agent, audited, and list shows it from the store', () => {
    const r = ok(gw('agent', 'add', 'writer', '--url', 'http://127.0.0.1:9003/', '--version', '1.0', '--label', 'env=dev', '--label', 'tier=2'));
    assert.match(r.stdout, /agent writer added; agent-gw serves it at \/agents\/writer/);
    const rows = table(ok(gw('agent', 'list')).stdout);
    assert.deepEqual(rows[3], ['writer', 'store', '1.0', 'http://127.0.0.1:9003/', 'env=dev,tier=2']);

    const added = JSON.parse(ok(gw('--json', 'agent', 'add', 'archivist', '--url', 'https://arch.example/rpc', '--card-url', 'https://arch.example/card')).stdout);
    assert.equal(added.source, 'store');
    assert.equal(added.version, '0.3');
    assert.equal(added.card_url, 'https://arch.example/card');
    assert.match(added.created_by, /^os:/);

    const audit = JSON.parse(ok(gw('--json', 'audit', 'query', '--action', 'agent.add')).stdout);
    assert.deepEqual(audit.map((a) => a.target).sort(), ['archivist', 'writer']);
    const writer = audit.find((a) => a.target === 'writer');
    assert.equal(writer.detail.before, null);
    assert.deepEqual(writer.detail.after.labels, { env: 'dev', tier: '2' });
    assert.equal(writer.detail.after.url, 'http://127.0.0.1:9003/');
  });

  test('add refuses a configured name, a second add and bad input, changing nothing', () => {
    const agents = stack.sql('SELECT count(*) FROM agents');
    const audits = auditCount('agent.add');
    let r = gw('agent', 'add', 'planner', '--url', 'http://elsewhere/');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /agent planner is configured in .*triplane\.yaml; change it there/);
    r = gw('agent', 'add', 'writer', '--url', 'http://127.0.0.1:9004/');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /agent writer is already in the store/);
    r = gw('agent', 'add', 'bad', '--url', 'file:///etc/passwd');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /must be an http:\/\/ or https:\/\/ URL with a host/);
    r = gw('agent', 'add', 'a.b', '--url', 'http://x/');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /agent name 'a\.b' must be/);
    r = gw('agent', 'add', 'v', '--url', 'http://x/', '--version', '2');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--version is 0\.3 or 1\.0/);
    r = gw('agent', 'add', 'v', '--url', 'http://x/', '--label', 'novalue');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /KEY=VALUE/);
    r = gw('agent', 'add', 'v');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--url is required/);
    assert.equal(stack.sql('SELECT count(*) FROM agents'), agents);
    assert.equal(auditCount('agent.add'), audits);
  });

  test('a stored agent named like a configured one is listed as ignored: the configuration wins', () => {
    stack.sql(`INSERT INTO agents (name, url, created_at_ms, created_by) VALUES ('coder', 'http://evil.example/', 1, 'sql')`);
    const rows = table(ok(gw('agent', 'list')).stdout);
    assert.deepEqual(
      rows.filter((r) => r[0] === 'coder').map((r) => r.slice(0, 2)),
      [
        ['coder', 'config'],
        ['coder', 'store (ignored: configured)'],
      ],
    );
    // rm takes the stored row away and says the configured agent stays.
    const r = ok(gw('agent', 'rm', 'coder'));
    assert.match(r.stdout, /agent coder removed from the store \(the configured agent of that name stays\)/);
    assert.equal(stack.sql(`SELECT count(*) FROM agents WHERE name = 'coder'`), '0');
  });

  test('rm removes a stored agent, audited; a configured or unknown one is refused', () => {
    const r = ok(gw('agent', 'rm', 'archivist'));
    assert.match(r.stdout, /agent archivist removed from the store/);
    assert.equal(stack.sql(`SELECT count(*) FROM agents WHERE name = 'archivist'`), '0');
    const [audit] = JSON.parse(ok(gw('--json', 'audit', 'query', '--action', 'agent.remove', '--target', 'archivist')).stdout);
    assert.equal(audit.detail.before.url, 'https://arch.example/rpc');
    assert.equal(audit.detail.after, null);

    let bad = gw('agent', 'rm', 'planner');
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /agent planner is configured in .*, not added with gwctl; remove it from the configuration/);
    bad = gw('agent', 'rm', 'nobody');
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /no agent nobody in the store/);
    assert.deepEqual(
      table(ok(gw('agent', 'list')).stdout)
        .slice(1)
        .map((r) => r[0]),
      ['coder', 'planner', 'writer'],
    );
  });

  test('graph prints the edges the policy allows, from every kind of principal', () => {
    const file = path.join(stack.dir, 'peers.yaml');
    writeFileSync(
      file,
      `principals:
  - { id: alice, kind: user }
  - { id: ci, kind: service }
  - { id: svc-off, kind: service, enabled: false }
  - { id: planner, kind: agent }
rules:
  - id: users-to-planner
    effect: allow
    subjects: { kinds: [user] }
    plane: agent
    resources: [planner]
    actions: [message, tasks]
  - id: ci-to-coder
    effect: allow
    subjects: { principals: [ci, svc-off] }
    plane: agent
    resources: [coder]
    actions: [message]
  - id: planner-delegates
    effect: allow
    subjects: { kinds: [agent] }
    plane: agent
    resources: ["*"]
    actions: ["*"]
  - id: no-self-calls
    effect: deny
    subjects: { principals: [planner] }
    plane: agent
    resources: [planner]
    actions: ["*"]
  - id: model-only
    effect: allow
    subjects: { principals: [alice] }
    plane: model
    resources: ["*"]
    actions: ["*"]
`,
    );
    ok(gw('apply', '-f', file));
    const lines = ok(gw('agent', 'graph')).stdout.trimEnd().split('\n');
    assert.deepEqual(lines, [
      'alice -> planner (rule users-to-planner)',
      'ci -> coder (rule ci-to-coder)',
      'planner -> coder (rule planner-delegates)',
      'planner -> writer (rule planner-delegates)',
    ]);
    const edges = JSON.parse(ok(gw('--json', 'agent', 'graph')).stdout);
    assert.deepEqual(edges.find((e) => e.caller === 'planner' && e.agent === 'writer'), {
      caller: 'planner',
      kind: 'agent',
      agent: 'writer',
      rule: 'planner-delegates',
      reason: 'allowed by rule',
    });
    // Another method family: only the rules that name it.
    assert.deepEqual(ok(gw('agent', 'graph', '--action', 'push')).stdout.trimEnd().split('\n'), [
      'planner -> coder (rule planner-delegates)',
      'planner -> writer (rule planner-delegates)',
    ]);
    // An agent removed from the registry leaves the graph.
    ok(gw('agent', 'rm', 'writer'));
    assert.ok(!ok(gw('agent', 'graph')).stdout.includes('writer'));
    // The default effect draws every edge no rule decides, and says so.
    ok(gw('policy', 'default', 'allow'));
    const open = ok(gw('agent', 'graph')).stdout;
    assert.match(open, /^alice -> coder \(default allow\)$/m);
    assert.doesNotMatch(open, /planner -> planner/);
    assert.doesNotMatch(open, /svc-off/);
    ok(gw('policy', 'default', 'deny'));
  });

  describe('tasks', () => {
    before(() => {
      stack.sql(`
        INSERT INTO tasks (agent, id, context_id, caller, chain, state, created_ms, updated_ms, ended_ms) VALUES
          ('planner', 't1', 'c1', 'alice', '[]', 'completed', 1700000000000, 1700000000500, 1700000000500),
          ('coder', 't2', 'c1', 'planner', '["alice","planner"]', 'working', 1700000001000, 1700000001200, NULL),
          ('writer', 't2', NULL, 'planner', '[]', 'canceled', 1700000002000, 1700000003000, 1700000003000),
          ('planner', 't3', 'c3', 'bob', '[]', 'input-required', ${Date.now() - 60000}, ${Date.now() - 60000}, NULL);
        INSERT INTO task_transitions (agent, task_id, state, reason, at_ms) VALUES
          ('planner', 't1', 'submitted', NULL, 1700000000000),
          ('planner', 't1', 'working', NULL, 1700000000100),
          ('planner', 't1', 'completed', NULL, 1700000000500),
          ('writer', 't2', 'working', NULL, 1700000002000),
          ('writer', 't2', 'canceled', 'killed: agent writer (incident 42)', 1700000003000);`);
    });

    test('list shows tasks newest first, with every filter', () => {
      const rows = table(ok(gw('tasks', 'list')).stdout);
      assert.deepEqual(rows[0], ['CREATED', 'AGENT', 'TASK', 'STATE', 'CALLER', 'CONTEXT', 'ENDED']);
      assert.deepEqual(
        rows.slice(1).map((r) => `${r[1]}/${r[2]} ${r[3]}`),
        ['planner/t3 input-required', 'writer/t2 canceled', 'coder/t2 working', 'planner/t1 completed'],
      );
      assert.deepEqual(rows[4], ['2023-11-14T22:13:20Z', 'planner', 't1', 'completed', 'alice', 'c1', '2023-11-14T22:13:20Z']);
      const ids = (...args) =>
        table(ok(gw('tasks', 'list', ...args)).stdout)
          .slice(1)
          .map((r) => `${r[1]}/${r[2]}`);
      assert.deepEqual(ids('--agent', 'planner'), ['planner/t3', 'planner/t1']);
      assert.deepEqual(ids('--caller', 'planner'), ['writer/t2', 'coder/t2']);
      assert.deepEqual(ids('--state', 'canceled'), ['writer/t2']);
      assert.deepEqual(ids('--state', 'TASK_STATE_INPUT_REQUIRED'), ['planner/t3']);
      assert.deepEqual(ids('--since', '1h'), ['planner/t3']);
      assert.deepEqual(ids('--since', '2023-11-14T22:13:21Z'), ['planner/t3', 'writer/t2', 'coder/t2']);
      assert.deepEqual(ids('--limit', '1'), ['planner/t3']);
      assert.deepEqual(ids('--agent', 'coder', '--state', 'completed'), []);
      const json = JSON.parse(ok(gw('--json', 'tasks', 'list', '--agent', 'coder')).stdout);
      assert.deepEqual(json[0].chain, ['alice', 'planner']);
      assert.equal(json[0].ended_ms, null);
    });

    test('list refuses what it cannot filter by', () => {
      let r = gw('tasks', 'list', '--state', 'done');
      assert.equal(r.status, 2);
      assert.match(r.stderr, /unknown state 'done'/);
      r = gw('tasks', 'list', '--since', 'yesterday');
      assert.equal(r.status, 2);
      r = gw('tasks', 'list', '--limit', '0');
      assert.equal(r.status, 2);
    });

    test('show prints a task with its transitions, times and reasons', () => {
      const out = ok(gw('tasks', 'show', 't2', '--agent', 'writer')).stdout;
      assert.match(out, /^state: +canceled$/m);
      assert.match(out, /^ended: +2023-11-14T22:13:23\.000Z$/m);
      assert.match(out, /^transitions \(2\):$/m);
      assert.match(out, /2023-11-14T22:13:23\.000Z +canceled +killed: agent writer \(incident 42\)$/m);
      const t1 = JSON.parse(ok(gw('--json', 'tasks', 'show', 't1')).stdout);
      assert.equal(t1.agent, 'planner');
      assert.deepEqual(
        t1.transitions.map((t) => [t.state, t.at_ms]),
        [
          ['submitted', 1700000000000],
          ['working', 1700000000100],
          ['completed', 1700000000500],
        ],
      );
    });

    test('show asks for --agent when the id is ambiguous, and names a missing task', () => {
      let r = gw('tasks', 'show', 't2');
      assert.equal(r.status, 1);
      assert.match(r.stderr, /task t2 exists for several agents \(coder, writer\); use --agent/);
      r = gw('tasks', 'show', 'nope');
      assert.equal(r.status, 1);
      assert.match(r.stderr, /no task nope/);
      r = gw('tasks', 'show');
      assert.equal(r.status, 2);
    });
  });

  test('help explains both commands', () => {
    for (const cmd of ['agent', 'tasks']) {
      const r = ok(stack.gwctl(cmd, '--help'));
      assert.match(r.stdout, new RegExp(`^usage: gwctl ${cmd} `));
    }
    assert.match(ok(stack.gwctl('--help')).stdout, /^ {2}agent +/m);
  });
});
