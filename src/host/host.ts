// A `ferry host`: runs VMs (guest RAM, vCPU workers, a network device each, reached through
// the virtual switch or a port of the host), serves the control API, and migrates VMs to
// and from other hosts over authenticated TCP lanes.

import { randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { APP_KINDS, APP_MODULE, appStats, formatApp, protocolOf } from '../apps/index.ts';
import { migrationConfig } from '../engine/config.ts';
import { PAGE_SIZE } from '../engine/messages.ts';
import { PageSet } from '../engine/page-set.ts';
import { histogram, percentiles } from '../engine/stats.ts';
import { ArrayAccess } from '../guest/access.ts';
import { GuestMachine, kernelPages, type MachineSpec } from '../guest/machine.ts';
import { GuestRam } from '../guest/ram.ts';
import { keepSpareVcpus, useVcpuScript } from '../guest/spare-vcpus.ts';
import { type ThreadTime, threadTime, threadTimeSince } from '../guest/thread-time.ts';
import {
  ApiError,
  type CreateVm,
  call,
  type IncomingInfo,
  type IncomingRequest,
  type MemoryProfile,
  type MigrationInfo,
  type RealMigrationReport,
  type StartMigration,
  type VmInfo,
} from './api.ts';
import { type ClientPorts, DirectPorts } from './client-ports.ts';
import { DestinationDriver } from './destination-driver.ts';
import { FAULT_THREAD_NICE, FaultPath } from './fault-path.ts';
import { checkLaneLatency, delayedLane } from './lane-latency.ts';
import { type NicState, VmNic } from './nic.ts';
import { RamPool } from './ram-pool.ts';
import { type GuestDevices, type Lanes, SourceDriver } from './source-driver.ts';
import { SwitchPorts } from './switch-link.ts';
import {
  ALL_CAPABILITIES,
  connectLane,
  type LaneConnection,
  type Listener,
  listenLanes,
} from './transport.ts';
import { bundleVcpuScript } from './vcpu-bundle.ts';

export interface HostOptions {
  id: string;
  host: string;
  port: number;
  /** Port for migration lanes (0: any). */
  lanesPort: number;
  /** Port the urgent lanes of migrations into this host arrive at, on its fault thread (0: any). */
  urgentPort?: number;
  secret: Uint8Array;
  /** The virtual switch ("address:port") through which clients reach this host's VMs. */
  switchAddress?: string;
  /** MiB of guest RAM kept, once its VM left or stopped, for the next VMs (default 2048). */
  ramPoolMiB?: number;
  /**
   * Latency (ms) added to every message that reaches this host on a migration lane, as
   * over a longer link (default 0; see lane-latency.ts).
   */
  laneLatencyMs?: number;
  /** vCPU workers kept started, ready for the next VM created or moving in (default 2). */
  spareVcpus?: number;
  /** The fault thread's nice value (default `FAULT_THREAD_NICE`; 0: the host's own). */
  faultThreadNice?: number;
  log: (line: string) => void;
}

interface Vm {
  name: string;
  spec: MachineSpec;
  app: string;
  appOptions: Record<string, unknown>;
  machine: GuestMachine | undefined;
  nic: VmNic;
  /** Where its clients connect. */
  address: string;
  state: VmInfo['state'];
}

interface Outgoing {
  info: MigrationInfo;
  driver: SourceDriver;
}

interface Incoming {
  info: IncomingInfo;
  request: IncomingRequest;
  lanes: Partial<Lanes>;
  machine: GuestMachine;
  /** Whether its RAM was all zeros when it came (else the migration zeroes the zero pages). */
  ramZeroed: boolean;
  driver?: DestinationDriver;
  /** Drops the incoming VM when its lanes do not all arrive in time. */
  expiry?: NodeJS.Timeout;
}

/** Spare vCPU workers by default: a 2-vCPU VM boots without starting a thread. */
const SPARE_VCPUS = 2;

/** How long a prepared incoming VM waits for the source's lanes. */
const LANES_TIMEOUT_MS = 30_000;

/** How long a source waits for the destination to open the bulk lane back to it. */
const BULK_LANE_TIMEOUT_MS = 10_000;

/**
 * The most the destination's bulk lane reads at once (into the frame pool's chunks, see
 * ChunkReader): a read takes what the socket holds, up to this, and its frames are checked
 * in one callback. A precopy frame's worth: fewer reads, and fewer frames spanning two
 * chunks (copied); demands are read on the fault thread, which does not wait for it.
 */
const BULK_READ_BUFFER = 1024 * 1024;

/** The host part of a lane's "address:port" (IPv6 in brackets). */
const hostOf = (address: string) => address.slice(0, address.lastIndexOf(':')).replace(/^\[(.*)\]$/, '$1');

const clock = () => performance.timeOrigin + performance.now();

export class Host {
  private readonly vms = new Map<string, Vm>();
  private readonly ramPool: RamPool;
  private readonly outgoing = new Map<string, Outgoing>();
  private readonly incoming = new Map<string, Incoming>();
  /** Outgoing migrations waiting for the destination to open their bulk lane. */
  private readonly awaitedBulk = new Map<string, (lane: LaneConnection) => void>();
  private ports: ClientPorts;
  private server: http.Server | undefined;
  private lanes: Listener | undefined;
  /** The thread that holds the urgent lanes (remote faults, demands, urgent pages). */
  private faults: FaultPath | undefined;
  port = 0;
  private readonly secretHex: string;

  constructor(readonly options: HostOptions) {
    checkLaneLatency(options.laneLatencyMs ?? 0);
    this.secretHex = Buffer.from(options.secret).toString('hex');
    this.ports = new DirectPorts(options.host);
    this.ramPool = new RamPool((options.ramPoolMiB ?? 2048) * 2 ** 20, () => this.migrating());
  }

  get url(): string {
    return `http://${this.options.host}:${this.port}`;
  }

  async start(): Promise<void> {
    const script = bundleVcpuScript([APP_MODULE], (why) =>
      this.options.log(`${why}; vCPUs start through tsx`),
    );
    if (script) useVcpuScript(script);
    keepSpareVcpus(this.options.spareVcpus ?? SPARE_VCPUS, () => this.migrating());
    if (this.options.switchAddress) {
      const link = new SwitchPorts(
        this.options.switchAddress,
        this.options.id,
        this.options.secret,
        this.options.log,
      );
      await link.connect();
      this.ports = link;
    }
    this.faults = await FaultPath.start(
      {
        host: this.options.host,
        port: this.options.urgentPort ?? 0,
        secret: this.options.secret,
        latencyMs: this.options.laneLatencyMs ?? 0,
        nice: this.options.faultThreadNice ?? FAULT_THREAD_NICE,
      },
      this.options.log,
    );
    this.faults.onLane = (lane) => {
      try {
        this.laneArrived(lane);
      } catch (e) {
        this.options.log(`refused the urgent lane from ${lane.remoteAddress}: ${(e as Error).message}`);
        lane.destroy();
      }
    };
    this.lanes = await listenLanes({
      host: this.options.host,
      port: this.options.lanesPort,
      secret: this.options.secret,
      capabilities: ALL_CAPABILITIES,
      log: this.options.log,
      onLane: (accepted) => {
        const lane = this.distant(accepted);
        try {
          this.laneArrived(lane);
        } catch (e) {
          this.options.log(
            `refused the ${lane.lane} lane from ${lane.remoteAddress}: ${(e as Error).message}`,
          );
          throw e;
        }
      },
    });
    this.server = http.createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.options.port, this.options.host, () => resolve());
    });
    this.port = (this.server.address() as { port: number }).port;
    this.options.log(
      `host ${this.options.id} listening on ${this.url} (migration lanes on port ${this.lanes.port}, urgent lanes on ${this.faults.port})`,
    );
  }

  async close(): Promise<void> {
    for (const vm of this.vms.values()) await vm.machine?.stop();
    for (const i of this.incoming.values()) await i.machine.stop();
    await this.ports.close();
    await this.lanes?.close();
    await this.faults?.close();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    keepSpareVcpus(0);
  }

  // --- HTTP ------------------------------------------------------------------------------

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    try {
      const given = Buffer.from(String(req.headers['x-ferry-secret'] ?? ''), 'utf8');
      const want = Buffer.from(this.secretHex, 'utf8');
      if (given.length !== want.length || !timingSafeEqual(given, want)) {
        this.options.log(
          `refused API call ${req.method} ${req.url} from ${req.socket.remoteAddress}: wrong secret`,
        );
        throw new ApiError(401, 'authentication failed: wrong secret');
      }
      const body = req.method === 'POST' ? await readJson(req) : undefined;
      const url = new URL(req.url ?? '/', 'http://x');
      const parts = url.pathname.split('/').filter(Boolean);
      if (parts[0] !== 'v1') throw new ApiError(404, `no such endpoint ${url.pathname}`);
      const [, what, id] = parts;
      if (what === 'vms' && !id && req.method === 'GET') return reply(200, this.listVms());
      if (what === 'vms' && !id && req.method === 'POST')
        return reply(201, await this.createVm(body as CreateVm));
      if (what === 'vms' && id && req.method === 'DELETE') return reply(200, await this.stopVm(id));
      if (what === 'vms' && id && parts[3] === 'memory' && req.method === 'GET')
        return reply(200, await this.memoryProfile(id, Number(url.searchParams.get('sampleMs') ?? 1000)));
      if (what === 'migrations' && !id && req.method === 'POST')
        return reply(201, await this.startMigration(body as StartMigration));
      if (what === 'migrations' && id && req.method === 'GET') return reply(200, this.migrationInfo(id));
      if (what === 'migrations' && id && req.method === 'DELETE') return reply(200, this.cancelMigration(id));
      if (what === 'incoming' && !id && req.method === 'POST')
        return reply(201, await this.prepareIncoming(body as IncomingRequest));
      if (what === 'incoming' && id && req.method === 'GET') return reply(200, this.incomingInfo(id));
      throw new ApiError(404, `no such endpoint ${req.method} ${url.pathname}`);
    } catch (e) {
      const status = e instanceof ApiError ? e.status : 500;
      if (status === 500) this.options.log(`API error: ${(e as Error).stack}`);
      reply(status, { error: (e as Error).message });
    }
  }

  // --- VMs ----------------------------------------------------------------------------------

  private listVms(): VmInfo[] {
    return [...this.vms.values()].map((vm) => ({
      name: vm.name,
      ramMiB: vm.spec.ramBytes / 2 ** 20,
      vcpus: vm.spec.vcpus,
      app: vm.app,
      state: vm.state,
      endpoint: vm.address,
      appStats: appStatsOf(vm),
      clients: {
        connections: vm.nic.connections,
        served: vm.nic.served,
        servedMs: vm.nic.servedMs,
        hopMs: vm.nic.hopMs,
      },
    }));
  }

  private info(vm: Vm): VmInfo {
    return this.listVms().find((v) => v.name === vm.name)!;
  }

  private async createVm(body: CreateVm): Promise<VmInfo> {
    const b = body ?? ({} as CreateVm);
    if (typeof b.name !== 'string' || !/^[A-Za-z0-9_.-]{1,64}$/.test(b.name))
      throw new ApiError(400, 'name: 1-64 letters, digits, "_", "." or "-"');
    if (this.vms.has(b.name)) throw new ApiError(409, `a VM named '${b.name}' already runs on this host`);
    if (!(Number.isInteger(b.ramMiB) && b.ramMiB >= 1 && b.ramMiB <= 4096))
      throw new ApiError(400, `ramMiB: '${b.ramMiB}' must be a whole number of MiB from 1 to 4096`);
    if (!(Number.isInteger(b.vcpus) && b.vcpus >= 1 && b.vcpus <= 64))
      throw new ApiError(400, `vcpus: '${b.vcpus}' must be a whole number from 1 to 64`);
    if (!(APP_KINDS as readonly string[]).includes(b.app))
      throw new ApiError(400, `app: '${b.app}' is not one of ${APP_KINDS.join(', ')}`);
    const servers = b.servers ?? 8;
    const spec = machineSpec(b.ramMiB, b.vcpus, b.app, b.appOptions ?? {}, servers);
    const pooled = this.ramPool.take(spec.ramBytes);
    const ram = GuestRam.create(spec.ramBytes, true, pooled);
    formatApp(
      b.app,
      b.appOptions ?? {},
      new ArrayAccess(ram.bytes.subarray(spec.app.base, spec.app.base + spec.app.size)),
    );
    const machine = await GuestMachine.boot(spec, ram, { cooperative: true });
    machine.onError = (m) => this.options.log(`VM ${b.name}: ${m}`);
    const vm = this.addVm(b.name, spec, b.app, b.appOptions ?? {}, machine, 'running');
    try {
      vm.address = await this.ports.attach(vm.name, vm.nic, true);
    } catch (e) {
      this.vms.delete(vm.name);
      await this.release(machine);
      throw new ApiError(409, (e as Error).message);
    }
    this.options.log(
      `VM ${b.name} created: ${b.ramMiB} MiB${pooled ? ' (RAM from the pool)' : ''}, ${b.vcpus} vCPU, ${b.app}, clients at ${vm.address}`,
    );
    return this.info(vm);
  }

  private addVm(
    name: string,
    spec: MachineSpec,
    app: string,
    appOptions: Record<string, unknown>,
    machine: GuestMachine | undefined,
    state: VmInfo['state'],
  ): Vm {
    const vm: Vm = {
      name,
      spec,
      app,
      appOptions,
      machine,
      state,
      nic: new VmNic(protocolOf(app), () => vm.machine),
      address: '',
    };
    this.vms.set(name, vm);
    return vm;
  }

  private async stopVm(name: string): Promise<VmInfo> {
    const vm = this.vms.get(name);
    if (!vm) throw new ApiError(404, `no VM named '${name}' on this host`);
    if (vm.state === 'migrating')
      throw new ApiError(409, `VM '${name}' is migrating; cancel the migration first`);
    if (vm.state === 'incoming')
      throw new ApiError(409, `VM '${name}' is still receiving its pages; stop it once they have arrived`);
    const info = this.info(vm);
    this.ports.forget(name);
    vm.nic.closeAll();
    if (vm.machine) await this.release(vm.machine);
    this.vms.delete(name);
    this.options.log(`VM ${name} stopped`);
    return { ...info, state: 'stopped' };
  }

  /** Zero pages now, and the distinct pages the guest writes over `sampleMs`. */
  private async memoryProfile(name: string, sampleMs: number): Promise<MemoryProfile> {
    const vm = this.vms.get(name);
    if (!vm?.machine) throw new ApiError(404, `no VM named '${name}' on this host`);
    if (vm.state !== 'running')
      throw new ApiError(409, `VM '${name}' is ${vm.state}: its dirty log belongs to the migration`);
    if (!(Number.isFinite(sampleMs) && sampleMs >= 10 && sampleMs <= 60_000))
      throw new ApiError(400, `sampleMs: '${sampleMs}' must be from 10 to 60000`);
    const machine = vm.machine;
    const ram = machine.ram;
    const dirty = new PageSet(ram.pages);
    const before = await machine.collectStats();
    ram.syncDirty(dirty);
    dirty.clear();
    await new Promise((r) => setTimeout(r, sampleMs));
    ram.syncDirty(dirty);
    const after = await machine.collectStats();
    return {
      pages: ram.pages,
      zeroPages: ram.zeroPagesIn(0, ram.pages),
      dirtyPages: dirty.size,
      sampleMs,
      vcpuRunMs: Math.max(0, after.runMs - before.runMs),
      vcpuWaitMs: Math.max(0, after.waitMs - before.waitMs),
      requests: Math.max(0, after.ops - before.ops),
    };
  }

  // --- outgoing migrations ----------------------------------------------------------------

  private async startMigration(b: StartMigration): Promise<MigrationInfo> {
    const vm = this.vms.get(b?.vm);
    if (!vm) throw new ApiError(404, `no VM named '${b?.vm}' on this host`);
    if (vm.state !== 'running' || !vm.machine) throw new ApiError(409, `VM '${vm.name}' is ${vm.state}`);
    if (!['precopy', 'postcopy', 'hybrid'].includes(b.mode))
      throw new ApiError(400, `mode: '${b.mode}' is not one of precopy, postcopy, hybrid`);
    const id = `${vm.name}-${randomBytes(4).toString('hex')}`;
    // the total time counts the set-up too (the destination boots its vCPUs, lanes connect)
    const startedAt = clock();
    let to: URL;
    try {
      to = new URL(b.to);
    } catch {
      throw new ApiError(400, `to: '${b.to}' is not a URL`);
    }
    // the destination's refusal is named as such (not mistaken for this host's answer)
    const refused = (e: unknown) =>
      new ApiError(502, `destination ${b.to}: ${(e as Error)?.message ?? String(e)}`);
    const incoming = await call<IncomingInfo>(b.to, this.secretHex, 'POST', '/v1/incoming', {
      migrationId: id,
      vm: vm.name,
      ramMiB: vm.spec.ramBytes / 2 ** 20,
      vcpus: vm.spec.vcpus,
      app: vm.app,
      appOptions: vm.appOptions,
      servers: vm.spec.servers,
      cooperative: b.cooperative,
      from: this.options.id,
      switch: this.ports.carriesConnections ? this.options.switchAddress : undefined,
      bulkPort: this.lanes!.port,
    } satisfies IncomingRequest).catch((e) => {
      throw refused(e);
    });
    const lanes = await this.openLanes(id, to, incoming, vm.machine).catch((e) => {
      throw refused(e);
    });
    const config = migrationConfig({
      mode: b.mode,
      stop: { downtimeLimitMs: b.downtimeLimitMs },
      postcopy: { prepageForward: b.prepage },
    });
    const machine = vm.machine;
    const driver = new SourceDriver(
      machine,
      lanes as Lanes,
      config,
      (l) => this.options.log(`${id}: ${l}`),
      b.maxBandwidthMbps,
      this.devicesOf(vm),
    );
    vm.state = 'migrating';
    const info: MigrationInfo = { id, vm: vm.name, state: 'running', progress: this.progressOf(driver) };
    this.outgoing.set(id, { info, driver });
    driver.start();
    void driver.done.then(async (r) => {
      const report = await this.finalReport(id, b, vm.name, startedAt, driver, r);
      if (r.outcome === 'completed') {
        // the VM runs on the destination now (even when the integrity check then fails:
        // the guest stopped here for good): release it here
        this.ports.left(vm.name);
        vm.nic.forget();
        this.vms.delete(vm.name);
        void this.release(machine); // its checksum is taken (in the report)
      } else {
        // aborted: the guest carries on here; failed in postcopy: it ran on the destination
        // and stays halted here (its RAM here is stale): listed as stopped, not running
        vm.state = machine.running ? 'running' : 'stopped';
        if (!machine.running) {
          // its clients are the destination's now (or, without a switch, gone)
          this.ports.left(vm.name);
          vm.nic.forget();
        }
      }
      info.report = report;
      info.state = 'done';
      info.progress = this.progressOf(driver);
    });
    return info;
  }

  /**
   * Opens the control lane to the destination, and the urgent lane from this host's fault
   * thread to the destination's, then waits for the bulk lane the destination opens back to
   * this host once the control lane is in.
   */
  private async openLanes(
    id: string,
    to: URL,
    incoming: IncomingInfo,
    machine: GuestMachine,
  ): Promise<Lanes> {
    const lanes: Partial<Lanes> = {};
    let failed: (e: Error) => void = () => {};
    const bulk = new Promise<LaneConnection>((resolve, reject) => {
      this.awaitedBulk.set(id, resolve);
      failed = reject;
    });
    bulk.catch(() => {});
    const timer = setTimeout(
      () =>
        failed(
          new Error(
            `it did not open the bulk lane to this host's lane port ${this.lanes!.port} within ${BULK_LANE_TIMEOUT_MS / 1000} s`,
          ),
        ),
      BULK_LANE_TIMEOUT_MS,
    );
    try {
      lanes.control = this.distant(
        await connectLane({
          host: to.hostname,
          port: incoming.lanesPort,
          secret: this.options.secret,
          migrationId: id,
          lane: 'control',
          capabilities: ALL_CAPABILITIES,
        }),
      );
      if (!Number.isInteger(incoming.urgentPort))
        throw new Error(`it named no port for the urgent lane (urgentPort: ${incoming.urgentPort})`);
      lanes.urgent = await this.faults!.dial(id, to.hostname, incoming.urgentPort, machine.ram.buffers);
      // a destination that could not reach this host drops the migration and its lanes
      let waiting = true;
      lanes.control!.onClose(async () => {
        if (!waiting) return;
        const why = await call<IncomingInfo>(to.href, this.secretHex, 'GET', `/v1/incoming/${id}`)
          .then((i) => i.dropped)
          .catch(() => undefined);
        failed(new Error(why ?? 'it closed the control lane before opening the bulk lane'));
      });
      lanes.bulk = await bulk.finally(() => {
        waiting = false;
      });
      return lanes as Lanes;
    } catch (e) {
      // the destination drops its paused VM when it sees the lanes close
      for (const l of Object.values(lanes)) l.destroy();
      throw e;
    } finally {
      clearTimeout(timer);
      this.awaitedBulk.delete(id);
    }
  }

  private async finalReport(
    id: string,
    b: StartMigration,
    vm: string,
    startedAt: number,
    driver: SourceDriver,
    r: Awaited<SourceDriver['done']>,
  ): Promise<RealMigrationReport> {
    let dest: IncomingInfo | undefined;
    for (let i = 0; i < 100 && r.outcome === 'completed'; i++) {
      dest = await call<IncomingInfo>(b.to, this.secretHex, 'GET', `/v1/incoming/${id}`).catch(
        () => undefined,
      );
      if (dest?.result) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    const d = dest?.result;
    const s = driver.source.stats;
    let outcome = r.outcome;
    let reason = r.reason;
    const sourceHash = driver.ramHash ? await driver.ramHash : '';
    const checked = outcome === 'completed' && !!d && d.ramHash !== '' && sourceHash !== '';
    const ok = checked && d?.ramHash === sourceHash;
    if (checked && !ok) {
      outcome = 'failed';
      reason = `integrity check failed: the destination's RAM checksum ${d?.ramHash} differs from the source's ${sourceHash}`;
      this.options.log(`${id}: ${reason}`);
    }
    return {
      vm,
      variant: '',
      mode: b.mode,
      cooperative: b.cooperative,
      source: this.options.id,
      destination: b.to,
      outcome,
      reason,
      startMs: 0,
      totalTimeMs: r.endedAt - startedAt,
      setupMs: r.startedAt - startedAt,
      switchoverMs: r.stoppedAt >= 0 ? r.stoppedAt - startedAt : -1,
      downtimeMs: d && r.stoppedAt >= 0 && d.resumedAt > 0 ? Math.max(0, d.resumedAt - r.stoppedAt) : 0,
      bytesSent: s.bytesSent,
      pagesSent: { ...s.pagesSent },
      rounds: s.rounds,
      roundPages: [...s.roundPages],
      roundEndMs: [...s.roundEndMs],
      remoteFaults: d?.remoteFaults ?? 0,
      demandResends: s.demandResends,
      asyncFaults: d?.asyncFaults ?? 0,
      syncFaults: d?.syncFaults ?? 0,
      vcpuBlockedMs: d?.vcpuBlockedMs ?? 0,
      vcpuRunMs: d?.vcpuRunMs ?? 0,
      vcpuWaitMs: d?.vcpuWaitMs ?? 0,
      vcpuParkedMs: d?.vcpuParkedMs ?? 0,
      hostRunMs: d?.hostRunMs ?? 0,
      hostWaitMs: d?.hostWaitMs ?? 0,
      faultLatencyUs: d?.faultLatencyUs ?? { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 },
      faultLatencyHistogram: d?.faultLatencyHistogram ?? [],
      postcopyMs: r.postcopyAt >= 0 ? r.endedAt - r.postcopyAt : 0,
      missingPages: [],
      integrity: { checked, ok },
    };
  }

  private progressOf(driver: SourceDriver): MigrationInfo['progress'] {
    const s = driver.source;
    return {
      phase: s.phase,
      bytesSent: driver.bytesSent,
      pagesPending: s.pendingPages,
      pages: driver.pages,
      rounds: s.stats.rounds,
    };
  }

  private migrationInfo(id: string): MigrationInfo {
    const m = this.outgoing.get(id);
    if (!m) throw new ApiError(404, `no migration '${id}' started from this host`);
    if (m.info.state === 'running') m.info.progress = this.progressOf(m.driver);
    return m.info;
  }

  private cancelMigration(id: string): MigrationInfo {
    const m = this.outgoing.get(id);
    if (!m) throw new ApiError(404, `no migration '${id}' started from this host`);
    if (m.info.state === 'done') throw new ApiError(409, `migration '${id}' has already ended`);
    if (!m.driver.cancel('cancelled by request'))
      throw new ApiError(409, `migration '${id}' is past its switchover: it can no longer be cancelled`);
    return m.info;
  }

  /** The VM's clients, as its migration moves them. */
  private devicesOf(vm: Vm): GuestDevices {
    const moves = this.ports.carriesConnections;
    return {
      quiesce: () => this.ports.hold(vm.name),
      save: () => {
        if (!moves) return undefined;
        const state = vm.nic.save();
        this.ports.detach(vm.name);
        return state;
      },
      resumeHere: () => {
        void this.ports
          .attach(vm.name, vm.nic, false)
          .catch((e) => this.options.log(`VM ${vm.name}: ${(e as Error).message}`));
        vm.nic.pump();
      },
    };
  }

  // --- incoming migrations ------------------------------------------------------------------

  private async prepareIncoming(b: IncomingRequest): Promise<IncomingInfo> {
    if (!b || typeof b.migrationId !== 'string') throw new ApiError(400, 'migrationId is required');
    if (!Number.isInteger(b.bulkPort) || b.bulkPort < 1 || b.bulkPort > 65535)
      throw new ApiError(400, `bulkPort: ${JSON.stringify(b.bulkPort)} is not a port number`);
    if (this.vms.has(b.vm)) throw new ApiError(409, `a VM named '${b.vm}' already runs on this host`);
    if (b.switch && (!this.ports.carriesConnections || this.options.switchAddress !== b.switch))
      throw new ApiError(
        409,
        `host ${this.options.id} is not linked to the switch ${b.switch} (${this.options.switchAddress ? `it uses ${this.options.switchAddress}` : 'it has none'}): the VM's clients could not follow it`,
      );
    const spec = machineSpec(b.ramMiB, b.vcpus, b.app, b.appOptions, b.servers);
    // the migration writes every page: RAM the pool has not zeroed yet will do
    const kept = this.ramPool.takeToOverwrite(spec.ramBytes);
    const ram = GuestRam.create(spec.ramBytes, false, kept?.data);
    // the vCPUs start now, held until the switchover, so resuming costs no thread start.
    // Guest RAM is left unmapped: the first write of each page (its install) maps it, for
    // less than mapping it ahead costs (an atomic pass over fresh pages takes twice as
    // long as the copy's own faults, and competes with the install for the cores)
    const machine = await GuestMachine.boot(spec, ram, { cooperative: b.cooperative, paused: true });
    machine.onError = (m) => this.options.log(`incoming VM ${b.vm}: ${m}`);
    const info: IncomingInfo = {
      migrationId: b.migrationId,
      state: 'waiting',
      lanesPort: this.lanes!.port,
      urgentPort: this.faults!.port,
    };
    this.faults!.expect(b.migrationId);
    const inc: Incoming = { info, request: b, lanes: {}, machine, ramZeroed: kept?.zeroed ?? true };
    inc.expiry = setTimeout(
      () => void this.dropIncoming(inc, `its lanes did not arrive within ${LANES_TIMEOUT_MS / 1000} s`),
      LANES_TIMEOUT_MS,
    ).unref();
    this.incoming.set(b.migrationId, inc);
    this.options.log(`expecting VM ${b.vm} from ${b.from} (migration ${b.migrationId})`);
    return info;
  }

  /** A lane from another host: the bulk lane of a migration out of here, or one into here. */
  private laneArrived(lane: LaneConnection): void {
    const outgoing = lane.lane === 'bulk' ? this.awaitedBulk.get(lane.migrationId) : undefined;
    if (outgoing) {
      this.awaitedBulk.delete(lane.migrationId);
      outgoing(lane);
      return;
    }
    const inc = this.incoming.get(lane.migrationId);
    if (!inc || inc.driver || inc.info.state === 'done' || lane.lane === 'bulk' || inc.lanes[lane.lane])
      throw new Error(`no ${lane.lane} lane of migration '${lane.migrationId}' expected here`);
    this.addLane(inc, lane);
    if (lane.lane === 'control') void this.openBulkLane(inc, lane);
  }

  /**
   * Opens the bulk lane back to the source, at the address its control lane came from:
   * pages are read into one reused buffer, which Node offers only on connections it opens.
   */
  private async openBulkLane(inc: Incoming, control: LaneConnection): Promise<void> {
    const host = hostOf(control.remoteAddress);
    const port = inc.request.bulkPort;
    try {
      const lane = this.distant(
        await connectLane({
          host,
          port,
          secret: this.options.secret,
          migrationId: inc.info.migrationId,
          lane: 'bulk',
          capabilities: ALL_CAPABILITIES,
          readBuffer: BULK_READ_BUFFER,
        }),
      );
      if (inc.info.state === 'done') lane.destroy();
      else this.addLane(inc, lane);
    } catch (e) {
      // the error names the lane and the address
      void this.dropIncoming(inc, `could not open the bulk lane back to the source: ${(e as Error).message}`);
    }
  }

  /** A lane as this host sees it: its messages late by the configured latency. */
  private distant(lane: LaneConnection): LaneConnection {
    return delayedLane(lane, this.options.laneLatencyMs ?? 0);
  }

  private addLane(inc: Incoming, lane: LaneConnection): void {
    inc.lanes[lane.lane] = lane;
    // a lane lost before the migration could start: the source gave up
    lane.onClose((e) => {
      if (!inc.driver)
        void this.dropIncoming(inc, `the ${lane.lane} lane closed (${e?.message ?? 'closed'})`);
    });
    if (!(inc.lanes.control && inc.lanes.bulk && inc.lanes.urgent)) return;
    clearTimeout(inc.expiry);
    const driver = new DestinationDriver(
      inc.machine,
      inc.lanes as Lanes,
      (l) => this.options.log(`${inc.info.migrationId}: ${l}`),
      { ramZeroed: inc.ramZeroed },
    );
    inc.driver = driver;
    inc.info.state = 'running';
    const b = inc.request;
    // clients reach the VM here from the moment it runs here (in postcopy, while pages
    // still arrive), not only once the last page has landed
    let published: Promise<Vm> | undefined;
    const publish = (state: VmInfo['state'], devices?: unknown) => {
      published ??= (async () => {
        const vm = this.addVm(b.vm, inc.machine.spec, b.app, b.appOptions, inc.machine, state);
        // the connections the source's device had move in: their clients carry on here
        if (devices && this.ports.carriesConnections)
          vm.nic.restore(devices as NicState, (conn) => this.ports.wire(vm.name, conn));
        vm.address = await this.ports.attach(vm.name, vm.nic, false).catch((e) => {
          this.options.log(`VM ${b.vm}: ${(e as Error).message}`);
          return '';
        });
        inc.info.endpoint = vm.address;
        this.options.log(`VM ${b.vm} now runs here, clients at ${vm.address}`);
        return vm;
      })();
      return published;
    };
    let hostBase: ThreadTime | undefined;
    driver.onResumed = (s) => {
      void publish(driver.destination.phase === 'postcopy' ? 'incoming' : 'running', s.devices);
      // after the clients' way in: reading the scheduler's statistics takes ~0.1 ms
      hostBase = threadTime();
    };
    void driver.done.then(async (r) => {
      const host = hostBase ? threadTimeSince(hostBase) : { runMs: 0, waitMs: 0 };
      const stats = r.outcome === 'completed' ? await inc.machine.collectStats() : undefined;
      inc.info.state = 'done';
      inc.info.result = {
        outcome: r.outcome,
        reason: r.reason,
        resumedAt: r.resumedAt,
        ramHash: r.ramHash,
        remoteFaults: r.remoteFaults,
        faultLatencyUs: percentiles([...r.faultLatencySamplesUs]),
        faultLatencyHistogram: histogram(r.faultLatencySamplesUs),
        asyncFaults: stats?.asyncFaults ?? 0,
        syncFaults: stats?.syncFaults ?? 0,
        vcpuBlockedMs: stats?.blockedMs ?? 0,
        vcpuRunMs: stats?.runMs ?? 0,
        vcpuWaitMs: stats?.waitMs ?? 0,
        vcpuParkedMs: stats?.parkedMs ?? 0,
        hostRunMs: host.runMs,
        hostWaitMs: host.waitMs,
      };
      if (r.outcome === 'completed' || (r.outcome === 'failed' && inc.machine.running))
        (await publish('running')).state = 'running';
      else await this.release(inc.machine);
    });
  }

  /** Gives up an incoming migration that never started: its paused VM goes away. */
  private async dropIncoming(inc: Incoming, why: string): Promise<void> {
    if (inc.driver || inc.info.state === 'done') return;
    clearTimeout(inc.expiry);
    inc.info.state = 'done';
    inc.info.dropped = why;
    this.options.log(`incoming VM ${inc.request.vm} (migration ${inc.info.migrationId}) dropped: ${why}`);
    for (const l of Object.values(inc.lanes)) l.destroy();
    this.faults?.forget(inc.info.migrationId);
    await this.release(inc.machine);
  }

  /** Whether a migration out of or into this host is under way. */
  private migrating(): boolean {
    for (const o of this.outgoing.values()) if (o.info.state === 'running') return true;
    for (const i of this.incoming.values()) if (i.info.state !== 'done') return true;
    return false;
  }

  /** Stops a VM's vCPUs for good; its RAM goes to the pool for the next VM. */
  private async release(machine: GuestMachine): Promise<void> {
    await machine.stop();
    void this.ramPool.give(machine.ram.buffers.data);
  }

  private incomingInfo(id: string): IncomingInfo {
    const inc = this.incoming.get(id);
    if (!inc) throw new ApiError(404, `no incoming migration '${id}' on this host`);
    return inc.info;
  }
}

/** The app's counters, read from guest RAM here when its header page is present. */
function appStatsOf(vm: Vm): Record<string, number> | undefined {
  const ram = vm.machine?.ram;
  const { base, size } = vm.spec.app;
  if (!ram?.isPresent(base / PAGE_SIZE)) return undefined;
  try {
    return appStats(vm.app, vm.appOptions, new ArrayAccess(ram.bytes.subarray(base, base + size)));
  } catch {
    return undefined; // read while a vCPU rewrote the header: none this time
  }
}

function machineSpec(
  ramMiB: number,
  vcpus: number,
  app: string,
  appOptions: Record<string, unknown>,
  servers: number,
): MachineSpec {
  const ramBytes = ramMiB * 2 ** 20;
  const base = kernelPages(vcpus) * PAGE_SIZE;
  return {
    ramBytes,
    vcpus,
    app: { module: APP_MODULE, kind: app, base, size: ramBytes - base, options: appOptions },
    servers,
    job: app === 'memtouch',
    faultLimit: 64,
  };
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > 1 << 20) throw new ApiError(413, 'request body over 1 MiB');
    chunks.push(c as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, 'request body is not JSON');
  }
}
