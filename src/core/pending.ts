import { LRUCache } from 'lru-cache';
import type { EventSink } from '../alerts/events.js';
import type { Decision } from './decide.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { PENDING_CLIENT_MAX } from './registry/codec.js';
import { cleanLabel, type Registry } from './registry/registry.js';
import type { PendingDevice, RegistryOp, StoredDevice } from './registry/types.js';
import type { AuthRequest } from './request.js';
import type { Rules } from './rules/types.js';

/**
 * Refused devices remembered for their holder's answer, and the last-used day of registered ones.
 * Both come from logins, which can come by the thousand a second: what reaches the registry is
 * bounded and coalesced, so a flood of attempts is never a flood of writes.
 */
export interface PendingTracker {
  /** A locked account refused an unknown device: remember it, and say whether its holder should hear of it. */
  refused(req: AuthRequest, d: Decision): void;
  /** A registered device proved a login: its last-used day. */
  used(user: string, hash: string): void;
  /**
   * Claims the right to mail the holder about this pending device, for all hosts (under the
   * registry lock): not about a device answered "not me", once a day per device, and at most
   * `perAccountPerDay` a day per account. Returns the device and when it was noticed before, or
   * null when no notice is due.
   */
  claimNotice(user: string, hash: string, perAccountPerDay: number): Promise<{ pending: PendingDevice; previous: number } | null>;
  /** A notice that could not be sent: the claim is given back, so a later attempt may notify. */
  unclaimNotice(user: string, hash: string, claim: { pending: PendingDevice; previous: number }): Promise<void>;
  /** Writes what is due now: tries and last-seen times, last-used days. */
  flush(): Promise<void>;
  setRules(rules: Rules): void;
  /** Resolves once every write started has finished. */
  idle(): Promise<void>;
  stop(): void;
}

const DAY = 86_400_000;
/** A pending device's tries and last-seen time reach the registry at most this often. */
const TOUCH_MS = 60_000;
const FLUSH_MS = 30_000;
/** A device's first login of the day is written this soon: once a day per device, so it is cheap. */
const USED_SOON_MS = 1_000;
/** New pending devices one account may add in an hour: a bot cycling CIDs writes no more than this. */
const NEW_PER_ACCOUNT_PER_HOUR = 20;
const MAX_TRACKED = 100_000;
/** Writes in one flush; what is left waits for the next. */
const MAX_FLUSH_OPS = 5_000;
/** New pending devices wait this long to be written together; at most MAX_BATCH in one append. */
const NEW_BATCH_MS = 100;
const MAX_BATCH = 1_000;
/** How often one device may ask for a notice (the claim is a write under the lock). */
const NOTICE_ASK_MS = 3_600_000;

const dayOf = (t: number) => t - (t % DAY);

/** A pending device not tried for pending.expire is forgotten: every reader and writer asks this. */
export const pendingExpired = (p: Readonly<PendingDevice>, now: number, expireMs: number): boolean => now - p.last > expireMs;

/** The account's pending devices still in force, oldest first. */
export function livePending(registry: Registry, user: string, now: number, expireMs: number): PendingDevice[] {
  return registry.pending(user).filter((p) => !pendingExpired(p, now, expireMs));
}

export function clientText(req: AuthRequest): string {
  const text = [req.clientName, req.clientVersion].filter((x) => x !== undefined && x !== '').join(' ');
  // Untrusted text that ends up in mail and pages: printable, one line, bounded.
  return text.replace(/[\x00-\x1f\x7f]/g, ' ').replace(/\s+/g, ' ').trim().slice(0, PENDING_CLIENT_MAX);
}

