// One pass over a page instead of two: a lane's frame checksum (CRC-32 of the frame's body)
// is assembled from the CRC-32s of the body's 4 KiB blocks, counted from its end. A pages
// frame ends with its pages' data, so those blocks are its pages, and their checksums are
// the ones the destination keeps for the integrity check: the install takes them from here
// rather than reading every page again.
//
// Combining: for a reflected CRC-32, crc(A‖B) = crc(A)·x^(8|B|) mod P ⊕ crc(B), a product
// of polynomials over GF(2) modulo the CRC polynomial P, bit 31 standing for x^0.

import { PAGE_SIZE } from '../engine/messages.ts';
import { crc32 } from './crc32.ts';

const POLY = 0xedb88320;

/** a·b mod P, both in the reflected representation. */
function multiplyModP(a: number, b: number): number {
  let product = 0;
  for (let bit = 0x80000000; bit !== 0 && a !== 0; bit >>>= 1) {
    if (a & bit) {
      product ^= b;
      a &= ~bit;
    }
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return product >>> 0;
}

/** x^(8n) mod P: what appending n bytes multiplies a CRC by. */
function shiftOperator(n: number): number {
  let result = 0x80000000; // x^0
  let square = 0x40000000; // x^1, squared at each bit of 8n
  for (let e = 8 * n; e > 0; e = Math.floor(e / 2)) {
    if (e % 2 === 1) result = multiplyModP(square, result);
    square = multiplyModP(square, square);
  }
  return result;
}

const PAGE_SHIFT = shiftOperator(PAGE_SIZE);

// Multiplying by a fixed operator is linear over GF(2): the product of a CRC is the XOR of
// the products of its four bytes, read from four tables (a frame of n pages takes n of
// these; the bit-serial product cost a destination 6% of its time in a bulk round).
const SHIFT_TABLE = new Uint32Array(4 * 256);
for (let k = 0; k < 4; k++)
  for (let b = 0; b < 256; b++) SHIFT_TABLE[k * 256 + b] = multiplyModP(PAGE_SHIFT, (b << (8 * k)) >>> 0);

/** The CRC-32 of A‖B from crc(A) and crc(B), B being one page long. */
export function appendPageCrc(crcA: number, crcB: number): number {
  const t = SHIFT_TABLE;
  return (
    (t[crcA & 0xff] ^
      t[256 + ((crcA >>> 8) & 0xff)] ^
      t[512 + ((crcA >>> 16) & 0xff)] ^
      t[768 + (crcA >>> 24)] ^
      crcB) >>>
    0
  );
}

/**
 * Page checksums of the frame bodies checked in each buffer, by where the body ended (a
 * read chunk holds several frames), until their install takes them.
 */
const checked = new WeakMap<ArrayBufferLike, Map<number, Uint32Array>>();

/**
 * The codec's frame checksum (equal to zlib's CRC-32 of `body`), keeping the checksums of
 * the body's page-sized blocks counted from its end for `pageCrcs`.
 */
export function frameChecksum(body: Uint8Array): number {
  const blocks = Math.floor(body.length / PAGE_SIZE);
  const head = body.length - blocks * PAGE_SIZE;
  let crc = crc32(body.subarray(0, head));
  const end = body.byteOffset + body.length;
  if (blocks === 0) {
    checked.get(body.buffer)?.delete(end);
    return crc;
  }
  const sums = new Uint32Array(blocks);
  for (let k = 0, at = head; k < blocks; k++, at += PAGE_SIZE) {
    sums[k] = crc32(body.subarray(at, at + PAGE_SIZE));
    crc = appendPageCrc(crc, sums[k]);
  }
  const inBuffer = checked.get(body.buffer) ?? new Map<number, Uint32Array>();
  checked.set(body.buffer, inBuffer);
  inBuffer.set(end, sums);
  return crc;
}

/**
 * The CRC-32s of the pages of `data` (whole pages, the tail of a frame body that
 * `frameChecksum` checked), or undefined when none are known. Taken once: a buffer
 * reused holds other frames.
 */
export function pageCrcs(data: Uint8Array): Uint32Array | undefined {
  const inBuffer = checked.get(data.buffer);
  const end = data.byteOffset + data.length;
  const sums = inBuffer?.get(end);
  const pages = data.length / PAGE_SIZE;
  if (!sums || pages > sums.length) return undefined;
  inBuffer?.delete(end);
  return sums.subarray(sums.length - pages);
}
