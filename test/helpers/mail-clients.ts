import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { readFileSync } from 'node:fs';

/** A line-oriented conversation over a real socket, upgradable to TLS in place (STARTTLS). */
export interface Conversation {
  readLine(): Promise<string>;
  /** Reads lines until one matches; returns all lines read. */
  readUntil(pred: (line: string) => boolean): Promise<string[]>;
  send(line: string): void;
  /** Writes bytes exactly as given (NUL, 8-bit, bare CR/LF): send() encodes its line as UTF-8 and adds CRLF. */
  sendRaw(data: Buffer): void;
  startTls(): Promise<void>;
  close(): void;
  readonly tls: boolean;
}

export interface ConverseOptions {
  localAddress?: string;
  timeoutMs?: number;
  cert?: { cert: string; key: string };
  /** Implicit TLS (imaps, pop3s): the handshake comes first, before the greeting. */
  tls?: boolean;
}

export async function converse(port: number, opts: ConverseOptions = {}): Promise<Conversation> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const where = { port, host: '127.0.0.1', ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) };
  const clientCert = () => (opts.cert === undefined ? {} : { cert: readFileSync(opts.cert.cert), key: readFileSync(opts.cert.key) });
  let sock: Socket | TLSSocket = await new Promise<Socket | TLSSocket>((resolve, reject) => {
    const s: Socket | TLSSocket = opts.tls === true
      ? tlsConnect({ ...where, rejectUnauthorized: false, ...clientCert() }, () => resolve(s))
      : netConnect(where, () => resolve(s));
    s.once('error', reject);
  });
  let buf = '';
  const lines: string[] = [];
  let waiter: (() => void) | null = null;
  let closed = false;
  let isTls = opts.tls === true;
  const onData = (d: Buffer) => {
    buf += d.toString('latin1');
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i).replace(/\r$/, ''));
      buf = buf.slice(i + 1);
    }
    waiter?.();
  };
  const attach = (s: Socket | TLSSocket) => {
    s.on('data', onData);
    s.on('close', () => { closed = true; waiter?.(); });
    s.on('error', () => { closed = true; waiter?.(); });
  };
  attach(sock);
  const readLine = async (): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    while (lines.length === 0) {
      if (closed) throw new Error('connection closed by the server');
      if (Date.now() > deadline) throw new Error(`no reply within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        waiter = r;
        setTimeout(r, 200);
      });
      waiter = null;
    }
    return lines.shift()!;
  };
  return {
    readLine,
    async readUntil(pred) {
      const out: string[] = [];
      for (;;) {
        const l = await readLine();
        out.push(l);
        if (pred(l)) return out;
      }
    },
    send(line) {
      sock.write(`${line}\r\n`);
    },
    sendRaw(data) {
      sock.write(data);
    },
    async startTls() {
      sock.removeListener('data', onData);
      sock = await new Promise<TLSSocket>((resolve, reject) => {
        const t = tlsConnect({ socket: sock as Socket, rejectUnauthorized: false, ...clientCert() }, () => resolve(t));
        t.once('error', reject);
      });
      attach(sock);
      isTls = true;
    },
    close() {
      sock.destroy();
    },
    get tls() {
      return isTls;
    },
  };
}

/** RFC 3501 quoted string. */
export const imapQuote = (s: string) => `"${s.replace(/["\\]/g, '\\$&')}"`;

export interface ImapLoginResult { reply: string; ms: number }

