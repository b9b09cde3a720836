import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileStore } from '../src/core/registry/file-store.js';
import { tempDir } from './helpers/tmp.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A pid that certainly belonged to a process and is gone now: a lock left by kill -9. */
const deadPid = (): number => spawnSync('true').pid!;

test('waiters that all find the same leftover lock take it over one at a time, never two at once', async () => {
  for (let round = 0; round < 50; round++) {
    const dir = tempDir();
    writeFileSync(join(dir, 'registry.lock'), String(deadPid()));
    const stores = Array.from({ length: 8 }, () => fileStore(dir, { lockWaitMs: 20_000 }));
    let inside = 0;
    let most = 0;
    let entered = 0;
    // Staggered by fractions of a millisecond, as waiters polling on their own timers are.
    await Promise.all(stores.map(async (s, i) => {
      for (let k = 0; k < i % 4; k++) await new Promise((r) => setImmediate(r));
      return s.withLock(async () => {
        inside++;
        entered++;
        most = Math.max(most, inside);
        await sleep(2);
        inside--;
      });
    }));
    assert.is(entered, 8);
    assert.is(most, 1, `round ${round}: ${most} holders at once`);
    assert.equal(readdirSync(dir).filter((n) => n.startsWith('registry.lock')), [], 'no lock or breaker file left');
  }
});

test('a breaker file left by a waiter killed while removing a leftover does not block the registry', async () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'registry.lock'), String(deadPid()));
  const { statSync } = await import('node:fs');
  const ino = statSync(join(dir, 'registry.lock')).ino;
  writeFileSync(join(dir, `registry.lock.break.${ino}`), String(deadPid()));
  let ran = false;
  await fileStore(dir, { lockWaitMs: 5_000 }).withLock(async () => { ran = true; });
  assert.ok(ran);
});

test.run();
