// Pending devices, last-used days, sign-in links and the account service, on a real file store:
// what the account page and the notices stand on. The mail transport is a recording stand-in
// here; test/e2e/account-page.test.ts proves the whole path with the real servers and a browser.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { handleApi } from '../src/admin/api.js';
import { createEngine } from '../src/core/engine.js';
import { jsonLogger } from '../src/core/log.js';
import { createPendingTracker } from '../src/core/pending.js';
import { decodeOp, encodeOp } from '../src/core/registry/codec.js';
import { fileStore } from '../src/core/registry/file-store.js';
import { openRegistry } from '../src/core/registry/registry.js';
import type { RegistryOp } from '../src/core/registry/types.js';
import type { AuthRequest } from '../src/core/request.js';
import { createAccounts, loadNoticeTemplates } from '../src/daemon/accounts.js';
import { PortalRefusal } from '../src/portal/account.js';
import { portalKey, verifyToken } from '../src/portal/tokens.js';
import { decodeEncodedWords, decodeQuotedPrintable, splitMessage } from './helpers/mime.js';
import { cidlock } from './helpers/cli.js';
import { rulesFrom } from './helpers/tmp.js';

const ALICE = 'alice@example.test';
const LAPTOP = { type: 'UUID', token: 'pending-test-laptop' };
const PHONE = { type: 'UUID', token: 'pending-test-phone' };
const HOUR = 3_600_000;
const RULES = `policy: { mode: enforce }
portal: { url: "https://mail.example.test/cidlock/", user_modes: [learn, enforce] }
notice: { from: "Mail security <postmaster@example.test>", smtp: "127.0.0.1:25", per_account_per_day: 2 }
pending: { per_account: 3 }
`;

const imap = (over: Partial<AuthRequest> = {}): AuthRequest =>
  ({ protocol: 'imap', user: ALICE, remote: '203.0.113.5', tls: true, certFingerprints: [], stage: 'before_auth', ...over });

async function setup(yaml = RULES) {
  const rules = rulesFrom(yaml);
  let now = Date.parse('2026-12-02T12:00:00Z');
  const lines: Array<Record<string, unknown>> = [];
  const events: Array<Record<string, unknown>> = [];
  const logger = jsonLogger((l) => lines.push(JSON.parse(l)));
  const registry = await openRegistry(fileStore(rules.stateDir), { create: true });
  const sink = { emit: (e: Record<string, unknown>) => { events.push(e); } };
  const notified: Array<[string, string]> = [];
  const ref: { notify?: (u: string, h: string) => void } = {};
  const tracker = createPendingTracker({ registry, rules, logger, now: () => now, events: sink as never, notify: (u, h) => { notified.push([u, h]); ref.notify?.(u, h); } });
  const engine = createEngine({ rules, registry, logger, now: () => now, pending: tracker, events: sink as never });
  const mails: Array<{ to: string; message: string }> = [];
  let failSend = false;
  const accounts = createAccounts({
    engine, tracker, events: sink as never, logger, now: () => now,
    templates: rules.notice === null ? null : loadNoticeTemplates(rules.notice),
    secret: async () => Buffer.alloc(32, 7),
    send: async (_t, env, msg) => {
      if (failSend) throw new Error('relay down');
      mails.push({ to: env.to, message: msg.toString('utf8') });
    },
  });
  ref.notify = accounts.notify;
  await registry.add(ALICE, { kind: 'cid', cid: LAPTOP, label: 'laptop' }, 'admin');
  return {
    rules, registry, engine, tracker, accounts, lines, events, notified, mails,
    tick: (ms: number) => { now += ms; },
    now: () => now,
    failSend: (v: boolean) => { failSend = v; },
    settle: async () => { await engine.idle(); await accounts.idle(); await engine.idle(); await accounts.idle(); },
    stop: () => tracker.stop(),
  };
}

const textOf = (message: string) => {
  const m = splitMessage(message);
  const subject = m.headers.find((h) => /^subject:/i.test(h)) ?? '';
  return { headers: m.headers.join('\r\n'), subject: decodeEncodedWords(subject.slice(8)), body: decodeQuotedPrintable(m.body) };
};

