// A VM's client endpoint on its host: Redis-protocol clients connect here; each command is
// served by the guest (the kv app in guest RAM), one at a time per connection so replies
// come back in order. When the guest leaves this host, connections close and clients
// reconnect where it went (the virtual switch keeps them instead).

import net from 'node:net';
import { encodeError, RespParser } from '../apps/resp.ts';
import type { GuestMachine } from '../guest/machine.ts';

export class RespEndpoint {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
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
    this.sockets.add(socket);
    socket.setNoDelay(true);
    const parser = new RespParser();
    const queue: Uint8Array[][] = [];
    let busy = false;
    const next = () => {
      if (busy) return;
      const args = queue.shift();
      if (!args) return;
      const m = this.machine();
      if (!m?.running) {
        // the guest is moving or gone: the client reconnects and retries
        socket.destroy();
        return;
      }
      busy = true;
      m.execute(args).then(
        (reply) => {
          busy = false;
          if (!socket.destroyed) socket.write(reply);
          next();
        },
        () => socket.destroy(),
      );
    };
    socket.on('data', (chunk) => {
      const r = parser.push(chunk);
      queue.push(...r.commands);
      if (r.error) {
        socket.end(encodeError(`ERR ${r.error.message}`));
        return;
      }
      next();
    });
    socket.on('error', () => {});
    socket.on('close', () => this.sockets.delete(socket));
  }

  /** Closes every client connection (the guest stopped here). */
  dropClients(): void {
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.dropClients();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.log(`endpoint on port ${this.port} closed`);
  }
}
