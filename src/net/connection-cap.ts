import type { Server, Socket } from 'node:net';
import type { Logger } from '../core/log.js';

export interface ConnectionCap {
  /** A complete request arrived on this connection: it is a live client, keep it longest. */
  served(sock: Socket): void;
  readonly open: number;
  readonly evicted: number;
}

/** Under a flood of slow connections, one summary line per interval instead of one per eviction. */
const LOG_EVERY_MS = 10_000;

/**
 * At most `max` open connections, without ever refusing a new one. Refusing at the limit (Node's
 * server.maxConnections) lets 1,000 idle or dribbling sockets lock Dovecot or Postfix out until
 * the timeouts fire. Instead, a new connection over the limit closes another: first the oldest
 * that never completed a request, then the one that has gone longest since its last. A mail
 * server's connection, served a moment ago, goes last, and an evicted idle peer just reconnects.
 */
export function capConnections(server: Server, max: number, logger: Logger, listener: string): ConnectionCap {
  // Two queues, oldest first: connections that never finished a request, and the rest ordered by
  // when they last did. A flood of fresh connections must not push a served one to the front.
  const fresh = new Map<Socket, true>();
  const active = new Map<Socket, true>();
  let evicted = 0;
  let unlogged = 0;
  let flush: NodeJS.Timeout | undefined;
  const report = () => {
    flush = undefined;
    if (unlogged === 0) return;
    logger.log('warn', 'connection_limit', { listener, max, closed: unlogged, why: 'closed the connections longest without a complete request' });
    unlogged = 0;
    flush = setTimeout(report, LOG_EVERY_MS);
    flush.unref();
  };
  const oldest = (m: Map<Socket, true>, except: Socket): Socket | undefined => {
    for (const s of m.keys()) if (s !== except) return s;
    return undefined;
  };
  server.on('connection', (sock: Socket) => {
    fresh.set(sock, true);
    sock.once('close', () => {
      fresh.delete(sock);
      active.delete(sock);
    });
    while (fresh.size + active.size > max) {
      // Never the newcomer itself: it has had no chance yet to send its request.
      const victim = oldest(fresh, sock) ?? oldest(active, sock);
      if (victim === undefined) break;
      fresh.delete(victim);
      active.delete(victim);
      victim.destroy();
      evicted++;
      unlogged++;
    }
    // The first eviction is logged at once, the rest of a flood as one line per interval.
    if (unlogged > 0 && flush === undefined) report();
  });
  server.on('close', () => clearTimeout(flush));
  return {
    served(sock) {
      if (fresh.delete(sock) || active.delete(sock)) active.set(sock, true);
    },
    get open() { return fresh.size + active.size; },
    get evicted() { return evicted; },
  };
}
