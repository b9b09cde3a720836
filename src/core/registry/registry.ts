import { createHmac } from 'node:crypto';
import { cidText, type Cid } from '../cid.js';
import type { Mode } from '../rules/types.js';
import type { RegistryUserSettings } from '../rules/resolve.js';
import { slicer, type Slicer } from './slice.js';
import { RegistryError, type Device, type DeviceMatch, type DeviceSource, type PendingDevice, type RegistryOp, type RegistryStore, type StoreCursor, type StoredDevice, type UserSnapshot } from './types.js';

export type DeviceInput =
  | { kind: 'cid'; cid: Cid; label?: string }
  | { kind: 'cert'; fingerprint: string; label?: string }; // normalised 64-hex public-key fingerprint

export type AddResult =
  | { status: 'added'; device: Device }
  | { status: 'exists'; device: Device }
  | { status: 'full'; count: number };

export type DeviceSelector = { id: string } | { label: string };

export interface Registry {
  readonly location: string;
  // Lookups are synchronous and in memory: they run on every login.
  settings(user: string): RegistryUserSettings;
  devices(user: string): readonly Device[];
  /** The keyed hash a CID is stored under, or null while no secret exists (then nothing can match). */
  cidHash(cid: Cid): string | null;
  findCid(user: string, cid: Cid): DeviceMatch | undefined;
  /** First registered device among the given normalised fingerprints (public key first, then certificate). */
  findCert(user: string, fingerprints: readonly string[]): DeviceMatch | undefined;
  deviceCount(user: string): number;
  /** Whether any user registered this certificate (public-key) fingerprint. */
  certRegistered(fingerprint: string): boolean;
  /** Whether this full device hash (Device.hash / DeviceMatch.hash) is still registered for the user. */
  hasDevice(user: string, hash: string): boolean;
  users(): IterableIterator<string>;
  size(): { users: number; devices: number };
  // Changes are durable (fsynced) when their promise resolves, and applied in memory then.
  add(user: string, input: DeviceInput, source: DeviceSource, opts?: { maxDevices?: number; now?: Date }): Promise<AddResult>;
  addMany(items: ReadonlyArray<{ user: string; input: DeviceInput }>, now?: Date): Promise<{ added: number; existing: number }>;
  /** Throws RegistryError "ambiguous" when an ID prefix matches several devices; nothing is removed then. */
  remove(user: string, selector: DeviceSelector): Promise<Device[]>;
  setMode(user: string, mode: Mode | null): Promise<void>;
  /** The devices this account refused and remembers (approval, "not me"), oldest first. */
  pending(user: string): readonly PendingDevice[];
  /** Not a copy (asked at every refusal of an unknown device): read it only. */
  findPending(user: string, hash: string): Readonly<PendingDevice> | undefined;
  /** Pending devices of all accounts, for the total bound. */
  pendingTotal(): number;
  /** The expiry of an unused sign-in link, or undefined. */
  link(user: string, id: string): number | undefined;
  linkCount(user: string): number;
  /** When notices were mailed to the account (epoch ms), oldest first. */
  notices(user: string): readonly number[];
  /** The stored device with this full hash (with its last-used day), or undefined; not a copy: read it only. */
  device(user: string, hash: string): Readonly<StoredDevice> | undefined;
  /**
   * The general change: `plan` runs under the registry lock on the freshest state (read it with
   * the calls above) and returns the operations to make durable and the caller's result.
   */
  change<T>(plan: () => { ops: RegistryOp[]; result: T }): Promise<T>;
  /** Every user's line of a snapshot (a store copy, the local copy). */
  entries(): Generator<[string, UserSnapshot]>;
  /** Catches up with other processes' changes without blocking; true when something changed. */
  refresh(): Promise<boolean>;
  /**
   * Called after a removal is applied in memory (this process's own, or one read from another
   * process's journal entries), and with `reset` after the whole index was rebuilt from disk, so
   * the engine can drop the vouches of removed devices. Returns an unsubscribe function.
   */
  onChange(listener: (change: RegistryChange) => void): () => void;
}

export type RegistryChange = { kind: 'removed'; user: string; hashes: readonly string[] } | { kind: 'reset' };

const LABEL_MAX = 100;

