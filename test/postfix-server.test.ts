import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, type AddressInfo, type Server } from 'node:net';
import { createEngine, type EngineOptions, type Engine } from '../src/core/engine.js';
import type { Decision } from '../src/core/decide.js';
import { jsonLogger } from '../src/core/log.js';
import { fileStore } from '../src/core/registry/file-store.js';
import { openRegistry } from '../src/core/registry/registry.js';
import { encodeNetstring, parseNetstring } from '../src/postfix-policy/netstring.js';
import { formatReply, policyAction } from '../src/postfix-policy/policy-action.js';
import { createPolicyServer } from '../src/postfix-policy/policy-server.js';
import { createSocketmapServer } from '../src/postfix-policy/socketmap-server.js';
import { readFixture } from './helpers/paths.js';
import { rulesFrom } from './helpers/tmp.js';

const CAPTURE = readFixture('captures', 'postfix-3.7-policy-tls-client-cert.txt');
const BLOCKS = CAPTURE.trim().split('\n\n').map((b) => `${b}\n\n`);
const PUBKEY = '28fcdfa54bcc0a58ddfc1bcd1442bb9942105a5fc836790f2c9c1f0c62fc2fe4';

async function start(yaml: string, kind: 'policy' | 'socketmap', extra: Partial<EngineOptions> = {}) {
  const rules = rulesFrom(/^log:/m.test(yaml) ? yaml : `log: { decisions: all }\n${yaml}`);
  const logs: Array<Record<string, unknown>> = [];
  const logger = jsonLogger((l) => logs.push(JSON.parse(l)));
  const engine: Engine = createEngine({ rules, registry: await openRegistry(fileStore(rules.stateDir), { create: true }), logger, ...extra });
  const server: Server = kind === 'policy' ? createPolicyServer({ engine, logger }) : createSocketmapServer({ engine, logger });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return { engine, logs, port, stop: () => new Promise<void>((r) => server.close(() => r())) };
}

