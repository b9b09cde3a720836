// RESP2 encoding and the incremental parser, on their own: every reply type, every split point,
// every bound.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  asRespValue,
  createRespParser,
  encodeCommand,
  MAX_BULK_BYTES,
  MAX_DEPTH,
  MAX_LINE_BYTES,
  type RespReply,
} from '../src/redis/resp.js';
import { RedisError } from '../src/redis/types.js';

const b = (s: string) => Buffer.from(s, 'utf8');

function parseAll(chunks: Buffer[]): RespReply[] {
  const p = createRespParser();
  const out: RespReply[] = [];
  for (const c of chunks) out.push(...p.push(c));
  return out;
}

function protocolError(fn: () => unknown, re: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, RedisError);
    assert.is((e as RedisError).code, 'protocol');
    assert.match((e as RedisError).message, re);
    return;
  }
  assert.unreachable('expected a protocol error');
}

test('encodeCommand: an array of bulk strings; numbers as decimal text; UTF-8 lengths in bytes; buffers as they are', () => {
  assert.is(encodeCommand(['SET', 'k', 'v']).toString(), '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n');
  assert.is(encodeCommand(['INCRBY', 'n', -12]).toString(), '*3\r\n$6\r\nINCRBY\r\n$1\r\nn\r\n$3\r\n-12\r\n');
  assert.is(encodeCommand(['SET', 'é', '']).toString(), '*3\r\n$3\r\nSET\r\n$2\r\né\r\n$0\r\n\r\n');
  const raw = Buffer.from([0, 13, 10, 255]);
  const enc = encodeCommand(['SET', raw]);
  assert.equal(enc.subarray(enc.length - 6, enc.length - 2), raw);
  assert.is(encodeCommand(['X', 2 ** 60]).toString(), '*2\r\n$1\r\nX\r\n$19\r\n1152921504606846976\r\n');
  assert.throws(() => encodeCommand(['X', NaN]), /finite/);
  assert.throws(() => encodeCommand([]), /at least/);
});

test('every reply type: simple, error (a marker, not a throw), integer, bulk, empty bulk, nil bulk, nil array, empty array, nested', () => {
  const wire = '+OK\r\n-ERR wrong\r\n:42\r\n:-7\r\n$4\r\nhé!\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n*3\r\n:1\r\n*2\r\n$1\r\na\r\n*1\r\n$-1\r\n+x\r\n';
  assert.equal(parseAll([b(wire)]), ['OK', { error: 'ERR wrong' }, 42, -7, 'hé!', '', null, null, [], [1, ['a', [null]], 'x']]);
});

test('a bulk may hold CR, LF and bytes that look like RESP; its length is in bytes', () => {
  assert.equal(parseAll([b('$7\r\n+OK\r\n:1\r\n')]), ['+OK\r\n:1']);
  assert.equal(parseAll([b('$5\r\nété\r\n')]), ['été']);
});

test('error replies nested in arrays are kept as markers; asRespValue refuses them as a server error', () => {
  const [r] = parseAll([b('*2\r\n+OK\r\n-WRONGTYPE bad\r\n')]);
  assert.equal(r, ['OK', { error: 'WRONGTYPE bad' }]);
  try {
    asRespValue(r!);
    assert.unreachable();
  } catch (e) {
    assert.is((e as RedisError).code, 'server');
    assert.is((e as RedisError).message, 'WRONGTYPE bad');
  }
  assert.equal(asRespValue(['a', [1, null]]), ['a', [1, null]]);
});

const MULTI =
  '+OK\r\n-ERR x y\r\n:123456\r\n$12\r\nhello\r\nworld\r\n$-1\r\n*3\r\n*2\r\n:1\r\n$2\r\nab\r\n*0\r\n*1\r\n*1\r\n+deep\r\n$0\r\n\r\n*-1\r\n';
const MULTI_PARSED: RespReply[] = ['OK', { error: 'ERR x y' }, 123456, 'hello\r\nworld', null, [[1, 'ab'], [], [['deep']]], '', null];

