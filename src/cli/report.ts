// `ferry report`: a report JSON rendered as one self-contained HTML page.

import type { Report } from '../report/schema.ts';
import { UsageError } from './errors.ts';
import { readText, writeText } from './io.ts';

/** Parses a report file; anything that is not a Ferry report is a one-line usage error. */
export function parseReport(text: string, file: string): Report {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    const why = (e as Error).message.replace(/\s+/g, ' ').slice(0, 200);
    throw new UsageError(`report '${file}' is not JSON: ${why}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data))
    throw new UsageError(`'${file}' is not a Ferry report (expected a JSON object)`);
  const r = data as Record<string, unknown>;
  if (!Array.isArray(r.migrations))
    throw new UsageError(`'${file}' is not a Ferry report (no migrations array)`);
  if (r.workloads !== undefined && !Array.isArray(r.workloads))
    throw new UsageError(`'${file}' is not a Ferry report (workloads is not an array)`);
  if (r.migrations.some((m) => m === null || typeof m !== 'object'))
    throw new UsageError(`'${file}' is not a Ferry report (a migration is not an object)`);
  return { ...r, workloads: r.workloads ?? [] } as Report;
}

export async function reportCommand(file: string, opts: { output: string }): Promise<void> {
  const report = parseReport(readText(file, 'report'), file);
  // the plotting library loads only for this command, not on every `ferry` start
  const { renderHtml } = await import('../report/html.ts');
  writeText(opts.output, await renderHtml(report));
  console.log(`report written to ${opts.output}`);
}
