import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createEngine } from '../src/core/engine.js';
import { jsonLogger } from '../src/core/log.js';
import { createMetrics } from '../src/core/metrics.js';
import { fileStore } from '../src/core/registry/file-store.js';
import { openRegistry } from '../src/core/registry/registry.js';
import type { AuthRequest } from '../src/core/request.js';
import type { SharedEvent, SharedState, SlotClaim } from '../src/core/shared-state.js';
import { rulesFrom } from './helpers/tmp.js';

const CID = { type: 'UUID', token: 'engine-test-device-0001' };

async function setup(yaml: string) {
  const rules = rulesFrom(yaml);
  const lines: Array<Record<string, unknown>> = [];
  let now = Date.parse('2026-11-28T12:00:00Z');
  const engine = createEngine({
    rules,
    registry: await openRegistry(fileStore(rules.stateDir), { create: true }),
    logger: jsonLogger((l) => lines.push(JSON.parse(l))),
    now: () => now,
  });
  return { engine, lines, rules, tick: (ms: number) => { now += ms; } };
}

const imap = (over: Partial<AuthRequest> = {}): AuthRequest =>
  ({ protocol: 'imap', user: 'alice@example.com', remote: '203.0.113.5', tls: true, certFingerprints: [], stage: 'before_auth', ...over });

test('a successful login from a registered device vouches for POP3 from the same address', async () => {
  const s = await setup('policy: { mode: enforce, vouch_ttl: 5m }\n');
  await s.engine.registry.add('alice@example.com', { kind: 'cid', cid: CID }, 'admin');
  const pop = imap({ protocol: 'pop3', cid: undefined });
  assert.is(s.engine.decide(pop).action, 'reject');
  const d = s.engine.decide(imap({ cid: CID }));
  assert.is(d.action, 'allow');
  s.engine.reportSuccess(imap({ cid: CID }), d);
  assert.is(s.engine.vouches.size, 1);
  assert.is(s.engine.decide(pop).reason, 'vouched');
  s.tick(5 * 60_000 + 1);
  assert.is(s.engine.decide(pop).action, 'reject');
});

test('removing a device revokes its vouches at once: the next POP3 login is refused and names no device', async () => {
  const s = await setup('policy: { mode: enforce, vouch_ttl: 30m }\nlog: { decisions: all }\n');
  const added = await s.engine.registry.add('alice@example.com', { kind: 'cid', cid: CID }, 'admin');
  assert.is(added.status, 'added');
  s.engine.reportSuccess(imap({ cid: CID }), s.engine.decide(imap({ cid: CID })));
  const pop = imap({ protocol: 'pop3' });
  assert.is(s.engine.decide(pop).reason, 'vouched');
  const removed = await s.engine.registry.remove('alice@example.com', { id: added.status === 'added' ? added.device.id : '' });
  assert.is(removed.length, 1);
  assert.is(s.engine.vouches.size, 0, 'the removal dropped the vouch');
  const after = s.engine.decide(pop);
  assert.is(after.action, 'reject');
  assert.is(after.reason, 'no_device_proof');
  const last = s.lines.filter((l) => l.event === 'decision').pop()!;
  assert.not.ok(JSON.stringify(last).includes(removed[0]!.id), 'the decision still named the removed device');
});

test('a vouch whose device is gone no longer counts, even before the removal reached the vouches (revoked)', async () => {
  const s = await setup('policy: { mode: enforce }\n');
  const added = await s.engine.registry.add('alice@example.com', { kind: 'cid', cid: CID }, 'admin');
  if (added.status !== 'added') throw new Error('setup');
  // A vouch recorded as if the removal's notice were lost: decide() checks the registry itself.
  s.engine.vouches.add('alice@example.com', '203.0.113.5', { at: Date.parse('2026-11-28T12:00:00Z'), device: added.device.id, hash: 'f'.repeat(64) }, 600_000);
  const d = s.engine.decide(imap({ protocol: 'pop3' }));
  assert.is(d.action, 'reject');
  assert.is(d.evidence.find((e) => e.kind === 'vouch')!.status, 'revoked');
});

