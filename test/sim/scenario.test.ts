// Scenario validation: every bad input is a ScenarioError naming where the problem is
// and what it is; a minimal scenario gets the documented defaults.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseScenario, ScenarioError, validateScenario } from '../../src/sim/scenario.ts';

// biome-ignore lint/suspicious/noExplicitAny: scenarios under test are deliberately malformed
type Raw = any;

function valid(): Raw {
  return {
    hosts: [
      { name: 'a', nicMbps: 1000 },
      { name: 'b', nicMbps: 1000 },
    ],
    vms: [{ name: 'v', host: 'a', ramMiB: 1024 }],
    migrations: [{ vm: 'v', to: 'b' }],
  };
}

/** Validates `edit(valid())` and returns the error's message; fails if it is accepted. */
function problem(edit: (s: Raw) => Raw, source = 'test.yaml'): string {
  const raw = edit(valid());
  try {
    validateScenario(raw, source);
  } catch (e) {
    assert.ok(e instanceof ScenarioError, `not a ScenarioError: ${(e as Error)?.stack}`);
    assert.ok(e.message.startsWith(`${source}: `), `message does not name the file: ${e.message}`);
    assert.ok(!e.message.includes('\n'), `message spans lines: ${e.message}`);
    return e.message;
  }
  assert.fail(`accepted: ${JSON.stringify(raw)}`);
}

/** The message names `path` followed by a problem matching `what`. */
function expectProblem(edit: (s: Raw) => Raw, path: string, what: RegExp): void {
  const msg = problem(edit);
  const at = msg.indexOf(`${path}: `);
  assert.ok(at >= 0, `'${path}' not named in: ${msg}`);
  const rest = msg.slice(at + path.length + 2).split('; ')[0];
  assert.match(rest, what, `problem at ${path} in: ${msg}`);
}

test('the valid base scenario is accepted', () => {
  const s = validateScenario(valid());
  assert.equal(s.hosts.length, 2);
});

test('unknown fields are named with their path, at every level', () => {
  expectProblem((s) => ({ ...s, speed: 3 }), '(top level)', /unknown field 'speed'/);
  expectProblem(
    (s) => {
      s.hosts[1].nicMbs = 1000;
      return s;
    },
    'hosts[1]',
    /unknown field 'nicMbs'/,
  );
  expectProblem(
    (s) => {
      s.vms[0].dirty = { rateMBps: 5, hotset: 2 };
      return s;
    },
    'vms[0].dirty',
    /unknown field 'hotset'/,
  );
  expectProblem(
    (s) => {
      s.migrations[0].downtimeMs = 5;
      return s;
    },
    'migrations[0]',
    /unknown field 'downtimeMs'/,
  );
  expectProblem((s) => ({ ...s, network: { efficiency: 0.9, mtu: 9000 } }), 'network', /unknown field 'mtu'/);
});

test('negative or zero bandwidths are rejected where they are', () => {
  expectProblem(
    (s) => {
      s.hosts[0].nicMbps = -100;
      return s;
    },
    'hosts[0].nicMbps',
    /bandwidth must be > 0/,
  );
  expectProblem(
    (s) => {
      s.hosts[1].uploadMbps = 0;
      return s;
    },
    'hosts[1].uploadMbps',
    /must be > 0/,
  );
  expectProblem(
    (s) => ({
      ...s,
      switches: [{ name: 's' }, { name: 't' }],
      links: [{ from: 's', to: 't', bandwidthMbps: -1 }],
    }),
    'links[0].bandwidthMbps',
    /bandwidth must be > 0/,
  );
  expectProblem(
    (s) => {
      s.migrations[0].maxBandwidthMbps = -5;
      return s;
    },
    'migrations[0].maxBandwidthMbps',
    /must be > 0/,
  );
});

test('references to unknown hosts, VMs and switches are named', () => {
  expectProblem(
    (s) => {
      s.migrations[0].to = 'nowhere';
      return s;
    },
    'migrations[0].to',
    /unknown host 'nowhere'/,
  );
  expectProblem(
    (s) => {
      s.migrations[0].vm = 'ghost';
      return s;
    },
    'migrations[0].vm',
    /unknown VM 'ghost'/,
  );
  expectProblem(
    (s) => {
      s.vms[0].host = 'c';
      return s;
    },
    'vms[0].host',
    /unknown host 'c'/,
  );
  expectProblem(
    (s) => {
      s.hosts[0].switch = 'sw';
      return s;
    },
    'hosts[0].switch',
    /unknown switch 'sw'/,
  );
  expectProblem(
    (s) => ({ ...s, switches: [{ name: 's' }], links: [{ from: 's', to: 'x', bandwidthMbps: 10 }] }),
    'links[0].to',
    /unknown switch 'x'/,
  );
});

