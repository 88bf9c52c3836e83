// model-gw's OpenAI Responses API (/v1/responses) over a chat-completions upstream (the inference
// fixture), driven by the official openai SDK: whole and streamed responses, continuation with
// previous_response_id, function calling, stored responses (retrieve, input items, delete,
// ownership, gwctl) and their persistence across a restart.
//
// The fixture quotes the last user message ("Fixture reply to: …"), answers "Tool result received:
// …" after a tool message, calls tools when given them and the last message is from the user, and
// counts prompt tokens as the words of every message: so usage.input_tokens tells exactly what
// history reached the upstream.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { Stack, eventually, startFixture } from './lib/stack.mjs';
import { collect, failure, parseSSE } from './lib/streams.mjs';

const T = { timeout: 60000 }; // per test: every SDK call below also has its own timeout
const SDK_TIMEOUT_MS = 20000;

const WEATHER = {
  type: 'function',
  name: 'get_weather',
  description: 'Current weather in a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};
const TIME = {
  type: 'function',
  name: 'get_time',
  description: 'Current time in a time zone',
  parameters: { type: 'object', properties: { tz: { type: 'string', enum: ['UTC', 'CET'] } }, required: ['tz'] },
};

const words = (s) => s.trim().split(/\s+/).filter(Boolean).length;

// The text of a Response's message items, as the SDK's output_text helper computes it (the
// stream helper's finalResponse() does not add output_text).
function textOf(r) {
  return r.output
    .filter((i) => i.type === 'message')
    .flatMap((i) => i.content)
    .filter((c) => c.type === 'output_text')
    .map((c) => c.text)
    .join('');
}

// A Response object as stored and compared: without the SDK's own additions.
function plain(r) {
  const { output_text: _t, ...rest } = r;
  return JSON.parse(JSON.stringify(rest));
}

function policyFile(stack) {
  const file = path.join(stack.dir, 'p.yaml');
  writeFileSync(file, [
    'principals: [{id: alice, kind: user, team: ml}, {id: bob, kind: user, team: ml}, {id: carol, kind: user, team: ml}, {id: dave, kind: user, team: ml}, {id: erin, kind: user, team: ml}]',
    'rules:',
    '  - {id: ml-chat, effect: allow, subjects: {teams: [ml]}, plane: model, resources: [llama3, slow, flaky, broken], actions: [chat]}',
    'limits: [{principal: dave, rpm: 1}]',
    '',
  ].join('\n'));
  return file;
}

function newKey(stack, principal) {
  const r = stack.gwctl('--json', 'key', 'create', '--principal', principal);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout).key;
}

function sdk(stack, key) {
  return new OpenAI({ apiKey: key, baseURL: stack.url('model-gw', '/v1'), maxRetries: 0, timeout: SDK_TIMEOUT_MS });
}

