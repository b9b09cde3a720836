// A full or read-only state_dir: decisions go on from memory, the error is logged and counted,
// and nothing already stored is damaged. The state_dir is a tiny tmpfs mounted for the test.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { jsonLogger } from '../../src/core/log.js';
import { fileStore } from '../../src/core/registry/file-store.js';
import { openRegistry } from '../../src/core/registry/registry.js';
import { loadRulesFile } from '../../src/core/rules/load.js';
import { startDaemon } from '../../src/daemon/daemon.js';
import { httpGet } from '../helpers/daemon.js';
import { post, TEST_DOVECOT_KEY } from '../helpers/http.js';
import { tempDir } from '../helpers/tmp.js';

// Mounting a tmpfs needs root, as CI runs; elsewhere the tests are registered as skipped.
const asRoot = process.getuid?.() === 0;
if (!asRoot) process.stderr.write('\n*** SKIPPED: state-dir faults mount a tmpfs and need root, as CI runs ***\n');
const check = asRoot ? test : test.skip;

function mountTmpfs(dir: string): void {
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', dir]);
  if (r.status !== 0) throw new Error(`cannot mount a tmpfs: ${r.stderr.toString().trim()}`);
}

const KNOWN = 'UUID state-dir-known-device';

for (const fault of ['full', 'read-only'] as const) {
  check(`state_dir ${fault}: decisions continue, the failure is logged and counted, stored devices survive`, async () => {
    const dir = tempDir();
    const state = join(dir, 'state');
    mkdirSync(state);
    mountTmpfs(state);
    try {
      await (await openRegistry(fileStore(state), { create: true })).add('alice@example.com', { kind: 'cid', cid: { type: 'UUID', token: 'state-dir-known-device' } }, 'admin');
      const cfg = join(dir, 'cidlock.yaml');
      writeFileSync(cfg, `listen: { admin: 127.0.0.1:0, dovecot: 127.0.0.1:0, postfix: off, socketmap: off }\ndovecot: { api_key: ${TEST_DOVECOT_KEY} }\npolicy: { mode: learn }\nlimits: []\nusers:\n  bob@example.com: { mode: enforce }\n`);
      const r = loadRulesFile(cfg);
      if (!r.ok) throw new Error('rules');
      const logs: Array<Record<string, unknown>> = [];
      const d = await startDaemon({ rules: r.rules, logger: jsonLogger((l) => logs.push(JSON.parse(l))) });
      try {
        if (fault === 'full') {
          const fd = openSync(join(state, 'filler'), 'w');
          try { for (;;) writeSync(fd, Buffer.alloc(4096)); } catch { /* ENOSPC: full */ } finally { closeSync(fd); }
        } else {
          assert.is(spawnSync('mount', ['-o', 'remount,ro', state]).status, 0);
        }
        const port = Number(d.addresses.dovecot!.split(':')[1]);
        const login = (cid: string, session: string) => ({ login: 'alice@example.com', protocol: 'imap', remote: '192.0.2.44', session_id: session, device_id: `"clientid" "${cid}"`, tls: true });
        // A new device in learn mode: allowed, but its registration cannot be written.
        const fresh = login('UUID brand-new-device', 's1');
        assert.is((await post(port, '/?command=allow', JSON.stringify(fresh))).body, '{"status":0}');
        assert.is((await post(port, '/?command=report', JSON.stringify({ ...fresh, success: true }))).status, 200);
        // The registration runs after the reply, in the background: wait for its failure.
        for (let i = 0; i < 200 && !logs.some((l) => l.event === 'registry_write_failed'); i++) await new Promise((r) => setTimeout(r, 10));
        assert.ok(logs.some((l) => l.event === 'registry_write_failed'), 'the failed write was not logged');
        // Decisions go on from memory: the known device passes, the daemon answers.
        assert.is((await post(port, '/?command=allow', JSON.stringify(login(KNOWN, 's2')))).body, '{"status":0}');
        // A refusal is a security event: its audit line cannot be written either.
        assert.is((await post(port, '/?command=allow', JSON.stringify({ ...login('UUID thief', 's3'), login: 'bob@example.com' }))).body, '{"status":-1,"msg":""}');
        assert.ok(logs.some((l) => l.event === 'audit_write_failed'), 'the failed audit write was not logged');
        const metrics = (await httpGet(d.addresses.admin!, '/metrics')).body;
        assert.match(metrics, /cidlock_registry_write_errors_total 1/);
        assert.match(metrics, /cidlock_audit_write_errors_total [1-9]/);
        assert.is((await httpGet(d.addresses.admin!, '/healthz')).status, 200);
      } finally {
        await d.close();
      }
      // Nothing stored was damaged: the registry loads, with its device, and without the failed one.
      const after = await openRegistry(fileStore(state), { create: false });
      assert.ok(after.findCid('alice@example.com', { type: 'UUID', token: 'state-dir-known-device' }));
      assert.not.ok(after.findCid('alice@example.com', { type: 'UUID', token: 'brand-new-device' }));
    } finally {
      spawnSync('umount', [state]);
    }
  });
}

test.run();
