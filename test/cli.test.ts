import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { CIDLOCK, cidlock } from './helpers/cli.js';
import { fixturePath, repoRoot } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

const EXAMPLE = join(repoRoot, 'examples', 'cidlock-advanced.yaml');
const LAPTOP = 'UUID 23bf83be-aad7-46aa-9e0f-39191ccf402f';

function workspace(yaml = 'policy:\n  mode: monitor\ndomains:\n  example.com: { mode: enforce }\n'): string {
  const file = join(tempDir(), 'cidlock.yaml');
  writeFileSync(file, yaml);
  return file;
}

test('every command has a man-page style --help and exits 0', () => {
  for (const args of [['--help'], ['help'], ['serve', '--help'], ['check', '--help'], ['test', '--help'], ['users', '--help'], ['devices', '--help'], ['help', 'devices']]) {
    const r = cidlock(args);
    assert.is(r.status, 0, args.join(' '));
    assert.match(r.stdout, /NAME\n/);
    assert.match(r.stdout, /SYNOPSIS\n/);
  }
});

test('usage errors exit 2 and point to --help', () => {
  const r = cidlock(['frobnicate']);
  assert.is(r.status, 2);
  assert.match(r.stderr, /unknown command "frobnicate"/);
  const t = cidlock(['test', '--config', EXAMPLE, '--user', 'a@b.c', '--protocol', 'imap', '--bogus']);
  assert.is(t.status, 2);
  assert.match(t.stderr, /Unknown option '--bogus'.*see "cidlock test --help"/);
  const ip = cidlock(['test', '--config', EXAMPLE, '--user', 'a@b.c', '--protocol', 'imap', '--ip', '999.1.1.1']);
  assert.is(ip.status, 2);
  assert.match(ip.stderr, /not an IP address/);
});

test('check: valid example prints counts; a broken file lists every error with file:line:col and exits 1', () => {
  const ok = cidlock(['check', '--config', EXAMPLE]);
  assert.is(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /domains: +1/);
  assert.match(ok.stdout, /users: +3 in the rules file/);
  assert.match(ok.stdout, /registry: .*\d+ devices/);
  const bad = cidlock(['check', '--config', fixturePath('rules', 'several-errors.yaml')]);
  assert.is(bad.status, 1);
  assert.is(bad.stderr.split('\n').filter((l) => /several-errors\.yaml:\d+:\d+: /.test(l)).length, 3);
});

test('test on the example rules: allow, reject and monitor would-reject, each explained', () => {
  const allow = cidlock(['test', '--config', EXAMPLE, '--user', 'alice@example.com', '--protocol', 'imap', '--tls', '--ip', '198.51.100.7', '--client-name', 'Thunderbird']);
  assert.is(allow.status, 0, allow.stderr);
  assert.match(allow.stdout, /^ALLOW/);
  assert.match(allow.stdout, /reason: +device_type/);
  assert.match(allow.stdout, /users\["alice@example.com"\]\.device_types/);

  const reject = cidlock(['test', '--config', EXAMPLE, '--user', 'bob@example.com', '--protocol', 'imap', '--tls', '--cid', LAPTOP, '--ip', '198.51.100.7']);
  assert.is(reject.status, 1);
  assert.match(reject.stdout, /^REJECT/);
  assert.match(reject.stdout, /reason: +unknown_device/);
  assert.match(reject.stdout, /mode: +enforce, set by the domain rule/);
  assert.match(reject.stdout, /client sees: NO \[AUTHENTICATIONFAILED\] Authentication failed\. \(as for a wrong password\)\n/);
  assert.not.ok(reject.stdout.includes('23bf83be'), 'raw CID printed');

  const monitor = cidlock(['test', '--config', EXAMPLE, '--user', 'carol@example.org', '--protocol', 'imap', '--tls']);
  assert.is(monitor.status, 0);
  assert.match(monitor.stdout, /would_reject/);
  assert.match(monitor.stderr, /warning: carol@example.org: monitor mode allows this login, but enforce would refuse it/);

  const webmail = cidlock(['test', '--config', EXAMPLE, '--user', 'bob@example.com', '--protocol', 'imap', '--ip', '192.0.2.10']);
  assert.is(webmail.status, 0);
  assert.match(webmail.stdout, /trusted_network/);
});

