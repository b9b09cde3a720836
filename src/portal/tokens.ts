import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';

/**
 * Signed, expiring tokens for the account page: links in mail (approve a device, sign in),
 * session cookies and CSRF tokens. Each is bound to its purpose, account and subject, so one kind
 * can never stand in for another, nor one account's for another's.
 */

export type TokenPurpose = 'approve' | 'signin' | 'session' | 'csrf';

export interface TokenClaims {
  purpose: TokenPurpose;
  user: string;
  /**
   * approve: the pending device's full hash and first-seen time ("HASH.FIRST"), so a link dies
   * once its device is approved or rejected; signin: the link id; session: the session id;
   * csrf: what the form belongs to (a session id, or an approval link's subject).
   */
  subject: string;
  /** Epoch ms after which the token is refused. */
  exp: number;
}

/** Tokens are short; anything longer is refused before any work is done. */
export const MAX_TOKEN_LENGTH = 1024;

/** The portal's own key, derived from the registry's secret so every host that shares the registry shares it. */
export function portalKey(registrySecret: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', registrySecret, Buffer.alloc(0), 'cidlock portal v1', 32));
}

const mac = (key: Buffer, body: string): Buffer => createHmac('sha256', key).update(body).digest();

export function signToken(key: Buffer, c: TokenClaims): string {
  const body = Buffer.from(JSON.stringify([c.purpose, c.user, c.subject, c.exp])).toString('base64url');
  return `${body}.${mac(key, body).toString('base64url')}`;
}

/** The claims of a well-signed, unexpired token of this purpose; null for anything else. */
export function verifyToken(key: Buffer, token: string, purpose: TokenPurpose, now: number): TokenClaims | null {
  if (token.length > MAX_TOKEN_LENGTH) return null;
  const dot = token.indexOf('.');
  if (dot <= 0 || dot !== token.lastIndexOf('.')) return null;
  const body = token.slice(0, dot);
  // Compared as text: base64 decoding ignores stray characters and spare bits, so decoded bytes
  // would let several spellings of one signature pass.
  const sig = Buffer.from(token.slice(dot + 1));
  const want = Buffer.from(mac(key, body).toString('base64url'));
  if (sig.length !== want.length || !timingSafeEqual(sig, want)) return null;
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch {
    return null;
  }
  if (!Array.isArray(v) || v.length !== 4) return null;
  const [p, user, subject, exp] = v as unknown[];
  if (p !== purpose || typeof user !== 'string' || typeof subject !== 'string' || typeof exp !== 'number') return null;
  if (!(now < exp)) return null;
  return { purpose, user, subject, exp };
}
