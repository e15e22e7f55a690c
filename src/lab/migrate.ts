// One migration between hosts, through their control API, waited for.

import { call, type MigrationInfo, type RealMigrationReport, type StartMigration } from '../host/api.ts';

/** Starts a migration on host `from` and waits for its end; a migration that did not complete throws. */
export async function migrateAndWait(
  from: string,
  secretHex: string,
  body: StartMigration,
): Promise<RealMigrationReport> {
  const api = <T>(method: string, path: string, b?: unknown) => call<T>(from, secretHex, method, path, b);
  let info = await api<MigrationInfo>('POST', '/v1/migrations', body);
  while (info.state !== 'done') {
    await new Promise((r) => setTimeout(r, 50));
    info = await api<MigrationInfo>('GET', `/v1/migrations/${info.id}`);
  }
  const r = info.report!;
  if (r.outcome !== 'completed') throw new Error(`migrating ${body.vm}: ${r.outcome} (${r.reason})`);
  return r;
}
