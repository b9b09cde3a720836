// End-to-end: notices composed by src/notice reach a real mailbox. A private Postfix 3.7 takes
// them (over SMTP from cidlock's own client, and through Postfix's own sendmail and pickup) and
// delivers them with its virtual(8) agent into the Maildir a private Dovecot 2.3 serves; the test
// reads them back over IMAP as alice, with Dovecot decoding what cidlock encoded (BINARY for the
// quoted-printable body, SEARCH for the RFC 2047 subject).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { appendFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { composeMessage, makeMessageId } from '../../src/notice/message.js';
import { loadTemplate, renderTemplate, DEFAULT_DEVICE_TEMPLATE, DEFAULT_SIGNIN_TEMPLATE, DEVICE_NOTICE_VARS, SIGNIN_NOTICE_VARS } from '../../src/notice/template.js';
import { sendMail, type NoticeTransport } from '../../src/notice/transport.js';
import { decodeEncodedWords, splitMessage } from '../helpers/mime.js';
import { converse, imapQuote, type Conversation } from '../helpers/mail-clients.js';
import { requireTools, serverDir, startDovecot, startPostfix, type Dovecot, type Postfix } from './harness.js';

const PW = 'pw-for-notices';
const ALICE = 'alice@example.test';
const FROM = 'postmaster@example.org';
const DELIVERY_TIMEOUT_MS = 20_000;

const ready = requireTools('notice delivery', ['postfix', 'dovecot', 'openssl', 'sendmail']);
// Without the real servers the tests are registered as skipped: uvu counts them, .ci/run fails on them.
const check = ready ? test : test.skip;
let dir = '';
let dovecot: Dovecot;
let pf: Postfix;
let maildir = '';

// uvu swallows errors thrown in before() hooks, so setup runs inside the first test that needs it.
let setupOnce: Promise<void> | undefined;
const setup = () => (setupOnce ??= doSetup());

async function doSetup(): Promise<void> {
  dir = serverDir();
  dovecot = await startDovecot({ dir, users: { [ALICE]: PW }, snippet: '' });
  // Dovecot's mail homes (owned by uid 65534, home=<dovecot>/home/%u, mail in ~/Maildir) are
  // where Postfix's virtual agent delivers, as that uid: no LMTP needed, nothing to install.
  const homes = join(dir, 'dovecot', 'home');
  maildir = join(homes, ALICE, 'Maildir');
  pf = await startPostfix({
    dir,
    saslPath: dovecot.authSocket,
    mainExtra: `virtual_mailbox_domains = example.test
virtual_mailbox_base = ${homes}
virtual_mailbox_maps = inline:{ ${ALICE}=${ALICE}/Maildir/ }
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_transport = virtual
`,
    configure: ({ etc }) => appendFileSync(join(etc, 'master.cf'), 'virtual   unix  -       n       n       -       -       virtual\n'),
  });
}

if (ready) {
  test.after(() => {
    if (setupOnce === undefined) return;
    pf?.stop();
    dovecot?.stop();
  });
}

/** Files in alice's Maildir new/ and cur/: what has been delivered. */
const delivered = () => ['new', 'cur'].flatMap((d) => (existsSync(join(maildir, d)) ? readdirSync(join(maildir, d)) : [])).length;

