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
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  API_PORT,
  downCommand,
  INNER_DEV,
  isRoot,
  type LabConfig,
  type LabOptions,
  type Layout,
  labConfig,
  labProcesses,
  layout,
  requireRoot,
  SWITCH_PORT,
} from './lab-config.ts';
import {
  checkReady,
  findLabProcesses,
  inNetns,
  label,
  labelOf,
  pidAlive,
  processAlive,
  startProcesses,
  stopPids,
} from './lab-processes.ts';
import { ensureSecret, type LabState, readState, saveState, statePath } from './lab-state.ts';
import type { ShapedLink } from './loopback.ts';
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
  tbfOf,
} from './netns.ts';

export {
  API_PORT,
  DEFAULT_BRIDGE,
  DEFAULT_DIR,
  DEFAULT_HOSTS,
  DEFAULT_MBPS,
  DEFAULT_SUBNET,
  DEFAULT_TIMEOUT_MS,
  downCommand,
  type HostLayout,
  INNER_DEV,
  isRoot,
  LANES_PORT,
  type LabConfig,
  type LabOptions,
  type Layout,
  labConfig,
  labMarker,
  labProcesses,
  layout,
  NEEDS_ROOT,
  netnsName,
  type ProcessSpec,
  type Readiness,
  requireRoot,
  SWITCH_PORT,
  vethName,
} from './lab-config.ts';
export {
  inNetns,
  pidAlive,
  processAlive,
} from './lab-processes.ts';
export {
  type LabState,
  type ProcessRecord,
  type QdiscRecord,
  readState,
  statePath,
} from './lab-state.ts';
export { LabError } from './netns.ts';

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
    latencyMs: config.latencyMs,
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
  /** Latency the hosts add to their migration lanes, ms (0: none). */
  latencyMs: number;
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
    latencyMs: state?.latencyMs ?? 0,
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
  /** Each host's downlink: the bridge's end of its veth, shaped on its way to the host. */
  downlinks: Record<string, ShapedLink>;
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
    downlinks: Object.fromEntries(
      state.hosts.map((h) => [h.name, { dev: h.veth, netns: null, mbps: state.mbps }]),
    ),
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
