import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { DEFAULT_LISTEN, loadRulesFile, parseRules } from '../src/core/rules/load.js';
import { formatRulesIssue } from '../src/core/rules/types.js';
import { effectivePolicy } from '../src/core/rules/resolve.js';
import { fixturePath, repoRoot } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

/** Each broken file and the exact lines an operator sees, relative to the fixture folder. */
const BROKEN: Record<string, string[]> = {
  'bad-yaml-syntax.yaml': ['bad-yaml-syntax.yaml:2:1: YAML syntax: Flow map in block collection must be sufficiently indented and end with a }'],
  'unknown-top-key.yaml': ['unknown-top-key.yaml:1:1: polcy: unknown key "polcy" (expected one of: listen, state_dir, store, dovecot, accounts, policy, domains, users, limits, defences, counters, alerts, audit, webhook, log, admin, portal, notice, pending); did you mean "policy"?'],
  'bad-mode.yaml': ['bad-mode.yaml:3:11: domains["example.com"].mode: expected one of off, monitor, learn, enforce, got "enforced"'],
  'bad-evidence.yaml': ['bad-evidence.yaml:4:19: users["alice@example.com"].protocols.imap[1]: expected one of cid, cert, vouch, device_type, got "cidd"'],
  'bad-bool.yaml': ['bad-bool.yaml:2:16: policy.require_tls: expected true or false, got "yes" (YAML 1.2 reads yes/no/on/off as text)'],
  'bad-duration.yaml': ['bad-duration.yaml:2:14: policy.vouch_ttl: expected a duration with a unit such as 30m, 1h or 45s, got 30 (a bare number is ambiguous)'],
  'bad-cidr.yaml': ['bad-cidr.yaml:4:7: policy.networks[1]: host bits set in 10.0.0.1/8; did you mean 10.0.0.0/8?'],
  'bad-listen.yaml': ['bad-listen.yaml:2:12: listen.dovecot: expected host:port (127.0.0.1:8425, [::1]:8425), a port number, { address: host:port, clients: [CIDR, ...] } or off; got "127.0.0.1:99999"'],
  'duplicate-key.yaml': ['duplicate-key.yaml:3:3: policy.mode: duplicate key (first set at line 2); remove one of them'],
  'duplicate-user.yaml': ['duplicate-user.yaml:3:3: users["alice@example.com"]: same user as "Alice@Example.com" (names are compared lowercased)'],
  'bad-learn-until.yaml': ['bad-learn-until.yaml:3:37: users["dave@example.org"].learn.until: expected a date (2026-12-31), a UTC timestamp (2026-12-31T18:00:00Z) or null, got "tomorrow"'],
  'unknown-protocol.yaml': ['unknown-protocol.yaml:3:5: policy.protocols.imaps: unknown key "imaps" (expected one of: imap, pop3, submission, smtp, sieve, other); did you mean "imap"?'],
  'bad-message.yaml': ['bad-message.yaml:2:12: policy.message: only printable ASCII on one line: the text goes into IMAP, POP3 and SMTP replies'],
  'empty-id-fields.yaml': ['empty-id-fields.yaml:2:14: dovecot.id_fields: list at least one IMAP ID field name, e.g. [clientid]'],
  'several-errors.yaml': [
    'several-errors.yaml:3:16: policy.require_tls: expected true or false, got "maybe"',
    'several-errors.yaml:6:16: domains["example.com"].vouch_ttl: expected a duration up to 7d such as 30m, 1h or 0s (no vouching), got "1y"',
    'several-errors.yaml:9:32: users["bob@example.com"].protocols.pop3[1]: vouch is listed twice',
  ],
};

for (const [name, expected] of Object.entries(BROKEN)) {
  test(`broken rules file ${name} is rejected with file:line:col and key path`, () => {
    const file = fixturePath('rules', name);
    const r = loadRulesFile(file);
    assert.is(r.ok, false);
    if (r.ok) return;
    const dir = `${fixturePath('rules')}/`;
    assert.equal(r.errors.map((e) => formatRulesIssue(e).replace(dir, '')), expected);
  });
}

