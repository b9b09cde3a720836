import { LRUCache } from 'lru-cache';

export interface Vouch {
  at: number; // epoch ms when a device was proven
  device: string; // device id that vouches
}

export interface VouchLookup {
  get(user: string, remote: string): Vouch | undefined;
}

export interface VouchStore extends VouchLookup {
  add(user: string, remote: string, vouch: Vouch, ttlMs: number): void;
  readonly size: number;
}

/**
 * Recent proofs of a device, per (user, client address). Bounded: an attacker cycling through
 * addresses can only push out old vouches, never grow memory.
 */
export function createVouchStore(maxEntries = 200_000): VouchStore {
  const cache = new LRUCache<string, Vouch>({ max: maxEntries });
  const key = (user: string, remote: string) => `${user}\0${remote}`;
  return {
    get: (user, remote) => cache.get(key(user, remote)),
    add(user, remote, vouch, ttlMs) {
      if (ttlMs > 0) cache.set(key(user, remote), vouch, { ttl: ttlMs });
    },
    get size() {
      return cache.size;
    },
  };
}
