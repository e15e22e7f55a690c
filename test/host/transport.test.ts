import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { type TestContext, test } from 'node:test';
import { encodeMessage } from '../../src/engine/codec.ts';
import { type Lane, type Message, PAGE_SIZE } from '../../src/engine/messages.ts';
import { framePool } from '../../src/host/frame-pool.ts';
import {
  CAP_ASYNC_FAULTS,
  CAP_URGENT_LANE,
  CAP_ZERO_PAGES,
  connectLane,
  type Hello,
  LANES,
  type LaneConnection,
  type ListenOptions,
  listenLanes,
  MAGIC,
  PROTOCOL_VERSION,
  TransportError,
} from '../../src/host/transport.ts';
import { fillPages } from '../support/page-data.ts';

const HOST = '127.0.0.1';
const SECRET = randomBytes(32);

// ---------------------------------------------------------------------------------------
// Helpers

/** A value that later arrives, with a timeout so a failing test never hangs. */
function deferred<T>(what: string, ms = 5000) {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  promise.finally(() => clearTimeout(timer)).catch(() => {});
  return { promise, resolve, reject };
}

interface Server {
  port: number;
  logs: string[];
  refused: { error: TransportError; remote: string }[];
  /** The next lane the server accepts. */
  nextLane(): Promise<[LaneConnection, Hello]>;
  /** The next refusal. */
  nextRefusal(): Promise<{ error: TransportError; remote: string }>;
}

async function startServer(t: TestContext, overrides: Partial<ListenOptions> = {}): Promise<Server> {
  const logs: string[] = [];
  const refused: Server['refused'] = [];
  const accepted: [LaneConnection, Hello][] = [];
  let laneWaiter: ((v: [LaneConnection, Hello]) => void) | undefined;
  let refusalWaiter: ((v: Server['refused'][number]) => void) | undefined;
  const listener = await listenLanes({
    host: HOST,
    port: 0,
    secret: SECRET,
    capabilities: CAP_ASYNC_FAULTS | CAP_ZERO_PAGES,
    log: (line) => logs.push(line),
    onLane(lane, hello) {
      if (laneWaiter) laneWaiter([lane, hello]);
      else accepted.push([lane, hello]);
      laneWaiter = undefined;
    },
    onRefused(error, remote) {
      if (refusalWaiter) refusalWaiter({ error, remote });
      else refused.push({ error, remote });
      refusalWaiter = undefined;
    },
    ...overrides,
  });
  t.after(() => listener.close());
  return {
    port: listener.port,
    logs,
    refused,
    nextLane() {
      const ready = accepted.shift();
      if (ready) return Promise.resolve(ready);
      const d = deferred<[LaneConnection, Hello]>('a lane');
      laneWaiter = d.resolve;
      return d.promise;
    },
    nextRefusal() {
      const ready = refused.shift();
      if (ready) return Promise.resolve(ready);
      const d = deferred<Server['refused'][number]>('a refusal');
      refusalWaiter = d.resolve;
      return d.promise;
    },
  };
}

async function connect(
  t: TestContext,
  port: number,
  lane: Lane,
  extra: { capabilities?: number; readBuffer?: number } = {},
) {
  const conn = await connectLane({
    readBuffer: extra.readBuffer,
    host: HOST,
    port,
    secret: SECRET,
    migrationId: 'vm-7/migration-1',
    lane,
    capabilities: extra.capabilities ?? CAP_ASYNC_FAULTS | CAP_URGENT_LANE,
    timeoutMs: 5000,
  });
  t.after(() => conn.destroy());
  return conn;
}

async function pair(t: TestContext, server: Server, lane: Lane, readBuffer?: number) {
  const [client, [accepted, hello]] = await Promise.all([
    connect(t, server.port, lane, { readBuffer }),
    server.nextLane(),
  ]);
  t.after(() => accepted.destroy());
  return { client, server: accepted, hello };
}

/** A raw TCP client: write arbitrary bytes, read exact counts, collect everything until close. */
async function rawSocket(t: TestContext, port: number) {
  const socket = net.connect({ host: HOST, port });
  t.after(() => socket.destroy());
  socket.on('error', () => {});
  await once(socket, 'connect');
  let buf = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  const ended = deferred<Buffer>('the server to close the connection');
  socket.on('data', (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    wake?.();
  });
  socket.on('close', () => {
    ended.resolve(buf);
    wake?.();
  });
  return {
    socket,
    /** Everything the server sent, once it has closed the connection. */
    untilClosed: () => ended.promise,
    async read(n: number): Promise<Buffer> {
      const deadline = Date.now() + 5000;
      while (buf.length < n) {
        if (socket.destroyed || Date.now() > deadline)
          throw new Error(`wanted ${n} bytes, got ${buf.length}`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 50);
        });
      }
      const out = buf.subarray(0, n);
      buf = buf.subarray(n);
      return out;
    },
  };
}

