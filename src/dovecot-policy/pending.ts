import type { Decision } from '../core/decide.js';
import type { DovecotBody } from './translate.js';

/**
 * One login's decision, kept from its before-auth call to its after-auth call and its report.
 * Nothing in Dovecot's body tells the two allow calls apart, so they are paired by the fields
 * that stay the same across them; the account is not among them, since Dovecot's passdb may name
 * another one after the password check.
 */
export interface Pending {
  /** The decision, when this host made it; absent when another host did (`answer` is what it answered). */
  decision?: Decision;
  answer: LoginAnswer;
  /** The account the decision was made for. */
  account: string;
  afterAuthSeen: boolean;
}

/** What Dovecot was answered: all a host needs of another host's decision to answer its after-auth call alike. */
export type LoginAnswer = Pick<Decision, 'action' | 'seconds' | 'message'>;

const field = (v: unknown) => (typeof v === 'string' ? v : '');

export function loginKey(b: DovecotBody): string {
  // orig_user is what the client typed: the same in all three calls. Configurations without it
  // pair by requested_username, which a passdb that renames the account changes (a fresh decision).
  const typed = field(b.orig_user) || field(b.login);
  return `${field(b.protocol)}\0${field(b.remote)}\0${field(b.session_id)}\0${typed}\0${field(b.device_id)}`;
}

export interface PendingLogins {
  get(key: string): Pending | undefined;
  set(key: string, p: Pending): void;
  delete(key: string): void;
  readonly size: number;
}

/**
 * Bounded: entries of logins whose report never comes (Dovecot restarted) age out. A plain Map
 * in insertion order is enough, since entries live seconds and are never refreshed; it costs far
 * less per login than an LRU with timers.
 */
export function createPendingLogins(max = 50_000, ttlMs = 120_000, now: () => number = Date.now): PendingLogins {
  const map = new Map<string, Pending & { at: number }>();
  return {
    get(key) {
      const e = map.get(key);
      if (e === undefined) return undefined;
      if (now() - e.at > ttlMs) {
        map.delete(key);
        return undefined;
      }
      return e;
    },
    set(key, p) {
      map.delete(key);
      map.set(key, Object.assign(p, { at: now() }));
      if (map.size > max) map.delete(map.keys().next().value!);
    },
    delete: (key) => void map.delete(key),
    get size() {
      return map.size;
    },
  };
}
