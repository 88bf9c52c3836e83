// Model lifecycle: draining a deployment and bringing it back, end to end. model-gw in front of
// inference fixtures, driven by the openai SDK, gwctl model …, and the admin endpoints.
//
// Model `m` has two deployments: fixture A (deployment 0, warm-up on) and fixture B (deployment
// 1, warm-up off). Each fixture logs an access line per request with the request id, and the
// clients choose the ids (x-request-id), so every request can be traced to the fixture that
// served it. Model `flaky` has one deployment whose fixture fails its first three requests, for
// warm-ups that fail. Every loop and wait below is bounded; all traffic goes to 127.0.0.1.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { Stack, binary, eventually, sleep, startFixture } from './lib/stack.mjs';

const TOKEN_MS = 40; // the fixtures' delay between streamed tokens in the load
const STREAM_REPLY = 'one two three four five six seven eight'; // ~9 chunks: ~350 ms in flight
const WORKERS = 6; // concurrent clients in the load
const MAX_REQUESTS = 400; // per load run, whatever happens

// gwctl without blocking the event loop (the load's streams must be read while it waits).
function gwctlAsync(stack, ...args) {
  const proc = spawn(binary('gwctl'), args, { env: stack.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  proc.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const timer = setTimeout(() => proc.kill('SIGKILL'), 30000);
  return new Promise((resolve) =>
    proc.on('exit', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, at: Date.now() });
    }),
  );
}

// The request lines a fixture logged (it runs with --verbose): [{id, ts (ms), path, status}].
function served(fixture) {
  const out = [];
  for (const line of fixture.stderr().split('\n')) {
    if (!line.startsWith('{')) continue;
    let l;
    try {
      l = JSON.parse(line);
    } catch {
      continue; // a line still being written
    }
    if (l.type === 'access' && l.method === 'POST') out.push({ id: l.request_id, ts: Date.parse(l.ts), path: l.path, status: l.status });
  }
  return out;
}

