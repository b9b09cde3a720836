// Bench inputs derived from the real captures: varied users, devices and sessions.
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = join(fileURLToPath(import.meta.url), '..', '..', '..');

export interface BenchUser { user: string; cid: { type: string; token: string }; fingerprint: string }

/** Deterministic users, each with one registered CID and one registered certificate. */
export function benchUsers(n: number): BenchUser[] {
  return Array.from({ length: n }, (_, i) => ({
    user: `user${i}@example.com`,
    cid: { type: 'UUID', token: `bench-device-${i}` },
    fingerprint: createHash('sha256').update(`cert-${i}`).digest('hex'),
  }));
}

const colonHex = (hex: string) => hex.toUpperCase().replace(/(..)(?!$)/g, '$1:');

/** Dovecot allow/report bodies from the capture, one login in ten from an unknown device. */
export function dovecotBodies(users: number, count = 20_000): Array<{ path: string; body: string }> {
  const caps = readFileSync(join(repoRoot, 'test', 'fixtures', 'captures', 'dovecot-2.3.19-imap-pop3.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { path: string; body: string });
  const [allow, report] = [caps[0]!, caps[1]!];
  const out: Array<{ path: string; body: string }> = [];
  for (let i = 0; out.length < count; i++) {
    const u = i % users;
    const token = i % 10 === 9 ? `stranger-${i}` : `bench-device-${u}`;
    const body = (b: string) => b.replace('alice@example.com', `user${u}@example.com`).replace('23bf83be-aad7-46aa-9e0f-39191ccf402f', token).replace(/"session_id":"[^"]*"/, `"session_id":"s${i}"`).replace(/"remote":"[^"]*"/, `"remote":"10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}"`);
    out.push({ path: allow.path, body: body(allow.body) }, { path: report.path, body: body(report.body) });
  }
  return out;
}

/** Postfix request blocks from the capture (CONNECT, EHLO, EHLO after STARTTLS, RCPT), one RCPT in ten from an unregistered certificate. */
export function postfixRequests(users: number, count = 20_000): string[] {
  const blocks = readFileSync(join(repoRoot, 'test', 'fixtures', 'captures', 'postfix-3.7-policy-tls-client-cert.txt'), 'utf8').trim().split('\n\n').map((b) => `${b}\n\n`);
  const out: string[] = [];
  for (let i = 0; out.length < count; i++) {
    const u = i % users;
    const fp = i % 10 === 9 ? createHash('sha256').update(`unknown-${i}`).digest('hex') : createHash('sha256').update(`cert-${u}`).digest('hex');
    for (const b of blocks) {
      out.push(b.replace(/alice@example\.com/g, `user${u}@example.com`).replace(/ccert_pubkey_fingerprint=.+/, (m) => (m.endsWith('=') ? m : `ccert_pubkey_fingerprint=${colonHex(fp)}`)).replace(/client_address=.*/, `client_address=10.${(i >> 8) & 255}.${i & 255}.1`));
    }
  }
  return out;
}
