// The engine's contract, run against every transport (as Hono runs one suite against every
// implementation of an interface): a MigrationSource and a MigrationDestination joined by
// three lanes, either real TCP lanes on loopback (transport.ts) or in-memory lanes that
// deliver each lane in order and interleave the lanes at random. A model guest writes page
// versions on the source until it stops and touches pages on the destination once it runs
// there; every page travels with its version in its bytes. The same properties must hold
// on both: the destination's final RAM equals the guest's, page for page; no stale page
// survives; no page is demanded twice or while present; no arrival overwrites a present
// page in postcopy; the counters add up.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import {
  batchBytes,
  type MigrationConfig,
  type MigrationMode,
  migrationConfig,
} from '../../src/engine/config.ts';
import { MigrationDestination } from '../../src/engine/destination.ts';
import {
  type DestinationMessage,
  type Lane,
  type Message,
  PAGE_SIZE,
  type PageBatch,
  type SourceMessage,
} from '../../src/engine/messages.ts';
import { MigrationSource } from '../../src/engine/source.ts';
import type { Outcome } from '../../src/engine/stats.ts';
import type { Lanes } from '../../src/host/source-driver.ts';
import {
  ALL_CAPABILITIES,
  connectLane,
  LANES,
  type LaneConnection,
  listenLanes,
  TransportError,
} from '../../src/host/transport.ts';
import { forEachPage, ModelMemory, type Random, seededRandom } from '../engine/harness.ts';

// ---------------------------------------------------------------------------------------
// Transports

interface LanePair {
  source: Lanes;
  destination: Lanes;
  close(): Promise<void>;
}

interface Transport {
  name: string;
  open(seed: number): Promise<LanePair>;
}

const SECRET = new Uint8Array(randomBytes(32));

const tcpLanes: Transport = {
  name: 'TCP lanes on loopback',
  async open(seed) {
    const accepted = new Map<Lane, LaneConnection>();
    let allAccepted!: () => void;
    const ready = new Promise<void>((r) => {
      allAccepted = r;
    });
    const listener = await listenLanes({
      host: '127.0.0.1',
      port: 0,
      secret: SECRET,
      capabilities: ALL_CAPABILITIES,
      log: () => {},
      onLane: (lane) => {
        accepted.set(lane.lane, lane);
        if (accepted.size === LANES.length) allAccepted();
      },
    });
    const source = {} as Lanes;
    for (const lane of LANES)
      source[lane] = await connectLane({
        host: '127.0.0.1',
        port: listener.port,
        secret: SECRET,
        migrationId: `contract-${seed}`,
        lane,
        capabilities: ALL_CAPABILITIES,
      });
    await ready;
    const destination = Object.fromEntries(LANES.map((l) => [l, accepted.get(l)!])) as unknown as Lanes;
    return {
      source,
      destination,
      close: async () => {
        for (const l of LANES) {
          source[l].destroy();
          destination[l].destroy();
        }
        await listener.close();
      },
    };
  },
};

/**
 * One end of an in-memory lane. Messages are cloned (nothing is shared between the ends),
 * delivered in order, later than sent, and a sender over its high-water mark is told to
 * wait for `onDrain`.
 */
class MemoryLane implements LaneConnection {
  readonly migrationId = 'memory';
  readonly peerCapabilities = ALL_CAPABILITIES;
  readonly remoteAddress = 'memory';
  readonly error: TransportError | undefined = undefined;
  peer!: MemoryLane;
  /** Messages on their way to this end, with their size. */
  readonly inbox: { msg: Message; bytes: number }[] = [];
  queued = 0;
  private closed = false;
  private readonly messageHandlers: ((m: Message, seq: number) => void)[] = [];
  private readonly drainHandlers: (() => void)[] = [];
  private readonly closeHandlers: ((e?: TransportError) => void)[] = [];
  private seq = 0;

  constructor(
    readonly lane: Lane,
    private readonly wire: MemoryWire,
  ) {}

  get bufferedBytes(): number {
    return this.peer.queued;
  }

  send(msg: Message): boolean {
    if (this.closed) throw new TransportError('closed', `${this.lane} lane is closed`);
    const bytes = msg.type === 'pages' ? batchBytes(msg.batch.pageCount, msg.batch.zeroCount) : 64;
    this.peer.inbox.push({ msg: structuredClone(msg), bytes });
    this.peer.queued += bytes;
    this.wire.kick();
    return this.peer.queued < MemoryWire.HIGH_WATER;
  }

