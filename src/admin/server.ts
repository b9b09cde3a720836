import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { EventSink } from '../alerts/events.js';
import type { Engine } from '../core/engine.js';
import type { Logger } from '../core/log.js';
import { CONTENT_TYPE, type Metrics } from '../core/metrics.js';
import { VERSION } from '../core/version.js';
import { keyCheck } from '../dovecot-policy/api-key.js';
import { handleApi } from './api.js';

export interface AdminOptions {
  engine: Engine;
  metrics: Metrics;
  events: EventSink;
  logger: Logger;
  /** Ready means: rules loaded and the registry readable on its last check. */
  readiness: () => { ready: boolean; detail: Record<string, unknown> };
  /** When the rules in force were loaded (ms since the epoch), for /healthz. */
  rulesLoadedAt: () => number;
}

const MAX_BODY = 64 * 1024;

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(`${JSON.stringify(body)}\n`);
}

/**
 * Liveness, and what an operator asks first: which build, which process (the pid a SIGHUP goes
 * to), since when, and which rules file is in force since when. Nothing secret: it is open.
 */
function health(o: AdminOptions) {
  return {
    status: 'ok',
    version: VERSION,
    pid: process.pid,
    uptime_seconds: Math.floor(process.uptime()),
    rules: o.engine.rules.file,
    rules_loaded_at: new Date(o.rulesLoadedAt()).toISOString(),
  };
}

/** Health, readiness and metrics are open on loopback; the /api routes need the admin token. */
export function createAdminServer(o: AdminOptions): Server {
  const tokenOk = keyCheck(() => o.engine.rules.admin.token);
  const handle = async (req: IncomingMessage, res: ServerResponse, raw: Buffer | null) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/healthz') return json(res, 200, health(o));
    if (path === '/readyz') {
      const r = o.readiness();
      return json(res, r.ready ? 200 : 503, { status: r.ready ? 'ready' : 'not ready', ...r.detail });
    }
    if (path === '/metrics') {
      res.writeHead(200, { 'content-type': CONTENT_TYPE }).end(o.metrics.render());
      return;
    }
    if (!path.startsWith('/api/')) return json(res, 404, { error: 'not found' });
    const token = o.engine.rules.admin.token;
    if (token === '') return json(res, 404, { error: 'the admin API is disabled: set admin.token in the rules file' });
    if (!tokenOk(req.headers)) {
      o.logger.log('warn', 'admin_unauthorized', { path, peer: req.socket.remoteAddress });
      return json(res, 401, { error: 'missing or wrong token' });
    }
    let body: unknown = null;
    if (raw !== null && raw.length > 0) {
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        return json(res, 400, { error: 'body is not valid JSON' });
      }
    }
    const r = await handleApi(o.engine, o.events, req.method ?? 'GET', path, body);
    if (req.method !== 'GET' && r.status < 300) o.logger.log('info', 'admin_api', { method: req.method, path: path.replace(/\/devices\/.*/, '/devices/…'), status: r.status });
    json(res, r.status, r.body);
  };

  const fail = (res: ServerResponse, e: unknown) => {
    o.logger.log('error', 'admin_internal_error', { error: (e as Error).message });
    if (!res.headersSent) json(res, 500, { error: 'internal error' });
  };

  const server = createServer({ maxHeaderSize: 8192, requestTimeout: 10_000, headersTimeout: 5_000, connectionsCheckingInterval: 1000 }, (req, res) => {
    if (req.method === 'GET' || req.method === 'HEAD') {
      req.resume();
      return void handle(req, res, null).catch((e) => fail(res, e));
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        json(res, 413, { error: `body larger than ${MAX_BODY} bytes` });
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (size <= MAX_BODY) {
        handle(req, res, Buffer.concat(chunks)).catch((e) => fail(res, e));
      }
    });
  });
  server.keepAliveTimeout = 5_000;
  server.maxConnections = 256;
  return server;
}
