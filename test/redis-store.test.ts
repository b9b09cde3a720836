// The registry on a real Redis: several hosts (here: several registries, each with its own
// connection, as separate processes would have) share devices, modes and the CID key, and a
// registry copied between the file store and Redis reads back identical.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { copyRegistry, registryDigest } from '../src/core/registry/copy.js';
import { fileStore } from '../src/core/registry/file-store.js';
import { redisStore } from '../src/core/registry/redis-store.js';
import { openRegistry, type Registry, type RegistryChange } from '../src/core/registry/registry.js';
import { RegistryError, type RegistryStore } from '../src/core/registry/types.js';
import { createRedisClient } from '../src/redis/client.js';
import type { RedisClient } from '../src/redis/types.js';
import { requireRedis, startRedis, type RedisInstance } from './helpers/redis.js';
import { rejects } from './helpers/registry-error.js';
import { tempDir } from './helpers/tmp.js';

const ready = requireRedis('redis-store');
const check = ready ? test : test.skip;

const LAPTOP = { type: 'UUID', token: '23bf83be-aad7-46aa-9e0f-39191ccf402f' };
const PHONE = { type: 'TBIRD-UUID', token: 'phone-token-1' };

let server: RedisInstance;
const clients: RedisClient[] = [];
let prefixes = 0;

const connect = async (): Promise<RedisClient> => {
  const c = createRedisClient({ address: { target: { kind: 'direct', host: '127.0.0.1', port: server.port }, db: 0 } });
  clients.push(c);
  await c.ready(5000);
  return c;
};
/** A store on its own connection: what another host would have. */
const store = async (prefix: string, o: { compactBytes?: number; lockWaitMs?: number } = {}) =>
  redisStore(await connect(), { url: `redis://127.0.0.1:${server.port}/0`, keyPrefix: prefix, ...o });
const freshPrefix = () => `t${++prefixes}:`;
const host = async (prefix: string, create = true, o: { compactBytes?: number } = {}): Promise<Registry> => openRegistry(await store(prefix, o), { create });


// Only with Redis at hand: without it every test is registered as skipped.
if (ready) test.before(async () => {
  server = await startRedis({ dir: tempDir('cidlock-redis-'), appendonly: true, appendfsync: 'always' });
});

test.after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await server?.stop();
});

check('a device added on one host matches on another; the CID key is shared and never stored raw', async () => {
  const p = freshPrefix();
  const a = await host(p);
  const b = await host(p, false);
  assert.is(b.findCid('alice@example.com', LAPTOP), undefined, 'nothing before any registration');
  const r = await a.add('alice@example.com', { kind: 'cid', cid: LAPTOP, label: 'laptop' }, 'admin');
  assert.is(r.status, 'added');
  assert.is(await b.refresh(), true);
  const m = b.findCid('alice@example.com', LAPTOP);
  assert.ok(m, 'host B matches the CID host A registered (same key)');
  assert.is(m!.label, 'laptop');
  assert.is(b.cidHash(LAPTOP), a.cidHash(LAPTOP));
  // Nothing in Redis holds the token itself.
  const c = await connect();
  const keys = (await c.command(['KEYS', `${p}*`])) as string[];
  for (const k of keys) {
    const type = await c.command(['TYPE', k]);
    const values = type === 'list' ? ((await c.command(['LRANGE', k, 0, -1])) as string[]) : type === 'string' ? [String(await c.command(['GET', k]))] : ((await c.command(['HGETALL', k])) as string[]);
    for (const v of values) assert.not.ok(v.includes(LAPTOP.token), `${k} holds the raw CID`);
  }
  assert.ok(keys.includes(`${p}secret`), `keys: ${keys.join(' ')}`);
});

