import { LRUCache } from 'lru-cache';
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

/** Bounded: entries of logins whose report never comes (Dovecot restarted) age out. */
export function createPendingLogins(max = 50_000, ttlMs = 120_000): LRUCache<string, Pending> {
  return new LRUCache<string, Pending>({ max, ttl: ttlMs });
}
