// End-to-end, issue 10 A1 (Postfix side): a private Postfix 3.7 whose queue directory holds
// cidlock's socket directory, configured with the commands `cidlock config postfix` prints, asks
// cidlock over UNIX sockets from a chrooted smtpd (Debian's default) and an unchrooted one. Any
// other local user is kept out by the file system; a TCP listener keeps out peers not in clients.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { certFingerprints, displayFingerprint } from '../../src/core/fingerprint.js';
import { groupId } from '../../src/net/unix-socket.js';
import { cidlock } from '../helpers/cli.js';
import { smtpSession, type SmtpResult } from '../helpers/mail-clients.js';
import {
  dovecotSaslInQueue, freePort, postfixDirs, postfixScriptFor, preparePostfixQueue, requireTools, runPostfixScript, selfSigned, serverDir,
  startCidlock, startDovecot, startPostfix, type Cidlock, type Dovecot, type Postfix,
} from './harness.js';

const PW = 'pw-for-tests';
const USERS = { 'alice@example.com': PW, 'nosmtp@example.com': PW };
const RULES = `policy:
  mode: enforce
users:
  nosmtp@example.com: { protocols: { smtp: deny } }
`;
const TO = 'bob@example.org';
const NOBODY = 65534;

const ready = requireTools('postfix sockets end-to-end', ['postfix', 'postconf', 'dovecot', 'openssl']) && groupId('postfix') !== null;
// Without the real servers the tests are registered as skipped: uvu counts them, .ci/run fails on them.
const check = ready ? test : test.skip;
let dir = '';
let cl: Cidlock;
let tcp: Cidlock;
let dv: Dovecot;
let pf: Postfix;
let aliceCert: { cert: string; key: string };
let queue = '';

let setupOnce: Promise<void> | undefined;
const setup = () => (setupOnce ??= doSetup());

