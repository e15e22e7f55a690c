// End to end: real `ferry host` processes on loopback, VMs migrating between them in every
// mode while the load generator drives the kv app, and the ways a migration can go wrong
// (wrong secret, the destination or the source host killed midway). Every migration's RAM
// is checked by the hosts' integrity hash; the clients' view is checked by the load
// generator (every command answered, every acknowledged SET readable afterwards).

import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { encodeCommand, RespReplyParser, type RespValue } from '../../src/apps/resp.ts';
import {
  type CreateVm,
  call,
  type IncomingInfo,
  type IncomingRequest,
  type MemoryProfile,
  type MigrationInfo,
  type RealMigrationReport,
  type StartMigration,
  type VmInfo,
} from '../../src/host/api.ts';
import {
  checkAcked,
  type LoadOptions,
  type LoadResult,
  type LoadRun,
  parseEndpoint,
  runLoad,
  startLoad,
} from '../../src/host/loadgen.ts';
import { connectLane, TransportError } from '../../src/host/transport.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FERRY = join(ROOT, 'bin/ferry.mjs');
const TMP = mkdtempSync(join(tmpdir(), 'ferry-e2e-'));
const SECRET = randomBytes(32).toString('hex');
const SECRET_FILE = join(TMP, 'secret');
const OTHER_SECRET_FILE = join(TMP, 'other-secret');
writeFileSync(SECRET_FILE, `${SECRET}\n`);
writeFileSync(OTHER_SECRET_FILE, `${randomBytes(32).toString('hex')}\n`);

// ---------------------------------------------------------------------------------------
// Host processes

const children = new Set<ChildProcess>();
/** Loads still running when a test gave up early are stopped with the hosts. */
const loads = new Set<LoadRun>();

function trackedLoad(opts: LoadOptions): LoadRun {
  const run = startLoad(opts);
  loads.add(run);
  void run.done.then(() => loads.delete(run));
  return run;
}

// a last resort if the run ends without its `after` hook
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

after(async () => {
  for (const l of loads) l.stop();
  await Promise.all([...children].map((c) => stopChild(c)));
  rmSync(TMP, { recursive: true, force: true });
});

function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const hard = setTimeout(() => c.kill('SIGKILL'), 3000);
    c.once('exit', () => {
      clearTimeout(hard);
      resolve();
    });
    c.kill('SIGTERM');
  });
}

/** A free TCP port on loopback (bound once, then released for the host to take). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

interface HostProcess {
  id: string;
  url: string;
  child: ChildProcess;
  log: string[];
  /** The lanes port the host announced. */
  lanesPort: number;
  kill(): Promise<void>;
}

/** Starts `ferry ARGS…` and waits for the first line of its stdout that matches `ready`. */
async function spawnFerry(
  what: string,
  args: string[],
  ready: RegExp,
): Promise<{ child: ChildProcess; log: string[]; line: string }> {
  const child = spawn(process.execPath, [FERRY, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const log: string[] = [];
  child.stderr!.setEncoding('utf8').on('data', (d: string) => log.push(...d.split('\n').filter(Boolean)));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${log.join('\n')}`)), 20_000);
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}: ${log.join('\n')}`));
    });
  });
  return { child, log, line };
}

/** A virtual switch: its address for hosts. */
async function spawnSwitch(): Promise<string> {
  return (await spawnSwitchProcess()).line;
}

async function spawnSwitchProcess(): Promise<{ child: ChildProcess; line: string }> {
  const port = await freePort();
  return spawnFerry(
    'the switch',
    ['switch', '--listen', `127.0.0.1:${port}`, '--secret-file', SECRET_FILE],
    /^(\S+:\d+)$/m,
  );
}

async function spawnHost(
  id: string,
  secretFile = SECRET_FILE,
  switchAddress?: string,
  address = '127.0.0.1',
  extra: string[] = [],
): Promise<HostProcess> {
  const port = await freePort();
  const {
    child,
    log,
    line: url,
  } = await spawnFerry(
    `host ${id}`,
    [
      ...['host', '--listen', `${address}:${port}`, '--id', id, '--secret-file', secretFile],
      ...(switchAddress ? ['--switch', switchAddress] : []),
      ...extra,
    ],
    /^(http:\/\/\S+)$/m,
  );
  const lanes = /migration lanes on port (\d+)/.exec(log.join('\n'));
  return {
    id,
    url,
    child,
    log,
    lanesPort: lanes ? Number(lanes[1]) : 0,
    kill: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGKILL');
      }),
  };
}

// ---------------------------------------------------------------------------------------
// API helpers

const api = <T>(h: HostProcess, method: string, path: string, body?: unknown) =>
  call<T>(h.url, SECRET, method, path, body);

const listVms = (h: HostProcess) => api<VmInfo[]>(h, 'GET', '/v1/vms');

async function until<T>(what: string, f: () => Promise<T | undefined | false>, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 40));
  }
}

/** Where the VM is listed: one entry per live host that lists it. */
async function whereIs(vm: string, hosts: HostProcess[]): Promise<{ host: HostProcess; info: VmInfo }[]> {
  const out: { host: HostProcess; info: VmInfo }[] = [];
  for (const h of hosts) {
    if (h.child.exitCode !== null || h.child.signalCode !== null) continue;
    const v = (await listVms(h)).find((x) => x.name === vm);
    if (v) out.push({ host: h, info: v });
  }
  return out;
}

