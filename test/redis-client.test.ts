// cidlock's Redis client against real, private redis-server and redis-sentinel processes, plus
// fake servers (node:net) for what a real one never does: garbage, silence, a scripted Sentinel.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { BACKOFF_BASE_MS, BACKOFF_CAP_MS, backoffMs, createRedisClient, createRedisSubscriber } from '../src/redis/client.js';
import { createRespParser } from '../src/redis/resp.js';
import { RedisError, type RedisClient, type RedisClientOptions, type RedisState, type RedisSubscriber } from '../src/redis/types.js';
import { repoRoot } from './helpers/paths.js';
import { requireRedis, startRedis, startSentinel, waitUntil, type RedisInstance } from './helpers/redis.js';
import { tempDir } from './helpers/tmp.js';

const rtest = requireRedis('redis client') ? test : test.skip;
const HOST = '127.0.0.1';

const instances: RedisInstance[] = [];
const clients: Array<{ close(): Promise<void> }> = [];
const servers: Server[] = [];
test.after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(instances.map((i) => i.stop()));
  for (const s of servers) s.close();
});

async function redis(o: Partial<Parameters<typeof startRedis>[0]> = {}): Promise<RedisInstance> {
  const r = await startRedis({ dir: tempDir('cidlock-redis-'), ...o });
  instances.push(r);
  return r;
}

type Events = Array<[RedisState, string]>;

function client(port: number, o: Partial<RedisClientOptions> = {}, events: Events = []): RedisClient {
  const c = createRedisClient({
    address: { target: { kind: 'direct', host: HOST, port }, db: 0 },
    onState: (s, d) => events.push([s, d]),
    ...o,
  });
  clients.push(c);
  return c;
}

async function rejects(p: Promise<unknown>, code: RedisError['code'], re?: RegExp): Promise<RedisError> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, RedisError, String(e));
    assert.is((e as RedisError).code, code, (e as Error).message);
    if (re) assert.match((e as Error).message, re);
    return e as RedisError;
  }
  return assert.unreachable(`expected a "${code}" rejection`) as never;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** RESP2 text for a fake server's replies. */
function resp(v: string | number | null | Array<string | number | null>): string {
  if (v === null) return '$-1\r\n';
  if (typeof v === 'number') return `:${v}\r\n`;
  if (Array.isArray(v)) return `*${v.length}\r\n${v.map(resp).join('')}`;
  return `$${Buffer.byteLength(v)}\r\n${v}\r\n`;
}

function fakeServer(onConnection: (s: Socket) => void): Promise<{ port: number; connections: Socket[] }> {
  const connections: Socket[] = [];
  const srv = createServer((s) => {
    connections.push(s);
    s.on('error', () => {});
    onConnection(s);
  });
  servers.push(srv);
  return new Promise((r) => srv.listen(0, HOST, () => r({ port: (srv.address() as { port: number }).port, connections })));
}

/** A Sentinel that names whatever primary the test says and publishes +switch-master on demand. */
async function fakeSentinel(primary: () => number | null) {
  const subscribed = new Set<Socket>();
  const { port } = await fakeServer((s) => {
    const parser = createRespParser();
    s.on('close', () => subscribed.delete(s));
    s.on('data', (d) => {
      for (const cmd of parser.push(d) as string[][]) {
        const name = cmd[0]!.toUpperCase();
        if (name === 'SENTINEL') {
          const p = primary();
          s.write(p === null ? '*-1\r\n' : resp([HOST, String(p)]));
        } else if (name === 'SUBSCRIBE') {
          subscribed.add(s);
          s.write(resp(['subscribe', cmd[1]!, 1]));
        } else if (name === 'PING') s.write(subscribed.has(s) ? resp(['pong', '']) : '+PONG\r\n');
        else s.write('-ERR unknown command\r\n');
      }
    });
  });
  return {
    port,
    subscribers: () => subscribed.size,
    switchMaster: (msg: string) => {
      for (const s of subscribed) s.write(resp(['message', '+switch-master', msg]));
    },
  };
}