/** A hello laid out by hand, following the layout documented in transport.ts. */
function rawHello(opts: {
  version?: number;
  lane?: string;
  migrationId?: string;
  caps?: number;
  nonce?: Buffer;
}) {
  const lane = Buffer.from(opts.lane ?? 'bulk', 'ascii');
  const id = Buffer.from(opts.migrationId ?? 'm-raw', 'utf8');
  const rest = Buffer.concat([
    u32(opts.caps ?? 0),
    opts.nonce ?? randomBytes(16),
    Buffer.of(lane.length),
    lane,
    Buffer.of(id.length),
    id,
  ]);
  return Buffer.concat([Buffer.from(MAGIC), u16(opts.version ?? PROTOCOL_VERSION), u16(rest.length), rest]);
}

/** A hello whose 2-byte migration id is not UTF-8. */
function badUtf8Hello(): Buffer {
  const hello = rawHello({ migrationId: 'ab' });
  return hello.fill(0xff, hello.length - 2);
}

const u16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
};
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

function transcript(version: number, clientCaps: number, serverCaps: number, lane: string, id: string) {
  const l = Buffer.from(lane, 'ascii');
  const m = Buffer.from(id, 'utf8');
  return Buffer.concat([
    u16(version),
    u32(clientCaps),
    u32(serverCaps),
    Buffer.of(l.length),
    l,
    Buffer.of(m.length),
    m,
  ]);
}

const hmac = (...parts: (string | Buffer)[]) => {
  const h = createHmac('sha256', SECRET);
  for (const p of parts) h.update(p);
  return h.digest();
};

/** Parses an error record: code byte, u16 length, UTF-8 text. */
function parseErrorRecord(b: Buffer): { code: number; text: string } {
  assert.ok(b.length >= 3, `expected an error record, got ${b.length} bytes`);
  const len = b.readUInt16LE(1);
  assert.equal(b.length, 3 + len, 'the error record is all the server sent');
  return { code: b[0], text: b.subarray(3).toString('utf8') };
}

/** Performs the client side of the handshake by hand and returns the raw socket. */
async function rawHandshake(t: TestContext, port: number, lane: Lane, migrationId: string) {
  const raw = await rawSocket(t, port);
  const clientNonce = randomBytes(16);
  const caps = CAP_ZERO_PAGES;
  raw.socket.write(rawHello({ lane, migrationId, caps, nonce: clientNonce }));
  const reply = await raw.read(23);
  assert.equal(reply[0], 0);
  assert.equal(reply.readUInt16LE(1), PROTOCOL_VERSION);
  const serverCaps = reply.readUInt32LE(3);
  const serverNonce = reply.subarray(7, 23);
  const tr = transcript(PROTOCOL_VERSION, caps, serverCaps, lane, migrationId);
  raw.socket.write(Buffer.concat([Buffer.of(0), hmac('ferry-client', serverNonce, clientNonce, tr)]));
  const proof = await raw.read(33);
  assert.equal(proof[0], 0);
  assert.deepEqual(proof.subarray(1), hmac('ferry-server', clientNonce, serverNonce, tr));
  raw.socket.write(Buffer.of(0));
  return raw;
}

/** A fake destination host that answers a hello with whatever `script` decides. */
async function fakeServer(t: TestContext, script: (socket: net.Socket, hello: Buffer) => void) {
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    socket.once('data', (hello: Buffer) => script(socket, hello));
  });
  server.listen(0, HOST);
  await once(server, 'listening');
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return (server.address() as net.AddressInfo).port;
}

async function rejection(p: Promise<unknown>): Promise<TransportError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof TransportError, `expected a TransportError, got ${e}`);
    return e;
  }
  assert.fail('expected the promise to reject');
}

/** Plain-array copies of the byte fields so messages compare with deepEqual. */
function plain(msg: Message): unknown {
  const copy = (b: Uint8Array | undefined) => (b === undefined ? undefined : new Uint8Array(b));
  if (msg.type === 'pages') {
    const { zeroMask, data, ...rest } = msg.batch;
    return { type: msg.type, batch: { ...rest, zeroMask: copy(zeroMask), data: copy(data) } };
  }
  if (msg.type === 'switchover') return { ...msg, deviceState: copy(msg.deviceState) };
  return msg;
}

