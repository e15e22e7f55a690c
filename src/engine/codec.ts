// Wire codec: turns messages into checksummed frames and back. Runtime-free (no Node).
//
// Frame (little-endian):  u32 bodyLength | body | u32 crc32(body)
// Body:                   u8 version (=1) | u8 type | u16 flags | u32 seq | payload
//
// Payloads (u32 unless noted; `pfns` = u32 count then that many u32):
//   pages       u8 kind | pageCount | zeroCount | runPairs | (start, count) × runPairs
//               [ | zeroMask: ceil(pageCount / 8) bytes | data: (pageCount - zeroCount) × 4096 ]
//               flags bit 0: the bracketed contents are present
//   roundEnd    round
//   switchover  deviceStateBytes | discard pfns [ | deviceState: the rest of the body ]
//               flags bit 0: postcopy; bit 1: deviceState present
//   complete    totalPages
//   abort       reason: UTF-8, the rest of the body
//   demand      pfns
//   resumed, done: empty

import { crc32 } from './crc32.ts';
import { type Message, PAGE_SIZE, type PageBatch, type PageKind } from './messages.ts';

export const WIRE_VERSION = 1;
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024;

/**
 * Frame type codes: source → destination below 0x10, destination → source from 0x10.
 * `abort` has the same shape in both directions, so it shares one code.
 */
export const FrameType = {
  pages: 0x01,
  roundEnd: 0x02,
  switchover: 0x03,
  complete: 0x04,
  demand: 0x10,
  resumed: 0x11,
  done: 0x12,
  abort: 0x20,
} as const satisfies Record<Message['type'], number>;

const KIND_CODE = { bulk: 0, urgent: 1, prepaged: 2, resent: 3 } as const satisfies Record<PageKind, number>;
const KINDS = Object.keys(KIND_CODE) as PageKind[];

const PAGES_HAS_DATA = 1;
const SWITCHOVER_POSTCOPY = 1;
const SWITCHOVER_HAS_DEVICE_STATE = 2;

const HEADER_BYTES = 8; // version, type, flags, seq

/** Computes the checksum of a frame body; `zlib.crc32` from node:zlib fits as is. */
export type Checksum = (body: Uint8Array) => number;

export interface EncodeOptions {
  checksum?: Checksum;
  /** Refuse (throw) to encode a body longer than this; defaults to DEFAULT_MAX_FRAME_BYTES. */
  maxFrameBytes?: number;
}

export interface CodecError {
  code: 'oversized' | 'checksum' | 'version' | 'unknown-type' | 'malformed' | 'sequence';
  message: string;
  /** The sequence number the decoder expected for the failing frame. */
  seq?: number;
}

export interface Frame {
  seq: number;
  message: Message;
}

export interface DecodeResult {
  frames: Frame[];
  error?: CodecError;
}

// ---------------------------------------------------------------------------------------
// Validation shared by both directions: the encoder throws what the decoder would reject.

const isU32 = (n: number) => Number.isInteger(n) && n >= 0 && n <= 0xffffffff;

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >>> 1];

