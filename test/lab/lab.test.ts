// `ferry lab`: network namespaces on a bridge, veths shaped by tbf, a host answering in each
// namespace; a TCP transfer between two namespaces runs at the configured rate; `down`
// leaves nothing behind; a second `up` and a start that fails midway are handled. The lab
// here uses its own subnet, bridge and host names, so a lab a user has up is never touched.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, type TestContext, test } from 'node:test';
import { call } from '../../src/host/api.ts';
import { measureGoodput } from '../../src/lab/goodput.ts';
import { isRoot, type LabState, pidAlive, withLab } from '../../src/lab/lab.ts';
import { labConfig, labProcesses } from '../../src/lab/lab-config.ts';
import { linkExists, listNetns, tbfOf } from '../../src/lab/netns.ts';
import { QueueProbe } from '../../src/lab/queue-probe.ts';
import { ferry, repoRoot } from '../support/ferry-cli.ts';

const ROOT = isRoot();
const SKIP_ROOT =
  'needs root: ferry lab makes network namespaces, a bridge and tc qdiscs (run the tests as root)';

const TMP = mkdtempSync(join(tmpdir(), 'ferry-lab-'));
const SUBNET = '10.78.0';
const BRIDGE = 'ferrytst0';
const HOSTS = ['ta', 'tb'];
const NAMES = ['--subnet', SUBNET, '--bridge', BRIDGE, '--hosts', HOSTS.join(',')];
const DIR = join(TMP, 'lab');
const SWITCH_DIR = join(TMP, 'lab-switch');
const CODE_DIR = join(TMP, 'lab-code');

after(() => {
  if (ROOT) for (const dir of [DIR, SWITCH_DIR, CODE_DIR]) ferry('lab', 'down', '--dir', dir, ...NAMES);
  rmSync(TMP, { recursive: true, force: true });
});

function ok(r: { status: number | null; stdout: string; stderr: string }, what: string): void {
  assert.equal(r.status, 0, `${what} exited with ${r.status}: ${r.stderr}${r.stdout}`);
}

/** Processes still running with a secret file of the lab in `dir` on their command line. */
function processesOf(dir: string): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .map(Number)
    .filter((pid) => {
      try {
        return pidAlive(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`${dir}/secret`);
      } catch {
        return false;
      }
    });
}

async function assertNothingLeft(dir: string): Promise<void> {
  const netns = await listNetns();
  for (const h of HOSTS) {
    assert.ok(!netns.includes(`ferry-${h}`), `netns ferry-${h} is left`);
    assert.ok(!(await linkExists(`fv-${h}`)), `veth fv-${h} is left`);
  }
  assert.ok(!(await linkExists(BRIDGE)), `bridge ${BRIDGE} is left`);
  assert.deepEqual(processesOf(dir), [], 'processes of the lab still run');
}

function skipUnlessRoot(t: TestContext): boolean {
  if (ROOT) return false;
  t.skip(SKIP_ROOT);
  return true;
}

