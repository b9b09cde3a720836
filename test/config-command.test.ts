import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cidlock } from './helpers/cli.js';
import { repoRoot } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

test('config dovecot (2.3) fills in the URL, API key header, attributes and imap_id_retain from the rules', () => {
  const cfg = join(tempDir(), 'cidlock.yaml');
  writeFileSync(cfg, 'listen:\n  dovecot: "[::1]:9425"\ndovecot:\n  api_key: "s3cret-key-0123456789"\n');
  const r = cidlock(['config', 'dovecot', '--dovecot', '2.3', '--config', cfg, '--nonce', 'n0nce-n0nce']);
  assert.is(r.status, 0, r.stderr);
  const lines = r.stdout.split('\n');
  assert.ok(lines.includes('auth_policy_server_url = http://[::1]:9425/'));
  assert.ok(lines.includes('auth_policy_server_api_header = X-API-Key: s3cret-key-0123456789'));
  assert.ok(lines.includes('auth_policy_hash_nonce = n0nce-n0nce'));
  assert.ok(lines.includes('imap_id_retain = yes'));
  assert.ok(lines.includes('#auth_policy_reject_on_fail = yes'));
  assert.ok(lines.some((l) => /^auth_policy_request_attributes = user=%\{user\} login_user=%\{login_user\} master_user=%\{master_user\} orig_user=%\{orig_user\} .*device_id=%\{client_id\} protocol=%s .*secured=%\{secured\}$/.test(l)));
  assert.not.ok(r.stdout.includes('UNSUPPORTED') || r.stdout.includes('%{fail_type}'), '2.3 has no fail_type');
});

test('config dovecot --dovecot 2.4 prints the block syntax with renamed variables, and none of 2.4\'s defaults', () => {
  const cfg = join(tempDir(), 'cidlock.yaml');
  writeFileSync(cfg, 'policy: { mode: monitor }\n');
  const r = cidlock(['config', 'dovecot', '--config', cfg, '--dovecot', '2.4']);
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /doveconf -n \| grep server_url/, '2.4\'s doveconf -h refuses auth_policy_server_url (exit 89, seen in Debian 13)');
  assert.not.ok(r.stdout.includes('doveconf -h'));
  const block = /auth_policy_request_attributes \{\n([\s\S]*?)\n\}/.exec(r.stdout)?.[1];
  assert.is(block, '  user = %{user}\n  login_user = %{login_user}\n  master_user = %{master_user}\n  orig_user = %{original_user}\n  secured = %{secured}');
  // Dovecot 2.4.1's defaults (doveconf -d in Debian 13) are not repeated: its own request
  // attributes (merged with the block, as the 2.4.1 capture shows), the checks and the timeout.
  for (const dflt of ['  device_id =', '  remote =', '  protocol =', '  pwhash =', '  session_id =', '  fail_type =', 'auth_policy {', 'http_client_request_absolute_timeout = 2s', 'auth_policy_check_before_auth = yes', 'auth_policy_check_after_auth = yes', 'auth_policy_report_after_auth = yes', 'auth_policy_server_timeout_msecs']) {
    assert.not.ok(r.stdout.split('\n').some((l) => l.trim() === dflt || l.startsWith(dflt)), dflt);
  }
  assert.match(r.stdout, /auth_policy_hash_nonce = [0-9a-f]{32}\n/);
  assert.is(cidlock(['config', 'dovecot', '--dovecot', '2.5', '--config', join(repoRoot, 'examples', 'cidlock.yaml')]).status, 2);
  assert.is(cidlock(['config', 'sendmail', '--config', join(repoRoot, 'examples', 'cidlock.yaml')]).status, 2);
});