rtest('basic commands and reply types; a server error rejects "server" and the connection keeps serving', async () => {
  const r = await redis();
  const events: Events = [];
  const c = client(r.port, { name: 'cidlock:test' }, events);
  await c.ready(5000);
  assert.is(c.state, 'ready');
  assert.is(c.server, `${HOST}:${r.port}`);
  assert.equal(events[events.length - 1], ['ready', `connected to ${HOST}:${r.port}`]);
  assert.is(await c.command(['SET', 'k', 'värde']), 'OK');
  assert.is(await c.command(['GET', 'k']), 'värde');
  assert.is(await c.command(['GET', 'missing']), null);
  assert.is(await c.command(['INCR', 'n']), 1);
  assert.is(await c.command(['INCRBY', 'n', 41]), 42);
  assert.is(await c.command(['RPUSH', 'l', 'a', 'b', Buffer.from('c')]), 3);
  assert.equal(await c.command(['LRANGE', 'l', 0, -1]), ['a', 'b', 'c']);
  assert.equal(await c.command(['LRANGE', 'nothing', 0, -1]), []);
  assert.equal(await c.command(['EVAL', "return {1, {'x', {2, 'y'}}, redis.call('GET', KEYS[1])}", 1, 'k']), [1, ['x', [2, 'y']], 'värde']);
  assert.is(await c.command(['CLIENT', 'GETNAME']), 'cidlock:test');
  await rejects(c.command(['LPUSH', 'k', 'x']), 'server', /^WRONGTYPE/);
  await rejects(c.command(['NOSUCHCOMMAND']), 'server', /unknown command/);
  // An error nested in an array (a script's {err=...} inside a table) refuses the whole reply.
  await rejects(c.command(['MULTI']).then(() => Promise.all([c.command(['INCR', 'k']), c.command(['EXEC'])])), 'server', /not an integer/);
  assert.is(await c.command(['GET', 'k']), 'värde');
  assert.is(c.state, 'ready');
});

rtest('pipelining: 10,000 commands issued in one tick are all answered, in order', async () => {
  const r = await redis();
  const c = client(r.port);
  await c.ready(5000);
  const n = 10_000;
  const replies = await Promise.all(Array.from({ length: n }, (_, i) => (i % 2 === 0 ? c.command(['INCR', 'seq']) : c.command(['ECHO', `e${i}`]))));
  for (let i = 0; i < n; i++) assert.is(replies[i], i % 2 === 0 ? i / 2 + 1 : `e${i}`);
  assert.is(await c.command(['GET', 'seq']), String(n / 2));
});

rtest('AUTH: the right password works; a wrong one leaves the client down with no password in the detail; SELECT isolates', async () => {
  const password = 'correct-horse-battery';
  const r = await redis({ password });
  const good = client(r.port, { password });
  await good.ready(5000);
  assert.is(await good.command(['SET', 'k', 'db0']), 'OK');

  const wrongPw = 'wr0ng-Secret-Pw';
  const events: Events = [];
  const bad = client(r.port, { password: wrongPw }, events);
  await rejects(bad.ready(700), 'unavailable', /authentication failed \(WRONGPASS\)/);
  assert.is(bad.state, 'down');
  assert.is(bad.server, null);
  await rejects(bad.command(['PING']), 'unavailable', /WRONGPASS/);
  assert.ok(events.some(([s, d]) => s === 'down' && /authentication failed \(WRONGPASS\)/.test(d)), JSON.stringify(events));
  for (const [, d] of events) assert.not.ok(d.includes(wrongPw) || d.includes(password), d);

  const userEvents: Events = [];
  const withUser = client(r.port, { username: 'nobody', password: wrongPw }, userEvents);
  await rejects(withUser.ready(500), 'unavailable', /WRONGPASS/);
  const none = client(r.port, {}, []);
  await rejects(none.ready(500), 'unavailable', /NOAUTH/);
  const aclUser = client(r.port, { username: 'default', password });
  await aclUser.ready(5000);

  const db5 = client(r.port, { password, address: { target: { kind: 'direct', host: HOST, port: r.port }, db: 5 } });
  await db5.ready(5000);
  assert.is(await db5.command(['GET', 'k']), null);
  assert.is(await db5.command(['SET', 'k', 'db5']), 'OK');
  assert.is(await good.command(['GET', 'k']), 'db0');
  assert.is(await r.cli(['-n', '5', 'GET', 'k']), 'db5');
  const outOfRange = client(r.port, { password, address: { target: { kind: 'direct', host: HOST, port: r.port }, db: 99 } });
  await rejects(outOfRange.ready(500), 'unavailable', /SELECT 99 failed .*out of range/);
});

