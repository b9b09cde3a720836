import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { NoticeError, dotStuff, sendMail, MAX_REPLY_BYTES, type NoticeTransport } from '../src/notice/transport.js';
import { tempDir } from './helpers/tmp.js';

const ENVELOPE = { from: 'postmaster@example.org', to: 'alice@example.com' };
const MESSAGE = Buffer.from('Subject: hi\r\nTo: <alice@example.com>\r\n\r\nline one\r\n.hidden line\r\n.\r\n..two dots\r\nbare LF\nlast', 'ascii');

// ---- a fake SMTP server on a real socket (a unit-test tool: the e2e test uses Postfix) ----

type Step = 'EHLO' | 'HELO' | 'MAIL' | 'RCPT' | 'DATA' | 'END' | 'QUIT';
const DEFAULT_REPLIES: Record<Step, string> = {
  EHLO: '250-fake.example\r\n250-PIPELINING\r\n250 8BITMIME',
  HELO: '250 fake.example',
  MAIL: '250 2.1.0 Ok',
  RCPT: '250 2.1.5 Ok',
  DATA: '354 End data with <CR><LF>.<CR><LF>',
  END: '250 2.0.0 Ok: queued as ABC',
  QUIT: '221 2.0.0 Bye',
};

interface Fake {
  port: number;
  commands: string[];
  /** What came after DATA, up to and with the final ".", as sent. */
  data: Buffer[];
  close(): Promise<void>;
}

/** `greeting: null` never says anything; a reply of null is never given. */
async function fakeSmtp(o: { greeting?: string | null; replies?: Partial<Record<Step, string | null>> } = {}): Promise<Fake> {
  const commands: string[] = [];
  const data: Buffer[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    const reply = (r: string | null | undefined) => {
      if (r !== null && r !== undefined) sock.write(`${r}\r\n`);
    };
    const greeting = o.greeting === undefined ? '220 fake.example ESMTP' : o.greeting;
    reply(greeting);
    let buf = Buffer.alloc(0);
    let inData = false;
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          if (end < 0) return;
          data.push(buf.subarray(0, end + 5));
          buf = buf.subarray(end + 5);
          inData = false;
          reply(o.replies?.END === undefined ? DEFAULT_REPLIES.END : o.replies.END);
          continue;
        }
        const nl = buf.indexOf('\r\n');
        if (nl < 0) return;
        const line = buf.subarray(0, nl).toString('latin1');
        buf = buf.subarray(nl + 2);
        commands.push(line);
        const step = (line.split(/[ :]/)[0] ?? '').toUpperCase() as Step;
        const r = o.replies?.[step] === undefined ? DEFAULT_REPLIES[step] ?? '500 5.5.2 Error: command not recognized' : o.replies[step];
        reply(r);
        if (step === 'DATA' && r?.startsWith('354')) inData = true;
        if (step === 'QUIT') sock.end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    commands,
    data,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

const smtpTo = (port: number): NoticeTransport => ({ kind: 'smtp', host: '127.0.0.1', port, helo: 'notices.example.org' });

async function rejects(p: Promise<unknown>, code: string, re: RegExp): Promise<NoticeError> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, NoticeError);
    assert.is((e as NoticeError).code, code, (e as Error).message);
    assert.match((e as Error).message, re);
    return e as NoticeError;
  }
  throw new assert.Assertion({ message: `resolved; wanted a NoticeError ${code}`, operator: 'rejects', expects: code, actual: 'resolved' });
}

/** The server's view undone: dot-stuffing removed, the final "." dropped. */
const unstuff = (d: Buffer) => d.toString('latin1').replace(/\r\n\.\r\n$/, '\r\n').split('\r\n').map((l) => (l.startsWith('.') ? l.slice(1) : l)).join('\r\n');

