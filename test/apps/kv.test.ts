// The key-value app against a plain Map model (RESP replies compared byte for byte), under
// memory pressure, reopened from a copy of its RAM, on garbage, and interrupted by
// PageNotPresent at any access with the caller's roll-back-and-re-run semantics.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  classOf,
  classSize,
  globMatch,
  KV_MAGIC,
  KvCorruptError,
  KvFormatError,
  KvStore,
} from '../../src/apps/kv.ts';
import { ArrayAccess, type GuestAccess, PageNotPresent } from '../../src/guest/access.ts';
import { TxAccess } from '../support/tx-access.ts';

/** Each char code 0..255 as one byte. */
function b(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

function latin1(x: Uint8Array): string {
  let s = '';
  for (const c of x) s += String.fromCharCode(c);
  return s;
}

function run(kv: KvStore, ...args: string[]): string {
  return latin1(kv.execute(args.map(b)));
}

// ---------------------------------------------------------------------------------------
// The model: what Redis answers, written out as RESP text

const OOM = "-OOM command not allowed when used memory > 'maxmemory'.\r\n";
const NOT_INTEGER = '-ERR value is not an integer or out of range\r\n';
const bulk = (v: string | undefined) => (v === undefined ? '$-1\r\n' : `$${v.length}\r\n${v}\r\n`);
const int = (n: number | bigint) => `:${n}\r\n`;
const arity = (name: string) => `-ERR wrong number of arguments for '${name}' command\r\n`;
const I64_MAX = 2n ** 63n - 1n;

class Model {
  readonly map = new Map<string, string>();

  exec(args: string[]): string {
    const [name, ...rest] = args;
    const m = this.map;
    switch (name.toLowerCase()) {
      case 'ping':
        return rest.length === 0 ? '+PONG\r\n' : rest.length === 1 ? bulk(rest[0]) : arity('ping');
      case 'echo':
        return rest.length === 1 ? bulk(rest[0]) : arity('echo');
      case 'get':
        return rest.length === 1 ? bulk(m.get(rest[0])) : arity('get');
      case 'set': {
        if (rest.length < 2) return arity('set');
        const [k, v, ...opts] = rest;
        const o = new Set<string>();
        for (const x of opts) {
          const l = x.toLowerCase();
          if (['ex', 'px', 'exat', 'pxat'].includes(l))
            return '-ERR expiry options (EX, PX, EXAT, PXAT) are not supported\r\n';
          if (!['nx', 'xx', 'get', 'keepttl'].includes(l)) return '-ERR syntax error\r\n';
          o.add(l);
        }
        if (o.has('nx') && o.has('xx')) return '-ERR syntax error\r\n';
        const old = m.get(k);
        const reply = o.has('get') ? bulk(old) : '+OK\r\n';
        if ((o.has('nx') && old !== undefined) || (o.has('xx') && old === undefined))
          return o.has('get') ? reply : bulk(undefined);
        m.set(k, v);
        return reply;
      }
      case 'del':
        return rest.length === 0 ? arity('del') : int(rest.filter((k) => m.delete(k)).length);
      case 'exists':
        return rest.length === 0 ? arity('exists') : int(rest.filter((k) => m.has(k)).length);
      case 'incr': {
        if (rest.length !== 1) return arity('incr');
        const v = m.get(rest[0]) ?? '0';
        if (!/^(0|-?[1-9][0-9]*)$/.test(v) || v.length > 20) return NOT_INTEGER;
        const n = BigInt(v);
        if (n > I64_MAX || n < -I64_MAX - 1n) return NOT_INTEGER;
        if (n === I64_MAX) return '-ERR increment or decrement would overflow\r\n';
        m.set(rest[0], String(n + 1n));
        return int(n + 1n);
      }
      case 'mget':
        return rest.length === 0
          ? arity('mget')
          : `*${rest.length}\r\n${rest.map((k) => bulk(m.get(k))).join('')}`;
      case 'mset':
        if (rest.length < 2 || rest.length % 2 !== 0) return arity('mset');
        for (let i = 0; i < rest.length; i += 2) m.set(rest[i], rest[i + 1]);
        return '+OK\r\n';
      case 'dbsize':
        return rest.length === 0 ? int(m.size) : arity('dbsize');
      default: {
        const line = `-ERR unknown command '${name}', with args beginning with: ${rest.map((a) => `'${a}' `).join('')}`;
        return `${line.replace(/[\r\n]/g, ' ')}\r\n`;
      }
    }
  }
}

const KEYS = ['a', 'b', 'c', 'key:000001', '', 'k\r\n', '\xff\x00'];
const key = fc.constantFrom(...KEYS);
const value = fc.oneof(
  fc.constantFrom(
    ...['0', '1', '-1', '41', '9223372036854775806', '9223372036854775807', '-9223372036854775808'],
    ...['-9223372036854775809', '9223372036854775808', '12345678901234567890', '123456789012345'],
    ...['1234567890123456', '01', '-0', '+1', ' 1', '1 ', '-', 'abc', ''],
  ),
  fc.uint8Array({ maxLength: 50 }).map(latin1),
  fc.nat({ max: 300 }).map((n) => 'v'.repeat(n)),
);
const named = (name: string) =>
  fc.constantFrom(name, name.toLowerCase(), name[0] + name.slice(1).toLowerCase());
const setOptions = fc.oneof(
  { weight: 4, arbitrary: fc.constant<string[]>([]) },
  { weight: 2, arbitrary: fc.array(fc.constantFrom('NX', 'xx', 'GET', 'get', 'KEEPTTL'), { maxLength: 2 }) },
  {
    weight: 1,
    arbitrary: fc.array(fc.constantFrom('NX', 'EX', 'px', 'bogus'), { minLength: 1, maxLength: 2 }),
  },
);
const keys = fc.array(key, { minLength: 1, maxLength: 4 });
const command: fc.Arbitrary<string[]> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.tuple(named('SET'), key, value, setOptions).map(([n, k, v, o]) => [n, k, v, ...o]),
  },
  { weight: 5, arbitrary: fc.tuple(named('GET'), key) },
  { weight: 2, arbitrary: fc.tuple(named('DEL'), keys).map(([n, ks]) => [n, ...ks]) },
  { weight: 2, arbitrary: fc.tuple(named('EXISTS'), keys).map(([n, ks]) => [n, ...ks]) },
  { weight: 3, arbitrary: fc.tuple(named('INCR'), key) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(named('MSET'), fc.array(fc.tuple(key, value), { minLength: 1, maxLength: 4 }))
      .map(([n, ps]) => [n, ...ps.flat()]),
  },
  { weight: 2, arbitrary: fc.tuple(named('MGET'), keys).map(([n, ks]) => [n, ...ks]) },
  { weight: 1, arbitrary: fc.tuple(named('DBSIZE')) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      ...[['PING'], ['ping', 'hi'], ['PING', 'a', 'b'], ['ECHO', 'x'], ['ECHO'], ['GET'], ['GET', 'a', 'b']],
      ...[
        ['SET', 'a'],
        ['MSET', 'a'],
        ['MSET', 'a', '1', 'b'],
        ['INCR'],
        ['DBSIZE', 'x'],
        ['DEL'],
        ['EXISTS'],
      ],
      ...[['MGET'], ['FOO'], ['foo', 'bar', 'baz'], ['GETX', 'a']],
    ),
  },
);

