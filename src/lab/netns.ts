// Network namespaces, veth pairs, a bridge and tbf qdiscs: thin wrappers over `ip` and `tc`.
// A failing command is reported with its arguments and its stderr, so a failure names what
// was being done and what the kernel said.

import { execFile } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** A lab failure the CLI prints as one line (exit status 2). */
export class LabError extends Error {}

/** A command that exited non-zero (or could not run). */
export class CommandError extends LabError {
  constructor(
    readonly command: string,
    readonly stderr: string,
  ) {
    super(`\`${command}\` failed: ${stderr.trim().split('\n').join(' / ') || 'no message'}`);
  }
}

export type Tool = 'ip' | 'tc';

const toolPaths = new Map<Tool, string>();

/** Where `ip` or `tc` lives: the PATH first, then the sbin folders a non-login PATH may lack. */
export function findTool(tool: Tool): string {
  const known = toolPaths.get(tool);
  if (known) return known;
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const p = join(dir, tool);
    try {
      accessSync(p, constants.X_OK);
      toolPaths.set(tool, p);
      return p;
    } catch {}
  }
  throw new LabError(`\`${tool}\` not found (it comes with iproute2); ferry lab needs ip and tc`);
}

function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** The command as a shell line, for messages. */
export function commandLine(tool: string, args: string[]): string {
  return [tool, ...args].map(quote).join(' ');
}

/** Runs `ip` or `tc`; resolves with its stdout, rejects with a CommandError. */
export function run(tool: Tool, args: string[]): Promise<string> {
  const path = findTool(tool);
  return new Promise((resolve, reject) => {
    execFile(path, args, { encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new CommandError(commandLine(tool, args), stderr || err.message));
      else resolve(stdout);
    });
  });
}

/** `-n NS` for commands run inside a namespace; nothing for the root namespace. */
function nsArgs(netns: string | null | undefined): string[] {
  return netns ? ['-n', netns] : [];
}

// ---------------------------------------------------------------------------------------
// Namespaces

export async function listNetns(): Promise<string[]> {
  const out = await run('ip', ['netns', 'list']);
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter(Boolean);
}

export async function netnsExists(name: string): Promise<boolean> {
  return (await listNetns()).includes(name);
}

export async function addNetns(name: string): Promise<void> {
  await run('ip', ['netns', 'add', name]);
}

export async function delNetns(name: string): Promise<void> {
  await run('ip', ['netns', 'del', name]);
}

/** The processes living in a namespace. */
export async function netnsPids(name: string): Promise<number[]> {
  const out = await run('ip', ['netns', 'pids', name]);
  return out
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((n) => Number.isInteger(n) && n > 0);
}

// ---------------------------------------------------------------------------------------
// Links

export interface LinkInfo {
  ifname: string;
  ifalias?: string;
  master?: string;
  operstate?: string;
  flags?: string[];
}

/** A link's details, or undefined when there is no such link (in that namespace). */
export async function linkInfo(dev: string, netns?: string | null): Promise<LinkInfo | undefined> {
  let out: string;
  try {
    out = await run('ip', [...nsArgs(netns), '-j', 'link', 'show', 'dev', dev]);
  } catch (e) {
    if (e instanceof CommandError && /does not exist|cannot find device|no such device/i.test(e.stderr))
      return undefined;
    throw e;
  }
  const links = JSON.parse(out || '[]') as LinkInfo[];
  return links[0];
}

export async function linkExists(dev: string, netns?: string | null): Promise<boolean> {
  return (await linkInfo(dev, netns)) !== undefined;
}

export async function addBridge(name: string): Promise<void> {
  await run('ip', ['link', 'add', name, 'type', 'bridge']);
}

/**
 * A veth pair: `rootEnd` stays in the root namespace, its peer is created directly inside
 * `netns` under the name `peerName` (so a peer named eth0 never meets the root's eth0).
 */
export async function addVeth(rootEnd: string, netns: string, peerName: string): Promise<void> {
  await run('ip', ['link', 'add', rootEnd, 'type', 'veth', 'peer', 'name', peerName, 'netns', netns]);
}

