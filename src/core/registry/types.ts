import type { Mode } from '../rules/types.js';

export type DeviceKind = 'cid' | 'cert';
export type DeviceSource = 'admin' | 'learn';

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

export interface UserRecord {
  mode?: Mode;
  devices: Device[];
}

/** The whole registry as stored: plain data, no indexes. */
export interface RegistryData {
  users: Map<string, UserRecord>;
}

/**
 * Where the registry lives. The file store is the only one today; a shared store for several
 * cidlock hosts implements the same three calls.
 */
export interface RegistryStore {
  readonly location: string;
  /** The current state; an absent registry is empty. Throws RegistryError on a damaged one. */
  load(): RegistryData;
  /**
   * Runs `change` on the freshest state while holding an exclusive lock, then persists the new
   * state atomically. Nothing is written when `change` throws or returns `{ write: false }`.
   */
  update<T>(change: (data: RegistryData) => { result: T; write: boolean }): { result: T; data: RegistryData };
  /** The HMAC key for CIDs; created on first use when `create`, else null if there is none yet. */
  secret(create: boolean): Buffer | null;
  /** A token that changes whenever the stored registry changes (to reload cheaply). */
  version(): string;
}

export class RegistryError extends Error {
  override readonly name = 'RegistryError';
}
