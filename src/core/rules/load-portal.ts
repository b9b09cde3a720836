import { isAbsolute, resolve as resolvePath } from 'node:path';
import { normalizeIp } from '../ip.js';
import { listOf, oneOf, str } from './fields.js';
import { duration, int, section } from './load-operations.js';
import { MODES, type Mode, type Rules } from './types.js';
import { describe, scalarValue, type Entry, type Walker } from './yaml-walk.js';

/** Top-level keys for the account page, the notices it links from, and the devices they are about. */
export const PORTAL_KEYS = ['portal', 'notice', 'pending'] as const;

type PortalRules = Pick<Rules, 'portal' | 'notice' | 'pending'>;

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;

export const DEFAULT_PENDING: Rules['pending'] = { expireMs: 7 * DAY, perAccount: 10, total: 100_000 };
export const DEFAULT_USER_MODES: readonly Mode[] = ['learn', 'enforce'];
export const DEFAULT_SIGN_IN_PER_HOUR = { address: 3, account: 5, total: 300 } as const;
export const DEFAULT_SENDMAIL: readonly string[] = ['/usr/sbin/sendmail'];
const MAX_SENDMAIL_ARGS = 16;

/** An address cidlock may put in a From header: a plain local@domain, with an optional display name. */
const FROM = /^(?:[^<>\r\n\x00-\x1f]{1,100} )?<?[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}>?$/;
const DOMAIN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/;

function file(w: Walker, e: Entry | undefined, path: string[], baseDir: string): string {
  if (e === undefined || e.value === null) return '';
  const f = str(w, e, path, 'a file path');
  if (f === '') w.error(e.value, path, 'expected a file path, got an empty text (leave the key out for the shipped file)');
  return f === undefined || f === '' ? '' : resolvePath(baseDir, f);
}