test('journal operations for pending devices, links, labels and last-used days round-trip and are validated', () => {
  const hash = 'a'.repeat(64);
  const ops: RegistryOp[] = [
    { op: 'pend', user: ALICE, pending: { hash, kind: 'cid', type: 'UUID', client: 'K-9 Mail 6.8', protocol: 'imap', remote: '192.0.2.7', first: 1, last: 2, tries: 3, state: 'pending', noticed: 0 } },
    { op: 'unpend', user: ALICE, hashes: [hash] },
    { op: 'link', user: ALICE, id: 'b'.repeat(32), exp: 99 },
    { op: 'unlink', user: ALICE, id: 'b'.repeat(32) },
    { op: 'label', user: ALICE, hash, label: 'my phone' },
    { op: 'used', user: ALICE, hashes: [hash], at: 86_400_000 },
  ];
  for (const op of ops) assert.equal(decodeOp(encodeOp(op).trim(), 'j:1'), op);
  assert.throws(() => decodeOp(JSON.stringify({ op: 'pend', u: ALICE, p: [hash, 'cid', 'UUID', 'x'.repeat(500), 'imap', null, 1, 2, 3, 'pending', 0] }), 'j:2'), /client must be text/);
  assert.throws(() => decodeOp(JSON.stringify({ op: 'link', u: ALICE, i: 'not-hex', e: 1 }), 'j:3'), /link id/);
  assert.throws(() => decodeOp(JSON.stringify({ op: 'pend', u: ALICE, p: [hash, 'cid', 'UUID', '', 'imap', null, 1, 2, 3, 'maybe', 0] }), 'j:4'), /state must be/);
});

test('a refused unknown device becomes pending once, with the client\'s name; its tries reach the registry coalesced; it survives a restart', async () => {
  const s = await setup();
  const req = imap({ cid: PHONE, clientName: 'K-9 Mail', clientVersion: '6.8\r\nBcc: x' });
  for (let i = 0; i < 5; i++) assert.is(s.engine.decide(req).action, 'reject');
  await s.settle();
  const p = s.registry.pending(ALICE);
  assert.is(p.length, 1);
  assert.is(p[0]!.hash, s.registry.cidHash(PHONE));
  assert.is(p[0]!.client, 'K-9 Mail 6.8 Bcc: x');
  assert.is(p[0]!.state, 'pending');
  assert.is(s.notified.length, 1, 'asked for a notice once');
  s.tick(2 * 60_000);
  s.engine.decide(req);
  await s.tracker.flush();
  assert.is(s.registry.pending(ALICE)[0]!.tries, 6);
  const again = await openRegistry(fileStore(s.rules.stateDir), { create: false });
  assert.is(again.pending(ALICE)[0]!.tries, 6);
  assert.ok(s.events.some((e) => e.event === 'device_pending' && e.client === 'K-9 Mail 6.8 Bcc: x'));
  s.stop();
});

test('an account keeps at most pending.per_account devices, and a bot cycling CIDs writes at most 20 an hour', async () => {
  const s = await setup();
  for (let i = 0; i < 40; i++) {
    s.engine.decide(imap({ cid: { type: 'UUID', token: `bot-${i}` } }));
    // One at a time, so each notice is claimed before the next device evicts the oldest.
    await s.settle();
  }
  assert.is(s.registry.pending(ALICE).length, 3);
  assert.is(s.notified.length, 20);
  assert.is(s.mails.length, 2, 'per_account_per_day notices, not one per device, although the noticed devices were evicted');
  assert.is(s.registry.notices(ALICE).length, 2);
  s.stop();
});

