import type { Action } from './decide.js';
import type { Refusal } from './defences/defences.js';
import type { Vouch } from './vouches.js';

/**
 * What one cidlock host tells the others, so that several hosts behind a balancer act as one:
 * a device proven here vouches for its address everywhere, and failures and refusals count
 * towards the same limits and alerts whichever host saw them. Never a raw CID or password hash.
 */
export type SharedEvent =
  | { kind: 'vouch'; user: string; remote: string; vouch: Vouch; ttlMs: number }
  | { kind: 'failure'; user: string; remote: string | null; guess?: string; at: number }
  | { kind: 'refusal'; user: string; refusal: Refusal; unknown: boolean; at: number }
  /**
   * A login decided before auth (Dovecot's first call): another host that gets its after-auth
   * call answers alike and counts nothing. `key` is a hash of the fields that pair the calls.
   */
  | { kind: 'login'; key: string; account: string; action: Action; seconds?: number; message: string };

/** A learn slot claimed for all hosts, or refused because `others` slots (and the registered devices) fill max_devices. */
export type SlotClaim = { reserved: true } | { reserved: false; others: number };

/**
 * The state every host shares, kept by a store several hosts reach (Redis). The engine keeps its
 * own copy of everything in memory and decides from it; this only carries changes between hosts
 * and settles the races a copy cannot (two hosts admitting the last learn slot at once). Every
 * call is bounded in time; a call that cannot reach the store resolves to null (publish: does
 * nothing), and the engine goes on with what this host knows: `up` says which it is.
 */
export interface SharedState {
  readonly up: boolean;
  /** Tells the other hosts; never waits, never throws. */
  publish(e: SharedEvent): void;
  /** Other hosts' events, as they arrive (never this host's own). */
  onEvent(handler: (e: SharedEvent) => void): void;
  /** A vouch another host gave for this user and address, when this host has none (an event not yet arrived). */
  fetchVouch(user: string, remote: string): Promise<{ vouch: Vouch; untilMs: number } | null>;
  /**
   * Claims a learn slot for all hosts: granted when the user's registered devices (`registered`,
   * their registry hashes, as this host knows them) plus the other live slots stay below `max`.
   */
  claimSlot(user: string, slot: string, max: number, registered: readonly string[], ttlMs: number): Promise<SlotClaim | null>;
  /** Lets go of a slot, after `keepMs` (a registration other hosts have yet to read still counts meanwhile). */
  releaseSlot(user: string, slot: string, keepMs: number): void;
  /**
   * Whether this host is the one to announce `what` (an unknown-device alert for a user, a limit
   * for an address) in the next `ttlMs`: every host may see the count cross, one says so.
   */
  claimAnnouncement(what: string, ttlMs: number): Promise<boolean | null>;
}
