import { createServer, type Server, type Socket } from 'node:net';
import type { Engine } from '../core/engine.js';
import type { Logger } from '../core/log.js';
import { capConnections } from '../net/connection-cap.js';
import { encodeNetstring, parseNetstring } from './netstring.js';
import { lookupTable } from './tables.js';

export interface SocketmapLimits {
  maxRequestBytes: number;
  /** Postfix closes idle socketmap connections after 10 s; ours waits longer so Postfix always closes first. */
  idleMs: number;
  maxConnections: number;
  /** A lookup is one small write; one still incomplete after this is a slow client. */
  requestTimeoutMs: number;
}

export const SOCKETMAP_LIMITS: SocketmapLimits = { maxRequestBytes: 4096, idleMs: 120_000, maxConnections: 1024, requestTimeoutMs: 10_000 };

/** All tables on one listener: Postfix shares one connection per process among them. */
export function createSocketmapServer(opts: { engine: Engine; logger: Logger; limits?: Partial<SocketmapLimits> }): Server {
  const { engine, logger } = opts;
  const limits = { ...SOCKETMAP_LIMITS, ...opts.limits };
  const server = createServer((sock: Socket) => {
    let buf: Buffer = Buffer.alloc(0);
    sock.setTimeout(limits.idleMs, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    let partial: NodeJS.Timeout | undefined;
    sock.on('close', () => clearTimeout(partial));
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      let offset = 0;
      for (;;) {
        const r = parseNetstring(buf, offset, limits.maxRequestBytes);
        if (r.kind === 'more') break;
        if (r.kind === 'error') {
          // Framing is lost: nothing after this byte can be trusted, so close rather than guess.
          logger.log('warn', 'socketmap_bad_request', { reason: r.error, peer: sock.remoteAddress });
          sock.destroy();
          return;
        }
        offset = r.next;
        cap.served(sock);
        const text = r.value.toString('utf8');
        const space = text.indexOf(' ');
        let reply: string;
        try {
          reply = space <= 0 ? 'PERM expected "<table> <key>"' : lookupTable(engine, text.slice(0, space), text.slice(space + 1));
        } catch (err) {
          // A lookup that cannot be answered now (an unreadable registry, a bug) is temporary for
          // Postfix (451, the client retries); the connection and the daemon keep serving.
          logger.log('error', 'socketmap_internal_error', { error: (err as Error).message });
          reply = 'TEMP lookup failed';
        }
        if (reply.startsWith('PERM')) logger.log('warn', 'socketmap_bad_request', { reason: reply, peer: sock.remoteAddress });
        sock.write(encodeNetstring(reply));
      }
      buf = offset === buf.length ? Buffer.alloc(0) : buf.subarray(offset);
      if (buf.length > limits.maxRequestBytes + 8) {
        logger.log('warn', 'socketmap_bad_request', { reason: 'request too large', peer: sock.remoteAddress });
        sock.destroy();
      }
      if (buf.length === 0 || sock.destroyed) {
        clearTimeout(partial);
        partial = undefined;
      } else if (partial === undefined) {
        partial = setTimeout(() => sock.destroy(), limits.requestTimeoutMs);
        partial.unref();
      }
    });
  });
  const cap = capConnections(server, limits.maxConnections, logger, 'socketmap');
  return server;
}
