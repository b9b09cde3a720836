import { LRUCache } from 'lru-cache';
import { performance } from 'node:perf_hooks';
import type { EventSink } from '../alerts/events.js';
import { decide, type Decision } from './decide.js';
import { createDefences, type Defences, type LimitHit } from './defences/defences.js';
import { formatDuration } from './duration.js';
import { decisionRecord } from './explain.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import type { Registry } from './registry/registry.js';
import type { AuthRequest } from './request.js';
import { effectivePolicy } from './rules/resolve.js';
import type { LimitAction, Rules } from './rules/types.js';
import { createVouchStore, type VouchStore } from './vouches.js';

export interface SuccessOutcome {
  vouched: boolean;
  learned?: { device: string; status: 'added' | 'exists' | 'full' };
}

export interface FailureInfo {
  /** The failure was cidlock's own refusal, not a wrong password. */
  policyReject: boolean;
}

export interface AddressVerdict {
  action: 'reject' | 'defer';
  text: string;
}

export interface EngineStats {
  decisions: number;
  successes: number;
  failures: number;
  policyRejects: number;
}

/**
 * The one owner of the daemon's mutable state: current rules, registry, vouches and attack
 * counters. Adapters call decide() and report*(); everything else stays inside.
 */
export interface Engine {
  readonly rules: Rules;
  readonly registry: Registry;
  readonly vouches: VouchStore;
  readonly defences: Defences;
  readonly stats: Readonly<EngineStats>;
  decide(req: AuthRequest): Decision;
  /** A login finished successfully: vouch for its address and register a learned device. */
  reportSuccess(req: AuthRequest, decision?: Decision): SuccessOutcome;
  /** A login failed: wrong password, unknown user, or refused by cidlock. Feeds the attack counters. */
  reportFailure(req: AuthRequest, info: FailureInfo): void;
  /**
   * A TLS client certificate was presented from this address (Postfix at EHLO after STARTTLS).
   * Remembered briefly so the SASL login that follows on the same connection can count it.
   */
  noteClientCertificate(remote: string, fingerprints: readonly string[]): void;
  recentClientCertificate(remote: string): readonly string[];
  /** Whether the attack defences currently refuse this client address (Postfix's client table). */
  addressVerdict(remote: string): AddressVerdict | undefined;
  /** Swaps in new rules between requests; the caller has validated them. */
  setRules(rules: Rules): void;
}

export interface EngineOptions {
  rules: Rules;
  registry: Registry;
  logger: Logger;
  now?: () => number;
  vouches?: VouchStore;
  events?: EventSink;
  metrics?: Metrics;
}

/** Long enough to cover STARTTLS, EHLO and AUTH of one SMTP connection; short enough not to leak to the next. */
export const CERT_MEMORY_MS = 30_000;

const LATENCY_BUCKETS = [0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05];

function describeAction(a: LimitAction): string {
  return a.action === 'delay' ? `delay ${a.seconds}s` : a.forMs > 0 ? `reject ${formatDuration(a.forMs)}` : 'reject';
}

