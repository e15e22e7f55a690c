// A simulated datacenter built from a scenario: hosts with full-duplex NICs, switches
// and links, VMs, and the migrations between them, run in virtual time.

import type { MigrationReport, Report, WorkloadReport } from '../report/schema.ts';
import { EventQueue } from './event-queue.ts';
import { type MigrationProgress, type Path, SimMigration } from './migration.ts';
import { Flow, Network, Resource } from './network.ts';
import { Rng } from './rng.ts';
import type { Scenario } from './scenario.ts';
import { SimVm } from './vm.ts';
import { workloadReport } from './workload-report.ts';

const DEFAULT_SWITCH = '';

/**
 * Whether the flows sending through `r` fill it: a migration's pages, or replies with
 * bytes queued (a fluid flow with a backlog sends at the link's rate).
 */
function saturated(r: Resource): boolean {
  let used = 0;
  for (const f of r.flows) used += f.rate;
  return r.flows.length > 0 && used >= 0.95 * r.capacity;
}

/** Mbit/s of line rate to bytes per ms of goodput. */
function goodput(mbps: number, efficiency: number): number {
  return (mbps * 1e6 * efficiency) / 8 / 1000;
}

interface HostNode {
  up: Resource;
  down: Resource;
  switch: string;
  latencyMs: number;
  /** The uplink's standing queue while saturated, ms. */
  uplinkQueueMs: number;
  /** The downlink's queue while a migration's pages come in, ms. */
  downlinkQueueMs: number;
  /** Migrations coming in to this host now. */
  incoming: number;
}

interface Edge {
  to: string;
  resource: Resource;
  latencyMs: number;
}

export interface RunOptions {
  seed: number;
  /** Reported as the variant of every migration that has none. */
  variant?: string;
  /** Called every `everyMs` of virtual time while migrations run. */
  progress?: { everyMs: number; report: (nowMs: number, migrations: MigrationProgress[]) => void };
}

export class World {
  readonly queue = new EventQueue();
  readonly net = new Network(this.queue);
  private readonly hosts = new Map<string, HostNode>();
  /** Each host's flow of replies to the switch (see replyPath). */
  private readonly replyFlows = new Map<string, Flow>();
  private readonly edges = new Map<string, Edge[]>();
  private readonly switchLatency = new Map<string, number>();
  readonly migrations: SimMigration[] = [];
  private readonly reports: (MigrationReport | undefined)[] = [];

  constructor(
    readonly scenario: Scenario,
    readonly options: RunOptions,
  ) {
    const eff = scenario.network.efficiency;
    for (const s of scenario.switches) this.switchLatency.set(s.name, s.latencyUs / 1000);
    for (const l of scenario.links) {
      const cap = goodput(l.bandwidthMbps, eff);
      this.edge(l.from, {
        to: l.to,
        resource: new Resource(`${l.from}->${l.to}`, cap),
        latencyMs: l.latencyUs / 1000,
      });
      this.edge(l.to, {
        to: l.from,
        resource: new Resource(`${l.to}->${l.from}`, cap),
        latencyMs: l.latencyUs / 1000,
      });
    }
    const interference = scenario.network.duplexInterference;
    for (const h of scenario.hosts) {
      const up = new Resource(`${h.name}:up`, goodput(h.uploadMbps ?? h.nicMbps, eff));
      const down = new Resource(`${h.name}:down`, goodput(h.downloadMbps ?? h.nicMbps, eff));
      const x = h.duplexInterference ?? interference;
      if (x > 0) up.coupled = { resource: down, interference: x };
      this.hosts.set(h.name, {
        up,
        down,
        switch: h.switch ?? DEFAULT_SWITCH,
        latencyMs: h.latencyUs / 1000,
        uplinkQueueMs: h.uplinkQueueUs / 1000,
        downlinkQueueMs: h.downlinkQueueUs / 1000,
        incoming: 0,
      });
    }
  }