function gwctlJSON(stack, ...args) {
  const r = stack.gwctl('--json', ...args);
  assert.equal(r.status, 0, `gwctl ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

// The HTTP status a call ends with: 200 when it succeeds.
async function statusOf(promise) {
  try {
    await promise;
    return 200;
  } catch (e) {
    return e.status;
  }
}

describe('model-gw /v1/responses through the openai SDK', () => {
  let fixture; // the chat upstream of llama3 and secret-model
  let slow; // streams one chunk every 60 ms
  let flaky; // breaks every stream after 4 chunks
  let broken; // answers every request 500
  let stack;
  let alice;
  let bob;
  let aliceKey;
  before(async () => {
    [fixture, slow, flaky, broken] = await Promise.all([
      startFixture(['--model', 'meta-llama-3-8b']),
      startFixture(['--model', 'm', '--token-delay-ms', '60']),
      startFixture(['--model', 'm', '--reset-after-chunks', '4']),
      startFixture(['--model', 'm', '--fail', '500']),
    ]);
    stack = await Stack.start({
      daemons: ['model-gw'],
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
    const apply = stack.gwctl('apply', '-f', policyFile(stack));
    assert.equal(apply.status, 0, apply.stderr);
    aliceKey = newKey(stack, 'alice');
    alice = sdk(stack, aliceKey);
    bob = sdk(stack, newKey(stack, 'bob'));
  });
  after(async () => {
    const results = await stack.close();
    for (const f of [fixture, slow, flaky, broken]) await f.stop();
    assert.equal(results['model-gw'].code, 0, stack.daemons['model-gw'].tail());
    assert.deepEqual(stack.daemons['model-gw'].sanitizerReports(), []);
  });

  test('create with a string input: a completed Response quoting it, with usage', T, async () => {
    const r = await alice.responses.create({ model: 'llama3', input: 'hello there' });
    assert.match(r.id, /^resp_/);
    assert.equal(r.object, 'response');
    assert.equal(r.model, 'llama3');
    assert.equal(r.status, 'completed');
    assert.equal(r.error, null);
    assert.equal(r.incomplete_details, null);
    assert.ok(Math.abs(r.created_at - Date.now() / 1000) < 600, `created_at ${r.created_at} is Unix seconds`);
    assert.equal(r.output.length, 1);
    const [msg] = r.output;
    assert.equal(msg.type, 'message');
    assert.equal(msg.role, 'assistant');
    assert.equal(msg.status, 'completed');
    assert.ok(typeof msg.id === 'string' && msg.id.length > 0, 'the message item has an id');
    assert.equal(msg.content.length, 1);
    assert.equal(msg.content[0].type, 'output_text');
    assert.deepEqual(msg.content[0].annotations, []);
    assert.equal(msg.content[0].text, 'Fixture reply to: hello there');
    assert.equal(r.output_text, 'Fixture reply to: hello there', 'the SDK helper sees the text');
    assert.equal(r.usage.input_tokens, 2);
    assert.equal(r.usage.output_tokens, words(r.output_text));
    assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
    assert.equal(r.usage.input_tokens_details?.cached_tokens, 0);
    assert.equal(r.usage.output_tokens_details?.reasoning_tokens, 0);
    assert.equal(r.store, true, 'store defaults to true');
    assert.equal(r.previous_response_id, null);
  });

  test('instructions and input items reach the upstream; the request is echoed; max_output_tokens cuts to incomplete', T, async () => {
    const long = Array.from({ length: 30 }, (_, i) => `w${i}`).join(' ');
    const r = await alice.responses.create({
      model: 'llama3',
      instructions: 'Answer in French please', // 4 words
      input: [
        { role: 'developer', content: 'Be brief' }, // 2 words
        { type: 'message', role: 'user', content: [{ type: 'input_text', text: long }] }, // 30 words
      ],
      max_output_tokens: 16, // the Responses API's own minimum: the reply has 33 words
      temperature: 0.5,
      top_p: 0.9,
      metadata: { ticket: 'T-1' },
    });
    assert.equal(r.status, 'incomplete');
    assert.deepEqual(r.incomplete_details, { reason: 'max_output_tokens' });
    assert.equal(r.usage.output_tokens, 16);
    assert.equal(words(r.output_text), 16);
    assert.ok(r.output_text.startsWith('Fixture reply to: w0 w1'), r.output_text);
    assert.equal(r.usage.input_tokens, 4 + 2 + 30, 'instructions, the developer message and the user message were all sent');
    assert.equal(r.instructions, 'Answer in French please');
    assert.equal(r.max_output_tokens, 16);
    assert.equal(r.temperature, 0.5);
    assert.equal(r.top_p, 0.9);
    assert.deepEqual(r.metadata, { ticket: 'T-1' });
    assert.equal(r.output[0].type, 'message');
    assert.equal(r.output[0].status, 'incomplete', 'the cut message item is incomplete');
  });

  test('a streamed response: the official events in order, numbered, adding up to the final Response', T, async () => {
    const stream = await alice.responses.create({ model: 'llama3', input: 'stream me a reply', stream: true });
    const events = await collect(stream);
    const types = events.map((e) => e.type);
    const deltas = events.filter((e) => e.type === 'response.output_text.delta');
    assert.ok(deltas.length >= 2, `the text came in pieces: ${types.join(', ')}`);
    assert.deepEqual(types, [
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      ...deltas.map(() => 'response.output_text.delta'),
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    events.forEach((e, i) => assert.equal(e.sequence_number, i, `${e.type} is event ${i}`));

    const [created, inProgress, added, partAdded] = events;
    assert.match(created.response.id, /^resp_/);
    assert.equal(created.response.status, 'in_progress');
    assert.deepEqual(created.response.output, []);
    assert.equal(created.response.model, 'llama3');
    assert.equal(inProgress.response.id, created.response.id);
    assert.equal(inProgress.response.status, 'in_progress');
    assert.equal(added.output_index, 0);
    assert.equal(added.item.type, 'message');
    assert.equal(added.item.role, 'assistant');
    assert.equal(added.item.status, 'in_progress');
    assert.deepEqual(added.item.content, []);
    const itemId = added.item.id;
    assert.ok(itemId);
    assert.equal(partAdded.part.type, 'output_text');
    assert.equal(partAdded.part.text, '');
    assert.deepEqual(partAdded.part.annotations, []);
    for (const e of events.slice(3, -1)) {
      assert.equal(e.item_id ?? e.item?.id, itemId, `${e.type} names the item`);
      assert.equal(e.output_index, 0);
    }

    const text = deltas.map((d) => d.delta).join('');
    assert.equal(text, 'Fixture reply to: stream me a reply');
    const textDone = events.at(-4);
    const partDone = events.at(-3);
    const itemDone = events.at(-2);
    const completed = events.at(-1);
    assert.equal(textDone.text, text);
    assert.equal(partDone.part.text, text);
    assert.equal(itemDone.item.status, 'completed');
    assert.equal(itemDone.item.content[0].text, text);
    assert.equal(completed.response.id, created.response.id);
    assert.equal(completed.response.status, 'completed');
    assert.deepEqual(completed.response.output, [itemDone.item]);
    assert.equal(textOf(completed.response), text);
    assert.equal(completed.response.usage.input_tokens, 4);
    assert.equal(completed.response.usage.output_tokens, words(text));
    assert.equal(completed.response.usage.total_tokens, 4 + words(text));

    // Stored as streamed.
    const again = await alice.responses.retrieve(created.response.id);
    assert.equal(again.status, 'completed');
    assert.equal(again.output_text, text);
  });

  test('on the wire, each streamed event is named by an event: line matching its type', T, async () => {
    const res = await fetch(stack.url('model-gw', '/v1/responses'), {
      method: 'POST',
      headers: { authorization: `Bearer ${aliceKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llama3', input: 'raw events', stream: true }),
      signal: AbortSignal.timeout(SDK_TIMEOUT_MS),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    const events = parseSSE(await res.text()).filter((e) => e.data !== '[DONE]');
    assert.ok(events.length >= 8);
    for (const e of events) assert.equal(e.event, JSON.parse(e.data).type);
    assert.equal(events.at(-1).event, 'response.completed');
  });

  test('client.responses.stream(): text events and finalResponse()', T, async () => {
    const s = alice.responses.stream({ model: 'llama3', input: 'use the helper' });
    let text = '';
    s.on('response.output_text.delta', (e) => (text += e.delta));
    const final = await s.finalResponse();
    assert.equal(final.status, 'completed');
    assert.equal(textOf(final), 'Fixture reply to: use the helper');
    assert.equal(text, textOf(final));
    assert.match(final.id, /^resp_/);
  });

  test('a streamed response cut by max_output_tokens ends with response.incomplete', T, async () => {
    const input = Array.from({ length: 20 }, (_, i) => `x${i}`).join(' ');
    const events = await collect(await alice.responses.create({ model: 'llama3', input, max_output_tokens: 16, stream: true }));
    const last = events.at(-1);
    assert.equal(last.type, 'response.incomplete');
    assert.equal(last.response.status, 'incomplete');
    assert.deepEqual(last.response.incomplete_details, { reason: 'max_output_tokens' });
    assert.ok(!events.some((e) => e.type === 'response.completed'));
    const text = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
    assert.equal(words(text), 16);
    assert.equal(textOf(last.response), text);
  });

  test('previous_response_id continues a conversation: the whole history reaches the upstream', T, async () => {
    const r1 = await alice.responses.create({ model: 'llama3', input: 'one two three' });
    const r2 = await alice.responses.create({ model: 'llama3', previous_response_id: r1.id, input: 'second' });
    assert.equal(r2.output_text, 'Fixture reply to: second', 'the last user message is quoted');
    assert.equal(r2.previous_response_id, r1.id);
    // The fixture counts the words of every message: r1's input and output, then r2's input.
    assert.equal(r2.usage.input_tokens, r1.usage.input_tokens + r1.usage.output_tokens + 1);
    const r3 = await alice.responses.create({ model: 'llama3', previous_response_id: r2.id, input: [{ role: 'user', content: 'third turn now' }] });
    assert.equal(r3.output_text, 'Fixture reply to: third turn now');
    assert.equal(r3.usage.input_tokens, r2.usage.input_tokens + r2.usage.output_tokens + 3);
    assert.ok(r1.usage.input_tokens < r2.usage.input_tokens && r2.usage.input_tokens < r3.usage.input_tokens);

    // A branch from r1 carries r1's history, not r2's.
    const branch = await alice.responses.create({ model: 'llama3', previous_response_id: r1.id, input: 'other way' });
    assert.equal(branch.usage.input_tokens, r1.usage.input_tokens + r1.usage.output_tokens + 2);

    // A streamed continuation too.
    const events = await collect(await alice.responses.create({ model: 'llama3', previous_response_id: r3.id, input: 'fourth', stream: true }));
    const done = events.at(-1);
    assert.equal(done.type, 'response.completed');
    assert.equal(done.response.previous_response_id, r3.id);
    assert.equal(done.response.usage.input_tokens, r3.usage.input_tokens + r3.usage.output_tokens + 1);
  });

  test("instructions of the response continued are not carried over", T, async () => {
    const r1 = await alice.responses.create({ model: 'llama3', instructions: 'Answer in French please', input: 'hello' });
    assert.equal(r1.usage.input_tokens, 5);
    const r2 = await alice.responses.create({ model: 'llama3', previous_response_id: r1.id, input: 'again' });
    assert.equal(r2.instructions, null);
    assert.equal(r2.usage.input_tokens, 1 + r1.usage.output_tokens + 1, 'r1 input + r1 output + r2 input, no instructions');
  });

  test('without storage, the client replays earlier output items as input', T, async () => {
    const r1 = await alice.responses.create({ model: 'llama3', input: 'alpha beta', store: false });
    assert.equal(r1.store, false);
    const r2 = await alice.responses.create({
      model: 'llama3',
      store: false,
      input: [{ role: 'user', content: 'alpha beta' }, ...r1.output, { role: 'user', content: 'gamma' }],
    });
    assert.equal(r2.output_text, 'Fixture reply to: gamma');
    assert.equal(r2.usage.input_tokens, 2 + r1.usage.output_tokens + 1);
  });

  test('function calling: a function_call item, then its output via previous_response_id', T, async () => {
    const r1 = await alice.responses.create({ model: 'llama3', input: 'What is the weather in Oslo?', tools: [WEATHER] });
    assert.equal(r1.status, 'completed');
    assert.equal(r1.output.length, 1);
    const call = r1.output[0];
    assert.equal(call.type, 'function_call');
    assert.equal(call.name, 'get_weather');
    assert.ok(call.call_id, 'a call_id');
    assert.ok(call.id, 'an item id');
    assert.equal(typeof call.arguments, 'string');
    assert.deepEqual(JSON.parse(call.arguments), { city: 'fixture' });
    assert.equal(r1.output_text, '');
    assert.equal(r1.tools.length, 1);
    assert.equal(r1.tools[0].name, 'get_weather');

    const r2 = await alice.responses.create({
      model: 'llama3',
      previous_response_id: r1.id,
      input: [{ type: 'function_call_output', call_id: call.call_id, output: '{"temp":20}' }],
      tools: [WEATHER],
    });
    assert.equal(r2.status, 'completed');
    assert.equal(r2.output[0].type, 'message');
    assert.equal(r2.output_text, 'Tool result received: {"temp":20}');
    // user question + the assistant's call (no text) + the tool's one-word output
    assert.equal(r2.usage.input_tokens, r1.usage.input_tokens + 1);

    // Stateless: the call and its output given back as items.
    const r3 = await alice.responses.create({
      model: 'llama3',
      store: false,
      input: [{ role: 'user', content: 'What is the weather in Oslo?' }, call, { type: 'function_call_output', call_id: call.call_id, output: '{"temp":21}' }],
      tools: [WEATHER],
    });
    assert.equal(r3.output_text, 'Tool result received: {"temp":21}');
  });

  test('tool_choice and parallel_tool_calls decide which functions are called', T, async () => {
    const input = 'weather and time please';
    const both = await alice.responses.create({ model: 'llama3', input, tools: [WEATHER, TIME] });
    assert.deepEqual(both.output.map((i) => [i.type, i.name]), [['function_call', 'get_weather'], ['function_call', 'get_time']]);
    assert.notEqual(both.output[0].call_id, both.output[1].call_id);
    assert.deepEqual(JSON.parse(both.output[1].arguments), { tz: 'UTC' });

    const one = await alice.responses.create({ model: 'llama3', input, tools: [WEATHER, TIME], parallel_tool_calls: false });
    assert.deepEqual(one.output.map((i) => i.name), ['get_weather']);
    assert.equal(one.parallel_tool_calls, false);

    const named = await alice.responses.create({ model: 'llama3', input, tools: [WEATHER, TIME], tool_choice: { type: 'function', name: 'get_time' } });
    assert.deepEqual(named.output.map((i) => i.name), ['get_time']);

    const none = await alice.responses.create({ model: 'llama3', input, tools: [WEATHER, TIME], tool_choice: 'none' });
    assert.equal(none.output_text, `Fixture reply to: ${input}`);
  });

  test('streamed function calls: argument deltas add up to the done arguments and the final items', T, async () => {
    const events = await collect(await alice.responses.create({ model: 'llama3', input: 'weather and time', tools: [WEATHER, TIME], stream: true }));
    const types = events.map((e) => e.type);
    assert.equal(types[0], 'response.created');
    assert.equal(types.at(-1), 'response.completed');
    events.forEach((e, i) => assert.equal(e.sequence_number, i));
    const final = events.at(-1).response;
    assert.equal(final.output.length, 2);
    for (const [index, name, args] of [[0, 'get_weather', { city: 'fixture' }], [1, 'get_time', { tz: 'UTC' }]]) {
      const added = events.find((e) => e.type === 'response.output_item.added' && e.output_index === index);
      assert.equal(added.item.type, 'function_call');
      assert.equal(added.item.name, name);
      assert.equal(added.item.arguments, '');
      assert.ok(added.item.call_id);
      const deltas = events.filter((e) => e.type === 'response.function_call_arguments.delta' && e.output_index === index);
      assert.ok(deltas.length >= 2, `${name}'s arguments came in fragments`);
      for (const d of deltas) assert.equal(d.item_id, added.item.id);
      const done = events.find((e) => e.type === 'response.function_call_arguments.done' && e.output_index === index);
      assert.equal(done.item_id, added.item.id);
      assert.equal(deltas.map((d) => d.delta).join(''), done.arguments);
      assert.deepEqual(JSON.parse(done.arguments), args);
      const itemDone = events.find((e) => e.type === 'response.output_item.done' && e.output_index === index);
      assert.equal(itemDone.item.arguments, done.arguments);
      assert.equal(itemDone.item.status, 'completed');
      assert.deepEqual(final.output[index], itemDone.item);
    }
    // One item at a time: the first closes before the second opens.
    const doneFirst = events.findIndex((e) => e.type === 'response.output_item.done' && e.output_index === 0);
    const addSecond = events.findIndex((e) => e.type === 'response.output_item.added' && e.output_index === 1);
    assert.ok(doneFirst >= 0 && doneFirst < addSecond, types.join(', '));

    // The SDK's stream helper assembles the same.
    const s = alice.responses.stream({ model: 'llama3', input: 'weather', tools: [WEATHER] });
    const helperFinal = await s.finalResponse();
    assert.equal(helperFinal.output[0].type, 'function_call');
    assert.deepEqual(JSON.parse(helperFinal.output[0].arguments), { city: 'fixture' });
  });

  test('retrieve, inputItems.list and delete', T, async () => {
    const r = await alice.responses.create({
      model: 'llama3',
      input: [
        { role: 'user', content: 'first part' },
        { role: 'user', content: [{ type: 'input_text', text: 'second part' }] },
      ],
    });
    const got = await alice.responses.retrieve(r.id);
    assert.deepEqual(plain(got), plain(r), 'retrieve returns the Response as created');
    assert.equal(got.output_text, 'Fixture reply to: second part');

    const page = await alice.responses.inputItems.list(r.id, { order: 'asc' });
    assert.equal(page.body.object, 'list');
    assert.equal(page.body.has_more, false);
    assert.equal(page.data.length, 2);
    for (const item of page.data) {
      assert.ok(typeof item.id === 'string' && item.id.length > 0, 'every input item has an id');
      assert.equal(item.type, 'message');
      assert.equal(item.role, 'user');
      assert.ok(Array.isArray(item.content), 'content as parts');
    }
    assert.deepEqual(page.data.map((i) => i.content.map((c) => c.text).join(' ')), ['first part', 'second part']);
    assert.deepEqual(page.data.map((i) => i.content[0].type), ['input_text', 'input_text']);
    assert.equal(page.body.first_id, page.data[0].id);
    assert.equal(page.body.last_id, page.data[1].id);
    const desc = await alice.responses.inputItems.list(r.id, { order: 'desc' });
    assert.deepEqual(desc.data.map((i) => i.id), page.data.map((i) => i.id).reverse());
    const byDefault = await alice.responses.inputItems.list(r.id);
    assert.deepEqual(byDefault.data.map((i) => i.id), desc.data.map((i) => i.id), 'desc is the default order');

    // A continued response lists only its own input.
    const r2 = await alice.responses.create({ model: 'llama3', previous_response_id: r.id, input: 'follow up' });
    const own = await alice.responses.inputItems.list(r2.id);
    assert.deepEqual(own.data.map((i) => i.content.map((c) => c.text).join(' ')), ['follow up']);

    await alice.responses.delete(r.id);
    for (const call of [() => alice.responses.retrieve(r.id), () => alice.responses.delete(r.id), () => alice.responses.inputItems.list(r.id)]) {
      const e = await failure(call());
      assert.ok(e instanceof OpenAI.NotFoundError, `${e.status} ${e.message}`);
      assert.equal(e.status, 404);
      assert.match(e.message, new RegExp(r.id));
    }
    assert.equal((await alice.responses.retrieve(r2.id)).id, r2.id, 'deleting one response leaves the next');
  });

  test('inputItems.list pages with limit and after', T, async () => {
    const input = ['a one', 'b two', 'c three'].map((content) => ({ role: 'user', content }));
    const r = await alice.responses.create({ model: 'llama3', input });
    const first = await alice.responses.inputItems.list(r.id, { order: 'asc', limit: 2 });
    assert.equal(first.data.length, 2);
    assert.equal(first.body.has_more, true);
    assert.ok(first.hasNextPage());
    const second = await first.getNextPage();
    assert.equal(second.data.length, 1);
    assert.equal(second.body.has_more, false);
    assert.deepEqual([...first.data, ...second.data].map((i) => i.content[0].text), ['a one', 'b two', 'c three']);
  });

  test('store: false is not kept: retrieve is 404 and it cannot be continued', T, async () => {
    const r = await alice.responses.create({ model: 'llama3', input: 'forget me', store: false });
    assert.equal(r.status, 'completed');
    assert.equal(r.store, false);
    const e = await failure(alice.responses.retrieve(r.id));
    assert.ok(e instanceof OpenAI.NotFoundError);
    const cont = await failure(alice.responses.create({ model: 'llama3', previous_response_id: r.id, input: 'next' }));
    assert.ok([400, 404].includes(cont.status), `${cont.status} ${cont.message}`);
    assert.match(cont.message, new RegExp(r.id));
    if (cont.status === 400) assert.equal(cont.param, 'previous_response_id');
  });

  test("another principal cannot see, continue or delete a response: it reads as one that never existed", T, async () => {
    const r = await alice.responses.create({ model: 'llama3', input: 'private words' });
    const ghost = 'resp_0123456789abcdef0123456789abcdef';
    const same = async (mk) => {
      const theirs = await failure(mk(r.id));
      const none = await failure(mk(ghost));
      assert.equal(theirs.status, none.status);
      assert.equal(theirs.code, none.code);
      assert.equal(theirs.type, none.type);
      assert.equal(theirs.message.replaceAll(r.id, ghost), none.message, 'the same answer as for an unknown id');
      return theirs;
    };
    for (const mk of [(id) => bob.responses.retrieve(id), (id) => bob.responses.delete(id), (id) => bob.responses.inputItems.list(id)]) {
      const e = await same(mk);
      assert.ok(e instanceof OpenAI.NotFoundError, `${e.status} ${e.message}`);
    }
    const cont = await same((id) => bob.responses.create({ model: 'llama3', previous_response_id: id, input: 'steal' }));
    assert.ok([400, 404].includes(cont.status), `${cont.status} ${cont.message}`);
    const still = await alice.responses.retrieve(r.id);
    assert.equal(still.output_text, 'Fixture reply to: private words', "bob's delete did nothing");
  });

  test('invalid requests are BadRequestError naming the parameter; a model the caller may not use is NotFoundError', T, async () => {
    const bad = async (body, param, message) => {
      const e = await failure(alice.responses.create({ model: 'llama3', input: 'x', ...body }));
      assert.ok(e instanceof OpenAI.BadRequestError, `${JSON.stringify(body)}: ${e.status} ${e.message}`);
      assert.equal(e.status, 400);
      assert.equal(e.type, 'invalid_request_error');
      if (param instanceof RegExp) assert.match(e.param ?? '', param, `param of ${JSON.stringify(body)}`);
      else assert.equal(e.param, param, `param of ${JSON.stringify(body)}`);
      assert.match(e.message, message);
      assert.ok(e.requestID, 'x-request-id is on the error');
    };
    await bad({ tools: [{ type: 'web_search' }] }, /^tools\[0\]/, /web_search/);
    await bad({ tools: [WEATHER, { type: 'file_search', vector_store_ids: ['vs_1'] }] }, /^tools\[1\]/, /file_search/);
    await bad({ temperature: 5 }, 'temperature', /temperature/);
    await bad({ background: true }, 'background', /background/);
    await bad({ input: [{ role: 'user', content: 'hi' }, { type: 'function_call_output', call_id: 'call_nope', output: 'x' }] }, /^input/, /call_nope/);
    await bad({ tools: [WEATHER], tool_choice: { type: 'function', name: 'get_wether' } }, /^tool_choice/, /get_wether/);

    const r1 = await alice.responses.create({ model: 'llama3', input: 'weather?', tools: [WEATHER] });
    await bad({ previous_response_id: r1.id, input: [{ type: 'function_call_output', call_id: 'call_elsewhere', output: 'x' }], tools: [WEATHER] }, /^input/, /call_elsewhere/);

    for (const model of ['secret-model', 'no-such-model']) {
      const e = await failure(alice.responses.create({ model, input: 'x' }));
      assert.ok(e instanceof OpenAI.NotFoundError, `${model}: ${e.status} ${e.message}`);
      assert.equal(e.code, 'model_not_found');
    }
    const unknown = await failure(alice.responses.retrieve('resp_doesnotexist'));
    assert.ok(unknown instanceof OpenAI.NotFoundError);
    const cont = await failure(alice.responses.create({ model: 'llama3', previous_response_id: 'resp_doesnotexist', input: 'x' }));
    assert.ok([400, 404].includes(cont.status));
    assert.match(cont.message, /resp_doesnotexist/);

    const noAuth = new OpenAI({ apiKey: 'tp_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', baseURL: stack.url('model-gw', '/v1'), maxRetries: 0, timeout: SDK_TIMEOUT_MS });
    const e = await failure(noAuth.responses.create({ model: 'llama3', input: 'x' }));
    assert.ok(e instanceof OpenAI.AuthenticationError);
  });

  test('a principal over its rate limit gets RateLimitError with Retry-After', T, async () => {
    const dave = sdk(stack, newKey(stack, 'dave'));
    await dave.responses.create({ model: 'llama3', input: 'x' });
    const e = await failure(dave.responses.create({ model: 'llama3', input: 'x' }));
    assert.ok(e instanceof OpenAI.RateLimitError, `${e.status} ${e.message}`);
    assert.ok(Number(e.headers.get('retry-after')) >= 1);
  });

  test('text.format, truncation and input_image parts are accepted and echoed', T, async () => {
    const format = { type: 'json_schema', name: 'answer', schema: { type: 'object', properties: { a: { type: 'string' } }, required: ['a'] }, strict: true };
    const png = 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';
    const r = await alice.responses.create({
      model: 'llama3',
      text: { format },
      truncation: 'disabled',
      input: [{ role: 'user', content: [{ type: 'input_image', image_url: png, detail: 'auto' }, { type: 'input_text', text: 'what is this' }] }],
    });
    assert.equal(r.status, 'completed');
    assert.equal(r.output_text, 'Fixture reply to: what is this');
    assert.equal(r.text.format.type, 'json_schema');
    assert.equal(r.text.format.name, 'answer');
    assert.equal(r.truncation, 'disabled');
  });

  test('usage is recorded for a response like for a chat completion', T, async () => {
    const { data: r, response } = await alice.responses.create({ model: 'llama3', input: 'count me in' }).withResponse();
    const id = response.headers.get('x-request-id');
    assert.ok(id, 'x-request-id');
    const row = await eventually(() => stack.sql(`SELECT principal_id, resource, input_tokens, output_tokens, status FROM usage WHERE request_id = '${id}'`));
    assert.equal(row, `alice|llama3|${r.usage.input_tokens}|${r.usage.output_tokens}|200`);

    // Streamed: the usage the upstream reported at the end of its stream.
    const { data: stream, response: head } = await alice.responses.create({ model: 'llama3', input: 'count me in too', stream: true }).withResponse();
    const events = await collect(stream);
    const { usage } = events.at(-1).response;
    const sid = head.headers.get('x-request-id');
    assert.ok(sid, 'x-request-id');
    const srow = await eventually(() => stack.sql(`SELECT principal_id, resource, input_tokens, output_tokens, status FROM usage WHERE request_id = '${sid}'`));
    assert.equal(srow, `alice|llama3|${usage.input_tokens}|${usage.output_tokens}|200`);
    assert.equal(usage.input_tokens, 4);
  });

  test('a slow upstream streams: text events arrive as the upstream produces them', T, async () => {
    const input = 'one two three four five six';
    const stream = await alice.responses.create({ model: 'slow', input, stream: true });
    let first = null;
    let text = '';
    let last = null;
    for await (const e of stream) {
      if (e.type === 'response.output_text.delta') {
        first ??= Date.now();
        text += e.delta;
      }
      last = e;
    }
    const spread = Date.now() - first;
    assert.equal(text, `Fixture reply to: ${input}`);
    assert.equal(last.type, 'response.completed');
    // 9 words, 60 ms apart upstream: the first delta came long before the end.
    assert.ok(spread >= 250, `deltas spread over ${spread} ms`);
  });

  test('an upstream stream that breaks ends with response.failed, keeping the output so far', T, async () => {
    const events = await collect(await alice.responses.create({ model: 'flaky', input: 'one two three four five six seven', stream: true }));
    const types = events.map((e) => e.type);
    assert.equal(types[0], 'response.created');
    assert.equal(types.at(-1), 'response.failed', types.join(', '));
    assert.ok(!types.includes('response.completed'));
    events.forEach((e, i) => assert.equal(e.sequence_number, i));
    const failed = events.at(-1).response;
    assert.equal(failed.status, 'failed');
    assert.ok(failed.error && failed.error.code && failed.error.message, JSON.stringify(failed.error));
    const text = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
    assert.ok(text.length > 0, 'some text arrived before the break');
    assert.ok('Fixture reply to: one two three four five six seven'.startsWith(text));
    assert.equal(textOf(failed), text);

    // Stored as it ended.
    const stored = await alice.responses.retrieve(failed.id);
    assert.equal(stored.status, 'failed');
    assert.deepEqual(stored.error, failed.error);
  });

  test('a principal killed while its response streams gets response.failed saying it is suspended', T, async () => {
    const erin = sdk(stack, newKey(stack, 'erin'));
    const stream = await erin.responses.create({ model: 'slow', input: 'one two three four five six seven eight nine ten', stream: true });
    const events = [];
    for await (const e of stream) {
      events.push(e);
      if (events.length === 5) stack.sql("INSERT INTO kills (target_kind, target, reason, created_by, created_at_ms) VALUES ('principal', 'erin', 'drill', 'e2e', 1)");
      assert.ok(events.length < 100);
    }
    const last = events.at(-1);
    assert.equal(last.type, 'response.failed', events.map((e) => e.type).join(', '));
    assert.equal(last.response.error.code, 'suspended');
    assert.match(last.response.error.message, /erin.*suspended/);
    assert.ok(!events.some((e) => e.type === 'response.completed'));
    const e = await failure(erin.responses.create({ model: 'llama3', input: 'x' }));
    assert.ok(e instanceof OpenAI.PermissionDeniedError, `${e.status} ${e.message}`);
  });

  test('an upstream that fails before answering is a 502, streamed or not', T, async () => {
    const whole = await failure(alice.responses.create({ model: 'broken', input: 'x' }));
    assert.ok(whole instanceof OpenAI.InternalServerError, `${whole.status} ${whole.message}`);
    assert.equal(whole.status, 502);
    const streamed = await failure(alice.responses.create({ model: 'broken', input: 'x', stream: true }).then(collect));
    assert.equal(streamed.status, 502, `${streamed.status} ${streamed.message}`);
  });
});