test('every split point of a multi-reply buffer gives the same replies', () => {
  const wire = b(MULTI);
  assert.equal(parseAll([wire]), MULTI_PARSED);
  for (let i = 0; i <= wire.length; i++) {
    for (let j = i; j <= wire.length; j += 7) {
      assert.equal(parseAll([wire.subarray(0, i), wire.subarray(i, j), wire.subarray(j)]), MULTI_PARSED, `split at ${i}, ${j}`);
    }
  }
});

test('byte by byte, and in random chunks, gives the same replies', () => {
  const wire = b(MULTI.repeat(20));
  const expected = Array.from({ length: 20 }, () => MULTI_PARSED).flat();
  assert.equal(parseAll([...wire].map((x) => Buffer.from([x]))), expected);
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (let round = 0; round < 200; round++) {
    const chunks: Buffer[] = [];
    for (let pos = 0; pos < wire.length; ) {
      const n = 1 + Math.floor(rnd() * 40);
      chunks.push(wire.subarray(pos, pos + n));
      pos += n;
    }
    assert.equal(parseAll(chunks), expected);
  }
});

test('a large bulk arriving in many small chunks is assembled once (no quadratic copying)', () => {
  const size = 8 * 1024 * 1024;
  const body = Buffer.alloc(size, 0x61);
  const wire = Buffer.concat([b(`$${size}\r\n`), body, b('\r\n')]);
  const p = createRespParser();
  const t0 = process.hrtime.bigint();
  const out: RespReply[] = [];
  for (let pos = 0; pos < wire.length; pos += 1024) out.push(...p.push(wire.subarray(pos, pos + 1024)));
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  assert.is(out.length, 1);
  assert.is((out[0] as string).length, size);
  // Quadratic re-concatenation of 8 MiB in 8192 steps copies ~32 GiB: minutes, not this.
  assert.ok(ms < 5000, `took ${ms} ms`);
});

test('bounds: huge bulk length, overlong array, deep nesting, overlong line, garbage type byte, bad lengths → protocol errors', () => {
  const p = () => createRespParser();
  protocolError(() => p().push(b(`$${MAX_BULK_BYTES + 1}\r\n`)), /bulk of \d+ bytes exceeds/);
  protocolError(() => p().push(b('$99999999999999999999\r\n')), /exceeds/);
  protocolError(() => createRespParser({ maxArrayLength: 10 }).push(b('*11\r\n')), /array of 11 elements exceeds/);
  protocolError(() => p().push(b('*1\r\n'.repeat(MAX_DEPTH + 1))), /nested deeper than 16/);
  assert.equal(p().push(b('*1\r\n'.repeat(MAX_DEPTH - 1) + ':1\r\n')), [JSON.parse('['.repeat(MAX_DEPTH - 1) + '1' + ']'.repeat(MAX_DEPTH - 1))]);
  protocolError(() => p().push(b('+' + 'x'.repeat(MAX_LINE_BYTES + 1))), /longer than/);
  // The bound holds across chunks too, without waiting for a LF that never comes.
  const q = p();
  q.push(b('+' + 'x'.repeat(MAX_LINE_BYTES - 10)));
  protocolError(() => q.push(b('x'.repeat(100))), /longer than/);
  assert.equal(p().push(b('+' + 'x'.repeat(MAX_LINE_BYTES - 1) + '\r\n')), ['x'.repeat(MAX_LINE_BYTES - 1)]);
  protocolError(() => p().push(b('HTTP/1.1 400 Bad Request\r\n')), /unknown reply type byte 0x48/);
  protocolError(() => p().push(b('%2\r\n')), /unknown reply type byte 0x25/);
  protocolError(() => p().push(b(':12a\r\n')), /bad integer/);
  protocolError(() => p().push(b('$-2\r\n')), /bad bulk length/);
  protocolError(() => p().push(b('*x\r\n')), /bad array length/);
  protocolError(() => p().push(b('+OK\n')), /CRLF/);
  protocolError(() => p().push(b('\r\n')), /CRLF|empty/);
  protocolError(() => p().push(b('$2\r\nabXY')), /bulk string must end in CRLF/);
});

test('after a protocol error the parser stays broken (the stream lost its framing)', () => {
  const p = createRespParser();
  protocolError(() => p.push(b('?\r\n')), /unknown/);
  protocolError(() => p.push(b('+OK\r\n')), /unknown/);
});

test.run();