  /** Hands the next message to this end's handlers; tells the sender when it may go on. */
  deliverOne(): void {
    const { msg, bytes } = this.inbox.shift()!;
    const wasOver = this.queued >= MemoryWire.HIGH_WATER;
    this.queued -= bytes;
    if (!this.closed) for (const cb of this.messageHandlers) cb(msg, this.seq++);
    if (wasOver && this.queued < MemoryWire.HIGH_WATER) for (const cb of this.peer.drainHandlers) cb();
  }

  /** Reading stopped: nothing is delivered to this end until `resumeReading`. */
  paused = false;
  pauseReading(): void {
    this.paused = true;
  }
  resumeReading(): void {
    if (!this.paused) return;
    this.paused = false;
    this.wire.kick();
  }

  onDrain(cb: () => void): void {
    this.drainHandlers.push(cb);
  }
  onMessage(cb: (msg: Message, seq: number) => void): void {
    this.messageHandlers.push(cb);
  }
  onError(): void {}
  onClose(cb: (error?: TransportError) => void): void {
    this.closeHandlers.push(cb);
  }
  close(): void {
    this.destroy();
  }
  destroy(): void {
    for (const end of [this, this.peer]) {
      if (end.closed) continue;
      end.closed = true;
      for (const cb of end.closeHandlers) queueMicrotask(() => cb());
    }
  }
}

/** The three lanes of a migration in memory; a scheduler delivers them in a seeded random interleaving. */
class MemoryWire {
  static readonly HIGH_WATER = 256 * 1024;
  readonly source: Lanes;
  readonly destination: Lanes;
  private readonly ends: MemoryLane[] = [];
  private scheduled = false;

  constructor(private readonly rng: Random) {
    const s = {} as Lanes;
    const d = {} as Lanes;
    for (const lane of LANES) {
      const a = new MemoryLane(lane, this);
      const b = new MemoryLane(lane, this);
      a.peer = b;
      b.peer = a;
      s[lane] = a;
      d[lane] = b;
      this.ends.push(a, b);
    }
    this.source = s;
    this.destination = d;
  }

  kick(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.tick());
  }

  /** Delivers a few messages from ends picked at random; each end stays in order. */
  private tick(): void {
    this.scheduled = false;
    for (let n = 1 + this.rng.int(4); n > 0; n--) {
      const busy = this.ends.filter((e) => e.inbox.length > 0 && !e.paused);
      if (busy.length === 0) return;
      busy[this.rng.int(busy.length)].deliverOne();
    }
    if (this.ends.some((e) => e.inbox.length > 0 && !e.paused)) this.kick();
  }
}

const memoryLanes: Transport = {
  name: 'in-memory lanes',
  async open(seed) {
    const wire = new MemoryWire(seededRandom(seed ^ 0x5eed));
    return {
      source: wire.source,
      destination: wire.destination,
      close: async () => {
        for (const l of LANES) wire.source[l].destroy();
      },
    };
  },
};

// ---------------------------------------------------------------------------------------
// The model migration

interface Scenario {
  mode: MigrationMode;
  seed: number;
  pageCount: number;
  /** Touches parked at once on the destination (1 behaves like a blocking fault). */
  maxWaiting: number;
  config: MigrationConfig;
}

interface Outcomes {
  source: Outcome | undefined;
  destination: Outcome | undefined;
  reasons: string[];
  violations: string[];
  sourceEngine: MigrationSource;
  destEngine: MigrationDestination;
  /** The guest's view: the last version written, wherever it ran. */
  guestRam: Int32Array;
  /** The destination's copy: -1 never arrived. */
  destRam: Int32Array;
  /** Pages the destination guest wrote (after those writes, their copy is the guest's own). */
  writtenThere: Uint8Array;
  sourceVersionsAtStop: Int32Array | undefined;
  handedPages: number;
  handedZero: number;
  handedBytes: number;
  deliveredPages: number;
  installedPages: number;
  demanded: number;
  postcopy: boolean;
}

const now = () => performance.now();

/** Page contents: the version at byte 0, the pfn at byte 4 (the rest zero). */
function pageBytes(version: number, pfn: number): Uint8Array {
  const b = new Uint8Array(PAGE_SIZE);
  const v = new DataView(b.buffer);
  v.setInt32(0, version, true);
  v.setUint32(4, pfn, true);
  return b;
}

