// End-to-end: the lock follows the account real Dovecot 2.3 logs into, not the name the client
// typed. Four Dovecots with the usual account set-ups ask one `cidlock serve`: names translated by
// auth_username_format = %Ln, a passdb that returns the account's own name (user=), an
// auth_default_realm, and master users.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cidlock } from '../helpers/cli.js';
import { imapLogin } from '../helpers/mail-clients.js';
import { dovecotSnippetFor, requireTools, serverDir, startCidlock, startDovecot, type Cidlock, type Dovecot } from './harness.js';

const FAILED = 'NO [AUTHENTICATIONFAILED] Authentication failed.';
const ADMIN_LAPTOP = 'UUID 0d1e2f3a-admin-laptop';
// A first rollout: everyone watched, example.com locked, Dovecot naming some accounts by local part.
const RULES = `accounts: { default_domain: example.com }
policy: { mode: monitor }
domains:
  example.com: { mode: enforce }
`;

const ready = requireTools('accounts end-to-end', ['dovecot', 'openssl']);
const check = ready ? test : test.skip;
let cl: Cidlock;
const dv: Record<string, Dovecot> = {};

let setupOnce: Promise<void> | undefined;
const setup = () => (setupOnce ??= (async () => {
  const dir = serverDir();
  cl = await startCidlock(dir, RULES);
  const add = cidlock(['devices', 'add', 'admin@example.com', ADMIN_LAPTOP, '--label', 'help desk laptop', '--config', cl.cfg]);
  if (add.status !== 0) throw new Error(add.stderr);
  await cl.waitFor((l) => l.event === 'registry_reloaded', 'the daemon to see the new device');
  const snippet = dovecotSnippetFor(cl.cfg);
  dv.localPart = await startDovecot({ dir, name: 'local-part', snippet, auth: 'auth_username_format = %Ln', users: { alice: 'pw' } });
  dv.renaming = await startDovecot({ dir, name: 'renaming', snippet, lookupFormat: '%n', users: { alice: 'pw' }, fields: { alice: 'user=alice@example.com' } });
  dv.realm = await startDovecot({ dir, name: 'realm', snippet, auth: 'auth_default_realm = example.com', users: { 'alice@example.com': 'pw' } });
  dv.master = await startDovecot({ dir, name: 'master', snippet, users: { 'alice@example.com': 'pw' }, masters: { admin: 'admin-pw' } });
})());

test.after(async () => {
  if (setupOnce === undefined) return;
  for (const d of Object.values(dv)) d.stop();
  await cl?.stop();
});

const decisions = (remote: string) => cl.lines.filter((l) => l.event === 'decision' && l.remote === remote);
const login = (d: Dovecot, user: string, pass: string, localAddress: string, id?: Array<[string, string]>) =>
  imapLogin(d.imapPort, { user, pass, starttls: true, localAddress, ...(id ? { id } : {}) });

check('auth_username_format = %Ln: every name for alice is refused before the password is checked', async () => {
  await setup();
  for (const [i, typed] of ['alice@example.com', 'alice', 'alice@example.org', 'ALICE@example.org'].entries()) {
    const remote = `127.0.3.${i + 1}`;
    const r = await login(dv.localPart!, typed, 'pw', remote);
    assert.is(r.reply, FAILED, typed);
    const d = decisions(remote);
    assert.is(d.length, 1, typed);
    assert.is(d[0]!.user, 'alice@example.com', typed);
    assert.is(d[0]!.rule, 'domains["example.com"].mode');
    assert.not.ok(dv.localPart!.log().includes(`passwd-file(alice,${remote},`), `the password was checked for ${typed}`);
  }
  assert.is(decisions('127.0.3.3')[0]!.login_name, 'alice@example.org', 'the log shows the name the client typed');
});

check('a passdb that returns user=: refused after the password check, with the same reply as a wrong password', async () => {
  await setup();
  const r = await login(dv.renaming!, 'alice@example.org', 'pw', '127.0.3.10');
  const wrong = await login(dv.renaming!, 'alice@example.org', 'not-the-password', '127.0.3.11');
  assert.is(r.reply, FAILED);
  assert.is(wrong.reply, FAILED);
  assert.equal(decisions('127.0.3.10').map((l) => [l.user, l.stage, l.action]), [
    ['alice@example.org', 'before_auth', 'allow'], // only the typed name is known yet (monitor)
    ['alice@example.com', 'after_auth', 'reject'], // the passdb named the locked account
  ]);
  assert.match(dv.renaming!.log(), /policy\(alice@example\.com,127\.0\.3\.10,<[^>]+>\): Authentication failure due to policy server refusal/);
});

check('auth_default_realm: a bare "alice" is alice@example.com before cidlock is asked', async () => {
  await setup();
  const r = await login(dv.realm!, 'alice', 'pw', '127.0.3.20');
  assert.is(r.reply, FAILED);
  assert.is(decisions('127.0.3.20')[0]!.user, 'alice@example.com');
  assert.not.ok(dv.realm!.log().includes('passwd-file(alice@example.com,127.0.3.20,'));
});

check('master users: decided for the master user, whose password is presented; its registered device gets in', async () => {
  await setup();
  const stranger = await login(dv.master!, 'alice@example.com*admin', 'admin-pw', '127.0.3.30');
  assert.is(stranger.reply, FAILED);
  const d = decisions('127.0.3.30')[0]!;
  assert.is(d.user, 'admin@example.com');
  assert.is(d.mailbox, 'alice@example.com');
  // Dovecot logs which passdb will be asked ("Master user lookup for login"), then asks cidlock
  // first: the master password itself is never verified.
  assert.not.match(dv.master!.log(), /passwd-file\(admin,127\.0\.3\.30,[^)]*\): (?!Master user lookup)/, 'the master password was checked');
  const desk = await login(dv.master!, 'alice@example.com*admin', 'admin-pw', '127.0.3.31', [['clientid', ADMIN_LAPTOP]]);
  assert.match(desk.reply, /^OK .*Logged in/);
  const ok = decisions('127.0.3.31');
  assert.is(ok.length, 1, 'before-auth and after-auth counted once');
  assert.equal([ok[0]!.user, ok[0]!.mailbox, ok[0]!.reason], ['admin@example.com', 'alice@example.com', 'registered_device']);
});

test.run();
