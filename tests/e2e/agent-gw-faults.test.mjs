// agent-gw when things go wrong: clients that leave or read slowly, agents that stall, trickle,
// answer too much or never answer, ids too long for a chain, a kill racing an answer, team kills,
// push URLs whose names resolve inward, callers reaching for each other's tasks, an agent the
// gateway cannot call, and a shutdown with calls in flight. Each test asserts what a user would
// notice; every `after` asserts the daemon exited 0 with no sanitizer report (the ASan build
// finds the memory errors these paths used to have).
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import http2 from 'node:http2';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  agentMessage,
  answer,
  canUnshareMounts,
  rawCard,
  rawRequest,
  readResponse,
  rpc,
  sseEvents,
  startRawAgent,
  startStackWithHosts,
  userMessage03,
  userMessage10,
} from './lib/agent-faults.mjs';
import { a2aClient, sendText, startA2AAgents, streamText, taskParams, view } from './lib/a2a.mjs';
import { Stack, eventually, sleep } from './lib/stack.mjs';

const JWT_SECRET = 'faults-secret-faults-secret-faults-32';
const b64 = (s) => Buffer.from(s).toString('base64url');
function jwt(claims) {
  const h = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const b = b64(JSON.stringify({ iss: 'https://idp.faults', aud: 'faults', exp: Math.floor(Date.now() / 1000) + 600, ...claims }));
  return `${h}.${b}.${createHmac('sha256', JWT_SECRET).update(`${h}.${b}`).digest('base64url')}`;
}

const POLICY = [
  'principals:',
  '  - {id: alice, kind: user, team: ml}',
  '  - {id: mallory, kind: user, team: ops}',
  '  - {id: d1, kind: agent}',
  'rules:',
  '  - {id: all, effect: allow, subjects: {kinds: [user, agent]}, plane: agent, resources: ["*"], actions: ["*"]}',
  '',
].join('\n');

// Applies POLICY and makes a key for each principal.
function governance(stack) {
  const file = path.join(stack.dir, 'p.yaml');
  writeFileSync(file, POLICY);
  const applied = stack.gwctl('apply', '-f', file);
  assert.equal(applied.status, 0, applied.stderr);
  const keys = {};
  for (const p of ['alice', 'mallory', 'd1']) keys[p] = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', p).stdout).key;
  return keys;
}

// Adds a stored agent and waits until the gateway knows it.
async function addAgent(stack, name, url, { version = '0.3', cardUrl } = {}) {
  const args = ['agent', 'add', name, '--url', url, '--version', version];
  if (cardUrl) args.push('--card-url', cardUrl);
  const r = stack.gwctl(...args);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(await eventually(async () => (await fetch(`${stack.url('agent-gw')}/agents/${name}`, { method: 'POST', body: '{}' })).status !== 404), `${name} registered`);
}

// Stops the stack and asserts a clean exit with no sanitizer report.
async function closeClean(stack) {
  if (!stack) return;
  const d = stack.daemons['agent-gw'];
  const results = await stack.close();
  assert.equal(results['agent-gw']?.code, 0, `agent-gw exit ${JSON.stringify(results['agent-gw'])}\n${d.tail()}`);
  assert.deepEqual(d.sanitizerReports(), [], d.tail());
}

const send03 = (text, extra) => ({ message: userMessage03(text, extra) });

