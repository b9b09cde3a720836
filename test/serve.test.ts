import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { connect } from 'node:net';
import { CIDLOCK, cidlock, cidlockAsync } from './helpers/cli.js';
import { httpGet as get, startServe } from './helpers/daemon.js';
import { repoRoot } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

interface Health { status: string; version: string; pid: number; uptime_seconds: number; rules: string; rules_loaded_at: string }
const PACKAGE_VERSION = (JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
const PIDOF = ['/usr/bin/pidof', '/bin/pidof', '/usr/sbin/pidof', '/sbin/pidof'].find((p) => existsSync(p));

const GOOD = 'listen:\n  admin: 127.0.0.1:0\n  dovecot: off\n  postfix: off\n  socketmap: off\npolicy:\n  mode: monitor\n';

test('serve: admin /healthz on loopback, SIGHUP reloads, an invalid reload keeps the old rules, SIGTERM stops cleanly', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, GOOD);
  const d = startServe(cfg);
  try {
    const listening = await d.waitFor((l) => l.event === 'listening' && l.listener === 'admin', 'admin listener');
    const addr = String(listening.address);
    assert.match(addr, /^127\.0\.0\.1:\d+$/);
    const h = await get(addr, '/healthz');
    assert.is(h.status, 200);
    const health = JSON.parse(h.body) as Health;
    assert.equal(Object.keys(health), ['status', 'version', 'pid', 'uptime_seconds', 'rules', 'rules_loaded_at'], 'exactly what README and "serve --help" say');
    assert.is(health.status, 'ok');
    assert.is(health.version, PACKAGE_VERSION);
    assert.is(health.pid, d.proc.pid);
    assert.ok(Number.isInteger(health.uptime_seconds) && health.uptime_seconds >= 0 && health.uptime_seconds < 60, String(health.uptime_seconds));
    assert.is(health.rules, cfg);
    assert.ok(Math.abs(Date.parse(health.rules_loaded_at) - Date.now()) < 60_000, health.rules_loaded_at);
    // The docs show the same fields: the README's example answer, and every key in "serve --help".
    const readmeExample = /```json\n(\{"status":"ok".*\})\n```/.exec(readFileSync(join(repoRoot, 'README.md'), 'utf8'));
    assert.ok(readmeExample !== null, 'README shows a /healthz answer');
    assert.equal(Object.keys(JSON.parse(readmeExample![1]!) as object), Object.keys(health));
    const help = cidlock(['serve', '--help']).stdout.replace(/\s+/g, ' ');
    for (const key of Object.keys(health)) assert.ok(help.includes(key), `serve --help does not mention ${key}`);
    assert.is((await get(addr, '/nope')).status, 404);

    writeFileSync(cfg, 'policy:\n  mode: strict\n');
    d.proc.kill('SIGHUP');
    const rejected = await d.waitFor((l) => l.event === 'rules_rejected', 'rules_rejected');
    assert.match(String((rejected.errors as string[])[0]), /cidlock\.yaml:2:9: policy\.mode: expected one of/);
    const kept = await get(addr, '/healthz');
    assert.is(kept.status, 200, 'still serving after an invalid reload');
    assert.is((JSON.parse(kept.body) as Health).rules_loaded_at, health.rules_loaded_at, 'the old rules stay, and so does their load time');

    writeFileSync(cfg, GOOD.replace('mode: monitor', 'mode: enforce'));
    d.proc.kill('SIGHUP');
    await d.waitFor((l) => l.event === 'rules_reloaded', 'rules_reloaded');
    const reloaded = JSON.parse((await get(addr, '/healthz')).body) as Health;
    assert.ok(Date.parse(reloaded.rules_loaded_at) > Date.parse(health.rules_loaded_at), `${reloaded.rules_loaded_at} after ${health.rules_loaded_at}`);
    // An empty file on a running daemon is a truncated save, not new rules.
    writeFileSync(cfg, '');
    d.proc.kill('SIGHUP');
    const empty = await d.waitFor((l) => l.event === 'rules_rejected' && String((l.errors as string[])[0]).includes('the file is empty'), 'an empty file refused');
    assert.ok(empty);
    writeFileSync(cfg, GOOD.replace('mode: monitor', 'mode: enforce'));
    // A change of the file alone is picked up too, without a signal.
    const before = d.lines.filter((l) => l.event === 'rules_reloaded').length;
    writeFileSync(cfg, `${GOOD.replace('mode: monitor', 'mode: learn')}\n# edited\n`);
    await d.waitFor((l) => l.event === 'rules_reloaded' && d.lines.filter((x) => x.event === 'rules_reloaded').length > before, 'a reload after the file changed');

    const exit = new Promise<number | null>((resolve) => d.proc.on('exit', (code) => resolve(code)));
    d.proc.kill('SIGTERM');
    assert.is(await exit, 0);
    assert.ok(d.lines.some((l) => l.event === 'stopped'));
  } finally {
    d.proc.kill('SIGKILL');
  }
});