test('test --json prints the decision record the daemon logs', () => {
  const r = cidlock(['test', '--config', EXAMPLE, '--user', 'bob@example.com', '--protocol', 'pop3', '--ip', '203.0.113.9', '--json']);
  assert.is(r.status, 1);
  const rec = JSON.parse(r.stdout);
  assert.is(rec.event, 'decision');
  assert.is(rec.action, 'reject');
  assert.is(rec.reason, 'no_device_proof');
  assert.is(rec.rule, 'domains["example.com"].mode');
  assert.is(rec.layer, 'domain');
  const v = cidlock(['test', '--config', EXAMPLE, '--user', 'bob@example.com', '--protocol', 'pop3', '--ip', '203.0.113.9', '--assume-vouch', '--json']);
  assert.is(v.status, 0);
  assert.is(JSON.parse(v.stdout).reason, 'vouched');
});

test('a reader that stops reading (cidlock ... | head -1) ends the command quietly, without a stack trace', () => {
  const r = spawnSync('sh', ['-c', `"${process.execPath}" "${CIDLOCK}" check --config "${EXAMPLE}" | head -c 1 >/dev/null; "${process.execPath}" "${CIDLOCK}" help devices | head -c 1 >/dev/null`], { encoding: 'utf8', timeout: 30_000 });
  assert.is(r.stderr, '', 'EPIPE reached the terminal');
});

test('test --clientid: a CID sent with the CLIENTID command counts as TLS; a differing --cid is shown and ignored', () => {
  const cfg = workspace('policy:\n  mode: enforce\n');
  assert.is(cidlock(['devices', 'add', 'alice@example.com', LAPTOP, '--config', cfg]).status, 0);
  const ok = cidlock(['test', '--config', cfg, '--user', 'alice@example.com', '--protocol', 'imap', '--clientid', LAPTOP, '--json']);
  assert.is(ok.status, 0, ok.stdout + ok.stderr);
  const rec = JSON.parse(ok.stdout);
  assert.equal([rec.action, rec.reason, rec.cid_via, rec.tls], ['allow', 'registered_device', 'clientid', false]);
  const viaId = cidlock(['test', '--config', cfg, '--user', 'alice@example.com', '--protocol', 'imap', '--cid', LAPTOP]);
  assert.is(viaId.status, 1, 'an ID CID without --tls is ignored under require_tls');
  const both = cidlock(['test', '--config', cfg, '--user', 'alice@example.com', '--protocol', 'imap', '--clientid', 'UUID someone-elses-device', '--cid', LAPTOP]);
  assert.is(both.status, 1);
  assert.match(both.stdout, /CLIENTID command\) not registered for alice@example.com; the IMAP ID carried a different CID, ignored/);
  const bad = cidlock(['test', '--config', cfg, '--user', 'alice@example.com', '--protocol', 'imap', '--clientid', 'UUID']);
  assert.is(bad.status, 1);
  assert.match(bad.stdout, /malformed CID from the CLIENTID command: CID has no space/);
});

test('test --dovecot-json decides captured Dovecot requests, skipping reports', () => {
  const cfg = workspace('policy:\n  mode: enforce\n');
  const add = cidlock(['devices', 'add', 'alice@example.com', LAPTOP, '--config', cfg]);
  assert.is(add.status, 0, add.stderr);
  const r = cidlock(['test', '--config', cfg, '--dovecot-json', fixturePath('captures', 'dovecot-2.3.19-imap-pop3.jsonl'), '--json']);
  const recs = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.is(recs.length, 10);
  assert.equal(recs.map((x) => x.event === 'decision' ? `${x.protocol}:${x.action}:${x.reason}` : 'report'), [
    'imap:allow:registered_device', 'report',
    'imap:reject:no_device_proof', 'report', // the escaped CID is not alice's laptop, and TLS is off so it is ignored
    'imap:reject:no_device_proof', 'imap:reject:no_device_proof', 'report',
    'pop3:reject:no_device_proof', 'pop3:reject:no_device_proof', 'report',
  ]);
  assert.is(recs[2].evidence[0].status, 'ignored');
  assert.is(r.status, 1);
  const one = JSON.parse(readFileSync(fixturePath('captures', 'dovecot-2.3.19-imap-pop3.jsonl'), 'utf8').split('\n')[0]!).body;
  const stdin = cidlock(['test', '--config', cfg, '--dovecot-json', '-'], { input: one });
  assert.is(stdin.status, 0, stdin.stdout + stdin.stderr);
  assert.match(stdin.stdout, /^ALLOW +alice@example.com imap from 127.0.0.1 over TLS/);
});