test('duplicate names are named at the second occurrence', () => {
  expectProblem(
    (s) => {
      s.hosts.push({ name: 'a', nicMbps: 10 });
      return s;
    },
    'hosts[2].name',
    /duplicate host 'a'/,
  );
  expectProblem(
    (s) => {
      s.vms.push({ name: 'v', host: 'b', ramMiB: 1 });
      return s;
    },
    'vms[1].name',
    /duplicate VM 'v'/,
  );
  expectProblem(
    (s) => ({ ...s, switches: [{ name: 's' }, { name: 's' }] }),
    'switches[1].name',
    /duplicate switch 's'/,
  );
});

test('a host busy share of 1 or more, or a negative uplink queue, is named', () => {
  expectProblem(
    (s) => {
      (s.vms[0] as Record<string, unknown>).hostBusy = 1;
      return s;
    },
    'vms[0].hostBusy',
    /host busy share must be ≤ 0.95/,
  );
  expectProblem(
    (s) => {
      (s.hosts[0] as Record<string, unknown>).uplinkQueueUs = -5;
      return s;
    },
    'hosts[0].uplinkQueueUs',
    /uplink queue must be ≥ 0/,
  );
});

test('usedMiB above ramMiB is rejected', () => {
  expectProblem(
    (s) => {
      s.vms[0].usedMiB = 2048;
      return s;
    },
    'vms[0].usedMiB',
    /usedMiB must not exceed ramMiB/,
  );
  // equal is fine
  const ok = valid();
  ok.vms[0].usedMiB = 1024;
  assert.equal(validateScenario(ok).vms[0].usedMiB, 1024);
});

test('wrong types are named with what was expected', () => {
  expectProblem(
    (s) => {
      s.hosts[0].nicMbps = '1 Gbit';
      return s;
    },
    'hosts[0].nicMbps',
    /must be a number/,
  );
  expectProblem(
    (s) => {
      s.vms[0].ramMiB = Number.NaN;
      return s;
    },
    'vms[0].ramMiB',
    /must be a number/,
  );
  expectProblem(
    (s) => {
      s.migrations[0].urgentLane = 'yes';
      return s;
    },
    'migrations[0].urgentLane',
    /expected boolean/,
  );
  expectProblem(
    (s) => {
      s.migrations[0].mode = 'teleport';
      return s;
    },
    'migrations[0].mode',
    /precopy.*postcopy.*hybrid/,
  );
  expectProblem(
    (s) => {
      s.migrations[0].maxRounds = 2.5;
      return s;
    },
    'migrations[0].maxRounds',
    /int/,
  );
  expectProblem((s) => ({ ...s, hosts: { name: 'a' } }), 'hosts', /expected array/);
  expectProblem(() => ['not', 'a', 'scenario'], '(top level)', /expected object/);
  expectProblem(() => null, '(top level)', /expected object/);
  expectProblem(() => ({}), 'hosts', /expected array/);
  expectProblem((s) => ({ ...s, hosts: [] }), 'hosts', /at least one host/);
  expectProblem((s) => ({ ...s, network: { efficiency: 1.5 } }), 'network.efficiency', /<=\s*1/);
});

test('every problem is reported at once', () => {
  const msg = problem((s) => {
    s.hosts[0].nicMbps = -1;
    s.vms[0].usedMiB = 5000;
    s.migrations[0].bogus = true;
    return s;
  });
  for (const part of ['hosts[0].nicMbps', 'vms[0].usedMiB', 'migrations[0]: unknown field']) {
    assert.ok(msg.includes(part), `'${part}' missing from: ${msg}`);
  }
  const refs = problem((s) => {
    s.migrations.push({ vm: 'ghost', to: 'nowhere' });
    return s;
  });
  assert.match(refs, /migrations\[1\]\.vm: unknown VM 'ghost'/);
  assert.match(refs, /migrations\[1\]\.to: unknown host 'nowhere'/);
});

