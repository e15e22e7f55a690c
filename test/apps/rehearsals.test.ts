// What a new vCPU thread serves on scratch RAM before its VM's first request: each request
// is one the app serves (an error reply would leave the code of its success untouched).

import assert from 'node:assert/strict';
import test from 'node:test';
import { formatApp, openApp, rehearsals } from '../../src/apps/index.ts';
import { ArrayAccess } from '../../src/guest/access.ts';

test('every rehearsal request is served without an error, in 1 MiB of scratch RAM', () => {
  const kinds = new Set<string>();
  for (const r of rehearsals()) {
    kinds.add(r.kind);
    const mem = new ArrayAccess(new Uint8Array(1 << 20));
    formatApp(r.kind, r.options, mem);
    const app = openApp(r.kind, r.options, mem);
    for (const args of r.requests) {
      const reply = new TextDecoder().decode(app.execute!(args));
      const what = args.map((a) => new TextDecoder().decode(a).slice(0, 12)).join(' ');
      assert.doesNotMatch(reply, /^-|^HTTP\/1\.1 [45]/, `${r.kind} ${what}: ${reply.slice(0, 40)}`);
    }
  }
  assert.deepEqual([...kinds].sort(), ['http', 'kv'], 'both apps that serve clients rehearse');
});