async function doSetup(): Promise<void> {
  dir = serverDir();
  // As on a host where Postfix is installed: the queue directory exists before cidlock starts,
  // and cidlock makes its own directory in it.
  queue = preparePostfixQueue(dir);
  cl = await startCidlock(dir, RULES, undefined, { queue });
  aliceCert = selfSigned(dir, 'alice-laptop', 'alice-laptop');
  const add = cidlock(['devices', 'add', 'alice@example.com', '--cert', aliceCert.cert, '--config', cl.cfg]);
  if (add.status !== 0) throw new Error(add.stderr);
  await cl.waitFor((l) => l.event === 'registry_reloaded', 'the daemon to see the new device');

  // A second cidlock on TCP for the one case an operator runs it on another host.
  const tcpDir = join(dir, 'tcp');
  mkdirSync(tcpDir);
  const tcpPorts = { policy: await freePort(), socketmap: await freePort() };
  tcp = await startCidlock(tcpDir, RULES, undefined, { ...tcpPorts, clients: ['127.0.0.1/32'] });

  const ports = { chrooted: await freePort(), unchrooted: await freePort() };
  const script = postfixScriptFor(cl.cfg, postfixDirs(dir));
  // Verbatim, except: the service gets a free port instead of 587, and the optional sasl table is
  // enabled by uncommenting its pair of lines, as the script tells the operator to.
  const enableSasl = (s: string) => s.replace(/^#(postconf .*cidlock_sasl.*)$/gm, '$1');
  const onPort = (s: string, port: number) => s.replace(/submission\/inet/g, `${port}/inet`).replace(/'submission inet /g, `'${port} inet `);
  pf = await startPostfix({
    dir,
    // This instance's own services use Dovecot's SASL socket where the generated one does.
    saslPath: 'private/auth',
    mainExtra: `relay_domains = example.net\ncidlock_tcp = check_policy_service { inet:127.0.0.1:${tcpPorts.policy}, timeout=10s, default_action=DUNNO }\n`,
    services: [{ name: 'tcp', options: ['smtpd_tls_ask_ccert=yes', 'smtpd_relay_restrictions=$cidlock_tcp,permit_sasl_authenticated,reject'] }],
    configure: () => {
      runPostfixScript(onPort(enableSasl(script), ports.chrooted), dir);
      // The same entry unchrooted: the socket names must work both ways.
      runPostfixScript(onPort(enableSasl(script), ports.unchrooted).replace(/ - y - - smtpd'/, " - n - - smtpd'"), dir);
    },
    configuredPorts: ports,
  });
  // Dovecot's SASL socket where Debian's setup puts it, inside Postfix's queue directory, so a
  // chrooted smtpd reaches it. This Dovecot does not ask cidlock: every decision below is Postfix's.
  dv = await startDovecot({
    dir,
    users: USERS,
    snippet: dovecotSaslInQueue(queue),
  });
}

test.after(async () => {
  if (!ready || setupOnce === undefined) return;
  pf?.stop();
  dv?.stop();
  await cl?.stop();
  await tcp?.stop();
});

const send = (port: number, o: { user: string; cert?: { cert: string; key: string }; localAddress?: string }): Promise<SmtpResult> =>
  smtpSession(port, {
    auth: { user: o.user, pass: PW },
    ...(o.cert ? { cert: o.cert } : {}),
    ...(o.localAddress ? { localAddress: o.localAddress } : {}),
    transactions: [{ from: o.user, rcpts: [TO] }],
  });
const rcpt = (r: SmtpResult) => r.transactions[0]?.rcpts[0] ?? `(no RCPT: ${JSON.stringify(r)})`;

check('the generated script configures Postfix without a warning, with the socket names a chroot sees', async () => {
  await setup();
  const script = postfixScriptFor(cl.cfg, postfixDirs(dir));
  assert.match(script, `postconf -c '${pf.etc}' -e 'cidlock_policy = check_policy_service { unix:cidlock/policy, timeout=10s, default_action=DUNNO }'`);
  assert.match(script, 'socketmap:unix:cidlock/socketmap:sasl');
  const conf = await new Promise<string>((resolve) => execFile('postconf', ['-c', pf.etc, '-n'], (_e, out, err) => resolve(out + err)));
  assert.not.match(conf, /warning/);
  assert.match(conf, /^cidlock_sasl = check_sasl_access socketmap:unix:cidlock\/socketmap:sasl$/m);
});

check('cidlock made its socket directory in the queue directory: 2750, group postfix; sockets 0660', async () => {
  await setup();
  const d = statSync(join(queue, 'cidlock'));
  assert.is(d.mode & 0o7777, 0o2750);
  assert.is(d.gid, groupId('postfix'));
  for (const name of ['policy', 'socketmap']) {
    const st = statSync(join(queue, 'cidlock', name));
    assert.ok(st.isSocket());
    assert.is(st.mode & 0o777, 0o660);
    assert.is(st.gid, groupId('postfix'));
  }
  assert.is(statSync(queue).mode & 0o777, 0o755, 'the queue directory itself is open, as Postfix makes it: the socket directory is what keeps others out');
});

for (const [service, [withCert, without]] of [['chrooted', ['127.0.0.21', '127.0.0.22']], ['unchrooted', ['127.0.0.23', '127.0.0.24']]] as const) {
  check(`${service} smtpd: the policy service decides over the UNIX socket`, async () => {
    await setup();
    const port = pf.ports[service]!;
    const ok = await send(port, { user: 'alice@example.com', cert: aliceCert, localAddress: withCert });
    assert.match(rcpt(ok), /^250 /);
    const refused = await send(port, { user: 'alice@example.com', localAddress: without });
    assert.match(rcpt(refused), /^554 5\.7\.1 .*Access denied/);
    // cidlock's log reaches this process through a pipe, possibly after Postfix's reply.
    const isRcpt = (l: Record<string, unknown>) => l.event === 'decision' && l.protocol === 'smtp' && l.stage === 'RCPT';
    await cl.waitFor((l) => isRcpt(l) && l.remote === without, 'the refusal to be logged');
    const made = cl.lines.filter((l) => isRcpt(l) && (l.remote === withCert || l.remote === without));
    assert.equal(made.map((l) => `${l.remote}:${l.action}:${l.reason}`), [`${withCert}:allow:registered_device`, `${without}:reject:no_device_proof`]);
    assert.ok(made.every((l) => String(l.via).startsWith('postfix#')));
    assert.match(pf.log(), /postfix\/submission\/smtpd\[\d+\]/, 'the generated service answered');
    // The smtpd that served it stays for the next session: its root shows whether it is chrooted.
    assert.equal(smtpdRoots(port), [service === 'chrooted' ? queue : '/']);
  });

  check(`${service} smtpd: the socketmap sasl table answers over the UNIX socket (refused at MAIL, before the policy's RCPT)`, async () => {
    await setup();
    const r = await smtpSession(pf.ports[service]!, { auth: { user: 'nosmtp@example.com', pass: PW }, transactions: [{ from: 'nosmtp@example.com', rcpts: [TO] }] });
    assert.match(r.transactions[0]!.mail, /^554 5\.7\.1 .*Access denied/);
    const ok = await smtpSession(pf.ports[service]!, { cert: aliceCert, auth: { user: 'alice@example.com', pass: PW }, transactions: [{ from: 'alice@example.com', rcpts: [TO] }] });
    assert.match(ok.transactions[0]!.mail, /^250 /);
  });
}

/** The root directory of each running smtpd of the service on this port (master passes "-n PORT"). */
function smtpdRoots(port: number): string[] {
  const roots = new Set<string>();
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (argv[0] === 'smtpd' && argv[argv.indexOf('-n') + 1] === String(port)) roots.add(readlinkSync(`/proc/${pid}/root`));
    } catch {
      // the process ended meanwhile
    }
  }
  return [...roots];
}

