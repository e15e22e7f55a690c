// The lab: ferry hosts on one machine, each in its own network namespace, joined by a bridge
// in the root namespace over veth pairs whose both ends are shaped by a token bucket (tbf),
// so traffic between two hosts is limited in each direction. A virtual switch, when there
// is one, runs in the root namespace on the bridge's address.
//
// Everything made is recorded in DIR/lab.json as it is made, so taking the lab down (or
// undoing a start that failed midway) removes exactly that. Every link the lab makes
// carries the alias `ferry-lab DIR`, which lets `down` recognise a lab's leftovers when
// lab.json is gone without ever touching links or namespaces it did not make.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { call } from '../host/api.ts';
import {
  addAddress,
  addBridge,
  addNetns,
  addVeth,
  bridgeCallsIptables,
  CommandError,
  commandLine,
  delLink,
  delNetns,
  findTool,
  forwardingAdvice,
  LabError,
  linkInfo,
  linkUp,
  netnsExists,
  netnsPids,
  parseIpv4,
  rangesOverlap,
  rootIpv4Ranges,
  setAlias,
  setMaster,
  setTbf,
  type Tbf,
  tbfFor,
  tbfOf,
} from './netns.ts';

export { LabError } from './netns.ts';

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
const KILL_GRACE_MS = 3000;

const FERRY_BIN = fileURLToPath(new URL('../../bin/ferry.mjs', import.meta.url));

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
      ],
      log: join(config.dir, `${h.name}.log`),
      ready: { kind: 'api', url: h.url },
      stage: 1,
    });
  return specs;
}

// ---------------------------------------------------------------------------------------
// The record: DIR/lab.json

export interface ProcessRecord {
  name: string;
  role: 'switch' | 'host';
  netns: string | null;
  /** The whole command line it was started with. */
  command: string[];
  pid: number;
  /** Clock ticks after boot (from /proc), to tell it from a later process with the same pid. */
  startTime?: number;
  log: string;
}

export interface QdiscRecord extends Tbf {
  dev: string;
  netns: string | null;
}

export interface LabState {
  version: 1;
  /** `starting` until every process answered. */
  status: 'starting' | 'up';
  dir: string;
  marker: string;
  createdAt: string;
  mbps: number;
  tbf: Tbf;
  subnet: string;
  secretFile: string;
  switchAddress: string | null;
  /** Made so far, in order. */
  bridge: { name: string; address: string } | null;
  netns: string[];
  veths: { root: string; netns: string; peer: string }[];
  qdiscs: QdiscRecord[];
  hosts: (HostLayout & { log: string })[];
  processes: ProcessRecord[];
  /** Whether bridged frames pass through iptables (null: br_netfilter not loaded). */
  bridgeCallsIptables: boolean | null;
}

export function statePath(dir: string): string {
  return join(dir, 'lab.json');
}

