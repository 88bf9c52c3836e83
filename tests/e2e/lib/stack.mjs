// A Triplane stack for end-to-end tests: real daemons from the build under test, on free
// loopback ports, with a temporary store and control directory. Nothing is mocked.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '../../..');
export const BUILD = process.env.TRIPLANE_BUILD ?? path.join(ROOT, 'build');
export const DAEMONS = ['model-gw', 'mcp-gw', 'agent-gw'];
const SECTION = { 'model-gw': 'model_gw', 'mcp-gw': 'mcp_gw', 'agent-gw': 'agent_gw' };

// Sanitizer builds start slower; every wait below is bounded.
const START_TIMEOUT_MS = 20000;

export function binary(name) {
  return name === 'gwctl' ? path.join(BUILD, 'gwctl', 'gwctl') : path.join(BUILD, name, name);
}

// Builds a configuration file's text. `extra` maps section name to extra YAML lines.
export function configText({ dir, common = [], tls = null, ports = {}, extra = {}, extraTop = [], watchMs = 50 }) {
  const lines = [
    ...extraTop,
    'common:',
    '  log_level: debug',
    ...common.map((l) => `  ${l}`),
    'store:',
    `  path: ${path.join(dir, 'triplane.db')}`,
    `  watch_interval_ms: ${watchMs}`,
    'control:',
    `  dir: ${path.join(dir, 'run')}`,
  ];
  for (const name of DAEMONS) {
    lines.push(`${SECTION[name]}:`, `  workers: ${name === 'mcp-gw' ? 1 : 2}`, '  listen:', '    - host: 127.0.0.1', `      port: ${ports[name] ?? 0}`);
    if (tls) lines.push(`      tls_cert: ${tls.cert}`, `      tls_key: ${tls.key}`);
    for (const l of extra[SECTION[name]] ?? []) lines.push(`  ${l}`);
  }
  return lines.join('\n') + '\n';
}

export class Daemon {
  constructor(name, configPath, env) {
    this.name = name;
    this.lines = []; // stderr, one entry per line: parsed JSON when it is JSON, else the string
    this.raw = '';
    this.proc = spawn(binary(name), ['--config', configPath], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => resolve({ code, signal, at: Date.now() }));
    });
    let partial = '';
    this.proc.stderr.setEncoding('utf8');
    this.proc.stderr.on('data', (chunk) => {
      this.raw += chunk;
      partial += chunk;
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        try {
          this.lines.push(JSON.parse(line));
        } catch {
          this.lines.push(line);
        }
      }
    });
  }

  get pid() {
    return this.proc.pid;
  }

  // Resolves with the first log line for which pred is true, waiting up to timeoutMs.
  async waitForLog(pred, timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find((l) => typeof l === 'object' && l !== null && pred(l));
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`${this.name}: no matching log line within ${timeoutMs} ms:\n${this.raw.slice(-3000)}`);
      if (this.proc.exitCode !== null) throw new Error(`${this.name} exited (${this.proc.exitCode}):\n${this.raw.slice(-3000)}`);
      await sleep(20);
    }
  }

  async started() {
    const line = await this.waitForLog((l) => l.msg === 'started', START_TIMEOUT_MS);
    this.url = line.listen[0];
    return this;
  }

  // The last lines this daemon wrote that are not JSON log lines (sanitizer reports, crashes),
  // or its last log lines: what an assertion message needs when an exit status is wrong.
  tail(n = 40) {
    const plain = this.raw.split('\n').filter((l) => l && !l.startsWith('{'));
    return (plain.length ? plain : this.raw.split('\n')).slice(-n).join('\n');
  }

  // Sanitizer reports in this daemon's stderr (empty when clean).
  sanitizerReports() {
    return this.raw.split('\n').filter((l) => /ERROR: (Address|Leak)Sanitizer|runtime error:/.test(l));
  }

  async stop(signal = 'SIGTERM', timeoutMs = 15000) {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    const timer = sleep(timeoutMs).then(() => null);
    const result = await Promise.race([this.exited, timer]);
    if (result === null) {
      this.proc.kill('SIGKILL');
      throw new Error(`${this.name} did not exit within ${timeoutMs} ms of ${signal}`);
    }
    return result;
  }
}

export class Stack {
  constructor(dir, configPath) {
    this.dir = dir;
    this.configPath = configPath;
    this.storePath = path.join(dir, 'triplane.db');
    this.controlDir = path.join(dir, 'run');
    this.daemons = {};
    this.env = { ...process.env, TRIPLANE_STORE: this.storePath, TRIPLANE_CONTROL_DIR: this.controlDir };
    delete this.env.TRIPLANE_CONFIG;
  }

  // Starts the named daemons at the same moment (so the store is created and migrated
  // concurrently, as when three containers start together) and waits until each has started.
  static async start({ daemons = DAEMONS, ...opts } = {}) {
    const dir = mkdtempSync(path.join(tmpdir(), 'tp-e2e-'));
    const configPath = path.join(dir, 'triplane.yaml');
    writeFileSync(configPath, configText({ dir, ...opts }));
    const stack = new Stack(dir, configPath);
    for (const name of daemons) stack.daemons[name] = new Daemon(name, configPath, stack.env);
    try {
      await Promise.all(Object.values(stack.daemons).map((d) => d.started()));
    } catch (e) {
      await stack.close();
      throw e;
    }
    return stack;
  }

  url(name, p = '') {
    return this.daemons[name].url + p;
  }

  // Restarts a daemon that was stopped, with the same configuration.
  async restart(name) {
    this.daemons[name] = new Daemon(name, this.configPath, this.env);
    return this.daemons[name].started();
  }

  gwctl(...args) {
    const r = spawnSync(binary('gwctl'), args, { env: this.env, encoding: 'utf8', timeout: 20000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  sql(query) {
    const r = spawnSync('sqlite3', ['-cmd', '.timeout 5000', this.storePath, query], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`sqlite3: ${r.stderr}`);
    return r.stdout.trim();
  }

  async close() {
    const results = {};
    for (const [name, d] of Object.entries(this.daemons)) {
      try {
        results[name] = await d.stop();
      } catch (e) {
        results[name] = { error: e.message };
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
    return results;
  }
}

// Starts tests/fixtures/inference-fixture (an OpenAI-compatible fixture upstream) on a free port
// of 127.0.0.1 and resolves with { url, proc, stop() } once it listens.
export async function startFixture(args = []) {
  const proc = spawn(path.join(BUILD, 'tests', 'fixtures', 'inference-fixture'), ['--port', '0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (c) => (err += c));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`fixture did not start: ${err}`)), START_TIMEOUT_MS);
    proc.stdout.setEncoding('utf8');
    proc.stdout.on('data', (c) => {
      out += c;
      const m = out.match(/listening (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.on('exit', (code) => reject(new Error(`fixture exited ${code}: ${err}`)));
  });
  const exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
  return {
    url,
    proc,
    stderr: () => err,
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      return Promise.race([exited, sleep(10000).then(() => proc.kill('SIGKILL'))]);
    },
  };
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Polls fn until it returns a truthy value or the time is up; returns the last value.
export async function eventually(fn, timeoutMs = 5000, stepMs = 25) {
  const deadline = Date.now() + timeoutMs;
  let v;
  while (Date.now() < deadline) {
    v = await fn();
    if (v) return v;
    await sleep(stepMs);
  }
  return v;
}
