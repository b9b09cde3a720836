// End-to-end: real Dovecot 2.3 (and Postfix 3.7 for SMTP AUTH via Dovecot SASL) asking a real
// `cidlock serve`, with real IMAP, POP3 and SMTP clients over real sockets.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cidlock } from '../helpers/cli.js';
import { imapLogin, pop3Login, smtpAuth } from '../helpers/mail-clients.js';
import { dovecotSnippetFor, requireTools, serverDir, startCidlock, startDovecot, startPostfix, type Cidlock, type Dovecot, type Postfix } from './harness.js';

const FAILED = 'NO [AUTHENTICATIONFAILED] Authentication failed.';
const LAPTOP = 'UUID 23bf83be-aad7-46aa-9e0f-39191ccf402f';
const VOUCH_TTL_S = 6;
const RULES = `policy:
  mode: enforce
  vouch_ttl: ${VOUCH_TTL_S}s
domains:
  other.example: { mode: off }
users:
  mona@example.com: { mode: monitor }
  lena@example.com: { mode: learn, learn: { max_devices: 1 } }
`;
const USERS = { 'alice@example.com': 'alice-pw', 'mona@example.com': 'mona-pw', 'lena@example.com': 'lena-pw', 'known@other.example': 'x' };

const ready = requireTools('dovecot end-to-end', ['dovecot', 'postfix', 'openssl']);
// Without the real servers the tests are registered as skipped: uvu counts them, .ci/run fails on them.
const check = ready ? test : test.skip;
let dir = '';
let cl: Cidlock;
let dv: Dovecot;

// uvu swallows errors thrown in before() hooks, so setup runs inside the first test that needs it.
let setupOnce: Promise<void> | undefined;
const setup = () => (setupOnce ??= doSetup());

async function doSetup(): Promise<void> {
  dir = serverDir();
  cl = await startCidlock(dir, RULES);
  const add = cidlock(['devices', 'add', 'alice@example.com', LAPTOP, '--label', 'laptop', '--config', cl.cfg]);
  if (add.status !== 0) throw new Error(add.stderr);
  await cl.waitFor((l) => l.event === 'registry_reloaded', 'the daemon to see the new device');
  dv = await startDovecot({ dir, users: USERS, snippet: dovecotSnippetFor(cl.cfg) });
}

test.after(async () => {
  if (!ready || setupOnce === undefined) return;
  dv?.stop();
  await cl?.stop();
});

const decisions = (user: string, remote: string) => cl.lines.filter((l) => l.event === 'decision' && l.user === user && l.remote === remote);
const passdbConsulted = (user: string, remote: string) => dv.log().includes(`passwd-file(${user},${remote},`);

check('1. enforce: a registered CID in the IMAP ID over STARTTLS logs in', async () => {
  await setup();
  const r = await imapLogin(dv.imapPort, { user: 'alice@example.com', pass: 'alice-pw', starttls: true, id: [['clientid', LAPTOP], ['name', 'Thunderbird']], localAddress: '127.0.0.2' });
  assert.match(r.reply, /^OK .*Logged in/);
  const d = decisions('alice@example.com', '127.0.0.2');
  assert.is(d.length, 1, 'before-auth and after-auth counted once');
  assert.is(d[0]!.reason, 'registered_device');
});

check('2. an unregistered CID gets exactly the wrong-password reply, and the password is never checked', async () => {
  await setup();
  const stranger = await imapLogin(dv.imapPort, { user: 'alice@example.com', pass: 'alice-pw', starttls: true, id: [['clientid', 'UUID 00000000-dead-beef-0000-000000000000']], localAddress: '127.0.0.3' });
  const wrongPw = await imapLogin(dv.imapPort, { user: 'alice@example.com', pass: 'guess', starttls: true, id: [['clientid', LAPTOP]], localAddress: '127.0.0.4' });
  const unknownUser = await imapLogin(dv.imapPort, { user: 'nobody@other.example', pass: 'guess', starttls: true, localAddress: '127.0.0.5' });
  assert.is(stranger.reply, FAILED);
  assert.is(wrongPw.reply, FAILED);
  assert.is(unknownUser.reply, FAILED);
  assert.is(decisions('alice@example.com', '127.0.0.3')[0]!.reason, 'unknown_device');
  assert.not.ok(passdbConsulted('alice@example.com', '127.0.0.3'), 'the password database was consulted for a refused device');
  assert.ok(passdbConsulted('alice@example.com', '127.0.0.4'), 'a wrong password is checked by the password database');
  assert.match(dv.log(), /policy\(alice@example\.com,127\.0\.0\.3,<[^>]+>\): Authentication failure due to policy server refusal/);
  process.stderr.write(`  (reply times: refused device ${stranger.ms} ms, wrong password ${wrongPw.ms} ms, unknown user ${unknownUser.ms} ms)\n`);
});

