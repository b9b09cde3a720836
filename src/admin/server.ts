import { createServer, type Server } from 'node:http';

export interface AdminHandlers {
  /** Healthy means the process serves requests; readiness (rules, registry) comes with /readyz. */
  health(): { ok: boolean; detail: Record<string, unknown> };
}

/** The admin listener: small, GET only, bounded like every other listener. */
export function createAdminServer(h: AdminHandlers): Server {
  const server = createServer({ maxHeaderSize: 8192, requestTimeout: 10_000, headersTimeout: 5_000 }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    req.resume(); // discard any body; nothing here reads one
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'application/json' }).end('{"error":"method not allowed"}\n');
      return;
    }
    if (path === '/healthz') {
      const r = h.health();
      res.writeHead(r.ok ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(`${JSON.stringify({ status: r.ok ? 'ok' : 'unhealthy', ...r.detail })}\n`);
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}\n');
  });
  server.keepAliveTimeout = 5_000;
  server.maxConnections = 256;
  return server;
}