rtest('timeout: a paused server makes a 200 ms command reject "timeout"; its late reply is discarded, later replies match', async () => {
  const r = await redis();
  const c = client(r.port, { commandTimeoutMs: 5000 });
  await c.ready(5000);
  await c.command(['SET', 'a', 'A']);
  await c.command(['SET', 'b', 'B']);
  await r.cli(['CLIENT', 'PAUSE', '1500', 'ALL']);
  const t0 = Date.now();
  await rejects(c.command(['GET', 'a'], { timeoutMs: 200 }), 'timeout', /within 200 ms/);
  assert.ok(Date.now() - t0 < 1400, 'rejected before the pause ended');
  // Queued behind the timed-out GET a: must get its own reply, not "A".
  assert.is(await c.command(['GET', 'b']), 'B');
  assert.is(await c.command(['GET', 'a']), 'A');
  assert.is(c.state, 'ready');
});

rtest('kill -9 with commands outstanding: they reject "unavailable"; after restart the client reconnects by itself', async () => {
  const r = await redis();
  const events: Events = [];
  const c = client(r.port, { commandTimeoutMs: 10_000 }, events);
  await c.ready(5000);
  await r.cli(['CLIENT', 'PAUSE', '10000', 'ALL']);
  const outstanding = [c.command(['PING']), c.command(['SET', 'x', '1']), c.command(['GET', 'x'])].map((p) => rejects(p, 'unavailable'));
  await sleep(100);
  await r.kill9();
  await Promise.all(outstanding);
  await waitUntil('state down', () => c.state === 'down');
  await rejects(c.command(['PING']), 'unavailable', /not connected/);
  const t0 = Date.now();
  await r.restart();
  const restarted = Date.now();
  await c.ready(10_000);
  const back = Date.now();
  process.stdout.write(`\n  reconnect: ready ${back - t0} ms after the restart began (the server answered PING after ${restarted - t0} ms)\n`);
  assert.is(await c.command(['PING']), 'PONG');
  assert.ok(events.some(([s, d]) => s === 'down' && /connection|closed|refused|reset/.test(d)), JSON.stringify(events));
});

rtest('maxPending: beyond it commands reject "unavailable" at once; those admitted complete', async () => {
  const r = await redis();
  const c = client(r.port, { maxPending: 5, commandTimeoutMs: 5000 });
  await c.ready(5000);
  await r.cli(['CLIENT', 'PAUSE', '500', 'ALL']);
  const ps = Array.from({ length: 7 }, (_, i) => c.command(['ECHO', `m${i}`]));
  const refused = ps.slice(5).map((p) => rejects(p, 'unavailable', /maxPending/));
  assert.equal(await Promise.all(ps.slice(0, 5)), ['m0', 'm1', 'm2', 'm3', 'm4']);
  await Promise.all(refused);
  assert.is(await c.command(['ECHO', 'after']), 'after');
});

test('commands issued in one tick reach the server in one write', async () => {
  const chunks: string[] = [];
  const fake = await fakeServer((s) =>
    s.on('data', (d) => {
      chunks.push(d.toString());
      const n = (d.toString().match(/^\*/gm) ?? []).length;
      s.write('+OK\r\n'.repeat(n));
    }),
  );
  const c = client(fake.port);
  await c.ready(5000);
  const n = chunks.length;
  assert.equal(await Promise.all([c.command(['SET', 'a', '1']), c.command(['SET', 'b', '2']), c.command(['GET', 'a'])]), ['OK', 'OK', 'OK']);
  assert.equal(chunks.slice(n), ['*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\n2\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n']);
});

test('backoff: doubles from the base to the cap, drawn from [delay/2, delay]', () => {
  assert.is(backoffMs(0, () => 1), BACKOFF_BASE_MS);
  assert.is(backoffMs(0, () => 0), BACKOFF_BASE_MS / 2);
  assert.is(backoffMs(3, () => 1), BACKOFF_BASE_MS * 8);
  assert.is(backoffMs(10, () => 1), BACKOFF_CAP_MS);
  assert.is(backoffMs(1000, () => 0), BACKOFF_CAP_MS / 2);
  for (let i = 0; i < 100; i++) {
    const d = backoffMs(i % 12);
    assert.ok(d >= BACKOFF_BASE_MS / 2 && d <= BACKOFF_CAP_MS, String(d));
  }
});

