/**
 * One TCP connection to a Redis server or Sentinel: pipelined writes, replies matched in order,
 * per-command deadlines, and a watchdog that declares the connection dead when it stays silent
 * with commands outstanding. It never reconnects: the supervisor in client.ts does.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { createRespParser, encodeCommand, isErrorReply, type RespReply } from './resp.js';
import { RedisError, type RedisErrorCode, type RespArg } from './types.js';

/** TCP keepalive probes start after this much idleness, so a silently vanished peer shows up. */
const KEEPALIVE_DELAY_MS = 10_000;
/** A pending queue compacts once this many answered entries sit at its head. */
const QUEUE_COMPACT_AT = 1024;

export interface ConnOptions {
  host: string;
  port: number;
  connectTimeoutMs: number;
  /** Outstanding commands and no byte received for this long (or the oldest command's own deadline, if longer): dead. */
  deadAfterMs: number;
  maxPending: number;
  /** Pub/sub mode: `message` pushes go here instead of to the pending queue. */
  onMessage?: (channel: string, message: string) => void;
  /** Sockets alive, so the owner can destroy them all on close (including ones still connecting). */
  live: Set<Socket>;
}

export interface Conn {
  /** "host:port" ("[v6]:port"). */
  readonly label: string;
  readonly open: boolean;
  send(args: readonly RespArg[], timeoutMs: number): Promise<RespReply>;
  /** Closes the socket; everything pending rejects with `code` (unavailable unless said). */
  destroy(reason: string, code?: RedisErrorCode): void;
  /** Resolves with the reason once the connection is gone, whoever ended it. */
  readonly closed: Promise<string>;
}

