// `ferry lab up|down|status`: hosts in network namespaces on one machine, behind shaped links.

import { type Command, InvalidArgumentError, Option } from 'commander';
import {
  API_PORT,
  DEFAULT_BRIDGE,
  DEFAULT_DIR,
  DEFAULT_HOSTS,
  DEFAULT_MBPS,
  DEFAULT_SUBNET,
  DEFAULT_TIMEOUT_MS,
  down,
  downCommand,
  LANES_PORT,
  LabError,
  type LabOptions,
  type LabState,
  labStatus,
  SWITCH_PORT,
  up,
} from '../lab/lab.ts';
import { table } from '../report/summary.ts';
import { UsageError } from './errors.ts';
import { parseLatency } from './option-parsers.ts';

interface CommonOpts {
  dir: string;
  hosts: string[];
  subnet: string;
  bridge: string;
}

interface UpOpts extends CommonOpts {
  mbps: number;
  latency: number;
  switch: boolean;
  timeout: number;
  json?: boolean;
}

const parseHosts = (v: string) =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

function parseMbps(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a number of Mbit/s > 0');
  return n;
}

function parseSeconds(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a number of seconds > 0');
  return n;
}

function options(o: CommonOpts & Partial<UpOpts>): LabOptions {
  return {
    dir: o.dir,
    hosts: o.hosts,
    subnet: o.subnet,
    bridge: o.bridge,
    mbps: o.mbps,
    latencyMs: o.latency,
    switch: o.switch,
    timeoutMs: o.timeout === undefined ? undefined : o.timeout * 1000,
  };
}

/** Lab failures are one-line usage errors (exit status 2). */
async function oneLine<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof LabError) throw new UsageError(e.message);
    throw e;
  }
}

const rate = (mbps: number) => (mbps >= 1000 ? `${mbps / 1000} Gbit/s` : `${mbps} Mbit/s`);

function printUp(state: LabState): void {
  console.log(
    table(
      ['host', 'namespace', 'API', 'lanes', 'log'],
      state.hosts.map((h) => [h.name, h.netns, h.url, h.lanes, h.log]),
    ),
  );
  console.log();
  console.log(`switch  ${state.switchAddress ?? 'none (--no-switch)'}`);
  console.log(
    `links   ${rate(state.mbps)} each way between every host and the bridge ${state.bridge?.name} ` +
      `(tc tbf on both ends of each veth, burst ${state.tbf.burstBytes} B)`,
  );
  if (state.latencyMs)
    console.log(
      `        + ${state.latencyMs} ms each way on migration lanes, added by the hosts (this kernel has no netem)`,
    );
  console.log(`secret  ${state.secretFile}`);
  if (state.bridgeCallsIptables)
    console.log('note    bridged frames pass through iptables (net.bridge.bridge-nf-call-iptables = 1)');
  const [first, second] = state.hosts;
  console.log();
  console.log(`export FERRY_HOST=${first.url} FERRY_SECRET_FILE=${state.secretFile}`);
  console.log('npx ferry vm create kv1 --host $FERRY_HOST --secret-file $FERRY_SECRET_FILE --ram 256');
  if (second)
    console.log(
      `npx ferry migrate kv1 --host $FERRY_HOST --to ${second.url} --secret-file $FERRY_SECRET_FILE --mode postcopy`,
    );
  console.log(`npx ${downCommand(state.dir)}`);
}

export async function labUpCommand(opts: UpOpts): Promise<void> {
  const state = await oneLine(() => up(options(opts)));
  if (opts.json) console.log(JSON.stringify(state, null, 2));
  else printUp(state);
}

export async function labDownCommand(opts: CommonOpts): Promise<void> {
  const r = await oneLine(() => down(options(opts)));
  for (const line of r.done) console.log(line);
  for (const line of r.ignored) console.log(`left alone: ${line}`);
  if (r.done.length === 0) console.log(`nothing to take down in ${opts.dir}`);
}

