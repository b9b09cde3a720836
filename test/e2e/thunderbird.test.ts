// End-to-end, issue 11: real Thunderbird (Debian's package, headless) against a private Dovecot 2.3
// running cidlock's CLIENTID login plugin, configured from `cidlock config dovecot --clientid`, and
// a real `cidlock serve`. Thunderbird sends `CLIENTID UUID <mail.server.serverN.clientid>` after
// STARTTLS (or on implicit TLS) when the server advertises it and clientidEnabled is true. Each
// test checks that Thunderbird itself made the session: Dovecot's login line, the ID Thunderbird
// sends after login (imap_id_log) and cidlock's decision carry the same session id, and
// Thunderbird's own IMAP log shows the CLIENTID exchange.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cidlock } from '../helpers/cli.js';
import { requirePluginTools } from '../helpers/clientid-plugin.js';
import type { LogLine } from '../helpers/daemon.js';
import { converse } from '../helpers/mail-clients.js';
import { installedThunderbird, startThunderbird, THUNDERBIRD_INSTALL, thunderbirdAvailable, type ThunderbirdRun } from '../helpers/thunderbird.js';
import { imapLoginSessions, sessionLines, startClientidDovecot } from './clientid-servers.js';
import { requireTools, serverDir, startCidlock, startPostfix, type Cidlock, type Dovecot, type Postfix } from './harness.js';

const FAILED = 'NO [AUTHENTICATIONFAILED] Authentication failed.';
const USERS = { 'lena@example.com': 'lena-pw', 'alice@example.com': 'alice-pw', 'otto@example.com': 'otto-pw' };
const RULES = `policy: { mode: monitor }
users:
  lena@example.com: { mode: learn, learn: { max_devices: 2 } }
  alice@example.com: { mode: enforce }
  otto@example.com: { mode: enforce }
`;
/** alice's Thunderbird: registered with the CLI before it first connects. */
const ALICE_TB = randomUUID();

function thunderbirdReady(): boolean {
  if (thunderbirdAvailable()) return true;
  process.stderr.write(`\n*** SKIPPED: e2e "thunderbird": no Thunderbird in ${THUNDERBIRD_INSTALL}; .ci/run installs it (apt-get install thunderbird) ***\n`);
  return false;
}
const ready = requireTools('thunderbird end-to-end', ['dovecot', 'openssl', 'postfix', 'swaks']) && requirePluginTools('thunderbird end-to-end') && thunderbirdReady();
const check = ready ? test : test.skip;

let dir = '';
let cl: Cidlock;
let dv: Dovecot;
let pf: Postfix;
const runs: ThunderbirdRun[] = [];

let setupOnce: Promise<void> | undefined;
const setup = () => (setupOnce ??= (async () => {
  dir = serverDir();
  cl = await startCidlock(dir, RULES);
  const add = cidlock(['devices', 'add', 'alice@example.com', `UUID ${ALICE_TB}`, '--label', 'thunderbird', '--config', cl.cfg]);
  if (add.status !== 0) throw new Error(add.stderr);
  await cl.waitFor((l) => l.event === 'registry_reloaded', 'the daemon to see the new device');
  dv = await startClientidDovecot({ dir, cfg: cl.cfg, users: USERS });
  // SMTP AUTH through Dovecot SASL, which asks cidlock (protocol smtp: cert or vouch).
  pf = await startPostfix({ dir, saslPath: dv.authSocket });
})());

// With CIDLOCK_E2E_LOG=1, how long each test took.
let testStart = 0;
test.before.each(() => { testStart = Date.now(); });
test.after.each((ctx) => {
  if (process.env.CIDLOCK_E2E_LOG === '1') process.stdout.write(`\n[thunderbird time] ${(ctx as { __test__?: string }).__test__}: ${Date.now() - testStart} ms\n`);
});

test.after(async () => {
  for (const r of runs) await r.stop();
  if (setupOnce === undefined) return;
  pf?.stop();
  dv?.stop();
  await cl?.stop();
});

/** With CIDLOCK_E2E_LOG=1, the servers' log lines about Thunderbird's sessions are printed (the issue's evidence). */
const record = (text: string) => { if (process.env.CIDLOCK_E2E_LOG === '1') process.stdout.write(text); };

