import { createHash, randomBytes } from 'node:crypto';
import type { EventSink } from '../alerts/events.js';
import type { Engine } from '../core/engine.js';
import type { Logger } from '../core/log.js';
import { accountName, parseLoginName } from '../core/login-name.js';
import type { Metrics } from '../core/metrics.js';
import { approvePending, livePending, pendingExpired, rejectPending, type PendingTracker } from '../core/pending.js';
import { cleanLabel } from '../core/registry/registry.js';
import type { PendingDevice } from '../core/registry/types.js';
import { effectivePolicy } from '../core/rules/resolve.js';
import type { Rules } from '../core/rules/types.js';
import { composeMessage, makeMessageId } from '../notice/message.js';
import { DEFAULT_DEVICE_TEMPLATE, DEFAULT_SIGNIN_TEMPLATE, DEVICE_NOTICE_VARS, loadTemplate, renderTemplate, SIGNIN_NOTICE_VARS, type NoticeTemplate } from '../notice/template.js';
import { sendMail, type NoticeTransport } from '../notice/transport.js';
import { PortalRefusal, type AccountService, type Actor, type PendingView } from '../portal/account.js';
import { portalKey, signToken } from '../portal/tokens.js';

export interface NoticeTemplates {
  device: NoticeTemplate;
  signin: NoticeTemplate;
}

/** The operator's templates, or the shipped ones; throws TemplateError (file:line:col) on a bad one. */
export function loadNoticeTemplates(notice: NonNullable<Rules['notice']>): NoticeTemplates {
  const pick = (text: string, html: string, dflt: { text: string; html: string }) =>
    text === '' ? { text: dflt.text, html: html === '' ? dflt.html : html } : { text, html: html === '' ? undefined : html };
  const d = pick(notice.deviceTemplate, notice.deviceHtml, DEFAULT_DEVICE_TEMPLATE);
  const s = pick(notice.signinTemplate, notice.signinHtml, DEFAULT_SIGNIN_TEMPLATE);
  return { device: loadTemplate(d.text, d.html, DEVICE_NOTICE_VARS), signin: loadTemplate(s.text, s.html, SIGNIN_NOTICE_VARS) };
}

/** Notices waiting to be sent; beyond this a burst is dropped (and logged), never queued without end. */
const MAX_QUEUED_NOTICES = 200;
const SEND_TIMEOUT_MS = 30_000;
/** Sign-in links of one account alive at once; the portal's rate limits keep far below it. */
const MAX_LINKS_PER_ACCOUNT = 20;

export interface Accounts extends AccountService {
  /** The pending tracker's call: a notice may be due for this device. */
  notify(user: string, hash: string): void;
  /** New rules and their templates (validated by the caller). */
  setTemplates(t: NoticeTemplates | null): void;
  idle(): Promise<void>;
}

/**
 * A session is kept as a link record under a hash of its id: never the id the cookie carries, and
 * never one a sign-in link could name.
 */
const sessionRecord = (sid: string) => createHash('sha256').update(`session ${sid}`).digest('hex').slice(0, 32);

const when = (t: number) => new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');

/**
 * What the account page and the notices do, on the engine's registry: every change is planned
 * under the registry lock, so several hosts and the CLI never undo each other, and each goes to
 * the audit log and webhook with the holder as its source.
 */
