import { createHmac } from 'node:crypto';
import { cidText, type Cid } from '../cid.js';
import type { Mode } from '../rules/types.js';
import type { RegistryUserSettings } from '../rules/resolve.js';
import { RegistryError, type Device, type DeviceMatch, type DeviceSource, type RegistryOp, type RegistryStore, type StoreCursor, type StoredDevice } from './types.js';

export type DeviceInput =
  | { kind: 'cid'; cid: Cid; label?: string }
  | { kind: 'cert'; fingerprint: string; label?: string }; // normalised 64-hex public-key fingerprint

export type AddResult =
  | { status: 'added'; device: Device }
  | { status: 'exists'; device: Device }
  | { status: 'full'; count: number };

export type DeviceSelector = { id: string } | { label: string };

/** A removal applied in memory (this process's or another's), or the whole index re-read from disk. */
export type RegistryChange = { kind: 'removed'; user: string; hashes: readonly string[] } | { kind: 'reset' };

export interface Registry {
  readonly location: string;
  settings(user: string): RegistryUserSettings;
  devices(user: string): readonly Device[];
  /** The keyed hash a CID is stored under, or null while no secret exists (then nothing can match). */
  cidHash(cid: Cid): string | null;
  findCid(user: string, cid: Cid): DeviceMatch | undefined;
  /** First registered device among the given normalised fingerprints (public key first, then certificate). */
  findCert(user: string, fingerprints: readonly string[]): DeviceMatch | undefined;
  deviceCount(user: string): number;
  /** Whether this full device hash is still registered for the user. */
  hasDevice(user: string, hash: string): boolean;
  /** Whether any user registered this certificate (public-key) fingerprint. */
  certRegistered(fingerprint: string): boolean;
  users(): IterableIterator<string>;
  size(): { users: number; devices: number };
  add(user: string, input: DeviceInput, source: DeviceSource, opts?: { maxDevices?: number; now?: Date }): AddResult;
  addMany(items: ReadonlyArray<{ user: string; input: DeviceInput }>, now?: Date): { added: number; existing: number };
  remove(user: string, selector: DeviceSelector): Device[];
  setMode(user: string, mode: Mode | null): void;
  /** Catches up with changes other processes made; true when something changed. */
  refresh(): boolean;
  /** Told of every removal and re-read, so vouches of removed devices can be dropped. Returns an unsubscribe. */
  onChange(listener: (change: RegistryChange) => void): () => void;
}

const LABEL_MAX = 100;

export function cleanLabel(label: string | undefined): string {
  // Labels end up in terminals and logs: keep them printable and short.
  return (label ?? '').replace(/[\x00-\x1f\x7f]/g, ' ').trim().slice(0, LABEL_MAX);
}

interface UserEntry {
  mode?: Mode;
  devices: Map<string, StoredDevice>; // by hash: O(1) lookups
}

// Lookups run on every login and never show the date, so they skip formatting it. A lazy getter
// would be cheaper still to write, but every object literal with an accessor outlives V8's young
// generation: at 60,000 logins a second that promoted ~50 MB of garbage per 400,000 decisions.
const match = (d: StoredDevice): DeviceMatch => ({ id: d.hash.slice(0, 12), kind: d.kind, type: d.type, hash: d.hash, label: d.label, source: d.source });
const view = (d: StoredDevice): Device => ({ ...match(d), added: new Date(d.added).toISOString() });

/** Recently hashed CIDs: a device logs in again and again, and HMAC is the costliest step of a lookup. */
const CID_HASH_CACHE = 50_000;

/** The whole registry in memory, built and kept current by replaying operations. */
function createIndex() {
  const users = new Map<string, UserEntry>();
  // Certificates registered by anyone, counted so removing one user's copy keeps the others'.
  const certs = new Map<string, number>();
  let devices = 0;
  const apply = (op: RegistryOp): void => {
    let u = users.get(op.user);
    if (op.op === 'mode') {
      if (op.mode === null) {
        if (u !== undefined) delete u.mode;
      } else {
        if (u === undefined) users.set(op.user, (u = { devices: new Map() }));
        u.mode = op.mode;
      }
    } else if (op.op === 'add') {
      if (u === undefined) users.set(op.user, (u = { devices: new Map() }));
      if (u.devices.has(op.device.hash)) return; // idempotent: a replayed add changes nothing
      u.devices.set(op.device.hash, op.device);
      devices++;
      if (op.device.kind === 'cert') certs.set(op.device.hash, (certs.get(op.device.hash) ?? 0) + 1);
    } else if (u !== undefined) {
      for (const h of op.hashes) {
        const d = u.devices.get(h);
        if (d === undefined) continue;
        u.devices.delete(h);
        devices--;
        if (d.kind === 'cert') {
          const n = (certs.get(h) ?? 1) - 1;
          if (n <= 0) certs.delete(h);
          else certs.set(h, n);
        }
      }
    }
    if (u !== undefined && u.mode === undefined && u.devices.size === 0) users.delete(op.user);
  };
  return { users, certs, apply, count: () => devices };
}