describe('agent-gw under faults', () => {
  let stack, gw, keys, agent, sdkAgents;
  // What the raw agent does, by the name the gateway calls it under (the path is the same).
  const cardDelay = {};
  before(async () => {
    stack = await Stack.start({
      daemons: ['agent-gw'],
      extraTop: ['auth:', '  jwt:', '    - issuer: https://idp.faults', '      audience: faults', '      algorithms: [HS256]', `      hs_secret: ${JWT_SECRET}`],
    });
    gw = stack.url('agent-gw');
    keys = governance(stack);
    agent = await startRawAgent(async (req, res, body, m) => {
      const kind = new URL(req.url, 'http://x').searchParams.get('kind') ?? '';
      if (req.url.startsWith('/card')) {
        if (kind === 'big') { // a card larger than the gateway reads, that never ends
          res.writeHead(200, { 'content-type': 'application/json' });
          res.write(`{"pad":"${'p'.repeat(1200 * 1024)}`);
          return;
        }
        await sleep(cardDelay[kind] ?? 0);
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(rawCard('http://ignored/')));
        return;
      }
      if (kind === 'big') { // a 20 MB answer, for a client that does not read it
        answer(res, m.id, agentMessage('y'.repeat(20 * 1024 * 1024)));
        return;
      }
      if (m?.method === 'message/stream') { // a long stream of working updates
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const ev = (result) => res.write(`data: ${JSON.stringify({ jsonrpc: '2.0', id: m.id, result })}\n\n`);
        ev({ kind: 'task', id: 'stream-task', contextId: 'c', status: { state: 'submitted' } });
        for (let i = 0; i < 100 && !res.destroyed; i++) {
          ev({ kind: 'status-update', taskId: 'stream-task', contextId: 'c', status: { state: 'working' }, final: false });
          await sleep(100);
        }
        res.end();
        return;
      }
      answer(res, m?.id ?? null, agentMessage('ok'));
    });
    for (const kind of ['slowcard', 'big', 'plain']) await addAgent(stack, kind, `${agent.url}/rpc?kind=${kind}`, { cardUrl: `${agent.url}/card?kind=${kind}` });
    sdkAgents = await startA2AAgents({ sdk: 'v10', agents: { echo: 'echo' } });
    await addAgent(stack, 'echo', `${sdkAgents.url('echo')}a2a/jsonrpc`, { version: '1.0' });
  });
  after(async () => {
    await sdkAgents?.stop();
    await closeClean(stack);
    await agent?.close();
  });

  test('a caller that leaves while its card is fetched does not take the gateway down', async () => {
    cardDelay.slowcard = 1200;
    const before = agent.seen.length;
    for (let i = 0; i < 3; i++) {
      const c = http2.connect(gw);
      c.on('error', () => {});
      for (let j = 0; j < 3; j++) c.request({ ':path': '/agents/slowcard/.well-known/agent-card.json' }).on('error', () => {});
      setTimeout(() => c.destroy(), 150);
    }
    await sleep(300);
    // A caller that stays gets the card once it comes.
    const stayed = await fetch(`${gw}/agents/slowcard/.well-known/agent-card.json`);
    assert.equal(stayed.status, 200);
    assert.equal((await stayed.json()).url, `${gw}/agents/slowcard`);
    assert.ok(agent.seen.length > before, 'the card was fetched');
    assert.equal((await fetch(`${gw}/agents`, { headers: { authorization: `Bearer ${keys.alice}` } })).status, 200);
  });

  test('a card larger than the gateway reads is refused at once, not after a timeout', async () => {
    const t0 = Date.now();
    const res = await fetch(`${gw}/agents/big/.well-known/agent-card.json`);
    assert.equal(res.status, 502);
    assert.match((await res.json()).error.message, /larger than/);
    assert.ok(Date.now() - t0 < 5000, `answered after ${Date.now() - t0} ms`);
  });

  test('a task id longer than a chain holds is refused cleanly, and a 128-character agent name works', async () => {
    const n = agent.rpcs().length;
    const r = await rpc(gw, 'plain', keys.alice, 'tasks/get', { id: 'x'.repeat(200) }, { id: 'long' });
    assert.equal(r.status, 200);
    assert.equal(r.json.id, 'long');
    assert.equal(r.json.error.code, -32045);
    assert.equal(r.json.error.data.reason, 'task_id');
    assert.match(r.json.error.message, /200 bytes/);
    assert.equal(agent.rpcs().length, n, 'the agent never saw it');
    const name = 'n'.repeat(128);
    await addAgent(stack, name, `${agent.url}/rpc?kind=plain`);
    const ok = await rpc(gw, name, keys.alice, 'message/send', send03('hi'));
    assert.equal(ok.json?.result?.parts?.[0]?.text, 'ok', ok.text);
    assert.ok(agent.rpcs().at(-1).headers['x-triplane-chain'], 'the chain carries the long name');
  });

  test('a kill that comes after a unary answer was handed over does not answer twice', async () => {
    const body = JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'message/send', params: send03('big') });
    const s = rawRequest(gw, { path: '/agents/big', headers: { Authorization: `Bearer ${keys.alice}`, 'Content-Type': 'application/json' }, body });
    s.pause(); // the 20 MB answer stays with the gateway while nobody reads it
    let res;
    try {
      assert.ok(await eventually(() => agent.rpcs().some((x) => x.url.includes('kind=big'))), 'the agent answered');
      await sleep(700);
      const killed = stack.gwctl('kill', 'agent', 'big', '--reason', 'race drill');
      assert.equal(killed.status, 0, killed.stderr);
      res = await readResponse(s);
    } finally {
      s.destroy();
    }
    assert.equal(res.status, 200);
    const got = JSON.parse(res.body);
    assert.equal(got.result.parts[0].text.length, 20 * 1024 * 1024, 'the answer the caller already had stands');
    assert.equal(stack.gwctl('release', 'agent', 'big').status, 0);
    assert.equal((await rpc(gw, 'plain', keys.alice, 'message/send', send03('alive'))).json.result.parts[0].text, 'ok');
  });

  test("a team kill ends a member's stream in flight and the calls made on its behalf", async () => {
    // d1's chain on alice's behalf: what the agent d1 got when alice messaged it.
    await addAgent(stack, 'd1', `${agent.url}/rpc?kind=plain`);
    await rpc(gw, 'd1', keys.alice, 'message/send', send03('delegate'));
    const chain = agent.rpcs().at(-1).headers['x-triplane-chain'];
    assert.ok(chain);
    const aborter = new AbortController();
    const res = await fetch(`${gw}/agents/plain`, {
      method: 'POST',
      headers: { authorization: `Bearer ${keys.alice}`, 'content-type': 'application/json', accept: 'text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 's1', method: 'message/stream', params: send03('stream') }),
      signal: aborter.signal,
    });
    setTimeout(() => aborter.abort(), 15000).unref(); // never hold the suite if the kill misses it
    const reader = res.body.getReader();
    let text = '';
    const pump = (async () => {
      const dec = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += dec.decode(value);
      }
    })();
    assert.ok(await eventually(() => text.includes('working')), 'the stream runs');
    const t0 = Date.now();
    const killed = stack.gwctl('kill', 'team', 'ml', '--reason', 'team drill');
    assert.equal(killed.status, 0, killed.stderr);
    await pump;
    assert.ok(Date.now() - t0 < 4000, 'the stream ended with the kill, not with the agent');
    const last = sseEvents(text).at(-1);
    assert.equal(last.id, 's1');
    assert.equal(last.result.status.state, 'canceled');
    assert.match(last.result.status.message.parts[0].text, /team drill/);
    assert.ok(await eventually(() => agent.rpcs().some((x) => x.json?.method === 'tasks/cancel' && x.json.params.id === 'stream-task')), 'the agent got the cancel');
    // A member's own new call: refused by the gate, with the request's id.
    const direct = await rpc(gw, 'plain', keys.alice, 'message/send', send03('x'), { id: 7 });
    assert.equal(direct.status, 403);
    assert.equal(direct.json.id, 7);
    assert.equal(direct.json.error.data.reason, 'suspended');
    // A call an agent makes on a member's behalf: refused too.
    const delegated = await rpc(gw, 'plain', keys.d1, 'message/send', send03('x'), { id: 8, headers: { 'x-triplane-chain': chain } });
    assert.equal(delegated.json.id, 8);
    assert.equal(delegated.json.error.code, -32043, delegated.text);
    assert.match(delegated.json.error.message, /team drill/);
    assert.equal(stack.gwctl('release', 'team', 'ml').status, 0);
    assert.ok(await eventually(async () => (await rpc(gw, 'plain', keys.alice, 'message/send', send03('back'))).json?.result !== undefined), 'released');
  });

  test("mallory can neither read, cancel, list nor configure alice's task; alice can, also after a restart", async () => {
    const alice = await a2aClient('v10', `${gw}/agents/echo/`, { headers: { Authorization: `Bearer ${keys.alice}` } });
    const mallory = await a2aClient('v10', `${gw}/agents/echo/`, { headers: { Authorization: `Bearer ${keys.mallory}` } });
    const taskId = view('v10', await sendText(alice, 'v10', 'as=task alice secret')).taskId;
    assert.ok(taskId);
    const notFound = (e) => (e.envelopeCode ?? e.code) === -32001 || /-32001|not found/i.test(String(e.message));
    await assert.rejects(mallory.getTask(taskParams('v10', taskId)), notFound);
    await assert.rejects(mallory.cancelTask(taskParams('v10', taskId)), notFound);
    const pushGet = await rpc(gw, 'echo', keys.mallory, 'GetTaskPushNotificationConfig', { taskId, id: 'cfg' }, { version: '1.0' });
    assert.equal(pushGet.json.error.code, -32001, pushGet.text);
    const snake = await rpc(gw, 'echo', keys.mallory, 'SendMessage', { message: { ...userMessage10('x'), task_id: taskId } }, { version: '1.0' });
    assert.equal(snake.json.error.code, -32001, snake.text);
    const both = await rpc(gw, 'echo', keys.mallory, 'SendMessage', { message: { ...userMessage10('x'), taskId: 'mine', task_id: taskId } }, { version: '1.0' });
    assert.equal(both.json.error.code, -32602, both.text);
    const mine = await rpc(gw, 'echo', keys.mallory, 'ListTasks', {}, { version: '1.0' });
    assert.ok(!mine.text.includes(taskId) && !mine.text.includes('alice secret'), mine.text);
    const theirs = await rpc(gw, 'echo', keys.alice, 'ListTasks', {}, { version: '1.0' });
    assert.ok(theirs.json.result.tasks.some((t) => t.id === taskId), theirs.text);
    assert.equal((await alice.getTask(taskParams('v10', taskId))).id, taskId);

    // The gateway remembers owners across a restart (from the ledger): alice still, mallory not.
    await eventually(() => stack.sql(`SELECT count(*) FROM tasks WHERE id = '${taskId}'`) === '1');
    const before = stack.daemons['agent-gw'];
    assert.equal((await before.stop()).code, 0, before.tail());
    assert.deepEqual(before.sanitizerReports(), []);
    await stack.restart('agent-gw');
    gw = stack.url('agent-gw');
    const got = await rpc(gw, 'echo', keys.alice, 'GetTask', { id: taskId }, { version: '1.0' });
    assert.equal(got.json?.result?.id, taskId, got.text);
    const still = await rpc(gw, 'echo', keys.mallory, 'GetTask', { id: taskId }, { version: '1.0' });
    assert.equal(still.json.error.code, -32001);
  });

  test('a streaming call to an agent that is down fails with an error the 0.3 client can read', async () => {
    assert.equal(stack.gwctl('agent', 'add', 'down', '--url', 'http://127.0.0.1:9/rpc', '--card-url', `${agent.url}/card?kind=plain`).status, 0);
    assert.ok(await eventually(async () => (await fetch(`${gw}/agents/down/.well-known/agent-card.json`)).status === 200));
    const raw = await fetch(`${gw}/agents/down`, {
      method: 'POST',
      headers: { authorization: `Bearer ${keys.alice}`, 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 's', method: 'message/stream', params: send03('x') }),
    });
    assert.match(raw.headers.get('content-type'), /text\/event-stream/);
    assert.equal(sseEvents(await raw.text())[0].error.code, -32048);
    const c = await a2aClient('v03', `${gw}/agents/down/`, { headers: { Authorization: `Bearer ${keys.alice}` } });
    await assert.rejects(async () => {
      for await (const ev of streamText(c, 'v03', 'x')) void ev;
    }, /unavailable/);
  });

  test('a stored agent the gateway cannot call is left out; the registry goes on changing', async () => {
    // gwctl refuses what the gateway could not call (https to an IP address, user info, a query) …
    const refused = stack.gwctl('agent', 'add', 'badtls', '--url', 'https://10.0.0.1/a2a');
    assert.notEqual(refused.status, 0, refused.stderr);
    assert.match(refused.stderr, /https needs a host name/);
    assert.notEqual(stack.gwctl('agent', 'add', 'userinfo', '--url', 'http://u:p@127.0.0.1/a2a').status, 0);
    // … and the daemon skips one stored behind gwctl's back.
    stack.sql("INSERT INTO agents (name, url, version, labels, created_at_ms, created_by) VALUES ('badtls', 'https://10.0.0.1/a2a', '0.3', '{}', 1, 'sql')");
    await addAgent(stack, 'late', `${agent.url}/rpc?kind=plain`);
    assert.equal((await rpc(gw, 'late', keys.alice, 'message/send', send03('x'))).json.result.parts[0].text, 'ok');
    assert.equal((await rpc(gw, 'badtls', keys.alice, 'message/send', send03('x'))).status, 404);
    assert.equal(stack.gwctl('agent', 'rm', 'late').status, 0);
    assert.ok(await eventually(async () => (await rpc(gw, 'late', keys.alice, 'message/send', send03('x'))).status === 404), 'removal applies');
    assert.ok(stack.daemons['agent-gw'].lines.some((l) => typeof l === 'object' && /badtls/.test(l.msg ?? '')), 'the log names the agent');
    // The daemon restarts with it still stored.
    const d = stack.daemons['agent-gw'];
    assert.equal((await d.stop()).code, 0, d.tail());
    assert.deepEqual(d.sanitizerReports(), []);
    await stack.restart('agent-gw');
    gw = stack.url('agent-gw');
    assert.equal((await rpc(gw, 'plain', keys.alice, 'message/send', send03('x'))).json.result.parts[0].text, 'ok');
  });

  test('POST /agents names no agent: 404, and a JWT caller is served', async () => {
    for (const p of ['/agents', '/agents/']) assert.equal((await fetch(`${gw}${p}`, { method: 'POST', headers: { authorization: `Bearer ${keys.alice}` }, body: '{}' })).status, 404);
    const policy = path.join(stack.dir, 'jwt.yaml');
    writeFileSync(policy, 'rules:\n  - {id: jwt-bob, effect: allow, subjects: {principals: [bob]}, plane: agent, resources: ["*"], actions: ["*"]}\n');
    assert.equal(stack.gwctl('apply', '-f', policy).status, 0);
    const token = jwt({ sub: 'bob', team: 'ml-jwt', roles: ['analyst'] });
    await eventually(async () => (await rpc(gw, 'plain', token, 'message/send', send03('x'))).json?.result !== undefined);
    for (let i = 0; i < 5; i++) assert.equal((await rpc(gw, 'plain', token, 'message/send', send03('x'), { id: i })).json.result.parts[0].text, 'ok');
  });
});

