// The transport between two `ferry host` processes: three authenticated TCP connections
// ("lanes": control, bulk, urgent) per migration, each carrying the engine's codec frames.
// The source host connects its control and urgent lanes to the destination host's
// listening port; the destination connects the bulk lane back to the source's (Node reads
// into one reused buffer only on connections it opened, and the bulk lane carries the
// gigabytes). Either way the side that connects is the handshake's client.
//
// Handshake, before any frame (all integers little-endian, like the codec):
//
//   1. client → server  hello
//        off  size  field
//        0    6     magic "FERRY\0" (46 45 52 52 59 00)
//        6    2     u16 protocol version (PROTOCOL_VERSION = 2)
//        8    2     u16 n: length of the rest of the hello (22 + l + m, so 24..166)
//        10   4     u32 client capabilities (CAP_* bit flags; unknown bits are ignored)
//        14   16    client nonce (random)
//        30   1     u8 l: lane name length (1..16)
//        31   l     lane name, ASCII: "control" | "bulk" | "urgent"
//        31+l 1     u8 m: migration id length (1..128)
//        32+l m     migration id, UTF-8
//   2. server → client  u8 0 | u16 version | u32 server capabilities | 16-byte server nonce
//   3. client → server  u8 0 | 32-byte client proof
//   4. server → client  u8 0 | 32-byte server proof
//   5. client → server  u8 0   (the client accepted the server's proof)
//   then codec frames in both directions, sequence numbers starting at 0 each way.
//
//   transcript   = u16 version | u32 client caps | u32 server caps | u8 l | lane | u8 m | migration id
//   client proof = HMAC-SHA256(secret, "ferry-client" | server nonce | client nonce | transcript)
//   server proof = HMAC-SHA256(secret, "ferry-server" | client nonce | server nonce | transcript)
//
// Both nonces make every proof fresh; the distinct labels stop a proof from being reflected
// back; the capabilities in the transcript stop a middleman from stripping them.
//
// Error record: in place of any of the replies 2-5, either side may send
//   u8 code (1 magic, 2 version, 3 auth, 4 protocol, 5 timeout) | u16 length (≤ 512) | UTF-8 text
// and then closes the connection; the receiver surfaces a TransportError with that code and
// text. The first 8 bytes of the hello and the error record stay the same in every version,
// so hosts of different versions can always tell each other what went wrong.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import type { DuplexOptions } from 'node:stream';
import { type CodecError, Decoder, Encoder } from '../engine/codec.ts';
import type { Lane, Message } from '../engine/messages.ts';
import { crc32 } from './crc32.ts';
import { type ChunkReader, framePool } from './frame-pool.ts';
import { frameChecksum } from './page-sums.ts';

export const PROTOCOL_VERSION = 2;
export const MAGIC = Uint8Array.of(0x46, 0x45, 0x52, 0x52, 0x59, 0x00); // "FERRY\0"

/** The guest kernel takes cooperative (async) page faults. */
export const CAP_ASYNC_FAULTS = 1 << 0;
/** Zero pages travel as bits in the zero mask, without contents. */
export const CAP_ZERO_PAGES = 1 << 1;
/** Demand requests and their pages use the separate urgent lane. */
export const CAP_URGENT_LANE = 1 << 2;
export const ALL_CAPABILITIES = CAP_ASYNC_FAULTS | CAP_ZERO_PAGES | CAP_URGENT_LANE;

export const LANES: readonly Lane[] = ['control', 'bulk', 'urgent'];
export const MAX_MIGRATION_ID_BYTES = 128;
export const MIN_SECRET_BYTES = 16;
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 5000;
/** Bytes queued in a socket before `send` reports backpressure. */
export const DEFAULT_HIGH_WATER_MARK = 1024 * 1024;

const NONCE_BYTES = 16;
const MAC_BYTES = 32;
const MAX_LANE_NAME = 16;
const MIN_HELLO_REST = 4 + NONCE_BYTES + 1 + 1 + 1 + 1;
const MAX_HELLO_REST = 4 + NONCE_BYTES + 1 + MAX_LANE_NAME + 1 + MAX_MIGRATION_ID_BYTES;
const MAX_ERROR_TEXT = 512;
/** Unread bytes an unauthenticated peer may queue before it is refused. */
const MAX_HANDSHAKE_BUFFER = 1024 * 1024;
/** How long a closing connection may take to flush before it is destroyed. */
const CLOSE_GRACE_MS = 5000;

// ---------------------------------------------------------------------------------------
// Errors

export type TransportErrorCode =
  | 'auth'
  | 'version'
  | 'magic'
  | 'timeout'
  | 'closed'
  | 'protocol'
  | 'codec'
  /** A callback of this lane (onMessage, onLane) threw; the lane was closed. */
  | 'handler';