check('3. a registered CID sent without TLS is not honoured while require_tls', async () => {
  await setup();
  const r = await imapLogin(dv.imapPort, { user: 'alice@example.com', pass: 'alice-pw', starttls: false, id: [['clientid', LAPTOP]], localAddress: '127.0.0.6' });
  assert.is(r.reply, FAILED);
  const d = decisions('alice@example.com', '127.0.0.6')[0]!;
  assert.is(d.tls, false);
  assert.is((d.evidence as Array<{ kind: string; status: string }>).find((e) => e.kind === 'cid')!.status, 'ignored');
});

check('4. monitor mode: logged in, and the decision line says would_reject', async () => {
  await setup();
  const r = await imapLogin(dv.imapPort, { user: 'mona@example.com', pass: 'mona-pw', starttls: true, id: [['clientid', 'UUID mona-unknown']], localAddress: '127.0.0.7' });
  assert.match(r.reply, /Logged in/);
  const d = decisions('mona@example.com', '127.0.0.7')[0]!;
  assert.is(d.would_reject, true);
  assert.is(d.action, 'allow');
  assert.is(d.reason, 'unknown_device');
});

check('5. learn mode: the first new CID is registered on disk and survives a restart; one past max_devices is refused', async () => {
  await setup();
  const first = await imapLogin(dv.imapPort, { user: 'lena@example.com', pass: 'lena-pw', starttls: true, id: [['clientid', 'UUID lena-phone'], ['name', 'K-9 Mail']], localAddress: '127.0.0.8' });
  assert.match(first.reply, /Logged in/);
  await cl.waitFor((l) => l.event === 'device_registered' && l.source === 'learn' && l.user === 'lena@example.com', 'device_registered');
  const listed = cidlock(['devices', 'list', 'lena@example.com', '--json', '--config', cl.cfg]);
  const dev = JSON.parse(listed.stdout);
  assert.is(dev.source, 'learn');
  assert.is(dev.label, 'K-9 Mail');

  await cl.stop();
  cl = await startCidlock(dir, RULES, cl.dovecotPort);
  const again = await imapLogin(dv.imapPort, { user: 'lena@example.com', pass: 'lena-pw', starttls: true, id: [['clientid', 'UUID lena-phone']], localAddress: '127.0.0.9' });
  assert.match(again.reply, /Logged in/);
  assert.is(decisions('lena@example.com', '127.0.0.9')[0]!.reason, 'registered_device');
  const second = await imapLogin(dv.imapPort, { user: 'lena@example.com', pass: 'lena-pw', starttls: true, id: [['clientid', 'UUID lena-tablet']], localAddress: '127.0.0.10' });
  assert.is(second.reply, FAILED);
  assert.match(String(decisions('lena@example.com', '127.0.0.10')[0]!.why), /already has 1 of at most 1 devices/);
});

check('6. POP3 and SMTP AUTH are vouched by a just-approved IMAP login from the same address, and only then', async () => {
  await setup();
  let pf: Postfix | undefined;
  try {
    pf = await startPostfix({ dir, saslPath: dv.authSocket });
    // Without an IMAP login from this address: refused before the password is checked.
    assert.is(await pop3Login(dv.pop3Port, { user: 'alice@example.com', pass: 'alice-pw', stls: true, localAddress: '127.0.0.21' }), '-ERR [AUTH] Authentication failed.');
    assert.match(await smtpAuth(pf.smtpPort, { user: 'alice@example.com', pass: 'alice-pw', localAddress: '127.0.0.21' }), /^535 5\.7\.8 /);
    assert.not.ok(passdbConsulted('alice@example.com', '127.0.0.21'));

    const imap = await imapLogin(dv.imapPort, { user: 'alice@example.com', pass: 'alice-pw', starttls: true, id: [['clientid', LAPTOP]], localAddress: '127.0.0.20' });
    assert.match(imap.reply, /Logged in/);
    const vouchedAt = Date.now();
    assert.match(await pop3Login(dv.pop3Port, { user: 'alice@example.com', pass: 'alice-pw', stls: true, localAddress: '127.0.0.20' }), /^\+OK/);
    assert.match(await smtpAuth(pf.smtpPort, { user: 'alice@example.com', pass: 'alice-pw', localAddress: '127.0.0.20' }), /^235 /);
    const smtpDecision = decisions('alice@example.com', '127.0.0.20').find((l) => l.protocol === 'smtp')!;
    assert.is(smtpDecision.reason, 'vouched');

    await new Promise((r) => setTimeout(r, Math.max(0, VOUCH_TTL_S * 1000 + 500 - (Date.now() - vouchedAt))));
    assert.is(await pop3Login(dv.pop3Port, { user: 'alice@example.com', pass: 'alice-pw', stls: true, localAddress: '127.0.0.20' }), '-ERR [AUTH] Authentication failed.');
    assert.match(await smtpAuth(pf.smtpPort, { user: 'alice@example.com', pass: 'alice-pw', localAddress: '127.0.0.20' }), /^535 5\.7\.8 /);
  } finally {
    pf?.stop();
  }
});

test.run();