describe('agent-gw with configured agents that need care', () => {
  let stack, gw, keys, agent, authed;
  before(async () => {
    agent = await startRawAgent(async (req, res, body, m) => {
      const kind = new URL(req.url, 'http://x').searchParams.get('kind') ?? '';
      if (req.url.startsWith('/card')) {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(rawCard('http://ignored/')));
      } else if (kind === 'trickle') { // the head at once, then a byte now and then, never the end
        res.writeHead(200, { 'content-type': 'application/json' });
        for (let i = 0; i < 100 && !res.destroyed; i++) {
          res.write(' ');
          await sleep(200);
        }
        res.end();
      } else if (kind === 'slow') {
        await sleep(1500);
        answer(res, m.id, agentMessage('slow ok'));
      } else {
        answer(res, m.id, agentMessage('ok'));
      }
    });
    authed = await startA2AAgents({ sdk: 'v03', agents: { secure: 'echo' }, requireAuth: { secure: 'sekret' } });
    stack = await Stack.start({
      daemons: ['agent-gw'],
      extra: {
        agent_gw: [
          'agents:',
          '  - name: secure',
          `    url: ${authed.url('secure')}a2a/jsonrpc`,
          '    headers:',
          '      - {name: Authorization, value: Bearer sekret}',
          '  - name: badtls',
          '    url: https://10.0.0.1/a2a',
          '  - name: trickle',
          `    url: ${agent.url}/rpc?kind=trickle`,
          `    card_url: ${agent.url}/card`,
          '    timeout_ms: 1000',
          '  - name: capped',
          `    url: ${agent.url}/rpc?kind=slow`,
          `    card_url: ${agent.url}/card`,
          '    max_concurrent_tasks: 1',
        ],
      },
    });
    gw = stack.url('agent-gw');
    keys = governance(stack);
  });
  after(async () => {
    await authed?.stop();
    await closeClean(stack);
    await agent?.close();
  });

  test("the card of an agent that needs a credential is fetched with the agent's headers", async () => {
    const res = await fetch(`${gw}/agents/secure/.well-known/agent-card.json`);
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal((await res.json()).url, `${gw}/agents/secure`);
  });

  test('a configured agent the gateway cannot call is left out and logged; the others work', async () => {
    assert.equal((await rpc(gw, 'badtls', keys.alice, 'message/send', send03('x'))).status, 404);
    assert.ok(stack.daemons['agent-gw'].lines.some((l) => l?.msg?.startsWith('agent not usable') && l.agent === 'badtls'));
    const list = await (await fetch(`${gw}/agents`, { headers: { authorization: `Bearer ${keys.alice}` } })).json();
    assert.ok(!list.agents.some((a) => a.name === 'badtls'));
    assert.match((await rpc(gw, 'secure', keys.alice, 'message/send', send03('hi'))).json.result.parts[0].text, /echo: hi/);
  });

  test("a unary answer that trickles ends at the agent's timeout_ms", async () => {
    const t0 = Date.now();
    const r = await rpc(gw, 'trickle', keys.alice, 'message/send', send03('x'));
    assert.equal(r.json.error.code, -32048, r.text);
    assert.match(r.json.error.message, /timeout/);
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  });

  test('max_concurrent_tasks holds across a registry reload', async () => {
    const first = rpc(gw, 'capped', keys.alice, 'message/send', send03('one'));
    assert.ok(await eventually(() => agent.seen.some((s) => s.url.includes('kind=slow'))), 'the first call is with the agent');
    // A change to the registry makes a new world; the capped agent's count carries over.
    assert.equal(stack.gwctl('agent', 'add', 'extra', '--url', `${agent.url}/rpc`).status, 0);
    assert.ok(await eventually(async () => (await rpc(gw, 'extra', keys.alice, 'message/send', send03('x'))).status === 200), 'reloaded');
    const second = await rpc(gw, 'capped', keys.alice, 'message/send', send03('two'));
    assert.equal(second.json.error.data.reason, 'concurrency', second.text);
    assert.equal((await first).json.result.parts[0].text, 'slow ok');
    assert.equal((await rpc(gw, 'capped', keys.alice, 'message/send', send03('three'))).json.result.parts[0].text, 'slow ok');
  });
});

