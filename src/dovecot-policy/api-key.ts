import { randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { dirname } from 'node:path';
import { createFileExclusive } from '../core/atomic-file.js';
import { ownLikeParent } from '../core/state-owner.js';

/**
 * The ways Dovecot can send a key: `auth_policy_server_api_header = X-API-Key: KEY` (or a bare
 * KEY, which Dovecot sends as X-API-Key), `Authorization: Bearer KEY`, or `user:KEY@` in
 * auth_policy_server_url (HTTP Basic).
 */
function presentedKeys(headers: IncomingHttpHeaders): string[] {
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

/**
 * A check of the key in force (read through `current`, so a reload takes effect at once), for one
 * listener. Constant time in the key's content; only a presented key of another length returns
 * early, and the length is no secret (64 hex digits for the keys cidlock makes). Hashing both
 * sides instead cost 3.6 µs per request, a fifth of the Dovecot path's time (bench/).
 */
export function keyCheck(current: () => string): (headers: IncomingHttpHeaders) => boolean {
  let key = '';
  let want = Buffer.alloc(0);
  return (headers) => {
    const expected = current();
    if (expected === '') return false;
    if (expected !== key) {
      key = expected;
      want = Buffer.from(expected, 'utf8');
    }
    let ok = false;
    for (const k of presentedKeys(headers)) {
      const got = Buffer.from(k, 'utf8');
      ok = (got.length === want.length && timingSafeEqual(want, got)) || ok;
    }
    return ok;
  };
}

/**
 * The key Dovecot must send: the rules file's dovecot.api_key, else the one kept in
 * dovecot.api_key_file (state_dir/dovecot.key by default), created with 32 random bytes on first
 * use when `create`. There is no unauthenticated mode: anything on the host could otherwise forge
 * logins, reports and failures.
 */
export function dovecotApiKey(dovecot: { apiKey: string; apiKeyFile: string }, opts: { create: boolean }): string {
  if (dovecot.apiKey !== '') return dovecot.apiKey;
  const file = dovecot.apiKeyFile;
  const read = (): string | null => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new ApiKeyError(`${file}: cannot read the Dovecot API key (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    const key = text.trim();
    if (key.length < 16 || /[^\x21-\x7e]/.test(key)) throw new ApiKeyError(`${file}: expected one line of at least 16 printable characters without spaces`);
    return key;
  };
  const existing = read();
  if (existing !== null || !opts.create) {
    if (existing === null) throw new ApiKeyError(`${file}: no Dovecot API key yet; "cidlock serve" or "cidlock config dovecot" creates it`);
    return existing;
  }
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  if (createFileExclusive(file, `${randomBytes(32).toString('hex')}\n`, 0o600)) ownLikeParent(file);
  return read() ?? '';
}

export class ApiKeyError extends Error {
  override readonly name = 'ApiKeyError';
}
