// A request whose handler throws: with the app's `failed` hook the client gets an error and
// the handler's writes are rolled back; the vCPU keeps serving.

import assert from 'node:assert/strict';
import test from 'node:test';
import { MessageChannel } from 'node:worker_threads';
import fc from 'fast-check';
import { PAGE_SIZE } from '../../src/engine/messages.ts';
import { GuestMachine, leastBusy, type MachineSpec } from '../../src/guest/machine.ts';
import { GuestRam } from '../../src/guest/ram.ts';

const FIXTURE = new URL('./fixtures/faulty-app.ts', import.meta.url).href;

async function boot(kind: string, vcpus = 1): Promise<GuestMachine> {
  const ramBytes = 1 << 20;
  const base = 16 * PAGE_SIZE;
  const spec: MachineSpec = {
    ramBytes,
    vcpus,
    app: { module: FIXTURE, kind, base, size: ramBytes - base, options: {} },
    servers: 2,
    job: false,
    faultLimit: 64,
  };
  return GuestMachine.boot(spec, GuestRam.create(ramBytes, true), { cooperative: true });
}

/** Boots a machine of `kind`, runs `body` with it and the vCPU errors it reports, then stops it. */
async function withMachine(kind: string, body: (m: GuestMachine, errors: string[]) => Promise<void>) {
  const m = await boot(kind);
  const errors: string[] = [];
  m.onError = (e) => errors.push(e);
  try {
    await body(m, errors);
  } finally {
    await m.stop();
  }
}

const ask = async (m: GuestMachine, ...args: string[]) =>
  new TextDecoder().decode((await m.execute(args.map((a) => new TextEncoder().encode(a)))).reply);

test('a handler that throws is answered with the app error, its writes rolled back', async () => {
  const m = await boot('answers');
  try {
    assert.equal(await ask(m, 'SET', '7'), '+OK\r\n');
    assert.equal(await ask(m, 'BOOM', '99'), '-ERR boom\r\n');
    assert.equal(await ask(m, 'GET'), ':7\r\n', 'the failed request wrote nothing');
    assert.equal(await ask(m, 'SET', '8'), '+OK\r\n', 'the vCPU still serves');
    assert.equal(await ask(m, 'GET'), ':8\r\n');
  } finally {
    await m.stop();
  }
});

test('without the hook, a throwing handler is reported as a vCPU error', () =>
  withMachine('silent', async (m, errors) => {
    assert.equal(await ask(m, 'SET', '7'), '+OK\r\n');
    void ask(m, 'BOOM', '99').catch(() => {});
    for (let i = 0; i < 200 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(errors.length, 1);
    assert.match(errors[0], /boom/);
  }));

test('a request handed in while the guest pauses is refused, not left in a vCPU to run later', async () => {
  const m = await boot('answers', 2);
  try {
    assert.equal(await ask(m, 'SET', '1'), '+OK\r\n');
    const paused = m.pause();
    // the device keeps this one (to run wherever the guest resumes)
    await assert.rejects(ask(m, 'SET', '2'), /not running/);
    const state = await paused;
    assert.deepEqual(state.pending, []);
    m.resume(state);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(await ask(m, 'GET'), ':1\r\n', 'the refused request never ran');
  } finally {
    await m.stop();
  }
});

test('a pause hands back exactly the requests not answered: none lost, none run twice (random moments)', async () => {
  const m = await boot('answers', 2);
  let count = 0; // INCRs the guest has run, as its answers tell
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 24 }),
        fc.oneof(fc.constant(-1), fc.integer({ min: 0, max: 24 })),
        async (n, after) => {
          // pause after `after` answers (or all of them: the vCPUs halt), or with none awaited
          const stopAt = after < 0 ? n : Math.min(after, n);
          const answered: number[] = [];
          const refused: number[] = [];
          let reached!: () => void;
          const atStop = new Promise<void>((r) => {
            reached = r;
          });
          if (stopAt === 0) reached();
          const asks = Array.from({ length: n }, (_, i) =>
            ask(m, 'INCR').then(
              () => {
                answered.push(i);
                if (answered.length === stopAt) reached();
              },
              () => refused.push(i),
            ),
          );
          await atStop;
          if (after < 0) await new Promise((r) => setTimeout(r, 5)); // let them halt
          const state = await m.pause();
          await Promise.all(asks);
          assert.equal(answered.length + refused.length, n);
          assert.equal(state.pending.length, refused.length, 'every refused request is handed back');
          m.resume({ ...state, pending: [] });
          // the guest ran each answered INCR once and none of those handed back
          count += answered.length + 1;
          assert.equal(await ask(m, 'INCR'), `:${count}\r\n`);
        },
      ),
      { numRuns: 40 },
    );
    assert.ok(m.heldInPlace > 0, 'some pauses found the vCPUs halted and held them in place');
  } finally {
    await m.stop();
  }
});

