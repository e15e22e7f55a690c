// A VM's network device on its host: the client connections of the VM, each with its
// protocol framer (only whole requests enter the guest), the requests taken and not yet
// answered, and the replies going back in order. This is connection state that belongs to
// the guest: at the switchover it is saved into the device state and moves with the VM, and
// the destination's device carries on from it (unparsed bytes, queued requests, a client
// that had hung up). A request in progress when the guest stops was not answered: it stays
// first in its queue and runs again where the guest resumes (handlers are transactions).

import type { ClientRequest, Framer, WireProtocol } from '../apps/protocol.ts';
import type { GuestMachine } from '../guest/machine.ts';

/** Where a connection's replies go (the switch link, or a direct socket). */
export interface Wire {
  write(bytes: Uint8Array): void;
  /** Closes the connection once what was written has gone out. */
  end(): void;
}

/** The device's connection state as plain data (byte strings in base64). */
export interface NicState {
  /** Requests answered so far, wherever the VM ran (a counter that moves with it). */
  served: number;
  /** Their time in the guest, from handed to it to answered, ms (moves with it too). */
  servedMs?: number;
  /** The part of it spent crossing between the host's thread and the vCPUs' (see Served). */
  hopMs?: number;
  conns: {
    id: number;
    unparsed: string;
    queue: { args: string[]; close?: boolean }[];
    /** A protocol error's reply, written once the queue is answered; then the connection closes. */
    fatal?: string;
    hungUp: boolean;
  }[];
}

interface Conn {
  id: number;
  wire: Wire;
  framer: Framer;
  queue: ClientRequest[];
  busy: boolean;
  fatal?: Uint8Array;
  hungUp: boolean;
}

const b64 = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
const unb64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));

export class VmNic {
  private readonly conns = new Map<number, Conn>();
  /** Requests answered, wherever the VM ran: it moves with the device state. */
  served = 0;
  /**
   * Their time in the guest (handed to it until answered, ms): what is left of the clients'
   * cycle is their way outside it (client, switch, host threads, links).
   */
  servedMs = 0;
  /** The part of servedMs the requests spent crossing between threads (see Served). */
  hopMs = 0;

  constructor(
    private readonly protocol: WireProtocol,
    private readonly machine: () => GuestMachine | undefined,
  ) {}

  get connections(): number {
    return this.conns.size;
  }

  open(id: number, wire: Wire): void {
    this.conns.get(id)?.wire.end();
    this.conns.set(id, { id, wire, framer: this.protocol.framer(), queue: [], busy: false, hungUp: false });
  }

  receive(id: number, bytes: Uint8Array): void {
    const c = this.conns.get(id);
    if (!c || c.fatal || c.hungUp) return;
    const r = c.framer.push(bytes);
    c.queue.push(...r.requests);
    if (r.error) c.fatal = r.error.reply;
    this.next(c);
  }

  /** The client closed its side: its requests are still answered, then the connection closes. */
  hangUp(id: number): void {
    const c = this.conns.get(id);
    if (!c) return;
    c.hungUp = true;
    this.next(c);
  }

  /** The guest runs (again) here: serve what waited. */
  pump(): void {
    for (const c of this.conns.values()) this.next(c);
  }

  private next(c: Conn): void {
    if (c.busy) return;
    if (c.queue.length === 0) {
      if (c.fatal) c.wire.write(c.fatal);
      if (c.fatal || c.hungUp) this.drop(c);
      return;
    }
    const m = this.machine();
    // the guest is stopped (its switchover): the request waits for where it resumes
    if (!m?.running) return;
    c.busy = true;
    const req = c.queue[0];
    const since = performance.now();
    m.execute(req.args).then(
      ({ reply, hopMs }) => {
        c.busy = false;
        if (this.conns.get(c.id) !== c) return;
        c.queue.shift();
        this.served++;
        this.servedMs += performance.now() - since;
        this.hopMs += hopMs;
        c.wire.write(reply);
        if (req.close) this.drop(c);
        else this.next(c);
      },
      () => {
        // the guest stopped before answering: the request runs again where it resumes
        c.busy = false;
      },
    );
  }

  private drop(c: Conn): void {
    this.conns.delete(c.id);
    c.wire.end();
  }

  /** The connection state, to move with the guest. */
  save(): NicState {
    return {
      served: this.served,
      servedMs: this.servedMs,
      hopMs: this.hopMs,
      conns: [...this.conns.values()].map((c) => ({
        id: c.id,
        unparsed: b64(c.framer.pending()),
        queue: c.queue.map((r) => ({ args: r.args.map(b64), ...(r.close ? { close: true } : {}) })),
        ...(c.fatal ? { fatal: b64(c.fatal) } : {}),
        hungUp: c.hungUp,
      })),
    };
  }

  /** Takes over connections saved by the device the guest left (`wire` reaches each client). */
  restore(state: NicState, wire: (id: number) => Wire): void {
    this.served = state.served;
    this.servedMs = state.servedMs ?? 0;
    this.hopMs = state.hopMs ?? 0;
    for (const s of state.conns) {
      const framer = this.protocol.framer();
      const rest = unb64(s.unparsed);
      if (rest.length > 0) framer.push(rest);
      this.conns.set(s.id, {
        id: s.id,
        wire: wire(s.id),
        framer,
        queue: s.queue.map((r) => ({ args: r.args.map(unb64), close: r.close })),
        busy: false,
        fatal: s.fatal ? unb64(s.fatal) : undefined,
        hungUp: s.hungUp,
      });
    }
    this.pump();
  }

  /** Lets go of every connection without a word to its client (the guest serves them elsewhere). */
  forget(): void {
    this.conns.clear();
  }

  /** Closes every connection. */
  closeAll(): void {
    for (const c of [...this.conns.values()]) this.drop(c);
  }
}
