// The daemon's registry sync: a change it cannot read is never passed over quietly. Every failed
// attempt logs an error and counts, /readyz fails, retries back off, and all recovers once fixed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { jsonLogger, type LogLevel } from '../src/core/log.js';
import { createMetrics } from '../src/core/metrics.js';
import { fileStore } from '../src/core/registry/file-store.js';
import { openRegistry, type Registry } from '../src/core/registry/registry.js';
import { loadRulesFile } from '../src/core/rules/load.js';
import { startDaemon } from '../src/daemon/daemon.js';
import { startRegistrySync } from '../src/daemon/registry-sync.js';
import { httpGet } from './helpers/daemon.js';
import { TEST_DOVECOT_KEY } from './helpers/http.js';
import { tempDir } from './helpers/tmp.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const LAPTOP = { type: 'UUID', token: 'sync-laptop' };

async function until(pred: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !pred();) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

interface Line { level: LogLevel; event: string; at: number; [k: string]: unknown }

test('a journal entry the daemon cannot read: an error at every retry, backing off, counted, until it is fixed', async () => {
  const dir = tempDir();
  const writer = await openRegistry(fileStore(dir), { create: true });
  await writer.add('a@b.c', { kind: 'cid', cid: LAPTOP }, 'admin');
  const reader = await openRegistry(fileStore(dir), { create: false });
  const lines: Line[] = [];
  const metrics = createMetrics('cidlock_');
  const sync = startRegistrySync({ registry: reader, metrics, intervalMs: 20, logger: { log: (level, event, f) => lines.push({ level, event, at: Date.now(), ...f }) } });
  try {
    await writer.setMode('a@b.c', 'enforce');
    await until(() => lines.some((l) => l.event === 'registry_reloaded'), 'the change to arrive');
    assert.equal(reader.settings('a@b.c'), { mode: 'enforce' });
    assert.is(lines.find((l) => l.event === 'registry_reloaded')!.devices, 1);

    const journal = join(dir, 'registry.journal');
    const good = readFileSync(journal);
    appendFileSync(journal, '{"op":"rm","u":"a@b.c","h":["not a hash"]}\n');
    await until(() => lines.filter((l) => l.event === 'registry_reload_failed').length >= 4, 'four failed attempts');
    const failures = lines.filter((l) => l.event === 'registry_reload_failed');
    assert.ok(failures.every((l) => l.level === 'error'), 'every failed attempt is an error');
    assert.match(String(failures[0]!.error), /registry\.journal: entry 1 after offset \d+: "h" must be a list of hashes/);
    assert.is(sync.ok, false);
    assert.match(sync.lastError!, /registry\.journal/);
    assert.match(metrics.render(), new RegExp(`cidlock_registry_reload_errors_total ${failures.length}\\b`));
    // Retries back off, each wait twice the one before; timers never fire early.
    assert.equal(failures.slice(0, 4).map((l) => l.retry_in_ms), [20, 40, 80, 160]);
    for (let i = 1; i < 4; i++) assert.ok(failures[i]!.at - failures[i - 1]!.at >= Number(failures[i - 1]!.retry_in_ms) - 2, 'a retry came before its time');

    writeFileSync(journal, good);
    await until(() => sync.ok, 'the sync to recover', 20_000);
    assert.is(sync.lastError, null);
    assert.ok(lines.some((l) => l.event === 'registry_readable'));
    // Back to the short interval: the next change arrives within a few polls.
    const seen = lines.length;
    await writer.remove('a@b.c', { label: '' });
    await until(() => lines.slice(seen).some((l) => l.event === 'registry_reloaded'), 'the next change', 2000);
    assert.is(reader.deviceCount('a@b.c'), 0);
  } finally {
    sync.stop();
  }
});

test('polls never overlap, even when a refresh takes longer than the interval; stop() ends them', async () => {
  let running = 0;
  let most = 0;
  let calls = 0;
  const slow = {
    refresh: async () => {
      calls++;
      most = Math.max(most, ++running);
      await sleep(30);
      running--;
      return false;
    },
    size: () => ({ users: 0, devices: 0 }),
    onChange: () => () => {},
  } as unknown as Registry;
  const sync = startRegistrySync({ registry: slow, metrics: createMetrics('x_'), intervalMs: 1, logger: { log() {} } });
  await sleep(300);
  sync.stop();
  const after = calls;
  await sleep(100);
  assert.is(most, 1, 'two refreshes ran at once');
  assert.ok(after >= 3, `only ${after} polls`);
  assert.ok(calls <= after + 1, 'polling went on after stop()');
});

test('daemon: an unreadable registry change fails /readyz with 503 and the error, logs it at every retry, and recovers', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, `listen: { admin: 127.0.0.1:0, dovecot: off, postfix: off, socketmap: off }\ndovecot: { api_key: ${TEST_DOVECOT_KEY} }\n`);
  const r = loadRulesFile(cfg);
  if (!r.ok) throw new Error('rules');
  const logs: Array<Record<string, unknown>> = [];
  const d = await startDaemon({ rules: r.rules, logger: jsonLogger((l) => logs.push(JSON.parse(l))) });
  try {
    const admin = d.addresses.admin!;
    assert.is((await httpGet(admin, '/readyz')).status, 200);
    const writer = await openRegistry(fileStore(join(dir, 'state')), { create: true });
    await writer.add('a@b.c', { kind: 'cid', cid: LAPTOP }, 'admin');
    const journal = join(dir, 'state', 'registry.journal');
    const good = readFileSync(journal);
    appendFileSync(journal, 'this is not JSON\n');
    await until(() => logs.filter((l) => l.event === 'registry_reload_failed').length >= 2, 'two failed attempts', 10_000);
    const ready = await httpGet(admin, '/readyz');
    assert.is(ready.status, 503);
    const body = JSON.parse(ready.body);
    assert.is(body.registry, 'unreadable');
    assert.match(body.registry_error, /registry\.journal: entry \d+ after offset \d+: not valid JSON/);
    assert.ok(logs.filter((l) => l.event === 'registry_reload_failed').every((l) => l.level === 'error'));
    assert.match((await httpGet(admin, '/metrics')).body, /cidlock_registry_reload_errors_total [2-9]/);
    writeFileSync(journal, good);
    await until(() => logs.some((l) => l.event === 'registry_readable'), 'recovery', 10_000);
    const again = await httpGet(admin, '/readyz');
    assert.is(again.status, 200);
    assert.is(JSON.parse(again.body).devices, 1);
  } finally {
    await d.close();
  }
});

test.run();