test('the notice: one per device a day, per_account_per_day per account, to the account\'s own address, with a working approval link and no injected header', async () => {
  const s = await setup();
  s.engine.decide(imap({ cid: PHONE, clientName: 'Evil\r\nBcc: victim@example.org' }));
  await s.settle();
  assert.is(s.mails.length, 1);
  const m = s.mails[0]!;
  assert.is(m.to, ALICE);
  const { headers, subject, body } = textOf(m.message);
  assert.not.ok(/^bcc:/im.test(headers), 'no Bcc header');
  assert.match(subject, /Was this you\?/);
  const link = /https:\/\/mail\.example\.test\/cidlock\/approve\/(\S+)/.exec(body);
  assert.ok(link, body);
  const claims = verifyToken(portalKey(Buffer.alloc(32, 7)), link![1]!, 'approve', s.now());
  assert.ok(claims);
  assert.is(claims!.user, ALICE);
  const p = s.registry.pending(ALICE)[0]!;
  assert.is(claims!.subject, `${p.hash}.${p.first}`);
  // The same device again within the day: no second notice.
  s.engine.decide(imap({ cid: PHONE }));
  await s.settle();
  assert.is(s.mails.length, 1);
  // A day later it may notify again.
  s.tick(25 * HOUR);
  s.engine.decide(imap({ cid: PHONE }));
  await s.settle();
  assert.is(s.mails.length, 2);
  assert.ok(s.events.filter((e) => e.event === 'notice_sent').length === 2);
  s.stop();
});

test('a notice that cannot be sent is given back: the next attempt of the device notifies', async () => {
  const s = await setup();
  s.failSend(true);
  s.engine.decide(imap({ cid: PHONE }));
  await s.settle();
  assert.is(s.mails.length, 0);
  assert.ok(s.events.some((e) => e.event === 'notice_failed' && e.error === 'relay down'));
  assert.is(s.registry.pending(ALICE)[0]!.noticed, 0);
  s.failSend(false);
  s.tick(2 * HOUR); // past the hourly ask throttle
  s.engine.decide(imap({ cid: PHONE }));
  await s.settle();
  assert.is(s.mails.length, 1);
  s.stop();
});

test('approve registers the device (source approved) and lets it in; not me keeps it out, once; both audited', async () => {
  const s = await setup();
  const other = { type: 'UUID', token: 'pending-test-other' };
  s.engine.decide(imap({ cid: PHONE, clientName: 'Phone Mail' }));
  s.engine.decide(imap({ cid: other }));
  await s.settle();
  const [ph, ot] = [s.registry.cidHash(PHONE)!, s.registry.cidHash(other)!];
  const actor = { remote: '198.51.100.9' };
  assert.is(await s.accounts.approve(ALICE, ph, actor), 'done');
  assert.is(await s.accounts.approve(ALICE, ph, actor), 'gone', 'an answered device is no longer pending');
  const d = s.registry.devices(ALICE).find((x) => x.hash === ph)!;
  assert.is(d.source, 'approved');
  assert.is(d.label, 'Phone Mail');
  assert.is(s.engine.decide(imap({ cid: PHONE })).action, 'allow');
  assert.is(await s.accounts.reject(ALICE, ot, actor), 'done');
  assert.is(await s.accounts.reject(ALICE, ot, actor), 'gone');
  assert.is(s.engine.decide(imap({ cid: other })).action, 'reject');
  assert.is(s.accounts.pending(ALICE).find((p) => p.hash === ot)!.state, 'rejected');
  await s.settle();
  assert.ok(s.events.some((e) => e.event === 'device_registered' && e.source === 'holder' && e.remote === '198.51.100.9'));
  assert.ok(s.events.some((e) => e.event === 'device_rejected' && e.source === 'holder'));
  s.stop();
});

test('the holder\'s lock: only portal.user_modes, and none when the rules file fixes the account\'s mode', async () => {
  const s = await setup();
  const actor = { remote: null };
  assert.equal(s.accounts.lock(ALICE).choices, ['learn', 'enforce']);
  await s.accounts.setLock(ALICE, 'learn', actor);
  assert.is(s.accounts.lock(ALICE).mode, 'learn');
  try {
    await s.accounts.setLock(ALICE, 'off', actor);
    assert.unreachable('off is not offered');
  } catch (e) {
    assert.instance(e, PortalRefusal);
  }
  assert.is(s.accounts.lock(ALICE).mode, 'learn');
  s.stop();
  const fixed = await setup(`${RULES}users:\n  ${ALICE}: { mode: enforce }\n`);
  assert.equal(fixed.accounts.lock(ALICE).choices, []);
  fixed.stop();
});