test('test --postfix decides the authenticated block and leaves the others to Postfix', () => {
  const cfg = workspace('policy:\n  mode: enforce\n');
  const add = cidlock(['devices', 'add', 'alice@example.com', '--cert-fingerprint', '28:FC:DF:A5:4B:CC:0A:58:DD:FC:1B:CD:14:42:BB:99:42:10:5A:5F:C8:36:79:0F:2C:9C:1F:0C:62:FC:2F:E4', '--config', cfg]);
  assert.is(add.status, 0, add.stderr);
  const r = cidlock(['test', '--config', cfg, '--postfix', fixturePath('captures', 'postfix-3.7-policy-tls-client-cert.txt')]);
  assert.is(r.status, 0, r.stdout + r.stderr);
  assert.is((r.stdout.match(/NO DECISION +session is not authenticated/g) ?? []).length, 3);
  assert.match(r.stdout, /#4: ALLOW +alice@example.com smtp from 127.0.0.1 over TLS/);
  assert.match(r.stdout, /cert registered \[decided\]/);
});

test('devices: add, list, import, remove, with the raw CID never written or printed', () => {
  const cfg = workspace();
  const state = join(cfg, '..', 'state');
  const add = cidlock(['devices', 'add', 'Alice@Example.com', LAPTOP, '--label', 'laptop', '--config', cfg]);
  assert.is(add.status, 0, add.stderr);
  const id = /cid device ([0-9a-f]{12})/.exec(add.stdout)![1]!;
  assert.is(cidlock(['devices', 'add', 'alice@example.com', LAPTOP, '--config', cfg]).stdout.includes('already registered'), true);
  const bad = cidlock(['devices', 'add', 'alice@example.com', 'UUID', '--config', cfg]);
  assert.is(bad.status, 2);
  assert.match(bad.stderr, /CID has no space between type and token|CID/);
  const imp = cidlock(['devices', 'import', '-', '--config', cfg], { input: 'bob@example.com UUID bob-1 desk\nbob@example.com UUID bob-2\n' });
  assert.is(imp.status, 0, imp.stderr);
  assert.match(imp.stdout, /imported 2 devices: 2 added, 0 already registered/);
  const badImp = cidlock(['devices', 'import', '-', '--config', cfg], { input: 'carol@example.com UUID c-1\ncarol@example.com\n' });
  assert.is(badImp.status, 1);
  assert.match(badImp.stderr, /stdin:2: expected USER TYPE TOKEN/);
  const list = cidlock(['devices', 'list', '--config', cfg]);
  assert.is(list.status, 0);
  assert.match(list.stdout, /^USER +ID +KIND/);
  assert.is(list.stdout.trim().split('\n').length, 4);
  assert.not.ok(list.stdout.includes('carol'), 'a failed import must change nothing');
  const json = cidlock(['devices', 'list', 'alice@example.com', '--json', '--config', cfg]);
  assert.is(JSON.parse(json.stdout).label, 'laptop');
  const registry = ['registry.json', 'registry.journal'].map((f) => (existsSync(join(state, f)) ? readFileSync(join(state, f), 'utf8') : '')).join('');
  for (const raw of ['23bf83be-aad7', 'bob-1', 'bob-2']) assert.not.ok(registry.includes(raw), `raw CID ${raw} stored`);
  assert.is(cidlock(['devices', 'remove', 'alice@example.com', id, '--config', cfg]).status, 0);
  assert.is(cidlock(['devices', 'remove', 'alice@example.com', id, '--config', cfg]).status, 1);
  assert.is(cidlock(['devices', 'remove', 'bob@example.com', '--label', 'desk', '--config', cfg]).status, 0);
  assert.is(cidlock(['devices', 'list', 'bob@example.com', '--json', '--config', cfg]).stdout.trim().split('\n').length, 1);
});

test('devices add --cert registers the public-key fingerprint Postfix reports', () => {
  const cfg = workspace('policy:\n  mode: enforce\n');
  const add = cidlock(['devices', 'add', 'alice@example.com', '--cert', fixturePath('certs', 'alice-phone.pem'), '--config', cfg]);
  assert.is(add.status, 0, add.stderr);
  assert.match(add.stdout, /added cert device b62ae5e1e48d \(CN=alice-phone\)/);
  // The public-key fingerprint computed by openssl for this fixture, spelled the way Postfix logs it.
  const pubkey = 'B6:2A:E5:E1:E4:8D:F6:93:BE:C1:A1:AD:61:EA:4A:6F:E3:05:F0:ED:01:83:1F:FC:DF:FA:48:42:91:4C:DB:03';
  const ok = cidlock(['test', '--config', cfg, '--user', 'alice@example.com', '--protocol', 'smtp', '--tls', '--cert-fingerprint', pubkey]);
  assert.is(ok.status, 0, ok.stdout);
  assert.match(ok.stdout, /registered_device/);
  const missing = cidlock(['devices', 'add', 'alice@example.com', '--cert', '/nonexistent.pem', '--config', cfg]);
  assert.is(missing.status, 1);
  assert.match(missing.stderr, /\/nonexistent\.pem: ENOENT/);
  const notcert = cidlock(['devices', 'add', 'alice@example.com', '--cert', fixturePath('certs', 'alice-phone.key.pem'), '--config', cfg]);
  assert.is(notcert.status, 1);
  assert.match(notcert.stderr, /no PEM certificate found/);
});

test('users: set and show, with the layer that decided; users: entries in the rules file win', () => {
  const cfg = workspace('policy:\n  mode: monitor\nusers:\n  boss@example.com: { mode: off }\n');
  const set = cidlock(['users', 'set', 'bob@example.com', '--mode', 'enforce', '--config', cfg]);
  assert.is(set.status, 0, set.stderr);
  assert.match(set.stdout, /effective mode enforce \(registry users\["bob@example.com"\]\.mode\)/);
  const show = cidlock(['users', 'show', 'bob@example.com', '--config', cfg]);
  assert.match(show.stdout, /mode +enforce +\(registry users\["bob@example.com"\]\.mode\)/);
  const t = cidlock(['test', '--config', cfg, '--user', 'bob@example.com', '--protocol', 'imap', '--tls']);
  assert.is(t.status, 1);
  assert.match(t.stdout, /set by the registry/);
  const boss = cidlock(['users', 'set', 'boss@example.com', '--mode', 'enforce', '--config', cfg]);
  assert.match(boss.stderr, /overrides the registry/);
  assert.is(cidlock(['test', '--config', cfg, '--user', 'boss@example.com', '--protocol', 'imap']).status, 0);
  const cleared = cidlock(['users', 'set', 'bob@example.com', '--mode', 'default', '--config', cfg]);
  assert.match(cleared.stdout, /effective mode monitor \(policy\.mode\)/);
  assert.is(cidlock(['users', 'set', 'bob@example.com', '--mode', 'strict', '--config', cfg]).status, 2);
});

test('a rules error stops every command with status 2 and changes nothing', () => {
  const cfg = workspace('policy:\n  mode: strict\n');
  for (const args of [['test', '--user', 'a@b.c', '--protocol', 'imap'], ['devices', 'add', 'a@b.c', LAPTOP], ['users', 'set', 'a@b.c', '--mode', 'off']]) {
    const r = cidlock([...args, '--config', cfg]);
    assert.is(r.status, 2, args.join(' '));
    assert.match(r.stderr, /cidlock\.yaml:2:9: policy\.mode: expected one of off, monitor, learn, enforce, got "strict"/);
  }
});

test('accounts.default_domain: names typed without a domain are the accounts Dovecot and decisions use', () => {
  const cfg = workspace('accounts: { default_domain: example.com }\npolicy: { mode: monitor }\ndomains:\n  example.com: { mode: enforce }\n');
  assert.is(cidlock(['devices', 'add', 'Alice', LAPTOP, '--config', cfg]).status, 0);
  const listed = cidlock(['devices', 'list', '--json', '--config', cfg]);
  assert.is(JSON.parse(listed.stdout).user, 'alice@example.com');
  // Dovecot with auth_username_format = %Ln asks about "alice": the same account, proven.
  const t = cidlock(['test', '--user', 'alice', '--protocol', 'imap', '--tls', '--cid', LAPTOP, '--config', cfg]);
  assert.is(t.status, 0, t.stdout);
  assert.match(t.stdout, /^ALLOW {2}alice@example\.com imap/);
  const file = join(tempDir(), 'import.txt');
  writeFileSync(file, 'bob UUID 0f0f0f0f-bob\n');
  assert.is(cidlock(['devices', 'import', file, '--config', cfg]).status, 0);
  assert.match(cidlock(['devices', 'list', 'bob@example.com', '--config', cfg]).stdout, /bob@example\.com/);
});

test.run();
