// End-to-end: what a mail client really reads when cidlock refuses or delays it, captured from
// real Dovecot 2.3 (IMAP, POP3, submission, ManageSieve, SASL for Postfix) and Postfix 3.7 (the
// policy service at every SMTP stage), and compared with clientReply(), which `cidlock test`
// prints as "client sees". Each attempt comes from its own 127.0.0.x address, so the attack
// counters of one never touch another.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { AS_WRONG_PASSWORD, clientReply } from '../../src/cli/client-reply.js';
import type { Decision } from '../../src/core/decide.js';
import type { AuthRequest } from '../../src/core/request.js';
import type { LogLine } from '../helpers/daemon.js';
import { converse } from '../helpers/mail-clients.js';
import { dovecotSnippetFor, freePort, requireTools, serverDir, startCidlock, startDovecot, startPostfix, type Cidlock, type Dovecot, type Postfix } from './harness.js';

const PW = 'right-password';
const MESSAGE = 'Unknown device: register it at "https://example.com/devices"';
const USERS = { 'alice@example.com': PW, 'mia@example.com': PW, 'dee@example.com': PW };
const DELAY_S = 2;
// alice is locked with no device and no message; mia the same with a message; cidlock lets dee
// in on every protocol, so only the attack limit (one failure from an address, then a delay) applies.
const RULES = `policy:
  mode: enforce
users:
  mia@example.com: { message: '${MESSAGE}' }
  dee@example.com: { protocols: { imap: allow, pop3: allow, submission: allow, sieve: allow, smtp: allow } }
limits:
  - { key: address, failures: 1, window: 10m, then: delay ${DELAY_S}s }
`;
const TO = 'bob@example.net';
const MANAGESIEVE = '/usr/lib/dovecot/managesieve-login';

const tools = requireTools('client replies end-to-end', ['dovecot', 'postfix', 'openssl']);
const sieveInstalled = existsSync(MANAGESIEVE);
if (!sieveInstalled) process.stderr.write(`\n*** SKIPPED: e2e "client replies": ${MANAGESIEVE} not found; .ci/run installs it (apt-get install dovecot-managesieved) ***\n`);
// Without the real servers the tests are registered as skipped: uvu counts them, .ci/run fails on them.
const check = tools && sieveInstalled ? test : test.skip;

let cl: Cidlock;
let dv: Dovecot;
let plain: Dovecot;
let pf: Postfix;
let ports: { submission: number; sieve: number };
let nextHost = 100;
/** A fresh client address for each attempt. */
const host = () => `127.0.0.${nextHost++}`;

let setupOnce: Promise<void> | undefined;
const setup = () => (setupOnce ??= doSetup());

async function doSetup(): Promise<void> {
  const dir = serverDir();
  const cidlockPorts = { policy: await freePort(), socketmap: await freePort() };
  cl = await startCidlock(dir, RULES, undefined, cidlockPorts);
  ports = { submission: await freePort(), sieve: await freePort() };
  // Dovecot's own submission and ManageSieve services, asking cidlock like IMAP and POP3 do. No
  // failure delay: it changes when a reply comes, not what it says, and would cost 2 s per attempt.
  const services = `
auth_failure_delay = 0
protocols = imap pop3 submission sieve
submission_relay_host = 127.0.0.1
submission_relay_port = 9
service submission-login {
  inet_listener submission {
    port = ${ports.submission}
  }
}
service managesieve-login {
  inet_listener sieve {
    port = ${ports.sieve}
  }
}
`;
  dv = await startDovecot({ dir, users: USERS, snippet: `${dovecotSnippetFor(cl.cfg)}\n${services}`, name: 'dovecot-cidlock' });
  // SASL that does not ask cidlock, so SMTP sessions authenticate and reach the policy service.
  plain = await startDovecot({ dir, users: USERS, snippet: '', name: 'dovecot-plain' });
  const viaPlain = (...o: string[]) => [`smtpd_sasl_path=${plain.authSocket}`, ...o];
  pf = await startPostfix({
    dir,
    saslPath: dv.authSocket,
    mainExtra: `relay_domains = example.net\ncidlock_policy = check_policy_service inet:127.0.0.1:${cidlockPorts.policy}\n`,
    services: [
      { name: 'sasl' }, // SMTP AUTH through the Dovecot that asks cidlock
      { name: 'RCPT', options: viaPlain('smtpd_relay_restrictions=$cidlock_policy,permit_sasl_authenticated,reject') },
      { name: 'MAIL', options: viaPlain('smtpd_delay_reject=no', 'smtpd_sender_restrictions=$cidlock_policy,permit') },
      { name: 'EHLO', options: viaPlain('smtpd_delay_reject=no', 'smtpd_helo_restrictions=$cidlock_policy,permit') },
      { name: 'DATA', options: viaPlain('smtpd_data_restrictions=$cidlock_policy,permit') },
      { name: 'END-OF-MESSAGE', options: viaPlain('smtpd_end_of_data_restrictions=$cidlock_policy,permit') },
    ],
  });
}