/** Every key of the small key space, read back through the store and compared with the model. */
function assertContents(kv: KvStore, model: Model): void {
  for (const k of KEYS) assert.equal(run(kv, 'GET', k), bulk(model.map.get(k)), `GET ${JSON.stringify(k)}`);
  assert.equal(run(kv, 'DBSIZE'), int(model.map.size));
  const v = kv.verify();
  assert.equal(v.keys, model.map.size);
}

test('model: random commands give the same RESP bytes as a Map', () => {
  fc.assert(
    fc.property(
      fc.array(command, { maxLength: 60 }),
      fc.array(fc.boolean(), { minLength: 1 }),
      (cmds, picks) => {
        const mem = new ArrayAccess(new Uint8Array(64 * 1024));
        // two stores on the same RAM: nothing may be cached between commands
        const stores = [KvStore.format(mem, { buckets: 4 }), KvStore.open(mem)];
        const model = new Model();
        cmds.forEach((c, i) => {
          const kv = stores[picks[i % picks.length] ? 1 : 0];
          assert.equal(run(kv, ...c), model.exec(c), JSON.stringify(c));
        });
        assertContents(stores[0], model);
      },
    ),
    { numRuns: 200 },
  );
});

test('replies to the commands redis-benchmark and redis-cli send on their own', () => {
  const kv = KvStore.format(new ArrayAccess(new Uint8Array(8192)));
  assert.equal(run(kv, 'CONFIG', 'GET', 'save'), '*2\r\n$4\r\nsave\r\n$0\r\n\r\n');
  assert.equal(run(kv, 'config', 'get', 'appendonly'), '*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n');
  assert.equal(run(kv, 'CONFIG', 'GET', 'nosuch'), '*0\r\n');
  assert.equal(
    run(kv, 'CONFIG', 'GET', 'SAVE', 'save', 'app*'),
    run(kv, 'CONFIG', 'GET', 'save', 'appendonly'),
  );
  assert.match(
    run(kv, 'CONFIG', 'GET', '*'),
    /^\*6\r\n\$4\r\nsave\r\n.*\$9\r\nmaxmemory\r\n\$4\r\n\d+\r\n$/s,
  );
  assert.equal(run(kv, 'CONFIG', 'GET'), arity('config|get'));
  assert.equal(run(kv, 'CONFIG'), arity('config'));
  assert.equal(run(kv, 'CONFIG', 'SET', 'save', ''), "-ERR unknown subcommand 'SET'. Try CONFIG HELP.\r\n");
  assert.equal(run(kv, 'COMMAND', 'DOCS'), '*0\r\n');
  assert.equal(run(kv, 'COMMAND'), '*0\r\n');
  assert.equal(run(kv, 'PING'), '+PONG\r\n');
  assert.equal(latin1(kv.execute([])), "-ERR unknown command '', with args beginning with: \r\n");
});

