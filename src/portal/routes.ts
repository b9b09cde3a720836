import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { LRUCache } from 'lru-cache';
import type { Logger } from '../core/log.js';
import { MODES, type Mode } from '../core/rules/types.js';
import { PortalRefusal, type AccountService, type Actor, type PendingView } from './account.js';
import { CONTENT_SECURITY_POLICY, layout, PORTAL_CSS, texts, type Texts } from './html.js';
import {
  approvePage, devicesPage, homePage, invalidLinkPage, messagePage, rejectedPage, signInConfirmPage, signInSentPage, type Page,
} from './pages.js';
import { createSignInLimiter } from './limits.js';
import { cleanLabel, isCrossSite, isFormContentType, MAX_ADDRESS_LENGTH, parseCookies, parseForm, routePath } from './request.js';
import type { PortalStrings } from './strings.js';
import { signToken, verifyToken, type TokenClaims, type TokenPurpose } from './tokens.js';

export interface PortalSettings {
  /** The public base URL, ending with "/": links in mail and redirects use it; https makes cookies Secure and __Host-. */
  url: string;
  /** The lock modes the holder may choose (portal.user_modes). */
  userModes: readonly Mode[];
  linkTtlMs: number;
  sessionTtlMs: number;
  signInPerHour: { address: number; account: number; total: number };
}

export const DEFAULT_LINK_TTL_MS = 30 * 60 * 1000;
export const DEFAULT_SESSION_TTL_MS = 15 * 60 * 1000;
/** How long the sign-in form stays usable once shown. */
export const PRE_SESSION_TTL_MS = 2 * 60 * 60 * 1000;
/** The account service sits on the registry (maybe Redis): a page waits this long for it, then says "try again". */
export const SERVICE_TIMEOUT_MS = 5_000;
/** Signed-out sessions remembered until they would have expired anyway; bounded like every table here. */
export const MAX_REVOKED_SESSIONS = 10_000;
/** Device ids are 12 hex digits; device hashes a few dozen characters. Anything else is not ours. */
const DEVICE_ID = /^[0-9a-f]{6,64}$/i;
const DEVICE_HASH = /^[A-Za-z0-9:+/=_-]{6,200}$/;
const PRE_ID = /^[A-Za-z0-9_-]{22}$/;
const MAX_XFF_LENGTH = 512;

export interface PortalRequest {
  method: string;
  url: string;
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** The body of a POST, already bounded by the server; null for GET and HEAD. */
  body: string | null;
  /** The peer's address as the socket saw it. */
  peer: string | null;
}

export interface PortalReply {
  status: number;
  headers: Record<string, string | string[]>;
  body: string;
  /** Fields for the request's log line; never a token or a cookie. */
  log: Record<string, unknown>;
}

/** The headers every answer carries: links hold tokens, so no referrer, no cache, no framing. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
  'x-frame-options': 'DENY',
};

export interface PortalOptions {
  service: AccountService;
  settings: PortalSettings;
  strings: PortalStrings;
  logger: Logger;
  now?: () => number;
}

/** Equal without telling how much of it matched: CSRF subjects and account names come from cookies and tokens. */
function same(a: string, b: string): boolean {
  const h = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(h(a), h(b));
}

/**
 * verifyToken, and the token exactly as it was signed: base64 decoding ignores stray characters
 * and the spare bits of the last one, so several spellings of one signature would pass otherwise.
 */
export function verifyExact(key: Buffer, token: string, purpose: TokenPurpose, now: number): TokenClaims | null {
  const v = verifyToken(key, token, purpose, now);
  return v !== null && same(signToken(key, v), token) ? v : null;
}

const header = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);

/**
 * The holder's address for the audit log. The portal listens on loopback behind the operator's
 * proxy, so a loopback peer's last X-Forwarded-For entry (the one the proxy added) is the client.
 */
export function clientAddress(peer: string | null, xff: string | undefined): string | null {
  const loopback = peer !== null && (peer === '::1' || peer.startsWith('127.') || peer.startsWith('::ffff:127.'));
  if (loopback && xff !== undefined && xff.length <= MAX_XFF_LENGTH) {
    const last = xff.split(',').pop()!.trim();
    if (isIP(last) !== 0) return last;
  }
  return peer;
}

class ServiceTimeout extends Error {}

