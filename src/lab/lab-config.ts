import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isLaneLatency, MAX_LANE_LATENCY_MS } from '../host/lane-latency.ts';
import { LabError, parseIpv4, type Tbf, tbfFor } from './netns.ts';

export const API_PORT = 7001;
export const LANES_PORT = 7002;
export const SWITCH_PORT = 7100;
export const DEFAULT_HOSTS = ['a', 'b'];
export const DEFAULT_MBPS = 1000;
export const DEFAULT_SUBNET = '10.77.0';
export const DEFAULT_BRIDGE = 'ferrybr0';
export const DEFAULT_DIR = '.ferry-lab';
export const DEFAULT_TIMEOUT_MS = 20_000;
/** The device name of each host's end of its veth pair, inside its namespace. */
export const INNER_DEV = 'eth0';
/** SIGTERM first; whatever still runs this long after gets SIGKILL. */
export const KILL_GRACE_MS = 3000;

export const FERRY_BIN = fileURLToPath(new URL('../../bin/ferry.mjs', import.meta.url));

export const NEEDS_ROOT = 'ferry lab needs root (network namespaces and tc qdiscs): run it as root';

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

export function requireRoot(): void {
  if (!isRoot()) throw new LabError(NEEDS_ROOT);
}

export const netnsName = (host: string) => `ferry-${host}`;
export const vethName = (host: string) => `fv-${host}`;

// ---------------------------------------------------------------------------------------
// Configuration

export interface LabOptions {
  /** Host names (default a, b); each gets the namespace ferry-NAME. */
  hosts?: string[];
  /** Link rate in Mbit/s, each direction (default 1000). */
  mbps?: number;
  /**
   * Latency (ms) each host adds to the messages reaching it on a migration lane (default 0):
   * tc here has no netem, so the hosts add it (`ferry host --lane-latency`).
   */
  latencyMs?: number;
  /** First three octets of the lab's /24 (default 10.77.0). */
  subnet?: string;
  /** The bridge's name (default ferrybr0). */
  bridge?: string;
  /** Where lab.json, the secret and the logs live (default .ferry-lab). */
  dir?: string;
  /** Start a virtual switch and point the hosts at it (default true). */
  switch?: boolean;
  /** How long the processes get to answer (default 20 s). */
  timeoutMs?: number;
}

export interface LabConfig {
  hosts: string[];
  mbps: number;
  latencyMs: number;
  subnet: string;
  bridge: string;
  /** Absolute. */
  dir: string;
  withSwitch: boolean;
  timeoutMs: number;
}

export function labConfig(o: LabOptions = {}): LabConfig {
  const hosts = o.hosts ?? DEFAULT_HOSTS;
  if (hosts.length === 0) throw new LabError('--hosts: name at least one host');
  if (hosts.length > 253) throw new LabError('--hosts: at most 253 hosts fit in one /24');
  // the root end of the veth is fv-NAME and a link name has at most 15 characters
  for (const h of hosts)
    if (!/^[a-z0-9][a-z0-9_-]{0,11}$/i.test(h))
      throw new LabError(
        `--hosts: '${h}' is not a host name (letters, digits, - and _, at most 12 characters)`,
      );
  const dup = hosts.find((h, i) => hosts.indexOf(h) !== i);
  if (dup) throw new LabError(`--hosts: '${dup}' is named twice`);
  const mbps = o.mbps ?? DEFAULT_MBPS;
  if (!Number.isFinite(mbps) || mbps < 0.01 || mbps > 1_000_000)
    throw new LabError('--mbps must be a number of Mbit/s between 0.01 and 1000000');
  const latencyMs = o.latencyMs ?? 0;
  if (!isLaneLatency(latencyMs))
    throw new LabError(`--latency must be a number of ms from 0 to ${MAX_LANE_LATENCY_MS}`);
  const subnet = o.subnet ?? DEFAULT_SUBNET;
  if (parseIpv4(`${subnet}.0`) === undefined)
    throw new LabError(`--subnet: '${subnet}' is not the first three octets of an IPv4 /24, e.g. 10.77.0`);
  const bridge = o.bridge ?? DEFAULT_BRIDGE;
  if (!/^[a-z0-9][a-z0-9_.-]{0,14}$/i.test(bridge))
    throw new LabError(`--bridge: '${bridge}' is not a link name (at most 15 letters, digits, ., - and _)`);
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new LabError('--timeout must be > 0');
  return {
    hosts,
    mbps,
    latencyMs,
    subnet,
    bridge,
    dir: resolve(o.dir ?? DEFAULT_DIR),
    withSwitch: o.switch ?? true,
    timeoutMs,
  };
}

