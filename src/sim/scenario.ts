// Scenario files: YAML validated against a schema. Every error names its path in the
// file and what is wrong with it.

import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { HTTP_DEFAULTS, KV_DEFAULTS, MEMTOUCH_DEFAULTS, OLTP_DEFAULTS, WEB_DEFAULTS } from './workloads.ts';

const positive = (what: string) =>
  z.number({ error: `${what} must be a number` }).positive(`${what} must be > 0`);
const nonNegative = (what: string) =>
  z.number({ error: `${what} must be a number` }).nonnegative(`${what} must be ≥ 0`);
const name = z.string().min(1, 'name must not be empty');

const Network = z
  .strictObject({
    /** Goodput ÷ line rate (TCP/IP and Ethernet framing: 1448 of 1538 bytes ≈ 0.94). */
    efficiency: z.number().gt(0).lte(1).default(0.94),
    /** Share of a host's receive capacity lost while the host also transmits. */
    duplexInterference: z.number().min(0).lt(1).default(0),
    socketBufferKiB: positive('socket buffer').default(4096),
  })
  .prefault({});

const Switch = z.strictObject({ name, latencyUs: nonNegative('latency').default(0) });

const Link = z.strictObject({
  from: name,
  to: name,
  bandwidthMbps: positive('bandwidth'),
  latencyUs: nonNegative('latency').default(0),
});

const Host = z.strictObject({
  name,
  /** Full-duplex NIC: each direction has this capacity unless upload/download say otherwise. */
  nicMbps: positive('NIC bandwidth'),
  uploadMbps: positive('upload bandwidth').optional(),
  downloadMbps: positive('download bandwidth').optional(),
  latencyUs: nonNegative('latency').default(50),
  /**
   * What a TCP flow keeps queued in the buffer of this host's uplink while it fills the
   * link, µs: client replies leaving while the uplink is saturated (by a migration, or by
   * the replies themselves) wait this long beyond the wire (0: no standing queue).
   */
  uplinkQueueUs: nonNegative('uplink queue').default(0),
  /**
   * What stays queued in the buffer of this host's downlink while a migration's pages come
   * in, on average, µs: client requests to its VMs arriving meanwhile wait this long beyond
   * the wire (0: no queue).
   */
  downlinkQueueUs: nonNegative('downlink queue').default(0),
  switch: name.optional(),
  /** This host's own duplex interference (its NIC and driver); the network's when absent. */
  duplexInterference: z.number().min(0).lt(1).optional(),
});

const Dirty = z
  .strictObject({
    /** Hot set rewritten every `hotPeriodS` seconds. */
    hotSetMiB: nonNegative('hot set').default(0),
    hotPeriodS: positive('hot period').default(1),
    /**
     * `sweep`: rewritten continuously, the whole hot set once per period; `burst`: all at
     * once, at random moments averaging one per period; `once`: all at once, a single
     * time within the first period (a warm-up that is over after the first round).
     */
    hotPattern: z.enum(['sweep', 'burst', 'once']).default('sweep'),
    /** Cold dirtying, MB/s, sweeping the rest of the working set. */
    rateMBps: nonNegative('dirty rate').default(0),
    /** Pages written at all (default: every page in use). */
    workingSetMiB: positive('working set').optional(),
  })
  .prefault({});

const Access = z
  .strictObject({
    /** Page touches per second while the guest runs (remote faults come from these). */
    touchesPerSec: nonNegative('touch rate').default(1000),
    /** Share of touches that go to the hot set (the rest: anywhere in use). */
    hotFraction: z.number().min(0).max(1).default(0.8),
  })
  .prefault({});

const count = (what: string) =>
  z.number().int(`${what} must be a whole number`).min(1, `${what} must be ≥ 1`);
const fraction = z.number().min(0, 'must be in [0, 1]').max(1, 'must be in [0, 1]');