test('unknown commands are reported as Redis does, arguments cut at 128 characters', () => {
  const kv = KvStore.format(new ArrayAccess(new Uint8Array(8192)));
  assert.equal(run(kv, 'FOO'), "-ERR unknown command 'FOO', with args beginning with: \r\n");
  assert.equal(
    run(kv, 'FOO', 'a\r\nb', 'c'),
    "-ERR unknown command 'FOO', with args beginning with: 'a  b' 'c' \r\n",
  );
  const long = 'x'.repeat(200);
  assert.equal(
    run(kv, long, long, 'next'),
    `-ERR unknown command '${'x'.repeat(128)}', with args beginning with: '${'x'.repeat(128)}' \r\n`,
  );
  assert.equal(
    run(kv, 'FOO', 'y'.repeat(100), 'z'.repeat(100), 'w'),
    `-ERR unknown command 'FOO', with args beginning with: '${'y'.repeat(100)}' '${'z'.repeat(25)}' \r\n`,
  );
});

test('INCR: integer semantics at the edges of 64 bits', () => {
  const kv = KvStore.format(new ArrayAccess(new Uint8Array(8192)));
  assert.equal(run(kv, 'INCR', 'n'), ':1\r\n');
  assert.equal(run(kv, 'INCR', 'n'), ':2\r\n');
  assert.equal(run(kv, 'GET', 'n'), '$1\r\n2\r\n');
  run(kv, 'SET', 'n', '-1');
  assert.equal(run(kv, 'INCR', 'n'), ':0\r\n');
  run(kv, 'SET', 'n', '9007199254740991');
  assert.equal(run(kv, 'INCR', 'n'), ':9007199254740992\r\n');
  run(kv, 'SET', 'n', '9223372036854775806');
  assert.equal(run(kv, 'INCR', 'n'), ':9223372036854775807\r\n');
  assert.equal(run(kv, 'INCR', 'n'), '-ERR increment or decrement would overflow\r\n');
  assert.equal(run(kv, 'GET', 'n'), '$19\r\n9223372036854775807\r\n');
  run(kv, 'SET', 'n', '-9223372036854775808');
  assert.equal(run(kv, 'INCR', 'n'), ':-9223372036854775807\r\n');
  for (const bad of [
    '',
    ' 1',
    '1 ',
    '+1',
    '01',
    '-0',
    '1.0',
    'abc',
    '9223372036854775808',
    '-9223372036854775809',
  ]) {
    run(kv, 'SET', 'n', bad);
    assert.equal(run(kv, 'INCR', 'n'), NOT_INTEGER, JSON.stringify(bad));
    assert.equal(run(kv, 'GET', 'n'), bulk(bad));
  }
  kv.verify();
});

