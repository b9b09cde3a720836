import { LRUCache } from 'lru-cache';
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { EventSink } from '../alerts/events.js';
import { decide, type Decision } from './decide.js';
import { createDefences, type Defences, type LimitHit } from './defences/defences.js';
import { formatDuration } from './duration.js';
import { decisionRecord } from './explain.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import type { Registry, RegistryChange } from './registry/registry.js';
import type { AuthRequest } from './request.js';
import { effectivePolicy } from './rules/resolve.js';
import type { LimitAction, Rules } from './rules/types.js';
import type { PendingTracker } from './pending.js';
import type { SharedEvent, SharedState } from './shared-state.js';
import { createVouchStore, type VouchStore } from './vouches.js';

export interface FailureInfo {
  /** The failure was cidlock's own refusal, not a wrong password. */
  policyReject: boolean;
  /** The decision cidlock gave this login before the password was checked, when known. */
  decision?: Decision;
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
 * The one owner of the daemon's mutable state: current rules, registry, vouches, learn slots and
 * attack counters. Adapters translate their protocol into an AuthRequest, call one of these and
 * translate the Decision back; every rule lives here or in decide().
 */
export interface Engine {
  readonly rules: Rules;
  readonly registry: Registry;
  readonly vouches: VouchStore;
  readonly defences: Defences;
  readonly stats: Readonly<EngineStats>;
  /**
   * A login, before its password is checked (Dovecot's auth policy). `replaces`: an earlier
   * decision of the same login, now superseded (Dovecot named another account after its passdb
   * lookup); its learn slot is given back.
   */
  decide(req: AuthRequest, opts?: { replaces?: Decision }): Decision;
  /**
   * The same decision, for adapters that can wait a little: with other hosts sharing the state
   * (Redis), a vouch given on another host that has not reached this one yet is fetched, and a
   * learn slot is claimed for all hosts, so two hosts never admit the last one at once. Without
   * shared state, or while it is unreachable, it is `decide`.
   */
  decideLogin(req: AuthRequest, opts?: { replaces?: Decision }): Promise<Decision>;
  /**
   * A mail transaction of an SMTP session that already authenticated (Postfix's policy service at
   * MAIL or RCPT). Decided like a login; an allowed proven device vouches at once, a refusal counts
   * as a failed attempt, since Postfix reports neither.
   */
  checkTransaction(req: AuthRequest): Decision;
  /** A login finished successfully: vouch for its address and register a learned device. */
  reportSuccess(req: AuthRequest, decision?: Decision): void;
  /** A login failed: wrong password, unknown user, or refused by cidlock. Feeds the attack counters. */
  reportFailure(req: AuthRequest, info: FailureInfo): void;
  /**
   * A TLS client certificate was presented from this address (Postfix at EHLO after STARTTLS).
   * Remembered briefly so the SASL login that follows on the same connection can count it.
   */
  noteClientCertificate(remote: string, fingerprints: readonly string[]): void;
  /** Whether the attack defences currently refuse this client address (Postfix's client table). */
  addressVerdict(remote: string): AddressVerdict | undefined;
  /** Whether the account's rules refuse SMTP outright (protocols: { smtp: deny }), for Postfix's sasl table. */
  smtpDenied(user: string): { text: string } | undefined;
  /** Swaps in new rules between requests; the caller has validated them. */
  setRules(rules: Rules): void;
  /** Resolves once the registrations learn mode started have been written (or failed). */
  idle(): Promise<void>;
}

export interface EngineOptions {
  rules: Rules;
  registry: Registry;
  logger: Logger;
  now?: () => number;
  vouches?: VouchStore;
  events?: EventSink;
  metrics?: Metrics;
  /** The state other cidlock hosts share with this one; absent: this host alone. */
  shared?: SharedState;
  /** Remembers refused devices for their holder and last-used days; absent: neither is kept. */
  pending?: PendingTracker;
}

/** Long enough to cover STARTTLS, EHLO and AUTH of one SMTP connection; short enough not to leak to the next. */
const CERT_MEMORY_MS = 30_000;
/**
 * How long a learn slot stays reserved without news of its login: as long as Dovecot's own
 * longest wait for a login to finish, and the adapter's memory of a pending login.
 */
const LEARN_SLOT_MS = 120_000;
/** An SMTP login Dovecot SASL asked about, and the mail transactions Postfix then checks, are counted as one decision. */
const SMTP_SESSION_MS = 10 * 60_000;
const MAX_TRACKED = 100_000;
/**
 * A learned device's slot stays claimed this long after its registration was written, for all
 * hosts: the others read the registration from the store within this time, and until then the
 * slot still counts it.
 */
const SLOT_SETTLE_MS = 5_000;
/** A renewed vouch is told to the other hosts again after at most this long (or a quarter of its life). */
const VOUCH_RETELL_MS = 60_000;
/** A user in learn mode has a handful of devices; a claim names at most this many. */
const MAX_CLAIM_DEVICES = 64;

/**
 * Dovecot's password hash tag, hashed again: the same guess is still recognised on every host,
 * and what crosses to other hosts is no longer Dovecot's value.
 */
const guessKey = (tag: string): string => createHash('sha256').update(tag).digest('hex').slice(0, 16);

const LATENCY_BUCKETS = [0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05];

function describeAction(a: LimitAction): string {
  return a.action === 'delay' ? `delay ${a.seconds}s` : a.forMs > 0 ? `reject ${formatDuration(a.forMs)}` : 'reject';
}

/** Learn-mode devices admitted but not yet registered, per user: they count against max_devices. */
function createLearnSlots(now: () => number) {
  type Slot = { until: number; registered: () => boolean };
  const users = new LRUCache<string, Map<string, Slot>>({ max: MAX_TRACKED });
  return {
    /** `registered` says whether the slot's device has reached the registry meanwhile. */
    reserve(user: string, slot: string, registered: () => boolean): void {
      let m = users.get(user);
      if (m === undefined) users.set(user, (m = new Map()));
      m.set(slot, { until: now() + LEARN_SLOT_MS, registered });
    },
    release(user: string, slot: string): void {
      const m = users.peek(user);
      if (m === undefined) return;
      m.delete(slot);
      if (m.size === 0) users.delete(user);
    },
    /**
     * Reserved slots of the user other than `except`. A slot's device can reach the registry
     * before its login lets go of the slot (the write is awaited, another host wrote it): the
     * registry counts it then, so it is not counted twice.
     */
    others(user: string, except: string): number {
      const m = users.peek(user);
      if (m === undefined) return 0;
      const t = now();
      let n = 0;
      for (const [slot, s] of m) {
        if (s.until <= t) m.delete(slot);
        else if (slot !== except && !s.registered()) n++;
      }
      return n;
    },
  };
}

export function createEngine(opts: EngineOptions): Engine {
  let rules = opts.rules;
  const { registry, logger } = opts;
  const now = opts.now ?? Date.now;
  const vouches = opts.vouches ?? createVouchStore();
  const events = opts.events ?? { emit() {} };
  const stats: EngineStats = { decisions: 0, successes: 0, failures: 0, policyRejects: 0 };
  const certsSeen = new LRUCache<string, { fps: readonly string[]; at: number }>({ max: MAX_TRACKED });
  const alerted = new LRUCache<string, true>({ max: MAX_TRACKED, ttl: rules.alerts.unknownDevice.windowMs });
  // When each (user, address) last had an SMTP login counted; a plain LRU, the age checked here.
  const smtpLogins = new LRUCache<string, number>({ max: MAX_TRACKED });
  const learnSlots = createLearnSlots(now);
  const inFlight = new Set<Promise<void>>();
  const slotOf = new WeakMap<Decision, { user: string; slot: string }>();
  const defences = createDefences({ limits: rules.limits, counters: rules.counters, alertWindowMs: rules.alerts.unknownDevice.windowMs });
  const shared = opts.shared;
  const vouchesTold = new LRUCache<string, { hash: string; at: number }>({ max: MAX_TRACKED });

  const m = opts.metrics;
  const decisionsTotal = m?.counter('decisions_total', 'Login decisions (an SMTP login and the mail transactions Postfix checks for it count once)', ['protocol', 'action', 'mode', 'reason']);
  const transactionsTotal = m?.counter('smtp_transaction_checks_total', 'Mail transactions of an already decided SMTP login, checked again at MAIL or RCPT', ['action']);
  const decisionSeconds = m?.histogram('decision_seconds', 'Time to decide one login, in seconds', LATENCY_BUCKETS);
  const failuresTotal = m?.counter('login_failures_total', 'Failed logins reported by the mail servers', ['protocol', 'refused_by_cidlock']);
  const limitsTotal = m?.counter('limit_triggers_total', 'Attack-defence limits that became active', ['rule']);
  const alertsTotal = m?.counter('unknown_device_alerts_total', 'unknown_device alerts raised');
  const learnedTotal = m?.counter('devices_learned_total', 'Devices registered by learn mode', ['status']);
  const writeErrors = m?.counter('registry_write_errors_total', 'Registry writes that failed (disk full, read-only)');
  const revokedTotal = m?.counter('vouches_revoked_total', 'Vouches dropped because the device that gave them was removed');
  if (m !== undefined) {
    m.gaugeFn('registry_users', 'Users in the device registry', () => registry.size().users);
    m.gaugeFn('registry_devices', 'Devices in the device registry', () => registry.size().devices);
    m.gaugeFn('vouches', 'Vouches in memory (user and address)', () => vouches.size);
    m.gaugeFn('counter_entries', 'Attack counter entries in memory', () => defences.sizes().counters);
    m.gaugeFn('counter_penalties', 'Active reject penalties', () => defences.sizes().penalties);
    m.counterFn('counter_evictions_total', 'Attack counter entries evicted by the size cap', () => defences.sizes().evictions);
  }

  // A removed device stops vouching at once, whichever process removed it.
  registry.onChange((change: RegistryChange) => {
    const dropped = change.kind === 'removed'
      ? vouches.dropDevices(change.user, change.hashes)
      : vouches.prune((user, hash) => registry.hasDevice(user, hash));
    if (dropped > 0) revokedTotal?.inc(undefined, dropped);
  });

  /**
   * Raises something every host may see happen (an alert's count, a limit crossed) once for all
   * of them: the host that claims it does; without the others' answer, this one does.
   */
  const announceOnce = (what: string, ttlMs: number, raise: () => void): void => {
    if (shared?.up) void shared.claimAnnouncement(what, ttlMs).then((mine) => { if (mine !== false) raise(); });
    else raise();
  };
  const announceLimits = (hits: readonly LimitHit[]): void => {
    for (const h of hits) {
      announceOnce(`limit:${h.rule.path}:${h.subject}`, h.rule.windowMs, () => {
        limitsTotal?.inc({ rule: h.rule.path });
        events.emit({ event: 'limit_triggered', rule: h.rule.path, key: h.rule.key, subject: h.subject, count: Math.round(h.count), then: describeAction(h.action) });
      });
    }
  };

  // Other hosts' news, applied to this host's copy as if seen here, but announced nowhere: the
  // host that saw it raised its events and alerts.
  shared?.onEvent((e: SharedEvent) => {
    if (e.kind === 'login') return; // the Dovecot adapter's
    const t = now();
    if (e.kind === 'vouch') vouches.add(e.user, e.remote, e.vouch, e.ttlMs);
    else if (e.kind === 'failure') {
      // Another host's failure can be the one that crosses a limit here: announced once for all hosts.
      if (rules.limits.length > 0 && rules.defences.mode !== 'off') announceLimits(defences.recordFailure({ user: e.user, remote: e.remote, ...(e.guess ? { pwhash: e.guess } : {}) }, t));
    } else if (e.kind === 'refusal') defences.recordRefusal(e.user, e.refusal, e.unknown, t);
  });

  // With a shared store, a learned device is registered there: while it is unreachable, none is.
  const readOnly = (): { registryReadOnly?: string } =>
    shared !== undefined && !shared.up ? { registryReadOnly: 'the shared store (Redis) is unreachable' } : {};

  const knownProven = (d: Decision) => d.reason === 'registered_device' || d.reason === 'vouched' || d.reason === 'learning';

  /**
   * Attack limits on top of the device decision. Limits on the address and network follow the
   * defences' own mode whatever the account (a dictionary run mostly names accounts that do not
   * exist, or are not locked); limits on the user also follow the user's lock mode.
   */
  const applyLimits = (req: AuthRequest, d: Decision, t: number): void => {
    const mode = rules.defences.mode;
    if (mode === 'off' || rules.limits.length === 0) return;
    const v = defences.verdict(req, knownProven(d), t);
    const userMode = d.mode === 'off' ? 'off' : d.mode === 'monitor' || mode === 'monitor' ? 'monitor' : 'enforce';
    const candidates: Array<{ hit: LimitHit; enforced: boolean }> = [];
    if (v.address !== undefined) candidates.push({ hit: v.address, enforced: mode === 'enforce' });
    if (v.user !== undefined && userMode !== 'off') candidates.push({ hit: v.user, enforced: userMode === 'enforce' });
    if (candidates.length === 0) return;
    const severity = (c: { hit: LimitHit; enforced: boolean }) => (c.enforced ? 2_000_000 : 0) + (c.hit.action.action === 'reject' ? 1_000_000 : c.hit.action.seconds);
    const { hit, enforced } = candidates.reduce((a, c) => (severity(c) > severity(a) ? c : a));
    d.limit = { rule: hit.rule.path, key: hit.rule.key, action: describeAction(hit.action), count: Math.round(hit.count), enforced };
    const what = hit.rule.key === 'user' ? req.user : hit.subject;
    const why = `${hit.rule.key} ${what} is over ${hit.rule.path}: ${Math.round(hit.count)} ${hit.rule.distinctUsers !== undefined ? 'user names tried' : 'failures'} within ${formatDuration(hit.rule.windowMs)}, then ${describeAction(hit.action)}`;
    if (!enforced) {
      if (hit.action.action === 'reject' && d.action === 'allow' && !d.would_reject) {
        Object.assign(d, { would_reject: true, reason: 'limit', rule: hit.rule.path, why: `${why} (defences in monitor mode: not enforced)` });
      }
      return;
    }
    if (hit.action.action === 'reject') {
      if (d.action === 'reject') return; // already refused by the device lock; keep that reason
      Object.assign(d, { action: 'reject', would_reject: false, reason: 'limit', rule: hit.rule.path, why, message: effectivePolicy(rules, req.user, registry.settings(req.user)).message });
      delete d.proven;
      delete d.learn;
    } else if (d.action === 'allow') {
      Object.assign(d, { action: 'delay', seconds: hit.action.seconds, reason: d.would_reject ? d.reason : 'limit', rule: d.would_reject ? d.rule : hit.rule.path, why: d.would_reject ? `${d.why}; and ${why}` : why });
    }
  };

  const noteRefusal = (req: AuthRequest, d: Decision, t: number): void => {
    const unknown = d.reason === 'unknown_device' && d.action === 'reject';
    const shown = d.evidence.find((e) => e.status === 'unregistered');
    const deviceType = shown === undefined ? undefined : shown.kind === 'cid' ? req.cid?.type : 'cert';
    const extra = { ...(shown?.device ? { device: shown.device } : {}), ...(deviceType ? { device_type: deviceType } : {}), ...(req.clientName ? { client_name: req.clientName } : {}) };
    const refusal = { at: new Date(t).toISOString(), protocol: req.protocol, remote: req.remote, reason: d.reason, refused: d.action !== 'allow', ...extra };
    const count = defences.recordRefusal(req.user, refusal, unknown, t);
    shared?.publish({ kind: 'refusal', user: req.user, refusal, unknown, at: t });
    if (!unknown) return;
    opts.pending?.refused(req, d);
    const base = { user: req.user, remote: req.remote, ...extra };
    events.emit({ event: 'unknown_device_refused', protocol: req.protocol, ...base });
    const alert = rules.alerts.unknownDevice;
    if (count >= alert.attempts && !alerted.has(req.user)) {
      alerted.set(req.user, true);
      const raise = () => {
        alertsTotal?.inc();
        events.emit({ event: 'unknown_device', attempts: count, window: formatDuration(alert.windowMs), ...base });
      };
      // One host raises it for the window; without the others' answer, this one does.
      announceOnce(`alert:${req.user}`, alert.windowMs, raise);
    }
  };

  const log = (req: AuthRequest, d: Decision): void => {
    const level = rules.log.decisions;
    const refused = d.action !== 'allow' || d.would_reject;
    if (level === 'none' || (level === 'refusals' && !refused)) return;
    logger.log(refused ? 'warn' : 'info', 'decision', decisionRecord(req, d));
  };

  /** `keepMs`: how long other hosts still count the slot (a registration they have yet to read). */
  const releaseSlot = (d: Decision | undefined, keepMs = 0): void => {
    const s = d === undefined ? undefined : slotOf.get(d);
    if (s === undefined) return;
    learnSlots.release(s.user, s.slot);
    if (shared !== undefined && !s.slot.startsWith('unkeyed:')) shared.releaseSlot(s.user, s.slot, keepMs);
  };

  /** Everything a decision goes through, login or transaction; `counted` says whether it is a new login for the metrics. */
  const run = (req: AuthRequest, counted: boolean, learning: (user: string, slot: string) => number = learnSlots.others): Decision => {
    const start = performance.now();
    const t = now();
    const d = decide(req, { rules, registry, vouches, now: t, learning, ...readOnly() });
    applyLimits(req, d, t);
    if (d.learn !== undefined) {
      const l = d.learn;
      // The slot's name may predate the registry's key (a fresh registry): ask by CID, not by slot.
      learnSlots.reserve(req.user, l.slot, l.kind === 'cid' ? () => registry.findCid(req.user, l.cid) !== undefined : () => registry.hasDevice(req.user, l.fingerprint));
      slotOf.set(d, { user: req.user, slot: d.learn.slot });
    }
    stats.decisions++;
    if (d.action !== 'allow' || d.would_reject) noteRefusal(req, d, t);
    log(req, d);
    // Logged whatever log.decisions says: two CIDs on one connection is a misconfigured client or a forgery.
    if (req.cidMismatch === true && req.stage !== 'after_auth') {
      logger.log('warn', 'cid_mismatch', { user: req.user, remote: req.remote, protocol: req.protocol, ...(req.sessionId ? { session: req.sessionId } : {}), note: 'the IMAP ID carried a CID other than the CLIENTID command\'s; decided on the CLIENTID one' });
    }
    const action = d.action === 'allow' && d.would_reject ? 'would_reject' : d.action;
    if (counted) decisionsTotal?.inc({ protocol: d.protocol.name, action, mode: d.mode, reason: d.reason });
    else transactionsTotal?.inc({ action });
    decisionSeconds?.observe((performance.now() - start) / 1000);
    return d;
  };

  const reportSuccess = (req: AuthRequest, decision?: Decision): void => {
    const d = decision ?? decide(req, { rules, registry, vouches, now: now(), learning: learnSlots.others, ...readOnly() });
    stats.successes++;
    const vouch = (device: { id: string; hash: string }) => {
      if (req.remote === null) return;
      const ttl = effectivePolicy(rules, req.user, registry.settings(req.user)).vouch_ttl;
      const v = { at: now(), device: device.id, hash: device.hash };
      vouches.add(req.user, req.remote, v, ttl);
      if (ttl > 0 && shared !== undefined) {
        // A device renews its vouch at every login and every RCPT: the other hosts hear of it
        // again only once their copy has aged a while, not at each renewal.
        const key = `${req.user}\0${req.remote}`;
        const told = vouchesTold.get(key);
        if (told === undefined || told.hash !== v.hash || v.at - told.at >= Math.min(ttl / 4, VOUCH_RETELL_MS)) {
          vouchesTold.set(key, { hash: v.hash, at: v.at });
          shared.publish({ kind: 'vouch', user: req.user, remote: req.remote, vouch: v, ttlMs: ttl });
        }
      }
    };
    if (d.proven !== undefined) {
      vouch(d.proven);
      opts.pending?.used(req.user, d.proven.hash);
    }
    const learn = d.learn;
    if (learn === undefined) return;
    const input = learn.kind === 'cid'
      ? { kind: 'cid' as const, cid: learn.cid, label: learn.label }
      : { kind: 'cert' as const, fingerprint: learn.fingerprint, label: learn.label };
    // Written in the background: the login already succeeded, and the slot stays reserved until
    // the registration is durable, so concurrent logins still count it.
    const p: Promise<void> = Promise.resolve()
      .then(() => registry.add(req.user, input, 'learn', { maxDevices: learn.maxDevices, now: new Date(now()) }))
      .then((r) => {
        const id = r.status === 'full' ? (learn.kind === 'cid' ? learn.hashPrefix : learn.fingerprint.slice(0, 12)) : r.device.id;
        learnedTotal?.inc({ status: r.status });
        if (r.status === 'added') {
          events.emit({ event: 'device_registered', user: req.user, device: id, kind: r.device.kind, type: r.device.type, source: 'learn', label: r.device.label, remote: req.remote });
        } else if (r.status === 'full') {
          logger.log('warn', 'device_learn_refused', { user: req.user, device: id, note: 'max_devices reached meanwhile (another host or the CLI registered a device)' });
        }
        if (r.status !== 'full') vouch({ id: r.device.id, hash: r.device.hash });
      })
      .catch((err: unknown) => {
        // Only the registration is lost; decisions go on from memory.
        writeErrors?.inc();
        logger.log('error', 'registry_write_failed', { user: req.user, error: (err as Error).message });
      })
      .finally(() => {
        releaseSlot(d, SLOT_SETTLE_MS);
        inFlight.delete(p);
      });
    inFlight.add(p);
  };

  const reportFailure = (req: AuthRequest, info: FailureInfo): void => {
    stats.failures++;
    if (info.policyReject) stats.policyRejects++;
    releaseSlot(info.decision);
    failuresTotal?.inc({ protocol: req.protocol, refused_by_cidlock: info.policyReject ? 'yes' : 'no' });
    if (rules.limits.length === 0 || rules.defences.mode === 'off') return;
    const guess = req.guessTag ? guessKey(req.guessTag) : undefined;
    const t = now();
    const hits = defences.recordFailure({ user: req.user, remote: req.remote, ...(guess ? { pwhash: guess } : {}) }, t);
    shared?.publish({ kind: 'failure', user: req.user, remote: req.remote, ...(guess ? { guess } : {}), at: t });
    announceLimits(hits);
  };

  const recentCertificate = (remote: string): readonly string[] => {
    const seen = certsSeen.get(remote);
    return seen !== undefined && now() - seen.at <= CERT_MEMORY_MS ? seen.fps : [];
  };

  // SMTP AUTH through Dovecot SASL carries no certificate; Postfix saw it at EHLO.
  const withCertificate = (req: AuthRequest): AuthRequest => {
    if ((req.protocol === 'smtp' || req.protocol === 'submission') && req.remote !== null && req.certFingerprints.length === 0) {
      const fps = recentCertificate(req.remote);
      if (fps.length > 0) return { ...req, certFingerprints: fps };
    }
    return req;
  };

  const decideNow = (req: AuthRequest, o?: { replaces?: Decision }, learning?: (user: string, slot: string) => number): Decision => {
    if (o?.replaces !== undefined) releaseSlot(o.replaces);
    const d = run(withCertificate(req), true, learning);
    if (req.protocol === 'smtp' && req.remote !== null) smtpLogins.set(`${req.user}\0${req.remote}`, now());
    return d;
  };

  return {
    get rules() { return rules; },
    registry,
    vouches,
    defences,
    stats,
    decide: (req, o) => decideNow(req, o),
    async decideLogin(req, o) {
      if (shared === undefined || !shared.up) return decideNow(req, o);
      const r = withCertificate(req);
      // What this host alone would decide, counted nowhere: whether asking the others can matter.
      const alone = () => decide(r, { rules, registry, vouches, now: now(), learning: learnSlots.others, ...readOnly() });
      let pre = alone();
      if ((pre.action !== 'allow' || pre.would_reject) && r.remote !== null && vouches.get(r.user, r.remote) === undefined) {
        const got = await shared.fetchVouch(r.user, r.remote);
        if (got !== null) {
          vouches.add(r.user, r.remote, got.vouch, got.untilMs - got.vouch.at);
          pre = alone();
        }
      }
      let learning: ((user: string, slot: string) => number) | undefined;
      let claimed: string | undefined;
      const l = pre.learn;
      if (l !== undefined && !l.slot.startsWith('unkeyed:')) {
        const registered = registry.devices(r.user).slice(0, MAX_CLAIM_DEVICES).map((d) => d.hash);
        const c = await shared.claimSlot(r.user, l.slot, l.maxDevices, registered, LEARN_SLOT_MS);
        if (c !== null && !c.reserved) learning = () => c.others; // the others hold the slots: refused as full
        else if (c !== null) claimed = l.slot;
      }
      const d = decideNow(req, o, learning);
      if (claimed !== undefined && d.learn?.slot !== claimed) shared.releaseSlot(r.user, claimed, 0);
      return d;
    },
    checkTransaction(req) {
      // Postfix asks again at every MAIL and RCPT of a session whose AUTH Dovecot may already have
      // asked about: a new login for the metrics only the first time.
      const key = `${req.user}\0${req.remote ?? ''}`;
      const t = now();
      const last = smtpLogins.get(key);
      const seen = last !== undefined && t - last < SMTP_SESSION_MS;
      if (!seen) smtpLogins.set(key, t);
      const d = run(req, !seen);
      // SASL already succeeded: a proven or learned device vouches now, a refusal is a failed attempt.
      if (d.action === 'allow' && !d.would_reject && (d.proven !== undefined || d.learn !== undefined)) reportSuccess(req, d);
      else if (d.action === 'reject') reportFailure(req, { policyReject: true, decision: d });
      else releaseSlot(d);
      return d;
    },
    reportSuccess,
    reportFailure,
    noteClientCertificate(remote, fps) {
      if (fps.length > 0) certsSeen.set(remote, { fps, at: now() });
    },
    addressVerdict(remote) {
      if (rules.defences.mode !== 'enforce') return undefined;
      const hit = defences.addressVerdict(remote, now());
      if (hit === undefined) return undefined;
      const text = `too many failed logins from ${hit.subject}`;
      return hit.action.action === 'reject' ? { action: 'reject', text } : { action: 'defer', text };
    },
    smtpDenied(user) {
      // decide() holds the mode rule: only an enforced protocols.smtp: deny refuses here.
      const d = decide({ protocol: 'smtp', user, remote: null, tls: true, certFingerprints: [], stage: 'sasl_table' }, { rules, registry, vouches, now: now() });
      return d.reason === 'protocol_deny' && d.action === 'reject' ? { text: d.message || 'Access denied' } : undefined;
    },
    setRules(next) {
      rules = next;
      defences.setRules(next.limits, next.counters, next.alerts.unknownDevice.windowMs);
      opts.pending?.setRules(next);
    },
    async idle() {
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
      await opts.pending?.idle();
    },
  };
}
