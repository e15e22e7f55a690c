// `ferry host`, `ferry vm …` and `ferry migrate`: the real world from the command line.

import { ApiError, call, type MigrationInfo, type StartMigration, type VmInfo } from '../host/api.ts';
import { Host } from '../host/host.ts';
import { formatBytes, formatMs, table } from '../report/summary.ts';
import { UsageError } from './errors.ts';
import { readText, writeJson } from './io.ts';

/** The hosts' shared secret: hex in the file, or its raw bytes; at least 16 bytes. */
export function readSecret(file: string | undefined): Uint8Array {
  if (!file) throw new UsageError('--secret-file is required (the secret shared by all hosts)');
  const text = readText(file, 'secret file').trim();
  const bytes =
    /^[0-9a-fA-F]+$/.test(text) && text.length % 2 === 0
      ? Buffer.from(text, 'hex')
      : Buffer.from(text, 'utf8');
  if (bytes.length < 16) throw new UsageError(`secret file '${file}': the secret must be at least 16 bytes`);
  return new Uint8Array(bytes);
}

export function parseListen(v: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(v);
  if (!m || Number(m[2]) > 65535) throw new UsageError(`--listen: '${v}' is not ADDRESS:PORT`);
  return { host: m[1].replace(/^\[|\]$/g, '') || '127.0.0.1', port: Number(m[2]) };
}

export async function hostCommand(opts: {
  listen: string;
  id: string;
  secretFile?: string;
  lanesPort: number;
  urgentPort: number;
  switch?: string;
  ramPool: number;
  laneLatency: number;
  spareVcpus: number;
  faultThreadNice: number;
}) {
  const { host, port } = parseListen(opts.listen);
  if (opts.switch !== undefined && !/^.+:\d+$/.test(opts.switch))
    throw new UsageError(`--switch: '${opts.switch}' is not ADDRESS:PORT`);
  const h = new Host({
    id: opts.id,
    host,
    port,
    lanesPort: opts.lanesPort,
    urgentPort: opts.urgentPort,
    secret: readSecret(opts.secretFile),
    switchAddress: opts.switch,
    ramPoolMiB: opts.ramPool,
    laneLatencyMs: opts.laneLatency,
    spareVcpus: opts.spareVcpus,
    faultThreadNice: opts.faultThreadNice,
    log: (line) => console.error(`[${new Date().toISOString()}] ${opts.id}: ${line}`),
  });
  try {
    await h.start();
  } catch (e) {
    throw new UsageError(`cannot start host ${opts.id}: ${(e as Error).message}`);
  }
  console.log(h.url);
  const stop = async () => {
    await h.close();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

interface ClientOpts {
  host: string;
  secretFile?: string;
}

function secretHex(opts: ClientOpts): string {
  return Buffer.from(readSecret(opts.secretFile)).toString('hex');
}

async function api<T>(opts: ClientOpts, method: string, path: string, body?: unknown): Promise<T> {
  try {
    return await call<T>(opts.host, secretHex(opts), method, path, body);
  } catch (e) {
    if (e instanceof ApiError) throw new UsageError(e.message);
    throw e;
  }
}

export async function vmCreateCommand(
  name: string,
  opts: ClientOpts & {
    ram: number;
    vcpus: number;
    app: string;
    servers: number;
    set?: Record<string, unknown>;
  },
): Promise<void> {
  const vm = await api<VmInfo>(opts, 'POST', '/v1/vms', {
    name,
    ramMiB: opts.ram,
    vcpus: opts.vcpus,
    app: opts.app,
    servers: opts.servers,
    ...(opts.set ? { appOptions: opts.set } : {}),
  });
  console.log(`${vm.name}: ${vm.ramMiB} MiB, ${vm.vcpus} vCPU, ${vm.app}, clients at ${vm.endpoint}`);
}

export async function vmListCommand(opts: ClientOpts & { json?: boolean }): Promise<void> {
  const vms = await api<VmInfo[]>(opts, 'GET', '/v1/vms');
  if (opts.json) return void console.log(JSON.stringify(vms, null, 2));
  if (vms.length === 0) return void console.log('no VMs on this host');
  console.log(
    table(
      ['vm', 'RAM', 'vCPUs', 'app', 'state', 'endpoint'],
      vms.map((v) => [v.name, `${v.ramMiB} MiB`, String(v.vcpus), v.app, v.state, v.endpoint]),
    ),
  );
}

export async function vmStopCommand(name: string, opts: ClientOpts): Promise<void> {
  const vm = await api<VmInfo>(opts, 'DELETE', `/v1/vms/${encodeURIComponent(name)}`);
  console.log(`${vm.name} stopped`);
}

export async function migrateCommand(
  vm: string,
  opts: ClientOpts & {
    to: string;
    mode: string;
    blocking?: boolean;
    cooperative?: boolean;
    downtimeLimit: number;
    maxBandwidth?: number;
    prepage: number;
    json?: string;
  },
): Promise<void> {
  if (opts.blocking && opts.cooperative)
    throw new UsageError('--cooperative and --blocking exclude each other');
  if (!['precopy', 'postcopy', 'hybrid'].includes(opts.mode))
    throw new UsageError(`--mode: '${opts.mode}' is not one of precopy, postcopy, hybrid`);
  const body: StartMigration = {
    vm,
    to: opts.to,
    mode: opts.mode as StartMigration['mode'],
    cooperative: !opts.blocking,
    downtimeLimitMs: opts.downtimeLimit,
    maxBandwidthMbps: opts.maxBandwidth,
    prepage: opts.prepage,
  };
  let info = await api<MigrationInfo>(opts, 'POST', '/v1/migrations', body);
  const tty = process.stderr.isTTY;
  while (info.state !== 'done') {
    await new Promise((r) => setTimeout(r, 100));
    info = await api<MigrationInfo>(opts, 'GET', `/v1/migrations/${info.id}`);
    const p = info.progress;
    if (tty) {
      const done = p.pages > 0 ? 1 - p.pagesPending / p.pages : 0;
      const bar = '#'.repeat(Math.round(done * 30)).padEnd(30, '.');
      process.stderr.write(
        `\r  ${p.phase.padEnd(14)} [${bar}] ${formatBytes(p.bytesSent).padStart(9)} sent, round ${p.rounds}\x1b[K`,
      );
    }
  }
  if (tty) process.stderr.write('\r\x1b[K');
  const r = info.report!;
  console.log(
    table(
      [
        'vm',
        'mode',
        'faults',
        'outcome',
        'total',
        'downtime',
        'sent',
        'rounds',
        'remote faults',
        'fault µs p50/p99',
        'integrity',
      ],
      [
        [
          r.vm,
          r.mode,
          r.cooperative ? 'cooperative' : 'blocking',
          r.outcome,
          formatMs(r.totalTimeMs),
          formatMs(r.downtimeMs),
          formatBytes(r.bytesSent),
          String(r.rounds),
          String(r.remoteFaults),
          r.remoteFaults > 0 ? `${r.faultLatencyUs.p50}/${r.faultLatencyUs.p99}` : '',
          r.integrity.checked ? (r.integrity.ok ? 'ok' : 'MISMATCH') : 'not checked',
        ],
      ],
    ),
  );
  if (r.outcome !== 'completed') console.log(`reason: ${r.reason}`);
  if (opts.json)
    writeJson(opts.json, { scenario: 'migrate', seed: 0, world: 'real', migrations: [r], workloads: [] });
  if (r.outcome !== 'completed') process.exitCode = 1;
}
