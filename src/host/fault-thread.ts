// A host's fault thread: the urgent lanes of its migrations, off the host's loop, which the
// background push and the clients keep busy. As the destination it takes the vCPUs' remote
// faults straight from their threads, sends the demand requests, installs the pages that
// come back and says "page ready"; as the source it answers each demand from the frozen
// guest RAM at once. Each hop of a demand then lands on a thread with nothing else to do
// (as QEMU's postcopy fault thread and return-path thread). The host's loop keeps the
// books: it hears of every request, install and answer afterwards and feeds its engine.

import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import type { Message } from '../engine/messages.ts';
import { GuestRam, INSTALLING, PRESENT, type RamBuffers } from '../guest/ram.ts';
import { epochMs, type FaultReport, type ToVcpu } from '../guest/vcpu-protocol.ts';
import { rehearseFaultPath } from './fault-rehearsal.ts';
import { framePool } from './frame-pool.ts';
import { delayedLane } from './lane-latency.ts';
import { installBatch, sendUrgentPages } from './pages.ts';
import { setThreadNice } from './thread-priority.ts';
import {
  ALL_CAPABILITIES,
  connectLane,
  type LaneConnection,
  listenLanes,
  type TransportError,
} from './transport.ts';

export interface FaultThreadOptions {
  /** Address and port the urgent lanes into this host arrive at (port 0: any). */
  host: string;
  port: number;
  secret: Uint8Array;
  /** Latency added to every message arriving on a lane (see lane-latency.ts). */
  latencyMs: number;
  /** The thread's nice value (0: as the host's other threads; see fault-path.ts). */
  nice: number;
}

/** What the thread did on its own, for the host's books. */
export type FaultPathRecord =
  /** Destination: a demand request went for `pfn` at `at` (ms since the epoch). */
  | { type: 'requested'; id: string; pfn: number; at: number }
  /** Destination: urgent pages installed here. */
  | { type: 'installed'; id: string; runs: number[]; at: number }
  /** Source: a demand answered here, `zeroPages` of its pages zero. */
  | { type: 'served'; id: string; pfns: number[]; zeroPages: number; at: number };

/** From the host's loop. */
export type ToFaultThread =
  /** An incoming migration whose urgent lane may arrive. */
  | { type: 'expect'; id: string }
  /** The destination's side of its lane: the VM's RAM, its checksums, its vCPUs' fault ports. */
  | {
      type: 'attach';
      id: string;
      ram: RamBuffers;
      sums: SharedArrayBuffer;
      written: SharedArrayBuffer;
      vcpus: MessagePort[];
    }
  /** An outgoing migration: open its urgent lane to the destination's fault thread. */
  | { type: 'dial'; id: string; host: string; port: number; ram: RamBuffers }
  /** The source is in postcopy: answer demands here from now on. */
  | { type: 'serve'; id: string }
  /** Pages the host's loop installed (from the bulk lane) that faults here may wait for. */
  | { type: 'arrived'; id: string; runs: number[] }
  | { type: 'send'; id: string; msg: Message }
  | { type: 'pause-reading' | 'resume-reading' | 'close' | 'destroy' | 'forget'; id: string };

/** To the host's loop. */
export type FromFaultThread =
  | { type: 'listening'; port: number }
  | { type: 'lane'; id: string; remoteAddress: string; peerCapabilities: number }
  | { type: 'dial-failed'; id: string; message: string }
  | { type: 'message'; id: string; msg: Message }
  | { type: 'closed'; id: string; error?: { code: TransportError['code']; message: string } }
  /** In the order they happened, and before any message posted after them. */
  | { type: 'records'; records: FaultPathRecord[] }
  | { type: 'log'; line: string };

interface Waiter {
  port: MessagePort;
  token: number;
}

interface Migration {
  lane?: LaneConnection;
  /** Destination: the VM's RAM and checksums, once attached. */
  ram?: GuestRam;
  sums?: Uint32Array;
  written?: Uint8Array;
  ports: MessagePort[];
  /** Destination: pages requested and not yet here, with the parked faults waiting on them. */
  awaited: Map<number, Waiter[]>;
  /** Source: demands are answered here. */
  serving: boolean;
}

/** Demands the thread rehearses at its start. */
const REHEARSAL_ROUNDS = 1500;

/**
 * How late (ms) the host's loop may hear of a record. Each record a message of its own
 * would wake the loop (and make it wake this thread back) three times a fault, on cores the
 * faults need; gathered, it is once a millisecond. Each record carries its own time.
 */
