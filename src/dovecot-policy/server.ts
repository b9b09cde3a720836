import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Engine } from '../core/engine.js';
import type { Logger } from '../core/log.js';
import type { SharedState } from '../core/shared-state.js';
import { capConnections } from '../net/connection-cap.js';
import { answerFor } from './answer.js';
import { keyCheck } from './api-key.js';
import { createPendingLogins, loginKey, type Pending } from './pending.js';
import { commandFromPath, reportOutcome, translateDovecot, type DovecotBody } from './translate.js';

export interface DovecotServerLimits {
  maxBodyBytes: number;
  /** Longer than Dovecot's own 10 s idle time, so Dovecot always closes first and never hits a reset. */
  keepAliveMs: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  maxConnections: number;
}

const DOVECOT_LIMITS: DovecotServerLimits = {
  maxBodyBytes: 64 * 1024,
  keepAliveMs: 65_000,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 15_000,
  maxConnections: 1024,
};

const JSON_HEADERS = { 'content-type': 'application/json' };

function send(res: ServerResponse, status: number, body: unknown, close = false): void {
  const text = JSON.stringify(body);
  // No content-length on purpose: with one, bench/ measured the p99 at half rate at 4 to 5.6 ms
  // instead of 1.5 ms (Node 20). Dovecot reads the chunked reply just as well.
  res.writeHead(status, close ? { ...JSON_HEADERS, connection: 'close' } : JSON_HEADERS);
  res.end(text);
}

/**
 * The HTTP server Dovecot's auth_policy_* settings talk to. A thin shell: parsing and decisions
 * live in translate.ts and the core; this file only moves bytes and bounds them.
 */
export function createDovecotServer(opts: { engine: Engine; logger: Logger; apiKey: () => string; limits?: Partial<DovecotServerLimits>; shared?: SharedState }): Server {
  const { engine, logger } = opts;
  const limits = { ...DOVECOT_LIMITS, ...opts.limits };
  const pending = createPendingLogins();
  // Logins other hosts decided before auth, by hashed key (the key holds the client's CID).
  const remote = createPendingLogins();
  const sharedKey = (key: string) => createHash('sha256').update(key).digest('base64url');
  const takeRemote = (key: string): Pending | undefined => {
    const k = sharedKey(key);
    const p = remote.get(k);
    if (p === undefined) return undefined;
    remote.delete(k);
    pending.set(key, p);
    return p;
  };
  const keyOk = keyCheck(opts.apiKey);

  const bad = (req: IncomingMessage, res: ServerResponse, status: number, reason: string, close = false) => {
    logger.log('warn', 'dovecot_bad_request', { status, reason, peer: req.socket.remoteAddress });
    send(res, status, { error: reason }, close);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, raw: Buffer): Promise<void> => {
    const command = commandFromPath(req.url ?? '/');
    if (command === null) return bad(req, res, 404, 'expected ?command=allow or ?command=report');
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      return bad(req, res, 400, 'body is not valid JSON');
    }
    const t = translateDovecot(body, { idFields: engine.rules.dovecot.idFields, defaultDomain: engine.rules.accounts.defaultDomain, stage: command === 'allow' ? 'before_auth' : 'report' });
    if (!t.ok) return bad(req, res, 400, t.error);
    const b = body as DovecotBody;
    const key = loginKey(b);
    const p = pending.get(key) ?? (opts.shared === undefined ? undefined : takeRemote(key));

    if (command === 'report') {
      // Answer first: Dovecot never reads it, and the report must not hold the connection.
      send(res, 200, {});
      pending.delete(key);
      const outcome = reportOutcome(b);
      // A decision made for another account (the passdb renamed it, and no after-auth call came)
      // says nothing about this one; one another host made is decided again here, uncounted.
      const decision = p !== undefined && p.account === t.request.user ? p.decision : undefined;
      if (outcome.success) engine.reportSuccess(t.request, decision);
      else engine.reportFailure(t.request, { policyReject: outcome.policyReject, ...(p?.decision !== undefined ? { decision: p.decision } : {}) });
      return;
    }

    if (p !== undefined && !p.afterAuthSeen) {
      // The after-auth call of a login decided before auth (here or on another host): the same
      // answer, counted once, unless the passdb named another account than the one decided on.
      // Then the lock of the account actually logged into decides, after the password check,
      // with the same reply as a wrong one.
      p.afterAuthSeen = true;
      if (p.account !== t.request.user) {
        p.decision = await engine.decideLogin({ ...t.request, stage: 'after_auth' }, p.decision !== undefined ? { replaces: p.decision } : {});
        p.answer = p.decision;
        p.account = t.request.user;
      }
      return send(res, 200, answerFor(p.answer));
    }
    const decision = await engine.decideLogin(t.request);
    pending.set(key, { decision, answer: decision, account: t.request.user, afterAuthSeen: false });
    opts.shared?.publish({ kind: 'login', key: sharedKey(key), account: t.request.user, action: decision.action, ...(decision.seconds !== undefined ? { seconds: decision.seconds } : {}), message: decision.message });
    send(res, 200, answerFor(decision));
  };

  // Another host decided a login before auth: its after-auth call may come here (a balancer).
  opts.shared?.onEvent((e) => {
    if (e.kind !== 'login') return;
    const answer = { action: e.action, message: e.message, ...(e.seconds !== undefined ? { seconds: e.seconds } : {}) };
    remote.set(e.key, { answer, account: e.account, afterAuthSeen: false });
  });

  const server = createServer(
    {
      maxHeaderSize: 16 * 1024,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      // How often Node enforces the two timeouts above; its default (30 s) would let them slip.
      connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs),
      keepAlive: true,
    },
    (req, res) => {
      cap.served(req.socket);
      // Always required: without it anything on the host could forge logins, reports and failures.
      if (!keyOk(req.headers)) {
        req.resume();
        return bad(req, res, 401, 'missing or wrong API key', true);
      }
      if (req.method !== 'POST') {
        req.resume();
        res.setHeader('allow', 'POST');
        return bad(req, res, 405, 'only POST is served here');
      }
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > limits.maxBodyBytes) {
        req.resume();
        return bad(req, res, 413, `body larger than ${limits.maxBodyBytes} bytes`, true);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      let over = false;
      req.on('data', (c: Buffer) => {
        if (over) return;
        size += c.length;
        if (size > limits.maxBodyBytes) {
          over = true;
          bad(req, res, 413, `body larger than ${limits.maxBodyBytes} bytes`, true);
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => {
        if (over) return;
        handle(req, res, Buffer.concat(chunks, size)).catch((err: unknown) => {
          logger.log('error', 'dovecot_internal_error', { error: (err as Error).message });
          if (!res.headersSent) send(res, 500, { error: 'internal error' });
        });
      });
    },
  );
  server.keepAliveTimeout = limits.keepAliveMs;
  // keepAliveTimeout starts only after a response: a connection that never sends a byte would
  // stay forever without an inactivity limit of its own.
  server.timeout = limits.keepAliveMs;
  const cap = capConnections(server, limits.maxConnections, logger, 'dovecot');
  server.on('clientError', (err, socket) => {
    // Malformed HTTP, oversized headers, timeouts: answer if the socket still can, never crash.
    const code = (err as NodeJS.ErrnoException).code;
    const status = code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    if (socket.writable) {
      socket.end(`HTTP/1.1 ${status} Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      // A client that keeps writing never closes its side: do not wait for it.
      setTimeout(() => socket.destroy(), 500).unref();
    } else {
      socket.destroy();
    }
  });
  return server;
}