test('invalid YAML is a ScenarioError naming the file and the place', () => {
  for (const text of ['hosts: [a', 'a: b: c', '{', 'hosts:\n  - name: a\n  nicMbps: 3\n', 'k: 1\nk: 2\n']) {
    assert.throws(
      () => parseScenario(text, 'bad.yaml'),
      (e: unknown) => {
        assert.ok(e instanceof ScenarioError, String(e));
        assert.match(e.message, /^bad\.yaml: not valid YAML: /);
        assert.match(e.message, /line \d+, column \d+/);
        assert.ok(!e.message.includes('\n'), `message spans lines: ${e.message}`);
        assert.doesNotMatch(e.message, /:$/, 'the message ends in a dangling colon');
        return true;
      },
      JSON.stringify(text),
    );
  }
  // YAML that parses but is no scenario goes through the schema
  assert.throws(() => parseScenario('', 'empty.yaml'), {
    message: /^empty\.yaml: \(top level\): .*expected object/,
  });
  assert.throws(() => parseScenario('- 1\n- 2\n', 'list.yaml'), {
    message: /^list\.yaml: \(top level\): .*expected object/,
  });
});

test('parseScenario reads a complete YAML scenario', () => {
  const s = parseScenario(
    `
name: two racks
durationS: 600
network: { efficiency: 0.9, duplexInterference: 0.1 }
switches: [{ name: r1 }, { name: r2, latencyUs: 5 }]
links: [{ from: r1, to: r2, bandwidthMbps: 10000 }]
hosts:
  - { name: a, nicMbps: 1000, switch: r1 }
  - { name: b, nicMbps: 1000, uploadMbps: 500, switch: r2 }
vms:
  - name: v
    host: a
    ramMiB: 2048
    usedMiB: 1500
    dirty: { hotSetMiB: 64, hotPattern: burst, rateMBps: 12.5 }
migrations:
  - { vm: v, to: b, mode: hybrid, atS: 2 }
`,
    'racks.yaml',
  );
  assert.equal(s.name, 'two racks');
  assert.equal(s.links[0].bandwidthMbps, 10000);
  assert.equal(s.hosts[1].uploadMbps, 500);
  assert.equal(s.vms[0].dirty.hotPattern, 'burst');
  assert.equal(s.migrations[0].mode, 'hybrid');
  assert.equal(s.migrations[0].atS, 2);
});

test('defaults are applied to a minimal scenario', () => {
  const s = validateScenario(valid());
  assert.equal(s.name, 'scenario');
  assert.equal(s.durationS, 3600);
  assert.equal(s.settleS, 12);
  assert.deepEqual(s.variants, []);
  assert.deepEqual(s.network, { efficiency: 0.94, duplexInterference: 0, socketBufferKiB: 4096 });
  assert.deepEqual(s.switches, []);
  assert.deepEqual(s.links, []);
  assert.deepEqual(s.hosts[0], {
    name: 'a',
    nicMbps: 1000,
    latencyUs: 50,
    uplinkQueueUs: 0,
    downlinkQueueUs: 0,
  });
  assert.deepEqual(s.vms[0], {
    name: 'v',
    host: 'a',
    ramMiB: 1024,
    vcpus: 1,
    asyncFaultLimit: 64,
    hostContention: 0,
    hostBusy: 0,
    faultWakeUs: 0,
    asyncFaultCpuUs: 10,
    dirty: { hotSetMiB: 0, hotPeriodS: 1, hotPattern: 'sweep', rateMBps: 0 },
    access: { touchesPerSec: 1000, hotFraction: 0.8 },
  });
  assert.deepEqual(s.migrations[0], {
    vm: 'v',
    to: 'b',
    atS: 0,
    mode: 'precopy',
    variant: '',
    downtimeLimitMs: 300,
    maxRounds: 0,
    maxBytesFactor: 0,
    deadlineS: 0,
    onNoConvergence: 'abort',
    hybridRounds: 0,
    prepageForward: 0,
    prepageBackward: 0,
    urgentLane: true,
    resendInFlight: true,
    cooperative: true,
    setupMs: 0,
    demandDelayUs: 0,
  });
  // defaults fill in around what is given
  const partial = valid();
  partial.network = { duplexInterference: 0.2 };
  partial.vms[0].dirty = { rateMBps: 3 };
  const p = validateScenario(partial);
  assert.deepEqual(p.network, { efficiency: 0.94, duplexInterference: 0.2, socketBufferKiB: 4096 });
  assert.deepEqual(p.vms[0].dirty, { hotSetMiB: 0, hotPeriodS: 1, hotPattern: 'sweep', rateMBps: 3 });
  // scenarios without VMs or migrations are valid (an empty datacenter)
  assert.deepEqual(validateScenario({ hosts: [{ name: 'h', nicMbps: 1 }] }).migrations, []);
});
