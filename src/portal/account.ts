import type { Mode } from '../core/rules/types.js';

/**
 * What the account page may see and do for one account. The daemon implements it on the engine's
 * registry (src/daemon/accounts.ts); the portal only routes, renders and checks links, sessions
 * and CSRF tokens. Every change goes to the audit log and webhook inside the implementation.
 */

/** A device that tried to sign in and was refused: waiting for the holder's answer, or answered "not me". */
export interface PendingView {
  /** The first 12 hex digits of the device hash (as `cidlock devices` shows). */
  id: string;
  /** The full hash: CID keyed hash or certificate fingerprint; what approval links are bound to. */
  hash: string;
  kind: 'cid' | 'cert';
  /** The CID type (TBIRD-UUID, UUID...) or "cert". */
  type: string;
  /** The client's name and version from its IMAP ID, "" when it sent none. Untrusted text: escape it. */
  client: string;
  protocol: string;
  remote: string | null;
  first: string; // ISO 8601
  last: string; // ISO 8601
  tries: number;
  state: 'pending' | 'rejected';
}

export interface DeviceView {
  id: string;
  kind: 'cid' | 'cert';
  type: string;
  label: string;
  added: string; // ISO 8601
  /** ISO 8601 date of the last login seen with it (to the day), null when not seen since it was added. */
  lastUsed: string | null;
  source: string;
}

export interface RefusalView {
  at: string; // ISO 8601
  protocol: string;
  remote: string | null;
  reason: string;
  client: string;
}

export interface LockView {
  /** The mode in force for the account, whoever set it. */
  mode: Mode;
  /** The modes the holder may choose (portal.user_modes); empty: the holder cannot change the lock. */
  choices: readonly Mode[];
  /** The holder's own choice, null when the operator's rules decide. */
  own: Mode | null;
}

/** Who did it, for the audit log: always the account holder through the portal, from this address. */
export interface Actor {
  remote: string | null;
}

export type ChangeResult = 'done' | 'gone';

export interface AccountService {
  /** The account a typed address stands for (trimmed, lowercased like logins), or null if it is not a login name. */
  account(typed: string): string | null;
  /** Whether cidlock knows this account (it has devices, a lock or a pending device): only those get sign-in links. */
  known(user: string): boolean;
  pending(user: string): PendingView[];
  /** The pending device with this full hash, or undefined. */
  findPending(user: string, hash: string): PendingView | undefined;
  devices(user: string): DeviceView[];
  refusals(user: string): RefusalView[];
  lock(user: string): LockView;
  /** Registers the pending device (source "approved"); "gone" when it is no longer pending. */
  approve(user: string, hash: string, actor: Actor): Promise<ChangeResult>;
  /** Marks it "not me": it stays locked out and brings no further notice. */
  reject(user: string, hash: string, actor: Actor): Promise<ChangeResult>;
  /** `id`: a device id (12 hex) as DeviceView.id. */
  rename(user: string, id: string, label: string, actor: Actor): Promise<ChangeResult>;
  remove(user: string, id: string, actor: Actor): Promise<ChangeResult>;
  /** Throws PortalRefusal when `mode` is not one of lock(user).choices. */
  setLock(user: string, mode: Mode, actor: Actor): Promise<void>;
  /**
   * Records a sign-in link as issued (single use, shared by every host) and returns its id; the
   * portal signs the id into the link.
   */
  issueSignIn(user: string, expiresAt: number): Promise<string>;
  /** Uses up a sign-in link: true the first time for a live link, false after (or when unknown). */
  consumeSignIn(user: string, id: string): Promise<boolean>;
  /**
   * Records a signed-in session (shared by every host, like links), so that signing out ends it
   * everywhere; `sid` is the random id the session cookie is signed over.
   */
  startSession(user: string, sid: string, expiresAt: number): Promise<void>;
  /** Whether the session is still on record (not signed out, not expired); asked at every request, from memory. */
  sessionAlive(user: string, sid: string): boolean;
  endSession(user: string, sid: string): Promise<void>;
  /** Mails a sign-in link to the account's own mailbox. */
  mailSignIn(user: string, link: string): Promise<void>;
  /** The key links, sessions and CSRF tokens are signed with (derived from the registry's secret). */
  key(): Promise<Buffer>;
}

/** A request the holder may not make (a mode the operator does not offer); shown as a plain refusal. */
export class PortalRefusal extends Error {
  override readonly name = 'PortalRefusal';
}
