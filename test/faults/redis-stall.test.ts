// A hung Redis is worse than a dead one: connections stay open and commands are never answered.
// Two `cidlock serve` daemons share one Redis; Redis is stopped (SIGSTOP) for 5 s while a probe
// asks both daemons' Dovecot endpoints every ~20 ms for a registered device (allowed) and for
// unknown ones (refused). Dovecot allows a login when its policy server does not answer within
// 2 s, so a slow answer is a bypass: every answer must be right and under 2 s. /readyz must say
// "not ready" during the stall (the client's command timeout is 1 s and the registry sync keeps
// polling), and both daemons must be ready again once Redis continues (SIGCONT).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cidlock } from '../helpers/cli.js';
import { httpGet, startServe, type ServeProcess } from '../helpers/daemon.js';
import { post, TEST_DOVECOT_KEY } from '../helpers/http.js';
import { sleep } from '../helpers/redis-faults.js';
import { requireRedis, startRedis, waitUntil, type RedisInstance } from '../helpers/redis.js';
import { tempDir } from '../helpers/tmp.js';

const ready = requireRedis('faults/redis-stall');
const check = ready ? test : test.skip;
const STALL_MS = 5000;
const DOVECOT_TIMEOUT_MS = 2000;

let redis: RedisInstance | undefined;
const daemons: ServeProcess[] = [];

test.after(async () => {
  if (redis?.pid !== undefined) process.kill(redis.pid, 'SIGCONT');
  await Promise.all(daemons.map((d) => d.stop()));
  await redis?.stop();
});

interface Host { name: string; cfg: string; serve: ServeProcess; dovecot: number; admin: string }

async function startHost(name: string, port: number): Promise<Host> {
  const dir = tempDir(`cidlock-${name}-`);
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, [
    'state_dir: ./state',
    'listen: { admin: 127.0.0.1:0, dovecot: 127.0.0.1:0, postfix: off, socketmap: off }',
    `dovecot: { api_key: "${TEST_DOVECOT_KEY}" }`,
    `store: { redis: "redis://127.0.0.1:${port}/0", key_prefix: "stall:" }`,
    'policy: { mode: enforce }',
    'log: { decisions: refusals }',
    '',
  ].join('\n'));
  const serve = startServe(cfg);
  daemons.push(serve);
  const dovecot = Number((await serve.address('dovecot')).split(':')[1]);
  return { name, cfg, serve, dovecot, admin: await serve.address('admin') };
}

let n = 0;
const login = (user: string, token: string) => {
  n++;
  // Every request from its own address and every unknown device for one of 50 users: the
  // password-guessing limits (per address, network and user) never slow a probe down.
  return JSON.stringify({ login: user, protocol: 'imap', remote: `10.${(n >> 8) & 255}.${n & 255}.9`, device_id: `"clientid" "UUID ${token}"`, tls: true, session_id: `stall-${n}` });
};

interface Probe { host: string; at: number; ms: number; want: 'allow' | 'refuse'; ok: boolean; body: string }