export function createAccounts(o: {
  engine: Engine;
  tracker: PendingTracker;
  events: EventSink;
  logger: Logger;
  metrics?: Metrics;
  templates: NoticeTemplates | null;
  /** The registry's CID key: the portal's key is derived from it, so every host shares it. */
  secret: () => Promise<Buffer>;
  now?: () => number;
  send?: (t: NoticeTransport, envelope: { from: string; to: string }, message: Buffer) => Promise<void>;
}): Accounts {
  const { engine, tracker, events, logger } = o;
  const now = o.now ?? Date.now;
  const send = o.send ?? ((t, env, msg) => sendMail(t, env, msg, { timeoutMs: SEND_TIMEOUT_MS }));
  let templates = o.templates;
  let key: Buffer | null = null;
  const reg = () => engine.registry;
  const rules = () => engine.rules;
  const sent = o.metrics?.counter('notices_total', 'Notices mailed to account holders, by kind and result', ['notice', 'result']);

  // One notice at a time: a burst of refusals never becomes a burst of sendmail processes.
  let queue: Promise<void> = Promise.resolve();
  let queued = 0;
  const enqueue = (job: () => Promise<void>): boolean => {
    if (queued >= MAX_QUEUED_NOTICES) return false;
    queued++;
    queue = queue.then(job).catch(() => {}).finally(() => { queued--; });
    return true;
  };

  const pendingView = (p: PendingDevice): PendingView => ({
    id: p.hash.slice(0, 12), hash: p.hash, kind: p.kind, type: p.type, client: p.client, protocol: p.protocol, remote: p.remote,
    first: new Date(p.first).toISOString(), last: new Date(p.last).toISOString(), tries: p.tries, state: p.state,
  });

  /** Where an account's own mail goes: its name, or its name at the notice domain. */
  const mailbox = (user: string): string | null => {
    if (user.includes('@')) return user;
    const domain = rules().notice?.toDomain || rules().accounts.defaultDomain;
    return domain === '' ? null : `${user}@${domain}`;
  };

  const portalKeyNow = async (): Promise<Buffer> => {
    if (key === null) key = portalKey(await o.secret());
    return key;
  };

  const mail = async (user: string, kind: 'device' | 'signin', vars: Record<string, string>, device?: string): Promise<void> => {
    const notice = rules().notice;
    const to = mailbox(user);
    const t = templates?.[kind];
    if (notice === null || t === undefined) throw new Error('notices are not configured');
    if (to === null) throw new Error(`${user} has no domain to mail it at; set notice.to_domain`);
    const r = renderTemplate(t, vars);
    const fromAddr = /<([^>]+)>\s*$/.exec(notice.from)?.[1] ?? notice.from;
    const message = composeMessage({
      from: notice.from, to, subject: r.subject, text: r.text, ...(r.html === undefined ? {} : { html: r.html }),
      date: new Date(now()), messageId: makeMessageId(fromAddr.slice(fromAddr.indexOf('@') + 1)),
    });
    try {
      await send(notice.transport, { from: fromAddr, to }, message);
    } catch (err) {
      sent?.inc({ notice: kind, result: 'failed' });
      events.emit({ event: 'notice_failed', user, notice: kind, ...(device ? { device } : {}), error: (err as Error).message.slice(0, 300) });
      throw err;
    }
    sent?.inc({ notice: kind, result: 'sent' });
    events.emit({ event: 'notice_sent', user, notice: kind, ...(device ? { device } : {}) });
  };

  const notifyNow = async (user: string, hash: string): Promise<void> => {
    const r = rules();
    if (r.notice === null || r.portal === null || templates === null) return;
    const claim = await tracker.claimNotice(user, hash, r.notice.perAccountPerDay);
    if (claim === null) return;
    const p = claim.pending;
    const exp = now() + r.portal.linkTtlMs;
    const token = signToken(await portalKeyNow(), { purpose: 'approve', user, subject: `${p.hash}.${p.first}`, exp });
    const vars = {
      user, client: p.client === '' ? `a mail app (${p.type})` : p.client, protocol: p.protocol.toUpperCase(), remote: p.remote ?? 'an unknown address',
      when: when(p.first), tries: String(p.tries), approve_url: `${r.portal.url}approve/${token}`, expires: when(exp), portal_url: r.portal.url,
    };
    try {
      await mail(user, 'device', vars, p.hash.slice(0, 12));
    } catch {
      // Given back, so a later attempt of the device may notify.
      await tracker.unclaimNotice(user, hash, claim).catch(() => {});
    }
  };

  const holder = (a: Actor) => ({ source: 'holder' as const, remote: a.remote });

  return {
    notify(user, hash) {
      if (rules().notice === null) return;
      if (!enqueue(() => notifyNow(user, hash).catch((err: unknown) => logger.log('error', 'notice_failed', { user, error: (err as Error).message })))) {
        logger.log('warn', 'notice_dropped', { user, note: `${MAX_QUEUED_NOTICES} notices are waiting to be sent already` });
      }
    },
    setTemplates(t) {
      templates = t;
    },
    async idle() {
      await queue;
    },
    account(typed) {
      const r = parseLoginName(typed);
      return r.ok ? accountName(r.name, rules().accounts.defaultDomain) : null;
    },
    known(user) {
      const g = reg();
      return g.deviceCount(user) > 0 || g.settings(user).mode !== undefined || g.pending(user).length > 0 || rules().users.has(user);
    },
    pending(user) {
      return livePending(reg(), user, now(), rules().pending.expireMs).map(pendingView);
    },
    findPending(user, hash) {
      const p = reg().findPending(user, hash);
      return p === undefined || pendingExpired(p, now(), rules().pending.expireMs) ? undefined : pendingView(p);
    },
    devices: (user) => reg().devices(user).map((d) => ({ id: d.id, kind: d.kind, type: d.type, label: d.label, added: d.added, lastUsed: d.used ?? null, source: d.source })),
    refusals: (user) => engine.defences.recentRefusals(user).filter((r) => r.refused).map((r) => ({ at: r.at, protocol: r.protocol, remote: r.remote, reason: r.reason, client: r.client_name ?? '' })),
    lock(user) {
      const eff = effectivePolicy(rules(), user, reg().settings(user));
      // The rules file's own line for this user outranks the registry: the holder cannot change it.
      const fixed = eff.sources.mode?.layer === 'user';
      return { mode: eff.mode, choices: fixed ? [] : rules().portal?.userModes ?? [], own: reg().settings(user).mode ?? null };
    },
    async approve(user, hash, actor) {
      const device = await approvePending(reg(), user, hash, { now: now(), expireMs: rules().pending.expireMs, source: 'approved' });
      if (device === null) return 'gone';
      events.emit({ event: 'device_registered', user, device: hash.slice(0, 12), kind: device.kind, type: device.type, label: device.label, ...holder(actor) });
      return 'done';
    },
    async reject(user, hash, actor) {
      if (!(await rejectPending(reg(), user, hash, { now: now(), expireMs: rules().pending.expireMs }))) return 'gone';
      events.emit({ event: 'device_rejected', user, device: hash.slice(0, 12), ...holder(actor) });
      return 'done';
    },
    async rename(user, id, label, actor) {
      const clean = cleanLabel(label);
      const hash = await reg().change(() => {
        const d = reg().devices(user).find((x) => x.id === id.toLowerCase());
        return d === undefined ? { ops: [], result: null } : { ops: [{ op: 'label', user, hash: d.hash, label: clean }], result: d.hash };
      });
      if (hash === null) return 'gone';
      events.emit({ event: 'device_renamed', user, device: hash.slice(0, 12), label: clean, ...holder(actor) });
      return 'done';
    },
    async remove(user, id, actor) {
      if (!/^[0-9a-f]{12}$/i.test(id)) return 'gone';
      const removed = await reg().remove(user, { id });
      if (removed.length === 0) return 'gone';
      for (const d of removed) events.emit({ event: 'device_removed', user, device: d.id, kind: d.kind, ...holder(actor) });
      return 'done';
    },
    async setLock(user, mode, actor) {
      if (!this.lock(user).choices.includes(mode)) throw new PortalRefusal(`the lock cannot be set to ${mode} here`);
      await reg().setMode(user, mode);
      events.emit({ event: 'user_mode_set', user, mode, ...holder(actor) });
    },
    async issueSignIn(user, expiresAt) {
      const id = randomBytes(16).toString('hex');
      await reg().change(() => {
        if (reg().linkCount(user) >= MAX_LINKS_PER_ACCOUNT) throw new PortalRefusal('too many sign-in links are waiting for this account');
        return { ops: [{ op: 'link', user, id, exp: expiresAt }], result: undefined };
      });
      return id;
    },
    consumeSignIn(user, id) {
      return reg().change(() => {
        const exp = reg().link(user, id);
        if (exp === undefined) return { ops: [], result: false };
        // Used or not, a link past its time is only removed.
        return { ops: [{ op: 'unlink', user, id }], result: exp > now() };
      });
    },
    async startSession(user, sid, expiresAt) {
      const id = sessionRecord(sid);
      await reg().change(() => {
        if (reg().linkCount(user) >= MAX_LINKS_PER_ACCOUNT) throw new PortalRefusal('too many sessions and sign-in links are open for this account');
        return { ops: [{ op: 'link', user, id, exp: expiresAt }], result: undefined };
      });
    },
    sessionAlive(user, sid) {
      const exp = reg().link(user, sessionRecord(sid));
      return exp !== undefined && exp > now();
    },
    async endSession(user, sid) {
      const id = sessionRecord(sid);
      await reg().change(() => ({ ops: reg().link(user, id) === undefined ? [] : [{ op: 'unlink', user, id }], result: undefined }));
    },
    async mailSignIn(user, link) {
      const r = rules();
      if (r.portal === null) throw new Error('the account page is not configured');
      await mail(user, 'signin', { user, signin_url: link, expires: when(now() + r.portal.linkTtlMs), portal_url: r.portal.url });
    },
    key: portalKeyNow,
  };
}
