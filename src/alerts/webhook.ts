import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import type { TcpSocketConnectOpts } from 'node:net';
import { request as httpsRequest } from 'node:https';

export interface WebhookOptions {
  /** http: or https: URL the events are POSTed to. */
  url: string;
  /** HMAC key; receivers verify `x-cidlock-signature` with it. */
  secret: string;
  /** Default 1000. When full, the OLDEST queued event is dropped and counted. */
  maxQueue?: number;
  /** Default 5 (first try + retries). */
  maxAttempts?: number;
  /** Default 5000, for the whole request (connect, headers and body). */
  timeoutMs?: number;
  /** Default 1000. Delay before retry n = backoffMs * 2^(n-1), capped at 60 s, with +-20% jitter. */
  backoffMs?: number;
  /** Default 2 deliveries at a time. */
  concurrency?: number;
  /** Called once per failed attempt, for logging; `final` is true when the event is given up. */
  onError?: (info: { event: string; attempt: number; error: string; final: boolean }) => void;
  /** Injectable clock (ms since the epoch) for the timestamp header and the event's `ts`. */
  now?: () => number;
}

export interface WebhookStats {
  /** Events waiting: in the queue, or waiting for a retry. */
  queued: number;
  /** HTTP requests in progress. */
  inFlight: number;
  /** Monotonic counters: every sent event ends in exactly one of delivered, failed, dropped. */
  delivered: number;
  failed: number;
  dropped: number;
  /** Attempts after the first (monotonic). */
  retries: number;
}

export interface Webhook {
  /** Enqueues the event. Never throws, never blocks, never awaits. */
  send(event: { event: string } & Record<string, unknown>): void;
  stats(): WebhookStats;
  /** Stops retries and waits (at most timeoutMs) for in-flight requests; queued events are dropped and counted. */
  close(): Promise<void>;
}

const MAX_BACKOFF_MS = 60_000;
const MAX_RESPONSE_BYTES = 64 * 1024;
const USER_AGENT = 'cidlock-webhook';

/**
 * `sha256=<hex>` of HMAC-SHA256(secret, `${timestamp}.${body}`).
 * The timestamp is part of the signed text so a captured request cannot be replayed later:
 * receivers reject signatures whose timestamp is too old (e.g. more than 5 minutes).
 */
export function signature(secret: string, timestamp: string, body: string): string {
  return 'sha256=' + createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

/**
 * Checks an `x-cidlock-signature` header in constant time. It does not check the timestamp's
 * age: a receiver must also reject old timestamps, or a captured request could be replayed.
 */
export function verifySignature(secret: string, timestamp: string, body: string, header: string): boolean {
  if (typeof header !== 'string') return false;
  const expected = Buffer.from(signature(secret, timestamp, body), 'utf8');
  const given = Buffer.from(header, 'utf8');
  // Only the length can leak, and the length of a sha256 hex digest is public.
  return given.length === expected.length && timingSafeEqual(given, expected);
}

interface Pending {
  readonly id: string;
  readonly name: string;
  readonly body: string;
}

type Outcome = { ok: true } | { ok: false; retry: boolean; error: string };

function positiveInt(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`webhook: ${name} must be a positive integer, got ${String(v)}`);
  return v;
}

function nonNegative(name: string, v: number | undefined, dflt: number, min = 0): number {
  if (v === undefined) return dflt;
  if (!Number.isFinite(v) || v < min) throw new RangeError(`webhook: ${name} must be a number >= ${min}, got ${String(v)}`);
  return v;
}

function describeError(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) {
    // Node 20 tries every address of a host name and reports them all (e.g. localhost on ::1 and 127.0.0.1).
    return [...new Set(err.errors.map(describeError))].join('; ');
  }
  if (err instanceof Error) return err.message || (err as NodeJS.ErrnoException).code || err.name;
  return String(err);
}

function classify(status: number): Outcome {
  if (status >= 200 && status < 300) return { ok: true };
  if (status >= 300 && status < 400) return { ok: false, retry: false, error: `HTTP ${status} (redirects are not followed)` };
  if (status === 408 || status === 429) return { ok: false, retry: true, error: `HTTP ${status}` };
  if (status >= 400 && status < 500) return { ok: false, retry: false, error: `HTTP ${status}` };
  return { ok: false, retry: true, error: `HTTP ${status}` };
}