async function until(pred: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 200));
  }
  return true;
}

const decisions = (user: string, protocol = 'imap') => cl.lines.filter((l) => l.event === 'decision' && l.user === user && l.protocol === protocol);
const since = (n: number) => cl.lines.slice(n);

/** Starts Thunderbird for one account of the test Dovecot; stopped by the test or at the end. */
function thunderbird(o: { user: string; clientid?: string; clientidEnabled?: boolean; security: 'starttls' | 'ssl' }): ThunderbirdRun {
  const run = startThunderbird({
    host: '127.0.0.1',
    port: o.security === 'ssl' ? dv.imapsPort : dv.imapPort,
    security: o.security,
    user: o.user,
    pass: USERS[o.user as keyof typeof USERS],
    ...(o.clientidEnabled !== undefined ? { clientidEnabled: o.clientidEnabled } : {}),
    ...(o.clientid ? { clientid: o.clientid } : {}),
    smtp: { host: '127.0.0.1', port: pf.smtpPort },
  });
  runs.push(run);
  return run;
}

/**
 * What ties a session to Thunderbird: Dovecot logged its login and the ID Thunderbird sent after
 * it, and cidlock decided it; all three name the same session.
 */
function thunderbirdSession(user: string, after: number): { session: string; idLine: string; loginLine: string; decision: LogLine } {
  const log = dv.log();
  const tbVersion = installedThunderbird()!.version;
  for (const session of imapLoginSessions(log, user)) {
    const lines = sessionLines(log, session);
    const idLine = lines.find((l) => / ID sent: name=Thunderbird, version=/.test(l));
    const decision = since(after).find((l) => l.event === 'decision' && l.session === session && l.stage === 'before_auth');
    if (idLine !== undefined && decision !== undefined) {
      assert.ok(idLine.includes(`version=${tbVersion}`), `the ID names another version than the installed ${tbVersion}: ${idLine}`);
      return { session, idLine, loginLine: lines.find((l) => l.includes('imap-login: Info: Login:'))!, decision };
    }
  }
  throw new Error(`no Thunderbird session for ${user} in Dovecot's log:\n${log.split('\n').filter((l) => /imap-login: Info|ID sent/.test(l)).join('\n')}`);
}

/** Dovecot logged a login for user, and the ID Thunderbird sends after it, past offset `from` of its log. */
const hasThunderbirdId = (user: string, from = 0) => () => {
  const log = dv.log().slice(from);
  return imapLoginSessions(log, user).some((s) => sessionLines(log, s).some((l) => / ID sent: name=Thunderbird/.test(l)));
};

/** Thunderbird's IMAP log: CLIENTID advertised after TLS, the command sent (its line masked), answered OK, then the login. */
function assertClientidInMozLog(run: ThunderbirdRun): string[] {
  const log = run.mozLog().split('\n');
  const sent = log.filter((l) => /SendData: \d+ CLIENTID|SendData: Logging suppressed/.test(l));
  const ok = log.filter((l) => /CreateNewLineFromSocket: \d+ OK CLIENTID completed/.test(l));
  assert.ok(log.some((l) => /CreateNewLineFromSocket: .*CAPABILITY .*CLIENTID/.test(l)), 'Thunderbird never saw CLIENTID advertised');
  assert.ok(ok.length > 0, `no "OK CLIENTID completed" in Thunderbird's IMAP log:\n${log.filter((l) => /SendData|CreateNewLine/.test(l)).slice(0, 40).join('\n')}`);
  return [...sent.slice(0, 2), ...ok.slice(0, 1)];
}

