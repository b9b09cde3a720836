// Registry failures are typed (ambiguous, locked, io, corrupt) and mapped once per edge: the CLI's
// exit status (documented in `cidlock help devices`) and the admin API's HTTP status.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { jsonLogger } from '../src/core/log.js';
import { loadRulesFile } from '../src/core/rules/load.js';
import { startDaemon } from '../src/daemon/daemon.js';
import { CIDLOCK, cidlock } from './helpers/cli.js';
import { post, TEST_DOVECOT_KEY } from './helpers/http.js';
import { tempDir } from './helpers/tmp.js';

const TOKEN = 'admin-token-0123456789abcdef';
const FP_A = `abcdef${'0'.repeat(58)}`;
const FP_B = `abcdef${'1'.repeat(58)}`;

function workspace(): { cfg: string; state: string } {
  const dir = tempDir();
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, `listen: { admin: 127.0.0.1:0, dovecot: 127.0.0.1:0, postfix: off, socketmap: off }\nadmin: { token: "${TOKEN}" }\ndovecot: { api_key: "${TEST_DOVECOT_KEY}" }\npolicy: { mode: enforce }\n`);
  return { cfg, state: join(dir, 'state') };
}

/** A process that holds the registry lock for as long as the test needs. */
function holdLock(state: string) {
  mkdirSync(state, { recursive: true });
  const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
  writeFileSync(join(state, 'registry.lock'), String(holder.pid));
  return { release: () => { holder.kill('SIGKILL'); rmSync(join(state, 'registry.lock'), { force: true }); } };
}

test('CLI exit status: 3 ambiguous ID, 4 locked, 5 unreadable state, 6 damaged registry; each names the file, nothing changes', async () => {
  const { cfg, state } = workspace();
  for (const fp of [FP_A, FP_B]) assert.is(cidlock(['devices', 'add', 'a@b.c', '--cert-fingerprint', fp, '--config', cfg]).status, 0);

  // Started first: it waits 10 s for the lock before giving up.
  const lock = holdLock(state);
  const locked = new Promise<{ status: number | null; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, [CIDLOCK, 'users', 'set', 'b@b.c', '--mode', 'enforce', '--config', cfg], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CIDLOCK_CONFIG: '' } });
    let stderr = '';
    p.stderr.on('data', (d) => (stderr += d));
    p.on('exit', (status) => resolve({ status, stderr }));
  });
  try {
    const r = await locked;
    assert.is(r.status, 4, r.stderr);
    assert.match(r.stderr, /registry\.lock: the registry is locked by process \d+/);
  } finally {
    lock.release();
  }

  const amb = cidlock(['devices', 'remove', 'a@b.c', 'abcdef', '--config', cfg]);
  assert.is(amb.status, 3, amb.stderr);
  assert.match(amb.stderr, /device ID abcdef is ambiguous for a@b\.c: it matches 2 devices; give more digits/);
  assert.is(cidlock(['devices', 'list', 'a@b.c', '--json', '--config', cfg]).stdout.trim().split('\n').length, 2, 'an ambiguous removal removed something');
  assert.is(cidlock(['devices', 'remove', 'a@b.c', 'abcdef0', '--config', cfg]).status, 0, 'a longer prefix is unique');

  const journal = join(state, 'registry.journal');
  const good = readFileSync(journal);
  appendFileSync(journal, '{"op":"boom","u":"a@b.c"}\n');
  const corrupt = cidlock(['devices', 'add', 'a@b.c', 'UUID x', '--config', cfg]);
  assert.is(corrupt.status, 6, corrupt.stderr);
  assert.match(corrupt.stderr, /registry\.journal: entry \d+ after offset 0: unknown operation "boom"/);
  writeFileSync(journal, good);

  const file = join(tempDir(), 'state-is-a-file');
  writeFileSync(file, '');
  const cfg2 = join(file, '..', 'cidlock.yaml');
  writeFileSync(cfg2, `state_dir: ${file}\n`);
  const io = cidlock(['users', 'show', 'a@b.c', '--config', cfg2]);
  assert.is(io.status, 5, io.stderr);
  assert.match(io.stderr, /state-is-a-file\/registry\.json: cannot read \(ENOTDIR\)/);
});

test('admin API status: 409 ambiguous, 500 corrupt, 503 io and locked; the daemon keeps answering logins meanwhile', async () => {
  const { cfg, state } = workspace();
  const r = loadRulesFile(cfg);
  if (!r.ok) throw new Error('rules');
  const d = await startDaemon({ rules: r.rules, logger: jsonLogger(() => {}) });
  const port = Number(d.addresses.admin!.split(':')[1]);
  const dovecot = Number(d.addresses.dovecot!.split(':')[1]);
  const call = (method: string, path: string, body?: unknown) =>
    post(port, path, body === undefined ? '' : JSON.stringify(body), { method, key: false, headers: { authorization: `Bearer ${TOKEN}` } }).then((x) => ({ status: x.status, body: JSON.parse(x.body) }));
  try {
    for (const fp of [FP_A, FP_B]) assert.is((await call('POST', '/api/users/a@b.c/devices', { cert_fingerprint: fp })).status, 201);
    const amb = await call('DELETE', '/api/users/a@b.c/devices/abcdef');
    assert.is(amb.status, 409);
    assert.match(amb.body.error, /ambiguous/);
    assert.is((await call('GET', '/api/users/a@b.c/devices')).body.devices.length, 2);

    const journal = join(state, 'registry.journal');
    const good = readFileSync(journal);
    appendFileSync(journal, 'not json\n');
    const corrupt = await call('POST', '/api/users/a@b.c/devices', { cid: 'UUID y' });
    assert.is(corrupt.status, 500);
    assert.match(corrupt.body.error, /registry\.journal: entry \d+ after offset \d+: not valid JSON/);
    writeFileSync(journal, good);

    rmSync(journal);
    mkdirSync(journal);
    const io = await call('PUT', '/api/users/a@b.c/mode', { mode: 'monitor' });
    assert.is(io.status, 503);
    assert.match(io.body.error, /registry\.journal: cannot read \(EISDIR\)/);
    rmSync(journal, { recursive: true });
    writeFileSync(journal, good);

    const lock = holdLock(state);
    try {
      const waiting = call('PUT', '/api/users/a@b.c/mode', { mode: 'monitor' });
      // Waiting for the lock holds up nothing else: logins are answered as usual.
      const login = JSON.stringify({ login: 'a@b.c', protocol: 'imap', remote: '192.0.2.9', tls: true });
      let slowest = 0;
      for (let i = 0; i < 20; i++) {
        const t = performance.now();
        assert.is((await post(dovecot, '/?command=allow', login)).status, 200);
        slowest = Math.max(slowest, performance.now() - t);
        await new Promise((res) => setTimeout(res, 100));
      }
      assert.ok(slowest < 500, `a login waited ${slowest.toFixed(0)} ms while an admin change waited for the lock`);
      const locked = await waiting;
      assert.is(locked.status, 503);
      assert.match(locked.body.error, /registry\.lock: the registry is locked by process \d+/);
    } finally {
      lock.release();
    }
    assert.equal((await call('GET', '/api/users/a@b.c')).body.registry_mode, null, 'nothing changed');
  } finally {
    await d.close();
  }
});

test.run();
