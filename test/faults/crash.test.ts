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
  const reg = openRegistry(fileStore(${JSON.stringify(dir)}, { compactBytes: 2048 }), { create: true });
  for (let i = 0; ; i++) {
    const token = ${JSON.stringify(prefix)} + i;
    const r = reg.add('u' + (i % 7) + '@example.com', { kind: 'cid', cid: { type: 'UUID', token } }, 'learn', { maxDevices: 100000 });
    if (r.status !== 'full') process.stdout.write(token + '\\n');
    if (i % 10 === 9) reg.remove('u' + (i % 7) + '@example.com', { label: 'never-used' });
  }`;

function killRandomly(args: string[], opts: { cwd?: string }, onLine: (line: string) => void, maxMs: number): Promise<void> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'ignore'], ...opts });
    let buf = '';
    p.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      lines.forEach(onLine);
    });
    setTimeout(() => p.kill('SIGKILL'), 20 + Math.random() * maxMs);
    p.on('exit', () => resolve());
  });
}

test(`${CYCLES} kill -9 cycles of learn registrations, CLI edits and compactions lose nothing acknowledged`, async () => {
  const dir = tempDir();
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, 'state_dir: ./state\n');
  const state = join(dir, 'state');
  const acked: Array<{ user: string; token: string }> = [];
  let cliAcked = 0;
  for (let cycle = 0; cycle < CYCLES; cycle++) {
    if (cycle % 2 === 0) {
      await killRandomly(['--input-type=module', '-e', learner(state, `c${cycle}-`)], {}, (token) => acked.push({ user: `u${Number(token.split('-')[1]) % 7}@example.com`, token }), 400);
    } else {
      // Several CLI edits racing each other and the kill; an exit status of 0 is the acknowledgement.
      await Promise.all(Array.from({ length: 4 }, (_, k) => new Promise<void>((resolve) => {
        const token = `cli${cycle}-${k}`;
        const p = spawn(process.execPath, [CIDLOCK, 'devices', 'add', 'cli@example.com', `UUID ${token}`, '--config', cfg], { stdio: 'ignore' });
        const t = setTimeout(() => p.kill('SIGKILL'), 50 + Math.random() * 300);
        p.on('exit', (code) => {
          clearTimeout(t);
          if (code === 0) {
            acked.push({ user: 'cli@example.com', token });
            cliAcked++;
          }
          resolve();
        });
      })));
    }
    const reg = openRegistry(fileStore(state), { create: false }); // must always load
    for (const a of acked) assert.ok(reg.findCid(a.user, { type: 'UUID', token: a.token }), `cycle ${cycle}: lost acknowledged ${a.token}`);
  }
  assert.ok(acked.length > CYCLES * 5, `only ${acked.length} registrations were acknowledged`);
  assert.ok(cliAcked > 0, 'no CLI edit finished before its kill');
});

test.run();