test('size classes cover every size with at most 50% slack', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 0xffff_fff8 }), (n) => {
      const c = classOf(n);
      assert.ok(classSize(c) >= n);
      assert.ok(c === 0 || classSize(c - 1) < n);
      assert.ok(classSize(c) <= Math.max(16, 1.5 * n));
    }),
  );
  assert.deepEqual([0, 1, 2, 3, 4, 5].map(classSize), [16, 24, 32, 48, 64, 96]);
});

test('glob patterns for CONFIG GET', () => {
  const cases: [string, string, boolean][] = [
    ['*', 'save', true],
    ['sa*', 'save', true],
    ['SAVE', 'save', true],
    ['s?ve', 'save', true],
    ['s[a-c]ve', 'save', true],
    ['s[^a]ve', 'save', false],
    ['*only', 'appendonly', true],
    ['*o*n*y', 'appendonly', true],
    ['a\\ppendonly', 'appendonly', true],
    ['save?', 'save', false],
    ['', 'save', false],
  ];
  for (const [p, s, want] of cases) assert.equal(globMatch(b(p), s), want, `${p} ~ ${s}`);
});

// ---------------------------------------------------------------------------------------
// Out of memory

function keyN(prefix: string, n: number): string {
  return `${prefix}:${String(n).padStart(6, '0')}`;
}

/** SETs `prefix:n` until OOM; checks a failed SET changes no byte. Returns how many fit. */
function fill(kv: KvStore, mem: ArrayAccess, prefix: string): number {
  for (let n = 0; ; n++) {
    const before = mem.bytes.slice();
    const r = run(kv, 'SET', keyN(prefix, n), `value-${n % 10}`);
    if (r === OOM) {
      assert.deepEqual(mem.bytes, before, 'a SET that ran out of memory changed guest RAM');
      return n;
    }
    assert.equal(r, '+OK\r\n');
  }
}

test('fill until out of memory, delete, and the freed blocks are reused', () => {
  const mem = new ArrayAccess(new Uint8Array(4096));
  const kv = KvStore.format(mem, { buckets: 16 });
  const n = fill(kv, mem, 'key');
  assert.ok(n > 50, `only ${n} keys fit`);
  assert.equal(run(kv, 'DBSIZE'), int(n));
  for (let i = 0; i < n; i++) assert.equal(run(kv, 'GET', keyN('key', i)), bulk(`value-${i % 10}`));
  assert.equal(run(kv, 'EXISTS', keyN('key', n)), int(0));
  const full = kv.verify();
  // free every other key; the same number of new keys fits, without growing the heap
  let deleted = 0;
  for (let i = 0; i < n; i += 2) deleted += Number(run(kv, 'DEL', keyN('key', i)).slice(1, -2));
  assert.equal(kv.verify().freeBlocks, deleted);
  assert.equal(fill(kv, mem, 'new'), deleted);
  assert.equal(kv.stats().bumpBytes, full.bumpBytes);
  assert.equal(run(kv, 'DBSIZE'), int(n));
  for (let i = 0; i < n; i++) {
    assert.equal(run(kv, 'GET', keyN('key', i)), i % 2 === 0 ? bulk(undefined) : bulk(`value-${i % 10}`));
    if (i < deleted) assert.equal(run(kv, 'GET', keyN('new', i)), bulk(`value-${i % 10}`));
  }
  // empty it: every block is free and the store holds exactly as many keys again
  for (let i = 1; i < n; i += 2) run(kv, 'DEL', keyN('key', i));
  for (let i = 0; i < deleted; i++) run(kv, 'DEL', keyN('new', i));
  const empty = kv.verify();
  assert.deepEqual([empty.keys, empty.usedBytes, empty.freeBytes], [0, 0, full.bumpBytes]);
  assert.equal(fill(kv, mem, 'again'), n);
  kv.verify();
});

