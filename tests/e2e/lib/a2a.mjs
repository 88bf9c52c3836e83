// A2A helpers for end-to-end tests: both @a2a-js/sdk versions pinned in tests/e2e/package.json
// (0.3.x as the npm alias `a2a-sdk-v03`, for the A2A v0.3 wire format; 1.x as `@a2a-js/sdk`, for
// v1.0), the agents fixture (tests/fixtures/a2a-agents.mjs), and a common view of what either
// SDK's client returns, so that one test body can run against both protocol versions.
//
//   import { startA2AAgents, a2aClient, sendText, streamText, view } from './lib/a2a.mjs';
//   const agents = await startA2AAgents({ sdk: 'v10' });         // echo, slow, asker, delegator
//   const c = await a2aClient('v10', agents.url('echo'), { headers: { Authorization: 'Bearer k' } });
//   const r = view('v10', await sendText(c, 'v10', 'hello'));     // {kind: 'message', text: 'echo: hello', ...}
//   for await (const ev of streamText(c, 'v10', 'chunks=3')) view('v10', ev);
//   await agents.stop();
//
// `sdk` is 'v03' or 'v10' throughout. view() turns an SDK result or stream event into
// {kind: 'message'|'task'|'status'|'artifact', taskId, contextId, state, final, text, raw}, where
// state is the v0.3 spelling ('submitted', 'working', 'input-required', 'completed', 'canceled',
// 'failed', 'rejected', 'auth-required', 'unknown') for both versions, and final is the v0.3
// `final` flag, or for v1.0 (no such field) whether the state ends the stream (terminal or
// input-required).
//
// The SDK modules are imported here, under tests/e2e, so that the fixture (which lives in
// tests/fixtures) can load them through sdkModules() too.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const AGENTS_FIXTURE = path.resolve(here, '../../fixtures/a2a-agents.mjs');
export const SDKS = ['v03', 'v10'];

// The SDK's modules for a version: {core, client, server, express, expressApp}.
const loaded = new Map();
export async function sdkModules(sdk) {
  if (loaded.has(sdk)) return loaded.get(sdk);
  let p;
  if (sdk === 'v03') {
    p = Promise.all([import('a2a-sdk-v03'), import('a2a-sdk-v03/client'), import('a2a-sdk-v03/server'), import('a2a-sdk-v03/server/express'), import('express')]);
  } else if (sdk === 'v10') {
    p = Promise.all([import('@a2a-js/sdk'), import('@a2a-js/sdk/client'), import('@a2a-js/sdk/server'), import('@a2a-js/sdk/server/express'), import('express')]);
  } else {
    throw new Error(`unknown sdk ${sdk} (v03 or v10)`);
  }
  const m = p.then(([core, client, server, express, expressApp]) => ({ core, client, server, express, expressApp: expressApp.default }));
  loaded.set(sdk, m);
  return m;
}

// A fetch that adds `headers` (an object, or a function returning one) to every request, and
// records what it sent in `log` when given (an array; each entry {url, method, headers}).
export function fetchWithHeaders(headers = {}, { log = null, base = fetch } = {}) {
  return async (input, init = {}) => {
    const h = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
    const extra = typeof headers === 'function' ? await headers() : headers;
    for (const [k, v] of Object.entries(extra ?? {})) if (v !== undefined && v !== null) h.set(k, String(v));
    if (log) log.push({ url: String(input instanceof Request ? input.url : input), method: init.method ?? 'GET', headers: Object.fromEntries(h) });
    return base(input, { ...init, headers: h });
  };
}

// The card base of an agent: a URL ending in '/', so that the SDKs' resolvers find
// BASE/.well-known/agent-card.json (they use new URL('.well-known/agent-card.json', base), which
// drops the last path segment of a base without a trailing slash).
export function cardBase(url) {
  return url.endsWith('/') ? url : `${url}/`;
}

