#!/usr/bin/env node
// model-gw Responses benchmark: what continuing a long conversation costs. One client holds a
// conversation of TURNS turns with POST /v1/responses and previous_response_id, against
// model-gw in front of the inference fixture, and reports the latency of each stretch of turns
// and how many times the gateway read the store (triplane_model_response_loads_total). It runs
// twice: with the default response cache, and with model_gw.response_cache_bytes: 0 (every
// continuation reads the store: one query on the thread pool for the whole chain). A third run
// holds the same conversation with chat completions, the client sending the whole history each
// turn, as the baseline of what the upstream request itself costs as it grows.
// See bench/README.md ("model_gw_responses.mjs"). Everything runs on 127.0.0.1 from a temporary
// directory; every wait and loop is bounded; everything is stopped on exit or on a signal.
//
//   node bench/model_gw_responses.mjs            # about 20 s with the defaults
//   TURNS=1000 node bench/model_gw_responses.mjs
//
// Needs Node >= 20 and no npm packages. Unless TRIPLANE_BUILD names a build directory, it builds
// model-gw, gwctl and the inference fixture in build-bench (release; a no-op when up to date).
//
// Settings (environment): TURNS (300), WORDS (words per user message, 20), STRETCH (turns per
// reported stretch, TURNS/6 rounded).
// Exit status: 0 after a complete run, 1 when something failed, 2 on a usage or build problem.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const START_TIMEOUT_MS = 20000;
const REQUEST_TIMEOUT_MS = 10000;

function fail(msg, code = 1) {
  process.stderr.write(`model_gw_responses.mjs: ${msg}\n`);
  cleanup();
  process.exit(code);
}
function intEnv(name, def, min = 1) {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  if (!/^\d+$/.test(v) || Number(v) < min) fail(`${name} must be an integer >= ${min}`, 2);
  return Number(v);
}
if (process.argv.includes('--help')) {
  process.stdout.write('usage: [TURNS=N] [WORDS=N] [STRETCH=N] [TRIPLANE_BUILD=DIR] node bench/model_gw_responses.mjs\n');
  process.exit(0);
}
const TURNS = intEnv('TURNS', 300);
const WORDS = intEnv('WORDS', 20);
const STRETCH = intEnv('STRETCH', Math.max(1, Math.round(TURNS / 6)));

// ---- build ----

const BUILD = process.env.TRIPLANE_BUILD ? path.resolve(process.env.TRIPLANE_BUILD) : path.join(ROOT, 'build-bench');
function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 900000 });
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} failed:\n${r.stdout}${r.stderr}`, 2);
}
if (!process.env.TRIPLANE_BUILD) {
  if (!existsSync(path.join(BUILD, 'build.ninja'))) run('meson', ['setup', BUILD, '--buildtype=release']);
  run('ninja', ['-C', BUILD, 'model-gw/model-gw', 'gwctl/gwctl', 'tests/fixtures/inference-fixture']);
}
const GW = path.join(BUILD, 'model-gw/model-gw');
const GWCTL = path.join(BUILD, 'gwctl/gwctl');
const FIXTURE = path.join(BUILD, 'tests/fixtures/inference-fixture');
for (const f of [GW, GWCTL, FIXTURE]) if (!existsSync(f)) fail(`${f} is missing (TRIPLANE_BUILD without it?)`, 2);

// ---- processes ----

const dir = mkdtempSync(path.join(os.tmpdir(), 'triplane-bench-responses-'));
const procs = new Set();
function cleanup() {
  for (const p of procs) p.kill('SIGKILL');
  procs.clear();
  rmSync(dir, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => fail(`stopped by ${sig}`));

// Starts a process and waits for a line on stdout or stderr that matches re.
function startUntil(bin, args, re, env = process.env) {
  const proc = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  procs.add(proc);
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${bin} did not start: ${out.slice(-2000)}`)), START_TIMEOUT_MS);
    const onData = (b) => {
      out += b;
      const m = out.match(re);
      if (m) {
        clearTimeout(timer);
        resolve({ proc, match: m });
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('exit', (code) => reject(new Error(`${bin} exited ${code}: ${out.slice(-2000)}`)));
  });
}

async function stop(proc) {
  if (proc.exitCode !== null) return;
  const done = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await Promise.race([done, new Promise((r) => setTimeout(r, 10000))]);
  procs.delete(proc);
}