test.after(async () => {
  if (setupOnce === undefined) return;
  pf?.stop();
  dv?.stop();
  plain?.stop();
  await cl?.stop();
});

/** Reads replies until one matches `end`; returns the last line and how long it took. */
type Session = { send(line: string, end?: RegExp): Promise<{ line: string; ms: number }>; startTls(): Promise<void>; close(): void };

async function session(port: number, localAddress: string, greeting: RegExp): Promise<Session> {
  const c = await converse(port, { localAddress });
  await c.readUntil((l) => greeting.test(l));
  return {
    async send(line, end = /^\d{3} /) {
      const t0 = Date.now();
      c.send(line);
      const lines = await c.readUntil((l) => end.test(l));
      return { line: lines[lines.length - 1]!, ms: Date.now() - t0 };
    },
    startTls: () => c.startTls(),
    close: () => c.close(),
  };
}

const plainAuth = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString('base64');

/** One login on a Dovecot protocol; the line the client reads back, and how long it took. */
async function dovecotLogin(protocol: string, user: string, from: string, pass = PW): Promise<{ line: string; ms: number }> {
  switch (protocol) {
    case 'imap': {
      const s = await session(dv.imapPort, from, /^\* OK/);
      const r = await s.send(`l1 LOGIN "${user}" "${pass}"`, /^l1 /);
      s.close();
      return { line: r.line.slice(3), ms: r.ms };
    }
    case 'pop3': {
      const s = await session(dv.pop3Port, from, /^\+OK/);
      await s.send(`USER ${user}`, /^[+-]/);
      const r = await s.send(`PASS ${pass}`, /^[+-]/);
      s.close();
      return r;
    }
    case 'submission': {
      const s = await session(ports.submission, from, /^220 /);
      await s.send('EHLO client.example');
      const r = await s.send(`AUTH PLAIN ${plainAuth(user, pass)}`);
      s.close();
      return r;
    }
    case 'sieve': {
      const s = await session(ports.sieve, from, /^OK /);
      const r = await s.send(`AUTHENTICATE "PLAIN" "${plainAuth(user, pass)}"`, /^(OK|NO|BYE)/);
      s.close();
      return r;
    }
    default: { // smtp: AUTH in Postfix, through Dovecot SASL
      const s = await session(pf.ports.sasl!, from, /^220 /);
      await s.send('EHLO client.example');
      await s.send('STARTTLS');
      await s.startTls();
      const r = await s.send(`AUTH PLAIN ${plainAuth(user, pass)}`);
      s.close();
      return r;
    }
  }
}

/** An authenticated Postfix session on a service whose policy check sits at `stage`; every reply line. */
async function smtpThrough(service: string, user: string, from: string): Promise<string[]> {
  const c = await converse(pf.ports[service]!, { localAddress: from });
  const reply = async () => (await c.readUntil((l) => /^\d{3} /.test(l))).pop()!;
  const out: string[] = [];
  const say = async (line: string) => { c.send(line); const r = await reply(); out.push(r); return r; };
  try {
    await reply();
    await say('EHLO client.example');
    await say('STARTTLS');
    await c.startTls();
    await say('EHLO client.example');
    if (!(await say(`AUTH PLAIN ${plainAuth(user, PW)}`)).startsWith('235')) return out;
    if (service === 'EHLO') await say('EHLO again.example'); // after AUTH, sasl_username is known at EHLO too
    if (!(await say(`MAIL FROM:<${user}>`)).startsWith('250')) return out;
    if (!(await say(`RCPT TO:<${TO}>`)).startsWith('250')) return out;
    if (!(await say('DATA')).startsWith('354')) return out;
    await say('Subject: test\r\n\r\nhello\r\n.');
    return out;
  } finally {
    c.close();
  }
}

/** The decision cidlock logged for this address and protocol. */
async function decisionFrom(remote: string, protocol: string): Promise<LogLine> {
  return cl.waitFor((l) => l.event === 'decision' && l.remote === remote && l.protocol === protocol, `a ${protocol} decision for ${remote}`);
}

/** clientReply for a logged decision; the message is not logged, so the test says which one the rules give. */
function predicted(line: LogLine, message: string): string {
  const req: AuthRequest = { protocol: String(line.protocol), user: String(line.user), remote: String(line.remote), tls: line.tls === true, certFingerprints: [], stage: String(line.stage) };
  const d = {
    action: line.action, mode: line.mode, would_reject: line.would_reject, reason: line.reason, rule: line.rule, layer: line.layer, why: line.why,
    evidence: [], protocol: { name: 'other', rule: [], from: '' }, message, ...(typeof line.seconds === 'number' ? { seconds: line.seconds } : {}),
  } as unknown as Decision;
  return clientReply(req, d);
}

