#!/usr/bin/env node
// mcp-gw benchmark: MCP tools/call round trips through mcp-gw against the same calls sent directly
// to the same upstream, at increasing concurrency, and the cost of a new session. See
// bench/README.md ("mcp_gw.mjs"). Everything runs on 127.0.0.1 from a temporary directory, every
// wait and every loop is bounded, and everything is stopped (and the directory removed) on exit or
// on a signal.
//
//   node bench/mcp_gw.mjs                          # about 1.5 minutes with the defaults
//   DURATION=10 CONCURRENCY=1,8,64,256 node bench/mcp_gw.mjs
//
// It needs Node >= 20 and no npm packages. Unless TRIPLANE_BUILD names a build directory, it
// builds mcp-gw and gwctl itself in build-bench (meson setup --buildtype=release -Dtests=false,
// then ninja; a no-op when up to date).
//
// Settings (environment):
//   DURATION       seconds measured per run (5)          WARMUP   seconds of warm-up before (1)
//   CONCURRENCY    clients per run, a list (1,4,16,64)   MAX_CALLS  calls measured per run at most (3000000)
//   COLD_SESSIONS  gateway restarts for cold sessions (10)
//   WARM_SESSIONS  sessions timed warm, per target (200)
//   QUIET_WAIT     seconds to wait at most, before each run, until other processes use under
//   QUIET_PCT      this much of one core (60, 10); the report shows what else ran during each run
//   ATTEMPTS       tries at most per run while others use 2 x QUIET_PCT or more during it (3)
//   UPSTREAM_SSE   1: the upstream answers with SSE instead of JSON (0)
//   PERF           1: perf-record mcp-gw during each measured gateway run and print its top symbols;
//                  dwarf: the same with call graphs (--call-graph dwarf), for perf report -G (0)
//   PERF_DIR       where to keep the perf data (perf-mcp-gw-c<clients>.data); default: removed at exit
//   TRIPLANE_BUILD a build directory to use as it is (default: build-bench, built here)
//
// Exit status: 0 after a complete run (whether or not mcp-gw meets its targets), 1 when something
// failed (a process did not start, a check or a call failed), 2 on a usage or build problem.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const FIXTURE = path.join(ROOT, 'tests/fixtures/mcp-bench-server.mjs');
const PROTOCOL = '2025-11-25';
const SERVER = 'bench'; // the upstream's name in mcp-gw: its tools are bench__<name>
const CALL_TIMEOUT_MS = 5000;
const START_TIMEOUT_MS = 20000;

// ---- settings ----

function fail(msg, code = 1) {
  process.stderr.write(`mcp_gw.mjs: ${msg}\n`);
  process.exit(code);
}
function intEnv(name, def, min = 1) {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  if (!/^\d+$/.test(v) || Number(v) < min) fail(`${name} must be an integer >= ${min}`, 2);
  return Number(v);
}
if (process.argv.length > 2) {
  process.stderr.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\nimport ')[0].replace(/^#!.*\n/, '').replace(/^\/\/ ?/gm, '') + '\n');
  process.exit(process.argv[2] === '--help' || process.argv[2] === '-h' ? 0 : 2);
}
const DURATION = intEnv('DURATION', 5);
const WARMUP = intEnv('WARMUP', 1, 0);
const MAX_CALLS = intEnv('MAX_CALLS', 3000000);
const COLD_SESSIONS = intEnv('COLD_SESSIONS', 10, 0);
const WARM_SESSIONS = intEnv('WARM_SESSIONS', 200, 0);
const QUIET_WAIT = intEnv('QUIET_WAIT', 60, 0);
const QUIET_PCT = intEnv('QUIET_PCT', 10, 1);
const ATTEMPTS = intEnv('ATTEMPTS', 3, 1);
const UPSTREAM_SSE = process.env.UPSTREAM_SSE === '1';
const PERF = process.env.PERF === '1' || process.env.PERF === 'dwarf';
const PERF_DWARF = process.env.PERF === 'dwarf';
const PERF_DIR_KEPT = process.env.PERF_DIR ? path.resolve(process.env.PERF_DIR) : null;
const CONCURRENCY = (process.env.CONCURRENCY || '1,4,16,64').split(',').map((s) => {
  if (!/^\d+$/.test(s.trim()) || Number(s) < 1 || Number(s) > 1000) fail('CONCURRENCY must list integers from 1 to 1000', 2);
  return Number(s);
});

// ---- the build ----