export function createEngine(opts: EngineOptions): Engine {
  let rules = opts.rules;
  const { registry, logger } = opts;
  const now = opts.now ?? Date.now;
  const vouches = opts.vouches ?? createVouchStore();
  const events = opts.events ?? { emit() {} };
  const stats: EngineStats = { decisions: 0, successes: 0, failures: 0, policyRejects: 0 };
  const certsSeen = new LRUCache<string, { fps: readonly string[]; at: number }>({ max: 100_000 });
  const alerted = new LRUCache<string, true>({ max: 100_000, ttl: rules.alerts.unknownDevice.windowMs });
  const defences = createDefences({ limits: rules.limits, counters: rules.counters, alertWindowMs: rules.alerts.unknownDevice.windowMs });

  const m = opts.metrics;
  const decisionsTotal = m?.counter('decisions_total', 'Login decisions', ['protocol', 'action', 'mode', 'reason']);
  const decisionSeconds = m?.histogram('decision_seconds', 'Time to decide one login, in seconds', LATENCY_BUCKETS);
  const failuresTotal = m?.counter('login_failures_total', 'Failed logins reported by the mail servers', ['protocol', 'refused_by_cidlock']);
  const limitsTotal = m?.counter('limit_triggers_total', 'Attack-defence limits that became active', ['rule']);
  const alertsTotal = m?.counter('unknown_device_alerts_total', 'unknown_device alerts raised');
  const learnedTotal = m?.counter('devices_learned_total', 'Devices registered by learn mode', ['status']);
  const writeErrors = m?.counter('registry_write_errors_total', 'Registry writes that failed (disk full, read-only)');
  if (m !== undefined) {
    m.gaugeFn('registry_users', 'Users in the device registry', () => registry.size().users);
    m.gaugeFn('registry_devices', 'Devices in the device registry', () => registry.size().devices);
    m.gaugeFn('vouches', 'Active vouches (user and address)', () => vouches.size);
    m.gaugeFn('counter_entries', 'Attack counter entries in memory', () => defences.sizes().counters);
    m.gaugeFn('counter_penalties', 'Active reject penalties', () => defences.sizes().penalties);
    m.gaugeFn('counter_evictions', 'Counter entries evicted by the size cap (monotonic)', () => defences.sizes().evictions);
  }

  const knownProven = (d: Decision) => d.reason === 'registered_device' || d.reason === 'vouched' || d.reason === 'learning';

  /** Attack limits on top of the device decision; the user's mode governs them like everything else. */
  const applyLimit = (req: AuthRequest, d: Decision, hit: LimitHit): void => {
    d.limit = { rule: hit.rule.path, key: hit.rule.key, action: describeAction(hit.action), count: Math.round(hit.count) };
    const what = hit.rule.key === 'user' ? req.user : hit.subject;
    const why = `${hit.rule.key} ${what} is over ${hit.rule.path}: ${Math.round(hit.count)} ${hit.rule.distinctUsers !== undefined ? 'user names tried' : 'failures'} within ${formatDuration(hit.rule.windowMs)}, then ${describeAction(hit.action)}`;
    if (d.mode === 'monitor') {
      if (hit.action.action === 'reject' && !d.would_reject) {
        d.would_reject = true;
        d.why = `${why} (monitor mode: not enforced)`;
      }
      return;
    }
    if (hit.action.action === 'reject') {
      if (d.action === 'reject') return; // already refused by the device lock; keep that reason
      Object.assign(d, { action: 'reject', reason: 'limit', rule: hit.rule.path, why, message: effectivePolicy(rules, req.user, registry.settings(req.user)).message });
    } else if (d.action === 'allow') {
      Object.assign(d, { action: 'delay', seconds: hit.action.seconds, reason: 'limit', rule: hit.rule.path, why });
    }
  };

  const noteRefusal = (req: AuthRequest, d: Decision, t: number): void => {
    const unknown = d.reason === 'unknown_device' && d.action === 'reject';
    const shown = d.evidence.find((e) => e.status === 'unregistered');
    const deviceType = shown === undefined ? undefined : shown.kind === 'cid' ? req.cid?.type : 'cert';
    const count = defences.recordRefusal(req.user, {
      at: new Date(t).toISOString(), protocol: req.protocol, remote: req.remote, reason: d.reason,
      ...(shown?.device ? { device: shown.device } : {}), ...(deviceType ? { deviceType } : {}), ...(req.clientName ? { clientName: req.clientName } : {}),
    }, unknown, t);
    if (!unknown) return;
    const base = { user: req.user, remote: req.remote, ...(shown?.device ? { device: shown.device } : {}), ...(deviceType ? { device_type: deviceType } : {}), ...(req.clientName ? { client_name: req.clientName } : {}) };
    events.emit({ event: 'unknown_device_refused', protocol: req.protocol, ...base });
    const alert = rules.alerts.unknownDevice;
    if (count >= alert.attempts && !alerted.has(req.user)) {
      alerted.set(req.user, true);
      alertsTotal?.inc();
      events.emit({ event: 'unknown_device', attempts: count, window: formatDuration(alert.windowMs), ...base });
    }
  };

  const log = (req: AuthRequest, d: Decision): void => {
    const level = rules.log.decisions;
    const refused = d.action !== 'allow' || d.would_reject;
    if (level === 'none' || (level === 'refusals' && !refused)) return;
    logger.log(refused ? 'warn' : 'info', 'decision', decisionRecord(req, d));
  };

  return {
    get rules() { return rules; },
    registry,
    vouches,
    defences,
    stats,
    decide(req) {
      const start = performance.now();
      const t = now();
      const d = decide(req, { rules, registry, vouches, now: t });
      if (d.mode !== 'off' && rules.limits.length > 0) {
        const hit = defences.verdict(req, knownProven(d), t);
        if (hit !== undefined) applyLimit(req, d, hit);
      }
      stats.decisions++;
      if (d.action !== 'allow' || d.would_reject) noteRefusal(req, d, t);
      log(req, d);
      decisionsTotal?.inc({ protocol: d.protocol.name, action: d.would_reject ? 'would_reject' : d.action, mode: d.mode, reason: d.reason });
      decisionSeconds?.observe((performance.now() - start) / 1000);
      return d;
    },
    reportSuccess(req, decision) {
      const d = decision ?? decide(req, { rules, registry, vouches, now: now() });
      stats.successes++;
      const out: SuccessOutcome = { vouched: false };
      const vouch = (device: string): boolean => {
        if (req.remote === null) return false;
        const ttl = effectivePolicy(rules, req.user, registry.settings(req.user)).vouch_ttl;
        vouches.add(req.user, req.remote, { at: now(), device }, ttl);
        return ttl > 0;
      };
      const learn = d.learn;
      if (learn !== undefined) {
        const input = learn.kind === 'cid'
          ? { kind: 'cid' as const, cid: learn.cid, label: learn.label }
          : { kind: 'cert' as const, fingerprint: learn.fingerprint, label: learn.label };
        // Fire and forget: the registration may wait for the registry lock and always for an fsync,
        // which must never hold up this request. The learned device vouches once it is stored.
        registry.add(req.user, input, 'learn', { maxDevices: learn.maxDevices, now: new Date(now()) }).then((r) => {
          const id = r.status === 'full' ? (learn.kind === 'cid' ? learn.hashPrefix : learn.fingerprint.slice(0, 12)) : r.device.id;
          learnedTotal?.inc({ status: r.status });
          if (r.status === 'added') {
            events.emit({ event: 'device_registered', user: req.user, device: id, kind: r.device.kind, type: r.device.type, source: 'learn', label: r.device.label, remote: req.remote });
          } else if (r.status === 'full') {
            logger.log('warn', 'device_learn_refused', { user: req.user, device: id, note: 'max_devices reached meanwhile' });
          }
          if (r.status !== 'full') vouch(r.device.id);
        }).catch((err: unknown) => {
          // The login already succeeded; only the registration is lost. Decisions go on from memory.
          writeErrors?.inc();
          logger.log('error', 'registry_write_failed', { user: req.user, error: (err as Error).message });
        });
      }
      if (d.proven !== undefined) out.vouched = vouch(d.proven);
      return out;
    },
    reportFailure(req, info) {
      stats.failures++;
      if (info.policyReject) stats.policyRejects++;
      failuresTotal?.inc({ protocol: req.protocol, refused_by_cidlock: info.policyReject ? 'yes' : 'no' });
      if (rules.limits.length === 0) return;
      const hits = defences.recordFailure({ user: req.user, remote: req.remote, ...(req.guessTag ? { pwhash: req.guessTag } : {}) }, now());
      for (const h of hits) {
        limitsTotal?.inc({ rule: h.rule.path });
        events.emit({ event: 'limit_triggered', rule: h.rule.path, key: h.rule.key, subject: h.subject, count: Math.round(h.count), then: describeAction(h.action) });
      }
    },
    noteClientCertificate(remote, fps) {
      if (fps.length > 0) certsSeen.set(remote, { fps, at: now() });
    },
    recentClientCertificate(remote) {
      const seen = certsSeen.get(remote);
      return seen !== undefined && now() - seen.at <= CERT_MEMORY_MS ? seen.fps : [];
    },
    addressVerdict(remote) {
      const hit = defences.addressVerdict(remote, now());
      if (hit === undefined) return undefined;
      const text = `too many failed logins from ${hit.subject}`;
      return hit.action.action === 'reject' ? { action: 'reject', text } : { action: 'defer', text };
    },
    setRules(next) {
      rules = next;
      defences.setRules(next.limits, next.counters, next.alerts.unknownDevice.windowMs);
    },
  };
}
