// One real migration under load, measured as users see it: a VM is created on the first
// host of a cluster and filled with data, clients load it through the virtual switch, it
// moves to the second host, and the run yields the report both worlds write (the migration,
// the workload's throughput around the switchover) plus what the clients saw and whether
// the RAM arrived intact. The throughput is counted where the VM serves its clients (its
// network device's answered-request counter, which moves with the VM), so it is the same
// measure whichever client drives the load.

import type { MigrationMode } from '../engine/config.ts';
import {
  call,
  type MemoryProfile,
  type MigrationInfo,
  type MigrationProgressInfo,
  type RealMigrationReport,
  type StartMigration,
  type VmInfo,
} from '../host/api.ts';
import { runLoad } from '../host/loadgen.ts';
import type { Report, WorkloadReport } from '../report/schema.ts';
import { aroundSwitchover, BIN_MS, recoveryMs, round3 } from '../report/throughput.ts';
import { type ClientKind, type ClientResult, pickClient, startClient } from './clients.ts';
import type { Cluster } from './loopback.ts';
import { QueueProbe } from './queue-probe.ts';

export interface TrialOptions {
  cluster: Cluster;
  vm?: string;
  app: 'kv' | 'http';
  ramMiB: number;
  vcpus: number;
  mode: MigrationMode;
  cooperative: boolean;
  client: ClientKind | 'auto';
  connections: number;
  /** Data the app holds before the load starts (kv: 1 KiB values; http: its objects). */
  fillMiB: number;
  maxBandwidthMbps?: number;
  downtimeLimitMs?: number;
  prepage?: number;
  /** Load before the migration starts (the baseline is measured over it; at least 2 s). */
  warmupMs: number;
  /** Load after the migration has ended. */
  afterMs: number;
  /** Label of this run in the report (e.g. "postcopy cooperative"). */
  variant?: string;
  onProgress?: (p: TrialProgress) => void;
}

export type TrialStage = 'filling' | 'warming up' | 'migrating' | 'after';

export interface TrialProgress {
  stage: TrialStage;
  /** Since the load started. */
  elapsedMs: number;
  /** Requests answered over the last second. */
  opsPerSec: number;
  migration?: MigrationProgressInfo;
}

/**
 * The clients' requests over a stretch of the run: how many, each connection's cycle from
 * one request to its next (connections × stretch ÷ requests), and how much of it the
 * request spent in the guest (the rest is its way outside: client, switch, hosts, links).
 */
export interface RequestTimes {
  requests: number;
  /** Means per request: the clients' cycle, its time in the guest… */
  cycleMs: number;
  guestMs: number;
  /** …and the part of that spent crossing between the host's thread and the vCPUs'. */
  hopMs: number;
}

/**
 * A request's mean way through the hosts: its cycle less its time in the guest, less
 * `queueMs` spent in a link's queue, plus its crossings between the host's thread and the
 * vCPUs' (which the guest's time counts).
 */
export function wayThroughHosts(r: RequestTimes, queueMs = 0): number {
  return Math.max(0, r.cycleMs - r.guestMs - queueMs) + (r.hopMs ?? 0);
}

/** How the workload fared around the switchover. */
export interface Dip {
  baselineOpsPerSec: number;
  /** Throughput in the first second after the switchover ÷ the baseline. */
  first1s: number;
  /** The lowest 100 ms bin from the switchover on ÷ the baseline. */
  lowestBin: number;
  /** From the switchover until a 500 ms window is back to 90% of the baseline (-1: never). */
  recoveryMs: number;
}

export interface TrialResult {
  report: Report & {
    clients: { errors: number; requests: number };
    integrity: RealMigrationReport['integrity'];
  };
  migration: RealMigrationReport;
  workload: WorkloadReport;
  clients: ClientResult & { note?: string };
  dip: Dip;
  /** The VM's memory when its migration began: zero pages, and what the guest wrote over a second. */
  memory: MemoryProfile;
  /** The clients' requests over the memory profile's second, and over the postcopy (if any). */
  requestTimes: { baseline: RequestTimes; postcopy: RequestTimes | null };
  /**
   * On shaped links, the mean of what the destination's downlink held queued over the
   * postcopy (µs at the link's rate): what each request to the VM waited there.
   */
  downlinkQueueUs?: number;
  /** Why the downlink's queue could not be sampled, if it could not. */
  probeError?: string;
}