function everyMessage(): Message[] {
  // 70 pages, pages 3 and 65 zero: the mask spans 9 bytes and data holds 68 pages.
  const zeroMask = new Uint8Array(9);
  zeroMask[0] |= 1 << 3;
  zeroMask[8] |= 1 << 1;
  return [
    {
      type: 'pages',
      batch: {
        kind: 'bulk',
        runs: [0, 64, 1000, 6],
        pageCount: 70,
        zeroCount: 2,
        zeroMask,
        data: fillPages(new Uint8Array(68 * PAGE_SIZE), 1),
      },
    },
    {
      type: 'pages',
      batch: {
        kind: 'urgent',
        runs: [42, 1],
        pageCount: 1,
        zeroCount: 0,
        zeroMask: new Uint8Array(1),
        data: fillPages(new Uint8Array(1 * PAGE_SIZE), 2),
      },
    },
    { type: 'pages', batch: { kind: 'prepaged', runs: [5, 3], pageCount: 3, zeroCount: 1 } },
    { type: 'pages', batch: { kind: 'resent', runs: [], pageCount: 0, zeroCount: 0 } },
    { type: 'roundEnd', round: 3 },
    {
      type: 'switchover',
      postcopy: true,
      discard: [1, 2, 0xffffffff],
      deviceStateBytes: 5,
      deviceState: Uint8Array.of(1, 2, 3, 4, 5),
    },
    { type: 'switchover', postcopy: false, discard: [], deviceStateBytes: 1 << 20 },
    { type: 'complete', totalPages: 262144 },
    { type: 'demand', pfns: [7, 8, 9000] },
    { type: 'resumed' },
    { type: 'done' },
    { type: 'abort', reason: 'operator cancelled — ünïcode ✓' },
  ];
}

/** Collects `n` messages from a lane. */
function collect(lane: LaneConnection, n: number) {
  const got: { msg: Message; seq: number }[] = [];
  const d = deferred<typeof got>(`${n} messages`);
  lane.onMessage((msg, seq) => {
    got.push({ msg, seq });
    if (got.length === n) d.resolve(got);
  });
  lane.onError((e) => d.reject(e));
  return d.promise;
}

// ---------------------------------------------------------------------------------------
// Handshake

test('handshake: every lane connects and both sides learn the other side’s capabilities', async (t) => {
  const server = await startServer(t);
  for (const lane of LANES) {
    const p = await pair(t, server, lane);
    assert.equal(p.client.lane, lane);
    assert.equal(p.server.lane, lane);
    assert.equal(p.client.peerCapabilities, CAP_ASYNC_FAULTS | CAP_ZERO_PAGES);
    assert.equal(p.server.peerCapabilities, CAP_ASYNC_FAULTS | CAP_URGENT_LANE);
    assert.deepEqual(
      { ...p.hello, remoteAddress: undefined },
      {
        version: PROTOCOL_VERSION,
        capabilities: CAP_ASYNC_FAULTS | CAP_URGENT_LANE,
        migrationId: 'vm-7/migration-1',
        lane,
        remoteAddress: undefined,
      },
    );
    assert.match(p.hello.remoteAddress, /^127\.0\.0\.1:\d+$/);
    assert.equal(p.client.remoteAddress, `${HOST}:${server.port}`);
    assert.equal(p.client.migrationId, 'vm-7/migration-1');
    assert.equal(p.server.migrationId, 'vm-7/migration-1');
  }
  assert.deepEqual(server.logs, []);
});

test('handshake: a hand-written client following the documented layout is accepted', async (t) => {
  const server = await startServer(t);
  const raw = await rawHandshake(t, server.port, 'urgent', 'mïgration');
  const [lane, hello] = await server.nextLane();
  t.after(() => lane.destroy());
  assert.equal(hello.migrationId, 'mïgration');
  assert.equal(hello.capabilities, CAP_ZERO_PAGES);
  const got = collect(lane, 1);
  raw.socket.write(encodeMessage({ type: 'demand', pfns: [1, 2, 3] }, 0));
  assert.deepEqual((await got)[0], { msg: { type: 'demand', pfns: [1, 2, 3] }, seq: 0 });
});

test('handshake: a wrong secret fails on both sides with code auth, and the server log names the peer', async (t) => {
  const server = await startServer(t);
  const err = await rejection(
    connectLane({
      host: HOST,
      port: server.port,
      secret: randomBytes(32),
      migrationId: 'm-1',
      lane: 'control',
      capabilities: 0,
    }),
  );
  assert.equal(err.code, 'auth');
  assert.match(err.message, /authentication failed: wrong secret/);
  assert.match(err.message, new RegExp(`${HOST}:${server.port}`));
  const { error, remote } = await server.nextRefusal();
  assert.equal(error.code, 'auth');
  assert.match(remote, /^127\.0\.0\.1:\d+$/);
  assert.equal(server.logs.length, 1);
  assert.ok(server.logs[0].includes(remote), server.logs[0]);
  assert.match(server.logs[0], /wrong secret/);
  assert.match(server.logs[0], /lane control, migration "m-1"/);
});

