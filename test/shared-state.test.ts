// Two daemons sharing one Redis act as one host towards Dovecot: a device proven on one vouches
// on the other, failures seen by both add up to one limit, learn mode admits exactly max_devices
// across both, and an unknown-device alert is raised once. Each daemon has its own connections,
// so everything between them crosses real sockets and a real Redis.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { jsonLogger } from '../src/core/log.js';
import { loadRulesFile } from '../src/core/rules/load.js';
import { startDaemon, type Daemon } from '../src/daemon/daemon.js';
import type { SharedEvent } from '../src/core/shared-state.js';
import { encodeSharedMessage, parseSharedMessage } from '../src/daemon/shared-redis.js';
import { post, TEST_DOVECOT_KEY } from './helpers/http.js';
import { requireRedis, startRedis, type RedisInstance } from './helpers/redis.js';
import { tempDir } from './helpers/tmp.js';

const ready = requireRedis('shared-state');
const check = ready ? test : test.skip;

let redis: RedisInstance;
type Log = Record<string, unknown>;
interface Host { d: Daemon; port: number; logs: Log[] }
let a: Host;
let b: Host;
let prefixes = 0;
const started: Daemon[] = [];

const RULES = (port: number, prefix: string, extra: string) => [
  'listen: { admin: off, dovecot: 127.0.0.1:0, postfix: off, socketmap: off }',
  `dovecot: { api_key: "${TEST_DOVECOT_KEY}" }`,
  `store: { redis: "redis://127.0.0.1:${port}/0", key_prefix: "${prefix}" }`,
  'log: { decisions: all }',
  extra,
].join('\n');

async function startHost(prefix: string, extra: string): Promise<Host> {
  const dir = tempDir();
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, RULES(redis.port, prefix, extra));
  const r = loadRulesFile(cfg);
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  const logs: Log[] = [];
  const d = await startDaemon({ rules: r.rules, logger: jsonLogger((l) => logs.push(JSON.parse(l))) });
  started.push(d);
  return { d, port: Number(d.addresses.dovecot!.split(':')[1]), logs };
}

/** Both hosts on a fresh key prefix: each test starts from an empty shared state. */
async function pair(extra: string): Promise<void> {
  const prefix = `s${++prefixes}:`;
  a = await startHost(prefix, extra);
  b = await startHost(prefix, extra);
}

let session = 0;
const body = (user: string, remote: string, o: { cid?: string; protocol?: string } = {}) => ({
  login: user, protocol: o.protocol ?? 'imap', remote, tls: true, session_id: `sess${++session}`,
  ...(o.cid ? { device_id: `"clientid" "UUID ${o.cid}"` } : {}),
});
const allow = async (h: Host, b0: object) => JSON.parse((await post(h.port, '/?command=allow', JSON.stringify(b0))).body) as { status: number };
const report = (h: Host, b0: object, success: boolean) => post(h.port, '/?command=report', JSON.stringify({ ...b0, success, policy_reject: false }));
const until = async (what: string, f: () => boolean | Promise<boolean>, ms = 3000) => {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};
/** How many events of this kind the host heard from the other: a test waits for them instead of guessing a delay. */
const heard = (h: Host, kind: string): number => Number(new RegExp(`^cidlock_shared_events_received_total\\{kind="${kind}"\\} (\\d+)$`, 'm').exec(h.d.metrics.render())?.[1] ?? 0);
const decisions = (h: Host, user: string) => h.logs.filter((l) => l.event === 'decision' && l.user === user);

// Only with Redis at hand: without it every test is registered as skipped.
if (ready) test.before(async () => {
  redis = await startRedis({ dir: tempDir('cidlock-redis-'), appendonly: true, appendfsync: 'always' });
});

test.after.each(async () => {
  await Promise.all(started.splice(0).map((d) => d.close()));
});

test.after(async () => {
  await redis?.stop();
});

check('a device proven on host A vouches for its address on host B, for POP3 and SMTP AUTH; not from elsewhere', async () => {
  await pair('policy: { mode: enforce }');
  await a.d.engine.registry.add('alice@example.com', { kind: 'cid', cid: { type: 'UUID', token: 'alice-laptop' }, label: 'laptop' }, 'admin');
  await until('B reads the device', () => b.d.engine.registry.deviceCount('alice@example.com') === 1);
  const imap = body('alice@example.com', '198.51.100.7', { cid: 'alice-laptop' });
  assert.is((await allow(a, imap)).status, 0);
  await report(a, imap, true);
  // Straight away, as a client opening its next connection would: through B.
  assert.is((await allow(b, body('alice@example.com', '198.51.100.7', { protocol: 'pop3' }))).status, 0);
  assert.is((await allow(b, body('alice@example.com', '198.51.100.7', { protocol: 'smtp' }))).status, 0);
  const vouched = decisions(b, 'alice@example.com').filter((l) => l.reason === 'vouched');
  assert.is(vouched.length, 2, JSON.stringify(decisions(b, 'alice@example.com')));
  assert.is((await allow(b, body('alice@example.com', '203.0.113.9', { protocol: 'pop3' }))).status, -1, 'another address is not vouched for');
  // A removal through B revokes A's vouch on both hosts.
  const [dev] = b.d.engine.registry.devices('alice@example.com');
  await b.d.engine.registry.remove('alice@example.com', { id: dev!.id });
  await until('A drops the vouch', async () => (await allow(a, body('alice@example.com', '198.51.100.7', { protocol: 'pop3' }))).status === -1);
});