const DOVECOT_PROTOCOLS = ['imap', 'pop3', 'submission', 'sieve', 'smtp'] as const;

check('a refusal without a message: every Dovecot path sends exactly its wrong-password reply, as "client sees" says', async () => {
  await setup();
  for (const protocol of DOVECOT_PROTOCOLS) {
    const from = host();
    const refused = await dovecotLogin(protocol, 'alice@example.com', from);
    const d = await decisionFrom(from, protocol);
    assert.is(d.action, 'reject');
    assert.is(d.stage, 'before_auth');
    assert.is(`${refused.line}${AS_WRONG_PASSWORD}`, predicted(d, ''), protocol);
    const wrongPassword = await dovecotLogin(protocol, 'dee@example.com', host(), 'wrong');
    assert.is(wrongPassword.line, refused.line, `${protocol}: a refusal must read like a wrong password`);
  }
});

check('a refusal with a message: every Dovecot path shows the message where "client sees" says', async () => {
  await setup();
  const seen: string[] = [];
  for (const protocol of DOVECOT_PROTOCOLS) {
    const from = host();
    const refused = await dovecotLogin(protocol, 'mia@example.com', from);
    assert.is(refused.line, predicted(await decisionFrom(from, protocol), MESSAGE), protocol);
    seen.push(refused.line);
  }
  // The strings as captured, so a change in either server shows up here first.
  assert.equal(seen, [
    `NO [ALERT] ${MESSAGE}`,
    `-ERR [AUTH] ${MESSAGE}`,
    `535 5.7.8 ${MESSAGE}`,
    'NO "Unknown device: register it at \\"https://example.com/devices\\""',
    `535 5.7.8 Error: authentication failed: ${MESSAGE}`,
  ]);
});

check('the policy service refuses at EHLO, MAIL, RCPT, DATA and END-OF-MESSAGE with the 554 5.7.1 reply "client sees" gives', async () => {
  await setup();
  for (const [user, message] of [['alice@example.com', ''], ['mia@example.com', MESSAGE]] as const) {
    for (const stage of ['EHLO', 'MAIL', 'RCPT', 'DATA', 'END-OF-MESSAGE']) {
      const from = host();
      const lines = await smtpThrough(stage, user, from);
      const refusal = lines.find((l) => l.startsWith('554 5.7.1 '));
      assert.ok(refusal !== undefined, `${stage}: ${JSON.stringify(lines)}`);
      const d = await decisionFrom(from, 'smtp');
      assert.is(d.stage, stage);
      // The reply names what was checked (<bob@example.net>); "client sees" names it generically.
      const real = refusal!.replace(`<${TO}>`, '<recipient>').replace(`<${user}>`, '<sender>').replace('<again.example>', '<helo name>');
      assert.is(real, predicted(d, message), `${stage} ${user}`);
    }
  }
});

check('a delay: Dovecot and Postfix send the usual reply, the delay later, as "client sees" says', async () => {
  await setup();
  // One failure from an address (a wrong password) puts it over the limit: its next logins are delayed.
  // (A guess repeated by the same user counts once: each wrong password here is new.)
  const imapFrom = host();
  await dovecotLogin('imap', 'dee@example.com', imapFrom, 'wrong-before-imap');
  await cl.waitFor((l) => l.event === 'limit_triggered' && l.subject === imapFrom, 'the limit on the address');
  const slowed = await dovecotLogin('imap', 'dee@example.com', imapFrom);
  assert.match(slowed.line, /^OK .*Logged in/);
  assert.ok(slowed.ms >= DELAY_S * 1000 - 100, `answered after ${slowed.ms} ms`);
  const d = cl.lines.filter((l) => l.event === 'decision' && l.remote === imapFrom).pop()!;
  assert.is(d.action, 'delay');
  assert.is(predicted(d, ''), `the usual reply, ${DELAY_S} s later: Dovecot waits before it checks the password (a wrong one then gets NO [AUTHENTICATIONFAILED] Authentication failed.)`);

  const smtpFrom = host();
  await dovecotLogin('imap', 'dee@example.com', smtpFrom, 'wrong-before-smtp');
  await cl.waitFor((l) => l.event === 'limit_triggered' && l.subject === smtpFrom, 'the limit on the address');
  const t0 = Date.now();
  const lines = await smtpThrough('RCPT', 'dee@example.com', smtpFrom);
  assert.is(lines.find((l) => l.startsWith('250 2.1.5')), '250 2.1.5 Ok', JSON.stringify(lines));
  assert.ok(Date.now() - t0 >= DELAY_S * 1000 - 100);
  const p = await decisionFrom(smtpFrom, 'smtp');
  assert.is(p.action, 'delay');
  assert.is(predicted(p, ''), `the reply to RCPT ${DELAY_S} s later; then the restrictions after cidlock's decide`);
});

test.run();