test('serve: devices added with the CLI reach the running daemon without a restart', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, GOOD);
  const d = startServe(cfg);
  try {
    const addr = String((await d.waitFor((l) => l.event === 'listening', 'listening')).address);
    assert.is(JSON.parse((await get(addr, '/readyz')).body).devices, 0);
    const add = cidlock(['devices', 'add', 'alice@example.com', 'UUID serve-test-1', '--config', cfg]);
    assert.is(add.status, 0, add.stderr);
    await d.waitFor((l) => l.event === 'registry_reloaded', 'registry_reloaded');
    assert.is(JSON.parse((await get(addr, '/readyz')).body).devices, 1);
    // ... which is what the help says, not that it takes a SIGHUP.
    for (const topic of ['devices', 'users']) {
      const help = cidlock(['help', topic]).stdout.replace(/\s+/g, ' ');
      assert.match(help, /A running daemon picks (the change|changes) up within a second\./, topic);
      assert.not.match(help, /SIGHUP/, topic);
    }
  } finally {
    d.proc.kill('SIGKILL');
  }
});

test('serve: every configured listener comes up on loopback, and SIGTERM closes persistent connections', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, 'listen:\n  admin: 127.0.0.1:0\n  dovecot: 127.0.0.1:0\n  postfix: 127.0.0.1:0\n  socketmap: 127.0.0.1:0\n');
  const d = startServe(cfg);
  try {
    for (const name of ['admin', 'dovecot', 'postfix', 'socketmap']) assert.match(await d.address(name), /^127\.0\.0\.1:\d+$/, name);
    const policy = await d.address('postfix');
    const sock = connect(Number(policy.split(':')[1]), '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    await d.waitFor((l) => l.event === 'postfix_connection', 'postfix_connection');
    const started = Date.now();
    assert.is(await d.stop(), 0);
    assert.ok(Date.now() - started < 5000, 'an idle Postfix connection held up the stop');
    sock.destroy();
  } finally {
    d.proc.kill('SIGKILL');
  }
});

test('serve: an invalid rules file at start exits 2 with the located error', async () => {
  const cfg = join(tempDir(), 'cidlock.yaml');
  writeFileSync(cfg, 'listen:\n  admin: nowhere\n');
  const p = cidlockAsync(['serve', '--config', cfg]);
  let err = '';
  p.stderr!.on('data', (d) => (err += d));
  const code = await new Promise<number | null>((resolve) => p.on('exit', resolve));
  assert.is(code, 2);
  assert.match(err, /cidlock\.yaml:2:10: listen\.admin: expected host:port/);
});

// What "cidlock serve --help" tells operators to run. Registered as skipped where pidof is missing.
(PIDOF === undefined ? test.skip : test)('serve: the daemon is named cidlock, so `kill -HUP $(pidof cidlock)` reloads it; other commands are not', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, GOOD);
  const d = startServe(cfg);
  try {
    await d.address('admin');
    const pids = spawnSync(PIDOF!, ['cidlock'], { encoding: 'utf8' }).stdout.trim().split(/\s+/).map(Number);
    assert.ok(pids.includes(d.proc.pid!), `pidof cidlock printed ${JSON.stringify(pids)}, the daemon is ${d.proc.pid}`);
    assert.is(readFileSync(`/proc/${d.proc.pid}/comm`, 'utf8').trim(), 'cidlock');
    // A CLI command running at the same time (an import waiting for its input) is not the daemon:
    // a SIGHUP meant for the daemon would kill it.
    const cli = spawn(process.execPath, [CIDLOCK, 'devices', 'import', '-', '--config', cfg], { stdio: ['pipe', 'ignore', 'ignore'] });
    const exited = new Promise((r) => cli.on('exit', r));
    await new Promise((r) => setTimeout(r, 300));
    assert.not.ok(spawnSync(PIDOF!, ['cidlock'], { encoding: 'utf8' }).stdout.trim().split(/\s+/).map(Number).includes(cli.pid!));
    assert.is(cli.exitCode, null, 'the import was still running when pidof looked');
    cli.stdin!.end();
    await exited;
    const before = d.lines.filter((l) => l.event === 'rules_reloaded').length;
    const kill = spawnSync('/bin/sh', ['-c', `kill -HUP ${d.proc.pid}`]);
    assert.is(kill.status, 0);
    await d.waitFor(() => d.lines.filter((l) => l.event === 'rules_reloaded').length > before, 'a reload after SIGHUP');
  } finally {
    d.proc.kill('SIGKILL');
  }
});

test.run();