test('sign-in links are single use and expire; rename and remove act on the holder\'s own devices only', async () => {
  const s = await setup();
  const id = await s.accounts.issueSignIn(ALICE, s.now() + 60_000);
  assert.is(await s.accounts.consumeSignIn('bob@example.test', id), false, 'another account');
  assert.is(await s.accounts.consumeSignIn(ALICE, id), true);
  assert.is(await s.accounts.consumeSignIn(ALICE, id), false, 'used');
  const late = await s.accounts.issueSignIn(ALICE, s.now() + 60_000);
  s.tick(61_000);
  assert.is(await s.accounts.consumeSignIn(ALICE, late), false, 'expired');
  const dev = s.accounts.devices(ALICE)[0]!;
  assert.is(await s.accounts.rename(ALICE, dev.id, 'work <b>laptop</b>\u0007', { remote: null }), 'done');
  assert.is(s.accounts.devices(ALICE)[0]!.label, 'work <b>laptop</b>');
  assert.is(await s.accounts.remove('bob@example.test', dev.id, { remote: null }), 'gone');
  assert.is(await s.accounts.remove(ALICE, dev.id, { remote: null }), 'done');
  assert.is(s.registry.deviceCount(ALICE), 0);
  assert.ok(s.accounts.known(ALICE) === false || s.registry.pending(ALICE).length > 0 || s.registry.settings(ALICE).mode !== undefined);
  s.stop();
});

test('sessions are kept in the registry: another host sees a session end at sign-out; an expired one is over; the record is not the cookie\'s id', async () => {
  const s = await setup();
  s.stop();
  const sid = 'Zm9vYmFyYmF6cXV4cXV1eA';
  await s.accounts.startSession(ALICE, sid, s.now() + 60_000);
  assert.is(s.accounts.sessionAlive(ALICE, sid), true);
  assert.is(s.accounts.sessionAlive('bob@example.test', sid), false, 'bound to its account');
  const other = await openRegistry(fileStore(s.rules.stateDir), { create: false });
  assert.is(other.linkCount(ALICE), 1, 'the other host has the record');
  assert.not.ok(readFileSync(join(s.rules.stateDir, 'registry.journal'), 'utf8').includes(sid), 'never the id the cookie carries');
  await s.accounts.endSession(ALICE, sid);
  assert.is(s.accounts.sessionAlive(ALICE, sid), false);
  await other.refresh();
  assert.is(other.linkCount(ALICE), 0, 'signed out everywhere');
  await s.accounts.startSession(ALICE, sid, s.now() + 60_000);
  s.tick(60_001);
  assert.is(s.accounts.sessionAlive(ALICE, sid), false, 'expired');
});

test('a registered device\'s last-used day is written once a day, not at every login', async () => {
  const s = await setup();
  const hash = s.registry.cidHash(LAPTOP)!;
  for (let i = 0; i < 3; i++) {
    const d = s.engine.decide(imap({ cid: LAPTOP }));
    s.engine.reportSuccess(imap({ cid: LAPTOP }), d);
  }
  await s.tracker.flush();
  const day = s.now() - (s.now() % 86_400_000);
  assert.is(s.registry.device(ALICE, hash)!.used, day);
  assert.is(s.accounts.devices(ALICE)[0]!.lastUsed, new Date(day).toISOString());
  const before = s.registry.size();
  s.engine.reportSuccess(imap({ cid: LAPTOP }), s.engine.decide(imap({ cid: LAPTOP })));
  await s.tracker.flush();
  assert.equal(s.registry.size(), before);
  const again = await openRegistry(fileStore(s.rules.stateDir), { create: false });
  assert.is(again.device(ALICE, hash)!.used, day);
  s.stop();
});

test('compaction keeps pending devices, labels and last-used days, and forgets sign-in links past their time', async () => {
  const s = await setup();
  s.stop();
  const dir = s.rules.stateDir;
  const reg = await openRegistry(fileStore(dir, { compactBytes: 1 }), { create: true });
  s.engine.decide(imap({ cid: PHONE }));
  await s.settle();
  const laptop = reg.cidHash(LAPTOP)!;
  const [live, dead] = ['d'.repeat(32), 'e'.repeat(32)];
  await reg.change(() => ({ ops: [
    { op: 'link', user: ALICE, id: live, exp: Date.now() + 3_600_000 },
    { op: 'link', user: ALICE, id: dead, exp: Date.now() - 1 },
    { op: 'label', user: ALICE, hash: laptop, label: 'renamed' },
    { op: 'used', user: ALICE, hashes: [laptop], at: 172_800_000 },
  ], result: undefined }));
  const after = await openRegistry(fileStore(dir), { create: false });
  assert.is(readFileSync(join(dir, 'registry.journal'), 'utf8'), '', 'compacted into the snapshot');
  assert.is(after.pending(ALICE).length, 1);
  assert.is(after.link(ALICE, live) !== undefined, true);
  assert.is(after.link(ALICE, dead), undefined);
  assert.is(after.device(ALICE, laptop)?.label, 'renamed');
  assert.is(after.device(ALICE, laptop)?.used, 172_800_000);
});

