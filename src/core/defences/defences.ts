import { LRUCache } from 'lru-cache';
import type { CounterSettings, LimitAction, LimitRule } from '../rules/types.js';
import { networkKey } from './network-key.js';
import { addToWindow, newWindow, windowEstimate, type WindowCount } from './sliding-window.js';

export interface Attempt {
  user: string;
  remote: string | null;
  /** Dovecot's truncated hash of the password: the same guess repeated is counted once. */
  pwhash?: string;
}

export interface LimitHit {
  rule: LimitRule;
  /** What was counted: the address, the network ("198.51.100.0/24") or the user. */
  subject: string;
  action: LimitAction;
  count: number;
}

/** A refused login as "was this you?" shows it; snake_case, as the admin API serves it. */
export interface Refusal {
  at: string;
  protocol: string;
  remote: string | null;
  reason: string;
  /** false for a monitor-mode would-reject: the login went through, enforce would have refused it. */
  refused: boolean;
  device?: string;
  device_type?: string;
  client_name?: string;
}

/** The worst active limits for an attempt, by who they protect: see Defences.verdict. */
export interface Verdict {
  /** Limits on the client address and its network: they follow the defences' own mode. */
  address?: LimitHit;
  /** Limits on the account: they also follow the account's lock mode. */
  user?: LimitHit;
}

export interface DefenceSizes {
  counters: number;
  penalties: number;
  guesses: number;
  users: number;
  evictions: number;
}

export interface Defences {
  /** A failed login (wrong password, unknown user, or a refusal). Returns limits that became active. */
  recordFailure(a: Attempt, now: number): LimitHit[];
  /**
   * The most severe active limits for this attempt. A registered device proven on this attempt
   * skips the user and network limits (an account under attack, a busy /24), never the limits on
   * its own address: that address is the attacker's.
   */
  verdict(a: { user: string; remote: string | null }, provenDevice: boolean, now: number): Verdict;
  /** Address and network limits only: what Postfix's client table answers. */
  addressVerdict(remote: string, now: number): LimitHit | undefined;
  /** A refused login, kept for "was this you?"; returns the user's unknown-device count in the alert window. */
  recordRefusal(user: string, r: Refusal, unknownDevice: boolean, now: number): number;
  recentRefusals(user: string): readonly Refusal[];
  setRules(limits: readonly LimitRule[], counters: CounterSettings, alertWindowMs: number): void;
  sizes(): DefenceSizes;
}

const RECENT_REFUSALS = 20;

const severity = (h: LimitHit) => (h.action.action === 'reject' ? 1_000_000 : h.action.seconds);

/**
 * Attack counters, bounded in memory: every map is an LRU with a size cap, so an attacker
 * cycling through addresses or user names pushes out old entries instead of growing memory.
 */
