import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:net';
import { cidlock, cidlockAsync } from './helpers/cli.js';
import { httpGet as get, startServe } from './helpers/daemon.js';
import { tempDir } from './helpers/tmp.js';

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
    assert.is(JSON.parse(h.body).status, 'ok');
    assert.is((await get(addr, '/nope')).status, 404);

    writeFileSync(cfg, 'policy:\n  mode: strict\n');
    d.proc.kill('SIGHUP');
    const rejected = await d.waitFor((l) => l.event === 'rules_rejected', 'rules_rejected');
    assert.match(String((rejected.errors as string[])[0]), /cidlock\.yaml:2:9: policy\.mode: expected one of/);
    assert.is((await get(addr, '/healthz')).status, 200, 'still serving after an invalid reload');

    writeFileSync(cfg, GOOD.replace('mode: monitor', 'mode: enforce'));
    d.proc.kill('SIGHUP');
    await d.waitFor((l) => l.event === 'rules_reloaded', 'rules_reloaded');
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

test.run();
