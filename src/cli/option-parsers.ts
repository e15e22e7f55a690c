// Parsers of command-line option values: each names what it expects when a value is bad.

import { InvalidArgumentError } from 'commander';
import { isLaneLatency, MAX_LANE_LATENCY_MS } from '../host/lane-latency.ts';
import { NICE_MAX, NICE_MIN } from '../host/thread-priority.ts';

export function parseCount(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError('must be a whole number ≥ 1');
  return Number(v);
}

export function parsePort(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 65535)
    throw new InvalidArgumentError('must be a port number from 1 to 65535');
  return Number(v);
}

/**
 * One `KEY=VALUE` app option, added to those before it. The value is read as JSON when it
 * is JSON (numbers, true/false), else taken as a string: `rateMBps=20`, `pattern=random`.
 */
export function parseAppOption(v: string, previous: Record<string, unknown> = {}): Record<string, unknown> {
  const m = /^([A-Za-z][A-Za-z0-9]*)=(.*)$/.exec(v);
  if (!m) throw new InvalidArgumentError(`'${v}' is not KEY=VALUE (e.g. rateMBps=20)`);
  let value: unknown = m[2];
  try {
    value = JSON.parse(m[2]);
  } catch {
    // a bare word: a string
  }
  return { ...previous, [m[1]]: value };
}

export function parseWhole(v: string): number {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError('must be a whole number ≥ 0');
  return Number(v);
}

/** Milliseconds of added lane latency: a number from 0 to MAX_LANE_LATENCY_MS. */
export function parseLatency(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !isLaneLatency(n))
    throw new InvalidArgumentError(`must be a number of ms from 0 to ${MAX_LANE_LATENCY_MS}`);
  return n;
}

/** A nice value: a whole number from NICE_MIN (-20) to NICE_MAX (19). */
export function parseNice(v: string): number {
  const n = Number(v);
  if (!/^-?\d+$/.test(v.trim()) || n < NICE_MIN || n > NICE_MAX)
    throw new InvalidArgumentError(`must be a nice value, a whole number from ${NICE_MIN} to ${NICE_MAX}`);
  return n;
}

export function parseSeed(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) > 0xffffffff)
    throw new InvalidArgumentError('seed must be an integer 0..4294967295');
  return Number(v);
}

/** A number ≥ 0; `what` names it in the error. */
export const parseNumber = (what: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${what} must be a number ≥ 0`);
  return n;
};