check('failures reported to A and to B add up to one address limit, enforced on both', async () => {
  await pair('policy: { mode: monitor }\nlimits:\n  - { key: address, failures: 6, window: 10m, then: reject 1h }');
  for (let i = 0; i < 6; i++) {
    const h = i % 2 === 0 ? a : b;
    const x = body(`user${i}@example.com`, '192.0.2.66');
    assert.is((await allow(h, x)).status, 0);
    await report(h, x, false);
  }
  // Three on each: neither alone reached six.
  for (const h of [a, b]) {
    await until('the limit holds on this host', async () => (await allow(h, body('victim@example.com', '192.0.2.66'))).status === -1);
    const last = decisions(h, 'victim@example.com').at(-1)!;
    assert.is(last.reason, 'limit');
  }
  assert.is((await allow(a, body('victim@example.com', '192.0.2.67'))).status, 0, 'another address is not limited');
  // One limit_triggered between both hosts, whichever saw the count cross (each may, by its own
  // failure or by the other's event).
  await new Promise((r) => setTimeout(r, 200));
  const triggered = [...a.logs, ...b.logs].filter((l) => l.event === 'limit_triggered');
  assert.is(triggered.length, 1, JSON.stringify(triggered));
});

check('learn mode with max_devices 1, hit through both hosts at once: exactly one device admitted and registered', async () => {
  await pair('policy: { mode: monitor }\nusers:\n  lena@example.com: { mode: learn, learn: { max_devices: 1 } }');
  const tries = Array.from({ length: 8 }, (_, i) => ({ h: i % 2 === 0 ? a : b, x: body('lena@example.com', `198.51.100.${20 + i}`, { cid: `lena-${i}` }) }));
  const answers = await Promise.all(tries.map((t) => allow(t.h, t.x)));
  const admitted = tries.filter((_, i) => answers[i]!.status === 0);
  assert.is(admitted.length, 1, JSON.stringify(answers));
  await Promise.all(tries.map((t, i) => report(t.h, t.x, answers[i]!.status === 0)));
  await until('the device is registered and both hosts know it', () => a.d.engine.registry.deviceCount('lena@example.com') === 1 && b.d.engine.registry.deviceCount('lena@example.com') === 1);
  await a.d.engine.idle();
  await b.d.engine.idle();
  // And after it: another new device is refused on both hosts, the learned one admitted.
  assert.is((await allow(a, body('lena@example.com', '198.51.100.90', { cid: 'lena-new' }))).status, -1);
  assert.is((await allow(b, body('lena@example.com', '198.51.100.91', { cid: 'lena-new2' }))).status, -1);
  const learned = tries[answers.findIndex((r) => r.status === 0)]!;
  assert.is((await allow(learned.h === a ? b : a, { ...learned.x, session_id: 'again' })).status, 0);
});

check('unknown-device refusals seen by A and B add up to one alert, raised once', async () => {
  await pair('policy: { mode: enforce }\nalerts: { unknown_device: { attempts: 4, window: 1h } }');
  await a.d.engine.registry.add('olga@example.com', { kind: 'cid', cid: { type: 'UUID', token: 'olga-phone' } }, 'admin');
  for (let i = 0; i < 6; i++) assert.is((await allow(i % 2 === 0 ? a : b, body('olga@example.com', `203.0.113.${i}`, { cid: `thief-${i}` }))).status, -1);
  await until('an alert', () => [...a.logs, ...b.logs].some((l) => l.event === 'unknown_device'));
  await new Promise((r) => setTimeout(r, 200));
  const alerts = [...a.logs, ...b.logs].filter((l) => l.event === 'unknown_device');
  assert.is(alerts.length, 1, JSON.stringify(alerts));
  // Both hosts list every refusal for "was this you?".
  for (const h of [a, b]) await until('every refusal listed on this host', () => h.d.engine.defences.recentRefusals('olga@example.com').length === 6);
});