let BUILD = process.env.TRIPLANE_BUILD ? path.resolve(process.env.TRIPLANE_BUILD) : path.join(ROOT, 'build-bench');
function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 900000 });
  if (r.error || r.status !== 0) {
    process.stderr.write((r.stdout || '').slice(-3000) + (r.stderr || '').slice(-3000));
    fail(`${cmd} ${args.join(' ')} failed${r.error ? `: ${r.error.message}` : ''}`, 2);
  }
}
if (!process.env.TRIPLANE_BUILD) {
  if (!existsSync(path.join(BUILD, 'build.ninja'))) {
    process.stderr.write(`mcp_gw.mjs: configuring ${path.relative(ROOT, BUILD)} (release)\n`);
    run('meson', ['setup', BUILD, '-Dtests=false', '--buildtype=release']);
  }
  process.stderr.write(`mcp_gw.mjs: ninja -C ${path.relative(ROOT, BUILD)} mcp-gw/mcp-gw gwctl/gwctl\n`);
  run('ninja', ['-C', BUILD, 'mcp-gw/mcp-gw', 'gwctl/gwctl']);
}
if (PERF && spawnSync('perf', ['--version'], { stdio: 'ignore' }).status !== 0) fail('PERF needs perf: apt-get install -y linux-perf', 2);
const GW_BIN = path.join(BUILD, 'mcp-gw/mcp-gw');
const GWCTL_BIN = path.join(BUILD, 'gwctl/gwctl');
for (const b of [GW_BIN, GWCTL_BIN]) if (!existsSync(b)) fail(`${b} is missing: build first (ninja -C ${BUILD})`, 2);
let buildtype = '?';
try {
  const opts = JSON.parse(readFileSync(path.join(BUILD, 'meson-info/intro-buildoptions.json'), 'utf8'));
  buildtype = opts.find((o) => o.name === 'buildtype')?.value ?? '?';
} catch {}

// ---- processes and teardown ----

const DIR = mkdtempSync(path.join(os.tmpdir(), 'tp-bench-mcp-gw-'));
const PERF_DIR = PERF_DIR_KEPT ?? DIR;
const children = new Set();
function cleanup() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(DIR, { recursive: true, force: true });
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function track(proc) {
  children.add(proc);
  proc.exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => resolve({ code, signal }));
    proc.on('error', (e) => resolve({ code: null, signal: null, error: e })); // could not be started
  });
  proc.exited.then(() => children.delete(proc));
  return proc;
}
async function stopProc(proc, signal = 'SIGTERM', timeoutMs = 10000) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return proc?.exited;
  proc.kill(signal);
  const r = await Promise.race([proc.exited, sleep(timeoutMs).then(() => null)]);
  if (r === null) {
    process.stderr.write(`mcp_gw.mjs: pid ${proc.pid} did not exit within ${timeoutMs} ms of ${signal}; killing it\n`);
    proc.kill('SIGKILL');
    return proc.exited;
  }
  return r;
}

// The upstream: tests/fixtures/mcp-bench-server.mjs on a free port.
async function startUpstream() {
  const proc = track(spawn(process.execPath, [FIXTURE, '--port', '0', ...(UPSTREAM_SSE ? ['--sse'] : [])], { stdio: ['ignore', 'pipe', 'pipe'] }));
  let out = '';
  proc.stderrText = '';
  proc.stderr.setEncoding('utf8').on('data', (c) => (proc.stderrText += c));
  const url = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the upstream did not start')), START_TIMEOUT_MS);
    proc.stdout.setEncoding('utf8').on('data', (c) => {
      out += c;
      const m = out.match(/listening (http:\/\/\S+)/);
      if (m) {
        clearTimeout(t);
        resolve(m[1]);
      }
    });
    proc.on('exit', (code) => reject(new Error(`the upstream exited (${code}): ${proc.stderrText}`)));
  });
  proc.url = url;
  proc.port = Number(new URL(url).port);
  return proc;
}

