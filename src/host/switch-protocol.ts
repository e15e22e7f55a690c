// What a host says to the virtual switch (src/net) and hears from it: frames over one
// authenticated TCP connection per host (the channel named `switch` in the handshake of
// transport.ts), carrying client connections multiplexed by id, and the moves of a VM from
// host to host.
//
//   frame: u32 LE length of what follows | u8 type | u32 LE connection id | payload
//
// switch → host: OPEN (a client connected to a VM; payload: VM name), DATA, CLOSE (the
//   client hung up), ATTACHED (payload: JSON {vm, address} or {vm, error}), HELD (payload:
//   VM name: no more client bytes of this VM will reach this host).
// host → switch: DATA, CLOSE (close the client's connection once its replies are out),
//   ATTACH (payload: JSON {vm, fresh}: the VM runs here now), HOLD (stop delivering this
//   VM's client bytes here; keep them), DETACH (every reply of the VM from this host has
//   been sent: the next host to attach it gets its connections), FORGET (the VM stopped:
//   close its clients).

/** The channel name of a host's link in the authenticated handshake. */
export const SWITCH_CHANNEL = 'switch';

export const FRAME = {
  open: 1,
  data: 2,
  close: 3,
  attach: 4,
  attached: 5,
  hold: 6,
  held: 7,
  detach: 8,
  forget: 9,
} as const;
export type FrameType = (typeof FRAME)[keyof typeof FRAME];
const TYPES = new Set<number>(Object.values(FRAME));

export interface LinkFrame {
  type: FrameType;
  conn: number;
  payload: Uint8Array;
}

/** Client bytes are forwarded in pieces of at most this size. */
export const MAX_DATA = 256 * 1024;
const MAX_FRAME = MAX_DATA + 64 * 1024;
const HEADER = 9;
const EMPTY = new Uint8Array(0);

export function encodeFrame(type: FrameType, conn: number, payload: Uint8Array = EMPTY): Uint8Array {
  const out = new Uint8Array(HEADER + payload.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, 5 + payload.length, true);
  out[4] = type;
  v.setUint32(5, conn >>> 0, true);
  out.set(payload, HEADER);
  return out;
}

const text = new TextEncoder();
const untext = new TextDecoder('utf-8', { ignoreBOM: true }); // a leading U+FEFF is text too

export const encodeText = (type: FrameType, value: string): Uint8Array =>
  encodeFrame(type, 0, text.encode(value));
export const encodeJson = (type: FrameType, value: unknown): Uint8Array =>
  encodeText(type, JSON.stringify(value));
export const frameText = (f: LinkFrame): string => untext.decode(f.payload);

/** Splits a byte stream into frames; a malformed frame is an error, never a throw. */
export class FrameDecoder {
  private buf = new Uint8Array(0);
  private failure: string | undefined;

  push(chunk: Uint8Array): { frames: LinkFrame[]; error?: string } {
    if (this.failure) return { frames: [], error: this.failure };
    const all = this.buf.length === 0 ? chunk : concat(this.buf, chunk);
    const frames: LinkFrame[] = [];
    let at = 0;
    while (all.length - at >= 4) {
      const v = new DataView(all.buffer, all.byteOffset + at);
      const len = v.getUint32(0, true);
      if (len < 5 || len > MAX_FRAME) {
        this.failure = `frame length ${len} is outside 5..${MAX_FRAME}`;
        break;
      }
      if (all.length - at < 4 + len) break;
      const type = all[at + 4];
      if (!TYPES.has(type)) {
        this.failure = `unknown frame type ${type}`;
        break;
      }
      frames.push({
        type: type as FrameType,
        conn: v.getUint32(5, true),
        payload: all.slice(at + HEADER, at + 4 + len),
      });
      at += 4 + len;
    }
    this.buf = this.failure ? new Uint8Array(0) : all.slice(at);
    return this.failure ? { frames, error: this.failure } : { frames };
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