  private edge(from: string, e: Edge): void {
    const list = this.edges.get(from) ?? [];
    list.push(e);
    this.edges.set(from, list);
  }

  /** Shortest switch path (fewest hops) between two hosts, as resources and latency. */
  route(from: string, to: string, capMbps?: number): Path | string {
    const a = this.hosts.get(from)!;
    const b = this.hosts.get(to)!;
    const resources = [a.up];
    let latency = a.latencyMs + b.latencyMs + (this.switchLatency.get(a.switch) ?? 0);
    if (a.switch !== b.switch) {
      const prev = new Map<string, Edge & { from: string }>();
      const seen = new Set([a.switch]);
      const todo = [a.switch];
      while (todo.length > 0 && !seen.has(b.switch)) {
        const s = todo.shift()!;
        for (const e of this.edges.get(s) ?? [])
          if (!seen.has(e.to)) {
            seen.add(e.to);
            prev.set(e.to, { ...e, from: s });
            todo.push(e.to);
          }
      }
      if (!seen.has(b.switch)) return `no network path from host '${from}' to host '${to}'`;
      const hops: Resource[] = [];
      for (let s = b.switch; s !== a.switch; ) {
        const e = prev.get(s)!;
        hops.unshift(e.resource);
        latency += e.latencyMs + (this.switchLatency.get(s) ?? 0);
        s = e.from;
      }
      resources.push(...hops);
    }
    resources.push(b.down);
    const cap = capMbps ? goodput(capMbps, this.scenario.network.efficiency) : Number.POSITIVE_INFINITY;
    return { bulk: new Flow(resources, cap), latencyMs: latency };
  }

  /**
   * Replies leave through the NIC of the host the guest runs on and share its upload with
   * migrations. A host's client connections are multiplexed over its one link to the switch
   * (as Ferry's hosts do): one flow per host, whatever its VMs and connections, so that
   * replies in bulk take at most their fair share of the link beside a migration.
   */
  private replyPath(vm: SimVm): (client: number, bytes: number, delivered: () => void) => void {
    return (_client, bytes, delivered) => {
      const host = this.hosts.get(vm.runsOn)!;
      let flow = this.replyFlows.get(vm.runsOn);
      if (!flow) {
        flow = new Flow([host.up], Number.POSITIVE_INFINITY);
        this.replyFlows.set(vm.runsOn, flow);
      }
      // a saturated uplink holds a standing queue (TCP fills the buffer): replies wait it out
      const delay = host.latencyMs + (saturated(host.up) ? host.uplinkQueueMs : 0);
      this.net.send(flow, bytes, () => this.queue.after(delay, delivered));
    };
  }

  /**
   * Requests come in through the NIC of the host the guest runs on: while a migration's
   * pages come in there, they wait out the queue its downlink holds (on average: the
   * fluid links do not queue). Their bytes are few: they take no share of the link.
   */
  private requestPath(vm: SimVm): (client: number, arrived: () => void) => void {
    return (_client, arrived) => {
      const host = this.hosts.get(vm.runsOn)!;
      if (host.downlinkQueueMs > 0 && host.incoming > 0) this.queue.after(host.downlinkQueueMs, arrived);
      else arrived();
    };
  }