export class TransportError extends Error {
  override readonly name = 'TransportError';
  readonly code: TransportErrorCode;
  /** The other side reported this error (in an error record) rather than this side finding it. */
  readonly fromPeer: boolean;
  constructor(code: TransportErrorCode, message: string, opts: { cause?: unknown; fromPeer?: boolean } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.fromPeer = opts.fromPeer ?? false;
  }
}

const RECORD_CODES = ['magic', 'version', 'auth', 'protocol', 'timeout'] as const;
type RecordCode = (typeof RECORD_CODES)[number];
const recordCode = (code: TransportErrorCode): number =>
  RECORD_CODES.indexOf(code as RecordCode) + 1 || RECORD_CODES.indexOf('protocol') + 1;

function errorRecord(code: TransportErrorCode, text: string): Buffer {
  let msg = Buffer.from(text, 'utf8');
  if (msg.length > MAX_ERROR_TEXT) msg = msg.subarray(0, MAX_ERROR_TEXT);
  const out = Buffer.alloc(3 + msg.length);
  out[0] = recordCode(code);
  out.writeUInt16LE(msg.length, 1);
  msg.copy(out, 3);
  return out;
}

// ---------------------------------------------------------------------------------------
// Public types

/** What the client said in its hello, as the server saw it. */
export interface Hello {
  version: number;
  capabilities: number;
  migrationId: string;
  lane: Lane;
  /** "address:port" of the client. */
  remoteAddress: string;
}

/** One authenticated lane carrying codec frames. */
export interface LaneConnection {
  readonly lane: Lane;
  readonly migrationId: string;
  readonly peerCapabilities: number;
  /** "address:port" of the other host. */
  readonly remoteAddress: string;
  /** Bytes queued in the socket, not yet handed to the kernel. */
  readonly bufferedBytes: number;
  /** The error that closed the lane, if one did. */
  readonly error: TransportError | undefined;
  /**
   * Encodes and queues one frame. Returns false once the socket's queue is over its high
   * water mark: wait for `onDrain` before sending more (the frame was still queued).
   * Throws RangeError for a message the codec cannot encode (nothing is sent) and
   * TransportError 'closed' once the lane is closing or closed. `written` runs once the
   * frame's bytes are no longer needed (handed to the kernel, or the lane failed), so that
   * a buffer the message points into can be reused.
   */
  send(msg: Message, written?: () => void): boolean;
  onDrain(cb: () => void): void;
  /**
   * Frames arriving before the first handler is registered are held (and reading paused)
   * until it is; they are delivered in order from a microtask.
   */
  onMessage(cb: (msg: Message, seq: number) => void): void;
  /** Stops reading from the socket (TCP pushes back on the sender) until `resumeReading`. */
  pauseReading(): void;
  /** Reads again after `pauseReading`; nothing happens when reading was not paused. */
  resumeReading(): void;
  /** Called once, with the error that closed the lane (also when registered after it). */
  onError(cb: (e: TransportError) => void): void;
  /** Called once when the socket has closed, with the error that closed it if any. */
  onClose(cb: (error?: TransportError) => void): void;
  /** Flushes what was sent, then closes. Incoming frames are no longer delivered. */
  close(): void;
  /** Closes at once, dropping anything still queued. */
  destroy(): void;
}

export interface ListenOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  secret: Uint8Array;
  capabilities: number;
  /** Called with one line per refused connection, naming the peer and the reason. */
  log: (line: string) => void;
  /** A client completed the handshake. If this throws, the lane is closed. */
  onLane: (lane: LaneConnection, hello: Hello) => void;
  /** A connection was refused or failed its handshake. */
  onRefused?: (error: TransportError, remoteAddress: string) => void;
  handshakeTimeoutMs?: number;
  highWaterMark?: number;
}

export interface Listener {
  readonly port: number;
  /** Stops listening and closes handshakes in progress and every lane accepted here. */
  close(): Promise<void>;
}

export interface ConnectOptions {
  host: string;
  port: number;
  secret: Uint8Array;
  migrationId: string;
  lane: Lane;
  capabilities: number;
  /** Bound on connecting plus the handshake; default 5 s. */
  timeoutMs?: number;
  highWaterMark?: number;
  /**
   * Read into one reused buffer of this many bytes, not a new one per read: the lane
   * copies each frame out of it once, and the process allocates nothing per read (per
   * read allocations are external memory to V8, which collects for them). Node offers
   * this only on connections it opens.
   */
  readBuffer?: number;
}

// ---------------------------------------------------------------------------------------
// Handshake helpers