describe('ferry lab', () => {
  let state: LabState | undefined;
  const lab = () => {
    assert.ok(state, 'the lab did not come up');
    return state;
  };

  test('up makes a namespace per host on a shaped bridge, and each host answers its API', async (t) => {
    if (skipUnlessRoot(t)) return;
    const r = ferry('lab', 'up', '--no-switch', '--mbps', '100', '--dir', DIR, '--json', ...NAMES);
    ok(r, 'lab up');
    state = JSON.parse(r.stdout) as LabState;
    assert.equal(state.status, 'up');
    assert.deepEqual(
      state.hosts.map((h) => [h.name, h.netns, h.url]),
      [
        ['ta', 'ferry-ta', `http://${SUBNET}.1:7001`],
        ['tb', 'ferry-tb', `http://${SUBNET}.2:7001`],
      ],
    );
    assert.equal(state.switchAddress, null);
    assert.equal(state.processes.length, 2);
    const netns = await listNetns();
    assert.ok(netns.includes('ferry-ta') && netns.includes('ferry-tb'), `namespaces: ${netns.join(' ')}`);
    assert.ok(await linkExists(BRIDGE));
    // both ends of each veth shaped at 100 Mbit/s = 12.5 MB/s, bucket 50,000 B
    for (const h of state.hosts)
      for (const q of [await tbfOf(h.veth), await tbfOf('eth0', h.netns)])
        assert.deepEqual(q, { rateBytes: 12_500_000, burstBytes: 50_000 });
    const secret = readFileSync(state.secretFile, 'utf8').trim();
    assert.match(secret, /^[0-9a-f]{64}$/);
    for (const h of state.hosts) assert.deepEqual(await call(h.url, secret, 'GET', '/v1/vms'), []);
  });

  test('a TCP transfer from ferry-ta to ferry-tb runs at the link rate (100 Mbit/s)', async (t) => {
    if (skipUnlessRoot(t)) return;
    const [a, b] = lab().hosts;
    // what stays queued on the way: in ta's uplink (the first shaped hop) and tb's downlink
    const uplink = new QueueProbe({ dev: 'eth0', netns: a.netns });
    const downlink = new QueueProbe({ dev: b.veth, netns: null });
    const m = await measureGoodput(a, b, 8 << 20, 9100);
    await Promise.all([uplink.stop(), downlink.stop()]);
    t.diagnostic(`8 MiB from ferry-ta to ferry-tb at ${m.mbps.toFixed(1)} Mbit/s (link 100 Mbit/s)`);
    assert.ok(m.mbps <= 110, `${m.mbps.toFixed(1)} Mbit/s is above the 100 Mbit/s link`);
    assert.ok(m.mbps >= 50, `${m.mbps.toFixed(1)} Mbit/s is far below the 100 Mbit/s link`);
    // the flow fills the sender's tbf queue (5 ms of traffic, a 4 ms bucket): echoes wait
    t.diagnostic(`echoes behind it waited ${(m.queueUs / 1000).toFixed(2)} ms more`);
    assert.ok(m.queueUs > 200 && m.queueUs < 20_000, `${m.queueUs} µs queued`);
    // the flow's queue stands in the sender's uplink; the downlink behind it passes what comes
    const mean = (p: QueueProbe) => p.meanBacklog(0, Number.POSITIVE_INFINITY) ?? -1;
    assert.equal(uplink.error ?? downlink.error, undefined);
    t.diagnostic(
      `queued: ${mean(uplink).toFixed(0)} B in ta's uplink, ${mean(downlink).toFixed(0)} B in tb's downlink`,
    );
    assert.ok(mean(uplink) > 5000, `${mean(uplink)} B in the uplink`);
    assert.ok(mean(downlink) < mean(uplink) / 4, `${mean(downlink)} B in the downlink`);
  });

  test('up refuses while the lab is up, and leaves it running', async (t) => {
    if (skipUnlessRoot(t)) return;
    const s = lab();
    const r = ferry('lab', 'up', '--no-switch', '--dir', DIR, ...NAMES);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^ferry: a lab is already up in .*: run `ferry lab down --dir .*` first\n$/);
    for (const p of s.processes) assert.ok(pidAlive(p.pid), `${p.name} was stopped`);
    assert.ok((await listNetns()).includes('ferry-ta'));
  });

  test('status shows the namespaces, the shaping and the hosts answering', (t) => {
    if (skipUnlessRoot(t)) return;
    lab();
    const r = ferry('lab', 'status', '--dir', DIR, ...NAMES);
    ok(r, 'lab status');
    assert.match(r.stdout, /up, 100 Mbit\/s$/m, 'no latency added, none shown');
    assert.match(r.stdout, /^ta\s+ferry-ta\s+fv-ta\s+100\s+100\s+\d+\s+http:\/\/10\.78\.0\.1:7001\s+yes$/m);
    assert.match(r.stdout, /^tb\s+ferry-tb\s+fv-tb\s+100\s+100\s+\d+\s+http:\/\/10\.78\.0\.2:7001\s+yes$/m);
  });

  test('down stops the hosts and removes the namespaces, veths and bridge; twice is harmless', async (t) => {
    if (skipUnlessRoot(t)) return;
    const s = lab();
    const r = ferry('lab', 'down', '--dir', DIR, ...NAMES);
    ok(r, 'lab down');
    assert.match(r.stdout, /stopped host ta/);
    assert.match(r.stdout, /deleted bridge ferrytst0/);
    for (const p of s.processes) assert.ok(!pidAlive(p.pid), `${p.name} (pid ${p.pid}) still runs`);
    await assertNothingLeft(DIR);
    assert.ok(!readdirSync(DIR).includes('lab.json'));
    const again = ferry('lab', 'down', '--dir', DIR, ...NAMES);
    ok(again, 'a second lab down');
    assert.match(again.stdout, /nothing to take down/);
  });

  test('a start that fails midway removes what it made and points at the log', async (t) => {
    if (skipUnlessRoot(t)) return;
    // no host answers within 0.2 s: the topology and the processes exist by then
    const r = ferry('lab', 'up', '--no-switch', '--timeout', '0.2', '--dir', DIR, ...NAMES);
    assert.equal(r.status, 2, r.stderr);
    assert.match(
      r.stderr,
      /^ferry: host t[ab] did not answer GET http:\/\/10\.78\.0\.\d:7001\/v1\/vms within 0\.2 s/,
    );
    assert.match(r.stderr, new RegExp(`see ${DIR}/t[ab]\\.log`));
    assert.match(r.stderr, /removed again\)\n$/);
    await assertNothingLeft(DIR);
  });

  test('a lab from code: withLab brings it up and takes it down', async (t) => {
    if (skipUnlessRoot(t)) return;
    await withLab(
      { hosts: HOSTS, subnet: SUBNET, bridge: BRIDGE, dir: CODE_DIR, mbps: 50, switch: false },
      async (l) => {
        assert.deepEqual(
          l.hosts.map((h) => h.ip),
          [`${SUBNET}.1`, `${SUBNET}.2`],
        );
        for (const h of l.hosts) assert.deepEqual(await call(h.url, l.secretHex, 'GET', '/v1/vms'), []);
        assert.equal((await tbfOf('fv-tb'))?.rateBytes, 6_250_000);
      },
    );
    await assertNothingLeft(CODE_DIR);
  });

  test('with the virtual switch: hosts link to a switch on the bridge', async (t) => {
    if (skipUnlessRoot(t)) return;
    const r = ferry('lab', 'up', '--mbps', '100', '--latency', '2', '--dir', SWITCH_DIR, '--json', ...NAMES);
    ok(r, 'lab up with the switch');
    const s = JSON.parse(r.stdout) as LabState;
    try {
      assert.equal(s.switchAddress, `${SUBNET}.254:7100`);
      assert.equal(s.latencyMs, 2);
      const p = s.processes.find((x) => x.role === 'switch');
      assert.ok(p && pidAlive(p.pid), 'no switch process');
      for (const h of s.processes.filter((x) => x.role === 'host')) {
        assert.ok(h.command.join(' ').includes(`--switch ${SUBNET}.254:7100`), h.command.join(' '));
        assert.ok(h.command.join(' ').includes('--lane-latency 2'), h.command.join(' '));
      }
      const status = ferry('lab', 'status', '--dir', SWITCH_DIR, ...NAMES);
      ok(status, 'lab status');
      assert.match(status.stdout, /up, 100 Mbit\/s, hosts adding 2 ms to their lanes/);
      const secret = readFileSync(s.secretFile, 'utf8').trim();
      for (const h of s.hosts) assert.deepEqual(await call(h.url, secret, 'GET', '/v1/vms'), []);
      await new Promise<void>((resolve, reject) => {
        const c = net.connect(7100, `${SUBNET}.254`, () => {
          c.destroy();
          resolve();
        });
        c.once('error', reject);
      });
    } finally {
      ok(ferry('lab', 'down', '--dir', SWITCH_DIR, ...NAMES), 'lab down');
    }
    await assertNothingLeft(SWITCH_DIR);
  });
});

