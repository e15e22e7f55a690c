// A VM's client endpoint on its host: Redis-protocol clients connect here; each command is
// served by the guest (the kv app in guest RAM), one at a time per connection so replies
// come back in order. When the guest moves away, connections are kept: the command in
// flight and those queued behind it are sent on to the VM's new endpoint, and from then on
// the bytes are relayed both ways (the virtual switch will take this role).

import net from 'node:net';
import { encodeCommand, encodeError, RespParser } from '../apps/resp.ts';
import type { GuestMachine } from '../guest/machine.ts';

interface Client {
  socket: net.Socket;
  parser: RespParser;
  /** Commands not yet answered: the first is the one in flight. */
  queue: Uint8Array[][];
  busy: boolean;
  relay?: net.Socket;
}

export class RespEndpoint {
  private server: net.Server | undefined;
  private readonly clients = new Set<Client>();
  /** Where the guest went: clients are relayed there. */
  private movedTo: string | undefined;
  port = 0;

  constructor(
    private readonly machine: () => GuestMachine | undefined,
    private readonly log: (line: string) => void = () => {},
  ) {}

  listen(host: string, port = 0): Promise<number> {
    return new Promise((resolve, reject) => {
      const server = net.createServer((s) => this.serve(s));
      server.once('error', reject);
      server.listen(port, host, () => {
        this.port = (server.address() as net.AddressInfo).port;
        resolve(this.port);
      });
      this.server = server;
    });
  }

  private serve(socket: net.Socket): void {
    const c: Client = { socket, parser: new RespParser(), queue: [], busy: false };
    this.clients.add(c);
    socket.setNoDelay(true);
    socket.on('data', (chunk) => {
      if (c.relay) {
        c.relay.write(chunk);
        return;
      }
      const r = c.parser.push(chunk);
      c.queue.push(...r.commands);
      if (r.error) {
        socket.end(encodeError(`ERR ${r.error.message}`));
        return;
      }
      this.next(c);
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.clients.delete(c);
      c.relay?.destroy();
    });
    if (this.movedTo) this.relay(c, this.movedTo);
  }

  private next(c: Client): void {
    if (c.busy || c.relay || c.queue.length === 0) return;
    if (this.movedTo) {
      this.relay(c, this.movedTo);
      return;
    }
    const m = this.machine();
    // the guest is stopped for its switchover: the command waits for where it resumes
    if (!m?.running) return;
    c.busy = true;
    m.execute(c.queue[0]).then(
      (reply) => {
        c.busy = false;
        c.queue.shift();
        if (!c.socket.destroyed) c.socket.write(reply);
        this.next(c);
      },
      () => {
        // the guest stopped before answering: the command is sent again where it resumes
        c.busy = false;
        this.next(c);
      },
    );
  }

  /** The guest runs here again (a migration was abandoned): serve what waited. */
  resumeLocal(): void {
    for (const c of this.clients) this.next(c);
  }

  /** The guest now runs at `endpoint`: relay every client there, unanswered commands first. */
  forward(endpoint: string): void {
    this.movedTo = endpoint;
    this.log(`clients of port ${this.port} follow the VM to ${endpoint}`);
    for (const c of this.clients) if (!c.busy) this.relay(c, endpoint);
  }

  private relay(c: Client, endpoint: string): void {
    if (c.relay) return;
    const i = endpoint.lastIndexOf(':');
    const up = net.connect(Number(endpoint.slice(i + 1)), endpoint.slice(0, i).replace(/^\[|\]$/g, ''));
    c.relay = up;
    up.setNoDelay(true);
    for (const args of c.queue) up.write(encodeCommand(args));
    c.queue.length = 0;
    const rest = c.parser.state().pending;
    if (rest.length > 0) up.write(rest);
    up.on('data', (d) => c.socket.write(d));
    up.on('error', () => c.socket.destroy());
    up.on('close', () => c.socket.destroy());
  }

  /** Closes every client connection. */
  dropClients(): void {
    for (const c of this.clients) c.socket.destroy();
  }

  async close(): Promise<void> {
    this.dropClients();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.log(`endpoint on port ${this.port} closed`);
  }
}