/** The VM's client endpoint: where it runs (or arrives), else where it is leaving from. */
function locator(vm: string, hosts: HostProcess[]): (lost: string) => Promise<string> {
  return async () => {
    const all = await whereIs(vm, hosts);
    const here = all.find((x) => x.info.state === 'running' || x.info.state === 'incoming') ?? all[0];
    if (!here) throw new Error(`VM ${vm} is on no host`);
    return here.info.endpoint;
  };
}

async function createVm(h: HostProcess, body: CreateVm): Promise<VmInfo> {
  return api<VmInfo>(h, 'POST', '/v1/vms', body);
}

function startMigration(
  from: HostProcess,
  to: HostProcess,
  vm: string,
  mode: StartMigration['mode'],
  over: Partial<StartMigration> = {},
): Promise<MigrationInfo> {
  return api<MigrationInfo>(from, 'POST', '/v1/migrations', {
    vm,
    to: to.url,
    mode,
    cooperative: true,
    downtimeLimitMs: 300,
    prepage: 7,
    ...over,
  } satisfies StartMigration);
}

async function finished(from: HostProcess, id: string, ms = 30_000): Promise<RealMigrationReport> {
  const info = await until(
    `migration ${id}`,
    async () => {
      const i = await api<MigrationInfo>(from, 'GET', `/v1/migrations/${id}`);
      return i.state === 'done' ? i : undefined;
    },
    ms,
  );
  return info.report!;
}

/** The load generator's view, with the acknowledged writes left out (too long to print). */
function summary(r: LoadResult): string {
  return JSON.stringify({
    sent: r.sent,
    completed: r.completed,
    lost: r.lost,
    errors: r.errors,
    firstError: r.firstError,
    reconnects: r.reconnects,
    retries: r.retries,
    timeouts: r.timeouts,
    staleReads: r.staleReads,
    staleExamples: r.staleExamples,
  });
}

/** Every command answered, none with an error, no GET saw a value it should not have. */
function assertNothingLost(r: LoadResult): void {
  assert.equal(r.lost, 0, `commands lost: ${summary(r)}`);
  assert.equal(r.completed, r.sent, `commands unanswered: ${summary(r)}`);
  assert.equal(r.errors, 0, `error replies: ${summary(r)}`);
  assert.equal(r.staleReads, 0, `stale reads: ${summary(r)}`);
  assert.ok(r.sets > 0 && r.acked.size > 0, 'the load wrote something');
}

async function assertAckedReadable(endpoint: string, acked: Map<string, string>): Promise<void> {
  const c = await checkAcked(endpoint, acked);
  assert.equal(c.checked, acked.size);
  assert.deepEqual(
    { missing: c.missing, wrong: c.wrong },
    { missing: 0, wrong: 0 },
    `acknowledged SETs not readable at ${endpoint}: ${c.examples.join('; ')}`,
  );
}

function describeReport(r: RealMigrationReport): string {
  const f = r.faultLatencyUs;
  return (
    `${r.mode}${r.mode === 'precopy' ? '' : r.cooperative ? ' cooperative' : ' blocking'}: ${r.outcome}, ` +
    `total ${r.totalTimeMs.toFixed(0)} ms, downtime ${r.downtimeMs.toFixed(1)} ms, rounds ${r.rounds}, ` +
    `${(r.bytesSent / 2 ** 20).toFixed(1)} MiB sent, remote faults ${r.remoteFaults} ` +
    `(async ${r.asyncFaults}, blocking ${r.syncFaults}; p50 ${f.p50} µs, p99 ${f.p99} µs, max ${f.max} µs)`
  );
}

function describeLoad(r: LoadResult): string {
  const rates = r.throughput.map(([, ops]) => ops);
  return (
    `load: ${r.completed}/${r.sent} commands answered (${r.lost} given up), ${r.opsPerSec.toFixed(0)} ops/s, ` +
    `latency p50 ${r.latencyMs.p50.toFixed(2)} ms ` +
    `p99 ${r.latencyMs.p99.toFixed(1)} ms max ${r.latencyMs.max.toFixed(0)} ms, ${r.reconnects} reconnects, ` +
    `${r.retries} retries, lowest 100 ms bin ${Math.min(...rates)} ops/s`
  );
}

// ---------------------------------------------------------------------------------------
// Migrations under load, memtouch, and refusals (hosts a and b, and c with another secret)