const ENV = { ...process.env, TRIPLANE_STORE: path.join(DIR, 'triplane.db'), TRIPLANE_CONTROL_DIR: path.join(DIR, 'run') };
delete ENV.TRIPLANE_CONFIG;
function gwctl(...args) {
  const r = spawnSync(GWCTL_BIN, args, { env: ENV, encoding: 'utf8', timeout: 30000 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function writeConfig(upstreamUrl) {
  const file = path.join(DIR, 'triplane.yaml');
  writeFileSync(file, [
    'common:',
    '  log_level: warn', // no access-log line per request
    'store:',
    `  path: ${path.join(DIR, 'triplane.db')}`,
    'control:',
    `  dir: ${path.join(DIR, 'run')}`,
    'mcp_gw:',
    '  workers: 1', // mcp-gw runs on one event loop by design
    '  listen:',
    '    - host: 127.0.0.1',
    '      port: 0',
    '  servers:',
    `    - name: ${SERVER}`,
    '      transport: http',
    `      url: ${upstreamUrl}`,
    '',
  ].join('\n'));
  return file;
}

// Starts mcp-gw and resolves once gwctl status reports its listen address.
async function startGateway(config) {
  const proc = track(spawn(GW_BIN, ['--config', config], { env: ENV, stdio: ['ignore', 'ignore', 'pipe'] }));
  proc.stderrText = '';
  proc.stderr.setEncoding('utf8').on('data', (c) => {
    if (proc.stderrText.length < 1e6) proc.stderrText += c;
  });
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`mcp-gw exited during start-up:\n${proc.stderrText.slice(-3000)}`);
    const r = gwctl('--json', 'status');
    if (r.status === 0) {
      try {
        const st = JSON.parse(r.stdout).find((d) => d.ok && d.result?.pid === proc.pid);
        const listen = st?.result?.listen?.[0];
        if (listen) {
          proc.url = listen;
          proc.port = Number(new URL(listen).port);
          proc.version = st.result.version;
          return proc;
        }
      } catch {}
    }
    if (Date.now() > deadline) throw new Error(`mcp-gw did not start within ${START_TIMEOUT_MS} ms:\n${proc.stderrText.slice(-3000)}`);
    await sleep(20);
  }
}

// ---- a raw HTTP/1.1 client: one keep-alive connection, one request at a time ----
//
// Cheaper than node:http or fetch (no agent, no header objects on the way out, one write per
// request), so that the client costs as little CPU as possible next to the servers it measures.

class Conn {
  static open(port) {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port });
      const t = setTimeout(() => {
        sock.destroy();
        reject(new Error(`connect to 127.0.0.1:${port} timed out`));
      }, CALL_TIMEOUT_MS);
      const onError = (e) => {
        clearTimeout(t);
        reject(e);
      };
      sock.once('error', onError);
      sock.once('connect', () => {
        clearTimeout(t);
        sock.removeListener('error', onError);
        sock.setNoDelay(true);
        resolve(new Conn(sock));
      });
    });
  }

  constructor(sock) {
    this.sock = sock;
    this.buf = null;
    this.pending = null;
    this.closed = false;
    sock.on('data', (d) => this.onData(d));
    sock.on('error', (e) => this.onClose(e));
    sock.on('close', () => this.onClose(new Error('the connection closed')));
  }

  // Sends one whole request (head and body as one string); resolves with {status, headers, body}.
  request(text) {
    if (this.closed) return Promise.reject(new Error('the connection is closed'));
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject, at: performance.now() };
      this.head = null;
      this.sock.write(text);
    });
  }

  close() {
    this.closed = true;
    this.sock.destroy();
  }

  onClose(e) {
    this.closed = true;
    const p = this.pending;
    this.pending = null;
    if (p) p.reject(e);
  }

  onData(d) {
    this.buf = this.buf === null ? d : Buffer.concat([this.buf, d]);
    if (this.pending === null) return;
    let res;
    try {
      res = this.parse();
    } catch (e) {
      this.sock.destroy();
      this.onClose(e);
      return;
    }
    if (res === null) return;
    const p = this.pending;
    this.pending = null;
    if (res.headers.connection === 'close') this.closed = true;
    p.resolve(res);
  }

  // Parses the response in this.buf; null while incomplete.
  parse() {
    const buf = this.buf;
    if (this.head === null) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return null;
      const lines = buf.toString('latin1', 0, end).split('\r\n');
      const status = Number(lines[0].slice(9, 12));
      const headers = {};
      for (let i = 1; i < lines.length; i++) {
        const c = lines[i].indexOf(':');
        headers[lines[i].slice(0, c).toLowerCase()] = lines[i].slice(c + 1).trim();
      }
      const chunked = /chunked/i.test(headers['transfer-encoding'] ?? '');
      const length = headers['content-length'] !== undefined ? Number(headers['content-length']) : chunked ? -1 : 0;
      this.head = { status, headers, chunked, length, start: end + 4, pos: end + 4, chunks: [] };
    }
    const h = this.head;
    if (!h.chunked) {
      if (buf.length < h.start + h.length) return null;
      return this.done(buf.subarray(h.start, h.start + h.length), h.start + h.length);
    }
    for (;;) {
      const eol = buf.indexOf('\r\n', h.pos);
      if (eol < 0) return null;
      const size = parseInt(buf.toString('latin1', h.pos, eol), 16);
      if (Number.isNaN(size)) throw new Error('bad chunk size');
      if (size === 0) {
        if (buf.length < eol + 4) return null; // no trailers: "0\r\n\r\n"
        return this.done(h.chunks.length === 1 ? h.chunks[0] : Buffer.concat(h.chunks), eol + 4);
      }
      if (buf.length < eol + 2 + size + 2) return null;
      h.chunks.push(buf.subarray(eol + 2, eol + 2 + size));
      h.pos = eol + 2 + size + 2;
    }
  }

  done(body, used) {
    const h = this.head;
    this.head = null;
    this.buf = used < this.buf.length ? this.buf.subarray(used) : null;
    return { status: h.status, headers: h.headers, body };
  }
}

// The JSON-RPC messages of an answer: a JSON body, or the data of each SSE event.
function messages(res) {
  const ct = res.headers['content-type'] ?? '';
  const text = res.body.toString('utf8');
  if (ct.startsWith('application/json')) return [JSON.parse(text)];
  if (!ct.startsWith('text/event-stream')) throw new Error(`HTTP ${res.status}, content-type "${ct}": ${text.slice(0, 300)}`);
  const out = [];
  for (const event of text.split(/\r?\n\r?\n/)) {
    const data = event
      .split(/\r?\n/)
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(l[5] === ' ' ? 6 : 5))
      .join('\n');
    if (data !== '') out.push(JSON.parse(data));
  }
  return out;
}

