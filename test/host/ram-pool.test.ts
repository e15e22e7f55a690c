// The pool of guest RAM kept for the next VM: zeroed, exact sizes, bounded.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { RamPool } from '../../src/host/ram-pool.ts';

const MiB = 2 ** 20;

test('a buffer given back comes out again zeroed, for the same size only', async () => {
  const pool = new RamPool(256 * MiB);
  const ram = new SharedArrayBuffer(80 * MiB); // many zeroing steps
  new Uint8Array(ram).fill(0xab);
  await pool.give(ram);
  assert.equal(pool.heldBytes, 80 * MiB);
  assert.equal(pool.take(64 * MiB), undefined, 'no buffer of another size');
  const again = pool.take(80 * MiB);
  assert.equal(again, ram);
  assert.ok(
    new Uint8Array(again!).every((b) => b === 0),
    'all zeros, as a new VM expects',
  );
  assert.equal(pool.take(80 * MiB), undefined, 'handed out once');
  assert.equal(pool.heldBytes, 0);
  assert.equal(pool.reused, 1);
});

test('the pool keeps no more than its limit; 0 keeps nothing', async () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 1, max: 4 }), { maxLength: 12 }),
      fc.integer({ min: 0, max: 8 }),
      (sizes, limit) => {
        const pool = new RamPool(limit * 4096);
        for (const n of sizes) {
          void pool.give(new SharedArrayBuffer(n * 4096));
          assert.ok(pool.heldBytes <= limit * 4096);
        }
      },
    ),
  );
  const none = new RamPool(0);
  await none.give(new SharedArrayBuffer(4096));
  assert.equal(none.take(4096), undefined);
});

test('a buffer still being zeroed is not handed out', async () => {
  const pool = new RamPool(256 * MiB);
  const ram = new SharedArrayBuffer(96 * MiB);
  new Uint8Array(ram).fill(1);
  const given = pool.give(ram);
  assert.equal(pool.take(96 * MiB), undefined, 'not before it is all zeros');
  await given;
  assert.equal(pool.take(96 * MiB), ram);
});

/** A pool on a migrating host, given back 8 MiB of a former VM's data (3s). */
function busyPool() {
  const host = { busy: true };
  const pool = new RamPool(64 * MiB, () => host.busy);
  const ram = new SharedArrayBuffer(8 * MiB);
  new Uint8Array(ram).fill(3);
  return { host, pool, ram, given: pool.give(ram) };
}

test('zeroing waits while the host is migrating', async () => {
  const { host, pool, ram, given } = busyPool();
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(new Uint8Array(ram)[0], 3, 'untouched while busy');
  assert.equal(pool.take(8 * MiB), undefined);
  host.busy = false;
  await given;
  assert.equal(pool.take(8 * MiB), ram);
  assert.ok(new Uint8Array(ram).every((b) => b === 0));
});

test('a user that overwrites every page may take a buffer still waiting to be zeroed; its zeroing stops', async () => {
  const { host, pool, ram, given } = busyPool();
  assert.equal(pool.take(8 * MiB), undefined, 'not zeroed: not for a new VM');
  assert.equal(pool.takeToOverwrite(4 * MiB), undefined, 'the same size only');
  const taken = pool.takeToOverwrite(8 * MiB);
  assert.deepEqual(taken, { data: ram, zeroed: false });
  assert.equal(pool.heldBytes, 0);
  // its new user's data is not zeroed under it once the host is idle
  new Uint8Array(ram).fill(7);
  host.busy = false;
  await given;
  assert.ok(new Uint8Array(ram).every((b) => b === 7));
  assert.equal(pool.takeToOverwrite(8 * MiB), undefined, 'handed out once');
  // a zeroed buffer goes first
  const other = new SharedArrayBuffer(8 * MiB);
  await pool.give(other);
  assert.deepEqual(pool.takeToOverwrite(8 * MiB), { data: other, zeroed: true });
});
