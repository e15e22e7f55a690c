// `ferry switch`: the virtual switch through which clients reach VMs wherever they run.

import { VirtualSwitch } from '../net/switch.ts';
import { UsageError } from './errors.ts';
import { parseListen, readSecret } from './hosts.ts';

export async function switchCommand(opts: { listen: string; secretFile?: string; clientsHost: string }) {
  const { host, port } = parseListen(opts.listen);
  const sw = new VirtualSwitch({
    host,
    port,
    clientsHost: opts.clientsHost,
    secret: readSecret(opts.secretFile),
    log: (line) => console.error(`[${new Date().toISOString()}] switch: ${line}`),
  });
  try {
    await sw.start();
  } catch (e) {
    throw new UsageError(`cannot listen on ${opts.listen}: ${(e as Error).message}`);
  }
  console.log(`${host}:${sw.port}`);
  const stop = async () => {
    await sw.close();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
