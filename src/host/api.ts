// The control API between `ferry` commands and hosts, and between hosts: HTTP + JSON,
// every call carrying the hosts' shared secret. Requests and replies are typed here once.

import type { MigrationMode } from '../engine/config.ts';
import type { Percentiles } from '../engine/stats.ts';
import type { MigrationReport } from '../report/schema.ts';

export interface VmInfo {
  name: string;
  ramMiB: number;
  vcpus: number;
  app: string;
  /** `incoming`: it runs here while its pages still arrive (postcopy); `migrating`: it is leaving. */
  state: 'running' | 'migrating' | 'incoming' | 'stopped';
  /** host:port where clients reach the app (Redis protocol for kv). */
  endpoint: string;
  /**
   * Counters read from the app's state in guest RAM (memtouch: `steps`, `pagesWritten`;
   * kv: `keys`); absent while the app's header page has not arrived here.
   */
  appStats?: Record<string, number>;
  /**
   * Client connections open now; requests answered since the VM was created (on any host),
   * their time in the guest, handed to it until answered (ms), and the part of that spent
   * crossing between the host's thread and the vCPUs' (ms).
   */
  clients?: { connections: number; served: number; servedMs: number; hopMs: number };
}

/** What a VM's memory holds, how fast its guest writes it and how busy it is (outside migrations). */
export interface MemoryProfile {
  pages: number;
  /** Pages holding only zeroes (a migration sends them as bare records). */
  zeroPages: number;
  /** Distinct pages written during the sample. */
  dirtyPages: number;
  sampleMs: number;
  /** The vCPU threads' time on a host core during the sample, all vCPUs together. */
  vcpuRunMs: number;
  /** The vCPU threads' time runnable but waiting for a host core during the sample. */
  vcpuWaitMs: number;
  /** Requests the guest's tasks completed during the sample. */
  requests: number;
}

export interface CreateVm {
  name: string;
  ramMiB: number;
  vcpus: number;
  app: 'kv' | 'http' | 'memtouch';
  appOptions?: Record<string, unknown>;
  /** Server tasks per vCPU. */
  servers?: number;
}

export interface StartMigration {
  vm: string;
  /** Control API URL of the destination host. */
  to: string;
  mode: MigrationMode;
  cooperative: boolean;
  downtimeLimitMs: number;
  maxBandwidthMbps?: number;
  prepage: number;
}

export interface MigrationProgressInfo {
  phase: string;
  bytesSent: number;
  pagesPending: number;
  pages: number;
  rounds: number;
}

export interface RealMigrationReport extends MigrationReport {
  integrity: { checked: boolean; ok: boolean };
  /** From the request to the first page: the destination boots its vCPUs, the lanes connect. */
  setupMs: number;
  /**
   * From the guest's resume on the destination to the end: its vCPU threads' time on a host
   * core, and runnable but waiting for one (steal time, as a VM would call it).
   */
  vcpuRunMs: number;
  vcpuWaitMs: number;
  /** Time the guest's async-faulted tasks waited, from their park to their page-ready. */
  vcpuParkedMs: number;
  /**
   * The same span on the destination host's main thread (it installs the pages and carries
   * the VM's connections): on a core, and runnable but waiting for one.
   */
  hostRunMs: number;
  hostWaitMs: number;
}

export interface MigrationInfo {
  id: string;
  vm: string;
  state: 'running' | 'done';
  progress: MigrationProgressInfo;
  report?: RealMigrationReport;
}

/** The destination's side of a migration, as the source host asks for it. */
export interface IncomingRequest {
  migrationId: string;
  vm: string;
  ramMiB: number;
  vcpus: number;
  app: string;
  appOptions: Record<string, unknown>;
  servers: number;
  cooperative: boolean;
  /** The source host's id, for logs. */
  from: string;
  /** The switch the VM's clients come through: the destination must be linked to it too. */
  switch?: string;
  /**
   * The source host's lane port: the destination opens the bulk lane to it, at the address
   * the source's control lane came from (a connection it opened reads into one buffer).
   */
  bulkPort: number;
}

export interface IncomingInfo {
  migrationId: string;
  state: 'waiting' | 'running' | 'done';
  lanesPort: number;
  /** Where the source's fault thread opens the urgent lane (to this host's fault thread). */
  urgentPort: number;
  /** Why the destination gave the migration up before it started. */
  dropped?: string;
  /** Where the VM's clients connect here, once it has resumed here. */
  endpoint?: string;
  result?: {
    outcome: string;
    reason: string;
    resumedAt: number;
    ramHash: string;
    remoteFaults: number;
    faultLatencyUs: Percentiles;
    faultLatencyHistogram: [number, number][];
    asyncFaults: number;
    syncFaults: number;
    vcpuBlockedMs: number;
    vcpuRunMs: number;
    vcpuWaitMs: number;
    vcpuParkedMs: number;
    hostRunMs: number;
    hostWaitMs: number;
  };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Calls a host's API; errors carry the host's one-line message. */
export async function call<T>(
  base: string,
  secret: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<T> {
  let res: Response;
  try {
    res = await fetch(new URL(path, base), {
      method,
      headers: { 'content-type': 'application/json', 'x-ferry-secret': secret },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new ApiError(
      0,
      `cannot reach host ${base}: ${cause?.code ?? cause?.message ?? (e as Error).message}`,
    );
  }
  const text = await res.text();
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    throw new ApiError(res.status, `host ${base} answered ${res.status} with non-JSON`);
  }
  if (!res.ok)
    throw new ApiError(
      res.status,
      (data as { error?: string }).error ?? `host ${base} answered ${res.status}`,
    );
  return data as T;
}
