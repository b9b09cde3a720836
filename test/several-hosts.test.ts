// Two cidlock daemons on one Redis, as two mail hosts would run them (separate processes,
// separate listeners, one rules file each, AUTH with a password file): a change made through one
// host's CLI is in force on the other within a second, and Redis going away is said and survived.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cidlock } from './helpers/cli.js';
import { httpGet, startServe, type ServeProcess } from './helpers/daemon.js';
import { post, TEST_DOVECOT_KEY } from './helpers/http.js';
import { requireRedis, startRedis, type RedisInstance } from './helpers/redis.js';
import { tempDir } from './helpers/tmp.js';

const ready = requireRedis('several-hosts');
const check = ready ? test : test.skip;
const PASSWORD = 'redis-password-for-tests-0123456789';

let redis: RedisInstance;
interface Host { name: string; cfg: string; serve: ServeProcess; dovecot: number; admin: string }
const hosts: Host[] = [];

function rulesFor(dir: string, port: number): string {
  writeFileSync(join(dir, 'redis.pass'), `${PASSWORD}\n`, { mode: 0o600 });
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, [
    'listen: { admin: 127.0.0.1:0, dovecot: 127.0.0.1:0, postfix: off, socketmap: off }',
    `dovecot: { api_key: "${TEST_DOVECOT_KEY}" }`,
    `store: { redis: "redis://127.0.0.1:${port}/0", password_file: redis.pass, key_prefix: "hosts:" }`,
    'policy: { mode: enforce }',
    'log: { decisions: all }',
    '',
  ].join('\n'));
  return cfg;
}

async function startHost(name: string): Promise<Host> {
  return startHostWith(name, rulesFor(tempDir(`cidlock-${name}-`), redis.port));
}

async function startHostWith(name: string, cfg: string): Promise<Host> {
  const serve = startServe(cfg);
  const dovecot = Number((await serve.address('dovecot')).split(':')[1]);
  const admin = await serve.address('admin');
  const h = { name, cfg, serve, dovecot, admin };
  hosts.push(h);
  return h;
}

const login = (user: string, token: string, session: string) =>
  JSON.stringify({ login: user, protocol: 'imap', remote: '192.0.2.20', device_id: `"clientid" "UUID ${token}"`, tls: true, session_id: session });
const allowed = async (h: Host, user: string, token: string, session: string) =>
  (await post(h.dovecot, '/?command=allow', login(user, token, session))).body === '{"status":0}';

let sessions = 0;

// Only with Redis at hand: without it every test is registered as skipped.
if (ready) test.before(async () => {
  redis = await startRedis({ dir: tempDir('cidlock-redis-'), password: PASSWORD, appendonly: true, appendfsync: 'always' });
  await startHost('a');
  await startHost('b');
});

test.after(async () => {
  await Promise.all(hosts.map((h) => h.serve.stop()));
  await redis?.stop();
});

check('a device added with host A\'s CLI is honoured by host B within a second', async () => {
  const [a, b] = hosts as [Host, Host];
  assert.not.ok(await allowed(b, 'alice@example.com', 'laptop-1', `s${++sessions}`), 'refused before');
  const r = cidlock(['devices', 'add', 'alice@example.com', 'UUID laptop-1', '--label', 'laptop', '-c', a.cfg]);
  assert.is(r.status, 0, r.stderr);
  const added = Date.now();
  let waited = 0;
  while (!(await allowed(b, 'alice@example.com', 'laptop-1', `s${++sessions}`))) {
    waited = Date.now() - added;
    if (waited > 5000) break;
    await new Promise((res) => setTimeout(res, 10));
  }
  waited = Date.now() - added;
  assert.ok(waited < 1000, `host B took ${waited} ms`);
  // B's log says why, with the device A's CLI registered.
  const d = await b.serve.waitFor((l) => l.event === 'decision' && l.user === 'alice@example.com' && l.action === 'allow', 'B allows alice');
  assert.is(d.reason, 'registered_device');
  assert.ok(await allowed(a, 'alice@example.com', 'laptop-1', `s${++sessions}`));
  // And the other way round: a removal with B's CLI is in force on A.
  const list = cidlock(['devices', 'list', 'alice@example.com', '--json', '-c', b.cfg]);
  const id = (JSON.parse(list.stdout.trim().split('\n')[0]!) as { id: string }).id;
  assert.is(cidlock(['devices', 'remove', 'alice@example.com', String(id), '-c', b.cfg]).status, 0);
  const removed = Date.now();
  while (await allowed(a, 'alice@example.com', 'laptop-1', `s${++sessions}`)) {
    if (Date.now() - removed > 5000) break;
    await new Promise((res) => setTimeout(res, 10));
  }
  assert.ok(Date.now() - removed < 1000, `host A took ${Date.now() - removed} ms to drop the device`);
});