const addressOf = (socket: net.Socket): string => {
  const a = socket.remoteAddress ?? '?';
  return `${a.includes(':') ? `[${a}]` : a}:${socket.remotePort ?? '?'}`;
};

const isU32 = (n: number) => Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
const isLane = (s: string): s is Lane => (LANES as readonly string[]).includes(s);
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function checkSecret(secret: Uint8Array) {
  if (!(secret instanceof Uint8Array) || secret.length < MIN_SECRET_BYTES) {
    throw new RangeError(`the shared secret must be at least ${MIN_SECRET_BYTES} bytes`);
  }
}

function checkCapabilities(caps: number) {
  if (!isU32(caps)) throw new RangeError(`capabilities ${caps} is not a u32`);
}

interface Transcript {
  version: number;
  clientCaps: number;
  serverCaps: number;
  lane: string;
  migrationId: string;
}

function transcriptBytes(t: Transcript): Buffer {
  const lane = Buffer.from(t.lane, 'ascii');
  const id = Buffer.from(t.migrationId, 'utf8');
  const out = Buffer.alloc(2 + 4 + 4 + 1 + lane.length + 1 + id.length);
  let at = out.writeUInt16LE(t.version, 0);
  at = out.writeUInt32LE(t.clientCaps, at);
  at = out.writeUInt32LE(t.serverCaps, at);
  at = out.writeUInt8(lane.length, at);
  at += lane.copy(out, at);
  at = out.writeUInt8(id.length, at);
  id.copy(out, at);
  return out;
}

function proof(
  secret: Uint8Array,
  label: 'ferry-client' | 'ferry-server',
  first: Uint8Array,
  second: Uint8Array,
  t: Transcript,
): Buffer {
  return createHmac('sha256', secret)
    .update(label)
    .update(first)
    .update(second)
    .update(transcriptBytes(t))
    .digest();
}

/** Buffers what a socket delivers during the handshake and hands out exact byte counts. */
class Inbox {
  #chunks: Buffer[] = [];
  #have = 0;
  #pending: { n: number; resolve: (b: Buffer) => void; reject: (e: TransportError) => void } | undefined;
  #failure: TransportError | undefined;
  #rejectFailed: (e: TransportError) => void = () => {};
  /** Bytes handed out by `read` so far. */
  consumed = 0;
  /** Rejects when the inbox fails. */
  readonly failed: Promise<never>;

  constructor(readonly socket: net.Socket) {
    socket.on('data', this.#onData);
    this.failed = new Promise<never>((_, reject) => {
      this.#rejectFailed = reject;
    });
    this.failed.catch(() => {});
  }

  #onData = (chunk: Buffer) => {
    this.#chunks.push(chunk);
    this.#have += chunk.length;
    if (this.#have > MAX_HANDSHAKE_BUFFER) {
      this.fail(
        new TransportError('protocol', `peer sent ${this.#have} bytes the handshake did not ask for`),
      );
    }
    this.#settle();
  };

  get buffered(): number {
    return this.#have;
  }

