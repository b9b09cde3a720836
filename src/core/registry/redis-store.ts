import { randomBytes } from 'node:crypto';
import { RedisError, type RedisClient, type RespArg, type RespValue } from '../../redis/types.js';
import { checkSnapshotHeader, decodeOp, encodeOp, encodeSnapshotLine, snapshotLineOps, SNAPSHOT_HEADER } from './codec.js';
import { slicer, type Slicer } from './slice.js';
import { RegistryError, type RegistryOp, type RegistryStore, type StoreCursor } from './types.js';

/**
 * The registry in Redis, laid out as the file store lays it out on disk, so every host replays
 * the same operations and `openRegistry` works unchanged on either store:
 *
 *   PREFIX head            hash: gen (the snapshot generation in force), jbytes, sbytes
 *   PREFIX snapshot:GEN    list of chunks, each a run of whole snapshot lines (the first holds the header)
 *   PREFIX journal:GEN     list of journal entries (one operation each) appended since that snapshot
 *   PREFIX secret          the CID key, 64 hex digits
 *   PREFIX lock            the writers' lock: a random token, with an expiry
 *   PREFIX changes         pub/sub channel: "GEN LENGTH" after every change, so hosts catch up at once
 *
 * A cursor is { snapshot: GEN, journal: GEN, offset: entries read }. Writes are Lua scripts that
 * check, atomically, that the writer still holds the lock and has read everything before it
 * appends: a writer that lost its lock (a pause longer than the lock's life) can never write
 * over another's entries.
 */

/**
 * A writer's lock lives this long unless renewed: a lock left behind (its writer killed, or Redis
 * restarted from an append-only file that holds it, or a replica promoted with it) keeps other
 * writers out no longer than this. Short is safe: every write checks, atomically, that its writer
 * still holds the lock, so a writer paused past it writes nothing.
 */
export const LOCK_TTL_MS = 5_000;
const LOCK_RENEW_MS = 1_000;
/** Locks this process took and could not release (Redis went away): released before it locks again. */
const MAX_UNRELEASED = 16;
const LOCK_WAIT_MS = 10_000;
const LOCK_POLL_MIN_MS = 5;
const LOCK_POLL_MAX_MS = 100;
/** Entries per append script call and per read: bounded replies and scripts that never hold Redis for long. */
const BATCH = 1000;
/** Snapshot chunks of about this size: a few per read keeps replies far below the client's bound. */
const CHUNK_BYTES = 1 << 20;
const CHUNKS_PER_READ = 8;
/** A journal this much larger than the snapshot (or 16 MB) is folded into a new snapshot, as on disk. */
const COMPACT_MIN_BYTES = 16 * 1024 * 1024;
/** How long a write waits for replicas to confirm it (store.replicas) before it is reported as not durable. */
const REPLICA_WAIT_MS = 1000;
/** Replaced generations stay readable this long, so a host reading one when it is replaced finishes. */
const OLD_GENERATION_TTL_S = 600;
/** A snapshot being written expires unless the switch to it happens: a writer killed half-way leaves nothing. */
const PARTIAL_SNAPSHOT_TTL_S = 3600;

// KEYS: head, lock, journal:GEN, changes is ARGV (a channel is not a key).
// ARGV: token, gen, expected length, bytes, channel, entries...
const APPEND = `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return redis.error_reply('CIDLOCK_LOCK_LOST the registry lock expired before the write') end
local gen = redis.call('HGET', KEYS[1], 'gen') or '0'
if gen ~= ARGV[2] then return redis.error_reply('CIDLOCK_STALE the registry was compacted meanwhile') end
if redis.call('LLEN', KEYS[3]) ~= tonumber(ARGV[3]) then return redis.error_reply('CIDLOCK_STALE the journal changed meanwhile') end
local n = redis.call('RPUSH', KEYS[3], unpack(ARGV, 6))
redis.call('HINCRBY', KEYS[1], 'jbytes', ARGV[4])
redis.call('PUBLISH', ARGV[5], gen .. ' ' .. n)
return n
`;

