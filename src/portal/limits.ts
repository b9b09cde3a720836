import { LRUCache } from 'lru-cache';
import { addToWindow, newWindow, windowEstimate, type WindowCount } from '../core/defences/sliding-window.js';

/**
 * How many sign-in mails one typed address, one account and the whole portal may cause per hour:
 * the form is open to anyone, and each answer is a mail into someone's mailbox.
 */

export const SIGNIN_WINDOW_MS = 60 * 60 * 1000;
/** Counters kept per address and per account; the least recently used go first, so memory stays bounded under a flood. */
export const MAX_LIMIT_ENTRIES = 10_000;

export interface SignInLimits { address: number; account: number; total: number }
export type LimitVerdict = 'ok' | 'address' | 'account' | 'total';

export interface SignInLimiter {
  /** Counts one mail when every limit allows it, and says which limit refused it otherwise. */
  take(address: string, account: string, now: number): LimitVerdict;
}

export function createSignInLimiter(limits: SignInLimits): SignInLimiter {
  // A counter idle for two windows counts nothing, so it may go.
  const make = () => new LRUCache<string, WindowCount>({ max: MAX_LIMIT_ENTRIES, ttl: 2 * SIGNIN_WINDOW_MS, ttlAutopurge: false, updateAgeOnGet: false });
  const byAddress = make();
  const byAccount = make();
  let total: WindowCount | null = null;
  const count = (map: LRUCache<string, WindowCount>, key: string, now: number) => {
    const w = map.get(key);
    return w === undefined ? 0 : windowEstimate(w, now, SIGNIN_WINDOW_MS);
  };
  const add = (map: LRUCache<string, WindowCount>, key: string, now: number) => {
    let w = map.get(key);
    if (w === undefined) {
      w = newWindow(now);
      map.set(key, w);
    }
    addToWindow(w, now, SIGNIN_WINDOW_MS);
  };
  return {
    take(address, account, now) {
      if (total !== null && windowEstimate(total, now, SIGNIN_WINDOW_MS) >= limits.total) return 'total';
      if (count(byAccount, account, now) >= limits.account) return 'account';
      if (count(byAddress, address, now) >= limits.address) return 'address';
      total ??= newWindow(now);
      addToWindow(total, now, SIGNIN_WINDOW_MS);
      add(byAccount, account, now);
      add(byAddress, address, now);
      return 'ok';
    },
  };
}