check('Redis stopped for 5 s under two daemons: every Dovecot request answered right within 2 s, /readyz says so, all ready after SIGCONT', async () => {
  redis = await startRedis({ dir: tempDir('cidlock-redis-'), appendonly: true, appendfsync: 'always' });
  const hosts = [await startHost('a', redis.port), await startHost('b', redis.port)];
  const add = cidlock(['devices', 'add', 'alice@example.com', 'UUID laptop-1', '-c', hosts[0]!.cfg]);
  assert.is(add.status, 0, add.stderr);
  for (const h of hosts) {
    await waitUntil(`${h.name} allows the registered device`, async () => (await post(h.dovecot, '/?command=allow', login('alice@example.com', 'laptop-1'))).body === '{"status":0}');
  }

  const probes: Probe[] = [];
  const readiness: Array<{ host: string; at: number; status: number }> = [];
  let probing = true;
  const ask = async (h: Host, want: 'allow' | 'refuse') => {
    const body = want === 'allow' ? login('alice@example.com', 'laptop-1') : login(`stranger${n % 50}@example.com`, `unknown-${n}`);
    const t = performance.now();
    const at = Date.now();
    try {
      const r = await post(h.dovecot, '/?command=allow', body);
      const status = (JSON.parse(r.body) as { status: number }).status;
      probes.push({ host: h.name, at, ms: performance.now() - t, want, ok: want === 'allow' ? status === 0 : status < 0, body: r.body });
    } catch (err) {
      probes.push({ host: h.name, at, ms: performance.now() - t, want, ok: false, body: (err as Error).message });
    }
  };
  const probeLoop = (async () => {
    while (probing) {
      await Promise.all(hosts.flatMap((h) => [ask(h, 'allow'), ask(h, 'refuse')]));
      await sleep(20);
    }
  })();
  const readyLoop = (async () => {
    while (probing) {
      await Promise.all(hosts.map(async (h) => {
        const at = Date.now();
        const r = await httpGet(h.admin, '/readyz').catch(() => ({ status: 0 }));
        readiness.push({ host: h.name, at, status: r.status });
      }));
      await sleep(100);
    }
  })();

  let stoppedAt = 0;
  let continuedAt = 0;
  let readyAgainMs = NaN;
  try {
    await sleep(1000);
    for (const h of hosts) assert.is((await httpGet(h.admin, '/readyz')).status, 200, `${h.name} ready before the stall`);
    stoppedAt = Date.now();
    process.kill(redis.pid!, 'SIGSTOP');
    await sleep(STALL_MS);
  } finally {
    process.kill(redis.pid!, 'SIGCONT');
    continuedAt = Date.now();
  }
  try {
    await waitUntil('both daemons ready again', async () => {
      for (const h of hosts) if ((await httpGet(h.admin, '/readyz')).status !== 200) return false;
      return true;
    }, 15_000);
    readyAgainMs = Date.now() - continuedAt;
    await sleep(1000);
  } finally {
    probing = false;
    await Promise.all([probeLoop, readyLoop]);
  }

  const during = probes.filter((p) => p.at >= stoppedAt && p.at <= continuedAt);
  const worst = (ps: Probe[]) => Math.max(...ps.map((p) => p.ms));
  const wrong = probes.filter((p) => !p.ok);
  const notReady = (h: string) => readiness.filter((r) => r.host === h && r.at >= stoppedAt && r.at <= continuedAt && r.status !== 200);
  const firstNotReady = (h: string) => (notReady(h)[0]?.at ?? NaN) - stoppedAt;
  process.stdout.write(`  (${probes.length} Dovecot requests, ${during.length} during the ${STALL_MS} ms stall; worst latency during it ${worst(during).toFixed(1)} ms, overall ${worst(probes).toFixed(1)} ms; /readyz not ready ${hosts.map((h) => `on ${h.name} from ${firstNotReady(h.name)} ms`).join(', ')} after SIGSTOP; both ready ${readyAgainMs} ms after SIGCONT)\n`);

  // A refused login asks Redis whether another host vouched for its address, and waits up to
  // 250 ms for a hung Redis until the client declares the connection dead: rounds are slower then.
  assert.ok(during.length > 40, `only ${during.length} requests during the stall`);
  for (const h of hosts) assert.ok(during.some((p) => p.host === h.name && p.want === 'allow') && during.some((p) => p.host === h.name && p.want === 'refuse'), `${h.name} was not asked during the stall`);
  assert.equal(wrong.slice(0, 5).map((p) => `${p.host} ${p.want}: ${p.body}`), [], `${wrong.length} wrong answers`);
  assert.ok(worst(probes) < DOVECOT_TIMEOUT_MS, `a request took ${worst(probes).toFixed(0)} ms: Dovecot would have allowed the login without cidlock`);
  for (const h of hosts) {
    assert.ok(notReady(h.name).length > 0, `${h.name}'s /readyz never reported the hung store`);
    await h.serve.waitFor((l) => l.event === 'store_connection' && l.state === 'down', `${h.name} logs the store down`, 1000);
  }
  assert.ok(readyAgainMs < 10_000, `ready again only ${readyAgainMs} ms after SIGCONT`);
  // And the shared registry works again: a change made on A is in force on B.
  assert.is(cidlock(['devices', 'add', 'alice@example.com', 'UUID phone-2', '-c', hosts[0]!.cfg]).status, 0);
  await waitUntil('B allows the device A registered after the stall', async () => (await post(hosts[1]!.dovecot, '/?command=allow', login('alice@example.com', 'phone-2'))).body === '{"status":0}', 5000);
});

test.run();
