// model-gw's Anthropic Messages API (/v1/messages) over a chat-completions upstream (the
// inference fixture), driven by the official @anthropic-ai/sdk: text, system prompts, limits,
// stop sequences, streams (raw events and the MessageStream helper), tool use, errors in
// Anthropic's shape, and both ways of presenting the key (x-api-key, Authorization: Bearer).
//
// The fixture quotes the last user message ("Fixture reply to: …"), answers "Tool result received:
// …" after a tool message, calls tools when given them and the last message is from the user, and
// counts prompt tokens as the words of every message: usage.input_tokens tells exactly what
// reached the upstream.
//
// Note: this SDK version (1.14.0) sends its apiKey as "Authorization: Bearer …" and
// "anthropic-version: 2026-10-21"; x-api-key (what older SDKs and curl examples send) is tested
// with fetch.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import Anthropic from '@anthropic-ai/sdk';

import { Stack, eventually, startFixture } from './lib/stack.mjs';
import { collect, failure, parseSSE } from './lib/streams.mjs';

const T = { timeout: 60000 };
const SDK_TIMEOUT_MS = 20000;

const WEATHER = {
  name: 'get_weather',
  description: 'Current weather in a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};
const TIME = {
  name: 'get_time',
  description: 'Current time in a time zone',
  input_schema: { type: 'object', properties: { tz: { type: 'string', enum: ['UTC', 'CET'] } }, required: ['tz'] },
};

const words = (s) => s.trim().split(/\s+/).filter(Boolean).length;
const textOf = (m) => m.content.filter((b) => b.type === 'text').map((b) => b.text).join('');

// Checks an SDK error: its class, status and Anthropic error type (the body is
// {"type":"error","error":{"type","message"}}); returns the error's message.
function anthropicError(e, cls, status, type) {
  assert.ok(e instanceof cls, `${e.constructor.name} ${e.status} ${e.message}`);
  assert.equal(e.status, status);
  assert.equal(e.error?.type, 'error', JSON.stringify(e.error));
  assert.equal(e.error.error.type, type);
  assert.equal(typeof e.error.error.message, 'string');
  assert.ok(e.error.error.message.length > 0);
  return e.error.error.message;
}

describe('model-gw /v1/messages through the Anthropic SDK', () => {
  let fixture;
  let slow;
  let flaky;
  let broken;
  let stack;
  let key;
  let client;
  let url;
  const post = (body, headers = {}) =>
    fetch(`${url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
      signal: AbortSignal.timeout(SDK_TIMEOUT_MS),
    });

  before(async () => {
    [fixture, slow, flaky, broken] = await Promise.all([
      startFixture(['--model', 'meta-llama-3-8b']),
      startFixture(['--model', 'm', '--token-delay-ms', '60']),
      startFixture(['--model', 'm', '--reset-after-chunks', '4']),
      startFixture(['--model', 'm', '--fail', '500']),
    ]);
    stack = await Stack.start({
      daemons: ['model-gw'],
      common: ['max_request_size: 256k'],
      extra: {
        model_gw: [
          'models:',
          '  - name: llama3',
          `    deployments: [{url: "${fixture.url}/v1", model: meta-llama-3-8b}]`,
          '  - name: secret-model',
          `    deployments: [{url: "${fixture.url}/v1", model: meta-llama-3-8b}]`,
          '  - name: slow',
          `    deployments: [{url: "${slow.url}/v1", model: m}]`,
          '  - name: flaky',
          `    deployments: [{url: "${flaky.url}/v1", model: m}]`,
          '  - name: broken',
          `    deployments: [{url: "${broken.url}/v1", model: m}]`,
        ],
      },
    });
    const file = path.join(stack.dir, 'p.yaml');
    writeFileSync(file, [
      'principals: [{id: alice, kind: user, team: ml}, {id: dave, kind: user, team: ml}, {id: erin, kind: user, team: ml}, {id: fred, kind: user, team: ml}]',
      'rules:',
      '  - {id: ml-chat, effect: allow, subjects: {teams: [ml]}, plane: model, resources: [llama3, slow, flaky, broken], actions: [chat]}',
      'limits: [{principal: dave, rpm: 1}]',
      '',
    ].join('\n'));
    const apply = stack.gwctl('apply', '-f', file);
    assert.equal(apply.status, 0, apply.stderr);
    const created = stack.gwctl('--json', 'key', 'create', '--principal', 'alice');
    assert.equal(created.status, 0, created.stderr);
    key = JSON.parse(created.stdout).key;
    url = stack.url('model-gw');
    client = new Anthropic({ apiKey: key, baseURL: url, maxRetries: 0, timeout: SDK_TIMEOUT_MS });
  });
  after(async () => {
    const results = await stack.close();
    for (const f of [fixture, slow, flaky, broken]) await f.stop();
    assert.equal(results['model-gw'].code, 0, stack.daemons['model-gw'].tail());
    assert.deepEqual(stack.daemons['model-gw'].sanitizerReports(), []);
  });

  test("models.list and models.retrieve answer in Anthropic's shape, with only the models the caller may use", T, async () => {
    const ids = [];
    for await (const m of client.models.list()) {
      assert.equal(m.type, 'model');
      assert.equal(m.display_name, m.id);
      assert.ok(Math.abs(Date.parse(m.created_at) - Date.now()) < 3600e3, m.created_at);
      ids.push(m.id);
    }
    assert.deepEqual(ids.sort(), ['broken', 'flaky', 'llama3', 'slow']);
    const m = await client.models.retrieve('llama3');
    assert.deepEqual(Object.keys(m).sort(), ['created_at', 'display_name', 'id', 'type']);
    await assert.rejects(client.models.retrieve('secret-model'), (e) => {
      assert.ok(e instanceof Anthropic.NotFoundError, String(e));
      assert.equal(e.error?.type, 'error');
      assert.equal(e.error?.error?.type, 'not_found_error');
      return true;
    });
    // Without anthropic-version, the same route is OpenAI's.
    const res = await fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${key}` }, signal: AbortSignal.timeout(SDK_TIMEOUT_MS) });
    const body = await res.json();
    assert.equal(body.object, 'list');
    assert.equal(body.data[0].object, 'model');
  });

  test('messages.create: an assistant message quoting the prompt, end_turn, usage, the public model', T, async () => {
    const m = await client.messages.create({ model: 'llama3', max_tokens: 100, messages: [{ role: 'user', content: 'hello there' }] });
    assert.match(m.id, /^msg_/);
    assert.equal(m.type, 'message');
    assert.equal(m.role, 'assistant');
    assert.equal(m.model, 'llama3');
    assert.equal(m.content.length, 1);
    assert.equal(m.content[0].type, 'text');
    assert.equal(m.content[0].text, 'Fixture reply to: hello there');
    assert.equal(m.stop_reason, 'end_turn');
    assert.equal(m.stop_sequence, null);
    assert.equal(m.usage.input_tokens, 2);
    assert.equal(m.usage.output_tokens, 5);
  });

  test('a system prompt, as a string or text blocks, reaches the upstream ahead of the turns', T, async () => {
    const messages = [{ role: 'user', content: 'what now' }];
    const plain = await client.messages.create({ model: 'llama3', max_tokens: 100, messages });
    const asString = await client.messages.create({ model: 'llama3', max_tokens: 100, system: 'You are terse.', messages });
    const asBlocks = await client.messages.create({
      model: 'llama3',
      max_tokens: 100,
      system: [{ type: 'text', text: 'You are terse.' }, { type: 'text', text: 'Really terse.' }],
      messages,
    });
    for (const m of [plain, asString, asBlocks]) assert.equal(textOf(m), 'Fixture reply to: what now');
    assert.equal(asString.usage.input_tokens, plain.usage.input_tokens + 3);
    assert.equal(asBlocks.usage.input_tokens, plain.usage.input_tokens + 5);
  });

  test('a multi-turn conversation, with content blocks and a prefilled assistant turn', T, async () => {
    const m = await client.messages.create({
      model: 'llama3',
      max_tokens: 100,
      messages: [
        { role: 'user', content: 'first question' },
        { role: 'assistant', content: [{ type: 'text', text: 'first answer' }] },
        { role: 'user', content: [{ type: 'text', text: 'second' }, { type: 'text', text: 'question' }] },
      ],
    });
    assert.equal(textOf(m), 'Fixture reply to: second question');
    assert.equal(m.usage.input_tokens, 6);

    // A user turn with an image: accepted, and its text still reaches the upstream.
    const png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';
    const withImage = await client.messages.create({
      model: 'llama3',
      max_tokens: 100,
      messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: png } }, { type: 'text', text: 'describe it' }] }],
    });
    assert.equal(textOf(withImage), 'Fixture reply to: describe it');
  });

  test('max_tokens cuts the reply: stop_reason max_tokens', T, async () => {
    const m = await client.messages.create({ model: 'llama3', max_tokens: 2, messages: [{ role: 'user', content: 'tell me a long story' }] });
    assert.equal(m.stop_reason, 'max_tokens');
    assert.equal(textOf(m), 'Fixture reply');
    assert.equal(m.usage.output_tokens, 2);
  });

  test('a reply ending with one of stop_sequences reports stop_sequence, streamed or not', T, async () => {
    const params = { model: 'llama3', max_tokens: 100, stop_sequences: ['HALT', 'END'], messages: [{ role: 'user', content: 'please say END' }] };
    const m = await client.messages.create(params);
    assert.equal(m.stop_reason, 'stop_sequence');
    assert.equal(m.stop_sequence, 'END');
    const final = await client.messages.stream(params).finalMessage();
    assert.equal(final.stop_reason, 'stop_sequence');
    assert.equal(final.stop_sequence, 'END');
    const other = await client.messages.create({ ...params, messages: [{ role: 'user', content: 'say nothing special' }] });
    assert.equal(other.stop_reason, 'end_turn');
    assert.equal(other.stop_sequence, null);
  });

  test('a streamed message: the official events in order, adding up to the text and usage', T, async () => {
    const stream = await client.messages.create({ model: 'llama3', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'stream me a reply' }] });
    const events = await collect(stream);
    const types = events.map((e) => e.type);
    const deltas = events.filter((e) => e.type === 'content_block_delta');
    assert.ok(deltas.length >= 2, `the text came in pieces: ${types.join(', ')}`);
    assert.deepEqual(types, [
      'message_start',
      'content_block_start',
      ...deltas.map(() => 'content_block_delta'),
      'content_block_stop',
      'message_delta',
      'message_stop',
    ]);
    const start = events[0].message;
    assert.match(start.id, /^msg_/);
    assert.equal(start.type, 'message');
    assert.equal(start.role, 'assistant');
    assert.equal(start.model, 'llama3');
    assert.deepEqual(start.content, []);
    assert.equal(start.stop_reason, null);
    assert.equal(typeof start.usage.input_tokens, 'number');
    assert.equal(events[1].index, 0);
    assert.deepEqual({ type: events[1].content_block.type, text: events[1].content_block.text }, { type: 'text', text: '' });
    for (const d of deltas) {
      assert.equal(d.index, 0);
      assert.equal(d.delta.type, 'text_delta');
    }
    const text = deltas.map((d) => d.delta.text).join('');
    assert.equal(text, 'Fixture reply to: stream me a reply');
    assert.equal(events.at(-3).index, 0);
    const md = events.at(-2);
    assert.equal(md.delta.stop_reason, 'end_turn');
    assert.equal(md.delta.stop_sequence, null);
    assert.equal(md.usage.output_tokens, words(text));
  });

  test('on the wire, each streamed event is named by an event: line matching its type', T, async () => {
    const res = await post({ model: 'llama3', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'raw events' }] }, { 'x-api-key': key, 'anthropic-version': '2023-06-01' });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    const events = parseSSE(await res.text()).filter((e) => e.event !== 'ping');
    assert.ok(events.length >= 6);
    for (const e of events) assert.equal(e.event, JSON.parse(e.data).type);
    assert.equal(events.at(-1).event, 'message_stop');
  });

  test('client.messages.stream(): text events and finalMessage()', T, async () => {
    const s = client.messages.stream({ model: 'llama3', max_tokens: 100, messages: [{ role: 'user', content: 'use the helper' }] });
    let text = '';
    s.on('text', (t) => (text += t));
    const final = await s.finalMessage();
    assert.equal(textOf(final), 'Fixture reply to: use the helper');
    assert.equal(text, textOf(final));
    assert.equal(final.stop_reason, 'end_turn');
    assert.equal(final.model, 'llama3');
    assert.equal(final.usage.output_tokens, words(text));
    assert.equal(await s.finalText(), textOf(final));

    const cut = await client.messages.stream({ model: 'llama3', max_tokens: 3, messages: [{ role: 'user', content: 'a b c d' }] }).finalMessage();
    assert.equal(cut.stop_reason, 'max_tokens');
    assert.equal(textOf(cut), 'Fixture reply to:');
  });

  test('a streamed message reports its input tokens too', T, async () => {
    // Anthropic reports input_tokens on message_start; the SDK also takes them from message_delta.
    const final = await client.messages.stream({ model: 'llama3', max_tokens: 100, messages: [{ role: 'user', content: 'count my words please' }] }).finalMessage();
    assert.equal(final.usage.input_tokens, 4);
  });

  test('tool use round trip: tool_use, then a tool_result answered', T, async () => {
    const question = { role: 'user', content: 'What is the weather in Oslo?' };
    const first = await client.messages.create({ model: 'llama3', max_tokens: 200, tools: [WEATHER], messages: [question] });
    assert.equal(first.stop_reason, 'tool_use');
    const uses = first.content.filter((b) => b.type === 'tool_use');
    assert.equal(uses.length, 1);
    const [use] = uses;
    assert.ok(typeof use.id === 'string' && use.id.length > 0);
    assert.equal(use.name, 'get_weather');
    assert.deepEqual(use.input, { city: 'fixture' });

    const second = await client.messages.create({
      model: 'llama3',
      max_tokens: 200,
      tools: [WEATHER],
      messages: [question, { role: 'assistant', content: first.content }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '20C' }] }],
    });
    assert.equal(second.stop_reason, 'end_turn');
    assert.equal(textOf(second), 'Tool result received: 20C');
    // question + the call (no text) + the one-word result
    assert.equal(second.usage.input_tokens, first.usage.input_tokens + 1);

    // tool_result content as blocks, and is_error, are accepted too.
    const third = await client.messages.create({
      model: 'llama3',
      max_tokens: 200,
      tools: [WEATHER],
      messages: [question, { role: 'assistant', content: first.content }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, is_error: true, content: [{ type: 'text', text: 'city unknown' }] }] }],
    });
    assert.match(textOf(third), /^Tool result received: (Error: )?city unknown$/);

    // A tool_result followed by text in the same user turn: the result goes first, the text
    // is the last user message.
    const mixed = await client.messages.create({
      model: 'llama3',
      max_tokens: 200,
      tools: [WEATHER],
      tool_choice: { type: 'none' },
      messages: [question, { role: 'assistant', content: first.content }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '20C' }, { type: 'text', text: 'now summarise' }] }],
    });
    assert.equal(textOf(mixed), 'Fixture reply to: now summarise');
    assert.equal(mixed.usage.input_tokens, first.usage.input_tokens + 1 + 2);
  });

  test('streamed tool use: input_json_delta fragments add up to the input; finalMessage() parses it', T, async () => {
    const params = { model: 'llama3', max_tokens: 200, tools: [WEATHER, TIME], messages: [{ role: 'user', content: 'weather and time' }] };
    const events = await collect(await client.messages.create({ ...params, stream: true }));
    const types = events.map((e) => e.type);
    assert.equal(types[0], 'message_start');
    assert.deepEqual(types.slice(-2), ['message_delta', 'message_stop']);
    assert.equal(events.at(-2).delta.stop_reason, 'tool_use');
    const starts = events.filter((e) => e.type === 'content_block_start');
    assert.deepEqual(starts.map((e) => [e.index, e.content_block.type, e.content_block.name]), [[0, 'tool_use', 'get_weather'], [1, 'tool_use', 'get_time']]);
    for (const [index, input] of [[0, { city: 'fixture' }], [1, { tz: 'UTC' }]]) {
      const start = starts[index];
      assert.ok(start.content_block.id);
      assert.deepEqual(start.content_block.input, {});
      const fragments = events.filter((e) => e.type === 'content_block_delta' && e.index === index);
      assert.ok(fragments.length >= 2, 'the input came in fragments');
      for (const f of fragments) assert.equal(f.delta.type, 'input_json_delta');
      assert.deepEqual(JSON.parse(fragments.map((f) => f.delta.partial_json).join('')), input);
      // The block closes before the next one opens.
      const stop = events.findIndex((e) => e.type === 'content_block_stop' && e.index === index);
      const nextStart = events.findIndex((e) => e.type === 'content_block_start' && e.index === index + 1);
      assert.ok(stop > events.indexOf(start) && (nextStart === -1 || stop < nextStart), types.join(', '));
    }

    const final = await client.messages.stream(params).finalMessage();
    assert.equal(final.stop_reason, 'tool_use');
    assert.deepEqual(final.content.map((b) => [b.type, b.name, b.input]), [['tool_use', 'get_weather', { city: 'fixture' }], ['tool_use', 'get_time', { tz: 'UTC' }]]);
  });

  test('tool_choice and disable_parallel_tool_use decide which tools are called', T, async () => {
    const base = { model: 'llama3', max_tokens: 200, tools: [WEATHER, TIME], messages: [{ role: 'user', content: 'weather and time' }] };
    const names = (m) => m.content.filter((b) => b.type === 'tool_use').map((b) => b.name);

    const both = await client.messages.create(base);
    assert.deepEqual(names(both), ['get_weather', 'get_time']);
    const one = await client.messages.create({ ...base, tool_choice: { type: 'auto', disable_parallel_tool_use: true } });
    assert.deepEqual(names(one), ['get_weather']);
    const forced = await client.messages.create({ ...base, tool_choice: { type: 'tool', name: 'get_time' } });
    assert.deepEqual(names(forced), ['get_time']);
    assert.equal(forced.stop_reason, 'tool_use');
    const any = await client.messages.create({ ...base, tool_choice: { type: 'any', disable_parallel_tool_use: true } });
    assert.deepEqual(names(any), ['get_weather']);
    const none = await client.messages.create({ ...base, tool_choice: { type: 'none' } });
    assert.deepEqual(names(none), []);
    assert.equal(textOf(none), 'Fixture reply to: weather and time');
    assert.equal(none.stop_reason, 'end_turn');

    const e = await failure(client.messages.create({ ...base, tool_choice: { type: 'tool', name: 'get_wether' } }));
    assert.match(anthropicError(e, Anthropic.BadRequestError, 400, 'invalid_request_error'), /get_wether/);
  });

  test('errors are typed SDK errors with a body in Anthropic\'s shape', T, async () => {
    const msg = [{ role: 'user', content: 'x' }];
    const bad = new Anthropic({ apiKey: 'tp_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', baseURL: url, maxRetries: 0, timeout: SDK_TIMEOUT_MS });
    anthropicError(await failure(bad.messages.create({ model: 'llama3', max_tokens: 10, messages: msg })), Anthropic.AuthenticationError, 401, 'authentication_error');

    const noMax = await failure(client.messages.create({ model: 'llama3', messages: msg }));
    assert.match(anthropicError(noMax, Anthropic.BadRequestError, 400, 'invalid_request_error'), /max_tokens/);

    const orphan = await failure(client.messages.create({
      model: 'llama3',
      max_tokens: 10,
      messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_nope', content: 'x' }] }],
    }));
    assert.match(anthropicError(orphan, Anthropic.BadRequestError, 400, 'invalid_request_error'), /toolu_nope|tool_use_id/);

    const badBlock = await failure(client.messages.create({ model: 'llama3', max_tokens: 10, messages: [{ role: 'user', content: [{ type: 'hologram', text: 'x' }] }] }));
    assert.match(anthropicError(badBlock, Anthropic.BadRequestError, 400, 'invalid_request_error'), /hologram|type/);

    const emptyMessages = await failure(client.messages.create({ model: 'llama3', max_tokens: 10, messages: [] }));
    anthropicError(emptyMessages, Anthropic.BadRequestError, 400, 'invalid_request_error');

    for (const model of ['secret-model', 'no-such-model']) {
      const e = await failure(client.messages.create({ model, max_tokens: 10, messages: msg }));
      assert.match(anthropicError(e, Anthropic.NotFoundError, 404, 'not_found_error'), new RegExp(model));
    }

    // The raw bodies, with fetch.
    const check = async (res, status, type) => {
      assert.equal(res.status, status);
      assert.match(res.headers.get('content-type'), /^application\/json/);
      const body = await res.json();
      assert.equal(body.type, 'error', JSON.stringify(body));
      assert.deepEqual(Object.keys(body.error).sort(), ['message', 'type']);
      assert.equal(body.error.type, type);
      assert.equal(typeof body.error.message, 'string');
      assert.equal(body.choices, undefined);
      return body;
    };
    await check(await post({ model: 'llama3', max_tokens: 10, messages: msg }), 401, 'authentication_error');
    await check(await post({ model: 'llama3', max_tokens: 10, messages: msg }, { 'x-api-key': 'tp_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb' }), 401, 'authentication_error');
    await check(await post({ model: 'llama3', messages: msg }, { 'x-api-key': key, 'anthropic-version': '2023-06-01' }), 400, 'invalid_request_error');
    await check(await post('{"model": "llama3", "max_tokens": 10, "messages": [', { 'x-api-key': key }), 400, 'invalid_request_error');
    await check(await post({ model: 'secret-model', max_tokens: 10, messages: msg }, { authorization: `Bearer ${key}` }), 404, 'not_found_error');
  });

  test('limits, kills, sizes and ranges are refused in Anthropic\'s shape too', T, async () => {
    const keyOf = (p) => JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', p).stdout).key;
    const msg = [{ role: 'user', content: 'x' }];
    const dave = new Anthropic({ apiKey: keyOf('dave'), baseURL: url, maxRetries: 0, timeout: SDK_TIMEOUT_MS });
    await dave.messages.create({ model: 'llama3', max_tokens: 10, messages: msg });
    const limited = await failure(dave.messages.create({ model: 'llama3', max_tokens: 10, messages: msg }));
    anthropicError(limited, Anthropic.RateLimitError, 429, 'rate_limit_error');
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);

    const big = await failure(client.messages.create({ model: 'llama3', max_tokens: 10, messages: [{ role: 'user', content: 'x'.repeat(300 * 1024) }] }));
    anthropicError(big, Anthropic.APIError, 413, 'request_too_large');

    const hot = await failure(client.messages.create({ model: 'llama3', max_tokens: 10, temperature: 1.5, messages: msg }));
    assert.match(anthropicError(hot, Anthropic.BadRequestError, 400, 'invalid_request_error'), /temperature/);

    const erin = new Anthropic({ apiKey: keyOf('erin'), baseURL: url, maxRetries: 0, timeout: SDK_TIMEOUT_MS });
    await erin.messages.create({ model: 'llama3', max_tokens: 10, messages: msg });
    stack.sql("INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms) VALUES ('principal', 'erin', 'drill', 'e2e', 1)");
    const refused = await eventually(async () => {
      try {
        await erin.messages.create({ model: 'llama3', max_tokens: 10, messages: msg });
        return false;
      } catch (e) {
        return e;
      }
    }, 5000);
    assert.ok(refused, 'the kill reaches model-gw');
    assert.match(anthropicError(refused, Anthropic.PermissionDeniedError, 403, 'permission_error'), /suspended/);

    // Fields a chat upstream has no use for are dropped, not refused (deny_unknown_fields is off).
    const topK = await client.messages.create({ model: 'llama3', max_tokens: 10, top_k: 5, metadata: { user_id: 'u-1' }, messages: [{ role: 'user', content: 'ok' }] });
    assert.equal(textOf(topK), 'Fixture reply to: ok');
  });

  test('a validation error names the JSON path once, leading the message', T, async () => {
    const cases = [
      [{ model: 'llama3', messages: [{ role: 'user', content: 'x' }] }, 'max_tokens'],
      [{ model: 'llama3', max_tokens: 10, temperature: 1.5, messages: [{ role: 'user', content: 'x' }] }, 'temperature'],
      [{ model: 'llama3', max_tokens: 10, messages: [{ role: 'system', content: 'x' }] }, 'messages.0.role'],
      [{ model: 'llama3', max_tokens: 10, tools: [WEATHER], tool_choice: { type: 'tool', name: 'nope' }, messages: [{ role: 'user', content: 'x' }] }, 'tool_choice.name'],
    ];
    for (const [body, path] of cases) {
      const e = await failure(client.messages.create(body));
      const message = anthropicError(e, Anthropic.BadRequestError, 400, 'invalid_request_error');
      assert.ok(message.startsWith(`${path}: `), `${path}: ${message}`);
      assert.ok(!message.startsWith(`${path}: ${path}:`), `the path is repeated: ${message}`);
    }
  });

  test('the key is accepted as x-api-key and as Authorization: Bearer', T, async () => {
    const body = { model: 'llama3', max_tokens: 50, messages: [{ role: 'user', content: 'who am i' }] };
    for (const headers of [{ 'x-api-key': key, 'anthropic-version': '2023-06-01' }, { authorization: `Bearer ${key}`, 'anthropic-version': '2023-06-01' }]) {
      const res = await post(body, headers);
      const text = await res.text();
      assert.equal(res.status, 200, `${Object.keys(headers)}: ${text}`);
      assert.match(res.headers.get('content-type'), /^application\/json/);
      const m = JSON.parse(text);
      assert.equal(m.type, 'message');
      assert.equal(textOf(m), 'Fixture reply to: who am i');
    }
  });

  test('usage is recorded for a message like for a chat completion', T, async () => {
    const res = await post({ model: 'llama3', max_tokens: 50, messages: [{ role: 'user', content: 'bill me now' }] }, { 'x-api-key': key });
    assert.equal(res.status, 200);
    const id = res.headers.get('x-request-id');
    assert.ok(id, 'x-request-id');
    const m = await res.json();
    const row = await eventually(() => stack.sql(`SELECT principal_id, resource, input_tokens, output_tokens, status FROM usage WHERE request_id = '${id}'`));
    assert.equal(row, `alice|llama3|${m.usage.input_tokens}|${m.usage.output_tokens}|200`);

    // Streamed: the usage the upstream reported at the end of its stream.
    const sres = await post({ model: 'llama3', max_tokens: 50, stream: true, messages: [{ role: 'user', content: 'bill my stream' }] }, { 'x-api-key': key });
    assert.equal(sres.status, 200);
    const sid = sres.headers.get('x-request-id');
    assert.ok(sid, 'x-request-id');
    const events = parseSSE(await sres.text()).map((e) => JSON.parse(e.data));
    const output = events.find((e) => e.type === 'message_delta').usage.output_tokens;
    assert.equal(output, 6);
    const srow = await eventually(() => stack.sql(`SELECT principal_id, resource, input_tokens, output_tokens, status FROM usage WHERE request_id = '${sid}'`));
    assert.equal(srow, `alice|llama3|3|${output}|200`);
  });

  test('a slow upstream streams: text deltas arrive as the upstream produces them', T, async () => {
    const input = 'one two three four five six';
    const s = await client.messages.create({ model: 'slow', max_tokens: 100, stream: true, messages: [{ role: 'user', content: input }] });
    let first = null;
    let text = '';
    let last = null;
    for await (const e of s) {
      if (e.type === 'content_block_delta') {
        first ??= Date.now();
        text += e.delta.text;
      }
      last = e;
    }
    const spread = Date.now() - first;
    assert.equal(text, `Fixture reply to: ${input}`);
    assert.equal(last.type, 'message_stop');
    assert.ok(spread >= 250, `deltas spread over ${spread} ms`);
  });

  test('an upstream stream that breaks ends with an error event, which the SDK raises', T, async () => {
    let text = '';
    const s = await client.messages.create({ model: 'flaky', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'one two three four five six seven' }] });
    const e = await failure((async () => {
      for await (const ev of s) if (ev.type === 'content_block_delta') text += ev.delta.text;
    })());
    assert.ok(e instanceof Anthropic.APIError, `${e.constructor.name}: ${e.message}`);
    assert.equal(e.error?.type, 'error', JSON.stringify(e.error));
    assert.ok(['api_error', 'overloaded_error'].includes(e.error.error.type), e.error.error.type);
    assert.ok(text.length > 0 && 'Fixture reply to: one two three four five six seven'.startsWith(text), text);

    // On the wire: the events so far, then `event: error`, and nothing after it.
    const res = await post({ model: 'flaky', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'one two three four' }] }, { 'x-api-key': key });
    assert.equal(res.status, 200);
    const events = parseSSE(await res.text()).filter((x) => x.event !== 'ping');
    assert.equal(events[0].event, 'message_start');
    assert.equal(events.at(-1).event, 'error');
    assert.ok(!events.some((x) => x.event === 'message_stop'));
    const body = JSON.parse(events.at(-1).data);
    assert.equal(body.type, 'error');
    assert.equal(typeof body.error.message, 'string');
  });

  test('a principal killed while its message streams gets an error event: permission_error, suspended', T, async () => {
    const fredKey = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'fred').stdout).key;
    const fred = new Anthropic({ apiKey: fredKey, baseURL: url, maxRetries: 0, timeout: SDK_TIMEOUT_MS });
    const s = await fred.messages.create({ model: 'slow', max_tokens: 100, stream: true, messages: [{ role: 'user', content: 'one two three four five six seven eight nine ten' }] });
    const types = [];
    const e = await failure((async () => {
      for await (const ev of s) {
        types.push(ev.type);
        if (types.length === 4) stack.sql("INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms) VALUES ('principal', 'fred', 'drill', 'e2e', 1)");
        assert.ok(types.length < 100);
      }
    })());
    assert.ok(e instanceof Anthropic.APIError, `${e.constructor.name}: ${e.message}`);
    assert.equal(e.error?.error?.type, 'permission_error', JSON.stringify(e.error));
    assert.match(e.error.error.message, /fred.*suspended/);
    assert.ok(!types.includes('message_stop'));
  });

  test('an upstream that fails before answering is a 502 api_error, streamed or not', T, async () => {
    const params = { model: 'broken', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] };
    anthropicError(await failure(client.messages.create(params)), Anthropic.InternalServerError, 502, 'api_error');
    anthropicError(await failure(client.messages.create({ ...params, stream: true }).then(collect)), Anthropic.InternalServerError, 502, 'api_error');
  });
});
