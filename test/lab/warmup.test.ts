// Warming two new hosts: a small VM there by precopy and back by postcopy, intact both ways,
// and gone afterwards.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { call, type VmInfo } from '../../src/host/api.ts';
import { type Cluster, startLoopback } from '../../src/lab/loopback.ts';
import { warmHosts } from '../../src/lab/warmup.ts';

let cluster: Cluster;
before(async () => {
  cluster = await startLoopback();
});
after(async () => {
  await cluster?.down();
});

test('warming the hosts moves a VM there and back, intact, and leaves no VM behind', async () => {
  const [there, back] = await warmHosts(cluster);
  assert.equal(there.mode, 'precopy');
  assert.equal(back.mode, 'postcopy');
  for (const r of [there, back]) {
    assert.equal(r.outcome, 'completed', r.reason);
    assert.deepEqual(r.integrity, { checked: true, ok: true });
  }
  assert.deepEqual(
    [there.source, back.source],
    cluster.hosts.map((h) => h.name),
    'there and back',
  );
  for (const h of cluster.hosts) {
    const vms = await call<VmInfo[]>(h.url, cluster.secretHex, 'GET', '/v1/vms');
    assert.deepEqual(
      vms.map((v) => v.name),
      [],
      `VMs left on ${h.name}`,
    );
  }
});

test('warming needs two hosts', async () => {
  await assert.rejects(warmHosts({ ...cluster, hosts: cluster.hosts.slice(0, 1) }), /a cluster of two hosts/);
});
