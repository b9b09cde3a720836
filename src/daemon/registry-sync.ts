import type { Logger } from '../core/log.js';
import type { Metrics } from '../core/metrics.js';
import type { Registry } from '../core/registry/registry.js';

export interface RegistrySync {
  /** False while the last attempt to read the registry's changes failed: /readyz reports it. */
  readonly ok: boolean;
  readonly lastError: string | null;
  /** Reads the registry's changes now, whatever the backoff: the store has just come back. */
  now(): void;
  stop(): void;
}

/** CLI edits reach the running daemon within this long: one stat() per file and tick. */
const POLL_MS = 1000;
/** Retries of a failing read back off to this, so a broken state_dir is not hammered. */
const MAX_RETRY_MS = 30_000;

/**
 * Keeps the daemon's registry current with changes other processes (the CLI) make. A change it
 * cannot read is a device removal it may be missing, with a stolen device still accepted: so it
 * never carries on quietly. Every failed attempt logs an error and counts, and `ok` turns false
 * until a read succeeds again.
 */
export function startRegistrySync(o: {
  registry: Registry;
  logger: Logger;
  metrics: Metrics;
  intervalMs?: number;
  /** A shared store's announcements of other hosts' changes: each one starts a catch-up at once. */
  watch?: (onChange: () => void) => Promise<() => Promise<void>>;
}): RegistrySync {
  const interval = o.intervalMs ?? POLL_MS;
  const errors = o.metrics.counter('registry_reload_errors_total', 'Registry re-reads that failed (the registry in memory stays in force)');
  let ok = true;
  let lastError: string | null = null;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let rebuilt = false;
  const unsubscribe = o.registry.onChange((c) => {
    if (c.kind === 'reset') rebuilt = true;
  });

  let retryMs = interval;
  let polling = false;
  let again = false;
  const schedule = (ms: number) => {
    if (stopped) return;
    clearTimeout(timer);
    // An announced change waiting behind this poll is read as soon as it ends.
    if (again) {
      again = false;
      ms = 0;
    }
    timer = setTimeout(() => void poll(), ms);
    timer.unref();
  };
  // The next poll is scheduled only once this one settled: two refreshes never run at once.
  const poll = async (): Promise<void> => {
    polling = true;
    rebuilt = false;
    try {
      if (await o.registry.refresh()) {
        const size = o.registry.size();
        o.logger.log('info', 'registry_reloaded', { devices: size.devices, users: size.users, ...(rebuilt ? { rebuilt: true } : {}) });
      }
      if (!ok) o.logger.log('info', 'registry_readable', { note: 'registry changes are read again' });
      ok = true;
      lastError = null;
      retryMs = interval;
      polling = false;
      schedule(interval);
    } catch (err) {
      ok = false;
      lastError = (err as Error).message;
      errors.inc();
      o.logger.log('error', 'registry_reload_failed', { error: lastError, retry_in_ms: retryMs, note: 'changes made since the last successful read are not in force; /readyz fails until it succeeds' });
      polling = false;
      schedule(retryMs);
      retryMs = Math.min(MAX_RETRY_MS, retryMs * 2);
    }
  };
  schedule(interval);
  // While a read fails, announcements wait for the backoff: they would only hammer a broken store.
  const announced = () => {
    if (stopped) return;
    if (polling) again = true;
    else if (ok) schedule(0);
  };
  let unwatch: (() => Promise<void>) | undefined;
  o.watch?.(announced).then((off) => {
    if (stopped) void off();
    else unwatch = off;
  }, (err: unknown) => {
    o.logger.log('warn', 'registry_watch_failed', { error: (err as Error).message, note: 'other hosts\' changes are read by polling, within a second' });
  });

  return {
    get ok() { return ok; },
    get lastError() { return lastError; },
    now() {
      retryMs = interval;
      if (polling) again = true;
      else schedule(0);
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
      unsubscribe();
      void unwatch?.();
    },
  };
}