test('MSET is all or nothing when memory runs out', () => {
  const mem = new ArrayAccess(new Uint8Array(4096));
  const kv = KvStore.format(mem, { buckets: 16 });
  const n = fill(kv, mem, 'key');
  run(kv, 'DEL', keyN('key', 0), keyN('key', 1));
  // two free blocks: three new keys do not fit, and nothing changes, free lists included
  const before = mem.bytes.slice();
  assert.equal(run(kv, 'MSET', 'n:000001', 'value-1', 'n:000002', 'value-2', 'n:000003', 'value-3'), OOM);
  assert.deepEqual(mem.bytes, before);
  assert.equal(run(kv, 'EXISTS', 'n:000001', 'n:000002', 'n:000003'), int(0));
  // growing an existing value that needs a new block fails the same way
  assert.equal(run(kv, 'MSET', keyN('key', 2), 'x'.repeat(500), 'n:000001', 'value-1'), OOM);
  assert.deepEqual(mem.bytes, before);
  assert.equal(run(kv, 'SET', keyN('key', 2), 'x'.repeat(500)), OOM);
  assert.equal(run(kv, 'SET', 'huge', 'x'.repeat(5000)), OOM);
  assert.deepEqual(mem.bytes, before);
  // with one block free, a key given twice needs that one block, not two
  assert.equal(run(kv, 'SET', 'n:000009', 'value-9'), '+OK\r\n');
  assert.equal(run(kv, 'MSET', 'n:000001', 'value-x', 'n:000001', 'value-1'), '+OK\r\n');
  assert.equal(run(kv, 'GET', 'n:000001'), bulk('value-1'));
  assert.equal(run(kv, 'DEL', 'n:000001', 'n:000009'), int(2));
  // two fit, the in-place overwrite needs no block
  assert.equal(
    run(kv, 'MSET', 'n:000001', 'value-1', keyN('key', 2), 'short', 'n:000002', 'value-2'),
    '+OK\r\n',
  );
  assert.equal(
    run(kv, 'MGET', 'n:000001', 'n:000002', keyN('key', 2)),
    `*3\r\n${bulk('value-1')}${bulk('value-2')}${bulk('short')}`,
  );
  assert.equal(run(kv, 'DBSIZE'), int(n));
  kv.verify();
});

const pressure = fc.oneof(
  { weight: 4, arbitrary: command },
  {
    weight: 1,
    arbitrary: fc.tuple(key, fc.integer({ min: 60, max: 400 })).map(([k, n]) => ['SET', k, 'w'.repeat(n)]),
  },
);

test('model under memory pressure: an OOM reply changes nothing, every other reply matches', () => {
  let ooms = 0;
  fc.assert(
    fc.property(fc.array(pressure, { maxLength: 80 }), (cmds) => {
      const mem = new ArrayAccess(new Uint8Array(1024));
      const kv = KvStore.format(mem, { buckets: 8 });
      const model = new Model();
      for (const c of cmds) {
        const before = mem.bytes.slice();
        const r = run(kv, ...c);
        if (r === OOM) {
          ooms++;
          assert.ok(['set', 'mset', 'incr'].includes(c[0].toLowerCase()), `OOM from ${c[0]}`);
          assert.deepEqual(mem.bytes, before, `${JSON.stringify(c)} ran out of memory but changed RAM`);
        } else assert.equal(r, model.exec(c), JSON.stringify(c));
        kv.verify();
      }
      assertContents(kv, model);
    }),
    { numRuns: 200 },
  );
  assert.ok(ooms > 0, 'memory never ran out');
});