check('learn: Thunderbird\'s first check of mail registers its CLIENTID, once, from the CLIENTID command', async () => {
  await setup();
  const start = cl.lines.length;
  const tb = thunderbird({ user: 'lena@example.com', clientidEnabled: true, security: 'starttls' });
  await cl.waitFor((l) => l.event === 'device_registered' && l.user === 'lena@example.com', 'the learned device', 90_000);
  await tb.waitFor(hasThunderbirdId('lena@example.com'), 'Thunderbird\'s ID after login');
  // Thunderbird opens two connections at start-up (folder discovery and INBOX), both with the new
  // CID: let the second log in too before counting devices.
  await until(() => imapLoginSessions(dv.log(), 'lena@example.com').length >= 2, 10_000);
  const s = thunderbirdSession('lena@example.com', start);
  await tb.stop();
  const lenaDecisions = decisions('lena@example.com').filter((l) => l.stage === 'before_auth');
  assert.ok(lenaDecisions.every((l) => l.action === 'allow' && l.cid_via === 'clientid'), JSON.stringify(lenaDecisions));
  record(`\n[thunderbird learn] Thunderbird's connections decided: ${lenaDecisions.length}; Dovecot logins: ${imapLoginSessions(dv.log(), 'lena@example.com').length}\n`);
  assert.is(s.decision.action, 'allow');
  assert.is(s.decision.cid_via, 'clientid');
  assert.is(s.decision.tls, true);
  const list = cidlock(['devices', 'list', 'lena@example.com', '--json', '--config', cl.cfg]);
  assert.is(list.status, 0, list.stderr);
  const devices = list.stdout.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.is(devices.length, 1, `Thunderbird's parallel connections made ${devices.length} devices: ${list.stdout}`);
  assert.is(devices[0]!.source, 'learn');
  assert.is(devices[0]!.type, 'UUID');
  // The registered CID is Thunderbird's: the CLI finds it by its token.
  const explain = cidlock(['test', '--config', cl.cfg, '--user', 'lena@example.com', '--protocol', 'imap', '--ip', '127.0.0.9', '--tls', '--clientid', `UUID ${tb.clientid}`, '--json']);
  assert.is(explain.status, 0, explain.stderr);
  assert.is((JSON.parse(explain.stdout) as LogLine).reason, 'registered_device', explain.stdout);
  record(`\n[thunderbird learn] ${s.loginLine}\n[thunderbird learn] ${s.idLine}\n[thunderbird learn] ${JSON.stringify(s.decision)}\n[thunderbird learn] ${JSON.stringify(cl.lines.find((l) => l.event === 'device_registered' && l.user === 'lena@example.com'))}\n`);
  for (const l of assertClientidInMozLog(tb)) record(`[thunderbird learn] moz: ${l}\n`);
  record(`[thunderbird learn] the CLIENTID token appears in MOZ_LOG: ${tb.mozLog().includes(tb.clientid)}\n`);
});

check('enforce: Thunderbird with its registered CLIENTID gets in (STARTTLS and implicit TLS)', async () => {
  await setup();
  for (const security of ['starttls', 'ssl'] as const) {
    const start = cl.lines.length;
    const logBefore = dv.log().length;
    const tb = thunderbird({ user: 'alice@example.com', clientid: ALICE_TB, clientidEnabled: true, security });
    await tb.waitFor(hasThunderbirdId('alice@example.com', logBefore), `alice's Thunderbird (${security}) to log in`);
    await tb.stop();
    const s = thunderbirdSession('alice@example.com', start);
    assert.is(s.decision.action, 'allow');
    assert.is(s.decision.mode, 'enforce');
    assert.is(s.decision.reason, 'registered_device');
    assert.is(s.decision.cid_via, 'clientid');
    assert.ok(!s.decision.would_reject);
    // Every decision for alice in this run allowed: no connection of Thunderbird's was refused.
    assert.equal(since(start).filter((l) => l.event === 'decision' && l.user === 'alice@example.com' && l.action !== 'allow'), []);
    assertClientidInMozLog(tb);
    // The token reached cidlock through the plugin's forward fields, not the IMAP ID.
    const request = sessionLines(dv.log(), s.session).find((l) => l.includes('Policy server request JSON:') && l.includes('command=allow') === false);
    assert.ok(request?.includes(`"fwd_clientid":"${ALICE_TB}","fwd_clientid_type":"UUID"`), `no forward fields in ${request}`);
    assert.ok(request?.includes('"device_id":""'), `Thunderbird sent an ID before login: ${request}`);
    record(`\n[thunderbird enforce ${security}] ${request}\n[thunderbird enforce ${security}] ${s.loginLine}\n[thunderbird enforce ${security}] ${s.idLine}\n[thunderbird enforce ${security}] ${JSON.stringify(s.decision)}\n`);
  }
});

