// File helpers that turn operating-system errors into one-line usage errors.

import { readFileSync, writeFileSync } from 'node:fs';
import { UsageError } from './errors.ts';

export function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UsageError(`${what} '${path}' does not exist`);
    if (code === 'EISDIR') throw new UsageError(`${what} '${path}' is a folder, not a file`);
    throw new UsageError(`cannot read ${what} '${path}': ${(e as Error).message}`);
  }
}

export function writeJson(path: string, value: unknown): void {
  try {
    writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
  } catch (e) {
    throw new UsageError(`cannot write '${path}': ${(e as Error).message}`);
  }
}

export function writeText(path: string, text: string): void {
  try {
    writeFileSync(path, text);
  } catch (e) {
    throw new UsageError(`cannot write '${path}': ${(e as Error).message}`);
  }
}
