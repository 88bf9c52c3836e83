// The kill-switch drill, end to end: all three daemons in front of real upstreams — the inference
// fixture (model-gw), the MCP conformance fixture over HTTP (mcp-gw), SDK-built A2A agents
// (agent-gw) — with long-running work open on every plane for two identities: `planner` (an
// agent principal) and `analyst` (a user who must not be affected). One `gwctl kill agent
// planner` must be confirmed by every daemon, refuse planner's new work on every plane, end
// planner's in-flight work, leave analyst's alone, be audited, survive a daemon restart, and be
// undone by `gwctl release`. Repeated drills measure, and print, the time from the start of
// `gwctl kill` to all-confirmed and from there to the last of planner's in-flight streams closed.
//
// The clients are the official SDKs: openai (a streamed chat), the MCP SDK (a slow tool call:
// the fixture's fixture_sleep, cancellable), @a2a-js/sdk (a streamed task on the `slow` agent).
// gwctl runs as a child process without blocking the event loop, so that the streams are read,
// and their ends timed, while it runs.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import OpenAI from 'openai';

import { a2aClient, sendText, startA2AAgents, streamText, view } from './lib/a2a.mjs';
import { startConformanceFixture } from './lib/conformance.mjs';
import { Stack, binary, eventually, sleep, startFixture } from './lib/stack.mjs';

const SDK = 'v10'; // A2A 1.0 (@a2a-js/sdk 1.x)
const TOKEN_MS = 50; // the inference fixture's delay between streamed tokens
const LONG = 400; // planner's work: ~20 s of tokens, chunks, sleep — far longer than a drill
const SHORT_MS = 2500; // analyst's work: done a couple of seconds after the kill
const DRILLS = 5; // drills measured, if they fit in DRILL_BUDGET_MS
const DRILL_BUDGET_MS = 90000;
const END_WITHIN_MS = 3000; // planner's in-flight work must end this soon after all-confirmed
const DEADLINE_MS = 2000; // gwctl's --deadline-ms
const MIN_LIVED_MS = 1000; // planner's tool call runs at least this long before the kill

// Unix time in ms with sub-ms precision, comparable with gwctl's started_at_ms.
const now = () => performance.timeOrigin + performance.now();

function deferred() {
  let resolve;
  const promise = new Promise((r) => (resolve = r));
  return { promise, resolve };
}

// Resolves with p's value, or with `fallback` after ms.
function within(p, ms, fallback) {
  let timer;
  return Promise.race([p, new Promise((r) => (timer = setTimeout(r, ms, fallback)))]).finally(() => clearTimeout(timer));
}