/** The alias every link of the lab in `dir` carries. */
export function labMarker(dir: string): string {
  return `ferry-lab ${dir}`.slice(0, 250);
}

/** The command that takes the lab in `dir` down. */
export function downCommand(dir: string): string {
  return resolve(DEFAULT_DIR) === dir ? 'ferry lab down' : `ferry lab down --dir ${dir}`;
}

// ---------------------------------------------------------------------------------------
// Layout: names and addresses, derived from the configuration alone

export interface HostLayout {
  name: string;
  netns: string;
  /** The root end of the host's veth pair (on the bridge). */
  veth: string;
  ip: string;
  /** The control API. */
  url: string;
  /** Where the host accepts migration lanes. */
  lanes: string;
}

export interface Layout {
  bridge: { name: string; ip: string; cidr: string };
  hosts: HostLayout[];
  switchAddress: string | null;
  tbf: Tbf;
  secretFile: string;
  marker: string;
}

export function layout(config: LabConfig): Layout {
  const bridgeIp = `${config.subnet}.254`;
  return {
    bridge: { name: config.bridge, ip: bridgeIp, cidr: `${bridgeIp}/24` },
    hosts: config.hosts.map((name, i) => {
      const ip = `${config.subnet}.${i + 1}`;
      return {
        name,
        netns: netnsName(name),
        veth: vethName(name),
        ip,
        url: `http://${ip}:${API_PORT}`,
        lanes: `${ip}:${LANES_PORT}`,
      };
    }),
    switchAddress: config.withSwitch ? `${bridgeIp}:${SWITCH_PORT}` : null,
    tbf: tbfFor(config.mbps),
    secretFile: join(config.dir, 'secret'),
    marker: labMarker(config.dir),
  };
}

// ---------------------------------------------------------------------------------------
// Processes

export type Readiness = { kind: 'api'; url: string } | { kind: 'tcp'; host: string; port: number };

export interface ProcessSpec {
  /** `switch` or the host's name; also names the log file. */
  name: string;
  role: 'switch' | 'host';
  /** The namespace it runs in; null for the root namespace. */
  netns: string | null;
  /** Arguments of `ferry`. */
  argv: string[];
  log: string;
  ready: Readiness;
  /** A stage starts once every process of the stages before it answers. */
  stage: number;
}

/** The lab's processes: the switch (if any) first, then one host per namespace. */
export function labProcesses(config: LabConfig, lay: Layout = layout(config)): ProcessSpec[] {
  const specs: ProcessSpec[] = [];
  if (lay.switchAddress)
    specs.push({
      name: 'switch',
      role: 'switch',
      netns: null,
      argv: [
        'switch',
        '--listen',
        lay.switchAddress,
        '--secret-file',
        lay.secretFile,
        '--clients-host',
        '127.0.0.1',
      ],
      log: join(config.dir, 'switch.log'),
      ready: { kind: 'tcp', host: lay.bridge.ip, port: SWITCH_PORT },
      stage: 0,
    });
  for (const h of lay.hosts)
    specs.push({
      name: h.name,
      role: 'host',
      netns: h.netns,
      argv: [
        'host',
        '--listen',
        `${h.ip}:${API_PORT}`,
        '--id',
        h.name,
        '--secret-file',
        lay.secretFile,
        '--lanes-port',
        String(LANES_PORT),
        ...(lay.switchAddress ? ['--switch', lay.switchAddress] : []),
        ...(config.latencyMs > 0 ? ['--lane-latency', String(config.latencyMs)] : []),
      ],
      log: join(config.dir, `${h.name}.log`),
      ready: { kind: 'api', url: h.url },
      stage: 1,
    });
  return specs;
}
