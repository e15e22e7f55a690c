// The fluid network model: max-min fair sharing (progressive filling), byte accounting
// when rates change while bytes are on the wire, and duplex interference on a host's NIC.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { EventQueue } from '../../src/sim/event-queue.ts';
import { Flow, maxMinRates, Network, Resource } from '../../src/sim/network.ts';
import { validateScenario } from '../../src/sim/scenario.ts';
import { simulate } from '../../src/sim/world.ts';

const INF = Number.POSITIVE_INFINITY;

/** Builds resources and flows as the network keeps them (every resource lists its flows). */
function topology(capacities: number[], routes: { via: number[]; cap?: number }[]) {
  const resources = capacities.map((c, i) => new Resource(`r${i}`, c));
  const flows = routes.map(
    (r) =>
      new Flow(
        [...new Set(r.via)].map((i) => resources[i]),
        r.cap ?? INF,
      ),
  );
  for (const f of flows) for (const r of f.resources) r.flows.push(f);
  return { resources, flows };
}

function rates(capacities: number[], routes: { via: number[]; cap?: number }[]): number[] {
  const { resources, flows } = topology(capacities, routes);
  return maxMinRates(flows, resources);
}

function near(actual: number, expected: number, what: string, rel = 1e-9): void {
  assert.ok(
    Math.abs(actual - expected) <= rel * Math.max(1, Math.abs(expected)),
    `${what}: ${actual}, expected ${expected}`,
  );
}

test('maxMinRates: two flows through one resource get half each', () => {
  const r = rates([10], [{ via: [0] }, { via: [0] }]);
  near(r[0], 5, 'flow 0');
  near(r[1], 5, 'flow 1');
});

test('maxMinRates: a lone flow gets the tightest resource on its route', () => {
  assert.deepEqual(rates([10, 4, 7], [{ via: [0, 1, 2] }]), [4]);
  assert.deepEqual(rates([10, 4, 7], [{ via: [0, 2], cap: 3 }]), [3]);
});

test('maxMinRates: a flow bottlenecked elsewhere leaves the rest to the other', () => {
  // flow 0 crosses r0 (10) and r1 (2); flow 1 only r0: flow 0 gets 2, flow 1 the other 8
  const r = rates([10, 2], [{ via: [0, 1] }, { via: [0] }]);
  near(r[0], 2, 'flow 0');
  near(r[1], 8, 'flow 1');
});

test('maxMinRates: a capped flow leaves its unused share to the others', () => {
  const r = rates([12], [{ via: [0], cap: 2 }, { via: [0] }, { via: [0] }]);
  near(r[0], 2, 'capped flow');
  near(r[1], 5, 'flow 1');
  near(r[2], 5, 'flow 2');
  // a cap above the fair share changes nothing
  const s = rates([12], [{ via: [0], cap: 100 }, { via: [0] }, { via: [0] }]);
  for (const [i, x] of s.entries()) near(x, 4, `flow ${i}`);
});

test('maxMinRates: the classic parking lot (one long flow, one short flow per hop)', () => {
  // long flow over r0, r1, r2 (each 6); short flows on each hop: everyone gets 3
  const r = rates([6, 6, 6], [{ via: [0, 1, 2] }, { via: [0] }, { via: [1] }, { via: [2] }]);
  for (const [i, x] of r.entries()) near(x, 3, `flow ${i}`);
  // a tighter middle hop: the long flow and the middle short flow get 1 each, the others 5
  const s = rates([6, 2, 6], [{ via: [0, 1, 2] }, { via: [0] }, { via: [1] }, { via: [2] }]);
  near(s[0], 1, 'long flow');
  near(s[1], 5, 'short flow on r0');
  near(s[2], 1, 'short flow on r1');
  near(s[3], 5, 'short flow on r2');
});

const routeArb = (resourceCount: number) =>
  fc.record({
    via: fc.uniqueArray(fc.integer({ min: 0, max: resourceCount - 1 }), {
      minLength: 1,
      maxLength: resourceCount,
    }),
    cap: fc.option(fc.double({ min: 0.1, max: 50, noNaN: true }), { nil: undefined }),
  });

const topologyArb = fc
  .array(fc.double({ min: 0.5, max: 100, noNaN: true }), { minLength: 1, maxLength: 6 })
  .chain((capacities) =>
    fc.record({
      capacities: fc.constant(capacities),
      routes: fc.array(routeArb(capacities.length), { minLength: 1, maxLength: 8 }),
    }),
  );

