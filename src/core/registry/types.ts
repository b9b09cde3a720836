import type { Mode } from '../rules/types.js';

export type DeviceKind = 'cid' | 'cert';
/** admin: the operator (CLI, API); learn: learn mode; approved: the account holder, from the account page. */
export type DeviceSource = 'admin' | 'learn' | 'approved';

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
  /** The day of the last login seen with it (ISO 8601, midnight UTC), absent when none was seen since it was added. */
  used?: string;
}

/** What a login lookup returns: everything but the date, which only listings show. */
export type DeviceMatch = Omit<Device, 'added' | 'used'>;

/** A device as kept in memory and on disk: compact, since a registry can hold millions. */
export interface StoredDevice {
  hash: string;
  kind: DeviceKind;
  type: string;
  label: string;
  added: number; // epoch ms
  source: DeviceSource;
  /** Epoch ms of the day (midnight UTC) of the last login seen with it; written at most once a day. */
  used?: number;
}

/**
 * A device a locked account refused: remembered until its holder approves it, says "not me", or it
 * expires. Never a raw CID: the same keyed hash a registration would store.
 */
export interface PendingDevice {
  hash: string;
  kind: DeviceKind;
  type: string;
  /** The client's name (and version) from its IMAP ID; "" when it sent none. */
  client: string;
  protocol: string;
  remote: string | null;
  first: number; // epoch ms
  last: number; // epoch ms
  tries: number;
  /** pending: waiting for the holder; rejected: "not me", kept out and no more notices. */
  state: 'pending' | 'rejected';
  /** When the holder was last sent a notice about it (epoch ms), 0 for never. */
  noticed: number;
}

/** One user's line of a snapshot: what compaction writes and reading replays. */
export interface UserSnapshot {
  mode?: Mode;
  devices: Iterable<StoredDevice>;
  pending?: Iterable<PendingDevice>;
  /** Sign-in links issued and not used yet: [id, expiry in epoch ms]. */
  links?: Iterable<readonly [string, number]>;
  /** When notices were mailed to the account within the last day (epoch ms). */
  notices?: Iterable<number>;
}

/** Every change to the registry is one of these, appended to the journal. Replaying is idempotent. */
export type RegistryOp =
  | { op: 'add'; user: string; device: StoredDevice }
  | { op: 'remove'; user: string; hashes: string[] }
  | { op: 'mode'; user: string; mode: Mode | null }
  | { op: 'label'; user: string; hash: string; label: string }
  | { op: 'used'; user: string; hashes: string[]; at: number }
  /** Adds or replaces the pending device with this hash. */
  | { op: 'pend'; user: string; pending: PendingDevice }
  | { op: 'unpend'; user: string; hashes: string[] }
  /** A notice mailed to the account (epoch ms): counted for notice.per_account_per_day on every host. */
  | { op: 'notice'; user: string; at: number }
  | { op: 'unnotice'; user: string; at: number }
  | { op: 'link'; user: string; id: string; exp: number }
  | { op: 'unlink'; user: string; id: string };

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
  compact(users: Iterable<[string, UserSnapshot]>): Promise<StoreCursor>;
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