test('the example a newcomer copies watches first: monitor everywhere, nothing locked, defences enforced, audit under state_dir', () => {
  const r = loadRulesFile(join(repoRoot, 'examples', 'cidlock.yaml'));
  if (!r.ok) assert.unreachable(r.errors.map(formatRulesIssue).join('\n'));
  if (!r.ok) return;
  assert.equal(r.warnings, []);
  const { rules } = r;
  assert.equal(rules.listen, DEFAULT_LISTEN, 'the defaults, written out');
  assert.is(rules.stateDir, '/var/lib/cidlock');
  assert.is(rules.domains.size, 0);
  assert.is(rules.users.size, 0);
  for (const user of ['alice@example.com', 'bob@example.org', 'x']) assert.is(effectivePolicy(rules, user).mode, 'monitor');
  assert.is(rules.defences.mode, 'enforce');
  assert.is(rules.audit.file, '/var/lib/cidlock/audit.log');
  assert.is(rules.dovecot.apiKey, '');
  assert.is(rules.dovecot.apiKeyFile, '/var/lib/cidlock/dovecot.key');
});

test('the advanced example is valid and means what its comments say', () => {
  const r = loadRulesFile(join(repoRoot, 'examples', 'cidlock-advanced.yaml'));
  if (!r.ok) assert.unreachable(r.errors.map(formatRulesIssue).join('\n'));
  if (!r.ok) return;
  assert.equal(r.warnings, []);
  const { rules } = r;
  assert.is(effectivePolicy(rules, 'carol@example.org').mode, 'monitor');
  assert.is(effectivePolicy(rules, 'bob@example.com').mode, 'enforce');
  assert.is(effectivePolicy(rules, 'dave@example.org').learn.max_devices, 3);
  assert.equal(effectivePolicy(rules, 'alice@example.com').protocols.imap, ['cid', 'device_type']);
  assert.is(effectivePolicy(rules, 'relay@example.com').protocols.smtp, 'deny');
  assert.is(rules.portal?.url, 'https://mail.example.org/cidlock/');
  assert.equal(rules.portal?.userModes, ['learn', 'enforce']);
  assert.equal(rules.notice?.transport, { kind: 'sendmail', command: ['/usr/sbin/sendmail'] });
  assert.is(rules.pending.perAccount, 10);
});

test('portal:, notice: and pending: validate with file:line:col, come together, and have safe defaults', () => {
  const ok = parseRules('portal: { url: "https://mail.example.org/cidlock" }\nnotice: { from: "postmaster@example.org", smtp: "127.0.0.1:25" }\n', '/etc/cidlock/cidlock.yaml');
  if (!ok.ok) assert.unreachable(ok.errors.map(formatRulesIssue).join('\n'));
  if (!ok.ok) return;
  assert.is(ok.rules.portal!.url, 'https://mail.example.org/cidlock/', 'a trailing slash is added');
  assert.is(ok.rules.portal!.linkTtlMs, 30 * 60_000);
  assert.is(ok.rules.portal!.sessionTtlMs, 15 * 60_000);
  assert.equal(ok.rules.notice!.transport, { kind: 'smtp', host: '127.0.0.1', port: 25 });
  assert.is(ok.rules.notice!.perAccountPerDay, 3);
  assert.equal(ok.rules.listen.portal, { host: '127.0.0.1', port: 8427 });
  const bad = parseRules([
    'portal:',
    '  url: "ftp://x/?a=1"',
    '  user_modes: [enforce, strict]',
    '  link_ttl: 2d',
    'notice:',
    '  from: "evil\\r\\nBcc: x@y"',
    '  sendmail: sendmail',
    '  per_account_per_day: 0',
    'pending: { expire: 1y }',
    '',
  ].join('\n'), '/etc/cidlock/cidlock.yaml');
  assert.ok(!bad.ok);
  if (bad.ok) return;
  assert.equal(bad.errors.map((e) => `${e.line}:${e.col} ${e.path}`), [
    '2:8 portal.url', '3:25 portal.user_modes[1]', '4:13 portal.link_ttl', '6:9 notice.from', '7:13 notice.sendmail', '8:24 notice.per_account_per_day', '9:20 pending.expire',
  ]);
  const alone = parseRules('portal: { url: "https://x.example/" }\n', '/etc/cidlock/cidlock.yaml');
  assert.ok(!alone.ok && /needs "notice:" too/.test(alone.errors[0]!.message));
  const plain = parseRules('portal: { url: "http://mail.example.org/" }\nnotice: { from: a@b.example }\n', '/etc/cidlock/cidlock.yaml');
  assert.ok(plain.ok && /clear text/.test(plain.warnings[0]!.message));
  const none = parseRules('', '/etc/cidlock/cidlock.yaml');
  assert.ok(none.ok && none.rules.portal === null && none.rules.notice === null);
});

