import { randomBytes } from 'node:crypto';
import { type Stats, closeSync, fstatSync, fsyncSync, ftruncateSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createFileExclusive, syncDir, writeFully } from '../atomic-file.js';
import { checkSnapshotHeader, decodeOp, encodeOp, encodeSnapshotLine, snapshotLineOps, SNAPSHOT_HEADER } from './codec.js';
import { RegistryError, type RegistryOp, type RegistryStore, type StoreCursor } from './types.js';

export const REGISTRY_FILE = 'registry.json';
export const JOURNAL_FILE = 'registry.journal';
export const SECRET_FILE = 'secret';
const LOCK_FILE = 'registry.lock';
const LOCK_WAIT_MS = 10_000;

/** An unreadable state file is an operator's problem to fix: name the file and the errno. */
const cannotRead = (path: string, err: unknown): RegistryError =>
  new RegistryError(`${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** No registry operation holds the lock this long; an older lock is left over (e.g. a reused pid). */
const LOCK_STALE_MS = 60_000;

function tryCreateLock(path: string): boolean {
  // Written aside, then linked into place: the lock file is never seen empty, even after kill -9.
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(tmp, String(process.pid), { mode: 0o600 });
  try {
    linkSync(tmp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    try { unlinkSync(tmp); } catch { /* already gone */ }
  }
}

/**
 * An exclusive lock between cidlock processes (the daemon learning devices, the CLI editing them).
 * The lock file names its owner's pid, so a lock left behind by `kill -9` is recognised and taken over.
 */
function withLock<T>(dir: string, fn: () => T): T {
  const path = join(dir, LOCK_FILE);
  const deadline = Date.now() + LOCK_WAIT_MS;
  while (!tryCreateLock(path)) {
    let owner = NaN;
    let age = 0;
    try {
      owner = Number(readFileSync(path, 'utf8'));
      age = Date.now() - statSync(path).mtimeMs;
    } catch {
      continue; // released meanwhile
    }
    if (!Number.isInteger(owner) || owner <= 0 || !processAlive(owner) || age > LOCK_STALE_MS) {
      try { unlinkSync(path); } catch { /* someone else took it over */ }
      continue;
    }
    if (Date.now() > deadline) throw new RegistryError(`${path}: registry is locked by process ${owner}`);
    sleepSync(5);
  }
  try {
    return fn();
  } finally {
    try { unlinkSync(path); } catch { /* already gone */ }
  }
}

/** Temp files of writers killed mid-write (kill -9) are garbage once their process is gone. */
function removeLeftovers(dir: string): void {
  for (const name of readdirSync(dir)) {
    const m = /^\.registry\.(?:json|journal)\.(\d+)\.[0-9a-f]+\.tmp$/.exec(name) ?? /^registry\.lock\.(\d+)\.[0-9a-f]+$/.exec(name);
    if (m !== null && Number(m[1]) !== process.pid && !processAlive(Number(m[1]))) {
      try { unlinkSync(join(dir, name)); } catch { /* raced with another cleaner */ }
    }
  }
}


const CHUNK = 1 << 20;
/** A journal this much larger than the snapshot (or 16 MB) is folded into a new snapshot. */
const COMPACT_MIN_BYTES = 16 * 1024 * 1024;

/** Identity and size of a state file; a missing one is "absent", never an error. */
function statId(path: string, id: (st: Stats) => string): { id: string; size: number } {
  try {
    const st = statSync(path);
    return { id: id(st), size: st.size };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { id: 'absent', size: 0 };
    throw cannotRead(path, err);
  }
}

// The snapshot by inode and mtime; the journal by inode alone, since its appends show in its size.
const fileId = (path: string) => statId(path, (st) => `${st.ino}:${st.mtimeMs}`);
const journalId = (path: string) => statId(path, (st) => String(st.ino));

/**
 * Calls `onLine` for every complete line from `from`, reading in chunks so a registry of millions
 * of devices never sits in memory as one string. Returns the offset after the last complete line:
 * a line still being written (or torn by a crash) is left for later.
 */
function readLines(path: string, from: number, onLine: (line: string, lineNo: number) => void): number {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return from;
    throw cannotRead(path, err);
  }
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    let carry = Buffer.alloc(0);
    let pos = from;
    let done = from;
    let lineNo = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, CHUNK, pos);
      if (n === 0) break;
      pos += n;
      let data = carry.length === 0 ? buf.subarray(0, n) : Buffer.concat([carry, buf.subarray(0, n)]);
      let start = 0;
      for (let nl = data.indexOf(10, start); nl >= 0; nl = data.indexOf(10, start)) {
        lineNo++;
        if (nl > start) onLine(data.toString('utf8', start, nl), lineNo);
        done += nl + 1 - start;
        start = nl + 1;
      }
      carry = Buffer.from(data.subarray(start));
      data = carry;
    }
    return done;
  } finally {
    closeSync(fd);
  }
}

/** The registry as a snapshot (registry.json) and an append-only journal (registry.journal) in state_dir. */
export function fileStore(stateDir: string, opts: { compactBytes?: number } = {}): RegistryStore {
  const compactMin = opts.compactBytes ?? COMPACT_MIN_BYTES;
  const snapshotPath = join(stateDir, REGISTRY_FILE);
  const journalPath = join(stateDir, JOURNAL_FILE);
  const secretFile = join(stateDir, SECRET_FILE);

  const readJournal = (from: number, apply: (op: RegistryOp) => void): number =>
    readLines(journalPath, from, (line, n) => apply(decodeOp(line, `${journalPath}: entry ${n} after offset ${from}`)));

  const readSecret = (): Buffer | null => {
    let text: string;
    try {
      text = readFileSync(secretFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw cannotRead(secretFile, err);
    }
    const hex = text.trim();
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new RegistryError(`${secretFile}: expected 64 hex digits; refusing to replace it, since every stored CID depends on it`);
    return Buffer.from(hex, 'hex');
  };

  const replaceAtomically = (path: string, write: (fd: number) => void): void => {
    const tmp = join(stateDir, `.${path.slice(stateDir.length + 1)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    const fd = openSync(tmp, 'wx', 0o600);
    try {
      write(fd);
      fsyncSync(fd);
    } catch (err) {
      closeSync(fd);
      try { unlinkSync(tmp); } catch { /* gone */ }
      throw err;
    }
    closeSync(fd);
    renameSync(tmp, path);
  };

  return {
    location: snapshotPath,
    readAll(apply) {
      // Stat first: a compaction racing this read shows as a changed id, and the next check re-reads.
      const snap = fileId(snapshotPath);
      const jid = journalId(journalPath);
      let first = true;
      const read = readLines(snapshotPath, 0, (line, n) => {
        const where = `${snapshotPath}: line ${n}`;
        if (first) {
          checkSnapshotHeader(line, where);
          first = false;
        } else {
          snapshotLineOps(line, where, apply);
        }
      });
      // Snapshots are written whole and renamed into place: anything unterminated is damage.
      if (read < snap.size || (first && snap.size > 0)) throw new RegistryError(`${snapshotPath}: damaged (ends inside a line); refusing to use or overwrite it`);
      const offset = readJournal(0, apply);
      return { snapshot: snap.id, journal: jid.id, offset };
    },
    readSince(cursor, apply) {
      const snap = fileId(snapshotPath);
      const jid = journalId(journalPath);
      if (snap.id !== cursor.snapshot || jid.id !== cursor.journal || jid.size < cursor.offset) return null;
      if (jid.size === cursor.offset) return cursor;
      return { ...cursor, offset: readJournal(cursor.offset, apply) };
    },
    changedSince(cursor) {
      const jid = journalId(journalPath);
      return jid.id !== cursor.journal || jid.size !== cursor.offset || fileId(snapshotPath).id !== cursor.snapshot;
    },
    withLock(fn) {
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      return withLock(stateDir, () => {
        removeLeftovers(stateDir);
        return fn();
      });
    },
    append(cursor, ops) {
      const fd = openSync(journalPath, 'a', 0o600);
      let created = false;
      try {
        const st = fstatSync(fd);
        created = cursor.journal === 'absent';
        // Bytes past the last complete line are a write torn by a crash: never acknowledged, so dropped.
        if (st.size > cursor.offset) ftruncateSync(fd, cursor.offset);
        const text = ops.map(encodeOp).join('');
        writeFully(fd, text);
        fsyncSync(fd);
        if (created) syncDir(stateDir);
        return { ...cursor, journal: String(st.ino), offset: cursor.offset + Buffer.byteLength(text) };
      } finally {
        closeSync(fd);
      }
    },
    shouldCompact(cursor) {
      return cursor.offset > Math.max(compactMin, fileId(snapshotPath).size);
    },
    compact(users) {
      replaceAtomically(snapshotPath, (fd) => {
        writeFully(fd, SNAPSHOT_HEADER);
        let batch = '';
        for (const [user, rec] of users) {
          batch += encodeSnapshotLine(user, rec.mode, rec.devices);
          if (batch.length > CHUNK) {
            writeFully(fd, batch);
            batch = '';
          }
        }
        writeFully(fd, batch);
      });
      // The snapshot holds everything now; a crash before this line replays the old journal on
      // top of it, which changes nothing: every operation is idempotent.
      replaceAtomically(journalPath, () => {});
      syncDir(stateDir);
      return { snapshot: fileId(snapshotPath).id, journal: journalId(journalPath).id, offset: 0 };
    },
    secret(create) {
      const existing = readSecret();
      if (existing !== null || !create) return existing;
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      // Exclusive create: if two processes race, both end up using the one that landed first.
      createFileExclusive(secretFile, `${randomBytes(32).toString('hex')}\n`, 0o600);
      return readSecret();
    },
  };
}