export function createPendingTracker(o: {
  registry: Registry;
  rules: Rules;
  logger: Logger;
  now?: () => number;
  metrics?: Metrics;
  events?: EventSink;
  /** A new pending device, or one whose daily notice is due: the daemon decides whether to mail. */
  notify?: (user: string, hash: string) => void;
}): PendingTracker {
  const { registry, logger } = o;
  const now = o.now ?? Date.now;
  let rules = o.rules;
  const inFlight = new Set<Promise<unknown>>();
  // Tries and sightings not yet written, per user and hash.
  const touched = new LRUCache<string, { user: string; hash: string; tries: number; last: number; remote: string | null; protocol: string; client: string }>({ max: MAX_TRACKED });
  const writing = new Set<string>();
  const newPerAccount = new LRUCache<string, number[]>({ max: MAX_TRACKED });
  const usedDirty = new LRUCache<string, { user: string; hash: string; day: number }>({ max: MAX_TRACKED });
  // When each device last asked for a notice; on the tracker's clock, not the cache's.
  const asked = new LRUCache<string, number>({ max: MAX_TRACKED });
  const m = o.metrics;
  const pendingTotal = m?.counter('pending_devices_total', 'Refused unknown devices remembered for their holder, by outcome', ['status']);
  m?.gaugeFn('pending_devices', 'Devices waiting for their holder\'s answer (or answered "not me")', () => registry.pendingTotal());

  let soon: NodeJS.Timeout | undefined;
  let stopped = false;
  const background = <T>(p: Promise<T>, what: string): void => {
    const q = p.catch((err: unknown) => logger.log('error', 'registry_write_failed', { what, error: (err as Error).message })).finally(() => inFlight.delete(q));
    inFlight.add(q);
  };

  const allowNew = (user: string, t: number): boolean => {
    const times = (newPerAccount.get(user) ?? []).filter((x) => t - x < 3_600_000);
    if (times.length >= NEW_PER_ACCOUNT_PER_HOUR) return false;
    times.push(t);
    newPerAccount.set(user, times);
    return true;
  };

  const expired = (p: PendingDevice, t: number) => pendingExpired(p, t, rules.pending.expireMs);

  // New pending devices are written together, a batch at a time: a burst of unknown devices
  // (a bot, a mail client misconfigured across a company) costs one locked append, not one each.
  const queued = new Map<string, { user: string; fresh: PendingDevice }>();
  let batchTimer: NodeJS.Timeout | undefined;
  type Outcome = 'added' | 'updated' | 'registered' | 'full' | 'evicted';

  const writeBatch = (): void => {
    clearTimeout(batchTimer);
    batchTimer = undefined;
    const items = [...queued.values()];
    queued.clear();
    if (items.length === 0) return;
    background(
      registry.change(() => {
        const t = now();
        let total = registry.pendingTotal();
        const lists = new Map<string, PendingDevice[]>(); // each user's live pending devices, as they will be
        const gone = new Map<string, string[]>();
        const outcome: Outcome[] = [];
        for (const { user, fresh } of items) {
          if (registry.hasDevice(user, fresh.hash)) { outcome.push('registered'); continue; }
          let list = lists.get(user);
          if (list === undefined) {
            const mine = registry.pending(user);
            const old = mine.filter((p) => expired(p, t)).map((p) => p.hash);
            gone.set(user, old);
            total -= old.length;
            lists.set(user, (list = mine.filter((p) => !expired(p, t))));
          }
          const have = list.find((p) => p.hash === fresh.hash);
          if (have !== undefined) {
            Object.assign(have, { last: Math.max(have.last, fresh.last), tries: have.tries + fresh.tries, remote: fresh.remote, protocol: fresh.protocol });
            outcome.push('updated');
            continue;
          }
          // An account's list is bounded: the device seen least recently makes room.
          while (list.length >= rules.pending.perAccount) {
            const oldest = list.reduce((x, y) => (y.last < x.last ? y : x));
            list.splice(list.indexOf(oldest), 1);
            gone.get(user)!.push(oldest.hash);
            total--;
          }
          if (total >= rules.pending.total) { outcome.push('full'); continue; }
          list.push({ ...fresh });
          total++;
          outcome.push('added');
        }
        const ops: RegistryOp[] = [];
        for (const [user, hashes] of gone) if (hashes.length > 0) ops.push({ op: 'unpend', user, hashes });
        items.forEach(({ user, fresh }, i) => {
          if (outcome[i] !== 'added' && outcome[i] !== 'updated') return;
          const p = lists.get(user)!.find((x) => x.hash === fresh.hash);
          // Made room for a later device of the same burst: never written.
          if (p === undefined) outcome[i] = 'evicted';
          else ops.push({ op: 'pend', user, pending: p });
        });
        return { ops, result: outcome };
      }).then((outcome) => {
        items.forEach(({ user, fresh }, i) => {
          const r = outcome[i]!;
          pendingTotal?.inc({ status: r });
          if (r === 'full') logger.log('warn', 'pending_full', { user, note: `pending.total (${rules.pending.total}) devices are waiting already; this one is not remembered` });
          if (r !== 'added') return;
          o.events?.emit({ event: 'device_pending', user, device: fresh.hash.slice(0, 12), type: fresh.type, protocol: fresh.protocol, remote: fresh.remote, ...(fresh.client === '' ? {} : { client: fresh.client }) });
          asked.set(`${user}\0${fresh.hash}`, now());
          o.notify?.(user, fresh.hash);
        });
      }).finally(() => {
        for (const { user, fresh } of items) writing.delete(`${user}\0${fresh.hash}`);
      }),
      'pending devices',
    );
  };

  const addNew = (user: string, fresh: PendingDevice): void => {
    const key = `${user}\0${fresh.hash}`;
    writing.add(key);
    queued.set(key, { user, fresh });
    if (queued.size >= MAX_BATCH) writeBatch();
    else if (batchTimer === undefined && !stopped) {
      batchTimer = setTimeout(writeBatch, NEW_BATCH_MS);
      batchTimer.unref();
    }
  };

  const refused = (req: AuthRequest, d: Decision): void => {
    const t = now();
    const shown = d.evidence.find((e) => e.status === 'unregistered' && (e.kind === 'cid' || e.kind === 'cert'));
    if (shown === undefined) return;
    let hash: string | null = null;
    let kind: 'cid' | 'cert' = 'cid';
    let type = 'cert';
    if (shown.kind === 'cid' && req.cid !== undefined) {
      hash = registry.cidHash(req.cid);
      type = req.cid.type;
    } else if (shown.kind === 'cert' && req.certFingerprints.length > 0) {
      hash = req.certFingerprints[0]!;
      kind = 'cert';
    }
    // No key yet means no device was ever registered: there is nothing to approve against.
    if (hash === null) return;
    const user = req.user;
    const key = `${user}\0${hash}`;
    const remote = req.remote === null ? null : req.remote.slice(0, 64);
    const protocol = req.protocol.slice(0, 16);
    const have = registry.findPending(user, hash);
    if (have === undefined || expired(have, t)) {
      if (writing.has(key)) {
        const x = touched.get(key);
        if (x !== undefined) x.tries++;
        else touched.set(key, { user, hash, tries: 1, last: t, remote, protocol, client: clientText(req) });
        return;
      }
      if (!allowNew(user, t)) {
        pendingTotal?.inc({ status: 'rate_limited' });
        return;
      }
      addNew(user, { hash, kind, type, client: clientText(req), protocol, remote, first: t, last: t, tries: 1, state: 'pending', noticed: 0 });
      return;
    }
    const x = touched.get(key);
    // A known device tries again and again: counted in place, its client text made only once.
    if (x === undefined) touched.set(key, { user, hash, tries: 1, last: t, remote, protocol, client: clientText(req) });
    else {
      x.tries++;
      x.last = t;
      x.remote = remote;
      x.protocol = protocol;
    }
    // Its daily notice may be due: asked for at most once an hour per device.
    const lastAsked = asked.get(key);
    if (have.state === 'pending' && t - have.noticed >= DAY && (lastAsked === undefined || t - lastAsked >= NOTICE_ASK_MS)) {
      asked.set(key, t);
      o.notify?.(user, hash);
    }
  };

  const flush = async (): Promise<void> => {
    writeBatch();
    const t = now();
    const touches = [...touched.values()].filter((x) => !writing.has(`${x.user}\0${x.hash}`));
    const due = touches.filter((x) => {
      const have = registry.findPending(x.user, x.hash);
      return have === undefined || x.last - have.last >= TOUCH_MS || t - have.last >= TOUCH_MS;
    }).slice(0, MAX_FLUSH_OPS);
    const used = [...usedDirty.values()].slice(0, MAX_FLUSH_OPS);
    if (due.length === 0 && used.length === 0) return;
    for (const x of due) touched.delete(`${x.user}\0${x.hash}`);
    for (const u of used) usedDirty.delete(`${u.user}\0${u.hash}`);
    await registry.change(() => {
      const ops: RegistryOp[] = [];
      for (const x of due) {
        const have = registry.findPending(x.user, x.hash);
        // Answered or approved meanwhile: its tries are of no more use.
        if (have === undefined) continue;
        ops.push({ op: 'pend', user: x.user, pending: { ...have, tries: have.tries + x.tries, last: Math.max(have.last, x.last), remote: x.remote, protocol: x.protocol, ...(have.client === '' && x.client !== '' ? { client: x.client } : {}) } });
      }
      const byUser = new Map<string, { day: number; hashes: string[] }>();
      for (const u of used) {
        const d = registry.device(u.user, u.hash);
        if (d === undefined || (d.used ?? 0) >= u.day) continue;
        const k = `${u.user}\0${u.day}`;
        const g = byUser.get(k) ?? { day: u.day, hashes: [] };
        g.hashes.push(u.hash);
        byUser.set(k, g);
      }
      for (const [k, g] of byUser) ops.push({ op: 'used', user: k.slice(0, k.indexOf('\0')), hashes: g.hashes, at: g.day });
      return { ops, result: undefined };
    });
  };

  const timer = setInterval(() => background(flush(), 'pending and last-used'), FLUSH_MS);
  timer.unref();

  return {
    refused,
    used(user, hash) {
      const day = dayOf(now());
      const d = registry.device(user, hash);
      if (d === undefined || (d.used ?? 0) >= day) return;
      const key = `${user}\0${hash}`;
      if (usedDirty.has(key)) return;
      usedDirty.set(key, { user, hash, day });
      if (soon === undefined && !stopped) {
        soon = setTimeout(() => { soon = undefined; background(flush(), 'last-used'); }, USED_SOON_MS);
        soon.unref();
      }
    },
    claimNotice(user, hash, perAccountPerDay) {
      return registry.change(() => {
        const t = now();
        const p = registry.findPending(user, hash);
        if (p === undefined || p.state !== 'pending' || t - p.noticed < DAY || expired(p, t)) return { ops: [], result: null };
        // Counted apart from the pending devices, which come and go (approved, evicted).
        const today = registry.notices(user).filter((at) => t - at < DAY).length;
        if (today >= perAccountPerDay) return { ops: [], result: null };
        const claimed = { ...p, noticed: t };
        return { ops: [{ op: 'pend', user, pending: claimed }, { op: 'notice', user, at: t }], result: { pending: claimed, previous: p.noticed } };
      });
    },
    async unclaimNotice(user, hash, claim) {
      await registry.change(() => {
        const p = registry.findPending(user, hash);
        const ops: RegistryOp[] = [{ op: 'unnotice', user, at: claim.pending.noticed }];
        if (p !== undefined) ops.push({ op: 'pend', user, pending: { ...p, noticed: claim.previous } });
        return { ops, result: undefined };
      });
    },
    flush,
    setRules(next) {
      rules = next;
    },
    async idle() {
      writeBatch();
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
    /** Stops the timers; what is queued is written by the next idle() or flush(). */
    stop() {
      stopped = true;
      clearInterval(timer);
      clearTimeout(soon);
      clearTimeout(batchTimer);
      batchTimer = undefined;
    },
  };
}

/** Pending devices whose hash starts with this ID (as listings show it), expired ones left out. */
export function pendingById(registry: Registry, user: string, id: string, expireMs: number, now: number): PendingDevice[] {
  const want = id.toLowerCase();
  return livePending(registry, user, now, expireMs).filter((p) => p.hash.startsWith(want));
}

/**
 * Registers a pending device (source "approved" for its holder, "admin" for the operator), under
 * the registry lock; null when it is no longer pending (answered, expired, approved elsewhere).
 */
export function approvePending(registry: Registry, user: string, hash: string, o: { now: number; expireMs: number; source: 'approved' | 'admin'; label?: string }): Promise<StoredDevice | null> {
  return registry.change(() => {
    const p = registry.findPending(user, hash);
    if (p === undefined || pendingExpired(p, o.now, o.expireMs)) return { ops: [], result: null };
    if (registry.hasDevice(user, hash)) return { ops: [{ op: 'unpend', user, hashes: [hash] }], result: null };
    const device: StoredDevice = { hash, kind: p.kind, type: p.type, label: cleanLabel(o.label ?? (p.client === '' ? p.type : p.client)), added: o.now, source: o.source };
    return { ops: [{ op: 'add', user, device }], result: device };
  });
}

/** Marks a pending device "not me": it stays out and brings no more notices. False when it is not pending. */
export function rejectPending(registry: Registry, user: string, hash: string, o: { now: number; expireMs: number }): Promise<boolean> {
  return registry.change(() => {
    const p = registry.findPending(user, hash);
    if (p === undefined || pendingExpired(p, o.now, o.expireMs) || p.state === 'rejected') return { ops: [], result: false };
    return { ops: [{ op: 'pend', user, pending: { ...p, state: 'rejected' } }], result: true };
  });
}
