import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { createEngine, type Engine } from '../src/core/engine.js';
import { jsonLogger } from '../src/core/log.js';
import { fileStore } from '../src/core/registry/file-store.js';
import { openRegistry } from '../src/core/registry/registry.js';
import { createDovecotServer, type DovecotServerLimits } from '../src/dovecot-policy/server.js';
import { answerFor } from '../src/dovecot-policy/answer.js';
import { MAX_DELAY_SECONDS } from '../src/core/delay.js';
import type { Decision } from '../src/core/decide.js';
import { post, TEST_DOVECOT_KEY } from './helpers/http.js';
import { readDovecotCapture } from './helpers/paths.js';
import { rulesFrom } from './helpers/tmp.js';

const LAPTOP = { type: 'UUID', token: '23bf83be-aad7-46aa-9e0f-39191ccf402f' };

async function start(yaml: string, limits?: Partial<DovecotServerLimits>): Promise<{ port: number; engine: Engine; server: Server; logs: Array<Record<string, unknown>>; stop: () => Promise<void> }> {
  const rules = rulesFrom(/^log:/m.test(yaml) ? yaml : `log: { decisions: all }\n${yaml}`);
  const logs: Array<Record<string, unknown>> = [];
  const logger = jsonLogger((l) => logs.push(JSON.parse(l)));
  const engine = createEngine({ rules, registry: await openRegistry(fileStore(rules.stateDir), { create: true }), logger });
  const server = createDovecotServer({ engine, logger, apiKey: () => TEST_DOVECOT_KEY, ...(limits ? { limits } : {}) });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    port, engine, server, logs,
    stop: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}

test('the real IMAP/POP3 capture, replayed in order, gets the answers enforce mode requires', async () => {
  const s = await start('policy: { mode: enforce }\n');
  await s.engine.registry.add('alice@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  try {
    const caps = readDovecotCapture('dovecot-2.3.19-imap-pop3.jsonl');
    const answers: string[] = [];
    for (const c of caps) answers.push((await post(s.port, c.path, c.body)).body);
    const REFUSED = '{"status":-1,"msg":""}';
    assert.equal(answers, [
      '{"status":0}', '{}', // registered laptop over TLS; its successful report vouches for 127.0.0.1
      REFUSED, '{}', // the same CID sent without TLS is ignored
      REFUSED, REFUSED, '{}', // no CID: imap accepts only [cid]; the after-auth call gets the same answer
      '{"status":0}', '{"status":0}', '{}', // pop3 from the same address, vouched by the laptop
    ]);
    // Before-auth and after-auth calls of one login are decided once.
    assert.is(s.engine.stats.decisions, 4);
    assert.is(s.logs.filter((l) => l.event === 'decision').length, 4);
    assert.is(s.engine.stats.successes, 3);
    assert.is(s.engine.stats.failures, 1);
  } finally {
    await s.stop();
  }
});

test('SMTP AUTH through Postfix SASL is vouched by a recent IMAP login from the same address', async () => {
  const s = await start('policy: { mode: enforce }\n');
  await s.engine.registry.add('alice@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  try {
    const smtp = readDovecotCapture('dovecot-2.3.19-smtp-via-postfix-sasl.jsonl');
    assert.is((await post(s.port, smtp[0]!.path, smtp[0]!.body)).body, '{"status":-1,"msg":""}', 'no vouch yet');
    await post(s.port, smtp[2]!.path, smtp[2]!.body.replace('"success":true', '"success":false').replace('"policy_reject":false', '"policy_reject":true'));
    const imap = readDovecotCapture('dovecot-2.3.19-imap-pop3.jsonl');
    await post(s.port, imap[0]!.path, imap[0]!.body);
    await post(s.port, imap[1]!.path, imap[1]!.body);
    assert.is((await post(s.port, smtp[0]!.path, smtp[0]!.body)).body, '{"status":0}');
    assert.is(s.engine.stats.policyRejects, 1);
  } finally {
    await s.stop();
  }
});