/** The fields every server workload has: its tasks, its closed-loop clients, its faults. */
const serverFields = (
  d: {
    workers: number;
    connections: number;
    thinkMs: number;
    pathMs: number;
    cpuMs: number;
    kernelFaultFraction: number;
  },
  cpu = 'CPU per request',
) => ({
  workers: count('workers').default(d.workers),
  connections: count('connections').default(d.connections),
  thinkMs: nonNegative('think time').default(d.thinkMs),
  pathMs: nonNegative('request path time').default(d.pathMs),
  cpuMs: positive(cpu).default(d.cpuMs),
  kernelFaultFraction: fraction.default(d.kernelFaultFraction),
});

const W = WEB_DEFAULTS;
const O = OLTP_DEFAULTS;
const M = MEMTOUCH_DEFAULTS;
const K = KV_DEFAULTS;
const H = HTTP_DEFAULTS;
const Workload = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('web'),
    ...serverFields(W),
    hotSetMiB: positive('hot set').default(W.hotSetMiB),
    touches: z.number().int().nonnegative().default(W.touches),
    coldTouches: z.number().int().nonnegative().default(W.coldTouches),
    writes: z.number().int().nonnegative().default(W.writes),
  }),
  z.strictObject({
    kind: z.literal('oltp'),
    ...serverFields(O, 'CPU per transaction'),
    depth: count('B-tree depth').default(O.depth),
    lookups: count('lookups').default(O.lookups),
    writes: z.number().int().nonnegative().default(O.writes),
    logWriteIntervalMs: positive('log write interval').default(O.logWriteIntervalMs),
  }),
  z.strictObject({
    kind: z.literal('memtouch'),
    rateMBps: positive('write rate').default(M.rateMBps),
    workingSetMiB: positive('working set').default(M.workingSetMiB),
    pattern: z.enum(['sequential', 'random']).default(M.pattern),
    kernelFaultFraction: fraction.default(M.kernelFaultFraction),
  }),
  z.strictObject({
    kind: z.literal('kv'),
    ...serverFields(K),
    keys: count('keys').default(K.keys),
    // Redis's limit on a bulk string
    valueBytes: count('value size')
      .max(512 * 2 ** 20, 'value size must be ≤ 512 MiB')
      .default(K.valueBytes),
    setRatio: fraction.default(K.setRatio),
  }),
  z.strictObject({
    kind: z.literal('http'),
    ...serverFields(H),
    // the http app's limits
    objects: count('objects').max(65536, 'objects must be ≤ 65536').default(H.objects),
    counters: count('counters')
      .max(2 ** 20, 'counters must be ≤ 1048576')
      .default(H.counters),
    hitRatio: fraction.default(H.hitRatio),
  }),
  z.strictObject({ kind: z.literal('idle') }),
]);

const Vm = z
  .strictObject({
    name,
    host: name,
    ramMiB: z.number({ error: 'RAM must be a number' }).min(1, 'RAM must be at least 1 MiB'),
    usedMiB: positive('memory in use').optional(),
    vcpus: count('vCPUs').default(1),
    /** Async page faults outstanding per vCPU before further faults block (KVM: 64). */
    asyncFaultLimit: count('async fault limit').default(64),
    /**
     * While the VM's migration moves pages, its guest's work takes (1 + this) times as long:
     * the hosts' CPUs serve the migration too (0: the migration has cores of its own).
     */
    hostContention: z.number().min(0, 'host contention must be ≥ 0').default(0),
    /**
     * Meanwhile the clients' way through the hosts (the workload's `pathMs`) takes (1 + this)
     * times as long; by default (1 + hostContention) ÷ (1 − hostBusy) − 1 (see hostBusy).
     */
    pathContention: z.number().min(0, 'path contention must be ≥ 0').optional(),
    /**
     * Share of the time the migration keeps busy the host thread its clients' requests cross
     * (it installs the pages): meanwhile their way outside the guest (`pathMs`) goes at
     * (1 − this) of its speed, on top of the host contention (0: the path has a thread of
     * its own).
     */
    hostBusy: z
      .number()
      .min(0, 'host busy share must be ≥ 0')
      .max(0.95, 'host busy share must be ≤ 0.95')
      .default(0),
    /**
     * Host time from a demanded page's arrival to its faulting vCPU (blocking fault) or task
     * (async fault) running again: the install and the wake-up, µs (0: at once).
     */
    faultWakeUs: z.number().min(0, 'fault wake-up time must be ≥ 0').default(0),
    /**
     * Guest CPU an async fault costs its vCPU beyond the request's own work (the exit to the
     * host, the not-present and ready injections), µs at the VM's usual speed.
     */
    asyncFaultCpuUs: z.number().min(0, 'async fault CPU time must be ≥ 0').default(10),
    dirty: Dirty,
    access: Access,
    /** What the guest runs (the whole run long); without one, only `access` touches pages. */
    workload: Workload.optional(),
  })
  .refine((v) => v.usedMiB === undefined || v.usedMiB <= v.ramMiB, {
    message: 'usedMiB must not exceed ramMiB',
    path: ['usedMiB'],
  });