/** One IMAP login as a mail client does it: optional STARTTLS, optional ID, LOGIN. */
export async function imapLogin(port: number, o: { user: string; pass: string; starttls: boolean; id?: Array<[string, string]>; localAddress?: string }): Promise<ImapLoginResult> {
  const c = await converse(port, o.localAddress ? { localAddress: o.localAddress } : {});
  try {
    await c.readLine(); // greeting
    if (o.starttls) {
      c.send('s1 STARTTLS');
      await c.readUntil((l) => l.startsWith('s1 '));
      await c.startTls();
    }
    if (o.id) {
      c.send(`i1 ID (${o.id.map(([k, v]) => `${imapQuote(k)} ${imapQuote(v)}`).join(' ')})`);
      const r = await c.readUntil((l) => l.startsWith('i1 '));
      if (!r[r.length - 1]!.startsWith('i1 OK')) throw new Error(`ID refused: ${r.join(' | ')}`);
    }
    const t0 = Date.now();
    c.send(`l1 LOGIN ${imapQuote(o.user)} ${imapQuote(o.pass)}`);
    const r = await c.readUntil((l) => l.startsWith('l1 '));
    const ms = Date.now() - t0;
    if (r[r.length - 1]!.startsWith('l1 OK')) c.send('l2 LOGOUT');
    return { reply: r[r.length - 1]!.slice(3), ms };
  } finally {
    setTimeout(() => c.close(), 50);
  }
}

export async function pop3Login(port: number, o: { user: string; pass: string; stls: boolean; localAddress?: string }): Promise<string> {
  const c = await converse(port, o.localAddress ? { localAddress: o.localAddress } : {});
  try {
    await c.readLine();
    if (o.stls) {
      c.send('STLS');
      await c.readLine();
      await c.startTls();
    }
    c.send(`USER ${o.user}`);
    await c.readLine();
    c.send(`PASS ${o.pass}`);
    const r = await c.readLine();
    if (r.startsWith('+OK')) c.send('QUIT');
    return r;
  } finally {
    setTimeout(() => c.close(), 50);
  }
}

/** SMTP AUTH PLAIN after STARTTLS (as a submission client does); returns the AUTH reply line (the EHLO reply if that failed). */
export async function smtpAuth(port: number, o: { user: string; pass: string; localAddress?: string }): Promise<string> {
  const r = await smtpSession(port, { auth: { user: o.user, pass: o.pass }, ...(o.localAddress ? { localAddress: o.localAddress } : {}), transactions: [] });
  return r.auth ?? r.ehlo;
}

export interface SmtpTransaction { from: string; rcpts: string[] }
export interface SmtpResult { ehlo: string; auth?: string; transactions: Array<{ mail: string; rcpts: string[] }> }

/**
 * A submission client: STARTTLS (with a client certificate when given), optional AUTH PLAIN,
 * then one or more MAIL/RCPT transactions separated by RSET. Stops at the first failed step.
 */
export async function smtpSession(port: number, o: { cert?: { cert: string; key: string }; auth?: { user: string; pass: string }; localAddress?: string; transactions: SmtpTransaction[] }): Promise<SmtpResult> {
  const c = await converse(port, { ...(o.localAddress ? { localAddress: o.localAddress } : {}), ...(o.cert ? { cert: o.cert } : {}) });
  const reply = async () => (await c.readUntil((l) => /^\d{3} /.test(l))).pop()!;
  const out: SmtpResult = { ehlo: '', transactions: [] };
  try {
    await reply();
    c.send('EHLO client.example');
    await reply();
    c.send('STARTTLS');
    await reply();
    await c.startTls();
    c.send('EHLO client.example');
    out.ehlo = await reply();
    if (!out.ehlo.startsWith('250')) return out;
    if (o.auth) {
      c.send(`AUTH PLAIN ${Buffer.from(`\0${o.auth.user}\0${o.auth.pass}`).toString('base64')}`);
      out.auth = await reply();
      if (!out.auth.startsWith('235')) return out;
    }
    for (const [i, t] of o.transactions.entries()) {
      if (i > 0) {
        c.send('RSET');
        await reply();
      }
      c.send(`MAIL FROM:<${t.from}>`);
      const tr = { mail: await reply(), rcpts: [] as string[] };
      out.transactions.push(tr);
      if (!tr.mail.startsWith('250')) continue;
      for (const r of t.rcpts) {
        c.send(`RCPT TO:<${r}>`);
        tr.rcpts.push(await reply());
      }
    }
    c.send('QUIT');
    return out;
  } finally {
    setTimeout(() => c.close(), 50);
  }
}