test('config dovecot picks the syntax of the Dovecot installed here; --dovecot overrides; none found means 2.3, said on stderr', () => {
  const dir = tempDir();
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, 'dovecot:\n  api_key: "s3cret-key-0123456789"\n');
  const fake = (out: string) => {
    const bin = join(dir, `bin-${Math.random().toString(36).slice(2)}`);
    mkdirSync(bin);
    writeFileSync(join(bin, 'dovecot'), `#!/bin/sh\necho '${out}'\n`, { mode: 0o755 });
    return { PATH: `${bin}:${process.env.PATH ?? ''}` };
  };
  const v24 = cidlock(['config', 'dovecot', '--config', cfg], { env: fake('2.4.1-4 (7d8c0e5759)') });
  assert.is(v24.status, 0, v24.stderr);
  assert.match(v24.stdout, /auth_policy_request_attributes \{/);
  assert.match(v24.stderr, /Dovecot 2\.4\.1-4 found here; printing its 2\.4 syntax/);
  const v23 = cidlock(['config', 'dovecot', '--config', cfg], { env: fake('2.3.19.1 (9b53102964)') });
  assert.match(v23.stdout, /^auth_policy_request_attributes = user=/m);
  assert.match(v23.stderr, /printing its 2\.3 syntax/);
  const forced = cidlock(['config', 'dovecot', '--config', cfg, '--dovecot', '2.3'], { env: fake('2.4.1-4 (7d8c0e5759)') });
  assert.match(forced.stdout, /^auth_policy_request_attributes = user=/m);
  assert.is(forced.stderr, '');
  const odd = cidlock(['config', 'dovecot', '--config', cfg], { env: fake('something else') });
  assert.match(odd.stderr, /cannot tell the syntax of Dovecot "something else"; printing 2\.3 syntax/);
  // cidlock also looks in /usr/sbin, where this host's own Dovecot may be: what it says it
  // printed is what it printed.
  const none = cidlock(['config', 'dovecot', '--config', cfg], { env: { PATH: join(dir, 'nothing-here') } });
  assert.is(none.status, 0, none.stderr);
  const said = /no dovecot found here; printing Dovecot 2\.3 syntax|found here; printing its (2\.[34]) syntax/.exec(none.stderr);
  assert.ok(said, none.stderr);
  assert.match(none.stdout, said![1] === '2.4' ? /^auth_policy_request_attributes \{$/m : /^auth_policy_request_attributes = user=/m);
});

test('config dovecot --clientid loads the login plugin for imap only and asks for its forward fields', () => {
  const cfg = join(tempDir(), 'cidlock.yaml');
  writeFileSync(cfg, 'dovecot:\n  api_key: "s3cret-key-0123456789"\n');
  const plain = cidlock(['config', 'dovecot', '--config', cfg]);
  assert.not.ok(plain.stdout.includes('cidlock_clientid') || plain.stdout.includes('forward_clientid'), 'only on request');
  const r = cidlock(['config', 'dovecot', '--dovecot', '2.3', '--config', cfg, '--clientid', '--login-plugin-dir', '/opt/cidlock/login']);
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /^auth_policy_request_attributes = user=%\{user\} .* fwd_clientid=%\{passdb:forward_clientid\} fwd_clientid_type=%\{passdb:forward_clientid_type\}$/m);
  assert.match(r.stdout, /\nprotocol imap \{\n  login_plugin_dir = \/opt\/cidlock\/login\n  login_plugins = \$login_plugins cidlock_clientid\n\}\n/);
  assert.match(r.stdout, /config dovecot --clientid/);
  const v24 = cidlock(['config', 'dovecot', '--config', cfg, '--clientid', '--dovecot', '2.4']);
  assert.match(v24.stdout, /  fwd_clientid = %\{passdb:forward_clientid\}\n  fwd_clientid_type = %\{passdb:forward_clientid_type\}\n\}/);
  assert.match(v24.stdout, /protocol imap \{\n  login_plugins \{\n    cidlock_clientid = yes\n  \}\n\}/);
  assert.not.ok(v24.stdout.includes('login_plugin_dir'), 'the default directory is not printed');
  const noPlugin = cidlock(['config', 'dovecot', '--config', cfg, '--login-plugin-dir', '/opt/x']);
  assert.is(noPlugin.status, 2);
  assert.match(noPlugin.stderr, /--login-plugin-dir goes with --clientid/);
  assert.is(cidlock(['config', 'dovecot', '--config', cfg, '--clientid', '--login-plugin-dir', 'relative/dir']).status, 2);
  assert.is(cidlock(['config', 'postfix', '--config', cfg, '--clientid']).status, 2);
});

