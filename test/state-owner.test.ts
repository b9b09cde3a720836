// The CLI run as root (as the README shows) must leave state_dir usable by the daemon's own user,
// and a daemon that cannot read a registry change must not carry on quietly. Both run for real:
// the CLI as root, the daemon as nobody (uid 65534) on a state_dir owned by nobody.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileStore } from '../src/core/registry/file-store.js';
import { becomeStateOwner, StateOwnerError } from '../src/core/state-owner.js';
import { openRegistry } from '../src/core/registry/registry.js';
import { CIDLOCK, cidlock } from './helpers/cli.js';
import { httpGet } from './helpers/daemon.js';
import { post } from './helpers/http.js';
import { fixturePath } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

// Changing users needs root, as CI runs; elsewhere the tests are registered as skipped.
const asRoot = process.getuid?.() === 0;
if (!asRoot) process.stderr.write('\n*** SKIPPED: state_dir ownership tests switch users and need root, as CI runs ***\n');
const check = asRoot ? test : test.skip;

const NOBODY = 65534;
const TOKEN = 'state-owner-admin-token-0123456789';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A state_dir owned by nobody (mode 0700), and rules in a folder nobody can read through. */
function workspace(): { dir: string; state: string; cfg: string } {
  const dir = tempDir('cidlock-owner-');
  chmodSync(dir, 0o755);
  const state = join(dir, 'state');
  mkdirSync(state, { mode: 0o700 });
  chownSync(state, NOBODY, NOBODY);
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, `state_dir: ./state\nlisten: { admin: 127.0.0.1:0, dovecot: off, postfix: off, socketmap: off }\nadmin: { token: ${TOKEN} }\npolicy: { mode: enforce }\n`, { mode: 0o644 });
  return { dir, state, cfg };
}

/** `cidlock serve` running as nobody, as the systemd unit's user would. */
function serveAsNobody(cfg: string) {
  const proc: ChildProcess = spawn(process.execPath, [CIDLOCK, 'serve', '--config', cfg], { uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CIDLOCK_CONFIG: '' } });
  const lines: Array<Record<string, unknown>> = [];
  let buf = '';
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    for (const p of parts) lines.push(JSON.parse(p));
  });
  const admin = async (): Promise<string> => {
    for (const deadline = Date.now() + 15_000; Date.now() < deadline; await sleep(20)) {
      const l = lines.find((x) => x.event === 'listening' && x.listener === 'admin');
      if (l) return String(l.address);
      if (proc.exitCode !== null) break;
    }
    throw new Error(`the daemon did not start: ${err}\n${lines.map((l) => JSON.stringify(l)).join('\n')}`);
  };
  return { proc, lines, admin, stop: () => proc.kill('SIGKILL') };
}

async function api(admin: string, path: string): Promise<Record<string, unknown>> {
  const port = Number(admin.split(':')[1]);
  const r = await post(port, path, '', { method: 'GET', key: false, headers: { authorization: `Bearer ${TOKEN}` } });
  return JSON.parse(r.body) as Record<string, unknown>;
}