/** Key `i` as redis-benchmark names it (`key:__rand_int__` with `-r`). */
const redisBenchmarkKey = (i: number) => `key:${String(i).padStart(12, '0')}`;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const now = () => performance.timeOrigin + performance.now();
const AVG_HTTP_OBJECT = (92 * 1024) / 8;

/** How many kv keys (1 KiB values) or http objects (of the mix) make `fillMiB` of data. */
export function fillSize(fillMiB: number): { keys: number; objects: number } {
  const bytes = fillMiB * 2 ** 20;
  return { keys: Math.round(bytes / 1024), objects: Math.max(8, Math.round(bytes / AVG_HTTP_OBJECT)) };
}
/** How long the guest's writes are sampled before its migration. */
const PROFILE_MS = 1000;

export async function runTrial(o: TrialOptions): Promise<TrialResult> {
  const [src, dst] = o.cluster.hosts;
  if (!src || !dst) throw new Error('a trial needs a cluster of two hosts');
  const name = o.vm ?? 'vm1';
  const api = <T>(url: string, method: string, path: string, body?: unknown) =>
    call<T>(url, o.cluster.secretHex, method, path, body);
  const progress = (p: TrialProgress) => o.onProgress?.(p);

  progress({ stage: 'filling', elapsedMs: 0, opsPerSec: 0 });
  const size = fillSize(o.fillMiB);
  const objects = size.objects;
  const keys = Math.max(o.connections, size.keys);
  const vm = await api<VmInfo>(src.url, 'POST', '/v1/vms', {
    name,
    ramMiB: o.ramMiB,
    vcpus: o.vcpus,
    app: o.app,
    ...(o.app === 'http' ? { appOptions: { objects } } : {}),
  });
  try {
    const picked = pickClient(o.app, o.client);
    if (o.app === 'kv') {
      // the keys the clients will read: redis-benchmark's own names (`-r` keys), or the
      // built-in client's
      const fill = await runLoad({
        endpoint: vm.endpoint,
        connections: 16,
        keys,
        setRatio: 1,
        valueBytes: 1000,
        requests: keys,
        sequential: true,
        ...(picked.kind === 'redis-benchmark' ? { keyName: redisBenchmarkKey } : {}),
      });
      if (fill.errors + fill.lost > 0)
        throw new Error(`filling the store failed: ${fill.firstError ?? 'lost commands'}`);
      const stored = (await api<VmInfo[]>(src.url, 'GET', '/v1/vms')).find((v) => v.name === name)?.appStats
        ?.keys;
      if (stored !== keys) throw new Error(`filling the store left ${stored} keys, not ${keys}`);
    }

    const sampler = new ServedSampler(
      o.cluster.hosts.map((h) => h.url),
      name,
      (u, p) => api(u, 'GET', p),
    );
    await sampler.start();
    const t0 = now();
    const client = startClient(picked.kind, {
      address: vm.endpoint,
      app: o.app,
      connections: o.connections,
      keys,
      valueBytes: 1000,
      objects,
    });
    const tick = (stage: TrialStage, migration?: MigrationProgressInfo) =>
      progress({ stage, elapsedMs: now() - t0, opsPerSec: sampler.recentRate(), migration });
    let stopped: ClientResult | undefined;
    let probe: QueueProbe | undefined;
    try {
      // the last second of the warm-up samples what the guest writes
      for (const end = t0 + o.warmupMs - PROFILE_MS; now() < end; await sleep(200)) tick('warming up');
      const profiledAt = now();
      const sampling = api<MemoryProfile>(src.url, 'GET', `/v1/vms/${name}/memory?sampleMs=${PROFILE_MS}`);
      for (const end = now() + PROFILE_MS; now() < end; await sleep(200)) tick('warming up');
      const memory = await sampling;
      // where links are shaped, what waits in the destination's downlink
      const shaped = o.cluster.downlinks?.[dst.name];
      probe = shaped ? new QueueProbe({ dev: shaped.dev, netns: shaped.netns }) : undefined;
      const startedAt = now();
      const started = await api<MigrationInfo>(src.url, 'POST', '/v1/migrations', {
        vm: name,
        to: dst.url,
        mode: o.mode,
        cooperative: o.cooperative,
        downtimeLimitMs: o.downtimeLimitMs ?? 300,
        maxBandwidthMbps: o.maxBandwidthMbps,
        prepage: o.prepage ?? 7,
      } satisfies StartMigration);
      let info = started;
      while (info.state !== 'done') {
        tick('migrating', info.progress);
        await sleep(150);
        info = await api<MigrationInfo>(src.url, 'GET', `/v1/migrations/${started.id}`);
      }
      tick('migrating', info.progress);
      await probe?.stop();
      for (const end = now() + o.afterMs; now() < end; await sleep(200)) tick('after');
      stopped = await client.stop();
      const endMs = now() - t0;
      await sampler.stop();

      const m = info.report!;
      const startMs = startedAt - t0;
      const migration: RealMigrationReport = {
        ...m,
        variant: o.variant ?? '',
        startMs: round3(startMs),
        switchoverMs: m.switchoverMs >= 0 ? round3(startMs + m.switchoverMs) : -1,
      };
      const ops = sampler.opsPerBin(t0, endMs);
      const around = aroundSwitchover(ops, migration.startMs, migration.switchoverMs, endMs);
      const sw = migration.switchoverMs;
      const after = ops.slice(Math.floor(Math.max(0, sw) / BIN_MS), Math.floor(endMs / BIN_MS));
      const dip: Dip = {
        baselineOpsPerSec: round3(around.baseline),
        first1s: around.relative?.first1s ?? 0,
        lowestBin:
          around.baseline > 0 && after.length > 0
            ? round3(Math.min(...after) / (BIN_MS / 1000) / around.baseline)
            : 0,
        recoveryMs: recoveryMs(ops, sw, around.baseline, endMs),
      };
      const workload: WorkloadReport = {
        vm: name,
        variant: o.variant ?? '',
        kind: o.app,
        vcpus: o.vcpus,
        mode: o.mode,
        cooperative: o.cooperative,
        throughput: ops.map((n, i) => [i * BIN_MS, n * (1000 / BIN_MS)]),
        latencyMs: [],
        relativeThroughput: around.relative,
        baselineOpsPerSec: round3(around.baseline),
        vcpu: [],
      };
      const clients = { ...stopped, ...(picked.note ? { note: picked.note } : {}) };
      // the postcopy: from the guest's resume to the last page
      const resumed = startedAt + m.switchoverMs + m.downtimeMs;
      const ended = startedAt + m.totalTimeMs;
      const postcopy =
        m.switchoverMs >= 0 && m.postcopyMs > 0 && ended > resumed
          ? sampler.requestTimes(resumed, ended, o.connections)
          : null;
      const requestTimes = {
        baseline: sampler.requestTimes(profiledAt, profiledAt + PROFILE_MS, o.connections),
        postcopy,
      };
      const queuedBytes = postcopy && shaped ? probe?.meanBacklog(resumed, ended) : undefined;
      return {
        report: {
          scenario: `${o.app} ${o.ramMiB} MiB`,
          seed: 0,
          world: 'real',
          migrations: [migration],
          workloads: [workload],
          clients: { errors: stopped.errors, requests: stopped.requests },
          integrity: migration.integrity,
        },
        migration,
        workload,
        clients,
        dip,
        memory,
        requestTimes,
        ...(queuedBytes !== undefined && shaped
          ? { downlinkQueueUs: round3((queuedBytes * 8) / shaped.mbps) }
          : {}),
        ...(probe?.error ? { probeError: probe.error } : {}),
      };
    } finally {
      await probe?.stop();
      if (!stopped) await client.stop().catch(() => undefined);
      await sampler.stop();
    }
  } finally {
    // the VM goes, wherever it ended up
    for (const h of o.cluster.hosts) await api(h.url, 'DELETE', `/v1/vms/${name}`).catch(() => undefined);
  }
}