function gwctl(config, ...args) {
  const r = spawnSync(GWCTL, ['--config', config, ...args], { encoding: 'utf8', timeout: 30000 });
  if (r.status !== 0) fail(`gwctl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function startGateway(name, fixturePort, cacheBytes) {
  const sub = path.join(dir, name);
  const config = path.join(sub + '.yaml');
  writeFileSync(config, [
    'common:', '  log_level: warn',
    'store:', `  path: ${sub}.db`,
    'control:', `  dir: ${sub}-run`,
    'model_gw:', '  workers: 1', '  listen: [{host: 127.0.0.1, port: 0}]',
    ...(cacheBytes !== undefined ? [`  response_cache_bytes: ${cacheBytes}`] : []),
    '  models:', '    - name: bench', `      deployments: [{url: "http://127.0.0.1:${fixturePort}/v1", model: fixture-model}]`, '',
  ].join('\n'));
  gwctl(config, 'init');
  const policy = path.join(sub + '-policy.yaml');
  writeFileSync(policy, [
    'principals: [{id: bench, kind: service}]',
    'rules: [{id: bench, effect: allow, subjects: {principals: [bench]}, plane: model, resources: [bench], actions: [chat]}]', '',
  ].join('\n'));
  gwctl(config, 'apply', '-f', policy);
  const key = JSON.parse(gwctl(config, '--json', 'key', 'create', '--principal', 'bench')).key;
  const proc = spawn(GW, ['--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
  procs.add(proc);
  // Ready once gwctl status reports its listen address.
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (proc.exitCode !== null) fail('model-gw exited during start-up');
    const r = spawnSync(GWCTL, ['--config', config, '--json', 'status'], { encoding: 'utf8', timeout: 10000 });
    let listen;
    try {
      listen = JSON.parse(r.stdout).find((d) => d.ok && d.result?.pid === proc.pid)?.result?.listen?.[0];
    } catch {}
    if (listen) return { proc, url: listen.replace(/\/$/, ''), key };
    if (Date.now() > deadline) fail(`model-gw did not start within ${START_TIMEOUT_MS} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function post(gw, pathname, body) {
  const res = await fetch(gw.url + pathname, {
    method: 'POST',
    headers: { authorization: `Bearer ${gw.key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const json = await res.json();
  if (res.status !== 200) fail(`${pathname}: HTTP ${res.status}: ${JSON.stringify(json)}`);
  return json;
}

async function storeReads(gw) {
  const text = await (await fetch(gw.url + '/metrics', { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })).text();
  const get = (source) => Number(text.match(new RegExp(`triplane_model_response_loads_total\\{source="${source}"\\} (\\S+)`))?.[1] ?? 0);
  return { cache: get('cache'), store: get('store') };
}

function message(turn) {
  const words = [];
  for (let i = 0; i < WORDS; i++) words.push(`w${turn}_${i}`);
  return words.join(' ');
}

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

// Holds one conversation; returns per-turn latencies (ms) and the last usage.
async function converse(gw, mode) {
  const ms = [];
  let previous = null;
  const history = [];
  let usage = null;
  for (let turn = 0; turn < TURNS; turn++) {
    const text = message(turn);
    const t0 = performance.now();
    if (mode === 'responses') {
      const r = await post(gw, '/v1/responses', { model: 'bench', input: text, max_output_tokens: 8, ...(previous ? { previous_response_id: previous } : {}) });
      previous = r.id;
      usage = r.usage.input_tokens;
    } else {
      history.push({ role: 'user', content: text });
      const r = await post(gw, '/v1/chat/completions', { model: 'bench', messages: history, max_tokens: 8 });
      history.push({ role: 'assistant', content: r.choices[0].message.content });
      usage = r.usage.prompt_tokens;
    }
    ms.push(performance.now() - t0);
  }
  return { ms, usage };
}

function report(label, { ms, usage }, reads) {
  process.stdout.write(`\n${label}: ${TURNS} turns, last turn's prompt ${usage} tokens (fixture words)` +
    (reads ? `; store reads ${reads.store}, cache hits ${reads.cache}` : '') + '\n');
  process.stdout.write('  turns        p50 ms   p99 ms   max ms\n');
  for (let from = 0; from < ms.length; from += STRETCH) {
    const part = ms.slice(from, from + STRETCH).sort((a, b) => a - b);
    process.stdout.write(`  ${String(from + 1).padStart(5)}-${String(from + part.length).padEnd(5)} ${pct(part, 50).toFixed(2).padStart(7)}  ${pct(part, 99).toFixed(2).padStart(7)}  ${part[part.length - 1].toFixed(2).padStart(7)}\n`);
  }
}

const { proc: fx, match } = await startUntil(FIXTURE, ['--port', '0', '--workers', '1'], /listening (http:\/\/\S+)/);
const fixturePort = new URL(match[1]).port;
process.stdout.write(`model-gw Responses conversation benchmark: TURNS=${TURNS} WORDS=${WORDS}, ${os.cpus().length} CPUs (${os.cpus()[0].model.trim()})\n`);

for (const [label, cache] of [['responses, default cache', undefined], ['responses, response_cache_bytes: 0', 0]]) {
  const gw = await startGateway(label.includes('0') ? 'nocache' : 'cache', fixturePort, cache);
  const before = await storeReads(gw);
  const result = await converse(gw, 'responses');
  const after = await storeReads(gw);
  report(label, result, { store: after.store - before.store, cache: after.cache - before.cache });
  await stop(gw.proc);
}
const gw = await startGateway('chat', fixturePort, undefined);
report('chat completions, the client sends the whole history', await converse(gw, 'chat'));
await stop(gw.proc);
await stop(fx);
process.exit(0);
