import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';
import { cidlock } from '../helpers/cli.js';
import { startServe, type ServeProcess } from '../helpers/daemon.js';
import { tempDir } from '../helpers/tmp.js';

const SBIN = ['/usr/sbin', '/usr/bin', '/sbin', '/bin'];

function which(name: string): string | null {
  for (const d of [...(process.env.PATH ?? '').split(':'), ...SBIN]) {
    if (d && existsSync(join(d, name))) return join(d, name);
  }
  return null;
}

/**
 * End-to-end tests need the real servers. Without them the tests are registered as skipped
 * (`ready ? test : test.skip`): uvu's summary shows them, and .ci/run counts a skip as a failure.
 */
export function requireTools(test: string, names: string[]): boolean {
  const missing = names.filter((n) => which(n) === null);
  if (missing.length === 0) return true;
  const msg = `e2e "${test}": ${missing.join(', ')} not found; .ci/run installs them (its PACKAGES list, with apt-get)`;
  process.stderr.write(`\n*** SKIPPED: ${msg} ***\n`);
  return false;
}

/**
 * Servers that daemonize keep inherited pipes open, so their output goes to a file: waiting on a
 * pipe would wait for the daemon to exit.
 */
function runDaemonStart(cmd: string, args: string[], outFile: string): { status: number | null; output: string } {
  const fd = openSync(outFile, 'w');
  try {
    const r = spawnSync(cmd, args, { stdio: ['ignore', fd, fd], timeout: 30_000 });
    return { status: r.status, output: readFileSync(outFile, 'utf8') };
  } finally {
    closeSync(fd);
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export async function waitForPort(port: number, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A test folder the servers' unprivileged users can read (mktemp makes 0700 folders). */
export function serverDir(): string {
  const d = tempDir('cidlock-e2e-');
  chmodSync(d, 0o755);
  return d;
}

export function selfSigned(dir: string, name: string, cn: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${cn}`], { stdio: 'ignore' });
  chmodSync(key, 0o644);
  return { cert, key };
}

export interface Dovecot {
  conf: string;
  imapPort: number;
  /** The implicit-TLS IMAP port, when `imaps` was asked for (else 0). */
  imapsPort: number;
  pop3Port: number;
  authSocket: string;
  log(): string;
  stop(): void;
}

export interface DovecotOptions {
  dir: string;
  users: Record<string, string>;
  snippet: string;
  name?: string;
  /** Auth settings placed before the passdbs (auth_username_format, auth_default_realm, ...). */
  auth?: string;
  /** passwd-file's username_format: %u (the default), or %n to look users up by local part. */
  lookupFormat?: string;
  /** Extra passdb fields per user, e.g. { alice: 'user=alice@example.com' }. */
  fields?: Record<string, string>;
  /** Master users (name: password) in a master passdb; log in as "mailbox*master". */
  masters?: Record<string, string>;
  /** Also listen for implicit-TLS IMAP (imaps). */
  imaps?: boolean;
  /** The server certificate; a self-signed one for mail.example.test when absent. */
  tls?: { cert: string; key: string };
}

/** A private Dovecot 2.3: passwd-file users, self-signed TLS, high ports, temp dirs, cidlock's snippet included. */
export async function startDovecot(o: DovecotOptions): Promise<Dovecot> {
  const d = join(o.dir, o.name ?? 'dovecot');
  mkdirSync(join(d, 'run'), { recursive: true });
  mkdirSync(join(d, 'state'), { recursive: true });
  mkdirSync(join(d, 'home'), { recursive: true });
  for (const p of [d, join(d, 'run'), join(d, 'state')]) chmodSync(p, 0o755);
  chownSync(join(d, 'home'), 65534, 65534);
  const tls = o.tls ?? selfSigned(d, 'server', 'mail.example.test');
  writeFileSync(join(d, 'users'), Object.entries(o.users).map(([u, p]) => `${u}:{PLAIN}${p}::::::${o.fields?.[u] ?? ''}`).join('\n') + '\n', { mode: 0o644 });
  const masters = o.masters === undefined ? '' : `auth_master_user_separator = *
passdb {
  driver = passwd-file
  master = yes
  args = scheme=PLAIN ${d}/masters
}
`;
  if (o.masters !== undefined) writeFileSync(join(d, 'masters'), Object.entries(o.masters).map(([u, p]) => `${u}:{PLAIN}${p}::::::`).join('\n') + '\n', { mode: 0o644 });
  const imapPort = await freePort();
  const imapsPort = o.imaps === true ? await freePort() : 0;
  const pop3Port = await freePort();
  const conf = join(d, 'dovecot.conf');
  writeFileSync(conf, `
base_dir = ${d}/run
state_dir = ${d}/state
log_path = ${d}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <${tls.cert}
ssl_key = <${tls.key}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_debug = yes
auth_cache_size = 0
${o.auth ?? ''}
${masters}passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=${o.lookupFormat ?? '%u'} ${d}/users
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=${d}/home/%u
}
mail_location = maildir:~/Maildir
service imap-login {
  inet_listener imap {
    port = ${imapPort}
  }
  inet_listener imaps {
    port = ${imapsPort}
  }
}
service pop3-login {
  inet_listener pop3 {
    port = ${pop3Port}
  }
  inet_listener pop3s {
    port = 0
  }
}
service auth {
  unix_listener ${d}/auth-sasl {
    mode = 0666
  }
}
${o.snippet}
`);
  const r = runDaemonStart('dovecot', ['-c', conf], join(d, 'start.out'));
  if (r.status !== 0) throw new Error(`dovecot did not start: ${r.output}`);
  await waitForPort(imapPort, 'dovecot imap');
  if (imapsPort !== 0) await waitForPort(imapsPort, 'dovecot imaps');
  await waitForPort(pop3Port, 'dovecot pop3');
  return {
    conf,
    imapPort,
    imapsPort,
    pop3Port,
    authSocket: join(d, 'auth-sasl'),
    log: () => (existsSync(join(d, 'dovecot.log')) ? readFileSync(join(d, 'dovecot.log'), 'utf8') : ''),
    stop: () => { spawnSync('dovecot', ['-c', conf, 'stop'], { stdio: 'ignore' }); },
  };
}

export interface Postfix {
  /** Port of each service, by the name given in `services` ("smtp" for the default one). */
  ports: Record<string, number>;
  smtpPort: number;
  /** config_directory and queue_directory of this instance. */
  etc: string;
  queue: string;
  log(): string;
  stop(): void;
}

export interface PostfixService {
  name: string;
  /** master.cf maxproc column; 1 makes every session use the same smtpd (and policy connection). */
  maxproc?: number;
  options?: string[];
  /** A whole master.cf entry, e.g. generated by `cidlock config postfix`; PORT is replaced. */
  entry?: string;
}

/** Where a test's Postfix keeps its configuration and queue, known before it starts. */
export function postfixDirs(dir: string): { etc: string; queue: string } {
  return { etc: join(dir, 'postfix', 'etc'), queue: join(dir, 'postfix', 'queue') };
}

/**
 * Makes the queue directory as Postfix's own is (root, 0755), so cidlock can create its socket
 * directory in it before Postfix starts, as on a real host.
 */
export function preparePostfixQueue(dir: string): string {
  const { queue } = postfixDirs(dir);
  mkdirSync(join(queue, 'private'), { recursive: true });
  for (const p of [join(dir, 'postfix'), queue]) chmodSync(p, 0o755);
  // private/ as Postfix makes it, so Dovecot can put its SASL socket there before Postfix starts.
  chmodSync(join(queue, 'private'), 0o700);
  execFileSync('chown', ['postfix', join(queue, 'private')]);
  return queue;
}

/** Dovecot's SASL listener where Debian's setup puts it, inside the queue: a chrooted smtpd reaches it as private/auth. */
export const dovecotSaslInQueue = (queue: string) =>
  `service auth {\n  unix_listener ${queue}/private/auth {\n    mode = 0660\n    user = postfix\n    group = postfix\n  }\n}\n`;

/** Runs a script `cidlock config postfix` printed, as an operator would (sh, set -e inside). */
export function runPostfixScript(script: string, where: string): string {
  const file = join(where, `cidlock-postfix-${Date.now()}-${Math.random().toString(36).slice(2)}.sh`);
  writeFileSync(file, script);
  const r = spawnSync('sh', [file], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`the generated postfix script failed (${r.status}): ${r.stderr}\n${script}`);
  return r.stdout + r.stderr;
}

/**
 * A private Postfix 3.7 instance: own config, queue and data dirs, maillog_file, loopback only.
 * Its own services are unchrooted; `configure` runs before start (with main.cf and master.cf
 * written), e.g. to apply `cidlock config postfix` output, and `configuredPorts` names the ports
 * of the services it adds.
 */
export async function startPostfix(o: {
  dir: string;
  saslPath: string;
  mainExtra?: string;
  services?: PostfixService[];
  configure?: (p: { etc: string; queue: string }) => void;
  configuredPorts?: Record<string, number>;
}): Promise<Postfix> {
  const d = join(o.dir, 'postfix');
  const { etc, queue } = postfixDirs(o.dir);
  for (const sub of ['etc', 'queue', 'data']) mkdirSync(join(d, sub), { recursive: true });
  for (const p of [d, queue]) chmodSync(p, 0o755);
  execFileSync('chown', ['postfix', join(d, 'data')]);
  const tls = selfSigned(d, 'smtpd', 'mx.example.test');
  const services = o.services ?? [{ name: 'smtp' }];
  const ports: Record<string, number> = {};
  const lines: string[] = [];
  for (const svc of services) {
    const port = await freePort();
    ports[svc.name] = port;
    if (svc.entry !== undefined) lines.push(svc.entry.replace('PORT', String(port)));
    else lines.push(`${port} inet n - n - ${svc.maxproc ?? '-'} smtpd ${(svc.options ?? []).map((x) => `-o ${x}`).join(' ')}`);
  }
  writeFileSync(join(etc, 'main.cf'), `
compatibility_level = 3.6
queue_directory = ${queue}
data_directory = ${d}/data
maillog_file = ${d}/maillog
maillog_file_prefixes = ${d}
inet_interfaces = loopback-only
inet_protocols = ipv4
# The test client addresses 127.0.0.x have no reverse DNS: do not wait for lookups.
smtpd_peername_lookup = no
myhostname = mx.example.test
mydestination =
mynetworks = 127.0.0.1/32
alias_maps =
alias_database =
local_transport = discard
default_transport = discard
relay_transport = discard
smtpd_tls_security_level = may
smtpd_tls_cert_file = ${tls.cert}
smtpd_tls_key_file = ${tls.key}
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = ${o.saslPath}
smtpd_tls_auth_only = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
${o.mainExtra ?? ''}
`);
  writeFileSync(join(etc, 'master.cf'), `
${lines.join('\n')}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`);
  o.configure?.({ etc, queue });
  Object.assign(ports, o.configuredPorts);
  const r = runDaemonStart('postfix', ['-c', etc, 'start'], join(d, 'start.out'));
  if (r.status !== 0) throw new Error(`postfix did not start (${r.status}): ${r.output}`);
  for (const [name, port] of Object.entries(ports)) await waitForPort(port, `postfix ${name}`);
  return {
    ports,
    smtpPort: Object.values(ports)[0]!,
    etc,
    queue,
    log: () => (existsSync(join(d, 'maillog')) ? readFileSync(join(d, 'maillog'), 'utf8') : ''),
    stop: () => { spawnSync('postfix', ['-c', etc, 'stop'], { stdio: 'ignore' }); },
  };
}

export interface Cidlock extends ServeProcess {
  cfg: string;
  dovecotPort: number;
  /** The Dovecot API key the daemon made for itself (state_dir/dovecot.key), as Dovecot sends it. */
  apiKey: string;
}

/**
 * How cidlock's Postfix listeners are reached: UNIX sockets in the queue directory (what an
 * operator runs: the default, in QUEUE/cidlock), or TCP on loopback, optionally with clients.
 */
export type CidlockPostfix = { queue: string } | { policy: number; socketmap: number; clients?: string[] };

function postfixListen(pf: CidlockPostfix | undefined): string {
  if (pf === undefined) return '  postfix: off\n  socketmap: off\n';
  if ('queue' in pf) return `  postfix: unix:${pf.queue}/cidlock/policy\n  socketmap: unix:${pf.queue}/cidlock/socketmap\n`;
  const tcp = (port: number) => (pf.clients === undefined ? `127.0.0.1:${port}` : `{ address: 127.0.0.1:${port}, clients: [${pf.clients.join(', ')}] }`);
  return `  postfix: ${tcp(pf.policy)}\n  socketmap: ${tcp(pf.socketmap)}\n`;
}

/** cidlock serve with the given rules, its Dovecot listener on a free loopback port. */
export async function startCidlock(dir: string, rulesYaml: string, dovecotPort?: number, postfix?: CidlockPostfix): Promise<Cidlock> {
  const port = dovecotPort ?? (await freePort());
  const cfg = join(dir, 'cidlock.yaml');
  // The tests read allowed decisions from the log too, not only refusals (the default).
  const log = /^log:/m.test(rulesYaml) ? '' : 'log:\n  decisions: all\n';
  writeFileSync(cfg, `listen:\n  dovecot: 127.0.0.1:${port}\n  admin: 127.0.0.1:0\n${postfixListen(postfix)}${log}${rulesYaml}`);
  const serve = startServe(cfg);
  await serve.address('dovecot');
  if (postfix !== undefined) await serve.address('socketmap');
  return Object.assign(serve, { cfg, dovecotPort: port, apiKey: readFileSync(join(dir, 'state', 'dovecot.key'), 'utf8').trim() });
}

/** `cidlock config postfix` for this cidlock and Postfix, as the commands an operator runs. */
export function postfixScriptFor(cfg: string, pf: { etc: string; queue: string }, format = 'commands'): string {
  const r = cidlock(['config', 'postfix', '--config', cfg, '--postfix-config', pf.etc, '--queue-directory', pf.queue, '--format', format]);
  if (r.status !== 0) throw new Error(`cidlock config postfix failed: ${r.stderr}`);
  return r.stdout;
}

/** The dovecot.conf lines exactly as an operator gets them from `cidlock config dovecot`. */
export function dovecotSnippetFor(cfg: string): string {
  const r = cidlock(['config', 'dovecot', '--dovecot', '2.3', '--config', cfg, '--nonce', 'e2e-test-nonce-0123456789']);
  if (r.status !== 0) throw new Error(`cidlock config dovecot failed: ${r.stderr}`);
  return r.stdout;
}
