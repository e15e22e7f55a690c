// Guest RAM: mapping pages in ahead of time changes no byte, even while another thread
// installs pages into the same RAM.

import assert from 'node:assert/strict';
import test from 'node:test';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { PAGE_SIZE } from '../../src/engine/messages.ts';
import { GuestRam } from '../../src/guest/ram.ts';

test('prefault keeps every byte of every page', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.nat(63), fc.nat(PAGE_SIZE - 1), fc.integer({ min: 1, max: 255 })), {
        maxLength: 200,
      }),
      fc.nat(63),
      fc.nat(64),
      (writes, start, count) => {
        const ram = GuestRam.create(64 * PAGE_SIZE, true);
        for (const [page, at, value] of writes) ram.bytes[page * PAGE_SIZE + at] = value;
        const before = ram.bytes.slice();
        ram.prefault(start, count);
        assert.deepEqual(ram.bytes, before);
      },
    ),
  );
});

test('prefault racing with installs from another thread loses no installed byte', async () => {
  const pages = 4096;
  const ram = GuestRam.create(pages * PAGE_SIZE, false);
  const stop = new Int32Array(new SharedArrayBuffer(4));
  // another thread maps the RAM in, over and over, while this one installs every page
  const worker = new Worker(new URL('./fixtures/prefaulter.mjs', import.meta.url), {
    workerData: { buffers: ram.buffers, stop: stop.buffer },
  });
  const said = (what: string) =>
    new Promise<void>((resolve) => worker.on('message', (m) => m === what && resolve()));
  const done = said('done');
  await said('running');
  const page = new Uint8Array(PAGE_SIZE);
  const value = (p: number, i: number) => (p * 7 + i) & 0xff || 1;
  for (let p = 0; p < pages; p++) {
    for (let i = 0; i < PAGE_SIZE; i++) page[i] = value(p, i);
    ram.bytes.set(page, p * PAGE_SIZE);
  }
  Atomics.store(stop, 0, 1);
  await done;
  await worker.terminate();
  for (let p = 0; p < pages; p++)
    for (let i = 0; i < PAGE_SIZE; i += 4)
      if (ram.bytes[p * PAGE_SIZE + i] !== value(p, i)) assert.fail(`page ${p}: byte ${i} lost`);
});