/** connect() from a process running as nobody: the error code, or what cidlock answered. */
function asNobody(path: string, request: string, gid = NOBODY): Promise<string> {
  const code = `const s=require('net').connect(${JSON.stringify(path)},()=>s.write(${JSON.stringify(request)}));let d='';s.on('data',x=>{d+=x;if(d.endsWith('\\n\\n')||d.endsWith(','))s.end()});s.on('end',()=>process.stdout.write('answer:'+d));s.on('error',e=>process.stdout.write(e.code))`;
  return new Promise((resolve) => execFile(process.execPath, ['-e', code], { uid: NOBODY, gid, encoding: 'utf8', timeout: 10_000 }, (_e, out) => resolve(out)));
}

const netstring = (s: string) => `${Buffer.byteLength(s)}:${s},`;

// The review's forged vouch: one policy request claiming alice's certificate from an address.
const FORGED = (fingerprint: string) => [
  'request=smtpd_access_policy', 'protocol_state=RCPT', 'protocol_name=ESMTP', 'sasl_username=alice@example.com',
  'client_address=127.9.9.9', `ccert_pubkey_fingerprint=${fingerprint}`, '', '',
].join('\n');

check('a process running as nobody gets EACCES on both sockets: the forged vouch cannot be sent', async () => {
  await setup();
  const forged = FORGED(displayFingerprint(certFingerprints(readFileSync(aliceCert.cert, 'utf8')).pubkey));
  assert.is(await asNobody(join(queue, 'cidlock', 'policy'), forged), 'EACCES');
  assert.is(await asNobody(join(queue, 'cidlock', 'socketmap'), netstring('sasl alice@example.com')), 'EACCES');
  assert.not.ok(cl.lines.some((l) => l.remote === '127.9.9.9'), 'cidlock never saw the request');
  // The control: the same user in Postfix's group (as smtpd runs) is answered.
  assert.is(await asNobody(join(queue, 'cidlock', 'socketmap'), netstring('sasl nosmtp@example.com'), groupId('postfix')!), `answer:${netstring('OK REJECT 5.7.1 Access denied')}`);
});

check('TCP with clients: Postfix (127.0.0.1) is served; a peer outside the list is closed before anything is read, and logged', async () => {
  await setup();
  const refused = await send(pf.ports.tcp!, { user: 'alice@example.com', localAddress: '127.0.0.25' });
  assert.match(rcpt(refused), /^554 5\.7\.1 /, 'decided by the TCP cidlock');
  await tcp.waitFor((l) => l.event === 'decision' && l.remote === '127.0.0.25' && l.action === 'reject', 'the TCP cidlock\'s decision');
  const policyPort = Number(String(await tcp.address('postfix')).split(':').pop());
  const outcome = await new Promise<{ data: string; closed: boolean }>((resolve) => {
    let data = '';
    const s = connect({ port: policyPort, host: '127.0.0.1', localAddress: '127.0.0.9' }, () => s.write(FORGED('00:11')));
    s.on('data', (d) => (data += d));
    s.on('error', () => resolve({ data, closed: true }));
    s.on('close', () => resolve({ data, closed: true }));
  });
  assert.equal(outcome, { data: '', closed: true });
  const line = await tcp.waitFor((l) => l.event === 'client_refused', 'the refusal to be logged');
  assert.equal([line.listener, line.last_peer], ['postfix', '127.0.0.9']);
  assert.not.ok(tcp.lines.some((l) => l.remote === '127.9.9.9'), 'the request was never read');
});

test.run();