describe('two hosts', () => {
  let a: HostProcess;
  let b: HostProcess;
  const VM = 'kv-load';
  const allAcked = new Map<string, string>();

  before(async () => {
    const sw = await spawnSwitch();
    [a, b] = await Promise.all([spawnHost('a', SECRET_FILE, sw), spawnHost('b', SECRET_FILE, sw)]);
    await createVm(a, { name: VM, ramMiB: 32, vcpus: 2, app: 'kv' });
  });

  /** Migrates `from` → `to` while 8 connections SET and GET; checks the clients' view. */
  async function underLoad(
    t: { diagnostic(m: string): void },
    from: HostProcess,
    to: HostProcess,
    mode: StartMigration['mode'],
    over: Partial<StartMigration> = {},
  ): Promise<{ report: RealMigrationReport; load: LoadResult }> {
    const hosts = [a, b];
    const locate = locator(VM, hosts);
    const opts: LoadOptions = {
      endpoint: await locate(''),
      locate,
      connections: 8,
      keys: 3000,
      keyPrefix: `${mode}${over.cooperative === false ? '-blocking' : ''}:`,
      valueBytes: 700,
      setRatio: 0.5,
      durationMs: 60_000,
    };
    const load = trackedLoad(opts);
    await until('the load to run', async () => load.progress().completed >= 1500);
    const before = (await whereIs(VM, hosts))[0].info.clients!;
    assert.ok(
      before.served >= 1500 && before.servedMs > before.hopMs && before.hopMs > 0,
      JSON.stringify(before),
    );
    const started = await startMigration(from, to, VM, mode, over);
    const report = await finished(from, started.id);
    // the load carries on where the VM went
    const at = load.progress().completed;
    await until('the load to run on the destination', async () => load.progress().completed >= at + 1000);
    load.stop();
    const result = await load.done;
    t.diagnostic(describeReport(report));
    t.diagnostic(describeLoad(result));

    assert.equal(report.outcome, 'completed', `${mode}: ${report.reason}`);
    assert.deepEqual(report.integrity, { checked: true, ok: true });
    // set-up, the run up to the stop, the downtime: all inside the total
    assert.ok(report.switchoverMs > 0 && report.downtimeMs > 0, describeReport(report));
    assert.ok(report.switchoverMs + report.downtimeMs <= report.totalTimeMs, describeReport(report));
    // the postcopy runs from the switchover to the last page; precopy has none
    if (mode === 'precopy') assert.equal(report.postcopyMs, 0);
    else
      assert.ok(
        report.postcopyMs > 0 && report.switchoverMs + report.postcopyMs <= report.totalTimeMs + 1e-6,
        describeReport(report),
      );
    assertNothingLost(result);
    assert.equal(result.reconnects, 0, `every connection kept through the switch: ${summary(result)}`);
    const where = await whereIs(VM, hosts);
    assert.deepEqual(
      where.map((w) => [w.host.id, w.info.state]),
      [[to.id, 'running']],
      'listed on exactly one host, the destination',
    );
    await assertAckedReadable(where[0].info.endpoint, result.acked);
    // the answered-request counter and its time in the guest moved with the VM, the part of
    // that time spent crossing between threads too
    const after = where[0].info.clients!;
    assert.ok(after.served > before.served && after.servedMs > before.servedMs, JSON.stringify(after));
    assert.ok(after.hopMs > before.hopMs && after.hopMs < after.servedMs, JSON.stringify(after));
    for (const [k, v] of result.acked) allAcked.set(k, v);
    return { report, load: result };
  }

  test('the memory profile samples what the guest writes and how busy its vCPUs are', async () => {
    const opts: LoadOptions = {
      endpoint: await locator(VM, [a, b])(''),
      connections: 4,
      keys: 500,
      keyPrefix: 'profile:',
      valueBytes: 100,
      setRatio: 0.5,
      durationMs: 60_000,
    };
    const load = trackedLoad(opts);
    await until('the load to run', async () => load.progress().completed >= 500);
    const [host] = await whereIs(VM, [a, b]);
    const p = await api<MemoryProfile>(host.host, 'GET', `/v1/vms/${VM}/memory?sampleMs=500`);
    load.stop();
    assertNothingLost(await load.done);
    assert.equal(p.pages, (32 * 2 ** 20) / 4096);
    assert.ok(p.zeroPages > 0 && p.zeroPages < p.pages, `${p.zeroPages} zero pages`);
    assert.ok(p.dirtyPages > 0, 'SETs write pages');
    assert.ok(p.requests > 50, `${p.requests} requests in the sample`);
    // two vCPU threads, at most both on a core the whole time
    assert.ok(p.vcpuRunMs > 0 && p.vcpuRunMs <= 2 * 500 * 1.2, `${p.vcpuRunMs} ms of vCPU time`);
    assert.ok(p.vcpuWaitMs >= 0, `${p.vcpuWaitMs} ms waiting for a core`);
    await assert.rejects(
      api(host.host, 'GET', `/v1/vms/${VM}/memory?sampleMs=5`),
      /sampleMs: '5' must be from 10 to 60000/,
    );
  });

  test('ferry vm create passes app options, and a bad one is refused by name', async () => {
    const cli = (...args: string[]) =>
      spawnSync(process.execPath, [FERRY, 'vm', ...args, '--host', a.url, '--secret-file', SECRET_FILE], {
        encoding: 'utf8',
      });
    const ok = cli(
      'create',
      'mt',
      '--app',
      'memtouch',
      '--ram',
      '16',
      '--set',
      'pattern=random',
      '--set',
      'rateMBps=5',
    );
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /^mt: 16 MiB, 1 vCPU, memtouch, clients at /);
    const bad = cli('create', 'mt2', '--app', 'memtouch', '--set', 'pattern=zigzag');
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /option 'pattern' must be sequential or random, got "zigzag"/);
    const kv = cli('create', 'kv2', '--app', 'kv', '--set', 'keys=5');
    assert.match(kv.stderr, /kv app: takes no options \(got 'keys'\)/);
    const malformed = cli('create', 'mt3', '--set', 'rateMBps');
    assert.match(malformed.stderr, /'rateMBps' is not KEY=VALUE/);
    assert.equal(cli('stop', 'mt').status, 0);
    // the next VM of that size gets the stopped one's RAM, zeroed
    assert.equal(cli('create', 'mt4', '--app', 'memtouch', '--ram', '16').status, 0);
    await until('the host to log the VM', async () => a.log.some((l) => /VM mt4 created/.test(l)));
    assert.ok(
      a.log.some((l) => /VM mt4 created: 16 MiB \(RAM from the pool\)/.test(l)),
      a.log.slice(-5).join('\n'),
    );
    assert.equal(cli('stop', 'mt4').status, 0);
  });

  test('kv under load: precopy', async (t) => {
    const { report } = await underLoad(t, a, b, 'precopy');
    assert.ok(report.rounds >= 1);
    assert.equal(report.remoteFaults, 0);
  });

  test('kv under load: postcopy with cooperative faults', async (t) => {
    // a bandwidth cap keeps the background push going while clients touch pages
    const { report } = await underLoad(t, b, a, 'postcopy', { maxBandwidthMbps: 50 });
    assert.equal(report.rounds, 0);
    assert.ok(report.remoteFaults > 0, 'the guest faulted on missing pages');
    assert.ok(report.asyncFaults > 0, 'tasks parked on missing pages');
    assert.ok(report.vcpuParkedMs > 0, 'parked tasks waited for their pages');
  });

  test('kv under load: postcopy with blocking faults', async (t) => {
    const { report } = await underLoad(t, a, b, 'postcopy', { cooperative: false, maxBandwidthMbps: 50 });
    assert.ok(report.remoteFaults > 0, 'the guest faulted on missing pages');
    assert.equal(report.asyncFaults, 0, 'no async faults when they are turned off');
    assert.equal(report.vcpuParkedMs, 0, 'no task parked');
    assert.ok(report.syncFaults > 0);
  });

  test('kv under load: hybrid', async (t) => {
    // a downtime budget precopy cannot meet: it switches to postcopy once dirtying stops shrinking
    const { report } = await underLoad(t, b, a, 'hybrid', { maxBandwidthMbps: 100, downtimeLimitMs: 1 });
    assert.ok(report.rounds >= 2, `precopy rounds first (${report.rounds})`);
  });

  test('back and forth (a → b → a → b → a) keeps every acknowledged write', async () => {
    const where = await whereIs(VM, [a, b]);
    assert.deepEqual(
      where.map((w) => w.host.id),
      ['a'],
    );
    assert.ok(allAcked.size > 1000);
    await assertAckedReadable(where[0].info.endpoint, allAcked);
  });

  test('memtouch keeps making progress after precopy and postcopy', async (t) => {
    const MT = 'memtouch';
    await createVm(a, {
      name: MT,
      ramMiB: 16,
      vcpus: 1,
      app: 'memtouch',
      appOptions: { rateMBps: 20, workingSetBytes: 8 * 2 ** 20, pagesPerStep: 16 },
    });
    const steps = async (h: HostProcess) =>
      (await listVms(h)).find((v) => v.name === MT)?.appStats?.steps ?? undefined;
    /** The job's step counter on `h` grows past what it was when first read there. */
    const progresses = async (h: HostProcess) => {
      const s0 = await until(`memtouch's counter on ${h.id}`, () => steps(h));
      const s1 = await until(`memtouch to progress on ${h.id}`, async () => {
        const s = await steps(h);
        return s !== undefined && s > s0 ? s : undefined;
      });
      return [s0, s1];
    };
    const [, beforeMove] = await progresses(a);
    for (const [from, to, mode] of [
      [a, b, 'precopy'],
      [b, a, 'postcopy'],
    ] as const) {
      const report = await finished(from, (await startMigration(from, to, MT, mode)).id);
      t.diagnostic(`memtouch ${describeReport(report)}`);
      assert.equal(report.outcome, 'completed', report.reason);
      assert.deepEqual(report.integrity, { checked: true, ok: true });
      const [s0, s1] = await progresses(to);
      assert.ok(s0 >= beforeMove, `the counter carried over (${s0} after ${beforeMove})`);
      assert.ok(s1 > s0);
      assert.deepEqual(
        (await whereIs(MT, [a, b])).map((w) => [w.host.id, w.info.state]),
        [[to.id, 'running']],
      );
    }
    // a client's command gets an error reply, and the job carries on
    const [here] = await whereIs(MT, [a, b]);
    const reply = await oneCommand(here.info.endpoint, ['PING']);
    assert.equal(reply.type, 'error');
    assert.match(String(reply.value), /batch job/);
    await progresses(here.host);
    await api(a, 'DELETE', `/v1/vms/${MT}`);
  });

  test('a wrong secret is refused, naming authentication; the VM stays where it was', async () => {
    const c = await spawnHost('c', OTHER_SECRET_FILE);
    const migrate = (secretFile: string, to: HostProcess) =>
      runCli([
        'migrate',
        VM,
        '--host',
        a.url,
        '--to',
        to.url,
        '--secret-file',
        secretFile,
        '--mode',
        'precopy',
      ]);

    // the client's secret is wrong: the source host refuses the call
    const wrongClient = await migrate(OTHER_SECRET_FILE, b);
    assert.notEqual(wrongClient.code, 0);
    assert.equal(wrongClient.stdout, '');
    assert.match(wrongClient.stderr, /^ferry: [^\n]*authentication[^\n]*\n$/);

    // the hosts' secrets differ: the destination refuses the source host
    const wrongDestination = await migrate(SECRET_FILE, c);
    assert.notEqual(wrongDestination.code, 0);
    assert.match(wrongDestination.stderr, /^ferry: [^\n]*authentication[^\n]*\n$/);
    assert.ok(wrongDestination.stderr.includes(c.url), `names the destination: ${wrongDestination.stderr}`);
    assert.ok(
      c.log.some((l) => /refused API call POST \/v1\/incoming .*wrong secret/.test(l)),
      c.log.join('\n'),
    );

    // a lane with the wrong secret: the host's lane listener refuses it
    await assert.rejects(
      connectLane({
        host: '127.0.0.1',
        port: a.lanesPort,
        secret: new Uint8Array(randomBytes(32)),
        migrationId: 'nope',
        lane: 'control',
        capabilities: 0,
      }),
      (e: unknown) => e instanceof TransportError && e.code === 'auth' && /auth/i.test(e.message),
    );
    await until('the refusal in the log', async () => a.log.some((l) => /refused .*lane control/.test(l)));

    const where = await whereIs(VM, [a, b]);
    assert.deepEqual(
      where.map((w) => [w.host.id, w.info.state]),
      [['a', 'running']],
    );
    const onC = await call<VmInfo[]>(c.url, readFileSync(OTHER_SECRET_FILE, 'utf8').trim(), 'GET', '/v1/vms');
    assert.deepEqual(onC, [], 'nothing was left half-created on the refusing host');
    await c.kill();
  });

  /** Prepares an incoming VM on b, as a source on port `bulkPort` would. */
  const prepareOnB = (id: string, vm: string, bulkPort: number) =>
    api<IncomingInfo>(b, 'POST', '/v1/incoming', {
      migrationId: id,
      vm,
      ramMiB: 4,
      vcpus: 1,
      app: 'kv',
      appOptions: {},
      servers: 4,
      cooperative: true,
      from: 'a',
      bulkPort,
    } satisfies IncomingRequest);

  /** A lane of migration `id` to b, as its source would open it. */
  const laneToB = (inc: IncomingInfo, id: string, lane: 'control' | 'bulk' | 'urgent') =>
    connectLane({
      host: '127.0.0.1',
      port: inc.lanesPort,
      secret: new Uint8Array(Buffer.from(SECRET, 'hex')),
      migrationId: id,
      lane,
      capabilities: 0,
    });

  /** A source's lane port that accepts and never answers: the bulk lane b opens back hangs. */
  async function silentPort(): Promise<number> {
    const silent = net.createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    after(() => silent.close());
    return (silent.address() as net.AddressInfo).port;
  }

  test('a source that gives up before all its lanes connect leaves no paused VM behind', async () => {
    const id = `given-up-${randomBytes(4).toString('hex')}`;
    const inc = await prepareOnB(id, 'half', await silentPort());
    assert.equal(inc.state, 'waiting');
    const control = await laneToB(inc, id, 'control');
    control.destroy();
    await until('the incoming migration to be dropped', async () => {
      const i = await api<IncomingInfo>(b, 'GET', `/v1/incoming/${id}`);
      return i.state === 'done';
    });
    assert.ok(
      b.log.some((l) => l.includes(`migration ${id}) dropped: the control lane closed`)),
      b.log.join('\n'),
    );
    assert.ok(!(await listVms(b)).some((v) => v.name === 'half'), 'the VM never ran here');
  });

  test('a destination that cannot open the bulk lane back drops the migration and says why', async () => {
    const id = `no-way-back-${randomBytes(4).toString('hex')}`;
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise((r) => closed.close(r)); // nothing listens there now
    const inc = await prepareOnB(id, 'stranded', port);
    const control = await laneToB(inc, id, 'control');
    const closedWith = new Promise<unknown>((r) => control.onClose(r));
    await until('the incoming migration to be dropped', async () => {
      const i = await api<IncomingInfo>(b, 'GET', `/v1/incoming/${id}`);
      return i.state === 'done';
    });
    const info = await api<IncomingInfo>(b, 'GET', `/v1/incoming/${id}`);
    assert.match(
      info.dropped ?? '',
      new RegExp(
        `could not open the bulk lane back to the source: bulk lane to 127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`,
      ),
    );
    await closedWith; // the source sees its lanes close
    assert.ok(!(await listVms(b)).some((v) => v.name === 'stranded'), 'the VM never ran here');
  });

  test('the bulk lane of a migration into a host is refused when the source dials it', async () => {
    const id = `wrong-way-${randomBytes(4).toString('hex')}`;
    const inc = await prepareOnB(id, 'one-way', await silentPort());
    const bulk = await laneToB(inc, id, 'bulk');
    // accepted by the handshake, then closed: b opens the bulk lane itself
    await new Promise<unknown>((r) => bulk.onClose(r));
    assert.ok(
      b.log.some((l) => l.includes(`no bulk lane of migration '${id}' expected here`)),
      b.log.join('\n'),
    );
  });
});