const NONE_SERVED = { served: 0, servedMs: 0, hopMs: 0 };

/**
 * Reads the VM's answered-request counter from every host about every 50 ms (it moves with
 * the VM, so the largest value seen is the count so far) and turns the samples into
 * requests per 100 ms bin.
 */
class ServedSampler {
  /** [when, requests answered, their time in the guest, their time crossing threads (ms)] */
  private samples: [number, number, number, number][] = [];
  private running = false;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly hosts: string[],
    private readonly vm: string,
    private readonly get: (url: string, path: string) => Promise<unknown>,
  ) {}

  async start(): Promise<void> {
    this.running = true;
    await this.sample();
    this.loop = (async () => {
      while (this.running) {
        await sleep(50);
        await this.sample();
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    await this.sample();
  }

  private async sample(): Promise<void> {
    const seen = await Promise.all(
      this.hosts.map((h) =>
        (this.get(h, '/v1/vms') as Promise<VmInfo[]>).then(
          (vms) => vms.find((v) => v.name === this.vm)?.clients ?? NONE_SERVED,
          () => NONE_SERVED,
        ),
      ),
    );
    // the host that has answered the most runs the VM (or ran it last)
    const best = seen.reduce((a, b) => (b.served > a.served ? b : a), NONE_SERVED);
    const last = this.samples.at(-1);
    if (last && last[1] >= best.served) this.samples.push([now(), last[1], last[2], last[3]]);
    else this.samples.push([now(), best.served, best.servedMs, best.hopMs]);
  }

  /** Requests answered per second over the last second. */
  recentRate(): number {
    const s = this.samples;
    if (s.length < 2) return 0;
    const end = s[s.length - 1];
    const from = s.find(([t]) => t >= end[0] - 1000) ?? s[0];
    return end[0] > from[0] ? ((end[1] - from[1]) * 1000) / (end[0] - from[0]) : 0;
  }

  /** Counter `k` (1: requests, 2: their time in the guest, 3: crossing threads) at time `t`, interpolated. */
  private at(t: number, k: 1 | 2 | 3): number {
    const s = this.samples;
    if (s.length === 0) return 0;
    if (t <= s[0][0]) return s[0][k];
    for (let i = 1; i < s.length; i++)
      if (s[i][0] >= t) {
        const ta = s[i - 1][0];
        const tb = s[i][0];
        const a = s[i - 1][k];
        const b = s[i][k];
        return tb > ta ? a + ((b - a) * (t - ta)) / (tb - ta) : b;
      }
    return s[s.length - 1][k];
  }

  /** Requests per 100 ms bin over [t0, t0 + endMs), the counter interpolated at bin edges. */
  opsPerBin(t0: number, endMs: number): number[] {
    const bins: number[] = [];
    for (let t = 0; t + BIN_MS <= endMs; t += BIN_MS)
      bins.push(this.at(t0 + t + BIN_MS, 1) - this.at(t0 + t, 1));
    return bins;
  }

  /** The clients' requests over [from, to) (absolute ms) and their mean time in the guest. */
  requestTimes(from: number, to: number, connections: number): RequestTimes {
    const requests = this.at(to, 1) - this.at(from, 1);
    const guestMs = this.at(to, 2) - this.at(from, 2);
    const hopMs = this.at(to, 3) - this.at(from, 3);
    return {
      requests: Math.round(requests),
      cycleMs: requests > 0 ? round3(((to - from) * connections) / requests) : 0,
      guestMs: requests > 0 ? round3(guestMs / requests) : 0,
      hopMs: requests > 0 ? round3(hopMs / requests) : 0,
    };
  }
}