check('pending devices, sign-in links, labels and last-used days are shared: one host records, the other approves, both see it, and a third host reads it all', async () => {
  const p = freshPrefix();
  const a = await host(p, true, { compactBytes: 1 });
  const b = await host(p, true, { compactBytes: 1 });
  await a.add('alice@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  await b.refresh();
  const hash = a.cidHash(PHONE)!;
  const pend = { hash, kind: 'cid' as const, type: PHONE.type, client: 'Phone Mail', protocol: 'imap', remote: '192.0.2.8', first: 1000, last: 2000, tries: 2, state: 'pending' as const, noticed: 0 };
  await a.change(() => ({ ops: [{ op: 'pend', user: 'alice@example.com', pending: pend }, { op: 'link', user: 'alice@example.com', id: 'c'.repeat(32), exp: Date.now() + 60_000 }], result: undefined }));
  assert.is(await b.refresh(), true);
  assert.equal(b.findPending('alice@example.com', hash), pend);
  assert.is(b.link('alice@example.com', 'c'.repeat(32)) !== undefined, true);
  const laptop = b.cidHash(LAPTOP)!;
  await b.change(() => ({ ops: [
    { op: 'add', user: 'alice@example.com', device: { hash, kind: 'cid', type: PHONE.type, label: 'Phone Mail', added: 3000, source: 'approved' } },
    { op: 'unlink', user: 'alice@example.com', id: 'c'.repeat(32) },
    { op: 'label', user: 'alice@example.com', hash: laptop, label: 'work laptop' },
    { op: 'used', user: 'alice@example.com', hashes: [laptop], at: 86_400_000 },
  ], result: undefined }));
  await a.refresh();
  assert.is(a.findPending('alice@example.com', hash), undefined, 'approved: no longer pending');
  assert.is(a.findCid('alice@example.com', PHONE)?.source, 'approved');
  assert.is(a.link('alice@example.com', 'c'.repeat(32)), undefined);
  assert.is(a.device('alice@example.com', laptop)?.label, 'work laptop');
  assert.is(a.device('alice@example.com', laptop)?.used, 86_400_000);
  // A host that starts now reads it all from Redis.
  const c = await host(p, false);
  assert.is(c.device('alice@example.com', laptop)?.used, 86_400_000);
  assert.is(c.findCid('alice@example.com', PHONE)?.source, 'approved');
});

check('modes and removals reach the other host; its listeners hear the removal; a refresh without news is false', async () => {
  const p = freshPrefix();
  const a = await host(p);
  const b = await host(p, false);
  const laptop = await a.add('bob@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  await a.add('bob@example.com', { kind: 'cid', cid: PHONE }, 'admin');
  await a.setMode('bob@example.com', 'enforce');
  await b.refresh();
  assert.is(b.settings('bob@example.com').mode, 'enforce');
  assert.is(b.deviceCount('bob@example.com'), 2);
  assert.is(await b.refresh(), false);
  const heard: RegistryChange[] = [];
  b.onChange((c) => heard.push(c));
  if (laptop.status !== 'added') throw new Error('setup');
  await a.remove('bob@example.com', { id: laptop.device.id });
  await a.setMode('bob@example.com', null);
  assert.is(await b.refresh(), true);
  assert.equal(heard, [{ kind: 'removed', user: 'bob@example.com', hashes: [laptop.device.hash] }]);
  assert.is(b.settings('bob@example.com').mode, undefined);
  assert.is(b.deviceCount('bob@example.com'), 1);
  // A key prefix is a separate registry on the same server.
  const other = await host(freshPrefix(), false);
  assert.is(other.size().devices, 0);
});

check('two hosts registering at once never lose a device, and max_devices holds across them', async () => {
  const p = freshPrefix();
  const a = await host(p);
  const b = await host(p);
  const cid = (h: string, i: number) => ({ type: 'UUID', token: `${h}-${i}` });
  await Promise.all([
    ...Array.from({ length: 60 }, (_, i) => a.add(`u${i % 7}@example.com`, { kind: 'cid', cid: cid('a', i) }, 'admin')),
    ...Array.from({ length: 60 }, (_, i) => b.add(`u${i % 7}@example.com`, { kind: 'cid', cid: cid('b', i) }, 'admin')),
  ]);
  await a.refresh();
  await b.refresh();
  assert.is(a.size().devices, 120);
  assert.is(b.size().devices, 120);
  assert.is((await registryDigest(a)).digest, (await registryDigest(b)).digest);
  // Learn mode on both hosts at once for a user allowed one device: exactly one is registered.
  const results = await Promise.all([
    a.add('lena@example.com', { kind: 'cid', cid: cid('lena-a', 1) }, 'learn', { maxDevices: 1 }),
    b.add('lena@example.com', { kind: 'cid', cid: cid('lena-b', 1) }, 'learn', { maxDevices: 1 }),
  ]);
  assert.equal(results.map((r) => r.status).sort(), ['added', 'full']);
  await a.refresh();
  assert.is(a.deviceCount('lena@example.com'), 1);
});

check('a growing journal is folded into a new snapshot; the other host rebuilds and old generations expire', async () => {
  const p = freshPrefix();
  const a = await host(p, true, { compactBytes: 1 });
  const b = await host(p, false);
  const heard: RegistryChange[] = [];
  b.onChange((c) => heard.push(c));
  await a.add('carol@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  await a.add('carol@example.com', { kind: 'cid', cid: PHONE }, 'admin');
  const c = await connect();
  const gen = await c.command(['HGET', `${p}head`, 'gen']);
  assert.is(gen, '2', 'each write compacted');
  assert.is(await c.command(['LLEN', `${p}journal:2`]), 0);
  const ttl = await c.command(['TTL', `${p}snapshot:1`]);
  assert.ok(typeof ttl === 'number' && ttl > 0, `the replaced snapshot expires (ttl ${String(ttl)})`);
  assert.is(await c.command(['TTL', `${p}snapshot:2`]), -1, 'the snapshot in force never expires');
  await b.refresh();
  assert.equal(heard, [{ kind: 'reset' }]);
  assert.is(b.deviceCount('carol@example.com'), 2);
  // A fresh host reads the snapshot alone.
  const fresh = await host(p, false);
  assert.is(fresh.deviceCount('carol@example.com'), 2);
  assert.ok(fresh.findCid('carol@example.com', PHONE));
});

check('damage is refused, not overwritten: a head naming a missing snapshot, a bad entry, a bad key', async () => {
  const c = await connect();
  const p1 = freshPrefix();
  await c.command(['HSET', `${p1}head`, 'gen', '7']);
  await rejects(host(p1, false), 'corrupt', /snapshot:7 is missing.*noeviction/);
  const p2 = freshPrefix();
  await c.command(['RPUSH', `${p2}journal:0`, '{"op":"add","u":"x@y.z","d":"nonsense"}']);
  await rejects(host(p2, false), 'corrupt', /journal:0: entry 1/);
  const p3 = freshPrefix();
  await c.command(['SET', `${p3}secret`, 'short']);
  const r = await host(p3, false).catch((e: unknown) => e);
  assert.instance(r, RegistryError);
  assert.is((r as RegistryError).code, 'corrupt');
  assert.is(await c.command(['GET', `${p3}secret`]), 'short', 'left as it was');
});

check('a writer that lost its lock cannot write; a held lock is waited for, then "locked"', async () => {
  const p = freshPrefix();
  const s = await store(p, { lockWaitMs: 300 });
  const c = await connect();
  await openRegistry(s, { create: true });
  const cursor = await s.readAll(() => {});
  const e = await rejects(s.withLock(async () => {
    await c.command(['DEL', `${p}lock`]); // expired while this writer was paused
    return s.append(cursor, [{ op: 'mode', user: 'x@y.z', mode: 'learn' }]);
  }), 'locked', /lock expired/);
  assert.match(e.message, /nothing was written/);
  assert.is(await c.command(['LLEN', `${p}journal:0`]), 0);
  await c.command(['SET', `${p}lock`, 'someone-else', 'PX', 60_000]);
  await rejects(s.withLock(async () => 1), 'locked', /locked by another cidlock/);
  await c.command(['DEL', `${p}lock`]);
  assert.is(await s.withLock(async () => 2), 2);
});

check('Redis gone: a write fails with "io" and changes nothing in memory; back again, writes work', async () => {
  const p = freshPrefix();
  const own = await startRedis({ dir: tempDir('cidlock-redis-'), appendonly: true, appendfsync: 'always' });
  const client = createRedisClient({ address: { target: { kind: 'direct', host: '127.0.0.1', port: own.port }, db: 0 } });
  clients.push(client);
  await client.ready(5000);
  const reg = await openRegistry(redisStore(client, { url: `redis://127.0.0.1:${own.port}/0`, keyPrefix: p }), { create: true });
  await reg.add('dan@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  await own.kill9();
  await rejects(reg.add('dan@example.com', { kind: 'cid', cid: PHONE }, 'admin'), 'io', /Redis/);
  assert.is(reg.deviceCount('dan@example.com'), 1);
  await own.restart();
  await client.ready(10_000);
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await reg.add('dan@example.com', { kind: 'cid', cid: PHONE }, 'admin');
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  assert.is(reg.deviceCount('dan@example.com'), 2, 'appendfsync always: the first device survived kill -9');
  await own.stop();
});

async function fill(s: RegistryStore): Promise<Registry> {
  const reg = await openRegistry(s, { create: true });
  await reg.addMany(Array.from({ length: 300 }, (_, i) => ({ user: `m${i % 40}@example.com`, input: { kind: 'cid' as const, cid: { type: 'UUID', token: `m-${i}` }, label: `dev ${i}` } })));
  await reg.add('m1@example.com', { kind: 'cert', fingerprint: 'ab'.repeat(32), label: 'phone cert' }, 'admin');
  await reg.setMode('m2@example.com', 'learn');
  await reg.setMode('m3@example.com', 'enforce');
  return reg;
}

check('store copy: file store to Redis and back, identical, key included; a non-empty target is left alone', async () => {
  const dir = tempDir();
  const source = await fill(fileStore(dir));
  const want = await registryDigest(source);
  const p = freshPrefix();
  const r = await copyRegistry(fileStore(dir), await store(p), { replace: false });
  assert.equal(r, { status: 'copied', ...want });
  const onRedis = await host(p, false);
  assert.is((await registryDigest(onRedis)).digest, want.digest);
  assert.ok(onRedis.findCid('m5@example.com', { type: 'UUID', token: 'm-5' }), 'a CID matches on the copy: the key came along');
  assert.is(onRedis.settings('m2@example.com').mode, 'learn');
  // Again without --force: nothing changes.
  await onRedis.setMode('m9@example.com', 'off');
  assert.equal(await copyRegistry(fileStore(dir), await store(p), { replace: false }), { status: 'not_empty' });
  assert.is((await host(p, false)).settings('m9@example.com').mode, 'off');
  // With it: replaced by the source exactly.
  assert.equal(await copyRegistry(fileStore(dir), await store(p), { replace: true }), { status: 'copied', ...want });
  assert.is((await host(p, false)).settings('m9@example.com').mode, undefined);
  // And back to a new state_dir.
  const back = join(tempDir(), 'state');
  assert.equal(await copyRegistry(await store(p), fileStore(back), { replace: false }), { status: 'copied', ...want });
  assert.ok(existsSync(join(back, 'secret')));
  const reread = await openRegistry(fileStore(back), { create: false });
  assert.is((await registryDigest(reread)).digest, want.digest);
  assert.ok(reread.findCid('m5@example.com', { type: 'UUID', token: 'm-5' }));
});

test.run();
