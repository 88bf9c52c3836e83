// Start-up, configuration errors, graceful shutdown, TLS and gwctl basics, against the real binaries.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ROOT, Stack, binary, configText } from './lib/stack.mjs';

function tempDir() {
  return mkdtempSync(path.join(tmpdir(), 'tp-e2e-'));
}

describe('configuration checks', () => {
  let dir;
  before(() => {
    dir = tempDir();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('--check-config prints ok for a valid file and exits 0', () => {
    const file = path.join(dir, 'ok.yaml');
    writeFileSync(file, configText({ dir }));
    for (const name of ['model-gw', 'mcp-gw', 'agent-gw']) {
      const r = spawnSync(binary(name), ['--config', file, '--check-config'], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, 'ok\n');
    }
  });

  test('a typo fails --check-config with exit 2 naming file:line:key', () => {
    const file = path.join(dir, 'typo.yaml');
    writeFileSync(file, ['common:', '  log_level: info', 'model_gw:', '  listen:', '    - host: 127.0.0.1', '      prot: 9080', ''].join('\n'));
    const r = spawnSync(binary('model-gw'), ['--config', file, '--check-config'], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:6: model_gw\\.listen\\[0\\]\\.prot: unknown key`));
  });

  test('an unset environment variable is named', () => {
    const file = path.join(dir, 'env.yaml');
    writeFileSync(file, 'store:\n  path: ${TP_E2E_SURELY_UNSET}/x.db\n');
    const env = { ...process.env };
    delete env.TP_E2E_SURELY_UNSET;
    const r = spawnSync(binary('mcp-gw'), ['--config', file, '--check-config'], { encoding: 'utf8', env });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /env\.yaml:2: store\.path: .*TP_E2E_SURELY_UNSET/);
  });

  test('a missing configuration file is an error, not a crash', () => {
    const r = spawnSync(binary('agent-gw'), ['--config', path.join(dir, 'nope.yaml')], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /nope\.yaml/);
  });
});

describe('graceful shutdown', () => {
  test('SIGTERM lets an in-flight request finish, refuses new connections, and exits 0', async () => {
    const stack = await Stack.start({ daemons: ['model-gw'], common: ['debug_endpoints: true', 'shutdown_timeout_ms: 10000'] });
    try {
      const d = stack.daemons['model-gw'];
      const started = Date.now();
      const inflight = fetch(stack.url('model-gw', '/debug/sleep?ms=1500'));
      await d.waitForLog((l) => l.msg === 'sleeping');
      d.proc.kill('SIGTERM');
      await d.waitForLog((l) => l.msg === 'shutting down');
      const readyz = await fetch(stack.url('model-gw', '/readyz')).then((r) => r.status, () => 'refused');
      assert.equal(readyz, 'refused', 'the listener is closed once shutdown begins');
      const res = await inflight;
      assert.equal(res.status, 200);
      assert.equal((await res.json()).slept_ms, 1500);
      const { code, at } = await d.exited;
      assert.equal(code, 0, d.tail());
      assert.ok(at - started >= 1500, 'it did not exit before the request finished');
      assert.ok(at - started < 8000, `it exited soon after (${at - started} ms)`);
      assert.deepEqual(d.sanitizerReports(), []);
    } finally {
      await stack.close();
    }
  });

  test('past shutdown_timeout_ms the daemon exits 0 and drops what is still running', async () => {
    const stack = await Stack.start({ daemons: ['mcp-gw'], common: ['debug_endpoints: true', 'shutdown_timeout_ms: 300'] });
    try {
      const d = stack.daemons['mcp-gw'];
      const inflight = fetch(stack.url('mcp-gw', '/debug/sleep?ms=10000')).then((r) => r.status, () => 'dropped');
      await d.waitForLog((l) => l.msg === 'sleeping');
      const t0 = Date.now();
      d.proc.kill('SIGTERM');
      const { code, at } = await d.exited;
      assert.equal(code, 0, d.tail());
      assert.ok(at - t0 < 5000, `exited ${at - t0} ms after SIGTERM`);
      assert.equal(await inflight, 'dropped');
      assert.ok(d.lines.some((l) => typeof l === 'object' && /requests in flight/.test(l.msg ?? '')));
    } finally {
      await stack.close();
    }
  });

  test('an idle keep-alive connection does not hold up shutdown', async () => {
    const stack = await Stack.start({ daemons: ['agent-gw'], common: ['shutdown_timeout_ms: 20000'] });
    try {
      const d = stack.daemons['agent-gw'];
      const agent = new http.Agent({ keepAlive: true });
      const status = await new Promise((resolve, reject) => {
        http.get(stack.url('agent-gw', '/healthz'), { agent }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode));
        }).on('error', reject);
      });
      assert.equal(status, 200);
      const t0 = Date.now();
      d.proc.kill('SIGTERM');
      const { code, at } = await d.exited;
      agent.destroy();
      assert.equal(code, 0);
      assert.ok(at - t0 < 3000, `exited ${at - t0} ms after SIGTERM with an idle connection open`);
    } finally {
      await stack.close();
    }
  });

  test('a second SIGTERM stops at once', async () => {
    const stack = await Stack.start({ daemons: ['model-gw'], common: ['debug_endpoints: true', 'shutdown_timeout_ms: 20000'] });
    try {
      const d = stack.daemons['model-gw'];
      const inflight = fetch(stack.url('model-gw', '/debug/sleep?ms=15000')).then((r) => r.status, () => 'dropped');
      await d.waitForLog((l) => l.msg === 'sleeping');
      const t0 = Date.now();
      d.proc.kill('SIGTERM');
      await d.waitForLog((l) => l.msg === 'shutting down');
      d.proc.kill('SIGTERM');
      const { code, at } = await d.exited;
      assert.equal(code, 0, d.tail());
      assert.ok(at - t0 < 5000, `exited ${at - t0} ms after the first SIGTERM`);
      assert.equal(await inflight, 'dropped');
    } finally {
      await stack.close();
    }
  });

  test('debug endpoints are off unless configured', async () => {
    const stack = await Stack.start({ daemons: ['agent-gw'] });
    try {
      const res = await fetch(stack.url('agent-gw', '/debug/sleep?ms=1'));
      assert.equal(res.status, 404);
    } finally {
      await stack.close();
    }
  });
});

describe('listeners', () => {
  test('a port already in use fails start-up with a message naming it', async () => {
    const blocker = net.createServer();
    await new Promise((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = blocker.address().port;
    const dir = tempDir();
    try {
      const file = path.join(dir, 'c.yaml');
      writeFileSync(file, configText({ dir, ports: { 'model-gw': port } }));
      const r = spawnSync(binary('model-gw'), ['--config', file], { encoding: 'utf8', timeout: 20000 });
      assert.equal(r.status, 1);
      assert.match(r.stderr, new RegExp(`bind 127\\.0\\.0\\.1:${port}: Address already in use`));
    } finally {
      blocker.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('TLS listeners speak HTTP/1.1 and HTTP/2 (ALPN)', async () => {
    const dir = tempDir();
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    const gen = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8' });
    assert.equal(gen.status, 0, gen.stderr);
    const stack = await Stack.start({ daemons: ['model-gw'], tls: { cert, key } });
    try {
      const url = stack.url('model-gw', '/healthz');
      assert.match(url, /^https:/);
      const h1 = await new Promise((resolve, reject) => {
        https.get(url, { ca: [readFileSync(cert, 'utf8')] }, (res) => {
          let body = '';
          res.on('data', (c) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode, body }));
        }).on('error', reject);
      });
      assert.equal(h1.status, 200);
      assert.deepEqual(JSON.parse(h1.body), { status: 'ok' });

      const client = http2.connect(new URL(url).origin, { ca: [readFileSync(cert, 'utf8')] });
      const h2 = await new Promise((resolve, reject) => {
        const req = client.request({ ':path': '/readyz' });
        let body = '';
        let status;
        req.on('response', (h) => (status = h[':status']));
        req.on('data', (c) => (body += c));
        req.on('end', () => resolve({ status, body }));
        req.on('error', reject);
      });
      client.close();
      assert.equal(h2.status, 200);
      assert.equal(JSON.parse(h2.body).status, 'ready');
    } finally {
      await stack.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('gwctl', () => {
  test('--help lists the commands, and each command has its own --help', () => {
    const r = spawnSync(binary('gwctl'), ['--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0);
    for (const cmd of ['init', 'status', 'reload']) assert.match(r.stdout, new RegExp(`^  ${cmd}\\s`, 'm'));
    const s = spawnSync(binary('gwctl'), ['status', '--help'], { encoding: 'utf8' });
    assert.equal(s.status, 0);
    assert.match(s.stdout, /^usage: gwctl status/);
  });

  test('docs/configuration.md is what the configuration tables say', () => {
    const r = spawnSync(binary('gwctl'), ['config', 'reference'], { encoding: 'utf8', env: { ...process.env, TRIPLANE_CONFIG: '' } });
    assert.equal(r.status, 0, r.stderr);
    const doc = readFileSync(path.join(ROOT, 'docs', 'configuration.md'), 'utf8');
    assert.equal(doc, r.stdout, 'regenerate it: build/gwctl/gwctl config reference > docs/configuration.md');
  });

  test('an unknown command exits 2', () => {
    const r = spawnSync(binary('gwctl'), ['frobnicate'], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown command 'frobnicate'/);
  });

  test('init creates and migrates a store, and is safe to run again', () => {
    const dir = tempDir();
    try {
      const store = path.join(dir, 'sub', 'state.db');
      const env = { ...process.env, TRIPLANE_STORE: store, TRIPLANE_CONFIG: '' };
      const first = spawnSync(binary('gwctl'), ['--json', 'init'], { encoding: 'utf8', env });
      assert.equal(first.status, 0, first.stderr);
      const out = JSON.parse(first.stdout);
      assert.equal(out.store, store);
      assert.ok(out.schema_version >= 1);
      const again = spawnSync(binary('gwctl'), ['init'], { encoding: 'utf8', env });
      assert.equal(again.status, 0, again.stderr);
      assert.match(again.stdout, new RegExp(`schema version ${out.schema_version}`));
      const mode = spawnSync('sqlite3', [store, 'PRAGMA journal_mode'], { encoding: 'utf8' });
      assert.equal(mode.stdout.trim(), 'wal');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('status with no daemons running says so and exits 1', () => {
    const dir = tempDir();
    try {
      const r = spawnSync(binary('gwctl'), ['--control-dir', dir, 'status'], { encoding: 'utf8', env: { ...process.env, TRIPLANE_CONFIG: '' } });
      assert.equal(r.status, 1);
      assert.match(r.stderr, /no daemon control sockets/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
