// kill -9 of Redis (appendonly yes, appendfsync always) and of registry writers at random moments
// while devices are being registered and the journal compacted into new snapshots: after every
// kill the registry loads in a fresh reader, and every registration a writer acknowledged before
// the kill is there. Then what a lock left behind by a kill costs: a writer killed holding the
// registry lock keeps every other writer out until the lock expires (LOCK_TTL_MS in
// redis-store.ts, 5 s); Redis killed while a live writer held it keeps out nobody: that writer
// releases its lock once Redis is back.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CIDLOCK } from '../helpers/cli.js';
import { missing, sleep, startWriter, withFreshRegistry, type Ack, type Writer } from '../helpers/redis-faults.js';
import { requireRedis, startRedis, waitUntil, type RedisInstance } from '../helpers/redis.js';
import { tempDir } from '../helpers/tmp.js';
import { LOCK_TTL_MS } from '../../src/core/registry/redis-store.js';

const ready = requireRedis('faults/redis-store');
const check = ready ? test : test.skip;
const LONG = process.env.FAULTS_LONG === '1';
const CYCLES = LONG ? 200 : 50;

const servers: RedisInstance[] = [];
const writers: Writer[] = [];
const redis = async (): Promise<RedisInstance> => {
  const r = await startRedis({ dir: tempDir('cidlock-redis-'), appendonly: true, appendfsync: 'always' });
  servers.push(r);
  return r;
};
const writer = (...a: Parameters<typeof startWriter>): Writer => {
  const w = startWriter(...a);
  writers.push(w);
  return w;
};
const urlOf = (r: RedisInstance) => `redis://127.0.0.1:${r.port}/0`;
const pttl = async (r: RedisInstance, key: string): Promise<number> => Number(await r.cli(['PTTL', key]));
/** restart() returns once Redis answers at all, "-LOADING" included: wait until the AOF is loaded. */
const restarted = async (r: RedisInstance): Promise<void> => {
  await r.restart();
  await waitUntil('Redis loaded its AOF', async () => (await r.cli(['PING'])) === 'PONG', 30_000);
};

test.after(async () => {
  await Promise.all(writers.map((w) => w.kill9()));
  await Promise.all(servers.map((s) => s.stop()));
});

check(`${CYCLES} kill -9 cycles of Redis (appendfsync always) and of writers lose nothing acknowledged`, async () => {
  const r = await redis();
  const url = urlOf(r);
  const prefix = 'crash:';
  // A small compaction threshold (about 400 entries): kills also land while a new snapshot is written.
  const compactBytes = 50_000;
  const all: Writer[] = [];
  let w = writer(url, prefix, 'w0-', { compactBytes });
  all.push(w);
  let redisKills = 0;
  let writerKills = 0;
  let writerDiedHoldingLock = 0;
  let staleLocksAfterRestart = 0;
  let slowestRecoveryMs = 0;
  for (let cycle = 0; cycle < CYCLES; cycle++) {
    // Something to lose in every cycle: the kill is armed after this cycle's first acknowledgement.
    const t0 = Date.now();
    await w.acked(1, 15_000, `cycle ${cycle}`);
    slowestRecoveryMs = Math.max(slowestRecoveryMs, Date.now() - t0);
    await sleep(Math.random() * 300);
    if (cycle % 3 === 2) {
      await w.kill9();
      writerKills++;
      const left = await pttl(r, `${prefix}lock`);
      if (left !== -2) {
        // Killed inside a write: its lock must expire by itself (the test below waits for that once).
        assert.ok(left > 0 && left <= LOCK_TTL_MS, `cycle ${cycle}: the dead writer's lock has PTTL ${left}: it would never expire`);
        writerDiedHoldingLock++;
        await r.cli(['DEL', `${prefix}lock`]);
      }
      w = writer(url, prefix, `w${cycle}-`, { compactBytes });
      all.push(w);
    } else {
      // The writer is paused (SIGSTOP) at this random moment, possibly with a command sent and
      // not yet answered, while Redis is killed and restarted: a lock found after the restart is
      // then certainly the one it held when Redis died, not one it took again since.
      w.proc.kill('SIGSTOP');
      try {
        await r.kill9();
        redisKills++;
        await restarted(r);
        // That lock is in the AOF and outlives the restart; left in place: the writer, alive, takes
        // it up again or releases it (the test below measures what a stale one costs).
        if ((await pttl(r, `${prefix}lock`)) > 0) staleLocksAfterRestart++;
      } finally {
        w.proc.kill('SIGCONT');
      }
    }
    const acked: Ack[] = all.flatMap((x) => x.acks);
    const lost = await withFreshRegistry(url, prefix, (reg) => missing(reg, acked)); // must always load
    assert.equal(lost.map((a) => a.token), [], `cycle ${cycle}: lost ${lost.length} of ${acked.length} acknowledged registrations`);
  }
  const acked = all.flatMap((x) => x.acks).length;
  const gen = await r.cli(['HGET', `${prefix}head`, 'gen']);
  process.stdout.write(`  (${acked} acknowledged registrations; ${redisKills} kills of Redis (a stale lock after ${staleLocksAfterRestart} of the restarts), ${writerKills} of a writer (${writerDiedHoldingLock} holding the lock); snapshot generation ${gen}; slowest first acknowledgement of a cycle ${slowestRecoveryMs} ms)\n`);
  assert.ok(acked > CYCLES * 5, `only ${acked} registrations were acknowledged`);
  assert.ok(Number(gen) >= 3, `the journal was compacted ${gen} times: no kill could land in a compaction`);
  assert.ok(writerDiedHoldingLock > 0, 'no writer was killed holding the lock');
});