export function cleanLabel(label: string | undefined): string {
  // Labels end up in terminals and logs: keep them printable and short.
  return (label ?? '').replace(/[\x00-\x1f\x7f]/g, ' ').trim().slice(0, LABEL_MAX);
}

interface UserEntry {
  mode?: Mode;
  devices: Map<string, StoredDevice>; // by hash: O(1) lookups
  pending?: Map<string, PendingDevice>; // by hash, in the order first seen
  links?: Map<string, number>; // sign-in link id -> expiry
  notices?: number[]; // when notices were mailed, oldest first, the last MAX_NOTICES
}

/** Notices remembered per account: far more than any per-day limit allows. */
const MAX_NOTICES = 100;

const emptyEntry = (u: UserEntry) => u.mode === undefined && u.devices.size === 0 && (u.pending === undefined || u.pending.size === 0) && (u.links === undefined || u.links.size === 0) && (u.notices === undefined || u.notices.length === 0);

// Lookups run on every login and never show the date, so they skip formatting it. A lazy getter
// would be cheaper still to write, but every object literal with an accessor outlives V8's young
// generation: at 60,000 logins a second that promoted ~50 MB of garbage per 400,000 decisions.
const match = (d: StoredDevice): DeviceMatch => ({ id: d.hash.slice(0, 12), kind: d.kind, type: d.type, hash: d.hash, label: d.label, source: d.source });
const view = (d: StoredDevice): Device => {
  const v: Device = { ...match(d), added: new Date(d.added).toISOString() };
  if (d.used !== undefined) v.used = new Date(d.used).toISOString();
  return v;
};

/** Recently hashed CIDs: a device logs in again and again, and HMAC is the costliest step of a lookup. */
const CID_HASH_CACHE = 50_000;

/** The whole registry in memory, built and kept current by replaying operations. */
function createIndex() {
  const users = new Map<string, UserEntry>();
  // Certificates registered by anyone, counted so removing one user's copy keeps the others'.
  const certs = new Map<string, number>();
  let devices = 0;
  let pendingTotal = 0;
  const entryFor = (user: string): UserEntry => {
    let u = users.get(user);
    if (u === undefined) users.set(user, (u = { devices: new Map() }));
    return u;
  };
  const unpend = (u: UserEntry, hash: string): void => {
    if (u.pending?.delete(hash) === true) pendingTotal--;
  };
  /** Applies one operation; for a removal, returns the hashes that were actually there. */
  const apply = (op: RegistryOp): string[] | undefined => {
    let u = users.get(op.user);
    let removed: string[] | undefined;
    if (op.op === 'mode') {
      if (op.mode === null) {
        if (u !== undefined) delete u.mode;
      } else {
        if (u === undefined) users.set(op.user, (u = { devices: new Map() }));
        u.mode = op.mode;
      }
    } else if (op.op === 'add') {
      if (u === undefined) users.set(op.user, (u = { devices: new Map() }));
      if (u.devices.has(op.device.hash)) return undefined; // idempotent: a replayed add changes nothing
      u.devices.set(op.device.hash, op.device);
      devices++;
      if (op.device.kind === 'cert') certs.set(op.device.hash, (certs.get(op.device.hash) ?? 0) + 1);
      // A registered device is no longer waiting for its holder's answer.
      unpend(u, op.device.hash);
    } else if (op.op === 'pend') {
      if (u === undefined) u = entryFor(op.user);
      if (u.pending === undefined) u.pending = new Map();
      if (!u.pending.has(op.pending.hash)) pendingTotal++;
      u.pending.set(op.pending.hash, op.pending);
    } else if (op.op === 'link') {
      if (u === undefined) u = entryFor(op.user);
      if (u.links === undefined) u.links = new Map();
      u.links.set(op.id, op.exp);
    } else if (op.op === 'notice') {
      if (u === undefined) u = entryFor(op.user);
      if (u.notices === undefined) u.notices = [];
      // Two notices may share a millisecond; a replay that counts one twice only sends fewer.
      u.notices.push(op.at);
      if (u.notices.length > MAX_NOTICES) u.notices.shift();
    } else if (u === undefined) {
      return undefined;
    } else if (op.op === 'unnotice') {
      const i = u.notices?.indexOf(op.at) ?? -1;
      if (i >= 0) u.notices!.splice(i, 1);
    } else if (op.op === 'unpend') {
      for (const h of op.hashes) unpend(u, h);
    } else if (op.op === 'unlink') {
      u.links?.delete(op.id);
    } else if (op.op === 'label') {
      const d = u.devices.get(op.hash);
      if (d !== undefined) u.devices.set(op.hash, { ...d, label: op.label });
    } else if (op.op === 'used') {
      for (const h of op.hashes) {
        const d = u.devices.get(h);
        if (d !== undefined && (d.used ?? 0) < op.at) d.used = op.at;
      }
    } else {
      removed = [];
      for (const h of op.hashes) {
        const d = u.devices.get(h);
        if (d === undefined) continue;
        u.devices.delete(h);
        removed.push(h);
        devices--;
        if (d.kind === 'cert') {
          const n = (certs.get(h) ?? 1) - 1;
          if (n <= 0) certs.delete(h);
          else certs.set(h, n);
        }
      }
    }
    if (u !== undefined && emptyEntry(u)) users.delete(op.user);
    return removed;
  };
  return { users, certs, apply, count: () => devices, pendingCount: () => pendingTotal };
}

