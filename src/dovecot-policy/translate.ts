import { presentedCid } from '../core/cid.js';
import { normalizeIp } from '../core/ip.js';
import { accountName, lowerAscii, MAX_LOGIN_LENGTH } from '../core/login-name.js';
import type { AuthRequest } from '../core/request.js';
import { idField, parseImapId } from './imap-id.js';

export type DovecotCommand = 'allow' | 'report';

/** The fields cidlock reads from a Dovecot auth_policy body (names from the recommended request_attributes). */
export interface DovecotBody {
  /** %{user}: the account as Dovecot names it; after the passdb lookup, the passdb's own name for it. */
  user?: unknown;
  /** %{login_user}: the mailbox a master user asks for, before its password is checked. */
  login_user?: unknown;
  /** %{master_user}: the master user who logged in, once its password was checked. */
  master_user?: unknown;
  /** %{orig_user} (2.4: %{original_user}): the name exactly as the client typed it. */
  orig_user?: unknown;
  /** %{requested_username}: earlier configurations' only name (the mailbox, for a master login). */
  login?: unknown;
  remote?: unknown;
  protocol?: unknown;
  device_id?: unknown;
  /** %{passdb:forward_clientid} and _type: the CLIENTID command's arguments, from cidlock's login plugin. */
  fwd_clientid?: unknown;
  fwd_clientid_type?: unknown;
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
/**
 * Whose credentials a login presents, and which mailbox it opens. A master user's login is
 * decided for the master user: its password is the one presented, so its devices are the ones
 * that count; the mailbox it opens is logged beside it.
 */
function dovecotAccount(b: DovecotBody, defaultDomain: string): { account: string; mailbox?: string } | null {
  const user = text(b.user);
  const master = text(b.master_user);
  const asked = text(b.login_user);
  const pick = (account: string, mailbox: string) => {
    const a = accountName(account, defaultDomain);
    const mb = accountName(mailbox, defaultDomain);
    return mb !== '' && mb !== a ? { account: a, mailbox: mb } : { account: a };
  };
  if (master !== '') return pick(master, user); // after the master user's password was checked
  if (asked !== '' && user !== '') return pick(user, asked); // before: %{user} is the master user
  const name = user !== '' ? user : text(b.login);
  return name === '' ? null : pick(name, '');
}

export function translateDovecot(body: unknown, opts: { idFields: readonly string[]; stage: string; defaultDomain?: string }): Translated {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { ok: false, error: 'body is not a JSON object' };
  const b = body as DovecotBody;
  const who = dovecotAccount(b, opts.defaultDomain ?? '');
  if (who === null) return { ok: false, error: 'no user in the request (is user=%{user} in auth_policy_request_attributes? "cidlock config dovecot" prints them)' };
  const attrs = typeof b.attrs === 'object' && b.attrs !== null ? (b.attrs as Record<string, unknown>) : {};
  // A flat `secured` (what "cidlock config dovecot" prints); attrs/secured in earlier configurations.
  const secured = text(attrs.secured) || text(b.secured);
  const protocol = text(b.protocol).toLowerCase() || 'other';
  // Dovecot's own `tls` is true only for real TLS; Postfix SASL sessions arrive with tls:false and
  // secured=secured when the SMTP session is encrypted.
  const tls = b.tls === true || b.tls === 'TLS' || secured === 'TLS' || (protocol === 'smtp' && secured === 'secured');
  const req: AuthRequest = {
    protocol,
    user: who.account,
    remote: normalizeIp(text(b.remote)),
    tls,
    certFingerprints: [],
    stage: opts.stage,
  };
  if (who.mailbox !== undefined) req.mailbox = who.mailbox;
  const typed = text(b.orig_user);
  if (typed !== '' && lowerAscii(typed) !== who.account) req.loginName = typed.slice(0, MAX_LOGIN_LENGTH);
  const sessionId = text(b.session_id);
  if (sessionId !== '') req.sessionId = sessionId;
  const pwhash = text(b.pwhash);
  if (pwhash !== '') req.guessTag = pwhash;
  let idValue: string | undefined;
  const rawId = text(b.device_id);
  if (rawId !== '') {
    const fields = parseImapId(rawId);
    const name = idField(fields, ['name']);
    const os = idField(fields, ['os']);
    const version = idField(fields, ['version']);
    if (name !== undefined) req.clientName = name;
    if (version !== undefined) req.clientVersion = version;
    if (os !== undefined) req.clientOs = os;
    idValue = idField(fields, opts.idFields);
  }
  // The plugin sends type and token apart; joined, they go through the one CID parser.
  const token = text(b.fwd_clientid);
  const clientid = token === '' ? undefined : `${text(b.fwd_clientid_type)} ${token}`;
  Object.assign(req, presentedCid(clientid, idValue, `IMAP ID field ${opts.idFields.join('/')}`));
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
