import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decide, type DecideContext } from '../src/core/decide.js';
import { fileStore } from '../src/core/registry/file-store.js';
import { openRegistry, type Registry } from '../src/core/registry/registry.js';
import type { AuthRequest } from '../src/core/request.js';
import type { Rules } from '../src/core/rules/types.js';
import { createVouchStore, type VouchStore } from '../src/core/vouches.js';
import { rulesFrom, tempDir } from './helpers/tmp.js';

const LAPTOP = { type: 'UUID', token: '23bf83be-aad7-46aa-9e0f-39191ccf402f' };
const STRANGER = { type: 'UUID', token: 'ffffffff-0000-0000-0000-000000000000' };
const CERT = '28fcdfa54bcc0a58ddfc1bcd1442bb9942105a5fc836790f2c9c1f0c62fc2fe4';
const OTHER_CERT = 'c6f1c99014d9435f4fc2afb5918e4c2e8477cf094e5041a597655b47644594f0';
const NOW = Date.parse('2026-11-28T12:00:00Z');

async function setup(yaml: string): Promise<{ rules: Rules; registry: Registry; vouches: VouchStore; ctx: (now?: number) => DecideContext }> {
  const dir = tempDir();
  const rules = rulesFrom(yaml, dir);
  const registry = await openRegistry(fileStore(rules.stateDir), { create: true });
  const vouches = createVouchStore();
  return { rules, registry, vouches, ctx: (now = NOW) => ({ rules, registry, vouches, now }) };
}

function req(over: Partial<AuthRequest> = {}): AuthRequest {
  return { protocol: 'imap', user: 'alice@example.com', remote: '198.51.100.7', tls: true, certFingerprints: [], stage: 'before_auth', ...over };
}

const ENFORCE = 'policy:\n  mode: enforce\n';

test('enforce: a registered CID over TLS is allowed and names the device', async () => {
  const s = await setup(ENFORCE);
  const dev = await s.registry.add('alice@example.com', { kind: 'cid', cid: LAPTOP, label: 'laptop' }, 'admin');
  const d = decide(req({ cid: LAPTOP }), s.ctx());
  assert.is(d.action, 'allow');
  assert.is(d.reason, 'registered_device');
  assert.is(d.rule, 'policy.protocols.imap (built-in default)');
  assert.equal(d.proven, dev.status === 'added' ? { id: dev.device.id, hash: dev.device.hash } : undefined);
  assert.is(d.would_reject, false);
  const cid = d.evidence.find((e) => e.kind === 'cid')!;
  assert.is(cid.status, 'registered');
  assert.is(cid.used, true);
});

