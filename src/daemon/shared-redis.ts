import { randomBytes } from 'node:crypto';
import type { Logger } from '../core/log.js';
import type { Metrics } from '../core/metrics.js';
import type { SharedEvent, SharedState, SlotClaim } from '../core/shared-state.js';
import type { Vouch } from '../core/vouches.js';
import type { RedisClient, RespArg } from '../redis/types.js';

/**
 * A login waits at most this long for the other hosts' answer (a vouch, a learn slot) before this
 * host decides with what it knows: Dovecot gives up after 2 s and lets the login through.
 */
const SHARED_WAIT_MS = 250;
/** An event is a few hundred bytes; a batch holds at most this many, and a larger message is not ours. */
const MAX_BATCH = 200;
const MAX_MESSAGE_BYTES = 512 * 1024;

// KEYS: the user's slot hash. ARGV: slot, max, ttl ms, registered hashes...
// Times come from Redis's clock, so hosts whose clocks differ agree on what has expired.
const CLAIM = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local registered = {}
for i = 4, #ARGV do registered[ARGV[i]] = true end
local n = #ARGV - 3
local others = 0
local slots = redis.call('HGETALL', KEYS[1])
for i = 1, #slots, 2 do
  if tonumber(slots[i + 1]) <= now then redis.call('HDEL', KEYS[1], slots[i])
  elseif slots[i] ~= ARGV[1] and not registered[slots[i]] then others = others + 1 end
end
if n + others >= tonumber(ARGV[2]) then return {0, others} end
redis.call('HSET', KEYS[1], ARGV[1], now + tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, others}
`;

// KEYS: the user's slot hash. ARGV: slot, keep ms.
const RELEASE = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if tonumber(ARGV[2]) <= 0 then return redis.call('HDEL', KEYS[1], ARGV[1]) end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], ARGV[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2]))
return 1
`;

const str = (v: unknown): v is string => typeof v === 'string';
const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isVouch = (v: unknown): v is Vouch => {
  const o = v as Vouch;
  return typeof v === 'object' && v !== null && num(o.at) && str(o.device) && str(o.hash);
};

/**
 * One message on the channel: the sending host's id, a space, and a JSON list of events (the
 * events of one tick travel together: one PUBLISH, not one per login). A host skips its own
 * messages by the id alone, without parsing them.
 */
export function encodeSharedMessage(host: string, events: readonly SharedEvent[]): string {
  return `${host} ${JSON.stringify(events)}`;
}

/** Another host's message; events that are not valid are dropped one by one, and counted. */
export function parseSharedMessage(text: string): { host: string; events: SharedEvent[]; dropped: number } | null {
  const sp = text.indexOf(' ');
  if (sp <= 0 || text.length > MAX_MESSAGE_BYTES) return null;
  let list: unknown;
  try {
    list = JSON.parse(text.slice(sp + 1));
  } catch {
    return null;
  }
  if (!Array.isArray(list) || list.length > MAX_BATCH) return null;
  const events: SharedEvent[] = [];
  for (const item of list) {
    const e = parseSharedEvent(item);
    if (e !== null) events.push(e);
  }
  return { host: text.slice(0, sp), events, dropped: list.length - events.length };
}

/** One event, checked field by field. */
export function parseSharedEvent(value: unknown): SharedEvent | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return null;
  const o = value as Record<string, unknown>;
  const user = str(o.user) ? o.user : null;
  if (user === null && o.kind !== 'login') return null;
  const remote = o.remote === null || str(o.remote) ? (o.remote as string | null) : undefined;
  switch (o.kind) {
    case 'vouch':
      if (!str(remote) || !isVouch(o.vouch) || !num(o.ttlMs)) return null;
      return { kind: 'vouch', user: user!, remote, vouch: { at: o.vouch.at, device: o.vouch.device, hash: o.vouch.hash }, ttlMs: o.ttlMs };
    case 'failure':
      if (remote === undefined || !num(o.at) || (o.guess !== undefined && !str(o.guess))) return null;
      return { kind: 'failure', user: user!, remote, ...(str(o.guess) ? { guess: o.guess } : {}), at: o.at };
    case 'refusal': {
      const r = o.refusal as Record<string, unknown> | null;
      if (typeof r !== 'object' || r === null || !str(r.at) || !str(r.protocol) || !str(r.reason) || typeof r.refused !== 'boolean' || typeof o.unknown !== 'boolean' || !num(o.at)) return null;
      const refusal = {
        at: r.at, protocol: r.protocol, remote: str(r.remote) ? r.remote : null, reason: r.reason, refused: r.refused,
        ...(str(r.device) ? { device: r.device } : {}), ...(str(r.device_type) ? { device_type: r.device_type } : {}), ...(str(r.client_name) ? { client_name: r.client_name } : {}),
      };
      return { kind: 'refusal', user: user!, refusal, unknown: o.unknown, at: o.at };
    }
    case 'login': {
      const action = o.action;
      if (!str(o.key) || !str(o.account) || !str(o.message) || (action !== 'allow' && action !== 'reject' && action !== 'delay') || (o.seconds !== undefined && !num(o.seconds))) return null;
      return { kind: 'login', key: o.key, account: o.account, action, ...(num(o.seconds) ? { seconds: o.seconds } : {}), message: o.message };
    }
    default:
      return null;
  }
}