export function createDefences(init: { limits: readonly LimitRule[]; counters: CounterSettings; alertWindowMs: number }): Defences {
  let limits = init.limits;
  let settings = init.counters;
  let alertWindowMs = init.alertWindowMs;
  let evictions = 0;
  const onDispose = (_v: unknown, _k: string, reason: string) => { if (reason === 'evict') evictions++; };
  // Entries also expire: a counter idle for two of its windows counts nothing any more.
  const longestWindow = () => Math.max(60_000, ...limits.map((r) => r.windowMs));
  const make = <V extends {}>(ttl: number) => new LRUCache<string, V>({ max: settings.maxEntries, ttl, ttlAutopurge: false, updateAgeOnGet: false, dispose: onDispose });
  const makeAll = () => ({
    counters: make<WindowCount>(2 * longestWindow()),
    distinct: make<Map<string, number>>(longestWindow()),
    penalties: make<{ until: number }>(Math.max(longestWindow(), ...limits.map((r) => (r.then.action === 'reject' ? r.then.forMs : 0)))),
    guesses: make<{ at: number }>(longestWindow()),
    perUser: make<{ unknown: WindowCount; recent: Refusal[] }>(Math.max(24 * 3_600_000, 2 * alertWindowMs)),
  });
  let { counters, distinct, penalties, guesses, perUser } = makeAll();

  // Rules with the same key and window share one counter, so reordering limits keeps the counts.
  const counterKey = (r: LimitRule, subject: string) => `${r.key}|${r.windowMs}|${subject}`;
  const subjectOf = (r: LimitRule, a: { user: string; remote: string | null }): string | null => {
    if (r.key === 'user') return a.user === '' ? null : a.user;
    if (a.remote === null) return null;
    return r.key === 'address' ? a.remote : networkKey(a.remote, settings.prefixV4, settings.prefixV6);
  };
  const countFor = (r: LimitRule, subject: string, now: number): number => {
    if (r.distinctUsers !== undefined) {
      const seen = distinct.get(counterKey(r, subject));
      if (seen === undefined) return 0;
      let n = 0;
      for (const at of seen.values()) if (now - at < r.windowMs) n++;
      return n;
    }
    const w = counters.get(counterKey(r, subject));
    return w === undefined ? 0 : windowEstimate(w, now, r.windowMs);
  };
  const threshold = (r: LimitRule) => r.failures ?? r.distinctUsers ?? Infinity;
  const penaltyKey = (r: LimitRule, subject: string) => `${r.path}|${subject}`;
  const activeHit = (r: LimitRule, subject: string, now: number): LimitHit | undefined => {
    const count = countFor(r, subject, now);
    const p = penalties.get(penaltyKey(r, subject));
    if (p !== undefined && p.until > now) return { rule: r, subject, action: r.then, count };
    return count >= threshold(r) ? { rule: r, subject, action: r.then, count } : undefined;
  };
  const worst = (hits: LimitHit[]) => hits.reduce<LimitHit | undefined>((a, h) => (a === undefined || severity(h) > severity(a) ? h : a), undefined);

  return {
    recordFailure(a, now) {
      if (a.pwhash) {
        const g = `${a.user}\0${a.pwhash}`;
        const seen = guesses.get(g);
        const maxWindow = Math.max(0, ...limits.map((r) => r.windowMs));
        if (seen !== undefined && now - seen.at < maxWindow) return [];
        guesses.set(g, { at: now });
      }
      const newly: LimitHit[] = [];
      const counted = new Set<string>(); // rules sharing a counter must count this failure once
      const before = new Map<LimitRule, boolean>();
      for (const r of limits) {
        const subject = subjectOf(r, a);
        if (subject !== null) before.set(r, activeHit(r, subject, now) !== undefined);
      }
      for (const r of limits) {
        const subject = subjectOf(r, a);
        if (subject === null) continue;
        const k = counterKey(r, subject);
        const kind = r.distinctUsers !== undefined ? 'users' : 'failures';
        if (counted.has(`${kind}|${k}`)) continue;
        counted.add(`${kind}|${k}`);
        if (r.distinctUsers !== undefined) {
          if (a.user === '') continue;
          let seen = distinct.get(k);
          if (seen === undefined) distinct.set(k, (seen = new Map()));
          seen.delete(a.user); // re-insert: the map stays ordered oldest first
          seen.set(a.user, now);
          // Bounded: only the newest few beyond the threshold matter.
          while (seen.size > r.distinctUsers * 2) seen.delete(seen.keys().next().value!);
        } else {
          let w = counters.get(k);
          if (w === undefined) counters.set(k, (w = newWindow(now)));
          addToWindow(w, now, r.windowMs);
        }
      }
      for (const r of limits) {
        const subject = subjectOf(r, a);
        if (subject === null) continue;
        const hit = activeHit(r, subject, now);
        if (hit !== undefined && before.get(r) !== true) {
          if (r.then.action === 'reject' && r.then.forMs > 0) penalties.set(penaltyKey(r, subject), { until: now + r.then.forMs });
          newly.push(hit);
        }
      }
      return newly;
    },
    verdict(a, provenDevice, now) {
      const address: LimitHit[] = [];
      const user: LimitHit[] = [];
      for (const r of limits) {
        if (provenDevice && r.key !== 'address') continue;
        const subject = subjectOf(r, a);
        if (subject === null) continue;
        const h = activeHit(r, subject, now);
        if (h !== undefined) (r.key === 'user' ? user : address).push(h);
      }
      const out: Verdict = {};
      const wa = worst(address);
      const wu = worst(user);
      if (wa !== undefined) out.address = wa;
      if (wu !== undefined) out.user = wu;
      return out;
    },
    addressVerdict(remote, now) {
      const hits: LimitHit[] = [];
      for (const r of limits) {
        if (r.key === 'user') continue;
        const subject = subjectOf(r, { user: '', remote });
        if (subject === null) continue;
        const h = activeHit(r, subject, now);
        if (h !== undefined) hits.push(h);
      }
      return worst(hits);
    },
    recordRefusal(user, r, unknownDevice, now) {
      let u = perUser.get(user);
      if (u === undefined) perUser.set(user, (u = { unknown: newWindow(now), recent: [] }));
      u.recent.push(r);
      if (u.recent.length > RECENT_REFUSALS) u.recent.shift();
      if (!unknownDevice) return Math.floor(windowEstimate(u.unknown, now, alertWindowMs));
      addToWindow(u.unknown, now, alertWindowMs);
      return Math.round(windowEstimate(u.unknown, now, alertWindowMs));
    },
    recentRefusals: (user) => perUser.get(user)?.recent ?? [],
    setRules(l, c, aw) {
      limits = l;
      alertWindowMs = aw;
      if (c.maxEntries !== settings.maxEntries) {
        settings = c;
        // A new size cap needs new maps; counts restart, which a reload of the limits may do anyway.
        ({ counters, distinct, penalties, guesses, perUser } = makeAll());
      } else {
        settings = c;
      }
    },
    sizes: () => ({ counters: counters.size + distinct.size, penalties: penalties.size, guesses: guesses.size, users: perUser.size, evictions }),
  };
}
