// The destination driver's account of the downtime's end: the first vCPU's own report of
// when it ran again, and the switchover's arrival when no vCPU ever says.

import assert from 'node:assert/strict';
import test from 'node:test';
import type { Message } from '../../src/engine/messages.ts';
import { encodeDeviceState, type GuestMachine, type MachineSpec } from '../../src/guest/machine.ts';
import { GuestRam } from '../../src/guest/ram.ts';
import { DestinationDriver } from '../../src/host/destination-driver.ts';
import type { Lanes } from '../../src/host/source-driver.ts';
import { type FakeLane, fakeLane } from '../support/fake-lane.ts';

const PAGES = 4;

/** A guest whose vCPUs report their resume at `ranAt` (never, when undefined). */
function fakeMachine(ranAt: number | Promise<number> | undefined, data?: SharedArrayBuffer) {
  const ram = GuestRam.create(PAGES * 4096, false, data);
  const machine = {
    ram,
    running: false,
    onFault: () => {},
    pagesArrived: () => {},
    resume: () => {
      machine.running = true;
      return ranAt === undefined ? new Promise<number>(() => {}) : Promise.resolve(ranAt);
    },
    routeFaults: () => {},
    stop: async () => {},
  };
  return machine as unknown as GuestMachine;
}

const spec: MachineSpec = {
  ramBytes: PAGES * 4096,
  vcpus: 1,
  app: { module: 'none', kind: 'none', base: 0, size: 0, options: {} },
  servers: 1,
  job: false,
  faultLimit: 64,
};

/** A destination driver for `machine` over fake lanes. */
function incoming(machine: GuestMachine, ramZeroed = true) {
  const lanes = { control: fakeLane('control'), bulk: fakeLane('bulk'), urgent: fakeLane('urgent') };
  const driver = new DestinationDriver(
    machine,
    { control: lanes.control.conn, bulk: lanes.bulk.conn, urgent: lanes.urgent.conn } satisfies Lanes,
    () => {},
    { ramZeroed },
  );
  return { lanes, driver };
}

/** Every page of the VM, all zeros. */
const allPages: Message = {
  type: 'pages',
  batch: {
    kind: 'bulk',
    runs: [0, PAGES],
    pageCount: PAGES,
    zeroCount: PAGES,
    zeroMask: new Uint8Array([0b1111]),
    data: new Uint8Array(0),
  },
};

function switchover(lane: FakeLane, postcopy: boolean): void {
  const deviceState = encodeDeviceState({ spec, pending: [], nextRequestId: 1 });
  lane.deliver({
    type: 'switchover',
    postcopy,
    discard: [],
    deviceState,
    deviceStateBytes: deviceState.length,
  });
}

/** Every page (all zeros) by the bulk lane, then the switchover: the migration completes. */
async function migrateInto(
  machine: GuestMachine,
  ramZeroed = true,
): Promise<{ switchedAt: number; resumedAt: number }> {
  const { lanes, driver } = incoming(machine, ramZeroed);
  lanes.control.deliver(allPages);
  const switchedAt = performance.timeOrigin + performance.now();
  switchover(lanes.control, false);
  const r = await driver.done;
  assert.equal(r.outcome, 'completed', r.reason);
  return { switchedAt, resumedAt: r.resumedAt };
}

test("the downtime ends when the first vCPU says it ran, not at the switchover's arrival", async () => {
  const ranAt = performance.timeOrigin + performance.now() + 5000; // a report far from the arrival
  const { resumedAt } = await migrateInto(fakeMachine(ranAt));
  assert.equal(resumedAt, ranAt);
});

test('vCPUs that never say leave the switchover’s arrival, and the result still comes', async () => {
  const t0 = performance.now();
  const alive = setInterval(() => {}, 100); // a host has other work; this test has none
  const { switchedAt, resumedAt } = await migrateInto(fakeMachine(undefined)).finally(() =>
    clearInterval(alive),
  );
  assert.ok(resumedAt >= switchedAt && resumedAt < switchedAt + 100, `${resumedAt - switchedAt} ms after`);
  assert.ok(performance.now() - t0 >= 900, 'it waited for the report first');
});

test("into RAM a former VM left its data in, the migration's zero pages are written as zeros", async () => {
  const data = new SharedArrayBuffer(PAGES * 4096);
  new Uint8Array(data).fill(0xa5);
  await migrateInto(fakeMachine(performance.timeOrigin + performance.now(), data), false);
  assert.ok(new Uint8Array(data).every((b) => b === 0));
  // RAM known to be zero is not looked at again: a zero page there costs nothing
  const fresh = new SharedArrayBuffer(PAGES * 4096);
  new Uint8Array(fresh).fill(0xa5); // (not so here, to show it is left alone)
  await migrateInto(fakeMachine(performance.timeOrigin + performance.now(), fresh), true);
  assert.ok(new Uint8Array(fresh).every((b) => b === 0xa5));
});

test('in postcopy the destination says it resumed once a vCPU ran, and the control messages after wait behind', async () => {
  let ran!: (at: number) => void;
  const { lanes, driver } = incoming(fakeMachine(new Promise<number>((r) => (ran = r))));
  switchover(lanes.bulk, true);
  const said = () => lanes.control.sent.map((m) => m.type);
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(driver.destination.phase, 'postcopy');
  assert.deepEqual(said(), [], 'nothing before a vCPU ran');
  // every page arrives meanwhile: the end waits behind the word
  lanes.bulk.deliver(allPages);
  lanes.bulk.deliver({ type: 'complete', totalPages: PAGES });
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(said(), []);
  ran(performance.timeOrigin + performance.now());
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(said(), ['resumed', 'done']);
  assert.equal((await driver.done).outcome, 'completed');
});

test('a vCPU that never says it ran holds the word only briefly', async () => {
  const { lanes } = incoming(fakeMachine(undefined));
  const t0 = performance.now();
  switchover(lanes.bulk, true);
  while (lanes.control.sent.length === 0 && performance.now() - t0 < 1000)
    await new Promise((r) => setTimeout(r, 5));
  const waited = performance.now() - t0;
  assert.deepEqual(
    lanes.control.sent.map((m) => m.type),
    ['resumed'],
  );
  assert.ok(waited >= 45 && waited < 500, `waited ${waited.toFixed(0)} ms`);
  for (const l of Object.values(lanes)) l.end();
});
