// kill -9 at random moments while devices are being learned, edited with the CLI and compacted
// into new snapshots: after every kill the registry loads, and every registration that was
// acknowledged before the kill is there.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileStore } from '../../src/core/registry/file-store.js';
import { openRegistry } from '../../src/core/registry/registry.js';
import { CIDLOCK } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';

const LONG = process.env.FAULTS_LONG === '1';
const CYCLES = LONG ? 200 : 50;
const registryModule = fileURLToPath(new URL('../../src/core/registry/registry.js', import.meta.url));
const storeModule = fileURLToPath(new URL('../../src/core/registry/file-store.js', import.meta.url));

/** A learner: registers devices as learn mode does, printing each token once it is acknowledged. */
const learner = (dir: string, prefix: string) => `
  import { openRegistry } from ${JSON.stringify(registryModule)};
  import { fileStore } from ${JSON.stringify(storeModule)};
  // A tiny compaction threshold, so kills also land in the middle of writing new snapshots.
  const reg = await openRegistry(fileStore(${JSON.stringify(dir)}, { compactBytes: 2048 }), { create: true });
  for (let i = 0; ; i++) {
    const token = ${JSON.stringify(prefix)} + i;
    const r = await reg.add('u' + (i % 7) + '@example.com', { kind: 'cid', cid: { type: 'UUID', token } }, 'learn', { maxDevices: 100000 });
    if (r.status !== 'full') process.stdout.write(token + '\\n');
    if (i % 10 === 9) await reg.remove('u' + (i % 7) + '@example.com', { label: 'never-used' });
  }`;

/**
 * Runs a learner and kills it -9 at a random moment after its first acknowledgement, so every
 * cycle has something to lose. Resolves with how it ended.
 */
function killAfterFirstAck(args: string[], onLine: (line: string) => void, maxMs: number): Promise<{ signal: NodeJS.Signals | null; code: number | null; lines: number }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    let lines = 0;
    let armed = false;
    p.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const l of parts) {
        lines++;
        onLine(l);
      }
      if (lines > 0 && !armed) {
        armed = true;
        setTimeout(() => p.kill('SIGKILL'), Math.random() * maxMs);
      }
    });
    // A learner that never acknowledges anything is a failure, not a pass: give up after 20 s.
    const guard = setTimeout(() => p.kill('SIGKILL'), 20_000);
    p.on('exit', (code, signal) => {
      clearTimeout(guard);
      resolve({ signal, code, lines });
    });
  });
}

/** One CLI edit, killed -9 after `killMs` unless it finished first. */
function cliAdd(cfg: string, token: string, killMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const p = spawn(process.execPath, [CIDLOCK, 'devices', 'add', 'cli@example.com', `UUID ${token}`, '--config', cfg], { stdio: 'ignore' });
    const t = setTimeout(() => p.kill('SIGKILL'), killMs);
    p.on('exit', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, ms: Date.now() - started });
    });
  });
}

test(`${CYCLES} kill -9 cycles of learn registrations, CLI edits and compactions lose nothing acknowledged`, async () => {
  const dir = tempDir();
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, 'state_dir: ./state\n');
  const state = join(dir, 'state');
  const acked: Array<{ user: string; token: string }> = [];
  let cliAcked = 0;
  let cliKilled = 0;
  // How long one CLI edit takes on this machine now: the kills below land before and after that.
  const calibration = await cliAdd(cfg, 'calibration', 30_000);
  assert.is(calibration.code, 0, 'a CLI edit without a kill failed');
  acked.push({ user: 'cli@example.com', token: 'calibration' });
  for (let cycle = 0; cycle < CYCLES; cycle++) {
    if (cycle % 2 === 0) {
      const before = acked.length;
      const r = await killAfterFirstAck(['--input-type=module', '-e', learner(state, `c${cycle}-`)], (token) => acked.push({ user: `u${Number(token.split('-')[1]) % 7}@example.com`, token }), 300);
      assert.is(r.signal, 'SIGKILL', `cycle ${cycle}: the learner exited by itself (status ${r.code})`);
      assert.ok(acked.length > before, `cycle ${cycle}: the learner acknowledged nothing before it was killed`);
    } else {
      // Several CLI edits racing each other and the kill; an exit status of 0 is the acknowledgement.
      const runs = await Promise.all(Array.from({ length: 4 }, async (_, k) => {
        const token = `cli${cycle}-${k}`;
        const r = await cliAdd(cfg, token, calibration.ms * (0.3 + Math.random() * 3));
        if (r.code === 0) acked.push({ user: 'cli@example.com', token });
        return r;
      }));
      for (const r of runs) {
        assert.ok(r.code === 0 || r.signal === 'SIGKILL', `cycle ${cycle}: a CLI edit failed with status ${r.code}`);
        if (r.code === 0) cliAcked++;
        else cliKilled++;
      }
    }
    const reg = await openRegistry(fileStore(state), { create: false }); // must always load
    for (const a of acked) assert.ok(reg.findCid(a.user, { type: 'UUID', token: a.token }), `cycle ${cycle}: lost acknowledged ${a.token}`);
  }
  process.stdout.write(`  (${acked.length} acknowledged registrations; CLI edits: ${cliAcked} finished, ${cliKilled} killed; one edit takes ${calibration.ms} ms)\n`);
  assert.ok(acked.length > CYCLES * 5, `only ${acked.length} registrations were acknowledged`);
  assert.ok(cliAcked > 0, 'no CLI edit finished before its kill');
  assert.ok(cliKilled > 0, 'no CLI edit was killed');
});

test.run();