test('a configured message is sent to refused clients; monitor mode answers 0 and logs would_reject', async () => {
  const s = await start('policy: { mode: enforce, message: "Use a registered device" }\nusers:\n  bob@example.com: { mode: monitor }\n');
  try {
    const body = JSON.stringify({ login: 'alice@example.com', protocol: 'imap', remote: '192.0.2.1', device_id: '', tls: true });
    assert.equal(JSON.parse((await post(s.port, '/?command=allow', body)).body), { status: -1, msg: 'Use a registered device' });
    const bob = body.replace('alice', 'bob');
    assert.equal(JSON.parse((await post(s.port, '/command/allow', bob)).body), { status: 0 });
    const line = s.logs.filter((l) => l.event === 'decision').pop()!;
    assert.is(line.would_reject, true);
    assert.is(line.user, 'bob@example.com');
  } finally {
    await s.stop();
  }
});

test('learn mode: a successful report registers the device; the next unknown device past max_devices is refused', async () => {
  const s = await start('policy: { mode: learn, learn: { max_devices: 1 } }\n');
  try {
    const mk = (cid: string, session: string) => JSON.stringify({ login: 'carol@example.com', protocol: 'imap', remote: '198.51.100.4', session_id: session, device_id: `"clientid" "${cid}" "name" "Thunderbird"`, pwhash: '0abc', tls: true });
    assert.is((await post(s.port, '/?command=allow', mk('UUID first', 's1'))).body, '{"status":0}');
    const report = JSON.parse(mk('UUID first', 's1'));
    await post(s.port, '/?command=report', JSON.stringify({ ...report, success: true, policy_reject: false }));
    // The registration follows the report's answer (lock, fsync): wait for it.
    for (let i = 0; i < 500 && s.engine.registry.deviceCount('carol@example.com') === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const dev = s.engine.registry.findCid('carol@example.com', { type: 'UUID', token: 'first' });
    assert.ok(dev);
    assert.is(dev!.source, 'learn');
    assert.is((await post(s.port, '/?command=allow', mk('UUID second', 's2'))).body, '{"status":-1,"msg":""}');
    assert.is((await post(s.port, '/?command=allow', mk('UUID first', 's3'))).body, '{"status":0}');
  } finally {
    await s.stop();
  }
});

test('the real Dovecot 2.4.1 capture (Debian 13), replayed in order: tls is a boolean, reports carry policy_reject and fail_type', async () => {
  const s = await start('policy: { mode: enforce }\n');
  await s.engine.registry.add('alice@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  try {
    const caps = readDovecotCapture('dovecot-2.4.1.jsonl');
    assert.is(caps.length, 10);
    const answers: string[] = [];
    for (const c of caps) answers.push((await post(s.port, c.path, c.body)).body);
    const REFUSED = '{"status":-1,"msg":""}';
    assert.equal(answers, [
      '{"status":0}', '{"status":0}', '{}', // alice's laptop over TLS, its after-auth call, success (vouches for 127.0.0.1)
      '{}', // a wrong password (fail_type credentials)
      REFUSED, // bob, plaintext IMAP on loopback: no CID
      REFUSED, // bob, POP3: nobody proved a device for bob from there
      '{}', // a report after a policy refusal (fail_type policy, policy_reject true)
      REFUSED, // bob, SMTP AUTH as Postfix asks: no vouch for bob
      '{}', // an unknown user (fail_type account)
      REFUSED, // bob, an ID whose long name pushed the clientid pair out of Dovecot's 256 bytes
    ]);
    assert.is(s.engine.stats.successes, 1);
    assert.is(s.engine.stats.failures, 3);
    assert.is(s.engine.stats.policyRejects, 1, 'only fail_type policy counts as cidlock\'s refusal');
    const d = s.logs.filter((l) => l.event === 'decision');
    assert.equal(d.map((l) => [l.user, l.protocol, l.tls, l.reason]), [
      ['alice@example.com', 'imap', true, 'registered_device'],
      ['bob@example.com', 'imap', false, 'no_device_proof'],
      ['bob@example.com', 'pop3', false, 'no_device_proof'],
      ['bob@example.com', 'smtp', true, 'no_device_proof'], // Postfix's "secured" session counts as TLS for smtp
      ['bob@example.com', 'imap', true, 'no_device_proof'],
    ]);
  } finally {
    await s.stop();
  }
});

test('Dovecot 2.4.1 with the CLIENTID plugin (real capture): the plugin\'s fields and 2.4\'s default attributes decide', async () => {
  const s = await start('policy: { mode: enforce }\n');
  await s.engine.registry.add('alice@example.com', { kind: 'cid', cid: { type: 'UUID', token: 'abc-def-registered' } }, 'admin');
  try {
    const answers: string[] = [];
    for (const c of readDovecotCapture('dovecot-2.4.1-clientid.jsonl')) answers.push((await post(s.port, c.path, c.body)).body);
    assert.equal(answers, ['{"status":0}', '{"status":0}', '{}', '{"status":-1,"msg":""}', '{}']);
    const d = s.logs.filter((l) => l.event === 'decision');
    assert.equal(d.map((l) => [l.reason, l.cid_via, l.tls, l.session]), [
      ['registered_device', 'clientid', true, '1nO+V55hmsB/AAAB'],
      ['unknown_device', 'clientid', true, 'hGO/V55hoMB/AAAB'],
    ]);
    assert.is(s.engine.stats.policyRejects, 1);
  } finally {
    await s.stop();
  }
});

test('API key: X-API-Key, Bearer and Basic password accepted; missing or wrong key is 401, and a server with no key refuses all', async () => {
  const key = TEST_DOVECOT_KEY;
  const s = await start('policy: { mode: off }\n');
  try {
    const body = JSON.stringify({ login: 'a@b.c', protocol: 'imap' });
    const only = (headers: Record<string, string>) => ({ key: false as const, headers });
    assert.is((await post(s.port, '/?command=allow', body, { key: false })).status, 401);
    assert.is((await post(s.port, '/?command=allow', body, only({ 'x-api-key': 'wrong' }))).status, 401);
    assert.is((await post(s.port, '/?command=allow', body, only({ 'x-api-key': ` ${key}` }))).status, 200);
    assert.is((await post(s.port, '/?command=allow', body, only({ authorization: `Bearer ${key}` }))).status, 200);
    const basic = Buffer.from(`dovecot:${key}`).toString('base64');
    assert.is((await post(s.port, '/?command=allow', body, only({ authorization: `Basic ${basic}` }))).status, 200);
    assert.is((await post(s.port, '/?command=allow', body, only({ authorization: `Basic ${Buffer.from(`${key}:`).toString('base64')}` }))).status, 401);
    assert.is((await post(s.port, '/?command=report', JSON.stringify({ login: 'a@b.c', success: true }), { key: false })).status, 401, 'reports need the key too');
  } finally {
    await s.stop();
  }
});

test('bad input gets a protocol-correct answer and the server goes on serving', async () => {
  const s = await start('policy: { mode: off }\n');
  try {
    const ok = JSON.stringify({ login: 'a@b.c', protocol: 'imap' });
    assert.is((await post(s.port, '/?command=allow', '{"login": ')).status, 400);
    assert.is((await post(s.port, '/?command=allow', '[1,2]')).status, 400);
    assert.is((await post(s.port, '/?command=allow', '{"protocol":"imap"}')).status, 400);
    assert.is((await post(s.port, '/?command=frob', ok)).status, 404);
    assert.is((await post(s.port, '/?command=allow', '', { method: 'GET' })).status, 405);
    const big = JSON.stringify({ login: 'a@b.c', pad: 'x'.repeat(70_000) });
    const r = await post(s.port, '/?command=allow', big);
    assert.is(r.status, 413);
    assert.is(r.headers.connection, 'close');
    // Raw garbage that is not HTTP at all.
    await new Promise<void>((resolve) => {
      const sock = connect(s.port, '127.0.0.1', () => sock.write('\x16\x03\x01 not http\r\n\r\n'));
      let got = '';
      sock.on('data', (d) => (got += d));
      sock.on('close', () => { assert.match(got, /^HTTP\/1\.1 400/); resolve(); });
    });
    assert.is((await post(s.port, '/?command=allow', ok)).body, '{"status":0}');
    assert.ok(s.logs.filter((l) => l.event === 'dovecot_bad_request').length >= 5);
    assert.not.ok(JSON.stringify(s.logs).includes('xxxxxxxxxx'), 'a request body was logged');
  } finally {
    await s.stop();
  }
});

test('keep-alive: many requests on one connection, and hundreds of parallel connections', async () => {
  const s = await start('policy: { mode: monitor }\n');
  try {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const body = (i: number) => JSON.stringify({ login: `u${i}@b.c`, protocol: 'imap', remote: '192.0.2.9', session_id: `s${i}` });
    const seq = [];
    for (let i = 0; i < 20; i++) seq.push(await post(s.port, '/?command=allow', body(i), { agent }));
    assert.ok(seq.slice(1).every((r) => r.reused && r.status === 200), 'requests did not share one connection');
    agent.destroy();
    const parallel = await Promise.all(Array.from({ length: 300 }, (_, i) => post(s.port, '/?command=allow', body(1000 + i))));
    assert.ok(parallel.every((r) => r.body === '{"status":0}'));
    assert.is(s.engine.stats.decisions, 320);
  } finally {
    await s.stop();
  }
});

test('a client that never finishes its headers is answered 408 and closed by the header timeout', async () => {
  const s = await start('policy: { mode: off }\n', { headersTimeoutMs: 300, requestTimeoutMs: 600 });
  try {
    const got = await new Promise<string>((resolve) => {
      const sock = connect(s.port, '127.0.0.1', () => sock.write('POST /?command=allow HTTP/1.1\r\nHost: x\r\n'));
      let data = '';
      sock.on('data', (d) => (data += d));
      sock.on('close', () => resolve(data));
    });
    assert.match(got, /^HTTP\/1\.1 408/);
    assert.is((await post(s.port, '/?command=allow', JSON.stringify({ login: 'a@b.c' }))).body, '{"status":0}');
  } finally {
    await s.stop();
  }
});

test('the capture with a duplicate "tls" key is answered using Dovecot\'s own boolean (the last)', async () => {
  const s = await start('policy: { mode: enforce, require_tls: true }\ndovecot: { id_fields: [x-cid] }\n');
  try {
    const [cap] = readDovecotCapture('dovecot-2.3.19-duplicate-tls-key.jsonl');
    assert.is((await post(s.port, cap!.path, cap!.body)).body, '{"status":-1,"msg":""}');
    const line = s.logs.find((l) => l.event === 'decision')!;
    assert.is(line.tls, false);
    assert.match(JSON.stringify(line.evidence), /malformed CID in IMAP ID field x-cid/);
  } finally {
    await s.stop();
  }
});

test('answers: delays are capped well below Dovecot\'s auth timeout', () => {
  const base = { mode: 'enforce', would_reject: false, reason: 'no_device_proof', rule: 'r', layer: 'server', why: '', evidence: [], protocol: { name: 'imap', rule: ['cid'], from: '' }, message: 'm' } as unknown as Decision;
  assert.equal(answerFor({ ...base, action: 'delay', seconds: 5 }), { status: 5 });
  assert.equal(answerFor({ ...base, action: 'delay', seconds: 9999 }), { status: MAX_DELAY_SECONDS });
  assert.equal(answerFor({ ...base, action: 'delay', seconds: 0 }), { status: 1 });
  assert.equal(answerFor({ ...base, action: 'allow', would_reject: true } as Decision), { status: 0 });
});

test('a passdb that renames the account: the after-auth call decides for the account actually logged into', async () => {
  const s = await start('policy: { mode: monitor }\nusers:\n  alice@example.com: { mode: enforce }\n');
  try {
    const caps = readDovecotCapture('dovecot-2.3.19-accounts.jsonl').filter((c) => c.note === 'passdb by local part, returns user=: alice@example.org');
    const answers: string[] = [];
    for (const c of caps) answers.push((await post(s.port, c.path, c.body)).body);
    // Before the password check only "alice@example.org" is known (monitor: allowed); after it,
    // Dovecot names alice@example.com, which is locked: refused, with the wrong-password reply.
    assert.equal(answers, ['{"status":0}', '{"status":-1,"msg":""}', '{}']);
    const lines = s.logs.filter((l) => l.event === 'decision');
    assert.equal(lines.map((l) => [l.user, l.stage, l.action]), [['alice@example.org', 'before_auth', 'allow'], ['alice@example.com', 'after_auth', 'reject']]);
    assert.is(lines[1]!.login_name, 'alice@example.org');
  } finally {
    await s.stop();
  }
});

test('master users: every call of a master login is decided for the master user, once', async () => {
  const s = await start('policy: { mode: enforce }\nusers:\n  alice@example.com: { mode: off }\n');
  try {
    const caps = readDovecotCapture('dovecot-2.3.19-accounts.jsonl').filter((c) => c.note === 'master user: alice@example.com*admin');
    const answers: string[] = [];
    for (const c of caps) answers.push((await post(s.port, c.path, c.body)).body);
    // alice's own mode (off) does not open her mailbox to a master password from an unknown device.
    assert.equal(answers, ['{"status":-1,"msg":""}', '{"status":-1,"msg":""}', '{}']);
    const lines = s.logs.filter((l) => l.event === 'decision');
    assert.is(lines.length, 1);
    assert.is(lines[0]!.user, 'admin');
    assert.is(lines[0]!.mailbox, 'alice@example.com');
  } finally {
    await s.stop();
  }
});

test('without the key nothing is forged: no report registers a device, no failure report counts, no vouch', async () => {
  const s = await start('policy: { mode: learn }\nlimits:\n  - { key: address, failures: 10, window: 1h, then: reject 1h }\n');
  try {
    const login = { login: 'alice@example.com', protocol: 'imap', remote: '192.0.2.10', device_id: '"clientid" "UUID attacker-device"', tls: true };
    for (const key of [false, 'a-wrong-key-0123456789'] as const) {
      assert.is((await post(s.port, '/?command=report', JSON.stringify({ ...login, success: true }), { key })).status, 401);
      for (let i = 0; i < 10; i++) {
        assert.is((await post(s.port, '/?command=report', JSON.stringify({ ...login, login: `u${i}@example.com`, success: false }), { key })).status, 401);
      }
    }
    assert.is(s.engine.registry.deviceCount('alice@example.com'), 0, 'a forged success report registered a device');
    assert.equal(s.engine.stats, { decisions: 0, successes: 0, failures: 0, policyRejects: 0 });
    assert.is(s.engine.addressVerdict('192.0.2.10'), undefined, 'forged failures put the address under a limit');
    assert.is(s.engine.vouches.size, 0);
  } finally {
    await s.stop();
  }
});

test('learn: five logins decided before any of them finished admit one new device; its failure frees the slot', async () => {
  const s = await start('policy: { mode: learn, learn: { max_devices: 1 } }\n');
  try {
    const body = (i: number, extra = {}) => JSON.stringify({ user: 'lena@example.com', orig_user: 'lena@example.com', protocol: 'imap', remote: `192.0.2.${i}`, session_id: `s${i}`, device_id: `"clientid" "UUID lena-device-${i}"`, tls: true, ...extra });
    // Dovecot's order when the five overlap: every before-auth call, then each login's after-auth call and report.
    const before = await Promise.all([0, 1, 2, 3, 4].map((i) => post(s.port, '/?command=allow', body(i))));
    assert.equal(before.map((r) => r.body), ['{"status":0}', ...Array(4).fill('{"status":-1,"msg":""}')]);
    assert.match(JSON.stringify(s.logs.filter((l) => l.action === 'reject')), /1 of them being learned by logins in progress/);
    // The admitted one's password was wrong after all: its slot is free for the next device.
    assert.is((await post(s.port, '/?command=report', body(0, { success: false }))).status, 200);
    assert.is((await post(s.port, '/?command=allow', body(5))).body, '{"status":0}');
    assert.is((await post(s.port, '/?command=allow', body(5))).body, '{"status":0}');
    assert.is((await post(s.port, '/?command=report', body(5, { success: true }))).status, 200);
    await s.engine.idle();
    assert.is(s.engine.registry.deviceCount('lena@example.com'), 1);
    assert.is((await post(s.port, '/?command=allow', body(6))).body, '{"status":-1,"msg":""}');
  } finally {
    await s.stop();
  }
});

test.run();