// gwctl without blocking the event loop: {status, stdout, stderr, spawnedAt, exitedAt}.
function gwctl(stack, ...args) {
  const spawnedAt = now();
  const proc = spawn(binary('gwctl'), args, { env: stack.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  proc.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  return new Promise((resolve) => proc.on('close', (status) => resolve({ status, stdout, stderr, spawnedAt, exitedAt: now() })));
}

// The JSON-RPC code of an error the A2A SDK threw.
function codeOf(e) {
  if (typeof e.envelopeCode === 'number') return e.envelopeCode;
  const inner = e.errorResponse?.error?.code;
  if (typeof inner === 'number') return inner;
  const m = /Code: (-?\d+)/.exec(String(e.message)) ?? /JSON-RPC error (-?\d+)/.exec(String(e.message));
  return m ? Number(m[1]) : e.code;
}

function text(result) {
  return result.content.filter((c) => c.type === 'text').map((c) => c.text).join('\n');
}

// ---- long-running work, one kind per plane ----

// A streamed chat of `words` tokens. done: {how: 'completed'|'error', at, chunks, error}.
async function openChat(client, words) {
  const reply = Array.from({ length: words }, (_, i) => `w${i}`).join(' ');
  const stream = await client.chat.completions.create({
    model: 'm', stream: true, messages: [{ role: 'user', content: 'drill' }], fixture: { token_delay_ms: TOKEN_MS, reply },
  });
  const first = deferred();
  let chunks = 0;
  const done = (async () => {
    try {
      for await (const c of stream) {
        chunks += c.choices.length;
        first.resolve();
      }
      return { how: 'completed', at: now(), chunks };
    } catch (error) {
      return { how: 'error', at: now(), chunks, error };
    } finally {
      first.resolve();
    }
  })();
  return { first: first.promise, done, abort: () => stream.controller.abort() };
}

// A fetch for the MCP transport that reports when the body of a tools/call answer (its SSE
// stream) ends, errs, or is cancelled: onClose({how, at}).
function watchingFetch(onClose) {
  return async (url, init = {}) => {
    const res = await fetch(url, init);
    const isCall = init.method === 'POST' && typeof init.body === 'string' && init.body.includes('"tools/call"');
    if (!isCall || !res.body) return res;
    const reader = res.body.getReader();
    const body = new ReadableStream({
      async pull(ctrl) {
        try {
          const { done, value } = await reader.read();
          if (done) {
            onClose({ how: 'end', at: now() });
            ctrl.close();
          } else {
            ctrl.enqueue(value);
          }
        } catch (e) {
          onClose({ how: 'error', at: now() });
          ctrl.error(e);
        }
      },
      cancel(reason) {
        onClose({ how: 'cancel', at: now() });
        return reader.cancel(reason);
      },
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

async function mcpClient(stack, key, onClose = () => {}) {
  const client = new Client({ name: 'kill-drill', version: '1.0.0' });
  client.onerror = () => {}; // the SDK reports a refused resumption here; the test looks at the call
  const transport = new StreamableHTTPClientTransport(new URL(stack.url('mcp-gw', '/mcp')), {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
    fetch: watchingFetch(onClose),
  });
  await client.connect(transport);
  return client;
}

// A slow tool call with progress. done: {how: 'completed'|'error', at, text, error};
// streamClosed: when the call's SSE stream from the gateway ended ({how, at}).
async function openToolCall(stack, key, ms) {
  const closed = deferred();
  const client = await mcpClient(stack, key, (c) => closed.resolve(c));
  const first = deferred();
  let progress = 0;
  const done = client
    .callTool({ name: 'conf__fixture_sleep', arguments: { ms } }, undefined, {
      timeout: ms + 30000,
      onprogress: () => {
        progress++;
        first.resolve();
      },
    })
    .then((r) => ({ how: 'completed', at: now(), text: text(r) }), (error) => ({ how: 'error', at: now(), error }));
  done.then(() => first.resolve());
  return { client, first: first.promise, done, streamClosed: closed.promise, progress: () => progress, startedAt: now() };
}

// A streamed task on the `slow` agent. done: {how: 'ended'|'error', at, events, error}.
async function openTask(gw, key, chunks) {
  const c = await a2aClient(SDK, `${gw}/agents/slow/`, { headers: { Authorization: `Bearer ${key}` } });
  const first = deferred();
  const events = [];
  const done = (async () => {
    try {
      for await (const ev of streamText(c, SDK, `chunks=${chunks} delay_ms=${TOKEN_MS}`)) {
        const v = view(SDK, ev);
        events.push(v);
        if (v.kind === 'artifact') first.resolve();
      }
      return { how: 'ended', at: now(), events };
    } catch (error) {
      return { how: 'error', at: now(), events, error };
    } finally {
      first.resolve();
    }
  })();
  return { first: first.promise, done, events };
}

describe('kill switch drill: one command stops an agent on every plane', () => {
  let stack, fixture, conf, agents, keys, openai;
  const drills = []; // what each drill observed (see runDrill)

  const openaiFor = (who) => new OpenAI({ apiKey: keys[who], baseURL: stack.url('model-gw', '/v1'), maxRetries: 0 });

  before(async () => {
    fixture = await startFixture(['--model', 'm']);
    conf = await startConformanceFixture({ verbose: true });
    stack = await Stack.start({
      extra: {
        model_gw: ['models:', '  - name: m', `    deployments: [{url: "${fixture.url}/v1", model: m}]`],
        mcp_gw: ['servers:', '  - name: conf', '    transport: http', `    url: ${conf.url}`],
      },
    });
    const file = path.join(stack.dir, 'p.yaml');
    writeFileSync(file, [
      'principals:',
      '  - {id: planner, kind: agent, team: drill}',
      '  - {id: analyst, kind: user, team: drill}',
      'rules:',
      '  - {id: drill-all, effect: allow, subjects: {teams: [drill]}, plane: "*", resources: ["*"], actions: ["*"]}',
      '',
    ].join('\n'));
    const applied = stack.gwctl('apply', '-f', file);
    assert.equal(applied.status, 0, applied.stderr);
    keys = {};
    for (const who of ['planner', 'analyst']) keys[who] = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', who).stdout).key;
    agents = await startA2AAgents({ sdk: SDK, agents: { slow: 'slow', echo: 'echo' } });
    for (const name of ['slow', 'echo']) {
      const r = stack.gwctl('agent', 'add', name, '--url', `${agents.url(name)}a2a/jsonrpc`, '--version', '1.0');
      assert.equal(r.status, 0, r.stderr);
    }
    const gw = stack.url('agent-gw');
    assert.ok(await eventually(async () => (await fetch(`${gw}/agents/slow/.well-known/agent-card.json`)).status === 200), 'slow registered');
    openai = { planner: openaiFor('planner'), analyst: openaiFor('analyst') };
  });

  after(async () => {
    await agents?.stop();
    const results = await stack?.close();
    await conf?.stop();
    await fixture?.stop();
    for (const name of Object.keys(stack?.daemons ?? {})) {
      assert.equal(results[name].code, 0, `${name}: ${stack.daemons[name].tail()}`);
      assert.deepEqual(stack.daemons[name].sanitizerReports(), [], name);
    }
  });

  // One drill: long-running work for both identities on every plane, then `gwctl kill agent
  // planner`; waits for planner's work to end (or END_WITHIN_MS to pass) and analyst's to finish.
  // Leaves the kill in force.
  async function runDrill(n) {
    const gw = stack.url('agent-gw');
    const confLog = conf.stderr().length;
    const work = {};
    for (const who of ['planner', 'analyst']) {
      const long = who === 'planner';
      work[who] = {
        chat: await openChat(openai[who], long ? LONG : SHORT_MS / TOKEN_MS),
        tool: await openToolCall(stack, keys[who], long ? LONG * 150 : SHORT_MS),
        task: await openTask(gw, keys[who], long ? LONG : SHORT_MS / TOKEN_MS),
      };
    }
    const started = Object.values(work).flatMap((w) => Object.values(w).map((x) => x.first));
    assert.ok(await within(Promise.all(started).then(() => true), 10000, false), 'all the work has started streaming');
    // Planner's tool call has run for a while, so that its upstream call, cut short, still
    // stands out from the short requests in the MCP fixture's log.
    await sleep(Math.max(0, work.planner.tool.startedAt + MIN_LIVED_MS - now()));

    const killed = await gwctl(stack, '--json', 'kill', 'agent', 'planner', '--reason', `drill ${n}`, '--deadline-ms', String(DEADLINE_MS));
    const report = JSON.parse(killed.stdout || '{}');
    const confirmedAt = report.started_at_ms + (report.confirmed_ms ?? NaN);

    // planner's work: each plane's end, or null when the gateway did not end it in time
    const p = work.planner;
    const ends = {
      model: await within(p.chat.done, END_WITHIN_MS, null),
      mcp: await within(p.tool.streamClosed, END_WITHIN_MS, null),
      agent: await within(p.task.done, END_WITHIN_MS, null),
    };
    if (ends.model === null) p.chat.abort();
    const toolOutcome = await within(p.tool.done, 100, { how: 'pending' });
    const plannerProgress = p.tool.progress();
    await sleep(300);
    const progressAfter = p.tool.progress() - plannerProgress;
    await p.tool.client.close(); // its session is gone; this also settles a call still waiting
    const a = work.analyst;
    const analyst = { model: await a.chat.done, mcp: await a.tool.done, agent: await a.task.done };
    await a.tool.client.close();
    return {
      n, killed, report, confirmedAt, ends, analyst, toolOutcome, progressAfter,
      spawnToConfirmed: confirmedAt - killed.spawnedAt,
      confLog: conf.stderr().slice(confLog),
      toolStartedAt: p.tool.startedAt,
    };
  }

  async function release() {
    const r = await gwctl(stack, '--json', 'release', 'agent', 'planner', '--deadline-ms', String(DEADLINE_MS));
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.all_confirmed, true, r.stdout);
    return out;
  }

  test('gwctl kill agent planner is stored, then confirmed by all three daemons', async () => {
    const d = await runDrill(1);
    drills.push(d);
    assert.equal(d.killed.status, 0, `gwctl kill: ${d.killed.stderr}\n${d.killed.stdout}`);
    const r = d.report;
    assert.equal(r.command, 'kill');
    assert.equal(r.kill.target_kind, 'agent');
    assert.equal(r.kill.target, 'planner');
    assert.equal(r.kill.reason, 'drill 1');
    assert.equal(r.kill.status, 'active');
    assert.equal(r.already_in_force, false);
    assert.equal(r.target_known, true);
    assert.equal(r.all_confirmed, true);
    assert.deepEqual(r.not_confirmed, []);
    assert.deepEqual(r.daemons.map((x) => [x.daemon, x.result, x.requested, x.confirmed]), [
      ['agent-gw', 'confirmed', true, true],
      ['mcp-gw', 'confirmed', true, true],
      ['model-gw', 'confirmed', true, true],
    ]);
    for (const x of r.daemons) {
      assert.ok(x.requested_ms >= r.stored_ms && x.confirmed_ms >= x.requested_ms, JSON.stringify(x));
      assert.ok(x.confirmed_ms < DEADLINE_MS && x.workers >= 1, JSON.stringify(x));
    }
    assert.equal(r.confirmed_ms, Math.max(...r.daemons.map((x) => x.confirmed_ms)));
    // what is in force says so
    const kills = JSON.parse(stack.gwctl('--json', 'kills').stdout);
    assert.deepEqual(kills.map((k) => [k.id, k.target_kind, k.target, k.reason, k.status]), [[r.kill.id, 'agent', 'planner', 'drill 1', 'active']]);
    // every daemon logged the kill it enforced, with the peer that asked
    for (const name of ['model-gw', 'mcp-gw', 'agent-gw']) {
      const line = await stack.daemons[name].waitForLog((l) => l.msg === 'kill enforced' && l.kill_id === r.kill.id);
      assert.equal(line.target, 'planner');
      assert.equal(line.peer_uid, process.getuid());
    }
  });

  test("planner's new requests are refused on every plane; analyst's are not", async () => {
    await assert.rejects(openai.planner.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] }), (e) => {
      assert.ok(e instanceof OpenAI.PermissionDeniedError, String(e));
      assert.equal(e.code, 'suspended');
      assert.equal(e.type, 'permission_error');
      assert.match(e.message, /agent 'planner' is suspended/);
      return true;
    });
    await assert.rejects(mcpClient(stack, keys.planner), /suspended/);
    // agent-gw: a killed caller is refused by the gate (HTTP 403, JSON-RPC -32000, reason
    // "suspended"); -32043 "killed" is for a killed target or someone on the chain.
    const c = await a2aClient(SDK, `${stack.url('agent-gw')}/agents/echo/`, { headers: { Authorization: `Bearer ${keys.planner}` } });
    await assert.rejects(sendText(c, SDK, 'x'), (e) => {
      assert.equal(codeOf(e), -32000, String(e));
      assert.equal(e.data?.reason, 'suspended');
      assert.match(e.message, /agent 'planner' is suspended/);
      return true;
    });

    const ok = await openai.analyst.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'still here' }] });
    assert.match(ok.choices[0].message.content, /still here/);
    const m = await mcpClient(stack, keys.analyst);
    assert.match(text(await m.callTool({ name: 'conf__fixture_sleep', arguments: { ms: 1 } })), /slept 1 ms/);
    await m.close();
    const e = await a2aClient(SDK, `${stack.url('agent-gw')}/agents/echo/`, { headers: { Authorization: `Bearer ${keys.analyst}` } });
    assert.equal(view(SDK, await sendText(e, SDK, 'hi')).text, 'echo: hi');
  });

  test("agent-gw: planner's in-flight stream ends with a final canceled event; the agent got the cancel; the ledger shows it", async () => {
    const d = drills[0];
    const end = d.ends.agent;
    assert.ok(end, 'the stream ended');
    assert.equal(end.how, 'ended', String(end.error));
    const last = end.events[end.events.length - 1];
    assert.equal(last.state, 'canceled', JSON.stringify(last));
    assert.equal(last.final, true);
    assert.match(last.text, /kill switch: drill 1/);
    const taskId = end.events[0].taskId;
    assert.ok(await eventually(async () => (await agents.cancels('slow')).some((x) => x.taskId === taskId)), 'the agent got the cancel');
    const ledger = await eventually(() => {
      const out = stack.gwctl('--json', 'tasks', 'show', taskId, '--agent', 'slow');
      return out.status === 0 && JSON.parse(out.stdout).state === 'canceled' ? JSON.parse(out.stdout) : null;
    });
    assert.ok(ledger, 'the ledger shows the task canceled');
    assert.equal(ledger.caller, 'planner');
  });

  test("mcp-gw: planner's session ends, its call's stream closes and the upstream call stops early", async () => {
    const d = drills[0];
    assert.ok(d.ends.mcp, "the gateway closed the call's stream");
    assert.notEqual(d.toolOutcome.how, 'completed', 'the call did not run to its end');
    assert.equal(d.progressAfter, 0, 'no progress reaches planner after the kill');
    // The upstream tools/call ended long before its sleep (cancelled, its session closed): the
    // fixture's access log has a POST that ran about as long as the call lived, not its 60 s.
    const lived = d.ends.mcp.at - d.toolStartedAt;
    const posts = [...d.confLog.matchAll(/POST \/mcp 200 sid=\S+ (\d+)ms/g)].map((m) => Number(m[1]));
    assert.ok(lived >= MIN_LIVED_MS && lived < MIN_LIVED_MS + END_WITHIN_MS, `the call lived ${lived} ms`);
    // (The upstream call starts a little after the client's, once the gateway opened its link.)
    const cut = posts.filter((ms) => ms >= MIN_LIVED_MS / 2 && ms < lived + 500);
    assert.equal(cut.length, 1, `one long POST cut short near ${lived.toFixed(0)} ms: ${posts}`);
    assert.match(d.confLog, /session closed/);
  });

  test("model-gw: planner's in-flight stream ends with an error event saying suspended", async () => {
    const end = drills[0].ends.model;
    assert.ok(end, `model-gw did not end planner's stream within ${END_WITHIN_MS} ms of the kill's confirmation`);
    assert.equal(end.how, 'error');
    assert.ok(end.error instanceof OpenAI.APIError, String(end.error));
    assert.equal(end.error.code, 'suspended');
    assert.match(end.error.message, /suspended/);
    assert.ok(end.chunks >= 1 && end.chunks < LONG, `${end.chunks} chunks`);
  });

  test("analyst's in-flight work on every plane ran to its end", async () => {
    const a = drills[0].analyst;
    assert.equal(a.model.how, 'completed', String(a.model.error));
    assert.ok(a.model.chunks >= SHORT_MS / TOKEN_MS, `${a.model.chunks} chunks`);
    assert.equal(a.mcp.how, 'completed', String(a.mcp.error));
    assert.match(a.mcp.text, new RegExp(`slept ${SHORT_MS} ms`));
    assert.equal(a.agent.how, 'ended', String(a.agent.error));
    assert.equal(a.agent.events[a.agent.events.length - 1].state, 'completed');
  });

  test('the audit has the kill with operator and reason, and its confirmed broadcast', async () => {
    const created = JSON.parse(stack.gwctl('--json', 'audit', 'query', '--action', 'kill.create', '--target', 'agent:planner').stdout);
    assert.equal(created.length, 1);
    assert.match(created[0].actor, /^os:/);
    assert.equal(created[0].detail.after.reason, 'drill 1');
    assert.equal(created[0].detail.after.created_by, created[0].actor);
    const sent = JSON.parse(stack.gwctl('--json', 'audit', 'query', '--action', 'kill.broadcast', '--target', 'agent:planner').stdout);
    assert.equal(sent.length, 1);
    assert.equal(sent[0].detail.command, 'kill');
    assert.equal(sent[0].detail.kill_id, drills[0].report.kill.id);
    assert.equal(sent[0].detail.all_confirmed, true);
    assert.deepEqual(sent[0].detail.daemons.map((x) => x.daemon), ['agent-gw', 'mcp-gw', 'model-gw']);
  });

  test('a daemon down during a kill is reported not running, and enforces every kill once restarted', async () => {
    const down = await stack.daemons['model-gw'].stop();
    assert.equal(down.code, 0, stack.daemons['model-gw'].tail());
    const ghost = await gwctl(stack, '--json', 'kill', 'principal', 'ghost', '--reason', 'while model-gw is down');
    assert.equal(ghost.status, 0, ghost.stderr);
    const out = JSON.parse(ghost.stdout);
    assert.deepEqual(out.daemons.map((x) => [x.daemon, x.result]), [['agent-gw', 'confirmed'], ['mcp-gw', 'confirmed'], ['model-gw', 'not running']]);
    assert.equal(out.target_known, false);

    await stack.restart('model-gw');
    openai = { planner: openaiFor('planner'), analyst: openaiFor('analyst') };
    await assert.rejects(openai.planner.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof OpenAI.PermissionDeniedError && e.code === 'suspended');
    const ok = await openai.analyst.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'y' }] });
    assert.equal(ok.choices[0].finish_reason, 'stop');
    const status = JSON.parse(stack.gwctl('--json', 'status').stdout).find((x) => x.daemon === 'model-gw');
    assert.deepEqual(status.result.policy.kills.map((k) => k.target).sort(), ['ghost', 'planner']);
    const released = await gwctl(stack, '--json', 'release', 'principal', 'ghost');
    assert.equal(released.status, 0, released.stderr);
    assert.equal(JSON.parse(released.stdout).all_confirmed, true);
  });

  test('gwctl release agent planner restores service on every plane, without restarts', async () => {
    const out = await release();
    assert.equal(out.command, 'release');
    assert.equal(out.kill.status, 'released');
    assert.deepEqual(out.daemons.map((x) => x.result), ['confirmed', 'confirmed', 'confirmed']);
    const ok = await openai.planner.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'back' }] });
    assert.match(ok.choices[0].message.content, /back/);
    const m = await mcpClient(stack, keys.planner);
    assert.match(text(await m.callTool({ name: 'conf__fixture_sleep', arguments: { ms: 1 } })), /slept 1 ms/);
    await m.close();
    const e = await a2aClient(SDK, `${stack.url('agent-gw')}/agents/echo/`, { headers: { Authorization: `Bearer ${keys.planner}` } });
    assert.equal(view(SDK, await sendText(e, SDK, 'back')).text, 'echo: back');
    assert.deepEqual(JSON.parse(stack.gwctl('--json', 'kills').stdout), []);
    const released = JSON.parse(stack.gwctl('--json', 'audit', 'query', '--action', 'kill.release', '--target', 'agent:planner').stdout);
    assert.equal(released.length, 1);
  });

  test('a daemon confirms only what the store says: a kill not in force, or a release of one that is', async () => {
    const socket = path.join(stack.controlDir, 'mcp-gw.sock');
    const ask = (req) => new Promise((resolve, reject) => {
      const c = net.createConnection(socket);
      let buf = '';
      c.setEncoding('utf8').on('data', (d) => {
        buf += d;
        if (buf.includes('\n')) {
          c.end();
          resolve(JSON.parse(buf));
        }
      });
      c.on('error', reject);
      c.write(`${JSON.stringify(req)}\n`);
    });
    const notKilled = await ask({ cmd: 'kill', kill: { id: 999, target_kind: 'agent', target: 'nobody' } });
    assert.equal(notKilled.ok, false);
    assert.match(notKilled.error, /kill #999 of agent nobody is not in force/);
    const malformed = await ask({ cmd: 'kill', kill: { target: 'nobody' } });
    assert.equal(malformed.ok, false);
    const k = await gwctl(stack, '--json', 'kill', 'principal', 'ghost', '--reason', 'still here');
    assert.equal(k.status, 0, k.stderr);
    const stillKilled = await ask({ cmd: 'release', kill: { target_kind: 'principal', target: 'ghost' } });
    assert.equal(stillKilled.ok, false);
    assert.match(stillKilled.error, /still in force/);
    const again = await gwctl(stack, '--json', 'kill', 'principal', 'ghost', '--reason', 'twice');
    assert.equal(again.status, 0, again.stderr);
    const out = JSON.parse(again.stdout);
    assert.equal(out.already_in_force, true, 'a second kill of the same target writes nothing and re-checks the first');
    assert.equal(out.kill.reason, 'still here');
    assert.equal(out.all_confirmed, true);
    assert.equal((await gwctl(stack, 'release', 'principal', 'ghost')).status, 0);
  });

  test('a daemon that does not answer within the deadline is named, and gwctl exits non-zero', async () => {
    const stuck = stack.daemons['agent-gw'];
    process.kill(stuck.pid, 'SIGSTOP');
    let r;
    try {
      r = await gwctl(stack, '--json', 'kill', 'principal', 'ghost', '--reason', 'agent-gw is stuck', '--deadline-ms', '300');
    } finally {
      process.kill(stuck.pid, 'SIGCONT');
    }
    assert.equal(r.status, 1, r.stdout);
    assert.match(r.stderr, /NOT CONFIRMED by agent-gw \(not confirmed\)/);
    const out = JSON.parse(r.stdout);
    assert.equal(out.all_confirmed, false);
    assert.deepEqual(out.not_confirmed, ['agent-gw']);
    const a = out.daemons.find((x) => x.daemon === 'agent-gw');
    assert.deepEqual([a.requested, a.confirmed, a.error], [true, false, 'no answer within 300 ms']);
    // the outcome is audited too, unconfirmed as it was
    const sent = JSON.parse(stack.gwctl('--json', 'audit', 'query', '--action', 'kill.broadcast', '--target', 'principal:ghost', '--limit', '1').stdout);
    assert.deepEqual(sent[0].detail.not_confirmed, ['agent-gw']);
    // once it runs again it converges from the store
    const seen = await eventually(() => {
      const st = JSON.parse(stack.gwctl('--json', 'status').stdout).find((x) => x.daemon === 'agent-gw');
      return st?.result?.policy?.kills?.some((k) => k.target === 'ghost');
    });
    assert.ok(seen, 'agent-gw enforces the kill after it resumed');
    const released = await gwctl(stack, '--json', 'release', 'principal', 'ghost');
    assert.equal(released.status, 0, released.stderr);
  });

  test('kill all needs --yes when nobody can be asked, stops everyone, and release all undoes it', async () => {
    const refused = await gwctl(stack, 'kill', 'all', '--reason', 'no');
    assert.equal(refused.status, 2);
    assert.match(refused.stderr, /add --yes to confirm/);
    const noReason = await gwctl(stack, 'kill', 'agent', 'planner');
    assert.equal(noReason.status, 2);
    assert.match(noReason.stderr, /--reason is required/);
    assert.deepEqual(JSON.parse(stack.gwctl('--json', 'kills').stdout), []);

    const all = await gwctl(stack, '--json', 'kill', 'all', '--reason', 'drill: everyone', '--yes');
    assert.equal(all.status, 0, all.stderr);
    assert.equal(JSON.parse(all.stdout).kill.target, '*');
    await assert.rejects(openai.analyst.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof OpenAI.PermissionDeniedError && /user 'analyst' is suspended/.test(e.message));
    const released = await gwctl(stack, 'release', 'all');
    assert.equal(released.status, 0, released.stderr);
    assert.match(released.stdout, /^released: all 3 running daemons confirmed within [\d.]+ ms$/m);
    const ok = await openai.analyst.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(ok.choices[0].finish_reason, 'stop');
  });

  test('repeated drills: time to all-confirmed and to the last in-flight stream closed', async () => {
    const budgetEnds = Date.now() + DRILL_BUDGET_MS;
    for (let n = 2; n <= DRILLS && Date.now() < budgetEnds; n++) {
      const d = await runDrill(n);
      drills.push(d);
      assert.equal(d.killed.status, 0, d.killed.stderr);
      assert.equal(d.report.all_confirmed, true, d.killed.stdout);
      assert.ok(d.ends.agent && d.ends.mcp, `drill ${n}: planner's A2A and MCP streams ended`);
      assert.equal(d.analyst.model.how, 'completed');
      assert.equal(d.analyst.mcp.how, 'completed');
      assert.equal(d.analyst.agent.how, 'ended');
      await release();
    }
    const fmt = (ms) => (Math.abs(ms) < 0.05 ? 0 : ms).toFixed(1);
    const stats = (xs) => {
      const s = [...xs].sort((a, b) => a - b);
      return s.length === 0 ? 'n/a' : `median ${fmt(s[Math.floor((s.length - 1) / 2)])} ms, worst ${fmt(s[s.length - 1])} ms`;
    };
    const planes = ['model', 'mcp', 'agent'];
    const ended = (d) => planes.filter((p) => d.ends[p]);
    const lastClosed = (d) => Math.max(...ended(d).map((p) => d.ends[p].at));
    const all = drills.filter((d) => ended(d).length === planes.length);
    const say = (line) => console.log(`kill drill: ${line}`);
    say(`${drills.length} drills of: gwctl --json kill agent planner --reason 'drill N' (model-gw, mcp-gw, agent-gw each with a streaming chat, a slow tool call and a streaming A2A task of planner in flight)`);
    say(`start of gwctl kill -> all three confirmed: ${stats(drills.map((d) => d.report.confirmed_ms))} (gwctl's own clock, from the store write)`);
    say(`gwctl spawned -> all three confirmed: ${stats(drills.map((d) => d.spawnToConfirmed))} (wall clock, process start included)`);
    say(`all confirmed -> last in-flight stream of planner closed: ${all.length === drills.length ? stats(all.map((d) => lastClosed(d) - d.confirmedAt)) : `n/a, model-gw left the stream open in ${drills.length - all.length} of ${drills.length} drills`} (<= 0: closed before gwctl had the last confirmation, as daemons end in-flight work before they confirm)`);
    say(`gwctl spawned -> last in-flight stream of planner closed: ${stats(drills.map((d) => lastClosed(d) - d.killed.spawnedAt))} (planes whose gateway ended it)`);
    for (const plane of planes) {
      const xs = drills.filter((d) => d.ends[plane]).map((d) => d.ends[plane].at - d.confirmedAt);
      say(`  ${plane}: all confirmed -> closed: ${stats(xs)} (${xs.length}/${drills.length} ended by the gateway)`);
    }
    assert.ok(drills.length >= 3, `only ${drills.length} drills fit in ${DRILL_BUDGET_MS} ms`);
  });
});