check('/readyz and the store_up metric say whether Redis is there; decisions go on from memory without it; the CLI fails clearly', async () => {
  const [a, b] = hosts as [Host, Host];
  assert.is(cidlock(['devices', 'add', 'bob@example.com', 'UUID phone-2', '-c', a.cfg]).status, 0);
  await b.serve.waitFor((l) => l.event === 'registry_reloaded' && Number(l.devices) >= 1, 'B reads bob\'s device');
  const ok = JSON.parse((await httpGet(b.admin, '/readyz')).body);
  assert.is(ok.store_state, 'ready', JSON.stringify(ok));
  assert.match((await httpGet(b.admin, '/metrics')).body, /^cidlock_store_up 1$/m);
  await redis.kill9();
  try {
    await b.serve.waitFor((l) => l.event === 'store_connection' && l.state === 'down', 'B notices Redis is gone');
    const down = await httpGet(b.admin, '/readyz');
    assert.is(down.status, 503);
    assert.is(JSON.parse(down.body).store_state, 'down');
    assert.match((await httpGet(b.admin, '/metrics')).body, /^cidlock_store_up 0$/m);
    // Decisions continue from the copy in memory, both ways, and answer at once.
    const t = Date.now();
    assert.ok(await allowed(b, 'bob@example.com', 'phone-2', `s${++sessions}`));
    assert.not.ok(await allowed(b, 'bob@example.com', 'stranger', `s${++sessions}`));
    assert.ok(Date.now() - t < 2000, 'answered before Dovecot\'s 2 s timeout');
    // A registry change cannot be made: exit 5 and a message that says why; nothing pretends to work.
    const r = cidlock(['devices', 'add', 'bob@example.com', 'UUID phone-3', '-c', a.cfg]);
    assert.is(r.status, 5, r.stderr);
    assert.match(r.stderr, /cannot reach Redis/);
    assert.not.ok(r.stderr.includes(PASSWORD), 'the password is never printed');
    // The unit's ExecStartPre check passes: a host must be able to start (from its local copy).
    const c = cidlock(['check', '-c', a.cfg]);
    assert.is(c.status, 0, c.stderr);
    assert.match(c.stderr, /warning: store: .*cannot reach Redis/);
  } finally {
    await redis.restart();
  }
  await b.serve.waitFor((l) => l.event === 'store_connection' && l.state === 'ready' && hostsLogAfterDown(b), 'B reconnects');
  // Reconnected, it reads what it missed at once (not after its retry backoff), and is ready again.
  await b.serve.waitFor((l) => l.event === 'registry_readable', 'B reads the registry again', 3000);
  const back = await httpGet(b.admin, '/readyz');
  assert.is(back.status, 200, back.body);
  assert.is(cidlock(['devices', 'add', 'bob@example.com', 'UUID phone-3', '-c', a.cfg]).status, 0, 'writes work again');
  for (const h of hosts) assert.not.ok(JSON.stringify(h.serve.lines).includes(PASSWORD), `${h.name}'s log holds the password`);
});

/** True once B logged that Redis was down: the ready line wanted is the one after it. */
function hostsLogAfterDown(h: Host): boolean {
  const i = h.serve.lines.findIndex((l) => l.event === 'store_connection' && l.state === 'down');
  return i >= 0 && h.serve.lines.slice(i).some((l) => l.event === 'store_connection' && l.state === 'ready');
}

check('a host that starts while Redis is unreachable decides from its local copy, says so, and takes the store back when it returns', async () => {
  const b = hosts[1]!;
  assert.is(cidlock(['devices', 'add', 'carol@example.com', 'UUID carol-1', '-c', hosts[0]!.cfg]).status, 0);
  await b.serve.waitFor((l) => l.event === 'registry_reloaded' && Number(l.devices) >= 3, 'B reads carol\'s device');
  await b.serve.stop(); // a clean stop writes the local copy
  hosts.splice(1, 1);
  await redis.kill9();
  let again: Host;
  try {
    again = await startHostWith('b2', b.cfg);
    const line = await again.serve.waitFor((l) => l.event === 'registry_from_local_copy', 'the start from the copy');
    assert.ok(Number(line.devices) >= 3, JSON.stringify(line));
    assert.ok(await allowed(again, 'carol@example.com', 'carol-1', `s${++sessions}`), 'a device from the copy logs in');
    assert.not.ok(await allowed(again, 'carol@example.com', 'carol-other', `s${++sessions}`));
    const r = await httpGet(again.admin, '/readyz');
    assert.is(r.status, 503);
    assert.is(JSON.parse(r.body).registry_source, 'local copy');
  } finally {
    await redis.restart();
  }
  await again.serve.waitFor((l) => l.event === 'registry_reloaded' && l.rebuilt === true, 'the registry read from Redis again, whole', 10_000);
  const r = await httpGet(again.admin, '/readyz');
  assert.is(r.status, 200, r.body);
  assert.is(JSON.parse(r.body).registry_source, 'store');
});

