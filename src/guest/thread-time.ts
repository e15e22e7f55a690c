// A thread's time on a host core and runnable but waiting for one, from the kernel's
// scheduler statistics (/proc/thread-self/schedstat): how much a busy host slowed it.

import { readFileSync } from 'node:fs';

export interface ThreadTime {
  runMs: number;
  waitMs: number;
}

/** The calling thread's times so far (ms); zeros where the kernel does not say. */
export function threadTime(): ThreadTime {
  try {
    const [run, wait] = readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ').map(Number);
    return Number.isFinite(run) && Number.isFinite(wait) ? { runMs: run / 1e6, waitMs: wait / 1e6 } : zero();
  } catch {
    return zero();
  }
}

/** The calling thread's times since `base`. */
export function threadTimeSince(base: ThreadTime): ThreadTime {
  const now = threadTime();
  return { runMs: now.runMs - base.runMs, waitMs: now.waitMs - base.waitMs };
}

function zero(): ThreadTime {
  return { runMs: 0, waitMs: 0 };
}