/** Why the batch is inconsistent, or undefined when it is fine. */
function batchProblem(b: PageBatch): string | undefined {
  if (!Object.hasOwn(KIND_CODE, b.kind)) return `unknown page kind ${JSON.stringify(b.kind)}`;
  if (!isU32(b.pageCount) || !isU32(b.zeroCount)) return 'pageCount and zeroCount must be u32';
  if (b.zeroCount > b.pageCount) return `zeroCount ${b.zeroCount} exceeds pageCount ${b.pageCount}`;
  if (b.runs.length % 2 !== 0) return `runs has odd length ${b.runs.length}`;
  let sum = 0;
  for (let i = 0; i < b.runs.length; i += 2) {
    if (!isU32(b.runs[i]) || !isU32(b.runs[i + 1])) return `run ${i / 2} is not a pair of u32`;
    sum += b.runs[i + 1];
  }
  if (sum !== b.pageCount) return `run counts add to ${sum} but pageCount is ${b.pageCount}`;
  if ((b.data === undefined) !== (b.zeroMask === undefined)) return 'data and zeroMask must come together';
  if (b.data === undefined || b.zeroMask === undefined) return undefined;
  const maskBytes = Math.ceil(b.pageCount / 8);
  if (b.zeroMask.length !== maskBytes) {
    return `zeroMask has ${b.zeroMask.length} bytes, ${b.pageCount} pages need ${maskBytes}`;
  }
  // Bits past pageCount must be clear, or popcount could match while the mask is wrong.
  if (b.pageCount % 8 !== 0 && b.zeroMask[maskBytes - 1] >>> (b.pageCount % 8) !== 0) {
    return 'zeroMask has bits set past pageCount';
  }
  let zeros = 0;
  for (const byte of b.zeroMask) zeros += POPCOUNT[byte];
  if (zeros !== b.zeroCount) return `zeroMask marks ${zeros} zero pages but zeroCount is ${b.zeroCount}`;
  const dataBytes = (b.pageCount - b.zeroCount) * PAGE_SIZE;
  if (b.data.length !== dataBytes) {
    return `data has ${b.data.length} bytes, ${b.pageCount - b.zeroCount} non-zero pages need ${dataBytes}`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------
// UTF-8 (TextEncoder/TextDecoder are not part of the ES library the engine compiles with).

function utf8Length(s: string): number {
  let n = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  return n;
}

/** Writes `s` at `at`; lone surrogates become U+FFFD, as with TextEncoder. */
function utf8Write(s: string, out: Uint8Array, at: number): number {
  for (const ch of s) {
    let c = ch.codePointAt(0)!;
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
    if (c < 0x80) out[at++] = c;
    else if (c < 0x800) {
      out[at++] = 0xc0 | (c >> 6);
      out[at++] = 0x80 | (c & 0x3f);
    } else if (c < 0x10000) {
      out[at++] = 0xe0 | (c >> 12);
      out[at++] = 0x80 | ((c >> 6) & 0x3f);
      out[at++] = 0x80 | (c & 0x3f);
    } else {
      out[at++] = 0xf0 | (c >> 18);
      out[at++] = 0x80 | ((c >> 12) & 0x3f);
      out[at++] = 0x80 | ((c >> 6) & 0x3f);
      out[at++] = 0x80 | (c & 0x3f);
    }
  }
  return at;
}

/** Strict decoding: undefined for overlong forms, surrogates, > U+10FFFF or truncation. */
function utf8Read(b: Uint8Array): string | undefined {
  let s = '';
  for (let i = 0; i < b.length; ) {
    const b0 = b[i];
    // Lead bytes 0x80-0xC1 are continuations or overlong 2-byte forms; above 0xF4 is past U+10FFFF.
    const len = b0 < 0x80 ? 1 : b0 < 0xc2 ? 0 : b0 < 0xe0 ? 2 : b0 < 0xf0 ? 3 : b0 < 0xf5 ? 4 : 0;
    if (len === 0 || i + len > b.length) return undefined;
    let c = len === 1 ? b0 : b0 & (0xff >> (len + 1));
    for (let k = 1; k < len; k++) {
      if ((b[i + k] & 0xc0) !== 0x80) return undefined;
      c = (c << 6) | (b[i + k] & 0x3f);
    }
    const min = [0, 0, 0x80, 0x800, 0x10000][len];
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return undefined;
    s += String.fromCodePoint(c);
    i += len;
  }
  return s;
}

// ---------------------------------------------------------------------------------------
// Encoding

class Writer {
  readonly view: DataView;
  constructor(
    readonly buf: Uint8Array,
    public pos = 0,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  u8(v: number) {
    this.view.setUint8(this.pos++, v);
  }
  u16(v: number) {
    this.view.setUint16(this.pos, v, true);
    this.pos += 2;
  }
  u32(v: number) {
    this.view.setUint32(this.pos, v, true);
    this.pos += 4;
  }
  u32s(vs: readonly number[]) {
    for (const v of vs) this.u32(v);
  }
  bytes(b: Uint8Array) {
    // data built in place (see pagesFrameLayout) is already where it belongs
    if (b.buffer !== this.buf.buffer || b.byteOffset !== this.buf.byteOffset + this.pos)
      this.buf.set(b, this.pos);
    this.pos += b.length;
  }
}

interface Plan {
  flags: number;
  size: number;
  write(w: Writer): void;
}

function checkU32s(what: string, vs: readonly number[]) {
  if (!vs.every(isU32)) throw new RangeError(`${what}: every entry must be a u32`);
}

function plan(msg: Message): Plan {
  switch (msg.type) {
    case 'pages': {
      const b = msg.batch;
      const problem = batchProblem(b);
      if (problem) throw new RangeError(`pages: ${problem}`);
      const { zeroMask, data } = b;
      const contents = zeroMask && data ? zeroMask.length + data.length : 0;
      return {
        flags: data ? PAGES_HAS_DATA : 0,
        size: 13 + b.runs.length * 4 + contents,
        write(w) {
          w.u8(KIND_CODE[b.kind]);
          w.u32(b.pageCount);
          w.u32(b.zeroCount);
          w.u32(b.runs.length / 2);
          w.u32s(b.runs);
          if (zeroMask && data) {
            w.bytes(zeroMask);
            w.bytes(data);
          }
        },
      };
    }
    case 'switchover': {
      checkU32s('switchover discard', msg.discard);
      if (!isU32(msg.deviceStateBytes)) throw new RangeError('switchover: deviceStateBytes must be a u32');
      const state = msg.deviceState;
      return {
        flags: (msg.postcopy ? SWITCHOVER_POSTCOPY : 0) | (state ? SWITCHOVER_HAS_DEVICE_STATE : 0),
        size: 8 + msg.discard.length * 4 + (state?.length ?? 0),
        write(w) {
          w.u32(msg.deviceStateBytes);
          w.u32(msg.discard.length);
          w.u32s(msg.discard);
          if (state) w.bytes(state);
        },
      };
    }
    case 'roundEnd':
    case 'complete': {
      const n = msg.type === 'roundEnd' ? msg.round : msg.totalPages;
      if (!isU32(n)) throw new RangeError(`${msg.type}: ${n} is not a u32`);
      return { flags: 0, size: 4, write: (w) => w.u32(n) };
    }
    case 'demand':
      checkU32s('demand pfns', msg.pfns);
      return {
        flags: 0,
        size: 4 + msg.pfns.length * 4,
        write(w) {
          w.u32(msg.pfns.length);
          w.u32s(msg.pfns);
        },
      };
    case 'abort':
      return {
        flags: 0,
        size: utf8Length(msg.reason),
        write(w) {
          w.pos = utf8Write(msg.reason, w.buf, w.pos);
        },
      };
    case 'resumed':
    case 'done':
      return { flags: 0, size: 0, write() {} };
  }
}

/** Encodes one frame. Throws RangeError for a message that cannot be encoded as is. */
export function encodeMessage(msg: Message, seq: number, opts: EncodeOptions = {}): Uint8Array {
  if (!isU32(seq)) throw new RangeError(`seq ${seq} is not a u32`);
  const p = plan(msg);
  const bodyLength = HEADER_BYTES + p.size;
  const max = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (bodyLength > max) throw new RangeError(`${msg.type} frame body of ${bodyLength} bytes exceeds ${max}`);
  const frame = inPlace(msg, 4 + bodyLength + 4) ?? new Uint8Array(4 + bodyLength + 4);
  const w = new Writer(frame);
  w.u32(bodyLength);
  w.u8(WIRE_VERSION);
  w.u8(FrameType[msg.type]);
  w.u16(p.flags);
  w.u32(seq);
  p.write(w);
  w.u32((opts.checksum ?? crc32)(frame.subarray(4, 4 + bodyLength)) >>> 0);
  return frame;
}

/** Where a pages frame's data goes, for a driver that builds the frame around its pages. */
export function pagesFrameLayout(runPairs: number, pageCount: number, dataBytes: number) {
  const prefix = 4 + HEADER_BYTES + 13 + runPairs * 8 + Math.ceil(pageCount / 8);
  return { dataOffset: prefix, frameBytes: prefix + dataBytes + 4 };
}

/** The batch's own frame buffer, when its data already sits where the frame needs it. */
function inPlace(msg: Message, frameBytes: number): Uint8Array | undefined {
  if (msg.type !== 'pages') return undefined;
  const { frame, data, zeroMask } = msg.batch;
  if (!frame || !data || !zeroMask || frame.length !== frameBytes) return undefined;
  const { dataOffset } = pagesFrameLayout(msg.batch.runs.length / 2, msg.batch.pageCount, data.length);
  return data.buffer === frame.buffer && data.byteOffset === frame.byteOffset + dataOffset
    ? frame
    : undefined;
}

export interface EncoderOptions extends EncodeOptions {
  /** Sequence number of the first frame (default 0); must match the peer decoder's. */
  firstSeq?: number;
}

/** Encodes one stream: every frame gets the next sequence number (wrapping at 2^32). */
export class Encoder {
  #seq: number;
  readonly #opts: EncodeOptions;
  constructor(opts: EncoderOptions = {}) {
    this.#seq = opts.firstSeq ?? 0;
    this.#opts = opts;
  }
  get nextSeq(): number {
    return this.#seq;
  }
  encode(msg: Message): Uint8Array {
    const frame = encodeMessage(msg, this.#seq, this.#opts);
    this.#seq = (this.#seq + 1) >>> 0; // only after success: a refused message uses no number
    return frame;
  }
}

// ---------------------------------------------------------------------------------------
// Decoding

/** Internal: raised while parsing one frame, turned into a CodecError by the decoder. */
class Fault extends Error {
  constructor(
    readonly code: CodecError['code'],
    message: string,
  ) {
    super(message);
  }
}

class Reader {
  readonly view: DataView;
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    pos: number,
    readonly what: string,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.pos = pos;
  }
  get remaining(): number {
    return this.buf.length - this.pos;
  }
  need(n: number, field: string) {
    if (n > this.remaining) {
      throw new Fault('malformed', `${this.what}: ${field} needs ${n} bytes, ${this.remaining} left`);
    }
  }
  u8(field: string): number {
    this.need(1, field);
    return this.buf[this.pos++];
  }
  u32(field: string): number {
    this.need(4, field);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  /** `count` u32s; the length is checked before anything is allocated. */
  u32s(count: number, field: string): number[] {
    this.need(count * 4, field);
    const out = new Array<number>(count);
    for (let i = 0; i < count; i++) out[i] = this.view.getUint32(this.pos + i * 4, true);
    this.pos += count * 4;
    return out;
  }
  bytes(n: number, field: string): Uint8Array {
    this.need(n, field);
    const start = this.pos;
    this.pos += n;
    return this.buf.subarray(start, this.pos);
  }
  rest(): Uint8Array {
    return this.bytes(this.remaining, 'rest');
  }
}

const TYPE_NAMES = new Map<number, Message['type']>(
  Object.entries(FrameType).map(([name, code]) => [code, name as Message['type']]),
);
const KNOWN_FLAGS: Partial<Record<Message['type'], number>> = {
  pages: PAGES_HAS_DATA,
  switchover: SWITCHOVER_POSTCOPY | SWITCHOVER_HAS_DEVICE_STATE,
};

function decodePayload(type: Message['type'], flags: number, r: Reader): Message {
  const unknown = flags & ~(KNOWN_FLAGS[type] ?? 0);
  if (unknown) throw new Fault('malformed', `${r.what}: unknown flag bits 0x${unknown.toString(16)}`);
  switch (type) {
    case 'pages': {
      const kind = KINDS[r.u8('kind')];
      if (kind === undefined) {
        throw new Fault('malformed', `${r.what}: unknown page kind ${r.buf[r.pos - 1]}`);
      }
      const pageCount = r.u32('pageCount');
      const zeroCount = r.u32('zeroCount');
      const pairs = r.u32('run count');
      const batch: PageBatch = { kind, runs: r.u32s(pairs * 2, `${pairs} runs`), pageCount, zeroCount };
      if (flags & PAGES_HAS_DATA) {
        batch.zeroMask = r.bytes(Math.ceil(pageCount / 8), 'zeroMask');
        batch.data = r.rest(); // its exact length is checked with the rest of the batch
      }
      const problem = batchProblem(batch);
      if (problem) throw new Fault('malformed', `${r.what}: ${problem}`);
      return { type, batch };
    }
    case 'switchover': {
      const deviceStateBytes = r.u32('deviceStateBytes');
      const discard = r.u32s(r.u32('discard count'), 'discard pfns');
      const msg: Extract<Message, { type: 'switchover' }> = {
        type,
        postcopy: (flags & SWITCHOVER_POSTCOPY) !== 0,
        discard,
        deviceStateBytes,
      };
      if (flags & SWITCHOVER_HAS_DEVICE_STATE) msg.deviceState = r.rest();
      return msg;
    }
    case 'roundEnd':
      return { type, round: r.u32('round') };
    case 'complete':
      return { type, totalPages: r.u32('totalPages') };
    case 'demand':
      return { type, pfns: r.u32s(r.u32('pfn count'), 'pfns') };
    case 'abort': {
      const reason = utf8Read(r.rest());
      if (reason === undefined) throw new Fault('malformed', `${r.what}: reason is not valid UTF-8`);
      return { type, reason };
    }
    case 'resumed':
    case 'done':
      return { type };
  }
}

export interface DecoderOptions {
  /** Largest acceptable declared body length; default DEFAULT_MAX_FRAME_BYTES. */
  maxFrameBytes?: number;
  checksum?: Checksum;
  /** Sequence number expected on the first frame (default 0). */
  firstSeq?: number;
  /**
   * Where a frame that spans chunks is gathered (default: a new Uint8Array). A frame inside
   * one chunk, or across chunks that lie back to back in one buffer (a reader filling a
   * buffer read after read), is decoded in place; either way its messages' byte fields are
   * views of it.
   */
  allocate?: (bytes: number) => Uint8Array;
}

const hex = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

/**
 * Streaming decoder for one direction of one connection. Feed it chunks as they arrive;
 * it returns every frame completed so far. The first bad frame poisons it for good.
 *
 * Zero-copy: byte fields of decoded messages (`data`, `zeroMask`, `deviceState`) may be
 * views into pushed chunks, and a partial frame keeps views of its chunks until it is
 * complete. Do not modify a chunk after pushing it.
 */
export class Decoder {
  readonly #max: number;
  readonly #checksum: Checksum;
  readonly #allocate: (bytes: number) => Uint8Array;
  #seq: number;
  #error: CodecError | undefined;
  // Partial length prefix.
  readonly #prefix = new Uint8Array(4);
  #prefixHave = 0;
  // Partial rest of a frame (body + crc), once its length is known: views of the chunks.
  #parts: Uint8Array[] = [];
  #have = 0;
  #need = 0;

  constructor(opts: DecoderOptions = {}) {
    this.#max = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.#checksum = opts.checksum ?? crc32;
    this.#allocate = opts.allocate ?? ((n) => new Uint8Array(n));
    this.#seq = opts.firstSeq ?? 0;
  }

  /** Bytes of an incomplete frame held back; nonzero at end of stream means truncation. */
  get pendingBytes(): number {
    return this.#need ? 4 + this.#have : this.#prefixHave;
  }

  /** What a half-read frame keeps of the chunks pushed (views). */
  get pendingViews(): readonly Uint8Array[] {
    return this.#parts;
  }

  /** The error that poisoned the decoder, if any. */
  get error(): CodecError | undefined {
    return this.#error;
  }

  push(chunk: Uint8Array): DecodeResult {
    const frames: Frame[] = [];
    let i = 0;
    while (i < chunk.length && !this.#error) {
      if (this.#need === 0) {
        // Fast path: a whole frame inside this chunk is decoded in place.
        if (this.#prefixHave === 0 && chunk.length - i >= 4) {
          const len = readU32(chunk, i);
          if (!this.#acceptLength(len)) break;
          if (chunk.length - i >= 4 + len + 4) {
            const bytes = chunk.subarray(i + 4, i + 4 + len + 4);
            this.#frame(bytes, frames);
            i += 4 + len + 4;
            continue;
          }
          this.#need = len + 4;
          i += 4;
        } else {
          while (this.#prefixHave < 4 && i < chunk.length) this.#prefix[this.#prefixHave++] = chunk[i++];
          if (this.#prefixHave < 4) break;
          const len = readU32(this.#prefix, 0);
          this.#prefixHave = 0;
          if (!this.#acceptLength(len)) break;
          this.#need = len + 4;
        }
        // Length known, frame incomplete: fall through to collect it. Counted as pending.
        this.#have = 0;
      }
      const take = Math.min(this.#need - this.#have, chunk.length - i);
      // (nothing yet when the chunk ended right after the length: then the next chunk may
      // hold the whole rest, decoded in place)
      if (take > 0) this.#parts.push(chunk.subarray(i, i + take));
      this.#have += take;
      i += take;
      if (this.#have < this.#need) break;
      const rest = concat(this.#parts, this.#need, this.#allocate);
      this.#parts = [];
      this.#have = this.#need = 0;
      this.#frame(rest, frames);
    }
    return this.#error ? { frames, error: this.#error } : { frames };
  }

  /**
   * Call at end of stream: reports a truncated final frame as 'malformed' (and poisons the
   * decoder); returns the poisoning error if there was one, otherwise undefined.
   */
  finish(): CodecError | undefined {
    const pending = this.pendingBytes;
    if (!this.#error && pending > 0) {
      const of = this.#need ? `a ${this.#need + 4}-byte frame` : 'a length prefix';
      this.#fail('malformed', `stream ended ${pending} bytes into ${of}`);
    }
    return this.#error;
  }

  #fail(code: CodecError['code'], message: string) {
    this.#error = { code, message: `frame ${this.#seq}: ${message}`, seq: this.#seq };
    this.#parts = []; // release buffered chunks
  }

  #acceptLength(len: number): boolean {
    if (len > this.#max) this.#fail('oversized', `declared body length ${len} exceeds limit ${this.#max}`);
    else if (len < HEADER_BYTES) {
      this.#fail('malformed', `declared body length ${len} is shorter than the ${HEADER_BYTES}-byte header`);
    }
    return !this.#error;
  }

  /** Decodes `body | crc` and appends it to `frames`, or poisons the decoder. */
  #frame(bytes: Uint8Array, frames: Frame[]) {
    const body = bytes.subarray(0, bytes.length - 4);
    const got = readU32(bytes, body.length);
    const want = this.#checksum(body) >>> 0;
    if (got !== want) {
      return this.#fail('checksum', `checksum mismatch (got ${hex(got)}, expected ${hex(want)})`);
    }
    if (body[0] !== WIRE_VERSION) {
      return this.#fail('version', `wire version ${body[0]}, this side speaks ${WIRE_VERSION}`);
    }
    const seq = readU32(body, 4);
    if (seq !== this.#seq) return this.#fail('sequence', `sequence number ${seq}, expected ${this.#seq}`);
    const type = TYPE_NAMES.get(body[1]);
    if (type === undefined) return this.#fail('unknown-type', `unknown frame type 0x${body[1].toString(16)}`);
    const r = new Reader(body, HEADER_BYTES, `${type} frame`);
    try {
      const message = decodePayload(type, body[2] | (body[3] << 8), r);
      if (r.remaining > 0) throw new Fault('malformed', `${r.what}: ${r.remaining} trailing bytes`);
      frames.push({ seq, message });
      this.#seq = (seq + 1) >>> 0;
    } catch (e) {
      if (!(e instanceof Fault)) throw e;
      this.#fail(e.code, e.message);
    }
  }
}

function readU32(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
}

/** The parts as one: a view when they lie back to back in one buffer, else a copy. */
function concat(parts: Uint8Array[], total: number, allocate: (n: number) => Uint8Array): Uint8Array {
  if (parts.length === 1) return parts[0];
  let adjacent = true;
  for (let k = 1; k < parts.length && adjacent; k++) {
    const before = parts[k - 1];
    adjacent = parts[k].buffer === before.buffer && parts[k].byteOffset === before.byteOffset + before.length;
  }
  if (adjacent) return new Uint8Array(parts[0].buffer, parts[0].byteOffset, total);
  const out = allocate(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
