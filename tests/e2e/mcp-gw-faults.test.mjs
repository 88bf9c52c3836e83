// mcp-gw when things go wrong in ways a user notices: calls cancelled or orphaned mid-flight,
// sessions deleted under a slow call or a slow handshake, POST streams dropped and resumed,
// hostile names, answers near the size limits, upstreams that answer on the wrong session, and a
// stdio server shared by several sessions. The cases speak raw Streamable HTTP (fetch), since
// dropping a connection mid-stream or resuming one with Last-Event-ID is below the SDK's API. The
// main upstream is a small Streamable HTTP server of the test's own that answers when told to and
// records what reaches it.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Stack, eventually, sleep } from './lib/stack.mjs';

// ---- the recording upstream ----

const REC_TOOLS = [
  {
    name: 'sleep',
    description: 'answers after ms milliseconds, or at once when cancelled',
    inputSchema: { type: 'object', properties: { ms: { type: 'integer' }, tag: { type: 'string' } }, required: ['ms'] },
  },
  { name: 'big', inputSchema: { type: 'object', properties: { bytes: { type: 'integer' } }, required: ['bytes'] } },
  { name: 'hijack', description: 'answers with another request id', inputSchema: { type: 'object', properties: { id: { type: 'integer' } } } },
  { name: 'relist', description: 'says its list of `kind` changed', inputSchema: { type: 'object', properties: { kind: { type: 'string' } } } },
  // Schemas long enough to be quoted back cut, with the cut inside a two-byte character for one
  // of the two (their prefixes differ by one byte).
  ...['accented', 'accented1'].map((name, pad) => ({
    name,
    inputSchema: { type: 'object', properties: { n: { type: 'integer', description: 'a'.repeat(pad) + 'é'.repeat(900) } } },
  })),
];

