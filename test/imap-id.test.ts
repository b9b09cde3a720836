import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { idField, parseImapId, type ImapIdFields } from '../src/dovecot-policy/imap-id.js';
import { parseCid } from '../src/core/cid.js';
import { readDovecotCapture } from './helpers/paths.js';

type Pairs = ImapIdFields['pairs'];

function deviceIds(name: string): string[] {
  return readDovecotCapture(name).map((c) => {
    const body = JSON.parse(c.body) as { device_id?: unknown };
    assert.type(body.device_id, 'string');
    return body.device_id as string;
  });
}

function parsed(raw: string, pairs: Pairs, flags: { truncated?: boolean; malformed?: boolean } = {}): ImapIdFields {
  const f = parseImapId(raw);
  assert.equal(f.pairs, pairs, `pairs of ${JSON.stringify(raw.slice(0, 80))}`);
  assert.is(f.truncated, flags.truncated ?? false, `truncated of ${JSON.stringify(raw.slice(0, 80))}`);
  assert.is(f.malformed, flags.malformed ?? false, `malformed of ${JSON.stringify(raw.slice(0, 80))}`);
  return f;
}

const THUNDERBIRD: Pairs = [
  ['clientid', 'UUID 23bf83be-aad7-46aa-9e0f-39191ccf402f'],
  ['name', 'Thunderbird'],
  ['version', '128.5.0'],
];
const ESCAPED: Pairs = [
  ['clientid', 'UUID a"b\\c'],
  ['name', null],
];

test('capture: imap and pop3', () => {
  const ids = deviceIds('dovecot-2.3.19-imap-pop3.jsonl');
  const expected: Pairs[] = [THUNDERBIRD, THUNDERBIRD, ESCAPED, ESCAPED, [], [], [], [], [], []];
  assert.is(ids.length, expected.length);
  ids.forEach((raw, n) => parsed(raw, expected[n]!));
  const first = parseImapId(ids[0]!);
  assert.is(idField(first, ['clientid']), 'UUID 23bf83be-aad7-46aa-9e0f-39191ccf402f');
  const cid = parseCid(idField(first, ['clientid'])!);
  assert.ok(cid.ok);
  const escaped = parseImapId(ids[2]!);
  assert.is(idField(escaped, ['clientid']), 'UUID a"b\\c');
  assert.is(idField(escaped, ['name']), undefined);
  assert.ok(parseCid(idField(escaped, ['clientid'])!).ok);
});

test('capture: duplicate tls key', () => {
  const ids = deviceIds('dovecot-2.3.19-duplicate-tls-key.jsonl');
  assert.is(ids.length, 1);
  const f = parsed(ids[0]!, [
    ['name', 'T'],
    ['x-cid', 'uuid:reject-nomsg'],
  ]);
  const cid = parseCid(idField(f, ['x-cid'])!);
  assert.not.ok(cid.ok);
  if (!cid.ok) assert.is(cid.reason, 'CID has no space between type and token');
});

test('capture: smtp via postfix sasl has no ID', () => {
  const ids = deviceIds('dovecot-2.3.19-smtp-via-postfix-sasl.jsonl');
  assert.is(ids.length, 3);
  for (const raw of ids) {
    assert.is(raw, '');
    parsed(raw, []);
  }
});

test('empty and blank input', () => {
  parsed('', []);
  parsed('   ', []);
});

test('leading space and extra spaces are tolerated', () => {
  parsed(' "clientid" "UUID x"', [['clientid', 'UUID x']]);
  parsed('"a"  "b"   "c" NIL ', [
    ['a', 'b'],
    ['c', null],
  ]);
});

test('keys keep their case', () => {
  const f = parsed('"ClientID" "UUID x" "NAME" "K-9"', [
    ['ClientID', 'UUID x'],
    ['NAME', 'K-9'],
  ]);
  assert.is(idField(f, ['clientid']), 'UUID x');
  assert.is(idField(f, ['name']), 'K-9');
});

test('NIL is case-insensitive and only unquoted', () => {
  parsed('"a" nil "b" Nil "c" "NIL"', [
    ['a', null],
    ['b', null],
    ['c', 'NIL'],
  ]);
});

test('truncated inside a value', () => {
  parsed('"clientid" "UUID 23bf', [], { truncated: true });
  parsed('"name" "T" "clientid" "UUID 23bf', [['name', 'T']], { truncated: true });
});

test('truncated inside a key', () => {
  parsed('"name" "T" "clie', [['name', 'T']], { truncated: true });
  parsed('"', [], { truncated: true });
});

test('key without value', () => {
  parsed('"name" "T" "clientid"', [['name', 'T']], { truncated: true });
  parsed('"name" "T" "clientid" ', [['name', 'T']], { truncated: true });
});

test('NIL cut short at the end', () => {
  parsed('"name" "T" "os" NI', [['name', 'T']], { truncated: true });
  parsed('"name" "T" "os" N', [['name', 'T']], { truncated: true });
});

test('unterminated escape at end', () => {
  parsed('"a" "b\\', [], { truncated: true });
  parsed('"a" "b" "c\\', [['a', 'b']], { truncated: true });
});

test('stray garbage between pairs is skipped', () => {
  parsed('"a" "b" ) "c" "d"', [
    ['a', 'b'],
    ['c', 'd'],
  ], { malformed: true });
  parsed('( "a" "b" foo bar "c" "d" )', [
    ['a', 'b'],
    ['c', 'd'],
  ], { malformed: true });
});

test('unquoted atom as a value drops that pair', () => {
  parsed('"a" foo "c" "d"', [['c', 'd']], { malformed: true });
  parsed('"a" 123 "c" "d"', [['c', 'd']], { malformed: true });
});

