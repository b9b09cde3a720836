// End-to-end, issue 11: libetpan's CLIENTID client code (mailimap_has_clientid, mailimap_clientid,
// mailimap_login; test/clients/libetpan-clientid.c) against a private Dovecot 2.3 running cidlock's
// login plugin, configured from `cidlock config dovecot --clientid`, and a real `cidlock serve`.
// A registered device gets in; an unregistered one gets exactly the wrong-password reply; a
// CLIENTID sent where the plugin did not advertise it (in the clear) never counts.
//
// libetpan cannot choose its source address, so every login comes from 127.0.0.1 and Dovecot's
// auth penalty grows with each failure: the tests that log in come first, the few failures last.
import { randomUUID } from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cidlock } from '../helpers/cli.js';
import { requirePluginTools } from '../helpers/clientid-plugin.js';
import type { LogLine } from '../helpers/daemon.js';
import { libetpanLogin, requireLibetpan, type LibetpanMode } from '../helpers/libetpan.js';
import { imapLoginSessions, sessionLines, startClientidDovecot } from './clientid-servers.js';
import { requireTools, serverDir, startCidlock, type Cidlock, type Dovecot } from './harness.js';

const USERS = { 'alice@example.com': 'alice-pw', 'mona@example.com': 'mona-pw' };
const RULES = `policy: { mode: monitor }
users:
  alice@example.com: { mode: enforce }
`;
const LAPTOP = randomUUID();
/** libetpan's reply line for a refused login: its error code and the server's text. */
const LOGIN_FAILED = 'failed 28 Authentication failed.';

const ready = requireTools('libetpan end-to-end', ['dovecot', 'openssl']) && requirePluginTools('libetpan end-to-end') && requireLibetpan('libetpan end-to-end');
const check = ready ? test : test.skip;

let dir = '';
let cl: Cidlock;
let dv: Dovecot;

let setupOnce: Promise<void> | undefined;
const setup = () => (setupOnce ??= (async () => {
  dir = serverDir();
  cl = await startCidlock(dir, RULES);
  for (const user of ['alice@example.com', 'mona@example.com']) {
    const add = cidlock(['devices', 'add', user, `UUID ${LAPTOP}`, '--label', 'laptop', '--config', cl.cfg]);
    if (add.status !== 0) throw new Error(add.stderr);
  }
  await cl.waitFor((l) => l.event === 'registry_reloaded', 'the daemon to see the new devices');
  dv = await startClientidDovecot({ dir, cfg: cl.cfg, users: USERS });
})());

// With CIDLOCK_E2E_LOG=1, how long each test took.
let testStart = 0;
test.before.each(() => { testStart = Date.now(); });
test.after.each((ctx) => {
  if (process.env.CIDLOCK_E2E_LOG === '1') process.stdout.write(`\n[libetpan time] ${(ctx as { __test__?: string }).__test__}: ${Date.now() - testStart} ms\n`);
});

test.after(async () => {
  if (setupOnce === undefined) return;
  dv?.stop();
  await cl?.stop();
});

const login = (o: { mode: LibetpanMode; user?: string; pass?: string; cid?: string }) => {
  const user = o.user ?? 'alice@example.com';
  return libetpanLogin({
    port: o.mode === 'imaps' ? dv.imapsPort : dv.imapPort,
    mode: o.mode,
    user,
    pass: o.pass ?? USERS[user as keyof typeof USERS],
    ...(o.cid ? { cid: { type: 'UUID', token: o.cid } } : {}),
  });
};

/** cidlock's before-auth decision for the newest login of a user, once it is logged. */
const lastDecision = async (user: string, after: number): Promise<LogLine> => {
  await cl.waitFor((l) => cl.lines.indexOf(l) >= after && l.event === 'decision' && l.user === user && l.stage === 'before_auth', `a decision for ${user}`);
  return cl.lines.slice(after).filter((l) => l.event === 'decision' && l.user === user && l.stage === 'before_auth').pop()!;
};