// KEYS: head, lock, snapshot:NEW, snapshot:OLD, journal:OLD. ARGV: token, old gen, new gen, bytes, channel, ttl.
const SWITCH = `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return redis.error_reply('CIDLOCK_LOCK_LOST the registry lock expired before the switch') end
if (redis.call('HGET', KEYS[1], 'gen') or '0') ~= ARGV[2] then return redis.error_reply('CIDLOCK_STALE the registry was compacted meanwhile') end
redis.call('PERSIST', KEYS[3])
redis.call('HSET', KEYS[1], 'gen', ARGV[3], 'sbytes', ARGV[4], 'jbytes', 0)
redis.call('EXPIRE', KEYS[4], ARGV[6])
redis.call('EXPIRE', KEYS[5], ARGV[6])
redis.call('PUBLISH', ARGV[5], ARGV[3] .. ' 0')
return 1
`;

const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface RedisStoreOptions {
  /** The URL as the rules give it (no password in it), for messages. */
  url: string;
  keyPrefix: string;
  lockWaitMs?: number;
  compactBytes?: number;
  /**
   * Replicas that must hold a write before it is acknowledged (WAIT): Redis replicates after it
   * answers, so without this a failover right after a registration can lose it.
   */
  replicas?: number;
}

export interface RedisRegistryStore extends RegistryStore {
  /** The pub/sub channel every change is announced on. */
  readonly channel: string;
}

/** Redis's failures become the registry's: the CLI and the API map RegistryError once. */
function asRegistryError(err: unknown, where: string): RegistryError {
  if (err instanceof RegistryError) return err;
  if (err instanceof RedisError) {
    if (err.code === 'server' && err.message.startsWith('CIDLOCK_LOCK_LOST')) return new RegistryError('locked', `${where}: ${err.message.slice(18)}; nothing was written`);
    if (err.code === 'server' && err.message.startsWith('CIDLOCK_STALE')) return new RegistryError('locked', `${where}: ${err.message.slice(14)}; nothing was written, try again`);
    return new RegistryError('io', `${where}: Redis ${err.code === 'server' ? `refused: ${err.message}` : err.code === 'timeout' ? 'did not answer in time' : `is unavailable (${err.message})`}`);
  }
  return new RegistryError('io', `${where}: ${(err as Error).message}`);
}

const asText = (v: RespValue, what: string): string => {
  if (typeof v === 'string') return v;
  throw new RegistryError('corrupt', `${what}: expected text from Redis, got ${v === null ? 'nothing' : typeof v}`);
};
const asList = (v: RespValue, what: string): RespValue[] => {
  if (Array.isArray(v)) return v;
  throw new RegistryError('corrupt', `${what}: expected a list from Redis`);
};
const asInt = (v: RespValue, what: string): number => {
  const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : NaN;
  if (Number.isSafeInteger(n) && n >= 0) return n;
  throw new RegistryError('corrupt', `${what}: expected a count from Redis`);
};

