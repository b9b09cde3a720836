// Issue 12's distribution test, the part inside the root: run by test/dist/distribution.sh in a
// fresh Debian 12 or 13 root after `apt-get install ./cidlock_*.deb` (and the CLIENTID plugin's
// package where there is one), on the release's own nodejs, in a private network namespace (so
// the stock ports 993, 995 and 587 are free). It does what README's "Install the Debian package"
// tells an administrator: the stock Dovecot and Postfix configured only with what `cidlock config
// dovecot|postfix` prints, cidlock started as its packaged unit says, users locked and devices
// registered with the CLI run as root. Then the core cases against the release's real servers.
// Prints "ok"/"FAIL"/"note" lines and "N passed, N failed" last; exits non-zero on a failure.
// Standard library only: it runs on Debian 12's Node 18.20 as well.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import { get } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { pathToFileURL } from 'node:url';
import { gunzipSync } from 'node:zlib';

const RULES = '/etc/cidlock/cidlock.yaml';
const PASSWORD = 'Correct-horse-7';
const ALICE_CID = 'UUID 6f1c2a8e-3b4d-4e5f-8a9b-0c1d2e3f4a5b';
const PLUGIN_CID = 'UUID 0d9e8f7a-6b5c-4d3e-9f2a-1b0c9d8e7f6a';
const CAROL_CID = 'UUID 7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d';
const DAEMON_LOG = '/var/log/cidlock-e2e.log';
const WAIT_MS = 20_000;

