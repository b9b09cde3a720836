import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { jsonLogger } from '../src/core/log.js';
import { loadRulesFile } from '../src/core/rules/load.js';
import { startDaemon, type Daemon } from '../src/daemon/daemon.js';
import { post, TEST_DOVECOT_KEY } from './helpers/http.js';
import { tempDir } from './helpers/tmp.js';

const TOKEN = 'admin-token-0123456789abcdef';

async function daemon(extra = ''): Promise<{ d: Daemon; port: number; dir: string; cfg: string; logs: Array<Record<string, unknown>> }> {
  const dir = tempDir();
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, `listen: { admin: 127.0.0.1:0, dovecot: 127.0.0.1:0, postfix: off, socketmap: off }\nadmin: { token: "${TOKEN}" }\ndovecot: { api_key: "${TEST_DOVECOT_KEY}" }\npolicy: { mode: enforce }\n${extra}`);
  const r = loadRulesFile(cfg);
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  const logs: Array<Record<string, unknown>> = [];
  const d = await startDaemon({ rules: r.rules, logger: jsonLogger((l) => logs.push(JSON.parse(l))) });
  return { d, port: Number(d.addresses.admin!.split(':')[1]), dir, cfg, logs };
}

const call = (port: number, method: string, path: string, body?: unknown, token: string | null = TOKEN) =>
  post(port, path, body === undefined ? '' : JSON.stringify(body), { method, headers: token === null ? {} : { authorization: `Bearer ${token}` } })
    .then((r) => ({ status: r.status, body: r.body === '' ? null : JSON.parse(r.body) }));

test('admin API: add, list, remove devices and set a mode, each audited; the daemon decides with them at once', async () => {
  const { d, port, dir } = await daemon();
  try {
    const dovecot = Number(d.addresses.dovecot!.split(':')[1]);
    const login = { login: 'alice@example.com', protocol: 'imap', remote: '192.0.2.5', device_id: '"clientid" "UUID api-laptop"', tls: true };
    assert.is((await post(dovecot, '/?command=allow', JSON.stringify(login))).body, '{"status":-1,"msg":""}');
    const added = await call(port, 'POST', '/api/users/Alice%40Example.com/devices', { cid: 'UUID api-laptop', label: 'laptop' });
    assert.is(added.status, 201);
    assert.is(added.body.device.label, 'laptop');
    assert.is((await post(dovecot, '/?command=allow', JSON.stringify({ ...login, session_id: 'x' }))).body, '{"status":0}');
    const list = await call(port, 'GET', '/api/users/alice@example.com/devices');
    assert.equal(list.body.devices.map((x: { id: string }) => x.id), [added.body.device.id]);
    assert.is((await call(port, 'POST', '/api/users/alice@example.com/devices', { cid: 'UUID api-laptop' })).status, 200, 'adding again is not an error');
    assert.is((await call(port, 'POST', '/api/users/alice@example.com/devices', { cid: 'UUID' })).status, 400);
    assert.is((await call(port, 'POST', '/api/users/alice@example.com/devices', { cert_fingerprint: 'ab:cd' })).status, 400);
    const mode = await call(port, 'PUT', '/api/users/bob@example.com/mode', { mode: 'monitor' });
    assert.is(mode.body.mode, 'monitor');
    assert.is(mode.body.mode_set_by.layer, 'registry');
    assert.is((await call(port, 'PUT', '/api/users/bob@example.com/mode', { mode: 'strict' })).status, 400);
    const user = await call(port, 'GET', '/api/users/bob@example.com');
    assert.is(user.body.registry_mode, 'monitor');
    assert.is((await call(port, 'DELETE', `/api/users/alice@example.com/devices/${added.body.device.id}`)).status, 200);
    assert.is((await call(port, 'DELETE', `/api/users/alice@example.com/devices/${added.body.device.id}`)).status, 404);
    const refusals = await call(port, 'GET', '/api/users/alice@example.com/refusals');
    assert.is(refusals.body.refusals.length, 1);
    assert.is(refusals.body.refusals[0].remote, '192.0.2.5');
    const audit = readFileSync(join(dir, 'state', 'audit.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(audit.map((e) => e.event), ['unknown_device_refused', 'device_registered', 'user_mode_set', 'device_removed']);
    assert.not.ok(JSON.stringify(audit).includes('api-laptop'), 'a raw CID reached the audit log');
  } finally {
    await d.close();
  }
});

test('admin API: no token or a wrong one is 401; without admin.token the API is off; health and metrics stay open', async () => {
  const { d, port } = await daemon();
  try {
    assert.is((await call(port, 'GET', '/api/users/a@b.c', undefined, null)).status, 401);
    assert.is((await call(port, 'GET', '/api/users/a@b.c', undefined, 'wrong-token-0123456789')).status, 401);
    assert.is((await call(port, 'GET', '/api/nothing')).status, 404);
    assert.is((await call(port, 'POST', '/api/users/a@b.c/devices', undefined)).status, 400);
    const big = await post(port, '/api/users/a@b.c/devices', JSON.stringify({ cid: 'x'.repeat(70_000) }), { headers: { authorization: `Bearer ${TOKEN}` } }).catch(() => ({ status: 413 }));
    assert.is(big.status, 413);
    assert.is((await call(port, 'GET', '/healthz', undefined, null)).status, 200);
    assert.is((await call(port, 'GET', '/readyz', undefined, null)).body.status, 'ready');
    const metrics = await post(port, '/metrics', '', { method: 'GET' });
    assert.match(metrics.body, /# TYPE cidlock_decisions_total counter/);
    assert.match(metrics.body, /cidlock_registry_devices 0/);
    assert.match(String(metrics.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  } finally {
    await d.close();
  }
  const off = await (async () => {
    const dir = tempDir();
    const cfg = join(dir, 'cidlock.yaml');
    writeFileSync(cfg, 'listen: { admin: 127.0.0.1:0, dovecot: off, postfix: off, socketmap: off }\n');
    const r = loadRulesFile(cfg);
    if (!r.ok) throw new Error('rules');
    return startDaemon({ rules: r.rules, logger: jsonLogger(() => {}) });
  })();
  try {
    const p = Number(off.addresses.admin!.split(':')[1]);
    const r = await call(p, 'GET', '/api/users/a@b.c');
    assert.is(r.status, 404);
    assert.match(r.body.error, /admin API is disabled/);
  } finally {
    await off.close();
  }
});

test('metrics count decisions by protocol, action, mode and reason, and reloads by result', async () => {
  const { d, port, cfg } = await daemon();
  try {
    const dovecot = Number(d.addresses.dovecot!.split(':')[1]);
    await post(dovecot, '/?command=allow', JSON.stringify({ login: 'x@example.com', protocol: 'pop3', remote: '192.0.2.9' }));
    writeFileSync(cfg, 'policy: { mode: strict }\n');
    assert.is(d.reload('test'), false);
    const body = (await post(port, '/metrics', '', { method: 'GET' })).body;
    assert.match(body, /cidlock_decisions_total\{protocol="pop3",action="reject",mode="enforce",reason="no_device_proof"\} 1/);
    assert.match(body, /cidlock_decision_seconds_count 1/);
    assert.match(body, /cidlock_rules_reloads_total\{result="rejected"\} [1-9]/);
  } finally {
    await d.close();
  }
});

test.run();
