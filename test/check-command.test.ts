// `cidlock check` through the real CLI: listeners reachable without authentication, keys in files
// others can read, and an audit log the daemon's user (state_dir's owner) could not write.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { groupId } from '../src/net/unix-socket.js';
import { cidlock } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

const NOBODY = 65534;
const asRoot = process.geteuid?.() === 0;
// Playing the daemon's user means giving state_dir to another user: only root can.
const rootOnly = asRoot ? test : test.skip;
const withPostfixGroup = asRoot && groupId('postfix') !== null ? test : test.skip;
if (!asRoot) process.stderr.write('\n*** SKIPPED: check-command tests that chown need root ***\n');
else if (groupId('postfix') === null) process.stderr.write('\n*** SKIPPED: the socket-group check needs a postfix group (apt-get install postfix) ***\n');

/** A rules file in a fresh folder; state_dir beside it; file mode 0640 unless told. */
function rules(yaml: string, mode = 0o640): { cfg: string; dir: string } {
  const dir = tempDir('cidlock-check-');
  // As on a real host: the daemon's user can reach state_dir, and the queue directory exists.
  chmodSync(dir, 0o755);
  mkdirSync(join(dir, 'pf'), { mode: 0o755 });
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, `state_dir: ./state\nlisten:\n  postfix: unix:${dir}/pf/cidlock/policy\n  socketmap: unix:${dir}/pf/cidlock/socketmap\n${yaml}`);
  chmodSync(cfg, mode);
  return { cfg, dir };
}

const warnings = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('warning: '));

test('the defaults (UNIX sockets, loopback Dovecot and admin, no key in the file): no warnings', () => {
  const { cfg } = rules('');
  const r = cidlock(['check', '--config', cfg]);
  assert.is(r.status, 0, r.stderr);
  assert.equal(warnings(r.stderr), []);
  assert.match(r.stdout, /dovecot: +API key in .*\/state\/dovecot\.key: not created yet \("cidlock serve" or "cidlock config dovecot" creates it\)/);
});

test('Postfix listeners over TCP: any local user, or any listed host, can forge requests', () => {
  const { cfg } = rules('');
  writeFileSync(cfg, 'listen:\n  postfix: 127.0.0.1:10031\n  socketmap: { address: 192.0.2.5:10032, clients: [192.0.2.25/32] }\n');
  const r = cidlock(['check', '--config', cfg]);
  assert.is(r.status, 0, r.stderr);
  const w = warnings(r.stderr);
  assert.ok(w.some((l) => l.startsWith('warning: listen.postfix is TCP (127.0.0.1:10031): any local user can send policy requests as if it were Postfix') && l.includes('forge the vouch') && l.includes('unix:/var/spool/postfix/cidlock/policy')), w.join('\n'));
  assert.ok(w.some((l) => l.startsWith('warning: listen.socketmap is TCP (192.0.2.5:10032 (clients 192.0.2.25/32)): any process on 192.0.2.25/32 can query the socketmap tables')), w.join('\n'));
});

test('a socket directory others may enter is a warning (the daemon refuses it); so is one Postfix\'s group cannot enter', () => {
  const { cfg, dir } = rules('');
  mkdirSync(join(dir, 'pf', 'cidlock'), { recursive: true });
  chmodSync(join(dir, 'pf', 'cidlock'), 0o755);
  const r = cidlock(['check', '--config', cfg]);
  const w = warnings(r.stderr);
  assert.ok(w.some((l) => l === `warning: listen.postfix: every local user may enter or write to ${dir}/pf/cidlock (mode 0755) and reach or replace the socket; cidlock serve refuses to start; run: chmod o-rwx ${dir}/pf/cidlock`), w.join('\n'));
  chmodSync(join(dir, 'pf', 'cidlock'), 0o750);
  assert.not.ok(warnings(cidlock(['check', '--config', cfg]).stderr).some((l) => l.includes('every local user')));
});

withPostfixGroup('a socket directory not in group postfix is a warning; in group postfix it is not', () => {
  const { cfg, dir } = rules('');
  mkdirSync(join(dir, 'pf', 'cidlock'), { recursive: true, mode: 0o750 });
  chownSync(join(dir, 'pf', 'cidlock'), NOBODY, NOBODY);
  const w = warnings(cidlock(['check', '--config', cfg]).stderr);
  assert.ok(w.some((l) => l === `warning: listen.postfix: ${dir}/pf/cidlock is not in group postfix, so Postfix cannot reach the socket; run: chgrp postfix ${dir}/pf/cidlock && chmod 2750 ${dir}/pf/cidlock`), w.join('\n'));
  chownSync(join(dir, 'pf', 'cidlock'), NOBODY, groupId('postfix')!);
  assert.equal(warnings(cidlock(['check', '--config', cfg]).stderr), []);
});

test('an admin listener off loopback without a token is a warning', () => {
  const { cfg } = rules('');
  writeFileSync(cfg, `${'listen:\n  admin: { address: 192.0.2.5:8426, clients: [192.0.2.80/32] }\n'}`);
  const w = warnings(cidlock(['check', '--config', cfg]).stderr);
  assert.ok(w.some((l) => l.startsWith('warning: listen.admin is 192.0.2.5:8426 (clients 192.0.2.80/32) and admin.token is unset: health and metrics')), w.join('\n'));
});

