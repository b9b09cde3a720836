// Several hosts on Redis (issue 13). Two measurements, both on the real `cidlock serve` (so whatever
// the daemon shares through Redis is measured as it runs in production):
//
// (i) The daemon on the Redis store against the daemon on the file store, same run, same load:
//     the Dovecot path with wrk (the captured allow and report bodies, 100 keep-alive connections,
//     as bench/dovecot.ts) at its maximum rate and paced at one fixed rate (half of the first
//     maximum measured) for its p99, and the Postfix policy path (bench/postfix.ts's client, 300
//     persistent connections). Rounds alternate which store goes first. The daemon gets core 0,
//     the load generators core 1; Redis (appendonly yes, appendfsync always) is not pinned.
// (ii) Propagation: a device registered on host A (a registry opened in this process on the same
//     Redis) until host B's daemon answers "allow" for it. B is polled back to back on a
//     keep-alive connection from the moment the registration starts; each change waits for B, then
//     the next one starts after a random 0-50 ms gap, so changes do not fall in step with B's
//     1 s poll. Reported from the start of the change and from its acknowledgement.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileStore } from '../src/core/registry/file-store.js';
import { openStoreAt } from '../src/core/registry/open-store.js';
import { openRegistry, type Registry } from '../src/core/registry/registry.js';
import type { RegistryStore } from '../src/core/registry/types.js';
import { parseRedisUrl } from '../src/redis/url.js';
import { post } from '../test/helpers/http.js';
import { redisReady, startRedis } from '../test/helpers/redis.js';
import { wrk } from './dovecot.js';
import { benchUsers, dovecotBodies, postfixRequests, repoRoot } from './fixtures.js';
import { CLIENT_CORE, median, percentiles, pinnedSpawn, pinSelf, roundOrder, SERVER_CORE, sleep } from './lib.js';
import { load } from './postfix.js';

const USERS = 1000;
const ROUNDS = Number(process.env.BENCH_REDIS_ROUNDS ?? 3);
const SECONDS = Number(process.env.BENCH_REDIS_SECONDS ?? 5);
const CHANGES = Number(process.env.BENCH_REDIS_CHANGES ?? 200);
const POSTFIX_CONNECTIONS = 300;
/** Also in wrk-dovecot.lua. */
const BENCH_DOVECOT_KEY = 'bench-dovecot-key-0123456789abcdef';
const KEY_PREFIX = 'bench:';
type Store = 'file' | 'redis';

interface Daemon { proc: ChildProcess; dovecot: number; postfix: number; stop(): Promise<void> }

function rules(stateDir: string, redisUrl: string | null): string {
  return [
    `state_dir: ${stateDir}`,
    'listen: { admin: 127.0.0.1:0, dovecot: 127.0.0.1:0, postfix: 127.0.0.1:0, socketmap: off }',
    `dovecot: { api_key: "${BENCH_DOVECOT_KEY}" }`,
    ...(redisUrl === null ? [] : [`store: { redis: "${redisUrl}", key_prefix: "${KEY_PREFIX}" }`]),
    'policy: { mode: enforce }',
    // As bench/servers.ts: every request comes from 127.0.0.1's load generators; a tarpit would measure the tarpit.
    'limits: []',
    'log: { decisions: refusals }',
    '',
  ].join('\n');
}