let passed = 0;
let failed = 0;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function check(name: string, fn: () => Promise<string | void> | string | void): Promise<boolean> {
  const t0 = Date.now();
  try {
    const note = await fn();
    passed++;
    const took = Date.now() - t0;
    console.log(`ok   ${name}${note ? `: ${note}` : ''}${took > 2000 ? ` (${(took / 1000).toFixed(1)} s)` : ''}`);
    return true;
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}`);
    console.log(String((err as Error).message).split('\n').slice(-40).map((l) => `     ${l}`).join('\n'));
    return false;
  }
}

/** A shell command as root; throws with its output when it fails. */
function sh(cmd: string, input?: string): string {
  const r = spawnSync('/bin/sh', ['-c', cmd], { encoding: 'utf8', input: input ?? '', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`${cmd}: exit ${r.status ?? r.signal}\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** A shell command's status and output, whatever it is. */
function shTry(cmd: string): { status: number; out: string } {
  const r = spawnSync('/bin/sh', ['-c', cmd], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

function assert(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Error(what);
}

async function waitFor(what: string, pred: () => boolean | Promise<boolean>, ms = WAIT_MS): Promise<void> {
  for (const end = Date.now() + ms; !(await pred());) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}

const portOpen = (port: number) => new Promise<boolean>((resolve) => {
  const s = netConnect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
  s.on('error', () => resolve(false));
});

const httpStatus = (url: string) => new Promise<number>((resolve) => {
  get(url, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on('error', () => resolve(0));
});

// ---- a line-based client for IMAP, POP3 and SMTP ----

interface Session {
  /** The next line matching `done` (lines before it are kept in the transcript only). */
  reply(done: RegExp): Promise<string>;
  say(line: string, shown?: string): void;
  starttls(): Promise<void>;
  end(): void;
  transcript: string[];
}

/** Connects from `from` (a loopback address: the server sees it as the client's) to 127.0.0.1. */
async function session(port: number, from: string, tls: boolean): Promise<Session> {
  const transcript: string[] = [];
  const queue: string[] = [];
  let pending = '';
  let closed = false;
  let wake: (() => void) | null = null;
  const onData = (d: Buffer) => {
    pending += d.toString('latin1');
    for (let i = pending.indexOf('\n'); i >= 0; i = pending.indexOf('\n')) {
      const line = pending.slice(0, i).replace(/\r$/, '');
      pending = pending.slice(i + 1);
      transcript.push(`S: ${line}`);
      queue.push(line);
    }
    wake?.();
  };
  const onClose = () => { closed = true; wake?.(); };
  const onError = (e: Error) => transcript.push(`error: ${e.message}`);
  const attach = (s: Socket) => s.on('data', onData).on('close', onClose).on('error', onError);
  let sock: Socket = netConnect({ host: '127.0.0.1', port, localAddress: from });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', reject);
  });
  const upgrade = async (): Promise<void> => {
    sock.off('data', onData).off('close', onClose);
    const t = tlsConnect({ socket: sock, rejectUnauthorized: false });
    attach(t);
    await new Promise<void>((resolve, reject) => { t.once('secureConnect', () => resolve()); t.once('error', reject); });
    sock = t;
  };
  attach(sock);
  if (tls) await upgrade();
  const reply = async (done: RegExp): Promise<string> => {
    for (const end = Date.now() + WAIT_MS; ;) {
      while (queue.length > 0) {
        const line = queue.shift()!;
        if (done.test(line)) return line;
      }
      if (closed) throw new Error(`the server closed the connection before ${done}\n${transcript.join('\n')}`);
      if (Date.now() > end) throw new Error(`no ${done} within ${WAIT_MS} ms\n${transcript.join('\n')}`);
      await new Promise<void>((r) => { wake = r; setTimeout(r, 250); });
      wake = null;
    }
  };
  return {
    transcript,
    reply,
    say(line, shown) {
      transcript.push(`C: ${shown ?? line}`);
      sock.write(`${line}\r\n`);
    },
    starttls: upgrade,
    end() {
      sock.destroy();
    },
  };
}

/** The text after the tag of a tagged IMAP reply, or a POP3/SMTP reply as is. */
const text = (line: string) => line.replace(/^[a-z]\d+ /, '').replace(/\[CAPABILITY [^\]]*\] /, '');

interface ImapLogin { ok: boolean; reply: string; greeting: string; transcript: string[] }

/** One IMAPS login from `from`: an optional CLIENTID command, an optional ID clientid, LOGIN. */
async function imapLogin(from: string, user: string, password: string, cid: { id?: string; clientid?: string }): Promise<ImapLogin> {
  const s = await session(993, from, true);
  try {
    const greeting = await s.reply(/^\* (OK|BYE)/);
    if (cid.clientid !== undefined) {
      s.say(`a0 CLIENTID ${cid.clientid}`, 'a0 CLIENTID <cid>');
      const r = await s.reply(/^a0 /);
      if (!/^a0 OK/.test(r)) throw new Error(`CLIENTID: ${r}\n${s.transcript.join('\n')}`);
    }
    if (cid.id !== undefined) {
      s.say(`a1 ID ("name" "cidlock-e2e" "clientid" "${cid.id}")`, 'a1 ID ("name" "cidlock-e2e" "clientid" "<cid>")');
      await s.reply(/^a1 OK/);
    }
    s.say(`a2 LOGIN ${user} ${password}`, `a2 LOGIN ${user} <password>`);
    const r = await s.reply(/^a2 /);
    if (/^a2 OK/.test(r)) {
      s.say('a3 LOGOUT');
      await s.reply(/^a3 /).catch(() => '');
    }
    return { ok: /^a2 OK/.test(r), reply: text(r), greeting, transcript: s.transcript };
  } finally {
    s.end();
  }
}

async function pop3Login(from: string, user: string, password: string): Promise<{ ok: boolean; reply: string; transcript: string[] }> {
  const s = await session(995, from, true);
  try {
    await s.reply(/^\+OK/);
    s.say(`USER ${user}`);
    await s.reply(/^[+-]/);
    s.say(`PASS ${password}`, 'PASS <password>');
    const r = await s.reply(/^[+-]/);
    if (r.startsWith('+OK')) {
      s.say('QUIT');
      await s.reply(/^[+-]/).catch(() => '');
    }
    return { ok: r.startsWith('+OK'), reply: r, transcript: s.transcript };
  } finally {
    s.end();
  }
}

/** Submission (587): STARTTLS, AUTH PLAIN, and when that succeeds MAIL and RCPT (the policy service's turn). */
async function smtpAuth(from: string, user: string, password: string): Promise<{ auth: string; rcpt: string | null; transcript: string[] }> {
  const s = await session(587, from, false);
  try {
    await s.reply(/^220 /);
    s.say('EHLO client.example.test');
    await s.reply(/^250 /);
    s.say('STARTTLS');
    await s.reply(/^220 /);
    await s.starttls();
    s.say('EHLO client.example.test');
    await s.reply(/^250 /);
    s.say(`AUTH PLAIN ${Buffer.from(`\0${user}\0${password}`).toString('base64')}`, 'AUTH PLAIN <credentials>');
    const auth = await s.reply(/^\d{3} /);
    let rcpt: string | null = null;
    if (auth.startsWith('235')) {
      s.say(`MAIL FROM:<${user}@localhost>`);
      await s.reply(/^\d{3} /);
      s.say('RCPT TO:<postmaster@localhost>');
      rcpt = await s.reply(/^\d{3} /);
    }
    s.say('QUIT');
    await s.reply(/^221 /).catch(() => '');
    return { auth, rcpt, transcript: s.transcript };
  } finally {
    s.end();
  }
}

/**
 * The shell commands of each ```sh block in a README section, comments dropped; a heredoc stays
 * one command. test/e2e/debian-stock.test.ts reads the source install with it too.
 */
export function readmeBlocks(readme: string, title: string): string[][] {
  const start = readme.indexOf(`${title}\n`);
  assert(start >= 0, `README has no "${title}" section`);
  // The section ends at the next heading of its level or above ("# " starts comments in the sh
  // blocks, and only the README's title is a level-1 heading).
  const level = /^#+/.exec(title)![0].length;
  const next = new RegExp(`\n#{2,${level}} `).exec(readme.slice(start + title.length));
  const section = readme.slice(start, next === null ? undefined : start + title.length + next.index);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((block) => {
    const lines = block[1]!.split('\n');
    const commands: string[] = [];
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.replace(/\s+#.*$/, '');
      if (line === '' || line.startsWith('#')) continue;
      const heredoc = /<<'(\w+)'$/.exec(line);
      if (heredoc === null) { commands.push(line); continue; }
      const last = lines.indexOf(heredoc[1]!, i);
      commands.push(lines.slice(i, last + 1).join('\n'));
      i = last;
    }
    return commands;
  });
}

// ---- cidlock as its packaged unit starts it ----

function unitFile(): string {
  for (const p of ['/usr/lib/systemd/system/cidlock.service', '/lib/systemd/system/cidlock.service']) if (existsSync(p)) return p;
  throw new Error('no cidlock.service installed');
}

function idOf(name: string, db: 'passwd' | 'group'): number {
  return Number(sh(`getent ${db} ${name}`).split(':')[2]);
}

/**
 * Runs the unit's ExecStartPre lines ("+": as root) and its ExecStart as User/Group, with its
 * RuntimeDirectory and UMask: what systemd would do, without systemd (the root has none running).
 */
function startAsUnit(): ChildProcess {
  const unit = readFileSync(unitFile(), 'utf8');
  const value = (key: string) => [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!);
  const uid = idOf(value('User')[0]!, 'passwd');
  const gid = idOf(value('Group')[0]!, 'group');
  const umask = value('UMask')[0] ?? '0022';
  for (const dir of value('RuntimeDirectory')) sh(`install -d -o ${uid} -g ${gid} -m ${value('RuntimeDirectoryMode')[0] ?? '0755'} /run/${dir}`);
  for (const line of value('ExecStartPre')) {
    const m = /^([-+@:!]*)(.*)$/.exec(line)!;
    const asRoot = m[1]!.includes('+');
    const r = spawnSync('/bin/sh', ['-c', `umask ${umask}; exec ${m[2]}`], { encoding: 'utf8', ...(asRoot ? {} : { uid, gid }) });
    if (r.status !== 0 && !m[1]!.includes('-')) throw new Error(`ExecStartPre=${line}: exit ${r.status}\n${r.stdout}${r.stderr}`);
  }
  const log = openSync(DAEMON_LOG, 'a');
  const child = spawn('/bin/sh', ['-c', `umask ${umask}; exec ${value('ExecStart')[0]!}`], { uid, gid, stdio: ['ignore', log, log] });
  closeSync(log);
  return child;
}

const daemonLines = (): Array<Record<string, unknown>> => readFileSync(DAEMON_LOG, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);

async function main(): Promise<void> {
  const dovecot = sh('dovecot --version').trim();
  const v24 = !dovecot.startsWith('2.3');
  const plugin = shTry("dpkg-query -W -f '${Version}' cidlock-dovecot-clientid").status === 0;
  console.log(`Debian ${readFileSync('/etc/debian_version', 'utf8').trim()}, node ${process.version}, Dovecot ${dovecot}, Postfix ${sh('postconf -h mail_version').trim()}, cidlock ${sh('cidlock --version').trim()}${plugin ? ', with the CLIENTID plugin package' : ''}`);

  await check('the package made the cidlock user, its state_dir and the rules file', () => {
    const uid = idOf('cidlock', 'passwd');
    const st = statSync('/var/lib/cidlock');
    assert(st.uid === uid && (st.mode & 0o777) === 0o700, `/var/lib/cidlock: uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}`);
    const rules = statSync(RULES);
    assert(rules.uid === 0 && rules.gid === idOf('cidlock', 'group') && (rules.mode & 0o777) === 0o640, `${RULES}: ${rules.uid}:${rules.gid} ${(rules.mode & 0o777).toString(8)}`);
    assert(/^\s*mode: monitor/m.test(readFileSync(RULES, 'utf8')), 'the packaged rules do not start in monitor');
    return `${unitFile()}; ${RULES} 0640 root:cidlock, monitor`;
  });

  // Mail users, as on any Debian mail host: system accounts with passwords (Dovecot's stock PAM passdb).
  await check('mail users alice and carol (useradd, chpasswd)', () => {
    for (const u of ['alice', 'carol']) sh(`useradd -m -s /bin/sh ${u}`);
    sh('chpasswd', `alice:${PASSWORD}\ncarol:${PASSWORD}\n`);
  });

  // README's own commands, read from the installed package's copy: the package section's, and the
  // Dovecot SASL socket for Postfix it points to. Installing the .debs is done; less has no reader
  // here (and is not in a minimal root); reloading waits until the servers run, just below.
  await check(`Dovecot and Postfix configured with README's commands${plugin ? ' (with the plugin\'s)' : ''}`, () => {
    const readme = gunzipSync(readFileSync('/usr/share/doc/cidlock/README.md.gz')).toString('utf8');
    const blocks = readmeBlocks(readme, '### On Debian 12 or 13: the package');
    assert(blocks.length >= 2, `README's package section has ${blocks.length} sh blocks`);
    const socket = readmeBlocks(readme, '### Install from source on Debian').flat().filter((c) => c.includes('/var/spool/postfix/private/auth'));
    assert(socket.length === 1, 'README shows no Dovecot SASL socket for Postfix');
    const skipped = (c: string) => /^apt-get install \.\//.test(c) || /^less /.test(c) || /^(doveadm|postfix) reload$/.test(c);
    const ran: string[] = [];
    for (const c of [...blocks[0]!, ...socket, ...(plugin ? blocks[1]! : [])]) {
      // "a && b" lines: each part in turn, so a skipped part does not take the others with it.
      for (const part of c.includes('\n') ? [c] : c.split(' && ')) {
        if (skipped(part)) continue;
        sh(part);
        ran.push(part.split('\n')[0]!);
      }
    }
    assert(ran.some((c) => c.startsWith(`cidlock config dovecot${plugin ? ' --clientid' : ''} `)), `no cidlock config dovecot${plugin ? ' --clientid' : ''} among: ${ran.join('; ')}`);
    assert(ran.some((c) => c.startsWith('cidlock config postfix')), 'no cidlock config postfix');
    const url = v24 ? sh('doveconf -n | sed -n "s/^ *server_url = //p"').trim() : sh('doveconf -h auth_policy_server_url').trim();
    assert(url === 'http://127.0.0.1:8425/', `auth_policy_server_url is "${url}"`);
    const postfixCheck = sh('postfix check 2>&1').trim();
    assert(postfixCheck === '', `postfix check: ${postfixCheck}`);
    return `ran: ${ran.join('; ')}; auth_policy_server_url = ${url}; postfix check silent`;
  });

  // The locks, set with the CLI as root (it hands the writing to state_dir's owner).
  await check('alice locked (enforce) with one registered device; carol in learn mode', () => {
    sh('cidlock users set alice --mode enforce');
    sh(`cidlock devices add alice '${ALICE_CID}' --label laptop`);
    if (plugin) sh(`cidlock devices add alice '${PLUGIN_CID}' --label thunderbird`);
    sh('cidlock users set carol --mode learn');
    const foreign = sh('find /var/lib/cidlock ! -user cidlock').trim();
    assert(foreign === '', `files in state_dir not owned by cidlock:\n${foreign}`);
    return `${sh('cidlock devices list alice').trim().split('\n').length - 1} device(s) for alice; every state file is cidlock's`;
  });

  let daemon: ChildProcess | null = null;
  await check('cidlock started as its unit says (ExecStartPre, User=cidlock, ExecStart)', async () => {
    daemon = startAsUnit();
    await waitFor('cidlock /readyz', async () => (await httpStatus('http://127.0.0.1:8426/readyz')) === 200);
    const sock = statSync('/var/spool/postfix/cidlock');
    assert((sock.mode & 0o7777) === 0o2750, `socket folder mode ${(sock.mode & 0o7777).toString(8)}`);
    return 'readyz 200; /var/spool/postfix/cidlock 2750';
  });
  await check('Dovecot and Postfix started (stock configuration plus cidlock\'s lines)', async () => {
    // Their output to files: a daemon keeps inherited pipes open, and waiting for them would hang.
    sh('dovecot >/var/log/dovecot-start.log 2>&1 || { cat /var/log/dovecot-start.log; exit 1; }');
    // Debian 12's postfix@- unit runs configure-instance.sh (copies /etc files into smtpd's chroot)
    // before "postfix start"; Debian 13's "postfix start" does it itself and refuses a manual call.
    if (existsSync('/usr/lib/postfix/configure-instance.sh')) shTry('/usr/lib/postfix/configure-instance.sh - >/var/log/postfix-start.log 2>&1');
    sh('postfix start >>/var/log/postfix-start.log 2>&1 || { cat /var/log/postfix-start.log; exit 1; }');
    for (const p of [993, 995, 587]) await waitFor(`port ${p}`, () => portOpen(p));
    return 'imaps 993, pop3s 995, submission 587';
  });

  // The core cases. Each failing case comes from its own address: Dovecot delays an address's
  // next login after a failure (auth penalty), which would slow the next case, not change it.
  const refused: Array<[string, string]> = [];
  await check('IMAP: alice\'s registered CID over TLS logs in', async () => {
    const r = await imapLogin('127.0.0.2', 'alice', PASSWORD, { id: ALICE_CID });
    assert(r.ok, `refused: ${r.reply}\n${r.transcript.join('\n')}`);
    return r.reply;
  });
  await check('IMAP: an unknown CID, a wrong password and an unknown user get the same reply', async () => {
    const unknownCid = await imapLogin('127.0.0.4', 'alice', PASSWORD, { id: 'UUID 11111111-2222-4333-8444-555555555555' });
    const wrongPassword = await imapLogin('127.0.0.5', 'alice', 'wrong-password', { id: ALICE_CID });
    const unknownUser = await imapLogin('127.0.0.6', 'nosuchuser', PASSWORD, { id: ALICE_CID });
    for (const [what, r] of [['unknown CID', unknownCid], ['wrong password', wrongPassword], ['unknown user', unknownUser]] as const) {
      assert(!r.ok, `${what}: logged in`);
      refused.push([what, r.reply]);
    }
    assert(new Set(refused.map(([, r]) => r)).size === 1, refused.map(([w, r]) => `${w}: ${r}`).join('\n'));
    return refused[0]![1];
  });
  await check('POP3: vouched from the address alice\'s device proved itself from', async () => {
    const r = await pop3Login('127.0.0.2', 'alice', PASSWORD);
    assert(r.ok, `refused: ${r.reply}\n${r.transcript.join('\n')}`);
    return r.reply;
  });
  await check('POP3: refused from another address, with the wrong-password reply', async () => {
    const other = await pop3Login('127.0.0.3', 'alice', PASSWORD);
    const wrong = await pop3Login('127.0.0.7', 'alice', 'wrong-password');
    assert(!other.ok && !wrong.ok, `other address: ${other.reply}; wrong password: ${wrong.reply}`);
    assert(other.reply === wrong.reply, `other address: ${other.reply}\nwrong password: ${wrong.reply}`);
    return other.reply;
  });
  await check('SMTP AUTH (submission, Dovecot SASL): vouched from the same address', async () => {
    const r = await smtpAuth('127.0.0.2', 'alice', PASSWORD);
    assert(r.auth.startsWith('235') && r.rcpt !== null && r.rcpt.startsWith('250'), `AUTH: ${r.auth}; RCPT: ${r.rcpt}\n${r.transcript.join('\n')}`);
    return `${r.auth}; RCPT ${r.rcpt}`;
  });
  await check('SMTP AUTH: refused from another address', async () => {
    const r = await smtpAuth('127.0.0.8', 'alice', PASSWORD);
    assert(!r.auth.startsWith('235') || (r.rcpt !== null && /^[45]/.test(r.rcpt)), `AUTH: ${r.auth}; RCPT: ${r.rcpt}\n${r.transcript.join('\n')}`);
    return r.auth.startsWith('235') ? `RCPT ${r.rcpt}` : r.auth;
  });
  await check('learn mode: carol\'s first login registers her device', async () => {
    const r = await imapLogin('127.0.0.9', 'carol', PASSWORD, { id: CAROL_CID });
    assert(r.ok, `refused: ${r.reply}\n${r.transcript.join('\n')}`);
    let list = '';
    await waitFor('the learned device', () => (list = sh('cidlock devices list carol --json')).trim() !== '', 5000);
    const d = JSON.parse(list.trim().split('\n')[0]!) as { source: string; label: string };
    assert(d.source === 'learn', `source ${d.source}`);
    return `registered: ${d.label}`;
  });
  if (plugin) {
    await check('CLIENTID plugin: advertised on IMAPS, its registered CID logs in', async () => {
      const r = await imapLogin('127.0.0.10', 'alice', PASSWORD, { clientid: PLUGIN_CID });
      assert(/\bCLIENTID\b/.test(r.greeting), `greeting without CLIENTID: ${r.greeting}`);
      assert(r.ok, `refused: ${r.reply}\n${r.transcript.join('\n')}`);
      return r.reply;
    });
    await check('CLIENTID plugin: an unknown CLIENTID gets the wrong-password reply', async () => {
      const r = await imapLogin('127.0.0.11', 'alice', PASSWORD, { clientid: 'UUID 99999999-8888-4777-8666-555555555555' });
      assert(!r.ok, 'logged in');
      assert(r.reply === refused[0]?.[1], `reply: ${r.reply}, wrong password: ${refused[0]?.[1]}`);
      // The refusal names the plugin's CLIENTID as the CID's channel: it reached cidlock.
      await waitFor('the refusal in the log', () => daemonLines().some((l) => l.event === 'decision' && l.remote === '127.0.0.11'), 5000);
      const logged = daemonLines().filter((l) => l.event === 'decision' && l.remote === '127.0.0.11').pop()!;
      assert(logged.cid_via === 'clientid', `cid_via ${String(logged.cid_via)}`);
      return `${r.reply} (logged: ${String(logged.reason)}, cid_via clientid)`;
    });
  }
  await check('the daemon logged each refusal with its reason; cidlock test explains it offline', () => {
    const lines = daemonLines().filter((l) => l.event === 'decision' && l.user === 'alice' && l.remote === '127.0.0.4');
    assert(lines.length > 0, `no decision logged for 127.0.0.4:\n${readFileSync(DAEMON_LOG, 'utf8').split('\n').slice(-20).join('\n')}`);
    const logged = lines[lines.length - 1]!;
    const t = shTry(`cidlock test --user alice --protocol imap --ip 127.0.0.4 --tls --cid 'UUID 11111111-2222-4333-8444-555555555555'`);
    assert(t.status === 1, `cidlock test exit ${t.status}:\n${t.out}`);
    assert(t.out.includes(String(logged.reason)), `the daemon logged reason ${String(logged.reason)}; cidlock test says:\n${t.out}`);
    assert(t.out.includes(refused[0]![1]), `cidlock test does not show the client's reply "${refused[0]![1]}":\n${t.out}`);
    return `reason ${String(logged.reason)}, rule ${String(logged.rule)}`;
  });

  await check('Postfix, Dovecot and cidlock stop', async () => {
    const d = daemon as ChildProcess | null;
    const stops = [shTry('postfix stop'), shTry('doveadm stop')];
    assert(d !== null, 'cidlock was not started');
    const exited = d.exitCode !== null ? Promise.resolve(d.exitCode) : new Promise<number | null>((r) => d.once('exit', (code) => r(code)));
    d.kill('SIGTERM');
    const code = await exited;
    assert(stops.every((x) => x.status === 0), stops.map((x) => x.out).join('\n'));
    assert(code === 0, `cidlock exit ${code}`);
  });
  const warnings = shTry(`grep -hiE '"level":"(warn|error)"' ${DAEMON_LOG} | grep -v '"event":"decision"' | head -n 5`).out.trim();
  if (warnings !== '') console.log(`note cidlock warnings:\n${warnings.split('\n').map((l) => `     ${l}`).join('\n')}`);
  console.log(`${passed} passed, ${failed} failed`);
  // Whatever is left (a daemon that would not stop) is roots.sh drop's to end.
  process.exit(failed === 0 ? 0 : 1);
}

// Run, not imported (debian-stock.test.ts imports readmeBlocks).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.log(`FAIL ${(err as Error).stack ?? String(err)}`);
    console.log(`${passed} passed, ${failed + 1} failed`);
    process.exit(1);
  });
}
