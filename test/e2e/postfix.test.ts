// End-to-end: a private Postfix 3.7 (SASL through Dovecot 2.3) asking a real `cidlock serve` over
// the policy delegation protocol and socketmap over UNIX sockets in Postfix's queue directory, with
// a real SMTP client presenting self-signed client certificates. Postfix is configured with the
// postconf commands `cidlock config postfix` prints.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cidlock } from '../helpers/cli.js';
import { smtpSession, type SmtpResult } from '../helpers/mail-clients.js';
import {
  dovecotSaslInQueue, dovecotSnippetFor, freePort, postfixDirs, postfixScriptFor, preparePostfixQueue, requireTools, runPostfixScript,
  selfSigned, serverDir, startCidlock, startDovecot, startPostfix, type Cidlock, type Dovecot, type Postfix,
} from './harness.js';

const PW = 'pw-for-tests';
const USERS = { 'alice@example.com': PW, 'mona@example.com': PW, 'free@example.com': PW, 'nosmtp@example.com': PW };
const RULES = `policy:
  mode: enforce
users:
  mona@example.com: { mode: monitor }
  free@example.com: { mode: off }
  nosmtp@example.com: { protocols: { smtp: deny } }
`;
const TO = 'bob@example.org';

const ready = requireTools('postfix end-to-end', ['postfix', 'dovecot', 'openssl']);
// Without the real servers the tests are registered as skipped: uvu counts them, .ci/run fails on them.
const check = ready ? test : test.skip;
let dir = '';
let cl: Cidlock;
let plain: Dovecot;
let withCidlock: Dovecot;
let pf: Postfix;
let aliceCert: { cert: string; key: string };
let strangerCert: { cert: string; key: string };

// uvu swallows errors thrown in before() hooks, so setup runs inside the first test that needs it.
let setupOnce: Promise<void> | undefined;
const setup = () => (setupOnce ??= doSetup());

