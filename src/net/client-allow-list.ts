import type { Server, Socket } from 'node:net';
import type { Logger } from '../core/log.js';
import { findNetwork, type Cidr } from '../core/ip.js';

/** A scan or a misconfigured peer retries fast: one line at once, then one summary per interval. */
const LOG_EVERY_MS = 10_000;

export interface AllowList {
  readonly refused: number;
}

/**
 * Closes at once, before a byte is read, every connection from an address outside `clients`.
 * Postfix's protocols carry no credentials, so over TCP the peer's address is all there is.
 *
 * The check wraps the server's emit rather than adding a 'connection' listener: a refused socket
 * must never reach the protocol handler or the connection cap, where a flood of refused
 * connections would count against the limit and evict the mail servers' own connections.
 */
export function allowOnly(server: Server, clients: readonly Cidr[], logger: Logger, listener: string): AllowList {
  let refused = 0;
  let unlogged = 0;
  let lastPeer = '';
  let flush: NodeJS.Timeout | undefined;
  const report = () => {
    flush = undefined;
    if (unlogged === 0) return;
    logger.log('warn', 'client_refused', { listener, closed: unlogged, last_peer: lastPeer, why: `not in listen.${listener}.clients` });
    unlogged = 0;
    flush = setTimeout(report, LOG_EVERY_MS);
    flush.unref();
  };
  const emit = server.emit.bind(server);
  server.emit = ((event: string | symbol, ...args: unknown[]): boolean => {
    if (event === 'connection') {
      const sock = args[0] as Socket;
      const peer = sock.remoteAddress ?? '';
      if (findNetwork(clients, peer) === null) {
        sock.destroy();
        refused++;
        unlogged++;
        lastPeer = peer;
        if (flush === undefined) report();
        return false;
      }
    }
    return emit(event, ...args);
  }) as Server['emit'];
  server.on('close', () => clearTimeout(flush));
  return { get refused() { return refused; } };
}
