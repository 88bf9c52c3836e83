// agent-gw end to end, for both A2A versions: the official @a2a-js/sdk clients (0.3.x and 1.x)
// talk only to the gateway, which fronts SDK-built agents (tests/fixtures/a2a-agents.mjs):
// cards, send, stream, get, cancel, input-required, a delegation through the gateway, and the
// governance around them (a forbidden edge, loops, depth, a forged chain, an SSRF push URL, a
// kill during a stream and its release), with the task ledger and the audit checked in the store.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { SDKS, a2aClient, collect, sendText, startA2AAgents, streamText, taskParams, view } from './lib/a2a.mjs';
import { Stack, eventually } from './lib/stack.mjs';

// The JSON-RPC code of an error either SDK threw.
function codeOf(e) {
  if (typeof e.envelopeCode === 'number') return e.envelopeCode;
  const inner = e.errorResponse?.error?.code;
  if (typeof inner === 'number') return inner;
  const m = /Code: (-?\d+)/.exec(String(e.message)) ?? /JSON-RPC error (-?\d+)/.exec(String(e.message));
  return m ? Number(m[1]) : e.code;
}

function messageOf(e) {
  return String(e.errorResponse?.error?.message ?? e.message);
}

for (const sdk of SDKS) {
  describe(`agent-gw with A2A ${sdk === 'v03' ? '0.3' : '1.0'} agents`, () => {
    let stack, agents, gw, keys;
    const client = (name, who = 'alice', headers = {}) => a2aClient(sdk, `${gw}/agents/${name}/`, { headers: { Authorization: `Bearer ${keys[who]}`, ...headers } });

    before(async () => {
      stack = await Stack.start({ daemons: ['agent-gw'], extra: { agent_gw: ['max_depth: 3'] } });
      gw = stack.url('agent-gw');
      const file = path.join(stack.dir, 'p.yaml');
      writeFileSync(file, [
        'principals:',
        '  - {id: alice, kind: user, team: ml}',
        '  - {id: mallory, kind: user, team: ops}',
        '  - {id: d1, kind: agent}',
        '  - {id: d2, kind: agent}',
        '  - {id: d3, kind: agent}',
        'rules:',
        '  - {id: ml-all, effect: allow, subjects: {teams: [ml]}, plane: agent, resources: ["*"], actions: ["*"]}',
        '  - {id: ops-echo, effect: allow, subjects: {teams: [ops]}, plane: agent, resources: [echo, d1], actions: ["*"]}',
        '  - {id: agents-all, effect: allow, subjects: {kinds: [agent]}, plane: agent, resources: ["*"], actions: ["*"]}',
        '',
      ].join('\n'));
      assert.equal(stack.gwctl('apply', '-f', file).status, 0);
      keys = {};
      for (const p of ['alice', 'mallory', 'd1', 'd2', 'd3']) keys[p] = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', p).stdout).key;
      agents = await startA2AAgents({
        sdk,
        agents: { echo: 'echo', slow: 'slow', asker: 'asker', d1: 'delegator', d2: 'delegator', d3: 'delegator' },
        gateway: gw,
        keys: { d1: keys.d1, d2: keys.d2, d3: keys.d3 },
      });
      for (const name of ['echo', 'slow', 'asker', 'd1', 'd2', 'd3']) {
        const r = stack.gwctl('agent', 'add', name, '--url', `${agents.url(name)}a2a/jsonrpc`, '--version', sdk === 'v03' ? '0.3' : '1.0');
        assert.equal(r.status, 0, r.stderr);
      }
      // The registry reaches the gateway within a watch interval.
      assert.ok(await eventually(async () => (await fetch(`${gw}/agents/echo/.well-known/agent-card.json`)).status === 200), 'echo registered');
    });
    after(async () => {
      await agents?.stop();
      const results = await stack?.close();
      assert.equal(results?.['agent-gw'].code, 0, stack?.daemons['agent-gw'].tail());
      assert.deepEqual(stack.daemons['agent-gw'].sanitizerReports(), []);
    });

    test('the card served by the gateway points every client at the gateway', async () => {
      const card = await (await fetch(`${gw}/agents/echo/.well-known/agent-card.json`)).json();
      const urls = sdk === 'v03' ? [card.url, ...(card.additionalInterfaces ?? []).map((i) => i.url)] : card.supportedInterfaces.map((i) => i.url);
      assert.ok(urls.length > 0);
      for (const u of urls) assert.equal(u, `${gw}/agents/echo`);
      const list = await (await fetch(`${gw}/agents`, { headers: { Authorization: `Bearer ${keys.mallory}` } })).json();
      assert.deepEqual(list.agents.map((a) => a.name).sort(), ['d1', 'echo']);
    });

    test('the extended card fetched through the gateway names the gateway too', async () => {
      const method = sdk === 'v03' ? 'agent/getAuthenticatedExtendedCard' : 'GetExtendedAgentCard';
      const res = await fetch(`${gw}/agents/echo`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${keys.alice}`, ...(sdk === 'v10' ? { 'a2a-version': '1.0' } : {}) },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params: {} }),
      });
      const body = await res.json();
      assert.ok(body.result, JSON.stringify(body));
      const urls = sdk === 'v03' ? [body.result.url] : body.result.supportedInterfaces.map((i) => i.url);
      for (const u of urls) assert.equal(u, `${gw}/agents/echo`);
    });

    test('send through the gateway; the agent never sees the caller\'s key', async () => {
      const c = await client('echo');
      const r = view(sdk, await sendText(c, sdk, 'hello gateway'));
      assert.equal(r.text, 'echo: hello gateway');
      const seen = await agents.lastHeaders('echo');
      assert.equal(seen.authorization, undefined, 'the caller credential is not forwarded');
      assert.ok(seen['x-triplane-chain'], 'the gateway sends a signed chain');
    });

    test('a stream relays every event, and the ledger records the task', async () => {
      const c = await client('slow');
      const events = await collect(sdk, streamText(c, sdk, 'chunks=4 delay_ms=20'));
      const arts = events.filter((e) => e.kind === 'artifact');
      assert.equal(arts.length, 4);
      const last = events[events.length - 1];
      assert.equal(last.state, 'completed');
      const taskId = last.taskId;
      const row = await eventually(() => {
        const out = stack.gwctl('--json', 'tasks', 'show', taskId, '--agent', 'slow');
        return out.status === 0 && JSON.parse(out.stdout).state === 'completed' ? JSON.parse(out.stdout) : null;
      });
      assert.ok(row, 'ledger row');
      assert.equal(row.caller, 'alice');
      const states = (row.transitions ?? []).map((t) => t.state);
      assert.ok(states.includes('completed'), JSON.stringify(row));
    });

    test('get and cancel reach the agent', async () => {
      const c = await client('slow');
      const it = streamText(c, sdk, 'chunks=100 delay_ms=50')[Symbol.asyncIterator]();
      const first = view(sdk, (await it.next()).value);
      const taskId = first.taskId;
      const got = view(sdk, await c.getTask(taskParams(sdk, taskId)));
      assert.equal(got.taskId, taskId);
      const canceled = view(sdk, await c.cancelTask(taskParams(sdk, taskId)));
      assert.equal(canceled.state, 'canceled');
      await it.return?.();
      const cancels = await agents.cancels('slow');
      assert.ok(cancels.some((x) => x.taskId === taskId));
    });

    test('input-required, then a follow-up in the same task', async () => {
      const c = await client('asker');
      const r = view(sdk, await sendText(c, sdk, 'hi'));
      assert.equal(r.state, 'input-required');
      const done = view(sdk, await sendText(c, sdk, 'Ada', { taskId: r.taskId, contextId: r.contextId }));
      assert.equal(done.state, 'completed');
    });

    test('a forbidden edge is refused', async () => {
      const c = await client('slow', 'mallory');
      await assert.rejects(sendText(c, sdk, 'x'), (e) => codeOf(e) === -32040);
    });

    test('an agent delegates through the gateway, carrying the chain', async () => {
      const c = await client('d1');
      const r = view(sdk, await sendText(c, sdk, 'to=echo ping'));
      assert.match(r.text, /echo answered: echo: ping/);
      const audit = await eventually(() => {
        const out = stack.sql("SELECT detail FROM audit_log WHERE actor = 'd1' AND target = 'echo'");
        return out.includes('"caller":"alice"') ? out : null;
      });
      assert.ok(audit, 'the audit shows the chain from alice through d1');
    });

    test('a delegation loop is refused', async () => {
      const c = await client('d1');
      const r = view(sdk, await sendText(c, sdk, 'to=d2,d1 ping'));
      assert.match(r.text, /d2 answered: \[failed\] delegator: call to d1 failed: JSON-RPC error -32041: delegation loop/);
    });

    test('a chain deeper than max_depth is refused', async () => {
      const c = await client('d1');
      const r = view(sdk, await sendText(c, sdk, 'to=d2,d3,echo ping'));
      assert.match(r.text, /(-32042|too deep)/);
    });

    test('a forged chain header is refused', async () => {
      const c = await client('echo', 'alice', { 'x-triplane-chain': 'c1.e30.AAAA' });
      await assert.rejects(sendText(c, sdk, 'x'), (e) => codeOf(e) === -32046);
    });

    test('a push-notification URL into internal networks is refused', async () => {
      const c = await client('echo');
      const configuration = sdk === 'v03'
        ? { pushNotificationConfig: { url: 'https://169.254.169.254/latest/meta-data' } }
        : { taskPushNotificationConfig: { url: 'https://169.254.169.254/latest/meta-data', taskId: '', id: '', token: '', tenant: '' } };
      const { userMessage } = await import('./lib/a2a.mjs');
      await assert.rejects(c.sendMessage({ message: userMessage(sdk, 'x'), configuration }), (e) => codeOf(e) === -32047 && /169\.254/.test(messageOf(e)));
    });

    test('a kill during a stream ends it canceled, cancels upstream, holds, and a release restores service', async () => {
      const c = await client('slow');
      const events = [];
      const it = streamText(c, sdk, 'chunks=200 delay_ms=50');
      const consumed = (async () => {
        for await (const ev of it) events.push(view(sdk, ev));
      })();
      assert.ok(await eventually(() => events.some((e) => e.kind === 'artifact')), 'the stream started');
      const taskId = events[0].taskId;
      const killed = stack.gwctl('--json', 'kill', 'agent', 'slow', '--reason', 'drill');
      assert.equal(killed.status, 0, killed.stderr);
      // agent-gw answers once its workers have ended the stream; the other daemons are not running here
      assert.deepEqual(JSON.parse(killed.stdout).daemons.map((d) => [d.daemon, d.result]),
        [['agent-gw', 'confirmed'], ['mcp-gw', 'not running'], ['model-gw', 'not running']]);
      await consumed;
      const last = events[events.length - 1];
      assert.equal(last.state, 'canceled', JSON.stringify(last));
      assert.match(last.text, /kill switch: drill/);
      assert.ok(await eventually(async () => (await agents.cancels('slow')).some((x) => x.taskId === taskId)), 'upstream got the cancel');
      const ledger = await eventually(() => {
        const out = stack.gwctl('--json', 'tasks', 'show', taskId, '--agent', 'slow');
        return out.status === 0 && JSON.parse(out.stdout).state === 'canceled' ? JSON.parse(out.stdout) : null;
      });
      assert.ok(ledger, 'the ledger shows the task canceled');
      await assert.rejects(sendText(await client('slow'), sdk, 'chunks=1'), (e) => codeOf(e) === -32043);
      const released = stack.gwctl('release', 'agent', 'slow');
      assert.equal(released.status, 0, released.stderr);
      const back = await eventually(async () => {
        try {
          const r = await collect(sdk, streamText(await client('slow'), sdk, 'chunks=1 delay_ms=1'));
          return r[r.length - 1].state === 'completed';
        } catch {
          return false;
        }
      });
      assert.ok(back, 'service restored after release');
    });
  });
}