test('a resume says when the first vCPU ran again; a stop before says it never did', async () => {
  const clock = () => performance.timeOrigin + performance.now();
  const m = await boot('answers', 2);
  try {
    const asked = clock();
    const ran = await m.resume(await m.pause());
    // by the vCPU threads' own clock: after the resume was asked for, before it returned
    assert.ok(ran >= asked - 1 && ran <= clock() + 1, `${ran} not within [${asked}, ${clock()}]`);
    assert.equal(await ask(m, 'SET', '3'), '+OK\r\n');
    const again = m.resume(await m.pause());
    const stopped = m.stop(); // before any vCPU could answer
    assert.ok(Number.isNaN(await again));
    await stopped;
  } finally {
    await m.stop();
  }
});

test("the vCPUs report their threads' time on a host core and waiting for one", async () => {
  const m = await boot('answers');
  try {
    for (let i = 0; i < 200; i++) await ask(m, 'SET', String(i));
    const s = await m.collectStats();
    assert.ok(s.runMs > 0, `run ${s.runMs} ms`);
    assert.ok(s.waitMs >= 0, `wait ${s.waitMs} ms`);
    assert.equal(s.ops, 200);
  } finally {
    await m.stop();
  }
});

test('stats asked for twice at once are collected one after the other; a stop ends a collection', async () => {
  const m = await boot('answers', 2);
  for (let i = 0; i < 20; i++) await ask(m, 'SET', String(i));
  const [x, y] = await Promise.all([m.collectStats(), m.collectStats()]);
  assert.equal(x.ops, 20);
  assert.equal(y.ops, 20);
  const pending = m.collectStats();
  await m.stop();
  assert.ok((await pending).ops <= 20, 'answered with what had arrived');
  assert.equal((await m.collectStats()).ops, 0, 'a stopped VM has nothing to report');
});

test('a request goes to the vCPU with the fewest in hand; ties go round', () => {
  fc.assert(
    fc.property(fc.array(fc.nat(20), { minLength: 1, maxLength: 8 }), fc.nat(100), (outstanding, turn) => {
      const v = leastBusy(outstanding, outstanding.length, turn);
      assert.equal(outstanding[v], Math.min(...outstanding));
      // among the least busy, the first from `turn` on
      for (let i = 0; i < outstanding.length; i++) {
        const u = (turn + i) % outstanding.length;
        if (outstanding[u] === outstanding[v]) {
          assert.equal(v, u);
          break;
        }
      }
    }),
  );
});

test('a parked fault is still woken on its old port after the faults are routed elsewhere', async () => {
  const m = await boot('answers');
  try {
    const pfn = m.spec.app.base / PAGE_SIZE;
    m.ram.markMissing(pfn, 1);
    const { port1, port2 } = new MessageChannel();
    m.routeFaults([port1]);
    const fault = new Promise<{ pfn: number; token: number }>((r) => port2.once('message', r));
    const answer = ask(m, 'GET');
    const f = await fault;
    assert.equal(f.pfn, pfn);
    assert.ok(f.token > 0, 'the task parked');
    // the migration ends (faults go back to the host's loop) before its "page ready" came
    m.routeFaults(null);
    let closed = false;
    port2.once('close', () => {
      closed = true;
    });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(closed, false, 'the vCPU keeps the old port for the answers still due');
    m.ram.markPresent(pfn, 1);
    port2.postMessage({ type: 'ready', token: f.token });
    const timeout = new Promise((_, reject) =>
      setTimeout(() => reject(new Error('the parked request was never woken')), 3000).unref(),
    );
    assert.equal(await Promise.race([answer, timeout]), ':0\r\n');
    port2.close();
  } finally {
    await m.stop();
  }
});

test('a late "page ready" for a task the vCPU no longer holds is ignored', () =>
  withMachine('answers', async (m, errors) => {
    const { port1, port2 } = new MessageChannel();
    m.routeFaults([port1]);
    port2.postMessage({ type: 'ready', token: 12345 });
    assert.equal(await ask(m, 'SET', '5'), '+OK\r\n');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(errors, [], 'no vCPU error');
    assert.equal(await ask(m, 'GET'), ':5\r\n');
    port2.close();
  }));