test('cidlock pending list, approve and reject: the operator\'s side, audited; an unknown ID fails with 1', async () => {
  const s = await setup(`${RULES}audit: { file: audit.log }\n`);
  s.stop();
  const other = { type: 'UUID', token: 'pending-cli-other' };
  s.engine.decide(imap({ cid: PHONE, clientName: 'Phone Mail' }));
  s.engine.decide(imap({ cid: other }));
  await s.settle();
  const cfg = s.rules.file;
  const list = cidlock(['pending', 'list', ALICE, '--config', cfg]);
  assert.is(list.status, 0, list.stderr);
  assert.match(list.stdout, /USER\s+ID\s+KIND\s+TYPE\s+STATE/);
  assert.match(list.stdout, /Phone Mail/);
  assert.not.ok(list.stdout.includes(PHONE.token), 'never the raw CID');
  const ph = s.registry.cidHash(PHONE)!.slice(0, 12);
  const ot = s.registry.cidHash(other)!.slice(0, 12);
  const ok = cidlock(['pending', 'approve', ALICE, ph, '--label', 'new phone', '--config', cfg]);
  assert.is(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /approved cid device/);
  const devs = cidlock(['devices', 'list', ALICE, '--json', '--config', cfg]);
  assert.ok(devs.stdout.split('\n').some((l) => l.includes('"label":"new phone"') && l.includes('"source":"admin"')), devs.stdout);
  const no = cidlock(['pending', 'reject', ALICE, ot, '--config', cfg]);
  assert.is(no.status, 0, no.stderr);
  const json = cidlock(['pending', 'list', '--json', '--config', cfg]);
  assert.equal(json.stdout.trim().split('\n').map((l) => JSON.parse(l)).map((x: { id: string; state: string }) => [x.id, x.state]), [[ot, 'rejected']]);
  assert.is(cidlock(['pending', 'reject', ALICE, ot, '--config', cfg]).status, 1, 'already answered');
  assert.is(cidlock(['pending', 'approve', ALICE, 'abcdef', '--config', cfg]).status, 1);
  assert.is(cidlock(['pending', 'approve', ALICE, 'xyz', '--config', cfg]).status, 2);
  const audit = readFileSync(join(s.rules.stateDir, 'audit.log'), 'utf8');
  assert.match(audit, /"event":"device_registered".*"source":"admin"/);
  assert.match(audit, /"event":"device_rejected".*"source":"admin"/);
});

test('the admin API: GET pending, POST an answer; a bad answer is 400 and changes nothing', async () => {
  const s = await setup();
  s.stop();
  s.engine.decide(imap({ cid: PHONE }));
  await s.settle();
  const id = s.registry.cidHash(PHONE)!.slice(0, 12);
  const sink = { emit() {} };
  const list = await handleApi(s.engine, sink, 'GET', `/api/users/${ALICE}/pending`, null);
  assert.is(list.status, 200);
  assert.is((list.body as { pending: Array<{ id: string }> }).pending[0]!.id, id);
  assert.is((await handleApi(s.engine, sink, 'POST', `/api/users/${ALICE}/pending/${id}`, { answer: 'maybe' })).status, 400);
  assert.is(s.registry.pending(ALICE).length, 1);
  const r = await handleApi(s.engine, sink, 'POST', `/api/users/${ALICE}/pending/${id}`, { answer: 'approve' });
  assert.is(r.status, 200);
  assert.is(s.engine.decide(imap({ cid: PHONE })).action, 'allow');
  assert.is((await handleApi(s.engine, sink, 'POST', `/api/users/${ALICE}/pending/${id}`, { answer: 'reject' })).status, 404);
});

test.run();