// ---------------------------------------------------------------------------------------
// Opening RAM that holds a store

/** Refuses any access outside [from, to). */
class RegionAccess implements GuestAccess {
  constructor(
    readonly inner: ArrayAccess,
    readonly from: number,
    readonly to: number,
  ) {}
  get size(): number {
    return this.inner.size;
  }
  private check(addr: number, len: number): void {
    if (addr < this.from || addr + len > this.to)
      throw new Error(`access ${addr}+${len} outside the kv region`);
  }
  read(addr: number, len: number): Uint8Array {
    this.check(addr, len);
    return this.inner.read(addr, len);
  }
  write(addr: number, bytes: Uint8Array): void {
    this.check(addr, bytes.length);
    this.inner.write(addr, bytes);
  }
  readU32(addr: number): number {
    this.check(addr, 4);
    return this.inner.readU32(addr);
  }
  writeU32(addr: number, value: number): void {
    this.check(addr, 4);
    this.inner.writeU32(addr, value);
  }
}

test('open() on a copy of the RAM sees the same store, and both go on identically', () => {
  fc.assert(
    fc.property(fc.array(command, { maxLength: 40 }), fc.array(command, { maxLength: 20 }), (setup, more) => {
      const base = 4096;
      const size = 16384;
      const ram = new Uint8Array(base + size + 4096).fill(0xa5);
      const kv = KvStore.format(new RegionAccess(new ArrayAccess(ram), base, base + size), {
        base,
        size,
        buckets: 8,
      });
      const model = new Model();
      for (const c of setup) assert.equal(run(kv, ...c), model.exec(c));
      const copy = new ArrayAccess(ram.slice());
      const reopened = KvStore.open(copy, base);
      assert.deepEqual([reopened.base, reopened.size, reopened.buckets], [base, size, 8]);
      assertContents(reopened, model);
      for (const c of more) {
        const want = model.exec(c);
        assert.equal(run(kv, ...c), want);
        assert.equal(run(reopened, ...c), want);
      }
      assert.deepEqual(copy.bytes, ram);
      assert.ok(
        ram.subarray(0, base).every((x) => x === 0xa5) && ram.subarray(base + size).every((x) => x === 0xa5),
      );
    }),
    { numRuns: 100 },
  );
});

test('open() on anything but a store is a clear error', () => {
  assert.throws(() => KvStore.open(new ArrayAccess(new Uint8Array(4096))), {
    name: 'Error',
    message: "not a kv store: magic at guest address 0 is 0x00000000, expected 0x31564b46 ('FKV1')",
  });
  assert.throws(
    () => KvStore.open(new ArrayAccess(new Uint8Array(100))),
    /no kv store at 0: guest RAM has only 100/,
  );
  assert.throws(() => KvStore.open(new ArrayAccess(new Uint8Array(4096)), 3), /multiple of 8/);
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 4096, maxLength: 4096 }), fc.boolean(), (bytes, withMagic) => {
      const mem = new ArrayAccess(bytes);
      if (withMagic) {
        mem.writeU32(0, KV_MAGIC);
        mem.writeU32(4, 1);
      }
      assert.throws(() => KvStore.open(mem), KvFormatError);
    }),
  );
  const fresh = () => {
    const mem = new ArrayAccess(new Uint8Array(8192));
    KvStore.format(mem, { buckets: 16 });
    return mem;
  };
  const broken: [number, number, RegExp][] = [
    [4, 2, /has version 2; this build reads version 1/],
    [8, 16384, /region of 16384 bytes does not fit in guest RAM of 8192 bytes/],
    [12, 12, /bucket count 12/],
    [24, 8191, /bump pointer 8191/],
    [28, 1000, /key count 1000/],
    [64 + 4, 9000, /free list of class 1 starts at 9000/],
  ];
  for (const [at, v, want] of broken) {
    const mem = fresh();
    mem.writeU32(at, v);
    assert.throws(
      () => KvStore.open(mem),
      (e: Error) => e instanceof KvFormatError && want.test(e.message),
    );
  }
  assert.equal(KvStore.open(fresh()).buckets, 16);
});