test('examples/dovecot/cidlock.conf is what the generator prints for the example rules; 95-cidlock.conf is the include line it prints', () => {
  // A copy whose state_dir is a temp folder: the command creates the install's key there.
  const copy = join(tempDir(), 'cidlock.yaml');
  writeFileSync(copy, readFileSync(join(repoRoot, 'examples', 'cidlock.yaml'), 'utf8').replace(/^state_dir: .*$/m, `state_dir: ${join(tempDir(), 'state')}`));
  const r = cidlock(['config', 'dovecot', '--dovecot', '2.3', '--config', copy, '--nonce', 'CHANGE-ME-to-a-random-string']);
  assert.is(r.status, 0, r.stderr);
  const example = readFileSync(join(repoRoot, 'examples', 'dovecot', 'cidlock.conf'), 'utf8');
  // The key is the install's own (state_dir/dovecot.key): the example shows where it goes.
  const key = /^auth_policy_server_api_header = X-API-Key: (\S+)$/m.exec(r.stdout)?.[1];
  assert.ok(key !== undefined && key.length >= 32, 'a generated key is printed');
  assert.is(example.replace(' (replace the nonce)', '').replaceAll('examples/cidlock.yaml', copy), r.stdout.replace(key!, '<the key from state_dir/dovecot.key>'));
  const include = readFileSync(join(repoRoot, 'examples', 'dovecot', '95-cidlock.conf'), 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('#'));
  assert.equal(include, ['!include_try ../private/cidlock.conf']);
  assert.ok(r.stdout.includes(`#   echo '${include[0]}' > /etc/dovecot/conf.d/95-cidlock.conf\n`));
});

test('config dovecot says how to install it readable by root only, outside the conf.d glob', () => {
  const cfg = join(tempDir(), 'cidlock.yaml');
  writeFileSync(cfg, `state_dir: ${join(tempDir(), 'state')}\n`);
  const r = cidlock(['config', 'dovecot', '--dovecot', '2.3', '--config', cfg]);
  assert.ok(r.stdout.includes(`#   cidlock config dovecot -c ${cfg} | install -m 600 -o root -g root /dev/stdin /etc/dovecot/private/cidlock.conf\n`), r.stdout);
  const v24 = cidlock(['config', 'dovecot', '--dovecot', '2.4', '--config', cfg]);
  assert.ok(v24.stdout.includes(`#   cidlock config dovecot --dovecot 2.4 -c ${cfg} | install -m 600`), 'the install line regenerates the same version');
});

test('config dovecot with listen.dovecot off refuses, and prints no URL', () => {
  const cfg = join(tempDir(), 'cidlock.yaml');
  writeFileSync(cfg, 'listen:\n  dovecot: off\n');
  const r = cidlock(['config', 'dovecot', '--config', cfg]);
  assert.is(r.status, 2);
  assert.is(r.stdout, '');
  assert.match(r.stderr, `${cfg}: listen.dovecot is off, so there is no policy service for Dovecot to ask`);
});

/** The lines of a generated script that run (not comments, not blank). */
const commandsOf = (text: string) => text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));

