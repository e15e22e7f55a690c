// Fault thread entry: register the TypeScript loader, then run the thread's module.
import { register } from 'tsx/esm/api';

register();
await import('./fault-thread.ts');