test('audit.file and dovecot.api_key_file: relative paths are under state_dir and the rules file\'s folder; short keys are refused', () => {
  const dir = tempDir();
  const r = parseRules('state_dir: /var/lib/x\naudit: { file: logs/audit.jsonl }\ndovecot: { api_key_file: keys/dovecot.key }\n', join(dir, 'cidlock.yaml'));
  if (!r.ok) assert.unreachable(r.errors.map(formatRulesIssue).join('\n'));
  if (!r.ok) return;
  assert.is(r.rules.audit.file, '/var/lib/x/logs/audit.jsonl');
  assert.is(r.rules.dovecot.apiKeyFile, join(dir, 'keys', 'dovecot.key'));
  const short = parseRules('dovecot: { api_key: "short" }\n', join(dir, 'cidlock.yaml'));
  assert.ok(!short.ok && /dovecot\.api_key: expected at least 16 printable characters/.test(formatRulesIssue(short.errors[0]!)));
  const both = parseRules('dovecot: { api_key: "0123456789abcdef0", api_key_file: /k }\n', join(dir, 'cidlock.yaml'));
  assert.ok(!both.ok && /give api_key or api_key_file, not both/.test(formatRulesIssue(both.errors[0]!)));
});

test('listen: a TCP listener may name the clients allowed to use it; accounts and defences validate', () => {
  const r = parseRules('listen:\n  postfix: { address: 192.0.2.5:10031, clients: [192.0.2.25/32, 2001:db8::/64] }\naccounts: { default_domain: Example.COM }\ndefences: { mode: monitor }\n', '/etc/cidlock/cidlock.yaml');
  if (!r.ok) assert.unreachable(r.errors.map(formatRulesIssue).join('\n'));
  if (!r.ok) return;
  const pf = r.rules.listen.postfix;
  assert.ok(pf !== null && 'host' in pf && pf.host === '192.0.2.5' && pf.port === 10031);
  assert.equal(pf !== null && 'host' in pf ? pf.clients?.map((c) => c.text) : [], ['192.0.2.25/32', '2001:db8::/64']);
  assert.equal(r.warnings, [], 'a non-loopback listener with a clients list is not warned about');
  assert.is(r.rules.accounts.defaultDomain, 'example.com');
  assert.is(r.rules.defences.mode, 'monitor');
  const bad = parseRules('listen:\n  postfix: { clients: [10.0.0.0/8] }\ndefences: { mode: strict }\naccounts: { default_domain: "not a domain" }\n', '/etc/cidlock/cidlock.yaml');
  assert.ok(!bad.ok);
  if (bad.ok) return;
  assert.equal(bad.errors.map((e) => `${e.path}: ${e.message.slice(0, 30)}`), [
    'listen.postfix: missing "address" (host:port)',
    'defences.mode: expected one of off, monitor, ',
    'accounts.default_domain: expected a domain name such as',
  ]);
});

test('an empty file means built-in defaults: monitor everywhere, loopback listeners', () => {
  const r = parseRules('', '/etc/cidlock/cidlock.yaml');
  assert.ok(r.ok);
  if (!r.ok) return;
  assert.is(r.rules.stateDir, '/etc/cidlock/state');
  const eff = effectivePolicy(r.rules, 'x@example.com');
  assert.is(eff.mode, 'monitor');
  assert.is(eff.require_tls, true);
  assert.is(eff.vouch_ttl, 30 * 60_000);
  assert.equal(eff.protocols.smtp, ['cert', 'vouch']);
  assert.is(eff.sources.mode!.layer, 'default');
});