test('maxMinRates: feasible, and every flow is at its cap or has a saturated bottleneck where it is largest', () => {
  fc.assert(
    fc.property(topologyArb, ({ capacities, routes }) => {
      const { resources, flows } = topology(capacities, routes);
      const r = maxMinRates(flows, resources);
      assert.equal(r.length, flows.length);
      const rateOf = new Map(flows.map((f, i) => [f, r[i]]));
      const load = (res: Resource) => res.flows.reduce((s, f) => s + rateOf.get(f)!, 0);
      const eps = 1e-9;
      for (const [i, x] of r.entries()) {
        assert.ok(Number.isFinite(x) && x > 0, `flow ${i} has rate ${x}`);
        assert.ok(x <= flows[i].cap * (1 + eps), `flow ${i} rate ${x} above its cap ${flows[i].cap}`);
      }
      for (const res of resources)
        assert.ok(
          load(res) <= res.capacity * (1 + eps) + eps,
          `${res.name} carries ${load(res)} > capacity ${res.capacity}`,
        );
      flows.forEach((f, i) => {
        if (Math.abs(r[i] - f.cap) <= eps * Math.max(1, f.cap)) return; // at its cap
        const bottleneck = f.resources.find(
          (res) =>
            load(res) >= res.capacity * (1 - 1e-7) &&
            res.flows.every((g) => rateOf.get(g)! <= r[i] * (1 + 1e-7)),
        );
        assert.ok(
          bottleneck,
          `flow ${i} (rate ${r[i]}, cap ${f.cap}) has no saturated resource where it has the largest rate: ` +
            f.resources.map((res) => `${res.name} ${load(res)}/${res.capacity}`).join(', '),
        );
      });
    }),
    { numRuns: 500 },
  );
});

// ---------------------------------------------------------------------------------------
// Byte accounting in virtual time

function sendAt(
  queue: EventQueue,
  net: Network,
  at: number,
  flow: Flow,
  bytes: number,
  done: number[],
  i: number,
): void {
  queue.at(at, () => net.send(flow, bytes, () => done.push(i, queue.now)));
}

function completions(done: number[]): Map<number, number> {
  const m = new Map<number, number>();
  for (let k = 0; k < done.length; k += 2) m.set(done[k], done[k + 1]);
  return m;
}

test('Network: a second flow joining halfway halves the first one’s rate from then on', () => {
  const queue = new EventQueue();
  const net = new Network(queue);
  const link = new Resource('link', 10); // bytes per ms
  const a = new Flow([link], INF);
  const b = new Flow([link], INF);
  const done: number[] = [];
  sendAt(queue, net, 0, a, 1000, done, 0); // alone it would finish at 100 ms
  sendAt(queue, net, 50, b, 1000, done, 1);
  queue.run();
  const t = completions(done);
  // 500 bytes left on a at 50 ms, at 5 B/ms: done at 150; b then has 500 left, alone: 200
  near(t.get(0)!, 150, 'first flow done', 1e-9);
  near(t.get(1)!, 200, 'second flow done', 1e-9);
  assert.deepEqual([...t.keys()], [0, 1]);
});

test('Network: items queued on one flow complete in order at their byte offsets', () => {
  const queue = new EventQueue();
  const net = new Network(queue);
  const link = new Resource('link', 4);
  const f = new Flow([link], INF);
  const g = new Flow([link], INF);
  const done: number[] = [];
  queue.at(0, () => {
    net.send(f, 100, () => done.push(0, queue.now)); // ends at byte 100
    net.send(f, 300, () => done.push(1, queue.now)); // ends at byte 400
  });
  // g joins at 10 ms (f has sent 40) and sends 60: both at 2 B/ms until g finishes at 40 ms
  sendAt(queue, net, 10, g, 60, done, 2);
  queue.run();
  const t = completions(done);
  near(t.get(0)!, 40, 'first item'); // 40 + 2 × 30 = 100 bytes at 40 ms
  near(t.get(2)!, 40, 'joining flow');
  near(t.get(1)!, 115, 'second item'); // 300 bytes left at 40 ms, alone at 4 B/ms
});

