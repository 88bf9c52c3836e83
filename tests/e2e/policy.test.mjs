// Identity, policy and quotas end to end: gwctl against the real store while the daemons run.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { DAEMONS, Stack, eventually } from './lib/stack.mjs';

const JWT_SECRET = 'e2e-secret-0123456789abcdef0123456789';

function b64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

function hs256(payload, secret = JWT_SECRET) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(payload));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

async function whoami(stack, daemon, key, query = '') {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const res = await fetch(stack.url(daemon, `/whoami${query}`), { headers });
  return { status: res.status, body: await res.json(), headers: res.headers };
}

describe('identity and policy through gwctl, with the daemons running', () => {
  let stack;
  let policyFile;
  before(async () => {
    stack = await Stack.start({
      extraTop: [
        'auth:',
        '  jwt:',
        '    - issuer: https://idp.e2e',
        '      audience: triplane-e2e',
        '      algorithms: [HS256]',
        `      hs_secret: ${JWT_SECRET}`,
      ],
    });
    policyFile = path.join(stack.dir, 'policies.yaml');
    writeFileSync(
      policyFile,
      [
        'settings:',
        '  default_effect: deny',
        'teams:',
        '  - id: ml',
        '    description: Machine learning',
        'principals:',
        '  - id: alice',
        '    kind: user',
        '    team: ml',
        '    roles: [engineer]',
        '    labels: {env: prod}',
        '  - id: planner',
        '    kind: agent',
        '    team: ml',
        'rules:',
        '  - id: ml-models',
        '    effect: allow',
        '    description: the ML team uses the llama models',
        '    subjects: {teams: [ml]}',
        '    plane: model',
        '    resources: ["llama3*"]',
        '    actions: [chat, embed]',
        '  - id: no-agents-embed',
        '    effect: deny',
        '    subjects: {kinds: [agent]}',
        '    plane: model',
        '    resources: ["*"]',
        '    actions: [embed]',
        'limits:',
        '  - principal: alice',
        '    rpm: 600',
        'budgets:',
        '  - team: ml',
        '    period: month',
        '    tokens: 1000000',
        '',
      ].join('\n'),
    );
  });
  after(async () => {
    const results = await stack.close();
    for (const name of DAEMONS) assert.equal(results[name].code, 0, `${name}: ${JSON.stringify(results[name])}\n${stack.daemons[name].tail()}`);
  });

  test('gwctl apply -f creates everything, then is idempotent; --dry-run changes nothing', () => {
    const dry = stack.gwctl('apply', '-f', policyFile, '--dry-run');
    assert.equal(dry.status, 0, dry.stderr);
    assert.match(dry.stdout, /\+ principal alice/);
    assert.equal(JSON.parse(stack.gwctl('--json', 'principal', 'list').stdout).length, 0, 'dry run changed nothing');

    const first = stack.gwctl('apply', '-f', policyFile);
    assert.equal(first.status, 0, first.stderr);
    for (const line of [/\+ team ml/, /\+ principal alice/, /\+ principal planner/, /\+ rule ml-models/, /\+ rule no-agents-embed/])
      assert.match(first.stdout, line);

    const second = stack.gwctl('apply', '-f', policyFile);
    assert.equal(second.status, 0, second.stderr);
    assert.match(second.stdout, /\b0 changed\b/);

    const rules = JSON.parse(stack.gwctl('--json', 'policy', 'list').stdout);
    assert.deepEqual(rules.map((r) => r.id).sort(), ['ml-models', 'no-agents-embed']);
    const alice = JSON.parse(stack.gwctl('--json', 'principal', 'show', 'alice').stdout);
    assert.equal(alice.team, 'ml');
    assert.deepEqual(alice.roles, ['engineer']);
  });

  test('an API key authenticates on every plane; no key or a bad key gets 401', async () => {
    const created = stack.gwctl('--json', 'key', 'create', '--principal', 'alice', '--name', 'e2e');
    assert.equal(created.status, 0, created.stderr);
    const { key, id } = JSON.parse(created.stdout);
    assert.match(key, /^tp_[a-z0-9]{12}_[A-Za-z0-9]{43,}$/);
    assert.equal(key.split('_')[1], id);
    const seen = await eventually(async () => (await whoami(stack, 'model-gw', key)).status === 200, 5000);
    assert.ok(seen, 'the daemons pick up the new key');
    for (const daemon of DAEMONS) {
      const r = await whoami(stack, daemon, key);
      assert.equal(r.status, 200, daemon);
      assert.equal(r.body.principal.id, 'alice');
      assert.equal(r.body.method, 'api_key');
      assert.equal(r.body.key_id, id);
    }
    const none = await whoami(stack, 'model-gw', null);
    assert.equal(none.status, 401);
    assert.match(none.headers.get('www-authenticate'), /^Bearer/);
    assert.equal(none.body.error.code, 'missing_credentials');
    const bad = await whoami(stack, 'mcp-gw', key.slice(0, -1) + (key.endsWith('A') ? 'B' : 'A'));
    assert.equal(bad.status, 401);
    assert.equal(bad.body.error.data.reason, 'invalid_credentials'); // mcp-gw's envelope is JSON-RPC
    // The key list never shows secrets.
    const list = stack.gwctl('--json', 'key', 'list', '--principal', 'alice');
    assert.equal(list.status, 0, list.stderr);
    assert.ok(!list.stdout.includes(key.split('_')[2]));
  });

  test('a revoked key is refused on every plane as soon as gwctl returns, without restarts', async () => {
    const { key, id } = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'alice').stdout);
    for (const daemon of DAEMONS) assert.equal((await whoami(stack, daemon, key)).status, 200, daemon);
    const t0 = performance.now();
    const revoke = stack.gwctl('key', 'revoke', id);
    assert.equal(revoke.status, 0, revoke.stderr);
    assert.equal(revoke.stderr, '', 'every daemon confirmed the change');
    // gwctl returns once every daemon's workers use the new snapshot: the very next request fails.
    for (const daemon of DAEMONS) {
      const r = await whoami(stack, daemon, key);
      assert.equal(r.status, 401, daemon);
      assert.match(r.body.error.message, /revoked/);
    }
    console.log(`# revoke-to-401 on all three planes: ${(performance.now() - t0).toFixed(1)} ms`);
  });

  test('a daemon that missed the broadcast converges through the store watch', async () => {
    const { key, id } = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'alice').stdout);
    assert.equal((await whoami(stack, 'mcp-gw', key)).status, 200);
    // Revoke behind gwctl's back, as a daemon that was unreachable during the broadcast sees it.
    stack.sql(`UPDATE api_keys SET revoked_at_ms = 1, revoked_by = 'e2e' WHERE id = '${id}'`);
    const refused = await eventually(async () => (await whoami(stack, 'mcp-gw', key)).status === 401, 5000, 5);
    assert.ok(refused, 'refused within the watch interval');
  });

  test('a new deny rule takes effect within one watch interval; policy explain names the rule chain', async () => {
    const { key } = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'alice').stdout);
    await eventually(async () => (await whoami(stack, 'model-gw', key)).status === 200, 5000);
    const q = '?resource=llama3-8b&action=chat';
    assert.equal((await whoami(stack, 'model-gw', key, q)).body.decision.effect, 'allow');
    assert.equal((await whoami(stack, 'model-gw', key, '?resource=gpt-4o&action=chat')).body.decision.effect, 'deny');

    const ruleFile = path.join(stack.dir, 'deny.json');
    writeFileSync(ruleFile, JSON.stringify({
      id: 'freeze-alice', effect: 'deny', subjects: { principals: ['alice'] }, plane: '*', resources: ['*'], actions: ['*'],
      description: 'incident drill',
    }));
    const add = stack.gwctl('policy', 'add', '-f', ruleFile);
    assert.equal(add.status, 0, add.stderr);
    const denied = await eventually(async () => (await whoami(stack, 'model-gw', key, q)).body.decision.effect === 'deny', 5000, 5);
    assert.ok(denied);
    assert.equal((await whoami(stack, 'model-gw', key, q)).body.decision.rule, 'freeze-alice');

    const explain = stack.gwctl('policy', 'explain', '--principal', 'alice', '--plane', 'model', '--resource', 'llama3-8b', '--action', 'chat');
    assert.equal(explain.status, 0, explain.stderr);
    assert.match(explain.stdout, /deny/i);
    assert.match(explain.stdout, /freeze-alice/);
    assert.match(explain.stdout, /ml-models/);
    const ej = JSON.parse(stack.gwctl('--json', 'policy', 'explain', '--principal', 'alice', '--plane', 'model', '--resource', 'llama3-8b', '--action', 'chat').stdout);
    assert.equal(ej.decision, 'deny');
    assert.equal(ej.rule, 'freeze-alice');
    assert.deepEqual(ej.rules.filter((r) => r.matched).map((r) => r.id).sort(), ['freeze-alice', 'ml-models']);

    assert.equal(stack.gwctl('policy', 'rm', 'freeze-alice').status, 0);
    const allowed = await eventually(async () => (await whoami(stack, 'model-gw', key, q)).body.decision.effect === 'allow', 5000, 5);
    assert.ok(allowed);
  });

  test('JWTs from the configured issuer authenticate; others do not', async () => {
    const now = Math.floor(Date.now() / 1000);
    const good = hs256({ iss: 'https://idp.e2e', aud: 'triplane-e2e', sub: 'bob', team: 'ml', roles: ['analyst'], exp: now + 300 });
    const r = await whoami(stack, 'mcp-gw', good);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.method, 'jwt');
    assert.deepEqual(r.body.principal, { id: 'bob', kind: 'user', team: 'ml', roles: ['analyst'], labels: {}, issuer: 'https://idp.e2e' });

    // A token may not pass itself off as a stored principal unless its issuer is trusted to.
    const posing = hs256({ iss: 'https://idp.e2e', aud: 'triplane-e2e', sub: 'alice', exp: now + 300 });
    const conflict = await whoami(stack, 'mcp-gw', posing);
    assert.equal(conflict.status, 401);
    assert.match(conflict.body.error.message, /may not act as/);

    const cases = {
      'wrong audience': hs256({ iss: 'https://idp.e2e', aud: 'someone-else', sub: 'bob', exp: now + 300 }),
      expired: hs256({ iss: 'https://idp.e2e', aud: 'triplane-e2e', sub: 'bob', exp: now - 3600 }),
      'unknown issuer': hs256({ iss: 'https://evil.e2e', aud: 'triplane-e2e', sub: 'bob', exp: now + 300 }),
      'bad signature': hs256({ iss: 'https://idp.e2e', aud: 'triplane-e2e', sub: 'bob', exp: now + 300 }, 'not-the-secret-0123456789abcdef0123'),
      'alg none': `${b64url(JSON.stringify({ alg: 'none' }))}.${b64url(JSON.stringify({ iss: 'https://idp.e2e', aud: 'triplane-e2e', sub: 'bob', exp: now + 300 }))}.`,
    };
    for (const [name, token] of Object.entries(cases)) {
      const res = await whoami(stack, 'mcp-gw', token);
      assert.equal(res.status, 401, name);
    }
  });

  test('a disabled principal is refused; enabling restores access', async () => {
    const { key } = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'planner').stdout);
    await eventually(async () => (await whoami(stack, 'agent-gw', key)).status === 200, 5000);
    assert.equal(stack.gwctl('principal', 'disable', 'planner').status, 0);
    const refused = await eventually(async () => (await whoami(stack, 'agent-gw', key)).status === 401, 5000, 5);
    assert.ok(refused);
    assert.equal(stack.gwctl('principal', 'enable', 'planner').status, 0);
    assert.ok(await eventually(async () => (await whoami(stack, 'agent-gw', key)).status === 200, 5000, 5));
  });

  test('usage and budgets read the usage records the planes write', () => {
    const now = Date.now();
    const insert = (principal, team, model, inTok, outTok, cost, ts = now) =>
      `INSERT INTO usage (ts_ms, request_id, plane, principal_id, team, resource, input_tokens, output_tokens, cost_micros)
       VALUES (${ts}, 'r', 'model', '${principal}', '${team}', '${model}', ${inTok}, ${outTok}, ${cost});`;
    stack.sql(
      insert('alice', 'ml', 'llama3-8b', 100, 50, 1500) +
      insert('alice', 'ml', 'llama3-70b', 200, 100, 9000) +
      insert('planner', 'ml', 'llama3-8b', 10, 5, 150) +
      insert('alice', 'ml', 'llama3-8b', 999, 999, 999, now - 40 * 86400 * 1000), // an older month: not counted
    );
    const byModel = JSON.parse(stack.gwctl('--json', 'usage', '--by', 'model', '--since', '-1h').stdout).rows;
    const m = Object.fromEntries(byModel.map((r) => [r.key, r]));
    assert.equal(m['llama3-8b'].requests, 2);
    assert.equal(m['llama3-8b'].input_tokens, 110);
    assert.equal(m['llama3-70b'].output_tokens, 100);
    const byPrincipal = JSON.parse(stack.gwctl('--json', 'usage', '--by', 'principal', '--since', '-1h').stdout).rows;
    assert.equal(byPrincipal.find((r) => r.key === 'alice').cost_micros, 10500);

    const budgets = JSON.parse(stack.gwctl('--json', 'budget', 'show', '--team', 'ml').stdout);
    assert.equal(budgets.length, 1);
    assert.equal(budgets[0].max_tokens, 1000000);
    assert.equal(budgets[0].used_tokens, 465);
  });

  test('every admin change is in the audit log, with who, what and when', () => {
    const rows = JSON.parse(stack.gwctl('--json', 'audit', 'query', '--limit', '200').stdout);
    const actions = new Set(rows.map((r) => r.action));
    for (const a of ['team.create', 'principal.create', 'rule.create', 'rule.delete', 'key.create', 'key.revoke',
      'principal.disable', 'principal.enable', 'limit.set', 'budget.set'])
      assert.ok(actions.has(a), `audit has ${a}`);
    const revoke = rows.find((r) => r.action === 'key.revoke');
    assert.match(revoke.actor, /^os:/);
    assert.equal(typeof revoke.ts_ms, 'number');
    assert.equal(revoke.detail.before.status, 'active');
    assert.equal(revoke.detail.after.status, 'revoked');
    assert.ok(!JSON.stringify(rows).includes('secret_hash'));
    const tail = stack.gwctl('audit', 'tail', '-n', '5');
    assert.equal(tail.status, 0, tail.stderr);
    assert.equal(tail.stdout.trim().split('\n').length >= 5, true);
  });
});
