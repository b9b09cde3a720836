import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

/**
 * The ways Dovecot can send a key: `auth_policy_server_api_header = X-API-Key: KEY` (or a bare
 * KEY, which Dovecot sends as X-API-Key), `Authorization: Bearer KEY`, or `user:KEY@` in
 * auth_policy_server_url (HTTP Basic).
 */
export function presentedKeys(headers: IncomingHttpHeaders): string[] {
  const keys: string[] = [];
  const x = headers['x-api-key'];
  if (typeof x === 'string') keys.push(x.trim());
  const auth = headers.authorization;
  if (typeof auth === 'string') {
    const m = /^(bearer|basic)\s+(\S+)\s*$/i.exec(auth);
    if (m !== null) {
      if (m[1]!.toLowerCase() === 'bearer') keys.push(m[2]!);
      else {
        const decoded = Buffer.from(m[2]!, 'base64').toString('utf8');
        const colon = decoded.indexOf(':');
        if (colon >= 0) keys.push(decoded.slice(colon + 1));
      }
    }
  }
  return keys;
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** Constant time in the key's content: both sides are hashed to equal length before comparing. */
export function keyMatches(expected: string, headers: IncomingHttpHeaders): boolean {
  const want = digest(expected);
  let ok = false;
  for (const k of presentedKeys(headers)) ok = timingSafeEqual(want, digest(k)) || ok;
  return ok;
}
