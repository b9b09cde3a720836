import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createEngine } from '../src/core/engine.js';
import { jsonLogger } from '../src/core/log.js';
import { fileStore } from '../src/core/registry/file-store.js';
import { openRegistry } from '../src/core/registry/registry.js';
import type { AuthRequest } from '../src/core/request.js';
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
  assert.equal(s.engine.reportSuccess(imap({ cid: CID }), d), { vouched: true });
  assert.is(s.engine.decide(pop).reason, 'vouched');
  s.tick(5 * 60_000 + 1);
  assert.is(s.engine.decide(pop).action, 'reject');
});

test('learn: a successful login registers the device on disk, and the next one past the limit is refused', async () => {
  const s = await setup('policy: { mode: learn, learn: { max_devices: 1 } }\n');
  const d = s.engine.decide(imap({ cid: CID, clientName: 'Thunderbird', clientOs: 'Linux' }));
  assert.is(d.reason, 'learning');
  // The registration runs in the background (lock, fsync): the request that reported it never waits.
  s.engine.reportSuccess(imap({ cid: CID }), d);
  const deadline = Date.now() + 5000;
  while (s.engine.vouches.size === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.is(s.engine.vouches.size, 1, 'the learned device vouches once it is stored');
  assert.ok(s.engine.registry.findCid('alice@example.com', CID));
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

test('a refused or unproven login never vouches', async () => {
  const s = await setup('policy: { mode: monitor }\n');
  const d = s.engine.decide(imap({ cid: CID }));
  assert.is(d.would_reject, true);
  assert.equal(s.engine.reportSuccess(imap({ cid: CID }), d), { vouched: false });
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

test('setRules swaps the policy for the next decision', async () => {
  const s = await setup('policy: { mode: enforce }\n');
  assert.is(s.engine.decide(imap()).action, 'reject');
  s.engine.setRules(rulesFrom('policy: { mode: off }\n'));
  assert.is(s.engine.decide(imap()).action, 'allow');
});

test.run();