describe('stored responses with gwctl', () => {
  let fixture;
  let stack;
  let carol;
  let alice;
  before(async () => {
    fixture = await startFixture(['--model', 'meta-llama-3-8b']);
    stack = await Stack.start({
      daemons: ['model-gw'],
      extra: {
        model_gw: ['models:', '  - name: llama3', `    deployments: [{url: "${fixture.url}/v1", model: meta-llama-3-8b}]`],
      },
    });
    assert.equal(stack.gwctl('apply', '-f', policyFile(stack)).status, 0);
    carol = sdk(stack, newKey(stack, 'carol'));
    alice = sdk(stack, newKey(stack, 'alice'));
  });
  after(async () => {
    const results = await stack.close();
    await fixture.stop();
    assert.equal(results['model-gw'].code, 0, stack.daemons['model-gw'].tail());
    assert.deepEqual(stack.daemons['model-gw'].sanitizerReports(), []);
  });

  test('responses list, show, delete and purge', T, async () => {
    const since = Date.now();
    const r1 = await carol.responses.create({ model: 'llama3', input: 'carol one' });
    const r2 = await carol.responses.create({ model: 'llama3', previous_response_id: r1.id, input: 'carol two' });
    const r3 = await carol.responses.create({ model: 'llama3', input: 'carol unstored', store: false });
    const a1 = await alice.responses.create({ model: 'llama3', input: 'alice one' });

    // Stored through the store's batching writer: it shows up shortly.
    const rows = await eventually(() => {
      const list = gwctlJSON(stack, 'responses', 'list', '--principal', 'carol');
      return list.length >= 2 && list;
    }, 5000);
    assert.ok(rows, 'carol has two stored responses');
    assert.deepEqual(rows.map((x) => x.id).sort(), [r1.id, r2.id].sort(), `${r3.id} (store: false) is not listed`);
    for (const row of rows) {
      assert.equal(row.principal, 'carol');
      assert.equal(row.model, 'llama3');
      assert.equal(row.status, 'completed');
      assert.ok(row.created_ms >= since - 1000 && row.created_ms <= Date.now() + 1000, `created_ms ${row.created_ms}`);
      assert.ok('expires_ms' in row);
    }
    assert.equal(rows.find((x) => x.id === r2.id).previous_id, r1.id);
    assert.equal(rows.find((x) => x.id === r1.id).previous_id, null);

    assert.equal(gwctlJSON(stack, 'responses', 'list', '--principal', 'carol', '--limit', '1').length, 1);
    assert.deepEqual(gwctlJSON(stack, 'responses', 'list', '--principal', 'carol', '--model', 'other'), []);
    const alices = await eventually(() => gwctlJSON(stack, 'responses', 'list', '--principal', 'alice').find((x) => x.id === a1.id));
    assert.ok(alices, "alice's response is listed under alice");
    assert.ok(!gwctlJSON(stack, 'responses', 'list', '--principal', 'alice').some((x) => x.principal !== 'alice'));
    const table = stack.gwctl('responses', 'list', '--principal', 'carol');
    assert.equal(table.status, 0, table.stderr);
    assert.match(table.stdout, new RegExp(r1.id));
    assert.match(table.stdout, new RegExp(r2.id));

    const shown = gwctlJSON(stack, 'responses', 'show', r2.id);
    assert.equal(shown.id, r2.id);
    assert.equal(shown.principal, 'carol');
    assert.equal(shown.previous_id, r1.id);
    assert.equal(shown.status, 'completed');
    assert.equal(shown.response.id, r2.id);
    assert.deepEqual(shown.response.output, plain(r2).output, 'the Response as the client got it');
    assert.deepEqual(shown.response.usage, r2.usage);
    assert.equal(shown.input_items.length, 1);
    assert.equal(shown.input_items[0].role, 'user');
    assert.match(JSON.stringify(shown.input_items[0].content), /carol two/);
    const missing = stack.gwctl('responses', 'show', 'resp_doesnotexist');
    assert.notEqual(missing.status, 0, 'show of an unknown id fails');

    const del = stack.gwctl('responses', 'delete', r1.id);
    assert.equal(del.status, 0, del.stderr);
    const gone = await eventually(async () => (await statusOf(carol.responses.retrieve(r1.id))) === 404, 5000);
    assert.ok(gone, 'a response deleted with gwctl is gone for the gateway');
    assert.ok(!gwctlJSON(stack, 'responses', 'list', '--principal', 'carol').some((x) => x.id === r1.id));

    const purge = stack.gwctl('responses', 'purge', '--principal', 'carol');
    assert.equal(purge.status, 0, purge.stderr);
    assert.match(purge.stdout, /\b1\b/, `purge reports the count: ${purge.stdout}`);
    assert.deepEqual(gwctlJSON(stack, 'responses', 'list', '--principal', 'carol'), []);
    const purged = await eventually(async () => (await statusOf(carol.responses.retrieve(r2.id))) === 404, 5000);
    assert.ok(purged, 'a purged response is gone for the gateway');
    assert.equal((await alice.responses.retrieve(a1.id)).id, a1.id, "alice's responses are not purged with carol's");
  });
});

