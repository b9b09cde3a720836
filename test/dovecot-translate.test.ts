import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { commandFromPath, reportOutcome, translateDovecot } from '../src/dovecot-policy/translate.js';
import { readDovecotCapture } from './helpers/paths.js';

const opts = { idFields: ['clientid'], stage: 'before_auth' };

test('IMAP capture with a CID over TLS becomes a core request with the CID and client name', () => {
  const [first] = readDovecotCapture('dovecot-2.3.19-imap-pop3.jsonl');
  const t = translateDovecot(JSON.parse(first!.body), opts);
  assert.ok(t.ok);
  if (!t.ok) return;
  assert.equal(t.request, {
    protocol: 'imap', user: 'alice@example.com', remote: '127.0.0.1', tls: true, certFingerprints: [], stage: 'before_auth',
    sessionId: 'mOE1o1ZhhMJ/AAAB', guessTag: '08b7', clientName: 'Thunderbird', clientVersion: '128.5.0', cid: { type: 'UUID', token: '23bf83be-aad7-46aa-9e0f-39191ccf402f' }, cidVia: 'imap_id',
  });
});

// The login plugin's forward fields, as Dovecot 2.3 sends %{passdb:forward_clientid} and _type.
const withClientid = (over: Record<string, unknown>) => ({ ...JSON.parse(readDovecotCapture('dovecot-2.3.19-imap-pop3.jsonl')[0]!.body), ...over });

test('a CLIENTID from the login plugin becomes the CID, sent via clientid', () => {
  const t = translateDovecot(withClientid({ device_id: '', fwd_clientid: '8c3f2a1e-4b5d-4e6f-9a7b-1c2d3e4f5a6b', fwd_clientid_type: 'UUID' }), opts);
  assert.ok(t.ok);
  if (!t.ok) return;
  assert.equal([t.request.cid, t.request.cidVia, t.request.cidMismatch], [{ type: 'UUID', token: '8c3f2a1e-4b5d-4e6f-9a7b-1c2d3e4f5a6b' }, 'clientid', undefined]);
});

test('CLIENTID and an IMAP ID CID: the same one is no mismatch; a different one loses and is flagged', () => {
  const same = translateDovecot(withClientid({ fwd_clientid: '23bf83be-aad7-46aa-9e0f-39191ccf402f', fwd_clientid_type: 'uuid' }), opts);
  assert.ok(same.ok && same.request.cidVia === 'clientid' && same.request.cidMismatch === undefined);
  const other = translateDovecot(withClientid({ fwd_clientid: 'another-device', fwd_clientid_type: 'UUID' }), opts);
  assert.ok(other.ok);
  if (!other.ok) return;
  assert.equal(other.request.cid, { type: 'UUID', token: 'another-device' });
  assert.is(other.request.cidMismatch, true);
  assert.is(other.request.clientName, 'Thunderbird', 'the ID still names the client');
});

test('an empty forward field (plugin not loaded, or no CLIENTID sent) leaves the IMAP ID CID in charge', () => {
  const t = translateDovecot(withClientid({ fwd_clientid: '', fwd_clientid_type: '' }), opts);
  assert.ok(t.ok && t.request.cidVia === 'imap_id' && t.request.cid?.token === '23bf83be-aad7-46aa-9e0f-39191ccf402f');
});

test('a malformed CLIENTID value is a problem, not a CID, and never falls back to the ID one', () => {
  const t = translateDovecot(withClientid({ fwd_clientid: 'x'.repeat(129), fwd_clientid_type: 'UUID' }), opts);
  assert.ok(t.ok);
  if (!t.ok) return;
  assert.is(t.request.cid, undefined);
  assert.match(t.request.cidProblem!, /CLIENTID command: CID token longer than 128/);
  assert.not.match(t.request.cidProblem!, /xxxx/);
});

test('escaped CID without TLS: parsed exactly, TLS false although Dovecot calls loopback "secured"', () => {
  const caps = readDovecotCapture('dovecot-2.3.19-imap-pop3.jsonl');
  const t = translateDovecot(JSON.parse(caps[2]!.body), opts);
  assert.ok(t.ok);
  if (!t.ok) return;
  assert.equal(t.request.cid, { type: 'UUID', token: 'a"b\\c' });
  assert.is(t.request.tls, false);
  assert.is(t.request.clientName, undefined, 'NIL name');
});

test('POP3 and empty device_id: no CID, no problem', () => {
  const caps = readDovecotCapture('dovecot-2.3.19-imap-pop3.jsonl');
  const t = translateDovecot(JSON.parse(caps[7]!.body), opts);
  assert.ok(t.ok && t.request.protocol === 'pop3' && t.request.cid === undefined && t.request.cidProblem === undefined);
});

test('duplicate tls key: Dovecot\'s own boolean (the last) wins; a malformed CID field is explained', () => {
  const [cap] = readDovecotCapture('dovecot-2.3.19-duplicate-tls-key.jsonl');
  const body = JSON.parse(cap!.body);
  assert.is(body.tls, false);
  const t = translateDovecot(body, { idFields: ['x-cid'], stage: 'before_auth' });
  assert.ok(t.ok);
  if (!t.ok) return;
  assert.is(t.request.tls, false);
  assert.is(t.request.cid, undefined);
  assert.match(t.request.cidProblem!, /malformed CID in IMAP ID field x-cid: CID has no space between type and token/);
  assert.not.ok(t.request.cidProblem!.includes('reject-nomsg'));
});