describe('agent-gw push URLs whose names resolve inward', () => {
  const usable = canUnshareMounts();
  let stack, gw, keys, agent;
  before(async () => {
    if (!usable) return;
    agent = await startRawAgent(async (req, res, body, m) => {
      if (req.url.startsWith('/card')) {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(rawCard('http://ignored/', '1.0')));
        return;
      }
      if (m.params?.message?.parts?.[0]?.text === 'as=task') {
        answer(res, m.id, { task: { id: 'push-task', contextId: 'c', status: { state: 'TASK_STATE_WORKING' } } });
        return;
      }
      answer(res, m.id, { message: { role: 'ROLE_AGENT', messageId: 'r', parts: [{ text: 'ok' }] } });
    });
    // Names only this daemon resolves: one to loopback, one to the metadata address, one public.
    stack = await startStackWithHosts({ 'hooks.loopback.test': '127.0.0.1', 'meta.example.test': '169.254.169.254', 'hooks.public.test': '8.8.8.8' }, { extra: {} });
    gw = stack.url('agent-gw');
    keys = governance(stack);
    await addAgent(stack, 'raw', `${agent.url}/rpc`, { version: '1.0', cardUrl: `${agent.url}/card` });
  });
  after(async () => {
    if (!usable) return;
    await closeClean(stack);
    await agent?.close();
  });

  const send = (configuration, method = 'SendMessage') =>
    rpc(gw, 'raw', keys.alice, method, method === 'SendMessage' ? { message: userMessage10('x'), configuration } : configuration, { version: '1.0', id: 'p' });

  test('a name that resolves to loopback or link-local is refused; a public one is forwarded', { skip: !usable && 'no private mount namespace here (needs root or user namespaces)' }, async () => {
    let n = agent.rpcs().length;
    const loop = await send({ taskPushNotificationConfig: { url: 'https://hooks.loopback.test/hook' } });
    assert.equal(loop.json.error.code, -32047, loop.text);
    assert.equal(loop.json.id, 'p');
    assert.match(loop.json.error.message, /127\.0\.0\.1.*loopback.*hooks\.loopback\.test/);
    const meta = await send({ task_push_notification_config: { url: 'https://meta.example.test/latest/meta-data' } });
    assert.equal(meta.json.error.code, -32047, meta.text);
    assert.match(meta.json.error.message, /169\.254\.169\.254/);
    const task = await rpc(gw, 'raw', keys.alice, 'SendMessage', { message: userMessage10('as=task') }, { version: '1.0' });
    assert.equal(task.json.result.task.id, 'push-task');
    const create = await send({ taskId: 'push-task', url: 'https://hooks.loopback.test/x' }, 'CreateTaskPushNotificationConfig');
    assert.equal(create.json.error.code, -32047, create.text);
    n += 1; // the task alice made for the push-config call
    const unknown = await send({ taskPushNotificationConfig: { url: 'https://nowhere.invalid/hook' } });
    assert.equal(unknown.json.error.code, -32047, unknown.text);
    assert.match(unknown.json.error.message, /could not be resolved/);
    assert.equal(agent.rpcs().length, n, 'none of them reached the agent');
    const fine = await send({ taskPushNotificationConfig: { url: 'https://hooks.public.test/hook' } });
    assert.equal(fine.json?.result?.message?.parts?.[0]?.text, 'ok', fine.text);
  });

  test('a push URL at an address literal is judged as written, without resolving', { skip: !usable && 'no private mount namespace here (needs root or user namespaces)' }, async () => {
    const snake = await send({ push_notification_config: { url: 'https://169.254.169.254/x' } });
    assert.equal(snake.json.error.code, -32047);
    assert.match(snake.json.error.message, /link-local/);
  });
});