test('NIL as a key drops that pair', () => {
  parsed('NIL "x" "c" "d"', [['c', 'd']], { malformed: true });
  parsed('"a" "b" NIL NIL "c" "d"', [
    ['a', 'b'],
    ['c', 'd'],
  ], { malformed: true });
});

test('only quotes', () => {
  parsed('""""', [], { malformed: true });
  parsed('""', [], { truncated: true });
  parsed('"" ""', [['', '']]);
  parsed('"""', [], { malformed: true });
  parsed('"a" "b" NIL', [['a', 'b']], { malformed: true });
});

test('strings glued together are one bad piece', () => {
  parsed('"a""b" "c" "d"', [['c', 'd']], { malformed: true });
  parsed('"a" "b"x "c" "d"', [['c', 'd']], { malformed: true });
});

test('escapes', () => {
  parsed('"k" "a\\"b\\\\c"', [['k', 'a"b\\c']]);
  parsed('"k\\"ey" "v"', [['k"ey', 'v']]);
  // Only \" and \\ exist in IMAP quoted strings.
  parsed('"a" "x\\ny" "c" "d"', [['c', 'd']], { malformed: true });
  parsed('"a\\x" "v" "c" "d"', [['c', 'd']], { malformed: true });
  // The escaped quote does not end the string, even when the escape sequence around it is invalid.
  parsed('"a" "x\\q\\"y" "c" "d"', [['c', 'd']], { malformed: true });
});

test('odd characters inside values are kept', () => {
  parsed('"k" "tab\there" "u" "é"', [
    ['k', 'tab\there'],
    ['u', 'é'],
  ]);
});

test('repeated key: both kept, first wins in idField', () => {
  const f = parsed('"clientid" "UUID first" "ClientId" "UUID second"', [
    ['clientid', 'UUID first'],
    ['ClientId', 'UUID second'],
  ]);
  assert.is(idField(f, ['CLIENTID']), 'UUID first');
});

test('100 KB input is cut, does not throw, returns fast', () => {
  const big = `"clientid" "UUID x" "name" "${'a'.repeat(100 * 1024)}"`;
  const t0 = performance.now();
  const f = parseImapId(big);
  assert.ok(performance.now() - t0 < 100);
  assert.equal(f.pairs, [['clientid', 'UUID x']]);
  assert.ok(f.truncated);
  assert.not.ok(f.malformed);

  const junk = ' \\"'.repeat(40_000);
  const t1 = performance.now();
  const g = parseImapId(junk);
  assert.ok(performance.now() - t1 < 100);
  assert.equal(g.pairs, []);
  assert.ok(g.truncated);
});

test('1000 pairs are capped at 64', () => {
  const raw = Array.from({ length: 1000 }, (_, n) => `"k${n}" "v${n}"`).join(' ');
  const f = parseImapId(raw);
  assert.is(f.pairs.length, 64);
  assert.equal(f.pairs[0], ['k0', 'v0']);
  assert.equal(f.pairs[63], ['k63', 'v63']);
  assert.ok(f.truncated);
  assert.not.ok(f.malformed);

  const exact = Array.from({ length: 64 }, (_, n) => `"k${n}" NIL`).join(' ');
  const g = parseImapId(`${exact} `);
  assert.is(g.pairs.length, 64);
  assert.not.ok(g.truncated);
});

test('never throws on assorted hostile input', () => {
  const samples = ['\\', '\\\\', '"\\"', ')', '(', 'NIL', '" "', '"a" "b" "', '\u0000"\u0000"', '\ud800"k" "v"', '"\ud800" "v"'];
  for (const s of samples) {
    const f = parseImapId(s);
    assert.ok(Array.isArray(f.pairs));
  }
  let seed = 7;
  const alphabet = ' "\\Nnil()ab\u00e9';
  for (let n = 0; n < 2000; n++) {
    let s = '';
    const len = n % 40;
    for (let k = 0; k < len; k++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      s += alphabet[seed % alphabet.length];
    }
    const f = parseImapId(s);
    assert.ok(f.pairs.length <= 64);
  }
});

test('idField: case-insensitive lookup', () => {
  const f = parseImapId('"Name" "Thunderbird" "CLIENTID" "UUID x"');
  assert.is(idField(f, ['name']), 'Thunderbird');
  assert.is(idField(f, ['ClientId']), 'UUID x');
  assert.is(idField(f, ['version']), undefined);
  assert.is(idField(f, []), undefined);
});

test('idField: ASCII-only case folding', () => {
  // KELVIN SIGN lowercases to "k" under Unicode rules; it must not match a "k" key.
  const f = parseImapId('"\u212Aey" "v"');
  assert.is(idField(f, ['key']), undefined);
  assert.is(idField(f, ['\u212Aey']), 'v');
});

test('idField: order of names is respected', () => {
  const f = parseImapId('"x-cid" "UUID b" "clientid" "UUID a"');
  assert.is(idField(f, ['clientid', 'x-cid']), 'UUID a');
  assert.is(idField(f, ['x-cid', 'clientid']), 'UUID b');
  assert.is(idField(f, ['absent', 'x-cid']), 'UUID b');
});

test('idField: NIL counts as absent', () => {
  const f = parseImapId('"clientid" NIL "x-cid" "UUID b"');
  assert.is(idField(f, ['clientid']), undefined);
  assert.is(idField(f, ['clientid', 'x-cid']), 'UUID b');
});

test('idField: first occurrence of a repeated key', () => {
  const f = parseImapId('"clientid" "UUID a" "clientid" "UUID b"');
  assert.is(idField(f, ['clientid']), 'UUID a');
  // A NIL first occurrence is not overridden by a later value.
  const g = parseImapId('"clientid" NIL "clientid" "UUID b"');
  assert.is(idField(g, ['clientid']), undefined);
});

test.run();