  /** Up to `n` buffered bytes, without consuming them. */
  peek(n: number): Buffer {
    return Buffer.concat(this.#chunks).subarray(0, n);
  }

  read(n: number): Promise<Buffer> {
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#pending = { n, resolve, reject };
      this.#settle();
    });
  }

  async u8(): Promise<number> {
    return (await this.read(1))[0];
  }

  fail(e: TransportError) {
    if (this.#failure) return;
    this.#failure = e;
    this.#rejectFailed(e);
    const p = this.#pending;
    this.#pending = undefined;
    p?.reject(e);
  }

  /** Stops listening and returns the bytes not read yet. */
  detach(): Buffer[] {
    this.socket.off('data', this.#onData);
    const rest = this.#chunks;
    this.#chunks = [];
    this.#have = 0;
    return rest;
  }

  #settle() {
    const p = this.#pending;
    if (!p || this.#have < p.n) return;
    this.#pending = undefined;
    const all = this.#chunks.length === 1 ? this.#chunks[0] : Buffer.concat(this.#chunks);
    const out = all.subarray(0, p.n);
    const rest = all.subarray(p.n);
    this.#chunks = rest.length > 0 ? [rest] : [];
    this.#have = rest.length;
    this.consumed += p.n;
    p.resolve(out);
  }
}

/** Reads the rest of an error record whose code byte was `code`. */
async function readErrorRecord(inbox: Inbox, code: number, who: string): Promise<TransportError> {
  const kind = RECORD_CODES[code - 1];
  if (kind === undefined) {
    return new TransportError(
      'protocol',
      `${who} sent unexpected byte 0x${code.toString(16).padStart(2, '0')} — is it a ferry host?`,
    );
  }
  const len = (await inbox.read(2)).readUInt16LE(0);
  if (len > MAX_ERROR_TEXT) return new TransportError('protocol', `${who} sent a ${len}-byte error text`);
  const text = (await inbox.read(len)).toString('utf8');
  return new TransportError(kind, `${who}: ${text}`, { fromPeer: true });
}

/** Sends an error record (if the socket can still take it), then closes the connection. */
function refuse(socket: net.Socket, e: TransportError) {
  if (!e.fromPeer && e.code !== 'closed' && socket.writable) socket.end(errorRecord(e.code, e.message));
  else socket.end();
  setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
}

/** Fails the inbox when the socket ends, errors or the deadline passes. */
function watch(socket: net.Socket, inbox: Inbox, timeoutMs: number, stage: () => string) {
  const onEnd = () =>
    inbox.fail(
      new TransportError(
        'closed',
        `connection closed during the handshake, ${inbox.consumed + inbox.buffered} bytes in (${stage()})`,
      ),
    );
  const onError = (err: Error) =>
    inbox.fail(
      new TransportError('closed', `connection failed during the handshake: ${err.message}`, { cause: err }),
    );
  const timer = setTimeout(
    () => inbox.fail(new TransportError('timeout', `handshake timed out after ${timeoutMs} ms (${stage()})`)),
    timeoutMs,
  );
  socket.on('end', onEnd);
  socket.on('close', onEnd);
  socket.on('error', onError);
  return () => {
    clearTimeout(timer);
    socket.off('end', onEnd);
    socket.off('close', onEnd);
    socket.off('error', onError);
  };
}

// ---------------------------------------------------------------------------------------
// Server

async function serverHandshake(
  inbox: Inbox,
  opts: ChannelListenOptions,
  remoteAddress: string,
  progress: (stage: string, hello?: Partial<ChannelHello>) => void,
): Promise<ChannelHello> {
  const socket = inbox.socket;
  progress('reading the hello');
  for (let i = 0; i < MAGIC.length; i++) {
    const b = await inbox.u8();
    if (b !== MAGIC[i]) {
      const seen = Buffer.concat([
        Buffer.from(MAGIC.subarray(0, i)),
        Buffer.of(b),
        inbox.peek(MAGIC.length - i - 1),
      ]);
      throw new TransportError(
        'magic',
        `not a ferry client: wrong magic bytes ${seen.toString('hex')} (expected ${Buffer.from(MAGIC).toString('hex')})`,
      );
    }
  }
  const head = await inbox.read(4);
  const version = head.readUInt16LE(0);
  if (version !== PROTOCOL_VERSION) {
    throw new TransportError(
      'version',
      `unsupported protocol version ${version} (this host speaks ${PROTOCOL_VERSION})`,
    );
  }
  const n = head.readUInt16LE(2);
  if (n < MIN_HELLO_REST || n > MAX_HELLO_REST) {
    throw new TransportError('protocol', `hello length ${n} is outside ${MIN_HELLO_REST}..${MAX_HELLO_REST}`);
  }
  const rest = await inbox.read(n);
  const capabilities = rest.readUInt32LE(0);
  const clientNonce = rest.subarray(4, 4 + NONCE_BYTES);
  let at = 4 + NONCE_BYTES;
  const laneLen = rest[at++];
  if (laneLen === 0 || laneLen > MAX_LANE_NAME || at + laneLen + 1 > n) {
    throw new TransportError('protocol', `hello: bad lane name length ${laneLen}`);
  }
  const laneName = rest.subarray(at, at + laneLen).toString('latin1');
  at += laneLen;
  if (!opts.channels.includes(laneName))
    throw new TransportError('protocol', `hello: unknown lane ${JSON.stringify(laneName)}`);
  const idLen = rest[at++];
  if (idLen === 0 || idLen > MAX_MIGRATION_ID_BYTES || at + idLen !== n) {
    throw new TransportError('protocol', `hello: migration id length ${idLen} does not fit the hello`);
  }
  let migrationId: string;
  try {
    migrationId = strictUtf8.decode(rest.subarray(at, at + idLen));
  } catch {
    throw new TransportError('protocol', 'hello: migration id is not valid UTF-8');
  }
  const hello: ChannelHello = { version, capabilities, migrationId, lane: laneName, remoteAddress };
  progress('authenticating', hello);

  const serverNonce = randomBytes(NONCE_BYTES);
  const reply = Buffer.alloc(1 + 2 + 4 + NONCE_BYTES);
  reply.writeUInt16LE(PROTOCOL_VERSION, 1);
  reply.writeUInt32LE(opts.capabilities, 3);
  serverNonce.copy(reply, 7);
  socket.write(reply);

  const t: Transcript = {
    version,
    clientCaps: capabilities,
    serverCaps: opts.capabilities,
    lane: laneName,
    migrationId,
  };
  const status = await inbox.u8();
  if (status !== 0) throw await readErrorRecord(inbox, status, `client ${remoteAddress}`);
  const got = await inbox.read(MAC_BYTES);
  const want = proof(opts.secret, 'ferry-client', serverNonce, clientNonce, t);
  if (!timingSafeEqual(got, want)) throw new TransportError('auth', 'authentication failed: wrong secret');

  const mine = proof(opts.secret, 'ferry-server', clientNonce, serverNonce, t);
  socket.write(Buffer.concat([Buffer.of(0), mine]));
  progress('waiting for the client to accept');
  const finish = await inbox.u8();
  if (finish !== 0) throw await readErrorRecord(inbox, finish, `client ${remoteAddress}`);
  return hello;
}

/** Listens for lanes from source hosts. */
export async function listenLanes(opts: ListenOptions): Promise<Listener> {
  const lanes = new Set<LaneConnection>();
  const listener = await listenChannels({
    ...opts,
    channels: LANES,
    onChannel: (ch) => {
      const hello = { ...ch.hello, lane: ch.hello.lane as Lane };
      if (hello.lane === 'bulk') ch.socket.setNoDelay(false);
      const lane = new TcpLane(
        ch.socket,
        hello.lane,
        hello.migrationId,
        hello.capabilities,
        hello.remoteAddress,
        ch.leftover,
      );
      lanes.add(lane);
      lane.onClose(() => lanes.delete(lane));
      try {
        opts.onLane(lane, hello);
      } catch (e) {
        lane.fail(new TransportError('handler', `onLane threw: ${(e as Error)?.message ?? e}`, { cause: e }));
      }
    },
  });
  return {
    port: listener.port,
    close() {
      for (const lane of lanes) lane.destroy();
      return listener.close();
    },
  };
}

/** The hello of an authenticated channel: `lane` names the channel, `migrationId` the session. */
export type ChannelHello = Omit<Hello, 'lane'> & { lane: string };

/** A socket past the handshake, and the bytes that arrived behind it. */
export interface Channel {
  socket: net.Socket;
  hello: ChannelHello;
  leftover: Buffer[];
  /**
   * For a socket with a read buffer (it emits no 'data'): sends its further reads to
   * `sink`, each a view of `reader`'s memory, valid during the call only unless held.
   */
  readInto?: (sink: (chunk: Buffer) => void) => void;
  reader?: ChunkReader;
}

export interface ChannelListenOptions extends Omit<ListenOptions, 'onLane'> {
  /** The channel names accepted. */
  channels: readonly string[];
  onChannel: (channel: Channel) => void;
}

/**
 * Accepts connections that complete the handshake (magic, version, capabilities, mutual
 * HMAC of nonces with the shared secret) for one of `channels`; migration lanes are one
 * use, a host's link to the virtual switch another.
 */
export function listenChannels(opts: ChannelListenOptions): Promise<Listener> {
  checkSecret(opts.secret);
  checkCapabilities(opts.capabilities);
  const timeoutMs = opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ highWaterMark: opts.highWaterMark ?? DEFAULT_HIGH_WATER_MARK });

  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {}); // reported through the inbox or the channel's owner
    socket.setNoDelay(true); // the handshake is a few small messages each way
    const remote = addressOf(socket);
    const inbox = new Inbox(socket);
    let stage = 'reading the hello';
    let about = '';
    const unwatch = watch(socket, inbox, timeoutMs, () => stage);
    serverHandshake(inbox, opts, remote, (s, h) => {
      stage = s;
      if (h) about = ` (lane ${h.lane}, migration ${JSON.stringify(h.migrationId)})`;
    }).then(
      (hello) => {
        unwatch();
        opts.onChannel({ socket, hello, leftover: inbox.detach() });
      },
      (e: unknown) => {
        unwatch();
        const err =
          e instanceof TransportError
            ? e
            : new TransportError('protocol', `handshake failed: ${(e as Error)?.message ?? e}`, { cause: e });
        inbox.detach();
        refuse(socket, err);
        opts.log(`refused ${remote}${about}: ${err.message}`);
        opts.onRefused?.(err, remote);
      },
    );
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      server.on('error', (e) => opts.log(`listener on ${opts.host}:${opts.port}: ${e.message}`));
      const { port } = server.address() as net.AddressInfo;
      let closing: Promise<void> | undefined;
      resolve({
        port,
        close() {
          closing ??= new Promise<void>((done) => {
            server.close(() => done());
            for (const s of sockets) s.destroy();
          });
          return closing;
        },
      });
    });
  });
}