/**
 * Runs tasks one at a time in call order, each after the previous one settled: in-process changes
 * and refreshes never interleave, so a compaction never iterates an index that is changing and two
 * catch-ups never apply the same journal entries.
 */
function serializer() {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(task: () => Promise<T>): Promise<T> => {
    const run = tail.then(task);
    tail = run.catch(() => {});
    return run;
  };
}

/** Anything a store call throws that is not already a RegistryError is an I/O failure of the registry. */
function asRegistryError(err: unknown, location: string): RegistryError {
  if (err instanceof RegistryError) return err;
  const e = err as NodeJS.ErrnoException;
  return new RegistryError('io', `${e.path ?? location}: registry I/O failed (${e.code ?? e.message})`);
}

/**
 * Opens the registry; `create` allows making the CID secret (commands that only read pass false).
 * Reading a large registry yields to the event loop between slices, like every later change.
 */
export async function openRegistry(store: RegistryStore, opts: { create: boolean }): Promise<Registry> {
  let idx = createIndex();
  // decide() asks about the same user several times in a row (settings, then its devices): with
  // hundreds of thousands of users each Map lookup is a cache miss, so remember the last one.
  let lastName: string | undefined;
  let lastEntry: UserEntry | undefined;
  const entry = (user: string): UserEntry | undefined => {
    if (user === lastName) return lastEntry;
    lastEntry = idx.users.get(user);
    lastName = user;
    return lastEntry;
  };
  const forget = () => { lastName = undefined; lastEntry = undefined; };
  let cursor: StoreCursor = await store.readAll(idx.apply);
  let secret = await store.secret(false);

  // Raw CIDs live only in this process's memory, never on disk or in logs.
  let hashCache = new Map<string, string>();
  const hmac = (cid: Cid, key: Buffer) => createHmac('sha256', key).update(cidText(cid)).digest('hex');
  // decide() asks for the same CID's hash twice (its short id for the log, then the lookup).
  let lastCid: Cid | undefined;
  let lastHash = '';
  const hashCid = (cid: Cid, key: Buffer): string => {
    if (cid === lastCid) return lastHash;
    const text = cidText(cid);
    let h = hashCache.get(text);
    if (h === undefined) {
      h = createHmac('sha256', key).update(text).digest('hex');
      if (hashCache.size >= CID_HASH_CACHE) hashCache.delete(hashCache.keys().next().value!);
      hashCache.set(text, h);
    }
    lastCid = cid;
    lastHash = h;
    return h;
  };
  const useSecret = (next: Buffer | null): void => {
    if (next === null || secret === null || !next.equals(secret)) {
      hashCache = new Map();
      lastCid = undefined;
    }
    secret = next;
  };
  const ensureSecret = async (): Promise<Buffer> => {
    if (secret === null) {
      if (!opts.create) throw new RegistryError('io', `${store.location}: the registry is open read-only and has no secret yet`);
      useSecret(await store.secret(true));
    }
    return secret!;
  };
  const hashOf = (input: DeviceInput, key: Buffer): string => (input.kind === 'cert' ? input.fingerprint : hmac(input.cid, key));

  const listeners = new Set<(change: RegistryChange) => void>();
  const notify = (change: RegistryChange): void => {
    for (const l of listeners) {
      try {
        l(change);
      } catch {
        // A listener's failure is its own; the registry change stands.
      }
    }
  };
  /** Applies one operation to the index lookups read from, and tells listeners what was removed. */
  const applyLive = (op: RegistryOp): void => {
    const removed = idx.apply(op);
    forget();
    if (removed !== undefined && removed.length > 0) notify({ kind: 'removed', user: op.user, hashes: removed });
  };

  const serial = serializer();
  /** Another process replaced the files: build a fresh index aside, then swap it in at once. */
  const rebuild = async (): Promise<void> => {
    const fresh = createIndex();
    const next = await store.readAll(fresh.apply);
    const nextSecret = await store.secret(false);
    idx = fresh;
    cursor = next;
    forget();
    useSecret(nextSecret);
    notify({ kind: 'reset' });
  };
  // The first registration anywhere creates the secret: until this process has read it, no CID
  // can match. It is looked for on every catch-up (before and after the entries, which may be
  // the ones that came with it), and failing to read it fails the catch-up, every time.
  const findSecret = async (): Promise<boolean> => {
    if (secret !== null) return false;
    const next = await store.secret(false);
    if (next !== null) useSecret(next);
    return next !== null;
  };
  const catchUp = async (): Promise<boolean> => {
    const found = await findSecret();
    if (!(await store.changedSince(cursor))) return found;
    // Entries are applied to the live index as they are read, a slice at a time; if reading fails
    // half-way, the cursor stays put and the retry replays them, which changes nothing.
    const next = await store.readSince(cursor, applyLive);
    if (next === null) return await rebuild(), true;
    cursor = next;
    await findSecret();
    return true;
  };
  /** Plans operations on the freshest state under the lock, then makes them durable before applying. */
  const mutate = <T>(plan: (slice: Slicer) => Promise<{ ops: RegistryOp[]; result: T }>): Promise<T> =>
    serial(async () => {
      try {
        return await store.withLock(async () => {
          await catchUp();
          const slice = slicer();
          const { ops, result } = await plan(slice);
          if (ops.length === 0) return result;
          cursor = await store.append(cursor, ops);
          for (const op of ops) {
            applyLive(op);
            if (slice.due()) await slice.pause();
          }
          if (await store.shouldCompact(cursor)) {
            try {
              cursor = await store.compact(snapshotEntries());
            } catch {
              // The change is durable in the journal already; the next write tries to compact again.
            }
          }
          return result;
        });
      } catch (err) {
        // A full or read-only disk: nothing in memory changed, nothing stored was touched.
        throw asRegistryError(err, store.location);
      }
    });
  function* snapshotEntries(): Generator<[string, UserSnapshot]> {
    const t = Date.now();
    for (const [u, e] of idx.users) {
      const rec: UserSnapshot = { ...(e.mode ? { mode: e.mode } : {}), devices: e.devices.values() };
      if (e.pending !== undefined && e.pending.size > 0) rec.pending = e.pending.values();
      // A used or expired sign-in link is worth nothing: compaction forgets it.
      if (e.links !== undefined && e.links.size > 0) rec.links = [...e.links].filter(([, exp]) => exp > t);
      // Notices count for a day; older ones are of no more use.
      if (e.notices !== undefined && e.notices.length > 0) rec.notices = e.notices.filter((at) => t - at < 86_400_000);
      yield [u, rec];
    }
  }
  const stored = (input: DeviceInput, hash: string, source: DeviceSource, now: Date): StoredDevice => ({
    hash, kind: input.kind, type: input.kind === 'cid' ? input.cid.type : 'cert', label: cleanLabel(input.label), added: now.getTime(), source,
  });

  return {
    location: store.location,
    settings: (user) => {
      const mode = entry(user)?.mode;
      return mode === undefined ? {} : { mode };
    },
    devices: (user) => [...(idx.users.get(user)?.devices.values() ?? [])].map(view),
    cidHash: (cid) => (secret === null ? null : hashCid(cid, secret)),
    findCid(user, cid) {
      const u = entry(user);
      if (u === undefined || secret === null || u.devices.size === 0) return undefined;
      const d = u.devices.get(hashCid(cid, secret));
      return d === undefined ? undefined : match(d);
    },
    findCert(user, fingerprints) {
      const u = entry(user);
      if (u === undefined) return undefined;
      for (const fp of fingerprints) {
        const d = u.devices.get(fp);
        if (d !== undefined && d.kind === 'cert') return match(d);
      }
      return undefined;
    },
    deviceCount: (user) => entry(user)?.devices.size ?? 0,
    certRegistered: (fp) => idx.certs.has(fp),
    hasDevice: (user, hash) => entry(user)?.devices.has(hash) ?? false,
    users: () => idx.users.keys(),
    size: () => ({ users: idx.users.size, devices: idx.count() }),
    async add(user, input, source, o = {}) {
      // Hashed before the lock: the lock is held only for the write.
      const hash = hashOf(input, input.kind === 'cert' ? Buffer.alloc(0) : await ensureSecret());
      return mutate<AddResult>(async () => {
        const u = idx.users.get(user);
        const existing = u?.devices.get(hash);
        if (existing !== undefined) return { ops: [], result: { status: 'exists', device: view(existing) } };
        // Checked under the lock: another process may have registered a device meanwhile.
        const count = u?.devices.size ?? 0;
        if (o.maxDevices !== undefined && count >= o.maxDevices) return { ops: [], result: { status: 'full', count } };
        const device = stored(input, hash, source, o.now ?? new Date());
        return { ops: [{ op: 'add', user, device }], result: { status: 'added', device: view(device) } };
      });
    },
    async addMany(items, now = new Date()) {
      const key = items.some((it) => it.input.kind === 'cid') ? await ensureSecret() : Buffer.alloc(0);
      const hashed: Array<{ user: string; input: DeviceInput; hash: string }> = [];
      const slice = slicer();
      for (const it of items) {
        hashed.push({ user: it.user, input: it.input, hash: hashOf(it.input, key) });
        if (slice.due()) await slice.pause();
      }
      return mutate(async (inLock) => {
        const ops: RegistryOp[] = [];
        const seen = new Set<string>();
        let existing = 0;
        for (const it of hashed) {
          const k = `${it.user}\0${it.hash}`;
          if (seen.has(k) || idx.users.get(it.user)?.devices.has(it.hash)) existing++;
          else {
            seen.add(k);
            ops.push({ op: 'add', user: it.user, device: stored(it.input, it.hash, 'admin', now) });
          }
          if (inLock.due()) await inLock.pause();
        }
        return { ops, result: { added: ops.length, existing } };
      });
    },
    remove(user, selector) {
      return mutate(async () => {
        const u = idx.users.get(user);
        if (u === undefined) return { ops: [], result: [] as Device[] };
        const hits = [...u.devices.values()].filter((d) => ('id' in selector ? d.hash.startsWith(selector.id.toLowerCase()) : d.label === selector.label));
        if ('id' in selector && hits.length > 1) throw new RegistryError('ambiguous', `device ID ${selector.id} is ambiguous for ${user}: it matches ${hits.length} devices; give more digits`);
        if (hits.length === 0) return { ops: [], result: [] as Device[] };
        return { ops: [{ op: 'remove', user, hashes: hits.map((d) => d.hash) }], result: hits.map(view) };
      });
    },
    async setMode(user, mode) {
      await mutate(async () => ({ ops: [{ op: 'mode', user, mode }], result: undefined }));
    },
    pending: (user) => [...(idx.users.get(user)?.pending?.values() ?? [])].map((p) => ({ ...p })),
    findPending: (user, hash) => idx.users.get(user)?.pending?.get(hash),
    pendingTotal: () => idx.pendingCount(),
    link: (user, id) => idx.users.get(user)?.links?.get(id),
    linkCount: (user) => idx.users.get(user)?.links?.size ?? 0,
    notices: (user) => idx.users.get(user)?.notices ?? [],
    // Asked at every proven login (its last-used day): no copy.
    device: (user, hash) => idx.users.get(user)?.devices.get(hash),
    change: (plan) => mutate(async () => plan()),
    entries: snapshotEntries,
    refresh: () =>
      serial(async () => {
        try {
          return await catchUp();
        } catch (err) {
          throw asRegistryError(err, store.location);
        }
      }),
    onChange(listener) {
      listeners.add(listener);
      return () => { listeners.delete(listener); };
    },
  };
}