test('a server sending garbage: "protocol" error, the connection is dropped and made again', async () => {
  // It answers the handshake's PING, then turns into something else.
  const fake = await fakeServer((s) => {
    let n = 0;
    s.on('data', () => s.write(n++ === 0 ? '+PONG\r\n' : 'HTTP/1.1 400 Bad Request\r\n\r\n'));
  });
  const events: Events = [];
  const c = client(fake.port, {}, events);
  await c.ready(5000);
  await rejects(c.command(['PING']), 'protocol', /unknown reply type byte 0x48/);
  await waitUntil('a second connection', () => fake.connections.length >= 2);
  assert.ok(events.some(([s, d]) => s === 'down' && /protocol error/.test(d)), JSON.stringify(events));
  assert.ok(fake.connections[0]!.destroyed || fake.connections[0]!.readableEnded);
});

test('a server that accepts but never answers: "timeout", then the connection is presumed dead, dropped and made again, under load too', async () => {
  const fake = await fakeServer((s) => s.once('data', () => s.write('+PONG\r\n')));
  const events: Events = [];
  const c = client(fake.port, { commandTimeoutMs: 300 }, events);
  await c.ready(5000);
  const t1 = Date.now();
  // The oldest command, with more patience, keeps the connection for its whole deadline (replies
  // come in order: nothing behind it could be answered first)...
  const first = rejects(c.command(['GET', 'y'], { timeoutMs: 1200 }), 'timeout', /within 1200 ms/);
  const second = rejects(c.command(['GET', 'x']), 'timeout', /within 300 ms/);
  await second;
  assert.is(c.state, 'ready');
  await first;
  assert.ok(Date.now() - t1 >= 1150);
  // ...but once the oldest has had its time in silence, the connection is dropped.
  // The client comes back within a backoff step, too fast to poll its state: count the events.
  const downs = () => events.filter(([s, d]) => s === 'down' && /no reply .* presumed dead/.test(d)).length;
  await waitUntil('presumed dead', () => downs() === 1, 3000);
  await waitUntil('a second connection', () => fake.connections.length >= 2);
  await waitUntil('ready again', () => c.state === 'ready');
  // Under load, newer commands each within their own deadline do not keep a frozen peer alive.
  const t2 = Date.now();
  const flood = setInterval(() => { c.command(['GET', 'z']).catch(() => {}); }, 20);
  try {
    await waitUntil('presumed dead again, under load', () => downs() === 2, 3000);
  } finally {
    clearInterval(flood);
  }
  assert.ok(Date.now() - t2 < 2000, `a frozen peer under load was found after ${Date.now() - t2} ms`);
});

test('no server at all: ready() rejects after its time with the reason; command() rejects at once; close() ends the retries', async () => {
  const fake = await fakeServer(() => {});
  const port = fake.port;
  servers.pop()!.close();
  await sleep(50);
  const events: Events = [];
  const c = client(port, {}, events);
  await rejects(c.ready(300), 'unavailable', /connection refused/);
  const t0 = Date.now();
  await rejects(c.command(['PING']), 'unavailable', /connection refused/);
  assert.ok(Date.now() - t0 < 50);
  await c.close();
  assert.is(c.state, 'closed');
  await rejects(c.command(['PING']), 'unavailable', /closed/);
  await rejects(c.ready(100), 'unavailable', /closed/);
  const n = events.length;
  await sleep(300);
  assert.is(events.length, n, 'no more attempts after close');
});

