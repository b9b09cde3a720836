import type { Mode } from '../rules/types.js';

export type DeviceKind = 'cid' | 'cert';
export type DeviceSource = 'admin' | 'learn';

/** A registered device as commands and the API show it. */
export interface Device {
  /** Short handle for the CLI and logs: the first 12 hex digits of `hash`; never the raw CID. */
  id: string;
  kind: DeviceKind;
  /** The CID type (UUID, TBIRD-UUID, ...) or "cert". */
  type: string;
  /** cid: HMAC-SHA256(secret, "TYPE token") in hex; cert: SHA-256 public-key fingerprint in hex. */
  hash: string;
  label: string;
  added: string; // ISO 8601
  source: DeviceSource;
}

/** What a login lookup returns: everything but the date, which only listings show. */
export type DeviceMatch = Omit<Device, 'added'>;

/** A device as kept in memory and on disk: compact, since a registry can hold millions. */
export interface StoredDevice {
  hash: string;
  kind: DeviceKind;
  type: string;
  label: string;
  added: number; // epoch ms
  source: DeviceSource;
}

/** Every change to the registry is one of these, appended to the journal. Replaying is idempotent. */
export type RegistryOp =
  | { op: 'add'; user: string; device: StoredDevice }
  | { op: 'remove'; user: string; hashes: string[] }
  | { op: 'mode'; user: string; mode: Mode | null };

/** How far a reader has read: which snapshot and journal files, and the journal offset. */
export interface StoreCursor {
  snapshot: string;
  journal: string;
  offset: number;
}

/**
 * Where the registry lives: a snapshot plus an append-only journal of operations. The file store
 * is the only one today; a shared store for several cidlock hosts implements the same calls.
 * Every call is asynchronous and long ones yield to the event loop between slices of work: the
 * daemon serves logins meanwhile, and a stall is a bypass.
 */
export interface RegistryStore {
  readonly location: string;
  /** Replays the snapshot, then the journal. Throws RegistryError on damaged files. */
  readAll(apply: (op: RegistryOp) => void): Promise<StoreCursor>;
  /** Replays journal entries after `cursor`; null when the files were replaced (compacted): read all again. */
  readSince(cursor: StoreCursor, apply: (op: RegistryOp) => void): Promise<StoreCursor | null>;
  /** Cheap check (a stat per file) for changes by any process since `cursor`. */
  changedSince(cursor: StoreCursor): Promise<boolean>;
  /** Runs `fn` holding the registry's exclusive lock (shared by the daemon and the CLI). */
  withLock<T>(fn: () => Promise<T>): Promise<T>;
  /** With the lock held and the caller caught up to `cursor`: appends `ops` durably (fsync). */
  append(cursor: StoreCursor, ops: readonly RegistryOp[]): Promise<StoreCursor>;
  /** Whether the journal has grown enough that a new snapshot is worth writing. */
  shouldCompact(cursor: StoreCursor): Promise<boolean>;
  /** With the lock held: writes a new snapshot from `users` atomically and starts an empty journal. */
  compact(users: Iterable<[string, { mode?: Mode; devices: Iterable<StoredDevice> }]>): Promise<StoreCursor>;
  /** The HMAC key for CIDs; created on first use when `create`, else null if there is none yet. */
  secret(create: boolean): Promise<Buffer | null>;
  /**
   * With the lock held: makes `secret` this store's CID key (copying a registry, whose hashes were
   * made with it). Refuses to replace a different key unless `replace`: every stored CID depends on it.
   */
  writeSecret(secret: Buffer, replace: boolean): Promise<void>;
  /** Whether nothing at all is stored yet: no device, no setting, no key. */
  isEmpty(): Promise<boolean>;
}

/**
 * Why a registry call failed; each edge (CLI exit status, admin HTTP status) maps it once.
 * - ambiguous: a device ID prefix matches several devices (nothing was changed);
 * - locked: another process held the registry lock for longer than the wait allows;
 * - io: a state file cannot be read or written (EACCES, ENOSPC, EROFS...), or no secret exists yet
 *   in a registry opened read-only;
 * - corrupt: a damaged snapshot, journal entry or secret, refused rather than overwritten.
 */
export type RegistryErrorCode = 'ambiguous' | 'locked' | 'io' | 'corrupt';

export class RegistryError extends Error {
  override readonly name = 'RegistryError';
  constructor(readonly code: RegistryErrorCode, message: string) {
    super(message);
  }
}
