// Messages exchanged by the source and destination engines. The wire codec turns
// them into frames for the real world; the simulator hands them over as objects.

/** Why a page is being sent; the report counts pages by these kinds (plus `zero`). */
export type PageKind = 'bulk' | 'urgent' | 'prepaged' | 'resent';

/** Connection lanes: demand pages overtake the background push on `urgent`. */
export type Lane = 'control' | 'bulk' | 'urgent';

export const PAGE_SIZE = 4096;

/**
 * A batch of pages as runs of consecutive pfns, `runs = [start0, count0, start1, count1, …]`.
 * The real world attaches contents (`data` holds the non-zero pages back to back in pfn
 * order; `zeroMask` has bit `i & 7` of byte `i >> 3` set when the i-th page of the batch is
 * a zero page); the simulator sends only sizes. The same code paths handle both.
 * On the wire every number is an unsigned 32-bit integer: at most 2^32 pages (16 TiB).
 */
export interface PageBatch {
  kind: PageKind;
  runs: number[];
  pageCount: number;
  zeroCount: number;
  zeroMask?: Uint8Array;
  data?: Uint8Array;
  /**
   * A buffer laid out as this batch's whole frame (see `pagesFrameLayout` in the codec),
   * with `data` already in place: the codec writes the header and checksum around it
   * instead of copying the pages again.
   */
  frame?: Uint8Array;
}

export type SourceMessage =
  | { type: 'pages'; batch: PageBatch }
  /** End of a precopy round: everything dirty at the last sync has been sent. */
  | { type: 'roundEnd'; round: number }
  /**
   * The guest has stopped on the source. `discard` lists pages whose destination copy is
   * stale (dirtied after they were sent): the destination drops them. `deviceState` is
   * the vCPU/device snapshot; `deviceStateBytes` its size (equal to `deviceState.length`
   * when the contents are carried).
   * `postcopy` says whether the guest resumes before all pages have arrived.
   */
  | {
      type: 'switchover';
      postcopy: boolean;
      discard: number[];
      deviceStateBytes: number;
      deviceState?: Uint8Array;
    }
  /** Every page the destination lacks has been sent. */
  | { type: 'complete'; totalPages: number }
  | { type: 'abort'; reason: string };

export type DestinationMessage =
  /** Remote faults: the destination needs these pfns now. */
  | { type: 'demand'; pfns: number[] }
  /** The guest executed its first instruction on the destination. */
  | { type: 'resumed' }
  /** The destination holds every page: the source may release the VM. */
  | { type: 'done' }
  | { type: 'abort'; reason: string };

export type Message = SourceMessage | DestinationMessage;