/** Sends one command on a fresh connection; its reply. */
function oneCommand(endpoint: string, args: string[]): Promise<RespValue> {
  const { host, port } = parseEndpoint(endpoint);
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    s.setTimeout(5000, () => {
      s.destroy();
      reject(new Error(`no reply to ${args.join(' ')} from ${endpoint} within 5 s`));
    });
    const parser = new RespReplyParser();
    s.on('data', (chunk: Buffer) => {
      const [v] = parser.push(chunk).replies;
      if (v) {
        s.destroy();
        resolve(v);
      }
    });
    s.on('error', reject);
    s.on('close', () => reject(new Error(`${endpoint} closed the connection without a reply`)));
    s.write(encodeCommand(args));
  });
}

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runCli(args: string[]): Promise<CliResult> {
  return runProgram(process.execPath, [FERRY, ...args]);
}

/** Runs a program to its end: its exit code and everything it printed. */
function runProgram(command: string, args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('error', (e) => reject(new Error(`${command} could not run: ${e.message}`)));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

// ---------------------------------------------------------------------------------------
// Hosts killed midway

describe('a switch that went away', () => {
  test("a migration whose VM's clients cannot be held is aborted at the stop; the VM runs on", async (t) => {
    const sw = await spawnSwitchProcess();
    const [a, b] = await Promise.all([
      spawnHost('held-a', SECRET_FILE, sw.line),
      spawnHost('held-b', SECRET_FILE, sw.line),
    ]);
    t.after(() => Promise.all([a.kill(), b.kill()]));
    await createVm(a, { name: 'orphan', ramMiB: 16, vcpus: 2, app: 'kv' });
    sw.child.kill('SIGKILL'); // the hold asked for at the stop gets no answer
    const m = await startMigration(a, b, 'orphan', 'precopy');
    const report = await finished(a, m.id);
    t.diagnostic(`${report.outcome}: ${report.reason}`);
    assert.equal(report.outcome, 'aborted');
    assert.match(report.reason, /clients could not be held for the switchover/);
    assert.equal((await listVms(a)).find((v) => v.name === 'orphan')?.state, 'running');
    await until('the destination to hear the abort', async () =>
      b.log.some((l) => l.includes(`${m.id}: incoming migration aborted`)),
    );
  });
});

describe('a destination that cannot reach the source', () => {
  test('the migration does not start, the source says why and keeps its VM', async (t) => {
    // the source listens on 127.0.0.2 but reaches the destination from 127.0.0.1: the
    // bulk lane the destination opens back to where the control lane came from is refused
    const [src, dst] = await Promise.all([
      spawnHost('multihomed', SECRET_FILE, undefined, '127.0.0.2'),
      spawnHost('plain'),
    ]);
    t.after(() => Promise.all([src.kill(), dst.kill()]));
    await createVm(src, { name: 'homebound', ramMiB: 8, vcpus: 1, app: 'kv' });
    await assert.rejects(
      startMigration(src, dst, 'homebound', 'precopy'),
      /could not open the bulk lane back to the source: bulk lane to 127\.0\.0\.1:\d+: .*ECONNREFUSED/,
    );
    assert.equal((await listVms(src)).find((v) => v.name === 'homebound')?.state, 'running');
    assert.ok(
      dst.log.some((l) => /incoming VM homebound .* dropped: could not open the bulk lane back/.test(l)),
      dst.log.join('\n'),
    );
  });
});

describe('hosts far apart', () => {
  test('each demand pays the round trip the hosts add; the RAM arrives intact', async (t) => {
    const LATENCY_MS = 3;
    const far = ['--lane-latency', String(LATENCY_MS)];
    const [src, dst] = await Promise.all([
      spawnHost('far-a', SECRET_FILE, undefined, '127.0.0.1', far),
      spawnHost('far-b', SECRET_FILE, undefined, '127.0.0.1', far),
    ]);
    t.after(() => Promise.all([src.kill(), dst.kill()]));
    await createVm(src, {
      name: 'distant',
      ramMiB: 16,
      vcpus: 1,
      app: 'memtouch',
      appOptions: { rateMBps: 8, workingSetBytes: 12 * 2 ** 20, prefill: true, pattern: 'random' },
    });
    const started = await startMigration(src, dst, 'distant', 'postcopy', {
      prepage: 0,
      maxBandwidthMbps: 50,
    });
    const r = await finished(src, started.id);
    assert.equal(r.outcome, 'completed', describeReport(r));
    assert.deepEqual(r.integrity, { checked: true, ok: true });
    assert.ok(r.remoteFaults > 0, describeReport(r));
    // a demand crosses twice: to the source and back, each way LATENCY_MS late
    assert.ok(r.faultLatencyUs.p50 >= 2 * LATENCY_MS * 1000, describeReport(r));
    assert.ok(r.downtimeMs >= LATENCY_MS, 'the switchover crossed once');
  });
});

describe('a host killed midway', () => {
  let s1: HostProcess;
  let d1: HostProcess;
  let d2: HostProcess;
  let s2: HostProcess;
  let s3: HostProcess;
  let d3: HostProcess;
  const VM = 'victim';
  /** Under a 20 Mbit/s cap the few MiB of kv data take long enough to kill a host midway. */
  const SLOW = { maxBandwidthMbps: 20 };

  before(async () => {
    [s1, d1, d2, s2, s3, d3] = await Promise.all(
      ['s1', 'd1', 'd2', 's2', 's3', 'd3'].map((id) => spawnHost(id)),
    );
  });

  /** A kv VM on `h` holding a few MiB of values. */
  async function filledVm(h: HostProcess, name: string): Promise<VmInfo> {
    const vm = await createVm(h, { name, ramMiB: 32, vcpus: 2, app: 'kv' });
    const fill = await runLoad({
      endpoint: vm.endpoint,
      connections: 8,
      keys: 4000,
      keyPrefix: 'fill:',
      setRatio: 1,
      valueBytes: 1000,
      requests: 4000,
    });
    assertNothingLost(fill);
    return vm;
  }

  async function progressed(h: HostProcess, id: string, phase: string): Promise<void> {
    await until(`migration ${id} in ${phase}`, async () => {
      const p = (await api<MigrationInfo>(h, 'GET', `/v1/migrations/${id}`)).progress;
      return p.phase === phase && p.bytesSent > 256 * 1024;
    });
  }

  test('the destination killed during precopy: aborted, the VM keeps serving on the source', async (t) => {
    const vm = await filledVm(s1, VM);
    const load = trackedLoad({
      endpoint: vm.endpoint,
      locate: locator(VM, [s1, d1]),
      connections: 8,
      keys: 2000,
      keyPrefix: 'precopy-kill:',
      valueBytes: 200,
      durationMs: 60_000,
    });
    await until('the load to run', async () => load.progress().completed >= 500);
    const m = await startMigration(s1, d1, VM, 'precopy', SLOW);
    await progressed(s1, m.id, 'precopy');
    await d1.kill();
    const report = await finished(s1, m.id);
    t.diagnostic(`${report.outcome}: ${report.reason}`);
    assert.equal(report.outcome, 'aborted');
    assert.match(report.reason, /lane/);
    assert.equal(report.integrity.checked, false);

    const at = load.progress().completed;
    await until('the load to carry on', async () => load.progress().completed >= at + 1000);
    load.stop();
    const result = await load.done;
    t.diagnostic(describeLoad(result));
    assertNothingLost(result);
    const where = await whereIs(VM, [s1, d1]);
    assert.deepEqual(
      where.map((w) => [w.host.id, w.info.state]),
      [['s1', 'running']],
    );
    await assertAckedReadable(where[0].info.endpoint, result.acked);
  });

  test('the destination killed during postcopy: failed, naming the lane; the VM runs nowhere', async (t) => {
    const load = trackedLoad({
      endpoint: (await locator(VM, [s1])('')) as string,
      locate: locator(VM, [s1, d2]),
      connections: 8,
      keys: 2000,
      keyPrefix: 'postcopy-kill:',
      valueBytes: 200,
      durationMs: 60_000,
      requestTimeoutMs: 1000,
      reconnectTimeoutMs: 1500,
    });
    await until('the load to run', async () => load.progress().completed >= 500);
    const m = await startMigration(s1, d2, VM, 'postcopy', SLOW);
    await progressed(s1, m.id, 'postcopy');
    const served = load.progress().completed;
    await until('clients served on the destination', async () => load.progress().completed >= served + 100);
    await d2.kill();
    const report = await finished(s1, m.id);
    t.diagnostic(`${report.outcome}: ${report.reason}`);
    assert.equal(report.outcome, 'failed');
    assert.match(report.reason, /lane broke in postcopy/);

    // The guest ran only on the destination since the switchover, and that host is gone:
    // the source holds a stale copy and does not run it, and says so.
    const where = await whereIs(VM, [s1, d2]);
    assert.deepEqual(
      where.map((w) => [w.host.id, w.info.state]),
      [['s1', 'stopped']],
    );
    load.stop();
    const result = await load.done;
    t.diagnostic(describeLoad(result));
    assert.ok(result.lost > 0, 'commands in flight when the VM died are never answered');
    await api(s1, 'DELETE', `/v1/vms/${VM}`);
  });

  test('the source killed during precopy: the destination aborts with the reason', async (t) => {
    await filledVm(s2, VM);
    const m = await startMigration(s2, d3, VM, 'precopy', SLOW);
    await progressed(s2, m.id, 'precopy');
    await s2.kill();
    const inc = await until(`the incoming migration on ${d3.id} to end`, async () => {
      const i = await api<IncomingInfo>(d3, 'GET', `/v1/incoming/${m.id}`);
      return i.state === 'done' ? i : undefined;
    });
    t.diagnostic(`${inc.result?.outcome}: ${inc.result?.reason}`);
    assert.equal(inc.result?.outcome, 'aborted');
    assert.match(inc.result!.reason, /lane broke/);
    assert.deepEqual(await listVms(d3), [], 'nothing half-arrived is left running');
  });

  test('the source killed during postcopy: the destination fails, naming the missing pages', async (t) => {
    await filledVm(s3, VM);
    const m = await startMigration(s3, d3, VM, 'postcopy', SLOW);
    await progressed(s3, m.id, 'postcopy');
    await s3.kill();
    const inc = await until(`the incoming migration on ${d3.id} to end`, async () => {
      const i = await api<IncomingInfo>(d3, 'GET', `/v1/incoming/${m.id}`);
      return i.state === 'done' ? i : undefined;
    });
    t.diagnostic(`${inc.result?.outcome}: ${inc.result?.reason}`);
    assert.equal(inc.result?.outcome, 'failed');
    assert.match(inc.result!.reason, /lane broke with \d+ pages missing/);
    // the guest runs on the destination with pages that can no longer arrive
    const vms = await listVms(d3);
    t.diagnostic(`on ${d3.id} afterwards: ${JSON.stringify(vms.map((v) => [v.name, v.state]))}`);
    assert.deepEqual(
      vms.map((v) => v.name),
      [VM],
    );
  });
});

// ---------------------------------------------------------------------------------------
// Real clients: redis-benchmark connected before the migration keeps every connection

/** Runs redis-benchmark against `endpoint` (redis-tools must be installed). */
async function redisBenchmark(endpoint: string, args: string[]): Promise<CliResult> {
  const { host, port } = parseEndpoint(endpoint);
  const r = await runProgram('redis-benchmark', ['-h', host, '-p', String(port), ...args]);
  // it redraws its progress line with carriage returns
  return { ...r, stdout: r.stdout.replaceAll('\r', '\n') };
}

describe('real clients', () => {
  let r1: HostProcess;
  let r2: HostProcess;
  const VM = 'kv-bench';

  before(async () => {
    const sw = await spawnSwitch();
    [r1, r2] = await Promise.all([spawnHost('r1', SECRET_FILE, sw), spawnHost('r2', SECRET_FILE, sw)]);
    await createVm(r1, { name: VM, ramMiB: 32, vcpus: 1, app: 'kv' });
  });
  after(async () => {
    await Promise.all([r1.kill(), r2.kill()]);
  });

  const runs: [string, StartMigration['mode'], boolean][] = [
    ['precopy', 'precopy', true],
    ['postcopy with cooperative faults', 'postcopy', true],
    ['postcopy with blocking faults', 'postcopy', false],
  ];

  /**
   * Moves `vm` to the other host while `client` runs against its address (started `leadMs`
   * before the migration), then checks the migration and where the VM ended up; returns
   * the client's output for its own checks.
   */
  async function throughMigration(
    t: { diagnostic(m: string): void },
    vm: string,
    mode: StartMigration['mode'],
    cooperative: boolean,
    leadMs: number,
    client: (endpoint: string) => Promise<CliResult>,
    summaryLine: RegExp,
  ): Promise<CliResult> {
    const [here] = await whereIs(vm, [r1, r2]);
    const from = here.host;
    const to = from === r1 ? r2 : r1;
    const bench = client(here.info.endpoint);
    await new Promise((r) => setTimeout(r, leadMs));
    // a capped link keeps postcopy going while the clients touch pages still missing
    const m = await startMigration(from, to, vm, mode, { cooperative, maxBandwidthMbps: 50 });
    const report = await finished(from, m.id);
    const out = await bench;
    t.diagnostic(describeReport(report));
    t.diagnostic(
      out.stdout
        .split('\n')
        .filter((l) => summaryLine.test(l))
        .join('; '),
    );
    assert.equal(report.outcome, 'completed', report.reason);
    assert.deepEqual(report.integrity, { checked: true, ok: true });
    if (mode === 'postcopy') assert.ok(report.remoteFaults > 0, 'the clients touched missing pages');
    const where = await whereIs(vm, [r1, r2]);
    assert.deepEqual(
      where.map((w) => [w.host.id, w.info.state]),
      [[to.id, 'running']],
    );
    return out;
  }

  for (const [what, mode, cooperative] of runs) {
    test(`redis-benchmark through a ${what} migration: no error, every connection kept`, async (t) => {
      // 8 connections, SET then GET over 5,000 keys of 1000 bytes; the migration starts mid-SET
      // (redis-benchmark exits non-zero at the first error or lost connection)
      const out = await throughMigration(
        t,
        VM,
        mode,
        cooperative,
        1000,
        (endpoint) =>
          redisBenchmark(endpoint, [
            ...['-c', '8', '-n', '30000', '-r', '5000', '-d', '1000', '-t', 'set,get', '-q'],
          ]),
        /requests per second/,
      );
      assert.equal(out.code, 0, `redis-benchmark exited with ${out.code}: ${out.stderr}${out.stdout}`);
      assert.doesNotMatch(out.stdout + out.stderr, /error|closed|reset/i);
      for (const cmd of ['SET', 'GET'])
        assert.match(out.stdout, new RegExp(`^${cmd}: [\\d.]+ requests per second`, 'm'), out.stdout);
    });
  }

  const WEB = 'web-bench';
  const OBJECTS = 256;
  for (const [what, mode, cooperative] of runs) {
    test(`wrk against the http app through a ${what} migration: no error, every connection kept`, async (t) => {
      if (!(await whereIs(WEB, [r1, r2])).length)
        await createVm(r1, {
          name: WEB,
          ramMiB: 32,
          vcpus: 1,
          app: 'http',
          appOptions: { objects: OBJECTS },
        });
      // objects of mixed sizes, and one request in ten writes a counter in guest RAM
      const script = join(TMP, 'mix.lua');
      writeFileSync(
        script,
        `request = function()\n` +
          `  if math.random() < 0.1 then return wrk.format("POST", "/hit/" .. math.random(0, 63)) end\n` +
          `  return wrk.format("GET", "/obj/" .. math.random(0, ${OBJECTS - 1}))\n` +
          `end\n`,
      );
      const out = await throughMigration(
        t,
        WEB,
        mode,
        cooperative,
        1500,
        (endpoint) =>
          runProgram('wrk', [
            ...['-t', '2', '-c', '8', '-d', '6s', '--timeout', '5s', '-s', script],
            `http://${endpoint}/`,
          ]),
        /requests in|Requests\/sec/,
      );
      assert.equal(out.code, 0, `wrk exited with ${out.code}: ${out.stderr}${out.stdout}`);
      // wrk prints these lines only when there were socket errors (a dropped connection is
      // a read error) or error statuses
      assert.doesNotMatch(out.stdout, /Socket errors|Non-2xx/, out.stdout);
      const served = /(\d+) requests in/.exec(out.stdout);
      assert.ok(served && Number(served[1]) > 100, out.stdout);
    });
  }
});