async function eventually(what: string, pred: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await pred());) {
    if (Date.now() > deadline) throw new Error(`the daemon did not see ${what} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Every file in state_dir, with its owner when that is not nobody. */
function notNobodys(state: string): string[] {
  return readdirSync(state).filter((f) => {
    const st = lstatSync(join(state, f));
    return st.uid !== NOBODY || st.gid !== NOBODY;
  });
}

check('the CLI run as root leaves every state file to state_dir\'s owner, and a daemon running as that user sees each change', async () => {
  const { dir, state, cfg } = workspace();
  // Input files only root can read: the CLI reads them before it becomes state_dir's owner.
  const secret = join(dir, 'root-only');
  mkdirSync(secret, { mode: 0o700 });
  const pem = join(secret, 'phone.pem');
  writeFileSync(pem, readFileSync(fixturePath('certs', 'alice-phone.pem')), { mode: 0o600 });
  const list = join(secret, 'devices.txt');
  writeFileSync(list, 'carol@example.com UUID carol-1 desk\ncarol@example.com UUID carol-2\n', { mode: 0o600 });

  const d = serveAsNobody(cfg);
  try {
    const admin = await d.admin();
    const devices = async (user: string) => ((await api(admin, `/api/users/${user}/devices`)).devices as Array<{ id: string }>).map((x) => x.id);

    const set = cidlock(['users', 'set', 'bob@example.com', '--mode', 'learn', '--config', cfg]);
    assert.is(set.status, 0, set.stderr);
    assert.equal(notNobodys(state), [], 'users set left files nobody cannot use');
    await eventually('the mode', async () => (await api(admin, '/api/users/bob@example.com')).registry_mode === 'learn');

    const add = cidlock(['devices', 'add', 'alice@example.com', 'UUID owner-laptop', '--label', 'laptop', '--config', cfg]);
    assert.is(add.status, 0, add.stderr);
    const id = /cid device ([0-9a-f]{12})/.exec(add.stdout)![1]!;
    const cert = cidlock(['devices', 'add', 'alice@example.com', '--cert', pem, '--config', cfg]);
    assert.is(cert.status, 0, cert.stderr);
    assert.equal(notNobodys(state), [], 'devices add left files nobody cannot use');
    await eventually('the added devices', async () => (await devices('alice@example.com')).length === 2);
    assert.ok((await devices('alice@example.com')).includes(id));

    const imp = cidlock(['devices', 'import', list, '--config', cfg]);
    assert.is(imp.status, 0, imp.stderr);
    assert.equal(notNobodys(state), [], 'devices import left files nobody cannot use');
    await eventually('the imported devices', async () => (await devices('carol@example.com')).length === 2);

    const rm = cidlock(['devices', 'remove', 'alice@example.com', id, '--config', cfg]);
    assert.is(rm.status, 0, rm.stderr);
    assert.equal(notNobodys(state), [], 'devices remove left files nobody cannot use');
    await eventually('the removal', async () => !(await devices('alice@example.com')).includes(id));

    // The files a writing CLI creates, all there and all nobody's (the audit log included).
    for (const f of ['secret', 'registry.journal', 'audit.log']) assert.ok(readdirSync(state).includes(f), `${f} is missing`);
    const audit = readFileSync(join(state, 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(audit.filter((e) => e.via === 'cli').map((e) => e.event), ['user_mode_set', 'device_registered', 'device_registered', 'devices_imported', 'device_removed']);
    assert.is((await httpGet(admin, '/readyz')).status, 200);
    assert.not.ok(d.lines.some((l) => l.event === 'registry_reload_failed' || l.event === 'audit_write_failed'), 'the daemon met a file it could not use');
  } finally {
    d.stop();
  }
});

check('a daemon that cannot read a registry change (a root-owned journal, as the CLI used to leave) fails /readyz and logs it until fixed', async () => {
  const { state, cfg } = workspace();
  const d = serveAsNobody(cfg);
  try {
    const admin = await d.admin();
    // What `cidlock devices add` run as root used to do: root-owned 0600 files in nobody's state_dir.
    const asRoot = await openRegistry(fileStore(state), { create: true });
    await asRoot.add('alice@example.com', { kind: 'cid', cid: { type: 'UUID', token: 'stolen-later' } }, 'admin');
    assert.equal(notNobodys(state).sort(), ['registry.journal', 'secret']);
    await eventually('the failure', async () => d.lines.filter((l) => l.event === 'registry_reload_failed').length >= 2, 10_000);
    const failed = d.lines.filter((l) => l.event === 'registry_reload_failed');
    assert.ok(failed.every((l) => l.level === 'error'));
    assert.match(String(failed[0]!.error), /(registry\.journal|secret): cannot read \(EACCES\)/);
    const ready = await httpGet(admin, '/readyz');
    assert.is(ready.status, 503);
    assert.match(JSON.parse(ready.body).registry_error, /EACCES/);
    assert.match((await httpGet(admin, '/metrics')).body, /cidlock_registry_reload_errors_total [2-9]/);
    // Fixed by handing the files to the daemon's user: it catches up and is ready again.
    for (const f of readdirSync(state)) chownSync(join(state, f), NOBODY, NOBODY);
    await eventually('the recovery', async () => (await httpGet(admin, '/readyz')).status === 200, 35_000);
    assert.is(((await api(admin, '/api/users/alice@example.com/devices')).devices as unknown[]).length, 1);
  } finally {
    d.stop();
  }
});

test('a Node.js that refuses to switch users (Debian 13\'s nodejs: io_uring, CVE-2024-22017) gets a clear refusal, before anything changed', () => {
  // Stand in for that Node.js in this process: root, and a setgroups that throws as it does there.
  const dir = tempDir('cidlock-owner-');
  if (asRoot) chownSync(dir, NOBODY, NOBODY);
  const owner = lstatSync(dir).uid;
  const saved = { geteuid: process.geteuid, setgroups: process.setgroups, setgid: process.setgid, setuid: process.setuid };
  const calls: string[] = [];
  try {
    process.geteuid = () => 0;
    process.setgroups = () => {
      calls.push('setgroups');
      throw Object.assign(new Error('setgroups() disabled: io_uring may be enabled. See CVE-2024-22017.'), { code: 'ERR_INVALID_STATE' });
    };
    process.setgid = () => { calls.push('setgid'); };
    process.setuid = () => { calls.push('setuid'); };
    assert.throws(() => becomeStateOwner(dir), (err: unknown) =>
      err instanceof StateOwnerError && err.message.includes(`uid ${owner}`) && err.message.includes('CVE-2024-22017') && err.message.includes('run the command as that user'));
    assert.equal(calls, ['setgroups'], 'no setgid or setuid after the refusal');
    // Any other failure is not hidden behind that message.
    process.setgroups = () => { throw Object.assign(new Error('EPERM'), { code: 'EPERM' }); };
    assert.throws(() => becomeStateOwner(dir), (err: unknown) => !(err instanceof StateOwnerError) && (err as Error).message === 'EPERM');
  } finally {
    Object.assign(process, saved);
  }
});

test.run();
