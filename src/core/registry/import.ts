import { accountName, parseLoginName } from '../login-name.js';
import { parseCid } from '../cid.js';
import { normalizeFingerprint } from '../fingerprint.js';
import type { DeviceInput } from './registry.js';

export type ImportResult =
  | { ok: true; items: Array<{ user: string; input: DeviceInput }> }
  | { ok: false; errors: string[] };

const MAX_ERRORS = 50;

/**
 * Bulk device list, one per line: `USER TYPE TOKEN [LABEL...]` or `USER --cert FINGERPRINT [LABEL...]`.
 * All-or-nothing: any bad line fails the whole import, so a half-applied file never happens.
 */
export function parseImport(text: string, source: string, defaultDomain = ''): ImportResult {
  const items: Array<{ user: string; input: DeviceInput }> = [];
  const errors: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length && errors.length < MAX_ERRORS; i++) {
    const line = lines[i]!.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const where = `${source}:${i + 1}`;
    const parts = line.split(/[ \t]+/);
    const [rawUser, a, b, ...rest] = parts;
    const name = parseLoginName(rawUser ?? '');
    if (!name.ok) {
      errors.push(`${where}: not a login name`);
      continue;
    }
    const user = accountName(name.name, defaultDomain);
    if (a === undefined || b === undefined) {
      errors.push(`${where}: expected USER TYPE TOKEN [LABEL] or USER --cert FINGERPRINT [LABEL]`);
      continue;
    }
    const label = rest.join(' ');
    if (a === '--cert') {
      const fp = normalizeFingerprint(b);
      if (fp === null) errors.push(`${where}: not a SHA-256 fingerprint (64 hex digits, colons allowed)`);
      else items.push({ user, input: { kind: 'cert', fingerprint: fp, label } });
      continue;
    }
    const cid = parseCid(`${a} ${b}`);
    if (!cid.ok) errors.push(`${where}: ${cid.reason}`);
    else items.push({ user, input: { kind: 'cid', cid: cid.cid, label } });
  }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, items };
}
