/**
 * cidlock's Redis client and subscriber: a supervisor that keeps one connection (connection.ts)
 * to the configured server or to the primary the Sentinels name, and remakes it forever, with
 * backoff, until close(). No offline queue: while not ready, commands fail at once.
 */
import type { Socket } from 'node:net';
import { endpointLabel, openConn, type Conn } from './connection.js';
import { asRespValue, isErrorReply, type RespReply } from './resp.js';
import {
  RedisError,
  type RedisClient,
  type RedisClientOptions,
  type RedisState,
  type RedisSubscriber,
  type RedisTarget,
  type RespArg,
  type RespValue,
} from './types.js';

export const DEFAULT_COMMAND_TIMEOUT_MS = 1000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 2000;
export const DEFAULT_MAX_PENDING = 10_000;
/** Reconnect delays double from the base up to the cap; each is drawn from [delay/2, delay]. */
export const BACKOFF_BASE_MS = 50;
export const BACKOFF_CAP_MS = 2000;
/** A Sentinel that does not answer this fast is skipped for the next one. */
export const SENTINEL_TIMEOUT_MS = 500;
/** Pub/sub connections carry no commands, so they PING to let the dead-connection rule see a vanished peer. */
export const HEARTBEAT_MS = 5000;
/** Channels one subscriber may hold. */
export const MAX_CHANNELS = 256;
const SWITCH_MASTER = '+switch-master';

/** A delay before reconnect attempt `attempt` (0-based), with jitter so many hosts do not reconnect in step. */
export function backoffMs(attempt: number, random: () => number = Math.random): number {
  const d = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 20));
  return Math.round(d / 2 + (random() * d) / 2);
}

/** One sleep at a time that close() or a failover can cut short. */
function createSleeper() {
  let timer: NodeJS.Timeout | null = null;
  let done: (() => void) | null = null;
  const wake = (): void => {
    if (timer) clearTimeout(timer);
    timer = null;
    const d = done;
    done = null;
    d?.();
  };
  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      done = resolve;
      timer = setTimeout(wake, ms);
    });
  return { sleep, wake };
}

/** Why a handshake reply is an authentication problem, in words that never include a password. */
function authDetail(error: string): string {
  const code = error.split(' ', 1)[0] ?? 'ERR';
  if (code === 'NOAUTH') return 'authentication failed (NOAUTH: the server requires a password)';
  if (code === 'WRONGPASS') return 'authentication failed (WRONGPASS)';
  if (/without any password configured/i.test(error)) return 'authentication failed (the server has no password set)';
  return `authentication failed (${code})`;
}

interface SupervisorConfig {
  opts: RedisClientOptions;
  /** Pub/sub connections: no SELECT, heartbeat PINGs, `message` pushes to onMessage. */
  pubsub: boolean;
  onMessage?: (channel: string, message: string) => void;
  /** Steps after AUTH/ROLE/SELECT/SETNAME and before "ready" (the subscriber's SUBSCRIBEs). */
  afterHandshake?: (conn: Conn) => Promise<void>;
}

/**
 * Keeps a connection: find the server, connect, AUTH, check ROLE (Sentinel), SELECT, SETNAME,
 * then "ready"; on loss, "down" and again after backoff. With a Sentinel target it also keeps a
 * subscription to +switch-master on one Sentinel, to follow a failover at once.
 */