// ---------------------------------------------------------------------------------------
// Client

/** Opens one lane to a destination host and completes the handshake. */
export async function connectLane(opts: ConnectOptions): Promise<LaneConnection> {
  if (!isLane(opts.lane)) throw new RangeError(`unknown lane ${JSON.stringify(opts.lane)}`);
  const ch = await dialChannel(opts);
  if (opts.lane === 'bulk') ch.socket.setNoDelay(false);
  return new TcpLane(
    ch.socket,
    opts.lane,
    opts.migrationId,
    ch.hello.capabilities,
    ch.hello.remoteAddress,
    ch.leftover,
    ch.readInto && ch.reader && { readInto: ch.readInto, reader: ch.reader },
  );
}

/**
 * Connects and completes the handshake for channel `opts.lane`; the hello returned carries
 * the server's capabilities.
 */
export async function dialChannel(opts: Omit<ConnectOptions, 'lane'> & { lane: string }): Promise<Channel> {
  checkSecret(opts.secret);
  checkCapabilities(opts.capabilities);
  const id = Buffer.from(opts.migrationId, 'utf8');
  if (id.length === 0 || id.length > MAX_MIGRATION_ID_BYTES) {
    throw new RangeError(
      `migration id must be 1..${MAX_MIGRATION_ID_BYTES} bytes of UTF-8, got ${id.length}`,
    );
  }
  if (opts.lane.length === 0 || opts.lane.length > MAX_LANE_NAME || !/^[a-z]+$/.test(opts.lane))
    throw new RangeError(`unknown lane ${JSON.stringify(opts.lane)}`);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const where = `${opts.host}:${opts.port}`;
  const socketOpts: net.TcpNetConnectOpts & DuplexOptions = {
    host: opts.host,
    port: opts.port,
    noDelay: true,
    writableHighWaterMark: opts.highWaterMark ?? DEFAULT_HIGH_WATER_MARK,
  };
  // the handshake reads copies (the inbox keeps them); the lane then reads in place
  let sink: (chunk: Buffer) => void = (chunk) => {
    socket.emit('data', Buffer.from(chunk));
  };
  let reader: ChunkReader | undefined;
  if (opts.readBuffer !== undefined) {
    if (!Number.isInteger(opts.readBuffer) || opts.readBuffer < 4096)
      throw new RangeError(`readBuffer must be an integer of at least 4096 bytes, got ${opts.readBuffer}`);
    const r = framePool.reader(opts.readBuffer);
    reader = r;
    socketOpts.onread = {
      buffer: () => r.next(),
      callback: (n, buf) => {
        r.landed(n);
        sink(Buffer.from(buf.buffer, buf.byteOffset, n));
        return true;
      },
    };
  }
  const socket = net.connect(socketOpts);
  socket.on('error', () => {}); // reported through the inbox or the channel's owner
  const inbox = new Inbox(socket);
  let stage = 'connecting';
  const unwatch = watch(socket, inbox, timeoutMs, () => stage);
  const prefix = (e: TransportError) =>
    e.fromPeer
      ? e
      : new TransportError(e.code, `${opts.lane} lane to ${where}: ${e.message}`, { cause: e.cause });
  try {
    await Promise.race([new Promise((resolve) => socket.once('connect', resolve)), inbox.failed]);
  } catch (e) {
    unwatch();
    socket.destroy();
    throw prefix(e as TransportError);
  }
  const clientNonce = randomBytes(NONCE_BYTES);
  const lane = Buffer.from(opts.lane, 'ascii');
  const hello = Buffer.alloc(10 + 4 + NONCE_BYTES + 1 + lane.length + 1 + id.length);
  Buffer.from(MAGIC).copy(hello, 0);
  let at = hello.writeUInt16LE(PROTOCOL_VERSION, 6);
  at = hello.writeUInt16LE(hello.length - 10, at);
  at = hello.writeUInt32LE(opts.capabilities, at);
  at += clientNonce.copy(hello, at);
  at = hello.writeUInt8(lane.length, at);
  at += lane.copy(hello, at);
  at = hello.writeUInt8(id.length, at);
  id.copy(hello, at);

  try {
    stage = 'waiting for the server hello';
    socket.write(hello);
    const status = await inbox.u8();
    if (status !== 0) throw await readErrorRecord(inbox, status, `${where} refused the ${opts.lane} lane`);
    const reply = await inbox.read(2 + 4 + NONCE_BYTES);
    const version = reply.readUInt16LE(0);
    if (version !== PROTOCOL_VERSION) {
      throw new TransportError(
        'version',
        `server speaks protocol version ${version}, this host speaks ${PROTOCOL_VERSION}`,
      );
    }
    const serverCaps = reply.readUInt32LE(2);
    const serverNonce = reply.subarray(6, 6 + NONCE_BYTES);
    const t: Transcript = {
      version,
      clientCaps: opts.capabilities,
      serverCaps,
      lane: opts.lane,
      migrationId: opts.migrationId,
    };
    socket.write(
      Buffer.concat([Buffer.of(0), proof(opts.secret, 'ferry-client', serverNonce, clientNonce, t)]),
    );
    stage = 'waiting for the server proof';
    const status2 = await inbox.u8();
    if (status2 !== 0) throw await readErrorRecord(inbox, status2, `${where} refused the ${opts.lane} lane`);
    const got = await inbox.read(MAC_BYTES);
    const want = proof(opts.secret, 'ferry-server', clientNonce, serverNonce, t);
    if (!timingSafeEqual(got, want)) {
      throw new TransportError('auth', 'server authentication failed: the server does not know the secret');
    }
    socket.write(Buffer.of(0));
    unwatch();
    return {
      socket,
      hello: {
        version,
        capabilities: serverCaps,
        migrationId: opts.migrationId,
        lane: opts.lane,
        remoteAddress: addressOf(socket),
      },
      leftover: inbox.detach(),
      readInto:
        opts.readBuffer === undefined
          ? undefined
          : (to) => {
              sink = to;
            },
      reader,
    };
  } catch (e) {
    unwatch();
    inbox.detach();
    const err =
      e instanceof TransportError
        ? e
        : new TransportError('protocol', `handshake failed: ${(e as Error)?.message ?? e}`, { cause: e });
    refuse(socket, err);
    throw prefix(err);
  }
}

