// Runs the `ferry` command line as a user would, to its end.

import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(fileURLToPath(import.meta.url), '../../..');

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function ferry(...args: string[]): Run {
  const r = spawnSync(process.execPath, ['bin/ferry.mjs', ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
