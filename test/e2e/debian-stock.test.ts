// What an administrator on Debian 12 does, on copies of the stock /etc/postfix and /etc/dovecot:
// the README's install steps followed literally, the generated Postfix commands and file parts
// applied with postconf -c DIR, and the Dovecot snippet installed as its own lines say. Postfix's
// and Dovecot's own checks must accept the result without a single warning.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, copyFileSync, cpSync, existsSync, lstatSync, mkdirSync, readFileSync, realpathSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { POSTFIX_SOCKET_DIR } from '../../src/core/rules/load.js';
import { CIDLOCK, cidlock } from '../helpers/cli.js';
import { readmeBlocks } from '../dist/admin-e2e.js';
import { repoRoot } from '../helpers/paths.js';
import { tempDir } from '../helpers/tmp.js';
import { requireTools } from './harness.js';

const ready = requireTools('Debian stock configuration', ['postfix', 'postconf', 'doveconf', 'script']) && existsSync('/etc/postfix/master.cf') && existsSync('/etc/dovecot/dovecot.conf');
// Without the real servers the tests are registered as skipped: uvu counts them, .ci/run fails on them.
const check = ready ? test : test.skip;
const NOBODY = 65534;

/**
 * A command as the administrator runs it, in a terminal: Postfix's own commands print their
 * warnings on the terminal only (otherwise to syslog, which this host does not run).
 */
function inTerminal(command: string): { status: number; output: string } {
  const r = spawnSync('script', ['-qec', command, '/dev/null'], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status ?? -1, output: r.stdout.replace(/\r/g, '') };
}

const sh = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** postfix check, as the generated script's last line runs it. */
const postfixCheck = (etc: string) => inTerminal(`postfix -c ${sh(etc)} check`);

/**
 * A copy of Debian 12's /etc/postfix as `apt-get install postfix` leaves it for an "Internet
 * Site". This host was installed with "No configuration" (no main.cf), so main.cf is made the
 * way postfix.postinst makes it for an Internet Site, with debconf's default answers. Three
 * settings differ so that nothing touches this host's own Postfix: queue_directory and
 * data_directory (postfix check creates what is missing there) and myorigin's file (the postinst
 * would write /etc/mailname). makedefs.out is copied, not linked: postfix check accepts that
 * symlink only at /etc/postfix.
 */
function stockPostfix(): string {
  const root = tempDir('cidlock-stock-postfix-');
  chmodSync(root, 0o755);
  const etc = join(root, 'etc');
  cpSync('/etc/postfix', etc, { recursive: true, verbatimSymlinks: true });
  const makedefs = join(etc, 'makedefs.out');
  if (existsSync(makedefs) && lstatSync(makedefs).isSymbolicLink()) {
    const target = realpathSync(makedefs);
    unlinkSync(makedefs);
    copyFileSync(target, makedefs);
  }
  const postconf = (...settings: string[]) => {
    const r = spawnSync('postconf', ['-c', etc, '-e', ...settings], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`postconf: ${r.stderr}`);
  };
  const main = join(etc, 'main.cf');
  if (!existsSync(main)) {
    copyFileSync('/usr/share/postfix/main.cf.debian', main);
    if (existsSync('/etc/ssl/private/ssl-cert-snakeoil.key')) appendFileSync(main, readFileSync('/usr/share/postfix/main.cf.tls'));
    postconf('smtpd_relay_restrictions=permit_mynetworks permit_sasl_authenticated defer_unauth_destination');
    postconf(
      'myhostname=mail.example.org', 'alias_maps=hash:/etc/aliases', 'alias_database=hash:/etc/aliases',
      'myorigin=/etc/mailname', 'mydestination=$myhostname, mail.example.org, localhost.localdomain, localhost',
      'relayhost=', 'mynetworks=127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128', 'mailbox_size_limit=0',
      'recipient_delimiter=+', 'inet_interfaces=all', 'inet_protocols=all',
    );
  }
  for (const d of ['queue', 'data']) mkdirSync(join(root, d));
  chownSync(join(root, 'data'), postfixUid(), 0);
  writeFileSync(join(root, 'mailname'), 'mail.example.org\n');
  postconf(`queue_directory=${join(root, 'queue')}`, `data_directory=${join(root, 'data')}`);
  if (!existsSync('/etc/mailname')) postconf(`myorigin=${join(root, 'mailname')}`);
  return etc;
}