// ---------------------------------------------------------------------------------------
// Lanes

/**
 * A message decoded where it landed in a reader's chunk: a batch's pages (even none) and
 * its zero mask stay there, held until given back to the frame pool after their install;
 * a device state is copied (a Buffer's slice would be a view), so that nothing unheld
 * points into the chunk once it is read into again.
 */
function keepInPlace(msg: Message, chunk: ArrayBufferLike, reader: ChunkReader): void {
  if (msg.type === 'pages' && msg.batch.data?.buffer === chunk) reader.hold(msg.batch.data);
  else if (msg.type === 'switchover' && msg.deviceState?.buffer === chunk)
    msg.deviceState = new Uint8Array(msg.deviceState);
}

const describe = (e: CodecError) => `${e.code}: ${e.message}`;

class TcpLane implements LaneConnection {
  readonly #socket: net.Socket;
  readonly #encoder = new Encoder({ checksum: crc32 });
  // frames gathered from several chunks land in pooled buffers, given back once installed;
  // with a reader, a frame stays where it landed, held until given back
  readonly #decoder: Decoder;
  readonly #reader: ChunkReader | undefined;
  #state: 'open' | 'closing' | 'closed' = 'open';
  #error: TransportError | undefined;
  #errorDelivered = false;
  #socketClosed = false;
  #held: { msg: Message; seq: number }[] = [];
  #readPaused = false;
  #corked = false;
  readonly #messageHandlers: ((msg: Message, seq: number) => void)[] = [];
  readonly #errorHandlers: ((e: TransportError) => void)[] = [];
  readonly #closeHandlers: ((error?: TransportError) => void)[] = [];
  readonly #drainHandlers: (() => void)[] = [];

