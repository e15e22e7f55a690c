// How guest code reaches guest RAM. Every access goes through the guest's MMU (present?
// log the write); an app sees only this interface, so its state lives in guest RAM and
// moves with the VM.

/** Thrown by an access to a page that is not here yet, when the guest parks the task. */
export class PageNotPresent extends Error {
  constructor(readonly pfn: number) {
    super(`page ${pfn} not present`);
  }
}

export interface GuestAccess {
  /** Bytes of guest RAM. */
  readonly size: number;
  read(addr: number, len: number): Uint8Array;
  write(addr: number, bytes: Uint8Array): void;
  readU32(addr: number): number;
  writeU32(addr: number, value: number): void;
}

/** A plain access over a byte array (tests, and a guest whose pages are all here). */
export class ArrayAccess implements GuestAccess {
  private readonly view: DataView;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  get size(): number {
    return this.bytes.byteLength;
  }
  read(addr: number, len: number): Uint8Array {
    this.check(addr, len);
    return this.bytes.slice(addr, addr + len);
  }
  write(addr: number, bytes: Uint8Array): void {
    this.check(addr, bytes.length);
    this.bytes.set(bytes, addr);
  }
  readU32(addr: number): number {
    this.check(addr, 4);
    return this.view.getUint32(addr, true);
  }
  writeU32(addr: number, value: number): void {
    this.check(addr, 4);
    this.view.setUint32(addr, value >>> 0, true);
  }
  private check(addr: number, len: number): void {
    if (!(addr >= 0 && len >= 0 && addr + len <= this.bytes.byteLength))
      throw new RangeError(`guest access ${addr}+${len} outside RAM of ${this.bytes.byteLength} bytes`);
  }
}