export function redisStore(client: RedisClient, opts: RedisStoreOptions): RedisRegistryStore {
  const p = opts.keyPrefix;
  const head = `${p}head`;
  const lockKey = `${p}lock`;
  const secretKey = `${p}secret`;
  const channel = `${p}changes`;
  const snapshotKey = (gen: string) => `${p}snapshot:${gen}`;
  const journalKey = (gen: string) => `${p}journal:${gen}`;
  const where = opts.url;
  let lockToken: string | null = null;

  const call = async (args: readonly RespArg[]): Promise<RespValue> => {
    try {
      return await client.command(args);
    } catch (err) {
      throw asRegistryError(err, where);
    }
  };
  const generation = async (): Promise<string> => {
    const g = await call(['HGET', head, 'gen']);
    return g === null ? '0' : asText(g, `${where} ${head}`);
  };

  /** Calls `apply` for each entry of the journal from `from`, a page at a time; returns its length then. */
  const readJournal = async (gen: string, from: number, apply: (op: RegistryOp) => void, slice: Slicer): Promise<number> => {
    const key = journalKey(gen);
    let at = from;
    for (;;) {
      const page = asList(await call(['LRANGE', key, at, at + BATCH - 1]), key);
      for (const entry of page) {
        at++;
        apply(decodeOp(asText(entry, key), `${where} ${key}: entry ${at}`));
        if (slice.due()) await slice.pause();
      }
      if (page.length < BATCH) return at;
    }
  };

  const readSnapshot = async (gen: string, apply: (op: RegistryOp) => void, slice: Slicer): Promise<void> => {
    if (gen === '0') return;
    const key = snapshotKey(gen);
    let chunk = 0;
    let lineNo = 0;
    for (;;) {
      const page = asList(await call(['LRANGE', key, chunk, chunk + CHUNKS_PER_READ - 1]), key);
      if (chunk === 0 && page.length === 0) throw new RegistryError('corrupt', `${where}: ${key} is missing although ${head} names it (was Redis's data evicted or lost? cidlock needs maxmemory-policy noeviction); refusing to use or overwrite it`);
      for (const c of page) {
        const text = asText(c, key);
        let start = 0;
        for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
          lineNo++;
          const line = text.slice(start, nl);
          start = nl + 1;
          const at = `${where} ${key}: line ${lineNo}`;
          if (lineNo === 1) checkSnapshotHeader(line, at);
          else snapshotLineOps(line, at, apply);
          if (slice.due()) await slice.pause();
        }
        if (start !== text.length) throw new RegistryError('corrupt', `${where}: ${key} chunk ${chunk + 1} ends inside a line; refusing to use it`);
        chunk++;
      }
      if (page.length < CHUNKS_PER_READ) return;
    }
  };

  const unreleased: string[] = [];
  const rememberUnreleased = (token: string): void => {
    unreleased.push(token);
    if (unreleased.length > MAX_UNRELEASED) unreleased.shift();
  };
  const renewLock = (token: string): Promise<RespValue> => call(['EVAL', RENEW, 1, lockKey, token, LOCK_TTL_MS]);

  return {
    location: opts.url,
    channel,
    async readAll(apply) {
      const slice = slicer();
      const gen = await generation();
      await readSnapshot(gen, apply, slice);
      const offset = await readJournal(gen, 0, apply, slice);
      return { snapshot: gen, journal: gen, offset };
    },
    async readSince(cursor, apply) {
      const gen = await generation();
      if (gen !== cursor.snapshot) return null;
      const len = asInt(await call(['LLEN', journalKey(gen)]), journalKey(gen));
      if (len < cursor.offset) return null;
      if (len === cursor.offset) return cursor;
      return { ...cursor, offset: await readJournal(gen, cursor.offset, apply, slicer()) };
    },
    async changedSince(cursor) {
      // Pipelined: one round trip.
      const [gen, len] = await Promise.all([generation(), call(['LLEN', journalKey(cursor.journal)])]);
      return gen !== cursor.snapshot || asInt(len, journalKey(cursor.journal)) !== cursor.offset;
    },
    async withLock(fn) {
      // A lock of this process that Redis kept while it was away would keep this process out too.
      for (const t of unreleased.splice(0)) await call(['EVAL', RELEASE, 1, lockKey, t]).catch(() => rememberUnreleased(t));
      const token = randomBytes(16).toString('hex');
      const deadline = Date.now() + (opts.lockWaitMs ?? LOCK_WAIT_MS);
      let wait = LOCK_POLL_MIN_MS;
      for (;;) {
        if ((await call(['SET', lockKey, token, 'NX', 'PX', LOCK_TTL_MS])) === 'OK') break;
        if (Date.now() > deadline) throw new RegistryError('locked', `${where}: the registry is locked by another cidlock (waited ${(opts.lockWaitMs ?? LOCK_WAIT_MS) / 1000} s)`);
        await sleep(wait);
        wait = Math.min(LOCK_POLL_MAX_MS, wait * 2);
      }
      lockToken = token;
      const renew = setInterval(() => { renewLock(token).catch(() => {}); }, LOCK_RENEW_MS);
      renew.unref();
      try {
        return await fn();
      } finally {
        clearInterval(renew);
        lockToken = null;
        await call(['EVAL', RELEASE, 1, lockKey, token]).catch(() => rememberUnreleased(token));
      }
    },
    async append(cursor, ops) {
      const token = lockToken;
      if (token === null) throw new RegistryError('locked', `${where}: append without the registry lock`);
      const slice = slicer();
      let cur = cursor;
      for (let i = 0; i < ops.length; i += BATCH) {
        // One entry per operation, without the file journal's line end.
        const entries = ops.slice(i, i + BATCH).map((op) => encodeOp(op).slice(0, -1));
        const bytes = entries.reduce((n, e) => n + Buffer.byteLength(e), 0);
        const n = asInt(await call(['EVAL', APPEND, 3, head, lockKey, journalKey(cur.journal), token, cur.snapshot, cur.offset, bytes, channel, ...entries]), 'append');
        cur = { ...cur, offset: n };
        if (slice.due()) await slice.pause();
      }
      const want = opts.replicas ?? 0;
      if (want > 0) {
        let got: RespValue;
        try {
          got = await client.command(['WAIT', want, REPLICA_WAIT_MS], { timeoutMs: REPLICA_WAIT_MS + 1000 });
        } catch (err) {
          throw asRegistryError(err, where);
        }
        if (typeof got !== 'number' || got < want) {
          throw new RegistryError('io', `${where}: written on the primary, but only ${typeof got === 'number' ? got : 0} of ${want} replicas confirmed it within ${REPLICA_WAIT_MS} ms (store.replicas); not acknowledged: a failover now could lose it`);
        }
      }
      return cur;
    },
    async shouldCompact(cursor) {
      if (opts.compactBytes !== undefined) {
        const j = await call(['HGET', head, 'jbytes']);
        return (j === null ? 0 : asInt(j, head)) > opts.compactBytes;
      }
      const [j, s] = asList(await call(['HMGET', head, 'jbytes', 'sbytes']), head);
      const jbytes = j === null || j === undefined ? 0 : asInt(j, head);
      const sbytes = s === null || s === undefined ? 0 : asInt(s, head);
      return cursor.offset > 0 && jbytes > Math.max(COMPACT_MIN_BYTES, sbytes);
    },
    async compact(users) {
      const token = lockToken;
      if (token === null) throw new RegistryError('locked', `${where}: compaction without the registry lock`);
      const old = await generation();
      const next = String(Number(old) + 1);
      const key = snapshotKey(next);
      const slice = slicer();
      // A writer killed while writing this generation before left chunks behind: start clean.
      await call(['DEL', key]);
      let bytes = 0;
      let batch = SNAPSHOT_HEADER;
      const flush = async () => {
        await call(['RPUSH', key, batch]);
        await call(['EXPIRE', key, PARTIAL_SNAPSHOT_TTL_S]);
        bytes += Buffer.byteLength(batch);
        batch = '';
      };
      for (const [user, rec] of users) {
        batch += encodeSnapshotLine(user, rec);
        if (batch.length >= CHUNK_BYTES) await flush();
        if (slice.due()) await slice.pause();
      }
      if (batch !== '') await flush();
      await call(['EVAL', SWITCH, 5, head, lockKey, key, snapshotKey(old), journalKey(old), token, old, next, bytes, channel, OLD_GENERATION_TTL_S]);
      return { snapshot: next, journal: next, offset: 0 };
    },
    async secret(create) {
      const read = async (): Promise<Buffer | null> => {
        const v = await call(['GET', secretKey]);
        if (v === null) return null;
        const hex = asText(v, secretKey).trim();
        if (!/^[0-9a-f]{64}$/.test(hex)) throw new RegistryError('corrupt', `${where}: ${secretKey} is not 64 hex digits; refusing to replace it, since every stored CID depends on it`);
        return Buffer.from(hex, 'hex');
      };
      const existing = await read();
      if (existing !== null || !create) return existing;
      // NX: if two hosts race, both end up using the one that landed first.
      await call(['SET', secretKey, randomBytes(32).toString('hex'), 'NX']);
      return read();
    },
    async writeSecret(key, replace) {
      const hex = key.toString('hex');
      const existing = await call(['GET', secretKey]);
      if (existing === hex) return;
      if (existing !== null && !replace) throw new RegistryError('io', `${where}: ${secretKey}: a different CID key exists already; refusing to replace it`);
      await call(['SET', secretKey, hex]);
    },
    async isEmpty() {
      const [gen, len, secret] = await Promise.all([generation(), call(['LLEN', journalKey('0')]), call(['EXISTS', secretKey])]);
      return gen === '0' && len === 0 && secret === 0;
    },
  };
}
