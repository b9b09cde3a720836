import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cidText, parseCid } from '../src/core/cid.js';

function ok(value: string, type: string, token: string): void {
  const r = parseCid(value);
  assert.ok(r.ok, `expected ${JSON.stringify(value)} to be valid: ${r.ok ? '' : r.reason}`);
  if (r.ok) assert.equal(r.cid, { type, token });
}

function bad(value: string, reason: string): void {
  const r = parseCid(value);
  assert.not.ok(r.ok, `expected ${JSON.stringify(value)} to be rejected`);
  if (!r.ok) assert.is(r.reason, reason, `reason for ${JSON.stringify(value.slice(0, 40))}`);
}

test('valid CIDs', () => {
  ok('UUID 23bf83be-aad7-46aa-9e0f-39191ccf402f', 'UUID', '23bf83be-aad7-46aa-9e0f-39191ccf402f');
  ok('uuid x', 'UUID', 'x');
  ok('DEVICE_ID abc', 'DEVICE_ID', 'abc');
  ok('TBIRD-UUID t', 'TBIRD-UUID', 't');
  ok('Mixed-Case_9 Tok', 'MIXED-CASE_9', 'Tok');
  ok(`${'A'.repeat(16)} t`, 'A'.repeat(16), 't');
  ok(`UUID ${'z'.repeat(128)}`, 'UUID', 'z'.repeat(128));
  ok('UUID a"b\\c', 'UUID', 'a"b\\c');
  ok('X !~', 'X', '!~');
});

test('tokens are exact, types are not', () => {
  const a = parseCid('uuid AbC');
  const b = parseCid('UUID AbC');
  const c = parseCid('UUID abc');
  assert.ok(a.ok && b.ok && c.ok);
  if (a.ok && b.ok && c.ok) {
    assert.is(cidText(a.cid), cidText(b.cid));
    assert.is.not(cidText(b.cid), cidText(c.cid));
  }
});

test('cidText', () => {
  assert.is(cidText({ type: 'UUID', token: 'abc' }), 'UUID abc');
  // A hand-built Cid still hashes canonically.
  assert.is(cidText({ type: 'uuid', token: 'abc' }), 'UUID abc');
});

const MALFORMED: Array<[string, string]> = [
  ['', 'CID is empty'],
  ['UUID', 'CID has no space between type and token'],
  ['UUID\tabc', 'CID has no space between type and token'],
  [' UUID abc', 'CID has a leading space'],
  [' ', 'CID has a leading space'],
  ['UUID  abc', 'CID has more than one space between type and token'],
  ['UUID abc ', 'CID has a trailing space'],
  ['UUID ', 'CID token is empty'],
  ['UUID abc def', 'CID token contains a space'],
  [`${'A'.repeat(17)} abc`, 'CID type longer than 16 characters'],
  ['UU.ID abc', 'CID type contains a character other than A-Z, a-z, 0-9, "-" or "_"'],
  ['UUİD abc', 'CID type contains a character other than A-Z, a-z, 0-9, "-" or "_"'],
  [`UUID ${'z'.repeat(129)}`, 'CID token longer than 128 characters'],
  ['UUID ab\tc', 'CID token contains a non-printable or non-ASCII character'],
  ['UUID ab\x7fc', 'CID token contains a non-printable or non-ASCII character'],
  ['UUID ab\x00c', 'CID token contains a non-printable or non-ASCII character'],
  ['UUID abcé', 'CID token contains a non-printable or non-ASCII character'],
  ['UUID ab\u2028c', 'CID token contains a non-printable or non-ASCII character'],
  [`UUID ${'z'.repeat(600)}`, 'CID longer than 512 characters'],
];

test('malformed CIDs and their reasons', () => {
  for (const [value, reason] of MALFORMED) bad(value, reason);
});

test('a reason never contains the token', () => {
  const secret = 'S3cr3t-T0ken-9f8e7d';
  const variants = [
    `UUID ${secret} `,
    `UUID  ${secret}`,
    ` UUID ${secret}`,
    `UUID ${secret} x`,
    `UUID ${secret}\x01`,
    `UUID ${secret}é`,
    `UUID ${secret.repeat(10)}`,
    `UUID ${secret.repeat(40)}`,
    `${'T'.repeat(20)} ${secret}`,
    `U.U ${secret}`,
    secret,
  ];
  for (const v of variants) {
    const r = parseCid(v);
    assert.not.ok(r.ok, v);
    if (!r.ok) {
      assert.not.ok(r.reason.includes(secret), r.reason);
      assert.not.ok(r.reason.includes('S3cr3t'), r.reason);
    }
  }
  // Every reason is one of the fixed texts, so nothing from any input can leak through.
  const fixed = new Set(MALFORMED.map(([, reason]) => reason));
  for (const v of variants) {
    const r = parseCid(v);
    if (!r.ok) assert.ok(fixed.has(r.reason), r.reason);
  }
});

test('huge input is rejected quickly', () => {
  const big = `UUID ${'a'.repeat(10_000_000)}`;
  const t0 = performance.now();
  const r = parseCid(big);
  assert.ok(performance.now() - t0 < 50);
  assert.not.ok(r.ok);
});

test.run();