function deadline<T>(p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ServiceTimeout(`no answer within ${SERVICE_TIMEOUT_MS} ms`)), SERVICE_TIMEOUT_MS);
    timer.unref();
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** "HASH.FIRST" of an approval link: the pending device and the first-seen time it was bound to. */
export function parseApproveSubject(subject: string): { hash: string; first: number } | null {
  const dot = subject.lastIndexOf('.');
  if (dot <= 0) return null;
  const first = Number(subject.slice(dot + 1));
  if (!/^\d{1,16}$/.test(subject.slice(dot + 1)) || !Number.isSafeInteger(first)) return null;
  return { hash: subject.slice(0, dot), first };
}

/** The link's device, only while it is the very instance the link was made for and still unanswered. */
function livePending(service: AccountService, user: string, subject: string): PendingView | null {
  const s = parseApproveSubject(subject);
  if (s === null) return null;
  const p = service.findPending(user, s.hash);
  if (p === undefined || p.state !== 'pending' || Date.parse(p.first) !== s.first) return null;
  return p;
}

/** Checks the settings once, so a wrong URL fails at start-up and not on the first holder's click. */
function baseOf(url: string): { origin: string; base: string; https: boolean } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`portal url: not a URL: ${url}`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error(`portal url: expected http(s), got ${u.protocol}`);
  if (!u.pathname.endsWith('/')) throw new Error('portal url: must end with "/"');
  if (u.search !== '' || u.hash !== '' || u.username !== '' || u.password !== '') throw new Error('portal url: no query, fragment or credentials');
  return { origin: u.origin, base: u.pathname, https: u.protocol === 'https:' };
}

/**
 * The account page's routes, as a function from a bounded request to a reply: no sockets here,
 * so every check can be read top to bottom.
 */