async function waitForDelivery(count: number): Promise<void> {
  const deadline = Date.now() + DELIVERY_TIMEOUT_MS;
  while (delivered() < count) {
    if (Date.now() > deadline) throw new Error(`${count - delivered()} message(s) not delivered within ${DELIVERY_TIMEOUT_MS} ms; Postfix log:\n${pf.log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** One IMAP session as alice, INBOX selected. */
async function imap<T>(f: (cmd: (line: string, literal?: Buffer) => Promise<string[]>) => Promise<T>): Promise<T> {
  const c: Conversation = await converse(dovecot.imapPort);
  let n = 0;
  const cmd = async (line: string, literal?: Buffer): Promise<string[]> => {
    const tag = `n${++n}`;
    if (literal === undefined) c.send(`${tag} ${line}`);
    // LITERAL+ (Dovecot has it): the literal follows at once, no continuation to wait for.
    else c.sendRaw(Buffer.concat([Buffer.from(`${tag} ${line} {${literal.length}+}\r\n`), literal, Buffer.from('\r\n')]));
    const lines = await c.readUntil((l) => l.startsWith(`${tag} `));
    if (!lines[lines.length - 1]!.startsWith(`${tag} OK`)) throw new Error(`IMAP ${line}: ${lines.join(' | ')}`);
    return lines;
  };
  try {
    await c.readLine();
    await cmd(`LOGIN ${imapQuote(ALICE)} ${imapQuote(PW)}`);
    await cmd('SELECT INBOX');
    return await f(cmd);
  } finally {
    c.send('z LOGOUT');
    setTimeout(() => c.close(), 50);
  }
}

/** The bytes of the one literal in a FETCH response (lines as read, CRLF put back). */
function literalOf(lines: string[]): Buffer {
  const at = lines.findIndex((l) => /~?\{\d+\}$/.test(l));
  if (at < 0) throw new Error(`no literal in ${lines.join(' | ')}`);
  const size = Number(/\{(\d+)\}$/.exec(lines[at]!)![1]);
  return Buffer.from(lines.slice(at + 1).join('\r\n'), 'latin1').subarray(0, size);
}

const searchHits = (lines: string[]) => lines.find((l) => l.startsWith('* SEARCH'))!.slice('* SEARCH'.length).trim().split(' ').filter((x) => x !== '');

/** Alice's copy of the message with this Message-ID: headers, decoded first text part, sequence number. */
async function fetchByMessageId(messageId: string): Promise<{ header: string; text: string; seq: string }> {
  return imap(async (cmd) => {
    const hits = searchHits(await cmd(`SEARCH HEADER Message-ID ${imapQuote(messageId)}`));
    assert.is(hits.length, 1, `messages with ${messageId}: ${hits.join(',')}`);
    const seq = hits[0]!;
    const header = literalOf(await cmd(`FETCH ${seq} BODY.PEEK[HEADER]`)).toString('latin1');
    // BINARY (RFC 3516): Dovecot undoes the content transfer encoding itself.
    const text = literalOf(await cmd(`FETCH ${seq} BINARY.PEEK[1]`)).toString('utf8');
    return { header, text, seq };
  });
}

/** The composed header block is in the delivered one as it was sent (Postfix only adds its trace headers above it). */
function assertHeadersAsComposed(delivered: string, composed: Buffer): void {
  const ours = splitMessage(composed.toString('latin1')).headers;
  const theirs = splitMessage(delivered).headers;
  assert.equal(theirs.slice(-ours.length), ours);
  assert.ok(theirs.some((h) => h.startsWith('Received:')), 'no Received header: not through Postfix?');
  assert.equal(theirs.filter((h) => /^(auto-submitted|x-auto-response-suppress):/i.test(h)), ['Auto-Submitted: auto-generated', 'X-Auto-Response-Suppress: All']);
}

const smtpTransport = (): NoticeTransport => ({ kind: 'smtp', host: '127.0.0.1', port: pf.smtpPort, helo: 'notices.example.org' });

check('a device notice sent over SMTP to Postfix lands in alice\'s Dovecot mailbox as composed', async () => {
  await setup();
  const before = delivered();
  const t = loadTemplate(DEFAULT_DEVICE_TEMPLATE.text, DEFAULT_DEVICE_TEMPLATE.html, DEVICE_NOTICE_VARS);
  const approve = 'https://mail.example.test/account/approve?t=eyJhIjoxfQ.c2lnbmF0dXJl';
  const r = renderTemplate(t, {
    user: ALICE, client: 'Evolution 3.46 ⟨beta⟩', protocol: 'IMAP', remote: '203.0.113.7', when: '3 June 2025, 10:02 UTC', tries: '2',
    approve_url: approve, expires: '10 June 2025, 10:02 UTC', portal_url: 'https://mail.example.test/account/',
  });
  const messageId = makeMessageId('example.org');
  const msg = composeMessage({ from: `Mail security <${FROM}>`, to: ALICE, ...r, html: r.html!, date: new Date(), messageId, headers: { 'X-Cidlock-Notice': 'device' } });
  await sendMail(smtpTransport(), { from: FROM, to: ALICE }, msg, { timeoutMs: 10_000 });
  await waitForDelivery(before + 1);
  const got = await fetchByMessageId(messageId);
  assertHeadersAsComposed(got.header, msg);
  assert.is(decodeEncodedWords(/^Subject: (.*)$/m.exec(got.header)![1]!), `Was this you? A new device tried to sign in to ${ALICE}`);
  // The text part, decoded by Dovecot: the link whole, the client's non-ASCII name intact.
  assert.ok(got.text.includes(`  ${approve}\r\n`), got.text);
  assert.ok(got.text.includes('Evolution 3.46 ⟨beta⟩'));
  assert.is(got.text.replace(/\r\n/g, '\n'), r.text);
  const html = await imap(async (cmd) => literalOf(await cmd(`FETCH ${got.seq} BINARY.PEEK[2]`)).toString('utf8'));
  assert.ok(html.includes(`href="${approve}"`), 'the HTML part lacks the link');
});

check('a non-ASCII subject and sender name survive Postfix and Dovecot (RFC 2047, folded)', async () => {
  await setup();
  const before = delivered();
  const subject = 'Était-ce vous ? Un nouvel appareil a essayé d’ouvrir votre boîte alice@example.test 📱 — 確認してください';
  const messageId = makeMessageId('example.org');
  const msg = composeMessage({ from: `Sécurité du courrier <${FROM}>`, to: ALICE, subject, text: 'Lien : https://mail.example.test/a?t=1\nÀ bientôt.\n', date: new Date(), messageId });
  await sendMail(smtpTransport(), { from: FROM, to: ALICE }, msg, { timeoutMs: 10_000 });
  await waitForDelivery(before + 1);
  const got = await fetchByMessageId(messageId);
  assertHeadersAsComposed(got.header, msg);
  const { headers } = splitMessage(got.header);
  const subj = headers.filter((h) => h.startsWith('Subject:'));
  assert.is(subj.length, 1);
  assert.ok(subj[0]!.includes('\r\n '), 'the subject was not folded');
  assert.is(decodeEncodedWords(subj[0]!.slice('Subject:'.length)), subject);
  assert.is(got.text, 'Lien : https://mail.example.test/a?t=1\r\nÀ bientôt.\r\n');
  // Dovecot decodes the subject itself for SEARCH: the whole UTF-8 subject finds the message.
  await imap(async (cmd) => {
    assert.equal(searchHits(await cmd('SEARCH CHARSET UTF-8 SUBJECT', Buffer.from(subject, 'utf8'))), [got.seq]);
    assert.equal(searchHits(await cmd('SEARCH CHARSET UTF-8 FROM', Buffer.from('Sécurité du courrier', 'utf8'))), [got.seq]);
    assert.equal(searchHits(await cmd('SEARCH CHARSET UTF-8 SUBJECT', Buffer.from('確認しない', 'utf8'))), []);
  });
});

check('a sign-in notice through Postfix\'s own sendmail (-C the private instance) reaches the mailbox too', async () => {
  await setup();
  const before = delivered();
  const t = loadTemplate(DEFAULT_SIGNIN_TEMPLATE.text, DEFAULT_SIGNIN_TEMPLATE.html, SIGNIN_NOTICE_VARS);
  const link = 'https://mail.example.test/account/signin?t=eyJzIjoxfQ.c2ln';
  const r = renderTemplate(t, { user: ALICE, signin_url: link, expires: '10:17 UTC', portal_url: 'https://mail.example.test/account/' });
  const messageId = makeMessageId('example.org');
  // A line of its own starting with "." must survive: sendmail -oi reads it as text.
  const text = `${r.text}\n.\n.signature`;
  const msg = composeMessage({ from: FROM, to: ALICE, subject: r.subject, text, html: r.html!, date: new Date(), messageId });
  await sendMail({ kind: 'sendmail', command: ['/usr/sbin/sendmail', '-C', pf.etc] }, { from: FROM, to: ALICE }, msg, { timeoutMs: 10_000 });
  await waitForDelivery(before + 1);
  const got = await fetchByMessageId(messageId);
  assertHeadersAsComposed(got.header, msg);
  assert.is(decodeEncodedWords(/^Subject: (.*)$/m.exec(got.header)![1]!), `Your sign-in link for ${ALICE}`);
  assert.is(got.text.replace(/\r\n/g, '\n'), text);
  assert.match(pf.log(), /postfix\/pickup\[\d+\]: \w+: uid=0 from=<postmaster@example\.org>/);
});

check('Postfix\'s refusal of an unknown recipient is a "rejected" NoticeError', async () => {
  await setup();
  const msg = composeMessage({ from: FROM, to: 'nobody@example.test', subject: 'x', text: 'x', date: new Date(), messageId: makeMessageId('example.org') });
  try {
    await sendMail(smtpTransport(), { from: FROM, to: 'nobody@example.test' }, msg, { timeoutMs: 10_000 });
    assert.unreachable('accepted');
  } catch (e) {
    assert.is((e as { code?: string }).code, 'rejected', String(e));
    assert.match((e as Error).message, /RCPT TO refused: 550 5\.1\.1 <nobody@example\.test>: Recipient address rejected/);
  }
});

test.run();
