// What the end-to-end tests of the translated model APIs (Responses, Anthropic Messages) share:
// reading an SDK's stream to its end, splitting raw SSE text into events, and catching the error
// a call must end with.
import assert from 'node:assert/strict';

// Every event of an SDK stream (async iterable), at most `max` of them.
export async function collect(stream, max = 2000) {
  const events = [];
  for await (const e of stream) {
    events.push(e);
    assert.ok(events.length < max, 'the stream ends');
  }
  return events;
}

// Raw SSE text as [{event, data}] (event null when the block has no event: line).
export function parseSSE(text) {
  const events = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    let event = null;
    let data = '';
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data += line.slice(5).trimStart();
    }
    if (event !== null || data !== '') events.push({ event, data });
  }
  return events;
}

// Resolves with the error a promise rejects with (fails when it resolves).
export async function failure(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail('expected the request to fail');
}