/**
 * The shared state on Redis: events on one pub/sub channel (each host applies the others'), the
 * recent vouches in a hash per user (for a host that asks before the event arrived), learn slots
 * in a hash per user claimed by a script, alert claims as keys with the alert window's life.
 */
export function redisSharedState(o: {
  client: RedisClient;
  subscribe: (channel: string, onMessage: (message: string) => void) => Promise<() => Promise<void>>;
  keyPrefix: string;
  logger: Logger;
  metrics: Metrics;
}): SharedState & { start(): Promise<void>; stop(): Promise<void> } {
  const { client } = o;
  const p = o.keyPrefix;
  const channel = `${p}events`;
  const host = randomBytes(8).toString('hex');
  const handlers: Array<(e: SharedEvent) => void> = [];
  const sent = o.metrics.counter('shared_events_sent_total', 'Vouches, failures and refusals told to the other hosts', ['kind']);
  const failed = o.metrics.counter('shared_calls_failed_total', 'Calls to the shared store that failed or timed out (this host went on alone)', ['call']);
  const received = o.metrics.counter('shared_events_received_total', 'Vouches, failures, refusals and decided logins other hosts told', ['kind']);
  const dropped = o.metrics.counter('shared_events_dropped_total', 'Messages on the events channel that were not a valid event');
  let unsubscribe: (() => Promise<void>) | undefined;
  let batch: SharedEvent[] = [];
  const flush = (): void => {
    if (batch.length === 0) return;
    const events = batch;
    batch = [];
    fire('publish', ['PUBLISH', channel, encodeSharedMessage(host, events)]);
  };
  const own = `${host} `;

  const fire = (call: string, args: readonly RespArg[]): void => {
    client.command(args, { timeoutMs: SHARED_WAIT_MS * 4 }).catch(() => failed.inc({ call }));
  };
  const ask = async <T>(call: string, args: readonly RespArg[], read: (v: unknown) => T): Promise<T | null> => {
    try {
      return read(await client.command(args, { timeoutMs: SHARED_WAIT_MS }));
    } catch {
      failed.inc({ call });
      return null;
    }
  };

  return {
    get up() {
      return client.state === 'ready';
    },
    publish(e) {
      if (client.state !== 'ready') return;
      sent.inc({ kind: e.kind });
      if (e.kind === 'vouch') {
        // Kept for a host that asks before this event reaches it; the hash lives as long as its newest vouch.
        const key = `${p}vouch:${e.user}`;
        fire('vouch', ['HSET', key, e.remote, JSON.stringify({ vouch: e.vouch, untilMs: e.vouch.at + e.ttlMs })]);
        fire('vouch', ['PEXPIRE', key, e.ttlMs]);
      }
      batch.push(e);
      if (batch.length >= MAX_BATCH) flush();
      else if (batch.length === 1) setImmediate(flush);
    },
    onEvent(handler) {
      handlers.push(handler);
    },
    fetchVouch(user, remote) {
      return ask('fetch_vouch', ['HGET', `${p}vouch:${user}`, remote], (v) => {
        if (!str(v)) return null;
        try {
          const r = JSON.parse(v) as { vouch?: unknown; untilMs?: unknown };
          return isVouch(r.vouch) && num(r.untilMs) ? { vouch: r.vouch, untilMs: r.untilMs } : null;
        } catch {
          return null;
        }
      });
    },
    claimSlot(user, slot, max, registered, ttlMs) {
      return ask<SlotClaim>('claim_slot', ['EVAL', CLAIM, 1, `${p}slots:${user}`, slot, max, ttlMs, ...registered], (v) => {
        if (!Array.isArray(v) || !num(v[0]) || !num(v[1])) throw new Error('unexpected reply');
        return v[0] === 1 ? { reserved: true } : { reserved: false, others: v[1] };
      });
    },
    releaseSlot(user, slot, keepMs) {
      fire('release_slot', ['EVAL', RELEASE, 1, `${p}slots:${user}`, slot, keepMs]);
    },
    claimAnnouncement(what, ttlMs) {
      return ask('claim_announcement', ['SET', `${p}announced:${what}`, host, 'NX', 'PX', Math.max(1, Math.round(ttlMs))], (v) => v === 'OK');
    },
    async start() {
      unsubscribe = await o.subscribe(channel, (text) => {
        if (text.startsWith(own)) return;
        const m = parseSharedMessage(text);
        if (m === null) return void dropped.inc();
        if (m.dropped > 0) dropped.inc(undefined, m.dropped);
        for (const e of m.events) {
          received.inc({ kind: e.kind });
          for (const h of handlers) {
            try {
              h(e);
            } catch (err) {
              o.logger.log('error', 'shared_event_failed', { kind: e.kind, error: (err as Error).message });
            }
          }
        }
      });
    },
    async stop() {
      flush();
      await unsubscribe?.().catch(() => {});
    },
  };
}