async function doSetup(): Promise<void> {
  dir = serverDir();
  // What an operator runs: cidlock's UNIX sockets in Postfix's queue directory.
  const queue = preparePostfixQueue(dir);
  cl = await startCidlock(dir, RULES, undefined, { queue });
  aliceCert = selfSigned(dir, 'alice-laptop', 'alice-laptop');
  strangerCert = selfSigned(dir, 'stranger', 'stranger');
  const add = cidlock(['devices', 'add', 'alice@example.com', '--cert', aliceCert.cert, '--config', cl.cfg]);
  if (add.status !== 0) throw new Error(add.stderr);
  await cl.waitFor((l) => l.event === 'registry_reloaded', 'the daemon to see the new device');

  // One Dovecot only authenticates (an operator who configured just Postfix); the other also asks
  // cidlock, and serves SASL where the generated submission service looks for it (private/auth).
  plain = await startDovecot({ dir, users: USERS, snippet: '', name: 'dovecot-plain' });
  withCidlock = await startDovecot({ dir, users: USERS, snippet: `${dovecotSnippetFor(cl.cfg)}\n${dovecotSaslInQueue(queue)}`, name: 'dovecot-cidlock' });

  // The generated commands, verbatim except for the submission port (587 is taken or privileged).
  const script = postfixScriptFor(cl.cfg, postfixDirs(dir));
  const submissionPort = await freePort();
  const onPort = script.replace(/submission\/inet/g, `${submissionPort}/inet`).replace(/'submission inet /g, `'${submissionPort} inet `);
  // The fail-closed variant under a name of its own, and the sasl table's main.cf half for the
  // "tables" service below (which uses it, so Postfix has no unused parameter to warn about).
  const closedLine = script.split('\n').find((l) => l.startsWith('#postconf') && l.includes('cidlock_policy = ') && l.includes('451 4.3.5'))!;
  const saslLine = script.split('\n').find((l) => l.startsWith('#postconf') && l.includes("-e 'cidlock_sasl = "))!;
  const viaPlain = (restrictions: string) => [`smtpd_sasl_path=${plain.authSocket}`, 'smtpd_tls_ask_ccert=yes', `smtpd_relay_restrictions=${restrictions}`];
  pf = await startPostfix({
    dir,
    saslPath: plain.authSocket,
    mainExtra: 'relay_domains = example.net\n',
    services: [
      { name: 'rcpt', maxproc: 1, options: viaPlain('$cidlock_policy,permit_sasl_authenticated,reject_unauth_destination') },
      { name: 'closed', options: viaPlain('$cidlock_policy_closed,permit_sasl_authenticated,reject_unauth_destination') },
      { name: 'tables', options: viaPlain('$cidlock_sasl,permit_sasl_authenticated,reject_unauth_destination') },
    ],
    configure: () => {
      runPostfixScript(`${onPort}\n${closedLine.slice(1).replace('cidlock_policy = ', 'cidlock_policy_closed = ')}\n${saslLine.slice(1)}\n`, dir);
    },
    configuredPorts: { submission: submissionPort },
  });
}

test.after(async () => {
  if (!ready || setupOnce === undefined) return;
  pf?.stop();
  plain?.stop();
  withCidlock?.stop();
  await cl?.stop();
});

const send = (port: string, o: { user?: string; cert?: { cert: string; key: string }; rcpts?: string[]; localAddress?: string }): Promise<SmtpResult> =>
  smtpSession(pf.ports[port]!, {
    ...(o.user ? { auth: { user: o.user, pass: PW } } : {}),
    ...(o.cert ? { cert: o.cert } : {}),
    ...(o.localAddress ? { localAddress: o.localAddress } : {}),
    transactions: [{ from: o.user ?? 'someone@example.org', rcpts: o.rcpts ?? [TO] }],
  });
const rcptReplies = (r: SmtpResult) => r.transactions.flatMap((t) => t.rcpts);
const decisionsFor = (user: string) => cl.lines.filter((l) => l.event === 'decision' && l.user === user && l.protocol === 'smtp' && l.stage === 'RCPT');

check('1. a locked user with a registered client certificate: RCPT accepted', async () => {
  await setup();
  const r = await send('rcpt', { user: 'alice@example.com', cert: aliceCert });
  assert.match(r.auth!, /^235 /);
  assert.match(rcptReplies(r)[0]!, /^250 /);
  assert.is(decisionsFor('alice@example.com').pop()!.reason, 'registered_device');
});

check('2. a locked user with an unregistered certificate, and with none: 554 5.7.1 at RCPT', async () => {
  // (A certificate proven at RCPT vouches for its user and address, like an IMAP login does.)
  await setup();
  const stranger = await send('rcpt', { user: 'alice@example.com', cert: strangerCert });
  assert.match(stranger.auth!, /^235 /, 'SASL itself succeeds: this Dovecot does not ask cidlock');
  assert.match(rcptReplies(stranger)[0]!, /^554 5\.7\.1 .*Access denied/);
  // From another address: the proven certificate of test 1 vouches for alice at 127.0.0.1.
  const none = await send('rcpt', { user: 'alice@example.com', localAddress: '127.0.0.31' });
  assert.match(rcptReplies(none)[0]!, /^554 5\.7\.1 /);
  assert.equal(decisionsFor('alice@example.com').slice(-2).map((l) => l.reason), ['unknown_device', 'no_device_proof']);
});

test('3. an unlocked user is accepted; an unauthenticated session only ever gets DUNNO', async () => {
  await setup();
  assert.match(rcptReplies(await send('rcpt', { user: 'free@example.com' }))[0]!, /^250 /);
  const before = cl.lines.filter((l) => l.event === 'decision').length;
  const anon = await send('rcpt', { rcpts: ['carol@example.net'] });
  assert.match(rcptReplies(anon)[0]!, /^250 /);
  assert.is(cl.lines.filter((l) => l.event === 'decision').length, before, 'cidlock decided an unauthenticated session');
});

check('4. monitor mode: accepted, and would_reject is logged', async () => {
  await setup();
  assert.match(rcptReplies(await send('rcpt', { user: 'mona@example.com', cert: strangerCert }))[0]!, /^250 /);
  const d = decisionsFor('mona@example.com').pop()!;
  assert.is(d.would_reject, true);
  assert.is(d.reason, 'unknown_device');
});

check('5. several sessions and several RCPTs over one policy connection are each decided correctly', async () => {
  await setup();
  const start = cl.lines.length;
  const a = await smtpSession(pf.ports.rcpt!, { cert: aliceCert, auth: { user: 'alice@example.com', pass: PW }, transactions: [{ from: 'alice@example.com', rcpts: [TO, 'dave@example.org'] }, { from: 'alice@example.com', rcpts: ['erin@example.org'] }] });
  const b = await smtpSession(pf.ports.rcpt!, { localAddress: '127.0.0.32', auth: { user: 'alice@example.com', pass: PW }, transactions: [{ from: 'alice@example.com', rcpts: [TO, 'dave@example.org'] }] });
  const c = await smtpSession(pf.ports.rcpt!, { auth: { user: 'mona@example.com', pass: PW }, transactions: [{ from: 'mona@example.com', rcpts: [TO] }] });
  assert.equal(rcptReplies(a).map((x) => x.slice(0, 3)), ['250', '250', '250']);
  assert.equal(rcptReplies(b).map((x) => x.slice(0, 9)), ['554 5.7.1', '554 5.7.1']);
  assert.equal(rcptReplies(c).map((x) => x.slice(0, 3)), ['250']);
  const made = cl.lines.slice(start).filter((l) => l.event === 'decision' && l.stage === 'RCPT');
  assert.equal(made.map((l) => `${l.user}:${l.action}`), [
    'alice@example.com:allow', 'alice@example.com:allow', 'alice@example.com:allow',
    'alice@example.com:reject', 'alice@example.com:reject',
    'mona@example.com:allow',
  ]);
  assert.is(new Set(made.map((l) => l.via)).size, 1, `decisions arrived over several policy connections: ${made.map((l) => `${l.session}@${l.via}`).join(' ')}\n${cl.lines.filter((l) => String(l.event).startsWith('postfix_connection')).map((l) => JSON.stringify(l)).join('\n')}`);
  assert.is(new Set(made.map((l) => l.session)).size, 4, 'four mail transactions (Postfix names each one by its instance)');
});

check('socketmap sasl table with real Postfix: an account with smtp: deny is refused at RCPT', async () => {
  await setup();
  assert.match(rcptReplies(await send('tables', { user: 'nosmtp@example.com' }))[0]!, /^554 5\.7\.1 .*Access denied/);
  assert.match(rcptReplies(await send('tables', { user: 'alice@example.com' }))[0]!, /^250 /);
});

check('a certificate shown at EHLO lets its owner\'s SMTP AUTH through Dovecot SASL pass before the password check', async () => {
  await setup();
  const withCert = await send('submission', { user: 'alice@example.com', cert: aliceCert, localAddress: '127.0.0.40' });
  assert.match(withCert.auth!, /^235 /);
  assert.match(rcptReplies(withCert)[0]!, /^250 /);
  const sasl = cl.lines.find((l) => l.event === 'decision' && l.remote === '127.0.0.40' && l.stage === 'before_auth')!;
  assert.is(sasl.reason, 'registered_device');
  const without = await send('submission', { user: 'alice@example.com', localAddress: '127.0.0.41' });
  assert.match(without.auth!, /^535 5\.7\.8 /);
  assert.not.ok(withCidlock.log().includes('passwd-file(alice@example.com,127.0.0.41,'), 'the password was checked for a refused device');
});

check('6. cidlock stopped: fail-open default_action=DUNNO accepts, fail-closed answers 451 4.3.5, tables defer', async () => {
  await setup();
  assert.is(await cl.stop(), 0);
  const open = await send('rcpt', { user: 'alice@example.com', localAddress: '127.0.0.33' });
  assert.match(rcptReplies(open)[0] ?? '', /^250 /, `fail-open: the next restrictions decide; got ${JSON.stringify(open)}`);
  const closed = await send('closed', { user: 'alice@example.com', cert: aliceCert });
  assert.match(rcptReplies(closed)[0]!, /^451 4\.3\.5 .*Policy service unavailable/);
  // The socket went with cidlock: Postfix names it as configured, relative to its queue directory.
  assert.match(pf.log(), /warning: problem talking to server cidlock\/policy/);
  // The socketmap tables have no default_action: a failed lookup defers. REFERENCE.md says 451 4.3.0;
  // Postfix 3.7.11 answers 451 4.3.5 "Server configuration error" for check_sasl_access.
  const table = await send('tables', { user: 'alice@example.com' });
  assert.match(rcptReplies(table)[0] ?? '', /^451 4\.3\.5 .*Server configuration error/, JSON.stringify(table));
});

test.run();