describe('stored responses survive a restart of model-gw', () => {
  let fixture;
  let stack;
  let key;
  before(async () => {
    fixture = await startFixture(['--model', 'meta-llama-3-8b']);
    stack = await Stack.start({
      daemons: ['model-gw'],
      extra: {
        model_gw: ['models:', '  - name: llama3', `    deployments: [{url: "${fixture.url}/v1", model: meta-llama-3-8b}]`],
      },
    });
    assert.equal(stack.gwctl('apply', '-f', policyFile(stack)).status, 0);
    key = newKey(stack, 'alice');
  });
  after(async () => {
    const results = await stack.close();
    await fixture.stop();
    assert.equal(results['model-gw'].code, 0, stack.daemons['model-gw'].tail());
    assert.deepEqual(stack.daemons['model-gw'].sanitizerReports(), []);
  });

  test('retrieve and continue a response after a restart; a deletion holds', T, async () => {
    const before = sdk(stack, key);
    const r1 = await before.responses.create({ model: 'llama3', input: 'remember this' });
    const doomed = await before.responses.create({ model: 'llama3', input: 'delete this' });
    await before.responses.delete(doomed.id);
    // Stopped right away: what the client was told is stored must be on disk by the time
    // model-gw exits.
    const exit = await stack.daemons['model-gw'].stop();
    assert.equal(exit.code, 0, stack.daemons['model-gw'].tail());
    await stack.restart('model-gw');
    const client = sdk(stack, key);

    const got = await client.responses.retrieve(r1.id);
    assert.deepEqual(plain(got), plain(r1));
    const items = await client.responses.inputItems.list(r1.id);
    assert.deepEqual(items.data.map((i) => i.content.map((c) => c.text).join(' ')), ['remember this']);
    const r2 = await client.responses.create({ model: 'llama3', previous_response_id: r1.id, input: 'and now' });
    assert.equal(r2.output_text, 'Fixture reply to: and now');
    assert.equal(r2.usage.input_tokens, r1.usage.input_tokens + r1.usage.output_tokens + 2, 'the history came from the store');
    const e = await failure(client.responses.retrieve(doomed.id));
    assert.ok(e instanceof OpenAI.NotFoundError, 'a response deleted before the restart stays deleted');
  });
});

