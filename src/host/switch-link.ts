// A host's link to the virtual switch: client connections of this host's VMs arrive over
// it, multiplexed (see switch-protocol.ts), and it tells the switch where each VM runs.
// A broken link is dialled again, and every VM here attached anew.

import type net from 'node:net';
import type { ClientPorts } from './client-ports.ts';
import type { VmNic, Wire } from './nic.ts';
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
} from './switch-protocol.ts';
import { dialChannel } from './transport.ts';

const RECONNECT_MS = 1000;
const REPLY_TIMEOUT_MS = 5000;

export class SwitchPorts implements ClientPorts {
  readonly carriesConnections = true;
  private socket: net.Socket | undefined;
  private readonly nics = new Map<string, VmNic>();
  private readonly connVm = new Map<number, string>();
  private readonly waiting = new Map<string, { done: (f: LinkFrame) => void; fail: (e: Error) => void }[]>();
  private closed = false;
  private connecting: Promise<void> | undefined;

  constructor(
    readonly address: string,
    private readonly hostId: string,
    private readonly secret: Uint8Array,
    private readonly log: (line: string) => void,
  ) {}

  /** Connects (the first time: failing loudly when the switch cannot be reached). */
  async connect(): Promise<void> {
    const i = this.address.lastIndexOf(':');
    const ch = await dialChannel({
      host: this.address.slice(0, i).replace(/^\[|\]$/g, ''),
      port: Number(this.address.slice(i + 1)),
      secret: this.secret,
      lane: SWITCH_CHANNEL,
      migrationId: this.hostId,
      capabilities: 0,
    });
    const socket = ch.socket;
    this.socket = socket;
    const decoder = new FrameDecoder();
    const onData = (chunk: Uint8Array) => {
      const r = decoder.push(chunk);
      for (const f of r.frames) this.fromSwitch(f);
      if (r.error) {
        this.log(`switch ${this.address}: ${r.error}; link closed`);
        socket.destroy();
      }
    };
    socket.on('data', onData);
    socket.on('error', () => {});
    socket.on('close', () => this.lost(socket));
    for (const c of ch.leftover) onData(c);
    this.log(`linked to switch ${this.address}`);
  }

  private lost(socket: net.Socket): void {
    if (this.socket !== socket) return;
    this.socket = undefined;
    for (const list of this.waiting.values())
      for (const w of list) w.fail(new Error('the switch link broke'));
    this.waiting.clear();
    if (this.closed) return;
    this.log(`lost the switch ${this.address}; dialling again`);
    this.connecting ??= this.redial().finally(() => {
      this.connecting = undefined;
    });
  }

  private async redial(): Promise<void> {
    while (!this.closed) {
      await new Promise((r) => setTimeout(r, RECONNECT_MS));
      try {
        await this.connect();
        for (const [vm, nic] of this.nics) await this.attach(vm, nic, false);
        return;
      } catch (e) {
        this.log(`switch ${this.address}: ${(e as Error).message}`);
      }
    }
  }

  private send(frame: Uint8Array): void {
    if (this.socket && !this.socket.destroyed) this.socket.write(frame);
  }

  private request(
    vm: string,
    type: typeof FRAME.attach | typeof FRAME.hold,
    frame: Uint8Array,
  ): Promise<LinkFrame> {
    if (!this.socket) return Promise.reject(new Error(`no link to the switch ${this.address}`));
    const key = `${type}:${vm}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`the switch ${this.address} did not answer in ${REPLY_TIMEOUT_MS} ms`)),
        REPLY_TIMEOUT_MS,
      );
      const list = this.waiting.get(key) ?? [];
      list.push({
        done: (f) => {
          clearTimeout(timer);
          resolve(f);
        },
        fail: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.waiting.set(key, list);
      this.send(frame);
    });
  }

  private answered(type: number, vm: string, f: LinkFrame): void {
    const key = `${type}:${vm}`;
    const w = this.waiting.get(key)?.shift();
    if (this.waiting.get(key)?.length === 0) this.waiting.delete(key);
    w?.done(f);
  }

  private fromSwitch(f: LinkFrame): void {
    switch (f.type) {
      case FRAME.open: {
        const vm = frameText(f);
        const nic = this.nics.get(vm);
        if (!nic) {
          this.send(encodeFrame(FRAME.close, f.conn));
          return;
        }
        this.connVm.set(f.conn, vm);
        nic.open(f.conn, this.wire(vm, f.conn));
        return;
      }
      case FRAME.data:
        this.nicOf(f.conn)?.receive(f.conn, f.payload);
        return;
      case FRAME.close: {
        this.nicOf(f.conn)?.hangUp(f.conn);
        return;
      }
      case FRAME.attached: {
        let vm = '';
        try {
          vm = String(JSON.parse(frameText(f)).vm);
        } catch {}
        this.answered(FRAME.attach, vm, f);
        return;
      }
      case FRAME.held:
        this.answered(FRAME.hold, frameText(f), f);
        return;
      default:
        this.log(`switch ${this.address} sent frame type ${f.type}, which a switch does not send`);
    }
  }

  private nicOf(conn: number): VmNic | undefined {
    const vm = this.connVm.get(conn);
    return vm === undefined ? undefined : this.nics.get(vm);
  }

  wire(vm: string, id: number): Wire {
    this.connVm.set(id, vm);
    return {
      write: (b) => {
        for (let at = 0; at < b.length; at += MAX_DATA)
          this.send(encodeFrame(FRAME.data, id, b.subarray(at, at + MAX_DATA)));
      },
      end: () => {
        this.connVm.delete(id);
        this.send(encodeFrame(FRAME.close, id));
      },
    };
  }

  async attach(vm: string, nic: VmNic, fresh: boolean): Promise<string> {
    this.nics.set(vm, nic);
    const f = await this.request(vm, FRAME.attach, encodeJson(FRAME.attach, { vm, fresh }));
    const r = JSON.parse(frameText(f)) as { address?: string; error?: string };
    if (r.error) {
      if (fresh) this.nics.delete(vm);
      throw new Error(`switch ${this.address}: ${r.error}`);
    }
    return String(r.address);
  }

  async hold(vm: string): Promise<void> {
    await this.request(vm, FRAME.hold, encodeText(FRAME.hold, vm));
  }

  detach(vm: string): void {
    this.send(encodeText(FRAME.detach, vm));
  }

  left(vm: string): void {
    this.nics.delete(vm);
    for (const [id, v] of this.connVm) if (v === vm) this.connVm.delete(id);
  }

  forget(vm: string): void {
    this.left(vm);
    this.send(encodeText(FRAME.forget, vm));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.socket?.destroy();
  }
}
