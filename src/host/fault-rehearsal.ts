// A fault thread rehearses its path when it starts, as the vCPU threads rehearse their
// apps: demands and their pages over an urgent lane to itself on loopback, each page read
// from scratch RAM as a source answers it and installed into another as a destination
// does. V8 compiles that path meanwhile, at the host's start, instead of during its first
// postcopies, where compiling on the cores the migration needs slowed the first demands
// (a host's first probe migration: p50 ~250 µs against ~100 once warm).

import { PAGE_SIZE } from '../engine/messages.ts';
import { GuestRam } from '../guest/ram.ts';
import { framePool } from './frame-pool.ts';
import { installBatch, sendUrgentPages } from './pages.ts';
import { ALL_CAPABILITIES, connectLane, type LaneConnection, listenLanes } from './transport.ts';

/** Pages of scratch RAM on each side: demands cycle through them. */
const PAGES = 64;

/**
 * Runs `rounds` demands through a lane pair on 127.0.0.1 authenticated with `secret` and
 * resolves with the pages the last pass installed, each checked against its source. The
 * caller only loses its time if it fails (the thread serves anyway).
 */
export async function rehearseFaultPath(secret: Uint8Array, rounds: number): Promise<number> {
  const source = GuestRam.create(PAGES * PAGE_SIZE, true);
  for (let p = 0; p < PAGES; p++) source.bytes.fill((p * 37 + 1) & 0xff, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
  const destination = GuestRam.create(PAGES * PAGE_SIZE, false);
  const sums = new Uint32Array(PAGES);
  const written = new Uint8Array(PAGES);
  let accepted: (lane: LaneConnection) => void = () => {};
  const destinationLane = new Promise<LaneConnection>((resolve) => {
    accepted = resolve;
  });
  const listener = await listenLanes({
    host: '127.0.0.1',
    port: 0,
    secret,
    capabilities: ALL_CAPABILITIES,
    log: () => {},
    onLane: (lane) => accepted(lane),
  });
  let sourceLane: LaneConnection | undefined;
  let dest: LaneConnection | undefined;
  try {
    sourceLane = await connectLane({
      host: '127.0.0.1',
      port: listener.port,
      secret,
      migrationId: 'rehearsal',
      lane: 'urgent',
      capabilities: ALL_CAPABILITIES,
    });
    dest = await destinationLane;
    const src = sourceLane;
    const dst = dest;
    // the source answers each demand from its RAM, as the fault thread's serve does
    src.onMessage((msg) => {
      if (msg.type === 'demand') sendUrgentPages(source, src, msg.pfns);
    });
    // the destination installs each answer and asks for the next page
    await new Promise<void>((resolve, reject) => {
      let n = 0;
      const ask = () => {
        const pfn = n % PAGES;
        if (pfn === 0) {
          // a new round over the same pages: missing again
          destination.markMissing(0, PAGES);
          written.fill(0);
        }
        dst.send({ type: 'demand', pfns: [pfn] });
      };
      dst.onMessage((msg) => {
        if (msg.type !== 'pages') return;
        installBatch(destination, msg.batch, msg.batch.runs, sums, written, true);
        if (msg.batch.data) framePool.give(msg.batch.data);
        if (++n >= rounds) resolve();
        else ask();
      });
      dst.onClose((e) => reject(e ?? new Error('the rehearsal lane closed')));
      ask();
    });
    // the last pass's pages arrived whole
    const last = ((rounds - 1) % PAGES) + 1;
    for (let p = 0; p < last; p++) {
      const at = p * PAGE_SIZE;
      if (
        !destination.isPresent(p) ||
        Buffer.compare(
          source.bytes.subarray(at, at + PAGE_SIZE),
          destination.bytes.subarray(at, at + PAGE_SIZE),
        ) !== 0
      )
        throw new Error(`rehearsal: page ${p} did not arrive whole`);
    }
    return last;
  } finally {
    sourceLane?.destroy();
    dest?.destroy();
    await listener.close();
  }
}
