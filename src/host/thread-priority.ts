// The calling thread's scheduling priority (its nice value). Linux keeps a nice value per
// thread, and setpriority(2) given a thread's id sets that thread's alone.

import { readlinkSync } from 'node:fs';
import { constants, setPriority } from 'node:os';

export const NICE_MIN = constants.priority.PRIORITY_HIGHEST;
export const NICE_MAX = constants.priority.PRIORITY_LOW;

/**
 * Gives the calling thread nice value `nice`; what went wrong, if the kernel refused (below
 * 0 needs root or CAP_SYS_NICE) or this is not Linux.
 */
export function setThreadNice(nice: number): string | undefined {
  try {
    // /proc/thread-self is the calling thread's own folder: ".../task/<tid>"
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (!Number.isInteger(tid) || tid <= 0) return 'no thread id in /proc/thread-self';
    setPriority(tid, nice);
    return undefined;
  } catch (e) {
    // os.setPriority throws a system error whose `info` names the errno
    const err = e as Error & { code?: string; info?: { code?: string } };
    const code = err.info?.code ?? err.code;
    return code === 'EACCES' || code === 'EPERM'
      ? `${code}: below 0 needs root or CAP_SYS_NICE`
      : err.message;
  }
}
