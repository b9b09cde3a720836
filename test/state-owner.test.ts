// The CLI run as root (as the README shows) must leave state_dir usable by the daemon's own user,
// and a daemon that cannot read a registry change must not carry on quietly. Both run for real:
// the CLI as root, the daemon as nobody (uid 65534) on a state_dir owned by nobody. The CLI hands
// its registry work to a child running as nobody (Debian 13's nodejs refuses setuid in-process),
// with the rules and input files it read as root.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileStore } from '../src/core/registry/file-store.js';
import { openRegistry } from '../src/core/registry/registry.js';
import { CIDLOCK, cidlock } from './helpers/cli.js';
import { repoRoot } from './helpers/paths.js';
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

/** A state_dir owned by nobody (mode 0700), and the daemon's rules. */
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
  // The CLI's rules: only root can read them, and they draw a warning, which is printed once.
  const rootCfg = join(secret, 'cidlock.yaml');
  writeFileSync(rootCfg, `state_dir: ${state}\nlisten: { admin: 192.0.2.1:8080, dovecot: off, postfix: off, socketmap: off }\nadmin: { token: ${TOKEN} }\npolicy: { mode: enforce }\n`, { mode: 0o600 });

  const d = serveAsNobody(cfg);
  try {
    const admin = await d.admin();
    const devices = async (user: string) => ((await api(admin, `/api/users/${user}/devices`)).devices as Array<{ id: string }>).map((x) => x.id);

    const set = cidlock(['users', 'set', 'bob@example.com', '--mode', 'learn', '--config', rootCfg]);
    assert.is(set.status, 0, set.stderr);
    assert.is(set.stderr.match(/not a loopback address/g)?.length, 1, `the rules' warning once: ${set.stderr}`);
    assert.match(set.stdout, /^bob@example\.com: registry mode learn; effective mode learn/);
    assert.is(set.stdout.trim().split('\n').length, 1, set.stdout);
    assert.equal(notNobodys(state), [], 'users set left files nobody cannot use');
    await eventually('the mode', async () => (await api(admin, '/api/users/bob@example.com')).registry_mode === 'learn');

    const add = cidlock(['devices', 'add', 'alice@example.com', 'UUID owner-laptop', '--label', 'laptop', '--config', rootCfg]);
    assert.is(add.status, 0, add.stderr);
    const id = /cid device ([0-9a-f]{12})/.exec(add.stdout)![1]!;
    const cert = cidlock(['devices', 'add', 'alice@example.com', '--cert', pem, '--config', rootCfg]);
    assert.is(cert.status, 0, cert.stderr);
    assert.equal(notNobodys(state), [], 'devices add left files nobody cannot use');
    await eventually('the added devices', async () => (await devices('alice@example.com')).length === 2);
    assert.ok((await devices('alice@example.com')).includes(id));

    const imp = cidlock(['devices', 'import', list, '--config', rootCfg]);
    assert.is(imp.status, 0, imp.stderr);
    assert.equal(notNobodys(state), [], 'devices import left files nobody cannot use');
    await eventually('the imported devices', async () => (await devices('carol@example.com')).length === 2);
    // Standard input, read by root and handed over.
    const piped = cidlock(['devices', 'import', '-', '--config', rootCfg], { input: 'dave@example.com UUID dave-1\n' });
    assert.is(piped.status, 0, piped.stderr);
    assert.match(piped.stdout, /imported 1 devices: 1 added/);
    await eventually('the piped device', async () => (await devices('dave@example.com')).length === 1);
    // A failure in the child is the command's failure: its message and status reach the caller.
    const full = cidlock(['devices', 'remove', 'alice@example.com', 'abcdef012345', '--config', rootCfg]);
    assert.is(full.status, 1);
    assert.match(full.stderr, /^cidlock devices: alice@example\.com: no device with ID abcdef012345$/m);

    const rm = cidlock(['devices', 'remove', 'alice@example.com', id, '--config', rootCfg]);
    assert.is(rm.status, 0, rm.stderr);
    assert.equal(notNobodys(state), [], 'devices remove left files nobody cannot use');
    await eventually('the removal', async () => !(await devices('alice@example.com')).includes(id));

    // The files a writing CLI creates, all there and all nobody's (the audit log included).
    for (const f of ['secret', 'registry.journal', 'audit.log']) assert.ok(readdirSync(state).includes(f), `${f} is missing`);
    const audit = readFileSync(join(state, 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(audit.filter((e) => e.via === 'cli').map((e) => e.event), ['user_mode_set', 'device_registered', 'device_registered', 'devices_imported', 'devices_imported', 'device_removed']);
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

test('a child given a handoff it cannot use changes nothing and says why', () => {
  const dir = tempDir('cidlock-handoff-');
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, 'state_dir: ./state\n');
  // The handoff as a broken or foreign parent might send it, on standard input for the test.
  const run = (handoff: Buffer) => spawnSync(process.execPath, [CIDLOCK, 'devices', 'add', 'alice@example.com', 'UUID x', '--config', cfg], {
    encoding: 'utf8', cwd: repoRoot, env: { ...process.env, CIDLOCK_CONFIG: '', CIDLOCK_HANDOFF_FD: '0' }, input: handoff,
  });
  const garbage = run(Buffer.from('not a handoff'));
  assert.is(garbage.status, 1);
  assert.match(garbage.stderr, /handoff from the parent process is malformed/);
  const truncated = run(Buffer.from(`${JSON.stringify([[cfg, 100]])}\nstate_dir: ./state\n`));
  assert.is(truncated.status, 1);
  assert.match(truncated.stderr, /malformed/);
  // A well-formed handoff that lacks the rules file: the child does not read it itself.
  const missing = run(Buffer.from(`${JSON.stringify([])}\n`));
  assert.is(missing.status, 1);
  assert.match(missing.stderr, /not among the files handed over by the parent process/);
  assert.equal(readdirSync(dir), ['cidlock.yaml'], 'no state_dir was created');
  // The handed-over rules are the ones used, not the file on disk.
  const rules = Buffer.from('state_dir: ./other\n');
  const used = run(Buffer.concat([Buffer.from(`${JSON.stringify([[cfg, rules.length]])}\n`), rules]));
  assert.is(used.status, 0, used.stderr);
  assert.equal(readdirSync(dir).sort(), ['cidlock.yaml', 'other']);
});

test.run();
