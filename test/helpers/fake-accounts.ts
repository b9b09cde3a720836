import { randomBytes } from 'node:crypto';
import type { Mode } from '../../src/core/rules/types.js';
import { PortalRefusal, type AccountService, type Actor, type DeviceView, type PendingView, type RefusalView } from '../../src/portal/account.js';

/** One account as the fake keeps it: plain arrays the tests read and change directly. */
export interface FakeAccount {
  devices: DeviceView[];
  pending: PendingView[];
  refusals: RefusalView[];
  mode: Mode;
  own: Mode | null;
}

export interface FakeAccounts extends AccountService {
  readonly accounts: Map<string, FakeAccount>;
  choices: Mode[];
  /** Every sign-in mail, in order. */
  readonly mails: Array<{ user: string; link: string }>;
  /** Every change made, as "approve alice@example.org HASH" and so on, with its actor. */
  readonly changes: Array<{ what: string; actor: Actor }>;
  /** When set, every call throws this (a registry down). */
  failWith: Error | null;
  /** Resolves with the next sign-in mail (mailing runs in the background). */
  nextMail(): Promise<{ user: string; link: string }>;
}

export const FAKE_KEY = Buffer.alloc(32, 7);

/** An in-memory AccountService: what the daemon's registry-backed one does, minus the registry. */
export function fakeAccounts(): FakeAccounts {
  const accounts = new Map<string, FakeAccount>();
  const links = new Map<string, { user: string; exp: number; used: boolean }>();
  const sessions = new Map<string, { user: string; exp: number }>();
  const mails: Array<{ user: string; link: string }> = [];
  const waiting: Array<(m: { user: string; link: string }) => void> = [];
  const changes: Array<{ what: string; actor: Actor }> = [];
  const acct = (user: string): FakeAccount => {
    const a = accounts.get(user);
    if (a === undefined) throw new Error(`fake: no account ${user}`);
    return a;
  };
  const f: FakeAccounts = {
    accounts,
    choices: ['learn', 'enforce'],
    mails,
    changes,
    failWith: null,
    nextMail: () => new Promise((resolve) => waiting.push(resolve)),
    account(typed) {
      // Like logins: a bare name is in the default domain.
      const t = typed.trim().toLowerCase();
      if (/^[^\s@]+$/.test(t)) return `${t}@example.org`;
      return /^[^\s@]+@[^\s@]+$/.test(t) ? t : null;
    },
    known(user) {
      if (f.failWith) throw f.failWith;
      return accounts.has(user);
    },
    pending: (user) => acct(user).pending.map((p) => ({ ...p })),
    findPending: (user, hash) => accounts.get(user)?.pending.find((p) => p.hash === hash),
    devices: (user) => acct(user).devices.map((d) => ({ ...d })),
    refusals: (user) => acct(user).refusals.map((r) => ({ ...r })),
    lock: (user) => ({ mode: acct(user).mode, choices: f.choices, own: acct(user).own }),
    async approve(user, hash, actor) {
      if (f.failWith) throw f.failWith;
      const a = acct(user);
      const i = a.pending.findIndex((p) => p.hash === hash && p.state === 'pending');
      if (i < 0) return 'gone';
      const p = a.pending.splice(i, 1)[0]!;
      a.devices.push({ id: p.id, kind: p.kind, type: p.type, label: p.client || p.type, added: new Date().toISOString(), lastUsed: null, source: 'approved' });
      changes.push({ what: `approve ${user} ${hash}`, actor });
      return 'done';
    },
    async reject(user, hash, actor) {
      if (f.failWith) throw f.failWith;
      const p = acct(user).pending.find((x) => x.hash === hash && x.state === 'pending');
      if (p === undefined) return 'gone';
      p.state = 'rejected';
      changes.push({ what: `reject ${user} ${hash}`, actor });
      return 'done';
    },
    async rename(user, id, label, actor) {
      if (f.failWith) throw f.failWith;
      const d = acct(user).devices.find((x) => x.id === id);
      if (d === undefined) return 'gone';
      d.label = label;
      changes.push({ what: `rename ${user} ${id} ${label}`, actor });
      return 'done';
    },
    async remove(user, id, actor) {
      if (f.failWith) throw f.failWith;
      const a = acct(user);
      const i = a.devices.findIndex((x) => x.id === id);
      if (i < 0) return 'gone';
      a.devices.splice(i, 1);
      changes.push({ what: `remove ${user} ${id}`, actor });
      return 'done';
    },
    async setLock(user, mode, actor) {
      if (f.failWith) throw f.failWith;
      if (!f.choices.includes(mode)) throw new PortalRefusal(`the mode "${mode}" is not offered`);
      const a = acct(user);
      a.mode = mode;
      a.own = mode;
      changes.push({ what: `lock ${user} ${mode}`, actor });
    },
    async issueSignIn(user, expiresAt) {
      const id = randomBytes(9).toString('base64url');
      links.set(id, { user, exp: expiresAt, used: false });
      return id;
    },
    async startSession(user, sid, expiresAt) {
      if (f.failWith) throw f.failWith;
      sessions.set(sid, { user, exp: expiresAt });
    },
    sessionAlive(user, sid) {
      const x = sessions.get(sid);
      return x !== undefined && x.user === user;
    },
    async endSession(_user, sid) {
      sessions.delete(sid);
    },
    async consumeSignIn(user, id) {
      if (f.failWith) throw f.failWith;
      const l = links.get(id);
      if (l === undefined || l.used || l.user !== user) return false;
      l.used = true;
      return true;
    },
    async mailSignIn(user, link) {
      const m = { user, link };
      mails.push(m);
      waiting.shift()?.(m);
    },
    async key() {
      if (f.failWith) throw f.failWith;
      return FAKE_KEY;
    },
  };
  return f;
}

let seq = 0;
/** A pending device first seen at `first` (ISO), with a fresh hash. */
export function pendingDevice(over: Partial<PendingView> = {}): PendingView {
  const hash = (++seq).toString(16).padStart(4, '0') + 'ab'.repeat(30);
  return {
    id: hash.slice(0, 12), hash, kind: 'cid', type: 'TBIRD-UUID', client: 'Thunderbird 128.0', protocol: 'imap', remote: '192.0.2.7',
    first: '2025-03-01T10:00:00.000Z', last: '2025-03-01T10:05:00.000Z', tries: 3, state: 'pending', ...over,
  };
}

export function device(id: string, label: string): DeviceView {
  return { id, kind: 'cid', type: 'TBIRD-UUID', label, added: '2025-01-02T08:00:00.000Z', lastUsed: '2025-02-27', source: 'learned' };
}