export async function labStatusCommand(opts: CommonOpts & { json?: boolean }): Promise<void> {
  const s = await oneLine(() => labStatus(options(opts)));
  if (opts.json) return void console.log(JSON.stringify(s, null, 2));
  const yes = (b: boolean) => (b ? 'yes' : 'no');
  const anything = s.bridge.exists || s.hosts.some((h) => h.netnsExists || h.vethExists || h.running);
  console.log(
    s.record
      ? `lab in ${s.dir}: ${s.status}, ${s.mbps === null ? '' : rate(s.mbps)}` +
          (s.latencyMs > 0 ? `, hosts adding ${s.latencyMs} ms to their lanes` : '')
      : `no lab.json in ${s.dir}${anything ? '; found under the lab names:' : ' and nothing under the lab names'}`,
  );
  if (!s.record && !anything) return;
  console.log(`bridge  ${s.bridge.name} ${s.bridge.address}: ${s.bridge.exists ? 'present' : 'absent'}`);
  const shaped = (m: number | null) => (m === null ? '-' : `${m}`);
  console.log(
    table(
      ['host', 'namespace', 'veth', 'Mbit/s bridge→host', 'Mbit/s host→bridge', 'pid', 'API', 'answers'],
      s.hosts.map((h) => [
        h.name,
        `${h.netns}${h.netnsExists ? '' : ' (absent)'}`,
        `${h.veth}${h.vethExists ? '' : ' (absent)'}`,
        shaped(h.shapedMbps.bridgeEnd),
        shaped(h.shapedMbps.hostEnd),
        h.pid === null ? '-' : `${h.pid}${h.running ? '' : ' (gone)'}`,
        h.url,
        h.answers === null ? '? (secret unreadable)' : yes(h.answers),
      ]),
    ),
  );
  if (s.switch)
    console.log(
      `switch  ${s.switch.address}: pid ${s.switch.pid ?? '-'}${s.switch.running ? '' : ' (gone)'}, ` +
        `${s.switch.accepting ? 'accepting' : 'not accepting'} connections`,
    );
  if (s.bridgeCallsIptables)
    console.log('note    bridged frames pass through iptables (net.bridge.bridge-nf-call-iptables = 1)');
}

function common(c: Command): Command {
  c.option('--dir <dir>', 'where lab.json, the secret and the logs live', DEFAULT_DIR);
  c.addOption(
    new Option('--hosts <names>', 'host names, comma-separated; namespaces are ferry-NAME')
      .argParser(parseHosts)
      .default([...DEFAULT_HOSTS], DEFAULT_HOSTS.join(',')),
  )
    .option('--subnet <a.b.c>', "first three octets of the lab's /24", DEFAULT_SUBNET)
    .option('--bridge <name>', 'name of the bridge in the root namespace', DEFAULT_BRIDGE);
  return c;
}

/** Adds `ferry lab` and its subcommands. */
export function registerLab(program: Command): void {
  const lab = program
    .command('lab')
    .description('hosts in network namespaces on this machine, linked through a bridge at a set rate (root)');
  common(
    lab
      .command('up')
      .description(
        `make the namespaces, the bridge and the shaped links, start a host in each namespace ` +
          `(API on :${API_PORT}, lanes on :${LANES_PORT}) and a virtual switch on the bridge (:${SWITCH_PORT})`,
      ),
  )
    .option('--mbps <n>', 'link rate in Mbit/s, each direction', parseMbps, DEFAULT_MBPS)
    .option(
      '--latency <ms>',
      'latency added each way to the migration lanes between hosts (by the hosts: no netem here)',
      parseLatency,
      0,
    )
    .option('--no-switch', 'no virtual switch; hosts start without --switch')
    .option('--timeout <s>', 'how long the processes get to answer', parseSeconds, DEFAULT_TIMEOUT_MS / 1000)
    .option('--json', 'print lab.json instead of the summary')
    .action(labUpCommand);
  common(
    lab
      .command('down')
      .description(
        'stop the processes, delete the namespaces and the bridge (from lab.json, or, without it, ' +
          "what carries this lab's mark under the given names)",
      ),
  ).action(labDownCommand);
  common(lab.command('status').description('show what of the lab exists and answers'))
    .option('--json', 'print JSON')
    .action(labStatusCommand);
}
