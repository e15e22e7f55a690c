// The vCPU thread's script as one JavaScript file: the guest kernel, the worker and the
// apps, bundled by esbuild when a host starts. A thread started from the TypeScript entry
// loads tsx first (its module hooks run on a thread of their own): ~220 ms of CPU on the
// reference machine, against ~35 from the bundle. A host starts one for every spare vCPU
// taken, so that was a quarter of a second of a core after most migrations.
//
// The file is named by its contents, so hosts sharing a folder share it and an edited
// source makes a new one; a module a VM names that is not bundled is still loaded, through
// tsx registered on first need.

import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildSync } from 'esbuild';

const WORKER = fileURLToPath(new URL('../guest/vcpu-worker.ts', import.meta.url));

/** Where bundles go: the project's cache folder, else the system's temporary one. */
const FOLDERS = [fileURLToPath(new URL('../../node_modules/.cache/ferry', import.meta.url)), tmpdir()];

/** Scripts of other sources are removed once this old: another host may still start from one. */
const KEEP_MS = 24 * 3600 * 1000;

/** Written aside and renamed: a host starting at the same time never reads half of it. */
function writeAtomically(file: string, data: string | Uint8Array): void {
  const part = `${file}.${process.pid}.part`;
  writeFileSync(part, data);
  renameSync(part, file);
}

function pruneOld(folder: string, current: string): void {
  for (const f of readdirSync(folder)) {
    if (f.startsWith(`${current}.`) || !/^vcpu-worker-[0-9a-f]{16}(\.bundle)?\.mjs$/.test(f)) continue;
    try {
      if (Date.now() - statSync(join(folder, f)).mtimeMs > KEEP_MS) unlinkSync(join(folder, f));
    } catch {
      // gone already, or not ours to remove
    }
  }
}

/**
 * Bundles the vCPU worker with `modules` (file URLs of app modules, named as VMs name them)
 * and returns the script's URL; undefined when it cannot (the TypeScript entry then serves),
 * with why in `onError`.
 */
export function bundleVcpuScript(
  modules: string[],
  onError: (why: string) => void = () => {},
): URL | undefined {
  const lines = [
    `import { provideModules } from ${JSON.stringify(WORKER)};`,
    ...modules.map((m, i) => `import * as m${i} from ${JSON.stringify(fileURLToPath(m))};`),
    `provideModules({ ${modules.map((m, i) => `${JSON.stringify(m)}: m${i}`).join(', ')} }, ${JSON.stringify(
      import.meta.resolve('tsx/esm/api'),
    )});`,
  ];
  let code: Uint8Array;
  try {
    const out = buildSync({
      stdin: {
        contents: lines.join('\n'),
        loader: 'ts',
        resolveDir: fileURLToPath(new URL('.', import.meta.url)),
      },
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      sourcemap: 'inline',
      write: false,
      logLevel: 'silent',
    });
    code = out.outputFiles[0].contents;
  } catch (e) {
    onError(`could not bundle the vCPU script: ${(e as Error).message.split('\n')[0]}`);
    return undefined;
  }
  const name = `vcpu-worker-${createHash('sha256').update(code).digest('hex').slice(0, 16)}`;
  // the entry turns source maps on before the bundle loads (they apply to what loads
  // after): a guest's errors then name the TypeScript lines
  const entry = `process.setSourceMapsEnabled(true);\nawait import('./${name}.bundle.mjs');\n`;
  for (const folder of FOLDERS) {
    try {
      mkdirSync(folder, { recursive: true });
      writeAtomically(join(folder, `${name}.bundle.mjs`), code);
      writeAtomically(join(folder, `${name}.mjs`), entry);
      pruneOld(folder, name);
      return pathToFileURL(join(folder, `${name}.mjs`));
    } catch {
      // an unwritable folder: the next one
    }
  }
  onError(`could not write the vCPU script in ${FOLDERS.join(' or ')}`);
  return undefined;
}
