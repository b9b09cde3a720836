import { normalizeFingerprint } from '../core/fingerprint.js';
import { normalizeIp } from '../core/ip.js';
import { accountName } from '../core/login-name.js';
import type { AuthRequest } from '../core/request.js';
import type { PolicyAttributes } from './attributes.js';

export type PostfixTranslated =
  | { kind: 'decide'; request: AuthRequest }
  | { kind: 'skip'; why: string; remote: string | null; certFingerprints: string[] }; // answered DUNNO without a decision

/** Postfix sessions without SASL authentication are not cidlock's business: it is not a spam filter. */
export function translatePostfix(attrs: PolicyAttributes, defaultDomain = ''): PostfixTranslated {
  // With Dovecot SASL, sasl_username is the account name Dovecot's passdb settled on.
  const user = accountName(attrs.get('sasl_username') ?? '', defaultDomain);
  const fps: string[] = [];
  for (const name of ['ccert_pubkey_fingerprint', 'ccert_fingerprint']) {
    const fp = normalizeFingerprint(attrs.get(name) ?? '');
    if (fp !== null && !fps.includes(fp)) fps.push(fp);
  }
  // The address matters for an authenticated session, or to remember a certificate shown at EHLO.
  const remote = user === '' && fps.length === 0 ? null : normalizeIp(attrs.get('client_address') ?? '');
  if (user === '') return { kind: 'skip', why: 'session is not authenticated (no sasl_username): DUNNO', remote, certFingerprints: fps };
  const request: AuthRequest = {
    protocol: 'smtp',
    user,
    remote,
    tls: (attrs.get('encryption_protocol') ?? '') !== '',
    certFingerprints: fps,
    stage: attrs.get('protocol_state') || 'unknown',
  };
  const instance = attrs.get('instance');
  if (instance) request.sessionId = instance;
  return { kind: 'decide', request };
}
