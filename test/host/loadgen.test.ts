// The built-in RESP load generator against a tiny in-process server: think time paces a
// closed loop.

import assert from 'node:assert/strict';
import net from 'node:net';
import test from 'node:test';
import { RespParser } from '../../src/apps/resp.ts';
import { startLoad } from '../../src/host/loadgen.ts';

/** Answers SET with OK and GET with the last value SET for the key (nil before). */
async function tinyKv(): Promise<{ endpoint: string; close: () => Promise<void> }> {
  const values = new Map<string, Buffer>();
  const server = net.createServer((socket) => {
    const parser = new RespParser();
    socket.on('data', (chunk) => {
      for (const [cmd, key, value] of parser.push(chunk).commands) {
        const name = Buffer.from(cmd).toString().toUpperCase();
        if (name === 'SET') {
          values.set(Buffer.from(key).toString(), Buffer.from(value));
          socket.write('+OK\r\n');
        } else {
          const v = values.get(Buffer.from(key).toString());
          socket.write(
            v ? Buffer.concat([Buffer.from(`$${v.length}\r\n`), v, Buffer.from('\r\n')]) : '$-1\r\n',
          );
        }
      }
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  return {
    endpoint: `127.0.0.1:${port}`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

test('think time paces each connection: no more than one command per think time', async () => {
  const kv = await tinyKv();
  try {
    const durationMs = 600;
    const paced = await startLoad({
      endpoint: kv.endpoint,
      connections: 2,
      keys: 10,
      durationMs,
      thinkMs: 25,
    }).done;
    const free = await startLoad({ endpoint: kv.endpoint, connections: 2, keys: 10, durationMs }).done;
    assert.equal(paced.errors + paced.staleReads + paced.lost, 0);
    assert.ok(paced.completed > 0, 'the paced run made progress');
    // each connection: at most one command per 25 ms, plus the first
    assert.ok(
      paced.completed <= 2 * (durationMs / 25 + 1),
      `${paced.completed} commands in ${durationMs} ms`,
    );
    assert.ok(free.completed > 4 * paced.completed, `without think time ${free.completed} commands`);
  } finally {
    await kv.close();
  }
});

test('a negative think time is refused, naming it', () => {
  assert.throws(() => startLoad({ endpoint: '127.0.0.1:1', durationMs: 10, thinkMs: -1 }), /thinkMs/);
});
