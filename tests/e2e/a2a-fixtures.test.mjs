// The A2A agents fixture (tests/fixtures/a2a-agents.mjs), talked to directly with each SDK's own
// client: @a2a-js/sdk 0.3.x for A2A v0.3 and 1.x for v1.0. No gateway: this proves the agents
// behave as agent-gw's tests will assume (cards, echo, streaming, cancel, resubscribe, input
// required, delegation with forwarded headers, the side endpoints, clean exit).
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';

import { SDKS, a2aClient, collect, sendText, startA2AAgents, streamText, taskParams, userMessage, view } from './lib/a2a.mjs';

const KEY = 'tp_delegator_key_1';
const CHAIN = 'v1.test-chain-token';

for (const sdk of SDKS) {
  describe(`a2a-agents fixture, ${sdk}`, () => {
    let agents;
    before(async () => {
      agents = await startA2AAgents({
        sdk,
        agents: { echo: 'echo', slow: 'slow', asker: 'asker', delegator: 'delegator', relay: 'delegator', locked: 'echo' },
        keys: { delegator: KEY },
        requireAuth: { locked: 'sesame' },
      });
    });
    after(async () => {
      const r = await agents?.stop();
      if (r) assert.deepEqual(r, { code: 0, signal: null });
    });

    test('the card names the JSON-RPC endpoint; the extended card adds a skill', async () => {
      const raw = await (await fetch(new URL('.well-known/agent-card.json', agents.url('echo')))).json();
      const rpc = new URL('a2a/jsonrpc', agents.url('echo')).href;
      assert.equal(raw.name, 'echo');
      if (sdk === 'v03') {
        assert.equal(raw.protocolVersion, '0.3.0');
        assert.equal(raw.url, rpc);
        assert.equal(raw.preferredTransport, 'JSONRPC');
        assert.deepEqual(raw.additionalInterfaces, [{ url: rpc, transport: 'JSONRPC' }]);
        const legacy = await (await fetch(new URL('.well-known/agent.json', agents.url('echo')))).json();
        assert.deepEqual(legacy, raw);
      } else {
        assert.equal(raw.url, undefined);
        assert.deepEqual(raw.supportedInterfaces, [{ url: rpc, protocolBinding: 'JSONRPC', tenant: '', protocolVersion: '1.0' }]);
      }
      const client = await a2aClient(sdk, agents.url('echo'));
      const card = await client.getAgentCard(); // the authenticated extended card (agent/getAuthenticatedExtendedCard, GetExtendedAgentCard)
      assert.deepEqual(card.skills.map((s) => s.id), ['echo', 'extended']);
      const cardFetch = await agents.lastHeaders('echo', 'card');
      if (sdk === 'v10') assert.equal(cardFetch['a2a-version'], '1.0');
    });

    test('echo replies with a message, or a completed task with as=task', async () => {
      const client = await a2aClient(sdk, agents.url('echo'));
      const m = view(sdk, await sendText(client, sdk, 'hello there'));
      assert.equal(m.kind, 'message');
      assert.equal(m.text, 'echo: hello there');
      assert.ok(m.contextId);
      const t = view(sdk, await sendText(client, sdk, 'as=task hi'));
      assert.equal(t.kind, 'task');
      assert.equal(t.state, 'completed');
      assert.equal(t.artifacts, 'echo: as=task hi');
      const h = await agents.lastHeaders('echo');
      assert.equal(h['content-type'], 'application/json');
      if (sdk === 'v10') assert.equal(h['a2a-version'], '1.0');
      else assert.equal(h['a2a-version'], undefined);
      const reqs = await agents.requests('echo');
      assert.equal(reqs.at(-1).rpcMethod, sdk === 'v03' ? 'message/send' : 'SendMessage');
    });

    test('slow streams artifact chunks, then a final completed status; tasks/get agrees', async () => {
      const client = await a2aClient(sdk, agents.url('slow'));
      const events = await collect(sdk, streamText(client, sdk, 'chunks=4 delay_ms=20'));
      assert.deepEqual(events.map((e) => e.kind), ['task', 'status', 'artifact', 'artifact', 'artifact', 'artifact', 'status']);
      assert.equal(events[0].state, 'submitted');
      assert.equal(events[1].state, 'working');
      assert.equal(events.slice(2, 6).map((e) => e.text).join(''), 'chunk 1/4 chunk 2/4 chunk 3/4 chunk 4/4 ');
      assert.deepEqual(events.slice(2, 6).map((e) => [e.append, e.lastChunk]), [[false, false], [true, false], [true, false], [true, true]]);
      const last = events.at(-1);
      assert.equal(last.state, 'completed');
      assert.equal(last.final, true);
      assert.equal(last.text, 'slow: done 4 chunks');
      assert.ok(events.slice(0, -1).every((e) => !e.final));
      const got = view(sdk, await client.getTask(taskParams(sdk, last.taskId)));
      assert.equal(got.state, 'completed');
      assert.equal(got.artifacts, 'chunk 1/4 chunk 2/4 chunk 3/4 chunk 4/4 ');
    });

    test('cancel mid-stream: the stream ends canceled and the agent recorded the cancel', async () => {
      await agents.reset('slow');
      const client = await a2aClient(sdk, agents.url('slow'));
      const events = [];
      let cancel = null;
      for await (const ev of streamText(client, sdk, 'chunks=200 delay_ms=50')) {
        const v = view(sdk, ev);
        events.push(v);
        if (v.kind === 'artifact' && !cancel && events.filter((e) => e.kind === 'artifact').length === 2) {
          cancel = client.cancelTask(taskParams(sdk, v.taskId));
        }
      }
      const canceled = view(sdk, await cancel);
      assert.equal(canceled.kind, 'task');
      assert.equal(canceled.state, 'canceled');
      const last = events.at(-1);
      assert.equal(last.kind, 'status');
      assert.equal(last.state, 'canceled');
      assert.equal(last.final, true);
      assert.match(last.text, /^slow: canceled after \d+ of 200 chunks$/);
      assert.ok(events.filter((e) => e.kind === 'artifact').length < 10);
      const cancels = await agents.cancels('slow');
      assert.equal(cancels.length, 1);
      assert.equal(cancels[0].taskId, canceled.taskId);
      assert.equal(cancels[0].method, sdk === 'v03' ? 'tasks/cancel' : 'CancelTask');
      assert.equal(cancels[0].running, true);
      // A second cancel of the now-canceled task: v0.3 refuses it (-32002), v1.0 returns the task.
      if (sdk === 'v03') await assert.rejects(client.cancelTask(taskParams(sdk, canceled.taskId)), (e) => e.name === 'TaskNotCancelableError');
      else assert.equal(view(sdk, await client.cancelTask(taskParams(sdk, canceled.taskId))).state, 'canceled');
    });

    test('resubscribe to a running task started without blocking', async () => {
      const client = await a2aClient(sdk, agents.url('slow'));
      const started = view(sdk, await sendText(client, sdk, 'chunks=5 delay_ms=60', { blocking: false }));
      assert.equal(started.kind, 'task');
      assert.ok(['submitted', 'working'].includes(started.state), started.state);
      const events = await collect(sdk, client.resubscribeTask(taskParams(sdk, started.taskId)));
      assert.equal(events[0].kind, 'task'); // both SDKs start a resubscription with the task
      assert.equal(events.at(-1).state, 'completed');
      assert.ok(events.some((e) => e.kind === 'artifact'));
      assert.equal((await agents.requests('slow')).at(-1).rpcMethod, sdk === 'v03' ? 'tasks/resubscribe' : 'SubscribeToTask');
    });

    test('asker: input-required, then completed on a follow-up in the same task', async () => {
      const client = await a2aClient(sdk, agents.url('asker'));
      const first = await collect(sdk, streamText(client, sdk, 'book me a table'));
      assert.deepEqual(first.map((e) => [e.kind, e.state]), [['task', 'submitted'], ['status', 'input-required']]);
      assert.equal(first.at(-1).final, true);
      assert.equal(first.at(-1).text, 'asker: what is your name?');
      const { taskId, contextId } = first.at(-1);
      const done = view(sdk, await sendText(client, sdk, 'Ada', { taskId, contextId }));
      assert.equal(done.kind, 'task');
      assert.equal(done.taskId, taskId);
      assert.equal(done.state, 'completed');
      assert.equal(done.text, 'asker: thanks, Ada');
      assert.equal(done.artifacts, 'asker: thanks, Ada');
      // Blocking send stops at input-required too.
      const asked = view(sdk, await sendText(client, sdk, 'again'));
      assert.equal(asked.state, 'input-required');
      // A task waiting for input can be canceled.
      assert.equal(view(sdk, await client.cancelTask(taskParams(sdk, asked.taskId))).state, 'canceled');
      assert.equal(view(sdk, await client.getTask(taskParams(sdk, asked.taskId))).state, 'canceled');
      assert.equal((await agents.cancels('asker')).at(-1).taskId, asked.taskId);
    });

    test('unknown task: TaskNotFound (-32001)', async () => {
      const client = await a2aClient(sdk, agents.url('echo'));
      await assert.rejects(client.getTask(taskParams(sdk, 'no-such-task')), (e) => e.name === 'TaskNotFoundError');
    });

    test('delegator calls echo (direct URL), forwarding x-triplane-chain and its own key', async () => {
      await agents.reset('echo');
      const client = await a2aClient(sdk, agents.url('delegator'));
      const r = view(sdk, await sendText(client, sdk, `to=echo url=${agents.url('echo')} ping`, { serviceParameters: { 'x-triplane-chain': CHAIN } }));
      assert.equal(r.kind, 'task');
      assert.equal(r.state, 'completed', r.text);
      assert.equal(r.text, 'delegator: echo answered: echo: ping');
      assert.equal(r.artifacts, 'delegator: echo answered: echo: ping');
      assert.equal((await agents.lastHeaders('delegator'))['x-triplane-chain'], CHAIN);
      for (const of of ['rpc', 'card']) {
        const h = await agents.lastHeaders('echo', of);
        assert.equal(h['x-triplane-chain'], CHAIN, of);
        assert.equal(h.authorization, `Bearer ${KEY}`, of);
      }
      const [d] = (await agents.delegations('delegator')).slice(-1);
      assert.deepEqual({ to: d.to, url: d.url, ok: d.ok, headers: d.headers }, { to: 'echo', url: agents.url('echo'), ok: true, headers: { 'x-triplane-chain': CHAIN, authorization: `Bearer ${KEY}` } });
      // Without an incoming chain header nothing is invented; relay has no key: no Authorization.
      await sendText(await a2aClient(sdk, agents.url('relay')), sdk, `to=echo url=${agents.url('echo')} pong`);
      const h = await agents.lastHeaders('echo');
      assert.equal(h['x-triplane-chain'], undefined);
      assert.equal(h.authorization, undefined);
    });

    test('delegator reports a downstream error; hops and gateway=URL are passed on', async () => {
      const client = await a2aClient(sdk, agents.url('delegator'));
      // The target refuses (401): the reply carries the error text.
      const refused = view(sdk, await sendText(client, sdk, `to=locked url=${agents.url('locked')} hi`));
      assert.equal(refused.state, 'failed');
      assert.match(refused.text, /^delegator: call to locked failed: .*401/);
      // Two hops: delegator -> relay (direct) -> echo, which relay must reach through the gateway
      // given in the text; nothing listens there, so relay fails and delegator reports it.
      const gw = 'http://127.0.0.1:9';
      const chained = view(sdk, await sendText(client, sdk, `to=relay,echo url=${agents.url('relay')} gateway=${gw} hi`));
      assert.equal(chained.state, 'completed', chained.text);
      assert.match(chained.text, /^delegator: relay answered: \[failed\] delegator: call to echo failed: /);
      const [d] = (await agents.delegations('relay')).slice(-1);
      assert.equal(d.url, `${gw}/agents/echo/`);
      assert.equal(d.ok, false);
      const [relayReq] = (await agents.requests('relay')).filter((q) => q.rpcMethod).slice(-1);
      assert.ok(relayReq);
      // No target at all.
      const none = view(sdk, await sendText(client, sdk, 'hello'));
      assert.equal(none.state, 'failed');
      assert.equal(none.text, 'delegator: no target: say to=NAME');
    });

    test('delegator through a gateway that refuses: the reply carries the JSON-RPC error', async () => {
      // A stand-in for agent-gw: serves a card for /agents/NAME/ whose endpoint is /agents/NAME,
      // and refuses every call with a gateway-style JSON-RPC error.
      const seen = [];
      const gw = http.createServer((req, res) => {
        let body = '';
        req.on('data', (d) => (body += d));
        req.on('end', () => {
          seen.push({ method: req.method, url: req.url, headers: req.headers, body });
          const { port } = gw.address();
          const m = /^\/agents\/([^/]+)(\/\.well-known\/agent-card\.json)?$/.exec(req.url);
          res.setHeader('content-type', 'application/json');
          if (!m) return res.writeHead(404).end('{}');
          const rpc = `http://127.0.0.1:${port}/agents/${m[1]}`;
          if (m[2]) {
            const base = { name: m[1], description: 'x', version: '1', capabilities: { streaming: true }, defaultInputModes: [], defaultOutputModes: [], skills: [] };
            return res.end(JSON.stringify(sdk === 'v03' ? { ...base, protocolVersion: '0.3.0', url: rpc, preferredTransport: 'JSONRPC' } : { ...base, supportedInterfaces: [{ url: rpc, protocolBinding: 'JSONRPC', protocolVersion: '1.0' }] }));
          }
          const { id } = JSON.parse(body);
          res.writeHead(403).end(JSON.stringify({ jsonrpc: '2.0', id, error: { code: -32004, message: 'refused: delegation loop delegator -> echo' } }));
        });
      });
      await new Promise((resolve) => gw.listen(0, '127.0.0.1', resolve));
      try {
        const gateway = `http://127.0.0.1:${gw.address().port}`;
        const client = await a2aClient(sdk, agents.url('delegator'));
        const r = view(sdk, await sendText(client, sdk, `to=echo gateway=${gateway} hi`, { serviceParameters: { 'x-triplane-chain': CHAIN } }));
        assert.equal(r.state, 'failed');
        assert.equal(r.text, 'delegator: call to echo failed: JSON-RPC error -32004: refused: delegation loop delegator -> echo');
        assert.deepEqual(seen.map((q) => `${q.method} ${q.url}`), ['GET /agents/echo/.well-known/agent-card.json', 'POST /agents/echo']);
        for (const q of seen) {
          assert.equal(q.headers['x-triplane-chain'], CHAIN);
          assert.equal(q.headers.authorization, `Bearer ${KEY}`);
          assert.equal(q.headers['a2a-version'], sdk === 'v10' ? '1.0' : undefined);
        }
        assert.equal(JSON.parse(seen[1].body).method, sdk === 'v03' ? 'message/send' : 'SendMessage');
      } finally {
        await new Promise((resolve) => gw.close(resolve));
      }
    });

    test('--require-auth: 401 without the token, served with it', async () => {
      const cardUrl = new URL('.well-known/agent-card.json', agents.url('locked'));
      assert.equal((await fetch(cardUrl)).status, 401);
      assert.equal((await fetch(cardUrl, { headers: { Authorization: 'Bearer wrong' } })).status, 401);
      const client = await a2aClient(sdk, agents.url('locked'), { headers: { Authorization: 'Bearer sesame' } });
      assert.equal(view(sdk, await sendText(client, sdk, 'x')).text, 'echo: x');
    });

    test('a body that is not JSON gets -32700', async () => {
      const r = await fetch(new URL('a2a/jsonrpc', agents.url('echo')), { method: 'POST', headers: { 'content-type': 'application/json', 'a2a-version': '1.0' }, body: '{nope' });
      assert.equal(r.status, sdk === 'v03' ? 400 : 200);
      assert.deepEqual(await r.json(), { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Invalid JSON payload.' } });
    });

    test('user messages built by the helpers are accepted as is', () => {
      const m = userMessage(sdk, 'x', { taskId: 't', contextId: 'c' });
      assert.equal(m.taskId, 't');
      assert.equal(m.contextId, 'c');
    });
  });
}

describe('a2a-agents fixture, lifecycle', () => {
  test('SIGTERM with a stream open: exit 0, promptly', async () => {
    const agents = await startA2AAgents({ sdk: 'v10', agents: { slow: 'slow' } });
    const client = await a2aClient('v10', agents.url('slow'));
    const it = streamText(client, 'v10', 'chunks=1000 delay_ms=100')[Symbol.asyncIterator]();
    assert.equal(view('v10', (await it.next()).value).kind, 'task');
    const t0 = Date.now();
    assert.deepEqual(await agents.stop(), { code: 0, signal: null });
    assert.ok(Date.now() - t0 < 3000);
    await assert.rejects(async () => {
      for (;;) if ((await it.next()).done) throw new Error('stream ended cleanly');
    });
  });

  test('bad command lines exit 2', async () => {
    await assert.rejects(startA2AAgents({ sdk: 'v2' }), /exited \(2\)/);
    await assert.rejects(startA2AAgents({ sdk: 'v03', agents: { x: 'nosuchkind' } }), /exited \(2\)/);
  });
});