const Migration = z.strictObject({
  vm: name,
  to: name,
  atS: nonNegative('start time').default(0),
  mode: z.enum(['precopy', 'postcopy', 'hybrid']).default('precopy'),
  variant: z.string().default(''),
  downtimeLimitMs: positive('downtime limit').default(300),
  maxRounds: z.number().int().nonnegative().default(0),
  maxBytesFactor: nonNegative('max bytes factor').default(0),
  deadlineS: nonNegative('deadline').default(0),
  onNoConvergence: z.enum(['abort', 'force', 'postcopy']).default('abort'),
  hybridRounds: z.number().int().nonnegative().default(0),
  prepageForward: z.number().int().nonnegative().default(0),
  prepageBackward: z.number().int().nonnegative().default(0),
  urgentLane: z.boolean().default(true),
  /** A demanded page already queued on the bulk lane is sent again on the urgent lane. */
  resendInFlight: z.boolean().default(true),
  /** Postcopy remote faults as guest-cooperative async faults (true) or blocking (false). */
  cooperative: z.boolean().default(true),
  maxBandwidthMbps: positive('max bandwidth').optional(),
  /** Time before the first page moves: connecting, creating the destination VM. */
  setupMs: nonNegative('setup time').default(0),
  /**
   * The hosts' time to notice and answer a demand, beyond the path's latency and the
   * page's time on the wire (their event loops busy with the migration's other work).
   */
  demandDelayUs: nonNegative('demand delay').default(0),
});

/** A variant re-runs the scenario with these fields changed in every VM and migration. */
const Variant = z.strictObject({
  name: z.string().min(1, 'variant name must not be empty'),
  vms: z.record(z.string(), z.unknown()).default({}),
  migrations: z.record(z.string(), z.unknown()).default({}),
});

export const ScenarioSchema = z.strictObject({
  name: z.string().default('scenario'),
  /** Virtual seconds after which the simulation stops (migrations still running fail). */
  durationS: positive('duration').default(3600),
  /** With workloads: how long the run goes on after the last migration ended. */
  settleS: nonNegative('settle time').default(12),
  variants: z.array(Variant).default([]),
  network: Network,
  switches: z.array(Switch).default([]),
  links: z.array(Link).default([]),
  hosts: z.array(Host).min(1, 'at least one host is needed'),
  vms: z.array(Vm).default([]),
  migrations: z.array(Migration).default([]),
});

export type Scenario = z.infer<typeof ScenarioSchema>;
export type ScenarioInput = z.input<typeof ScenarioSchema>;
export type VmSpec = Scenario['vms'][number];
export type MigrationSpec = Scenario['migrations'][number];
export type HostSpec = Scenario['hosts'][number];

export class ScenarioError extends Error {}

function pathOf(path: PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(top level)';
}

