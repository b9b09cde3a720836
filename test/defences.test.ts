import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createDefences } from '../src/core/defences/defences.js';
import { networkKey } from '../src/core/defences/network-key.js';
import { addToWindow, newWindow, windowEstimate } from '../src/core/defences/sliding-window.js';
import { createEngine } from '../src/core/engine.js';
import { jsonLogger } from '../src/core/log.js';
import { fileStore } from '../src/core/registry/file-store.js';
import { openRegistry } from '../src/core/registry/registry.js';
import type { AuthRequest } from '../src/core/request.js';
import type { LimitRule } from '../src/core/rules/types.js';
import type { SecurityEvent } from '../src/alerts/events.js';
import { parseLimitAction } from '../src/core/rules/load-operations.js';
import { rulesFrom } from './helpers/tmp.js';

const MIN = 60_000;
const T0 = Date.parse('2026-11-28T12:00:00Z');
const COUNTERS = { maxEntries: 1000, prefixV4: 24, prefixV6: 64 };
const rule = (r: Omit<LimitRule, 'path'>, i = 0): LimitRule => ({ path: `limits[${i}]`, ...r });

test('sliding window: counts decay linearly as the previous window slides out', () => {
  const w = newWindow(T0);
  for (let i = 0; i < 10; i++) addToWindow(w, T0 + i * 1000, 10 * MIN);
  assert.is(windowEstimate(w, T0 + MIN, 10 * MIN), 10);
  assert.is(windowEstimate(w, T0 + 10 * MIN, 10 * MIN), 10, 'all ten now in the previous window, fully overlapping');
  assert.is(windowEstimate(w, T0 + 15 * MIN, 10 * MIN), 5);
  assert.is(windowEstimate(w, T0 + 20 * MIN, 10 * MIN), 0);
  addToWindow(w, T0 + 45 * MIN, 10 * MIN);
  assert.is(windowEstimate(w, T0 + 45 * MIN, 10 * MIN), 1, 'windows long past are forgotten');
});

test('network keys: IPv4 /24 and IPv6 /64 by default, configurable', () => {
  assert.is(networkKey('198.51.100.77', 24, 64), '198.51.100.0/24');
  assert.is(networkKey('198.51.100.77', 16, 64), '198.51.0.0/16');
  assert.is(networkKey('2001:db8:1:2:3:4:5:6', 24, 64), '2001:db8:1:2::/64');
  assert.is(networkKey('2001:db8:1:2:3:4:5:6', 24, 48), '2001:db8:1::/48');
  assert.is(networkKey('::ffff:198.51.100.1', 24, 64), '198.51.100.0/24');
  assert.is(networkKey('not an ip', 24, 64), null);
});

test('limit actions parse from the rules file syntax', () => {
  assert.equal(parseLimitAction('delay 5s'), { action: 'delay', seconds: 5 });
  assert.equal(parseLimitAction('reject 1h'), { action: 'reject', forMs: 3_600_000 });
  assert.equal(parseLimitAction('reject'), { action: 'reject', forMs: 0 });
  for (const bad of ['delay', 'delay 60s', 'delay 500ms', 'block 1h', 'reject forever', 'reject 30d']) assert.is(parseLimitAction(bad), null, bad);
});

test('address limits: delay after 10 failures, reject after 30, and the reject penalty outlives the window', () => {
  const d = createDefences({ limits: [rule({ key: 'address', failures: 10, windowMs: 10 * MIN, then: { action: 'delay', seconds: 5 } }, 0), rule({ key: 'address', failures: 30, windowMs: 10 * MIN, then: { action: 'reject', forMs: 60 * MIN } }, 1)], counters: COUNTERS, alertWindowMs: MIN });
  const a = { user: 'u@x', remote: '203.0.113.9' };
  const triggered: string[] = [];
  for (let i = 0; i < 30; i++) {
    assert.is(d.verdict(a, false, T0 + i) === undefined, i < 10, `before failure ${i + 1}`);
    for (const h of d.recordFailure({ ...a, user: `u${i}@x` }, T0 + i)) triggered.push(`${i + 1}:${h.rule.path}`);
  }
  assert.equal(triggered, ['10:limits[0]', '30:limits[1]']);
  assert.is(d.verdict(a, false, T0 + 100)!.action.action, 'reject');
  assert.equal(d.verdict({ user: 'u@x', remote: '203.0.113.10' }, false, T0 + 100), undefined, 'another address is not affected');
  assert.is(d.verdict(a, false, T0 + 30 * MIN)!.action.action, 'reject', 'the penalty holds for its hour after the counts left the 10m window');
  assert.is(d.verdict(a, false, T0 + 2 * 60 * MIN), undefined, 'and then ends');
});

