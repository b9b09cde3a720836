// The store.redis URL: the forms accepted, their defaults, and the refusals (never echoing a password).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MAX_DB, MAX_SENTINELS, parseRedisUrl } from '../src/redis/url.js';
import type { RedisAddress } from '../src/redis/types.js';

function ok(text: string): RedisAddress {
  const r = parseRedisUrl(text);
  if (!r.ok) assert.unreachable(`${text}: ${r.error}`);
  return (r as { ok: true; address: RedisAddress }).address;
}

function refused(text: string, re: RegExp): string {
  const r = parseRedisUrl(text);
  if (r.ok) assert.unreachable(`${text} was accepted`);
  const error = (r as { ok: false; error: string }).error;
  assert.match(error, re);
  return error;
}

test('redis://: host, port and db with their defaults; IPv6 in brackets; names; trailing slash', () => {
  assert.equal(ok('redis://127.0.0.1'), { target: { kind: 'direct', host: '127.0.0.1', port: 6379 }, db: 0 });
  assert.equal(ok('redis://127.0.0.1:6390/3'), { target: { kind: 'direct', host: '127.0.0.1', port: 6390 }, db: 3 });
  assert.equal(ok('redis://redis.example.org/'), { target: { kind: 'direct', host: 'redis.example.org', port: 6379 }, db: 0 });
  assert.equal(ok('redis://[::1]:7000/15'), { target: { kind: 'direct', host: '::1', port: 7000 }, db: 15 });
  assert.equal(ok('redis://[fe80::1]'), { target: { kind: 'direct', host: 'fe80::1', port: 6379 }, db: 0 });
  assert.equal(ok('  REDIS://localhost:1/0  '), { target: { kind: 'direct', host: 'localhost', port: 1 }, db: 0 });
  assert.is(ok(`redis://h/${MAX_DB}`).db, MAX_DB);
});

test('sentinel://: a list of sentinels (default port 26379), the master name, an optional db', () => {
  assert.equal(ok('sentinel://10.0.0.1,10.0.0.2:26380,[::1]/mymaster'), {
    target: {
      kind: 'sentinel',
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: '10.0.0.2', port: 26380 },
        { host: '::1', port: 26379 },
      ],
      master: 'mymaster',
    },
    db: 0,
  });
  assert.equal(ok('sentinel://s1:5000/cidlock-main_1.x/7'), { target: { kind: 'sentinel', sentinels: [{ host: 's1', port: 5000 }], master: 'cidlock-main_1.x' }, db: 7 });
  assert.is(ok('sentinel://s1/m/').db, 0);
  const many = Array.from({ length: MAX_SENTINELS }, (_, i) => `10.0.0.${i + 1}`).join(',');
  assert.is((ok(`sentinel://${many}/m`).target as { sentinels: readonly unknown[] }).sentinels.length, MAX_SENTINELS);
});

test('a password in the URL is refused with a pointer to password_file, and never repeated', () => {
  for (const [url, secret] of [
    ['redis://:s3cr3t-pw@127.0.0.1:6379/0', 's3cr3t-pw'],
    ['redis://cidlock:s3cr3t-pw@127.0.0.1', 's3cr3t-pw'],
    ['redis://:pa/ss:99@host', 'pa/ss:99'],
    ['redis://:p?w#x@host', 'p?w#x'],
    ['sentinel://:hunter2@s1,s2/m', 'hunter2'],
    ['rediss://:hunter2@h', 'hunter2'],
    ['bogus://:hunter2@h', 'hunter2'],
  ] as const) {
    const e = refused(url, /password_file/);
    assert.not.ok(e.includes(secret), `${url} → ${e}`);
  }
  const e = refused('redis://someuser@host', /user name/);
  assert.not.ok(e.includes('someuser'));
});

test('refusals: bad scheme, TLS, ports, dbs, hosts, IPv6 without brackets, query, sentinel list and master name', () => {
  refused('127.0.0.1:6379', /expected redis:\/\//);
  refused('http://h', /unknown scheme "http:\/\/"/);
  refused('rediss://h', /TLS/);
  refused('redis://', /host is missing/);
  refused('redis://h:0', /port "0"/);
  refused('redis://h:65536', /port "65536"/);
  refused('redis://h:', /port ""/);
  refused('redis://h:63x', /port "63x"/);
  refused('redis://h/-1', /database "-1"/);
  refused(`redis://h/${MAX_DB + 1}`, /database/);
  refused('redis://h/a', /database "a"/);
  refused('redis://h/1/2', /one path segment/);
  refused('redis://::1:6379', /brackets/);
  refused('redis://[::1', /closed/);
  refused('redis://[nope]:1', /not an IPv6/);
  refused('redis://[::1]x', /unexpected/);
  refused('redis://under_score', /not a host name/);
  refused('redis://h/0?timeout=1', /no query/);
  refused('sentinel:///m', /at least one/);
  refused('sentinel://s1', /master name/);
  refused('sentinel://s1/', /master name/);
  refused('sentinel://s1,,s2/m', /empty entry/);
  refused('sentinel://s1,s1:26379/m', /listed twice/);
  refused('sentinel://s1/my master', /no query, fragment or spaces/);
  refused('sentinel://s1/m$x', /master name/);
  refused(`sentinel://s1/${'m'.repeat(65)}`, /master name/);
  refused('sentinel://s1/m/1/2', /two path segments/);
  refused('sentinel://s1/m/x', /database "x"/);
  refused(`sentinel://${Array.from({ length: MAX_SENTINELS + 1 }, (_, i) => `h${i}`).join(',')}/m`, /at most 16 sentinels/);
  refused(`redis://${'a'.repeat(3000)}`, /longer than/);
});

test.run();
