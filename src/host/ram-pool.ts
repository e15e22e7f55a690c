// Guest RAM kept for the next VM. On a virtualised host, memory a process has never touched
// costs the kernel ~10 µs a page to map on first write (a 1 GiB incoming VM: ~3 s of system
// time, most of a precopy round here); memory the process already holds costs nothing. So
// the RAM of a VM that left or stopped is zeroed in the background (a new VM's RAM must be
// all zeros) and kept, up to a limit, for the next VM of the same size — as a hypervisor
// keeps preallocated guest memory. An incoming migration writes every page anyway (zero
// pages as zeros): it may take RAM the pool has not zeroed yet, which a host that has just
// sent a VM away and takes one back has (its zeroing waits while the host migrates).

/** Bytes zeroed per event-loop turn: a few tenths of a millisecond of memset. */
const ZERO_CHUNK = 2 * 2 ** 20;
/**
 * While the host is busy migrating, zeroing waits this long between tries: every turn it
 * takes is a turn a switchover's messages wait (zeroing during a postcopy switchover
 * doubled its downtime).
 */
const BUSY_RETRY_MS = 50;

/** A buffer given back and not yet zeroed; `taken` stops its zeroing. */
interface Zeroing {
  data: SharedArrayBuffer;
  taken: boolean;
}

export class RamPool {
  readonly #free = new Map<number, SharedArrayBuffer[]>();
  readonly #zeroing = new Map<number, Zeroing[]>();
  /** Bytes held: free, or being zeroed. */
  #held = 0;
  /** Buffers handed out again (for reports and tests). */
  reused = 0;

  constructor(
    /** Most bytes kept; 0 keeps nothing. */
    readonly maxBytes: number,
    /** True while the host is migrating: zeroing waits. */
    private readonly busy: () => boolean = () => false,
  ) {}

  get heldBytes(): number {
    return this.#held;
  }

  /** A zeroed buffer of exactly `bytes`, if one is kept. */
  take(bytes: number): SharedArrayBuffer | undefined {
    const list = this.#free.get(bytes);
    const sab = list?.pop();
    if (!sab) return undefined;
    this.#held -= bytes;
    this.reused++;
    return sab;
  }

  /**
   * A buffer of exactly `bytes` for a user that writes every byte of it itself: a zeroed
   * one if kept, else one still waiting to be zeroed (`zeroed` false: it holds a former
   * VM's data).
   */
  takeToOverwrite(bytes: number): { data: SharedArrayBuffer; zeroed: boolean } | undefined {
    const data = this.take(bytes);
    if (data) return { data, zeroed: true };
    const z = this.#zeroing.get(bytes)?.pop();
    if (!z) return undefined;
    z.taken = true;
    this.#held -= bytes;
    this.reused++;
    return { data: z.data, zeroed: false };
  }

  /**
   * Keeps `data` for a later VM once it is zeroed. Nothing may use it any more: its vCPUs
   * stopped, its checksum taken. Resolves when it is in the pool (or was not kept).
   */
  give(data: SharedArrayBuffer): Promise<void> {
    const bytes = data.byteLength;
    if (this.#held + bytes > this.maxBytes) return Promise.resolve();
    this.#held += bytes;
    const view = new Uint8Array(data);
    const entry: Zeroing = { data, taken: false };
    const zeroing = this.#zeroing.get(bytes) ?? [];
    zeroing.push(entry);
    this.#zeroing.set(bytes, zeroing);
    return new Promise((resolve) => {
      const zero = (from: number) => {
        if (entry.taken) return resolve();
        if (this.busy()) {
          setTimeout(() => zero(from), BUSY_RETRY_MS);
          return;
        }
        const to = Math.min(bytes, from + ZERO_CHUNK);
        view.fill(0, from, to);
        if (to < bytes) setImmediate(() => zero(to));
        else {
          zeroing.splice(zeroing.indexOf(entry), 1);
          const list = this.#free.get(bytes) ?? [];
          list.push(data);
          this.#free.set(bytes, list);
          resolve();
        }
      };
      zero(0);
    });
  }
}