test('repeated identical guesses (same user and pwhash) count once', () => {
  const d = createDefences({ limits: [rule({ key: 'user', failures: 3, windowMs: 10 * MIN, then: { action: 'delay', seconds: 2 } })], counters: COUNTERS, alertWindowMs: MIN });
  for (let i = 0; i < 10; i++) d.recordFailure({ user: 'v@x', remote: '192.0.2.1', pwhash: '0abc' }, T0 + i);
  assert.is(d.verdict({ user: 'v@x', remote: null }, false, T0 + 20), undefined);
  d.recordFailure({ user: 'v@x', remote: '192.0.2.1', pwhash: '0abd' }, T0 + 21);
  d.recordFailure({ user: 'v@x', remote: '192.0.2.1', pwhash: '0abe' }, T0 + 22);
  assert.is(d.verdict({ user: 'v@x', remote: null }, false, T0 + 23)!.action.action, 'delay');
});

test('dictionary runs: distinct user names per address', () => {
  const d = createDefences({ limits: [rule({ key: 'address', distinctUsers: 5, windowMs: 10 * MIN, then: { action: 'reject', forMs: 60 * MIN } })], counters: COUNTERS, alertWindowMs: MIN });
  for (let i = 0; i < 20; i++) d.recordFailure({ user: 'same@x', remote: '198.51.100.1' }, T0 + i);
  assert.is(d.verdict({ user: 'z@x', remote: '198.51.100.1' }, false, T0 + 30), undefined, 'one user guessed many times is not a dictionary run');
  const hits = [];
  for (let i = 0; i < 5; i++) hits.push(...d.recordFailure({ user: `name${i}@x`, remote: '198.51.100.2' }, T0 + i));
  assert.is(hits.length, 1);
  assert.is(hits[0]!.count, 5);
  assert.is(d.verdict({ user: 'z@x', remote: '198.51.100.2' }, false, T0 + 10)!.action.action, 'reject');
});

test('user limits slow an attack on one account but never a proven device; network limits aggregate a /24', () => {
  const d = createDefences({ limits: [rule({ key: 'user', failures: 5, windowMs: 10 * MIN, then: { action: 'delay', seconds: 3 } }, 0), rule({ key: 'network', failures: 8, windowMs: 10 * MIN, then: { action: 'delay', seconds: 7 } }, 1)], counters: COUNTERS, alertWindowMs: MIN });
  for (let i = 0; i < 8; i++) d.recordFailure({ user: 'target@x', remote: `198.51.100.${i + 1}` }, T0 + i);
  assert.is(d.verdict({ user: 'target@x', remote: '192.0.2.50' }, false, T0 + 10)!.action.action, 'delay');
  assert.is(d.verdict({ user: 'target@x', remote: '192.0.2.50' }, true, T0 + 10), undefined, 'the owner\'s registered device passes');
  const net = d.verdict({ user: 'other@x', remote: '198.51.100.200' }, true, T0 + 10)!;
  assert.is(net.subject, '198.51.100.0/24');
  assert.equal(net.action, { action: 'delay', seconds: 7 });
  assert.is(d.addressVerdict('198.51.100.201', T0 + 10)!.rule.path, 'limits[1]');
});