function readPortal(w: Walker, e: Entry, baseDir: string): Rules['portal'] {
  const s = section(w, e, 'portal', ['url', 'user_modes', 'link_ttl', 'session_ttl', 'strings', 'sign_in_per_hour']);
  const urlE = s.get('url');
  let url = '';
  if (urlE === undefined) w.error(e.value ?? e.keyNode, ['portal'], 'missing "url": the public https:// address of the account page, behind your reverse proxy (the links in notices point there)');
  else {
    const u = str(w, urlE, ['portal', 'url'], 'an https:// URL') ?? '';
    let parsed: URL | null = null;
    try {
      parsed = new URL(u);
    } catch {
      // reported below
    }
    if (parsed === null || (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') || parsed.search !== '' || parsed.hash !== '' || parsed.username !== '' || parsed.password !== '') {
      w.error(urlE.value, ['portal', 'url'], `expected an https:// URL without query or fragment, got ${describe(urlE.value)}`);
    } else {
      url = parsed.href.endsWith('/') ? parsed.href : `${parsed.href}/`;
      const local = parsed.hostname === 'localhost' || normalizeIp(parsed.hostname.replace(/^\[|\]$/g, ''))?.startsWith('127.') === true || parsed.hostname === '[::1]';
      if (parsed.protocol === 'http:' && !local) w.warn(urlE.value, ['portal', 'url'], 'an http:// account page sends sign-in links and session cookies in clear text; put it behind HTTPS');
    }
  }
  let userModes = DEFAULT_USER_MODES;
  const umE = s.get('user_modes');
  if (umE !== undefined) {
    const items = listOf(w, umE, ['portal', 'user_modes'], MODES.length);
    if (items !== undefined) {
      const modes: Mode[] = [];
      for (const it of items) {
        const m = oneOf(w, it.node, umE.keyNode, it.path, MODES);
        if (m !== undefined && !modes.includes(m)) modes.push(m);
      }
      userModes = modes;
    }
  }
  const ttl = (k: string, dflt: number, max: number, what: string) => {
    const x = s.get(k);
    return x === undefined ? dflt : duration(w, x, ['portal', k], max, what) ?? dflt;
  };
  const linkTtlMs = ttl('link_ttl', 30 * MIN, DAY, 'a duration up to 1d, such as 30m');
  const sessionTtlMs = ttl('session_ttl', 15 * MIN, 12 * HOUR, 'a duration up to 12h, such as 15m');
  const strings = file(w, s.get('strings'), ['portal', 'strings'], baseDir);
  const signInPerHour: { address: number; account: number; total: number } = { ...DEFAULT_SIGN_IN_PER_HOUR };
  const lim = s.get('sign_in_per_hour');
  if (lim !== undefined) {
    for (const [k, x] of section(w, lim, ['portal', 'sign_in_per_hour'], ['address', 'account', 'total'])) {
      const n = int(w, x, ['portal', 'sign_in_per_hour', k], 1, 100_000);
      if (n !== undefined) signInPerHour[k as keyof typeof signInPerHour] = n;
    }
  }
  return { url, userModes, linkTtlMs, sessionTtlMs, strings, signInPerHour };
}

function readNotice(w: Walker, e: Entry, baseDir: string): Rules['notice'] {
  const s = section(w, e, 'notice', ['from', 'sendmail', 'smtp', 'device_template', 'device_html', 'signin_template', 'signin_html', 'per_account_per_day', 'to_domain']);
  let from = '';
  const fromE = s.get('from');
  if (fromE === undefined) w.error(e.value ?? e.keyNode, ['notice'], 'missing "from": the sender of the notices, such as "Mail security <postmaster@example.org>"');
  else {
    const f = str(w, fromE, ['notice', 'from'], 'a mail address') ?? '';
    if (FROM.test(f.trim())) from = f.trim();
    else w.error(fromE.value, ['notice', 'from'], `expected a mail address such as postmaster@example.org or "Mail security <postmaster@example.org>", got ${describe(fromE.value)}`);
  }
  const smE = s.get('sendmail');
  const smtpE = s.get('smtp');
  let transport: NonNullable<Rules['notice']>['transport'] = { kind: 'sendmail', command: DEFAULT_SENDMAIL };
  if (smE !== undefined && smtpE !== undefined) w.error(smtpE.keyNode, ['notice', 'smtp'], 'give "sendmail" or "smtp", not both');
  else if (smtpE !== undefined) {
    const v = scalarValue(smtpE.value);
    const m = typeof v === 'string' ? /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v) : null;
    const port = m === null ? 0 : Number(m[3]);
    if (m === null || port < 1 || port > 65535) w.error(smtpE.value ?? smtpE.keyNode, ['notice', 'smtp'], `expected host:port of a mail relay that accepts mail for your accounts (127.0.0.1:25), got ${describe(smtpE.value)}`);
    else transport = { kind: 'smtp', host: m[1] ?? m[2]!, port };
  } else if (smE !== undefined) {
    const v = scalarValue(smE.value);
    let command: string[] | undefined;
    if (typeof v === 'string') command = [v];
    else {
      const items = listOf(w, smE, ['notice', 'sendmail'], MAX_SENDMAIL_ARGS);
      if (items !== undefined) command = items.map((it) => scalarValue(it.node)).filter((x): x is string => typeof x === 'string');
      if (items !== undefined && command!.length !== items.length) {
        w.error(smE.value, ['notice', 'sendmail'], 'expected the sendmail program and its arguments as texts');
        command = undefined;
      }
    }
    if (command !== undefined && (command.length === 0 || !isAbsolute(command[0]!))) w.error(smE.value ?? smE.keyNode, ['notice', 'sendmail'], `expected the absolute path of a sendmail program (/usr/sbin/sendmail), got ${describe(smE.value)}`);
    else if (command !== undefined) transport = { kind: 'sendmail', command };
  }
  const perE = s.get('per_account_per_day');
  const perAccountPerDay = perE === undefined ? 3 : int(w, perE, ['notice', 'per_account_per_day'], 1, 100) ?? 3;
  let toDomain = '';
  const tdE = s.get('to_domain');
  if (tdE !== undefined) {
    const d = (str(w, tdE, ['notice', 'to_domain'], 'a mail domain') ?? '').toLowerCase();
    if (DOMAIN.test(d)) toDomain = d;
    else w.error(tdE.value, ['notice', 'to_domain'], `expected a mail domain (example.org), got ${describe(tdE.value)}`);
  }
  return {
    from,
    transport,
    deviceTemplate: file(w, s.get('device_template'), ['notice', 'device_template'], baseDir),
    deviceHtml: file(w, s.get('device_html'), ['notice', 'device_html'], baseDir),
    signinTemplate: file(w, s.get('signin_template'), ['notice', 'signin_template'], baseDir),
    signinHtml: file(w, s.get('signin_html'), ['notice', 'signin_html'], baseDir),
    perAccountPerDay,
    toDomain,
  };
}

function readPending(w: Walker, e: Entry | undefined): Rules['pending'] {
  const out = { ...DEFAULT_PENDING };
  for (const [k, x] of section(w, e, 'pending', ['expire', 'per_account', 'total'])) {
    if (k === 'expire') out.expireMs = duration(w, x, ['pending', 'expire'], 90 * DAY, 'a duration up to 90d, such as 7d') ?? out.expireMs;
    else if (k === 'per_account') out.perAccount = int(w, x, ['pending', 'per_account'], 1, 100) ?? out.perAccount;
    else out.total = int(w, x, ['pending', 'total'], 1, 10_000_000) ?? out.total;
  }
  return out;
}

/**
 * `portal:` and `notice:` come together: a notice links to the page, and the page mails its
 * sign-in links. Without them, nothing is mailed and refused devices are still remembered as
 * pending, for the operator (`cidlock pending`).
 */
export function readPortalRules(w: Walker, byKey: ReadonlyMap<string, Entry>, baseDir: string): PortalRules {
  const pE = byKey.get('portal');
  const nE = byKey.get('notice');
  const portal = pE === undefined || pE.value === null ? null : readPortal(w, pE, baseDir);
  const notice = nE === undefined || nE.value === null ? null : readNotice(w, nE, baseDir);
  if (portal !== null && notice === null) w.error(pE!.keyNode, ['portal'], 'the account page needs "notice:" too: it mails sign-in links to the account\'s own mailbox');
  if (notice !== null && portal === null) w.error(nE!.keyNode, ['notice'], 'notices link to the account page: give "portal:" (its url) too');
  return { portal, notice, pending: readPending(w, byKey.get('pending')) };
}
