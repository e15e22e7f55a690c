// Deterministic pseudo-random page contents (fast-check is slow at generating megabytes).

/** Fills `bytes` (a multiple of 4 bytes long) with an xorshift stream from `seed`. */
export function fillPages(bytes: Uint8Array, seed: number): Uint8Array {
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  let x = seed | 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  return bytes;
}