test('memory is bounded: counters are capped and evictions counted', () => {
  const d = createDefences({ limits: [rule({ key: 'address', failures: 3, windowMs: 10 * MIN, then: { action: 'reject', forMs: MIN } })], counters: COUNTERS, alertWindowMs: MIN });
  for (let i = 0; i < 5000; i++) d.recordFailure({ user: 'x@x', remote: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` }, T0);
  const s = d.sizes();
  assert.ok(s.counters <= 1000, String(s.counters));
  assert.ok(s.evictions >= 4000, String(s.evictions));
  for (let i = 0; i < 30; i++) d.recordRefusal('r@x', { at: String(i), protocol: 'imap', remote: null, reason: 'no_device_proof' }, false, T0);
  assert.is(d.recentRefusals('r@x').length, 20);
  assert.is(d.recentRefusals('r@x')[19]!.at, '29');
});

async function engineWith(yaml: string) {
  const rules = rulesFrom(yaml);
  const events: SecurityEvent[] = [];
  let now = T0;
  const engine = createEngine({ rules, registry: await openRegistry(fileStore(rules.stateDir), { create: true }), logger: jsonLogger(() => {}), now: () => now, events: { emit: (e) => events.push(e) } });
  return { engine, events, tick: (ms: number) => { now += ms; } };
}
const imap = (over: Partial<AuthRequest> = {}): AuthRequest => ({ protocol: 'imap', user: 'alice@example.com', remote: '203.0.113.50', tls: true, certFingerprints: [], stage: 'before_auth', ...over });

test('engine: limits turn allow into delay then reject, in enforce; monitor only notes them; off ignores them', async () => {
  const limits = 'limits:\n  - { key: address, failures: 3, window: 10m, then: delay 4s }\n  - { key: address, failures: 6, window: 10m, then: reject 1h }\n';
  const s = await engineWith(`policy: { mode: enforce, protocols: { imap: allow } }\nusers:\n  mon@example.com: { mode: monitor }\n  off@example.com: { mode: off }\n${limits}`);
  const fail = () => s.engine.reportFailure(imap({ user: `guess${Math.random()}@example.com` }), { policyReject: false });
  for (let i = 0; i < 3; i++) fail();
  const d = s.engine.decide(imap());
  assert.is(d.action, 'delay');
  assert.is(d.seconds, 4);
  assert.is(d.reason, 'limit');
  assert.is(d.rule, 'limits[0]');
  for (let i = 0; i < 3; i++) fail();
  const r = s.engine.decide(imap());
  assert.is(r.action, 'reject');
  assert.match(r.why, /address 203\.0\.113\.50 is over limits\[1\]: 6 failures within 10m, then reject 1h/);
  const mon = s.engine.decide(imap({ user: 'mon@example.com' }));
  assert.is(mon.action, 'allow');
  assert.is(mon.would_reject, true);
  assert.is(mon.limit!.rule, 'limits[1]');
  assert.is(s.engine.decide(imap({ user: 'off@example.com' })).limit, undefined);
  assert.equal(s.events.filter((e) => e.event === 'limit_triggered').map((e) => e.event === 'limit_triggered' && e.rule), ['limits[0]', 'limits[1]']);
  assert.is(s.engine.addressVerdict('203.0.113.50')!.action, 'reject');
});

test('engine: unknown devices are audited each time and alert once past the threshold', async () => {
  const s = await engineWith('policy: { mode: enforce }\nalerts: { unknown_device: { attempts: 3, window: 1h } }\nlimits: []\n');
  for (let i = 0; i < 5; i++) s.engine.decide(imap({ cid: { type: 'UUID', token: `stranger-${i}` }, clientName: 'Evil Mail' }));
  const refused = s.events.filter((e) => e.event === 'unknown_device_refused');
  assert.is(refused.length, 5);
  const alerts = s.events.filter((e) => e.event === 'unknown_device');
  assert.is(alerts.length, 1);
  const a = alerts[0] as Extract<SecurityEvent, { event: 'unknown_device' }>;
  assert.is(a.attempts, 3);
  assert.is(a.device_type, 'UUID');
  assert.is(a.client_name, 'Evil Mail');
  assert.not.ok(JSON.stringify(s.events).includes('stranger-'), 'a raw CID reached an event');
  assert.is(s.engine.defences.recentRefusals('alice@example.com').length, 5);
});

test.run();