function postfixUid(): number {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postfix:'));
  return Number(line?.split(':')[2] ?? 0);
}

/** A copy of this host's stock /etc/dovecot (conf.d 0644, private/ 0700), in a folder others can enter. */
function stockDovecot(): string {
  const root = tempDir('cidlock-stock-dovecot-');
  chmodSync(root, 0o755);
  cpSync('/etc/dovecot', join(root, 'dovecot'), { recursive: true, verbatimSymlinks: true });
  return join(root, 'dovecot');
}

function doveconf(conf: string, args: string[], as?: { uid: number; gid: number }): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('doveconf', ['-c', conf, ...args], { encoding: 'utf8', ...(as ?? {}) });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Rules as the README has the administrator write them: the example, with state_dir set. */
function rulesFile(): string {
  const dir = tempDir('cidlock-stock-rules-');
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, readFileSync(join(repoRoot, 'examples', 'cidlock.yaml'), 'utf8').replace(/^state_dir: .*$/m, `state_dir: ${dir}/state`), { mode: 0o640 });
  return cfg;
}

const generated = (cfg: string, etc: string, format = 'commands') => {
  const r = cidlock(['config', 'postfix', '--config', cfg, '--postfix-config', etc, '--format', format]);
  assert.is(r.status, 0, r.stderr);
  return r.stdout;
};

function runScript(text: string): { status: number; output: string } {
  const file = join(tempDir('cidlock-script-'), 'cidlock-postfix.sh');
  writeFileSync(file, text);
  return inTerminal(`sh ${sh(file)}`);
}

