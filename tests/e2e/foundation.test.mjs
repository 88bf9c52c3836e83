// The foundation, end to end: three real daemons over real sockets with a real SQLite store.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { DAEMONS, Stack, eventually } from './lib/stack.mjs';

describe('three daemons with one store', () => {
  let stack;
  before(async () => {
    stack = await Stack.start({ common: ['max_request_size: 64k'] });
  });
  after(async () => {
    const results = await stack.close();
    for (const name of DAEMONS) {
      assert.equal(results[name].code, 0, `${name} exit: ${JSON.stringify(results[name])}\n${stack.daemons[name].tail()}`);
      assert.deepEqual(stack.daemons[name].sanitizerReports(), []);
    }
  });

  test('/healthz answers 200 on every daemon, with a generated request id', async () => {
    for (const name of DAEMONS) {
      const res = await fetch(stack.url(name, '/healthz'));
      assert.equal(res.status, 200, name);
      assert.deepEqual(await res.json(), { status: 'ok' });
      assert.match(res.headers.get('x-request-id'), /^[0-9a-f]{32}$/);
    }
  });

  test('a sane X-Request-Id is kept and appears in the access log; an unsafe one is replaced', async () => {
    const res = await fetch(stack.url('mcp-gw', '/healthz'), { headers: { 'X-Request-Id': 'req-e2e.42' } });
    assert.equal(res.headers.get('x-request-id'), 'req-e2e.42');
    const line = await stack.daemons['mcp-gw'].waitForLog((l) => l.type === 'access' && l.request_id === 'req-e2e.42');
    assert.equal(line.method, 'GET');
    assert.equal(line.path, '/healthz');
    assert.equal(line.status, 200);
    assert.equal(typeof line.duration_ms, 'number');
    assert.ok(line.bytes > 0);

    const bad = await fetch(stack.url('mcp-gw', '/healthz'), { headers: { 'X-Request-Id': 'has spaces"and quotes' } });
    assert.match(bad.headers.get('x-request-id'), /^[0-9a-f]{32}$/);
  });

  test('/readyz is 200 and names each check', async () => {
    for (const name of DAEMONS) {
      const res = await fetch(stack.url(name, '/readyz'));
      assert.equal(res.status, 200, name);
      const body = await res.json();
      assert.equal(body.status, 'ready');
      const expected = { config: 'ok', store: 'ok', state: 'ok' };
      if (name === 'model-gw') expected.models = 'ok'; // every configured model has a usable deployment
      assert.deepEqual(body.checks, expected);
    }
  });

  test('/metrics is Prometheus text that promtool accepts, with the common metrics', async () => {
    for (const name of DAEMONS) {
      await fetch(stack.url(name, '/healthz'));
      const res = await fetch(stack.url(name, '/metrics'));
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
      const text = await res.text();
      assert.match(text, new RegExp(`^triplane_build_info\\{daemon="${name}",version="[^"]+"\\} 1$`, 'm'));
      assert.match(text, /^process_start_time_seconds \d+(\.\d+)?(e\+\d+)?$/m);
      assert.match(text, /^process_resident_memory_bytes [1-9]/m);
      assert.match(text, /^triplane_http_requests_total\{route="\/healthz",method="GET",status="200"\} [1-9]/m);
      assert.match(text, /^triplane_http_request_duration_seconds_bucket\{route="\/healthz",le="\+Inf"\} [1-9]/m);
      // This scrape itself is in flight while the text is rendered.
      assert.match(text, /^triplane_http_requests_in_flight 1$/m);
      const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
      assert.equal(check.status, 0, `promtool on ${name}: ${check.stdout}${check.stderr}`);
    }
  });

  test('unknown paths and methods get errors in the plane envelope', async () => {
    const res = await fetch(stack.url('model-gw', '/v1/nothing-here'));
    assert.equal(res.status, 404);
    const body = await res.json();
    assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
    assert.equal(body.error.code, 'not_found');
    assert.ok(res.headers.get('x-request-id'));

    const post = await fetch(stack.url('agent-gw', '/healthz'), { method: 'POST', body: '{}' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    // agent-gw (like mcp-gw) speaks JSON-RPC: its envelope is a JSON-RPC error naming the reason.
    const rpc = await post.json();
    assert.equal(rpc.jsonrpc, '2.0');
    assert.equal(rpc.error.data.reason, 'method_not_allowed');

    const head = await fetch(stack.url('agent-gw', '/healthz'), { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
  });

  test('a request body over max_request_size is refused with 413, and logged and counted', async () => {
    const res = await fetch(stack.url('model-gw', '/healthz'), { method: 'POST', body: 'x'.repeat(200 * 1024) });
    assert.equal(res.status, 413);
    const line = await stack.daemons['model-gw'].waitForLog((l) => l.type === 'access' && l.status === 413);
    assert.equal(line.route, 'h2o');
    const text = await (await fetch(stack.url('model-gw', '/metrics'))).text();
    assert.match(text, /^triplane_http_requests_total\{route="h2o",method="POST",status="413"\} 1$/m);
  });

  test('a path that is not valid UTF-8 still gets its access-log line', async () => {
    const res = await fetch(stack.url('mcp-gw', '/%FF%FE/x'));
    assert.equal(res.status, 404);
    const rid = res.headers.get('x-request-id');
    const line = await stack.daemons['mcp-gw'].waitForLog((l) => l.type === 'access' && l.request_id === rid);
    assert.equal(typeof line.path, 'string');
  });

  test('control sockets exist with mode 0660', () => {
    for (const name of DAEMONS) {
      const st = statSync(path.join(stack.controlDir, `${name}.sock`));
      assert.ok(st.isSocket());
      assert.equal(st.mode & 0o777, 0o660);
    }
  });

  test('gwctl status sees all three daemons', () => {
    const r = stack.gwctl('status');
    assert.equal(r.status, 0, r.stderr);
    for (const name of DAEMONS) assert.match(r.stdout, new RegExp(`^${name}\\s+running\\s+${stack.daemons[name].pid}\\s`, 'm'));

    const j = stack.gwctl('--json', 'status');
    assert.equal(j.status, 0, j.stderr);
    const all = JSON.parse(j.stdout);
    assert.deepEqual(all.map((d) => d.daemon), ['agent-gw', 'mcp-gw', 'model-gw']);
    for (const d of all) {
      assert.equal(d.ok, true);
      assert.equal(d.result.name, d.daemon);
      assert.equal(d.result.pid, stack.daemons[d.daemon].pid);
      assert.equal(d.result.store, stack.storePath);
      assert.equal(d.result.schema_version >= 1, true);
      assert.equal(d.result.policy.kills_active, 0);
      assert.equal(typeof d.elapsed_ms, 'number');
    }
  });

  test('a change to the kill table reaches every daemon through the data_version watch', async () => {
    stack.sql(
      "INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms) VALUES ('agent', 'e2e-agent', 'drill', 'e2e', 1)",
    );
    const seen = await eventually(() => {
      const all = JSON.parse(stack.gwctl('--json', 'status').stdout);
      return all.every((d) => d.result.policy.kills_active === 1) && all;
    }, 5000);
    assert.ok(seen, 'every daemon reports the kill');
    stack.sql("UPDATE kills SET released_at_ms = 2, released_by = 'e2e' WHERE target = 'e2e-agent'");
    const cleared = await eventually(() => {
      const all = JSON.parse(stack.gwctl('--json', 'status').stdout);
      return all.every((d) => d.result.policy.kills_active === 0);
    }, 5000);
    assert.ok(cleared, 'every daemon sees the release');
  });

  test('gwctl reload reaches every daemon', () => {
    const r = stack.gwctl('reload');
    assert.equal(r.status, 0, r.stderr);
    for (const name of DAEMONS) assert.match(r.stdout, new RegExp(`^${name}\\s+reloaded`, 'm'));
  });

  test('a stopped daemon disappears from gwctl status and its socket file is removed', async () => {
    const { code } = await stack.daemons['agent-gw'].stop();
    assert.equal(code, 0, stack.daemons['agent-gw'].tail());
    const r = stack.gwctl('--json', 'status');
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).map((d) => d.daemon), ['mcp-gw', 'model-gw']);
    await stack.restart('agent-gw');
    assert.equal(stack.gwctl('status').status, 0);
  });
});
