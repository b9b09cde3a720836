import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from '../core/log.js';
import { layout, texts } from './html.js';
import { messagePage } from './pages.js';
import { MAX_BODY_BYTES } from './request.js';
import { createRoutes, SECURITY_HEADERS, type PortalOptions, type PortalReply } from './routes.js';

export { DEFAULT_LINK_TTL_MS, DEFAULT_SESSION_TTL_MS, type PortalSettings, type PortalOptions } from './routes.js';

/** After a 413 the rest of an oversized body is read and dropped up to this much, so the client sees the answer instead of a reset. */
const MAX_DRAIN_BYTES = 64 * 1024;

function send(res: ServerResponse, r: Pick<PortalReply, 'status' | 'headers' | 'body'>): void {
  if (res.headersSent) return;
  res.writeHead(r.status, { ...r.headers, ...SECURITY_HEADERS, 'content-length': Buffer.byteLength(r.body) });
  res.end(r.body);
}

/**
 * The account page as a request handler: reads a bounded body, hands the request to the routes,
 * writes their answer with the security headers, and logs one line per request.
 */
export function createPortal(o: PortalOptions): { handle(req: IncomingMessage, res: ServerResponse): void } {
  const routes = createRoutes(o);
  const t = texts(o.strings);
  const base = new URL(o.settings.url).pathname;
  const logger: Logger = o.logger;
  const page = (status: number, title: string, text: string): Pick<PortalReply, 'status' | 'headers' | 'body'> => ({
    status,
    headers: { 'content-type': 'text/html; charset=utf-8' },
    body: layout({ strings: o.strings, base, ...messagePage(title, text) }),
  });

  const run = (req: IncomingMessage, res: ServerResponse, body: string | null) => {
    routes({ method: req.method ?? 'GET', url: req.url ?? '/', headers: req.headers, body, peer: req.socket.remoteAddress ?? null })
      .then((r) => {
        send(res, r);
        logger.log(r.status >= 500 ? 'warn' : 'info', 'portal_request', { ...r.log, peer: req.socket.remoteAddress });
      })
      .catch((e: unknown) => {
        logger.log('error', 'portal_internal_error', { error: (e as Error).message });
        send(res, page(500, t('unavailable_title'), t('unavailable_text')));
      });
  };

  const tooLarge = (req: IncomingMessage, res: ServerResponse) => {
    logger.log('info', 'portal_request', { method: req.method, status: 413, peer: req.socket.remoteAddress });
    res.shouldKeepAlive = false;
    send(res, page(413, t('too_large_title'), t('too_large_text')));
  };

  return {
    handle(req, res) {
      if (req.method !== 'POST') {
        req.resume();
        return run(req, res, null);
      }
      const declared = Number(req.headers['content-length'] ?? 0);
      let size = 0;
      let over = Number.isFinite(declared) && declared > MAX_BODY_BYTES;
      if (over) tooLarge(req, res);
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (over) {
          if (size > MAX_DRAIN_BYTES) req.destroy();
          return;
        }
        if (size > MAX_BODY_BYTES) {
          over = true;
          chunks.length = 0;
          tooLarge(req, res);
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => {
        if (!over) run(req, res, Buffer.concat(chunks).toString('utf8'));
      });
      req.on('error', () => undefined);
    },
  };
}

/** Loopback only, behind the operator's HTTPS proxy; slow or large requests are cut off, as on the admin port. */
export const PORTAL_SERVER_LIMITS = { maxHeaderSize: 8192, requestTimeout: 10_000, headersTimeout: 5_000, keepAliveTimeout: 5_000, maxConnections: 256 } as const;

export function createPortalServer(o: PortalOptions): Server {
  const portal = createPortal(o);
  const server = createServer({
    maxHeaderSize: PORTAL_SERVER_LIMITS.maxHeaderSize,
    requestTimeout: PORTAL_SERVER_LIMITS.requestTimeout,
    headersTimeout: PORTAL_SERVER_LIMITS.headersTimeout,
    connectionsCheckingInterval: 1000,
  }, (req, res) => portal.handle(req, res));
  server.keepAliveTimeout = PORTAL_SERVER_LIMITS.keepAliveTimeout;
  server.maxConnections = PORTAL_SERVER_LIMITS.maxConnections;
  return server;
}
