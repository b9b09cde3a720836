import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { NoticeError, type NoticeErrorCode } from './error.js';
import { isMailAddress } from './message.js';

export { NoticeError, type NoticeErrorCode } from './error.js';

/**
 * How notices leave: the host's sendmail (Postfix's /usr/sbin/sendmail, as Debian's own tools
 * send mail), or SMTP to a local relay. No AUTH and no TLS: the relay is on this host or its
 * network, and the message is 7-bit, so neither SMTPUTF8 nor 8BITMIME is needed.
 */
export type NoticeTransport =
  | { kind: 'sendmail'; command: readonly string[] }
  | { kind: 'smtp'; host: string; port: number; helo?: string };

export interface SendOptions {
  /** sendmail: for the whole run; smtp: for each step (connect, each reply). */
  timeoutMs?: number;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
/** Notices are a few kilobytes; a larger message is a caller's bug. */
export const MAX_MESSAGE_BYTES = 512 * 1024;
/** sendmail's stdout and stderr are kept up to this much each, for the error message. */
export const MAX_CAPTURE_BYTES = 4096;
/** One SMTP reply (all its lines); EHLO's list of extensions is the longest a relay sends. */
export const MAX_REPLY_BYTES = 16 * 1024;
export const MAX_REPLY_LINES = 64;
/** RFC 5321 section 4.5.3.1.5: a reply line is at most 512 octets; a little slack for odd servers. */
export const MAX_REPLY_LINE = 1024;
/** Server text quoted in errors is cut to this. */
const MAX_QUOTED = 200;

// sendmail's exit codes (sysexits.h) that say what went wrong.
const EX_USAGE = 64;
const EX_DATAERR = 65;
const EX_NOUSER = 67;
const EX_NOHOST = 68;
const EX_NOPERM = 77;
const EX_CONFIG = 78;

/** Server or program text for an error message: one line, printable, bounded. */
const quote = (s: string) => s.replace(/[\u0000-\u001f\u007f-\u009f]+/g, ' ').trim().slice(0, MAX_QUOTED);

function checkEnvelope(envelope: { from: string; to: string }, message: Buffer): void {
  for (const k of ['from', 'to'] as const) {
    if (!isMailAddress(envelope[k])) throw new NoticeError('invalid', `envelope ${k}: not a mail address (local@domain)`);
  }
  if (message.length > MAX_MESSAGE_BYTES) throw new NoticeError('invalid', `the message is ${message.length} bytes, more than ${MAX_MESSAGE_BYTES}`);
  // The SMTP client announces no 8BITMIME, so 8-bit bytes (or NUL) would be a protocol violation.
  if (message.some((b) => b === 0 || b >= 0x80)) {
    throw new NoticeError('invalid', 'the message is not 7-bit text (composeMessage makes it so)');
  }
}

/** Sends one message to one recipient; resolves when the mail system has taken it. */
export async function sendMail(t: NoticeTransport, envelope: { from: string; to: string }, message: Buffer, opts: SendOptions = {}): Promise<void> {
  checkEnvelope(envelope, message);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) throw new NoticeError('config', `timeoutMs: not a positive number: ${timeoutMs}`);
  if (t.kind === 'sendmail') return sendmail(t.command, envelope, message, timeoutMs);
  if (t.kind === 'smtp') return smtp(t, envelope, message, timeoutMs);
  throw new NoticeError('config', `unknown transport kind: ${String((t as { kind: unknown }).kind)}`);
}

// ---- sendmail ----

function sendmailCode(status: number): NoticeErrorCode {
  if (status === EX_DATAERR || status === EX_NOUSER || status === EX_NOHOST) return 'rejected';
  // 126/127: the shell's "cannot run" and "not found", when the command is a wrapper script.
  if (status === EX_USAGE || status === EX_NOPERM || status === EX_CONFIG || status === 126 || status === 127) return 'config';
  // EX_TEMPFAIL (75) and anything unknown: the queue will be there later; try again.
  return 'temporary';
}

