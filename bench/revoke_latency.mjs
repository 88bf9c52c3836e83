// Time from `gwctl key revoke` returning to the first request refused with 401, over real
// daemons with the default store watch interval (250 ms). Bounded: ROUNDS revocations, each
// polled for at most 5 s, against 127.0.0.1 only.
//
//   node bench/revoke_latency.mjs            (after a build into build/)
//   TRIPLANE_BUILD=build-asan node bench/revoke_latency.mjs
import { Stack } from '../tests/e2e/lib/stack.mjs';

const ROUNDS = Number(process.env.ROUNDS ?? 20);
const WATCH_MS = Number(process.env.WATCH_MS ?? 250);

const stack = await Stack.start({ daemons: ['model-gw'], watchMs: WATCH_MS });
try {
  stack.gwctl('principal', 'add', 'bench', '--kind', 'service');
  const url = stack.url('model-gw', '/whoami');
  const samples = [];
  for (let i = 0; i < ROUNDS; i++) {
    const { key, id } = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'bench').stdout);
    const headers = { Authorization: `Bearer ${key}` };
    for (let t = Date.now(); (await fetch(url, { headers })).status !== 200; ) {
      if (Date.now() - t > 5000) throw new Error('the new key never worked');
    }
    // A random pause, so that revocations do not fall at the same phase of the watch timer
    // (the key was just seen working, which happens right after a tick).
    await new Promise((resolve) => setTimeout(resolve, Math.random() * WATCH_MS));
    const r = stack.gwctl('key', 'revoke', id);
    if (r.status !== 0) throw new Error(r.stderr);
    const t0 = performance.now();
    for (;;) {
      if ((await fetch(url, { headers })).status === 401) break;
      if (performance.now() - t0 > 5000) throw new Error('the revoked key still works after 5 s');
    }
    samples.push(performance.now() - t0);
  }
  samples.sort((a, b) => a - b);
  const q = (p) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))].toFixed(1);
  console.log(`revoke -> first 401, watch interval ${WATCH_MS} ms, ${ROUNDS} rounds: ` +
    `median ${q(0.5)} ms, p90 ${q(0.9)} ms, max ${q(1)} ms`);
} finally {
  await stack.close();
}
