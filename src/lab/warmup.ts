// A fresh host's first migrations run its migration code cold: in a series of postcopies
// between two new hosts the hosts' CPU per migration fell from 2.0–2.1 s in the first two
// to 1.1–1.3 s from the fifth on (V8 compiling the page paths as they get hot, the kernel
// mapping memory the process never held), and what the guest's clients saw with it. A
// small VM moved there and back, by precopy and by postcopy, takes most of that before a
// migration that is meant to show a warm host.

import { call, type RealMigrationReport, type StartMigration } from '../host/api.ts';
import type { Cluster } from './loopback.ts';
import { migrateAndWait } from './migrate.ts';

const NAME = 'warm-up';

/**
 * Moves a 32 MiB VM from the first host to the second by precopy and back by postcopy,
 * then deletes it; the two migrations' reports.
 */
export async function warmHosts(cluster: Cluster): Promise<RealMigrationReport[]> {
  const [a, b] = cluster.hosts;
  if (!a || !b) throw new Error('warming hosts needs a cluster of two hosts');
  await call(a.url, cluster.secretHex, 'POST', '/v1/vms', {
    name: NAME,
    ramMiB: 32,
    vcpus: 1,
    app: 'memtouch',
    appOptions: { rateMBps: 20, workingSetBytes: 24 * 2 ** 20, prefill: true, pattern: 'random' },
  });
  const move: Omit<StartMigration, 'to' | 'mode' | 'cooperative'> = {
    vm: NAME,
    downtimeLimitMs: 300,
    maxBandwidthMbps: 1000,
    prepage: 7,
  };
  try {
    const there = await migrateAndWait(a.url, cluster.secretHex, {
      ...move,
      to: b.url,
      mode: 'precopy',
      cooperative: true,
    });
    const back = await migrateAndWait(b.url, cluster.secretHex, {
      ...move,
      to: a.url,
      mode: 'postcopy',
      cooperative: true,
    });
    return [there, back];
  } finally {
    for (const h of cluster.hosts)
      await call(h.url, cluster.secretHex, 'DELETE', `/v1/vms/${NAME}`).catch(() => undefined);
  }
}
