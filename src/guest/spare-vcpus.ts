// vCPU workers started ahead of need. A worker's start loads the guest kernel and the apps:
// 160–230 ms on the reference machine, most of a migration's set-up when the destination
// boots its vCPUs then. A host keeps a few waiting; a VM created or moving in takes them,
// and they are replaced once the host has been quiet (not migrating) for a while: a start
// takes a core for a quarter of a second, and one begun in the short gap between two
// migrations delayed the next one's switchover by milliseconds.

import { Worker } from 'node:worker_threads';

/** The vCPU thread's script: TypeScript through tsx, unless a bundled one is given. */
let script = new URL('./vcpu-worker.mjs', import.meta.url);

/** Spares taken are replaced once the host has not been migrating for this long. */
const QUIET_MS = 1000;
/** How often a host short of spares looks whether it is migrating. */
const LOOK_MS = 100;

const spares: Worker[] = [];
let wanted = 0;
let busy: () => boolean = () => false;
let refill: ReturnType<typeof setTimeout> | undefined;
/** Since when the host has been seen quiet, while spares are missing. */
let quietSince: number | undefined;

function refillLater(): void {
  if (refill !== undefined) return;
  refill = setTimeout(() => {
    refill = undefined;
    const now = performance.now();
    if (busy()) quietSince = undefined;
    else quietSince ??= now;
    if (quietSince !== undefined && now - quietSince >= QUIET_MS) {
      quietSince = undefined;
      while (spares.length < wanted) startSpare();
    } else refillLater();
  }, LOOK_MS);
  refill.unref();
}

function startSpare(): void {
  const w = new Worker(script);
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
 * replaced once `isBusy` (the host is migrating) has said no for a second.
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

/**
 * Starts vCPU threads from `url` from now on (spares already waiting are started again):
 * a script bundled with the guest kernel and the apps loads in a sixth of the CPU.
 */
export function useVcpuScript(url: URL): void {
  script = url;
  const n = spares.length;
  while (spares.length > 0) void spares.pop()?.terminate();
  while (spares.length < n) startSpare();
}

/** Spare vCPU workers waiting now. */
export function spareVcpus(): number {
  return spares.length;
}

/** A worker for a vCPU: a spare when one is waiting, else a new one. */
export function vcpuWorker(): Worker {
  const w = spares.shift();
  if (!w) return new Worker(script);
  w.removeAllListeners('error');
  w.removeAllListeners('exit');
  w.ref();
  quietSince = undefined; // a VM is being created or moving in
  refillLater();
  return w;
}
