// The simulated guest as the migration sees it during postcopy: something that touches
// pages on the destination and stalls on remote faults. This guest is a single
// stream of touches (one vCPU, one task, blocking faults); the vCPU/task model plugs in
// through the same hooks.

import type { EventQueue } from './event-queue.ts';
import type { SimGuestMemory } from './guest-memory.ts';
import type { Rng } from './rng.ts';
import type { VmSpec } from './scenario.ts';

/** What a guest may ask of the migration. */
export interface GuestPort {
  /** Touches `pfn` on the destination: present, or wait (a remote fault was taken). */
  fault(pfn: number): 'present' | 'wait';
  present(pfn: number): boolean;
}

/** What the migration tells the guest. */
export interface GuestHooks {
  /** The guest runs on the destination in postcopy from now on. */
  start(): void;
  /** Pages were installed on the destination. */
  arrived(): void;
  /** The migration ended: stop generating touches. */
  stop(): void;
  /** Time spent stalled on remote faults, ms. */
  readonly blockedMs: number;
}

export class SequentialAccessGuest implements GuestHooks {
  private running = false;
  private waitingOn = -1;
  private waitSince = 0;
  blockedMs = 0;
  private readonly hotPages: number;
  private readonly thinkMs: number;

  constructor(
    vm: VmSpec,
    private readonly memory: SimGuestMemory,
    private readonly queue: EventQueue,
    private readonly rng: Rng,
    private readonly port: GuestPort,
  ) {
    this.hotPages = Math.min(memory.usedPages, Math.round(vm.dirty.hotSetMiB * 256));
    this.thinkMs = vm.access.touchesPerSec > 0 ? 1000 / vm.access.touchesPerSec : Number.POSITIVE_INFINITY;
    this.hotFraction = vm.access.hotFraction;
  }

  private readonly hotFraction: number;

  start(): void {
    if (this.running || !Number.isFinite(this.thinkMs)) return;
    this.running = true;
    this.schedule();
  }

  stop(): void {
    this.running = false;
  }

  arrived(): void {
    if (this.waitingOn < 0 || !this.port.present(this.waitingOn)) return;
    this.waitingOn = -1;
    this.blockedMs += this.queue.now - this.waitSince;
    this.schedule();
  }

  private schedule(): void {
    this.queue.after(this.rng.exp(this.thinkMs), () => this.touch());
  }

  private touch(): void {
    if (!this.running) return;
    const inHot = this.hotPages > 0 && this.rng.next() < this.hotFraction;
    const pfn = inHot ? this.rng.int(this.hotPages) : this.rng.int(Math.max(1, this.memory.usedPages));
    if (this.port.fault(pfn) === 'present') {
      this.schedule();
      return;
    }
    this.waitingOn = pfn;
    this.waitSince = this.queue.now;
  }
}