  run(): Report {
    const s = this.scenario;
    const rng = new Rng(this.options.seed);
    const vms = new Map<string, SimVm>();
    s.vms.forEach((spec, i) => {
      vms.set(spec.name, new SimVm(spec, this.queue, rng.fork(1_000_000 + i)));
    });
    for (const vm of vms.values()) {
      if (vm.runtime) {
        vm.runtime.replies = this.replyPath(vm);
        vm.runtime.requests = this.requestPath(vm);
      }
      vm.runtime?.start();
    }
    const socketBuffer = s.network.socketBufferKiB * 1024;
    const withWorkloads = s.vms.some((v) => v.workload);
    let reported = 0;
    const settle = () => {
      // workloads run forever: once every migration is over, watch the recovery, then stop
      if (++reported === s.migrations.length && withWorkloads)
        this.queue.horizon = Math.min(this.queue.horizon, this.queue.now + s.settleS * 1000);
    };
    s.migrations.forEach((spec, i) => {
      const migrationRng = rng.fork(i);
      this.queue.at(spec.atS * 1000, () => {
        const vm = vms.get(spec.vm)!;
        const from = vm.host;
        const fail = (reason: string) => {
          this.reports[i] = failedReport(spec, from, this.queue.now, reason, this.options.variant, 'aborted');
          settle();
        };
        if (vm.migrating) return fail(`VM '${spec.vm}' is already migrating`);
        if (from === spec.to) return fail(`VM '${spec.vm}' already runs on host '${spec.to}'`);
        const path = this.route(from, spec.to, spec.maxBandwidthMbps);
        if (typeof path === 'string') return fail(path);
        const m = new SimMigration(this.queue, this.net, spec, vm, from, path, socketBuffer, migrationRng);
        const to = this.hosts.get(spec.to)!;
        to.incoming++;
        vm.migrating = true;
        m.onEnd = (done) => {
          vm.migrating = false;
          to.incoming--;
          const report = done.report(this.options.variant ?? '');
          if (report.outcome === 'completed') vm.host = spec.to;
          vm.runsOn = vm.host;
          this.reports[i] = report;
          settle();
        };
        this.migrations.push(m);
        m.start();
      });
    });
    const progress = this.options.progress;
    if (progress) {
      const tick = () => {
        progress.report(
          this.queue.now,
          this.migrations.map((m) => m.progress()),
        );
        if (reported < s.migrations.length) this.queue.after(progress.everyMs, tick);
      };
      this.queue.after(progress.everyMs, tick);
    }
    this.queue.horizon = s.durationS * 1000;
    this.queue.run();
    for (const m of this.migrations) m.timeout();
    for (const vm of vms.values()) vm.runtime?.stop();
    const migrations = s.migrations.map(
      (spec, i) =>
        this.reports[i] ??
        failedReport(
          spec,
          vms.get(spec.vm)?.host ?? '',
          spec.atS * 1000,
          'the simulation ended before it started',
          this.options.variant,
        ),
    );
    const workloads: WorkloadReport[] = [];
    for (const vm of vms.values()) {
      if (!vm.runtime) continue;
      const mine = migrations.filter((m) => m.vm === vm.spec.name);
      workloads.push(workloadReport(vm, mine[mine.length - 1], this.options.variant ?? '', this.queue.now));
    }
    return { scenario: s.name, seed: this.options.seed, world: 'sim', migrations, workloads };
  }
}

function failedReport(
  spec: Scenario['migrations'][number],
  from: string,
  now: number,
  reason: string,
  variant?: string,
  outcome: MigrationReport['outcome'] = 'failed',
): MigrationReport {
  return {
    vm: spec.vm,
    variant: variant || spec.variant,
    mode: spec.mode,
    cooperative: spec.cooperative,
    source: from,
    destination: spec.to,
    outcome,
    reason,
    startMs: now,
    totalTimeMs: 0,
    switchoverMs: -1,
    downtimeMs: 0,
    bytesSent: 0,
    pagesSent: { bulk: 0, urgent: 0, prepaged: 0, resent: 0, zero: 0 },
    rounds: 0,
    roundPages: [],
    roundEndMs: [],
    remoteFaults: 0,
    demandResends: 0,
    asyncFaults: 0,
    syncFaults: 0,
    vcpuBlockedMs: 0,
    faultLatencyUs: { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 },
    postcopyMs: 0,
    missingPages: [],
    faultLatencyHistogram: [],
  };
}

export function simulate(scenario: Scenario, options: RunOptions): Report {
  return new World(scenario, options).run();
}