test('enforce: an unregistered CID is an unknown device, refused with the generic message', async () => {
  const s = await setup(ENFORCE);
  await s.registry.add('alice@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  const d = decide(req({ cid: STRANGER }), s.ctx());
  assert.is(d.action, 'reject');
  assert.is(d.reason, 'unknown_device');
  assert.is(d.rule, 'policy.mode');
  assert.is(d.layer, 'server');
  assert.is(d.message, '');
});

test('enforce: no CID at all is refused as no_device_proof', async () => {
  const s = await setup(ENFORCE);
  const d = decide(req(), s.ctx());
  assert.is(d.action, 'reject');
  assert.is(d.reason, 'no_device_proof');
  assert.match(d.why, /imap accepts \[cid\]/);
});

test('a CID registered for another user proves nothing for this one', async () => {
  const s = await setup(ENFORCE);
  await s.registry.add('bob@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  assert.is(decide(req({ cid: LAPTOP }), s.ctx()).reason, 'unknown_device');
});

test('CID types compare case-insensitively, tokens exactly', async () => {
  const s = await setup(ENFORCE);
  await s.registry.add('alice@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  assert.is(decide(req({ cid: { type: 'UUID', token: LAPTOP.token.toUpperCase() } }), s.ctx()).action, 'reject');
});

test('require_tls: a registered CID sent without TLS is ignored; with require_tls false it counts', async () => {
  const s = await setup(ENFORCE);
  await s.registry.add('alice@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  const d = decide(req({ cid: LAPTOP, tls: false }), s.ctx());
  assert.is(d.action, 'reject');
  assert.is(d.reason, 'no_device_proof');
  assert.is(d.evidence.find((e) => e.kind === 'cid')!.status, 'ignored');
  const s2 = await setup(`${ENFORCE}  require_tls: false\n`);
  await s2.registry.add('alice@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  assert.is(decide(req({ cid: LAPTOP, tls: false }), s2.ctx()).action, 'allow');
});

test('a CID from the CLIENTID command counts as sent over TLS (the login plugin accepts it nowhere else), and says how it came', async () => {
  const s = await setup(ENFORCE);
  await s.registry.add('alice@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  // The login's own tls flag does not count here: the plugin accepts CLIENTID only over TLS.
  const d = decide(req({ cid: LAPTOP, tls: false, cidVia: 'clientid' }), s.ctx());
  assert.is(d.action, 'allow');
  assert.match(d.evidence.find((e) => e.kind === 'cid')!.detail, /^UUID CID \(CLIENTID command\) of registered device/);
  const id = decide(req({ cid: LAPTOP, cidVia: 'imap_id' }), s.ctx());
  assert.match(id.evidence.find((e) => e.kind === 'cid')!.detail, /^UUID CID \(IMAP ID\) of registered device/);
  const both = decide(req({ cid: STRANGER, cidVia: 'clientid', cidMismatch: true }), s.ctx());
  assert.is(both.action, 'reject');
  assert.match(both.evidence.find((e) => e.kind === 'cid')!.detail, /not registered for alice@example.com; the IMAP ID carried a different CID, ignored$/);
});

test('learn: a CLIENTID device without a client name is labelled with its CID type, address and day', async () => {
  const s = await setup('policy:\n  mode: learn\n');
  const d = decide(req({ cid: STRANGER, cidVia: 'clientid', remote: '203.0.113.44' }), s.ctx());
  assert.is(d.reason, 'learning');
  assert.is(d.learn!.label, 'UUID device first seen from 203.0.113.44 on 2026-11-28');
});

test('a malformed CID counts as no CID and the reason says so', async () => {
  const s = await setup(ENFORCE);
  const d = decide(req({ cidProblem: 'malformed CID in IMAP ID field clientid: CID has no space between type and token' }), s.ctx());
  assert.is(d.reason, 'no_device_proof');
  const e = d.evidence.find((x) => x.kind === 'cid')!;
  assert.is(e.status, 'malformed');
  assert.match(e.detail, /no space between type and token; counted as no CID/);
});

test('monitor: evaluates like enforce, allows, and marks would_reject', async () => {
  const s = await setup('policy:\n  mode: monitor\n');
  const d = decide(req({ cid: STRANGER }), s.ctx());
  assert.is(d.action, 'allow');
  assert.is(d.would_reject, true);
  assert.is(d.reason, 'unknown_device');
  assert.is(d.mode, 'monitor');
  await s.registry.add('alice@example.com', { kind: 'cid', cid: STRANGER }, 'admin');
  const ok = decide(req({ cid: STRANGER }), s.ctx());
  assert.is(ok.would_reject, false);
  assert.is(ok.reason, 'registered_device');
});

test('off: allows without evaluating any evidence', async () => {
  const s = await setup('policy:\n  mode: off\n  protocols: { imap: deny }\n');
  const d = decide(req({ cid: STRANGER }), s.ctx());
  assert.is(d.action, 'allow');
  assert.is(d.reason, 'mode_off');
  assert.equal(d.evidence, []);
});

test('precedence: server < domain < registry < users: entry, each named as the deciding layer', async () => {
  const s = await setup('policy:\n  mode: monitor\ndomains:\n  example.com: { mode: enforce }\nusers:\n  carol@example.com: { mode: off }\n');
  const bob = decide(req({ user: 'bob@example.com' }), s.ctx());
  assert.is(bob.mode, 'enforce');
  assert.is(bob.layer, 'domain');
  assert.is(bob.rule, 'domains["example.com"].mode');
  const other = decide(req({ user: 'x@example.org' }), s.ctx());
  assert.is(other.mode, 'monitor');
  assert.is(other.layer, 'server');
  await s.registry.setMode('bob@example.com', 'monitor');
  const bob2 = decide(req({ user: 'bob@example.com' }), s.ctx());
  assert.is(bob2.mode, 'monitor');
  assert.is(bob2.layer, 'registry');
  assert.is(bob2.rule, 'registry users["bob@example.com"].mode');
  // The rules file's users: entry is the operator's final word, above the registry.
  await s.registry.setMode('carol@example.com', 'enforce');
  const carol = decide(req({ user: 'carol@example.com' }), s.ctx());
  assert.is(carol.mode, 'off');
  assert.is(carol.layer, 'user');
});

test('precedence merges key by key: a domain setting protocols keeps the server mode', async () => {
  const s = await setup('policy:\n  mode: enforce\n  protocols: { pop3: deny }\ndomains:\n  example.com: { protocols: { imap: allow } }\n');
  const imap = decide(req(), s.ctx());
  assert.is(imap.reason, 'protocol_allow');
  assert.is(imap.rule, 'domains["example.com"].protocols.imap');
  const pop = decide(req({ protocol: 'pop3' }), s.ctx());
  assert.is(pop.reason, 'protocol_deny');
  assert.is(pop.rule, 'policy.protocols.pop3');
});

test('unlisted protocols fall under protocols.other, never silently unlocked', async () => {
  const s = await setup(ENFORCE);
  const d = decide(req({ protocol: 'newproto' }), s.ctx());
  assert.is(d.protocol.name, 'other');
  assert.is(d.action, 'reject');
});

test('networks: IPv4, IPv6 and IPv4-mapped clients in a trusted network bypass the lock', async () => {
  const s = await setup(`${ENFORCE}  networks: [192.0.2.0/24, "2001:db8::/32"]\n`);
  for (const remote of ['192.0.2.55', '2001:db8:1::9']) {
    const d = decide(req({ remote }), s.ctx());
    assert.is(d.action, 'allow', remote);
    assert.is(d.reason, 'trusted_network');
  }
  assert.is(decide(req({ remote: '192.0.2.55' }), s.ctx()).rule, 'policy.networks[0]');
  assert.is(decide(req({ remote: '2001:db8:1::9' }), s.ctx()).rule, 'policy.networks[1]');
  assert.is(decide(req({ remote: '192.0.3.1' }), s.ctx()).action, 'reject');
  assert.is(decide(req({ remote: null }), s.ctx()).action, 'reject');
});

test('cert evidence: registered public-key fingerprint proves the device on smtp; certificate fingerprint also matches', async () => {
  const s = await setup(ENFORCE);
  await s.registry.add('alice@example.com', { kind: 'cert', fingerprint: CERT }, 'admin');
  assert.is(decide(req({ protocol: 'smtp', certFingerprints: [CERT] }), s.ctx()).reason, 'registered_device');
  assert.is(decide(req({ protocol: 'smtp', certFingerprints: [OTHER_CERT, CERT] }), s.ctx()).reason, 'registered_device');
  const d = decide(req({ protocol: 'smtp', certFingerprints: [OTHER_CERT] }), s.ctx());
  assert.is(d.reason, 'unknown_device');
  // imap accepts only [cid]: a registered certificate is not accepted evidence there.
  assert.is(decide(req({ protocol: 'imap', certFingerprints: [CERT] }), s.ctx()).action, 'reject');
});

/** A vouch from a device registered for alice, as the engine records one after her login. */
async function vouchFromLaptop(s: Awaited<ReturnType<typeof setup>>): Promise<void> {
  const r = await s.registry.add('alice@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  if (r.status === 'full') throw new Error('setup');
  s.vouches.add('alice@example.com', '198.51.100.7', { at: NOW, device: r.device.id, hash: r.device.hash }, 600_000);
}

test('vouch: a proven device vouches for the same user and address within vouch_ttl only', async () => {
  const s = await setup(`${ENFORCE}  vouch_ttl: 10m\n`);
  await vouchFromLaptop(s);
  const pop = decide(req({ protocol: 'pop3' }), s.ctx(NOW + 60_000));
  assert.is(pop.action, 'allow');
  assert.is(pop.reason, 'vouched');
  assert.is(decide(req({ protocol: 'pop3', remote: '198.51.100.8' }), s.ctx()).action, 'reject');
  assert.is(decide(req({ protocol: 'pop3', user: 'bob@example.com' }), s.ctx()).action, 'reject');
  const late = decide(req({ protocol: 'pop3' }), s.ctx(NOW + 600_001));
  assert.is(late.action, 'reject');
  assert.is(late.evidence.find((e) => e.kind === 'vouch')!.status, 'expired');
  // imap does not accept vouch by default
  assert.is(decide(req(), s.ctx()).action, 'reject');
});

test('vouch never admits a request presenting an unregistered CID or certificate', async () => {
  const s = await setup(`${ENFORCE}  protocols: { imap: [cid, vouch], smtp: [cert, vouch] }\n`);
  await vouchFromLaptop(s);
  assert.is(decide(req(), s.ctx()).reason, 'vouched');
  const d = decide(req({ cid: STRANGER }), s.ctx());
  assert.is(d.action, 'reject');
  assert.is(d.reason, 'unknown_device');
  assert.match(d.why, /vouches never cover an unknown device/);
  assert.is(decide(req({ protocol: 'smtp', certFingerprints: [OTHER_CERT] }), s.ctx()).reason, 'unknown_device');
});

test('device_type: a client name matching an approved glob is evidence where the protocol accepts it', async () => {
  const s = await setup(`${ENFORCE}users:\n  alice@example.com:\n    device_types: ["Thunderbird*"]\n    protocols: { imap: [cid, device_type] }\n  bob@example.com:\n    device_types: ["Thunderbird*"]\n`);
  const d = decide(req({ clientName: 'thunderbird' }), s.ctx());
  assert.is(d.reason, 'device_type');
  assert.is(d.rule, 'users["alice@example.com"].device_types');
  assert.is(decide(req({ clientName: 'K-9 Mail' }), s.ctx()).action, 'reject');
  assert.is(decide(req({}), s.ctx()).action, 'reject');
  // bob's protocols do not list device_type: the name is shown but decides nothing.
  const bob = decide(req({ user: 'bob@example.com', clientName: 'Thunderbird' }), s.ctx());
  assert.is(bob.action, 'reject');
  assert.is(bob.evidence.find((e) => e.kind === 'device_type')!.accepted, false);
});

test('learn: an unknown CID over TLS is allowed while under max_devices, with a learn candidate', async () => {
  const s = await setup('policy:\n  mode: learn\n  learn: { max_devices: 2 }\n');
  const d = decide(req({ cid: STRANGER, clientName: 'Thunderbird' }), s.ctx());
  assert.is(d.action, 'allow');
  assert.is(d.reason, 'learning');
  assert.ok(d.learn);
  assert.is(d.learn!.kind, 'cid');
  assert.is(d.learn!.label, 'Thunderbird');
  // Without TLS nothing is learned, whatever require_tls says.
  const s2 = await setup('policy:\n  mode: learn\n  require_tls: false\n');
  const plain = decide(req({ cid: STRANGER, tls: false }), s2.ctx());
  assert.is(plain.action, 'reject');
  assert.match(plain.why, /only learned over TLS/);
});

test('learn: past max_devices or after until, unknown devices are refused like enforce', async () => {
  const s = await setup('policy:\n  mode: learn\n  learn: { max_devices: 1, until: 2026-12-01 }\n');
  await s.registry.add('alice@example.com', { kind: 'cid', cid: LAPTOP }, 'learn');
  const full = decide(req({ cid: STRANGER }), s.ctx());
  assert.is(full.action, 'reject');
  assert.match(full.why, /already has 1 of at most 1 devices/);
  assert.is(decide(req({ cid: LAPTOP }), s.ctx()).action, 'allow');
  const s2 = await setup('policy:\n  mode: learn\n  learn: { max_devices: 5, until: 2026-12-01 }\n');
  const late = decide(req({ cid: STRANGER }), s2.ctx(Date.parse('2026-12-01T00:00:01Z')));
  assert.is(late.action, 'reject');
  assert.match(late.why, /learning ended/);
  // Without any identity there is nothing to learn.
  assert.is(decide(req(), s2.ctx()).reason, 'no_device_proof');
});

test('learn: an unknown client certificate is a learn candidate on smtp', async () => {
  const s = await setup('policy:\n  mode: learn\n');
  const d = decide(req({ protocol: 'smtp', certFingerprints: [CERT] }), s.ctx());
  assert.is(d.reason, 'learning');
  assert.equal(d.learn && d.learn.kind === 'cert' ? d.learn.fingerprint : '', CERT);
});

test('message: a refusal carries the configured text; allows never do', async () => {
  const s = await setup(`${ENFORCE}  message: "Log in from a registered device"\n`);
  assert.is(decide(req(), s.ctx()).message, 'Log in from a registered device');
  const m = await setup(`policy:\n  mode: monitor\n  message: "x"\n`);
  assert.is(decide(req(), m.ctx()).message, '', 'monitor allows, so no refusal text');
});

test('explanations and evidence never contain the raw CID token', async () => {
  const s = await setup('policy:\n  mode: learn\n');
  await s.registry.add('alice@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  for (const cid of [LAPTOP, STRANGER]) {
    const d = decide(req({ cid }), s.ctx());
    const { learn, ...shown } = d;
    const text = JSON.stringify(shown) + (learn?.kind === 'cid' ? learn.hashPrefix + learn.label : '');
    assert.not.ok(text.includes(cid.token), 'token leaked');
  }
});

test.run();
