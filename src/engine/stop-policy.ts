// Precopy stop rules as pluggable policies. Each looks at the migration's progress and
// says whether precopy may stop now (the rest fits the downtime budget), should keep
// going, or has run out of budget (rounds, bytes, time) without converging.

import type { StopRules } from './config.ts';

export interface PrecopyProgress {
  elapsedMs: number;
  round: number;
  /** Bytes still to send if the guest stopped now. */
  remainingBytes: number;
  /** Measured bandwidth, bytes/s (0 until measured). */
  bandwidth: number;
  bytesSent: number;
  ramBytes: number;
}

export type StopVerdict = 'continue' | 'stop' | 'give-up';

export interface StopPolicy {
  readonly name: string;
  verdict(p: PrecopyProgress): StopVerdict;
}

/** QEMU's rule: the remaining data fits the downtime limit at the measured bandwidth. */
export function downtimeLimit(limitMs: number): StopPolicy {
  return {
    name: `downtime ≤ ${limitMs} ms`,
    verdict: (p) =>
      p.bandwidth > 0 && p.remainingBytes <= (p.bandwidth * limitMs) / 1000 ? 'stop' : 'continue',
  };
}

/** Gives up once `n` rounds were sent without converging (`round` is the round just sent). */
export function maxRounds(n: number): StopPolicy {
  return { name: `max ${n} rounds`, verdict: (p) => (p.round >= n ? 'give-up' : 'continue') };
}

export function maxBytes(factor: number): StopPolicy {
  return {
    name: `max ${factor} × RAM`,
    verdict: (p) => (p.bytesSent >= factor * p.ramBytes ? 'give-up' : 'continue'),
  };
}

export function deadline(ms: number): StopPolicy {
  return { name: `deadline ${ms} ms`, verdict: (p) => (p.elapsedMs >= ms ? 'give-up' : 'continue') };
}

/** Any rule that allows stopping wins; otherwise any exhausted budget gives up. */
export function combine(policies: StopPolicy[]): StopPolicy {
  return {
    name: policies.map((p) => p.name).join(', '),
    verdict(p) {
      let out: StopVerdict = 'continue';
      for (const policy of policies) {
        const v = policy.verdict(p);
        if (v === 'stop') return 'stop';
        if (v === 'give-up') out = 'give-up';
      }
      return out;
    },
  };
}

export function policyFromRules(rules: StopRules): StopPolicy {
  const list = [downtimeLimit(rules.downtimeLimitMs)];
  if (rules.maxRounds > 0) list.push(maxRounds(rules.maxRounds));
  if (rules.maxBytesFactor > 0) list.push(maxBytes(rules.maxBytesFactor));
  if (rules.deadlineMs > 0) list.push(deadline(rules.deadlineMs));
  return combine(list);
}