test('listen accepts ports, IPv6, off and unix sockets only where they make sense', () => {
  const r = parseRules('listen:\n  dovecot: 9000\n  postfix: unix:/run/cidlock/policy.sock\n  socketmap: off\n  admin: "[::1]:8426"\n', '/x/r.yaml');
  assert.ok(r.ok);
  if (!r.ok) return;
  assert.equal(r.rules.listen, { dovecot: { host: '127.0.0.1', port: 9000 }, postfix: { path: '/run/cidlock/policy.sock' }, socketmap: null, admin: { host: '::1', port: 8426 }, portal: { host: '127.0.0.1', port: 8427 } });
  const bad = parseRules('listen:\n  admin: unix:/tmp/a.sock\n', '/x/r.yaml');
  assert.is(bad.ok, false);
  if (!bad.ok) assert.match(bad.errors[0]!.message, /only supported for postfix and socketmap/);
});

test('a public listen address is allowed but warned about', () => {
  const r = parseRules('listen:\n  dovecot: 0.0.0.0:8425\n', '/x/r.yaml');
  assert.ok(r.ok);
  assert.match(r.warnings.map((w) => w.message).join('\n'), /not a loopback address/);
});

test('device_types without any protocol accepting device_type is warned about', () => {
  const r = parseRules('users:\n  a@b.c: { device_types: ["Thunderbird*"] }\n', '/x/r.yaml');
  assert.ok(r.ok);
  assert.match(r.warnings.map((w) => w.message).join('\n'), /no protocols list accepts device_type/);
});

test('user and domain names are lowercased; learn.until accepts dates and timestamps', () => {
  const r = parseRules('domains:\n  Example.COM: { mode: enforce }\nusers:\n  Bob@Example.com:\n    learn: { until: 2026-12-31 }\n  eve@x.org:\n    learn: { until: "2026-12-31T18:00:00+01:00" }\n', '/x/r.yaml');
  assert.ok(r.ok);
  if (!r.ok) return;
  assert.ok(r.rules.domains.has('example.com'));
  assert.is(r.rules.users.get('bob@example.com')!.learn!.until, Date.parse('2026-12-31T00:00:00Z'));
  assert.is(r.rules.users.get('eve@x.org')!.learn!.until, Date.parse('2026-12-31T17:00:00Z'));
});

test('every problem is reported in one run, not just the first', () => {
  const text = 'policy:\n  mode: strict\n  networks: [300.1.1.1/8]\n  color: blue\nusers:\n  "a b@x": {}\n';
  const r = parseRules(text, '/x/r.yaml');
  assert.is(r.ok, false);
  if (r.ok) return;
  assert.equal(r.errors.map((e) => e.path), ['policy.mode', 'policy.networks[0]', 'policy.color', 'users["a b@x"]']);
});

test('a missing rules file is a located error, not a crash', () => {
  const r = loadRulesFile('/nonexistent/cidlock.yaml');
  assert.is(r.ok, false);
  if (!r.ok) assert.is(formatRulesIssue(r.errors[0]!), '/nonexistent/cidlock.yaml:1:1: no such file');
});

test('YAML anchors and aliases resolve to the values they stand for', () => {
  const r = parseRules('policy:\n  networks: &office [192.0.2.0/24]\ndomains:\n  example.com: { networks: *office }\n', '/x/r.yaml');
  assert.ok(r.ok);
  if (r.ok) assert.is(r.rules.domains.get('example.com')!.networks![0]!.text, '192.0.2.0/24');
});

