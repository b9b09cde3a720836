import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createFileExclusive, writeFileAtomic } from '../atomic-file.js';
import { decodeRegistry, encodeRegistry } from './codec.js';
import { RegistryError, type RegistryData, type RegistryStore } from './types.js';

export const REGISTRY_FILE = 'registry.json';
export const SECRET_FILE = 'secret';
const LOCK_FILE = 'registry.lock';
const LOCK_WAIT_MS = 10_000;

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
    const m = /^\.registry\.json\.(\d+)\.[0-9a-f]+\.tmp$/.exec(name) ?? /^registry\.lock\.(\d+)\.[0-9a-f]+$/.exec(name);
    if (m !== null && Number(m[1]) !== process.pid && !processAlive(Number(m[1]))) {
      try { unlinkSync(join(dir, name)); } catch { /* raced with another cleaner */ }
    }
  }
}

function ensureDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/** The registry as one JSON file in `state_dir`, replaced atomically on every change. */
export function fileStore(stateDir: string): RegistryStore {
  const file = join(stateDir, REGISTRY_FILE);
  const secretFile = join(stateDir, SECRET_FILE);

  const load = (): RegistryData => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { users: new Map() };
      throw new RegistryError(`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    return decodeRegistry(text, file);
  };

  const readSecret = (): Buffer | null => {
    let text: string;
    try {
      text = readFileSync(secretFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new RegistryError(`${secretFile}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    const hex = text.trim();
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new RegistryError(`${secretFile}: expected 64 hex digits; refusing to replace it, since every stored CID depends on it`);
    return Buffer.from(hex, 'hex');
  };

  return {
    location: file,
    load,
    update(change) {
      ensureDir(stateDir);
      return withLock(stateDir, () => {
        removeLeftovers(stateDir);
        const data = load();
        const { result, write } = change(data);
        if (write) writeFileAtomic(file, encodeRegistry(data), 0o600);
        return { result, data };
      });
    },
    secret(create) {
      const existing = readSecret();
      if (existing !== null || !create) return existing;
      ensureDir(stateDir);
      // Exclusive create: if two processes race, both end up using the one that landed first.
      createFileExclusive(secretFile, `${randomBytes(32).toString('hex')}\n`, 0o600);
      return readSecret();
    },
    version() {
      try {
        const st = statSync(file);
        return `${st.ino}:${st.size}:${st.mtimeMs}`;
      } catch {
        return 'absent';
      }
    },
  };
}
