// The fault thread's rehearsal: demands and their pages over a real urgent lane to itself.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { rehearseFaultPath } from '../../src/host/fault-rehearsal.ts';

const SECRET = new Uint8Array(randomBytes(32));

test('the rehearsal answers every demand and installs each page whole, then lets go of its lanes', async () => {
  // 100 demands over 64 scratch pages: the last pass installs 36 of them
  assert.equal(await rehearseFaultPath(SECRET, 100), 36);
  // a whole number of passes checks every page
  assert.equal(await rehearseFaultPath(SECRET, 128), 64);
  // (the test ends: nothing of it keeps the process alive)
});