/** Deleting one end of a veth pair deletes both, at once. */
export async function delLink(dev: string, netns?: string | null): Promise<void> {
  await run('ip', [...nsArgs(netns), 'link', 'del', 'dev', dev]);
}

export async function setAlias(dev: string, alias: string, netns?: string | null): Promise<void> {
  await run('ip', [...nsArgs(netns), 'link', 'set', 'dev', dev, 'alias', alias]);
}

export async function setMaster(dev: string, bridge: string): Promise<void> {
  await run('ip', ['link', 'set', 'dev', dev, 'master', bridge]);
}

export async function linkUp(dev: string, netns?: string | null): Promise<void> {
  await run('ip', [...nsArgs(netns), 'link', 'set', 'dev', dev, 'up']);
}

export async function addAddress(dev: string, cidr: string, netns?: string | null): Promise<void> {
  await run('ip', [...nsArgs(netns), 'addr', 'add', cidr, 'dev', dev]);
}

// ---------------------------------------------------------------------------------------
// Addresses and routes of the root namespace (to avoid a subnet already in use)

export interface Ipv4Range {
  /** Where it was seen, e.g. `route 10.0.0.0/8 dev eth0` or `address 10.77.0.5/16 on br0`. */
  what: string;
  base: number;
  prefix: number;
}

export function parseIpv4(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
}

function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Whether two IPv4 prefixes share any address. */
export function rangesOverlap(a: { base: number; prefix: number }, b: { base: number; prefix: number }) {
  const p = Math.min(a.prefix, b.prefix);
  return (a.base & mask(p)) >>> 0 === (b.base & mask(p)) >>> 0;
}

/** The IPv4 addresses and routes of the root namespace (default routes left out). */
export async function rootIpv4Ranges(): Promise<Ipv4Range[]> {
  const ranges: Ipv4Range[] = [];
  const addrs = JSON.parse((await run('ip', ['-j', '-4', 'addr', 'show'])) || '[]') as {
    ifname: string;
    addr_info?: { local: string; prefixlen: number }[];
  }[];
  for (const link of addrs)
    for (const a of link.addr_info ?? []) {
      const base = parseIpv4(a.local);
      if (base !== undefined)
        ranges.push({
          what: `address ${a.local}/${a.prefixlen} on ${link.ifname}`,
          base,
          prefix: a.prefixlen,
        });
    }
  const routes = JSON.parse((await run('ip', ['-j', '-4', 'route', 'show', 'table', 'main'])) || '[]') as {
    dst: string;
    dev?: string;
  }[];
  for (const r of routes) {
    if (r.dst === 'default') continue;
    const [ip, len] = r.dst.split('/');
    const base = parseIpv4(ip);
    if (base === undefined) continue;
    const prefix = len === undefined ? 32 : Number(len);
    if (prefix === 0) continue;
    ranges.push({ what: `route ${r.dst}${r.dev ? ` dev ${r.dev}` : ''}`, base, prefix });
  }
  return ranges;
}

// ---------------------------------------------------------------------------------------
// Token-bucket shaping

export interface Tbf {
  /** Rate in kbit/s (1000 bit/s). */
  rateKbit: number;
  /** Bucket size in bytes. */
  burstBytes: number;
  /** How long a packet may wait in the queue before it is dropped; sets the queue length. */
  latencyMs: number;
}

/**
 * The tbf bucket for a rate: 4 ms of traffic at that rate (rate/250, so a timer running at
 * 250 Hz still finds enough tokens for the traffic of one tick), and never below 4,000
 * bytes (32 kbit, a little over two full 1500-byte frames, so a frame always fits).
 * Larger GSO packets are cut into frames by tbf itself. 100 Mbit/s → 50,000 B,
 * 1 Gbit/s → 500,000 B.
 */
export function tbfBurstBytes(rateKbit: number): number {
  return Math.max(Math.ceil((rateKbit * 1000) / 8 / 250), 4000);
}