export function readState(dir: string): LabState | undefined {
  const path = statePath(dir);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new LabError(`cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    const s = JSON.parse(text) as LabState;
    if (s.version === 1 && Array.isArray(s.netns) && Array.isArray(s.processes)) return s;
  } catch {}
  throw new LabError(`${path} is not a lab record; remove it if no lab is up`);
}

function saveState(state: LabState): void {
  const path = statePath(state.dir);
  writeFileSync(`${path}.tmp`, `${JSON.stringify(state, null, 2)}\n`);
  renameSync(`${path}.tmp`, path);
}

/** The secret in DIR/secret: kept if it is there, else 32 random bytes written as hex. */
function ensureSecret(file: string): string {
  try {
    const text = readFileSync(file, 'utf8').trim();
    if (/^[0-9a-f]{32,}$/i.test(text) && text.length % 2 === 0) return text.toLowerCase();
  } catch {}
  const hex = randomBytes(32).toString('hex');
  writeFileSync(file, `${hex}\n`, { mode: 0o600 });
  return hex;
}

// ---------------------------------------------------------------------------------------
// Processes: liveness and identity from /proc

interface ProcStat {
  state: string;
  pgid: number;
  startTime: number;
}

function procStat(pid: number): ProcStat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) may hold spaces and parentheses: fields resume after the last ')'
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0], pgid: Number(rest[2]), startTime: Number(rest[19]) };
  } catch {
    return undefined;
  }
}

function procArgs(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
  } catch {
    return [];
  }
}

/** Alive and not a zombie. */
export function pidAlive(pid: number): boolean {
  const s = procStat(pid);
  return s !== undefined && s.state !== 'Z' && s.state !== 'X';
}

/** The recorded process is still running (and is still the one that was started). */
export function processAlive(p: ProcessRecord): boolean {
  const s = procStat(p.pid);
  if (!s || s.state === 'Z' || s.state === 'X') return false;
  if (p.startTime !== undefined && s.startTime !== p.startTime) return false;
  return procArgs(p.pid).some((a) => a.endsWith('ferry.mjs'));
}

/**
 * Running `ferry host`/`ferry switch` processes of a lab: the shared secret file and a
 * listen address inside the lab's subnet on their command line.
 */
function findLabProcesses(secretFile: string, subnet: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid || !pidAlive(pid)) continue;
    const args = procArgs(pid);
    const bin = args.findIndex((a) => a.endsWith('ferry.mjs'));
    if (bin < 0 || !['host', 'switch'].includes(args[bin + 1])) continue;
    const value = (flag: string) => {
      const i = args.indexOf(flag, bin);
      return i < 0 ? undefined : args[i + 1];
    };
    if (value('--secret-file') === secretFile && value('--listen')?.startsWith(`${subnet}.`)) found.push(pid);
  }
  return found;
}

/** `switch` or `host NAME`, for messages. */
function label(p: { role: 'switch' | 'host'; name: string }): string {
  return p.role === 'switch' ? 'switch' : `host ${p.name}`;
}

/** The same, from a running process's command line. */
function labelOf(pid: number): string {
  const args = procArgs(pid);
  if (args[args.findIndex((a) => a.endsWith('ferry.mjs')) + 1] === 'switch') return 'switch';
  const id = args.indexOf('--id');
  return id < 0 ? 'host' : `host ${args[id + 1]}`;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  const s = procStat(pid);
  try {
    // a detached process leads its own group: signal the whole group
    process.kill(s?.pgid === pid ? -pid : pid, sig);
  } catch {}
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** SIGTERM, then SIGKILL to whatever still runs after the grace period. */
async function stopPids(pids: number[], graceMs = KILL_GRACE_MS): Promise<number[]> {
  const stubborn: number[] = [];
  for (const pid of pids) signal(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (pids.some(pidAlive) && Date.now() < deadline) await sleep(50);
  for (const pid of pids.filter(pidAlive)) {
    stubborn.push(pid);
    signal(pid, 'SIGKILL');
  }
  const hard = Date.now() + 2000;
  while (pids.some(pidAlive) && Date.now() < hard) await sleep(50);
  return stubborn;
}

function logTail(file: string, lines = 4): string {
  try {
    const all = readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('$ '));
    const tail = all.slice(-lines).join(' / ');
    return tail ? `: ${tail.length > 400 ? `…${tail.slice(-400)}` : tail}` : '';
  } catch {
    return '';
  }
}

/** Where the readiness check looks, for messages. */
function readinessTarget(r: Readiness): string {
  return r.kind === 'api' ? `GET ${r.url}/v1/vms` : `TCP ${r.host}:${r.port}`;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms (${what})`)), ms);
    }),
  ]);
}

