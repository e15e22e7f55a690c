// The virtual switch: clients reach each VM at one stable address, whichever host runs it.
// Hosts keep one authenticated link each to the switch; a client's connection is carried
// over the link of the VM's current host. When a VM moves, its source host asks the switch
// to hold the VM's client bytes before the guest stops (HOLD), hands its connection state
// to the guest's device state, and says when its last reply is out (DETACH); the
// destination attaches the VM (ATTACH) when it resumes it and gets every held byte, in
// order. Replies the destination sends before the source's last one has gone out wait, so a
// client hears every reply, in order, on the TCP connection it opened before the move.

import net from 'node:net';
import {
  encodeFrame,
  encodeJson,
  encodeText,
  FRAME,
  FrameDecoder,
  frameText,
  type LinkFrame,
  MAX_DATA,
  SWITCH_CHANNEL,
} from '../host/switch-protocol.ts';
import { type Listener, listenChannels } from '../host/transport.ts';

/** A VM whose host link is gone and that no host attaches within this time is forgotten. */
const ORPHAN_MS = 30_000;

export interface SwitchOptions {
  /** Where hosts connect. */
  host: string;
  port: number;
  /** Where each VM's client port listens. */
  clientsHost: string;
  secret: Uint8Array;
  log: (line: string) => void;
}

class HostLink {
  private readonly decoder = new FrameDecoder();
  constructor(
    readonly id: string,
    readonly socket: net.Socket,
  ) {}
  send(frame: Uint8Array): void {
    if (!this.socket.destroyed) this.socket.write(frame);
  }
  decode(chunk: Uint8Array) {
    return this.decoder.push(chunk);
  }
}

interface SwitchedVm {
  name: string;
  server: net.Server;
  address: string;
  /** The host that serves the VM's clients; null while the VM moves or its host is gone. */
  owner: HostLink | null;
  /** Client bytes are held (the VM is moving): sockets paused, events queued. */
  held: boolean;
  /** A host that attached the VM while its previous owner had not detached yet. */
  next: HostLink | null;
  /** Client events for the next owner. */
  queue: Uint8Array[];
  /** Replies from the next owner sent before the previous one detached. */
  early: LinkFrame[];
  conns: Set<number>;
  orphanTimer?: NodeJS.Timeout;
}

export class VirtualSwitch {
  private listener: Listener | undefined;
  private readonly links = new Set<HostLink>();
  private readonly vms = new Map<string, SwitchedVm>();
  private readonly conns = new Map<number, { vm: SwitchedVm; socket: net.Socket }>();
  private nextConn = 1;
  port = 0;

  constructor(readonly options: SwitchOptions) {}

  async start(): Promise<void> {
    this.listener = await listenChannels({
      host: this.options.host,
      port: this.options.port,
      secret: this.options.secret,
      capabilities: 0,
      channels: [SWITCH_CHANNEL],
      log: this.options.log,
      onChannel: (ch) => this.linkUp(new HostLink(ch.hello.migrationId, ch.socket), ch.leftover),
    });
    this.port = this.listener.port;
    this.options.log(`switch listening for hosts on ${this.options.host}:${this.port}`);
  }

  /** VMs known here: where their clients connect and which host serves them. */
  list(): { vm: string; address: string; host: string | null; connections: number; held: boolean }[] {
    return [...this.vms.values()].map((v) => ({
      vm: v.name,
      address: v.address,
      host: v.owner?.id ?? null,
      connections: v.conns.size,
      held: v.held,
    }));
  }

  async close(): Promise<void> {
    for (const vm of [...this.vms.values()]) this.forget(vm);
    for (const l of this.links) l.socket.destroy();
    await this.listener?.close();
  }

  // --- host links ---------------------------------------------------------------------

  private linkUp(link: HostLink, leftover: Buffer[]): void {
    this.links.add(link);
    link.socket.setNoDelay(true);
    this.options.log(`host ${link.id} linked from ${link.socket.remoteAddress}`);
    const onData = (chunk: Uint8Array) => {
      const r = link.decode(chunk);
      for (const f of r.frames) this.fromHost(link, f);
      if (r.error) {
        this.options.log(`host ${link.id}: ${r.error}; link closed`);
        link.socket.destroy();
      }
    };
    link.socket.on('data', onData);
    link.socket.on('error', () => {});
    link.socket.on('close', () => this.linkDown(link));
    for (const c of leftover) onData(c);
  }

  private linkDown(link: HostLink): void {
    if (!this.links.delete(link)) return;
    this.options.log(`host ${link.id} unlinked`);
    for (const vm of this.vms.values()) {
      if (vm.next === link) vm.next = null;
      if (vm.owner !== link) continue;
      // the VM's host is gone: its clients wait for a host that attaches it (a migration
      // that had resumed it elsewhere), for a while
      vm.owner = null;
      this.hold(vm);
      this.handOver(vm);
      if (!vm.owner)
        vm.orphanTimer = setTimeout(() => {
          this.options.log(`VM ${vm.name}: no host attached it within ${ORPHAN_MS / 1000} s; clients closed`);
          this.forget(vm);
        }, ORPHAN_MS).unref();
    }
  }

  private fromHost(link: HostLink, f: LinkFrame): void {
    switch (f.type) {
      case FRAME.data:
      case FRAME.close:
        this.reply(link, f);
        return;
      case FRAME.attach:
        void this.attach(link, f);
        return;
      case FRAME.hold: {
        const vm = this.vms.get(frameText(f));
        if (vm && vm.owner === link) this.hold(vm);
        link.send(encodeText(FRAME.held, frameText(f)));
        return;
      }
      case FRAME.detach: {
        const vm = this.vms.get(frameText(f));
        if (!vm || vm.owner !== link) return;
        this.hold(vm);
        vm.owner = null;
        this.handOver(vm);
        return;
      }
      case FRAME.forget: {
        const vm = this.vms.get(frameText(f));
        if (vm && (vm.owner === link || vm.owner === null)) this.forget(vm);
        return;
      }
      default:
        this.options.log(`host ${link.id} sent frame type ${f.type}, which hosts do not send; link closed`);
        link.socket.destroy();
    }
  }