const submissionEntries = (etc: string) => spawnSync('postconf', ['-c', etc, '-M', 'submission/inet'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l !== '');

check('the stock copy itself passes postfix check without a word (so every warning below would be ours)', () => {
  const etc = stockPostfix();
  assert.equal(postfixCheck(etc), { status: 0, output: '' });
  assert.equal(submissionEntries(etc), [], 'stock master.cf has only a commented submission entry');
});

check('C11: the generated commands on stock Debian: no warning at all, the submission service added, and a second run changes nothing', () => {
  const etc = stockPostfix();
  const cfg = rulesFile();
  const stockMaster = readFileSync(join(etc, 'master.cf'), 'utf8');
  const stockMain = readFileSync(join(etc, 'main.cf'), 'utf8');
  const script = generated(cfg, etc);
  assert.equal(runScript(script), { status: 0, output: '' }, 'the script and its final postfix check print nothing');
  assert.equal(postfixCheck(etc), { status: 0, output: '' });
  const entry = submissionEntries(etc);
  assert.is(entry.length, 1);
  assert.match(entry[0]!, /^submission inet +n +- +y +- +- +smtpd -o syslog_name=postfix\/submission .* -o smtpd_relay_restrictions=\$cidlock_policy,permit_sasl_authenticated,reject$/);
  const conf = spawnSync('postconf', ['-c', etc, '-n'], { encoding: 'utf8' });
  assert.is(conf.stderr, '');
  assert.match(conf.stdout, /^cidlock_policy = check_policy_service \{ unix:cidlock\/policy, timeout=10s, default_action=DUNNO \}$/m);
  // Port 25 is untouched: Debian's relay restrictions are as they were.
  assert.match(conf.stdout, /^smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination$/m);
  assert.ok(readFileSync(join(etc, 'master.cf'), 'utf8').includes('#submission inet n       -       y       -       -       smtpd\n'), 'the stock comment stays');
  assert.is(readFileSync(join(etc, 'main.cf.before-cidlock'), 'utf8'), stockMain);
  assert.is(readFileSync(join(etc, 'master.cf.before-cidlock'), 'utf8'), stockMaster);
  const [main1, master1] = [readFileSync(join(etc, 'main.cf'), 'utf8'), readFileSync(join(etc, 'master.cf'), 'utf8')];
  assert.equal(runScript(script), { status: 0, output: '' });
  assert.is(readFileSync(join(etc, 'main.cf'), 'utf8'), main1);
  assert.is(readFileSync(join(etc, 'master.cf'), 'utf8'), master1);
  assert.is(readFileSync(join(etc, 'master.cf.before-cidlock'), 'utf8'), stockMaster, 'the copy to undo with is the original, not the first run\'s result');
});

check('C11: an active submission entry is replaced, as the output says; skipping the -M line keeps it and adds the options', () => {
  const cfg = rulesFile();
  const existing = "submission inet n - y - - smtpd -o syslog_name=postfix/submission -o smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes -o milter_macro_daemon_name=ORIGINATING";
  const withEntry = () => {
    const etc = stockPostfix();
    const r = spawnSync('postconf', ['-c', etc, '-M', `submission/inet=${existing}`], { encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
    assert.equal(postfixCheck(etc), { status: 0, output: '' });
    return etc;
  };
  const etc = withEntry();
  const script = generated(cfg, etc);
  assert.match(script, /The -M line REPLACES an existing "submission inet" entry of master\.cf, with all its -o\n#    options/);
  assert.equal(runScript(script), { status: 0, output: '' });
  const replaced = submissionEntries(etc);
  assert.is(replaced.length, 1, replaced.join('\n'));
  assert.not.match(replaced[0]!, /milter_macro_daemon_name/, 'replaced, with all its -o options');
  assert.match(replaced[0]!, /smtpd_tls_ask_ccert=yes/);

  const keep = withEntry();
  const withoutM = generated(cfg, keep).split('\n').filter((l) => !/ -M submission\/inet=/.test(l)).join('\n');
  assert.equal(runScript(withoutM), { status: 0, output: '' });
  const kept = submissionEntries(keep);
  assert.is(kept.length, 1);
  assert.match(kept[0]!, /-o milter_macro_daemon_name=ORIGINATING/);
  assert.match(kept[0]!, /-o smtpd_relay_restrictions=\$cidlock_policy,permit_sasl_authenticated,reject/);
});

check('C11/C12: with every optional line enabled (tables, fail-closed) still no warning; the tables stay on submission', () => {
  const etc = stockPostfix();
  const all = generated(rulesFile(), etc).replace(/^#(postconf )/gm, '$1');
  assert.equal(runScript(all), { status: 0, output: '' });
  const conf = spawnSync('postconf', ['-c', etc, '-n'], { encoding: 'utf8' }).stdout;
  assert.match(conf, /^cidlock_client = check_client_access socketmap:unix:cidlock\/socketmap:client$/m);
  assert.match(conf, /^cidlock_policy = .*default_action = 451 4\.3\.5/m);
  assert.not.match(conf, /^smtpd_(client|sender|relay|recipient)_restrictions = .*cidlock/m, 'nothing on port 25');
  assert.match(submissionEntries(etc)[0]!, /-o smtpd_client_restrictions=\$cidlock_client -o smtpd_sender_restrictions=\$cidlock_sasl$/);
});

check('C11: the file parts (--format main.cf / master.cf) appended to the stock files: no warning, with or without the optional pairs', () => {
  for (const optional of [false, true]) {
    const etc = stockPostfix();
    const cfg = rulesFile();
    const on = (s: string) => (optional ? s.replace(/^#(cidlock_(client|sasl) = )/gm, '$1').replace(/^#( {2}-o smtpd_(client|sender)_restrictions=)/gm, '$1') : s);
    appendFileSync(join(etc, 'main.cf'), `\n${on(generated(cfg, etc, 'main.cf'))}`);
    appendFileSync(join(etc, 'master.cf'), `\n${on(generated(cfg, etc, 'master.cf'))}`);
    assert.equal(postfixCheck(etc), { status: 0, output: '' }, optional ? 'with the tables' : 'without');
    const entry = submissionEntries(etc);
    assert.is(entry.length, 1);
    assert.is(/cidlock_client/.test(entry[0]!), optional);
  }
});

check('C13: the Dovecot snippet installed as its first lines say is read by Dovecot (root), and skipped by other users\' Dovecot programs', () => {
  const conf = stockDovecot();
  const cfg = rulesFile();
  const out = cidlock(['config', 'dovecot', '--config', cfg]).stdout;
  const key = /^auth_policy_server_api_header = (.*)$/m.exec(out)![1]!;
  // The install lines from the snippet's head, with /etc/dovecot pointing at the copy.
  const lines = out.split('\n').filter((l) => /^#   (cidlock config dovecot|echo )/.test(l)).map((l) => l.slice(4));
  assert.is(lines.length, 2);
  for (const line of lines) {
    const cmd = line.replace(/\/etc\/dovecot\//g, `${conf}/`).replace(/^cidlock /, `${sh(process.execPath)} ${sh(CIDLOCK)} `);
    const r = spawnSync('sh', ['-ec', cmd], { encoding: 'utf8', cwd: repoRoot });
    assert.is(r.status, 0, `${cmd}: ${r.stderr}`);
  }
  const installed = statSync(join(conf, 'private', 'cidlock.conf'));
  assert.equal([installed.mode & 0o777, installed.uid, installed.gid], [0o600, 0, 0]);
  const asRoot = doveconf(join(conf, 'dovecot.conf'), ['-h', 'auth_policy_server_url']);
  assert.equal(asRoot, { status: 0, stdout: 'http://127.0.0.1:8425/\n', stderr: '' });
  assert.is(doveconf(join(conf, 'dovecot.conf'), ['-h', 'auth_policy_server_api_header']).stdout, `${key}\n`);
  assert.equal(doveconf(join(conf, 'dovecot.conf'), ['-n']).stderr, '');
  // dovecot-lda delivering as the mail user, or doveadm run by one, parses the configuration itself.
  const asUser = doveconf(join(conf, 'dovecot.conf'), ['-n'], { uid: NOBODY, gid: NOBODY });
  assert.is(asUser.status, 0, asUser.stderr);
  assert.not.ok(asUser.stdout.includes('auth_policy_server_url'), 'the include it cannot read is skipped');
  assert.not.ok(asUser.stdout.includes(key));
});

check('C13, why not conf.d itself: a conf.d file a user cannot read stops that user\'s Dovecot programs', () => {
  const conf = stockDovecot();
  const snippet = join(conf, 'conf.d', '95-cidlock.conf');
  writeFileSync(snippet, cidlock(['config', 'dovecot', '--config', rulesFile()]).stdout, { mode: 0o600 });
  assert.is(doveconf(join(conf, 'dovecot.conf'), ['-h', 'auth_policy_server_url']).stdout, 'http://127.0.0.1:8425/\n', 'root (the config process) reads it');
  const user = doveconf(join(conf, 'dovecot.conf'), ['-n'], { uid: NOBODY, gid: NOBODY });
  assert.is.not(user.status, 0);
  assert.match(user.stderr, `Couldn't open include file ${snippet}: Permission denied`);
  // Group dovecot does not help the mail users either.
  const dovecotGid = Number(readFileSync('/etc/group', 'utf8').split('\n').find((l) => l.startsWith('dovecot:'))?.split(':')[2] ?? NaN);
  if (Number.isInteger(dovecotGid)) {
    chownSync(snippet, 0, dovecotGid);
    chmodSync(snippet, 0o640);
    assert.is.not(doveconf(join(conf, 'dovecot.conf'), ['-n'], { uid: NOBODY, gid: NOBODY }).status, 0);
  }
});

// The README's install steps, followed literally. Commands that change this host (users, systemd,
// /opt, reloading servers that are not running) are not run; every other line is, with the paths
// pointed at the copies. A line the test does not know fails it, so the README cannot drift.
const HOST_ONLY: RegExp[] = [
  /^adduser /, /^cd \/opt\/cidlock /, /^ln -s /, /^mkdir -p \/etc\/cidlock$/, /^install -m 640 -o root -g cidlock /,
  /^editor /, /^install -m 644 .*\/etc\/systemd\//, /^systemctl /, /^doveadm reload$/, /^postfix reload$/, /^less /,
];

/** The shell lines of the README's "Install from source on Debian" section; a heredoc stays one command. */
function readmeInstallCommands(): string[] {
  return readmeBlocks(readFileSync(join(repoRoot, 'README.md'), 'utf8'), '### Install from source on Debian').flat();
}

check('the README\'s Install from source on Debian steps, followed on stock copies: Dovecot and Postfix accept the result without a warning', () => {
  const etc = stockPostfix();
  const conf = stockDovecot();
  const cfg = rulesFile();
  const home = tempDir('cidlock-root-');
  const commands = readmeInstallCommands();
  const ran: Array<{ line: string; status: number; output: string }> = [];
  for (const line of commands) {
    if (HOST_ONLY.some((re) => re.test(line))) continue;
    const cmd = line
      .replace(/^cidlock config postfix (.*) >/, `cidlock config postfix $1 --postfix-config ${sh(etc)} >`)
      .replace(/\/etc\/cidlock\/cidlock\.yaml/g, cfg)
      .replace(/\/etc\/dovecot\//g, `${conf}/`)
      .replace(/\/root\//g, `${home}/`)
      .replace(/^doveconf /, `doveconf -c ${sh(join(conf, 'dovecot.conf'))} `)
      .replace(/^cidlock /, `${sh(process.execPath)} ${sh(CIDLOCK)} `);
    if (!/^(\S+ \S+\/bin\/cidlock|echo '!include_try|doveconf -c|cat > |sh )/.test(cmd)) assert.unreachable(`the test does not know this README line: ${line}`);
    ran.push({ line, ...inTerminal(cmd) });
  }
  const by = (re: RegExp) => {
    const r = ran.find((x) => re.test(x.line));
    if (r === undefined) throw new Error(`no README line matches ${re} among:\n${ran.map((x) => x.line).join('\n')}`);
    return r;
  };
  assert.is(ran.length, 7, ran.map((r) => r.line).join('\n'));
  for (const r of ran) assert.is(r.status, 0, `${r.line}\n${r.output}`);
  assert.not.match(by(/^cidlock check /).output, /warning|error/i);
  assert.is(by(/^doveconf -h auth_policy_server_url/).output, 'http://127.0.0.1:8425/\n');
  assert.is(by(/^sh \/root\/cidlock-postfix\.sh/).output, '', 'the generated commands and their postfix check print nothing');
  // Dovecot as root (its config process) and as a mail user: both parse it, no word on stderr.
  assert.equal(doveconf(join(conf, 'dovecot.conf'), ['-n']).stderr, '');
  assert.match(doveconf(join(conf, 'dovecot.conf'), ['-n']).stdout, /unix_listener \/var\/spool\/postfix\/private\/auth \{\n\s+group = postfix\n\s+mode = 0660\n\s+user = postfix\n/);
  assert.is(doveconf(join(conf, 'dovecot.conf'), ['-n'], { uid: NOBODY, gid: NOBODY }).status, 0);
  assert.equal(postfixCheck(etc), { status: 0, output: '' });
  assert.is(submissionEntries(etc).length, 1);
});

const withSystemd = requireTools('systemd unit', ['systemd-analyze']) ? test : test.skip;

withSystemd('examples/cidlock.service passes systemd-analyze verify and makes the socket folder it may write to', () => {
  const unit = join(repoRoot, 'examples', 'cidlock.service');
  const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8', cwd: tempDir() });
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stderr.split('\n').filter((l) => l.includes('cidlock.service')).join('\n'), '');
  const text = readFileSync(unit, 'utf8');
  assert.ok(text.includes(`\nExecStartPre=+/usr/bin/install -d -o cidlock -g postfix -m 2750 ${POSTFIX_SOCKET_DIR}\n`));
  assert.match(text, new RegExp(`\\nReadWritePaths=.* ${POSTFIX_SOCKET_DIR}\\n`));
  assert.ok(text.indexOf('ExecStartPre=+/usr/bin/install') < text.indexOf('ExecStartPre=/usr/bin/node'), 'the folder exists before cidlock check looks at it');
});

test.run();