describe('model-gw deployment lifecycle: drain, undrain, warm-up', { timeout: 180000 }, () => {
  let fa; // deployment m/0
  let fb; // deployment m/1
  let fc; // flaky/0: fails its first three requests
  let stack;
  let alice; // may use m and flaky
  let opal; // may also administer m and flaky
  let aliceKey;
  let opalKey;
  let seq = 0;

  const gw = (...args) => stack.gwctl(...args);
  const status = (model) => {
    const r = gw('--json', 'model', 'status', ...(model ? [model] : []));
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  const dep = (model, id) => status(model)[0].deployments.find((d) => d.id === id);
  const readyz = async () => (await fetch(stack.url('model-gw', '/readyz'))).status;
  const admin = (key, method, p) =>
    fetch(stack.url('model-gw', p), { method, headers: key ? { authorization: `Bearer ${key}` } : {} });

  // One chat request with a request id of our own: streamed (in flight for a while) or not.
  async function chat(client, model, stream) {
    const id = `lc-${process.pid}-${++seq}`;
    const started = Date.now();
    const body = { model, messages: [{ role: 'user', content: `request ${id}` }] };
    try {
      if (stream) {
        const s = await client.chat.completions.create(
          { ...body, stream: true, fixture: { token_delay_ms: TOKEN_MS, reply: STREAM_REPLY } },
          { headers: { 'x-request-id': id } },
        );
        let text = '';
        let finish = null;
        for await (const chunk of s) {
          text += chunk.choices[0]?.delta?.content ?? '';
          finish = chunk.choices[0]?.finish_reason ?? finish;
        }
        return { id, started, ended: Date.now(), ok: text === STREAM_REPLY && finish === 'stop', stream, text };
      }
      const res = await client.chat.completions.create(body, { headers: { 'x-request-id': id } });
      return { id, started, ended: Date.now(), ok: res.choices[0].message.content.includes(id), stream };
    } catch (e) {
      return { id, started, ended: Date.now(), ok: false, stream, error: `${e.status ?? ''} ${e.message}` };
    }
  }

  // WORKERS concurrent clients, every other request streamed, until stop() or MAX_REQUESTS.
  function load(client, model) {
    const results = [];
    let stopped = false;
    let issued = 0;
    const workers = Array.from({ length: WORKERS }, async (_, w) => {
      for (let i = 0; !stopped && issued < MAX_REQUESTS; i++) {
        issued++;
        results.push(await chat(client, model, (i + w) % 2 === 0));
      }
    });
    return {
      results,
      async stop() {
        stopped = true;
        await Promise.all(workers);
        return results;
      },
    };
  }

  before(async () => {
    fa = await startFixture(['--model', 'fa', '--workers', '1', '--verbose']);
    fb = await startFixture(['--model', 'fb', '--workers', '1', '--verbose']);
    fc = await startFixture(['--model', 'fc', '--workers', '1', '--verbose', '--fail', '503', '--fail-first', '3']);
    stack = await Stack.start({
      daemons: ['model-gw'],
      extra: {
        model_gw: [
          'models:',
          '  - name: m',
          '    deployments:',
          `      - {url: "${fa.url}/v1", model: fa}`,
          `      - {url: "${fb.url}/v1", model: fb, warmup: false}`,
          '  - name: flaky',
          `    deployments: [{url: "${fc.url}/v1", model: fc, warmup_prompt: "Are you there?"}]`,
          '  - name: hidden',
          '    deployments: [{url: "http://127.0.0.1:9/v1"}]',
        ],
      },
    });
    const file = path.join(stack.dir, 'p.yaml');
    writeFileSync(file, [
      'principals: [{id: alice, kind: user, team: ml}, {id: opal, kind: user, team: ops}]',
      'rules:',
      '  - {id: ml-use, effect: allow, subjects: {teams: [ml, ops]}, plane: model, resources: [m, flaky], actions: [chat]}',
      '  - {id: ops-admin, effect: allow, subjects: {principals: [opal]}, plane: model, resources: [m, flaky], actions: [admin]}',
      '',
    ].join('\n'));
    assert.equal(gw('apply', '-f', file).status, 0);
    aliceKey = JSON.parse(gw('--json', 'key', 'create', '--principal', 'alice').stdout).key;
    opalKey = JSON.parse(gw('--json', 'key', 'create', '--principal', 'opal').stdout).key;
    const base = stack.url('model-gw', '/v1');
    alice = new OpenAI({ apiKey: aliceKey, baseURL: base, maxRetries: 0 });
    opal = new OpenAI({ apiKey: opalKey, baseURL: base, maxRetries: 0 });
    // The keys are in model-gw's snapshot once a request passes.
    assert.ok(await eventually(async () => (await chat(alice, 'm', false)).ok, 5000));
  });

  after(async () => {
    const results = await stack.close();
    for (const f of [fa, fb, fc]) assert.equal(await f.stop(), 0);
    assert.equal(results['model-gw'].code, 0, stack.daemons['model-gw'].tail());
    assert.deepEqual(stack.daemons['model-gw'].sanitizerReports(), []);
  });

  test('status shows every deployment in rotation, as a table and as JSON', () => {
    const all = status();
    assert.deepEqual(all.map((m) => m.model), ['m', 'flaky', 'hidden']);
    const [a, b] = all[0].deployments;
    assert.equal(a.id, '0');
    assert.equal(a.state, 'healthy');
    assert.equal(a.url, `${fa.url}/v1`);
    assert.equal(a.in_flight, 0);
    assert.equal(a.weight, 1);
    assert.equal(a.circuit.open, false);
    assert.equal(a.warmup.enabled, true);
    assert.equal(b.warmup.enabled, false);
    const table = gw('model', 'status', 'm');
    assert.equal(table.status, 0, table.stderr);
    const lines = table.stdout.trim().split('\n');
    assert.match(lines[0], /^MODEL\s+DEPLOYMENT\s+STATE\s+IN-FLIGHT\s+WEIGHT\s+CIRCUIT\s+WARMUP\s+URL$/);
    assert.equal(lines.length, 3);
    assert.match(lines[2], /^m\s+1\s+healthy\s+0\s+1\s+closed\s+off\s+http:/);
    // Errors name what is unknown.
    const unknown = gw('model', 'drain', 'nope');
    assert.equal(unknown.status, 1);
    assert.match(unknown.stderr, /unknown model 'nope'/);
    const badIndex = gw('model', 'drain', 'm', '7');
    assert.equal(badIndex.status, 1);
    assert.match(badIndex.stderr, /model 'm' has no deployment '7'/);
    assert.equal(gw('model', 'drain').status, 2);
    assert.equal(gw('model', 'undrain', 'm', '0', '--wait').status, 2);
  });

  test('draining a deployment under load: nothing fails, in-flight requests finish, new ones go to the other', async () => {
    const run = load(alice, 'm');
    // Wait until A has requests in flight, so that the drain has something to wait for.
    const busy = await eventually(() => dep('m', '0').in_flight > 0, 10000, 20);
    assert.ok(busy, 'deployment 0 had requests in flight under load');
    const drainStarted = Date.now();
    const drained = await gwctlAsync(stack, '--json', 'model', 'drain', 'm', '0', '--wait', '--timeout-ms', '20000');
    assert.equal(drained.status, 0, drained.stderr);
    const out = JSON.parse(drained.stdout);
    assert.equal(out.deployments.length, 1);
    assert.equal(out.deployments[0].id, '0');
    assert.equal(out.deployments[0].changed, true);
    assert.equal(out.deployments[0].state, 'draining');
    assert.ok(out.deployments[0].in_flight > 0, `in flight at the drain: ${out.deployments[0].in_flight}`);
    assert.deepEqual({ idle: out.wait.idle, in_flight: out.wait.in_flight }, { idle: true, in_flight: 0 });
    // --wait returned once A had nothing in flight: its last request is already logged.
    await sleep(100);
    const aAtWait = served(fa).length;
    assert.equal(dep('m', '0').in_flight, 0);
    await sleep(1500); // more load, all of it to B
    const results = await run.stop();

    const failed = results.filter((r) => !r.ok);
    assert.deepEqual(failed, [], 'no request failed during the drain');
    // A fixture logs a request once it is done with it, which may be just after the client is.
    const logged = () => new Set([...served(fa), ...served(fb)].map((l) => l.id));
    assert.ok(await eventually(() => results.every((r) => logged().has(r.id)), 3000), 'every request was logged');
    const onA = new Map(served(fa).map((l) => [l.id, l]));
    const onB = new Map(served(fb).map((l) => [l.id, l]));
    assert.equal(served(fa).length, aAtWait, 'A got nothing after the drain had waited');
    // Requests in flight on A when the drain began ran to their end there, and succeeded.
    const drainedInFlight = results.filter((r) => onA.has(r.id) && r.started < drainStarted && r.ended > drainStarted);
    assert.ok(drainedInFlight.length > 0, 'some requests were in flight on A during the drain');
    assert.ok(drainedInFlight.every((r) => r.ok && onA.get(r.id).status === 200));
    // Every request that started after the drain answered went to B only.
    const after = results.filter((r) => r.started >= drained.at);
    assert.ok(after.length >= 10, `load after the drain: ${after.length} requests`);
    for (const r of after) {
      assert.ok(onB.has(r.id), `${r.id} went to B`);
      assert.ok(!onA.has(r.id), `${r.id} did not go to A`);
    }
    // The metric and the catalog show it.
    const metrics = await (await fetch(stack.url('model-gw', '/metrics'))).text();
    assert.match(metrics, /triplane_model_deployment_draining\{model="m",deployment="0"\} 1\b/);
    assert.match(metrics, /triplane_model_deployment_draining\{model="m",deployment="1"\} 0\b/);
    const model = await alice.models.retrieve('m');
    assert.equal(model.id, 'm');
    assert.equal(model.object, 'model');
    assert.deepEqual(model.deployments, [
      { id: '0', state: 'draining', in_flight: 0 },
      { id: '1', state: 'healthy', in_flight: 0 },
    ]);
    // Draining again changes nothing.
    const again = JSON.parse(gw('--json', 'model', 'drain', 'm', '0').stdout);
    assert.equal(again.deployments[0].changed, false);
  });

  test('/readyz fails while every deployment of a model is drained, and recovers after undrain', async () => {
    assert.equal(await readyz(), 200); // B still serves m
    const r = gw('model', 'drain', 'm', '1');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /m\/1: drained/);
    assert.equal(await readyz(), 503);
    const body = await (await fetch(stack.url('model-gw', '/readyz'))).json();
    assert.equal(JSON.stringify(body).includes('draining'), true, JSON.stringify(body));
    // No deployment takes requests: the gateway answers at once rather than queue.
    const refused = await chat(alice, 'm', false);
    assert.equal(refused.ok, false);
    assert.match(refused.error, /^503/);
    assert.equal((await alice.models.list()).data.find((x) => x.id === 'm').deployments[1].state, 'draining');
    // B has warm-up off: straight back.
    const u = JSON.parse(gw('--json', 'model', 'undrain', 'm', '1').stdout);
    assert.equal(u.deployments[0].state, 'healthy');
    assert.equal(await readyz(), 200);
    assert.ok((await chat(alice, 'm', false)).ok);
  });

  test('undrain with warm-up: the warm-up request reaches the deployment before any traffic', async () => {
    assert.equal(dep('m', '0').state, 'draining');
    const before = served(fa).length;
    const u = gw('--json', 'model', 'undrain', 'm', '0');
    assert.equal(u.status, 0, u.stderr);
    const answer = JSON.parse(u.stdout).deployments[0];
    assert.equal(answer.changed, true);
    assert.ok(['warming', 'healthy'].includes(answer.state), answer.state);
    assert.ok(await eventually(() => dep('m', '0').state === 'healthy', 5000));
    // The fixture logs a request once it has answered it: wait for the line.
    assert.ok(await eventually(() => served(fa).length > before, 3000));
    await sleep(200);
    const warm = served(fa).slice(before);
    assert.equal(warm.length, 1, 'exactly one request reached A: the warm-up');
    assert.equal(warm[0].path, '/v1/chat/completions');
    assert.equal(warm[0].status, 200);
    await stack.daemons['model-gw'].waitForLog(
      (l) => l.msg === 'deployment warmed up: back in rotation' && l.model === 'm' && l.deployment === '0' && l.status === 200,
    );
    assert.equal(dep('m', '0').warmup.attempts, 1);
    // Traffic reaches A again.
    const results = [];
    for (let i = 0; i < 12; i++) results.push(await chat(alice, 'm', false));
    assert.ok(results.every((r) => r.ok));
    assert.ok(!results.some((r) => r.id === warm[0].id), 'the warm-up was none of the clients\' requests');
    assert.ok(warm[0].ts <= results[0].started, 'the warm-up came before the traffic');
    const onA = new Set(served(fa).map((l) => l.id));
    assert.ok(results.some((r) => onA.has(r.id)), 'A serves again');
  });

  test('a failing warm-up keeps the deployment warming and retries with backoff; a drain stops it', async () => {
    const d = gw('--json', 'model', 'drain', 'flaky');
    assert.equal(d.status, 0, d.stderr);
    assert.equal(JSON.parse(d.stdout).deployments[0].state, 'draining');
    assert.equal(gw('model', 'undrain', 'flaky').status, 0);
    // Attempt 1 fails (503): still warming, out of rotation, readiness down.
    const first = await eventually(() => {
      const s = dep('flaky', '0');
      return s.warmup.attempts >= 1 && s.warmup.last_failure_status === 503 ? s : null;
    }, 5000);
    assert.ok(first, 'the first warm-up failed with 503');
    assert.equal(first.state, 'warming');
    assert.equal(await readyz(), 503);
    const refused = await chat(alice, 'flaky', false);
    assert.match(refused.error ?? '', /^503/, 'no traffic while warming');
    const table = gw('model', 'status', 'flaky').stdout;
    assert.match(table, /flaky\s+0\s+warming\s+0\s+1\s+closed\s+attempt \d, last failed 503/);
    // Attempt 2, a second later, fails too.
    const second = await eventually(() => dep('flaky', '0').warmup.attempts >= 2, 4000);
    assert.ok(second, 'retried after the backoff');
    await stack.daemons['model-gw'].waitForLog((l) => l.msg === 'deployment warm-up failed: still warming' && l.model === 'flaky' && l.retry_in_ms === 2000);
    // A drain now stops the retries: the fixture sees nothing more.
    assert.equal(gw('model', 'drain', 'flaky').status, 0);
    await eventually(() => served(fc).length === 2, 3000);
    const seen = served(fc).length;
    assert.equal(seen, 2);
    await sleep(2600);
    assert.equal(served(fc).length, seen, 'no warm-up after the drain');
    assert.equal(dep('flaky', '0').state, 'draining');
    // Undrain again: a fresh warm-up (the fixture's third and last failure), then success.
    assert.equal(gw('model', 'undrain', 'flaky').status, 0);
    assert.ok(await eventually(() => dep('flaky', '0').state === 'healthy', 6000), 'warmed up on the retry');
    await eventually(() => served(fc).length === 4, 3000);
    const warmups = served(fc);
    assert.deepEqual(warmups.map((l) => l.status), [503, 503, 503, 200]);
    assert.ok(warmups.every((l) => l.path === '/v1/chat/completions'));
    assert.equal(await readyz(), 200);
    assert.ok((await chat(alice, 'flaky', false)).ok);
  });

  test('admin endpoints: 401 without a key, 404 for a model one may not use, 403 for a user, work for an admin', async () => {
    assert.equal((await admin(null, 'GET', '/v1/admin/models')).status, 401);
    // alice may use m but not administer it.
    const list = await admin(aliceKey, 'GET', '/v1/admin/models');
    assert.equal(list.status, 200);
    assert.deepEqual((await list.json()).data, []);
    const forbidden = await admin(aliceKey, 'POST', '/v1/admin/models/m/deployments/0/drain');
    assert.equal(forbidden.status, 403);
    const fbody = await forbidden.json();
    assert.equal(fbody.error.type, 'permission_error');
    for (const p of ['/v1/admin/models/hidden/deployments/0/drain', '/v1/admin/models/nope/deployments/0/drain']) {
      const r = await admin(aliceKey, 'POST', p);
      assert.equal(r.status, 404, p);
      const b = await r.json();
      assert.equal(b.error.code, 'model_not_found');
      assert.equal(b.error.type, 'not_found_error');
    }
    // opal also gets 404 for a model outside the rule; 404 for a deployment that is not there.
    assert.equal((await admin(opalKey, 'POST', '/v1/admin/models/hidden/deployments/0/drain')).status, 404);
    const noDep = await admin(opalKey, 'POST', '/v1/admin/models/m/deployments/7/drain');
    assert.equal(noDep.status, 404);
    assert.equal((await noDep.json()).error.code, 'deployment_not_found');
    assert.equal((await admin(opalKey, 'POST', '/v1/admin/models/m/deployments/0/restart')).status, 404);
    assert.equal(dep('m', '0').state, 'healthy', 'nothing changed so far');

    const ol = await admin(opalKey, 'GET', '/v1/admin/models');
    assert.equal(ol.status, 200);
    const olist = (await ol.json()).data;
    assert.deepEqual(olist.map((x) => x.model), ['m', 'flaky']);
    assert.equal(olist[0].deployments[1].url, `${fb.url}/v1`);

    const dr = await admin(opalKey, 'POST', '/v1/admin/models/m/deployments/1/drain');
    assert.equal(dr.status, 200);
    const drb = await dr.json();
    assert.equal(drb.model, 'm');
    assert.equal(drb.changed, true);
    assert.equal(drb.deployment.id, '1');
    assert.equal(drb.deployment.state, 'draining');
    assert.equal(dep('m', '1').state, 'draining');
    // The catalog: states for every user of the model, URLs for an admin only.
    const seenByAlice = (await alice.models.list()).data.find((x) => x.id === 'm');
    assert.deepEqual(seenByAlice.deployments.map((x) => [x.id, x.state, x.url]), [['0', 'healthy', undefined], ['1', 'draining', undefined]]);
    const seenByOpal = await opal.models.retrieve('m');
    assert.equal(seenByOpal.deployments[1].url, `${fb.url}/v1`);
    assert.equal(seenByOpal.deployments[1].state, 'draining');

    const un = await admin(opalKey, 'POST', '/v1/admin/models/m/deployments/1/undrain');
    assert.equal(un.status, 200);
    assert.equal((await un.json()).deployment.state, 'healthy'); // warm-up off for B
    assert.equal(dep('m', '1').state, 'healthy');
  });

  test('every drain and undrain is audited, by gwctl (OS user) and over HTTP (the principal)', async () => {
    const audit = (action) => {
      const r = gw('--json', 'audit', 'query', '--action', action);
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout);
    };
    const drains = await eventually(() => {
      const rows = audit('model.drain');
      return rows.some((x) => x.actor === 'opal') ? rows : null;
    }, 5000);
    assert.ok(drains, 'the HTTP drain reached the audit log');
    const byTarget = (rows, target, pred) => rows.filter((x) => x.target === target && pred(x));
    assert.ok(byTarget(drains, 'm/0', (x) => x.actor.startsWith('os:') && x.detail.via === 'gwctl' && x.detail.changed).length >= 1);
    assert.ok(byTarget(drains, 'm/1', (x) => x.actor === 'opal' && x.detail.via === 'http' && x.detail.after === 'draining').length === 1);
    assert.ok(byTarget(drains, 'flaky/0', () => true).length >= 2);
    const undrains = await eventually(() => {
      const rows = audit('model.undrain');
      return rows.some((x) => x.actor === 'opal') ? rows : null;
    }, 5000);
    assert.ok(byTarget(undrains, 'm/0', (x) => x.detail.via === 'gwctl').length === 1);
    assert.ok(byTarget(undrains, 'm/1', (x) => x.actor === 'opal').length === 1);
  });

  test('a restart puts every deployment back in rotation', async () => {
    assert.equal(gw('model', 'drain', 'm', '0').status, 0);
    const daemon = stack.daemons['model-gw'];
    const stopped = await daemon.stop();
    assert.equal(stopped.code, 0, daemon.tail());
    assert.deepEqual(daemon.sanitizerReports(), []);
    assert.equal(gw('model', 'status').status, 1, 'no model-gw to ask');
    await stack.restart('model-gw');
    assert.equal(dep('m', '0').state, 'healthy');
  });
});