function answerTo(res, id) {
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`);
  const m = messages(res).find((x) => x.id === id && (x.result !== undefined || x.error !== undefined));
  if (m === undefined) throw new Error(`no answer to request ${id}: ${res.body.toString('utf8').slice(0, 300)}`);
  if (m.error) throw new Error(`JSON-RPC error ${m.error.code}: ${m.error.message}`);
  return m.result;
}

// A target: where the calls go and what the tool is called there.
function target(name, port, key, tool) {
  return { name, port, tool, auth: key ? `Authorization: Bearer ${key}\r\n` : '' };
}

// One MCP session on its own connection.
class Session {
  constructor(t, conn) {
    this.t = t;
    this.conn = conn;
    this.nextId = 1;
    this.sid = null;
    this.reconnects = 0;
  }

  static async open(t) {
    const s = new Session(t, await Conn.open(t.port));
    await s.initialize();
    return s;
  }

  // The connection, opened again when the server closed it after its last answer (mcp-gw answers
  // notifications with 202 and Connection: close).
  async ready() {
    if (this.conn.closed) {
      this.reconnects++;
      this.conn.close();
      this.conn = await Conn.open(this.t.port);
    }
    return this.conn;
  }

  async post(body, sid) {
    const head =
      `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${this.t.port}\r\nContent-Type: application/json\r\n` +
      `Accept: application/json, text/event-stream\r\n${this.t.auth}` +
      (sid ? `Mcp-Session-Id: ${sid}\r\nMCP-Protocol-Version: ${PROTOCOL}\r\n` : '') +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n`;
    return (await this.ready()).request(head + body);
  }

  async initialize() {
    const res = await this.post(JSON.stringify({
      jsonrpc: '2.0', id: 0, method: 'initialize',
      params: { protocolVersion: PROTOCOL, capabilities: {}, clientInfo: { name: 'mcp_gw-bench', version: '1' } },
    }));
    const r = answerTo(res, 0);
    if (r.protocolVersion !== PROTOCOL) throw new Error(`${this.t.name}: negotiated ${r.protocolVersion}`);
    this.sid = res.headers['mcp-session-id'];
    if (!this.sid) throw new Error(`${this.t.name}: initialize gave no Mcp-Session-Id`);
    // The hot path's request head, built once.
    this.callHead =
      `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${this.t.port}\r\nContent-Type: application/json\r\n` +
      `Accept: application/json, text/event-stream\r\n${this.t.auth}Mcp-Session-Id: ${this.sid}\r\n` +
      `MCP-Protocol-Version: ${PROTOCOL}\r\nContent-Length: `;
    const n = await this.post('{"jsonrpc":"2.0","method":"notifications/initialized"}', this.sid);
    if (n.status !== 202) throw new Error(`${this.t.name}: notifications/initialized got HTTP ${n.status}`);
    this.closedAfterNotification = n.headers.connection === 'close';
  }

  async listTools() {
    const id = this.nextId++;
    const res = await this.post(`{"jsonrpc":"2.0","id":${id},"method":"tools/list","params":{}}`, this.sid);
    return answerTo(res, id).tools.map((t) => t.name);
  }

  // One tools/call of echo; checks that the answer carries the message back.
  async call(message) {
    const id = this.nextId++;
    const body = `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"${this.t.tool}","arguments":{"message":"${message}","n":${id}}}}`;
    const conn = this.conn.closed ? await this.ready() : this.conn;
    const res = await conn.request(this.callHead + body.length + '\r\n\r\n' + body);
    const r = answerTo(res, id);
    if (r.isError || r.content?.[0]?.text !== message) throw new Error(`${this.t.name}: unexpected result ${JSON.stringify(r).slice(0, 300)}`);
  }

  async close() {
    try {
      if (this.sid) {
        await this.ready();
        const head = `DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1:${this.t.port}\r\n${this.t.auth}Mcp-Session-Id: ${this.sid}\r\nMCP-Protocol-Version: ${PROTOCOL}\r\n\r\n`;
        await Promise.race([this.conn.request(head), sleep(CALL_TIMEOUT_MS)]);
      }
    } catch {}
    this.conn.close();
  }
}

// ---- measurements ----

function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}
function summary(values) {
  const s = Float64Array.from(values).sort();
  return { n: s.length, p50: quantile(s, 0.5), p99: quantile(s, 0.99), max: s[s.length - 1] };
}

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();
// CPU seconds a process has used (user + system), from /proc.
function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK; // utime, stime (fields 14 and 15)
  } catch {
    return NaN;
  }
}
// CPU seconds the whole machine has been busy (all cores: everything but idle and iowait).
function machineCpuSeconds() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  return (f.reduce((a, b) => a + b, 0) - f[3] - f[4]) / CLK_TCK;
}
function selfCpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