// An SDK client (the transport-agnostic `Client` of the SDK's ClientFactory, JSON-RPC transport)
// for the agent whose card base is `baseUrl`: fetches BASE/.well-known/agent-card.json and then
// posts to the URL the card names. `headers` go on the card fetch and on every call; per-call
// headers go in the second argument of the client's methods: {serviceParameters: {name: value}}.
export async function a2aClient(sdk, baseUrl, { headers = {}, log = null, cardPath } = {}) {
  const { client } = await sdkModules(sdk);
  const fetchImpl = fetchWithHeaders(headers, { log });
  const factory = new client.ClientFactory(
    client.ClientFactoryOptions.createFrom(client.ClientFactoryOptions.default, {
      transports: [new client.JsonRpcTransportFactory({ fetchImpl })],
      cardResolver: new client.DefaultAgentCardResolver({ fetchImpl }),
    }),
  );
  return factory.createFromUrl(cardBase(baseUrl), cardPath);
}

// The user message of a send or stream call, in the SDK's own types.
export function userMessage(sdk, text, { taskId, contextId, messageId = randomUUID() } = {}) {
  if (sdk === 'v03') {
    return { kind: 'message', role: 'user', messageId, parts: [{ kind: 'text', text }], ...(taskId ? { taskId } : {}), ...(contextId ? { contextId } : {}) };
  }
  return {
    messageId,
    role: 1, // ROLE_USER
    parts: [{ content: { $case: 'text', value: text }, mediaType: 'text/plain', filename: '', metadata: undefined }],
    taskId: taskId ?? '',
    contextId: contextId ?? '',
    extensions: [],
    referenceTaskIds: [],
    metadata: undefined,
  };
}

// client.sendMessage with a text message; options: {taskId, contextId, blocking, serviceParameters, signal}.
export function sendText(client, sdk, text, { blocking, serviceParameters, signal, ...ids } = {}) {
  const params = { message: userMessage(sdk, text, ids) };
  if (blocking === false) params.configuration = sdk === 'v03' ? { blocking: false } : { returnImmediately: true };
  return client.sendMessage(params, { serviceParameters, signal });
}

// client.sendMessageStream with a text message: an async iterator of SDK events.
export function streamText(client, sdk, text, { serviceParameters, signal, ...ids } = {}) {
  return client.sendMessageStream({ message: userMessage(sdk, text, ids) }, { serviceParameters, signal });
}

// Task ids go in {id} for both versions' getTask/cancelTask/resubscribeTask.
export const taskParams = (sdk, id) => (sdk === 'v03' ? { id } : { id, tenant: '' });

const V10_STATES = ['unspecified', 'submitted', 'working', 'completed', 'failed', 'canceled', 'input-required', 'rejected', 'auth-required'];
const ENDS_STREAM = new Set(['completed', 'failed', 'canceled', 'rejected', 'input-required']);

// v1.0 state (number, or the TASK_STATE_* string of the JSON form) → v0.3 spelling.
export function stateName(state) {
  if (typeof state === 'number') return V10_STATES[state] ?? 'unknown';
  if (typeof state === 'string' && state.startsWith('TASK_STATE_')) return state.slice('TASK_STATE_'.length).toLowerCase().replace(/_/g, '-');
  return state;
}

// The text of a list of parts, either version (JSON or SDK form), joined with ''.
export function partsText(parts = []) {
  return parts
    .map((p) => (p.kind === 'text' || (p.kind === undefined && typeof p.text === 'string') ? p.text : p.content?.$case === 'text' ? p.content.value : ''))
    .join('');
}

// See the header comment.
export function view(sdk, x) {
  if (sdk === 'v10' && x && x.payload) x = { ...x.payload.value, __case: x.payload.$case };
  const kind = x.kind ?? x.__case ?? ('messageId' in x && 'parts' in x ? 'message' : 'status' in x && 'id' in x ? 'task' : 'artifact' in x ? 'artifact-update' : 'status-update');
  const k = { message: 'message', task: 'task', 'status-update': 'status', statusUpdate: 'status', 'artifact-update': 'artifact', artifactUpdate: 'artifact' }[kind];
  const out = { kind: k, raw: x };
  if (k === 'message') {
    Object.assign(out, { taskId: x.taskId || undefined, contextId: x.contextId || undefined, text: partsText(x.parts), final: true });
  } else if (k === 'task') {
    const state = stateName(x.status?.state);
    const artifacts = (x.artifacts ?? []).map((a) => partsText(a.parts)).join('');
    Object.assign(out, { taskId: x.id, contextId: x.contextId, state, text: partsText(x.status?.message?.parts), artifacts, final: ENDS_STREAM.has(state) });
  } else if (k === 'status') {
    const state = stateName(x.status?.state);
    Object.assign(out, { taskId: x.taskId, contextId: x.contextId, state, text: partsText(x.status?.message?.parts), final: sdk === 'v03' ? Boolean(x.final) : ENDS_STREAM.has(state) });
  } else {
    Object.assign(out, { taskId: x.taskId, contextId: x.contextId, text: partsText(x.artifact?.parts), artifactId: x.artifact?.artifactId, append: Boolean(x.append), lastChunk: Boolean(x.lastChunk), final: false });
  }
  return out;
}

