// The virtual switch with two hosts' links and VM network devices, in one process over real
// loopback TCP: a client pipelining commands keeps its connection and hears every reply, in
// order, while the VM moves between the hosts at random moments and in either order of the
// source letting go and the destination attaching.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { encodeBulk, encodeCommand, RESP_PROTOCOL, RespReplyParser } from '../../src/apps/resp.ts';
import type { GuestMachine, Served } from '../../src/guest/machine.ts';
import { VmNic } from '../../src/host/nic.ts';
import { SwitchPorts } from '../../src/host/switch-link.ts';
import {
  encodeFrame,
  encodeJson,
  encodeText,
  FRAME,
  FrameDecoder,
  frameText,
  type LinkFrame,
  SWITCH_CHANNEL,
} from '../../src/host/switch-protocol.ts';
import { dialChannel } from '../../src/host/transport.ts';
import { VirtualSwitch } from '../../src/net/switch.ts';

const SECRET = new Uint8Array(randomBytes(32));
const quiet = () => {};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A guest that answers `ECHO x` with `host:x` after a short while; stopping it drops what is in progress. */
class FakeGuest {
  running = true;
  private inFlight: (() => void)[] = [];
  constructor(readonly host: string) {}
  execute(args: Uint8Array[]): Promise<Served> {
    if (!this.running) return Promise.reject(new Error('not running'));
    return new Promise((resolve, reject) => {
      const cancel = () => reject(new Error('stopped'));
      this.inFlight.push(cancel);
      setTimeout(
        () => {
          this.inFlight = this.inFlight.filter((c) => c !== cancel);
          if (this.running)
            resolve({ reply: encodeBulk(`${this.host}:${Buffer.from(args[1]).toString()}`), hopMs: 0 });
        },
        Math.random() < 0.5 ? 0 : 1,
      );
    });
  }
  stop(): void {
    this.running = false;
    for (const c of this.inFlight) c();
    this.inFlight = [];
  }
}

let sw: VirtualSwitch;
let switchAddress: string;
const hosts: SwitchPorts[] = [];

before(async () => {
  sw = new VirtualSwitch({
    host: '127.0.0.1',
    port: 0,
    clientsHost: '127.0.0.1',
    secret: SECRET,
    log: quiet,
  });
  await sw.start();
  switchAddress = `127.0.0.1:${sw.port}`;
});
after(async () => {
  for (const h of hosts) await h.close();
  await sw.close();
});

async function linkedHost(id: string): Promise<SwitchPorts> {
  const h = new SwitchPorts(switchAddress, id, SECRET, quiet);
  await h.connect();
  hosts.push(h);
  return h;
}

/** A client that pipelines commands and collects the replies. */
function client(address: string) {
  const i = address.lastIndexOf(':');
  const socket = net.connect(Number(address.slice(i + 1)), address.slice(0, i));
  const parser = new RespReplyParser();
  const replies: string[] = [];
  let closed = false;
  socket.on('data', (d) => {
    for (const v of parser.push(d).replies) replies.push(Buffer.from(v.value as Uint8Array).toString());
  });
  socket.on('close', () => {
    closed = true;
  });
  socket.on('error', () => {});
  return {
    send: (cmds: string[]) => socket.write(Buffer.concat(cmds.map((c) => encodeCommand(['ECHO', c])))),
    sendRaw: (b: Uint8Array) => socket.write(b),
    replies,
    closed: () => closed,
    end: () => socket.end(),
  };
}