test('learn: a successful login registers the device on disk, and the next one past the limit is refused', async () => {
  const s = await setup('policy: { mode: learn, learn: { max_devices: 1 } }\n');
  const d = s.engine.decide(imap({ cid: CID, clientName: 'Thunderbird', clientOs: 'Linux' }));
  assert.is(d.reason, 'learning');
  s.engine.reportSuccess(imap({ cid: CID }), d);
  await s.engine.idle();
  const reopened = await openRegistry(fileStore(s.rules.stateDir), { create: false });
  const dev = reopened.findCid('alice@example.com', CID);
  assert.ok(dev);
  assert.is(dev!.source, 'learn');
  assert.is(dev!.label, 'Thunderbird / Linux');
  assert.is(s.engine.decide(imap({ cid: CID })).reason, 'registered_device');
  const other = s.engine.decide(imap({ cid: { type: 'UUID', token: 'second-device' } }));
  assert.is(other.action, 'reject');
  assert.is(other.reason, 'unknown_device');
});

test('learn: simultaneous logins with new devices admit at most max_devices; a failed login gives its slot back', async () => {
  const s = await setup('policy: { mode: learn, learn: { max_devices: 1 } }\n');
  const cid = (i: number) => ({ type: 'UUID', token: `concurrent-${i}` });
  const decisions = [0, 1, 2, 3, 4].map((i) => s.engine.decide(imap({ cid: cid(i), remote: `203.0.113.${10 + i}` })));
  assert.equal(decisions.map((d) => d.action), ['allow', 'reject', 'reject', 'reject', 'reject']);
  assert.match(decisions[1]!.why, /already has 1 of at most 1 devices \(1 of them being learned by logins in progress\)/);
  // The same device logging in again meanwhile is not a second device.
  assert.is(s.engine.decide(imap({ cid: cid(0), remote: '203.0.113.99' })).reason, 'learning');
  // The admitted login fails (wrong password): its slot is free again.
  s.engine.reportFailure(imap({ cid: cid(0) }), { policyReject: false, decision: decisions[0]! });
  const next = s.engine.decide(imap({ cid: cid(3) }));
  assert.is(next.reason, 'learning');
  s.engine.reportSuccess(imap({ cid: cid(3) }), next);
  await s.engine.idle();
  assert.is(s.engine.registry.deviceCount('alice@example.com'), 1);
  assert.is(s.engine.decide(imap({ cid: cid(4) })).action, 'reject');
});