test('handshake: a server that does not know the secret is refused by the client (mutual auth)', async (t) => {
  const told = deferred<Buffer>('the client’s error record');
  const port = await fakeServer(t, (socket) => {
    socket.write(Buffer.concat([Buffer.of(0), u16(PROTOCOL_VERSION), u32(0), randomBytes(16)]));
    let got = Buffer.alloc(0);
    socket.on('data', (c: Buffer) => {
      got = Buffer.concat([got, c]);
      if (got.length === 33) socket.write(Buffer.concat([Buffer.of(0), randomBytes(32)])); // a guessed proof
    });
    socket.on('end', () => told.resolve(got.subarray(33)));
  });
  const err = await rejection(
    connectLane({ host: HOST, port, secret: SECRET, migrationId: 'm', lane: 'bulk', capabilities: 0 }),
  );
  assert.equal(err.code, 'auth');
  assert.match(err.message, /server authentication failed/);
  const record = parseErrorRecord(await told.promise);
  assert.equal(record.code, 3);
  assert.match(record.text, /server authentication failed/);
});

test('handshake: an unsupported version gets a clear error naming both versions', async (t) => {
  const server = await startServer(t);
  const raw = await rawSocket(t, server.port);
  raw.socket.write(rawHello({ version: 7 }));
  const record = parseErrorRecord(await raw.untilClosed());
  assert.equal(record.code, 2);
  assert.equal(record.text, `unsupported protocol version 7 (this host speaks ${PROTOCOL_VERSION})`);
  const { error } = await server.nextRefusal();
  assert.equal(error.code, 'version');
  assert.match(server.logs[0], /^refused 127\.0\.0\.1:\d+: unsupported protocol version 7/);
});

test('handshake: the client refuses a server that answers with another version', async (t) => {
  const port = await fakeServer(t, (socket) => {
    socket.write(Buffer.concat([Buffer.of(0), u16(PROTOCOL_VERSION + 1), u32(0), randomBytes(16)]));
  });
  const err = await rejection(
    connectLane({ host: HOST, port, secret: SECRET, migrationId: 'm', lane: 'bulk', capabilities: 0 }),
  );
  assert.equal(err.code, 'version');
  assert.match(
    err.message,
    new RegExp(
      `server speaks protocol version ${PROTOCOL_VERSION + 1}, this host speaks ${PROTOCOL_VERSION}`,
    ),
  );
});

test('handshake: wrong magic bytes get a clear error and the server keeps serving', async (t) => {
  const server = await startServer(t);
  const raw = await rawSocket(t, server.port);
  raw.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  const record = parseErrorRecord(await raw.untilClosed());
  assert.equal(record.code, 1);
  assert.match(record.text, /not a ferry client: wrong magic bytes 474554202f20/);
  const { error } = await server.nextRefusal();
  assert.equal(error.code, 'magic');
  assert.match(server.logs[0], /^refused 127\.0\.0\.1:\d+: not a ferry client/);
  await pair(t, server, 'control');
});

