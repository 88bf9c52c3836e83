// mcp-gw end to end: the official MCP SDK client, through the gateway, to real MCP servers at
// once: server-everything over stdio, server-memory over stdio, and the project's conformance
// fixture over Streamable HTTP.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

import { startConformanceFixture } from './lib/conformance.mjs';
import { Stack, eventually } from './lib/stack.mjs';

const require = createRequire(import.meta.url);
const EVERYTHING = path.join(path.dirname(require.resolve('@modelcontextprotocol/server-everything/package.json')), 'dist', 'index.js');
const MEMORY = path.join(path.dirname(require.resolve('@modelcontextprotocol/server-memory/package.json')), 'dist', 'index.js');

async function connect(stack, key, { capabilities = {}, endpoint = '/mcp', handlers = true } = {}) {
  const client = new Client({ name: 'e2e', version: '1.0.0' }, { capabilities });
  if (handlers && capabilities.sampling) {
    client.setRequestHandler(CreateMessageRequestSchema, async (req) => ({
      model: 'e2e-model',
      role: 'assistant',
      content: { type: 'text', text: `sampled: ${req.params.messages[0].content.text}` },
    }));
  }
  if (handlers && capabilities.elicitation) {
    client.setRequestHandler(ElicitRequestSchema, async () => ({ action: 'accept', content: { name: 'Ada', age: 36 } }));
  }
  const transport = new StreamableHTTPClientTransport(new URL(stack.url('mcp-gw', endpoint)), {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
  await client.connect(transport);
  return client;
}

async function freePort() {
  const srv = net.createServer();
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

// server-everything over Streamable HTTP on a port of ours (it listens on every interface; the
// test only ever connects to 127.0.0.1). Resolves once it answers.
async function startEverythingHttp(port) {
  const proc = spawn(process.execPath, [EVERYTHING, 'streamableHttp'], { env: { ...process.env, PORT: String(port) }, stdio: 'ignore' });
  const up = await eventually(async () => {
    try {
      await fetch(`http://127.0.0.1:${port}/mcp`, { method: 'GET' });
      return true;
    } catch {
      return false;
    }
  }, 15000, 50);
  assert.ok(up, 'server-everything (HTTP) started');
  return {
    proc,
    async stop() {
      const exited = new Promise((resolve) => proc.on('exit', resolve));
      proc.kill('SIGINT');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    },
  };
}

function text(result) {
  return result.content.filter((c) => c.type === 'text').map((c) => c.text).join('\n');
}

describe('mcp-gw with real MCP servers', () => {
  let stack, conf, evhttp, evport, alice, bob, aliceKey, bobKey;
  before(async () => {
    conf = await startConformanceFixture();
    evport = await freePort();
    evhttp = await startEverythingHttp(evport);
    const dir = path.join('/tmp', `mcp-e2e-${process.pid}`);
    stack = await Stack.start({
      daemons: ['mcp-gw'],
      extra: {
        mcp_gw: [
          'list_changed_debounce_ms: 20',
          'servers:',
          '  - name: everything',
          '    transport: stdio',
          `    command: ${process.execPath}`,
          `    args: [${EVERYTHING}, stdio]`,
          `    env: ["PATH=${process.env.PATH}"]`,
          '    start: boot',
          '    restart_min_ms: 100',
          '  - name: memory',
          '    transport: stdio',
          `    command: ${process.execPath}`,
          `    args: [${MEMORY}]`,
          `    env: ["PATH=${process.env.PATH}", "MEMORY_FILE_PATH=${dir}-memory.jsonl"]`,
          '    start: boot',
          '    restart_min_ms: 100',
          '  - name: conf',
          '    transport: http',
          `    url: ${conf.url}`,
          '  - name: evhttp',
          '    transport: http',
          `    url: http://127.0.0.1:${evport}/mcp`,
          'virtual_servers:',
          '  - name: echo-only',
          '    tools: [everything__echo]',
        ],
      },
    });
    const file = path.join(stack.dir, 'p.yaml');
    writeFileSync(file, [
      'principals: [{id: alice, kind: user, team: ml}, {id: bob, kind: user, team: ops}]',
      'rules:',
      '  - {id: ml-all, effect: allow, subjects: {teams: [ml]}, plane: mcp, resources: ["*"], actions: ["*"]}',
      '  - {id: no-env, effect: deny, subjects: {teams: [ml]}, plane: mcp, resources: [everything/get-env], actions: ["*"]}',
      '  - {id: ops-memory, effect: allow, subjects: {teams: [ops]}, plane: mcp, resources: ["memory/*"], actions: ["*"]}',
      '',
    ].join('\n'));
    assert.equal(stack.gwctl('apply', '-f', file).status, 0);
    aliceKey = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'alice').stdout).key;
    bobKey = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'bob').stdout).key;
    alice = await connect(stack, aliceKey, { capabilities: { sampling: {}, elicitation: {} } });
    bob = await connect(stack, bobKey);
  });
  after(async () => {
    await alice?.close();
    await bob?.close();
    const results = await stack?.close();
    await conf?.stop();
    await evhttp?.stop();
    assert.equal(results?.['mcp-gw'].code, 0, stack?.daemons['mcp-gw'].tail());
    assert.deepEqual(stack.daemons['mcp-gw'].sanitizerReports(), []);
    // The gateway stopped its stdio children with itself.
    const left = (() => {
      try {
        return execFileSync('pgrep', ['-f', `${MEMORY}|${EVERYTHING} stdio`]).toString().trim();
      } catch {
        return '';
      }
    })();
    assert.equal(left, '', 'no stdio server outlives the gateway');
  });

  test('tools of every server are listed, namespaced, and filtered by policy', async () => {
    // server-everything registers its tools after the handshake and then says its list changed:
    // the gateway fetches the list again.
    const names = await eventually(async () => {
      const n = (await alice.listTools()).tools.map((t) => t.name);
      return n.includes('everything__echo') ? n : null;
    }, 10000, 50);
    assert.ok(names, 'everything__echo listed');
    for (const n of ['everything__echo', 'everything__get-sum', 'memory__read_graph', 'conf__test_simple_text'])
      assert.ok(names.includes(n), `${n} in ${names.join(', ')}`);
    assert.ok(!names.includes('everything__get-env'), 'a denied tool is not listed');
    const bobs = (await bob.listTools()).tools.map((t) => t.name);
    assert.ok(bobs.length > 0 && bobs.every((n) => n.startsWith('memory__')), bobs.join(', '));
  });

  test('a call reaches the right server and its answer comes back', async () => {
    const r = await alice.callTool({ name: 'everything__echo', arguments: { message: 'hello gateway' } });
    assert.match(text(r), /hello gateway/);
    const g = await alice.callTool({ name: 'memory__read_graph', arguments: {} });
    assert.ok(!g.isError, text(g));
    const c = await alice.callTool({ name: 'conf__test_simple_text', arguments: {} });
    assert.ok(!c.isError, text(c));
    const h = await alice.callTool({ name: 'evhttp__echo', arguments: { message: 'over http' } });
    assert.match(text(h), /over http/);
  });

  test('a hallucinated tool gets an error that names the nearest tool', async () => {
    await assert.rejects(alice.callTool({ name: 'everything__ecko', arguments: { message: 'x' } }), (e) => {
      assert.equal(e.code, -32602);
      assert.match(e.message, /Unknown tool "everything__ecko"/);
      assert.match(e.message, /Did you mean "everything__echo"\?/);
      return true;
    });
  });

  test('a wrong argument type is refused with a result the model can act on, before the server', async () => {
    const r = await alice.callTool({ name: 'everything__get-sum', arguments: { a: '5', b: 2 } });
    assert.equal(r.isError, true);
    assert.match(text(r), /Invalid arguments for tool "everything__get-sum"/);
    assert.match(text(r), /- a: /);
    assert.match(text(r), /number/);
    assert.match(text(r), /input schema/);
  });

  test('policy refuses a denied tool and another principal\'s tools', async () => {
    await assert.rejects(alice.callTool({ name: 'everything__get-env', arguments: {} }), (e) => e.code === -32010);
    await assert.rejects(bob.callTool({ name: 'everything__echo', arguments: { message: 'x' } }), (e) => e.code === -32010);
    const r = await bob.callTool({ name: 'memory__read_graph', arguments: {} });
    assert.ok(!r.isError);
  });

  test('progress notifications reach the caller', async () => {
    const seen = [];
    const r = await alice.callTool(
      { name: 'everything__trigger-long-running-operation', arguments: { duration: 0.3, steps: 3 } },
      undefined,
      { onprogress: (p) => seen.push(p.progress) },
    );
    assert.ok(!r.isError, text(r));
    assert.deepEqual(seen, [1, 2, 3]);
  });

  test('sampling and elicitation round-trip from a server to the client and back', async () => {
    const s = await alice.callTool({ name: 'everything__trigger-sampling-request', arguments: { prompt: 'ping', maxTokens: 5 } });
    assert.match(text(s), /sampled: .*ping/);
    const e = await alice.callTool({ name: 'conf__test_elicitation', arguments: { message: 'who?' } });
    assert.ok(!e.isError, text(e));
  });

  test('resources and prompts are aggregated and routed', async () => {
    const { resources } = await alice.listResources();
    const doc = resources.find((r) => r.uri.startsWith('demo://resource/static/document/'));
    assert.ok(doc, resources.map((r) => r.uri).join(', '));
    const read = await alice.readResource({ uri: doc.uri });
    assert.ok(read.contents.length > 0);
    const { prompts } = await alice.listPrompts();
    assert.ok(prompts.some((p) => p.name === 'everything__simple-prompt'), prompts.map((p) => p.name).join(', '));
    const p = await alice.getPrompt({ name: 'everything__args-prompt', arguments: { city: 'Lyon' } });
    assert.ok(p.messages.length > 0);
  });

  test('a virtual server exposes only its tools', async () => {
    const v = await connect(stack, aliceKey, { endpoint: '/mcp/echo-only' });
    try {
      const names = (await v.listTools()).tools.map((t) => t.name);
      assert.deepEqual(names, ['everything__echo']);
      await assert.rejects(v.callTool({ name: 'everything__get-sum', arguments: { a: 1, b: 2 } }), (e) => e.code === -32602);
    } finally {
      await v.close();
    }
  });

  test('transport checks: Origin, credentials, sessions, Accept', async () => {
    const url = stack.url('mcp-gw', '/mcp');
    const init = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } });
    const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', authorization: `Bearer ${aliceKey}` };
    let res = await fetch(url, { method: 'POST', headers: { ...headers, origin: 'http://evil.example' }, body: init });
    assert.equal(res.status, 403);
    res = await fetch(url, { method: 'POST', headers: { ...headers, authorization: 'Bearer nope' }, body: init });
    assert.equal(res.status, 401);
    assert.ok(res.headers.get('www-authenticate'));
    res = await fetch(url, { method: 'POST', headers: { ...headers, accept: 'text/html' }, body: init });
    assert.equal(res.status, 406);
    const ping = JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'ping' });
    res = await fetch(url, { method: 'POST', headers, body: ping });
    assert.equal(res.status, 400);
    res = await fetch(url, { method: 'POST', headers: { ...headers, 'mcp-session-id': 'x'.repeat(43) }, body: ping });
    assert.equal(res.status, 404);
    res = await fetch(url, { method: 'POST', headers, body: init });
    assert.equal(res.status, 200);
    const sid = res.headers.get('mcp-session-id');
    assert.match(sid, /^[A-Za-z0-9_-]{43}$/);
    // Another principal cannot use the session.
    res = await fetch(url, { method: 'POST', headers: { ...headers, authorization: `Bearer ${bobKey}`, 'mcp-session-id': sid }, body: ping });
    assert.equal(res.status, 404);
    res = await fetch(url, { method: 'DELETE', headers: { ...headers, 'mcp-session-id': sid } });
    assert.equal(res.status, 200);
    res = await fetch(url, { method: 'POST', headers: { ...headers, 'mcp-session-id': sid }, body: ping });
    assert.equal(res.status, 404);
  });

  test('every tools/call is audited by shape and hash, not by value', async () => {
    await alice.callTool({ name: 'everything__echo', arguments: { message: 'secret-value-123' } });
    const rows = await eventually(() => {
      const out = stack.sql("SELECT detail FROM audit_log WHERE action = 'mcp.tools/call' AND target = 'everything/echo'");
      return out.includes('sha256') ? out : null;
    });
    assert.ok(rows, 'audit rows');
    assert.ok(!rows.includes('secret-value-123'), 'raw arguments are not audited by default');
  });

  test('a tool whose definition drifts is quarantined until approved', async () => {
    await eventually(() => stack.sql("SELECT count(*) FROM mcp_tool_pins WHERE server = 'memory' AND tool = 'read_graph'").trim() === '1');
    stack.sql("UPDATE mcp_tool_pins SET hash = 'drifted' WHERE server = 'memory' AND tool = 'read_graph'");
    const hidden = await eventually(async () => !(await alice.listTools()).tools.some((t) => t.name === 'memory__read_graph'));
    assert.ok(hidden, 'the drifted tool is hidden');
    await assert.rejects(alice.callTool({ name: 'memory__read_graph', arguments: {} }), (e) => e.code === -32013);
    await eventually(() => stack.gwctl('mcp', 'tools', '--drift').stdout.includes('read_graph'));
    const approve = stack.gwctl('mcp', 'approve', 'memory/read_graph');
    assert.equal(approve.status, 0, approve.stderr);
    const back = await eventually(async () => (await alice.listTools()).tools.some((t) => t.name === 'memory__read_graph'));
    assert.ok(back, 'approved tool is listed again');
  });

  test('rate limits apply per principal and per tool', async () => {
    assert.equal(stack.gwctl('limit', 'set', '--principal', 'alice', '--resource', 'everything/get-tiny-image', '--rpm', '2').status, 0);
    const call = () => alice.callTool({ name: 'everything__get-tiny-image', arguments: {} });
    const limited = await eventually(async () => {
      try {
        await call();
        return false;
      } catch (e) {
        return e.code === -32011 ? e : false;
      }
    }, 5000, 10);
    assert.ok(limited, 'the third call in a minute is refused');
    assert.ok(limited.data.retry_after_s > 0);
    const other = await alice.callTool({ name: 'everything__echo', arguments: { message: 'still fine' } });
    assert.match(text(other), /still fine/);
  });

  test('a killed principal is refused and its open sessions end; a release restores it', async () => {
    const kill = "INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms) VALUES ('principal', 'bob', 'drill', 'e2e', strftime('%s','now') * 1000)";
    stack.sql(kill);
    const ended = await eventually(async () => {
      try {
        await bob.listTools();
        return false;
      } catch {
        return true;
      }
    });
    assert.ok(ended, "bob's session ended");
    await assert.rejects(connect(stack, bobKey), /403|suspended/i);
    const r = await alice.callTool({ name: 'everything__echo', arguments: { message: 'unaffected' } });
    assert.match(text(r), /unaffected/);
    stack.sql("UPDATE kills SET released_at_ms = strftime('%s','now') * 1000, released_by = 'e2e' WHERE target = 'bob'");
    const back = await eventually(async () => {
      try {
        bob = await connect(stack, bobKey);
        return true;
      } catch {
        return false;
      }
    });
    assert.ok(back, 'bob can connect again');
  });

  test('an HTTP server that restarts loses its sessions; the gateway opens new ones', async () => {
    await evhttp.stop();
    await assert.rejects(alice.callTool({ name: 'evhttp__echo', arguments: { message: 'down' } }), (e) => e.code === -32012);
    evhttp = await startEverythingHttp(evport);
    const r = await alice.callTool({ name: 'evhttp__echo', arguments: { message: 'back' } });
    assert.match(text(r), /back/);
  });

  test('a stdio server that dies is restarted, and calls work again', async () => {
    const pids = execFileSync('pgrep', ['-f', MEMORY]).toString().trim().split('\n').map(Number);
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    const ok = await eventually(async () => {
      try {
        const r = await alice.callTool({ name: 'memory__read_graph', arguments: {} });
        return !r.isError;
      } catch {
        return false;
      }
    }, 10000, 100);
    assert.ok(ok, 'memory server is back');
    const m = await (await fetch(stack.url('mcp-gw', '/metrics'))).text();
    assert.match(m, /triplane_mcp_upstream_restarts_total\{server="memory"\} [1-9]/);
  });
});
