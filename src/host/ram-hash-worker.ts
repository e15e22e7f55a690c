// Checksums guest RAM off the main thread (the source's RAM is frozen once the guest has
// stopped, so this runs while the migration carries on). One worker serves a host's every
// migration: starting a thread costs more CPU than the checksum of a small VM, and it came
// at the end of each migration, when the next one may be starting.
import { parentPort } from 'node:worker_threads';
import { GuestRam, type RamBuffers } from '../guest/ram.ts';
import { foldSums, pageSums } from './pages.ts';

export interface HashJob {
  id: number;
  ram: RamBuffers;
}

export interface HashDone {
  id: number;
  hash: string;
}

parentPort!.on('message', (job: HashJob) => {
  parentPort!.postMessage({ id: job.id, hash: foldSums(pageSums(new GuestRam(job.ram))) } satisfies HashDone);
});