// Prometheus text: the histogram `name` with labels matching `want`, as {le: cumulative, sum, count}.
function histogram(text, name, want) {
  const h = { buckets: new Map(), sum: 0, count: 0 };
  const matches = (labels) => Object.entries(want).every(([k, v]) => labels.includes(`${k}="${v}"`));
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^(\w+)\{([^}]*)\} (\S+)$/.exec(line);
    if (!m || !matches(m[2])) continue;
    const v = Number(m[3]);
    if (m[1] === `${name}_bucket`) h.buckets.set(/le="([^"]+)"/.exec(m[2])[1], v);
    else if (m[1] === `${name}_sum`) h.sum = v;
    else if (m[1] === `${name}_count`) h.count = v;
  }
  return h;
}
function histDelta(after, before) {
  const d = { buckets: new Map(), sum: after.sum - before.sum, count: after.count - before.count };
  for (const [le, v] of after.buckets) d.buckets.set(le, v - (before.buckets.get(le) ?? 0));
  return d;
}
function fmtLe(le) {
  return le === '+Inf' ? '+Inf' : `${Number(le) * 1000} ms`;
}
function histSummary(h) {
  if (h.count <= 0) return 'no observations';
  const where = (q) => {
    let prev = '0';
    for (const [le, cum] of h.buckets) {
      if (cum >= q * h.count) return `(${fmtLe(prev).replace(' ms', '')}, ${fmtLe(le)}]`;
      prev = le;
    }
    return '?';
  };
  const under1 = ((h.buckets.get('0.001') ?? 0) / h.count) * 100;
  return `count ${h.count}, mean ${((h.sum / h.count) * 1e6).toFixed(1)} us, <= 1 ms ${under1.toFixed(2)} %, p50 in ${where(0.5)}, p99 in ${where(0.99)}`;
}
async function scrape(gw) {
  const res = await fetch(`${gw.url}/metrics`, { signal: AbortSignal.timeout(CALL_TIMEOUT_MS) });
  if (!res.ok) throw new Error(`GET /metrics: HTTP ${res.status}`);
  return res.text();
}

// One run: c clients, each with its own connection and session, each doing sequential tools/call
// round trips: WARMUP s unmeasured, then DURATION s (or MAX_CALLS calls in all) measured. A call
// counts when it started inside the measured window.
async function loadRun(t, c, pids, gw) {
  const sessions = [];
  try {
    for (let i = 0; i < c; i += 16) {
      const batch = [];
      for (let j = i; j < Math.min(c, i + 16); j++) batch.push(Session.open(t));
      sessions.push(...(await Promise.all(batch)));
    }
  } catch (e) {
    await Promise.all(sessions.map((s) => s.close()));
    throw e;
  }
  const lat = new Float64Array(MAX_CALLS + 1000 * c);
  const st = { t0: Infinity, t1: Infinity, stop: false, n: 0, errors: 0, firstError: null };
  const loop = async (s, i) => {
    let k = 0;
    while (!st.stop) {
      const msg = `client ${i} call ${k++}`;
      const a = performance.now();
      try {
        await s.call(msg);
      } catch (e) {
        st.errors++;
        st.firstError ??= e.message;
        return; // this client stops; the run reports the error
      }
      if (a >= st.t0 && a < st.t1 && st.n < lat.length) lat[st.n++] = performance.now() - a;
    }
  };
  // A call that takes longer than CALL_TIMEOUT_MS fails (its connection is closed).
  const watchdog = setInterval(() => {
    const now = performance.now();
    for (const s of sessions) if (s.conn.pending && now - s.conn.pending.at > CALL_TIMEOUT_MS) s.conn.sock.destroy(new Error(`no answer within ${CALL_TIMEOUT_MS} ms`));
  }, 250);
  const loops = sessions.map(loop);
  await sleep(WARMUP * 1000);
  const m0 = gw ? await scrape(gw) : null;
  const cpu0 = { machine: machineCpuSeconds(), self: selfCpuSeconds(), ...Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuSeconds(p)])) };
  const perf = PERF && gw ? startPerf(gw.pid, c) : null;
  st.t0 = performance.now();
  const deadline = st.t0 + DURATION * 1000;
  while (performance.now() < deadline && st.n < MAX_CALLS && st.errors === 0) await sleep(Math.min(50, deadline - performance.now()));
  st.t1 = performance.now();
  st.stop = true;
  const cpu1 = { machine: machineCpuSeconds(), self: selfCpuSeconds(), ...Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuSeconds(p)])) };
  await Promise.all(loops);
  clearInterval(watchdog);
  const m1 = gw ? await scrape(gw) : null;
  if (perf) await perf;
  await Promise.all(sessions.map((s) => s.close()));
  const secs = (st.t1 - st.t0) / 1000;
  const calls = st.n;
  const r = { target: t.name, c, calls, secs, rps: calls / secs, errors: st.errors, firstError: st.firstError, ...summary(lat.subarray(0, calls)) };
  r.cpu = Object.fromEntries(Object.keys(cpu0).map((k) => [k, ((cpu1[k] - cpu0[k]) / secs) * 100]));
  // What else ran on the machine meanwhile (perf, when PERF=1, counts here too).
  r.cpu.other = Math.max(0, r.cpu.machine - r.cpu.self - r.cpu.upstream - (r.cpu.gw || 0));
  if (gw) {
    const hHttp = (m) => histogram(m, 'triplane_http_request_duration_seconds', { route: '/mcp' });
    const hUp = (m) => histogram(m, 'triplane_mcp_upstream_duration_seconds', { server: SERVER, method: 'tools/call' });
    r.http = histDelta(hHttp(m1), hHttp(m0));
    r.up = histDelta(hUp(m1), hUp(m0));
  }
  return r;
}

