// Real Dovecot 2.3 and Postfix 3.7 with cidlock stopped (SIGSTOP: slower than every timeout)
// and then killed: the documented fail-open and fail-closed outcomes hold.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { imapLogin, smtpSession } from '../helpers/mail-clients.js';
import {
  dovecotSnippetFor, freePort, postfixDirs, postfixScriptFor, requireTools, serverDir, startCidlock, startDovecot, startPostfix,
  type Cidlock, type Dovecot, type Postfix,
} from '../e2e/harness.js';

const FAILED = 'NO [AUTHENTICATIONFAILED] Authentication failed.';
const USERS = { 'alice@example.com': 'alice-pw' };
const ready = requireTools('peers-down faults', ['dovecot', 'postfix', 'openssl']);
// Without the real servers the tests are registered as skipped: uvu counts them, .ci/run fails on them.
const check = ready ? test : test.skip;
let cl: Cidlock;
let open: Dovecot; // default: auth_policy_reject_on_fail = no
let closed: Dovecot; // auth_policy_reject_on_fail = yes
let pf: Postfix;

let setupOnce: Promise<void> | undefined;
const setup = () => (setupOnce ??= (async () => {
  const dir = serverDir();
  // The one TCP case among the end-to-end tests: cidlock on another host, reached over the
  // network with a clients list (here loopback stands in for the network).
  cl = await startCidlock(dir, 'policy: { mode: enforce }\n', undefined, { policy: await freePort(), socketmap: await freePort(), clients: ['127.0.0.1/32'] });
  const snippet = dovecotSnippetFor(cl.cfg);
  open = await startDovecot({ dir, users: USERS, snippet, name: 'dovecot-open' });
  closed = await startDovecot({ dir, users: USERS, snippet: snippet.replace('#auth_policy_reject_on_fail = yes', 'auth_policy_reject_on_fail = yes'), name: 'dovecot-closed' });
  const main = postfixScriptFor(cl.cfg, postfixDirs(dir), 'main.cf');
  const closedLine = main.split('\n').find((l) => l.startsWith('#cidlock_policy = '))!.replace('#cidlock_policy', 'cidlock_policy_closed');
  // Shorter than the generated 10 s so the test does not wait minutes; the behaviour is the same.
  const fast = (l: string) => l.replace('timeout=10s', 'timeout=2s');
  pf = await startPostfix({
    dir, saslPath: open.authSocket,
    mainExtra: `${fast(main)}\n${fast(closedLine)}\nrelay_domains = example.net\nsmtpd_policy_service_retry_delay = 1s\n`,
    services: [
      { name: 'open', options: ['smtpd_relay_restrictions=$cidlock_policy,permit_sasl_authenticated,reject_unauth_destination'] },
      { name: 'closed', options: ['smtpd_relay_restrictions=$cidlock_policy_closed,permit_sasl_authenticated,reject_unauth_destination'] },
    ],
  });
})());

test.after(async () => {
  if (!ready || setupOnce === undefined) return;
  cl.proc.kill('SIGCONT');
  pf?.stop();
  open?.stop();
  closed?.stop();
  await cl?.stop();
});

const login = (d: Dovecot, from: string) => imapLogin(d.imapPort, { user: 'alice@example.com', pass: 'alice-pw', starttls: true, localAddress: from });
const rcpt = async (service: string, from: string) => (await smtpSession(pf.ports[service]!, { auth: { user: 'alice@example.com', pass: 'alice-pw' }, localAddress: from, transactions: [{ from: 'alice@example.com', rcpts: ['bob@example.org'] }] })).transactions[0]?.rcpts[0] ?? '';

async function outcomes(tag: string, from: string): Promise<void> {
  const o = await login(open, from);
  const c = await login(closed, from);
  assert.match(o.reply, /Logged in/, `${tag}: fail-open Dovecot logs in on the password alone`);
  assert.is(c.reply, FAILED, `${tag}: fail-closed Dovecot refuses`);
  assert.match(await rcpt('open', from), /^250 /, `${tag}: Postfix default_action=DUNNO accepts`);
  assert.match(await rcpt('closed', from), /^451 4\.3\.5 /, `${tag}: Postfix fail-closed defers`);
}

check('cidlock running: both Dovecots refuse a login without a device', async () => {
  await setup();
  assert.is((await login(open, '127.0.0.150')).reply, FAILED);
  assert.is((await login(closed, '127.0.0.150')).reply, FAILED);
});

check('cidlock stopped (slower than every timeout): the documented fail-open and fail-closed outcomes', async () => {
  await setup();
  cl.proc.kill('SIGSTOP');
  try {
    await outcomes('slow', '127.0.0.151');
  } finally {
    cl.proc.kill('SIGCONT');
  }
});

check('cidlock down: the same outcomes', async () => {
  await setup();
  await cl.stop();
  await outcomes('down', '127.0.0.152');
});

test.run();