async function until(what: string, f: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

test('clients keep their connections and every reply, in order, as the VM moves back and forth', async () => {
  const a = await linkedHost('a');
  const b = await linkedHost('b');
  let n = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 3, maxLength: 10 }),
      fc.boolean(),
      fc.integer({ min: 0, max: 5 }),
      fc.integer({ min: 0, max: 40 }),
      async (bursts, attachFirst, gapMs, splitAt) => {
        const vm = `vm${n++}`;
        let here = { ports: a, guest: new FakeGuest('a') };
        let there = { ports: b, guest: new FakeGuest('b') };
        const nicFor = (g: FakeGuest) => new VmNic(RESP_PROTOCOL, () => g as unknown as GuestMachine);
        let nic = nicFor(here.guest);
        const address = await here.ports.attach(vm, nic, true);
        const c = client(address);
        let sent = 0;
        for (const [k, burst] of bursts.entries()) {
          const cmds = Array.from({ length: burst }, () => String(sent++));
          // the last command of a burst arrives in two pieces: its tail after the move
          const bytes = Buffer.concat(cmds.map((x) => encodeCommand(['ECHO', x])));
          const cut = Math.max(0, bytes.length - 1 - (splitAt % 8));
          c.sendRaw(bytes.subarray(0, cut));
          if (k % 2 === 1) {
            // move: hold, stop the guest, save the device, then let go / attach in either order
            await here.ports.hold(vm);
            here.guest.stop();
            const state = nic.save();
            const next = nicFor(there.guest);
            const arrive = async () => {
              next.restore(state, (id) => there.ports.wire(vm, id));
              assert.equal(await there.ports.attach(vm, next, false), address, 'the same address');
            };
            if (attachFirst) {
              await arrive();
              await sleep(gapMs);
              here.ports.detach(vm);
            } else {
              here.ports.detach(vm);
              await sleep(gapMs);
              await arrive();
            }
            // the source lets go of the VM's connections, as a host does once the move completed
            here.ports.left(vm);
            nic.forget();
            nic = next;
            [here, there] = [
              there,
              { ports: here.ports, guest: new FakeGuest(here.ports === a ? 'a' : 'b') },
            ];
          }
          c.sendRaw(bytes.subarray(cut));
          await sleep(gapMs);
        }
        await until(
          `${sent} replies (got ${c.replies.length})`,
          () => c.replies.length >= sent || c.closed(),
        );
        assert.equal(c.closed(), false, 'the connection survived');
        assert.deepEqual(
          c.replies.map((r) => r.split(':')[1]),
          Array.from({ length: sent }, (_, i) => String(i)),
          'every reply, in order',
        );
        c.end();
        here.ports.forget(vm);
      },
    ),
    { numRuns: 25 },
  );
});

test('a second VM of the same name on another host is refused; a stopped VM closes its clients', async () => {
  const a = await linkedHost('a2');
  const b = await linkedHost('b2');
  const guest = new FakeGuest('a');
  const nic = new VmNic(RESP_PROTOCOL, () => guest as unknown as GuestMachine);
  const address = await a.attach('dup', nic, true);
  await assert.rejects(
    b.attach('dup', new VmNic(RESP_PROTOCOL, () => undefined), true),
    /a VM named 'dup' already runs on host a2/,
  );
  const c = client(address);
  c.send(['x']);
  await until('a reply', () => c.replies.length === 1);
  a.forget('dup');
  await until('the client to be disconnected', () => c.closed());
});

test('a client that half-closes still gets its replies', async () => {
  const a = await linkedHost('a3');
  const guest = new FakeGuest('a');
  const address = await a.attach(
    'half',
    new VmNic(RESP_PROTOCOL, () => guest as unknown as GuestMachine),
    true,
  );
  const c = client(address);
  c.send(['1', '2', '3']);
  c.end();
  await until('the connection to close', () => c.closed());
  assert.deepEqual(c.replies, ['a:1', 'a:2', 'a:3']);
});

test('a host with the wrong secret cannot link to the switch', async () => {
  await assert.rejects(
    dialChannel({
      host: '127.0.0.1',
      port: sw.port,
      secret: new Uint8Array(randomBytes(32)),
      lane: 'switch',
      migrationId: 'intruder',
      capabilities: 0,
    }),
    /authentication failed/,
  );
});

