// Spare vCPU workers: a VM takes them, they come back later, they keep no process alive.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import test from 'node:test';
import { PAGE_SIZE } from '../../src/engine/messages.ts';
import { GuestMachine, type MachineSpec } from '../../src/guest/machine.ts';
import { GuestRam } from '../../src/guest/ram.ts';
import { keepSpareVcpus, spareVcpus } from '../../src/guest/spare-vcpus.ts';

const FIXTURE = new URL('./fixtures/faulty-app.ts', import.meta.url).href;

function spec(vcpus: number): MachineSpec {
  const ramBytes = 1 << 20;
  const base = 16 * PAGE_SIZE;
  return {
    ramBytes,
    vcpus,
    app: { module: FIXTURE, kind: 'answers', base, size: ramBytes - base, options: {} },
    servers: 2,
    job: false,
    faultLimit: 64,
  };
}

const ask = async (m: GuestMachine, ...args: string[]) =>
  new TextDecoder().decode((await m.execute(args.map((a) => new TextEncoder().encode(a)))).reply);

const until = async (ok: () => boolean, ms: number) => {
  for (const end = Date.now() + ms; !ok() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
};

/**
 * Keeps `count` spares (replaced when `busy` says no), boots a VM of `vcpus` on them and
 * runs `body`; stops the VM and the spares after.
 */
async function onSpares(
  count: number,
  vcpus: number,
  body: (m: GuestMachine) => Promise<void>,
  busy = () => false,
) {
  keepSpareVcpus(count, busy);
  try {
    assert.equal(spareVcpus(), count, 'started at once');
    const m = await GuestMachine.boot(spec(vcpus), GuestRam.create(1 << 20, true), { cooperative: true });
    try {
      await body(m);
    } finally {
      await m.stop();
    }
  } finally {
    keepSpareVcpus(0);
  }
  assert.equal(spareVcpus(), 0, 'stopped');
}

test('a VM boots on the spares, serves, and the spares are replaced afterwards', async () => {
  await onSpares(2, 3, async (m) => {
    assert.equal(spareVcpus(), 0, 'both spares taken, the third vCPU started its own');
    assert.equal(await ask(m, 'SET', '5'), '+OK\r\n');
    assert.equal(await ask(m, 'GET'), ':5\r\n');
    await until(() => spareVcpus() === 2, 5000);
    assert.equal(spareVcpus(), 2, 'replaced');
  });
});

test('the number of spares must be a whole number', () => {
  assert.throws(() => keepSpareVcpus(-1), /spare vCPUs must be a whole number ≥ 0, got -1/);
  assert.throws(() => keepSpareVcpus(1.5), RangeError);
});

test('spares keep no process alive', () => {
  const script = `import { keepSpareVcpus, spareVcpus } from ${JSON.stringify(new URL('../../src/guest/spare-vcpus.ts', import.meta.url).href)};
keepSpareVcpus(2); console.log(spareVcpus());`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  assert.equal(r.error, undefined, 'the process exited on its own');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), '2');
});

test('spares taken are not replaced while the host is busy', async () => {
  let busy = true;
  await onSpares(
    1,
    1,
    async () => {
      await new Promise((r) => setTimeout(r, 2500));
      assert.equal(spareVcpus(), 0, 'not while busy');
      busy = false;
      await until(() => spareVcpus() === 1, 5000);
      assert.equal(spareVcpus(), 1, 'once idle');
    },
    () => busy,
  );
});

test('spares are replaced only once the host has been quiet for a second: a migration restarts the wait', async () => {
  const t0 = performance.now();
  // quiet for 0.3 s after the take, migrating from 0.3 to 1.3 s (looks come every 0.1 s), quiet after
  const busy = () => {
    const t = performance.now() - t0;
    return t >= 300 && t < 1300;
  };
  await onSpares(
    1,
    1,
    async () => {
      await new Promise((r) => setTimeout(r, 2000 - (performance.now() - t0)));
      assert.equal(spareVcpus(), 0, 'not 0.7 s after the migration ended');
      await until(() => spareVcpus() === 1, 5000);
      assert.equal(spareVcpus(), 1, 'replaced later');
      assert.ok(performance.now() - t0 >= 2300, 'a second after the migration ended, at the earliest');
    },
    busy,
  );
});