function runMigration(s: Scenario, lanes: LanePair): Promise<Outcomes> {
  const rng = seededRandom(s.seed);
  const n = s.pageCount;
  // a quarter of RAM starts as zero pages (never written)
  const zero: number[] = [];
  for (let p = 0; p < n; p++) if (rng.int(4) === 0) zero.push(p);
  const memory = new ModelMemory(n, zero);
  let clock = 0;
  for (let p = 0; p < n; p++) if (!memory.isZero(p)) memory.write(p, ++clock);
  const hot = Array.from({ length: 48 }, () => rng.int(n));

  const source = new MigrationSource(s.config, memory, memory);
  const dest = new MigrationDestination(n);
  const out: Outcomes = {
    source: undefined,
    destination: undefined,
    reasons: [],
    violations: [],
    sourceEngine: source,
    destEngine: dest,
    guestRam: Int32Array.from(memory.versions),
    destRam: new Int32Array(n).fill(-1),
    writtenThere: new Uint8Array(n),
    sourceVersionsAtStop: undefined,
    handedPages: 0,
    handedZero: 0,
    handedBytes: 0,
    deliveredPages: 0,
    installedPages: 0,
    demanded: 0,
    postcopy: false,
  };
  const violation = (what: string) => {
    if (out.violations.length < 20) out.violations.push(what);
  };
  let where: 'source' | 'stopping' | 'destination' = 'source';
  const destPresent = new Uint8Array(n);
  const inFlight = new Uint8Array(n);
  const waiting = new Map<number, boolean[]>();
  let waitingCount = 0;
  let resolve!: (o: Outcomes) => void;
  const done = new Promise<Outcomes>((r) => {
    resolve = r;
  });
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, f: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      f();
    }, ms);
    timers.add(t);
  };
  const check = () => {
    if (out.source === undefined || out.destination === undefined) return;
    for (const t of timers) clearTimeout(t);
    timers.clear();
    resolve(out);
  };
  later(20_000, () => {
    out.reasons.push('hung: no outcome within 20 s');
    for (const t of timers) clearTimeout(t);
    resolve(out);
  });

  // -- source side ----------------------------------------------------------------------
  let waitingDrain = false;
  const attach = (b: PageBatch) => {
    const mask = new Uint8Array(Math.ceil(b.pageCount / 8));
    const pages: Uint8Array[] = [];
    let i = 0;
    forEachPage(b.runs, (p) => {
      if (memory.isZero(p)) mask[i >> 3] |= 1 << (i & 7);
      else pages.push(pageBytes(memory.versions[p], p));
      i++;
    });
    const data = new Uint8Array(pages.length * PAGE_SIZE);
    pages.forEach((pg, k) => {
      data.set(pg, k * PAGE_SIZE);
    });
    b.zeroMask = mask;
    b.data = data;
    out.handedPages += b.pageCount;
    out.handedZero += b.zeroCount;
  };
  const send = (lane: LaneConnection, m: SourceMessage): boolean => {
    if (m.type === 'pages') attach(m.batch);
    const bytes = m.type === 'pages' ? batchBytes(m.batch.pageCount, m.batch.zeroCount) : 0;
    out.handedBytes += m.type === 'switchover' ? m.deviceStateBytes : bytes;
    const ok = lane.send(m);
    source.sent(now(), bytes);
    return ok;
  };
  const sourceEvents = () => {
    for (const e of source.takeEvents()) {
      if (e.type === 'stop-guest') {
        where = 'stopping';
        // the guest reaches a task boundary a little later
        later(rng.int(3), () => {
          out.sourceVersionsAtStop = Int32Array.from(memory.versions);
          source.guestStopped(now(), randomBytes(32 + rng.int(64)));
          pump();
        });
      } else if (e.type === 'guest-continued') where = 'source';
      else if (e.type === 'finished') {
        out.source = e.outcome;
        out.reasons.push(`source: ${e.outcome}: ${e.reason}`);
        check();
      }
    }
  };
  const pump = () => {
    while (source.hasWork('urgent')) {
      const m = source.next(now(), 'urgent', Number.POSITIVE_INFINITY);
      if (!m) break;
      send(lanes.source.urgent, m);
    }
    sourceEvents();
    while (!waitingDrain && source.hasWork('bulk')) {
      const m = source.next(now(), 'bulk', 64 * (PAGE_SIZE + 8));
      sourceEvents();
      if (!m) break;
      if (!send(lanes.source.bulk, m)) waitingDrain = true;
      sourceWrites(3);
    }
    sourceEvents();
  };
  for (const l of LANES)
    lanes.source[l].onMessage((m) => {
      source.receive(now(), m as DestinationMessage);
      pump();
    });
  lanes.source.bulk.onDrain(() => {
    waitingDrain = false;
    pump();
  });
  // the guest on the source: a hot set rewritten often, and pages anywhere now and then;
  // it runs on a timer and also between the batches the source hands out, so however fast
  // the transport, pages are dirtied while they travel
  const sourceWrites = (max: number) => {
    if (where !== 'source' || out.source !== undefined) return;
    for (let k = rng.int(max + 1); k > 0; k--) {
      const p = rng.int(4) === 0 ? rng.int(n) : hot[rng.int(hot.length)];
      memory.write(p, ++clock);
      out.guestRam[p] = clock;
    }
  };
  const sourceGuest = () => {
    if (where !== 'source' || out.source !== undefined) return;
    sourceWrites(6);
    later(1 + rng.int(3), sourceGuest);
  };

  // -- destination side -----------------------------------------------------------------
  const flush = () => {
    for (const m of dest.takeMessages()) {
      if (m.type === 'demand') {
        const seen = new Set<number>();
        for (const p of m.pfns) {
          if (seen.has(p)) violation(`pfn ${p} twice in one demand`);
          else if (inFlight[p]) violation(`pfn ${p} demanded again while in flight`);
          else if (destPresent[p]) violation(`pfn ${p} demanded while present`);
          seen.add(p);
          inFlight[p] = 1;
          out.demanded++;
        }
      }
      (m.type === 'demand' ? lanes.destination.urgent : lanes.destination.control).send(m);
    }
  };
  const destWrite = (p: number) => {
    out.destRam[p] = ++clock;
    out.guestRam[p] = clock;
    out.writtenThere[p] = 1;
  };
  const install = (b: PageBatch, runs: number[]) => {
    // each page's offset in the batch and in its data
    const offsets = new Map<number, { i: number; data: number }>();
    let i = 0;
    let d = 0;
    forEachPage(b.runs, (p) => {
      const z = (b.zeroMask![i >> 3] >> (i & 7)) & 1;
      offsets.set(p, { i, data: z ? -1 : d });
      if (!z) d++;
      i++;
    });
    const woken: number[] = [];
    forEachPage(runs, (p) => {
      const at = offsets.get(p);
      if (!at) return violation(`installed pfn ${p} not in the batch ${b.runs.join(',')}`);
      if (out.postcopy && destPresent[p]) violation(`${b.kind} arrival over present pfn ${p}`);
      let version = 0;
      if (at.data >= 0) {
        const v = new DataView(b.data!.buffer, b.data!.byteOffset + at.data * PAGE_SIZE, 8);
        version = v.getInt32(0, true);
        if (v.getUint32(4, true) !== p)
          violation(`pfn ${p} carried the bytes of pfn ${v.getUint32(4, true)}`);
      }
      out.destRam[p] = version;
      destPresent[p] = 1;
      inFlight[p] = 0;
      out.installedPages++;
      if (waiting.has(p)) woken.push(p);
    });
    for (const p of woken) {
      const writes = waiting.get(p)!;
      waiting.delete(p);
      waitingCount -= writes.length;
      for (const w of writes) if (w) destWrite(p);
    }
  };
  const touch = (p: number, write: boolean) => {
    const expected = destPresent[p] ? 'present' : inFlight[p] ? 'waiting' : 'requested';
    const r = dest.fault(now(), p);
    if (r !== expected) violation(`fault on pfn ${p} answered ${r}, expected ${expected}`);
    if (r === 'present') {
      if (write) destWrite(p);
      return;
    }
    waiting.set(p, [...(waiting.get(p) ?? []), write]);
    waitingCount++;
    flush();
  };
  /** The guest on the destination touches pages (on a timer, and between arrivals). */
  const destTouches = (max: number) => {
    if (where !== 'destination') return;
    for (let k = rng.int(max + 1); k > 0 && waitingCount < s.maxWaiting; k--) {
      const p = rng.int(3) === 0 ? rng.int(n) : hot[rng.int(hot.length)];
      touch(p, rng.int(2) === 0);
    }
  };
  const destGuest = () => {
    if (out.destination !== undefined && out.source !== undefined) return;
    destTouches(4);
    later(1 + rng.int(3), destGuest);
  };
  for (const l of LANES)
    lanes.destination[l].onMessage((raw) => {
      const m = raw as SourceMessage;
      if (m.type === 'switchover') {
        forEachPage(m.discard, (p) => {
          destPresent[p] = 0;
          out.destRam[p] = -1;
        });
        out.postcopy = m.postcopy;
      }
      const arrival = dest.receive(now(), m);
      if (m.type === 'pages') {
        out.deliveredPages += m.batch.pageCount;
        if (arrival) install(m.batch, arrival.install);
      }
      for (const e of dest.takeEvents()) {
        if (e.type === 'guest-resumed') {
          where = 'destination';
          destGuest();
        } else {
          out.destination = e.outcome;
          out.reasons.push(`destination: ${e.outcome}: ${e.reason}`);
        }
      }
      destTouches(2);
      flush();
      check();
    });

  source.start(now());
  sourceGuest();
  pump();
  return done;
}

