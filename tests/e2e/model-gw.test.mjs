// model-gw with the official openai SDK: the OpenAI API a client sees, governed by policy.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { Stack } from './lib/stack.mjs';

describe('model-gw: the model catalogue through the openai SDK', () => {
  let stack;
  let client;
  let key;
  before(async () => {
    stack = await Stack.start({
      daemons: ['model-gw'],
      common: ['max_request_size: 64k'],
      extra: {
        model_gw: [
          'models:',
          '  - name: llama3',
          '    deployments: [{url: "http://127.0.0.1:9/v1", model: meta-llama-3-8b}]',
          '  - name: embedder',
          '    kind: embedding',
          '    deployments: [{url: "http://127.0.0.1:9/v1"}]',
          '  - name: secret-model',
          '    deployments: [{url: "http://127.0.0.1:9/v1"}]',
        ],
      },
    });
    const file = path.join(stack.dir, 'p.yaml');
    writeFileSync(file, [
      'principals: [{id: alice, kind: user, team: ml}]',
      'rules:',
      '  - {id: ml-llama, effect: allow, subjects: {teams: [ml]}, plane: model, resources: [llama3, embedder], actions: [chat, embed]}',
      '',
    ].join('\n'));
    assert.equal(stack.gwctl('apply', '-f', file).status, 0);
    ({ key } = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'alice').stdout));
    client = new OpenAI({ apiKey: key, baseURL: stack.url('model-gw', '/v1'), maxRetries: 0 });
  });
  after(async () => {
    const results = await stack.close();
    assert.equal(results['model-gw'].code, 0, stack.daemons['model-gw'].tail());
  });

  test('models.list shows only the models the caller may use', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.deepEqual(ids.sort(), ['embedder', 'llama3']);
  });

  test('models.retrieve finds a permitted model; others are NotFoundError', async () => {
    const m = await client.models.retrieve('llama3');
    assert.equal(m.id, 'llama3');
    assert.equal(m.object, 'model');
    assert.ok(Math.abs(m.created - Date.now() / 1000) < 3600);
    for (const name of ['secret-model', 'no-such-model']) {
      await assert.rejects(client.models.retrieve(name), (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
    }
  });

  test('a bad key is an AuthenticationError in the OpenAI envelope', async () => {
    const bad = new OpenAI({ apiKey: 'tp_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', baseURL: stack.url('model-gw', '/v1'), maxRetries: 0 });
    await assert.rejects(bad.models.list(), (e) => {
      assert.ok(e instanceof OpenAI.AuthenticationError);
      assert.equal(e.status, 401);
      assert.equal(e.type, 'authentication_error');
      assert.ok(e.requestID, 'x-request-id is on the error');
      return true;
    });
  });

  test('a body over max_request_size is a 413 APIError whose body is the OpenAI envelope', async () => {
    const messages = [{ role: 'user', content: 'x'.repeat(80 * 1024) }]; // over 64k, under h2o's own cap
    await assert.rejects(client.chat.completions.create({ model: 'llama3', messages }), (e) => {
      // The SDK has no subclass for 413: the base APIError, with the envelope's fields.
      assert.equal(e.constructor, OpenAI.APIError);
      assert.equal(e.status, 413);
      assert.equal(e.type, 'invalid_request_error');
      assert.equal(e.code, 'request_too_large');
      assert.match(e.message, /larger than the limit of 65536 bytes/);
      assert.ok(e.requestID, 'x-request-id is on the error');
      return true;
    });
    const res = await fetch(stack.url('model-gw', '/v1/chat/completions'), {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'llama3', messages }),
    });
    assert.equal(res.status, 413);
    assert.match(res.headers.get('content-type'), /^application\/json/);
    assert.ok(res.headers.get('x-request-id'));
    const body = await res.json();
    assert.deepEqual(Object.keys(body), ['error']);
    assert.deepEqual(body.error, {
      message: 'the request body is larger than the limit of 65536 bytes',
      type: 'invalid_request_error',
      param: null,
      code: 'request_too_large',
    });
  });
});
