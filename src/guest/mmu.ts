// The guest's MMU: every access of guest code goes through it. An access checks that its
// pages are present (a remote fault otherwise, handled by the guest kernel: wait, or park
// the task) and runs inside a transaction: writes go to private copies of their pages and
// reach guest RAM, and the dirty log, only when the handler completes. A handler parked by
// a fault is simply run again later, so guest code needs no way to be suspended midway.

import { PAGE_SIZE } from '../engine/messages.ts';
import { type GuestAccess, PageNotPresent } from './access.ts';
import type { GuestRam } from './ram.ts';

/**
 * What the guest kernel does about a missing page: return once it is present (a blocking
 * fault), or throw PageNotPresent (the task is parked and will run again).
 */
export type FaultHandler = (pfn: number, kernelContext: boolean) => void;

export class Mmu implements GuestAccess {
  /** Pages written by the running handler: private copies until commit. */
  private readonly copies = new Map<number, Uint8Array>();
  private readonly scratch = new DataView(new ArrayBuffer(4));
  /** Accesses are made by the guest kernel itself (they always block). */
  kernelContext = false;

  constructor(
    readonly ram: GuestRam,
    private readonly onFault: FaultHandler,
    /** Guest-physical address of this view's byte 0 (apps get a window of RAM). */
    readonly base = 0,
    readonly size = ram.size - base,
  ) {}

  /** A view of [base, base + size) sharing this MMU's transaction. */
  window(base: number, size: number): GuestAccess {
    const check = (addr: number, len: number) => {
      if (!(addr >= 0 && len >= 0 && addr + len <= size))
        throw new RangeError(`guest access ${addr}+${len} outside a window of ${size} bytes`);
    };
    return {
      size,
      read: (addr, len) => {
        check(addr, len);
        return this.read(base + addr, len);
      },
      write: (addr, bytes) => {
        check(addr, bytes.length);
        this.write(base + addr, bytes);
      },
      readU32: (addr) => {
        check(addr, 4);
        return this.readU32(base + addr);
      },
      writeU32: (addr, v) => {
        check(addr, 4);
        this.writeU32(base + addr, v);
      },
    };
  }

  read(addr: number, len: number): Uint8Array {
    this.check(addr, len);
    const out = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const a = addr + done;
      const pfn = Math.floor(a / PAGE_SIZE);
      const off = a - pfn * PAGE_SIZE;
      const n = Math.min(len - done, PAGE_SIZE - off);
      const copy = this.copies.get(pfn);
      if (copy) out.set(copy.subarray(off, off + n), done);
      else {
        this.ensure(pfn);
        out.set(this.ram.bytes.subarray(a, a + n), done);
      }
      done += n;
    }
    return out;
  }

  write(addr: number, bytes: Uint8Array): void {
    this.check(addr, bytes.length);
    let done = 0;
    while (done < bytes.length) {
      const a = addr + done;
      const pfn = Math.floor(a / PAGE_SIZE);
      const off = a - pfn * PAGE_SIZE;
      const n = Math.min(bytes.length - done, PAGE_SIZE - off);
      this.copyOf(pfn).set(bytes.subarray(done, done + n), off);
      done += n;
    }
  }

  readU32(addr: number): number {
    const b = this.read(addr, 4);
    return (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
  }

  writeU32(addr: number, value: number): void {
    this.scratch.setUint32(0, value >>> 0, true);
    this.write(addr, new Uint8Array(this.scratch.buffer));
  }

  /** Makes the handler's writes real and logs them; returns the pages written. */
  commit(): number {
    const n = this.copies.size;
    for (const [pfn, copy] of this.copies) {
      this.ram.bytes.set(copy, pfn * PAGE_SIZE);
      this.ram.logWrite(pfn);
    }
    this.copies.clear();
    return n;
  }

  /** Drops the handler's writes (it will run again from the start). */
  abort(): void {
    this.copies.clear();
  }

  /** Touches `pfn` in guest-kernel context (a blocking fault if it is missing). */
  touchAsKernel(pfn: number): void {
    const was = this.kernelContext;
    this.kernelContext = true;
    try {
      this.ensure(pfn);
    } finally {
      this.kernelContext = was;
    }
  }

  private copyOf(pfn: number): Uint8Array {
    let copy = this.copies.get(pfn);
    if (!copy) {
      this.ensure(pfn);
      copy = this.ram.bytes.slice(pfn * PAGE_SIZE, (pfn + 1) * PAGE_SIZE);
      this.copies.set(pfn, copy);
    }
    return copy;
  }

  private ensure(pfn: number): void {
    if (!this.ram.isPresent(pfn)) this.onFault(pfn, this.kernelContext);
  }

  private check(addr: number, len: number): void {
    if (!(addr >= this.base && len >= 0 && addr + len <= this.base + this.size))
      throw new RangeError(`guest access ${addr}+${len} outside RAM`);
  }
}

export { PageNotPresent };
