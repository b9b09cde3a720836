// A registry of a million devices for the stall tests, generated once and cached outside the
// checkout: building it through the registry API takes minutes, writing the snapshot directly
// takes seconds, and a cached copy takes a file copy.
import { createHmac, randomBytes } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeSnapshotLine, REGISTRY_VERSION, SNAPSHOT_HEADER } from '../../src/core/registry/codec.js';
import type { StoredDevice } from '../../src/core/registry/types.js';

export const BIG_USERS = 200_000;
export const BIG_DEVICES_PER_USER = 5;
/** Bump when the generated content changes: the cache is keyed by it. */
const GENERATION = 1;

export const bigUser = (u: number) => `u${u}@big.example`;
export const bigCid = (u: number, d: number) => ({ type: 'UUID', token: `big-${u}-${d}` });

function cacheRoot(): string {
  if (process.env.CIDLOCK_TEST_CACHE) return process.env.CIDLOCK_TEST_CACHE;
  return process.getuid?.() === 0 ? '/var/cache/cidlock-test' : join(tmpdir(), 'cidlock-test-cache');
}

function generate(dir: string): void {
  const secret = randomBytes(32);
  writeFileSync(join(dir, 'secret'), `${secret.toString('hex')}\n`, { mode: 0o600 });
  const fd = openSync(join(dir, 'registry.json'), 'w', 0o600);
  try {
    writeSync(fd, SNAPSHOT_HEADER);
    const added = Date.parse('2026-01-01T00:00:00Z');
    let batch = '';
    for (let u = 0; u < BIG_USERS; u++) {
      const devices: StoredDevice[] = [];
      for (let d = 0; d < BIG_DEVICES_PER_USER; d++) {
        const c = bigCid(u, d);
        const hash = createHmac('sha256', secret).update(`${c.type} ${c.token}`).digest('hex');
        devices.push({ hash, kind: 'cid', type: c.type, label: `device ${d}`, added, source: 'admin' });
      }
      batch += encodeSnapshotLine(bigUser(u), { devices });
      if (batch.length > 1 << 20) {
        writeSync(fd, batch);
        batch = '';
      }
    }
    writeSync(fd, batch);
  } finally {
    closeSync(fd);
  }
}

/**
 * Copies the cached 1M-device registry (200,000 users with 5 CIDs each, `bigCid(u, d)`) into
 * `stateDir`, generating the cache first if needed. Returns whether the cache was built now.
 */
export function bigRegistry(stateDir: string): { generated: boolean; ms: number } {
  const t = Date.now();
  const cache = join(cacheRoot(), `registry-v${REGISTRY_VERSION}-${BIG_USERS}x${BIG_DEVICES_PER_USER}-g${GENERATION}`);
  let generated = false;
  if (!existsSync(join(cache, 'registry.json'))) {
    mkdirSync(cacheRoot(), { recursive: true, mode: 0o700 });
    const tmp = `${cache}.${process.pid}.tmp`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { mode: 0o700 });
    generate(tmp);
    // Renamed into place whole, so a run killed mid-generation never leaves a half cache behind.
    try {
      renameSync(tmp, cache);
    } catch {
      rmSync(tmp, { recursive: true, force: true }); // another run got there first
    }
    generated = true;
  }
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  for (const f of ['secret', 'registry.json']) copyFileSync(join(cache, f), join(stateDir, f));
  return { generated, ms: Date.now() - t };
}