// ---------------------------------------------------------------------------------------
// The suite, once per transport

const SCENARIOS: { mode: MigrationMode; maxWaiting: number; seeds: number[] }[] = [
  { mode: 'precopy', maxWaiting: 1, seeds: [1, 2] },
  { mode: 'postcopy', maxWaiting: 16, seeds: [3, 4] },
  { mode: 'postcopy', maxWaiting: 1, seeds: [5] },
  { mode: 'hybrid', maxWaiting: 8, seeds: [6, 7] },
];

for (const transport of [memoryLanes, tcpLanes]) {
  describe(`engine contract over ${transport.name}`, () => {
    for (const sc of SCENARIOS)
      for (const seed of sc.seeds)
        test(`${sc.mode}${sc.mode === 'precopy' ? '' : `, ${sc.maxWaiting} waiting at most`}, seed ${seed}`, async () => {
          const s: Scenario = {
            mode: sc.mode,
            seed,
            pageCount: 1500 + seed * 97,
            maxWaiting: sc.maxWaiting,
            config: migrationConfig({
              mode: sc.mode,
              stop: { downtimeLimitMs: 50, maxRounds: 30, onNoConvergence: 'force' },
              postcopy: { prepageForward: seed % 3, prepageBackward: seed % 2 },
              hybrid: { rounds: 2 },
            }),
          };
          const lanes = await transport.open(seed);
          let o: Outcomes;
          try {
            o = await runMigration(s, lanes);
          } finally {
            await lanes.close();
          }
          checkContract(s, o);
        });
  });
}

