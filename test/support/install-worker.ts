// Installs the batches it is given into shared guest RAM, claiming each page as the fault
// thread does, then writes each page it installed as a guest would once it is present.
import { parentPort, workerData } from 'node:worker_threads';
import type { PageBatch } from '../../src/engine/messages.ts';
import { GuestRam, type RamBuffers } from '../../src/guest/ram.ts';
import { installBatch } from '../../src/host/pages.ts';

const {
  ram: buffers,
  sums,
  batches,
  mark,
} = workerData as {
  ram: RamBuffers;
  sums: SharedArrayBuffer;
  batches: PageBatch[];
  mark: number;
};
const ram = new GuestRam(buffers);
const installed: number[] = [];
for (const b of batches) {
  const runs = installBatch(ram, b, b.runs, new Uint32Array(sums), undefined, true);
  for (let i = 0; i < runs.length; i += 2)
    for (let p = runs[i]; p < runs[i] + runs[i + 1]; p++) {
      // the guest writes the page as soon as it is here
      ram.page(p)[0] = mark;
      installed.push(p);
    }
}
parentPort!.postMessage(installed);