test('Network: a flow cap and a bottleneck elsewhere give the other flow the rest', () => {
  const queue = new EventQueue();
  const net = new Network(queue);
  const shared = new Resource('shared', 10);
  const narrow = new Resource('narrow', 2);
  const slow = new Flow([shared, narrow], INF);
  const capped = new Flow([shared], 3);
  const free = new Flow([shared], INF);
  const done: number[] = [];
  sendAt(queue, net, 0, slow, 200, done, 0); // 2 B/ms: done at 100
  sendAt(queue, net, 0, capped, 150, done, 1); // 3 B/ms: done at 50
  sendAt(queue, net, 0, free, 400, done, 2); // 5 B/ms to 50 ms (250), then 8 B/ms: done at 68.75
  queue.run();
  const t = completions(done);
  near(t.get(0)!, 100, 'bottlenecked flow');
  near(t.get(1)!, 50, 'capped flow');
  near(t.get(2)!, 68.75, 'free flow');
});

/** Reference fluid model: rates re-solved from scratch at every start and completion. */
function referenceCompletions(
  capacities: number[],
  jobs: { via: number[]; cap: number; at: number; bytes: number }[],
): number[] {
  const end = jobs.map(() => -1);
  const left = jobs.map((j) => j.bytes);
  let now = 0;
  for (;;) {
    const active = jobs.map((_, i) => i).filter((i) => jobs[i].at <= now && end[i] < 0);
    const pendingStarts = jobs.filter((j, i) => j.at > now && end[i] < 0).map((j) => j.at);
    if (active.length === 0 && pendingStarts.length === 0) return end;
    // progressive filling, written independently of the model under test
    const rate = new Map<number, number>();
    let level = 0;
    while (rate.size < active.length) {
      const open = active.filter((i) => !rate.has(i));
      const headroom = (r: number) => {
        let used = 0;
        for (const [i, x] of rate) if (jobs[i].via.includes(r)) used += x;
        const users = open.filter((i) => jobs[i].via.includes(r)).length;
        return users === 0 ? INF : (capacities[r] - used) / users - level;
      };
      let step = INF;
      for (const i of open) step = Math.min(step, jobs[i].cap - level);
      for (let r = 0; r < capacities.length; r++) step = Math.min(step, headroom(r));
      const tight = (x: number) => x <= step + 1e-9 * Math.max(1, step + level);
      const freeze = open.filter(
        (i) => tight(jobs[i].cap - level) || jobs[i].via.some((r) => tight(headroom(r))),
      );
      level += step;
      for (const i of freeze) rate.set(i, level);
    }
    let next = Math.min(INF, ...pendingStarts);
    for (const i of active) next = Math.min(next, now + left[i] / rate.get(i)!);
    for (const i of active) {
      left[i] -= rate.get(i)! * (next - now);
      if (left[i] <= 1e-9 * jobs[i].bytes) end[i] = next;
    }
    now = next;
  }
}

test('Network: completion times match a reference fluid model over random arrivals', () => {
  const jobArb = (resourceCount: number) =>
    fc.record({
      via: fc.uniqueArray(fc.integer({ min: 0, max: resourceCount - 1 }), {
        minLength: 1,
        maxLength: resourceCount,
      }),
      cap: fc.oneof(fc.constant(INF), fc.integer({ min: 1, max: 30 })),
      at: fc.integer({ min: 0, max: 200 }),
      bytes: fc.integer({ min: 1, max: 5000 }),
    });
  const arb = fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 5 }).chain((capacities) =>
    fc.record({
      capacities: fc.constant(capacities),
      jobs: fc.array(jobArb(capacities.length), { minLength: 1, maxLength: 7 }),
    }),
  );
  fc.assert(
    fc.property(arb, ({ capacities, jobs }) => {
      const queue = new EventQueue();
      const net = new Network(queue);
      const resources = capacities.map((c, i) => new Resource(`r${i}`, c));
      const done: number[] = [];
      for (const [i, j] of jobs.entries()) {
        const flow = new Flow(
          j.via.map((r) => resources[r]),
          j.cap,
        );
        sendAt(queue, net, j.at, flow, j.bytes, done, i);
      }
      queue.run();
      const t = completions(done);
      const expected = referenceCompletions(capacities, jobs);
      jobs.forEach((_, i) => {
        assert.ok(t.has(i), `job ${i} never completed`);
        near(t.get(i)!, expected[i], `job ${i} completion`, 1e-6);
      });
      // every resource is back to idle
      for (const r of resources) assert.equal(r.flows.length, 0, `${r.name} still lists flows`);
    }),
    { numRuns: 300 },
  );
});

// ---------------------------------------------------------------------------------------
// Duplex interference, through a whole scenario