// Waits (up to QUIET_WAIT s) until processes other than ours use under QUIET_PCT % of one core,
// measured over half a second. Returns what others used at the end, in % of one core.
async function waitQuiet(pids, what) {
  const deadline = Date.now() + QUIET_WAIT * 1000;
  const ours = () => selfCpuSeconds() + Object.values(pids).reduce((a, p) => a + cpuSeconds(p), 0);
  let said = false;
  for (;;) {
    const m0 = machineCpuSeconds(), o0 = ours(), t0 = performance.now();
    await sleep(500);
    const secs = (performance.now() - t0) / 1000;
    const other = Math.max(0, ((machineCpuSeconds() - m0 - (ours() - o0)) / secs) * 100);
    if (other < QUIET_PCT) return other;
    if (Date.now() >= deadline) {
      process.stderr.write(`  the machine is still busy (others use ${other.toFixed(0)} % of a core); going on with ${what}\n`);
      return other;
    }
    if (!said) process.stderr.write(`  waiting up to ${QUIET_WAIT} s for the machine to be quiet (others use ${other.toFixed(0)} % of a core)\n`);
    said = true;
  }
}

// perf record of mcp-gw for the measured window (PERF=1).
const perfFiles = [];
function startPerf(pid, c) {
  const file = path.join(PERF_DIR, `perf-mcp-gw-c${c}.data`);
  perfFiles.push({ c, file });
  const p = track(spawn('perf', ['record', '-e', 'cpu-clock', '-F', '999', ...(PERF_DWARF ? ['--call-graph', 'dwarf,16384'] : []), '-p', String(pid), '-o', file, '--', 'sleep', String(DURATION)], { stdio: 'ignore' }));
  return p.exited;
}

// The cost of a new session: connect, initialize, notifications/initialized and tools/list
// ("open"), then the first tools/call ("first call"), in ms. The session is deleted after.
async function sessionCost(t) {
  const a = performance.now();
  const s = new Session(t, await Conn.open(t.port));
  try {
    await s.initialize();
    const names = await s.listTools();
    if (!names.includes(t.tool)) throw new Error(`${t.name}: tools/list has no ${t.tool}: ${names.join(', ')}`);
    const b = performance.now();
    await s.call('first call');
    const c = performance.now();
    return { open: b - a, first: c - b };
  } finally {
    await s.close();
  }
}

// ---- the run ----

const fmt = (x, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : '?');
const pad = (s, n) => String(s).padEnd(n);
const lpad = (s, n) => String(s).padStart(n);

