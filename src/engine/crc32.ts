// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the same checksum as zlib.crc32.
// Pure TypeScript so the engine stays runtime-free; the real driver may inject a native one.

// Slicing-by-8: TABLE[k * 256 + b] is the CRC of byte b followed by k zero bytes, which lets
// the main loop fold eight input bytes per step instead of one.
const TABLE = new Uint32Array(8 * 256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  TABLE[n] = c;
}
for (let n = 0; n < 256; n++) {
  for (let k = 1; k < 8; k++) {
    const prev = TABLE[(k - 1) * 256 + n];
    TABLE[k * 256 + n] = (prev >>> 8) ^ TABLE[prev & 0xff];
  }
}

/**
 * CRC-32 of `bytes[start, end)`. Pass a previous result as `crc` to continue a running
 * checksum over several pieces (like zlib's `crc32(data, value)`).
 */
export function crc32(bytes: Uint8Array, start = 0, end = bytes.length, crc = 0): number {
  const t = TABLE;
  let c = ~crc;
  let i = start;
  for (const stop = end - 7; i < stop; i += 8) {
    const lo = c ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24));
    c =
      t[1792 + (lo & 0xff)] ^
      t[1536 + ((lo >>> 8) & 0xff)] ^
      t[1280 + ((lo >>> 16) & 0xff)] ^
      t[1024 + (lo >>> 24)] ^
      t[768 + bytes[i + 4]] ^
      t[512 + bytes[i + 5]] ^
      t[256 + bytes[i + 6]] ^
      t[bytes[i + 7]];
  }
  for (; i < end; i++) c = t[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}