function checkContract(s: Scenario, o: Outcomes): void {
  const why = o.reasons.join('; ');
  assert.deepEqual(o.violations, [], why);
  assert.equal(o.source, 'completed', why);
  assert.equal(o.destination, 'completed', why);
  if (s.mode === 'precopy') assert.equal(o.postcopy, false, 'precopy resumes with every page');
  if (s.mode === 'postcopy') assert.equal(o.postcopy, true, 'postcopy resumes before the pages');

  // final RAM equal page for page; nothing stale: every page not written on the destination
  // holds what the source had when the guest stopped there
  const atStop = o.sourceVersionsAtStop!;
  let stale = 0;
  const examples: string[] = [];
  for (let p = 0; p < s.pageCount; p++) {
    if (o.destRam[p] !== o.guestRam[p] && examples.length < 5)
      examples.push(`pfn ${p}: destination ${o.destRam[p]}, guest ${o.guestRam[p]}`);
    if (!o.writtenThere[p] && o.destRam[p] !== atStop[p]) stale++;
  }
  assert.deepEqual(examples, [], 'destination RAM equals the guest RAM');
  assert.equal(stale, 0, 'no stale page survives');

  // counts add up
  const src = o.sourceEngine.stats;
  const dst = o.destEngine.stats;
  const kinds = src.pagesSent;
  assert.equal(kinds.bulk + kinds.urgent + kinds.prepaged + kinds.resent + kinds.zero, o.handedPages);
  assert.equal(kinds.zero, o.handedZero);
  assert.equal(src.bytesSent, o.handedBytes, 'bytes accounted = bytes handed to the lanes');
  assert.equal(dst.remoteFaults, o.demanded, 'one remote fault per demanded page');
  assert.equal(dst.faultLatencyUs.length, dst.remoteFaults, 'every demanded page arrived');
  assert.equal(
    o.installedPages + dst.duplicatesDropped,
    o.deliveredPages,
    'every arrival installed or dropped',
  );
  // once every page is present the lanes close: second copies of demanded pages (at most
  // one per demand) may still be on the way then
  const surplus = o.handedPages - o.deliveredPages;
  assert.ok(surplus >= 0 && surplus <= src.demandResends, `${surplus} pages handed out never arrived`);
  if (s.mode === 'precopy') assert.equal(dst.remoteFaults, 0);
  if (s.mode === 'postcopy') assert.ok(dst.remoteFaults > 0, 'the guest faulted on missing pages');
  // postcopy sends each page once, but for urgent second copies of pages demanded in flight
  if (o.postcopy) assert.ok(dst.duplicatesDropped <= src.demandResends, 'postcopy sends each page once');
}