/** Delay before retry `n` (1 = the first retry): exponential, jittered +-20%, never above 60 s. */
function backoffDelay(backoffMs: number, n: number): number {
  const base = Math.min(MAX_BACKOFF_MS, backoffMs * 2 ** (n - 1));
  return Math.min(MAX_BACKOFF_MS, Math.round(base * (0.8 + Math.random() * 0.4)));
}

/**
 * Delivers security events to an operator's webhook without ever holding up a login decision:
 * `send()` serialises the event and enqueues it; deliveries run afterwards, `concurrency` at a time.
 * An event waiting for a retry keeps its delivery slot, so a receiver that is down sees at most
 * `concurrency` events being retried while the rest wait in the bounded queue.
 */
export function createWebhook(opts: WebhookOptions): Webhook {
  let url: URL;
  try {
    url = new URL(opts.url);
  } catch {
    throw new TypeError(`webhook: invalid url ${JSON.stringify(opts.url)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`webhook: url must be http: or https:, got ${url.protocol}`);
  if (typeof opts.secret !== 'string' || opts.secret === '') throw new TypeError('webhook: secret must be a non-empty string');
  const secret = opts.secret;
  const maxQueue = positiveInt('maxQueue', opts.maxQueue, 1000);
  const maxAttempts = positiveInt('maxAttempts', opts.maxAttempts, 5);
  const concurrency = positiveInt('concurrency', opts.concurrency, 2);
  const timeoutMs = nonNegative('timeoutMs', opts.timeoutMs, 5000, 1);
  const backoffMs = nonNegative('backoffMs', opts.backoffMs, 1000);
  const now = opts.now ?? Date.now;
  const doRequest = url.protocol === 'https:' ? httpsRequest : httpRequest;

  // FIFO with a moving head: O(1) push and shift even with a queue of a million events.
  let queue: Array<Pending | undefined> = [];
  let head = 0;
  const queueLength = () => queue.length - head;
  const shift = (): Pending | undefined => {
    if (head >= queue.length) return undefined;
    const p = queue[head];
    queue[head++] = undefined;
    if (head === queue.length) {
      queue = [];
      head = 0;
    } else if (head >= 1024 && head * 2 >= queue.length) {
      queue = queue.slice(head);
      head = 0;
    }
    return p;
  };

  let closed = false;
  let closing: Promise<void> | undefined;
  let pumpScheduled = false;
  let active = 0; // deliveries holding a slot: in flight or waiting for a retry
  let inFlight = 0;
  let backingOff = 0;
  let delivered = 0;
  let failed = 0;
  let dropped = 0;
  let retries = 0;
  const requests = new Set<ClientRequest>();
  const sleepers = new Set<() => void>();
  const idleWaiters: Array<() => void> = [];

  const report = (info: { event: string; attempt: number; error: string; final: boolean }) => {
    try {
      opts.onError?.(info);
    } catch {
      // A broken logger must not break delivery.
    }
  };

  /** Resolves true after `ms`, or false at once if close() cancels it. The timer never keeps the process alive. */
  const sleep = (ms: number) => new Promise<boolean>((resolve) => {
    const cancel = () => {
      clearTimeout(timer);
      sleepers.delete(cancel);
      resolve(false);
    };
    const timer = setTimeout(() => {
      sleepers.delete(cancel);
      resolve(true);
    }, ms);
    timer.unref();
    sleepers.add(cancel);
  });

  /** One POST. Never rejects. */
  const attempt = (p: Pending) => new Promise<Outcome>((resolve) => {
    // A fresh timestamp per attempt, so a retry is not refused as a replay; the body (and its id) never changes.
    const timestamp = String(Math.floor(now() / 1000));
    let status = 0;
    let settled = false;
    let req: ClientRequest | undefined;
    const finish = (o: Outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (req !== undefined) requests.delete(req);
      resolve(o);
    };
    const timer = setTimeout(() => {
      req?.destroy(new Error(`timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    timer.unref();
    try {
      // (http's RequestOptions type lacks autoSelectFamily; http passes it on to net.connect.)
      const options: RequestOptions & Pick<TcpSocketConnectOpts, 'autoSelectFamily'> = {
        method: 'POST',
        agent: false, // one connection per request: no stale keep-alive sockets, nothing pooled to clean up
        // Try every address of the host name (Node 20's default; Node 18, Debian 12's, tries only
        // the first): http://localhost:PORT/ must reach a receiver on 127.0.0.1 when ::1 comes first.
        autoSelectFamily: true,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(p.body),
          'user-agent': USER_AGENT,
          'x-cidlock-timestamp': timestamp,
          'x-cidlock-signature': signature(secret, timestamp, p.body),
        },
      };
      req = doRequest(url, options);
    } catch (err) {
      finish({ ok: false, retry: false, error: describeError(err) });
      return;
    }
    requests.add(req);
    req.on('response', (res: IncomingMessage) => {
      status = res.statusCode ?? 0;
      // Read and discard the body, but never more than 64 KiB of it.
      let received = 0;
      res.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received > MAX_RESPONSE_BYTES) res.destroy();
      });
      res.on('error', () => {});
      res.on('close', () => finish(classify(status)));
    });
    req.on('error', (err) => {
      // After the status line arrived, the outcome is decided by the status (a 2xx was accepted).
      finish(status !== 0 ? classify(status) : { ok: false, retry: true, error: describeError(err) });
    });
    req.on('close', () => {
      finish(status !== 0 ? classify(status) : { ok: false, retry: true, error: 'connection closed without a response' });
    });
    req.end(p.body);
  });

  const deliver = async (p: Pending): Promise<void> => {
    for (let n = 1; ; n++) {
      if (n > 1) retries++;
      inFlight++;
      const o = await attempt(p);
      inFlight--;
      if (o.ok) {
        delivered++;
        return;
      }
      const final = !o.retry || n >= maxAttempts || closed;
      report({ event: p.name, attempt: n, error: o.error, final });
      if (final) {
        failed++;
        return;
      }
      backingOff++;
      const woke = await sleep(backoffDelay(backoffMs, n));
      backingOff--;
      if (!woke || closed) {
        // close() stopped the retry: the event was still waiting, like a queued one.
        dropped++;
        return;
      }
    }
  };

  const pump = () => {
    pumpScheduled = false;
    while (!closed && active < concurrency) {
      const p = shift();
      if (p === undefined) break;
      active++;
      deliver(p)
        .catch(() => {
          failed++;
        })
        .finally(() => {
          active--;
          if (active === 0) for (const w of idleWaiters.splice(0)) w();
          pump();
        });
    }
  };

  return {
    send(e) {
      let name = '';
      try {
        name = typeof e?.event === 'string' ? e.event : String(e?.event);
        if (closed) {
          dropped++;
          return;
        }
        const id = randomUUID();
        // id last, so an event field can never replace the de-duplication id.
        const body = JSON.stringify({ ...e, id, ts: new Date(now()).toISOString() });
        queue.push({ id, name, body });
        if (queueLength() > maxQueue) {
          shift();
          dropped++;
        }
        if (!pumpScheduled) {
          pumpScheduled = true;
          // After the caller's synchronous work (the login decision), not inside it.
          queueMicrotask(pump);
        }
      } catch (err) {
        failed++;
        report({ event: name, attempt: 0, error: `cannot serialise event: ${describeError(err)}`, final: true });
      }
    },

    stats() {
      return { queued: queueLength() + backingOff, inFlight, delivered, failed, dropped, retries };
    },

    close() {
      closing ??= new Promise<void>((resolve) => {
        closed = true;
        dropped += queueLength();
        queue = [];
        head = 0;
        for (const cancel of [...sleepers]) cancel();
        if (active === 0) {
          resolve();
          return;
        }
        const deadline = setTimeout(() => {
          // Requests time out on their own after timeoutMs; this only makes sure close() keeps its word.
          for (const req of [...requests]) req.destroy(new Error('webhook closed'));
          // The destroyed requests report on the next ticks; let their deliveries count first.
          setImmediate(resolve);
        }, timeoutMs);
        deadline.unref();
        idleWaiters.push(() => {
          clearTimeout(deadline);
          resolve();
        });
      });
      return closing;
    },
  };
}
