// A simulated VM for the whole run: its memory, its dirty log, and (when it has a
// workload) its guest at work, which keeps running before, during and after migrations.

import { PageSet } from '../engine/page-set.ts';
import type { EventQueue } from './event-queue.ts';
import { SimDirtyLog, SimGuestMemory } from './guest-memory.ts';
import { DEFAULT_COSTS, GuestRuntime } from './guest-runtime.ts';
import type { Rng } from './rng.ts';
import type { VmSpec } from './scenario.ts';
import {
  httpModel,
  IDLE_MODEL,
  kvModel,
  memtouchModel,
  oltpModel,
  type WorkloadModel,
  webModel,
} from './workloads.ts';

/** The VM's workload; `ramPages` is its RAM (the apps lay out their region over it). */
export function workloadModel(
  vm: VmSpec,
  usedPages: number,
  ramPages = new SimGuestMemory(vm).pageCount,
): WorkloadModel | undefined {
  const w = vm.workload;
  if (!w) return undefined;
  switch (w.kind) {
    case 'web':
      return webModel(w, usedPages);
    case 'oltp':
      return oltpModel(w, usedPages);
    case 'memtouch':
      return memtouchModel(w, usedPages);
    case 'kv':
      return kvModel(w, usedPages, ramPages, vm.vcpus);
    case 'http':
      return httpModel(w, usedPages, ramPages, vm.vcpus);
    case 'idle':
      return IDLE_MODEL;
  }
}

export class SimVm {
  readonly memory: SimGuestMemory;
  readonly dirty: SimDirtyLog;
  readonly runtime: GuestRuntime | undefined;
  /** Where the VM lives (a migration moves it when it completes). */
  host: string;
  /** Where the guest runs now: the destination from a postcopy's switchover on. */
  runsOn: string;
  migrating = false;

  constructor(
    readonly spec: VmSpec,
    queue: EventQueue,
    rng: Rng,
  ) {
    this.host = spec.host;
    this.runsOn = spec.host;
    this.memory = new SimGuestMemory(spec);
    const dirtyRng = rng.fork(2);
    this.dirty = new SimDirtyLog(spec, this.memory, queue.now, () => dirtyRng.next());
    const model = workloadModel(spec, this.memory.usedPages, this.memory.pageCount);
    if (model) {
      const written = new PageSet(this.memory.pageCount);
      this.dirty.extra = written;
      this.runtime = new GuestRuntime(
        model,
        spec.vcpus,
        spec.asyncFaultLimit,
        queue,
        rng.fork(3),
        (pfn) => written.add(pfn),
        { ...DEFAULT_COSTS, asyncFaultMs: spec.asyncFaultCpuUs / 1000 },
      );
      this.runtime.wakeDelayMs = spec.faultWakeUs / 1000;
    }
  }
}
