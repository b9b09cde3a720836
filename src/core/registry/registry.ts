import { createHmac } from 'node:crypto';
import { cidText, type Cid } from '../cid.js';
import type { Mode } from '../rules/types.js';
import type { RegistryUserSettings } from '../rules/resolve.js';
import { RegistryError, type Device, type DeviceSource, type RegistryData, type RegistryStore, type UserRecord } from './types.js';

export type DeviceInput =
  | { kind: 'cid'; cid: Cid; label?: string }
  | { kind: 'cert'; fingerprint: string; label?: string }; // normalised 64-hex public-key fingerprint

export type AddResult =
  | { status: 'added'; device: Device }
  | { status: 'exists'; device: Device }
  | { status: 'full'; count: number };

export type DeviceSelector = { id: string } | { label: string };

interface IndexedUser {
  record: UserRecord;
  byHash: Map<string, Device>;
}

export interface Registry {
  readonly location: string;
  settings(user: string): RegistryUserSettings;
  devices(user: string): readonly Device[];
  /** The keyed hash a CID is stored under, or null while no secret exists (then nothing can match). */
  cidHash(cid: Cid): string | null;
  findCid(user: string, cid: Cid): Device | undefined;
  /** First registered device among the given normalised fingerprints (public key first, then certificate). */
  findCert(user: string, fingerprints: readonly string[]): Device | undefined;
  /** Whether any user registered this certificate (public-key) fingerprint. */
  certRegistered(fingerprint: string): boolean;
  users(): IterableIterator<string>;
  size(): { users: number; devices: number };
  add(user: string, input: DeviceInput, source: DeviceSource, opts?: { maxDevices?: number; now?: Date }): AddResult;
  addMany(items: ReadonlyArray<{ user: string; input: DeviceInput }>, now?: Date): { added: number; existing: number };
  remove(user: string, selector: DeviceSelector): Device[];
  setMode(user: string, mode: Mode | null): void;
  /** Re-reads the store if another process changed it; true when something was reloaded. */
  refresh(): boolean;
}

const LABEL_MAX = 100;

export function cleanLabel(label: string | undefined): string {
  // Labels end up in terminals and logs: keep them printable and short.
  return (label ?? '').replace(/[\x00-\x1f\x7f]/g, ' ').trim().slice(0, LABEL_MAX);
}

interface Index {
  users: Map<string, IndexedUser>;
  certs: Set<string>;
}

function index(data: RegistryData): Index {
  const users = new Map<string, IndexedUser>();
  const certs = new Set<string>();
  for (const [name, record] of data.users) {
    const byHash = new Map<string, Device>();
    for (const d of record.devices) {
      byHash.set(d.hash, d);
      if (d.kind === 'cert') certs.add(d.hash);
    }
    users.set(name, { record, byHash });
  }
  return { users, certs };
}

/** Opens the registry; `create` allows making the CID secret (commands that only read pass false). */
export function openRegistry(store: RegistryStore, opts: { create: boolean }): Registry {
  let idx = index(store.load());
  let version = store.version();
  let secret = store.secret(false);

  const hashCid = (cid: Cid, key: Buffer) => createHmac('sha256', key).update(cidText(cid)).digest('hex');
  const hashOf = (input: DeviceInput): string => {
    if (input.kind === 'cert') return input.fingerprint;
    if (secret === null) {
      if (!opts.create) throw new RegistryError('the registry is open read-only and has no secret yet');
      secret = store.secret(true);
    }
    return hashCid(input.cid, secret!);
  };
  const mutate = <T>(change: (data: RegistryData) => { result: T; write: boolean }): T => {
    const { result, data } = store.update(change);
    idx = index(data);
    version = store.version();
    return result;
  };
  const makeDevice = (input: DeviceInput, hash: string, source: DeviceSource, now: Date): Device => ({
    id: hash.slice(0, 12),
    kind: input.kind,
    type: input.kind === 'cid' ? input.cid.type : 'cert',
    hash,
    label: cleanLabel(input.label),
    added: now.toISOString(),
    source,
  });
  const recordOf = (data: RegistryData, user: string): UserRecord => {
    let rec = data.users.get(user);
    if (rec === undefined) {
      rec = { devices: [] };
      data.users.set(user, rec);
    }
    return rec;
  };

  return {
    location: store.location,
    settings: (user) => {
      const mode = idx.users.get(user)?.record.mode;
      return mode === undefined ? {} : { mode };
    },
    devices: (user) => idx.users.get(user)?.record.devices ?? [],
    cidHash: (cid) => (secret === null ? null : hashCid(cid, secret)),
    findCid(user, cid) {
      const u = idx.users.get(user);
      if (u === undefined || secret === null) return undefined;
      return u.byHash.get(hashCid(cid, secret));
    },
    findCert(user, fingerprints) {
      const u = idx.users.get(user);
      if (u === undefined) return undefined;
      for (const fp of fingerprints) {
        const d = u.byHash.get(fp);
        if (d !== undefined && d.kind === 'cert') return d;
      }
      return undefined;
    },
    users: () => idx.users.keys(),
    certRegistered: (fp) => idx.certs.has(fp),
    size() {
      let devices = 0;
      for (const u of idx.users.values()) devices += u.record.devices.length;
      return { users: idx.users.size, devices };
    },
    add(user, input, source, o = {}) {
      const hash = hashOf(input);
      return mutate<AddResult>((data) => {
        const rec = recordOf(data, user);
        const existing = rec.devices.find((d) => d.hash === hash);
        if (existing !== undefined) return { result: { status: 'exists', device: existing }, write: false };
        // Re-checked under the lock: another process may have registered a device meanwhile.
        if (o.maxDevices !== undefined && rec.devices.length >= o.maxDevices) {
          return { result: { status: 'full', count: rec.devices.length }, write: false };
        }
        const device = makeDevice(input, hash, source, o.now ?? new Date());
        rec.devices.push(device);
        return { result: { status: 'added', device }, write: true };
      });
    },
    addMany(items, now = new Date()) {
      const hashed = items.map((it) => ({ user: it.user, input: it.input, hash: hashOf(it.input) }));
      return mutate((data) => {
        let added = 0;
        let existing = 0;
        for (const it of hashed) {
          const rec = recordOf(data, it.user);
          if (rec.devices.some((d) => d.hash === it.hash)) existing++;
          else {
            rec.devices.push(makeDevice(it.input, it.hash, 'admin', now));
            added++;
          }
        }
        return { result: { added, existing }, write: added > 0 };
      });
    },
    remove(user, selector) {
      return mutate((data) => {
        const rec = data.users.get(user);
        if (rec === undefined) return { result: [] as Device[], write: false };
        const hit = (d: Device) => ('id' in selector ? d.hash.startsWith(selector.id.toLowerCase()) : d.label === selector.label);
        const removed = rec.devices.filter(hit);
        if ('id' in selector && removed.length > 1) throw new RegistryError(`device ID ${selector.id} is ambiguous for ${user}: it matches ${removed.length} devices`);
        rec.devices = rec.devices.filter((d) => !hit(d));
        return { result: removed, write: removed.length > 0 };
      });
    },
    setMode(user, mode) {
      mutate((data) => {
        const rec = recordOf(data, user);
        if (mode === null) delete rec.mode;
        else rec.mode = mode;
        return { result: undefined, write: true };
      });
    },
    refresh() {
      const v = store.version();
      if (v === version) return false;
      idx = index(store.load());
      version = v;
      secret = store.secret(false);
      return true;
    },
  };
}