const GOODPUT_PER_MBPS = (1e6 * 0.94) / 8 / 1000; // bytes per ms per Mbit/s at efficiency 0.94

function relay(interference: number, hostB?: number) {
  // a → b while b → c: b transmits at full rate, so b's receive side loses interference × that
  const scenario = validateScenario({
    network: { efficiency: 0.94, duplexInterference: interference },
    hosts: ['a', 'b', 'c'].map((name) => ({
      name,
      nicMbps: 1000,
      latencyUs: 0,
      ...(name === 'b' && hostB !== undefined ? { duplexInterference: hostB } : {}),
    })),
    vms: [
      { name: 'small', host: 'a', ramMiB: 256 },
      { name: 'large', host: 'b', ramMiB: 1024 },
    ],
    migrations: [
      { vm: 'small', to: 'b' },
      { vm: 'large', to: 'c' },
    ],
  });
  return simulate(scenario, { seed: 1 }).migrations;
}

test('duplex interference: a host receiving while it transmits receives at (1 − x) × its NIC rate', () => {
  const nic = 1000 * GOODPUT_PER_MBPS;
  for (const x of [0, 0.1, 0.3]) {
    const [small, large] = relay(x);
    assert.equal(small.outcome, 'completed');
    assert.equal(large.outcome, 'completed');
    assert.ok(large.totalTimeMs > small.totalTimeMs, 'the transmitting migration outlasts the receiving one');
    near(small.totalTimeMs, small.bytesSent / (nic * (1 - x)), `receiving migration, x = ${x}`, 1e-3);
    // the transmit direction is not slowed
    near(large.totalTimeMs, large.bytesSent / nic, `transmitting migration, x = ${x}`, 1e-3);
  }
});

test("duplex interference: a host's own value overrides the network's, for that host only", () => {
  const nic = 1000 * GOODPUT_PER_MBPS;
  const [small, large] = relay(0.3, 0.1);
  near(small.totalTimeMs, small.bytesSent / (nic * 0.9), 'receiving at b, its own x = 0.1', 1e-3);
  near(large.totalTimeMs, large.bytesSent / nic, 'transmitting from b', 1e-3);
  const [unaffected] = relay(0.1, 0);
  near(unaffected.totalTimeMs, unaffected.bytesSent / nic, 'b with x = 0 receives at full rate', 1e-3);
});

test('duplex interference never takes a receive capacity below zero', () => {
  // b uploads 10× faster than it downloads: 0.5 × its upload exceeds its download capacity
  const queue = new EventQueue();
  const net = new Network(queue);
  const aUp = new Resource('a:up', 125_000);
  const bDown = new Resource('b:down', 12_500);
  const bUp = new Resource('b:up', 1_250_000);
  bUp.coupled = { resource: bDown, interference: 0.5 };
  const toB = new Flow([aUp, bDown], INF);
  const toD = new Flow([aUp], INF);
  const fromB = new Flow([bUp], INF);
  net.send(toB, 1e9, () => {});
  net.send(toD, 1e9, () => {});
  net.send(fromB, 1e12, () => {});
  assert.ok(bDown.capacity >= 0, `b:down capacity ${bDown.capacity}`);
  assert.ok(toB.rate >= 0 && toD.rate >= 0, `rates ${toB.rate}, ${toD.rate}`);
  assert.ok(toB.rate + toD.rate <= aUp.capacity * (1 + 1e-9), `a:up carries ${toB.rate + toD.rate} > 125000`);
});

test('duplex interference: two hosts swapping VMs each get NIC ÷ (1 + x)', () => {
  const x = 0.2;
  const scenario = validateScenario({
    network: { efficiency: 0.94, duplexInterference: x },
    hosts: ['a', 'b'].map((name) => ({ name, nicMbps: 1000, latencyUs: 0 })),
    vms: [
      { name: 'v', host: 'a', ramMiB: 512 },
      { name: 'w', host: 'b', ramMiB: 512 },
    ],
    migrations: [
      { vm: 'v', to: 'b' },
      { vm: 'w', to: 'a' },
    ],
  });
  const nic = 1000 * GOODPUT_PER_MBPS;
  for (const m of simulate(scenario, { seed: 1 }).migrations) {
    assert.equal(m.outcome, 'completed');
    // the fixed point r = C − x·r, settled to within a few per mille
    near(m.totalTimeMs, m.bytesSent / (nic / (1 + x)), `migration of ${m.vm}`, 5e-3);
  }
});