test('SMTP AUTH via Postfix SASL: "secured" means the SMTP session uses TLS', () => {
  const [cap] = readDovecotCapture('dovecot-2.3.19-smtp-via-postfix-sasl.jsonl');
  const t = translateDovecot(JSON.parse(cap!.body), opts);
  assert.ok(t.ok);
  if (!t.ok) return;
  assert.is(t.request.protocol, 'smtp');
  assert.is(t.request.tls, true);
  assert.is(t.request.sessionId, undefined);
});

test('bodies that are not usable are refused with a reason', () => {
  assert.equal(translateDovecot([], opts), { ok: false, error: 'body is not a JSON object' });
  assert.equal(translateDovecot(null, opts), { ok: false, error: 'body is not a JSON object' });
  const nologin = translateDovecot({ protocol: 'imap' }, opts);
  assert.is(nologin.ok, false);
  const mapped = translateDovecot({ login: 'Bob@Example.COM', remote: '::ffff:192.0.2.1', protocol: 'IMAP' }, opts);
  assert.ok(mapped.ok && mapped.request.user === 'bob@example.com' && mapped.request.remote === '192.0.2.1' && mapped.request.protocol === 'imap');
});

test('commands come from the query or the path', () => {
  assert.is(commandFromPath('/?command=allow'), 'allow');
  assert.is(commandFromPath('/policy?x=1&command=report'), 'report');
  assert.is(commandFromPath('/command/allow'), 'allow');
  assert.is(commandFromPath('/command/report/'), 'report');
  assert.is(commandFromPath('/?command=evil'), null);
  assert.is(commandFromPath('/'), null);
});

// Real Dovecot 2.3.19 bodies for the usual account set-ups (test/fixtures/captures/dovecot-2.3.19-accounts.jsonl).
const accounts = readDovecotCapture('dovecot-2.3.19-accounts.jsonl');
const accountOf = (note: string, i: number, defaultDomain = '') => {
  const cap = accounts.filter((c) => c.note === note)[i]!;
  const t = translateDovecot(JSON.parse(cap.body), { ...opts, defaultDomain });
  if (!t.ok) throw new Error(t.error);
  return { user: t.request.user, mailbox: t.request.mailbox, loginName: t.request.loginName, path: cap.path };
};

test('auth_username_format = %Ln: every name Dovecot maps to "alice" is one account; default_domain gives it its domain', () => {
  for (const typed of ['alice@example.com', 'alice', 'alice@example.org']) {
    assert.equal(accountOf(`format %Ln: ${typed}`, 0), { user: 'alice', mailbox: undefined, loginName: typed === 'alice' ? undefined : typed, path: '/?command=allow' });
    assert.is(accountOf(`format %Ln: ${typed}`, 0, 'example.com').user, 'alice@example.com');
  }
});

test('a passdb that returns user=: the before-auth call names what was typed, the after-auth call the real account', () => {
  assert.is(accountOf('passdb by local part, returns user=: alice@example.org', 0).user, 'alice@example.org');
  assert.is(accountOf('passdb by local part, returns user=: alice@example.org', 1).user, 'alice@example.com');
  assert.is(accountOf('passdb by local part, returns user=: alice@example.org', 2).user, 'alice@example.com');
  // Without user=, Dovecot itself never learns the mailbox is alice@example.com: neither can cidlock.
  assert.is(accountOf('passdb by local part, no user=: alice@example.org', 1).user, 'alice@example.org');
});

test('auth_default_realm: Dovecot adds the realm before cidlock is asked', () => {
  assert.equal(accountOf('default realm: alice', 0), { user: 'alice@example.com', mailbox: undefined, loginName: 'alice', path: '/?command=allow' });
});

test('master users: decided for the master user whose password is presented, the mailbox beside it, in every call', () => {
  const note = 'master user: alice@example.com*admin';
  for (let i = 0; i < 3; i++) assert.equal(accountOf(note, i), { user: 'admin', mailbox: 'alice@example.com', loginName: undefined, path: i < 2 ? '/?command=allow' : '/?command=report' }, String(i));
  assert.is(accountOf(`${note} (wrong password)`, 1).user, 'admin', 'a failed master login counts against the master user');
});

test('earlier configurations without user=: login (requested_username) is the account', () => {
  const t = translateDovecot({ login: 'Bob@Example.COM', protocol: 'imap', remote: '192.0.2.1' }, opts);
  assert.ok(t.ok && t.request.user === 'bob@example.com');
  const none = translateDovecot({ protocol: 'imap' }, opts);
  assert.ok(!none.ok && /user=%\{user\}/.test(none.error));
});


test('Dovecot 2.4.1 reports (real captures): success, credentials, policy and account outcomes', () => {
  const caps = readDovecotCapture('dovecot-2.4.1.jsonl');
  const reports = caps.filter((c) => commandFromPath(c.path) === 'report').map((c) => reportOutcome(JSON.parse(c.body)));
  assert.equal(reports, [
    { success: true, policyReject: false, failType: '' },
    { success: false, policyReject: false, failType: 'credentials' },
    { success: false, policyReject: true, failType: 'policy' },
    { success: false, policyReject: false, failType: 'account' },
  ]);
  const first = translateDovecot(JSON.parse(caps[0]!.body), opts);
  assert.ok(first.ok && first.request.tls === true && first.request.cid?.token === '23bf83be-aad7-46aa-9e0f-39191ccf402f' && first.request.cidVia === 'imap_id');
  const dropped = translateDovecot(JSON.parse(caps[9]!.body), opts);
  assert.ok(dropped.ok && dropped.request.cid === undefined && dropped.request.cidProblem === undefined, 'Dovecot cut the ID before the clientid pair');
});

test.run();
