// The guest apps a VM can run, as vCPU workers open them (`openApp`) and as a new VM's
// host lays out their state in guest RAM once (`formatApp`).

import type { GuestAccess } from '../guest/access.ts';
import type { GuestApp, Rehearsal } from '../guest/vcpu-protocol.ts';
import { HttpServer, httpOptions } from './http.ts';
import { HTTP_PROTOCOL, textResponse } from './http-protocol.ts';
import { KvStore } from './kv.ts';
import { Memtouch, memtouchOptions } from './memtouch.ts';
import type { WireProtocol } from './protocol.ts';
import { encodeError, RESP_PROTOCOL } from './resp.ts';

export const APP_KINDS = ['kv', 'memtouch', 'http'] as const;
export type AppKind = (typeof APP_KINDS)[number];

const NO_COMMANDS = encodeError('ERR memtouch is a batch job: it serves no commands');

/** This module's URL: vCPU workers import it to open the app. */
export const APP_MODULE = import.meta.url;

export function formatApp(kind: string, options: Record<string, unknown>, mem: GuestAccess): void {
  if (kind === 'kv') {
    const names = Object.keys(options);
    if (names.length > 0) throw new Error(`kv app: takes no options (got '${names.join("', '")}')`);
    KvStore.format(mem);
  } else if (kind === 'memtouch') Memtouch.format(mem, memtouchOptions(options));
  else if (kind === 'http') HttpServer.format(mem, httpOptions(options));
  else throw new Error(`unknown app '${kind}' (known: ${APP_KINDS.join(', ')})`);
}

/** The wire protocol the app's clients speak (memtouch answers RESP clients with an error). */
export function protocolOf(kind: string): WireProtocol {
  if (kind === 'kv' || kind === 'memtouch') return RESP_PROTOCOL;
  if (kind === 'http') return HTTP_PROTOCOL;
  throw new Error(`unknown app '${kind}' (known: ${APP_KINDS.join(', ')})`);
}

/**
 * A few counters read from the app's state in guest RAM (its header page only): memtouch
 * `steps` and `pagesWritten`, kv `keys`, http `requests` and `hits`.
 */
export function appStats(
  kind: string,
  options: Record<string, unknown>,
  mem: GuestAccess,
): Record<string, number> {
  if (kind === 'memtouch') return { ...Memtouch.open(mem, memtouchOptions(options)).progress() };
  if (kind === 'kv') return { keys: KvStore.open(mem).stats().keys };
  if (kind === 'http') {
    const { requests, hits } = HttpServer.open(mem).stats();
    return { requests, hits };
  }
  throw new Error(`unknown app '${kind}' (known: ${APP_KINDS.join(', ')})`);
}

/**
 * What a new vCPU thread serves on scratch RAM before its first real request: its code is
 * then compiled, and a VM's first request on a fresh thread (the first after a switchover)
 * does not pay ~2 ms for it.
 */
export function rehearsals(): Rehearsal[] {
  const bytes = (...args: string[]) => args.map((a) => new TextEncoder().encode(a));
  return [
    {
      kind: 'kv',
      options: {},
      requests: [
        bytes('SET', 'key:1', 'x'.repeat(1000)),
        bytes('GET', 'key:1'),
        bytes('GET', 'key:2'),
        bytes('INCR', 'n'),
        bytes('MSET', 'a', '1', 'b', '2'),
        bytes('MGET', 'a', 'b', 'key:1'),
        bytes('EXISTS', 'a'),
        bytes('DEL', 'a'),
        bytes('DBSIZE'),
        bytes('PING'),
      ],
    },
    {
      kind: 'http',
      options: { objects: 8, counters: 8 },
      requests: [
        bytes('GET', '/obj/0', ''),
        bytes('GET', '/obj/7', ''),
        bytes('POST', '/hit/1', ''),
        bytes('GET', '/stats', ''),
        bytes('HEAD', '/', ''),
      ],
    },
  ];
}

/**
 * Opens the app on first use, from inside a task: on a destination its header page may not
 * have arrived yet, and only a task may take the fault.
 */
export function openApp(kind: string, options: Record<string, unknown>, mem: GuestAccess): GuestApp {
  if (kind === 'kv') {
    let kv: KvStore | undefined;
    return {
      execute: (args) => {
        kv ??= KvStore.open(mem);
        return kv.execute(args);
      },
      failed: (e) => encodeError(`ERR ${e.message.replace(/[\r\n]+/g, ' ')}`),
    };
  }
  if (kind === 'http') {
    let server: HttpServer | undefined;
    return {
      execute: (args) => {
        server ??= HttpServer.open(mem);
        return server.execute(args);
      },
      // `Connection: close`: were the request a HEAD, the client would take this body for
      // the next response; it drops the connection instead
      failed: (e) =>
        textResponse(500, `internal error: ${e.message.replace(/[\r\n]+/g, ' ')}`, { close: true }),
    };
  }
  if (kind === 'memtouch') {
    let job: Memtouch | undefined;
    return {
      // a batch job: a client's command gets an error reply (and leaves the job running)
      execute: () => NO_COMMANDS,
      step: () => {
        job ??= Memtouch.open(mem, memtouchOptions(options));
        return job.step();
      },
    };
  }
  throw new Error(`unknown app '${kind}' (known: ${APP_KINDS.join(', ')})`);
}
