// A cluster on loopback, without root: a virtual switch and hosts as child processes of
// this one, each on a port it picks, their logs in a folder. The demo runs on it; the lab
// (lab.ts) is the same cluster in network namespaces behind shaped links.

import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const FERRY_BIN = fileURLToPath(new URL('../../bin/ferry.mjs', import.meta.url));
const START_TIMEOUT_MS = 20_000;
const KILL_GRACE_MS = 3000;

/** Hosts and a switch that clients and the control API can reach. */
export interface Cluster {
  hosts: { name: string; url: string }[];
  switchAddress: string | null;
  secretHex: string;
  secretFile: string;
  /** Where the processes write their logs. */
  dir: string;
  /**
   * Where links are shaped: by host name, the device whose queue holds what comes in to the
   * host (its downlink) and the link's rate.
   */
  downlinks?: Record<string, ShapedLink>;
  down(): Promise<void>;
}

export interface ShapedLink {
  dev: string;
  /** Network namespace of the device (null: the root namespace). */
  netns: string | null;
  mbps: number;
}

export interface LoopbackOptions {
  hosts?: string[];
  /** Folder for the secret and the logs (default: a new temporary folder, removed on `down`). */
  dir?: string;
  /** Latency each host adds to its migration lanes' messages, ms (default 0). */
  laneLatencyMs?: number;
}

/** Starts a switch and the hosts on 127.0.0.1. */
export async function startLoopback(options: LoopbackOptions = {}): Promise<Cluster> {
  const temporary = options.dir === undefined;
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'ferry-cluster-'));
  mkdirSync(dir, { recursive: true });
  const secretFile = join(dir, 'secret');
  const secretHex = randomBytes(32).toString('hex');
  writeFileSync(secretFile, `${secretHex}\n`, { mode: 0o600 });
  const children: ChildProcess[] = [];
  const kill = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  };
  process.once('exit', kill);
  let downed: Promise<void> | undefined;
  const down = () => {
    downed ??= (async () => {
      await Promise.all(children.map(stop));
      process.off('exit', kill);
      if (temporary) rmSync(dir, { recursive: true, force: true });
    })();
    return downed;
  };
  const start = async (name: string, args: string[], ready: RegExp): Promise<string> => {
    const log = join(dir, `${name}.log`);
    const child = spawn(process.execPath, [FERRY_BIN, ...args], {
      stdio: ['ignore', 'pipe', openSync(log, 'w')],
    });
    children.push(child);
    return await new Promise<string>((resolve, reject) => {
      let out = '';
      let settled = false;
      const fail = (why: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const tail = readFileSync(log, 'utf8').trim().split('\n').slice(-4).join('\n');
        reject(new Error(`${name} ${why} (log ${log}):\n${tail}`));
      };
      const timer = setTimeout(
        () => fail(`did not start within ${START_TIMEOUT_MS / 1000} s`),
        START_TIMEOUT_MS,
      );
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        const m = ready.exec(out);
        if (m && !settled) {
          settled = true;
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
      child.once('exit', (code) => fail(`exited with status ${code}`));
    });
  };
  try {
    const switchAddress = await start(
      'switch',
      ['switch', '--listen', '127.0.0.1:0', '--secret-file', secretFile],
      /^(\S+:\d+)$/m,
    );
    const hosts = await Promise.all(
      (options.hosts ?? ['a', 'b']).map(async (name) => ({
        name,
        url: await start(
          name,
          [
            ...['host', '--listen', '127.0.0.1:0', '--id', name, '--secret-file', secretFile],
            ...['--switch', switchAddress],
            ...(options.laneLatencyMs ? ['--lane-latency', String(options.laneLatencyMs)] : []),
          ],
          /^(http:\/\/\S+)$/m,
        ),
      })),
    );
    return { hosts, switchAddress, secretHex, secretFile, dir, down };
  } catch (e) {
    await down();
    throw e;
  }
}

function stop(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const hard = setTimeout(() => c.kill('SIGKILL'), KILL_GRACE_MS);
    c.once('exit', () => {
      clearTimeout(hard);
      resolve();
    });
    c.kill('SIGTERM');
  });
}