async function startRecorder() {
  const seen = []; // {sid, msg} in arrival order; DELETEs as {sid, msg: {method: 'DELETE'}}
  const delays = { init: 0 };
  const cancels = new Map(); // our request id -> wake the sleeper
  const answer = (res, body, headers = {}) => {
    res.writeHead(200, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const result = (id, result) => ({ jsonrpc: '2.0', id, result });
  const text = (t) => ({ content: [{ type: 'text', text: t }] });
  async function call(msg, res) {
    const { name, arguments: args = {} } = msg.params;
    if (name === 'sleep') {
      const cancelled = await Promise.race([
        sleep(args.ms).then(() => false),
        new Promise((resolve) => cancels.set(msg.id, () => resolve(true))),
      ]);
      cancels.delete(msg.id);
      return answer(res, result(msg.id, text(cancelled ? 'cancelled' : `slept ${args.ms} ms`)));
    }
    if (name === 'big') return answer(res, result(msg.id, text('x'.repeat(args.bytes))));
    if (name === 'hijack') return answer(res, result(args.id, text('HIJACKED')));
    if (name === 'relist') {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', method: `notifications/${args.kind}/list_changed` })}\n\n`);
      res.end(`event: message\ndata: ${JSON.stringify(result(msg.id, text('changed')))}\n\n`);
      return;
    }
    return answer(res, result(msg.id, text(`called ${name}`)));
  }
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', async () => {
      const sid = req.headers['mcp-session-id'];
      if (req.method === 'GET') return void res.writeHead(405).end();
      if (req.method === 'DELETE') {
        seen.push({ sid, msg: { method: 'DELETE' } });
        return void res.writeHead(200).end();
      }
      const msg = JSON.parse(body);
      seen.push({ sid, msg });
      if (msg.method === 'notifications/cancelled') cancels.get(msg.params.requestId)?.();
      if (msg.id === undefined || msg.method === undefined) return void res.writeHead(202).end();
      switch (msg.method) {
        case 'initialize':
          await sleep(delays.init);
          return answer(res, result(msg.id, {
            protocolVersion: '2025-11-25',
            capabilities: { tools: { listChanged: true }, prompts: { listChanged: true }, completions: {} },
            serverInfo: { name: 'recorder', version: '1' },
          }), { 'mcp-session-id': randomUUID() });
        case 'tools/list':
          return answer(res, result(msg.id, { tools: REC_TOOLS }));
        case 'prompts/list':
          return answer(res, result(msg.id, { prompts: [{ name: 'greet', arguments: [{ name: 'who' }] }] }));
        case 'completion/complete':
          return answer(res, result(msg.id, { completion: { values: ['Ada'] } }));
        case 'tools/call':
          return call(msg, res);
        default:
          return answer(res, result(msg.id, {}));
      }
    });
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${srv.address().port}/mcp`,
    seen,
    delays,
    // The first message recorded with this method for which pred holds.
    find: (method, pred = () => true) => seen.find((s) => s.msg.method === method && pred(s.msg)),
    close: () => new Promise((resolve) => (srv.closeAllConnections(), srv.close(resolve))),
  };
}

// ---- a stdio server shared by every session ----

// It keeps one set of subscriptions (as a real shared child does), reports it from the tool
// `subs`, sends resources/updated for each from `touch`, and logs with no request in flight
// from `log_later`.
const SHARED_SERVER = `
import readline from 'node:readline';
const subs = new Set();
const send = (m) => process.stdout.write(JSON.stringify(m) + '\\n');
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const msg = JSON.parse(line);
  if (msg.id === undefined || msg.method === undefined) return;
  const reply = (result) => send({ jsonrpc: '2.0', id: msg.id, result });
  const schema = { type: 'object' };
  switch (msg.method) {
    case 'initialize':
      return reply({ protocolVersion: '2025-11-25', capabilities: { tools: {}, resources: { subscribe: true } }, serverInfo: { name: 'shared', version: '1' } });
    case 'tools/list':
      return reply({ tools: ['touch', 'subs', 'log_later'].map((name) => ({ name, inputSchema: schema })) });
    case 'resources/list':
      return reply({ resources: [{ uri: 'shared://doc', name: 'doc' }] });
    case 'resources/templates/list':
      return reply({ resourceTemplates: [] });
    case 'resources/subscribe':
      subs.add(msg.params.uri);
      return reply({});
    case 'resources/unsubscribe':
      subs.delete(msg.params.uri);
      return reply({});
    case 'tools/call':
      if (msg.params.name === 'touch') for (const uri of subs) send({ jsonrpc: '2.0', method: 'notifications/resources/updated', params: { uri } });
      if (msg.params.name === 'log_later') setTimeout(() => send({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'nobody asked' } }), 100);
      return reply({ content: [{ type: 'text', text: JSON.stringify([...subs]) }] });
    default:
      return reply({});
  }
});
`;

// ---- a raw client ----

// Rejects when promise has not settled within ms.
async function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function parseEvent(raw) {
  const ev = {};
  for (const line of raw.split('\n')) {
    const m = /^([a-z]+): ?(.*)$/.exec(line);
    if (m) ev[m[1]] = m[1] === 'data' && ev.data !== undefined ? `${ev.data}\n${m[2]}` : m[2];
  }
  if (ev.data) ev.message = JSON.parse(ev.data);
  return ev;
}

// Reads the SSE events of a response as they arrive.
function sseReader(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  return {
    // The next event, or null when the stream ended.
    async next(ms = 10000) {
      for (;;) {
        const i = buf.indexOf('\n\n');
        if (i >= 0) {
          const raw = buf.slice(0, i);
          buf = buf.slice(i + 2);
          return parseEvent(raw);
        }
        const { value, done } = await within(reader.read(), ms, 'the next event');
        if (done) return null;
        buf += value;
      }
    },
    // Every event up to the end of the stream, which must come within ms.
    async rest(ms = 10000) {
      const deadline = Date.now() + ms;
      const out = [];
      for (let ev; (ev = await this.next(Math.max(1, deadline - Date.now()))) !== null; ) out.push(ev);
      return out;
    },
    // Waits for a message for which pred holds.
    async until(pred, ms = 10000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const ev = await this.next(Math.max(1, deadline - Date.now()));
        if (ev === null) throw new Error('the stream ended first');
        if (ev.message && pred(ev.message)) return ev.message;
      }
    },
    cancel: () => reader.cancel().catch(() => {}),
  };
}

function rawClient(stack, key, endpoint = '/mcp') {
  const url = stack.url('mcp-gw', endpoint);
  const headers = (sid, extra = {}) => ({
    authorization: `Bearer ${key}`,
    accept: 'application/json, text/event-stream',
    'content-type': 'application/json',
    ...(sid ? { 'mcp-session-id': sid, 'mcp-protocol-version': '2025-11-25' } : {}),
    ...extra,
  });
  let next = 100;
  return {
    async open() {
      const init = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'faults', version: '1' } } };
      const res = await this.post(null, init);
      assert.equal(res.status, 200, await res.clone().text());
      const sid = res.headers.get('mcp-session-id');
      await res.text();
      const ack = await this.post(sid, { jsonrpc: '2.0', method: 'notifications/initialized' });
      assert.equal(ack.status, 202);
      return sid;
    },
    post: (sid, msg, init = {}) => fetch(url, { method: 'POST', headers: headers(sid), body: JSON.stringify(msg), ...init }),
    // Sends a request; {id, response}.
    request(sid, method, params = {}, init = {}) {
      const id = ++next;
      return { id, response: this.post(sid, { jsonrpc: '2.0', id, method, params }, init) };
    },
    // The answer to request id, from a JSON or an SSE response.
    async answer(res, id) {
      if ((res.headers.get('content-type') ?? '').startsWith('application/json')) return res.json();
      return sseReader(res).until((m) => m.id === id && (m.result !== undefined || m.error !== undefined));
    },
    async call(sid, method, params = {}) {
      const { id, response } = this.request(sid, method, params);
      return this.answer(await response, id);
    },
    get: (sid, extra = {}) => fetch(url, { method: 'GET', headers: headers(sid, { accept: 'text/event-stream', ...extra }) }),
    del: (sid) => fetch(url, { method: 'DELETE', headers: headers(sid) }),
    cancel: (sid, requestId) => fetch(url, { method: 'POST', headers: headers(sid), body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId, reason: 'the user changed their mind' } }) }),
  };
}

async function metrics(stack) {
  return (await fetch(stack.url('mcp-gw', '/metrics'))).text();
}

function textOf(answer) {
  assert.ok(answer?.result, JSON.stringify(answer)?.slice(0, 300));
  return answer.result.content.map((c) => c.text).join('\n');
}

async function startGateway(extra) {
  const stack = await Stack.start({ daemons: ['mcp-gw'], extra: { mcp_gw: extra } });
  const file = path.join(stack.dir, 'p.yaml');
  writeFileSync(file, [
    'principals: [{id: alice, kind: user, team: ml}]',
    'rules:',
    '  - {id: ml-all, effect: allow, subjects: {teams: [ml]}, plane: mcp, resources: ["*"], actions: ["*"]}',
    '',
  ].join('\n'));
  assert.equal(stack.gwctl('apply', '-f', file).status, 0);
  const { key } = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'alice').stdout);
  return { stack, key };
}

async function stopGateway(stack) {
  const results = await stack?.close();
  assert.equal(results?.['mcp-gw'].code, 0, stack?.daemons['mcp-gw'].tail());
  assert.deepEqual(stack.daemons['mcp-gw'].sanitizerReports(), []);
}

describe('mcp-gw under faults', () => {
  let stack, key, rec, c, dir;
  before(async () => {
    rec = await startRecorder();
    dir = mkdtempSync(path.join(tmpdir(), 'mcp-faults-'));
    const shared = path.join(dir, 'shared-server.mjs');
    writeFileSync(shared, SHARED_SERVER);
    ({ stack, key } = await startGateway([
      'list_changed_debounce_ms: 20',
      'servers:',
      '  - name: rec',
      '    transport: http',
      `    url: ${rec.url}`,
      '  - name: shared',
      '    transport: stdio',
      `    command: ${process.execPath}`,
      `    args: [${shared}]`,
      '    start: boot',
      'virtual_servers:',
      '  - name: sleep-only',
      '    tools: [rec__sleep]',
    ]));
    c = rawClient(stack, key);
  });
  after(async () => {
    await stopGateway(stack);
    await rec?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('a list request whose POST dropped while the catalogs loaded is answered on the resuming GET', async () => {
    // Runs first: nothing has loaded the tools catalog yet, and the handshake of this session's
    // upstream link is slow, so the list has to wait and is answered on an SSE stream.
    rec.delays.init = 600;
    try {
      const sid = await c.open();
      const ac = new AbortController();
      const { id, response } = c.request(sid, 'tools/list', {}, { signal: ac.signal });
      const res = await response;
      assert.equal(res.headers.get('content-type'), 'text/event-stream');
      const prime = await sseReader(res).next();
      assert.match(prime.id, /^\d+-0$/);
      ac.abort();
      await sleep(100);
      const get = await c.get(sid, { 'last-event-id': prime.id });
      assert.equal(get.status, 200);
      const list = await sseReader(get).until((m) => m.id === id);
      assert.ok(list.result.tools.some((t) => t.name === 'rec__sleep'), JSON.stringify(list).slice(0, 300));
    } finally {
      rec.delays.init = 0;
    }
  });

  test('a cancelled tool call ends its POST without an answer, and the server hears the cancellation', async () => {
    const sid = await c.open();
    const { id, response } = c.request(sid, 'tools/call', { name: 'rec__sleep', arguments: { ms: 30000, tag: 'cancel-me' } });
    const res = await response;
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    const stream = sseReader(res);
    const sent = await eventually(() => rec.find('tools/call', (m) => m.params.arguments.tag === 'cancel-me'));
    assert.ok(sent, 'the call reached the server');
    assert.equal((await c.cancel(sid, id)).status, 202);
    const rest = await stream.rest(5000); // throws when the POST stays open
    assert.ok(!rest.some((e) => e.message?.id === id), 'no answer follows a cancellation');
    const note = await eventually(() => rec.find('notifications/cancelled', (m) => m.params.requestId === sent.msg.id));
    assert.ok(note, 'notifications/cancelled with the id the server knows');
    assert.equal(note.sid, sent.sid, 'on the upstream session of the call');
    const audited = await eventually(() => stack.sql("SELECT count(*) FROM audit_log WHERE action = 'mcp.tools/call' AND detail LIKE '%\"outcome\":\"cancelled\"%'") !== '0');
    assert.ok(audited, 'the call is audited as cancelled');
  });

  test('a call cancelled while it waits for the upstream handshake leaves the queue; the one behind it is answered', async () => {
    await c.call(await c.open(), 'tools/list'); // the catalog is loaded: calls go straight to the link
    rec.delays.init = 500;
    try {
      const sid = await c.open();
      const first = c.request(sid, 'tools/call', { name: 'rec__sleep', arguments: { ms: 10, tag: 'queued-1' } });
      const firstStream = sseReader(await first.response);
      const second = c.request(sid, 'tools/call', { name: 'rec__sleep', arguments: { ms: 10, tag: 'queued-2' } });
      const secondRes = await second.response;
      assert.equal((await c.cancel(sid, first.id)).status, 202);
      assert.match(textOf(await c.answer(secondRes, second.id)), /slept 10 ms/);
      const rest = await firstStream.rest(5000);
      assert.ok(!rest.some((e) => e.message?.id === first.id), 'the cancelled call got no answer');
      assert.equal(rec.find('tools/call', (m) => m.params.arguments.tag === 'queued-1'), undefined, 'it never reached the server');
    } finally {
      rec.delays.init = 0;
    }
  });

  test('deleting a session with a slow call in flight ends the call, and the gateway serves new sessions', async () => {
    const sid = await c.open();
    const { response } = c.request(sid, 'tools/call', { name: 'rec__sleep', arguments: { ms: 30000, tag: 'orphan' } });
    const stream = sseReader(await response);
    const sent = await eventually(() => rec.find('tools/call', (m) => m.params.arguments.tag === 'orphan'));
    assert.ok(sent);
    assert.equal((await c.del(sid)).status, 200);
    await stream.rest(5000);
    // The upstream session ends with the client's (its link is closed with a DELETE), and the
    // call with it.
    assert.ok(await eventually(() => rec.seen.some((s) => s.msg.method === 'DELETE' && s.sid === sent.sid)), 'the upstream session was deleted');
    assert.equal((await c.post(sid, { jsonrpc: '2.0', id: 9, method: 'ping' })).status, 404);
    const fresh = await c.open();
    assert.match(textOf(await c.call(fresh, 'tools/call', { name: 'rec__sleep', arguments: { ms: 10, tag: 'after-delete' } })), /slept 10 ms/);
  });

  test('a session that ends while its handshake carries the catalog fetch does not strand the next session', async () => {
    // The prompts catalog is forgotten, then fetched through a session whose upstream handshake
    // is slow; that session is deleted meanwhile. The next session's list must still come.
    await c.call(await c.open(), 'tools/call', { name: 'rec__relist', arguments: { kind: 'prompts' } });
    rec.delays.init = 400;
    try {
      const a = await c.open();
      const { id, response } = c.request(a, 'prompts/list');
      const stream = sseReader(await response);
      await sleep(100);
      assert.equal((await c.del(a)).status, 200);
      const rest = await stream.rest(5000);
      assert.ok(!rest.some((e) => e.message?.id === id));
      const b = await c.open();
      const list = await within(c.call(b, 'prompts/list'), 5000, "the next session's prompts/list");
      assert.deepEqual(list.result.prompts.map((p) => p.name), ['rec__greet']);
    } finally {
      rec.delays.init = 0;
    }
  });

  test('a dropped POST stream is resumed with Last-Event-ID, and the answer arrives on the GET', async () => {
    const sid = await c.open();
    const ac = new AbortController();
    const { id, response } = c.request(sid, 'tools/call', { name: 'rec__sleep', arguments: { ms: 800, tag: 'resume' } }, { signal: ac.signal });
    const prime = await sseReader(await response).next();
    assert.match(prime.id, /^\d+-0$/);
    ac.abort();
    assert.ok(await eventually(() => rec.find('tools/call', (m) => m.params.arguments.tag === 'resume')));
    const get = await c.get(sid, { 'last-event-id': prime.id });
    assert.equal(get.status, 200);
    const events = await sseReader(get).rest(5000);
    const answer = events.find((e) => e.message?.id === id);
    assert.match(textOf(answer?.message), /slept 800 ms/);
  });

  test('a long non-ASCII unknown tool name gets a -32602 error, and made-up names make no metric series', async () => {
    const sid = await c.open();
    const name = `outil_${'é'.repeat(3000)}/x`;
    const { id, response } = c.request(sid, 'tools/call', { name, arguments: {} });
    const res = await response;
    assert.equal(res.status, 200);
    const answer = await c.answer(res, id);
    assert.equal(answer.error?.code, -32602, JSON.stringify(answer).slice(0, 300));
    assert.match(answer.error.message, /^Unknown tool "outil_é+…"\. .*Available tools: \[.*"rec__sleep"/);
    assert.ok(answer.error.message.length < 4000, `a bounded message (${answer.error.message.length})`);
    const method = await c.call(sid, `é${'ü'.repeat(400)}`);
    assert.equal(method.error?.code, -32601);
    for (let i = 0; i < 10; i++) assert.equal((await c.call(sid, 'tools/call', { name: `evil${i}/x`, arguments: {} })).error?.code, -32602);
    const series = (await metrics(stack)).split('\n').filter((l) => l.startsWith('triplane_mcp_calls_total{') && l.includes('outcome="unknown_tool"'));
    assert.equal(series.length, 1, series.join('\n'));
    assert.match(series[0], /server="unknown"/);
  });

  test('arguments refused against a schema with non-ASCII text get a teaching result, not a 500', async () => {
    const sid = await c.open();
    for (const tool of ['rec__accented', 'rec__accented1']) {
      const { id, response } = c.request(sid, 'tools/call', { name: tool, arguments: { n: 'not a number' } });
      const res = await response;
      assert.equal(res.status, 200);
      const answer = await c.answer(res, id);
      assert.equal(answer.result?.isError, true, JSON.stringify(answer).slice(0, 300));
      assert.match(textOf(answer), /Its input schema: \{.*é…\(truncated\)|Its input schema: \{.*é …\(truncated\)/s);
    }
  });

  test('an answer larger than the slow-client cut-off still reaches a reading client', async () => {
    const sid = await c.open();
    const bytes = 9 * 1024 * 1024;
    const answer = await within(c.call(sid, 'tools/call', { name: 'rec__big', arguments: { bytes } }), 30000, 'the 9 MiB answer');
    assert.equal(textOf(answer).length, bytes);
  });

  test("an upstream answer carrying another session's request id does not finish that request", async () => {
    const victim = await c.open();
    const { id, response } = c.request(victim, 'tools/call', { name: 'rec__sleep', arguments: { ms: 1500, tag: 'victim' } });
    const pending = response.then((res) => c.answer(res, id));
    const sent = await eventually(() => rec.find('tools/call', (m) => m.params.arguments.tag === 'victim'));
    assert.ok(sent);
    const thief = await c.open();
    const stolen = await c.call(thief, 'tools/call', { name: 'rec__hijack', arguments: { id: sent.msg.id } });
    assert.ok(stolen.error, 'the request that was answered with another id fails');
    assert.match(textOf(await pending), /slept 1500 ms/);
  });

  test('a virtual server completes no prompt it does not expose', async () => {
    await c.call(await c.open(), 'prompts/list');
    const ref = { ref: { type: 'ref/prompt', name: 'rec__greet' }, argument: { name: 'who', value: 'A' } };
    const whole = await c.call(await c.open(), 'completion/complete', ref);
    assert.deepEqual(whole.result?.completion?.values, ['Ada'], JSON.stringify(whole));
    const v = rawClient(stack, key, '/mcp/sleep-only');
    const limited = await v.call(await v.open(), 'completion/complete', ref);
    assert.equal(limited.error?.code, -32602, JSON.stringify(limited));
  });

  test('a shared stdio server: updates reach every subscriber, and one unsubscribe does not end the others', async () => {
    const a = await c.open();
    const b = await c.open();
    const streams = [];
    for (const sid of [a, b]) {
      const get = await c.get(sid);
      assert.equal(get.status, 200);
      streams.push(sseReader(get));
    }
    for (const sid of [a, b]) assert.ok((await c.call(sid, 'resources/subscribe', { uri: 'shared://doc' })).result);
    await c.call(a, 'tools/call', { name: 'shared__touch', arguments: {} });
    for (const s of streams) {
      const note = await s.until((m) => m.method === 'notifications/resources/updated');
      assert.equal(note.params.uri, 'shared://doc');
    }
    assert.ok((await c.call(b, 'resources/unsubscribe', { uri: 'shared://doc' })).result);
    assert.deepEqual(JSON.parse(textOf(await c.call(a, 'tools/call', { name: 'shared__subs', arguments: {} }))), ['shared://doc'], 'a still subscribed at the child');
    assert.ok((await c.call(a, 'resources/unsubscribe', { uri: 'shared://doc' })).result);
    assert.deepEqual(JSON.parse(textOf(await c.call(a, 'tools/call', { name: 'shared__subs', arguments: {} }))), [], 'the last unsubscribe reached the child');
    // A log line the child writes with no call in flight belongs to no session: dropped, counted.
    await c.call(a, 'tools/call', { name: 'shared__log_later', arguments: {} });
    const dropped = await eventually(async () => /triplane_mcp_messages_dropped_total\{reason="unattributable"\} [1-9]/.test(await metrics(stack)));
    assert.ok(dropped, 'the unattributable message was counted');
    for (const s of streams) s.cancel();
  });
});

describe('mcp-gw idle sessions', () => {
  let stack, key;
  before(async () => {
    ({ stack, key } = await startGateway(['session_idle_timeout_ms: 1000', 'servers: []']));
  });
  after(async () => {
    await stopGateway(stack);
  });

  test('a session with an open GET stream is not idle; one without is ended', async () => {
    const c = rawClient(stack, key);
    const listening = await c.open();
    const quiet = await c.open();
    const get = await c.get(listening);
    assert.equal(get.status, 200);
    const stream = sseReader(get);
    await sleep(3000);
    assert.equal((await c.post(quiet, { jsonrpc: '2.0', id: 1, method: 'ping' })).status, 404, 'the quiet session expired');
    const ping = await c.post(listening, { jsonrpc: '2.0', id: 2, method: 'ping' });
    assert.equal(ping.status, 200, 'the session with a GET stream lives on');
    await ping.text();
    stream.cancel();
  });
});