const RECORDS_DELAY_MS = 1;

const port = parentPort!;
const options = workerData as FaultThreadOptions;
const migrations = new Map<string, Migration>();
const records: FaultPathRecord[] = [];
let recordsTimer: ReturnType<typeof setTimeout> | undefined;

function postRecords(): void {
  clearTimeout(recordsTimer);
  recordsTimer = undefined;
  if (records.length > 0)
    port.postMessage({ type: 'records', records: records.splice(0) } satisfies FromFaultThread);
}

function record(r: FaultPathRecord): void {
  records.push(r);
  recordsTimer ??= setTimeout(postRecords, RECORDS_DELAY_MS);
}

const post = (m: FromFaultThread) => {
  postRecords();
  port.postMessage(m);
};

function migration(id: string): Migration {
  let m = migrations.get(id);
  if (!m) {
    m = { ports: [], awaited: new Map(), serving: false };
    migrations.set(id, m);
  }
  return m;
}

function forget(id: string): void {
  const m = migrations.get(id);
  if (!m) return;
  migrations.delete(id);
  for (const p of m.ports) p.close();
}

/** A lane of migration `id` is up: its messages come here, its end goes to the host's loop. */
function adopt(id: string, raw: LaneConnection): void {
  const m = migration(id);
  const lane = delayedLane(raw, options.latencyMs);
  m.lane = lane;
  lane.onMessage((msg) => {
    if (msg.type === 'demand' && m.serving && m.ram) serve(id, m, msg.pfns);
    else if (msg.type === 'pages' && m.sums && install(id, m, msg)) return;
    else post({ type: 'message', id, msg });
  });
  lane.onClose((e) => {
    post({ type: 'closed', id, error: e && { code: e.code, message: e.message } });
    forget(id);
  });
  post({ type: 'lane', id, remoteAddress: raw.remoteAddress, peerCapabilities: raw.peerCapabilities });
}

// --- the source: demands answered from the frozen RAM ------------------------------------

function serve(id: string, m: Migration, asked: number[]): void {
  const ram = m.ram!;
  const pfns = [...new Set(asked)].filter((p) => Number.isInteger(p) && p >= 0 && p < ram.pages);
  if (pfns.length === 0) return;
  let zeroPages: number;
  try {
    zeroPages = sendUrgentPages(ram, m.lane!, pfns).zeroCount;
  } catch (e) {
    post({ type: 'log', line: `${id}: could not answer a demand: ${(e as Error).message}` });
    return;
  }
  record({ type: 'served', id, pfns, zeroPages, at: epochMs() });
}

// --- the destination: faults, demands, installs -------------------------------------------

/** Waits (briefly: one page's copy) while the host's loop installs `pfn`. */
function settle(ram: GuestRam, pfn: number): void {
  while (Atomics.load(ram.presence, pfn) === INSTALLING) Atomics.wait(ram.presence, pfn, INSTALLING, 1);
}

function fault(id: string, m: Migration, from: MessagePort, f: FaultReport): void {
  const ram = m.ram!;
  if (!(Number.isInteger(f.pfn) && f.pfn >= 0 && f.pfn < ram.pages)) return;
  settle(ram, f.pfn);
  if (Atomics.load(ram.presence, f.pfn) === PRESENT) {
    if (f.token > 0) from.postMessage({ type: 'ready', token: f.token } satisfies ToVcpu);
    return;
  }
  let waiters = m.awaited.get(f.pfn);
  if (!waiters) {
    // the first fault on the page asks for it; a second one waits for the same answer
    waiters = [];
    m.awaited.set(f.pfn, waiters);
    try {
      m.lane?.send({ type: 'demand', pfns: [f.pfn] });
    } catch (e) {
      post({ type: 'log', line: `${id}: could not send a demand: ${(e as Error).message}` });
    }
    record({ type: 'requested', id, pfn: f.pfn, at: epochMs() });
  }
  if (f.token > 0) waiters.push({ port: from, token: f.token });
}

/** Pages `runs` are present: "page ready" to every parked fault on them. */
function wake(m: Migration, runs: number[]): void {
  if (m.awaited.size === 0) return;
  for (let i = 0; i < runs.length; i += 2)
    for (let p = runs[i]; p < runs[i] + runs[i + 1]; p++) {
      const waiters = m.awaited.get(p);
      if (!waiters) continue;
      m.awaited.delete(p);
      settle(m.ram!, p);
      for (const w of waiters) w.port.postMessage({ type: 'ready', token: w.token } satisfies ToVcpu);
    }
}