describe('agent-gw shutting down with calls in flight', () => {
  let stack, gw, keys, agent;
  before(async () => {
    agent = await startRawAgent(async (req, res, body, m) => {
      if (m?.method === 'message/stream') { // one task event, then nothing
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(`data: ${JSON.stringify({ jsonrpc: '2.0', id: m.id, result: { kind: 'task', id: 'hung', contextId: 'c', status: { state: 'working' } } })}\n\n`);
      }
      // everything else (the card, unary calls, the kill's cancel): never answered
    });
    stack = await Stack.start({ daemons: ['agent-gw'], common: ['shutdown_timeout_ms: 1000'] });
    gw = stack.url('agent-gw');
    keys = governance(stack);
    for (const name of ['hang', 'hang2']) {
      const r = stack.gwctl('agent', 'add', name, '--url', `${agent.url}/rpc`, '--card-url', `${agent.url}/card`);
      assert.equal(r.status, 0, r.stderr);
    }
    await sleep(300);
  });
  after(async () => {
    await stack?.close();
    await agent?.close();
  });

  test('SIGTERM with a card fetch, a call, a stream and a cancel in flight exits 0', async () => {
    const pending = [
      fetch(`${gw}/agents/hang/.well-known/agent-card.json`).catch(() => null),
      rpc(gw, 'hang', keys.alice, 'message/send', send03('x')).catch(() => null),
    ];
    const stream = await fetch(`${gw}/agents/hang2`, {
      method: 'POST',
      headers: { authorization: `Bearer ${keys.alice}`, 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 's', method: 'message/stream', params: send03('x') }),
    });
    const text = stream.text().catch(() => '');
    assert.ok(await eventually(() => agent.seen.length >= 3), 'all three reached the agent');
    assert.equal(stack.gwctl('kill', 'agent', 'hang2', '--reason', 'shutdown drill').status, 0);
    assert.match(await text, /canceled/);
    assert.ok(await eventually(() => agent.rpcs().some((x) => x.json?.method === 'tasks/cancel')), 'the cancel is with the agent');
    const d = stack.daemons['agent-gw'];
    const t0 = Date.now();
    const exit = await d.stop();
    assert.equal(exit.code, 0, d.tail());
    assert.ok(Date.now() - t0 < 10000);
    assert.deepEqual(d.sanitizerReports(), [], d.tail());
    await Promise.all(pending);
  });
});
