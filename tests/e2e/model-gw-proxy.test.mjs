// model-gw in front of a real (fixture) inference server, driven by the official openai SDK.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { Stack, eventually, startFixture } from './lib/stack.mjs';

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

describe('model-gw proxying chat, streams, tools and embeddings', () => {
  let fixture;
  let refusing; // a fixture that answers every completion with 401, as an upstream with a bad key would
  let quirky; // a fixture that breaks the tool-call contract as some Ollama and llama.cpp versions do
  let stack;
  let client;
  let key;
  before(async () => {
    fixture = await startFixture(['--model', 'meta-llama-3-8b', '--model', 'embed-small']);
    refusing = await startFixture(['--model', 'm', '--fail', '401']);
    quirky = await startFixture(['--model', 'm', '--quirk', 'arguments-object', '--quirk', 'missing-tool-call-id']);
    const up = `${fixture.url}/v1`;
    stack = await Stack.start({
      daemons: ['model-gw'],
      extraTop: [
        'pricing:',
        '  - {model: "llama*", input_per_million: 1.5, output_per_million: 6}',
        '  - {model: primary, input_per_million: 1, output_per_million: 1}',
        '  - {model: backup, input_per_million: 1000, output_per_million: 2000}',
      ],
      extra: {
        model_gw: [
          'models:',
          '  - name: llama3',
          '    deployments:',
          '      - {url: "http://127.0.0.1:9/v1", model: meta-llama-3-8b}', // nothing listens: failover
          `      - {url: "${up}", model: meta-llama-3-8b}`,
          '  - name: embedder',
          '    kind: embedding',
          `    deployments: [{url: "${up}", model: embed-small}]`,
          '  - name: misconfigured',
          `    deployments: [{url: "${refusing.url}/v1", model: m}]`,
          '  - name: quirky',
          `    deployments: [{url: "${quirky.url}/v1", model: m}]`,
          '  - name: dead',
          '    deployments: [{url: "http://127.0.0.1:9/v1"}]',
          '  - name: single-lane',
          `    deployments: [{url: "${up}", model: meta-llama-3-8b, max_concurrency: 1}]`,
          '  - name: primary', // dead: its fallback answers
          '    fallbacks: [backup]',
          '    deployments: [{url: "http://127.0.0.1:9/v1"}]',
          '  - name: backup',
          `    deployments: [{url: "${up}", model: meta-llama-3-8b}]`,
        ],
      },
    });
    const file = path.join(stack.dir, 'p.yaml');
    writeFileSync(file, [
      'principals: [{id: alice, kind: user, team: ml}, {id: bob, kind: user, team: ml}, {id: carol, kind: user, team: ml}]',
      'rules:',
      '  - {id: ml-models, effect: allow, subjects: {teams: [ml]}, plane: model, resources: ["*"], actions: [chat, embed, complete]}',
      'limits: [{principal: bob, rpm: 1}]',
      '',
    ].join('\n'));
    assert.equal(stack.gwctl('apply', '-f', file).status, 0);
    key = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'alice').stdout).key;
    client = new OpenAI({ apiKey: key, baseURL: stack.url('model-gw', '/v1'), maxRetries: 0 });
  });
  after(async () => {
    const results = await stack.close();
    assert.equal(await fixture.stop(), 0);
    assert.equal(await refusing.stop(), 0);
    assert.equal(await quirky.stop(), 0);
    assert.equal(results['model-gw'].code, 0, stack.daemons['model-gw'].tail());
    assert.deepEqual(stack.daemons['model-gw'].sanitizerReports(), []);
  });

  test('chat completion, with failover past a dead deployment, shows the public model and usage', async () => {
    const res = await client.chat.completions.create({ model: 'llama3', messages: [{ role: 'user', content: 'hello there' }] });
    assert.equal(res.model, 'llama3');
    assert.equal(res.choices[0].message.role, 'assistant');
    assert.match(res.choices[0].message.content, /hello there/);
    assert.equal(res.choices[0].finish_reason, 'stop');
    assert.ok(res.usage.prompt_tokens > 0 && res.usage.completion_tokens > 0);
  });

  test('a streamed chat arrives chunk by chunk; the usage chunk only when asked', async () => {
    const stream = await client.chat.completions.create({ model: 'llama3', stream: true, messages: [{ role: 'user', content: 'count to five' }] });
    let text = '';
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      assert.equal(chunk.usage ?? null, null, 'no usage chunk without include_usage');
      text += chunk.choices[0]?.delta?.content ?? '';
    }
    assert.ok(chunks > 3);
    assert.match(text, /count to five/);

    const withUsage = await client.chat.completions.create({
      model: 'llama3', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'hi' }],
    });
    let usage = null;
    for await (const chunk of withUsage) if (chunk.usage) usage = chunk.usage;
    assert.ok(usage && usage.total_tokens > 0);
  });

  test('a multi-turn tool conversation, streamed and not, keeps tool calls intact', async () => {
    const messages = [{ role: 'user', content: 'What is the weather in Oslo?' }];
    const first = await client.chat.completions.create({ model: 'llama3', messages, tools: [WEATHER_TOOL] });
    const call = first.choices[0].message.tool_calls[0];
    assert.equal(first.choices[0].finish_reason, 'tool_calls');
    assert.equal(call.type, 'function');
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(Object.keys(JSON.parse(call.function.arguments)), ['city']);

    // The same, streamed: fragments are reassembled by the client, not by the gateway.
    const stream = await client.chat.completions.create({ model: 'llama3', messages, tools: [WEATHER_TOOL], stream: true });
    const calls = [];
    let fragments = 0;
    for await (const chunk of stream) {
      for (const tc of chunk.choices[0]?.delta?.tool_calls ?? []) {
        fragments++;
        calls[tc.index] ??= { id: tc.id, name: tc.function?.name, arguments: '' };
        calls[tc.index].arguments += tc.function?.arguments ?? '';
      }
    }
    assert.ok(fragments > 2, 'arguments came in fragments');
    assert.equal(calls[0].name, 'get_weather');
    assert.ok(calls[0].id);
    JSON.parse(calls[0].arguments);

    messages.push(first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '{"temp": 3}' });
    const answer = await client.chat.completions.create({ model: 'llama3', messages, tools: [WEATHER_TOOL] });
    assert.match(answer.choices[0].message.content, /Tool result received/);
  });

  test('request bodies of every spelling reach the upstream as validated, and streams always report usage', async () => {
    const m = JSON.stringify([{ role: 'user', content: 'odd body' }]);
    const cases = [
      { stream: true, body: `{"model":"llama3","stream":true,"messages":${m}}` },
      { stream: true, body: `{"model":"llama3","stream":true,"stream_options":null,"messages":${m}}` },
      { stream: true, body: `{"model":"llama3","stream":true,"stream_options":{"include_usage":false},"messages":${m}}` },
      { stream: true, body: `{"stream":true,"messages":${m},"model":"llama3"}` },
      { stream: true, body: `{"mod\\u0065l":"llama3","stream":true,"messages":${m}}` }, // an escaped key
      { stream: false, body: `{"model":"gpt-nope","model":"llama3","messages":${m}}` }, // the last wins, as validated
      { stream: false, body: ` {\n  "model" : "llama3" ,\n  "messages" : ${m}, "user": "\\u00e9" \n} ` },
    ];
    for (const { stream, body } of cases) {
      const res = await fetch(stack.url('model-gw', '/v1/chat/completions'), {
        method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body,
      });
      const text = await res.text();
      assert.equal(res.status, 200, `${body}: ${text}`);
      if (stream) {
        const events = text.split('\n\n').filter(Boolean);
        assert.equal(events.at(-1), 'data: [DONE]');
        let content = '';
        for (const e of events.slice(0, -1)) {
          const chunk = JSON.parse(e.slice('data: '.length));
          assert.equal(chunk.model, 'llama3');
          assert.equal(chunk.usage ?? null, null, 'no usage chunk unless asked');
          content += chunk.choices[0]?.delta?.content ?? '';
        }
        assert.match(content, /odd body/);
      } else {
        const answer = JSON.parse(text);
        assert.equal(answer.model, 'llama3');
        assert.match(answer.choices[0].message.content, /odd body/);
      }
      const id = res.headers.get('x-request-id');
      const row = await eventually(() => stack.sql(`SELECT output_tokens > 0 FROM usage WHERE request_id = '${id}'`));
      assert.equal(row, '1', `usage read for ${body}`);
    }
  });

  test('legacy text completions, streamed and not', async () => {
    const res = await client.completions.create({ model: 'llama3', prompt: 'Once upon a time', max_tokens: 4 });
    assert.equal(res.model, 'llama3');
    assert.equal(res.choices[0].text.trim().split(/\s+/).length, 4);
    assert.equal(res.choices[0].finish_reason, 'length');
    const stream = await client.completions.create({ model: 'llama3', prompt: 'Once upon a time', stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    assert.match(text, /Once upon a time/);
  });

  test('an upstream that breaks the tool-call contract is repaired, streamed and not, and counted', async () => {
    const messages = [{ role: 'user', content: 'weather?' }];
    const res = await client.chat.completions.create({ model: 'quirky', messages, tools: [WEATHER_TOOL] });
    const call = res.choices[0].message.tool_calls[0];
    assert.equal(typeof call.function.arguments, 'string', 'arguments restored to a JSON string');
    JSON.parse(call.function.arguments);
    assert.match(call.id, /^call_/, 'a missing id is supplied');
    const stream = await client.chat.completions.create({ model: 'quirky', messages, tools: [WEATHER_TOOL], stream: true });
    let id = null;
    let args = '';
    for await (const chunk of stream) {
      for (const tc of chunk.choices[0]?.delta?.tool_calls ?? []) {
        id ??= tc.id;
        if (tc.function?.arguments !== undefined) {
          assert.equal(typeof tc.function.arguments, 'string');
          args += tc.function.arguments;
        }
      }
    }
    assert.ok(id);
    JSON.parse(args);
    const text = await (await fetch(stack.url('model-gw', '/metrics'))).text();
    assert.match(text, /^triplane_model_contract_repairs_total\{model="quirky"\} [1-9]/m);
  });

  test('a killed principal gets 403 saying it is suspended', async () => {
    const { key: k } = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'bob').stdout);
    stack.sql("INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms) VALUES ('principal', 'bob', 'drill', 'e2e', 1)");
    const c = new OpenAI({ apiKey: k, baseURL: stack.url('model-gw', '/v1'), maxRetries: 0 });
    const refused = await eventually(async () => {
      try {
        await c.models.list();
        return false;
      } catch (e) {
        return e instanceof OpenAI.PermissionDeniedError && /suspended/.test(e.message);
      }
    }, 5000);
    assert.ok(refused);
    stack.sql("UPDATE kills SET released_at_ms = 2, released_by = 'e2e' WHERE target = 'bob'");
  });

  test('embeddings', async () => {
    const res = await client.embeddings.create({ model: 'embedder', input: ['alpha', 'beta'] });
    assert.equal(res.data.length, 2);
    assert.equal(res.data[0].embedding.length, 8);
    assert.equal(res.model, 'embedder');
  });

  test('invalid requests are BadRequestError naming the JSON path; unknown models NotFoundError', async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'llama3', messages: [{ role: 'bot', content: 'x' }] }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'messages[0].role',
    );
    await assert.rejects(
      client.chat.completions.create({ model: 'llama3', messages: [{ role: 'user', content: 'x' }], tools: [WEATHER_TOOL], tool_choice: { type: 'function', function: { name: 'get_wether' } } }),
      (e) => e instanceof OpenAI.BadRequestError && /get_weather/.test(e.message),
    );
    await assert.rejects(client.chat.completions.create({ model: 'gpt-nope', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof OpenAI.NotFoundError);
  });

  test('hostile or odd input gets a clear error, never a crash', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'é'.repeat(300), messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof OpenAI.NotFoundError);
    // A huge max_tokens reserves a bounded estimate (no overflow past the budget check).
    const huge = await client.chat.completions.create({ model: 'llama3', max_tokens: Number.MAX_SAFE_INTEGER, messages: [{ role: 'user', content: 'x' }] });
    assert.equal(huge.choices.length, 1);
    const res = await fetch(stack.url('model-gw', '/v1/chat/completions'), { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: '{"model": "llama3", "messages": [' });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.code, 'invalid_json');
  });

  test("an upstream refusing the gateway's own credentials is a 502, not the client's 401", async () => {
    await assert.rejects(client.chat.completions.create({ model: 'misconfigured', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof OpenAI.APIError && e.status === 502);
  });

  test('a deployment at its concurrency cap gives 503 with Retry-After', async () => {
    const slow = await client.chat.completions.create({
      model: 'single-lane', stream: true, messages: [{ role: 'user', content: 'a b c d e f g h i j' }], fixture: { token_delay_ms: 100 },
    });
    const it = slow[Symbol.asyncIterator]();
    await it.next(); // the first request now holds the only slot
    await assert.rejects(client.chat.completions.create({ model: 'single-lane', messages: [{ role: 'user', content: 'x' }] }), (e) => {
      assert.equal(e.status, 503);
      assert.equal(e.headers.get('retry-after'), '1');
      return true;
    });
    for (let r = await it.next(); !r.done; r = await it.next());
  });

  test('an upstream failure mid-stream ends the stream with an error event', async () => {
    const stream = await client.chat.completions.create({
      model: 'llama3', stream: true, messages: [{ role: 'user', content: 'one two three four five six seven' }],
      fixture: { reset_after_chunks: 3 },
    });
    let got = 0;
    await assert.rejects(async () => {
      for await (const chunk of stream) got += chunk.choices.length;
    }, (e) => e instanceof OpenAI.APIError && /mid-stream/.test(e.message));
    assert.ok(got >= 1, 'some chunks arrived before the failure');
  });

  test('rate limits answer 429 with Retry-After', async () => {
    const bobKey = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'bob').stdout).key;
    const bob = new OpenAI({ apiKey: bobKey, baseURL: stack.url('model-gw', '/v1'), maxRetries: 0 });
    await bob.chat.completions.create({ model: 'llama3', messages: [{ role: 'user', content: 'x' }] });
    await assert.rejects(bob.chat.completions.create({ model: 'llama3', messages: [{ role: 'user', content: 'x' }] }), (e) => {
      assert.ok(e instanceof OpenAI.RateLimitError);
      assert.ok(Number(e.headers.get('retry-after')) >= 1);
      return true;
    });
  });

  test('usage is recorded per request, and an exhausted budget is a 429', async () => {
    const rows = await eventually(() => {
      const r = JSON.parse(stack.gwctl('--json', 'usage', '--by', 'model', '--since', '-1h').stdout).rows;
      const llama = r.find((x) => x.key === 'llama3');
      return llama && llama.requests >= 5 && r;
    }, 5000);
    assert.ok(rows, 'usage rows arrive through the store writer');
    assert.ok(rows.find((x) => x.key === 'llama3').output_tokens > 0);
    // Each row says how the request went, besides what it used.
    const detail = stack.sql("SELECT status, latency_ms > 0, ttft_ms >= 0, upstream FROM usage WHERE resource = 'llama3' AND status = 200 LIMIT 1");
    assert.match(detail, /^200\|1\|1\|http:\/\/127\.0\.0\.1:\d+\/v1$/);

    assert.equal(stack.gwctl('budget', 'set', '--principal', 'alice', '--period', 'day', '--tokens', '10').status, 0);
    await assert.rejects(client.chat.completions.create({ model: 'llama3', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof OpenAI.RateLimitError && e.code === 'budget_exceeded');
    // No budget (0) is no limit: the next tests run unbudgeted again.
    assert.equal(stack.gwctl('budget', 'set', '--principal', 'alice', '--period', 'day', '--tokens', '0').status, 0);
    await client.chat.completions.create({ model: 'llama3', messages: [{ role: 'user', content: 'x' }] });
  });

  test('a fallback model that answers is what is billed: usage row, cost metric and budget', async () => {
    const carol = new OpenAI({
      apiKey: JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'carol').stdout).key,
      baseURL: stack.url('model-gw', '/v1'),
      maxRetries: 0,
    });
    // 0.01 = 10000 micro-units: far above a request at primary's price, below one at backup's.
    assert.equal(stack.gwctl('budget', 'set', '--principal', 'carol', '--period', 'day', '--cost', '0.01').status, 0);
    const res = await carol.chat.completions.create({ model: 'primary', messages: [{ role: 'user', content: 'hello fallback' }] });
    assert.equal(res.model, 'primary', 'the client sees the model it asked for');
    const { prompt_tokens: input, completion_tokens: output } = res.usage;
    const micros = input * 1000 + output * 2000; // backup's price
    assert.ok(micros > 10000 && input + output < 10000);

    const row = await eventually(() => stack.sql("SELECT resource, input_tokens, output_tokens, cost_micros, upstream FROM usage WHERE principal_id = 'carol'"));
    assert.equal(row, `backup|${input}|${output}|${micros}|${fixture.url}/v1`);
    const text = await (await fetch(stack.url('model-gw', '/metrics'))).text();
    const cost = Number(text.match(/^triplane_model_cost_total\{model="primary"\} ([0-9.e+-]+)$/m)?.[1]);
    assert.ok(Math.abs(cost - micros / 1e6) < 1e-9, `cost metric ${cost}, expected ${micros / 1e6}`);
    // The budget was settled at backup's price too: carol's next request is over it.
    await assert.rejects(carol.chat.completions.create({ model: 'primary', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof OpenAI.RateLimitError && e.code === 'budget_exceeded');
  });

  test('a stream in flight across a snapshot swap settles from the snapshot it started with', async () => {
    const { data: stream, response } = await client.chat.completions.create({
      model: 'llama3', stream: true, messages: [{ role: 'user', content: 'a b c d e f' }], fixture: { token_delay_ms: 30 },
    }).withResponse();
    const it = stream[Symbol.asyncIterator]();
    await it.next();
    // gwctl returns once every worker serves the new snapshot: this request alone holds the old one.
    assert.equal(stack.gwctl('key', 'create', '--principal', 'bob').status, 0);
    let rest = 0;
    for (let r = await it.next(); !r.done; r = await it.next()) rest++;
    assert.ok(rest > 0, 'the stream went on after the swap');
    const id = response.headers.get('x-request-id');
    const row = await eventually(() => stack.sql(`SELECT status, output_tokens > 0 FROM usage WHERE request_id = '${id}'`));
    assert.equal(row, '200|1');
  });

  test('/metrics shows requests, failover, time to first token, overhead and tokens by model', async () => {
    const text = await (await fetch(stack.url('model-gw', '/metrics'))).text();
    const value = (re) => Number((text.match(re) ?? [])[1] ?? NaN);
    assert.ok(value(/^triplane_model_requests_total\{model="llama3",deployment="1",status="200"\} (\d+)/m) >= 5);
    assert.ok(value(/^triplane_model_upstream_errors_total\{model="llama3",deployment="0",kind="connection"\} (\d+)/m) >= 1,
      'the dead deployment was tried and counted');
    assert.ok(value(/^triplane_model_retries_total\{model="llama3"\} (\d+)/m) >= 1);
    assert.ok(value(/^triplane_model_time_to_first_token_seconds_count\{model="llama3"\} (\d+)/m) >= 5);
    assert.ok(value(/^triplane_model_gateway_overhead_seconds_count\{model="llama3"\} (\d+)/m) >= 5);
    assert.ok(value(/^triplane_model_tokens_total\{model="llama3",kind="completion"\} (\d+)/m) > 0);
    assert.ok(value(/^triplane_model_cost_total\{model="llama3"\} ([0-9.e-]+)/m) > 0, 'cost from the pricing section');
    assert.match(text, /^triplane_model_deployment_in_flight\{model="llama3",deployment="1"\} 0$/m);
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(check.status, 0, check.stdout + check.stderr);
  });

  test('a deployment that keeps failing is left alone (circuit open) and /readyz says a model is down', async () => {
    const ask = () => client.chat.completions.create({ model: 'dead', messages: [{ role: 'user', content: 'x' }] });
    // Each request tries the lone deployment twice (a retry after a jittered backoff): five
    // failures in a row open its circuit within three requests.
    const statuses = [];
    for (let i = 0; i < 6 && !statuses.includes(503); i++) {
      await assert.rejects(ask(), (e) => {
        statuses.push(e.status);
        if (e.status === 503) assert.equal(e.headers.get('retry-after'), '1');
        return true;
      });
    }
    assert.deepEqual(statuses, [502, 502, 502, 503]);
    const ready = await fetch(stack.url('model-gw', '/readyz'));
    assert.equal(ready.status, 503);
    assert.match((await ready.json()).checks.models, /no healthy deployment/);
    const text = await (await fetch(stack.url('model-gw', '/metrics'))).text();
    assert.match(text, /^triplane_model_deployment_circuit_open\{model="dead",deployment="0"\} 1$/m);
    assert.ok(stack.daemons['model-gw'].lines.some((l) => l.msg === 'deployment circuit open' && l.model === 'dead'));
  });

  test('a revoked key is refused', async () => {
    const { key: k, id } = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'alice').stdout);
    assert.equal(stack.gwctl('key', 'revoke', id).status, 0);
    const c = new OpenAI({ apiKey: k, baseURL: stack.url('model-gw', '/v1'), maxRetries: 0 });
    await assert.rejects(c.chat.completions.create({ model: 'llama3', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof OpenAI.AuthenticationError);
  });
});