test('added latency goes to every host of the lab; out of range it is refused by name', () => {
  const config = labConfig({ hosts: ['x', 'y'], latencyMs: 1.5, dir: tmpdir() });
  for (const p of labProcesses(config).filter((q) => q.role === 'host'))
    assert.deepEqual(p.argv.slice(-2), ['--lane-latency', '1.5']);
  for (const p of labProcesses(labConfig({ hosts: ['x'], dir: tmpdir() })))
    assert.ok(!p.argv.includes('--lane-latency'), 'no latency, no flag');
  for (const bad of [-1, 5000, Number.NaN])
    assert.throws(() => labConfig({ latencyMs: bad }), /--latency must be a number of ms from 0 to 1000/);
});

test('without root, up and down exit 2 with one line', () => {
  // as root, the CLI is made to see another user id (the check is all that differs)
  const asNobody = 'data:text/javascript,process.getuid=()=>65534';
  const run = (...args: string[]) =>
    ROOT
      ? spawnSync(process.execPath, ['--import', asNobody, 'bin/ferry.mjs', ...args], {
          cwd: repoRoot,
          encoding: 'utf8',
          timeout: 60_000,
        })
      : ferry(...args);
  for (const cmd of ['up', 'down']) {
    const r = run('lab', cmd, '--dir', join(TMP, 'nobody'));
    assert.equal(r.status, 2, `lab ${cmd}: ${r.stderr}`);
    assert.equal(
      r.stderr,
      'ferry: ferry lab needs root (network namespaces and tc qdiscs): run it as root\n',
    );
  }
});