export function createRoutes(o: PortalOptions): (req: PortalRequest) => Promise<PortalReply> {
  const { service, settings, logger } = o;
  const now = o.now ?? Date.now;
  const t: Texts = texts(o.strings);
  const { origin, base, https } = baseOf(settings.url);
  const url = `${origin}${base}`;
  const limiter = createSignInLimiter(settings.signInPerHour);
  const revoked = new LRUCache<string, true>({ max: MAX_REVOKED_SESSIONS, ttl: Math.max(1, settings.sessionTtlMs), ttlAutopurge: false });
  const cookieName = (n: string) => (https ? `__Host-cidlock-${n}` : `cidlock-${n}`);
  const SESSION = cookieName('session');
  const PRE = cookieName('pre');
  // __Host- cookies must have Path=/; without https the cookie can at least stay under the base.
  const cookiePath = https ? '/' : base;
  const cookie = (name: string, value: string, maxAgeMs: number) =>
    `${name}=${value}; Path=${cookiePath}; Max-Age=${Math.max(0, Math.floor(maxAgeMs / 1000))}; HttpOnly; SameSite=Strict${https ? '; Secure' : ''}`;

  const reply = (status: number, page: Page, extra: Record<string, string | string[]> = {}, log: Record<string, unknown> = {}): PortalReply => ({
    status,
    headers: { 'content-type': 'text/html; charset=utf-8', ...extra },
    body: layout({ strings: o.strings, base, title: page.title, body: page.body }),
    log,
  });
  const redirect = (to: string, extra: Record<string, string | string[]> = {}, log: Record<string, unknown> = {}): PortalReply => ({
    status: 303, headers: { location: to, 'content-type': 'text/plain; charset=utf-8', ...extra }, body: '', log,
  });
  const invalid = (log: Record<string, unknown> = {}) => reply(403, invalidLinkPage(t, base), {}, log);
  const forbidden = (why: string) => reply(403, messagePage(t('forbidden_title'), t('forbidden_text'), { href: base, text: t('home_title') }), {}, { refused: why });
  const badForm = (status: number, why: string) => reply(status, messagePage(t('bad_form_title'), t('bad_form_text')), {}, { refused: why });
  const refused = (text: string) => reply(400, messagePage(t('refused_title'), text, { href: `${base}devices`, text: t('back_to_devices') }));
  const toDevices = { href: `${base}devices`, text: t('back_to_devices') };

  interface Ctx {
    req: PortalRequest;
    key: Buffer;
    at: number;
    cookies: Map<string, string>;
    fields: Map<string, string>;
    actor: Actor;
  }

  const csrfFor = (key: Buffer, user: string, subject: string, exp: number) => signToken(key, { purpose: 'csrf', user, subject, exp });
  const csrfOk = (c: Ctx, user: string, subject: string): boolean => {
    const v = verifyExact(c.key, c.fields.get('csrf') ?? '', 'csrf', c.at);
    return v !== null && same(v.user, user) && same(v.subject, subject);
  };

  /** The sign-in forms, before any session: their CSRF token is bound to a random cookie of this browser. */
  const preSession = (c: Ctx): { csrf: string; setCookie: Record<string, string> } => {
    const have = c.cookies.get(PRE);
    const id = have !== undefined && PRE_ID.test(have) ? have : randomBytes(16).toString('base64url');
    return {
      csrf: csrfFor(c.key, '', `pre:${id}`, c.at + PRE_SESSION_TTL_MS),
      setCookie: id === have ? {} : { 'set-cookie': cookie(PRE, id, PRE_SESSION_TTL_MS) },
    };
  };
  const preCsrfOk = (c: Ctx): boolean => {
    const id = c.cookies.get(PRE);
    return id !== undefined && PRE_ID.test(id) && csrfOk(c, '', `pre:${id}`);
  };

  const sessionOf = (c: Ctx): { user: string; sid: string; exp: number } | null => {
    const v = verifyExact(c.key, c.cookies.get(SESSION) ?? '', 'session', c.at);
    if (v === null || revoked.has(v.subject) || !service.sessionAlive(v.user, v.subject)) return null;
    return { user: v.user, sid: v.subject, exp: v.exp };
  };

  const home = (c: Ctx): PortalReply => {
    const pre = preSession(c);
    return reply(200, homePage(t, base, pre.csrf), pre.setCookie);
  };

  /** One answer whatever was typed, at once: whether an address is an account here must not show, in the page or its timing. */
  const signIn = (c: Ctx): PortalReply => {
    const answer = (log: Record<string, unknown>) => reply(200, signInSentPage(t, base, Math.round(settings.linkTtlMs / 60_000)), {}, log);
    if (!preCsrfOk(c)) return forbidden('csrf');
    const typed = (c.fields.get('address') ?? '').trim();
    const user = typed.length <= MAX_ADDRESS_LENGTH ? service.account(typed) : null;
    if (user === null || !service.known(user)) return answer({ signin: 'unknown', address: typed.slice(0, 100) });
    const verdict = limiter.take(typed.toLowerCase(), user, c.at);
    if (verdict !== 'ok') return answer({ signin: 'limited', limit: verdict, user });
    const key = c.key;
    const exp = c.at + settings.linkTtlMs;
    void (async () => {
      const id = await deadline(service.issueSignIn(user, exp));
      await deadline(service.mailSignIn(user, `${url}s/${signToken(key, { purpose: 'signin', user, subject: id, exp })}`));
    })().catch((e: unknown) => logger.log('error', 'portal_signin_mail_failed', { user, error: (e as Error).message }));
    return answer({ signin: 'sent', user });
  };

  const signInConfirm = (c: Ctx, token: string): PortalReply => {
    const v = verifyExact(c.key, token, 'signin', c.at);
    if (v === null) return invalid();
    const pre = preSession(c);
    return reply(200, signInConfirmPage(t, base, v.user, token, pre.csrf), pre.setCookie, { user: v.user });
  };

  const signInUse = async (c: Ctx): Promise<PortalReply> => {
    if (!preCsrfOk(c)) return forbidden('csrf');
    const v = verifyExact(c.key, c.fields.get('token') ?? '', 'signin', c.at);
    if (v === null) return invalid({ signin: 'invalid' });
    if (!(await deadline(service.consumeSignIn(v.user, v.subject)))) return invalid({ signin: 'used', user: v.user });
    const sid = randomBytes(16).toString('base64url');
    const exp = c.at + settings.sessionTtlMs;
    await deadline(service.startSession(v.user, sid, exp));
    const session = signToken(c.key, { purpose: 'session', user: v.user, subject: sid, exp });
    return redirect(`${url}devices`, { 'set-cookie': cookie(SESSION, session, settings.sessionTtlMs) }, { signin: 'session', user: v.user });
  };

  const devices = (c: Ctx): PortalReply => {
    const s = sessionOf(c);
    if (s === null) return redirect(url);
    const given = service.lock(s.user);
    const lock = { ...given, choices: given.choices.filter((m) => settings.userModes.includes(m)) };
    const page = devicesPage(t, base, {
      user: s.user,
      devices: service.devices(s.user),
      pending: service.pending(s.user),
      refusals: service.refusals(s.user),
      lock,
      csrf: csrfFor(c.key, s.user, `session:${s.sid}`, s.exp),
    });
    return reply(200, page, {}, { user: s.user });
  };

  /** A change from the devices page: a live session and its own CSRF token, then the change, then back to the list. */
  const change = async (c: Ctx, act: (user: string) => Promise<PortalReply | 'done' | 'gone'>): Promise<PortalReply> => {
    const s = sessionOf(c);
    if (s === null) return forbidden('no session');
    if (!csrfOk(c, s.user, `session:${s.sid}`)) return forbidden('csrf');
    const r = await act(s.user);
    if (r === 'gone') return reply(409, messagePage(t('gone_title'), t('gone_text'), toDevices), {}, { user: s.user, result: 'gone' });
    if (r === 'done') return redirect(`${url}devices`, {}, { user: s.user, result: 'done' });
    r.log = { user: s.user, ...r.log };
    return r;
  };

  const deviceId = (c: Ctx): string | null => {
    const id = c.fields.get('id') ?? '';
    return DEVICE_ID.test(id) ? id.toLowerCase() : null;
  };
  const deviceHash = (c: Ctx): string | null => {
    const h = c.fields.get('hash') ?? '';
    return DEVICE_HASH.test(h) ? h : null;
  };

  const rename = (c: Ctx) => change(c, async (user) => {
    const id = deviceId(c);
    if (id === null) return badForm(400, 'device id');
    const label = cleanLabel(c.fields.get('label') ?? '');
    if (label === '') return refused(t('label_empty'));
    return deadline(service.rename(user, id, label, c.actor));
  });
  const remove = (c: Ctx) => change(c, async (user) => {
    const id = deviceId(c);
    return id === null ? badForm(400, 'device id') : deadline(service.remove(user, id, c.actor));
  });
  const answerPending = (answer: 'approve' | 'reject') => (c: Ctx) => change(c, async (user) => {
    const hash = deviceHash(c);
    if (hash === null) return badForm(400, 'device hash');
    return deadline(answer === 'approve' ? service.approve(user, hash, c.actor) : service.reject(user, hash, c.actor));
  });
  const setLock = (c: Ctx) => change(c, async (user) => {
    const mode = c.fields.get('mode') ?? '';
    const offered = service.lock(user).choices;
    if (!(MODES as readonly string[]).includes(mode) || !offered.includes(mode as Mode) || !settings.userModes.includes(mode as Mode)) return refused(t('mode_not_offered'));
    await deadline(service.setLock(user, mode as Mode, c.actor));
    return 'done';
  });
  const signOut = async (c: Ctx): Promise<PortalReply> => {
    const s = sessionOf(c);
    if (s === null) return forbidden('no session');
    if (!csrfOk(c, s.user, `session:${s.sid}`)) return forbidden('csrf');
    revoked.set(s.sid, true, { ttl: Math.max(1, s.exp - c.at) });
    // Ended on every host; this host also remembers it at once, whatever the store says.
    await deadline(service.endSession(s.user, s.sid)).catch((e: unknown) => logger.log('warn', 'portal_signout_not_shared', { user: s.user, error: (e as Error).message }));
    return reply(200, messagePage(t('signed_out_title'), t('signed_out_text'), { href: base, text: t('home_title') }), { 'set-cookie': cookie(SESSION, '', 0) }, { user: s.user, signout: true });
  };

  const approveShow = (c: Ctx, token: string): PortalReply => {
    const v = verifyExact(c.key, token, 'approve', c.at);
    if (v === null) return invalid();
    const p = livePending(service, v.user, v.subject);
    if (p === null) return invalid({ user: v.user, approve: 'not pending' });
    return reply(200, approvePage(t, base, v.user, p, token, csrfFor(c.key, v.user, v.subject, v.exp)), {}, { user: v.user });
  };

  const approveAct = async (c: Ctx): Promise<PortalReply> => {
    const v: TokenClaims | null = verifyExact(c.key, c.fields.get('token') ?? '', 'approve', c.at);
    if (v === null) return invalid();
    if (!csrfOk(c, v.user, v.subject)) return forbidden('csrf');
    const answer = c.fields.get('answer');
    if (answer !== 'approve' && answer !== 'reject') return badForm(400, 'answer');
    const p = livePending(service, v.user, v.subject);
    if (p === null) return invalid({ user: v.user, approve: 'not pending' });
    const r = await deadline(answer === 'approve' ? service.approve(v.user, p.hash, c.actor) : service.reject(v.user, p.hash, c.actor));
    const log = { user: v.user, answer, result: r };
    if (r === 'gone') return invalid(log);
    if (answer === 'approve') return reply(200, messagePage(t('approved_title'), t('approved_text')), {}, log);
    return reply(200, rejectedPage(t), {}, log);
  };

  type Handler = (c: Ctx) => PortalReply | Promise<PortalReply>;
  const GETS: Record<string, (c: Ctx) => PortalReply> = { '/': home, '/devices': devices };
  const POSTS: Record<string, Handler> = {
    '/signin': signIn, '/s': signInUse, '/approve': approveAct,
    '/devices/rename': rename, '/devices/remove': remove,
    '/pending/approve': answerPending('approve'), '/pending/reject': answerPending('reject'),
    '/lock': setLock, '/signout': signOut,
  };
  /** The route for the log: token paths without their token, and no unknown path as typed (it may hold one). */
  const routeName = (path: string) => {
    if (/^\/(s|approve)\//.test(path)) return path.startsWith('/s/') ? '/s/…' : '/approve/…';
    return Object.hasOwn(GETS, path) || Object.hasOwn(POSTS, path) || path === '/portal.css' || path === '/favicon.ico' ? path : '(unknown)';
  };

  return async (req) => {
    const at = now();
    const path = routePath(req.url, base);
    const route = routeName(path);
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const logged = (r: PortalReply): PortalReply => {
      r.log = { method: req.method, route, status: r.status, ...r.log };
      return r;
    };
    const notAllowed = (allow: string) => logged(reply(405, messagePage(t('method_title'), t('method_text')), { allow }));
    if (method !== 'GET' && method !== 'POST') return notAllowed('GET, HEAD, POST');

    const tokenRoute = /^\/(s|approve)\/([^/]*)$/.exec(path);
    let get = Object.hasOwn(GETS, path) ? GETS[path] : undefined;
    if (tokenRoute !== null) get = tokenRoute[1] === 's' ? (c) => signInConfirm(c, tokenRoute[2]!) : (c) => approveShow(c, tokenRoute[2]!);
    const post = Object.hasOwn(POSTS, path) ? POSTS[path] : undefined;
    if (path === '/portal.css') {
      if (method !== 'GET') return notAllowed('GET, HEAD');
      return logged({ status: 200, headers: { 'content-type': 'text/css; charset=utf-8' }, body: PORTAL_CSS, log: {} });
    }
    // Browsers ask for it on their own; an empty answer keeps a 404 out of every page's console.
    if (path === '/favicon.ico' && method === 'GET') return logged({ status: 204, headers: {}, body: '', log: {} });
    if (get === undefined && post === undefined) return logged(reply(404, messagePage(t('not_found_title'), t('not_found_text'), { href: base, text: t('home_title') })));
    if (method === 'GET' && get === undefined) return notAllowed('POST');
    if (method === 'POST' && post === undefined) return notAllowed('GET, HEAD');

    let fields = new Map<string, string>();
    if (method === 'POST') {
      if (!isFormContentType(header(req.headers['content-type']))) return logged(badForm(415, 'content type'));
      const f = parseForm(req.body ?? '');
      if (!f.ok) return logged(badForm(400, f.reason));
      fields = f.fields;
      if (isCrossSite({ origin: header(req.headers.origin), 'sec-fetch-site': header(req.headers['sec-fetch-site']) }, origin)) return logged(forbidden('cross-site'));
    }
    try {
      const c: Ctx = {
        req,
        key: await deadline(service.key()),
        at,
        cookies: parseCookies(header(req.headers.cookie)),
        fields,
        actor: { remote: clientAddress(req.peer, header(req.headers['x-forwarded-for'])) },
      };
      return logged(await (method === 'GET' ? get! : post!)(c));
    } catch (e) {
      if (e instanceof PortalRefusal) return logged(reply(400, messagePage(t('refused_title'), e.message, toDevices), {}, { refused: 'service' }));
      logger.log('error', 'portal_service_error', { route, error: (e as Error).message, timeout: e instanceof ServiceTimeout });
      return logged(reply(503, messagePage(t('unavailable_title'), t('unavailable_text')), { 'retry-after': '60' }));
    }
  };
}