/** Opens the registry; `create` allows making the CID secret (commands that only read pass false). */
export function openRegistry(store: RegistryStore, opts: { create: boolean }): Registry {
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
  let cursor: StoreCursor = store.readAll(idx.apply);
  const listeners = new Set<(c: RegistryChange) => void>();
  const emit = (c: RegistryChange) => { for (const l of listeners) l(c); };
  const applyLive = (op: RegistryOp): void => {
    idx.apply(op);
    if (op.op === 'remove') emit({ kind: 'removed', user: op.user, hashes: op.hashes });
  };
  let secret = store.secret(false);

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
  const hashOf = (input: DeviceInput): string => {
    if (input.kind === 'cert') return input.fingerprint;
    if (secret === null) {
      if (!opts.create) throw new RegistryError('the registry is open read-only and has no secret yet');
      secret = store.secret(true);
      hashCache = new Map();
      lastCid = undefined;
    }
    // Registrations bypass the lookup cache: a bulk import would only churn it.
    return hmac(input.cid, secret!);
  };
  const forget = () => { lastName = undefined; lastEntry = undefined; };
  const reloadAll = (): void => {
    forget();
    const fresh = createIndex();
    cursor = store.readAll(fresh.apply);
    idx = fresh;
    const next = store.secret(false);
    if (next === null || secret === null || !next.equals(secret)) {
      hashCache = new Map();
      lastCid = undefined;
    }
    secret = next;
    emit({ kind: 'reset' });
  };
  const catchUp = (): boolean => {
    if (!store.changedSince(cursor)) return false;
    forget();
    const next = store.readSince(cursor, applyLive);
    if (next === null) reloadAll();
    else cursor = next;
    return true;
  };
  /** Plans operations on the freshest state under the lock, then makes them durable before applying. */
  const mutate = <T>(plan: () => { ops: RegistryOp[]; result: T }): T => {
    try {
      return locked(plan);
    } catch (err) {
      if (err instanceof RegistryError) throw err;
      // A full or read-only disk: say so plainly; nothing in memory changed, nothing stored was touched.
      const e = err as NodeJS.ErrnoException;
      throw new RegistryError(`${store.location}: cannot write the registry (${e.code ?? e.message})`);
    }
  };
  const locked = <T>(plan: () => { ops: RegistryOp[]; result: T }): T =>
    store.withLock(() => {
      catchUp();
      const { ops, result } = plan();
      if (ops.length > 0) {
        forget();
        cursor = store.append(cursor, ops);
        for (const op of ops) applyLive(op);
        if (store.shouldCompact(cursor)) cursor = store.compact([...idx.users].map(([u, e]) => [u, { ...(e.mode ? { mode: e.mode } : {}), devices: e.devices.values() }] as const));
      }
      return result;
    });
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
    hasDevice: (user, hash) => entry(user)?.devices.has(hash) ?? false,
    certRegistered: (fp) => idx.certs.has(fp),
    users: () => idx.users.keys(),
    size: () => ({ users: idx.users.size, devices: idx.count() }),
    add(user, input, source, o = {}) {
      const hash = hashOf(input);
      return mutate<AddResult>(() => {
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
    addMany(items, now = new Date()) {
      const hashed = items.map((it) => ({ user: it.user, input: it.input, hash: hashOf(it.input) }));
      return mutate(() => {
        const ops: RegistryOp[] = [];
        const seen = new Set<string>();
        let existing = 0;
        for (const it of hashed) {
          const key = `${it.user}\0${it.hash}`;
          if (seen.has(key) || idx.users.get(it.user)?.devices.has(it.hash)) existing++;
          else {
            seen.add(key);
            ops.push({ op: 'add', user: it.user, device: stored(it.input, it.hash, 'admin', now) });
          }
        }
        return { ops, result: { added: ops.length, existing } };
      });
    },
    remove(user, selector) {
      return mutate(() => {
        const u = idx.users.get(user);
        if (u === undefined) return { ops: [], result: [] as Device[] };
        const hits = [...u.devices.values()].filter((d) => ('id' in selector ? d.hash.startsWith(selector.id.toLowerCase()) : d.label === selector.label));
        if ('id' in selector && hits.length > 1) throw new RegistryError(`device ID ${selector.id} is ambiguous for ${user}: it matches ${hits.length} devices`);
        if (hits.length === 0) return { ops: [], result: [] as Device[] };
        return { ops: [{ op: 'remove', user, hashes: hits.map((d) => d.hash) }], result: hits.map(view) };
      });
    },
    setMode(user, mode) {
      mutate(() => ({ ops: [{ op: 'mode', user, mode }], result: undefined }));
    },
    refresh: catchUp,
    onChange(listener) {
      listeners.add(listener);
      return () => { listeners.delete(listener); };
    },
  };
}