/** `cidlock serve` on core 0, its log in a file (a pipe would put the reading on the load generator's core). */
async function startDaemon(dir: string, stateDir: string, redisUrl: string | null): Promise<Daemon> {
  const cfg = join(dir, `cidlock-${Date.now()}-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(cfg, rules(stateDir, redisUrl));
  const log = `${cfg}.log`;
  const fd = openSync(log, 'w');
  const proc = pinnedSpawn(SERVER_CORE, process.execPath, [join(repoRoot, 'bin', 'cidlock'), 'serve', '--config', cfg], { stdio: ['ignore', fd, 'inherit'], env: { ...process.env, CIDLOCK_CONFIG: '' } });
  closeSync(fd);
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const port = (text: string, listener: string) => {
    const m = new RegExp(`"event":"listening"[^\\n]*"listener":"${listener}"[^\\n]*"address":"127\\.0\\.0\\.1:(\\d+)"`).exec(text);
    return m ? Number(m[1]) : 0;
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    const text = readFileSync(log, 'utf8');
    const [dovecot, postfix] = [port(text, 'dovecot'), port(text, 'postfix')];
    if (dovecot && postfix) return { proc, dovecot, postfix, stop: async () => { proc.kill('SIGTERM'); await exited; } };
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`cidlock serve did not start:\n${text}`);
    await sleep(50);
  }
}

async function fill(store: RegistryStore): Promise<void> {
  const registry = await openRegistry(store, { create: true });
  if (registry.size().devices === 0) await registry.addMany(benchUsers(USERS).flatMap((u) => [{ user: u.user, input: { kind: 'cid' as const, cid: u.cid } }, { user: u.user, input: { kind: 'cert' as const, fingerprint: u.fingerprint } }]));
}

function openRedis(url: string) {
  const parsed = parseRedisUrl(url);
  if (!parsed.ok) throw new Error(parsed.error);
  return openStoreAt({ kind: 'redis', url, address: parsed.address, passwordFile: '', keyPrefix: KEY_PREFIX, replicas: 0 }, { role: 'bench' });
}

async function openRedisRegistry(url: string): Promise<{ registry: Registry; close: () => Promise<void> }> {
  const opened = await openRedis(url);
  return { registry: await openRegistry(opened.store, { create: true }), close: () => opened.close() };
}

/** (ii): a change on A until B's daemon allows the device. */
async function propagation(dir: string, url: string): Promise<Record<string, unknown>> {
  const a = await openRedisRegistry(url);
  const b = await startDaemon(dir, mkdtempSync(join(dir, 'state-b-')), url);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const user = 'propagation@example.com';
  let session = 0;
  const allowed = async (token: string) => {
    session++;
    const body = JSON.stringify({ login: user, protocol: 'imap', remote: `10.9.${(session >> 8) & 255}.${session & 255}`, device_id: `"clientid" "UUID ${token}"`, tls: true, session_id: `p${session}` });
    return (await post(b.dovecot, '/?command=allow', body, { agent, key: BENCH_DOVECOT_KEY })).body === '{"status":0}';
  };
  try {
    await a.registry.add(user, { kind: 'cid', cid: { type: 'UUID', token: 'first' } }, 'admin');
    while (!(await allowed('first'))) await sleep(10);
    const fromChange: number[] = [];
    const fromAck: number[] = [];
    let polls = 0;
    for (let i = 0; i < CHANGES; i++) {
      const token = `prop-${i}`;
      const t0 = performance.now();
      let ack = NaN;
      const change = a.registry.add(user, { kind: 'cid', cid: { type: 'UUID', token } }, 'admin').then(() => (ack = performance.now()));
      const deadline = t0 + 10_000;
      for (;;) {
        polls++;
        if (await allowed(token)) break;
        if (performance.now() > deadline) throw new Error(`host B did not allow ${token} within 10 s`);
      }
      const seen = performance.now();
      await change;
      fromChange.push(seen - t0);
      fromAck.push(Math.max(0, seen - ack));
      await sleep(Math.random() * 50);
    }
    const stats = (xs: number[]) => ({ ...percentiles(xs), max: +Math.max(...xs).toFixed(3) });
    return { changes: CHANGES, polls, from_change_ms: stats(fromChange), from_ack_ms: stats(fromAck) };
  } finally {
    agent.destroy();
    await b.stop();
    await a.close();
  }
}

export async function benchRedis(): Promise<Record<string, unknown>> {
  if (!redisReady) return { skipped: 'redis-server, redis-sentinel or redis-cli not installed (apt-get install redis-server redis-sentinel)' };
  pinSelf(CLIENT_CORE);
  const dir = mkdtempSync(join(tmpdir(), 'cidlock-bench-redis-'));
  const redis = await startRedis({ dir: mkdtempSync(join(dir, 'redis-')), appendonly: true, appendfsync: 'always' });
  const url = `redis://127.0.0.1:${redis.port}/0`;
  try {
    const bodies = join(dir, 'bodies.txt');
    writeFileSync(bodies, dovecotBodies(USERS).map((b) => `${b.path}\n${b.body}\n`).join(''));
    const reqs = postfixRequests(USERS);
    const fileState = mkdtempSync(join(dir, 'state-file-'));
    await fill(fileStore(fileState));
    const onRedis = await openRedis(url);
    await fill(onRedis.store);
    await onRedis.close();

    type Round = { store: Store; order: number; rps: number; p99_max_rate: number; p99_at_half: number; postfix_rps: number; postfix_p99: number; socket_errors: number };
    const rounds: Round[] = [];
    let target = 0;
    for (let r = 0; r < ROUNDS; r++) {
      for (const [order, which] of roundOrder(r).entries()) {
        const store: Store = which === 'before' ? 'file' : 'redis';
        const d = await startDaemon(dir, store === 'file' ? fileState : mkdtempSync(join(dir, 'state-r-')), store === 'file' ? null : url);
        try {
          wrk(d.dovecot, bodies, undefined, 2); // warm-up: JIT, caches
          const max = wrk(d.dovecot, bodies, undefined, SECONDS);
          if (target === 0) target = Math.round(max.rps / 2);
          const paced = wrk(d.dovecot, bodies, target, SECONDS);
          await load(d.postfix, reqs, 1, POSTFIX_CONNECTIONS);
          const pf = await load(d.postfix, reqs, SECONDS, POSTFIX_CONNECTIONS);
          if (pf.errors > 0) throw new Error(`${pf.errors} Postfix policy errors on the ${store} store`);
          rounds.push({ store, order, rps: max.rps, p99_max_rate: max.p99, p99_at_half: paced.p99, postfix_rps: pf.rps, postfix_p99: pf.p99, socket_errors: max.socket_errors + paced.socket_errors });
        } finally {
          await d.stop();
        }
        process.stderr.write(`  round ${r} ${store}: ${JSON.stringify(rounds[rounds.length - 1])}\n`);
      }
    }
    const m = (s: Store, k: 'rps' | 'p99_at_half' | 'postfix_rps' | 'postfix_p99') => median(rounds.filter((x) => x.store === s).map((x) => x[k]));
    const out: Record<string, unknown> = {
      rounds: ROUNDS, seconds: SECONDS, users: USERS, half_rate_target: target,
      per_round: rounds,
      dovecot: {
        rps: { file: m('file', 'rps'), redis: m('redis', 'rps') },
        ratio: +(m('redis', 'rps') / m('file', 'rps')).toFixed(3),
        p99_at_half_ms: { file: m('file', 'p99_at_half'), redis: m('redis', 'p99_at_half') },
      },
      postfix: {
        connections: POSTFIX_CONNECTIONS,
        rps: { file: m('file', 'postfix_rps'), redis: m('redis', 'postfix_rps') },
        ratio: +(m('redis', 'postfix_rps') / m('file', 'postfix_rps')).toFixed(3),
        p99_ms: { file: m('file', 'postfix_p99'), redis: m('redis', 'postfix_p99') },
      },
    };
    out.propagation = await propagation(dir, url);
    return out;
  } finally {
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