describe('model-gw active health checks', () => {
  test('a deployment failing its health checks is taken out without any client request, and /readyz says so', async () => {
    const fixture = await startFixture(['--model', 'm']);
    const stack = await Stack.start({
      daemons: ['model-gw'],
      extra: {
        model_gw: [
          'health_interval_ms: 100',
          'models:',
          '  - name: probed',
          '    deployments:',
          '      - {url: "http://127.0.0.1:9/v1", model: m, health_path: /models}',
          `      - {url: "${fixture.url}/v1", model: m, health_path: /models}`,
          '  - name: dark',
          '    deployments: [{url: "http://127.0.0.1:9/v1", health_path: /models}]',
        ],
      },
    });
    try {
      const d = stack.daemons['model-gw'];
      await d.waitForLog((l) => l.msg === 'deployment circuit open' && l.model === 'probed' && l.deployment === '0', 5000);
      await d.waitForLog((l) => l.msg === 'deployment circuit open' && l.model === 'dark', 5000);
      const text = await (await fetch(stack.url('model-gw', '/metrics'))).text();
      assert.match(text, /^triplane_model_deployment_circuit_open\{model="probed",deployment="0"\} 1$/m);
      assert.doesNotMatch(text, /^triplane_model_deployment_circuit_open\{model="probed",deployment="1"\} 1$/m);
      assert.equal((await fetch(stack.url('model-gw', '/readyz'))).status, 503, "'dark' has no healthy deployment");
      assert.equal(d.lines.filter((l) => l.type === 'access' && l.path?.startsWith('/v1/')).length, 0, 'no client request was needed');
    } finally {
      const results = await stack.close();
      await fixture.stop();
      assert.equal(results['model-gw'].code, 0, stack.daemons['model-gw'].tail());
    }
  });
});

