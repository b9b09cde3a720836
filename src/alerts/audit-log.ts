import { closeSync, fsync as fsyncAsync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { FsyncPolicy } from '../core/rules/types.js';

export interface AuditLog {
  /** Appends one JSON line. Never throws: a full or read-only disk is counted and reported. */
  write(event: Record<string, unknown>): void;
  readonly errors: number;
  close(): void;
}

/**
 * The security audit trail: append-only JSON lines. fsync policy:
 *  - always:   fsync after every event (nothing acknowledged is lost; costs a disk flush each)
 *  - interval: fsync at most once a second while events arrive (up to 1 s lost on power loss)
 *  - never:    leave flushing to the kernel
 * Each event is one write() on an O_APPEND descriptor, so lines from the daemon and the CLI
 * never interleave.
 */
export function openAuditLog(file: string, fsync: FsyncPolicy, onError: (error: string) => void = () => {}): AuditLog {
  let fd: number | null = null;
  let errors = 0;
  let dirty = false;
  let lastError = '';
  const fail = (err: unknown) => {
    errors++;
    const msg = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    // Report each distinct problem once, not once per event during an attack.
    if (msg !== lastError) onError(`${file}: ${msg}`);
    lastError = msg;
  };
  // The once-a-second flush runs in libuv's thread pool: a slow disk must not stall decisions.
  let syncing = false;
  let closeAfterSync: number | null = null;
  const timer = fsync === 'interval'
    ? setInterval(() => {
      if (!dirty || fd === null || syncing) return;
      dirty = false;
      syncing = true;
      fsyncAsync(fd, (err) => {
        syncing = false;
        if (err) fail(err);
        if (closeAfterSync !== null) {
          try { closeSync(closeAfterSync); } catch (e) { fail(e); }
          closeAfterSync = null;
        }
      });
    }, 1000)
    : undefined;
  timer?.unref();
  return {
    write(event) {
      try {
        if (fd === null) {
          mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
          fd = openSync(file, 'a', 0o600);
        }
        writeSync(fd, `${JSON.stringify({ ts: new Date().toISOString(), ...event })}\n`);
        if (fsync === 'always') fsyncSync(fd);
        else dirty = true;
        lastError = '';
      } catch (err) {
        fail(err);
      }
    },
    get errors() {
      return errors;
    },
    close() {
      if (timer !== undefined) clearInterval(timer);
      if (fd === null) return;
      try {
        if (fsync !== 'never') fsyncSync(fd);
        // A flush still running in the pool closes the descriptor when it is done.
        if (syncing) closeAfterSync = fd;
        else closeSync(fd);
      } catch (err) {
        fail(err);
      }
      fd = null;
    },
  };
}