function sendmail(command: readonly string[], envelope: { from: string; to: string }, message: Buffer, timeoutMs: number): Promise<void> {
  const [program, ...args] = command;
  if (program === undefined || program === '') throw new NoticeError('config', 'sendmail: the command is empty');
  // -oi: a line with a single "." is text, not the end; "--": the recipient is never an option.
  const argv = [...args, '-oi', '-f', envelope.from, '--', envelope.to];
  // sendmail reads the host's line ends (LF); Postfix's converts CRLF too, others may not.
  const input = Buffer.from(message.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
  return new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (err?: NoticeError) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err === undefined) resolve();
      else reject(err);
    };
    // Its own process group, so a timeout kills what a wrapper script started too (a pipe held
    // open by a grandchild would otherwise keep us waiting after the wrapper is gone).
    const child = spawn(program, argv, { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    const kill = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    };
    const timer = setTimeout(() => {
      kill();
      finish(new NoticeError('temporary', `sendmail: no answer within ${timeoutMs} ms; killed`));
    }, timeoutMs);
    const capture = (stream: NodeJS.ReadableStream) => {
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('data', (d: Buffer) => {
        if (size >= MAX_CAPTURE_BYTES) return; // read on (a full pipe would block it), keep nothing more
        chunks.push(d.subarray(0, MAX_CAPTURE_BYTES - size));
        size += Math.min(d.length, MAX_CAPTURE_BYTES - size);
      });
      return () => Buffer.concat(chunks).toString('utf8');
    };
    const stderr = capture(child.stderr);
    capture(child.stdout);
    child.on('error', (e: NodeJS.ErrnoException) => {
      finish(new NoticeError('config', `sendmail: cannot run ${program}: ${e.code ?? e.message}`));
    });
    // The program may exit before reading all of its input (EPIPE): its exit status says why.
    child.stdin.on('error', () => {});
    child.on('close', (status, signal) => {
      if (status === 0) return finish();
      const first = quote(stderr().split('\n').find((l) => l.trim() !== '') ?? '');
      const how = status === null ? `was killed (${signal})` : `exited with ${status}`;
      finish(new NoticeError(status === null ? 'temporary' : sendmailCode(status), `sendmail: ${program} ${how}${first === '' ? '' : `: ${first}`}`));
    });
    child.stdin.end(input);
  });
}

// ---- SMTP ----

interface Reply {
  code: number;
  text: string;
}

/** Replies off a socket: whole multi-line replies, bounded, each awaited with a deadline. */
function replyReader(sock: Socket, where: string) {
  let buf: Buffer = Buffer.alloc(0);
  let lines: string[] = [];
  let bytes = 0;
  const ready: Reply[] = [];
  let failure: NoticeError | null = null;
  let waiter: (() => void) | null = null;
  const wake = () => {
    const w = waiter;
    waiter = null;
    w?.();
  };
  const fail = (e: NoticeError) => {
    failure ??= e;
    sock.destroy();
    wake();
  };
  sock.on('data', (d: Buffer) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    let i: number;
    while ((i = buf.indexOf(0x0a)) >= 0) {
      const line = buf.subarray(0, i).toString('latin1').replace(/\r$/, '');
      buf = buf.subarray(i + 1);
      bytes += i + 1;
      if (i + 1 > MAX_REPLY_LINE || bytes > MAX_REPLY_BYTES || lines.length >= MAX_REPLY_LINES) {
        return fail(new NoticeError('temporary', `${where}: the server's reply is too long`));
      }
      const m = /^([2-5]\d\d)([ -])(.*)$/.exec(line) ?? /^([2-5]\d\d)()$/.exec(line);
      if (m === null || (lines.length > 0 && !line.startsWith(lines[0]!.slice(0, 3)))) {
        return fail(new NoticeError('temporary', `${where}: not an SMTP reply: ${quote(line)}`));
      }
      lines.push(line);
      if (m[2] !== '-') {
        ready.push({ code: Number(m[1]), text: quote(lines.map((l) => l.slice(4)).join(' ')) });
        lines = [];
        bytes = 0;
      }
    }
    if (buf.length > MAX_REPLY_LINE) fail(new NoticeError('temporary', `${where}: the server's reply is too long`));
    wake();
  });
  sock.on('error', (e: NodeJS.ErrnoException) => fail(new NoticeError('temporary', `${where}: ${e.code ?? e.message}`)));
  sock.on('close', () => fail(new NoticeError('temporary', `${where}: the server closed the connection`)));
  return async (step: string, timeoutMs: number): Promise<Reply> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = ready.shift();
      if (r !== undefined) return r;
      if (failure !== null) throw failure;
      const left = deadline - Date.now();
      if (left <= 0) {
        fail(new NoticeError('temporary', `${where}: no reply to ${step} within ${timeoutMs} ms`));
        throw failure!;
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  };
}

