import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cidlock } from './helpers/cli.js';
import { repoRoot } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

test('config dovecot (2.3) fills in the URL, API key header, attributes and imap_id_retain from the rules', () => {
  const cfg = join(tempDir(), 'cidlock.yaml');
  writeFileSync(cfg, 'listen:\n  dovecot: "[::1]:9425"\ndovecot:\n  api_key: "s3cret-key-0123456789"\n');
  const r = cidlock(['config', 'dovecot', '--config', cfg, '--nonce', 'n0nce-n0nce']);
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

test('config dovecot --dovecot 2.4 prints the block syntax with renamed variables and fail_type', () => {
  const cfg = join(tempDir(), 'cidlock.yaml');
  writeFileSync(cfg, 'policy: { mode: monitor }\n');
  const r = cidlock(['config', 'dovecot', '--config', cfg, '--dovecot', '2.4']);
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /auth_policy_request_attributes \{\n  user = %\{user\}\n/);
  assert.match(r.stdout, /  orig_user = %\{original_user\}\n/);
  assert.match(r.stdout, /  remote = %\{remote_ip\}\n/);
  assert.match(r.stdout, /  protocol = %\{protocol\}\n/);
  assert.match(r.stdout, /  fail_type = %\{fail_type\}\n/);
  assert.match(r.stdout, /auth_policy \{\n  http_client_request_absolute_timeout = 2s\n\}/);
  assert.not.ok(r.stdout.includes('auth_policy_server_timeout_msecs'));
  assert.match(r.stdout, /auth_policy_hash_nonce = [0-9a-f]{32}\n/);
  assert.is(cidlock(['config', 'dovecot', '--dovecot', '2.5', '--config', join(repoRoot, 'examples', 'cidlock.yaml')]).status, 2);
  assert.is(cidlock(['config', 'sendmail', '--config', join(repoRoot, 'examples', 'cidlock.yaml')]).status, 2);
});

test('examples/dovecot/95-cidlock.conf is what the generator prints for the example rules', () => {
  // A copy whose state_dir is a temp folder: the command creates the install's key there.
  const copy = join(tempDir(), 'cidlock.yaml');
  writeFileSync(copy, readFileSync(join(repoRoot, 'examples', 'cidlock.yaml'), 'utf8').replace(/^state_dir: .*$/m, `state_dir: ${join(tempDir(), 'state')}`));
  const r = cidlock(['config', 'dovecot', '--config', copy, '--nonce', 'CHANGE-ME-to-a-random-string']);
  const example = readFileSync(join(repoRoot, 'examples', 'dovecot', '95-cidlock.conf'), 'utf8');
  // The key is the install's own (state_dir/dovecot.key): the example shows where it goes.
  const key = /^auth_policy_server_api_header = X-API-Key: (\S+)$/m.exec(r.stdout)?.[1];
  assert.ok(key !== undefined && key.length >= 32, 'a generated key is printed');
  assert.is(example.replace(' (replace the nonce)', '').replace('examples/cidlock.yaml', copy), r.stdout.replace(key!, '<the key from state_dir/dovecot.key>'));
});

test('config postfix fills in the policy and socketmap endpoints, with fail-open and fail-closed variants', () => {
  const cfg = join(tempDir(), 'cidlock.yaml');
  writeFileSync(cfg, 'listen:\n  postfix: 127.0.0.1:11031\n  socketmap: unix:/run/cidlock/maps.sock\n');
  const r = cidlock(['config', 'postfix', '--config', cfg]);
  assert.is(r.status, 0, r.stderr);
  const [main, master] = r.stdout.split('### master.cf');
  assert.ok(main!.includes('cidlock_policy = check_policy_service { inet:127.0.0.1:11031, timeout=10s, default_action=DUNNO }'));
  assert.ok(main!.includes('#cidlock_policy = check_policy_service { inet:127.0.0.1:11031, timeout=10s, { default_action = 451 4.3.5 Policy service unavailable, try again later } }'));
  assert.ok(main!.includes('cidlock_client = check_client_access socketmap:unix:/run/cidlock/maps.sock:client'));
  assert.match(main!, /smtpd_relay_restrictions =\n {4}\$cidlock_policy,\n {4}permit_mynetworks,\n {4}permit_sasl_authenticated,/);
  assert.match(master!, /\nsubmission inet n .* smtpd\n/);
  for (const o of ['smtpd_tls_ask_ccert=yes', 'smtpd_sasl_type=dovecot', 'smtpd_delay_reject=no', 'smtpd_helo_restrictions=$cidlock_policy,permit', 'smtpd_relay_restrictions=$cidlock_policy,permit_sasl_authenticated,reject']) {
    assert.ok(master!.includes(`  -o ${o}\n`), o);
  }
  assert.is(cidlock(['config', 'postfix', '--nonce', 'x', '--config', cfg]).status, 2);
});

test('examples/postfix/main.cf and master.cf are what the generator prints for the example rules', () => {
  const r = cidlock(['config', 'postfix', '--config', 'examples/cidlock.yaml']);
  const [main, master] = r.stdout.split('\n### master.cf\n\n');
  assert.is(readFileSync(join(repoRoot, 'examples', 'postfix', 'main.cf'), 'utf8'), main);
  assert.is(readFileSync(join(repoRoot, 'examples', 'postfix', 'master.cf'), 'utf8'), master);
});

test.run();
