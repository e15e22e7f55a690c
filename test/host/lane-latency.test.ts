// Emulated distance between hosts: messages reach a lane's handlers a fixed time late, in
// order, with the lane's end behind them and reading stopped while too many wait.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { Message } from '../../src/engine/messages.ts';
import { delayedLane, LATENCY_QUEUE_LIMIT } from '../../src/host/lane-latency.ts';
import { TransportError } from '../../src/host/transport.ts';
import { fakeLane } from '../support/fake-lane.ts';

/** A lane the test drives: `arrive(n)` hands it message n. */
function inbound() {
  const f = fakeLane();
  return {
    lane: f.conn,
    state: f.state,
    arrive: (n: number) => f.deliver({ type: 'complete', totalPages: n }, n),
    end: (error?: TransportError) => f.end(error),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pages = (m: Message) => (m.type === 'complete' ? m.totalPages : -1);

test('every message arrives in order, no sooner than the latency after it came; the end comes last', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 12 }),
      fc.integer({ min: 1, max: 4 }),
      async (gaps, latency) => {
        const inner = inbound();
        const lane = delayedLane(inner.lane, latency);
        const came: number[] = [];
        const got: { n: number; at: number }[] = [];
        let endedAfter = -1;
        lane.onMessage((m) => got.push({ n: pages(m), at: performance.now() }));
        const closed = new Promise<void>((resolve) =>
          lane.onClose(() => {
            endedAfter = got.length;
            resolve();
          }),
        );
        for (const [i, gap] of gaps.entries()) {
          if (gap > 0) await sleep(gap);
          came.push(performance.now());
          inner.arrive(i);
        }
        inner.end();
        await closed;
        assert.deepEqual(
          got.map((g) => g.n),
          gaps.map((_, i) => i),
        );
        // timers may fire up to a millisecond early by performance.now's reckoning
        for (const [i, g] of got.entries()) assert.ok(g.at - came[i] >= latency - 1, `message ${i}`);
        assert.equal(endedAfter, gaps.length, 'the end comes behind every message');
      },
    ),
    { numRuns: 25 },
  );
});

test('pausing and resuming at random never delivers while paused, nor out of order, nor loses one', async () => {
  type Step = { kind: 'arrive' } | { kind: 'pause' } | { kind: 'resume' } | { kind: 'wait'; ms: number };
  const step: fc.Arbitrary<Step> = fc.oneof(
    fc.constant({ kind: 'arrive' } as Step),
    fc.constant({ kind: 'pause' } as Step),
    fc.constant({ kind: 'resume' } as Step),
    fc.integer({ min: 0, max: 3 }).map((ms) => ({ kind: 'wait', ms }) as Step),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(step, { maxLength: 16 }), async (steps) => {
      const inner = inbound();
      const lane = delayedLane(inner.lane, 1);
      let paused = false;
      const got: number[] = [];
      lane.onMessage((m) => {
        assert.equal(paused, false, 'delivered while paused');
        got.push(pages(m));
      });
      let sent = 0;
      for (const st of steps) {
        if (st.kind === 'arrive') inner.arrive(sent++);
        else if (st.kind === 'pause') {
          paused = true;
          lane.pauseReading();
        } else if (st.kind === 'resume') {
          paused = false;
          lane.resumeReading();
        } else await sleep(st.ms);
      }
      paused = false;
      lane.resumeReading();
      const closed = new Promise<void>((resolve) => lane.onClose(() => resolve()));
      inner.end();
      await closed;
      assert.deepEqual(
        got,
        Array.from({ length: sent }, (_, i) => i),
      );
    }),
    { numRuns: 30 },
  );
});

test('a long queue stops the reading and starts it again at half', async () => {
  const inner = inbound();
  const lane = delayedLane(inner.lane, 20);
  const got: number[] = [];
  lane.onMessage((m) => got.push(pages(m)));
  for (let i = 0; i < LATENCY_QUEUE_LIMIT - 1; i++) inner.arrive(i);
  assert.equal(inner.state.readPaused, false);
  inner.arrive(LATENCY_QUEUE_LIMIT - 1);
  assert.equal(inner.state.readPaused, true, 'TCP pushes back on the sender');
  await sleep(40);
  assert.equal(got.length, LATENCY_QUEUE_LIMIT);
  assert.equal(inner.state.readPaused, false);
});

test('a paused lane delivers nothing until resumed, and keeps its reading paused', async () => {
  const inner = inbound();
  const lane = delayedLane(inner.lane, 2);
  const got: number[] = [];
  lane.onMessage((m) => got.push(pages(m)));
  inner.arrive(1);
  lane.pauseReading();
  assert.equal(inner.state.readPaused, true);
  await sleep(15);
  assert.deepEqual(got, [], 'held while paused');
  inner.arrive(2);
  lane.resumeReading();
  assert.equal(inner.state.readPaused, false);
  await sleep(15);
  assert.deepEqual(got, [1, 2]);
});

test('messages wait for a handler; a failed lane reports its error behind them', async () => {
  const inner = inbound();
  const lane = delayedLane(inner.lane, 2);
  inner.arrive(7);
  const broken = new TransportError('closed', 'peer went away');
  inner.end(broken);
  assert.equal(lane.error, undefined, 'not seen before the messages ahead of it');
  await sleep(10);
  const got: number[] = [];
  const errors: TransportError[] = [];
  lane.onError((e) => errors.push(e));
  const closed = new Promise<TransportError | undefined>((resolve) => lane.onClose(resolve));
  lane.onMessage((m) => got.push(pages(m)));
  assert.equal(await closed, broken);
  assert.deepEqual(got, [7]);
  assert.deepEqual(errors, [broken]);
  assert.equal(lane.error, broken);
});

test('closing here drops what waits; the end is still reported', async () => {
  const inner = inbound();
  const lane = delayedLane(inner.lane, 5);
  const got: number[] = [];
  lane.onMessage((m) => got.push(pages(m)));
  inner.arrive(1);
  lane.destroy();
  assert.equal(inner.state.destroyed, true);
  const closed = new Promise<void>((resolve) => lane.onClose(() => resolve()));
  inner.end();
  await closed;
  await sleep(10);
  assert.deepEqual(got, []);
});

test('a handler that throws closes the lane with a handler error, as the lane itself does', async () => {
  const inner = inbound();
  const lane = delayedLane(inner.lane, 1);
  lane.onMessage(() => {
    throw new Error('bad message');
  });
  let closes = 0;
  const closed = new Promise<TransportError | undefined>((resolve) =>
    lane.onClose((e) => {
      closes++;
      resolve(e);
    }),
  );
  inner.arrive(1);
  const e = await closed;
  assert.equal(e?.code, 'handler');
  assert.match(e?.message ?? '', /bulk lane: message handler threw: bad message/);
  assert.equal(inner.state.destroyed, true);
  inner.end(); // the socket's own close afterwards
  await sleep(5);
  assert.equal(closes, 1, 'the end is reported once');
});

test('no latency is the lane itself; a latency out of range is refused', () => {
  const inner = inbound();
  assert.equal(delayedLane(inner.lane, 0), inner.lane);
  for (const bad of [-1, Number.NaN, 1001, Number.POSITIVE_INFINITY])
    assert.throws(() => delayedLane(inner.lane, bad), RangeError);
});