  private async attach(link: HostLink, f: LinkFrame): Promise<void> {
    let req: { vm?: unknown; fresh?: unknown };
    try {
      req = JSON.parse(frameText(f));
    } catch {
      req = {};
    }
    const name = String(req.vm ?? '');
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) {
      link.send(encodeJson(FRAME.attached, { vm: name, error: `bad VM name '${name}'` }));
      return;
    }
    let vm = this.vms.get(name);
    if (vm && req.fresh && vm.owner && vm.owner !== link) {
      link.send(
        encodeJson(FRAME.attached, {
          vm: name,
          error: `a VM named '${name}' already runs on host ${vm.owner.id}`,
        }),
      );
      return;
    }
    if (!vm) {
      try {
        vm = await this.addVm(name);
      } catch (e) {
        link.send(encodeJson(FRAME.attached, { vm: name, error: `no client port: ${(e as Error).message}` }));
        return;
      }
    }
    clearTimeout(vm.orphanTimer);
    if (vm.owner === link) {
      // the VM carries on here (its migration was abandoned): what was held comes back
      this.release(vm);
    } else if (vm.owner === null) {
      vm.owner = link;
      this.handOver(vm);
    } else {
      vm.next = link;
    }
    this.options.log(
      `VM ${name} attached by host ${link.id}${vm.owner === link ? '' : ' (after its source lets go)'}`,
    );
    link.send(encodeJson(FRAME.attached, { vm: name, address: vm.address }));
  }

  private addVm(name: string): Promise<SwitchedVm> {
    return new Promise((resolve, reject) => {
      const server = net.createServer({ allowHalfOpen: true }, (s) => this.clientConnected(vm, s));
      const vm: SwitchedVm = {
        name,
        server,
        address: '',
        owner: null,
        held: true,
        next: null,
        queue: [],
        early: [],
        conns: new Set(),
      };
      server.once('error', reject);
      server.listen(0, this.options.clientsHost, () => {
        const a = server.address() as net.AddressInfo;
        vm.address = `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`;
        this.vms.set(name, vm);
        this.options.log(`VM ${name}: clients connect to ${vm.address}`);
        resolve(vm);
      });
    });
  }

  /** The VM's next owner, if one attached, takes over its clients. */
  private handOver(vm: SwitchedVm): void {
    if (vm.owner === null && vm.next) {
      vm.owner = vm.next;
      vm.next = null;
    }
    if (!vm.owner) return;
    const early = vm.early;
    vm.early = [];
    for (const f of early) this.reply(vm.owner, f);
    this.release(vm);
  }

  /** Delivers what was held to the owner and lets the clients send again. */
  private release(vm: SwitchedVm): void {
    if (!vm.owner) return;
    vm.held = false;
    const queue = vm.queue;
    vm.queue = [];
    for (const frame of queue) vm.owner.send(frame);
    for (const id of vm.conns) this.conns.get(id)?.socket.resume();
  }

  private hold(vm: SwitchedVm): void {
    vm.held = true;
    for (const id of vm.conns) this.conns.get(id)?.socket.pause();
  }

  private forget(vm: SwitchedVm): void {
    clearTimeout(vm.orphanTimer);
    for (const id of vm.conns) this.conns.get(id)?.socket.destroy();
    vm.server.close();
    this.vms.delete(vm.name);
    this.options.log(`VM ${vm.name} forgotten; its client port ${vm.address} closed`);
  }

  /** A reply (or a close) from `link` for one client connection. */
  private reply(link: HostLink, f: LinkFrame): void {
    const c = this.conns.get(f.conn);
    if (!c) return;
    if (c.vm.owner !== link) {
      // the VM's previous host has not sent its last reply yet
      if (c.vm.next === link || c.vm.owner === null) c.vm.early.push(f);
      return;
    }
    if (f.type === FRAME.data) c.socket.write(f.payload);
    else c.socket.end();
  }

  // --- clients -----------------------------------------------------------------------------

  private toVm(vm: SwitchedVm, frame: Uint8Array): void {
    if (vm.owner && !vm.held) vm.owner.send(frame);
    else vm.queue.push(frame);
  }

  private clientConnected(vm: SwitchedVm, socket: net.Socket): void {
    const id = this.nextConn++;
    this.conns.set(id, { vm, socket });
    vm.conns.add(id);
    socket.setNoDelay(true);
    if (vm.held) socket.pause();
    this.toVm(vm, encodeFrame(FRAME.open, id, new TextEncoder().encode(vm.name)));
    socket.on('data', (chunk: Buffer) => {
      for (let at = 0; at < chunk.length; at += MAX_DATA)
        this.toVm(vm, encodeFrame(FRAME.data, id, chunk.subarray(at, at + MAX_DATA)));
    });
    // a client that half-closes still gets the replies to what it sent: the host closes
    // the connection once they are out
    let hungUp = false;
    const hangUp = () => {
      if (hungUp) return;
      hungUp = true;
      this.toVm(vm, encodeFrame(FRAME.close, id));
    };
    socket.on('end', hangUp);
    socket.on('error', () => {});
    socket.on('close', () => {
      this.conns.delete(id);
      vm.conns.delete(id);
      hangUp();
    });
  }
}
