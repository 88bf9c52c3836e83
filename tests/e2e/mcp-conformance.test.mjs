// The MCP conformance suite's server scenarios, run against mcp-gw fronting the project's
// conformance fixture server (tests/fixtures/mcp-conformance-server.mjs). The suite connects
// without credentials, so it goes through a proxy that adds a key; everything else it sends
// (Host, Origin, MCP headers) reaches the gateway unchanged. Every active scenario must pass.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startAuthProxy } from './lib/auth-proxy.mjs';
import { runConformance, startConformanceFixture } from './lib/conformance.mjs';
import { Stack } from './lib/stack.mjs';

describe('MCP conformance through mcp-gw', () => {
  let stack, fixture, proxy;
  before(async () => {
    fixture = await startConformanceFixture();
    stack = await Stack.start({
      daemons: ['mcp-gw'],
      extra: {
        mcp_gw: ['servers:', '  - name: conformance', '    transport: http', `    url: ${fixture.url}`, '    prefix: ""'],
      },
    });
    const file = path.join(stack.dir, 'p.yaml');
    writeFileSync(file, [
      'principals: [{id: suite, kind: service}]',
      'rules:',
      '  - {id: suite-all, effect: allow, subjects: {principals: [suite]}, plane: mcp, resources: ["*"], actions: ["*"]}',
      '',
    ].join('\n'));
    assert.equal(stack.gwctl('apply', '-f', file).status, 0);
    const { key } = JSON.parse(stack.gwctl('--json', 'key', 'create', '--principal', 'suite').stdout);
    proxy = await startAuthProxy(stack.url('mcp-gw'), `Bearer ${key}`);
  });
  after(async () => {
    await proxy?.close();
    const results = await stack?.close();
    await fixture?.stop();
    assert.equal(results?.['mcp-gw'].code, 0, stack?.daemons['mcp-gw'].tail());
  });

  test('every active server scenario passes through the gateway', async () => {
    const r = await runConformance(`${proxy.url}/mcp`, { suite: 'active', timeoutMs: 240000 });
    console.log(`conformance through mcp-gw: ${r.passed.length} scenarios passed, ${r.failed.length} failed`);
    assert.deepEqual(r.failed.map((f) => `${f.scenario}: ${JSON.stringify(f.details).slice(0, 400)}`), []);
    assert.ok(r.passed.length >= 30, `${r.passed.length} scenarios ran`);
  });
});
