// What a shaped link keeps queued, sampled while a run goes on: the backlog of the tbf
// qdisc on a device, read every few milliseconds from one long-lived `tc -s -j -batch -`
// (a query costs ~0.1 ms there, against ~2 ms for a `tc` process of its own, so sampling
// barely loads the host it measures).

import { type ChildProcess, spawn } from 'node:child_process';
import { findTool } from './netns.ts';

/**
 * The root qdisc's backlog (bytes) in a line of `tc -s -j qdisc show` output (JSON: the
 * plain output rounds to Kb and Mb), or undefined if the line has none.
 */
export function parseBacklog(line: string): number | undefined {
  let qdiscs: unknown;
  try {
    qdiscs = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (!Array.isArray(qdiscs)) return undefined;
  const root = qdiscs.find((q) => q && typeof q === 'object' && q.root === true) ?? qdiscs[0];
  const backlog = (root as { backlog?: unknown } | undefined)?.backlog;
  return typeof backlog === 'number' && backlog >= 0 ? backlog : undefined;
}

/** How long a query may go unanswered before sampling stops. */
const ANSWER_MS = 1000;

export interface QueueProbeOptions {
  dev: string;
  /** Network namespace of the device (null: the root namespace). */
  netns: string | null;
  /** Time between samples, ms (default 5). */
  everyMs?: number;
}

/** A device's qdisc backlog sampled from now until `stop()`. */
export class QueueProbe {
  /** [when (performance.timeOrigin + now, ms), bytes queued] */
  readonly samples: [number, number][] = [];
  /** Why sampling stopped early (tc failed, the device went away), if it did. */
  error: string | undefined;
  private readonly tc: ChildProcess;
  private stopped = false;
  private pending = '';
  private awaiting: ((bytes: number | undefined) => void) | null = null;
  private readonly loop: Promise<void>;

  constructor(private readonly o: QueueProbeOptions) {
    const args = [...(o.netns ? ['-n', o.netns] : []), '-s', '-j', '-force', '-batch', '-'];
    this.tc = spawn(findTool('tc'), args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.tc.stdout!.setEncoding('utf8').on('data', (d: string) => this.onOutput(d));
    this.tc.stderr!.setEncoding('utf8').on('data', (d: string) => this.fail(d.trim().split('\n')[0]));
    this.tc.on('error', (e) => this.fail(e.message));
    this.tc.on('exit', () => this.fail('tc exited'));
    this.tc.stdin!.on('error', () => {});
    this.loop = this.run();
  }

  /** Stops sampling; resolves once the last query is answered and tc has gone. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
    this.tc.stdin!.end();
    this.tc.kill();
  }

  /** Mean backlog over [from, to) (absolute ms), bytes; undefined without a sample there. */
  meanBacklog(from: number, to: number): number | undefined {
    const inside = this.samples.filter(([t]) => t >= from && t < to);
    if (inside.length === 0) return undefined;
    return inside.reduce((n, [, b]) => n + b, 0) / inside.length;
  }

  private async run(): Promise<void> {
    const every = this.o.everyMs ?? 5;
    while (!this.stopped && this.error === undefined) {
      const bytes = await this.query();
      if (bytes === undefined) break;
      this.samples.push([performance.timeOrigin + performance.now(), bytes]);
      await new Promise((r) => setTimeout(r, every));
    }
  }

  private query(): Promise<number | undefined> {
    return new Promise((resolve) => {
      const silent = setTimeout(() => this.fail(`no answer within ${ANSWER_MS} ms`), ANSWER_MS);
      this.awaiting = (bytes) => {
        clearTimeout(silent);
        resolve(bytes);
      };
      this.tc.stdin!.write(`qdisc show dev ${this.o.dev}\n`);
    });
  }

  /** One line of JSON answers each query. */
  private onOutput(d: string): void {
    this.pending += d;
    for (let nl = this.pending.indexOf('\n'); nl >= 0; nl = this.pending.indexOf('\n')) {
      const line = this.pending.slice(0, nl);
      this.pending = this.pending.slice(nl + 1);
      const bytes = parseBacklog(line);
      if (bytes === undefined) this.fail(`unexpected output: ${line.slice(0, 80)}`);
      else this.answer(bytes);
    }
  }

  private fail(why: string): void {
    if (this.error === undefined && !this.stopped) this.error = `tc on ${this.o.dev}: ${why}`;
    this.answer(undefined);
  }

  private answer(bytes: number | undefined): void {
    const a = this.awaiting;
    this.awaiting = null;
    a?.(bytes);
  }
}