check('cidlock check names the store and warns about settings that lose acknowledged writes', async () => {
  const [a] = hosts as [Host];
  const good = cidlock(['check', '-c', a.cfg]);
  assert.is(good.status, 0, good.stderr);
  assert.match(good.stdout, /store: +redis:\/\/127\.0\.0\.1:\d+\/0 \(Redis at 127\.0\.0\.1:\d+, key prefix "hosts:"\)/);
  assert.not.match(good.stderr, /warning: store/);
  const loose = await startRedis({ dir: tempDir('cidlock-redis-'), password: PASSWORD, appendonly: false, extra: ['maxmemory-policy allkeys-lru'] });
  try {
    const cfg = rulesFor(tempDir(), loose.port);
    const r = cidlock(['check', '-c', cfg]);
    assert.match(r.stderr, /warning: store: Redis runs with appendonly no/);
    assert.match(r.stderr, /warning: store: Redis runs with maxmemory-policy allkeys-lru/);
  } finally {
    await loose.stop();
  }
});

check('cidlock store copy: a state_dir into Redis and back, through the CLI, refusing a non-empty target without --force', async () => {
  const [a] = hosts as [Host];
  const dir = tempDir();
  const fileCfg = join(dir, 'file.yaml');
  writeFileSync(fileCfg, `state_dir: ${join(dir, 'state')}\n`);
  for (let i = 0; i < 5; i++) assert.is(cidlock(['devices', 'add', `c${i}@example.com`, `UUID copy-${i}`, '--label', `dev ${i}`, '-c', fileCfg]).status, 0);
  assert.is(cidlock(['users', 'set', 'c1@example.com', '--mode', 'learn', '-c', fileCfg]).status, 0);
  const url = `redis://127.0.0.1:${redis.port}/0`;
  const pw = join(dir, 'pw');
  writeFileSync(pw, `${PASSWORD}\n`, { mode: 0o600 });
  const args = ['store', 'copy', '--password-file', pw, '--key-prefix', 'copied:', '-c', fileCfg];
  const r = cidlock([...args, '--from', join(dir, 'state'), '--to', url]);
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /^copied 5 users and 5 devices, with the CID key, from .* \(file store\) to redis:\/\/127\.0\.0\.1:\d+\/0 \(key prefix "copied:"\); read back: identical/);
  const again = cidlock([...args, '--from', join(dir, 'state'), '--to', url]);
  assert.is(again.status, 1);
  assert.match(again.stderr, /holds a registry already; nothing was changed \(--force replaces it/);
  assert.is(cidlock([...args, '--from', join(dir, 'state'), '--to', url, '--force']).status, 0);
  const back = join(dir, 'back');
  const b = cidlock([...args, '--from', url, '--to', back]);
  assert.is(b.status, 0, b.stderr);
  const list = (d: string) => {
    writeFileSync(join(dir, 'list.yaml'), `state_dir: ${d}\n`);
    return cidlock(['devices', 'list', '--json', '-c', join(dir, 'list.yaml')]).stdout;
  };
  assert.is(list(back), list(join(dir, 'state')));
  assert.match(cidlock(['users', 'show', 'c1@example.com', '-c', join(dir, 'list.yaml')]).stdout, /mode +learn/);
  // Wrong password: exit 5, said, not echoed; host A's prefix is untouched by all this.
  writeFileSync(pw, 'wrong-password\n');
  const denied = cidlock([...args, '--from', url, '--to', join(dir, 'x')]);
  assert.is(denied.status, 5, denied.stderr);
  assert.match(denied.stderr, /Redis refused the password \(authentication failed \(WRONGPASS\).*\); check store\.password_file; nothing was changed/);
  assert.not.ok(denied.stderr.includes('wrong-password'));
  assert.is(cidlock(['devices', 'list', 'c1@example.com', '--json', '-c', a.cfg]).stdout, '');
});

test.run();