  constructor(
    socket: net.Socket,
    readonly lane: Lane,
    readonly migrationId: string,
    readonly peerCapabilities: number,
    readonly remoteAddress: string,
    leftover: Buffer[],
    reads?: { readInto: NonNullable<Channel['readInto']>; reader: ChunkReader },
  ) {
    this.#socket = socket;
    this.#reader = reads?.reader;
    this.#decoder = new Decoder({
      checksum: frameChecksum, // keeps the pages' checksums for their install
      // a reader's chunk is not reused while a frame is half read in it (see `settled`)
      allocate: (n) => framePool.take(n),
    });
    if (reads) reads.readInto((chunk) => this.#onData(chunk));
    else socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () => this.#onEnd());
    socket.on('error', (err) =>
      this.fail(new TransportError('closed', `${this.#where}: ${err.message}`, { cause: err })),
    );
    socket.on('close', () => this.#onClose());
    socket.on('drain', () => {
      for (const cb of this.#drainHandlers) cb();
    });
    for (const chunk of leftover) this.#onData(chunk);
  }

  get #where() {
    return `${this.lane} lane with ${this.remoteAddress}`;
  }

  get bufferedBytes(): number {
    return this.#socket.writableLength;
  }

  get error(): TransportError | undefined {
    return this.#error;
  }

  send(msg: Message, written?: () => void): boolean {
    if (this.#state !== 'open') {
      throw new TransportError('closed', `${this.#where} is ${this.#state}`, { cause: this.#error });
    }
    // the bulk frames of one event-loop turn leave in one writev (on loopback each write
    // also wakes the reader, and a round of 1 GiB is 16,384 frames); any other message
    // (a switchover, a round's end) leaves at once, with the frames before it
    const pages = this.lane === 'bulk' && msg.type === 'pages';
    if (pages && !this.#corked) {
      this.#corked = true;
      this.#socket.cork();
      process.nextTick(() => this.#uncork());
    }
    const ok = this.#socket.write(this.#encoder.encode(msg), written && (() => written()));
    if (!pages) this.#uncork();
    return ok;
  }

  #uncork() {
    if (!this.#corked) return;
    this.#corked = false;
    this.#socket.uncork();
  }

  onDrain(cb: () => void) {
    this.#drainHandlers.push(cb);
  }

  onMessage(cb: (msg: Message, seq: number) => void) {
    this.#messageHandlers.push(cb);
    if (this.#messageHandlers.length === 1 && this.#held.length > 0) {
      queueMicrotask(() => {
        const held = this.#held;
        this.#held = [];
        for (const { msg, seq } of held) if (!this.#deliver(msg, seq)) return;
        if (this.#state === 'open' && !this.#readPaused) this.#socket.resume();
      });
    }
  }

  pauseReading() {
    this.#readPaused = true;
    this.#socket.pause();
  }

  resumeReading() {
    if (!this.#readPaused) return;
    this.#readPaused = false;
    if (this.#state === 'open' && this.#held.length === 0) this.#socket.resume();
  }

  onError(cb: (e: TransportError) => void) {
    this.#errorHandlers.push(cb);
    const e = this.#error;
    if (e && !this.#errorDelivered) {
      this.#errorDelivered = true;
      queueMicrotask(() => cb(e));
    }
  }

  onClose(cb: (error?: TransportError) => void) {
    this.#closeHandlers.push(cb);
    if (this.#socketClosed) queueMicrotask(() => cb(this.#error));
  }

  close() {
    if (this.#state !== 'open') return;
    this.#state = 'closing';
    this.#socket.end();
    setTimeout(() => this.#socket.destroy(), CLOSE_GRACE_MS).unref();
  }

  destroy() {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#socket.destroy();
  }

  /** Closes the lane because of `e`, reporting it once. */
  fail(e: TransportError) {
    if (this.#state === 'closed' || this.#error) return;
    this.#error = e;
    this.#state = 'closed';
    this.#socket.destroy();
    if (this.#errorHandlers.length > 0) {
      this.#errorDelivered = true;
      for (const cb of this.#errorHandlers) cb(e);
    }
  }

  #onData(chunk: Buffer) {
    if (this.#state !== 'open') return;
    let result: ReturnType<Decoder['push']>;
    try {
      result = this.#decoder.push(chunk);
    } catch (e) {
      return this.fail(
        new TransportError('codec', `${this.#where}: ${(e as Error)?.message ?? e}`, { cause: e }),
      );
    }
    if (this.#reader) {
      // hold what this read completed, then free what no frame needs any more
      for (const f of result.frames) keepInPlace(f.message, chunk.buffer, this.#reader);
      this.#reader.settled(this.#decoder.pendingViews);
    }
    for (const f of result.frames) {
      if (this.#messageHandlers.length === 0 || this.#held.length > 0) {
        this.#held.push({ msg: f.message, seq: f.seq });
        this.#socket.pause();
      } else if (!this.#deliver(f.message, f.seq)) return;
    }
    if (result.error) {
      this.fail(
        new TransportError('codec', `${this.#where}: ${describe(result.error)}`, { cause: result.error }),
      );
    }
  }

  /** Hands one message to the handlers; false when the lane closed meanwhile. */
  #deliver(msg: Message, seq: number): boolean {
    for (const cb of this.#messageHandlers) {
      if (this.#state !== 'open') return false;
      try {
        cb(msg, seq);
      } catch (e) {
        this.fail(
          new TransportError(
            'handler',
            `${this.#where}: message handler threw: ${(e as Error)?.message ?? e}`,
            {
              cause: e,
            },
          ),
        );
        return false;
      }
    }
    return this.#state === 'open';
  }

  #onEnd() {
    if (this.#state !== 'open') return;
    const pending = this.#decoder.pendingBytes;
    if (pending > 0) {
      this.fail(
        new TransportError(
          'closed',
          `${this.#where}: peer closed the connection ${pending} bytes into a frame`,
        ),
      );
    }
  }

  #onClose() {
    this.#socketClosed = true;
    this.#state = 'closed';
    for (const cb of this.#closeHandlers) cb(this.#error);
  }
}
