// The fault threads of two hosts: a remote fault goes from a vCPU's port to the destination's
// thread, its demand to the source's thread, the page back into guest RAM and "page ready"
// to the vCPU, with no host loop on the way; the loops hear of each step afterwards.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { after, before, test } from 'node:test';
import type { MessagePort } from 'node:worker_threads';
import type { Message } from '../../src/engine/messages.ts';
import type { GuestMachine } from '../../src/guest/machine.ts';
import { GuestRam } from '../../src/guest/ram.ts';
import type { ToVcpu } from '../../src/guest/vcpu-protocol.ts';
import { crc32 } from '../../src/host/crc32.ts';
import { FAULT_THREAD_NICE, FaultPath, type FaultPathLane } from '../../src/host/fault-path.ts';

const PAGE = 4096;
const PAGES = 64;
const secret = randomBytes(32);
const logs: string[] = [];
let src: FaultPath;
let dst: FaultPath;

before(async () => {
  const opts = { host: '127.0.0.1', port: 0, secret, latencyMs: 0, nice: FAULT_THREAD_NICE };
  [src, dst] = await Promise.all([
    FaultPath.start(opts, (l) => logs.push(`src: ${l}`)),
    FaultPath.start(opts, (l) => logs.push(`dst: ${l}`)),
  ]);
});

after(async () => {
  await Promise.all([src.close(), dst.close()]);
});

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** An urgent lane between the two threads for migration `id`. */
async function connect(id: string, ram: GuestRam): Promise<{ out: FaultPathLane; into: FaultPathLane }> {
  let into: FaultPathLane | undefined;
  dst.onLane = (l) => {
    into = l;
  };
  dst.expect(id);
  const out = await src.dial(id, '127.0.0.1', dst.port, ram.buffers);
  await until('the lane to arrive', () => into !== undefined);
  return { out, into: into! };
}

/** A stand-in for the destination's VM: its RAM and one vCPU's fault port. */
function vm(ram: GuestRam): { machine: GuestMachine; port: () => MessagePort } {
  let ports: MessagePort[] | null = null;
  const machine = {
    spec: { vcpus: 1 },
    ram,
    routeFaults: (p: MessagePort[] | null) => {
      ports = p;
    },
  } as unknown as GuestMachine;
  return { machine, port: () => ports![0] };
}

function readyTokens(port: MessagePort): number[] {
  const tokens: number[] = [];
  port.on('message', (m: ToVcpu) => {
    if (m.type === 'ready') tokens.push(m.token);
  });
  return tokens;
}

test('a remote fault is served thread to thread: page installed, parked faults woken, both loops told', async () => {
  const source = GuestRam.create(PAGES * PAGE, true);
  for (let p = 0; p < PAGES; p++) if (p !== 13) source.page(p).fill(p + 1); // page 13 is zero
  const ram = GuestRam.create(PAGES * PAGE, false);
  const sums = new Uint32Array(new SharedArrayBuffer(PAGES * 4));
  const written = new Uint8Array(new SharedArrayBuffer(PAGES));
  const { out, into } = await connect('m1', source);
  const served: number[][] = [];
  const requested: number[] = [];
  const installed: number[][] = [];
  const relayed: Message[] = [];
  out.onServed((pfns) => served.push(pfns));
  out.onMessage((m) => relayed.push(m));
  into.onRequested((pfn) => requested.push(pfn));
  into.onInstalled((runs) => installed.push(runs));
  const { machine, port } = vm(ram);
  into.takeFaults(machine, sums, written);
  const vcpu = port();
  const tokens = readyTokens(vcpu);

  // before the source serves (still its engine's), a demand reaches the source's loop
  into.send({ type: 'demand', pfns: [1] });
  await until('the demand relayed', () => relayed.length === 1);
  assert.deepEqual(relayed[0], { type: 'demand', pfns: [1] });

  out.serveDemands();
  await new Promise((r) => setTimeout(r, 20)); // the thread has taken the word
  vcpu.postMessage({ type: 'fault', vcpu: 0, pfn: 5, token: 7 });
  await until('page ready for token 7', () => tokens.includes(7));
  assert.ok(ram.isPresent(5));
  assert.deepEqual(ram.page(5), source.page(5));
  assert.equal(sums[5], crc32(source.page(5)));
  assert.equal(written[5], 1);
  await until('the loops told', () => served.length === 1 && installed.length === 1);
  assert.deepEqual(served[0], [5]);
  assert.deepEqual(requested, [5]);
  assert.deepEqual(installed[0], [5, 1]);

  // two faults on one page: one demand, both woken
  vcpu.postMessage({ type: 'fault', vcpu: 0, pfn: 9, token: 1 });
  vcpu.postMessage({ type: 'fault', vcpu: 0, pfn: 9, token: 2 });
  await until('both woken', () => tokens.includes(1) && tokens.includes(2));
  await until('the answer told', () => served.length === 2);
  assert.deepEqual(served[1], [9], 'asked for once');

  // a blocking fault (no token): the vCPU waits on the page's presence
  vcpu.postMessage({ type: 'fault', vcpu: 0, pfn: 13, token: 0 });
  await until('the zero page present', () => ram.isPresent(13));
  assert.ok(ram.page(13).every((b) => b === 0));

  // a page present already: ready at once, nothing asked
  ram.markPresent(3, 1);
  vcpu.postMessage({ type: 'fault', vcpu: 0, pfn: 3, token: 4 });
  await until('ready for a present page', () => tokens.includes(4));
  assert.deepEqual(requested, [5, 9, 13]);

  // a page the host's loop installed from the bulk lane while a fault waited for it
  Atomics.store(ram.presence, 20, 2); // being installed there
  vcpu.postMessage({ type: 'fault', vcpu: 0, pfn: 20, token: 5 });
  await new Promise((r) => setTimeout(r, 10));
  ram.markPresent(20, 1);
  await until('ready once the loop installed it', () => tokens.includes(5));

  let closed = false;
  into.onClose(() => {
    closed = true;
  });
  out.close();
  await until('the lane closed at both ends', () => closed);
});

