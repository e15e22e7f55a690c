// The vCPU thread's script bundled with the apps: VMs run on it as on the TypeScript entry,
// and a module it does not carry still loads.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import test from 'node:test';
import { fileURLToPath } from 'node:url';
import { APP_MODULE, formatApp } from '../../src/apps/index.ts';
import { PAGE_SIZE } from '../../src/engine/messages.ts';
import { ArrayAccess } from '../../src/guest/access.ts';
import { GuestMachine, type MachineSpec } from '../../src/guest/machine.ts';
import { GuestRam } from '../../src/guest/ram.ts';
import { keepSpareVcpus, useVcpuScript } from '../../src/guest/spare-vcpus.ts';
import { bundleVcpuScript } from '../../src/host/vcpu-bundle.ts';

const FIXTURE = new URL('../guest/fixtures/faulty-app.ts', import.meta.url).href;
const text = (s: string) => new TextEncoder().encode(s);
const TYPESCRIPT_ENTRY = new URL('../../src/guest/vcpu-worker.mjs', import.meta.url);

async function boot(module: string, kind: string): Promise<GuestMachine> {
  const ramBytes = 4 << 20;
  const base = 16 * PAGE_SIZE;
  const ram = GuestRam.create(ramBytes, true);
  const spec: MachineSpec = {
    ramBytes,
    vcpus: 2,
    app: { module, kind, base, size: ramBytes - base, options: {} },
    servers: 2,
    job: false,
    faultLimit: 64,
  };
  if (module === APP_MODULE) formatApp(kind, {}, new ArrayAccess(ram.bytes.subarray(base, ramBytes)));
  return GuestMachine.boot(spec, ram, { cooperative: true });
}

const asker =
  (m: GuestMachine) =>
  async (...args: string[]) =>
    new TextDecoder().decode((await m.execute(args.map(text))).reply);

test('the bundle is one script named by its contents, made again the same', () => {
  const errors: string[] = [];
  const a = bundleVcpuScript([APP_MODULE], (e) => errors.push(e));
  const b = bundleVcpuScript([APP_MODULE], (e) => errors.push(e));
  assert.deepEqual(errors, []);
  assert.ok(a && b);
  assert.equal(a.href, b.href);
  assert.ok(existsSync(fileURLToPath(a)));
  assert.match(a.pathname, /vcpu-worker-[0-9a-f]{16}\.mjs$/);
  const bundle = readFileSync(new URL(a.href.replace(/\.mjs$/, '.bundle.mjs')), 'utf8');
  assert.doesNotMatch(bundle, /from ["'][^"']*\.ts["']/, 'no TypeScript left to load');
  assert.match(bundle, /sourceMappingURL=data:/, 'a guest error names the TypeScript lines');
});

test('VMs run on the bundled script: a bundled app, and one it does not carry', async () => {
  const script = bundleVcpuScript([APP_MODULE]);
  assert.ok(script);
  keepSpareVcpus(0);
  useVcpuScript(script);
  try {
    // the kv app, carried by the bundle
    const kv = await boot(APP_MODULE, 'kv');
    try {
      const ask = asker(kv);
      assert.equal(await ask('SET', 'k', 'v1'), '+OK\r\n');
      assert.equal(await ask('GET', 'k'), '$2\r\nv1\r\n');
      assert.equal(await ask('INCR', 'n'), ':1\r\n');
      // the thread rehearsed on scratch RAM first: none of it shows
      assert.equal(await ask('DBSIZE'), ':2\r\n');
      assert.equal((await kv.collectStats()).ops, 4, "only the VM's own requests are counted");
    } finally {
      await kv.stop();
    }
    // a test app the bundle does not carry: loaded through tsx on first need
    const m = await boot(FIXTURE, 'answers');
    try {
      const ask = asker(m);
      assert.equal(await ask('SET', '41'), '+OK\r\n');
      assert.equal(await ask('INCR'), ':1\r\n');
      assert.equal(await ask('GET'), ':41\r\n');
      assert.equal(await ask('BOOM', '1'), '-ERR boom\r\n');
    } finally {
      await m.stop();
    }
  } finally {
    useVcpuScript(TYPESCRIPT_ENTRY);
  }
});