interface Pending {
  resolve: (r: RespReply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  timeoutMs: number;
  /** Timed out: its reply, when it comes, is read and dropped so later replies stay matched. */
  abandoned: boolean;
}

export function endpointLabel(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export function describeSocketError(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ECONNRESET':
      return 'connection reset';
    case 'EPIPE':
      return 'connection closed';
    case 'ETIMEDOUT':
      return 'connection timed out';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'host unreachable';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host name not found';
    default:
      return err.code ?? err.message;
  }
}

function isMessagePush(r: RespReply): r is [string, string, string] {
  return Array.isArray(r) && r.length === 3 && r[0] === 'message' && typeof r[1] === 'string' && typeof r[2] === 'string';
}

/** Connects (within connectTimeoutMs) and resolves with the connection, or rejects "unavailable". */
export function openConn(o: ConnOptions): Promise<Conn> {
  const label = endpointLabel(o.host, o.port);
  return new Promise((resolveOpen, rejectOpen) => {
    const socket = netConnect({ host: o.host, port: o.port });
    o.live.add(socket);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);

    let connected = false;
    let open = true;
    let closeReason = '';
    let resolveClosed!: (reason: string) => void;
    const closed = new Promise<string>((r) => (resolveClosed = r));
    const parser = createRespParser();
    const queue: Pending[] = [];
    let head = 0;
    let outgoing: Buffer[] = [];
    let flushScheduled = false;
    let lastActivity = 0;
    let watchdog: NodeJS.Timeout | null = null;

    const connectTimer = setTimeout(() => destroy(`connect timeout after ${o.connectTimeoutMs} ms (${label})`), o.connectTimeoutMs);

    const pendingCount = () => queue.length - head;

    const shift = (): Pending | undefined => {
      const p = queue[head];
      if (p === undefined) return undefined;
      head++;
      if (head === queue.length) {
        queue.length = 0;
        head = 0;
      } else if (head >= QUEUE_COMPACT_AT && head * 2 >= queue.length) {
        queue.splice(0, head);
        head = 0;
      }
      return p;
    };

    const destroy = (reason: string, code: RedisErrorCode = 'unavailable'): void => {
      if (!open) return;
      open = false;
      closeReason = reason;
      clearTimeout(connectTimer);
      if (watchdog) clearTimeout(watchdog);
      watchdog = null;
      outgoing = [];
      socket.destroy();
      const err = new RedisError(code, reason);
      for (let p = shift(); p; p = shift()) {
        clearTimeout(p.timer);
        if (!p.abandoned) p.reject(err);
      }
      if (!connected) rejectOpen(err);
      resolveClosed(reason);
    };

    // Silence is measured from the last byte received or, after an idle spell, from the moment
    // a command was queued: a slow reply trickling in is alive, a frozen peer is not. Replies come
    // in order, so the oldest command decides: once it is past its own deadline with nothing
    // received meanwhile, the peer is not answering, however many newer commands keep arriving
    // (under load there always are some, each within its deadline). A command given a longer
    // deadline than deadAfterMs keeps the connection until that deadline passes.
    const checkWatchdog = (): void => {
      watchdog = null;
      if (!open || pendingCount() === 0) return;
      const silent = Date.now() - lastActivity;
      if (silent < o.deadAfterMs) watchdog = setTimeout(checkWatchdog, o.deadAfterMs - silent);
      else if (queue[head]!.abandoned) destroy(`no reply from ${label} for ${silent} ms with ${pendingCount()} command(s) outstanding: connection presumed dead`);
      // Otherwise the oldest command's timeout calls again.
    };

    const flush = (): void => {
      flushScheduled = false;
      if (!open || outgoing.length === 0) return;
      const data = outgoing.length === 1 ? outgoing[0]! : Buffer.concat(outgoing);
      outgoing = [];
      socket.write(data);
    };

    const send = (args: readonly RespArg[], timeoutMs: number): Promise<RespReply> => {
      if (!open) return Promise.reject(new RedisError('unavailable', `connection to ${label} is closed (${closeReason})`));
      if (pendingCount() >= o.maxPending) {
        return Promise.reject(new RedisError('unavailable', `${pendingCount()} commands already await replies from ${label} (maxPending)`));
      }
      let data: Buffer;
      try {
        data = encodeCommand(args);
      } catch (e) {
        return Promise.reject(e);
      }
      return new Promise<RespReply>((resolve, reject) => {
        const p: Pending = {
          resolve,
          reject,
          timeoutMs,
          abandoned: false,
          timer: setTimeout(() => {
            p.abandoned = true;
            reject(new RedisError('timeout', `no reply from ${label} within ${timeoutMs} ms`));
            if (!watchdog) checkWatchdog();
          }, timeoutMs),
        };
        if (pendingCount() === 0) lastActivity = Date.now();
        queue.push(p);
        if (!watchdog) watchdog = setTimeout(checkWatchdog, o.deadAfterMs);
        outgoing.push(data);
        // Everything sent in this tick goes out in one write.
        if (!flushScheduled) {
          flushScheduled = true;
          process.nextTick(flush);
        }
      });
    };

    socket.on('connect', () => {
      connected = true;
      clearTimeout(connectTimer);
      resolveOpen({
        label,
        get open() {
          return open;
        },
        send,
        destroy,
        closed,
      });
    });

    socket.on('data', (chunk: Buffer) => {
      if (!open) return;
      lastActivity = Date.now();
      let replies: RespReply[];
      try {
        replies = parser.push(chunk);
      } catch (e) {
        destroy(`protocol error from ${label}: ${(e as Error).message}`, 'protocol');
        return;
      }
      for (const r of replies) {
        if (o.onMessage && isMessagePush(r)) {
          o.onMessage(r[1], r[2]);
          continue;
        }
        const p = shift();
        if (!p) {
          const what = isErrorReply(r) ? `error reply "${r.error.slice(0, 80)}"` : 'reply';
          destroy(`protocol error from ${label}: a ${what} with no command awaiting it`, 'protocol');
          return;
        }
        clearTimeout(p.timer);
        if (!p.abandoned) p.resolve(r);
      }
    });

    socket.on('error', (err: NodeJS.ErrnoException) => destroy(`${describeSocketError(err)} (${label})`));
    socket.on('end', () => destroy(`connection closed by ${label}`));
    socket.on('close', () => {
      o.live.delete(socket);
      destroy(`connection to ${label} closed`);
    });
  });
}