function supervise(cfg: SupervisorConfig) {
  const { opts } = cfg;
  const target: RedisTarget = opts.address.target;
  const commandTimeoutMs = opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  const connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const maxPending = opts.maxPending ?? DEFAULT_MAX_PENDING;
  const live = new Set<Socket>();
  const mainSleep = createSleeper();
  const watchSleep = createSleeper();
  let state: RedisState = 'connecting';
  let detail = '';
  let conn: Conn | null = null;
  let watchConn: Conn | null = null;
  let closed = false;
  let kicked = false;
  let nextSentinel = 0;
  const readyWaiters = new Set<{ resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();

  // A password must never reach a log line, even if a server ever quoted it back.
  const redact = (text: string): string => (opts.password && opts.password.length >= 3 ? text.split(opts.password).join('***') : text);

  const setState = (s: RedisState, d: string): void => {
    const safe = redact(d);
    if (s === state && safe === detail) return;
    state = s;
    detail = safe;
    if (s === 'ready') {
      for (const w of readyWaiters) {
        clearTimeout(w.timer);
        w.resolve();
      }
      readyWaiters.clear();
    }
    try {
      opts.onState?.(s, safe);
    } catch (err) {
      // The caller's bug must not pass for a connection failure inside the reconnect loop.
      queueMicrotask(() => {
        throw err;
      });
    }
  };

  /** Drop the current connection and reconnect now, skipping the backoff (a failover is known). */
  const kick = (reason: string): void => {
    if (closed) return;
    kicked = true;
    if (conn) conn.destroy(reason);
    else {
      setState('down', reason);
      mainSleep.wake();
    }
  };

  const askSentinels = async (sentinels: ReadonlyArray<{ host: string; port: number }>, master: string) => {
    const failures: string[] = [];
    for (let i = 0; i < sentinels.length && !closed; i++) {
      const idx = (nextSentinel + i) % sentinels.length;
      const s = sentinels[idx]!;
      const label = endpointLabel(s.host, s.port);
      let c: Conn | null = null;
      try {
        c = await openConn({ host: s.host, port: s.port, connectTimeoutMs: SENTINEL_TIMEOUT_MS, deadAfterMs: SENTINEL_TIMEOUT_MS, maxPending: 4, live });
        const r = await c.send(['SENTINEL', 'get-master-addr-by-name', master], SENTINEL_TIMEOUT_MS);
        if (Array.isArray(r) && typeof r[0] === 'string' && typeof r[1] === 'string' && /^\d{1,5}$/.test(r[1])) {
          nextSentinel = idx;
          return { host: r[0], port: Number(r[1]) };
        }
        failures.push(r === null ? `sentinel ${label} does not know master "${master}"` : `sentinel ${label}: ${isErrorReply(r) ? r.error : 'unexpected reply'}`);
      } catch (e) {
        failures.push(`sentinel ${label}: ${(e as Error).message}`);
      } finally {
        c?.destroy('query done');
      }
    }
    throw new RedisError('unavailable', `no sentinel named the primary: ${failures.join('; ')}`);
  };

  /** Sends the handshake in one write and checks each reply in order. */
  const handshake = async (c: Conn): Promise<void> => {
    const steps: Array<{ args: RespArg[]; what: string }> = [];
    if (opts.password !== undefined) steps.push({ args: opts.username ? ['AUTH', opts.username, opts.password] : ['AUTH', opts.password], what: 'AUTH' });
    if (target.kind === 'sentinel') steps.push({ args: ['ROLE'], what: 'ROLE' });
    if (!cfg.pubsub && opts.address.db !== 0) steps.push({ args: ['SELECT', opts.address.db], what: `SELECT ${opts.address.db}` });
    if (opts.name) steps.push({ args: ['CLIENT', 'SETNAME', opts.name], what: 'CLIENT SETNAME' });
    // "ready" means the server answered: without a password, a server that requires one says NOAUTH here.
    steps.push({ args: ['PING'], what: 'PING' });
    const replies = steps.map((s) => c.send(s.args, commandTimeoutMs));
    // Every reply is awaited below, but a failed step stops the loop: keep the rest from being "unhandled".
    for (const r of replies) r.catch(() => {});
    for (let i = 0; i < steps.length; i++) {
      const step = steps[i]!;
      const r = await replies[i]!;
      if (isErrorReply(r)) {
        if (step.what === 'AUTH' || /^NOAUTH\b/.test(r.error)) throw new RedisError('unavailable', `${authDetail(r.error)} at ${c.label}`);
        throw new RedisError('unavailable', `${step.what} failed at ${c.label}: ${r.error}`);
      }
      if (step.what === 'ROLE') {
        const role = Array.isArray(r) ? r[0] : undefined;
        if (role !== 'master') throw new RedisError('unavailable', `${c.label} is not the primary (role ${String(role)}); asking the sentinels again`);
      }
    }
    if (cfg.afterHandshake) await cfg.afterHandshake(c);
  };

  const connectOnce = async (): Promise<Conn> => {
    const ep = target.kind === 'direct' ? target : await askSentinels(target.sentinels, target.master);
    const c = await openConn({ host: ep.host, port: ep.port, connectTimeoutMs, deadAfterMs: commandTimeoutMs, maxPending, live, onMessage: cfg.onMessage });
    try {
      await handshake(c);
    } catch (e) {
      c.destroy('handshake failed');
      throw e;
    }
    return c;
  };

  const heartbeat = (c: Conn): NodeJS.Timeout =>
    setInterval(() => {
      c.send(['PING'], commandTimeoutMs).catch(() => {});
    }, HEARTBEAT_MS);

  const run = async (): Promise<void> => {
    let attempt = 0;
    while (!closed) {
      let lost: string;
      try {
        const c = await connectOnce();
        if (closed) {
          c.destroy('client closed');
          break;
        }
        conn = c;
        attempt = 0;
        setState('ready', `connected to ${c.label}`);
        const beat = cfg.pubsub ? heartbeat(c) : null;
        lost = await c.closed;
        if (beat) clearInterval(beat);
        conn = null;
      } catch (e) {
        lost = (e as Error).message;
      }
      if (closed) break;
      setState('down', lost);
      const delay = kicked ? 0 : backoffMs(attempt++);
      kicked = false;
      if (delay > 0) await mainSleep.sleep(delay);
    }
  };

  /** One subscription to +switch-master on one Sentinel at a time, moving on when it goes. */
  const watchFailovers = async (sentinels: ReadonlyArray<{ host: string; port: number }>, master: string): Promise<void> => {
    let attempt = 0;
    for (let i = 0; !closed; i++) {
      const s = sentinels[i % sentinels.length]!;
      let beat: NodeJS.Timeout | null = null;
      try {
        const c = await openConn({
          host: s.host,
          port: s.port,
          connectTimeoutMs: SENTINEL_TIMEOUT_MS,
          deadAfterMs: Math.max(commandTimeoutMs, SENTINEL_TIMEOUT_MS),
          maxPending: 16,
          live,
          onMessage: (channel, message) => {
            // "<master> <old-ip> <old-port> <new-ip> <new-port>"
            const f = message.split(' ');
            if (channel !== SWITCH_MASTER || f[0] !== master || f.length !== 5) return;
            const now = endpointLabel(f[3]!, Number(f[4]));
            if (conn?.label !== now) kick(`failover: primary is now ${now}`);
          },
        });
        watchConn = c;
        if (closed) c.destroy('client closed');
        const r = await c.send(['SUBSCRIBE', SWITCH_MASTER], SENTINEL_TIMEOUT_MS);
        if (isErrorReply(r)) c.destroy(`SUBSCRIBE refused: ${r.error}`);
        else attempt = 0;
        beat = heartbeat(c);
        await c.closed;
      } catch {
        // The next sentinel, after backoff; the data connection does not depend on this one.
      } finally {
        if (beat) clearInterval(beat);
        watchConn = null;
      }
      if (!closed) await watchSleep.sleep(backoffMs(attempt++));
    }
  };

  void run();
  if (target.kind === 'sentinel') void watchFailovers(target.sentinels, target.master);

  return {
    get state() {
      return state;
    },
    get detail() {
      return detail;
    },
    get conn(): Conn | null {
      return state === 'ready' ? conn : null;
    },
    get server(): string | null {
      return state === 'ready' && conn ? conn.label : null;
    },
    commandTimeoutMs,
    target,
    kick,
    ready(timeoutMs: number): Promise<void> {
      if (state === 'ready') return Promise.resolve();
      if (closed) return Promise.reject(new RedisError('unavailable', 'the Redis client is closed'));
      return new Promise((resolve, reject) => {
        const w = {
          resolve,
          reject,
          timer: setTimeout(() => {
            readyWaiters.delete(w);
            reject(new RedisError('unavailable', `not connected after ${timeoutMs} ms${detail ? `: ${detail}` : ''}`));
          }, timeoutMs),
        };
        readyWaiters.add(w);
      });
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      setState('closed', 'closed');
      mainSleep.wake();
      watchSleep.wake();
      conn?.destroy('the Redis client is closed');
      watchConn?.destroy('the Redis client is closed');
      for (const w of readyWaiters) {
        clearTimeout(w.timer);
        w.reject(new RedisError('unavailable', 'the Redis client is closed'));
      }
      readyWaiters.clear();
      const gone = [...live].map((s) => new Promise((r) => s.once('close', r)));
      for (const s of live) s.destroy();
      await Promise.all(gone);
    },
  };
}

export function createRedisClient(opts: RedisClientOptions): RedisClient {
  const sup = supervise({ opts, pubsub: false });
  return {
    get state() {
      return sup.state;
    },
    get server() {
      return sup.server;
    },
    async command(args: readonly RespArg[], o?: { timeoutMs?: number }): Promise<RespValue> {
      const c = sup.conn;
      if (!c) throw new RedisError('unavailable', sup.state === 'closed' ? 'the Redis client is closed' : `not connected to Redis${sup.detail ? `: ${sup.detail}` : ''}`);
      const r: RespReply = await c.send(args, o?.timeoutMs ?? sup.commandTimeoutMs);
      if (isErrorReply(r)) {
        // The server we write to became a replica: the primary moved, ask the Sentinels.
        if (sup.target.kind === 'sentinel' && /^READONLY\b/.test(r.error) && sup.conn === c) sup.kick(`failover: ${c.label} became a replica (READONLY)`);
        throw new RedisError('server', r.error);
      }
      return asRespValue(r);
    },
    ready: (timeoutMs: number) => sup.ready(timeoutMs),
    close: () => sup.close(),
  };
}

/**
 * A pub/sub connection: SUBSCRIBEs every channel again after each reconnect (messages published
 * while it was down are lost, as pub/sub always loses them). subscribe() while down registers the
 * channel and resolves; delivery starts once connected.
 */
export function createRedisSubscriber(opts: RedisClientOptions): RedisSubscriber {
  type Entry = { onMessage: (message: string) => void };
  const channels = new Map<string, Set<Entry>>();
  /** Channels SUBSCRIBEd on the current connection, with the confirmation awaited. */
  let onConn = new Map<string, Promise<unknown>>();
  let current: Conn | null = null;

  const subscribeOn = (c: Conn, channel: string): Promise<unknown> => {
    const p = c.send(['SUBSCRIBE', channel], opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS);
    onConn.set(channel, p);
    p.catch(() => {});
    return p;
  };

  const sup = supervise({
    opts,
    pubsub: true,
    onMessage: (channel, message) => {
      for (const e of channels.get(channel) ?? []) {
        try {
          e.onMessage(message);
        } catch (err) {
          // A listener's bug surfaces as an uncaught exception, as an EventEmitter's would, without breaking the parser.
          queueMicrotask(() => {
            throw err;
          });
        }
      }
    },
    afterHandshake: async (c) => {
      current = c;
      onConn = new Map();
      // Channels added while these are confirmed are picked up by the next round.
      for (;;) {
        const missing = [...channels.keys()].filter((ch) => !onConn.has(ch));
        if (missing.length === 0) return;
        const replies = missing.map((ch) => subscribeOn(c, ch));
        for (const r of replies) {
          const reply = (await r) as RespReply;
          if (isErrorReply(reply)) throw new RedisError('unavailable', `SUBSCRIBE failed at ${c.label}: ${reply.error}`);
        }
      }
    },
  });

  return {
    get state() {
      return sup.state;
    },
    async subscribe(channel: string, onMessage: (message: string) => void): Promise<() => Promise<void>> {
      if (sup.state === 'closed') throw new RedisError('unavailable', 'the Redis subscriber is closed');
      let set = channels.get(channel);
      if (!set) {
        if (channels.size >= MAX_CHANNELS) throw new RedisError('unavailable', `at most ${MAX_CHANNELS} channels per subscriber`);
        set = new Set();
        channels.set(channel, set);
      }
      const entry: Entry = { onMessage };
      set.add(entry);
      // The connection past its handshake, even in the moment before it is declared ready:
      // a channel added then would otherwise wait for the next reconnect.
      const c = current?.open ? current : null;
      if (c) {
        try {
          const r = (await (onConn.get(channel) ?? subscribeOn(c, channel))) as RespReply;
          if (isErrorReply(r)) {
            set.delete(entry);
            if (set.size === 0) channels.delete(channel);
            onConn.delete(channel);
            throw new RedisError('server', r.error);
          }
        } catch (e) {
          // A lost connection is not the caller's failure: the reconnect subscribes again.
          if (e instanceof RedisError && e.code === 'server') throw e;
        }
      }
      let done = false;
      return async () => {
        if (done) return;
        done = true;
        const s = channels.get(channel);
        if (!s) return;
        s.delete(entry);
        if (s.size > 0) return;
        channels.delete(channel);
        const cc = current?.open ? current : null;
        if (cc && onConn.has(channel)) {
          onConn.delete(channel);
          await cc.send(['UNSUBSCRIBE', channel], opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS).catch(() => {});
        }
      };
    },
    close: () => sup.close(),
  };
}
