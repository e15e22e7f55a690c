// Checksums guest RAM off the main thread (the source's RAM is frozen once the guest has
// stopped, so this runs while the migration carries on).
import { parentPort, workerData } from 'node:worker_threads';
import { GuestRam, type RamBuffers } from '../guest/ram.ts';
import { foldSums, pageSums } from './pages.ts';

const ram = new GuestRam(workerData as RamBuffers);
parentPort!.postMessage(foldSums(pageSums(ram)));