describe('stored responses without the memory cache (response_cache_bytes: 0)', () => {
  let fixture;
  let stack;
  let client;
  before(async () => {
    fixture = await startFixture(['--model', 'meta-llama-3-8b']);
    stack = await Stack.start({
      daemons: ['model-gw'],
      extra: {
        model_gw: ['response_cache_bytes: 0', 'models:', '  - name: llama3', `    deployments: [{url: "${fixture.url}/v1", model: meta-llama-3-8b}]`],
      },
    });
    assert.equal(stack.gwctl('apply', '-f', policyFile(stack)).status, 0);
    client = sdk(stack, newKey(stack, 'alice'));
  });
  after(async () => {
    const results = await stack.close();
    await fixture.stop();
    assert.equal(results['model-gw'].code, 0, stack.daemons['model-gw'].tail());
    assert.deepEqual(stack.daemons['model-gw'].sanitizerReports(), []);
  });

  test('every turn of a conversation is read back from the store, at once and in full', T, async () => {
    let prev = null;
    for (let turn = 0; turn < 6; turn++) {
      const r = await client.responses.create({ model: 'llama3', input: `turn ${turn}`, ...(prev ? { previous_response_id: prev.id } : {}) });
      assert.equal(r.output_text, `Fixture reply to: turn ${turn}`);
      const expected = prev ? prev.usage.input_tokens + prev.usage.output_tokens + 2 : 2;
      assert.equal(r.usage.input_tokens, expected, `turn ${turn} carried the whole history`);
      // Retrieved right away, before the store's writer need have committed it.
      assert.equal((await client.responses.retrieve(r.id)).id, r.id);
      prev = r;
    }
    const metrics = await (await fetch(stack.url('model-gw', '/metrics'), { signal: AbortSignal.timeout(SDK_TIMEOUT_MS) })).text();
    const loads = Number(metrics.match(/^triplane_model_response_loads_total\{source="store"\} (\d+)/m)?.[1] ?? NaN);
    assert.ok(loads >= 5, `continuations read the store: ${loads}`);
    assert.match(metrics, /^triplane_model_response_cache_bytes 0$/m);
  });
});
