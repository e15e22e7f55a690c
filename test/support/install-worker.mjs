// A second installing thread for tests: the fault thread's side of a postcopy install race.
import { register } from 'tsx/esm/api';

register();
await import('./install-worker.ts');