test('a rules file every local user can read that holds keys is a warning naming them and the fix; 0640 is not', () => {
  const keys = 'dovecot:\n  api_key: "dovecot-key-0123456789"\nadmin:\n  token: "admin-token-0123456789"\n';
  const open = rules(keys, 0o644);
  const w = warnings(cidlock(['check', '--config', open.cfg]).stderr);
  assert.ok(w.some((l) => l.startsWith(`warning: ${open.cfg} is readable by every local user (mode 0644) and holds dovecot.api_key, admin.token: run: chown root:`) && l.endsWith(`&& chmod 640 ${open.cfg}`)), w.join('\n'));
  const closed = rules(keys, 0o640);
  const r = cidlock(['check', '--config', closed.cfg]);
  assert.equal(warnings(r.stderr), []);
  assert.match(r.stdout, /dovecot: +API key in the rules file \(dovecot\.api_key\)/);
  assert.equal(warnings(cidlock(['check', '--config', rules('', 0o644).cfg]).stderr), [], 'no key in it: nothing to hide');
});

test('the Dovecot key file: where it is, whether it is readable, and a warning when everyone can read it', () => {
  const { cfg, dir } = rules('');
  assert.is(cidlock(['config', 'dovecot', '--config', cfg]).status, 0);
  const key = join(dir, 'state', 'dovecot.key');
  const r = cidlock(['check', '--config', cfg]);
  assert.match(r.stdout, `dovecot:   API key in ${key} (readable)`);
  assert.equal(warnings(r.stderr), []);
  chmodSync(key, 0o644);
  const w = warnings(cidlock(['check', '--config', cfg]).stderr);
  assert.ok(w.includes(`warning: ${key} is readable by every local user (mode 0644): anyone could send requests as Dovecot; run: chmod 600 ${key}`), w.join('\n'));
});

rootOnly('a Dovecot key file the daemon\'s user cannot read is a warning', () => {
  const { cfg, dir } = rules('');
  assert.is(cidlock(['config', 'dovecot', '--config', cfg]).status, 0);
  chownSync(join(dir, 'state'), NOBODY, NOBODY); // the daemon runs as nobody; root made the key
  const key = join(dir, 'state', 'dovecot.key');
  chownSync(key, 0, 0);
  const w = warnings(cidlock(['check', '--config', cfg]).stderr);
  assert.ok(w.some((l) => l.startsWith(`warning: ${key}: the daemon's user nobody cannot read Dovecot's API key (mode 0600, owner uid 0)`)), w.join('\n'));
});

rootOnly('C10: an audit log the daemon\'s user (state_dir\'s owner) cannot write fails the check', () => {
  const { cfg, dir } = rules('');
  const state = join(dir, 'state');
  mkdirSync(state, { mode: 0o700 });
  chownSync(state, NOBODY, NOBODY);
  const ok = cidlock(['check', '--config', cfg]);
  assert.is(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, `audit:     ${state}/audit.log, writable by nobody, the daemon's user (state_dir's owner)`);
  // What `sudo cidlock devices add` can leave behind: the log created by root, 0600.
  writeFileSync(join(state, 'audit.log'), '', { mode: 0o600 });
  const bad = cidlock(['check', '--config', cfg]);
  assert.is(bad.status, 1);
  assert.match(bad.stderr, `audit: ${state}/audit.log: cannot be written by nobody, the daemon's user (state_dir's owner): nobody may not write to it (mode 0600, owner uid 0)`);
  // A path outside state_dir in a folder only root may write to: the same failure, before any event is lost.
  const rootDir = join(dir, 'root-only');
  mkdirSync(rootDir, { mode: 0o755 });
  writeFileSync(cfg, `state_dir: ./state\naudit:\n  file: ${rootDir}/audit.log\n`);
  const elsewhere = cidlock(['check', '--config', cfg]);
  assert.is(elsewhere.status, 1);
  assert.match(elsewhere.stderr, `audit: ${rootDir}/audit.log: cannot be written by nobody, the daemon's user (state_dir's owner): nobody may not create it in ${rootDir}`);
});

test('check reads the notice templates and the page texts: a bad placeholder fails with file:line:col; a good set is described', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'device.txt'), 'Subject: Was this you, {{user}}?\n\nApprove: {{approve_url}}\nOops: {{password}}\n');
  const base = 'state_dir: ./state\nportal: { url: "https://mail.example.org/cidlock/" }\nnotice: { from: "postmaster@example.org", smtp: "127.0.0.1:25"';
  writeFileSync(join(dir, 'bad.yaml'), `${base}, device_template: device.txt }\n`);
  const bad = cidlock(['check', '-c', join(dir, 'bad.yaml')]);
  assert.is(bad.status, 1, bad.stdout);
  assert.match(bad.stderr, new RegExp(`${join(dir, 'device.txt').replace(/[.]/g, '\\.')}:4:7: .*password`));
  writeFileSync(join(dir, 'good.yaml'), `${base} }\n`);
  const good = cidlock(['check', '-c', join(dir, 'good.yaml')]);
  assert.is(good.status, 0, good.stderr);
  assert.match(good.stdout, /portal: +https:\/\/mail\.example\.org\/cidlock\/ \(served on 127\.0\.0\.1:8427\)/);
  assert.match(good.stdout, /notices: +from postmaster@example\.org through SMTP 127\.0\.0\.1:25, at most 3 a day per account/);
  writeFileSync(join(dir, 'strings.yaml'), 'signin_title: Hi\nno_such_text: x\n');
  writeFileSync(join(dir, 'strings-bad.yaml'), `${base} }\nportal_strings_placeholder: 1\n`.replace('portal_strings_placeholder: 1\n', '').replace('portal: { url: "https://mail.example.org/cidlock/" }', 'portal: { url: "https://mail.example.org/cidlock/", strings: strings.yaml }'));
  const strings = cidlock(['check', '-c', join(dir, 'strings-bad.yaml')]);
  assert.is(strings.status, 1, strings.stdout);
  assert.match(strings.stderr, /strings\.yaml:2:1: .*no_such_text/);
});

test.run();