test('an urgent lane no migration expects is refused and logged; a wrong secret fails the dial', async () => {
  const ram = GuestRam.create(PAGES * PAGE, true);
  const stray = await src.dial('nobody', '127.0.0.1', dst.port, ram.buffers);
  let closed = false;
  stray.onClose(() => {
    closed = true;
  });
  await until('the stray lane closed', () => closed);
  await until('the refusal logged', () =>
    logs.some((l) => /dst: refused the urgent lane .*'nobody'/.test(l)),
  );

  const other = await FaultPath.start(
    { host: '127.0.0.1', port: 0, secret: randomBytes(32), latencyMs: 0, nice: 0 },
    () => {},
  );
  try {
    dst.expect('m2');
    await assert.rejects(other.dial('m2', '127.0.0.1', dst.port, ram.buffers), /auth/i);
  } finally {
    await other.close();
  }
});

test('a fault thread that dies ends its lanes with the reason, and a new one takes the next migrations', async () => {
  const ram = GuestRam.create(PAGES * PAGE, true);
  const { out, into } = await connect('m3', ram);
  let error: Error | undefined;
  out.onClose((e) => {
    error = e;
  });
  let remoteClosed = false;
  into.onClose(() => {
    remoteClosed = true;
  });
  // the thread goes away as a crashed one does
  await (src as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
  await until('the lane ended', () => error !== undefined);
  assert.match(error!.message, /fault thread died/);
  await until('the other end closed too', () => remoteClosed);
  assert.ok(logs.some((l) => /src: the fault thread died .*starting another/.test(l)));
  // the next migration's lane goes through the new thread, and carries messages
  const again = await connect('m4', ram);
  const got: Message[] = [];
  again.out.onMessage((m) => got.push(m));
  again.into.send({ type: 'demand', pfns: [7] });
  await until('a message over the new thread', () => got.length === 1);
  again.out.close();
});

test('a fault thread listens on the port it is given (a host with --urgent-port)', async () => {
  const free = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
  const fixed = await FaultPath.start(
    { host: '127.0.0.1', port: free, secret, latencyMs: 0, nice: 0 },
    () => {},
  );
  try {
    assert.equal(fixed.port, free);
  } finally {
    await fixed.close();
  }
});

/** The nice values of this process's threads (field 19 of each /proc task's stat). */
function threadNices(): number[] {
  return readdirSync('/proc/self/task').map((tid) => {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  });
}

test('a fault thread runs at the nice value it is given, ahead of the host, or says why not', async () => {
  // a higher nice value than the host's own needs no privilege
  const lower = await FaultPath.start(
    { host: '127.0.0.1', port: 0, secret, latencyMs: 0, nice: 7 },
    () => {},
  );
  try {
    assert.ok(threadNices().includes(7), `no thread at nice 7 among ${threadNices()}`);
  } finally {
    await lower.close();
  }
  // the default, ahead of the host's other threads, needs root or CAP_SYS_NICE
  if (process.getuid?.() === 0)
    assert.ok(threadNices().includes(FAULT_THREAD_NICE), `no thread at nice ${FAULT_THREAD_NICE}`);
  else assert.ok(logs.some((l) => /fault thread stays at the host's priority: nice -10 refused/.test(l)));
});
