// The source driver: when the migration ends while the guest is still pausing, the guest
// carries on at the source and nothing throws from the pause's continuation; the push
// after a postcopy switchover; the size of the frames either side of it.

import assert from 'node:assert/strict';
import test from 'node:test';
import { DEFAULT_CONFIG, type MigrationConfig } from '../../src/engine/config.ts';
import type { Message } from '../../src/engine/messages.ts';
import type { DeviceState, GuestMachine } from '../../src/guest/machine.ts';
import { GuestRam } from '../../src/guest/ram.ts';
import { BATCH_PAGES, PUSH_BATCH_PAGES } from '../../src/host/frame-pool.ts';
import { type Lanes, SourceDriver } from '../../src/host/source-driver.ts';
import { fakeLane } from '../support/fake-lane.ts';

/** A guest whose pause completes only when the test says so. */
function fakeMachine(pages: number) {
  const ram = GuestRam.create(pages * 4096, true);
  let finishPause: ((s: DeviceState) => void) | undefined;
  const resumed: DeviceState[] = [];
  let stopped = 0;
  const machine = {
    ram,
    pause: () =>
      new Promise<DeviceState>((r) => {
        finishPause = r;
      }),
    resume: (s: DeviceState) => {
      resumed.push(s);
    },
    stop: async () => {
      stopped++;
    },
  };
  return {
    machine: machine as unknown as GuestMachine,
    resumed,
    stopped: () => stopped,
    pausing: () => finishPause !== undefined,
    finishPause: (s: DeviceState) => finishPause?.(s),
  };
}

const tick = () => new Promise((r) => setTimeout(r, 5));