test('smtp: EHLO, MAIL, RCPT, DATA, QUIT; the message arrives dot-stuffed with CRLF line ends', async () => {
  const f = await fakeSmtp();
  try {
    await sendMail(smtpTo(f.port), ENVELOPE, MESSAGE);
    assert.equal(f.commands, ['EHLO notices.example.org', 'MAIL FROM:<postmaster@example.org>', 'RCPT TO:<alice@example.com>', 'DATA', 'QUIT']);
    const got = f.data[0]!.toString('latin1');
    // A line starting with "." gets another one; a lone "." is not the end; a bare LF became CRLF.
    assert.is(got, 'Subject: hi\r\nTo: <alice@example.com>\r\n\r\nline one\r\n..hidden line\r\n..\r\n...two dots\r\nbare LF\r\nlast\r\n.\r\n');
    assert.is(unstuff(f.data[0]!), `${MESSAGE.toString('latin1').replace(/\r?\n/g, '\r\n')}\r\n`);
    assert.not.match(got.slice(0, -5), /[^\r]\n|\r[^\n]/, 'a bare CR or LF reached the server');
  } finally {
    await f.close();
  }
});

test('dotStuff: CR, LF and CRLF line ends, a message that ends with or without one', () => {
  assert.is(dotStuff(Buffer.from('a\rb\n.c')).toString(), 'a\r\nb\r\n..c\r\n.\r\n');
  assert.is(dotStuff(Buffer.from('a\r\n')).toString(), 'a\r\n.\r\n');
});

test('smtp: a server that does not know EHLO is asked HELO', async () => {
  const f = await fakeSmtp({ replies: { EHLO: '502 5.5.2 Error: command not recognized' } });
  try {
    await sendMail(smtpTo(f.port), ENVELOPE, MESSAGE);
    assert.equal(f.commands.slice(0, 2), ['EHLO notices.example.org', 'HELO notices.example.org']);
    assert.is(f.data.length, 1);
  } finally {
    await f.close();
  }
});

test('smtp: 4xx is temporary, 5xx is rejected, at every step; the reply is in the message', async () => {
  const cases: Array<[Partial<Record<Step, string>> & { greeting?: string }, string, RegExp]> = [
    [{ greeting: '421 4.3.2 Service not available' }, 'temporary', /the greeting refused: 421 4\.3\.2 Service not available/],
    [{ greeting: '554 5.7.1 No SMTP service here' }, 'rejected', /the greeting refused: 554/],
    [{ MAIL: '451 4.3.0 Try later' }, 'temporary', /MAIL FROM refused: 451 4\.3\.0 Try later/],
    [{ RCPT: '450 4.2.0 <alice@example.com>: Recipient address rejected: Greylisted' }, 'temporary', /RCPT TO refused: 450 .*Greylisted/],
    [{ RCPT: '550 5.1.1 <alice@example.com>: Recipient address rejected: User unknown' }, 'rejected', /RCPT TO refused: 550 5\.1\.1 .*User unknown/],
    [{ DATA: '554 5.5.1 Error: no valid recipients' }, 'rejected', /DATA refused: 554/],
    [{ END: '552 5.3.4 Message size exceeds fixed limit' }, 'rejected', /the message refused: 552/],
    [{ END: '451 4.3.0 Error: queue file write error' }, 'temporary', /the message refused: 451/],
    [{ EHLO: '421 4.7.0 too busy' }, 'temporary', /EHLO refused: 421/],
  ];
  for (const [replies, code, re] of cases) {
    const { greeting, ...rest } = replies;
    const f = await fakeSmtp({ ...(greeting === undefined ? {} : { greeting }), replies: rest });
    try {
      await rejects(sendMail(smtpTo(f.port), ENVELOPE, MESSAGE), code, re);
      assert.is(f.data.length, replies.END === undefined ? 0 : 1);
    } finally {
      await f.close();
    }
  }
});

test('smtp: multi-line replies are read whole', async () => {
  const f = await fakeSmtp({ greeting: '220-fake.example ESMTP\r\n220-more greeting\r\n220 ready', replies: { RCPT: '550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 last' } });
  try {
    await rejects(sendMail(smtpTo(f.port), ENVELOPE, MESSAGE), 'rejected', /RCPT TO refused: 550 5\.1\.1 first 5\.1\.1 second 5\.1\.1 last/);
  } finally {
    await f.close();
  }
});