let upstream, gw, key;
async function main() {
  upstream = await startUpstream();
  const config = writeConfig(upstream.url);
  gw = await startGateway(config);

  // A principal allowed every MCP action on the bench server's tools, and its key. So every call
  // is authenticated, authorised, rate-limit checked, validated against the tool's input schema,
  // relayed on the session's own upstream session, audited and counted.
  const policy = path.join(DIR, 'policy.yaml');
  writeFileSync(policy, [
    'teams: [{id: bench, description: mcp-gw benchmark}]',
    'principals:',
    '  - {id: bench-user, kind: user, team: bench}',
    'rules:',
    `  - {id: bench-mcp, effect: allow, subjects: {principals: [bench-user]}, plane: mcp, resources: ["${SERVER}/*"], actions: ["*"]}`,
    '',
  ].join('\n'));
  let r = gwctl('apply', '-f', policy);
  if (r.status !== 0) throw new Error(`gwctl apply failed: ${r.stderr}`);
  r = gwctl('--json', 'key', 'create', '--principal', 'bench-user', '--name', 'bench');
  if (r.status !== 0) throw new Error(`gwctl key create failed: ${r.stderr}`);
  key = JSON.parse(r.stdout).key;
  if (!key?.startsWith('tp_')) throw new Error('gwctl key create gave no key');

  const direct = () => target('direct', upstream.port, null, 'echo');
  const viaGw = () => target('mcp-gw', gw.port, key, `${SERVER}__echo`);

  const cpuModel = (readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.*)$/m) ?? [])[1] ?? '?';
  // The source the build was made from, and its commit.
  let src = ROOT;
  try {
    src = JSON.parse(readFileSync(path.join(BUILD, 'meson-info/meson-info.json'), 'utf8')).directories.source ?? ROOT;
  } catch {}
  let rev = `from ${src}`;
  try {
    rev += `, ${execFileSync('git', ['-C', src, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()}`;
    if (execFileSync('git', ['-C', src, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).trim()) rev += ' with uncommitted changes';
  } catch {
    rev += ' (not a git checkout)';
  }
  console.log(`mcp-gw benchmark: ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}`);
  console.log(`machine: nproc ${os.cpus().length}, CPU '${cpuModel}', kernel ${os.release()}`);
  console.log(`build: ${BUILD.startsWith(ROOT + path.sep) ? path.relative(ROOT, BUILD) : BUILD} (${buildtype}), ${rev}; mcp-gw ${gw.version}, node ${process.version}`);
  console.log(`upstream: tests/fixtures/mcp-bench-server.mjs (${UPSTREAM_SSE ? 'SSE' : 'JSON'} answers), one Node process; mcp-gw: workers 1, log_level warn, one HTTP server`);
  console.log(`client: this script, one Node thread; raw HTTP/1.1 on node:net, one keep-alive connection and one MCP session per client`);
  console.log(`load average before the runs: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} (anything else busy on the machine skews the numbers)`);

  // Sanity: both paths list the tool and echo a message.
  const notifyCloses = {};
  for (const t of [direct(), viaGw()]) {
    const s = await Session.open(t);
    notifyCloses[t.name] = s.closedAfterNotification;
    const names = await s.listTools();
    if (!names.includes(t.tool)) throw new Error(`${t.name}: tools/list has no ${t.tool}: ${names.join(', ')}`);
    await s.call('sanity');
    await s.close();
  }

  // ---- session cost ----
  process.stderr.write(`session cost: ${COLD_SESSIONS} cold (a gateway restart each), ${WARM_SESSIONS} warm per target\n`);
  await waitQuiet({ upstream: upstream.pid, gw: gw.pid }, 'the sessions');
  const cold = [];
  for (let i = 0; i < COLD_SESSIONS; i++) {
    await stopProc(gw);
    gw = await startGateway(config);
    await sleep(100); // let the new gateway settle (its first state snapshot)
    const cost = await sessionCost(viaGw());
    // What the gateway itself saw: its upstream handshake and catalog fetch for that session.
    const m = await scrape(gw);
    const up = (method) => histogram(m, 'triplane_mcp_upstream_duration_seconds', { server: SERVER, method });
    cost.upInit = (up('initialize').sum / up('initialize').count) * 1000;
    cost.upList = (up('tools/list').sum / up('tools/list').count) * 1000;
    cold.push(cost);
  }
  const warm = { 'mcp-gw': [], direct: [] };
  for (const mk of [direct, viaGw]) {
    const t = mk();
    for (let i = 0; i < Math.min(20, WARM_SESSIONS); i++) await sessionCost(t); // unmeasured warm-up
    for (let i = 0; i < WARM_SESSIONS; i++) warm[t.name].push(await sessionCost(t));
  }

  // ---- load runs ----
  const runs = [];
  process.stderr.write(`load: ${CONCURRENCY.length * 2} runs of ${WARMUP} + ${DURATION} s\n`);
  for (const c of CONCURRENCY) {
    const pids = { upstream: upstream.pid, gw: gw.pid };
    for (const t of [direct(), viaGw()]) {
      // A run during which other processes used the CPU is done again (ATTEMPTS in all at most);
      // the quietest attempt is reported.
      let best = null;
      for (let a = 1; a <= ATTEMPTS; a++) {
        process.stderr.write(`  ${t.name}, ${c} client${c > 1 ? 's' : ''}${a > 1 ? `, attempt ${a} (others used ${best.cpu.other.toFixed(0)} % of a core)` : ''}\n`);
        await waitQuiet(pids, 'this run');
        const r = await loadRun(t, c, pids, t.name === 'mcp-gw' ? gw : null);
        r.attempts = a;
        if (best === null || r.cpu.other < best.cpu.other || r.errors > 0) best = r;
        if (r.errors > 0 || r.cpu.other < 2 * QUIET_PCT) break;
      }
      runs.push(best);
    }
  }

  // ---- report ----
  console.log('\nsession cost, ms (open: connect + initialize + notifications/initialized + tools/list; first call: the first tools/call after):');
  console.log(`${pad('target', 22)} ${lpad('sessions', 8)} ${lpad('open p50', 9)} ${lpad('open p99', 9)} ${lpad('first p50', 10)} ${lpad('first p99', 10)}`);
  const row = (name, xs) => {
    if (xs.length === 0) return;
    const o = summary(xs.map((x) => x.open));
    const f = summary(xs.map((x) => x.first));
    console.log(`${pad(name, 22)} ${lpad(xs.length, 8)} ${lpad(fmt(o.p50), 9)} ${lpad(fmt(o.p99), 9)} ${lpad(fmt(f.p50), 10)} ${lpad(fmt(f.p99), 10)}`);
  };
  row('mcp-gw cold', cold);
  row('mcp-gw warm', warm['mcp-gw']);
  row('direct (warm)', warm.direct);
  if (cold.length > 0) {
    console.log(`  (cold: the first session after a gateway start, ${cold.length} starts; with so few, p99 is the maximum)`);
    const ui = summary(cold.map((x) => x.upInit)), ul = summary(cold.map((x) => x.upList));
    console.log(`  cold, in mcp-gw's upstream histogram (median, max): upstream initialize ${fmt(ui.p50)}, ${fmt(ui.max)} ms; upstream tools/list ${fmt(ul.p50)}, ${fmt(ul.max)} ms`);
  }

  console.log(`\ntools/call round trips: each client one connection, one session, sequential calls; ${WARMUP} s warm-up, ${DURATION} s measured:`);
  console.log(`${pad('clients', 7)} ${pad('target', 8)} ${lpad('calls/s', 9)} ${lpad('p50 ms', 8)} ${lpad('p99 ms', 8)} ${lpad('max ms', 8)} ${lpad('errors', 6)}   cpu % of a core: client, upstream, mcp-gw, others`);
  let anomalies = 0;
  for (const c of CONCURRENCY) {
    const d = runs.find((x) => x.c === c && x.target === 'direct');
    const g = runs.find((x) => x.c === c && x.target === 'mcp-gw');
    for (const x of [d, g]) {
      console.log(`${pad(c, 7)} ${pad(x.target, 8)} ${lpad(x.rps.toFixed(0), 9)} ${lpad(fmt(x.p50), 8)} ${lpad(fmt(x.p99), 8)} ${lpad(fmt(x.max, 1), 8)} ${lpad(x.errors, 6)}   ${fmt(x.cpu.self, 0)}, ${fmt(x.cpu.upstream, 0)}, ${fmt(x.cpu.gw, 0)}, ${fmt(x.cpu.other, 0)}${x.attempts > 1 ? ` (attempt ${x.attempts})` : ''}${x.cpu.other >= 2 * QUIET_PCT ? '  (busy machine: numbers skewed)' : ''}`);
      if (x.errors > 0) {
        anomalies++;
        console.log(`        ANOMALY: ${x.errors} failed calls; the first: ${x.firstError}`);
      }
    }
    console.log(`${pad(c, 7)} added by mcp-gw: p50 ${(g.p50 - d.p50 >= 0 ? '+' : '') + fmt(g.p50 - d.p50)} ms, p99 ${(g.p99 - d.p99 >= 0 ? '+' : '') + fmt(g.p99 - d.p99)} ms; throughput ${(g.rps / d.rps).toFixed(2)}x direct`);
  }

  console.log('\nmcp-gw histograms over each measured window (POST /mcp: whole request in mcp-gw; upstream: tools/call sent to answered):');
  for (const g of runs.filter((x) => x.target === 'mcp-gw')) {
    console.log(`  ${lpad(g.c, 3)} clients  POST /mcp  ${histSummary(g.http)}`);
    console.log(`               upstream   ${histSummary(g.up)}`);
    const perCall = (pct, x) => ((pct / 100) * x.secs * 1e6) / x.calls;
    const d = runs.find((x) => x.c === g.c && x.target === 'direct');
    const inGw = g.http.count > 0 && g.up.count > 0 ? (g.http.sum / g.http.count - g.up.sum / g.up.count) * 1e6 : NaN;
    console.log(`               mean time in mcp-gw outside the upstream call ${fmt(inGw, 1)} us; CPU per call: mcp-gw ${fmt(perCall(g.cpu.gw, g), 1)} us,` +
      ` upstream ${fmt(perCall(g.cpu.upstream, g), 1)} us (direct: ${fmt(perCall(d.cpu.upstream, d), 1)} us), client ${fmt(perCall(g.cpu.self, g), 1)} us (direct: ${fmt(perCall(d.cpu.self, d), 1)} us)`);
  }

  // ---- checks ----
  console.log('\nmcp-gw checks:');
  const alive = gw.exitCode === null && gw.signalCode === null;
  console.log(alive ? `  mcp-gw still running (pid ${gw.pid})` : '  ANOMALY: mcp-gw is not running');
  if (!alive) anomalies++;
  const m = await scrape(gw);
  for (const line of m.split('\n')) {
    if (/^triplane_mcp_calls_total\{/.test(line) || /^triplane_store_records_total\{/.test(line) || /^triplane_mcp_sessions_active /.test(line)) console.log(`  ${line}`);
    if (/^triplane_http_requests_total\{/.test(line) && !/status="(200|202)"/.test(line)) console.log(`  (not 200/202) ${line}`);
  }
  for (const [name, closes] of Object.entries(notifyCloses))
    if (closes) console.log(`  ${name} answers a notification (202) with Connection: close: a client opens a new connection after each one`);
  const err = gw.stderrText.trim();
  console.log(err ? `  mcp-gw stderr (level warn and above), last lines:\n${err.split('\n').slice(-5).map((l) => `    ${l.slice(0, 300)}`).join('\n')}` : '  mcp-gw stderr: empty (no warnings or errors)');
  if (upstream.stderrText.trim()) console.log(`  upstream stderr:\n    ${upstream.stderrText.trim().split('\n').slice(-5).join('\n    ')}`);

  if (perfFiles.length > 0) {
    console.log('\nperf record -e cpu-clock -F 999 of mcp-gw (all its threads) over each measured window, self time:');
    const report = (file, sort, limit) => {
      const r = spawnSync('perf', ['report', '-i', file, '--stdio', '--no-children', '-g', 'none', '--sort', sort, '--percent-limit', limit], { encoding: 'utf8', timeout: 120000 });
      return (r.stdout ?? '').split('\n').filter((l) => l.trim() && !l.startsWith('#')).map((l) => l.trim().replace(/\s+/g, ' '));
    };
    for (const { c, file } of perfFiles) {
      console.log(`  ${c} clients, by object: ${report(file, 'dso', '0.5').slice(0, 8).join('; ')}`);
      console.log(`  ${c} clients, top symbols:`);
      for (const l of report(file, 'dso,sym', '0.7').slice(0, 30)) console.log(`    ${l}`);
    }
    if (PERF_DIR_KEPT) console.log(`  (perf data kept in ${PERF_DIR_KEPT})`);
  }
  return anomalies;
}

let code = 0;
try {
  code = (await main()) > 0 ? 1 : 0;
} catch (e) {
  process.stderr.write(`mcp_gw.mjs: ${e.stack ?? e}\n`);
  if (gw?.stderrText) process.stderr.write(`--- mcp-gw stderr, last lines:\n${gw.stderrText.split('\n').slice(-20).join('\n')}\n`);
  if (upstream?.stderrText) process.stderr.write(`--- upstream stderr:\n${upstream.stderrText.slice(-2000)}\n`);
  code = 1;
}
await stopProc(gw);
await stopProc(upstream);
process.exit(code);
