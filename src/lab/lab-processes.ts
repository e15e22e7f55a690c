// The lab's processes: liveness and identity from /proc, starting them in their
// namespaces, waiting until they answer, stopping them.

import { spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import { call } from '../host/api.ts';
import { FERRY_BIN, KILL_GRACE_MS, type ProcessSpec, type Readiness } from './lab-config.ts';
import { type LabState, type ProcessRecord, saveState } from './lab-state.ts';
import { commandLine, findTool, LabError } from './netns.ts';

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
export function findLabProcesses(secretFile: string, subnet: string): number[] {
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
export function label(p: { role: 'switch' | 'host'; name: string }): string {
  return p.role === 'switch' ? 'switch' : `host ${p.name}`;
}

/** The same, from a running process's command line. */
export function labelOf(pid: number): string {
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
export async function stopPids(pids: number[], graceMs = KILL_GRACE_MS): Promise<number[]> {
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
export async function checkReady(r: Readiness, secretHex: string): Promise<string | undefined> {
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
export async function startProcesses(
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
