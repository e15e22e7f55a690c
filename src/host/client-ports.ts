// How clients reach the VMs of a host: through the virtual switch (their connections
// follow a VM from host to host) or, on a host without one, on a port of the host per VM
// (its clients are disconnected when the VM leaves).

import net from 'node:net';
import type { VmNic, Wire } from './nic.ts';

export interface ClientPorts {
  /** Whether a VM's connections survive its move (a destination takes over their state). */
  readonly carriesConnections: boolean;
  /** The VM runs here (new, arrived, or back after an abandoned move): its clients' address. */
  attach(vm: string, nic: VmNic, fresh: boolean): Promise<string>;
  /** Before the guest stops: no more client bytes reach this host (they are kept). */
  hold(vm: string): Promise<void>;
  /** The VM's last reply from here is out: its connections go to where it resumes. */
  detach(vm: string): void;
  /** The VM left for good: its connections are no longer this host's (nothing is closed). */
  left(vm: string): void;
  /** The VM stopped: its clients are disconnected. */
  forget(vm: string): void;
  /** The wire for a connection restored from a moved VM's device state. */
  wire(vm: string, id: number): Wire;
  close(): Promise<void>;
}

interface Port {
  server: net.Server;
  address: string;
  sockets: Map<number, net.Socket>;
  nic: VmNic;
}

/** A port per VM on this host. */
export class DirectPorts implements ClientPorts {
  readonly carriesConnections = false;
  private readonly ports = new Map<string, Port>();
  private nextConn = 1;

  constructor(private readonly host: string) {}

  async attach(vm: string, nic: VmNic): Promise<string> {
    const known = this.ports.get(vm);
    if (known) {
      for (const s of known.sockets.values()) s.resume();
      return known.address;
    }
    const port: Port = {
      server: net.createServer({ allowHalfOpen: true }),
      address: '',
      sockets: new Map(),
      nic,
    };
    port.server.on('connection', (s) => this.connected(port, s));
    await new Promise<void>((resolve, reject) => {
      port.server.once('error', reject);
      port.server.listen(0, this.host, () => resolve());
    });
    port.address = `${this.host}:${(port.server.address() as net.AddressInfo).port}`;
    this.ports.set(vm, port);
    return port.address;
  }

  private connected(port: Port, socket: net.Socket): void {
    const id = this.nextConn++;
    port.sockets.set(id, socket);
    socket.setNoDelay(true);
    port.nic.open(id, { write: (b) => socket.write(b), end: () => socket.end() });
    socket.on('data', (b: Buffer) => port.nic.receive(id, b));
    socket.on('end', () => port.nic.hangUp(id));
    socket.on('error', () => {});
    socket.on('close', () => {
      port.sockets.delete(id);
      port.nic.hangUp(id);
    });
  }

  async hold(vm: string): Promise<void> {
    for (const s of this.ports.get(vm)?.sockets.values() ?? []) s.pause();
  }

  detach(): void {}

  left(vm: string): void {
    this.forget(vm);
  }

  forget(vm: string): void {
    const port = this.ports.get(vm);
    if (!port) return;
    this.ports.delete(vm);
    for (const s of port.sockets.values()) s.destroy();
    port.server.close();
  }

  wire(): Wire {
    return { write: () => {}, end: () => {} };
  }

  async close(): Promise<void> {
    for (const vm of [...this.ports.keys()]) this.forget(vm);
  }
}