/** A persistent client like smtpd's: send one request, read one reply, repeat. */
async function client(port: number) {
  const sock = connect(port, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  let buf = '';
  let closed = false;
  const waiters: Array<() => void> = [];
  sock.on('data', (d) => { buf += d.toString('utf8'); waiters.splice(0).forEach((w) => w()); });
  sock.on('close', () => { closed = true; waiters.splice(0).forEach((w) => w()); });
  const until = async (done: () => boolean) => {
    const deadline = Date.now() + 5000;
    while (!done()) {
      if (closed) return;
      if (Date.now() > deadline) throw new Error(`no reply; got ${JSON.stringify(buf)}`);
      await new Promise<void>((r) => { waiters.push(r); setTimeout(r, 100); });
    }
  };
  return {
    async ask(block: string): Promise<string | null> {
      sock.write(block);
      await until(() => buf.includes('\n\n'));
      if (!buf.includes('\n\n')) return null;
      const i = buf.indexOf('\n\n');
      const reply = buf.slice(0, i + 2);
      buf = buf.slice(i + 2);
      return reply;
    },
    async raw(bytes: string | Buffer, expect: number): Promise<Buffer> {
      sock.write(bytes);
      await until(() => Buffer.byteLength(buf, 'latin1') >= expect);
      return Buffer.from(buf, 'utf8');
    },
    async closedByServer(): Promise<boolean> {
      await until(() => closed);
      return closed;
    },
    get received() { return buf; },
    close: () => sock.destroy(),
  };
}

test('the real capture on one connection: DUNNO for the unauthenticated stages, a decision at RCPT, bare-LF replies', async () => {
  const s = await start('policy: { mode: enforce }\n', 'policy');
  try {
    const c = await client(s.port);
    const replies = [];
    for (const b of BLOCKS) replies.push(await c.ask(b));
    assert.equal(replies, ['action=DUNNO\n\n', 'action=DUNNO\n\n', 'action=DUNNO\n\n', 'action=REJECT 5.7.1 Access denied\n\n']);
    await s.engine.registry.add('alice@example.com', { kind: 'cert', fingerprint: PUBKEY }, 'admin');
    assert.is(await c.ask(BLOCKS[3]!), 'action=DUNNO\n\n');
    const d = s.logs.filter((l) => l.event === 'decision');
    assert.equal(d.map((l) => `${l.stage}:${l.action}:${l.reason}`), ['RCPT:reject:unknown_device', 'RCPT:allow:registered_device']);
    assert.is(s.logs.filter((l) => l.event === 'postfix_connection').length, 1);
    c.close();
  } finally {
    await s.stop();
  }
});

test('a certificate shown at EHLO is remembered for the address; a proven RCPT vouches for it', async () => {
  const s = await start('policy: { mode: enforce }\n', 'policy');
  await s.engine.registry.add('alice@example.com', { kind: 'cert', fingerprint: PUBKEY }, 'admin');
  try {
    const c = await client(s.port);
    await c.ask(BLOCKS[2]!);
    // The SMTP AUTH that follows, asked by Dovecot SASL (which sees no certificate), counts it.
    const auth = s.engine.decide({ protocol: 'smtp', user: 'alice@example.com', remote: '127.0.0.1', tls: true, certFingerprints: [], stage: 'before_auth' });
    assert.is(auth.reason, 'registered_device');
    assert.is(auth.evidence.find((e) => e.kind === 'cert')!.status, 'registered');
    await c.ask(BLOCKS[3]!);
    const pop = s.engine.decide({ protocol: 'pop3', user: 'alice@example.com', remote: '127.0.0.1', tls: true, certFingerprints: [], stage: 'before_auth' });
    assert.is(pop.reason, 'vouched');
    c.close();
  } finally {
    await s.stop();
  }
});

test('monitor mode answers DUNNO and logs would_reject; a configured message is the REJECT text', async () => {
  const s = await start('policy: { mode: monitor }\nusers:\n  alice@example.com: { mode: enforce, message: "Send from your registered device" }\n', 'policy');
  try {
    const c = await client(s.port);
    const bob = BLOCKS[3]!.replace('sasl_username=alice@example.com', 'sasl_username=bob@example.com');
    assert.is(await c.ask(bob), 'action=DUNNO\n\n');
    assert.is(s.logs.find((l) => l.event === 'decision')!.would_reject, true);
    assert.is(await c.ask(BLOCKS[3]!), 'action=REJECT 5.7.1 Send from your registered device\n\n');
    c.close();
  } finally {
    await s.stop();
  }
});

test('malformed requests close the connection without a reply; the server goes on serving', async () => {
  const s = await start('policy: { mode: enforce }\n', 'policy');
  try {
    for (const bad of [BLOCKS[0]!.replace(/\n/g, '\r\n').replace(/\r\n\r\n$/, '\r\n\n'), 'garbage without equals\n\n', 'request=other_policy\n\n', `request=smtpd_access_policy\nsender=${'x'.repeat(70_000)}`]) {
      const c = await client(s.port);
      assert.is(await c.ask(bad), null, JSON.stringify(bad.slice(0, 30)));
      assert.is(c.received, '');
      assert.ok(await c.closedByServer());
    }
    const ok = await client(s.port);
    assert.is(await ok.ask(BLOCKS[0]!), 'action=DUNNO\n\n');
    ok.close();
    assert.is(s.logs.filter((l) => l.event === 'postfix_bad_request').length, 4);
    assert.not.ok(JSON.stringify(s.logs).includes('xxxxxxxx'));
  } finally {
    await s.stop();
  }
});

test('hundreds of persistent connections, each carrying several requests', async () => {
  const s = await start('policy: { mode: enforce }\n', 'policy');
  try {
    const clients = await Promise.all(Array.from({ length: 300 }, () => client(s.port)));
    const results = await Promise.all(clients.map(async (c, i) => {
      const user = `u${i}@example.com`;
      const a = await c.ask(BLOCKS[0]!);
      const b = await c.ask(BLOCKS[3]!.replace('alice@example.com', user).replace('alice@example.com', user));
      c.close();
      return `${a}${b}`;
    }));
    assert.ok(results.every((r) => r === 'action=DUNNO\n\naction=REJECT 5.7.1 Access denied\n\n'));
    assert.is(s.engine.stats.decisions, 300);
  } finally {
    await s.stop();
  }
});

test('actions: allow is DUNNO (never OK), a refusal REJECT 5.7.1 on one line, replies end with a bare LF', () => {
  const base = { mode: 'enforce', would_reject: false, reason: 'no_device_proof', rule: 'r', layer: 'server', why: '', evidence: [], protocol: { name: 'smtp', rule: ['cert'], from: '' }, message: '' } as unknown as Decision;
  assert.is(policyAction({ ...base, action: 'allow' }), 'DUNNO');
  assert.is(policyAction({ ...base, action: 'reject' }), 'REJECT 5.7.1 Access denied');
  assert.is(policyAction({ ...base, action: 'reject', message: 'not\r\nhere' }), 'REJECT 5.7.1 not  here');
  assert.is(formatReply('DUNNO'), 'action=DUNNO\n\n');
  assert.not.ok(formatReply('DUNNO').includes('\r'));
});

test('netstrings: complete, partial, several in a row, and every kind of malformed', () => {
  const two = Buffer.from('12:client 1.2.3,4:sasl,');
  const a = parseNetstring(two);
  assert.is(a.kind, 'ok');
  if (a.kind !== 'ok') return;
  assert.is(a.value.toString(), 'client 1.2.3');
  const b = parseNetstring(two, a.next);
  assert.ok(b.kind === 'ok' && b.value.toString() === 'sasl' && b.next === two.length);
  assert.is(parseNetstring(Buffer.from('12')).kind, 'more');
  assert.is(parseNetstring(Buffer.from('5:abc')).kind, 'more');
  const errors: Array<[string, RegExp]> = [['x:abc,', /not a decimal/], [':abc,', /empty length/], ['05:abcde,', /leading zero/], ['3:abcd', /missing ","/], ['9999999:', /longer than/], ['5000:', /longer than/]];
  for (const [text, re] of errors) {
    const r = parseNetstring(Buffer.from(text), 0, 4096);
    assert.is(r.kind, 'error', text);
    if (r.kind === 'error') assert.match(r.error, re);
  }
  assert.equal(encodeNetstring('NOTFOUND '), Buffer.from('9:NOTFOUND ,'));
  assert.equal(encodeNetstring('OK é'), Buffer.from('5:OK é,'));
});

test('socketmap tables: client, sasl and ccert, several requests per connection, PERM for unknown tables', async () => {
  const s = await start('policy: { mode: enforce }\nusers:\n  blocked@example.com: { protocols: { smtp: deny }, message: "SMTP disabled" }\n  watch@example.com: { mode: monitor, protocols: { smtp: deny } }\nlimits:\n  - { key: address, failures: 3, window: 10m, then: reject 1h }\n  - { key: address, failures: 2, window: 10m, then: delay 5s }\n', 'socketmap');
  const fail = (remote: string) => s.engine.reportFailure({ protocol: 'imap', user: 'x@example.com', remote, tls: true, certFingerprints: [], stage: 'report' }, { policyReject: false });
  for (let i = 0; i < 3; i++) fail('203.0.113.66');
  for (let i = 0; i < 2; i++) fail('203.0.113.67');
  await s.engine.registry.add('alice@example.com', { kind: 'cert', fingerprint: PUBKEY }, 'admin');
  try {
    const c = await client(s.port);
    const ask = async (q: string) => {
      const before = c.received.length;
      const out = await c.raw(encodeNetstring(q), before + 3);
      await new Promise((r) => setTimeout(r, 30));
      const r = parseNetstring(Buffer.from(c.received.slice(before)));
      void out;
      return r.kind === 'ok' ? r.value.toString() : `(${r.kind})`;
    };
    assert.is(await ask('client 192.0.2.1'), 'NOTFOUND ');
    assert.is(await ask('client 203.0.113.66'), 'OK REJECT 5.7.1 too many failed logins from 203.0.113.66');
    assert.is(await ask('client ::ffff:203.0.113.67'), 'OK DEFER_IF_PERMIT 4.7.1 too many failed logins from 203.0.113.67');
    assert.is(await ask('sasl Blocked@Example.com'), 'OK REJECT 5.7.1 SMTP disabled');
    assert.is(await ask('sasl watch@example.com'), 'NOTFOUND ');
    assert.is(await ask('sasl alice@example.com'), 'NOTFOUND ');
    assert.is(await ask('ccert 28:FC:DF:A5:4B:CC:0A:58:DD:FC:1B:CD:14:42:BB:99:42:10:5A:5F:C8:36:79:0F:2C:9C:1F:0C:62:FC:2F:E4'), 'OK DUNNO');
    assert.is(await ask(`ccert ${'ab'.repeat(32)}`), 'NOTFOUND ');
    assert.match(await ask('virtual alice@example.com'), /^PERM unknown table "virtual"/);
    assert.match(await ask('nospace'), /^PERM expected/);
    c.close();
    // Two requests in one write are answered in order.
    const d = await client(s.port);
    const both = await d.raw(Buffer.concat([encodeNetstring('client 192.0.2.1'), encodeNetstring('ccert nothex')]), 24);
    assert.is(both.toString(), '9:NOTFOUND ,9:NOTFOUND ,');
    d.close();
    // Broken framing closes the connection; the server keeps serving.
    const e = await client(s.port);
    e.raw('abc:', 0).catch(() => {});
    assert.ok(await e.closedByServer());
    const f = await client(s.port);
    assert.is((await f.raw(encodeNetstring('client 192.0.2.1'), 12)).toString(), '9:NOTFOUND ,');
    f.close();
  } finally {
    await s.stop();
  }
});

test('a socketmap lookup that throws (an unreadable registry) answers TEMP, and the connection and server keep serving', async () => {
  const rules = rulesFrom('policy: { mode: enforce }\n');
  const logs: Array<Record<string, unknown>> = [];
  const logger = jsonLogger((l) => logs.push(JSON.parse(l)));
  const registry = await openRegistry(fileStore(rules.stateDir), { create: true });
  let broken = true;
  const failing = { ...registry, certRegistered: (fp: string) => { if (broken) throw new Error('EIO: registry unreadable'); return registry.certRegistered(fp); } };
  const engine = createEngine({ rules, registry: failing, logger });
  const server = createSocketmapServer({ engine, logger });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const c = await client((server.address() as AddressInfo).port);
    const temp = encodeNetstring('TEMP lookup failed').toString();
    assert.is((await c.raw(encodeNetstring(`ccert ${'ab'.repeat(32)}`), temp.length)).toString(), temp);
    assert.ok(logs.some((l) => l.event === 'socketmap_internal_error'));
    broken = false;
    assert.is((await c.raw(encodeNetstring(`ccert ${'ab'.repeat(32)}`), temp.length + 12)).toString(), `${temp}9:NOTFOUND ,`, 'the same connection goes on');
    c.close();
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
});

test.run();