test('limits, counters, alerts, audit, webhook, log and admin: defaults, and every mistake located', () => {
  const def = parseRules('', '/etc/cidlock/cidlock.yaml');
  assert.ok(def.ok);
  if (!def.ok) return;
  assert.is(def.rules.limits.length, 5);
  assert.equal(def.rules.limits[0]!.then, { action: 'delay', seconds: 5 });
  assert.is(def.rules.audit.file, '/etc/cidlock/state/audit.log');
  assert.is(def.rules.log.decisions, 'refusals');
  assert.is(def.rules.webhook, null);
  const badUrl = parseRules('webhook: { url: "http://[::1", secret: "0123456789abcdef0123" }\n', '/x/r.yaml');
  assert.is(badUrl.ok, false);
  if (!badUrl.ok) assert.match(badUrl.errors[0]!.message, /expected an http:\/\/ or https:\/\/ URL/);
  const off = parseRules('limits: []\naudit: { file: "" }\n', '/x/r.yaml');
  assert.ok(off.ok && off.rules.limits.length === 0 && off.rules.audit.file === '');
  const bad = parseRules([
    'limits:',
    '  - { key: address, failures: 5, window: 10m, then: block 1h }',
    '  - { key: user, distinct_users: 5, window: 10m, then: reject }',
    '  - { key: address, window: 10m, then: delay 5s }',
    '  - { key: host, failures: 1, window: 1m, then: reject }',
    'webhook: { url: "https://portal.example/hook", secret: short }',
    'audit: { fsync: sometimes }',
    'log: { decisions: verbose }',
    'admin: { token: abc }',
    'counters: { prefix_v4: 33 }',
  ].join('\n'), '/x/r.yaml');
  assert.is(bad.ok, false);
  if (bad.ok) return;
  assert.equal(bad.errors.map((e) => `${e.line}:${e.col} ${e.path}: ${e.message.split(',')[0]}`), [
    '2:53 limits[0].then: expected "delay <1s..30s>"',
    '3:18 limits[1].distinct_users: distinct_users counts user names per client address: use it with key: address',
    '4:5 limits[2]: give exactly one of "failures" (failed logins) or "distinct_users" (user names tried',
    '5:12 limits[3].key: expected one of address',
    '6:56 webhook.secret: a webhook needs a secret of at least 16 characters: receivers verify the HMAC signature with it',
    '7:17 audit.fsync: expected one of always',
    '8:19 log.decisions: expected one of all',
    '9:17 admin.token: expected at least 16 printable characters without spaces (it sits in an HTTP header)',
    '10:24 counters.prefix_v4: expected a whole number from 8 to 32',
  ]);
});

test('store: the file store by default; a Redis URL with its password file and key prefix; mistakes located, no password echoed', () => {
  const none = parseRules('', '/etc/cidlock/cidlock.yaml');
  assert.ok(none.ok && none.rules.store.redis === null);
  const r = parseRules('store:\n  redis: sentinel://10.0.0.5,10.0.0.6:26380/mail/2\n  password_file: redis.pass\n  key_prefix: "site1:"\n', '/etc/cidlock/cidlock.yaml');
  if (!r.ok) assert.unreachable(r.errors.map(formatRulesIssue).join('\n'));
  if (!r.ok) return;
  assert.equal(r.rules.store.redis, {
    url: 'sentinel://10.0.0.5,10.0.0.6:26380/mail/2',
    address: { target: { kind: 'sentinel', sentinels: [{ host: '10.0.0.5', port: 26379 }, { host: '10.0.0.6', port: 26380 }], master: 'mail' }, db: 2 },
    passwordFile: '/etc/cidlock/redis.pass',
    keyPrefix: 'site1:',
    replicas: 0,
  });
  const plain = parseRules('store: { redis: "redis://127.0.0.1" }\n', '/x/r.yaml');
  assert.ok(plain.ok && plain.rules.store.redis?.keyPrefix === 'cidlock:' && plain.rules.store.redis.passwordFile === '');
  const bad = parseRules([
    'store:',
    '  redis: "redis://:hunter2secret@10.0.0.5:6379/0"',
    '  key_prefix: "with space"',
  ].join('\n'), '/x/r.yaml');
  assert.is(bad.ok, false);
  if (bad.ok) return;
  const text = bad.errors.map(formatRulesIssue).join('\n');
  assert.match(text, /r\.yaml:2:10: store\.redis: .*password_file/);
  assert.match(text, /r\.yaml:3:15: store\.key_prefix: expected 1 to 64 printable characters/);
  assert.not.ok(text.includes('hunter2secret'), text);
  const orphan = parseRules('store: { password_file: /etc/cidlock/redis.pass }\n', '/x/r.yaml');
  assert.ok(!orphan.ok && formatRulesIssue(orphan.errors[0]!).includes('store: password_file, key_prefix and replicas belong to a Redis store'));
});

test.run();
