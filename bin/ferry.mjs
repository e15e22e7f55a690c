#!/usr/bin/env node
// Entry point: TypeScript sources run through tsx, so `npx ferry` works right after `npm ci`.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