test('handshake: the client names a peer that is not a ferry host', async (t) => {
  const port = await fakeServer(t, (socket) => socket.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
  const err = await rejection(
    connectLane({ host: HOST, port, secret: SECRET, migrationId: 'm', lane: 'bulk', capabilities: 0 }),
  );
  assert.equal(err.code, 'protocol');
  assert.match(err.message, /unexpected byte 0x48 — is it a ferry host\?/);
});

test('handshake: a truncated hello followed by a close is logged and the server keeps serving', async (t) => {
  const server = await startServer(t);
  const raw = await rawSocket(t, server.port);
  raw.socket.end(rawHello({}).subarray(0, 20));
  const { error } = await server.nextRefusal();
  assert.equal(error.code, 'closed');
  assert.match(error.message, /closed during the handshake, 20 bytes in \(reading the hello\)/);
  assert.match(server.logs[0], /^refused 127\.0\.0\.1:\d+: connection closed during the handshake/);
  await raw.untilClosed();
  await pair(t, server, 'bulk');
});

test('handshake: malformed hellos are refused with code protocol', async (t) => {
  const server = await startServer(t);
  const cases: [Buffer, RegExp][] = [
    [rawHello({ lane: 'sideways' }), /unknown lane "sideways"/],
    [
      Buffer.concat([Buffer.from(MAGIC), u16(PROTOCOL_VERSION), u16(3), Buffer.alloc(3)]),
      /hello length 3 is outside/,
    ],
    [badUtf8Hello(), /migration id is not valid UTF-8/],
  ];
  for (const [hello, why] of cases) {
    const raw = await rawSocket(t, server.port);
    raw.socket.write(hello);
    const record = parseErrorRecord(await raw.untilClosed());
    assert.equal(record.code, 4);
    assert.match(record.text, why);
    assert.equal((await server.nextRefusal()).error.code, 'protocol');
  }
});

test('handshake: a client that sends nothing is timed out, and a silent server times the client out', async (t) => {
  const server = await startServer(t, { handshakeTimeoutMs: 200 });
  const raw = await rawSocket(t, server.port);
  const record = parseErrorRecord(await raw.untilClosed());
  assert.equal(record.code, 5);
  assert.match(record.text, /handshake timed out after 200 ms \(reading the hello\)/);
  assert.equal((await server.nextRefusal()).error.code, 'timeout');
  assert.match(server.logs[0], /^refused 127\.0\.0\.1:\d+: handshake timed out/);

  const port = await fakeServer(t, () => {});
  const started = Date.now();
  const err = await rejection(
    connectLane({
      host: HOST,
      port,
      secret: SECRET,
      migrationId: 'm',
      lane: 'urgent',
      capabilities: 0,
      timeoutMs: 200,
    }),
  );
  assert.equal(err.code, 'timeout');
  assert.match(err.message, /urgent lane to 127\.0\.0\.1:\d+: handshake timed out after 200 ms/);
  assert.ok(Date.now() - started < 2000);
});

test('connect: a refused connection rejects with code closed', async (t) => {
  const probe = net.createServer();
  probe.listen(0, HOST);
  await once(probe, 'listening');
  const { port } = probe.address() as net.AddressInfo;
  probe.close();
  await once(probe, 'close');
  const err = await rejection(connect(t, port, 'control'));
  assert.equal(err.code, 'closed');
  assert.match(err.message, /ECONNREFUSED/);
});

test('options: bad secrets, migration ids and lanes are refused up front', async () => {
  const base = {
    host: HOST,
    port: 1,
    secret: SECRET,
    migrationId: 'm',
    lane: 'bulk' as Lane,
    capabilities: 0,
  };
  await assert.rejects(connectLane({ ...base, secret: new Uint8Array(8) }), /at least 16 bytes/);
  await assert.rejects(connectLane({ ...base, migrationId: 'x'.repeat(129) }), /1\.\.128 bytes/);
  await assert.rejects(connectLane({ ...base, migrationId: '' }), /1\.\.128 bytes/);
  await assert.rejects(connectLane({ ...base, lane: 'side' as Lane }), /unknown lane/);
});

// ---------------------------------------------------------------------------------------
// Frames

test('frames: every message type makes a round trip over every lane, both ways', async (t) => {
  const server = await startServer(t);
  const messages = everyMessage();
  for (const lane of LANES) {
    const p = await pair(t, server, lane);
    const atServer = collect(p.server, messages.length);
    const atClient = collect(p.client, messages.length);
    for (const m of messages) {
      p.client.send(m);
      p.server.send(m);
    }
    for (const got of [await atServer, await atClient]) {
      assert.deepEqual(
        got.map((g) => g.seq),
        messages.map((_, i) => i),
      );
      assert.deepEqual(
        got.map((g) => plain(g.msg)),
        messages.map(plain),
      );
    }
  }
});

test('read buffer: a client reading into one small buffer gets every message type intact', async (t) => {
  const server = await startServer(t);
  const messages = everyMessage();
  // 4 KiB reads: the 280 KB pages frame spans some 70 of them, the small ones share reads
  const p = await pair(t, server, 'bulk', 4096);
  const atClient = collect(p.client, messages.length * 2);
  for (const m of [...messages, ...messages]) p.server.send(m);
  const got = await atClient;
  assert.deepEqual(
    got.map((g) => g.seq),
    [...messages, ...messages].map((_, i) => i),
  );
  assert.deepEqual(
    got.map((g) => plain(g.msg)),
    [...messages, ...messages].map(plain),
  );
  // and the other way, from the client, as usual
  const atServer = collect(p.server, 1);
  p.client.send({ type: 'done' });
  assert.deepEqual(await atServer, [{ msg: { type: 'done' }, seq: 0 }]);
});

test('read buffer: a paused client reads nothing until it resumes, then everything in order', async (t) => {
  const server = await startServer(t);
  const p = await pair(t, server, 'bulk', 1 << 16);
  await pausedThenResumed(p.server, p.client, 0, 300);
});

test('read buffer: frames kept where they landed stay intact while the memory of those given back is read into again', async (t) => {
  const server = await startServer(t);
  const p = await pair(t, server, 'bulk', 16 * 1024);
  const FRAMES = 600;
  const PAGES = 3; // frames of ~12 KiB: some inside one read, some across two, some across chunks
  // odd frames start with a zero page, which travels as a bit of the zero mask; every
  // fifth frame is all zero pages, a mask and no data
  const zeros = (i: number) => (i % 5 === 4 ? PAGES : i % 2);
  const contents = (i: number) => fillPages(new Uint8Array((PAGES - zeros(i)) * PAGE_SIZE), i + 1);
  const mask = (i: number) => Uint8Array.of(i % 5 === 4 ? 0b111 : i % 2);
  const kept: { i: number; msg: Message }[] = [];
  const chunks = new Set<ArrayBufferLike>();
  let checked = 0;
  const check = ({ i, msg }: { i: number; msg: Message }) => {
    assert.ok(msg.type === 'pages');
    assert.deepEqual(msg.batch.runs, [i * PAGES, PAGES], `frame ${i}`);
    assert.deepEqual([...msg.batch.zeroMask!], [...mask(i)], `frame ${i}: zero mask`);
    const data = Buffer.from(msg.batch.data ?? new Uint8Array(0));
    assert.ok(data.equals(Buffer.from(contents(i))), `frame ${i}: pages changed while kept`);
    checked++;
  };
  const done = deferred<void>('every frame', 20_000);
  let seen = 0;
  let failed = false;
  p.client.onMessage((msg) => {
    if (failed) return;
    try {
      receive(msg);
    } catch (e) {
      failed = true;
      done.reject(e as Error);
    }
  });
  const receive = (msg: Message) => {
    assert.ok(msg.type === 'pages');
    // a frame inside one read stays in the reader's chunk; one across two is gathered
    const data = msg.batch.data;
    if (data && data.buffer.byteLength % (16 * 1024) === 0) chunks.add(data.buffer);
    kept.push({ i: seen++, msg });
    // two in three are checked and given back at once; the others are kept to the end
    if (seen % 3 !== 0) {
      check(kept.pop()!);
      framePool.give(data);
    }
    if (seen === FRAMES) done.resolve();
  };
  p.client.onError((e) => done.reject(e));
  for (let i = 0; i < FRAMES && !failed; i++) {
    const data = contents(i);
    p.server.send({
      type: 'pages',
      batch: {
        kind: 'bulk',
        runs: [i * PAGES, PAGES],
        pageCount: PAGES,
        zeroCount: zeros(i),
        zeroMask: mask(i),
        data,
      },
    });
    if (i % 50 === 49) await new Promise((r) => setImmediate(r));
  }
  await done.promise;
  for (const k of kept.splice(0)) check(k);
  assert.equal(checked, FRAMES);
  assert.ok(chunks.size > 0, 'frames were kept in place');
  assert.ok(
    chunks.size < (FRAMES * PAGES * PAGE_SIZE) / (128 * 1024),
    `read chunks reused (${chunks.size} for all)`,
  );
});

test('read buffer: a read buffer under 4 KiB is refused up front', async () => {
  await assert.rejects(
    connectLane({
      host: HOST,
      port: 1,
      secret: SECRET,
      migrationId: 'm',
      lane: 'bulk',
      capabilities: 0,
      readBuffer: 100,
    }),
    /readBuffer must be an integer of at least 4096 bytes, got 100/,
  );
});

test('frames: frames sent before the receiver registers a handler are held, not lost', async (t) => {
  const server = await startServer(t);
  const client = await connect(t, server.port, 'control');
  client.send({ type: 'roundEnd', round: 1 });
  client.send({ type: 'roundEnd', round: 2 });
  const [lane] = await server.nextLane();
  t.after(() => lane.destroy());
  await new Promise((r) => setTimeout(r, 50));
  const got = await collect(lane, 2);
  assert.deepEqual(
    got.map((g) => g.msg),
    [
      { type: 'roundEnd', round: 1 },
      { type: 'roundEnd', round: 2 },
    ],
  );
});

test('frames: a message the codec cannot encode throws and sends nothing', async (t) => {
  const server = await startServer(t);
  const p = await pair(t, server, 'bulk');
  const got = collect(p.server, 1);
  assert.throws(() => p.client.send({ type: 'roundEnd', round: -1 }), RangeError);
  p.client.send({ type: 'roundEnd', round: 9 });
  assert.deepEqual(await got, [{ msg: { type: 'roundEnd', round: 9 }, seq: 0 }]);
});

test('frames: a corrupted frame closes the lane with code codec on the receiver', async (t) => {
  const server = await startServer(t);
  const raw = await rawHandshake(t, server.port, 'bulk', 'm-corrupt');
  const [lane] = await server.nextLane();
  t.after(() => lane.destroy());
  const got: Message[] = [];
  lane.onMessage((m) => got.push(m));
  const error = deferred<TransportError>('a codec error');
  const closed = deferred<TransportError | undefined>('the lane to close');
  lane.onError(error.resolve);
  lane.onClose(closed.resolve);

  const good = encodeMessage({ type: 'roundEnd', round: 1 }, 0);
  const bad = encodeMessage(
    { type: 'pages', batch: { kind: 'bulk', runs: [0, 1], pageCount: 1, zeroCount: 0 } },
    1,
  );
  bad[bad.length - 8] ^= 0x40; // a bit in the body: the CRC no longer matches
  const after = encodeMessage({ type: 'roundEnd', round: 2 }, 2);
  raw.socket.write(Buffer.concat([good, bad, after]));

  const e = await error.promise;
  assert.equal(e.code, 'codec');
  assert.match(e.message, /bulk lane with 127\.0\.0\.1:\d+: checksum: frame 1: checksum mismatch/);
  assert.equal(await closed.promise, e);
  assert.deepEqual(got, [{ type: 'roundEnd', round: 1 }], 'frames before the bad one arrive, none after');
  assert.equal(lane.error, e);
  assert.throws(
    () => lane.send({ type: 'done' }),
    (x: unknown) => x instanceof TransportError && x.code === 'closed',
  );
  await raw.untilClosed();
});

test('frames: garbage with a valid length prefix and a peer closing mid-frame are reported, never thrown', async (t) => {
  const server = await startServer(t);
  // An absurd declared length: refused before anything is buffered.
  const raw1 = await rawHandshake(t, server.port, 'control', 'm');
  const [lane1] = await server.nextLane();
  t.after(() => lane1.destroy());
  const e1 = deferred<TransportError>('an oversized-frame error');
  lane1.onError(e1.resolve);
  raw1.socket.write(Buffer.from([0xff, 0xff, 0xff, 0x7f, 1, 2, 3]));
  assert.equal((await e1.promise).code, 'codec');
  assert.match((await e1.promise).message, /oversized/);

  // Half a frame, then the peer closes.
  const raw2 = await rawHandshake(t, server.port, 'urgent', 'm');
  const [lane2] = await server.nextLane();
  t.after(() => lane2.destroy());
  const e2 = deferred<TransportError | undefined>('the lane to close');
  lane2.onClose(e2.resolve);
  raw2.socket.end(encodeMessage({ type: 'demand', pfns: [1, 2, 3] }, 0).subarray(0, 10));
  const closedWith = await e2.promise;
  assert.equal(closedWith?.code, 'closed');
  assert.match(closedWith?.message ?? '', /peer closed the connection 10 bytes into a frame/);
});

test('frames: a throwing message handler closes the lane with code handler', async (t) => {
  const server = await startServer(t);
  const p = await pair(t, server, 'control');
  const error = deferred<TransportError>('a handler error');
  p.server.onMessage(() => {
    throw new Error('engine bug');
  });
  p.server.onError(error.resolve);
  const clientClosed = deferred<TransportError | undefined>('the client lane to close');
  p.client.onClose(clientClosed.resolve);
  p.client.send({ type: 'resumed' });
  const e = await error.promise;
  assert.equal(e.code, 'handler');
  assert.match(e.message, /message handler threw: engine bug/);
  await clientClosed.promise;
});

test('frames: close flushes what was sent; both sides see a clean close', async (t) => {
  const server = await startServer(t);
  const p = await pair(t, server, 'bulk');
  const got = collect(p.server, 3);
  const serverClosed = deferred<TransportError | undefined>('the server lane to close');
  const clientClosed = deferred<TransportError | undefined>('the client lane to close');
  p.server.onClose(serverClosed.resolve);
  p.client.onClose(clientClosed.resolve);
  const pages: Message = {
    type: 'pages',
    batch: {
      kind: 'bulk',
      runs: [0, 64],
      pageCount: 64,
      zeroCount: 0,
      zeroMask: new Uint8Array(8),
      data: fillPages(new Uint8Array(64 * PAGE_SIZE), 3),
    },
  };
  p.client.send(pages);
  p.client.send(pages);
  p.client.send({ type: 'complete', totalPages: 128 });
  p.client.close();
  assert.equal((await got)[2].msg.type, 'complete');
  assert.equal(await serverClosed.promise, undefined);
  assert.equal(await clientClosed.promise, undefined);
});

// ---------------------------------------------------------------------------------------
// Bulk transfer

test('bulk: the pages frames of one turn leave together, a message of another kind at once, in order', async (t) => {
  const server = await startServer(t);
  const bulk = await pair(t, server, 'bulk');
  const got = collect(bulk.server, 3);
  const pages = (pfn: number): Message => ({
    type: 'pages',
    batch: {
      kind: 'bulk',
      runs: [pfn, 4],
      pageCount: 4,
      zeroCount: 0,
      zeroMask: new Uint8Array(1),
      data: fillPages(new Uint8Array(4 * PAGE_SIZE), pfn),
    },
  });
  bulk.client.send(pages(0));
  bulk.client.send(pages(4));
  assert.ok(bulk.client.bufferedBytes > 8 * PAGE_SIZE, 'held until the end of the turn');
  bulk.client.send({ type: 'roundEnd', round: 1 });
  assert.equal(bulk.client.bufferedBytes, 0, 'the round end took the frames before it along');
  const urgent = await pair(t, server, 'urgent');
  urgent.client.send(pages(8));
  assert.equal(urgent.client.bufferedBytes, 0, 'the urgent lane holds nothing back');
  assert.deepEqual(
    (await got).map((g) => plain(g.msg)),
    [pages(0), pages(4), { type: 'roundEnd', round: 1 } as Message].map(plain),
  );
  bulk.client.send(pages(12));
  await new Promise((r) => setImmediate(r));
  assert.equal(bulk.client.bufferedBytes, 0, 'frames alone leave at the end of the turn');
});

test('bulk: 256 MiB of pages frames arrive complete and in order, with backpressure', async (t) => {
  const server = await startServer(t);
  // as in a migration: the source accepted the lane, the destination reads into one buffer
  const p = await pair(t, server, 'bulk', 1 << 20);
  const source = p.server;
  const destination = p.client;
  const PAGES = 64;
  const FRAMES = (256 * 1024 * 1024) / (PAGES * PAGE_SIZE);
  const data = Buffer.from(fillPages(new Uint8Array(PAGES * PAGE_SIZE), 4).buffer);
  const zeroMask = new Uint8Array(PAGES / 8);

  let received = 0;
  let problem: string | undefined;
  const done = deferred<void>('the burst', 60_000);
  destination.onError(done.reject);
  destination.onMessage((msg, seq) => {
    if (problem) return;
    if (msg.type !== 'pages' || !msg.batch.data) problem = `frame ${seq}: ${msg.type} without data`;
    else if (seq !== received) problem = `frame ${seq} arrived as number ${received}`;
    else if (msg.batch.runs[0] !== seq * PAGES) problem = `frame ${seq} carries pfn ${msg.batch.runs[0]}`;
    else {
      const d = Buffer.from(msg.batch.data.buffer, msg.batch.data.byteOffset, msg.batch.data.byteLength);
      if (d.readUInt32LE(0) !== seq || d.readUInt32LE(d.length - 4) !== ~seq >>> 0) {
        problem = `frame ${seq} carries the markers of another frame`;
      } else if (d.compare(data, 4, data.length - 4, 4, d.length - 4) !== 0) {
        problem = `frame ${seq}: page contents differ`;
      }
    }
    received++;
    if (problem) done.reject(new Error(problem));
    else if (received === FRAMES) done.resolve();
  });

  let refusals = 0;
  let drains = 0;
  let maxBuffered = 0;
  const started = process.hrtime.bigint();
  for (let i = 0; i < FRAMES; i++) {
    data.writeUInt32LE(i, 0);
    data.writeUInt32LE(~i >>> 0, data.length - 4);
    const ok = source.send({
      type: 'pages',
      batch: { kind: 'bulk', runs: [i * PAGES, PAGES], pageCount: PAGES, zeroCount: 0, zeroMask, data },
    });
    maxBuffered = Math.max(maxBuffered, source.bufferedBytes);
    if (!ok) {
      refusals++;
      const drained = deferred<void>('drain');
      source.onDrain(drained.resolve);
      await drained.promise;
      drains++;
    }
  }
  await done.promise;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const mb = (FRAMES * PAGES * PAGE_SIZE) / 1e6;
  console.log(
    `  bulk lane, one process: ${FRAMES} frames of ${PAGES} pages, ${mb.toFixed(0)} MB in ${seconds.toFixed(2)} s = ${(mb / seconds).toFixed(0)} MB/s; ` +
      `send returned false ${refusals} times, peak queue ${(maxBuffered / 1024).toFixed(0)} KiB`,
  );
  assert.equal(received, FRAMES);
  assert.ok(refusals > 0, 'send reported backpressure at least once');
  assert.equal(drains, refusals, 'every refusal was followed by a drain');
  assert.ok(maxBuffered < 4 * 1024 * 1024, `the socket queue stayed bounded (${maxBuffered} bytes)`);
});

/**
 * `receiver` has `before` rounds in hand, stops reading while `sender` sends rounds up to
 * `last`, and gets nothing until it reads again; then every round, in order.
 */
async function pausedThenResumed(
  sender: LaneConnection,
  receiver: LaneConnection,
  before: number,
  last: number,
): Promise<void> {
  const got: number[] = [];
  receiver.onMessage((m) => {
    if (m.type === 'roundEnd') got.push(m.round);
  });
  const inHand = Array.from({ length: before }, (_, i) => i + 1);
  for (const round of inHand) sender.send({ type: 'roundEnd', round });
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(got, inHand);
  receiver.pauseReading();
  for (let i = before + 1; i <= last; i++) sender.send({ type: 'roundEnd', round: i });
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(got, inHand, 'nothing delivered while reading is paused');
  const all = deferred<void>('the rest after resuming');
  receiver.onMessage((m) => {
    if (m.type === 'roundEnd' && m.round === last) all.resolve();
  });
  receiver.resumeReading();
  await all.promise;
  assert.deepEqual(
    got,
    Array.from({ length: last }, (_, i) => i + 1),
  );
}

test('frames: a lane that stops reading delivers nothing until it resumes, then everything in order', async (t) => {
  const server = await startServer(t);
  const p = await pair(t, server, 'bulk');
  await pausedThenResumed(p.client, p.server, 1, 200);
});
