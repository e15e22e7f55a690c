// How fast these hosts move pages when nothing else runs: a precopy migration of an idle
// VM holding data, there and back, the way back measured (the first runs the hosts'
// migration code cold, slower by a sixth on a small machine). The page rate it reaches
// over the link's line rate is the efficiency a simulated twin of the same hosts gets
// (framing, the lanes' protocol and the hosts' own work per page all in it), measured once
// for a set of runs rather than fitted per run.

import { call, type VmInfo } from '../host/api.ts';
import type { Cluster } from './loopback.ts';
import { migrateAndWait } from './migrate.ts';

export interface MigrationCalibration {
  /** Bytes the migration sent, over its time from the end of set-up to the end (Mbit/s). */
  mbps: number;
  bytes: number;
  setupMs: number;
  totalMs: number;
}

export async function calibrateMigration(
  cluster: Cluster,
  o: { ramMiB: number; vcpus: number; dataMiB: number; maxBandwidthMbps?: number },
): Promise<MigrationCalibration> {
  const [src, dst] = cluster.hosts;
  if (!src || !dst) throw new Error('a calibration needs a cluster of two hosts');
  const api = <T>(url: string, method: string, path: string, body?: unknown) =>
    call<T>(url, cluster.secretHex, method, path, body);
  const name = 'calibration';
  await api<VmInfo>(src.url, 'POST', '/v1/vms', {
    name,
    ramMiB: o.ramMiB,
    vcpus: o.vcpus,
    app: 'memtouch',
    // the data written once, then (almost) left alone
    appOptions: { rateMBps: 0.01, workingSetBytes: o.dataMiB * 2 ** 20, prefill: true },
  });
  try {
    const move = (from: string, to: string) =>
      migrateAndWait(from, cluster.secretHex, {
        vm: name,
        to,
        mode: 'precopy',
        cooperative: true,
        downtimeLimitMs: 300,
        maxBandwidthMbps: o.maxBandwidthMbps,
        prepage: 0,
      });
    await move(src.url, dst.url);
    const r = await move(dst.url, src.url);
    return {
      mbps: (r.bytesSent * 8) / ((r.totalTimeMs - r.setupMs) / 1000) / 1e6,
      bytes: r.bytesSent,
      setupMs: r.setupMs,
      totalMs: r.totalTimeMs,
    };
  } finally {
    for (const h of cluster.hosts) await api(h.url, 'DELETE', `/v1/vms/${name}`).catch(() => undefined);
  }
}
