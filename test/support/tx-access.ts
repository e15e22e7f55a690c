// A guest access with the MMU's transactional semantics, for app tests: a request's writes
// go to a working copy, applied on commit and dropped when the request is interrupted.

import { ArrayAccess, type GuestAccess, PageNotPresent } from '../../src/guest/access.ts';

/**
 * The caller's transactional semantics: writes of a command go to a working copy, applied
 * on commit and dropped when the command is interrupted. Throws PageNotPresent at access
 * number `faultAt` of the current run.
 */
export class TxAccess implements GuestAccess {
  private work: ArrayAccess;
  accesses = 0;
  private faultAt = -1;
  constructor(readonly committed: Uint8Array) {
    this.work = new ArrayAccess(committed.slice());
  }
  get size(): number {
    return this.committed.length;
  }
  begin(faultAt = -1): void {
    this.work = new ArrayAccess(this.committed.slice());
    this.accesses = 0;
    this.faultAt = faultAt;
  }
  commit(): void {
    this.committed.set(this.work.bytes);
  }
  private touch(addr: number): void {
    if (this.accesses++ === this.faultAt) throw new PageNotPresent(Math.floor(addr / 4096));
  }
  read(addr: number, len: number): Uint8Array {
    this.touch(addr);
    return this.work.read(addr, len);
  }
  write(addr: number, bytes: Uint8Array): void {
    this.touch(addr);
    this.work.write(addr, bytes);
  }
  readU32(addr: number): number {
    this.touch(addr);
    return this.work.readU32(addr);
  }
  writeU32(addr: number, value: number): void {
    this.touch(addr);
    this.work.writeU32(addr, value);
  }
}
