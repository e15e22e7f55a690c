// A handler parked by an async fault: Ferry's own apps run it again from its start (a JS
// handler cannot be suspended midway), a real guest kernel's task goes on from the fault.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventQueue } from '../../src/sim/event-queue.ts';
import { DEFAULT_COSTS, GuestRuntime } from '../../src/sim/guest-runtime.ts';
import { Rng } from '../../src/sim/rng.ts';
import type { WorkloadModel } from '../../src/sim/workloads.ts';

const A = 10;
const B = 20;
const CPU_MS = 3; // one third before A, one between A and B, one after B
const PAGE_WAIT_MS = 5;

/** When the first request completes: page B arrives PAGE_WAIT_MS after it is asked for. */
function firstDone(restartOnPark: boolean): number {
  const model: WorkloadModel = {
    kind: 'kv',
    clients: { connections: 1, thinkMs: 0, pathMs: 0 },
    kernelFaultFraction: 0,
    tasks: [
      {
        name: 'worker',
        count: 1,
        role: 'server',
        pauseMs: 0,
        next: () => ({ cpuMs: CPU_MS, pages: [A, B], writes: 0 }),
      },
    ],
    restartOnPark,
  };
  const queue = new EventQueue();
  const rt = new GuestRuntime(model, 1, 64, queue, new Rng(1), () => {}, {
    ...DEFAULT_COSTS,
    contextSwitchMs: 0,
    asyncFaultMs: 0,
  });
  let hasB = false;
  rt.resume({
    present: (pfn) => pfn !== B || hasB,
    request: () =>
      queue.after(PAGE_WAIT_MS, () => {
        hasB = true;
        rt.arrived([B, 1]);
      }),
  });
  rt.start();
  queue.run(100);
  const bin = rt.latencyPerBin.find((l) => l.length > 0);
  assert.ok(bin, 'the request completed');
  return bin[0];
}

test('a parked handler of a Ferry app runs again from its start; a guest task goes on', () => {
  const goesOn = firstDone(false);
  const restarts = firstDone(true);
  // 2 ms of work to the fault, the wait, then 1 ms (goes on) or all 3 ms again (restarts)
  assert.ok(Math.abs(goesOn - (2 + PAGE_WAIT_MS + 1)) < 1e-6, `goes on: ${goesOn} ms`);
  assert.ok(Math.abs(restarts - (2 + PAGE_WAIT_MS + CPU_MS)) < 1e-6, `restarts: ${restarts} ms`);
});
