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

const LF = 0x0a;
const TERMINATOR = Buffer.from('\n\n');

/**
 * A connection's unread input, as the chunks the socket delivered: appending never copies, and
 * the search for the blank line that ends a request looks at each byte once, however the client
 * splits its writes.
 */
function requestBuffer() {
  let chunks: Buffer[] = [];
  let size = 0;
  // Where the search resumes: chunk index, offset in it, offset overall, and whether the byte
  // just before was a newline (a blank line can straddle two chunks).
  let ci = 0;
  let li = 0;
  let pos = 0;
  let afterNewline = false;

  /** Overall offset of the second newline of the first "\n\n", or -1. */
  const find = (): number => {
    for (; ci < chunks.length; ci++, li = 0) {
      const c = chunks[ci]!;
      if (c.length === 0) continue;
      // One native search per chunk; only the blank line split across two chunks needs a look of its own.
      if (li === 0 && afterNewline && c[0] === LF) return pos;
      const at = c.indexOf(TERMINATOR, li);
      if (at >= 0) return pos + at + 1 - li;
      pos += c.length - li;
      afterNewline = c[c.length - 1] === LF;
    }
    return -1;
  };

  /** Removes the first `n` bytes; copies only when they straddle chunks. */
  const take = (n: number): Buffer => {
    const parts: Buffer[] = [];
    let k = 0;
    for (let need = n; need > 0;) {
      const c = chunks[k]!;
      if (c.length <= need) {
        parts.push(c);
        need -= c.length;
        k++;
      } else {
        parts.push(c.subarray(0, need));
        chunks[k] = c.subarray(need);
        need = 0;
      }
    }
    if (k > 0) chunks = chunks.slice(k);
    size -= n;
    ci = li = pos = 0;
    afterNewline = false;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  };

  return {
    get size() { return size; },
    push(chunk: Buffer): void {
      chunks.push(chunk);
      size += chunk.length;
    },
    /** The next complete request (its attribute lines), null while incomplete, or "too large". */
    next(max: number): string | null | 'too large' {
      const end = find();
      if (end < 0) return size > max ? 'too large' : null;
      if (end > max) return 'too large';
      return take(end + 1).toString('utf8', 0, end);
    },
  };
}

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
    const input = requestBuffer();
    // While a tarpit reply is held back, or the client does not read its replies, nothing more is
    // read: the kernel's buffers fill and the client's writes block, instead of this process
    // buffering (and re-scanning) whatever an attacker sends.
    let delaying = false;
    let writeBlocked = false;
    let requests = 0;
    sock.setTimeout(limits.idleMs, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    sock.on('close', () => logger.log('info', 'postfix_connection_closed', { conn, requests }));

    const flow = (): void => {
      if (sock.destroyed) return;
      if (delaying || writeBlocked) sock.pause();
      else sock.resume();
    };
    const send = (reply: string): void => {
      if (sock.write(reply)) return;
      writeBlocked = true;
      sock.pause();
      sock.once('drain', () => {
        writeBlocked = false;
        flow();
        drain();
      });
    };
    const drain = (): void => {
      while (!delaying && !writeBlocked && !sock.destroyed) {
        const block = input.next(limits.maxRequestBytes);
        if (block === 'too large') return fail('request larger than the limit');
        if (block === null) return;
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
          delaying = true;
          sock.pause();
          const reply = r.reply;
          setTimeout(() => {
            delaying = false;
            if (sock.destroyed) return;
            send(reply);
            flow();
            drain();
            deadline();
          }, r.delayMs);
          return;
        }
        send(r.reply);
      }
    };
    // A malformed request gets no reply: Postfix then retries or applies its default_action.
    const fail = (reason: string): void => {
      logger.log('warn', 'postfix_bad_request', { conn, reason, peer: sock.remoteAddress ?? 'unix' });
      sock.destroy();
    };
    // The idle timer restarts on every byte, so a client dribbling one byte a second would never
    // hit it: an unfinished request has its own deadline, which does not run while cidlock itself
    // holds the reply back.
    let partial: NodeJS.Timeout | undefined;
    const deadline = (): void => {
      if (input.size === 0 || delaying || sock.destroyed) {
        if (partial !== undefined) clearTimeout(partial);
        partial = undefined;
      } else if (partial === undefined) {
        partial = setTimeout(() => fail('request not completed in time'), limits.requestTimeoutMs);
        partial.unref();
      }
    };
    sock.on('close', () => clearTimeout(partial));
    sock.on('data', (chunk: Buffer) => {
      input.push(chunk);
      // Postfix never writes while it waits for a reply: input beyond one request then is abuse.
      if ((delaying || writeBlocked) && input.size > limits.maxRequestBytes) return fail('request larger than the limit');
      // Reading stops where drain() holds a reply back (it pauses the socket) and resumes when it goes.
      drain();
      deadline();
    });
  });
  const cap = capConnections(server, limits.maxConnections, logger, 'postfix-policy');
  return server;
}