for (const mode of ['precopy', 'postcopy'] as const) {
  test(`${mode}: a lane that breaks while the guest pauses leaves the guest running at the source`, async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const vm = fakeMachine(64);
      const lanes = { control: fakeLane('control'), bulk: fakeLane('bulk'), urgent: fakeLane('urgent') };
      const l: Lanes = { control: lanes.control.conn, bulk: lanes.bulk.conn, urgent: lanes.urgent.conn };
      // no downtime budget to meet: 64 pages fit any limit, so the stop comes after one pass
      const config: MigrationConfig = { ...DEFAULT_CONFIG, mode, deviceStateBytes: 0 };
      const driver = new SourceDriver(vm.machine, l, config);
      driver.start();
      for (let i = 0; i < 50 && driver.source.phase !== 'stopping'; i++) await tick();
      assert.equal(driver.source.phase, 'stopping', 'the engine asked the guest to stop');
      for (let i = 0; i < 50 && !vm.pausing(); i++) await tick();
      assert.ok(vm.pausing(), 'the guest is pausing');

      lanes.bulk.end(new Error('connection reset'));
      vm.finishPause({ pending: [] } as unknown as DeviceState);
      const result = await driver.done;
      await tick();

      assert.equal(result.outcome, 'aborted', result.reason);
      assert.match(result.reason, /bulk lane broke/);
      assert.equal(vm.resumed.length, 1, 'the guest resumed at the source, once');
      assert.equal(vm.stopped(), 0, 'the source did not release the guest');
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
}

/** A postcopy of a 256-page guest over fake lanes, up to its switchover leaving. */
async function toSwitchover() {
  const vm = fakeMachine(256);
  const lanes = { control: fakeLane('control'), bulk: fakeLane('bulk'), urgent: fakeLane('urgent') };
  const l: Lanes = { control: lanes.control.conn, bulk: lanes.bulk.conn, urgent: lanes.urgent.conn };
  const driver = new SourceDriver(vm.machine, l, {
    ...DEFAULT_CONFIG,
    mode: 'postcopy',
    deviceStateBytes: 0,
  });
  driver.start();
  for (let i = 0; i < 50 && !vm.pausing(); i++) await tick();
  vm.finishPause({ pending: [] } as unknown as DeviceState);
  const types = () => lanes.bulk.sent.map((m) => m.type);
  for (let i = 0; i < 50 && !types().includes('switchover'); i++) await tick();
  return { lanes, driver, types };
}

test("after a postcopy switchover the push waits for the destination's word that the guest runs there", async () => {
  const { lanes, driver, types } = await toSwitchover();
  assert.deepEqual(types(), ['switchover']);
  // a demand is answered at once, on the urgent lane
  lanes.urgent.deliver({ type: 'demand', pfns: [200] });
  await tick();
  assert.deepEqual(
    lanes.urgent.sent.map((m) => m.type),
    ['pages'],
  );
  await tick();
  assert.deepEqual(types(), ['switchover'], 'no page pushed before the destination resumed');
  lanes.control.deliver({ type: 'resumed' });
  for (let i = 0; i < 50 && types().length < 3; i++) await tick();
  const after = types().slice(1);
  assert.ok(after.length >= 2 && after.every((t) => t === 'pages'), types().join(' '));
  lanes.control.deliver({ type: 'done' });
  assert.equal((await driver.done).outcome, 'completed');
});

test('a destination that never says it resumed holds the push only briefly', async () => {
  const t0 = performance.now();
  const { lanes, driver, types } = await toSwitchover();
  for (let i = 0; i < 200 && !types().includes('pages'); i++) await tick();
  const waited = performance.now() - t0;
  assert.ok(types().includes('pages'), 'the push started');
  assert.ok(waited >= 90 && waited < 1000, `the push waited ${waited.toFixed(0)} ms`);
  lanes.control.deliver({ type: 'done' });
  await driver.done;
});

test('frames carry up to BATCH_PAGES pages before the switchover and PUSH_BATCH_PAGES in the push', async () => {
  // hybrid: a precopy round of every page while the guest writes every page again, then
  // (no downtime fits the limit) the switchover and the push; no page is a zero page
  const pages = 4 * BATCH_PAGES;
  const vm = fakeMachine(pages);
  const ram = vm.machine.ram;
  for (let p = 0; p < pages; p++) ram.page(p)[0] = 1;
  const lanes = { control: fakeLane('control'), bulk: fakeLane('bulk'), urgent: fakeLane('urgent') };
  const l: Lanes = { control: lanes.control.conn, bulk: lanes.bulk.conn, urgent: lanes.urgent.conn };
  const config: MigrationConfig = {
    ...DEFAULT_CONFIG,
    mode: 'hybrid',
    deviceStateBytes: 0,
    hybrid: { rounds: 1 },
    stop: { ...DEFAULT_CONFIG.stop, downtimeLimitMs: 0.001 },
  };
  const driver = new SourceDriver(vm.machine, l, config);
  driver.start();
  for (let p = 0; p < pages; p++) ram.logWrite(p);
  for (let i = 0; i < 100 && !vm.pausing(); i++) await tick();
  vm.finishPause({ pending: [] } as unknown as DeviceState);
  const isSwitchover = (m: Message) => m.type === 'switchover' && m.postcopy;
  for (let i = 0; i < 100 && !lanes.bulk.sent.some(isSwitchover); i++) await tick();
  lanes.control.deliver({ type: 'resumed' });
  const at = lanes.bulk.sent.findIndex(isSwitchover);
  const sizes = (from: number, to?: number) =>
    lanes.bulk.sent.slice(from, to).flatMap((m) => (m.type === 'pages' ? [m.batch.pageCount] : []));
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  for (let i = 0; i < 200 && sum(sizes(at)) < pages; i++) await tick();

  assert.ok(at > 0, 'a postcopy switchover');
  const before = sizes(0, at);
  const push = sizes(at);
  assert.equal(sum(before), pages, `precopy frames: ${before.join(' ')}`);
  assert.equal(Math.max(...before), BATCH_PAGES, `precopy frames: ${before.join(' ')}`);
  assert.equal(sum(push), pages, `the push sent every page: ${push.join(' ')}`);
  assert.equal(Math.max(...push), PUSH_BATCH_PAGES, `push frames: ${push.join(' ')}`);
  lanes.control.deliver({ type: 'done' });
  assert.equal((await driver.done).outcome, 'completed');
});