check('before-auth on A and after-auth on B are one login: answered alike, counted once; a renamed account is decided on B', async () => {
  await pair('policy: { mode: enforce }\nusers:\n  nina@example.com: { mode: learn, learn: { max_devices: 2 } }');
  await a.d.engine.registry.add('max@example.com', { kind: 'cid', cid: { type: 'UUID', token: 'max-phone' } }, 'admin');
  await until('B reads the device', () => b.d.engine.registry.deviceCount('max@example.com') === 1);
  const count = (h: Host) => h.d.engine.stats.decisions;
  const [a0, b0] = [count(a), count(b)];
  // Refused before auth on A: B's after-auth call of the same login is refused alike, uncounted.
  const thief = body('max@example.com', '203.0.113.50', { cid: 'not-max' });
  let logins = heard(b, 'login');
  assert.is((await allow(a, thief)).status, -1);
  await until('B hears of the login', () => heard(b, 'login') > logins);
  assert.is((await allow(b, thief)).status, -1);
  // Allowed on A (learn): B answers the after-auth call alike, and the success report to B registers the device.
  const phone = body('nina@example.com', '198.51.100.60', { cid: 'nina-phone' });
  logins = heard(b, 'login');
  assert.is((await allow(a, phone)).status, 0);
  await until('B hears of the login', () => heard(b, 'login') > logins);
  assert.is((await allow(b, phone)).status, 0);
  assert.is(count(a) - a0, 2, 'A decided both logins');
  assert.is(count(b) - b0, 0, 'B counted neither after-auth call');
  await report(b, phone, true);
  await until('the device is learned', () => a.d.engine.registry.deviceCount('nina@example.com') === 1);
  // The passdb renamed the account: B decides the after-auth call for the account logged into.
  const renamed = { ...body('max@example.com', '198.51.100.61', { cid: 'max-phone' }), orig_user: 'max' };
  logins = heard(b, 'login');
  assert.is((await allow(a, renamed)).status, 0);
  await until('B hears of the login', () => heard(b, 'login') > logins);
  assert.is((await allow(b, { ...renamed, login: 'nobody-else@example.com' })).status, -1, 'an account with no device of this CID is refused after auth');
  assert.is(count(b) - b0, 1);
});

check('Redis unreachable: each host decides alone from its copy; learn mode refuses new devices (none could be registered), registered ones get in', async () => {
  const own = await startRedis({ dir: tempDir('cidlock-redis-'), appendonly: true, appendfsync: 'always' });
  const saved = redis;
  redis = own;
  try {
    await pair('policy: { mode: enforce }\nusers:\n  paul@example.com: { mode: learn, learn: { max_devices: 3 } }');
  } finally {
    redis = saved;
  }
  await a.d.engine.registry.add('paul@example.com', { kind: 'cid', cid: { type: 'UUID', token: 'paul-1' } }, 'admin');
  await until('B reads the device', () => b.d.engine.registry.deviceCount('paul@example.com') === 1);
  await own.kill9();
  try {
    await until('A sees Redis gone', () => a.logs.some((l) => l.event === 'store_connection' && l.state === 'down'));
    assert.is((await allow(a, body('paul@example.com', '198.51.100.70', { cid: 'paul-1' }))).status, 0, 'the registered device');
    assert.is((await allow(b, body('paul@example.com', '198.51.100.71', { cid: 'paul-new' }))).status, -1, 'a new device is not learned');
    await until('B sees Redis gone', () => b.logs.some((l) => l.event === 'store_connection' && l.state === 'down'));
    await allow(b, body('paul@example.com', '198.51.100.72', { cid: 'paul-new2' }));
    const d = decisions(b, 'paul@example.com').at(-1)!;
    assert.is(d.reason, 'unknown_device');
    assert.match(String(d.why), /no device can be registered now: the shared store \(Redis\) is unreachable/);
  } finally {
    await own.restart();
  }
  await until('learning again', async () => (await allow(b, body('paul@example.com', '198.51.100.73', { cid: 'paul-new3' }))).status === 0, 10_000);
  await own.stop();
});

test('messages from the channel: a host and a list of events, each checked field by field; anything else is dropped', () => {
  const vouch = { kind: 'vouch', user: 'a@b.c', remote: '192.0.2.1', vouch: { at: 1, device: 'abc', hash: 'f'.repeat(64) }, ttlMs: 1000 };
  const failure = { kind: 'failure', user: 'u', remote: null, at: 5, guess: 'g' };
  const login = { kind: 'login', key: 'k', account: 'a@b.c', action: 'delay', seconds: 5, message: '' };
  const text = encodeSharedMessage('h1', [vouch, failure, login] as SharedEvent[]);
  assert.equal(parseSharedMessage(text), { host: 'h1', events: [vouch, failure, login], dropped: 0 });
  // Bad events are dropped one by one, the good ones kept.
  const bad = [{ ...vouch, vouch: { at: 'x' } }, { ...vouch, kind: 'grant' }, { ...failure, guess: 7 }, { ...login, action: 'permit' }, 'text', null];
  assert.equal(parseSharedMessage(`h2 ${JSON.stringify([...bad, failure])}`), { host: 'h2', events: [failure], dropped: bad.length });
  for (const t of ['not json', 'h3 not json', ' [ ]', `h4 ${JSON.stringify({ kind: 'vouch' })}`, `h5 ${JSON.stringify(Array(201).fill(failure))}`, `h6 ${JSON.stringify([{ ...failure, user: 'x'.repeat(600_000) }])}`]) {
    assert.is(parseSharedMessage(t), null, t.slice(0, 40));
  }
});

test.run();