/** Installs urgent pages; false when the message is the engine's to judge (out of bounds). */
function install(id: string, m: Migration, msg: Extract<Message, { type: 'pages' }>): boolean {
  const { batch } = msg;
  const ram = m.ram!;
  for (let i = 0; i < batch.runs.length; i += 2)
    if (!(batch.runs[i] >= 0 && batch.runs[i + 1] >= 0 && batch.runs[i] + batch.runs[i + 1] <= ram.pages))
      return false;
  const runs = installBatch(ram, batch, batch.runs, m.sums!, m.written, true);
  if (batch.data) framePool.give(batch.data);
  const at = epochMs();
  // a page installed by the host's loop meanwhile is present too: its waiters go now
  wake(m, batch.runs);
  if (runs.length > 0) record({ type: 'installed', id, runs, at });
  return true;
}

// --- the host's loop ------------------------------------------------------------------------

async function dial(id: string, host: string, lanePort: number, ram: RamBuffers): Promise<void> {
  try {
    const lane = await connectLane({
      host,
      port: lanePort,
      secret: options.secret,
      migrationId: id,
      lane: 'urgent',
      capabilities: ALL_CAPABILITIES,
    });
    migration(id).ram = new GuestRam(ram);
    adopt(id, lane);
  } catch (e) {
    post({ type: 'dial-failed', id, message: (e as Error).message });
  }
}

/** Runs `work`; what it throws is logged (a bad message costs that message, not the thread). */
function guarded(id: string, work: () => void): void {
  try {
    work();
  } catch (e) {
    post({ type: 'log', line: `${id}: ${(e as Error)?.stack ?? e}` });
  }
}

port.on('message', (c: ToFaultThread) => guarded(c.id, () => command(c)));

function command(c: ToFaultThread): void {
  switch (c.type) {
    case 'expect':
      migration(c.id);
      return;
    case 'attach': {
      const m = migration(c.id);
      m.ram = new GuestRam(c.ram);
      m.sums = new Uint32Array(c.sums);
      m.written = new Uint8Array(c.written);
      m.ports = c.vcpus;
      for (const p of c.vcpus) p.on('message', (f: FaultReport) => guarded(c.id, () => fault(c.id, m, p, f)));
      return;
    }
    case 'dial':
      void dial(c.id, c.host, c.port, c.ram);
      return;
    case 'serve':
      migration(c.id).serving = true;
      return;
    case 'arrived': {
      const m = migrations.get(c.id);
      if (m?.ram) wake(m, c.runs);
      return;
    }
    case 'send':
      try {
        migrations.get(c.id)?.lane?.send(c.msg);
      } catch (e) {
        post({ type: 'log', line: `${c.id}: could not send ${c.msg.type}: ${(e as Error).message}` });
      }
      return;
    case 'pause-reading':
      migrations.get(c.id)?.lane?.pauseReading();
      return;
    case 'resume-reading':
      migrations.get(c.id)?.lane?.resumeReading();
      return;
    case 'close':
    case 'destroy': {
      const lane = migrations.get(c.id)?.lane;
      if (lane) c.type === 'close' ? lane.close() : lane.destroy();
      else forget(c.id);
      return;
    }
    case 'forget':
      forget(c.id);
      return;
  }
}

const listener = await listenLanes({
  host: options.host,
  port: options.port,
  secret: options.secret,
  capabilities: ALL_CAPABILITIES,
  log: (line) => post({ type: 'log', line }),
  onLane: (lane) => {
    const m = migrations.get(lane.migrationId);
    if (lane.lane !== 'urgent' || !m || m.lane) {
      const why = `no ${lane.lane} lane of migration '${lane.migrationId}' expected here`;
      post({ type: 'log', line: `refused the ${lane.lane} lane from ${lane.remoteAddress}: ${why}` });
      throw new Error(why);
    }
    adopt(lane.migrationId, lane);
  },
});
if (options.nice !== 0) {
  const refused = setThreadNice(options.nice);
  if (refused)
    post({
      type: 'log',
      line: `the fault thread stays at the host's priority: nice ${options.nice} refused (${refused})`,
    });
}
post({ type: 'listening', port: listener.port });
// the path compiled before the first postcopy needs it (see fault-rehearsal.ts); in the
// background, so that the host starts as soon as it listens
void rehearseFaultPath(options.secret, REHEARSAL_ROUNDS).catch(() => {});