test('when the source host link breaks mid-move, the destination takes over the clients', async () => {
  const a = await linkedHost('a4');
  const b = await linkedHost('b4');
  const ga = new FakeGuest('a');
  const nic = new VmNic(RESP_PROTOCOL, () => ga as unknown as GuestMachine);
  const address = await a.attach('crash', nic, true);
  const c = client(address);
  c.send(['1']);
  await until('a reply', () => c.replies.length === 1);
  await a.hold('crash');
  ga.stop();
  const state = nic.save();
  c.send(['2']);
  await a.close(); // the source dies before saying DETACH
  const gb = new FakeGuest('b');
  const next = new VmNic(RESP_PROTOCOL, () => gb as unknown as GuestMachine);
  next.restore(state, (id) => b.wire('crash', id));
  await b.attach('crash', next, false);
  await until('the second reply', () => c.replies.length === 2);
  assert.deepEqual(c.replies, ['a:1', 'b:2']);
  assert.equal(c.closed(), false);
});

/** A host's link spoken frame by frame, to order events across two links exactly. */
async function rawLink(id: string) {
  const ch = await dialChannel({
    host: '127.0.0.1',
    port: sw.port,
    secret: SECRET,
    lane: SWITCH_CHANNEL,
    migrationId: id,
    capabilities: 0,
  });
  const decoder = new FrameDecoder();
  const frames: LinkFrame[] = [];
  const onData = (d: Uint8Array) => frames.push(...decoder.push(d).frames);
  for (const c of ch.leftover) onData(c);
  ch.socket.on('data', onData);
  return {
    frames,
    send: (f: Uint8Array) => ch.socket.write(f),
    next: async (type: number) => {
      await until(`frame type ${type} at ${id}`, () => frames.some((f) => f.type === type));
      return frames.splice(
        frames.findIndex((f) => f.type === type),
        1,
      )[0];
    },
    close: () => ch.socket.destroy(),
  };
}

test("the destination's replies wait until the source's last reply has gone out", async () => {
  const a = await rawLink('ra');
  const b = await rawLink('rb');
  a.send(encodeJson(FRAME.attach, { vm: 'order', fresh: true }));
  const address = JSON.parse(frameText(await a.next(FRAME.attached))).address as string;
  const c = client(address);
  c.send(['1']);
  const open = await a.next(FRAME.open);
  await a.next(FRAME.data);
  a.send(encodeText(FRAME.hold, 'order'));
  await a.next(FRAME.held);
  // the destination resumes and answers before the source's last reply has been sent
  b.send(encodeJson(FRAME.attach, { vm: 'order', fresh: false }));
  await b.next(FRAME.attached);
  b.send(encodeFrame(FRAME.data, open.conn, encodeBulk('from b')));
  await sleep(20);
  assert.deepEqual(c.replies, [], 'held until the source lets go');
  a.send(encodeFrame(FRAME.data, open.conn, encodeBulk('from a')));
  a.send(encodeText(FRAME.detach, 'order'));
  await until('both replies', () => c.replies.length === 2);
  assert.deepEqual(c.replies, ['from a', 'from b']);
  // the client's next bytes reach the destination
  c.send(['2']);
  const data = await b.next(FRAME.data);
  assert.match(Buffer.from(data.payload).toString(), /ECHO/);
  a.close();
  b.close();
});

test('a move abandoned after the hold: the source attaches again and serves what was held', async () => {
  const a = await linkedHost('a5');
  const guest = new FakeGuest('a');
  const nic = new VmNic(RESP_PROTOCOL, () => guest as unknown as GuestMachine);
  const address = await a.attach('back', nic, true);
  const c = client(address);
  c.send(['1']);
  await until('a reply', () => c.replies.length === 1);
  await a.hold('back');
  guest.running = false; // the guest pauses for the switchover…
  nic.save();
  a.detach('back');
  c.send(['2', '3']); // …clients go on sending; the switch holds their bytes
  await sleep(20);
  assert.deepEqual(c.replies, ['a:1'], 'nothing answered while the VM is between hosts');
  // the destination never resumed it: the guest carries on at the source
  guest.running = true;
  assert.equal(await a.attach('back', nic, false), address);
  nic.pump();
  await until('the held requests answered', () => c.replies.length === 3);
  assert.deepEqual(c.replies, ['a:1', 'a:2', 'a:3']);
  assert.equal(c.closed(), false);
});
