// The queue probe: a qdisc's backlog read from tc's JSON, sampled from one long-lived tc,
// and a clear error when the device is not there. (What it sees on a shaped link while a
// flow fills it is checked with the lab, in lab.test.ts.)

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseBacklog, QueueProbe } from '../../src/lab/queue-probe.ts';

test("the backlog is the root qdisc's, in bytes, whatever the plain output would round it to", () => {
  const tbf = (root: boolean, backlog: number) =>
    JSON.stringify({ kind: 'tbf', handle: '8001:', root, bytes: 9e8, backlog, qlen: 6 });
  assert.equal(parseBacklog(`[${tbf(true, 209_920)}]`), 209_920);
  assert.equal(parseBacklog(`[${tbf(false, 5)},${tbf(true, 7)}]`), 7);
  assert.equal(parseBacklog('[{"kind":"noqueue","root":true,"backlog":0}]'), 0);
  for (const bad of ['', 'Cannot find device "x"', '{}', '[]', '[{"root":true}]', '[{"backlog":-1}]'])
    assert.equal(parseBacklog(bad), undefined, bad);
});

test('a probe samples a device until stopped, one query at a time', async () => {
  const probe = new QueueProbe({ dev: 'lo', netns: null, everyMs: 2 });
  // (a busy machine may take a while to start tc)
  for (let i = 0; i < 500 && probe.samples.length < 5 && probe.error === undefined; i++)
    await new Promise((r) => setTimeout(r, 10));
  await probe.stop();
  assert.equal(probe.error, undefined);
  assert.ok(probe.samples.length >= 5, `${probe.samples.length} samples`);
  for (let i = 1; i < probe.samples.length; i++) assert.ok(probe.samples[i][0] > probe.samples[i - 1][0]);
  const [first] = probe.samples[0];
  const [last] = probe.samples.at(-1)!;
  // loopback queues nothing
  assert.equal(probe.meanBacklog(first, last + 1), 0);
  assert.equal(probe.meanBacklog(last + 1, last + 100), undefined, 'no sample there');
});

test('a probe of a device that is not there stops at once, naming it', async () => {
  const probe = new QueueProbe({ dev: 'ferry-no-such0', netns: null });
  for (let i = 0; i < 500 && probe.error === undefined; i++) await new Promise((r) => setTimeout(r, 10));
  await probe.stop();
  assert.equal(probe.samples.length, 0);
  assert.match(probe.error ?? '', /ferry-no-such0/);
});
