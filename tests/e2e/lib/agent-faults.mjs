// Helpers for agent-gw's fault tests (agent-gw-faults.test.mjs): agents that misbehave on
// purpose (raw HTTP, so that they can stall a card, trickle an answer or never answer at all),
// raw JSON-RPC calls, a client that does not read its answer, and an agent-gw whose name
// resolution the test controls (a hosts file of its own, bound over /etc/hosts in a private
// mount namespace), so that a push URL's host can resolve to loopback with no network at all.
import { spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { Daemon, Stack, binary, sleep } from './stack.mjs';

// An agent card of either version whose endpoint is url.
export function rawCard(url, version = '0.3') {
  const common = { name: 'raw', description: 'a misbehaving agent', version: '1', capabilities: { streaming: true, pushNotifications: true }, defaultInputModes: ['text'], defaultOutputModes: ['text'], skills: [] };
  return version === '0.3'
    ? { ...common, protocolVersion: '0.3.0', url, preferredTransport: 'JSONRPC' }
    : { ...common, supportedInterfaces: [{ url, protocolBinding: 'JSONRPC', protocolVersion: '1.0' }] };
}

// An HTTP agent whose every request goes to behaviour(req, res, body, parsed JSON or null).
// `seen` lists the requests that reached it. The card is at /card, JSON-RPC at /rpc.
export async function startRawAgent(behaviour) {
  const seen = [];
  const srv = http.createServer(async (req, res) => {
    let body = '';
    for await (const c of req) body += c;
    let json = null;
    try {
      json = body ? JSON.parse(body) : null;
    } catch {}
    seen.push({ method: req.method, url: req.url, headers: req.headers, body, json });
    try {
      await behaviour(req, res, body, json);
    } catch {
      res.destroy();
    }
  });
  srv.on('connection', (s) => s.on('error', () => {}));
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${srv.address().port}`;
  return {
    url,
    rpcUrl: `${url}/rpc`,
    cardUrl: `${url}/card`,
    seen,
    rpcs: () => seen.filter((s) => s.url.startsWith('/rpc')),
    close: () => {
      srv.closeAllConnections?.();
      return new Promise((r) => srv.close(r));
    },
  };
}

// Answers a JSON-RPC request with result (or an SSE stream when events is an array).
export function answer(res, id, result) {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ jsonrpc: '2.0', id, result }));
}

export const agentMessage = (text) => ({ kind: 'message', role: 'agent', messageId: `m-${Math.random()}`, parts: [{ kind: 'text', text }] });
export const userMessage03 = (text, extra = {}) => ({ kind: 'message', role: 'user', messageId: `u-${Math.random()}`, parts: [{ kind: 'text', text }], ...extra });
export const userMessage10 = (text, extra = {}) => ({ role: 'ROLE_USER', messageId: `u-${Math.random()}`, parts: [{ text }], ...extra });

// One JSON-RPC call through the gateway: {status, type, text, json}.
export async function rpc(gw, agent, key, method, params, { id = 1, version = '0.3', headers = {} } = {}) {
  const res = await fetch(`${gw}/agents/${agent}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      ...(version === '1.0' ? { 'a2a-version': '1.0' } : {}),
      ...headers,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id, method, params }),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, type: res.headers.get('content-type'), text, json };
}

// The JSON of every `data:` line of an SSE text.
export const sseEvents = (text) => text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)));

// An HTTP/1.1 request on a socket of our own: the caller decides when (and whether) to read the
// answer. Resolves nothing; read with readResponse.
export function rawRequest(gw, { method = 'POST', path: p, headers = {}, body = '' }) {
  const u = new URL(gw);
  const s = net.connect(Number(u.port), u.hostname);
  s.on('error', () => {});
  const h = { Host: u.host, 'Content-Length': Buffer.byteLength(body), Connection: 'close', ...headers };
  s.write(`${method} ${p} HTTP/1.1\r\n${Object.entries(h).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n${body}`);
  return s;
}

// Reads a whole HTTP/1.1 response with a Content-Length from socket s: {status, headers, body}.
export function readResponse(s) {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = () => {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return false;
      const head = buf.subarray(0, end).toString('latin1').split('\r\n');
      const headers = Object.fromEntries(head.slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      const len = Number(headers['content-length']);
      if (!(buf.length - end - 4 >= len)) return false;
      resolve({ status: Number(head[0].split(' ')[1]), headers, body: buf.subarray(end + 4, end + 4 + len).toString('utf8') });
      return true;
    };
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (done()) s.destroy();
    });
    s.on('close', () => done() || reject(new Error(`connection closed after ${buf.length} bytes`)));
    s.resume();
  });
}

// Whether this machine lets us give a process a private mount namespace (root, or user namespaces).
export function canUnshareMounts() {
  const r = spawnSync('unshare', ['-m', 'sh', '-c', 'mount --bind /etc/hosts /etc/hosts'], { encoding: 'utf8' });
  return r.status === 0;
}

// A Daemon (stack.mjs) whose process runs in a private mount namespace with `hostsFile` bound
// over /etc/hosts: the daemon resolves the names we choose, and nothing else changes.
function namespacedDaemon(name, configPath, env, hostsFile) {
  const d = Object.create(Daemon.prototype);
  d.name = name;
  d.lines = [];
  d.raw = '';
  d.proc = spawn('unshare', ['-m', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', hostsFile, binary(name), '--config', configPath], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  d.exited = new Promise((resolve) => d.proc.on('exit', (code, signal) => resolve({ code, signal, at: Date.now() })));
  let partial = '';
  d.proc.stderr.setEncoding('utf8');
  d.proc.stderr.on('data', (chunk) => {
    d.raw += chunk;
    partial += chunk;
    let nl;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      try {
        d.lines.push(JSON.parse(line));
      } catch {
        d.lines.push(line);
      }
    }
  });
  return d;
}

// A stack whose agent-gw resolves names with `hosts` ({name: address}) besides localhost.
export async function startStackWithHosts(hosts, opts = {}) {
  const stack = await Stack.start({ ...opts, daemons: [] });
  const hostsFile = path.join(stack.dir, 'hosts');
  writeFileSync(hostsFile, ['127.0.0.1 localhost', '::1 localhost', ...Object.entries(hosts).map(([n, a]) => `${a} ${n}`), ''].join('\n'));
  stack.daemons['agent-gw'] = namespacedDaemon('agent-gw', stack.configPath, stack.env, hostsFile);
  try {
    await stack.daemons['agent-gw'].started();
  } catch (e) {
    await stack.close();
    throw e;
  }
  return stack;
}

// Resolves when the daemon logged a line for which pred is true.
export async function logged(daemon, pred, timeoutMs = 5000) {
  return daemon.waitForLog(pred, timeoutMs);
}

export { sleep };
