import { parseCid } from '../core/cid.js';
import { normalizeIp } from '../core/ip.js';
import type { AuthRequest } from '../core/request.js';
import { idField, parseClientId } from './client-id.js';

export type DovecotCommand = 'allow' | 'report';

/** The fields cidlock reads from a Dovecot auth_policy body (names from the recommended request_attributes). */
export interface DovecotBody {
  login?: unknown;
  remote?: unknown;
  protocol?: unknown;
  device_id?: unknown;
  session_id?: unknown;
  pwhash?: unknown;
  tls?: unknown;
  success?: unknown;
  policy_reject?: unknown;
  fail_type?: unknown;
  secured?: unknown;
  attrs?: unknown;
}

/** What a report says about the login's outcome, for Dovecot 2.3 (policy_reject) and 2.4 (fail_type). */
export interface ReportOutcome {
  success: boolean;
  policyReject: boolean;
  failType: string;
}

export function reportOutcome(body: DovecotBody): ReportOutcome {
  const failType = typeof body.fail_type === 'string' && !body.fail_type.startsWith('UNSUPPORTED_VARIABLE') ? body.fail_type : '';
  return {
    success: body.success === true,
    policyReject: body.policy_reject === true || failType === 'policy',
    failType,
  };
}

export type Translated = { ok: true; request: AuthRequest } | { ok: false; error: string };

const text = (v: unknown): string => (typeof v === 'string' ? v : '');

/**
 * Translates one Dovecot body into the core request. Pure: the HTTP server and `cidlock test
 * --dovecot-json` share it, so the offline explanation is the daemon's own.
 */
export function translateDovecot(body: unknown, opts: { idFields: readonly string[]; stage: string }): Translated {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { ok: false, error: 'body is not a JSON object' };
  const b = body as DovecotBody;
  const login = text(b.login).toLowerCase();
  if (login === '') return { ok: false, error: 'no login in the request (is login=%{requested_username} in auth_policy_request_attributes?)' };
  const attrs = typeof b.attrs === 'object' && b.attrs !== null ? (b.attrs as Record<string, unknown>) : {};
  // attrs/secured in 2.3 configurations; a flat `secured` where nested keys are avoided (2.4).
  const secured = text(attrs.secured) || text(b.secured);
  const protocol = text(b.protocol).toLowerCase() || 'other';
  // Dovecot's own `tls` is true only for real TLS; Postfix SASL sessions arrive with tls:false and
  // secured=secured when the SMTP session is encrypted.
  const tls = b.tls === true || b.tls === 'TLS' || secured === 'TLS' || (protocol === 'smtp' && secured === 'secured');
  const req: AuthRequest = {
    protocol,
    user: login,
    remote: normalizeIp(text(b.remote)),
    tls,
    certFingerprints: [],
    stage: opts.stage,
  };
  const sessionId = text(b.session_id);
  if (sessionId !== '') req.sessionId = sessionId;
  const pwhash = text(b.pwhash);
  if (pwhash !== '') req.guessTag = pwhash;
  const rawId = text(b.device_id);
  if (rawId !== '') {
    const fields = parseClientId(rawId);
    const name = idField(fields, ['name']);
    const os = idField(fields, ['os']);
    if (name !== undefined) req.clientName = name;
    if (os !== undefined) req.clientOs = os;
    const value = idField(fields, opts.idFields);
    if (value !== undefined) {
      const cid = parseCid(value);
      if (cid.ok) req.cid = cid.cid;
      else req.cidProblem = `malformed CID in IMAP ID field ${opts.idFields.join('/')}: ${cid.reason}`;
    }
  }
  return { ok: true, request: req };
}

/** `?command=allow`, `/command/report`, `/allow`: Dovecot puts the command in the query. */
export function commandFromPath(path: string): DovecotCommand | null {
  const q = path.indexOf('?');
  const query = q < 0 ? '' : path.slice(q + 1);
  for (const part of query.split('&')) {
    if (part === 'command=allow') return 'allow';
    if (part === 'command=report') return 'report';
  }
  const p = q < 0 ? path : path.slice(0, q);
  if (/\/allow\/?$/.test(p)) return 'allow';
  if (/\/report\/?$/.test(p)) return 'report';
  return null;
}