check('capabilities: CLIENTID is advertised after STARTTLS and on implicit TLS, never in the clear', async () => {
  await setup();
  // mona is in monitor mode: these logins succeed, so Dovecot's auth penalty does not grow.
  const starttls = await login({ mode: 'starttls', user: 'mona@example.com' });
  assert.is(starttls.lines['capability-clientid-before-tls'], '0', starttls.stdout);
  assert.is(starttls.lines['capability-clientid'], '1', starttls.stdout);
  const imaps = await login({ mode: 'imaps', user: 'mona@example.com' });
  assert.is(imaps.lines['capability-clientid'], '1', imaps.stdout);
  const plain = await login({ mode: 'plain', user: 'mona@example.com' });
  assert.is(plain.lines['capability-clientid'], '0', plain.stdout);
  for (const r of [starttls, imaps, plain]) assert.is(r.lines.login, 'ok Logged in', r.stdout);
});

check('a registered device logs in with CLIENTID (STARTTLS and implicit TLS); the CID reaches cidlock as the forward fields', async () => {
  await setup();
  for (const mode of ['starttls', 'imaps'] as const) {
    const start = cl.lines.length;
    const r = await login({ mode, cid: LAPTOP });
    assert.is(r.lines.clientid, 'ok CLIENTID completed.', r.stdout);
    assert.is(r.lines.login, 'ok Logged in', r.stdout);
    assert.is(r.status, 0);
    const d = await lastDecision('alice@example.com', start);
    assert.is(d.action, 'allow');
    assert.is(d.mode, 'enforce');
    assert.is(d.reason, 'registered_device');
    assert.is(d.cid_via, 'clientid');
    const session = String(d.session);
    assert.ok(imapLoginSessions(dv.log(), 'alice@example.com').includes(session), `Dovecot logged no login for session ${session}`);
    const request = sessionLines(dv.log(), session).find((l) => l.includes('Policy server request JSON:'));
    assert.ok(request?.includes(`"fwd_clientid":"${LAPTOP}","fwd_clientid_type":"UUID"`), `no forward fields: ${request}`);
  }
});

check('a CLIENTID sent in the clear, where it is not advertised, is refused by the plugin and never reaches cidlock (monitor: allowed, would_reject)', async () => {
  await setup();
  const start = cl.lines.length;
  const r = await login({ mode: 'plain', user: 'mona@example.com', cid: LAPTOP });
  assert.match(r.lines.clientid ?? '', /^failed /, r.stdout);
  assert.is(r.lines.login, 'ok Logged in', r.stdout);
  const d = await lastDecision('mona@example.com', start);
  assert.is(d.tls, false);
  assert.is(d.would_reject, true);
  assert.is(d.reason, 'no_device_proof');
  assert.is(d.cid_via, undefined);
  assert.equal((d.evidence as Array<Record<string, unknown>>).map((e) => `${e.kind} ${e.status}`), ['cid absent']);
  const request = sessionLines(dv.log(), String(d.session)).find((l) => l.includes('Policy server request JSON:'));
  assert.ok(request?.includes('"fwd_clientid":""'), `a CID was forwarded: ${request}`);
});

check('an unregistered device gets exactly the wrong-password reply', async () => {
  await setup();
  const start = cl.lines.length;
  const stranger = await login({ mode: 'starttls', cid: randomUUID() });
  assert.is(stranger.lines.clientid, 'ok CLIENTID completed.', stranger.stdout);
  const d = await lastDecision('alice@example.com', start);
  const wrongPassword = await login({ mode: 'starttls', cid: LAPTOP, pass: 'not-alices-password' });
  assert.is(stranger.lines.login, LOGIN_FAILED, stranger.stdout);
  assert.is(stranger.lines.login, wrongPassword.lines.login);
  assert.is(stranger.status, 1);
  assert.is(d.action, 'reject');
  assert.is(d.reason, 'unknown_device');
  assert.is(d.cid_via, 'clientid');
});

check('enforce: the registered CID sent in the clear before STARTTLS is not honoured after it', async () => {
  await setup();
  const start = cl.lines.length;
  const r = await login({ mode: 'clear-starttls', cid: LAPTOP });
  assert.is(r.lines['capability-clientid-before-tls'], '0', r.stdout);
  assert.match(r.lines['clientid-before-tls'] ?? '', /^failed /, r.stdout);
  assert.is(r.lines.starttls, 'ok');
  assert.is(r.lines['capability-clientid'], '1', r.stdout);
  assert.is(r.lines.login, LOGIN_FAILED, r.stdout);
  const d = await lastDecision('alice@example.com', start);
  assert.is(d.action, 'reject');
  assert.is(d.reason, 'no_device_proof');
  assert.is(d.tls, true);
  assert.is(d.cid_via, undefined);
});

test.run();