// Collects a stream's events as views; stops early when until(view) is true.
export async function collect(sdk, iterable, { until } = {}) {
  const events = [];
  for await (const ev of iterable) {
    const v = view(sdk, ev);
    events.push(v);
    if (until && until(v)) break;
  }
  return events;
}

// Starts tests/fixtures/a2a-agents.mjs; resolves once it printed `ready`.
//   agents: {name: kind} (default: echo, slow, asker, delegator); gateway: base URL for delegators;
//   keys: {agentName: key} (delegators' outgoing Authorization: Bearer key);
//   requireAuth: {agentName: token} (the agent answers 401 without Authorization: Bearer token).
// Returns {sdk, urls: {name: cardBase}, url(name), proc, stderr(), stop(), and the fixture's
// side endpoints per agent: cancels(name), lastHeaders(name, of = 'rpc'|'card'), requests(name),
// delegations(name), reset(name)}.
export async function startA2AAgents({ sdk, agents, gateway, keys = {}, requireAuth = {}, verbose = false, env = {}, timeoutMs = 15000 } = {}) {
  const args = [AGENTS_FIXTURE, '--sdk', sdk, '--port', '0', '--exit-with-parent'];
  for (const [name, kind] of Object.entries(agents ?? {})) args.push('--agent', `${name}=${kind}`);
  if (gateway) args.push('--gateway', gateway);
  for (const [name, key] of Object.entries(keys)) args.push('--key-for', `${name}=${key}`);
  for (const [name, token] of Object.entries(requireAuth)) args.push('--require-auth', `${name}=${token}`);
  if (verbose) args.push('--verbose');
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  let err = '';
  proc.stderr.setEncoding('utf8').on('data', (d) => (err += d));
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const urls = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => (proc.kill('SIGKILL'), reject(new Error(`a2a-agents did not get ready within ${timeoutMs} ms:\n${err}`))), timeoutMs);
    proc.stdout.setEncoding('utf8').on('data', (d) => {
      out += d;
      if (/^ready$/m.test(out)) {
        clearTimeout(timer);
        const found = {};
        for (const m of out.matchAll(/^agent (\S+) (\S+)$/gm)) found[m[1]] = m[2];
        resolve(found);
      }
    });
    exited.then(({ code, signal }) => (clearTimeout(timer), reject(new Error(`a2a-agents exited (${code ?? signal}) before ready:\n${err}`))));
  });
  const side = async (name, p) => {
    if (!urls[name]) throw new Error(`no agent ${name}`);
    const r = await fetch(new URL(p, urls[name]));
    if (!r.ok) throw new Error(`${p} on ${name}: HTTP ${r.status}`);
    return r.json();
  };
  return {
    sdk,
    urls,
    url: (name) => urls[name],
    proc,
    stderr: () => err,
    cancels: (name) => side(name, '_fixture/cancels'),
    lastHeaders: (name, of = 'rpc') => side(name, `_fixture/last-headers?of=${of}`),
    requests: (name) => side(name, '_fixture/requests'),
    delegations: (name) => side(name, '_fixture/delegations'),
    reset: async (name) => {
      const r = await fetch(new URL('_fixture/reset', urls[name]), { method: 'POST' });
      if (!r.ok) throw new Error(`reset ${name}: HTTP ${r.status}`);
    },
    async stop(signal = 'SIGTERM', waitMs = 10000) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      let timer;
      const r = await Promise.race([exited, new Promise((resolve) => (timer = setTimeout(resolve, waitMs, null)))]);
      clearTimeout(timer);
      if (r === null) {
        proc.kill('SIGKILL');
        throw new Error(`a2a-agents did not exit within ${waitMs} ms of ${signal}`);
      }
      return r;
    },
  };
}
