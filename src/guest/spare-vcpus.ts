// vCPU workers started ahead of need. A worker's start loads the guest kernel and the apps:
// 160–230 ms on the reference machine, most of a migration's set-up when the destination
// boots its vCPUs then. A host keeps a few waiting; a VM created or moving in takes them,
// and they are replaced once the host is not migrating (a start competes for the cores).

import { Worker } from 'node:worker_threads';

const WORKER_URL = new URL('./vcpu-worker.mjs', import.meta.url);

/** A spare taken is replaced this much later, or as much later again while the host is busy. */
const REFILL_DELAY_MS = 1000;

const spares: Worker[] = [];
let wanted = 0;
let busy: () => boolean = () => false;
let refill: ReturnType<typeof setTimeout> | undefined;

function refillLater(): void {
  if (refill !== undefined) return;
  refill = setTimeout(() => {
    refill = undefined;
    if (busy()) refillLater();
    else while (spares.length < wanted) startSpare();
  }, REFILL_DELAY_MS);
  refill.unref();
}

function startSpare(): void {
  const w = new Worker(WORKER_URL);
  w.unref(); // a spare keeps no process alive
  const drop = () => {
    const i = spares.indexOf(w);
    if (i >= 0) spares.splice(i, 1);
  };
  // a spare that fails is dropped (a VM that needs a vCPU then starts its own and hears why)
  w.on('error', drop);
  w.on('exit', drop);
  spares.push(w);
}

/**
 * Keeps `count` spare vCPU workers ready, started now; 0 stops them. Those taken are
 * replaced when `isBusy` (the host is migrating) says no.
 */
export function keepSpareVcpus(count: number, isBusy: () => boolean = () => false): void {
  if (!Number.isInteger(count) || count < 0)
    throw new RangeError(`spare vCPUs must be a whole number ≥ 0, got ${count}`);
  wanted = count;
  busy = isBusy;
  if (count === 0) {
    clearTimeout(refill);
    refill = undefined;
  }
  while (spares.length > wanted) void spares.pop()?.terminate();
  while (spares.length < wanted) startSpare();
}

/** Spare vCPU workers waiting now. */
export function spareVcpus(): number {
  return spares.length;
}

/** A worker for a vCPU: a spare when one is waiting, else a new one. */
export function vcpuWorker(): Worker {
  const w = spares.shift();
  if (!w) return new Worker(WORKER_URL);
  w.removeAllListeners('error');
  w.removeAllListeners('exit');
  w.ref();
  refillLater();
  return w;
}
