import { LRUCache } from 'lru-cache';

export interface Vouch {
  at: number; // epoch ms when a device was proven
  device: string; // short device id, for explanations
  hash: string; // the device's full registry hash: a vouch lasts only as long as the device
}

export interface VouchLookup {
  get(user: string, remote: string): Vouch | undefined;
}

export interface VouchStore extends VouchLookup {
  add(user: string, remote: string, vouch: Vouch, ttlMs: number): void;
  /** Drops every vouch these devices of the user gave: a removed device stops vouching at once. */
  dropDevices(user: string, hashes: readonly string[]): number;
  /** Keeps only the vouches whose device `exists` still: after the registry was re-read whole. */
  prune(exists: (user: string, hash: string) => boolean): number;
  readonly size: number;
}

/** Addresses remembered per user: a phone moving between networks, a laptop at home and at work. */
const MAX_ADDRESSES_PER_USER = 32;

type Entry = Vouch & { until: number };

/**
 * Recent proofs of a device, per user and client address. Bounded: at most `maxUsers` users (least
 * recently used go first) with at most 32 addresses each, so an attacker cycling through
 * addresses can only push out old vouches, never grow memory. Kept per user so that removing a
 * device finds its vouches without scanning everyone's.
 */
export function createVouchStore(maxUsers = 100_000): VouchStore {
  let size = 0;
  const users = new LRUCache<string, Map<string, Entry>>({ max: maxUsers, dispose: (m) => { size -= m.size; } });
  return {
    // Returned even when old: decide() judges the age against the vouch_ttl in force, and says "expired".
    get: (user, remote) => users.get(user)?.get(remote),
    add(user, remote, vouch, ttlMs) {
      if (ttlMs <= 0) return;
      let m = users.get(user);
      if (m === undefined) users.set(user, (m = new Map()));
      const seen = m.get(remote);
      if (seen !== undefined) {
        // The same device again from the same address (every RCPT of a session): renew in place.
        Object.assign(seen, vouch, { until: vouch.at + ttlMs });
        return;
      }
      size++;
      m.set(remote, { ...vouch, until: vouch.at + ttlMs });
      // Long-expired entries of this user go when it vouches again, the oldest beyond the cap too.
      for (const [r, v] of m) {
        if (m.size <= MAX_ADDRESSES_PER_USER && v.until + ttlMs > vouch.at) break;
        m.delete(r);
        size--;
      }
    },
    dropDevices(user, hashes) {
      const m = users.peek(user);
      if (m === undefined) return 0;
      let dropped = 0;
      for (const [remote, v] of m) {
        if (hashes.includes(v.hash)) {
          m.delete(remote);
          dropped++;
        }
      }
      size -= dropped;
      return dropped;
    },
    prune(exists) {
      let dropped = 0;
      for (const [user, m] of users.entries()) {
        for (const [remote, v] of m) {
          if (!exists(user, v.hash)) {
            m.delete(remote);
            dropped++;
          }
        }
      }
      size -= dropped;
      return dropped;
    },
    get size() {
      return size;
    },
  };
}
