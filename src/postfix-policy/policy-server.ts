import { createServer, type Server, type Socket } from 'node:net';
import type { Engine } from '../core/engine.js';
import type { Logger } from '../core/log.js';
import { capConnections } from '../net/connection-cap.js';
import { DEFAULT_LIMITS, parseAttributeBlock, type AttributeLimits } from './attributes.js';
import { clampDelaySeconds } from '../core/delay.js';
import { formatReply, policyAction } from './policy-action.js';
import { translatePostfix } from './translate.js';

export interface PolicyLimits extends AttributeLimits {
  maxRequestBytes: number;
  /** Longer than Postfix's max_idle (300 s), so smtpd closes its idle connections first. */
  idleMs: number;
  maxConnections: number;
  /** Postfix writes a request at once; one still incomplete after this is a slow client, not Postfix. */
  requestTimeoutMs: number;
}

export const POLICY_LIMITS: PolicyLimits = { ...DEFAULT_LIMITS, maxRequestBytes: 64 * 1024, idleMs: 330_000, maxConnections: 2048, requestTimeoutMs: 10_000 };

const TERMINATOR = Buffer.from('\n\n');

/**
 * Postfix's policy delegation protocol (check_policy_service): one persistent connection per
 * smtpd process, requests strictly one after another. A thin shell around the attribute parser,
 * the translation and the core.
 */
export function createPolicyServer(opts: { engine: Engine; logger: Logger; limits?: Partial<PolicyLimits> }): Server {
  const { engine, logger } = opts;
  const limits = { ...POLICY_LIMITS, ...opts.limits };
  let nextConn = 0;

  const answer = (block: string, conn: number): { reply: string; delayMs: number } | { error: string } => {
    const parsed = parseAttributeBlock(block, limits);
    if (!parsed.ok) return { error: parsed.error };
    if (parsed.attrs.get('request') !== 'smtpd_access_policy') return { error: 'request is not smtpd_access_policy' };
    const t = translatePostfix(parsed.attrs, engine.rules.accounts.defaultDomain);
    if (t.kind === 'skip') {
      // Not authenticated (yet): remember a client certificate shown at EHLO for the SASL login to come.
      const remote = t.remote;
      if (remote !== null && t.certFingerprints.length > 0) engine.noteClientCertificate(remote, t.certFingerprints);
      return { reply: formatReply('DUNNO'), delayMs: 0 };
    }
    t.request.via = `postfix#${conn}`;
    const d = engine.checkTransaction(t.request);
    const delayMs = d.action === 'delay' ? clampDelaySeconds(d.seconds) * 1000 : 0;
    return { reply: formatReply(policyAction(d)), delayMs };
  };

  const server = createServer((sock: Socket) => {
    const conn = ++nextConn;
    logger.log('info', 'postfix_connection', { conn, peer: sock.remoteAddress ?? 'unix' });
    let buf: Buffer = Buffer.alloc(0);
    let busy = false;
    let requests = 0;
    sock.setTimeout(limits.idleMs, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('close', () => logger.log('info', 'postfix_connection_closed', { conn, requests }));

    const drain = (): void => {
      while (!busy && !sock.destroyed) {
        const end = buf.indexOf(TERMINATOR);
        if (end < 0) {
          if (buf.length > limits.maxRequestBytes) fail('request larger than the limit');
          return;
        }
        if (end > limits.maxRequestBytes) return fail('request larger than the limit');
        const block = buf.subarray(0, end + 1).toString('utf8');
        buf = buf.subarray(end + 2);
        requests++;
        cap.served(sock);
        let r;
        try {
          r = answer(block, conn);
        } catch (err) {
          logger.log('error', 'postfix_internal_error', { conn, error: (err as Error).message });
          return fail('internal error');
        }
        if ('error' in r) return fail(r.error);
        if (r.delayMs > 0) {
          busy = true;
          const reply = r.reply;
          setTimeout(() => {
            busy = false;
            if (!sock.destroyed) sock.write(reply);
            drain();
          }, r.delayMs);
          return;
        }
        sock.write(r.reply);
      }
    };
    // A malformed request gets no reply: Postfix then retries or applies its default_action.
    const fail = (reason: string): void => {
      logger.log('warn', 'postfix_bad_request', { conn, reason, peer: sock.remoteAddress ?? 'unix' });
      sock.destroy();
    };
    let partial: NodeJS.Timeout | undefined;
    sock.on('close', () => clearTimeout(partial));
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      drain();
      // The idle timer restarts on every byte, so a client dribbling one byte a second would never
      // hit it: an unfinished request has its own deadline.
      if (buf.length === 0 || sock.destroyed) {
        clearTimeout(partial);
        partial = undefined;
      } else if (partial === undefined) {
        partial = setTimeout(() => fail('request not completed in time'), limits.requestTimeoutMs);
        partial.unref();
      }
    });
  });
  const cap = capConnections(server, limits.maxConnections, logger, 'postfix-policy');
  return server;
}