test('learn: a device registered while its login still holds the slot is counted once, not twice', async () => {
  const s = await setup('policy: { mode: learn, learn: { max_devices: 2 } }\n');
  const cid = (i: number) => ({ type: 'UUID', token: `counted-once-${i}` });
  const first = s.engine.decide(imap({ cid: cid(0) }));
  assert.is(first.reason, 'learning');
  // The registration lands in the registry (as another host's or this one's write becomes
  // visible) before the admitting login has let go of its slot.
  await s.engine.registry.add('alice@example.com', { kind: 'cid', cid: cid(0) }, 'learn');
  const second = s.engine.decide(imap({ cid: cid(1), remote: '203.0.113.77' }));
  assert.is(second.reason, 'learning', second.why);
  assert.match(second.why, /\(2 of at most 2\)/);
  const third = s.engine.decide(imap({ cid: cid(2), remote: '203.0.113.78' }));
  assert.match(third.why, /already has 2 of at most 2 devices \(1 of them being learned/);
});

test('two different CIDs on one login (CLIENTID and IMAP ID) are logged as a mismatch, whatever log.decisions says, without either CID', async () => {
  const s = await setup('policy: { mode: enforce }\nlog: { decisions: none }\n');
  await s.engine.registry.add('alice@example.com', { kind: 'cid', cid: CID }, 'admin');
  const d = s.engine.decide(imap({ cid: CID, cidVia: 'clientid', cidMismatch: true, sessionId: 'sess-1' }));
  assert.is(d.action, 'allow');
  const m = s.lines.filter((l) => l.event === 'cid_mismatch');
  assert.is(m.length, 1);
  assert.equal([m[0]!.user, m[0]!.session, m[0]!.level], ['alice@example.com', 'sess-1', 'warn']);
  assert.not.ok(JSON.stringify(s.lines).includes(CID.token));
  s.engine.decide(imap({ cid: CID, cidVia: 'clientid' }));
  assert.is(s.lines.filter((l) => l.event === 'cid_mismatch').length, 1);
});

test('a refused or unproven login never vouches', async () => {
  const s = await setup('policy: { mode: monitor }\n');
  const d = s.engine.decide(imap({ cid: CID }));
  assert.is(d.would_reject, true);
  s.engine.reportSuccess(imap({ cid: CID }), d);
  await s.engine.idle();
  assert.is(s.engine.vouches.size, 0);
});

test('one JSON decision line per decision, with rule and evidence and no raw CID', async () => {
  const s = await setup('policy: { mode: enforce }\n');
  s.engine.decide(imap({ cid: CID }));
  const decisions = s.lines.filter((l) => l.event === 'decision');
  assert.is(decisions.length, 1);
  const line = decisions[0]!;
  assert.is(line.action, 'reject');
  assert.is(line.reason, 'unknown_device');
  assert.is(line.rule, 'policy.mode');
  assert.ok(Array.isArray(line.evidence));
  assert.not.ok(JSON.stringify(s.lines).includes(CID.token));
});

test('the sasl table rule is decide()\'s: only an enforced protocols.smtp: deny refuses', async () => {
  const s = await setup('policy: { mode: enforce }\nusers:\n  no@example.com: { protocols: { smtp: deny } }\n  watch@example.com: { mode: monitor, protocols: { smtp: deny } }\n  say@example.com: { mode: learn, message: "ask the help desk", protocols: { smtp: deny } }\n');
  assert.equal(s.engine.smtpDenied('no@example.com'), { text: 'Access denied' });
  assert.equal(s.engine.smtpDenied('say@example.com'), { text: 'ask the help desk' });
  assert.is(s.engine.smtpDenied('watch@example.com'), undefined);
  assert.is(s.engine.smtpDenied('alice@example.com'), undefined, 'no device proof is not a deny');
});

test('setRules swaps the policy for the next decision', async () => {
  const s = await setup('policy: { mode: enforce }\n');
  assert.is(s.engine.decide(imap()).action, 'reject');
  s.engine.setRules(rulesFrom('policy: { mode: off }\n'));
  assert.is(s.engine.decide(imap()).action, 'allow');
});

test('metrics: an SMTP login asked about by Dovecot SASL and the transactions Postfix then checks count as one decision', async () => {
  const rules = rulesFrom('policy: { mode: monitor }\n');
  const metrics = createMetrics('cidlock_');
  const engine = createEngine({ rules, registry: await openRegistry(fileStore(rules.stateDir), { create: true }), logger: jsonLogger(() => {}), metrics });
  const smtp = imap({ protocol: 'smtp', remote: '203.0.113.9' });
  engine.decide(smtp); // AUTH, through Dovecot SASL
  for (let i = 0; i < 3; i++) engine.checkTransaction({ ...smtp, stage: 'RCPT' }); // three RCPTs at Postfix
  // Postfix alone (Dovecot SASL without cidlock): its first check is the login.
  for (let i = 0; i < 2; i++) engine.checkTransaction({ ...smtp, user: 'bob@example.com', stage: 'RCPT' });
  const text = metrics.render();
  assert.match(text, /cidlock_decisions_total\{protocol="smtp",action="would_reject",mode="monitor",reason="no_device_proof"\} 2\n/);
  assert.match(text, /cidlock_smtp_transaction_checks_total\{action="would_reject"\} 4\n/);
});

/** A SharedState that records what the engine asks and answers as the test says: the rules around it, without a Redis. */
function fakeShared(o: { up?: boolean; vouch?: Awaited<ReturnType<SharedState['fetchVouch']>>; claim?: SlotClaim | null } = {}) {
  const published: SharedEvent[] = [];
  const calls: string[] = [];
  const handlers: Array<(e: SharedEvent) => void> = [];
  const shared: SharedState = {
    up: o.up ?? true,
    publish: (e) => void published.push(e),
    onEvent: (h) => void handlers.push(h),
    fetchVouch: async (user, remote) => (calls.push(`fetch ${user} ${remote}`), o.vouch ?? null),
    claimSlot: async (user, slot, max, registered) => (calls.push(`claim ${user} ${max} [${registered.length}]`), o.claim ?? { reserved: true }),
    releaseSlot: (user, _slot, keep) => void calls.push(`release ${user} ${keep}`),
    claimAnnouncement: async () => true,
  };
  return { shared, published, calls, deliver: (e: SharedEvent) => handlers.forEach((h) => h(e)) };
}

async function withShared(yaml: string, f: ReturnType<typeof fakeShared>) {
  const rules = rulesFrom(yaml);
  const lines: Array<Record<string, unknown>> = [];
  const registry = await openRegistry(fileStore(rules.stateDir), { create: true });
  await registry.add('someone@example.com', { kind: 'cid', cid: { type: 'UUID', token: 'make-the-key' } }, 'admin');
  const engine = createEngine({ rules, registry, logger: jsonLogger((l) => lines.push(JSON.parse(l))), shared: f.shared });
  return { engine, lines };
}

test('shared state: a refused login asks the other hosts for a vouch, an allowed one never does; what they vouched is used', async () => {
  const f = fakeShared({ vouch: null });
  const s = await withShared('policy: { mode: enforce }\n', f);
  await s.engine.registry.add('alice@example.com', { kind: 'cid', cid: CID }, 'admin');
  assert.is((await s.engine.decideLogin(imap({ cid: CID }))).action, 'allow');
  assert.equal(f.calls, [], 'an allowed login waits on nobody');
  assert.is((await s.engine.decideLogin(imap({ protocol: 'pop3' }))).reason, 'no_device_proof');
  assert.equal(f.calls, ['fetch alice@example.com 203.0.113.5']);
  const answer: { vouch: { at: number; device: string; hash: string }; untilMs: number } = { vouch: { at: Date.now(), device: '', hash: '' }, untilMs: Date.now() + 60_000 };
  const g = fakeShared({ vouch: answer });
  const t = await withShared('policy: { mode: enforce }\n', g);
  await t.engine.registry.add('alice@example.com', { kind: 'cid', cid: CID }, 'admin');
  // The vouch another host gave names the device by its registry hash, the same on every host.
  const hash = t.engine.registry.devices('alice@example.com')[0]!.hash;
  Object.assign(answer.vouch, { device: hash.slice(0, 12), hash });
  assert.is((await t.engine.decideLogin(imap({ protocol: 'pop3' }))).reason, 'vouched');
  assert.is(t.engine.stats.decisions, 1, 'decided and counted once');
});

test('shared state: a learn slot another host holds refuses the device with the count; a granted one is released on failure', async () => {
  const f = fakeShared({ claim: { reserved: false, others: 1 } });
  const s = await withShared('policy: { mode: learn, learn: { max_devices: 1 } }\n', f);
  const d = await s.engine.decideLogin(imap({ cid: CID }));
  assert.is(d.action, 'reject');
  assert.match(d.why, /already has 1 of at most 1 devices \(1 of them being learned by logins in progress\)/);
  const g = fakeShared({ claim: { reserved: true } });
  const t = await withShared('policy: { mode: learn, learn: { max_devices: 1 } }\n', g);
  const ok = await t.engine.decideLogin(imap({ cid: CID }));
  assert.is(ok.reason, 'learning');
  t.engine.reportFailure(imap({ cid: CID }), { policyReject: false, decision: ok });
  assert.equal(g.calls, ['claim alice@example.com 1 [0]', 'release alice@example.com 0']);
});

test('shared state: failures, refusals and vouches are told to the others; theirs count here, and nothing is announced twice', async () => {
  const f = fakeShared();
  const s = await withShared('policy: { mode: monitor }\nlimits:\n  - { key: address, failures: 3, window: 10m, then: reject 1h }\n', f);
  s.engine.reportFailure(imap({ user: 'x@example.com', guessTag: 'raw-dovecot-pwhash' }), { policyReject: false });
  const failure = f.published.find((e) => e.kind === 'failure');
  assert.ok(failure && failure.kind === 'failure' && failure.guess !== undefined && failure.guess !== 'raw-dovecot-pwhash', 'Dovecot\'s hash is not what crosses to other hosts');
  f.deliver({ kind: 'failure', user: 'y@example.com', remote: '203.0.113.5', at: Date.now() });
  f.deliver({ kind: 'failure', user: 'z@example.com', remote: '203.0.113.5', at: Date.now() });
  const d = await s.engine.decideLogin(imap({ user: 'w@example.com' }));
  assert.is(d.reason, 'limit', 'one failure here and two elsewhere reach the limit of three');
  assert.is(s.lines.filter((l) => l.event === 'limit_triggered').length, 0, 'the hosts that saw them announce limits, not this one');
  assert.ok(f.published.some((e) => e.kind === 'refusal' && e.refusal.reason === 'limit'), 'the refusal is told too');
  // Down: nobody is asked, nothing is learned.
  const g = fakeShared({ up: false });
  const t = await withShared('policy: { mode: learn }\n', g);
  const l = await t.engine.decideLogin(imap({ cid: CID }));
  assert.is(l.action, 'reject');
  assert.match(l.why, /no device can be registered now: the shared store \(Redis\) is unreachable/);
  assert.equal(g.calls, []);
});

test.run();