/**
 * The queue behind the bucket holds 5 ms of traffic: enough for TCP at full rate on a
 * short path, short enough that a lane filling the link does not add tens of
 * milliseconds to every other lane's round trip.
 */
export const TBF_LATENCY_MS = 5;

export function tbfFor(mbps: number): Tbf {
  const rateKbit = Math.max(1, Math.round(mbps * 1000));
  return { rateKbit, burstBytes: tbfBurstBytes(rateKbit), latencyMs: TBF_LATENCY_MS };
}

/** Sets (or replaces) a tbf root qdisc on a device's egress. */
export async function setTbf(dev: string, tbf: Tbf, netns?: string | null): Promise<void> {
  await run('tc', [
    ...nsArgs(netns),
    'qdisc',
    'replace',
    'dev',
    dev,
    'root',
    'tbf',
    'rate',
    `${tbf.rateKbit}kbit`,
    'burst',
    String(tbf.burstBytes),
    'latency',
    `${tbf.latencyMs}ms`,
  ]);
}

/** The tbf root qdisc of a device, if it has one: rate in bytes/s and burst in bytes. */
export async function tbfOf(
  dev: string,
  netns?: string | null,
): Promise<{ rateBytes: number; burstBytes: number } | undefined> {
  let out: string;
  try {
    out = await run('tc', [...nsArgs(netns), '-j', 'qdisc', 'show', 'dev', dev]);
  } catch {
    return undefined;
  }
  const qdiscs = JSON.parse(out || '[]') as {
    kind: string;
    root?: boolean;
    options?: { rate?: number; burst?: number };
  }[];
  const q = qdiscs.find((d) => d.kind === 'tbf' && d.root);
  return q ? { rateBytes: q.options?.rate ?? 0, burstBytes: q.options?.burst ?? 0 } : undefined;
}

// ---------------------------------------------------------------------------------------
// Bridge netfilter

/**
 * With br_netfilter active (`net.bridge.bridge-nf-call-iptables = 1`), frames crossing a
 * bridge go through iptables' FORWARD chain, so a FORWARD policy of DROP (Docker sets
 * one) silently drops traffic between the namespaces. Undefined when br_netfilter is not
 * loaded (bridged frames then skip iptables).
 */
export function bridgeCallsIptables(): boolean | undefined {
  try {
    return readFileSync('/proc/sys/net/bridge/bridge-nf-call-iptables', 'utf8').trim() === '1';
  } catch {
    return undefined;
  }
}

/** The FORWARD chain's policy, when iptables is installed and answers (e.g. `DROP`). */
export async function iptablesForwardPolicy(): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin'];
  const path = dirs
    .filter(Boolean)
    .map((d) => join(d, 'iptables'))
    .find((p) => {
      try {
        accessSync(p, constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  if (!path) return undefined;
  return new Promise((resolve) => {
    execFile(path, ['-S', 'FORWARD'], { encoding: 'utf8', timeout: 5000 }, (err, stdout) => {
      resolve(err ? undefined : /^-P FORWARD (\S+)/m.exec(stdout)?.[1]);
    });
  });
}

/** How to let bridged traffic through when a firewall drops it. */
export async function forwardingAdvice(bridge: string): Promise<string> {
  const viaIptables = bridgeCallsIptables();
  const policy = await iptablesForwardPolicy();
  if (viaIptables)
    return (
      'frames crossing a bridge pass through iptables here (net.bridge.bridge-nf-call-iptables = 1) ' +
      (policy && policy !== 'ACCEPT'
        ? `and the FORWARD policy is ${policy}`
        : 'and a FORWARD policy of DROP (Docker sets one) or a FORWARD rule probably drops them') +
      `: allow them with \`iptables -I FORWARD -i ${bridge} -o ${bridge} -j ACCEPT\` ` +
      '(or `sysctl -w net.bridge.bridge-nf-call-iptables=0`), then run `ferry lab up` again'
    );
  return `check the firewall (iptables/nftables INPUT and FORWARD rules) for traffic on ${bridge}`;
}