describe('model-gw readiness (model_gw.readiness) with a dead deployment', () => {
  // Two models: `up` on a live fixture and `down` on a port nothing listens on, both probed
  // every 100 ms, so `down`'s circuit opens within about half a second of the start.
  async function start(readiness, fixture) {
    const stack = await Stack.start({
      daemons: ['model-gw'],
      extra: {
        model_gw: [
          'health_interval_ms: 100',
          `readiness: ${readiness}`,
          'models:',
          '  - name: up',
          `    deployments: [{url: "${fixture.url}/v1", model: m, health_path: /models}]`,
          '  - name: down',
          '    deployments: [{url: "http://127.0.0.1:9/v1", health_path: /models}]',
        ],
      },
    });
    const d = stack.daemons['model-gw'];
    await d.waitForLog((l) => l.msg === 'deployment circuit open' && l.model === 'down', 5000);
    return stack;
  }
  const readyz = async (stack) => {
    const res = await fetch(stack.url('model-gw', '/readyz'));
    return { status: res.status, checks: (await res.json()).checks };
  };
  async function close(stack, ...fixtures) {
    const results = await stack.close();
    for (const f of fixtures) await f.stop();
    assert.equal(results['model-gw'].code, 0, stack.daemons['model-gw'].tail());
  }

  test('every_model: not ready while one model has no healthy deployment', async () => {
    const fixture = await startFixture(['--model', 'm']);
    const stack = await start('every_model', fixture);
    try {
      const r = await readyz(stack);
      assert.equal(r.status, 503);
      assert.match(r.checks.models, /a model has no healthy deployment/);
    } finally {
      await close(stack, fixture);
    }
  });

  test('any_model: ready while one model is up; not ready once none is', async () => {
    const fixture = await startFixture(['--model', 'm']);
    const stack = await start('any_model', fixture);
    try {
      const r = await readyz(stack);
      assert.equal(r.status, 200);
      assert.equal(r.checks.models, 'ok');
      await fixture.stop(); // now `up` fails its health checks too
      await stack.daemons['model-gw'].waitForLog((l) => l.msg === 'deployment circuit open' && l.model === 'up', 5000);
      const after = await readyz(stack);
      assert.equal(after.status, 503);
      assert.match(after.checks.models, /no model has a healthy deployment/);
    } finally {
      await close(stack, fixture);
    }
  });

  test('none: the models are no part of readiness', async () => {
    const fixture = await startFixture(['--model', 'm']);
    const stack = await start('none', fixture);
    try {
      await fixture.stop();
      await stack.daemons['model-gw'].waitForLog((l) => l.msg === 'deployment circuit open' && l.model === 'up', 5000);
      const r = await readyz(stack);
      assert.equal(r.status, 200);
      assert.equal(r.checks.models, undefined);
    } finally {
      await close(stack, fixture);
    }
  });
});