/** Validates a parsed scenario; throws ScenarioError naming every problem found. */
export function validateScenario(raw: unknown, source = 'scenario'): Scenario {
  const r = ScenarioSchema.safeParse(raw);
  if (!r.success) {
    const lines = r.error.issues.map((i) => {
      if (i.code === 'unrecognized_keys')
        return `${pathOf(i.path)}: unknown field ${i.keys.map((k) => `'${k}'`).join(', ')}`;
      return `${pathOf(i.path)}: ${i.message}`;
    });
    throw new ScenarioError(`${source}: ${lines.join('; ')}`);
  }
  const s = r.data;
  const problems: string[] = [];
  const unique = (list: { name: string }[], what: string, key: string) => {
    const seen = new Set<string>();
    list.forEach((x, i) => {
      if (seen.has(x.name)) problems.push(`${key}[${i}].name: duplicate ${what} '${x.name}'`);
      seen.add(x.name);
    });
    return seen;
  };
  const hosts = unique(s.hosts, 'host', 'hosts');
  const switches = unique(s.switches, 'switch', 'switches');
  const vms = unique(s.vms, 'VM', 'vms');
  unique(s.variants, 'variant', 'variants');
  s.hosts.forEach((h, i) => {
    if (h.switch && !switches.has(h.switch))
      problems.push(`hosts[${i}].switch: unknown switch '${h.switch}'`);
  });
  s.links.forEach((l, i) => {
    if (!switches.has(l.from)) problems.push(`links[${i}].from: unknown switch '${l.from}'`);
    if (!switches.has(l.to)) problems.push(`links[${i}].to: unknown switch '${l.to}'`);
  });
  s.vms.forEach((v, i) => {
    if (!hosts.has(v.host)) problems.push(`vms[${i}].host: unknown host '${v.host}'`);
  });
  s.migrations.forEach((m, i) => {
    if (!vms.has(m.vm)) problems.push(`migrations[${i}].vm: unknown VM '${m.vm}'`);
    if (!hosts.has(m.to)) problems.push(`migrations[${i}].to: unknown host '${m.to}'`);
  });
  if (problems.length > 0) throw new ScenarioError(`${source}: ${problems.join('; ')}`);
  return s;
}

/** The YAML of a scenario file, or a ScenarioError naming the file and the first problem. */
function readYaml(text: string, source: string): unknown {
  try {
    return parseYaml(text);
  } catch (e) {
    // the first line ends with a colon that introduced the source excerpt left out here
    const first = (e as Error).message.split('\n')[0].replace(/:\s*$/, '');
    throw new ScenarioError(`${source}: not valid YAML: ${first}`);
  }
}

export function parseScenario(text: string, source = 'scenario'): Scenario {
  return validateScenario(readYaml(text, source), source);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `base` with `over` laid on top, objects merged field by field. */
function merge(base: unknown, over: Record<string, unknown>): unknown {
  if (!isPlainObject(base)) return over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over))
    out[k] = isPlainObject(v) && isPlainObject(base[k]) ? merge(base[k], v) : v;
  return out;
}

export interface ScenarioVariant {
  /** Empty for a scenario without variants. */
  name: string;
  scenario: Scenario;
}

/**
 * The runs a scenario asks for: itself, or one per variant, each validated on its own so an
 * error names the variant.
 */
export function expandVariants(raw: unknown, source = 'scenario'): ScenarioVariant[] {
  const base = validateScenario(raw, source);
  if (base.variants.length === 0) return [{ name: '', scenario: base }];
  const r = raw as Record<string, unknown>;
  return base.variants.map((v, i) => {
    const next = {
      ...r,
      variants: [],
      vms: (r.vms as unknown[] | undefined)?.map((vm) => merge(vm, v.vms)),
      migrations: (r.migrations as unknown[] | undefined)?.map((m) => merge(m, v.migrations)),
    };
    return { name: v.name, scenario: validateScenario(next, `${source} variants[${i}] '${v.name}'`) };
  });
}

export function parseScenarioVariants(text: string, source = 'scenario'): ScenarioVariant[] {
  return expandVariants(readYaml(text, source), source);
}