/** Kills writers until one dies holding the lock; returns when. */
async function killWriterHoldingLock(r: RedisInstance, prefix: string): Promise<number> {
  for (let i = 0; i < 10; i++) {
    const w = writer(urlOf(r), prefix, `holder${i}-`);
    await w.acked(20, 15_000, 'the writer that will die holding the lock');
    await w.kill9();
    if ((await pttl(r, `${prefix}lock`)) > 0) return Date.now();
  }
  throw new Error('10 writers killed, none holding the lock');
}

/**
 * Kills Redis while a live writer holds the lock: the writer is paused (SIGSTOP) until the lock
 * is seen held, then Redis is killed and restarted, and the writer continues once Redis is back.
 */
async function killRedisUnderLock(r: RedisInstance, w: Writer, prefix: string): Promise<number> {
  await w.acked(20, 15_000, 'the writer before Redis is killed');
  for (let i = 0; i < 50; i++) {
    w.proc.kill('SIGSTOP');
    if ((await pttl(r, `${prefix}lock`)) > 0) {
      try {
        await r.kill9();
        await restarted(r);
        assert.ok((await pttl(r, `${prefix}lock`)) > 0, 'the lock is in the AOF');
        return Date.now();
      } finally {
        w.proc.kill('SIGCONT');
      }
    }
    w.proc.kill('SIGCONT');
    await sleep(Math.random() * 20);
  }
  throw new Error('the writer was never seen holding the lock');
}

function cliAdd(cfg: string, token: string): Promise<{ status: number | null; stderr: string; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const p = spawn(process.execPath, [CIDLOCK, 'devices', 'add', 'cli@example.com', `UUID ${token}`, '--config', cfg], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CIDLOCK_CONFIG: '' } });
    let stderr = '';
    p.stderr.on('data', (d) => (stderr += d));
    p.on('exit', (status) => resolve({ status, stderr, ms: Date.now() - started }));
  });
}

check('a lock left by a kill -9 expires: a writer killed holding it, and Redis killed while a live writer held it', async () => {
  // Both at once, on two servers.
  const [r1, r2] = await Promise.all([redis(), redis()]);
  const deadWriter = (async () => {
    const killedAt = await killWriterHoldingLock(r1, 'dead:');
    const next = writer(urlOf(r1), 'dead:', 'next-');
    await next.acked(1, LOCK_TTL_MS + 15_000, 'the next writer after one died holding the lock');
    return { ms: next.acks[0]!.t - killedAt, refused: next.errors.filter((e) => e.code === 'locked').length };
  })();
  const deadRedis = (async () => {
    const dir = tempDir();
    const cfg = join(dir, 'cidlock.yaml');
    writeFileSync(cfg, `state_dir: ${join(dir, 'state')}\nstore: { redis: "${urlOf(r2)}", key_prefix: "live:" }\n`);
    const w = writer(urlOf(r2), 'live:', 'live-');
    const backAt = await killRedisUnderLock(r2, w, 'live:');
    const before = w.acks.length;
    // An operator's CLI edit right after Redis came back, while the writer is waiting to write again.
    const cli = await cliAdd(cfg, 'after-restart');
    await w.acked(1, LOCK_TTL_MS + 15_000, 'the live writer after Redis came back');
    const ms = w.acks[before]!.t - backAt;
    const refused = w.errors.filter((e) => e.code === 'locked' && e.t > backAt).length;
    // The acknowledgements made before the read: the writer goes on writing while it reads.
    const acks = [...w.acks];
    const lost = await withFreshRegistry(urlOf(r2), 'live:', (reg) => missing(reg, acks));
    return { ms, refused, cli, lost: lost.length };
  })();
  const [a, b] = await Promise.all([deadWriter, deadRedis]);
  process.stdout.write(`  (writer killed holding the lock: the next writer's first registration after ${a.ms} ms, ${a.refused} attempts refused "locked" before it)\n`);
  process.stdout.write(`  (Redis killed while a live (paused) writer held the lock: that writer's next registration ${b.ms} ms after Redis was back, ${b.refused} attempts refused "locked"; a CLI edit started when Redis was back: exit ${b.cli.status} after ${b.cli.ms} ms ${b.cli.stderr.trim()})\n`);
  // Neither lock persists forever: the next registration comes within the lock's life and a margin.
  assert.ok(a.ms < LOCK_TTL_MS + 5000, `a dead writer's lock kept the next writer out ${a.ms} ms`);
  // The lock's life is shorter than a writer's wait for it: the next writer waited, without a refusal.
  assert.ok(a.ms > LOCK_TTL_MS / 2, `the dead writer's lock was not in the way (next registration after ${a.ms} ms: the measurement proves nothing)`);
  assert.ok(b.ms < LOCK_TTL_MS + 5000, `Redis's restart kept the live writer out ${b.ms} ms`);
  assert.is(b.lost, 0, 'acknowledged registrations lost across the kill of Redis');
  // The writer that held the lock when Redis died is alive and could release it once Redis is
  // back; nobody else holds it. An edit started then must not fail with "locked by another cidlock".
  assert.is(b.cli.status, 0, `a CLI edit right after Redis came back failed (exit ${b.cli.status}): ${b.cli.stderr}`);
});

test.run();