/**
 * The DATA payload: any line end made CRLF, a line starting with "." given one more (RFC 5321
 * section 4.5.2), then the terminating ".".
 */
export function dotStuff(message: Buffer): Buffer {
  const lines = message.toString('latin1').split(/\r\n|\r|\n/);
  if (lines[lines.length - 1] === '') lines.pop();
  return Buffer.from(`${lines.map((l) => (l.startsWith('.') ? `.${l}` : l)).join('\r\n')}\r\n.\r\n`, 'latin1');
}

const HELO_NAME = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$|^\[[0-9.:A-Fa-f]+\]$/;

async function smtp(t: { host: string; port: number; helo?: string }, envelope: { from: string; to: string }, message: Buffer, timeoutMs: number): Promise<void> {
  if (!(Number.isInteger(t.port) && t.port > 0 && t.port < 65536)) throw new NoticeError('config', `smtp: not a port: ${t.port}`);
  if (typeof t.host !== 'string' || t.host === '' || /[\s\u0000-\u001f]/.test(t.host)) throw new NoticeError('config', 'smtp: no host');
  const helo = t.helo ?? hostname();
  if (!HELO_NAME.test(helo)) throw new NoticeError('config', `smtp: not a host name for EHLO: ${quote(helo)}`);
  const where = `smtp ${t.host}:${t.port}`;
  const sock = connect({ host: t.host, port: t.port });
  sock.setNoDelay(true);
  const next = replyReader(sock, where);
  const send = (line: string) => sock.write(`${line}\r\n`);
  const expect = async (step: string, ok: (code: number) => boolean): Promise<Reply> => {
    const r = await next(step, timeoutMs);
    if (ok(r.code)) return r;
    const code: NoticeErrorCode = r.code >= 500 ? 'rejected' : 'temporary';
    throw new NoticeError(code, `${where}: ${step} refused: ${r.code} ${r.text}`);
  };
  try {
    await expect('the greeting', (c) => c === 220);
    send(`EHLO ${helo}`);
    const ehlo = await next('EHLO', timeoutMs);
    if (ehlo.code !== 250) {
      // RFC 5321 section 3.2: a server that does not know EHLO is asked HELO.
      if (ehlo.code < 500) throw new NoticeError('temporary', `${where}: EHLO refused: ${ehlo.code} ${ehlo.text}`);
      send(`HELO ${helo}`);
      await expect('HELO', (c) => c === 250);
    }
    send(`MAIL FROM:<${envelope.from}>`);
    await expect('MAIL FROM', (c) => c === 250);
    send(`RCPT TO:<${envelope.to}>`);
    await expect('RCPT TO', (c) => c === 250 || c === 251);
    send('DATA');
    await expect('DATA', (c) => c === 354);
    sock.write(dotStuff(message));
    await expect('the message', (c) => c === 250);
  } catch (e) {
    // A polite end for a server that still listens; nothing waits for its answer.
    if (!sock.destroyed) sock.end('QUIT\r\n');
    sock.destroy();
    throw e instanceof NoticeError ? e : new NoticeError('temporary', `${where}: ${(e as Error).message}`);
  }
  // The message is accepted: QUIT is a courtesy, its reply (or none) changes nothing.
  send('QUIT');
  await next('QUIT', Math.min(timeoutMs, 1000)).catch(() => {});
  sock.destroy();
}
