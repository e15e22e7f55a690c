// The lab's record, DIR/lab.json: everything the lab made, written as it is made.

import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HostLayout } from './lab-config.ts';
import { LabError, type Tbf } from './netns.ts';

// ---------------------------------------------------------------------------------------
// The record: DIR/lab.json

export interface ProcessRecord {
  name: string;
  role: 'switch' | 'host';
  netns: string | null;
  /** The whole command line it was started with. */
  command: string[];
  pid: number;
  /** Clock ticks after boot (from /proc), to tell it from a later process with the same pid. */
  startTime?: number;
  log: string;
}

export interface QdiscRecord extends Tbf {
  dev: string;
  netns: string | null;
}

export interface LabState {
  version: 1;
  /** `starting` until every process answered. */
  status: 'starting' | 'up';
  dir: string;
  marker: string;
  createdAt: string;
  mbps: number;
  /** Latency the hosts add to their migration lanes, ms (absent: none). */
  latencyMs?: number;
  tbf: Tbf;
  subnet: string;
  secretFile: string;
  switchAddress: string | null;
  /** Made so far, in order. */
  bridge: { name: string; address: string } | null;
  netns: string[];
  veths: { root: string; netns: string; peer: string }[];
  qdiscs: QdiscRecord[];
  hosts: (HostLayout & { log: string })[];
  processes: ProcessRecord[];
  /** Whether bridged frames pass through iptables (null: br_netfilter not loaded). */
  bridgeCallsIptables: boolean | null;
}

export function statePath(dir: string): string {
  return join(dir, 'lab.json');
}

export function readState(dir: string): LabState | undefined {
  const path = statePath(dir);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new LabError(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const s = JSON.parse(text) as LabState;
    if (s.version === 1 && Array.isArray(s.netns) && Array.isArray(s.processes)) return s;
  } catch {}
  throw new LabError(`${path} is not a lab record; remove it if no lab is up`);
}

export function saveState(state: LabState): void {
  const path = statePath(state.dir);
  writeFileSync(`${path}.tmp`, `${JSON.stringify(state, null, 2)}\n`);
  renameSync(`${path}.tmp`, path);
}

/** The secret in DIR/secret: kept if it is there, else 32 random bytes written as hex. */
export function ensureSecret(file: string): string {
  try {
    const text = readFileSync(file, 'utf8').trim();
    if (/^[0-9a-f]{32,}$/i.test(text) && text.length % 2 === 0) return text.toLowerCase();
  } catch {}
  const hex = randomBytes(32).toString('hex');
  writeFileSync(file, `${hex}\n`, { mode: 0o600 });
  return hex;
}