check('enforce: an account without its own clientidEnabled sends its CID when policies.json turns the default on (the README\'s organisation setting)', async () => {
  await setup();
  const start = cl.lines.length;
  const logBefore = dv.log().length;
  const tb = thunderbird({ user: 'alice@example.com', clientid: ALICE_TB, security: 'starttls' });
  assert.not.match(readFileSync(join(tb.profile, 'user.js'), 'utf8'), /clientidEnabled/);
  await tb.waitFor(hasThunderbirdId('alice@example.com', logBefore), 'alice\'s Thunderbird to log in');
  await tb.stop();
  const s = thunderbirdSession('alice@example.com', start);
  assert.is(s.decision.action, 'allow');
  assert.is(s.decision.reason, 'registered_device');
  assert.is(s.decision.cid_via, 'clientid');
  assertClientidInMozLog(tb);
});

check('after Thunderbird\'s IMAP login, SMTP AUTH from its address is vouched for; from another address refused', async () => {
  await setup();
  // Thunderbird's login of test 2 vouches for alice at 127.0.0.1; make sure one happened.
  const proven = () => decisions('alice@example.com').filter((l) => l.remote === '127.0.0.1' && l.reason === 'registered_device' && l.cid_via === 'clientid').pop();
  if (proven() === undefined) {
    const tb = thunderbird({ user: 'alice@example.com', clientid: ALICE_TB, clientidEnabled: true, security: 'starttls' });
    await tb.waitFor(hasThunderbirdId('alice@example.com'), 'alice\'s Thunderbird to log in');
    await tb.stop();
  }
  const tbDevice = (proven()!.evidence as Array<Record<string, unknown>>)[0]!.device;
  // Asynchronously: cidlock's log lines are read on this event loop while swaks runs.
  const swaks = (local: string) => new Promise<{ status: number; stdout: string }>((resolve) => {
    execFile('swaks', [
      '--server', '127.0.0.1', '--port', String(pf.smtpPort), '--local-interface', local, '--tls',
      '--auth', 'PLAIN', '--auth-user', 'alice@example.com', '--auth-password', USERS['alice@example.com'], '--quit-after', 'AUTH',
      '--ehlo', 'laptop.example.com', '--timeout', '30',
    ], { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => resolve({ status: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout: stdout + stderr }));
  });
  const smtpDecision = (remote: string) => cl.waitFor((l) => l.event === 'decision' && l.user === 'alice@example.com' && l.protocol === 'smtp' && l.remote === remote && l.stage === 'before_auth', `the SMTP decision for ${remote}`);
  const same = await swaks('127.0.0.1');
  assert.is(same.status, 0, same.stdout);
  assert.match(same.stdout, /<~\s+235 /);
  const other = await swaks('127.0.5.7');
  assert.is.not(other.status, 0);
  assert.match(other.stdout, /<~\*\s+535 5\.7\.8 Error: authentication failed/);
  const smtp = [await smtpDecision('127.0.0.1'), await smtpDecision('127.0.5.7')];
  assert.equal(smtp.map((l) => `${l.remote} ${l.action} ${l.reason}`), ['127.0.0.1 allow vouched', '127.0.5.7 reject no_device_proof']);
  // The vouch is Thunderbird's device, proven by its CLIENTID on 127.0.0.1.
  const vouch = (smtp[0]!.evidence as Array<Record<string, unknown>>).find((e) => e.kind === 'vouch')!;
  assert.is(vouch.device, tbDevice, JSON.stringify(smtp[0]));
  record(`\n[thunderbird smtp] ${JSON.stringify(smtp[0])}\n[thunderbird smtp] ${JSON.stringify(smtp[1])}\n`);
});

check('enforce: another CID for the same account gets exactly the wrong-password reply', async () => {
  await setup();
  // From addresses of their own: Dovecot's auth penalty would delay later logins from 127.0.0.1
  // (Thunderbird's) after these failures.
  const login = async (o: { cid?: string; pass: string; from: string }) => {
    const c = await converse(dv.imapPort, { localAddress: o.from });
    try {
      await c.readLine();
      c.send('s1 STARTTLS');
      await c.readUntil((l) => l.startsWith('s1 '));
      await c.startTls();
      if (o.cid) {
        c.send(`c1 CLIENTID ${o.cid}`);
        const r = await c.readUntil((l) => l.startsWith('c1 '));
        assert.is(r[r.length - 1], 'c1 OK CLIENTID completed.');
      }
      c.send(`l1 LOGIN "alice@example.com" "${o.pass}"`);
      const r = await c.readUntil((l) => l.startsWith('l1 '));
      return r[r.length - 1]!.slice(3);
    } finally {
      c.close();
    }
  };
  const start = cl.lines.length;
  const stranger = await login({ cid: `UUID ${randomUUID()}`, pass: USERS['alice@example.com'], from: '127.0.6.1' });
  const wrongPassword = await login({ cid: `UUID ${ALICE_TB}`, pass: 'not-the-password', from: '127.0.6.2' });
  assert.is(stranger, FAILED);
  assert.is(stranger, wrongPassword);
  const d = since(start).find((l) => l.event === 'decision' && l.user === 'alice@example.com' && l.remote === '127.0.6.1')!;
  assert.is(d.action, 'reject');
  assert.is(d.reason, 'unknown_device');
  assert.is(d.cid_via, 'clientid');
});

check('enforce: Thunderbird with clientidEnabled = false is refused (it sends no CLIENTID)', async () => {
  await setup();
  const start = cl.lines.length;
  const tb = thunderbird({ user: 'otto@example.com', clientidEnabled: false, security: 'starttls' });
  const d = await cl.waitFor((l) => l.event === 'decision' && l.user === 'otto@example.com' && l.action === 'reject', 'otto\'s refusal', 90_000);
  // Thunderbird gets the reply after Dovecot's auth failure delay (2 s).
  await tb.waitFor(() => /NO \[AUTHENTICATIONFAILED\]/.test(tb.mozLog()), 'Thunderbird to get the refusal', 20_000);
  await tb.stop();
  await until(() => /\(auth failed, /.test(sessionLines(dv.log(), String(d.session)).join('\n')), 10_000);
  assert.is(d.reason, 'no_device_proof');
  assert.is(d.mode, 'enforce');
  assert.ok(!since(start).some((l) => l.event === 'decision' && l.user === 'otto@example.com' && l.action === 'allow'), 'a connection of otto\'s was allowed');
  assert.equal(imapLoginSessions(dv.log(), 'otto@example.com'), [], 'Dovecot logged a login for otto');
  const failure = sessionLines(dv.log(), String(d.session));
  const refusal = failure.filter((l) => /Authentication failure due to policy server refusal|\(auth failed, \d+ attempts/.test(l));
  assert.ok(refusal.some((l) => /policy server refusal/.test(l)), `Dovecot logged no policy refusal for session ${d.session}:\n${failure.join('\n')}`);
  assert.ok(refusal.some((l) => /imap-login: Info: Disconnected: .*\(auth failed, \d+ attempts/.test(l)), `imap-login logged no failed attempt for session ${d.session}:\n${failure.join('\n')}`);
  // The plugin forwarded nothing: Thunderbird sent no CLIENTID.
  assert.ok(failure.some((l) => l.includes('Policy server request JSON:') && l.includes('"fwd_clientid":""')), 'the policy request carried a CLIENTID');
  // Thunderbird saw CLIENTID advertised and still did not send it: the pref is off.
  const moz = tb.mozLog();
  assert.match(moz, /CAPABILITY .*CLIENTID/);
  assert.not.match(moz, /OK CLIENTID completed/);
  assert.match(moz, /NO \[AUTHENTICATIONFAILED\] Authentication failed\./, moz.split('\n').filter((l) => /SendData|CreateNewLine/.test(l)).join('\n'));
  record(`\n[thunderbird clientidEnabled=false] ${JSON.stringify(d)}\n${refusal.map((l) => `[thunderbird clientidEnabled=false] ${l}`).join('\n')}\n`);
});

test.run();
