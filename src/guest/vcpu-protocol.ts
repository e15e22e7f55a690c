// The messages between a VM's host thread and its vCPU workers, and the shared control
// words they both use.

import type { MessagePort } from 'node:worker_threads';
import type { RamBuffers } from './ram.ts';

export interface Request {
  id: number;
  args: Uint8Array[];
}

/** A guest app as a vCPU runs it: all its state is in guest RAM, reached through `mem`. */
export interface GuestApp {
  /** Serves one request; may be cut short by a remote fault and run again from the start. */
  execute?(args: Uint8Array[]): Uint8Array;
  /**
   * The reply to a request whose handler threw (its writes are rolled back). Without it the
   * error stops the vCPU, as a bug in a kernel would.
   */
  failed?(error: Error): Uint8Array;
  /** A long job's next step; returns ms until the next one. */
  step?(): number;
}

/**
 * A few requests of one app, which a new vCPU thread serves on scratch RAM before its VM's
 * first request (so that request runs compiled code); an app module lists them in
 * `rehearsals()`.
 */
export interface Rehearsal {
  kind: string;
  options: Record<string, unknown>;
  requests: Uint8Array[][];
}

/** Which app, where in guest RAM, and the module that opens it (apps sit above the guest). */
export interface AppConfig {
  module: string;
  kind: string;
  base: number;
  size: number;
  options: Record<string, unknown>;
}

export type ToVcpu =
  | {
      type: 'start';
      vcpu: number;
      ram: RamBuffers;
      control: SharedArrayBuffer;
      app: AppConfig;
      cooperative: boolean;
      faultLimit: number;
      servers: number;
      runJob: boolean;
      /** The page this vCPU's kernel stages requests in (touched in kernel context). */
      kernelPage: number;
      pending: Request[];
    }
  /** `at`: when the host handed it in (epochMs). */
  | { type: 'request'; req: Request; at: number }
  | { type: 'ready'; token: number }
  /**
   * Where remote faults go from now on, and "page ready" comes back from: a port to the
   * host's fault thread (postcopy), or null for the host's loop.
   */
  | { type: 'faults'; port: MessagePort | null }
  /** `seq` tells this pause's answer from a late one to an earlier pause. */
  | { type: 'pause'; seq: number }
  | { type: 'resume'; cooperative: boolean; pending: Request[] }
  | { type: 'stats' }
  | { type: 'stop' };

/** A remote fault as a vCPU reports it; `token` 0 for a blocking fault (the vCPU waits on presence). */
export interface FaultReport {
  type: 'fault';
  vcpu: number;
  pfn: number;
  token: number;
}

export type FromVcpu =
  /**
   * `wokeMs`: the request's wait for its halted vCPU's thread to take it (0: the vCPU was
   * running); `at`: when the reply left (epochMs).
   */
  | { type: 'reply'; id: number; bytes: Uint8Array; wokeMs: number; at: number }
  | FaultReport
  | { type: 'paused'; vcpu: number; seq: number; pending: Request[]; stats: VcpuStats }
  | { type: 'started'; vcpu: number }
  /** The vCPU runs again (ms since the epoch, sub-ms precision): its first instruction. */
  | { type: 'resumed'; vcpu: number; at: number }
  | { type: 'stats'; vcpu: number; stats: VcpuStats }
  | { type: 'error'; vcpu: number; message: string };

export interface VcpuStats {
  asyncFaults: number;
  syncFaults: number;
  blockedMs: number;
  ops: number;
  /**
   * Since the vCPU last resumed: time its thread ran on a host core, and time it was
   * runnable but waited for one (the host's scheduler statistics; 0 where unavailable).
   */
  runMs: number;
  waitMs: number;
  /** Time async-faulted tasks waited, from their park to their page-ready reaching the vCPU. */
  parkedMs: number;
}

/** Now, in ms since the epoch with sub-ms precision: comparable across threads. */
export const epochMs = (): number => performance.timeOrigin + performance.now();

export function noStats(): VcpuStats {
  return { asyncFaults: 0, syncFaults: 0, blockedMs: 0, ops: 0, runMs: 0, waitMs: 0, parkedMs: 0 };
}

/** Adds `more` into `into`, field by field. */
export function addStats(into: VcpuStats, more: VcpuStats): void {
  for (const k of Object.keys(into) as (keyof VcpuStats)[]) into[k] += more[k];
}

/** Index of the "pause requested" flag in the VM's control words. */
export const CONTROL_PAUSE = 0;
/** Index of the "abandon waits" flag: set when the VM stops for good. */
export const CONTROL_ABORT = 1;
/** Index of the app lock: handlers on different vCPUs run one at a time, as in Redis. */
export const CONTROL_APP_LOCK = 2;
export const CONTROL_WORDS = 4;

/**
 * Each vCPU's run state, from its control word: running tasks, halted (nothing runnable,
 * waiting for a message or a timer), or held by the host. A halted vCPU is held without
 * being woken, as a hypervisor pauses a halted vCPU without kicking it: a stop then costs
 * no hop to the vCPU's thread and back. Only the host holds; only the vCPU's `resume` lets go.
 */
export const VCPU_RUNNING = 0;
export const VCPU_HALTED = 1;
export const VCPU_HELD = 2;

/** Control words of a VM of `vcpus`: the shared ones, then a run state and a reply count per vCPU. */
export function controlWords(vcpus: number): number {
  return CONTROL_WORDS + 2 * vcpus;
}

/** Index of vCPU `v`'s run state. */
export function vcpuStateWord(v: number): number {
  return CONTROL_WORDS + 2 * v;
}

/** Index of the number of replies vCPU `v` has posted (the host compares it with those it got). */
export function vcpuRepliesWord(v: number): number {
  return CONTROL_WORDS + 2 * v + 1;
}