test('smtp: a server that never answers is a temporary failure within the timeout', async () => {
  const silent = await fakeSmtp({ greeting: null });
  const slow = await fakeSmtp({ replies: { END: null } });
  try {
    let t0 = Date.now();
    await rejects(sendMail(smtpTo(silent.port), ENVELOPE, MESSAGE, { timeoutMs: 300 }), 'temporary', /no reply to the greeting within 300 ms/);
    let took = Date.now() - t0;
    assert.ok(took >= 250 && took < 1500, `took ${took} ms`);
    t0 = Date.now();
    await rejects(sendMail(smtpTo(slow.port), ENVELOPE, MESSAGE, { timeoutMs: 300 }), 'temporary', /no reply to the message within 300 ms/);
    took = Date.now() - t0;
    assert.ok(took < 1500, `took ${took} ms`);
  } finally {
    await silent.close();
    await slow.close();
  }
});

test('smtp: an oversized reply is refused, long lines and endless continuations alike', async () => {
  const longLine = await fakeSmtp({ greeting: `220 ${'x'.repeat(5000)}` });
  const endless = await fakeSmtp({ replies: { EHLO: Array.from({ length: 500 }, (_, i) => `250-EXTENSION${i}`).join('\r\n') } });
  const noNewline = await fakeSmtp({ greeting: '220' });
  const huge = await fakeSmtp({ greeting: `220 ${'y'.repeat(MAX_REPLY_BYTES * 4)}` });
  try {
    await rejects(sendMail(smtpTo(longLine.port), ENVELOPE, MESSAGE, { timeoutMs: 2000 }), 'temporary', /reply is too long/);
    await rejects(sendMail(smtpTo(endless.port), ENVELOPE, MESSAGE, { timeoutMs: 2000 }), 'temporary', /reply is too long/);
    await rejects(sendMail(smtpTo(huge.port), ENVELOPE, MESSAGE, { timeoutMs: 2000 }), 'temporary', /reply is too long/);
    // A bare "220" is a whole reply (RFC 5321 allows the text to be left out).
    await sendMail(smtpTo(noNewline.port), ENVELOPE, MESSAGE, { timeoutMs: 2000 });
  } finally {
    await Promise.all([longLine.close(), endless.close(), noNewline.close(), huge.close()]);
  }
});

test('smtp: garbage instead of a reply, a refused connection, and bad settings', async () => {
  const garbage = await fakeSmtp({ greeting: 'HTTP/1.1 400 Bad Request' });
  const port = garbage.port;
  try {
    await rejects(sendMail(smtpTo(port), ENVELOPE, MESSAGE), 'temporary', /not an SMTP reply: HTTP\/1\.1 400/);
  } finally {
    await garbage.close();
  }
  await rejects(sendMail(smtpTo(port), ENVELOPE, MESSAGE, { timeoutMs: 2000 }), 'temporary', /ECONNREFUSED/);
  await rejects(sendMail({ kind: 'smtp', host: '127.0.0.1', port: 0 }, ENVELOPE, MESSAGE), 'config', /not a port/);
  await rejects(sendMail({ kind: 'smtp', host: '127.0.0.1', port: 25, helo: 'bad helo\r\nRSET' }, ENVELOPE, MESSAGE), 'config', /not a host name for EHLO/);
});

test('the envelope and the message are checked before anything is sent', async () => {
  const f = await fakeSmtp();
  try {
    await rejects(sendMail(smtpTo(f.port), { ...ENVELOPE, to: 'alice@example.com>\r\nRCPT TO:<x@evil.example' }, MESSAGE), 'invalid', /envelope to: not a mail address/);
    await rejects(sendMail(smtpTo(f.port), { ...ENVELOPE, from: '' }, MESSAGE), 'invalid', /envelope from/);
    await rejects(sendMail(smtpTo(f.port), ENVELOPE, Buffer.from('Subject: caf\xe9\r\n\r\nx', 'latin1')), 'invalid', /not 7-bit/);
    await rejects(sendMail(smtpTo(f.port), ENVELOPE, Buffer.alloc(600 * 1024, 0x61)), 'invalid', /more than/);
    assert.equal(f.commands, []);
  } finally {
    await f.close();
  }
});

// ---- sendmail: a fake program in a temp dir ----

