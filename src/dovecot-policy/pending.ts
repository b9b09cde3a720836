import type { Decision } from '../core/decide.js';
import type { DovecotBody } from './translate.js';

/**
 * One login's before-auth decision, kept until its after-auth call or its report. Nothing in
 * Dovecot's body tells the two allow calls apart, so the pair is recognised by identical fields.
 */
export interface Pending {
  decision: Decision;
  afterAuthSeen: boolean;
}

const field = (v: unknown) => (typeof v === 'string' ? v : '');

export function loginKey(b: DovecotBody): string {
  return [b.login, b.protocol, b.remote, b.session_id, b.device_id, (b as { pwhash?: unknown }).pwhash].map(field).join('\0');
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
