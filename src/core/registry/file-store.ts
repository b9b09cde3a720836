import { randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { link, mkdir, open, readdir, readFile, stat, unlink, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { createFileExclusiveAsync, replaceFileAsync, syncDirAsync, writeAll } from '../atomic-file.js';
import { checkSnapshotHeader, decodeOp, encodeOp, encodeSnapshotLine, snapshotLineOps, SNAPSHOT_HEADER } from './codec.js';
import { slicer, type Slicer } from './slice.js';
import { RegistryError, type RegistryOp, type RegistryStore, type StoreCursor } from './types.js';

export const REGISTRY_FILE = 'registry.json';
export const JOURNAL_FILE = 'registry.journal';
export const SECRET_FILE = 'secret';
const LOCK_FILE = 'registry.lock';
/** How long a writer waits for another process's lock before it fails with code "locked". */
const LOCK_WAIT_MS = 10_000;
/** Polling a held lock starts fast (an edit takes milliseconds) and backs off (an import takes seconds). */
const LOCK_POLL_MIN_MS = 5;
const LOCK_POLL_MAX_MS = 100;
/** No holder leaves its lock untouched this long; an older lock is a leftover (e.g. of a reused pid). */
const LOCK_STALE_MS = 60_000;
/** A holder touches its lock this often, so a long compaction is never taken for a leftover. */
const LOCK_TOUCH_MS = 10_000;

const CHUNK = 1 << 20;
/** A line longer than this is damage, not data: reading stops instead of buffering without end. */
const MAX_LINE_BYTES = 64 * 1024 * 1024;
/** A journal this much larger than the snapshot (or 16 MB) is folded into a new snapshot. */
const COMPACT_MIN_BYTES = 16 * 1024 * 1024;

const errno = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? (err as Error).message;

/** An unreadable or unwritable state file is an operator's problem to fix: name the file and the errno. */
const cannotRead = (path: string, err: unknown): RegistryError => new RegistryError('io', `${path}: cannot read (${errno(err)})`);
const cannotWrite = (path: string, err: unknown): RegistryError =>
  err instanceof RegistryError ? err : new RegistryError('io', `${path}: cannot write (${errno(err)})`);

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Creates the lock file if there is none; its inode when it did, else null. */
async function tryCreateLock(path: string): Promise<number | null> {
  // Written aside, then linked into place: the lock file is never seen empty, even after kill -9.
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`;
  try {
    await writeFile(tmp, String(process.pid), { mode: 0o600 });
    await link(tmp, path);
    return (await stat(tmp)).ino;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return null;
    throw cannotWrite(path, err);
  } finally {
    await unlink(tmp).catch(() => {});
  }
}

/** The owner and identity of a lock file as read; null when it is gone. */
async function readLock(path: string): Promise<{ owner: number; ino: number; age: number } | null> {
  try {
    const owner = Number(await readFile(path, 'utf8'));
    const st = await stat(path);
    return { owner, ino: st.ino, age: Date.now() - st.mtimeMs };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw cannotRead(path, err);
  }
}

const isLeftover = (l: { owner: number; age: number }): boolean =>
  !Number.isInteger(l.owner) || l.owner <= 0 || !processAlive(l.owner) || l.age > LOCK_STALE_MS;

/**
 * Removes a leftover lock, but only the one that was examined. Two waiters that both find the
 * same leftover must not both remove "the lock": the second would remove the lock the first has
 * just taken, and both would write at once (a journal truncated under an acknowledged entry).
 * So removal needs a second lock named after the leftover's inode; whoever holds it checks that
 * the lock is still that inode, with that owner, before removing it. Nobody else removes that
 * inode meanwhile: its owner is gone and every other remover checks for its own inode.
 */
async function removeLeftover(path: string, seen: { owner: number; ino: number }): Promise<void> {
  const breaker = `${path}.break.${seen.ino}`;
  if ((await tryCreateLock(breaker)) === null) {
    // Another waiter is removing it, or died doing so (its pid names it): then clear the way.
    const other = await readLock(breaker);
    if (other !== null && isLeftover(other)) await unlink(breaker).catch(() => {});
    return;
  }
  try {
    const now = await readLock(path);
    if (now !== null && now.ino === seen.ino && now.owner === seen.owner && isLeftover(now)) await unlink(path).catch(() => {});
  } finally {
    await unlink(breaker).catch(() => {});
  }
}

/**
 * Takes the exclusive lock between cidlock processes (the daemon learning devices, the CLI editing
 * them). The lock file names its owner's pid, so a lock left behind by `kill -9` is recognised and
 * taken over. Waiting polls on timers: the daemon serves requests meanwhile. Returns the lock
 * file's inode, so that release removes this lock and no other.
 */
async function acquire(path: string, waitMs: number): Promise<number> {
  const deadline = Date.now() + waitMs;
  let wait = LOCK_POLL_MIN_MS;
  for (;;) {
    const ino = await tryCreateLock(path);
    if (ino !== null) return ino;
    const held = await readLock(path);
    if (held === null) continue; // released meanwhile
    if (isLeftover(held)) {
      await removeLeftover(path, held);
      await sleep(LOCK_POLL_MIN_MS); // another waiter may be the one removing it
      continue;
    }
    if (Date.now() > deadline) throw new RegistryError('locked', `${path}: the registry is locked by process ${held.owner} (waited ${waitMs / 1000} s)`);
    await sleep(wait);
    wait = Math.min(LOCK_POLL_MAX_MS, wait * 2);
  }
}

/** Removes the lock only if it is still the one taken: its inode names it, no need to read it. */
async function release(path: string, ino: number): Promise<void> {
  const st = await stat(path).catch(() => null);
  if (st !== null && st.ino === ino) await unlink(path).catch(() => {});
}

/** Temp files of writers killed mid-write (kill -9) are garbage once their process is gone. */
async function removeLeftovers(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const m = /^\.registry\.(?:json|journal)\.(\d+)\.[0-9a-f]+\.tmp$/.exec(name) ?? /^registry\.lock(?:\.break\.\d+)?\.(\d+)\.[0-9a-f]+$/.exec(name);
    if (m !== null && Number(m[1]) !== process.pid && !processAlive(Number(m[1]))) await unlink(join(dir, name)).catch(() => {});
  }
}

/** Identity and size of a state file; a missing one is "absent", never an error. */
async function statId(path: string, id: (st: Stats) => string): Promise<{ id: string; size: number }> {
  try {
    const st = await stat(path);
    return { id: id(st), size: st.size };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { id: 'absent', size: 0 };
    throw cannotRead(path, err);
  }
}

// The snapshot by inode and mtime; the journal by inode alone, since its appends show in its size.
const snapshotKey = (st: Stats) => `${st.ino}:${st.mtimeMs}`;
const journalKey = (st: Stats) => String(st.ino);

async function openForRead(path: string): Promise<FileHandle | null> {
  try {
    return await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw cannotRead(path, err);
  }
}

/**
 * Calls `onLine` for every complete line from `from`, reading 1 MB at a time, so a registry of
 * millions of devices never sits in memory as one string, and pausing whenever the slice is used
 * up. Returns the offset after the last complete line: a line still being written (or torn by a
 * crash) is left for later.
 */
async function readLines(fh: FileHandle, path: string, from: number, onLine: (line: string, lineNo: number) => void, slice: Slicer): Promise<number> {
  const buf = Buffer.allocUnsafe(CHUNK);
  let carry = Buffer.alloc(0);
  let pos = from;
  let done = from;
  let lineNo = 0;
  for (;;) {
    let n: number;
    try {
      n = (await fh.read(buf, 0, CHUNK, pos)).bytesRead;
    } catch (err) {
      throw cannotRead(path, err);
    }
    if (n === 0) break;
    pos += n;
    const data = carry.length === 0 ? buf.subarray(0, n) : Buffer.concat([carry, buf.subarray(0, n)]);
    let start = 0;
    for (let nl = data.indexOf(10, start); nl >= 0; nl = data.indexOf(10, start)) {
      lineNo++;
      if (nl > start) onLine(data.toString('utf8', start, nl), lineNo);
      done += nl + 1 - start;
      start = nl + 1;
      if (slice.due()) await slice.pause();
    }
    // Copied: the next read reuses `buf`.
    carry = Buffer.from(data.subarray(start));
    if (carry.length > MAX_LINE_BYTES) throw new RegistryError('corrupt', `${path}: a line longer than ${MAX_LINE_BYTES} bytes at offset ${done}; refusing to use it`);
  }
  return done;
}

/** The registry as a snapshot (registry.json) and an append-only journal (registry.journal) in state_dir. */
export function fileStore(stateDir: string, opts: { compactBytes?: number; lockWaitMs?: number } = {}): RegistryStore {
  const snapshotPath = join(stateDir, REGISTRY_FILE);
  const journalPath = join(stateDir, JOURNAL_FILE);
  const secretFile = join(stateDir, SECRET_FILE);
  const lockPath = join(stateDir, LOCK_FILE);

  const readJournal = (fh: FileHandle, from: number, apply: (op: RegistryOp) => void, slice: Slicer): Promise<number> =>
    readLines(fh, journalPath, from, (line, n) => apply(decodeOp(line, `${journalPath}: entry ${n} after offset ${from}`)), slice);

  const readSecret = async (): Promise<Buffer | null> => {
    let text: string;
    try {
      text = await readFile(secretFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw cannotRead(secretFile, err);
    }
    const hex = text.trim();
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new RegistryError('corrupt', `${secretFile}: expected 64 hex digits; refusing to replace it, since every stored CID depends on it`);
    return Buffer.from(hex, 'hex');
  };

  return {
    location: snapshotPath,
    async readAll(apply) {
      // Both files are opened first and identified by their handles: a compaction racing this read
      // shows as a changed id at the next check, which then reads everything again.
      const slice = slicer();
      const snap = await openForRead(snapshotPath);
      let journal: FileHandle | null = null;
      try {
        journal = await openForRead(journalPath);
        const snapStat = snap === null ? null : await snap.stat();
        const journalStat = journal === null ? null : await journal.stat();
        let first = true;
        const read = snap === null ? 0 : await readLines(snap, snapshotPath, 0, (line, n) => {
          const where = `${snapshotPath}: line ${n}`;
          if (first) {
            checkSnapshotHeader(line, where);
            first = false;
          } else {
            snapshotLineOps(line, where, apply);
          }
        }, slice);
        // Snapshots are written whole and renamed into place: anything unterminated is damage.
        const size = snapStat?.size ?? 0;
        if (read < size || (first && size > 0)) throw new RegistryError('corrupt', `${snapshotPath}: damaged (ends inside a line); refusing to use or overwrite it`);
        const offset = journal === null ? 0 : await readJournal(journal, 0, apply, slice);
        return { snapshot: snapStat === null ? 'absent' : snapshotKey(snapStat), journal: journalStat === null ? 'absent' : journalKey(journalStat), offset };
      } finally {
        await snap?.close();
        await journal?.close();
      }
    },
    async readSince(cursor, apply) {
      const snap = await statId(snapshotPath, snapshotKey);
      const jid = await statId(journalPath, journalKey);
      // A journal that appeared since (the first write after a compaction or ever) is read from its
      // start; a replaced one means a compaction: read everything again.
      const sameJournal = jid.id === cursor.journal || (cursor.journal === 'absent' && cursor.offset === 0);
      if (snap.id !== cursor.snapshot || !sameJournal || jid.size < cursor.offset) return null;
      if (jid.size === cursor.offset) return cursor;
      const fh = await openForRead(journalPath);
      if (fh === null) return null;
      try {
        // Replaced between the stat and the open: read everything again.
        if (journalKey(await fh.stat()) !== jid.id) return null;
        return { ...cursor, journal: jid.id, offset: await readJournal(fh, cursor.offset, apply, slicer()) };
      } finally {
        await fh.close();
      }
    },
    async changedSince(cursor) {
      const jid = await statId(journalPath, journalKey);
      return jid.id !== cursor.journal || jid.size !== cursor.offset || (await statId(snapshotPath, snapshotKey)).id !== cursor.snapshot;
    },
    async withLock(fn) {
      try {
        await mkdir(stateDir, { recursive: true, mode: 0o700 });
      } catch (err) {
        throw cannotWrite(stateDir, err);
      }
      const ino = await acquire(lockPath, opts.lockWaitMs ?? LOCK_WAIT_MS);
      const touch = setInterval(() => {
        const now = new Date();
        utimes(lockPath, now, now).catch(() => {});
      }, LOCK_TOUCH_MS);
      touch.unref();
      try {
        await removeLeftovers(stateDir);
        return await fn();
      } finally {
        clearInterval(touch);
        await release(lockPath, ino);
      }
    },
    async append(cursor, ops) {
      let fh: FileHandle;
      try {
        fh = await open(journalPath, 'a', 0o600);
      } catch (err) {
        throw cannotWrite(journalPath, err);
      }
      try {
        const st = await fh.stat();
        // Bytes past the last complete line are a write torn by a crash: never acknowledged, so dropped.
        if (st.size > cursor.offset) await fh.truncate(cursor.offset);
        const slice = slicer();
        let written = 0;
        let batch = '';
        const flush = async () => {
          const bytes = Buffer.from(batch, 'utf8');
          batch = '';
          await writeAll(fh, bytes);
          written += bytes.length;
        };
        for (const op of ops) {
          batch += encodeOp(op);
          if (batch.length >= CHUNK) await flush();
          if (slice.due()) await slice.pause();
        }
        await flush();
        await fh.sync();
        if (cursor.journal === 'absent') await syncDirAsync(stateDir);
        return { ...cursor, journal: journalKey(st), offset: cursor.offset + written };
      } catch (err) {
        // Nothing was acknowledged: cut off what this call wrote, so no reader applies half of it.
        await fh.truncate(cursor.offset).catch(() => {});
        throw cannotWrite(journalPath, err);
      } finally {
        await fh.close();
      }
    },
    async shouldCompact(cursor) {
      // An explicit threshold (tests, tools) is used as is; by default replaying the journal never
      // costs more than loading the snapshot.
      return cursor.offset > (opts.compactBytes ?? Math.max(COMPACT_MIN_BYTES, (await statId(snapshotPath, snapshotKey)).size));
    },
    async compact(users) {
      const slice = slicer();
      try {
        await replaceFileAsync(snapshotPath, async (fh) => {
          let batch = SNAPSHOT_HEADER;
          for (const [user, rec] of users) {
            batch += encodeSnapshotLine(user, rec);
            if (batch.length > CHUNK) {
              await writeAll(fh, batch);
              batch = '';
            }
            if (slice.due()) await slice.pause();
          }
          await writeAll(fh, batch);
        });
      } catch (err) {
        throw cannotWrite(snapshotPath, err);
      }
      // The snapshot holds everything now; a crash before this line replays the old journal on
      // top of it, which changes nothing: every operation is idempotent.
      try {
        await replaceFileAsync(journalPath, async () => {});
      } catch (err) {
        throw cannotWrite(journalPath, err);
      }
      return { snapshot: (await statId(snapshotPath, snapshotKey)).id, journal: (await statId(journalPath, journalKey)).id, offset: 0 };
    },
    async secret(create) {
      const existing = await readSecret();
      if (existing !== null || !create) return existing;
      try {
        await mkdir(stateDir, { recursive: true, mode: 0o700 });
        // Exclusive create: if two processes race, both end up using the one that landed first.
        await createFileExclusiveAsync(secretFile, `${randomBytes(32).toString('hex')}\n`, 0o600);
      } catch (err) {
        throw cannotWrite(secretFile, err);
      }
      return readSecret();
    },
    async writeSecret(key, replace) {
      const existing = await readSecret().catch((err: unknown) => {
        if (replace && err instanceof RegistryError && err.code === 'corrupt') return null;
        throw err;
      });
      if (existing !== null && existing.equals(key)) return;
      if (existing !== null && !replace) throw new RegistryError('io', `${secretFile}: a different CID key exists already; refusing to replace it`);
      try {
        await mkdir(stateDir, { recursive: true, mode: 0o700 });
        await replaceFileAsync(secretFile, (fh) => writeAll(fh, `${key.toString('hex')}\n`));
      } catch (err) {
        throw cannotWrite(secretFile, err);
      }
    },
    async isEmpty() {
      for (const f of [snapshotPath, journalPath, secretFile]) {
        if ((await statId(f, journalKey)).id !== 'absent') return false;
      }
      return true;
    },
  };
}