test('format() rejects a region that cannot hold a store', () => {
  const mem = new ArrayAccess(new Uint8Array(4096));
  assert.throws(() => KvStore.format(mem, { base: 4 }), /multiple of 8/);
  assert.throws(() => KvStore.format(mem, { base: 2048, size: 4096 }), /does not fit in guest RAM/);
  assert.throws(() => KvStore.format(mem, { buckets: 3 }), /power of two/);
  assert.throws(() => KvStore.format(mem, { buckets: 1024 }), /too small for 1024 buckets/);
  assert.throws(() => KvStore.format(mem, { size: 100 }), KvFormatError);
});

test('verify() finds leaked blocks; a chain that loops is an error, not a hang', () => {
  const mem = new ArrayAccess(new Uint8Array(8192));
  const kv = KvStore.format(mem, { buckets: 1 });
  run(kv, 'MSET', 'a', '1', 'b', '2');
  run(kv, 'DEL', 'a');
  const { freeBlocks } = kv.verify();
  assert.equal(freeBlocks, 1);
  const head = mem.readU32(64 + 4); // the freed block heads class 1's free list
  assert.notEqual(head, 0);
  mem.writeU32(64 + 4, 0);
  assert.throws(
    () => kv.verify(),
    (e: Error) => e instanceof KvCorruptError && /neither linked nor free/.test(e.message),
  );
  mem.writeU32(64 + 4, head);
  kv.verify();
  const entry = mem.readU32(512); // the only bucket's first entry
  mem.writeU32(entry + 4, entry); // its next points at itself
  assert.throws(
    () => run(kv, 'GET', 'zz'),
    (e: Error) => e instanceof KvCorruptError && /does not end/.test(e.message),
  );
});

// ---------------------------------------------------------------------------------------
// Restart: interrupted by PageNotPresent, rolled back, re-run

test('restart: a command interrupted at any access, rolled back and re-run, ends as if never interrupted', () => {
  let interruptions = 0;
  const fraction = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });
  const step = fc.record({
    cmd: pressure,
    faults: fc.array(fraction, { maxLength: 3 }),
    // what other tasks run while the interrupted one waits for its page
    meanwhile: fc.option(command, { nil: undefined }),
  });
  fc.assert(
    // a small region too, so that out-of-memory paths are interrupted as well
    fc.property(fc.array(step, { maxLength: 30 }), fc.constantFrom(1024, 8192), (steps, size) => {
      const refMem = new ArrayAccess(new Uint8Array(size));
      const ref = KvStore.format(refMem, { buckets: 4 });
      const tx = new TxAccess(new Uint8Array(size));
      tx.begin();
      KvStore.format(tx, { buckets: 4 });
      tx.commit();
      const kv = KvStore.open(tx);
      for (const { cmd, faults, meanwhile } of steps) {
        const args = cmd.map(b);
        for (const f of faults) {
          tx.begin(); // a dry run counts the accesses an uninterrupted run makes now
          kv.execute(args);
          const n = tx.accesses;
          if (n === 0) break;
          tx.begin(Math.floor(f * n));
          assert.throws(() => kv.execute(args), PageNotPresent);
          interruptions++;
          if (meanwhile !== undefined) {
            const other = meanwhile.map(b);
            ref.execute(other);
            tx.begin();
            kv.execute(other);
            tx.commit();
          }
        }
        const want = latin1(ref.execute(args));
        tx.begin();
        const got = latin1(kv.execute(args));
        tx.commit();
        assert.equal(got, want, JSON.stringify(cmd));
        assert.deepEqual(tx.committed, refMem.bytes, `RAM differs after ${JSON.stringify(cmd)}`);
      }
      ref.verify();
    }),
    { numRuns: 150 },
  );
  assert.ok(interruptions > 100, `only ${interruptions} interruptions`);
});