/** One readiness check: undefined when it answers, else why not. */
async function checkReady(r: Readiness, secretHex: string): Promise<string | undefined> {
  try {
    if (r.kind === 'api') {
      const vms = await withTimeout(call<unknown>(r.url, secretHex, 'GET', '/v1/vms'), 2000, r.url);
      return Array.isArray(vms) ? undefined : 'the answer is not a list of VMs';
    }
    await tcpConnect(r.host, r.port, 2000);
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

function tcpConnect(host: string, port: number, timeoutMs: number): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const s = net.connect({ host, port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`${host}:${port}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolvePromise();
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(`${host}:${port}: ${e.code ?? e.message}`));
    });
  });
}

/** The command that runs `argv` in a namespace (or as is, for the root namespace). */
export function inNetns(netns: string | null, argv: string[]): { file: string; args: string[] } {
  return netns
    ? { file: findTool('ip'), args: ['netns', 'exec', netns, ...argv] }
    : { file: argv[0], args: argv.slice(1) };
}

interface Started {
  spec: ProcessSpec;
  exited?: string;
}

/** Starts a process detached, its output in its log file; records it before anything else. */
function startProcess(state: LabState, spec: ProcessSpec): Started {
  const { file, args } = inNetns(spec.netns, [process.execPath, FERRY_BIN, ...spec.argv]);
  const fd = openSync(spec.log, 'w');
  writeSync(fd, `$ ${commandLine(file, args)}\n`);
  const started: Started = { spec };
  try {
    const child = spawn(file, args, { cwd: state.dir, detached: true, stdio: ['ignore', fd, fd] });
    child.once('error', (e) => {
      started.exited = `could not start: ${e.message}`;
    });
    child.once('exit', (code, sig) => {
      started.exited = sig ? `was killed by ${sig}` : `exited with status ${code}`;
    });
    child.unref();
    if (child.pid === undefined) throw new LabError(`cannot start ${label(spec)}: ${file} did not run`);
    state.processes.push({
      name: spec.name,
      role: spec.role,
      netns: spec.netns,
      command: [file, ...args],
      pid: child.pid,
      startTime: procStat(child.pid)?.startTime,
      log: spec.log,
    });
    saveState(state);
  } finally {
    closeSync(fd);
  }
  return started;
}

async function waitReady(
  s: Started,
  secretHex: string,
  deadline: number,
  timeoutMs: number,
  checkpoint: () => void,
): Promise<void> {
  const { spec } = s;
  let why: string | undefined = 'not checked yet';
  for (;;) {
    checkpoint();
    if (s.exited)
      throw new LabError(
        `${label(spec)} ${s.exited} before it answered; see ${spec.log}${logTail(spec.log)}`,
      );
    why = await checkReady(spec.ready, secretHex);
    if (why === undefined) return;
    if (Date.now() >= deadline)
      throw new LabError(
        `${label(spec)} did not answer ${readinessTarget(spec.ready)} within ` +
          `${timeoutMs / 1000} s (last: ${why}); see ${spec.log}${logTail(spec.log)}`,
      );
    await sleep(100);
  }
}

/** Starts the processes stage by stage, each stage once the one before answers. */
async function startProcesses(
  state: LabState,
  specs: ProcessSpec[],
  timeoutMs: number,
  checkpoint: () => void,
): Promise<void> {
  const secretHex = readFileSync(state.secretFile, 'utf8').trim();
  const stages = [...new Set(specs.map((s) => s.stage))].sort((a, b) => a - b);
  for (const stage of stages) {
    const started = specs.filter((s) => s.stage === stage).map((s) => startProcess(state, s));
    const deadline = Date.now() + timeoutMs;
    await Promise.all(started.map((s) => waitReady(s, secretHex, deadline, timeoutMs, checkpoint)));
  }
}

// ---------------------------------------------------------------------------------------
// Connectivity across the bridge

const PROBE = `
const net = require('node:net');
const targets = JSON.parse(process.argv[1]);
Promise.all(targets.map(([host, port]) => new Promise((done) => {
  const s = net.connect({ host, port });
  const t = setTimeout(() => { s.destroy(); done(host + ':' + port + ': no answer within 2 s'); }, 2000);
  s.once('connect', () => { clearTimeout(t); s.destroy(); done(null); });
  s.once('error', (e) => { clearTimeout(t); done(host + ':' + port + ': ' + (e.code || e.message)); });
}))).then((r) => console.log(JSON.stringify(r)));
`;

/** Runs a command to its end; resolves with its stdout, rejects with a CommandError. */
function runToEnd(file: string, args: string[]): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
    });
    child.once('error', (e) => reject(new CommandError(commandLine(file, args), e.message)));
    child.once('close', (code) => {
      if (code === 0) resolvePromise(out);
      else reject(new CommandError(commandLine(file, args), err || `exited with status ${code}`));
    });
  });
}

/**
 * From each namespace, connects to the next host's API and to the switch: traffic that
 * crosses the bridge (between namespaces) and traffic into the root namespace. A firewall
 * dropping bridged frames shows up here, with advice, rather than as a migration that hangs.
 */
export async function probeAcrossBridge(state: LabState): Promise<void> {
  const hosts = state.hosts;
  const failures: string[] = [];
  await Promise.all(
    hosts.map(async (h, i) => {
      const targets: [string, number][] = [];
      if (hosts.length > 1) targets.push([hosts[(i + 1) % hosts.length].ip, API_PORT]);
      if (state.switchAddress) targets.push([state.switchAddress.split(':')[0], SWITCH_PORT]);
      if (targets.length === 0) return;
      const { file, args } = inNetns(h.netns, [process.execPath, '-e', PROBE, JSON.stringify(targets)]);
      const out = await runToEnd(file, args);
      const results = JSON.parse(out) as (string | null)[];
      for (const r of results) if (r) failures.push(`from ${h.netns} to ${r}`);
    }),
  );
  if (failures.length > 0)
    throw new LabError(
      `traffic does not cross the bridge ${state.bridge?.name} (${failures.join('; ')}): ` +
        (await forwardingAdvice(state.bridge?.name ?? '')),
    );
}

// ---------------------------------------------------------------------------------------
// Up

/** Refuses names, links and addresses already taken, naming what holds them. */
async function preflight(config: LabConfig, lay: Layout): Promise<void> {
  const owner = (alias: string | undefined) =>
    alias === lay.marker
      ? `left by an earlier lab in ${config.dir}: run \`${downCommand(config.dir)}\` first`
      : alias?.startsWith('ferry-lab ')
        ? `it belongs to the lab in ${alias.slice('ferry-lab '.length)}: run \`ferry lab down --dir ${alias.slice('ferry-lab '.length)}\` or pick another name`
        : 'not made by a ferry lab; pick another name';
  const bridge = await linkInfo(lay.bridge.name);
  if (bridge) throw new LabError(`a link named ${lay.bridge.name} already exists (${owner(bridge.ifalias)})`);
  for (const h of lay.hosts) {
    if (await netnsExists(h.netns)) {
      const inner = await linkInfo(INNER_DEV, h.netns).catch(() => undefined);
      throw new LabError(`the network namespace ${h.netns} already exists (${owner(inner?.ifalias)})`);
    }
    const veth = await linkInfo(h.veth);
    if (veth) throw new LabError(`a link named ${h.veth} already exists (${owner(veth.ifalias)})`);
  }
  const lab = { base: parseIpv4(`${config.subnet}.0`)!, prefix: 24 };
  const clash = (await rootIpv4Ranges()).find((r) => rangesOverlap(r, lab));
  if (clash)
    throw new LabError(
      `--subnet ${config.subnet}: ${config.subnet}.0/24 is already in use here (${clash.what}); pick another --subnet`,
    );
}

/** Makes the bridge, then each host's namespace and shaped veth pair; records each as made. */
async function build(state: LabState, lay: Layout, checkpoint: () => void): Promise<void> {
  const br = lay.bridge;
  await addBridge(br.name);
  state.bridge = { name: br.name, address: br.cidr };
  saveState(state);
  checkpoint();
  await setAlias(br.name, lay.marker);
  await addAddress(br.name, br.cidr);
  await linkUp(br.name);
  for (const h of lay.hosts) {
    await addNetns(h.netns);
    state.netns.push(h.netns);
    saveState(state);
    checkpoint();
    await linkUp('lo', h.netns);
    await addVeth(h.veth, h.netns, INNER_DEV);
    state.veths.push({ root: h.veth, netns: h.netns, peer: INNER_DEV });
    saveState(state);
    checkpoint();
    await setAlias(h.veth, lay.marker);
    await setAlias(INNER_DEV, lay.marker, h.netns);
    await setMaster(h.veth, br.name);
    await addAddress(INNER_DEV, `${h.ip}/24`, h.netns);
    // egress of each end: the bridge end limits traffic towards the host, the host end
    // traffic from it
    for (const [dev, netns] of [
      [h.veth, null],
      [INNER_DEV, h.netns],
    ] as const) {
      await setTbf(dev, lay.tbf, netns);
      state.qdiscs.push({ dev, netns, ...lay.tbf });
    }
    await linkUp(h.veth);
    await linkUp(INNER_DEV, h.netns);
    state.hosts.push({ ...h, log: join(state.dir, `${h.name}.log`) });
    saveState(state);
    checkpoint();
  }
}

/**
 * Brings a lab up: checks, builds the topology, starts the processes and waits until each
 * answers, then checks traffic crosses the bridge. A failure anywhere undoes everything
 * made so far and reports what failed.
 */
export async function up(options: LabOptions = {}): Promise<LabState> {
  requireRoot();
  const config = labConfig(options);
  findTool('ip');
  findTool('tc');
  mkdirSync(config.dir, { recursive: true });
  const previous = readState(config.dir);
  if (previous) {
    const alive = await aliveParts(previous);
    if (alive.length > 0)
      throw new LabError(
        `${previous.status === 'up' ? 'a lab is already up' : 'a lab start that did not finish left things'} ` +
          `in ${config.dir} (${alive.join(', ')}): run \`${downCommand(config.dir)}\` first`,
      );
    rmSync(statePath(config.dir), { force: true });
  }
  const lay = layout(config);
  await preflight(config, lay);
  ensureSecret(lay.secretFile);
  const state = emptyState(config, lay, {
    status: 'starting',
    createdAt: new Date().toISOString(),
    switchAddress: lay.switchAddress,
    bridgeCallsIptables: bridgeCallsIptables() ?? null,
  });
  saveState(state);
  // Ctrl-C (or SIGTERM) while starting: stop at the next step and undo, rather than leave
  // half a lab behind
  let interrupted: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    interrupted = sig;
  };
  const checkpoint = () => {
    if (interrupted) throw new LabError(`interrupted by ${interrupted}`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await build(state, lay, checkpoint);
    await startProcesses(state, labProcesses(config, lay), config.timeoutMs, checkpoint);
    await probeAcrossBridge(state);
    checkpoint();
    state.status = 'up';
    saveState(state);
    return state;
  } catch (e) {
    const undo = await teardown(state, false);
    const reason = e instanceof Error ? e.message : String(e);
    if (undo.errors.length === 0) rmSync(statePath(config.dir), { force: true });
    throw new LabError(
      undo.errors.length === 0
        ? `${reason} (what the lab had made is removed again)`
        : `${reason}; removing what was made also failed (${undo.errors.join('; ')}): run \`${downCommand(config.dir)}\``,
    );
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

// ---------------------------------------------------------------------------------------
// Down

/** A link is the lab's if it carries its marker (or, when `lenient`, carries no alias). */
/** A record of a lab that has made nothing yet. */
function emptyState(
  config: LabConfig,
  lay: Layout,
  over: Pick<LabState, 'status' | 'createdAt' | 'switchAddress'> & Partial<LabState>,
): LabState {
  return {
    version: 1,
    dir: config.dir,
    marker: lay.marker,
    mbps: config.mbps,
    tbf: lay.tbf,
    subnet: config.subnet,
    secretFile: lay.secretFile,
    bridge: null,
    netns: [],
    veths: [],
    qdiscs: [],
    hosts: [],
    processes: [],
    bridgeCallsIptables: null,
    ...over,
  };
}

function owned(alias: string | undefined, marker: string, lenient: boolean): boolean {
  return alias === marker || (lenient && alias === undefined);
}

/** What of a recorded lab still exists. */
async function aliveParts(state: LabState): Promise<string[]> {
  const parts: string[] = [];
  const running = state.processes.filter(processAlive);
  if (running.length > 0) parts.push(`${running.map((p) => `${label(p)} pid ${p.pid}`).join(', ')}`);
  if (state.bridge && (await linkInfo(state.bridge.name))) parts.push(`bridge ${state.bridge.name}`);
  for (const ns of state.netns) if (await netnsExists(ns)) parts.push(`netns ${ns}`);
  return parts;
}

/**
 * What a lab in `config.dir` left behind, when its lab.json is gone: links and namespaces
 * with the lab's marker, under the configured names. Nothing else is ever picked up.
 */
async function discover(config: LabConfig): Promise<{ state: LabState; ignored: string[] }> {
  const lay = layout(config);
  const ignored: string[] = [];
  const state = emptyState(config, lay, { status: 'up', createdAt: '', switchAddress: null });
  const br = await linkInfo(lay.bridge.name);
  if (br) {
    if (br.ifalias === lay.marker) state.bridge = { name: lay.bridge.name, address: lay.bridge.cidr };
    else ignored.push(`link ${lay.bridge.name} (not this lab's)`);
  }
  for (const h of lay.hosts) {
    if (await netnsExists(h.netns)) {
      const inner = await linkInfo(INNER_DEV, h.netns).catch(() => undefined);
      if (inner?.ifalias === lay.marker) {
        state.netns.push(h.netns);
        state.hosts.push({ ...h, log: join(config.dir, `${h.name}.log`) });
      } else ignored.push(`netns ${h.netns} (not recognisably this lab's)`);
    }
    const veth = await linkInfo(h.veth);
    if (veth) {
      if (veth.ifalias === lay.marker) state.veths.push({ root: h.veth, netns: h.netns, peer: INNER_DEV });
      else ignored.push(`link ${h.veth} (not this lab's)`);
    }
  }
  return { state, ignored };
}

export interface TeardownResult {
  done: string[];
  errors: string[];
  /** Left alone: found under the lab's names but not made by it. */
  ignored: string[];
}

/**
 * Stops the lab's processes, deletes its veths, namespaces and bridge. A recorded lab's
 * links may lack the marker (a start interrupted before it set one); discovered ones never do.
 */
async function teardown(state: LabState, fromDiscovery: boolean): Promise<TeardownResult> {
  const done: string[] = [];
  const errors: string[] = [];
  const ignored: string[] = [];
  const lenient = !fromDiscovery;
  const attempt = async (what: string, f: () => Promise<void>) => {
    try {
      await f();
      done.push(what);
    } catch (e) {
      errors.push(e instanceof Error ? e.message : String(e));
    }
  };

  // processes first: a namespace with processes in it outlives its deletion
  const pids = new Map<number, string>();
  for (const p of state.processes) if (processAlive(p)) pids.set(p.pid, label(p));
  for (const pid of findLabProcesses(state.secretFile, state.subnet))
    if (!pids.has(pid)) pids.set(pid, labelOf(pid));
  if (pids.size > 0) {
    const stubborn = await stopPids([...pids.keys()]);
    for (const [pid, what] of pids)
      done.push(`stopped ${what} (pid ${pid}${stubborn.includes(pid) ? ', SIGKILL' : ''})`);
    for (const pid of pids.keys()) if (pidAlive(pid)) errors.push(`pid ${pid} still runs after SIGKILL`);
  }

  for (const v of [...state.veths].reverse()) {
    const info = await linkInfo(v.root).catch(() => undefined);
    if (!info) continue;
    if (!owned(info.ifalias, state.marker, lenient)) {
      ignored.push(`link ${v.root} (alias '${info.ifalias}')`);
      continue;
    }
    await attempt(`deleted veth ${v.root}`, () => delLink(v.root));
  }
  for (const ns of [...state.netns].reverse()) {
    if (!(await netnsExists(ns))) continue;
    const inner = await linkInfo(INNER_DEV, ns).catch(() => undefined);
    if (inner && !owned(inner.ifalias, state.marker, lenient)) {
      ignored.push(`netns ${ns} (its ${INNER_DEV} has alias '${inner.ifalias}')`);
      continue;
    }
    const others = await netnsPids(ns).catch(() => []);
    if (others.length > 0)
      ignored.push(`processes still in ${ns}: ${others.join(', ')} (the namespace lives on until they exit)`);
    await attempt(`deleted netns ${ns}`, () => delNetns(ns));
  }
  if (state.bridge) {
    const name = state.bridge.name;
    const info = await linkInfo(name).catch(() => undefined);
    if (info) {
      if (owned(info.ifalias, state.marker, lenient))
        await attempt(`deleted bridge ${name}`, () => delLink(name));
      else ignored.push(`link ${name} (alias '${info.ifalias}')`);
    }
  }
  return { done, errors, ignored };
}

/**
 * Takes the lab in `dir` down: from its lab.json, or (when that is gone) from what carries
 * the lab's marker under the configured names. Doing it twice is harmless.
 */
export async function down(options: LabOptions = {}): Promise<TeardownResult & { hadRecord: boolean }> {
  requireRoot();
  const config = labConfig(options);
  const recorded = readState(config.dir);
  let result: TeardownResult;
  if (recorded) result = await teardown(recorded, false);
  else {
    const { state, ignored } = await discover(config);
    result = await teardown(state, true);
    result.ignored.unshift(...ignored);
  }
  if (result.errors.length > 0)
    throw new LabError(
      `taking the lab in ${config.dir} down failed: ${result.errors.join('; ')}` +
        (result.done.length ? ` (done: ${result.done.join(', ')})` : ''),
    );
  rmSync(statePath(config.dir), { force: true });
  return { ...result, hadRecord: recorded !== undefined };
}

// ---------------------------------------------------------------------------------------
// Status

export interface HostStatus {
  name: string;
  netns: string;
  netnsExists: boolean;
  veth: string;
  vethExists: boolean;
  ip: string;
  url: string;
  lanes: string;
  /** Rate of the tbf on the bridge end and on the host end, Mbit/s (null: none). */
  shapedMbps: { bridgeEnd: number | null; hostEnd: number | null };
  pid: number | null;
  running: boolean;
  /** Whether the API answers; null when the secret cannot be read (so nobody can ask). */
  answers: boolean | null;
}

export interface LabStatus {
  dir: string;
  record: boolean;
  status: LabState['status'] | null;
  mbps: number | null;
  bridge: { name: string; exists: boolean; address: string };
  hosts: HostStatus[];
  switch: { address: string; pid: number | null; running: boolean; accepting: boolean } | null;
  secretFile: string;
  bridgeCallsIptables: boolean | null;
}

const toMbps = (q: { rateBytes: number } | undefined) => (q ? (q.rateBytes * 8) / 1e6 : null);

/** What exists of the lab in `dir` (works without root, with less detail). */
export async function labStatus(options: LabOptions = {}): Promise<LabStatus> {
  const config = labConfig(options);
  const lay = layout(config);
  const state = readState(config.dir);
  const secretHex = (() => {
    try {
      return readFileSync(state?.secretFile ?? lay.secretFile, 'utf8').trim();
    } catch {
      return '';
    }
  })();
  const hosts = state?.hosts.length ? state.hosts : lay.hosts;
  const procOf = (name: string) => state?.processes.find((p) => p.name === name);
  const hostStatus = await Promise.all(
    hosts.map(async (h): Promise<HostStatus> => {
      const netnsOk = await netnsExists(h.netns);
      const p = procOf(h.name);
      const running = p ? processAlive(p) : false;
      return {
        name: h.name,
        netns: h.netns,
        netnsExists: netnsOk,
        veth: h.veth,
        vethExists: (await linkInfo(h.veth).catch(() => undefined)) !== undefined,
        ip: h.ip,
        url: h.url,
        lanes: h.lanes,
        shapedMbps: {
          bridgeEnd: toMbps(await tbfOf(h.veth)),
          hostEnd: netnsOk && isRoot() ? toMbps(await tbfOf(INNER_DEV, h.netns)) : null,
        },
        pid: p?.pid ?? null,
        running,
        answers:
          secretHex === ''
            ? null
            : netnsOk && (await checkReady({ kind: 'api', url: h.url }, secretHex)) === undefined,
      };
    }),
  );
  const bridgeName = state?.bridge?.name ?? lay.bridge.name;
  const bridgeExists = (await linkInfo(bridgeName).catch(() => undefined)) !== undefined;
  const switchAddress = state ? state.switchAddress : null;
  let sw: LabStatus['switch'] = null;
  if (switchAddress) {
    const p = procOf('switch');
    const [host, port] = switchAddress.split(':');
    sw = {
      address: switchAddress,
      pid: p?.pid ?? null,
      running: p ? processAlive(p) : false,
      accepting:
        bridgeExists && (await checkReady({ kind: 'tcp', host, port: Number(port) }, '')) === undefined,
    };
  }
  return {
    dir: config.dir,
    record: state !== undefined,
    status: state?.status ?? null,
    mbps: state?.mbps ?? null,
    bridge: { name: bridgeName, exists: bridgeExists, address: state?.bridge?.address ?? lay.bridge.cidr },
    hosts: hostStatus,
    switch: sw,
    secretFile: state?.secretFile ?? lay.secretFile,
    bridgeCallsIptables: bridgeCallsIptables() ?? null,
  };
}

// ---------------------------------------------------------------------------------------
// For tests and experiments

export interface Lab {
  dir: string;
  hosts: { name: string; netns: string; ip: string; url: string; lanes: string }[];
  switchAddress: string | null;
  secretFile: string;
  /** The secret as hex, as the hosts' API expects it in `x-ferry-secret`. */
  secretHex: string;
  state: LabState;
  /** Takes the lab down (idempotent). */
  down(): Promise<void>;
}

/** Brings a lab up and hands back what a client needs to use it. */
export async function startLab(options: LabOptions = {}): Promise<Lab> {
  const state = await up(options);
  let downed: Promise<void> | undefined;
  return {
    dir: state.dir,
    hosts: state.hosts.map(({ name, netns, ip, url, lanes }) => ({ name, netns, ip, url, lanes })),
    switchAddress: state.switchAddress,
    secretFile: state.secretFile,
    secretHex: readFileSync(state.secretFile, 'utf8').trim(),
    state,
    down: () => {
      downed ??= down({ ...options, dir: state.dir }).then(() => undefined);
      return downed;
    },
  };
}

/** Runs `fn` with a lab up, and takes the lab down afterwards, whatever happens. */
export async function withLab<T>(options: LabOptions, fn: (lab: Lab) => Promise<T>): Promise<T> {
  const lab = await startLab(options);
  try {
    return await fn(lab);
  } finally {
    await lab.down();
  }
}