rtest('close(): pending commands reject "unavailable" and the process can exit (no dangling handles)', async () => {
  const r = await redis();
  const c = client(r.port, { commandTimeoutMs: 5000 });
  await c.ready(5000);
  await r.cli(['CLIENT', 'PAUSE', '1000', 'ALL']);
  const p = rejects(c.command(['PING']), 'unavailable', /closed/);
  await sleep(50);
  await c.close();
  await p;
  const fs = await fakeSentinel(() => r.port);
  // A child process that connects (directly, and through a Sentinel), closes, and must then exit on its own.
  const script = `
    const { createRedisClient, createRedisSubscriber } = await import(${JSON.stringify(join(repoRoot, 'dist/src/redis/client.js'))});
    const a = createRedisClient({ address: { target: { kind: 'direct', host: '${HOST}', port: ${r.port} }, db: 0 } });
    const b = createRedisClient({ address: { target: { kind: 'sentinel', sentinels: [{ host: '${HOST}', port: ${fs.port} }], master: 'm' }, db: 0 } });
    const s = createRedisSubscriber({ address: { target: { kind: 'direct', host: '${HOST}', port: ${r.port} }, db: 0 } });
    const d = createRedisClient({ address: { target: { kind: 'direct', host: '${HOST}', port: 1 }, db: 0 } });
    await a.ready(5000); await b.ready(5000);
    await s.subscribe('x', () => {});
    await a.command(['SET', 'child', 'yes']); await b.command(['GET', 'child']);
    await Promise.all([a.close(), b.close(), s.close(), d.close()]);
    process.stdout.write('closed');
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((resolve) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      resolve(-1);
    }, 8000);
    child.on('exit', (c) => {
      clearTimeout(t);
      resolve(c);
    });
  });
  assert.is(code, 0, `child did not exit by itself: ${out}`);
  assert.is(out, 'closed');
});

rtest('subscriber: receives published messages; after the server restarts it resubscribes and receives again', async () => {
  const password = 'sub-pw-123';
  const r = await redis({ password });
  const got: string[] = [];
  const states: Events = [];
  const sub: RedisSubscriber = createRedisSubscriber({
    address: { target: { kind: 'direct', host: HOST, port: r.port }, db: 3 },
    password,
    commandTimeoutMs: 500,
    onState: (s, d) => states.push([s, d]),
  });
  clients.push(sub);
  const early = await sub.subscribe('early', (m) => got.push(`early:${m}`));
  await waitUntil('subscriber ready', () => sub.state === 'ready');
  const off = await sub.subscribe('cidlock:events', (m) => got.push(m));
  const pub = client(r.port, { password });
  await pub.ready(5000);
  assert.is(await pub.command(['PUBLISH', 'cidlock:events', 'one']), 1);
  assert.is(await pub.command(['PUBLISH', 'early', 'e1']), 1);
  await waitUntil('two messages', () => got.length === 2);
  assert.equal(got.sort(), ['early:e1', 'one']);

  await r.stop();
  await waitUntil('subscriber down', () => sub.state === 'down');
  await r.restart();
  await waitUntil('subscriber ready again', () => sub.state === 'ready', 10_000);
  await pub.ready(10_000);
  assert.is(await pub.command(['PUBLISH', 'cidlock:events', 'two']), 1);
  assert.is(await pub.command(['PUBLISH', 'early', 'e2']), 1);
  await waitUntil('messages after restart', () => got.includes('two') && got.includes('early:e2'));

  await off();
  await early();
  assert.is(await pub.command(['PUBLISH', 'cidlock:events', 'three']), 0);
  assert.not.ok(got.includes('three'));
  assert.ok(states.filter(([s]) => s === 'ready').length >= 2);
});

rtest('Sentinel: finds the primary; kill -9 of the primary: follows the failover to the promoted replica, writes succeed there', async () => {
  const dir = tempDir('cidlock-sentinel-');
  const primary = await redis({ dir });
  const replica = await redis({ dir, replicaOf: { host: HOST, port: primary.port } });
  await waitUntil('replica in sync', async () => /master_link_status:up/.test(await replica.cli(['INFO', 'replication'])));
  const sentinel = await startSentinel({ dir, master: { host: HOST, port: primary.port, name: 'cidlock' }, quorum: 1, downAfterMs: 1000, failoverTimeoutMs: 3000 });
  instances.push(sentinel);
  await waitUntil('the sentinel knows the replica', async () => {
    const out = await sentinel.cli(['SENTINEL', 'replicas', 'cidlock']);
    return out.includes(String(replica.port)) && !/s_down|disconnected/.test(out);
  });
  const events: Events = [];
  const c = createRedisClient({
    address: { target: { kind: 'sentinel', sentinels: [{ host: HOST, port: 1 }, { host: HOST, port: sentinel.port }], master: 'cidlock' }, db: 2 },
    onState: (s, d) => events.push([s, d]),
  });
  clients.push(c);
  await c.ready(5000);
  assert.is(c.server, `${HOST}:${primary.port}`);
  assert.is(await c.command(['SET', 'before', '1']), 'OK');

  await primary.kill9();
  const t0 = Date.now();
  let ms = -1;
  while (Date.now() - t0 < 30_000) {
    try {
      await c.command(['SET', 'after', 'x']);
      ms = Date.now() - t0;
      break;
    } catch (e) {
      assert.instance(e, RedisError);
      await sleep(25);
    }
  }
  process.stdout.write(`\n  Sentinel failover: first successful write ${ms} ms after kill -9 of the primary (down-after 1000 ms)\n`);
  process.stdout.write(`  states: ${events.map(([s, d]) => `${s}: ${d}`).join(' | ')}\n`);
  assert.ok(ms >= 0 && ms < 15_000, `failover took ${ms} ms`);
  assert.is(c.server, `${HOST}:${replica.port}`);
  assert.is(await replica.cli(['-n', '2', 'GET', 'after']), 'x');
  assert.is(await c.command(['GET', 'before']), '1');
});

rtest('Sentinel: a primary demoted to replica answers READONLY; the client asks again, refuses a replica by ROLE, and moves', async () => {
  const a = await redis();
  const b = await redis();
  let named = a.port;
  const fs = await fakeSentinel(() => named);
  const events: Events = [];
  const c = createRedisClient({
    address: { target: { kind: 'sentinel', sentinels: [{ host: HOST, port: fs.port }], master: 'm' }, db: 0 },
    onState: (s, d) => events.push([s, d]),
  });
  clients.push(c);
  await c.ready(5000);
  assert.is(c.server, `${HOST}:${a.port}`);
  await a.cli(['REPLICAOF', HOST, String(b.port)]);
  await rejects(c.command(['SET', 'k', 'v']), 'server', /^READONLY/);
  await waitUntil('ROLE refused', () => events.some(([s, d]) => s === 'down' && d.includes(`${HOST}:${a.port} is not the primary (role slave)`)));
  assert.ok(events.some(([s, d]) => s === 'down' && /READONLY/.test(d)), JSON.stringify(events));
  named = b.port;
  await c.ready(5000);
  assert.is(c.server, `${HOST}:${b.port}`);
  assert.is(await c.command(['SET', 'k', 'v']), 'OK');
});

rtest('Sentinel: +switch-master moves the client at once, even from a healthy server', async () => {
  const a = await redis();
  const b = await redis();
  let named = a.port;
  const fs = await fakeSentinel(() => named);
  const events: Events = [];
  const c = createRedisClient({
    address: { target: { kind: 'sentinel', sentinels: [{ host: HOST, port: fs.port }], master: 'm' }, db: 0 },
    onState: (s, d) => events.push([s, d]),
  });
  clients.push(c);
  await c.ready(5000);
  await waitUntil('the client subscribed to +switch-master', () => fs.subscribers() === 1);
  named = b.port;
  fs.switchMaster(`other ${HOST} ${a.port} ${HOST} 1`);
  await sleep(100);
  assert.is(c.server, `${HOST}:${a.port}`, 'another master name is ignored');
  const t0 = Date.now();
  fs.switchMaster(`m ${HOST} ${a.port} ${HOST} ${b.port}`);
  await waitUntil('moved', () => c.server === `${HOST}:${b.port}`);
  assert.ok(Date.now() - t0 < 1000);
  assert.ok(events.some(([s, d]) => s === 'down' && d === `failover: primary is now ${HOST}:${b.port}`), JSON.stringify(events));
  assert.is(await c.command(['SET', 'k', 'on-b']), 'OK');
  assert.is(await b.cli(['GET', 'k']), 'on-b');
});

rtest('subscriber through a Sentinel: subscribes on the primary it names, and moves with +switch-master', async () => {
  const a = await redis();
  const b = await redis();
  let named = a.port;
  const fs = await fakeSentinel(() => named);
  const got: string[] = [];
  const sub = createRedisSubscriber({ address: { target: { kind: 'sentinel', sentinels: [{ host: HOST, port: fs.port }], master: 'm' }, db: 0 } });
  clients.push(sub);
  await sub.subscribe('ch', (m) => got.push(m));
  await waitUntil('subscribed on a', async () => (await a.cli(['PUBLISH', 'ch', 'on-a'])) === '1');
  await waitUntil('message from a', () => got.includes('on-a'));
  await waitUntil('watching +switch-master', () => fs.subscribers() === 1);
  named = b.port;
  fs.switchMaster(`m ${HOST} ${a.port} ${HOST} ${b.port}`);
  await waitUntil('subscribed on b', async () => (await b.cli(['PUBLISH', 'ch', 'on-b'])) === '1');
  await waitUntil('message from b', () => got.includes('on-b'));
  assert.is(await a.cli(['PUBLISH', 'ch', 'gone']), '0');
});

test.run();
