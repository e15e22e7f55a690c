// vCPU worker entry: Node 20 cannot start a TypeScript worker directly, so register the
// loader first, then run the worker module.
import { register } from 'tsx/esm/api';

register();
await import('./vcpu-worker.ts');
