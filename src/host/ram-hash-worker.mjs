// Worker entry: register the TypeScript loader, then run the worker module.
import { register } from 'tsx/esm/api';

register();
await import('./ram-hash-worker.ts');