function script(dir: string, name: string, body: string): string {
  const file = join(dir, name);
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

test('sendmail: the command with -oi -f FROM -- TO, the message on stdin with LF line ends', async () => {
  const dir = tempDir();
  const prog = script(dir, 'sendmail', `for a in "$@"; do printf '%s\\n' "$a"; done > ${dir}/args\ncat > ${dir}/stdin`);
  await sendMail({ kind: 'sendmail', command: [prog, '-C', '/etc/postfix-test'] }, ENVELOPE, MESSAGE);
  assert.equal(readFileSync(join(dir, 'args'), 'utf8').split('\n').slice(0, -1), ['-C', '/etc/postfix-test', '-oi', '-f', 'postmaster@example.org', '--', 'alice@example.com']);
  assert.is(readFileSync(join(dir, 'stdin'), 'latin1'), MESSAGE.toString('latin1').replace(/\r\n/g, '\n'));
});

test('sendmail: a non-zero exit is an error with the first line of stderr; exit codes say which kind', async () => {
  const dir = tempDir();
  const fail = (code: number, stderr: string) => script(dir, `fail${code}`, `cat > /dev/null\nprintf '${stderr}' >&2\nexit ${code}`);
  await rejects(sendMail({ kind: 'sendmail', command: [fail(75, '\\nsendmail: fatal: queue file write error\\nsecond line\\n')] }, ENVELOPE, MESSAGE), 'temporary', /exited with 75: sendmail: fatal: queue file write error$/);
  await rejects(sendMail({ kind: 'sendmail', command: [fail(67, 'unknown user\\n')] }, ENVELOPE, MESSAGE), 'rejected', /exited with 67: unknown user$/);
  await rejects(sendMail({ kind: 'sendmail', command: [fail(78, 'bad config\\n')] }, ENVELOPE, MESSAGE), 'config', /exited with 78: bad config$/);
  await rejects(sendMail({ kind: 'sendmail', command: [fail(1, '')] }, ENVELOPE, MESSAGE), 'temporary', /exited with 1$/);
  await rejects(sendMail({ kind: 'sendmail', command: [join(dir, 'absent')] }, ENVELOPE, MESSAGE), 'config', /cannot run .*absent: ENOENT/);
  await rejects(sendMail({ kind: 'sendmail', command: [] }, ENVELOPE, MESSAGE), 'config', /the command is empty/);
  // A flood on stderr and stdout: read on, kept bounded, and one bounded line in the error.
  const flood = script(dir, 'flood', 'head -c 2000000 /dev/zero | tr "\\0" "x" >&2\nhead -c 2000000 /dev/zero\nexit 1');
  const e = await rejects(sendMail({ kind: 'sendmail', command: [flood] }, ENVELOPE, MESSAGE, { timeoutMs: 10_000 }), 'temporary', /exited with 1: x+$/);
  assert.ok(e.message.length < 300, `error of ${e.message.length} characters`);
  // A program that exits without reading its input: its status counts, not the broken pipe.
  await rejects(sendMail({ kind: 'sendmail', command: [script(dir, 'noread', 'exit 75')] }, ENVELOPE, Buffer.alloc(400 * 1024, 0x61)), 'temporary', /exited with 75/);
});

test('sendmail: a program that hangs is killed at the timeout, with what it started', async () => {
  const dir = tempDir();
  const hang = script(dir, 'hang', `sleep 30 &\necho $! > ${dir}/sleep.pid\nwait`);
  const t0 = Date.now();
  await rejects(sendMail({ kind: 'sendmail', command: [hang] }, ENVELOPE, MESSAGE, { timeoutMs: 400 }), 'temporary', /no answer within 400 ms; killed/);
  assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
  const pid = Number(readFileSync(join(dir, 'sleep.pid'), 'utf8'));
  const deadline = Date.now() + 2000;
  let alive = true;
  while (alive && Date.now() < deadline) {
    // Gone, or a zombie nobody reaps yet (its parent, the script, was killed too).
    let state = '';
    try {
      state = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] ?? '';
    } catch {
      state = 'gone';
    }
    if (state === 'gone' || state === 'Z' || state === 'X') alive = false;
    else await new Promise((r) => setTimeout(r, 50));
  }
  assert.not.ok(alive, 'the sleep the script started is still running');
});

test.run();