test('config postfix (default): postconf commands, sockets named relative to the queue directory, only submission asks cidlock', () => {
  const cfg = join(tempDir(), 'cidlock.yaml');
  writeFileSync(cfg, 'state_dir: ./state\n'); // the default listeners: unix sockets in /var/spool/postfix/cidlock
  const r = cidlock(['config', 'postfix', '--config', cfg]);
  assert.is(r.status, 0, r.stderr);
  const run = commandsOf(r.stdout);
  assert.equal(run.slice(0, 3), [
    'set -e',
    "test -e '/etc/postfix/main.cf.before-cidlock' || cp -p '/etc/postfix/main.cf' '/etc/postfix/main.cf.before-cidlock'",
    "test -e '/etc/postfix/master.cf.before-cidlock' || cp -p '/etc/postfix/master.cf' '/etc/postfix/master.cf.before-cidlock'",
  ]);
  assert.ok(run.includes("postconf -e 'cidlock_policy = check_policy_service { unix:cidlock/policy, timeout=10s, default_action=DUNNO }'"));
  assert.ok(run.includes("postconf -M submission/inet='submission inet n - y - - smtpd'"), 'chrooted, as Debian runs smtpd');
  assert.ok(run.includes("postconf -P 'submission/inet/smtpd_relay_restrictions=$cidlock_policy,permit_sasl_authenticated,reject'"));
  assert.is(run[run.length - 1], 'postfix check');
  // main.cf gets exactly one parameter, and it is used (by the submission entry): no "unused parameter" warnings.
  assert.equal(run.filter((l) => l.startsWith('postconf -e')).length, 1);
  // Nothing that applies to port 25: no main.cf smtpd_*_restrictions, no tables unless uncommented.
  assert.not.ok(run.some((l) => /postconf -e 'smtpd_/.test(l) || l.includes('socketmap:')), run.join('\n'));
  for (const optional of [
    "#postconf -e 'cidlock_client = check_client_access socketmap:unix:cidlock/socketmap:client'",
    "#postconf -P 'submission/inet/smtpd_client_restrictions=$cidlock_client'",
    "#postconf -e 'cidlock_sasl = check_sasl_access socketmap:unix:cidlock/socketmap:sasl'",
    "#postconf -P 'submission/inet/smtpd_sender_restrictions=$cidlock_sasl'",
    "#postconf -e 'cidlock_policy = check_policy_service { unix:cidlock/policy, timeout=10s, { default_action = 451 4.3.5 Policy service unavailable, try again later } }'",
  ]) assert.ok(r.stdout.split('\n').includes(optional), optional);
  assert.match(r.stdout, /The -M line REPLACES an existing "submission inet" entry of master.cf, with all its -o\n#    options/);
  assert.match(r.stdout, /every session on this service is answered 451 4\.3\.5/);
  assert.match(r.stdout, /defers all inbound mail \(451 4\.3\.5\)/);
});

test('config postfix --postfix-config and --queue-directory: postconf -c DIR, sockets relative to that queue', () => {
  const dir = tempDir();
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, `listen:\n  postfix: unix:/srv/pf/queue/cidlock/policy\n  socketmap: unix:/srv/pf/queue/cidlock/socketmap\n`);
  const r = cidlock(['config', 'postfix', '--config', cfg, '--postfix-config', '/srv/pf/etc/', '--queue-directory', '/srv/pf/queue']);
  assert.is(r.status, 0, r.stderr);
  const run = commandsOf(r.stdout);
  assert.ok(run.includes("postconf -c '/srv/pf/etc' -e 'cidlock_policy = check_policy_service { unix:cidlock/policy, timeout=10s, default_action=DUNNO }'"), run.join('\n'));
  assert.ok(run.includes("test -e '/srv/pf/etc/master.cf.before-cidlock' || cp -p '/srv/pf/etc/master.cf' '/srv/pf/etc/master.cf.before-cidlock'"));
  assert.is(run[run.length - 1], "postfix -c '/srv/pf/etc' check");
  assert.ok(r.stdout.includes("#postconf -c '/srv/pf/etc' -e 'cidlock_sasl = check_sasl_access socketmap:unix:cidlock/socketmap:sasl'"));
  assert.is(cidlock(['config', 'postfix', '--config', cfg, '--queue-directory', 'relative/q']).status, 2);
  assert.is(cidlock(['config', 'dovecot', '--config', cfg, '--queue-directory', '/q']).status, 2);
});

test('config postfix: a socket outside the queue directory is named absolutely and its service runs unchrooted; TCP says what protects it', () => {
  const cfg = join(tempDir(), 'cidlock.yaml');
  writeFileSync(cfg, 'listen:\n  postfix: 127.0.0.1:11031\n  socketmap: unix:/run/cidlock/maps.sock\n');
  const r = cidlock(['config', 'postfix', '--config', cfg]);
  assert.is(r.status, 0, r.stderr);
  const run = commandsOf(r.stdout);
  assert.ok(run.includes("postconf -e 'cidlock_policy = check_policy_service { inet:127.0.0.1:11031, timeout=10s, default_action=DUNNO }'"));
  assert.ok(r.stdout.includes("#postconf -e 'cidlock_client = check_client_access socketmap:unix:/run/cidlock/maps.sock:client'"));
  assert.ok(run.includes("postconf -M submission/inet='submission inet n - n - - smtpd'"), 'a chrooted smtpd could not reach /run/cidlock');
  assert.match(r.stdout, /out of a chrooted smtpd's reach/);
  assert.match(r.stdout, /Over TCP, anyone who reaches the port can ask as if they were Postfix/);
  assert.match(r.stdout, /listen\.\*\.clients and firewall the port/);
});

test('config postfix --format main.cf / master.cf: each file\'s part alone, the optional halves commented in pairs', () => {
  const cfg = join(tempDir(), 'cidlock.yaml');
  writeFileSync(cfg, 'state_dir: ./state\n');
  const main = cidlock(['config', 'postfix', '--config', cfg, '--format', 'main.cf']);
  const master = cidlock(['config', 'postfix', '--config', cfg, '--format', 'master.cf']);
  assert.is(main.status, 0, main.stderr);
  assert.equal(commandsOf(main.stdout), ['cidlock_policy = check_policy_service { unix:cidlock/policy, timeout=10s, default_action=DUNNO }']);
  assert.ok(main.stdout.includes('\n#cidlock_client = check_client_access socketmap:unix:cidlock/socketmap:client\n'));
  assert.not.ok(main.stdout.includes('submission inet'));
  assert.equal(commandsOf(master.stdout), [
    'submission inet n       -       y       -       -       smtpd',
    '  -o syslog_name=postfix/submission',
    '  -o smtpd_tls_security_level=encrypt',
    '  -o smtpd_tls_ask_ccert=yes',
    '  -o smtpd_sasl_auth_enable=yes',
    '  -o smtpd_sasl_type=dovecot',
    '  -o smtpd_sasl_path=private/auth',
    '  -o smtpd_delay_reject=no',
    '  -o smtpd_helo_required=yes',
    '  -o smtpd_helo_restrictions=$cidlock_policy,permit',
    '  -o smtpd_relay_restrictions=$cidlock_policy,permit_sasl_authenticated,reject',
  ]);
  assert.ok(master.stdout.includes('\n#  -o smtpd_client_restrictions=$cidlock_client\n#  -o smtpd_sender_restrictions=$cidlock_sasl\n'));
  assert.match(master.stdout, /It REPLACES an existing "submission inet" entry/);
  assert.not.ok(master.stdout.includes('cidlock_policy = '));
  assert.is(cidlock(['config', 'postfix', '--config', cfg, '--format', 'postfix.cf']).status, 2);
});

test('config postfix: listen.postfix off is refused; socketmap off leaves the tables out', () => {
  const dir = tempDir();
  const off = join(dir, 'off.yaml');
  writeFileSync(off, 'listen:\n  postfix: off\n');
  const r = cidlock(['config', 'postfix', '--config', off]);
  assert.is(r.status, 2);
  assert.is(r.stdout, '');
  assert.match(r.stderr, 'listen.postfix is off');
  const noMaps = join(dir, 'nomaps.yaml');
  writeFileSync(noMaps, 'listen:\n  socketmap: off\n');
  const m = cidlock(['config', 'postfix', '--config', noMaps]);
  assert.is(m.status, 0, m.stderr);
  assert.not.ok(m.stdout.includes('socketmap:unix'));
  assert.not.ok(m.stdout.includes('cidlock_client'));
  assert.is(cidlock(['config', 'postfix', '--nonce', 'x', '--config', noMaps]).status, 2);
});

test('examples/postfix/* are what the generator prints for the example rules', () => {
  for (const [format, name] of [[undefined, 'cidlock-postfix.sh'], ['main.cf', 'main.cf'], ['master.cf', 'master.cf']] as const) {
    const r = cidlock(['config', 'postfix', '--config', 'examples/cidlock.yaml', ...(format ? ['--format', format] : [])]);
    assert.is(r.status, 0, r.stderr);
    assert.is(readFileSync(join(repoRoot, 'examples', 'postfix', name), 'utf8'), r.stdout, name);
  }
});

test.run();
