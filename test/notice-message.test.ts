import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { composeMessage, makeMessageId, quotedPrintable, type NoticeMessage } from '../src/notice/message.js';
import { NoticeError } from '../src/notice/error.js';
import {
  DEFAULT_DEVICE_TEMPLATE, DEFAULT_SIGNIN_TEMPLATE, DEVICE_NOTICE_VARS, MAX_TEMPLATE_BYTES, MAX_VALUE_CHARS, SIGNIN_NOTICE_VARS,
  TemplateError, loadTemplate, parseTemplate, renderTemplate,
} from '../src/notice/template.js';
import { decodeEncodedWords, decodeQuotedPrintable, splitMessage } from './helpers/mime.js';
import { tempDir } from './helpers/tmp.js';

const DEVICE_VALUES: Record<string, string> = {
  user: 'alice@example.com',
  client: 'Thunderbird 128.3',
  protocol: 'IMAP',
  remote: '203.0.113.7',
  when: '3 June 2025, 10:02 UTC',
  tries: '3',
  approve_url: 'https://mail.example.com/account/approve?t=abc.def',
  expires: '10 June 2025, 10:02 UTC',
  portal_url: 'https://mail.example.com/account/',
};

const templateError = (f: () => unknown, re: RegExp) => {
  try {
    f();
  } catch (e) {
    assert.instance(e, TemplateError);
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`no TemplateError (wanted ${re})`);
};

const noticeError = (f: () => unknown, re: RegExp) => {
  try {
    f();
  } catch (e) {
    assert.instance(e, NoticeError);
    assert.is((e as NoticeError).code, 'invalid');
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`no NoticeError (wanted ${re})`);
};

// ---- templates ----

test('template: subject, body, placeholders; errors name file:line:col', () => {
  const t = parseTemplate('Subject: Hi {{user}}\n\nHello {{user}},\nfrom {{remote}}.\n\n', 'n.txt', ['user', 'remote']);
  assert.equal(renderTemplate(t, { user: 'a@b.c', remote: '192.0.2.1' }), { subject: 'Hi a@b.c', text: 'Hello a@b.c,\nfrom 192.0.2.1.' });
  templateError(() => parseTemplate('Hello\n\nbody', 'n.txt', []), /^n\.txt:1:1: the first line must be "Subject: \.\.\."/);
  templateError(() => parseTemplate('Subject: x\nbody', 'n.txt', []), /^n\.txt:2:1: an empty line must follow/);
  templateError(() => parseTemplate('Subject:   \n\nbody', 'n.txt', []), /^n\.txt:1:\d+: the subject is empty/);
  templateError(() => parseTemplate('Subject: x\n\nline one\nab {{usr}} cd', 'n.txt', ['user']), /^n\.txt:4:4: unknown placeholder \{\{usr\}\}/);
  templateError(() => parseTemplate('Subject: x {{user}\n\nbody', 'n.txt', ['user']), /^n\.txt:1:12: unterminated \{\{/);
  templateError(() => parseTemplate('Subject: x\n\nok {{user}}\n  {{user\n}}', 'n.txt', ['user']), /^n\.txt:4:3: unterminated \{\{/);
  templateError(() => parseTemplate('Subject: x\n\n{{ user }}', 'n.txt', ['user']), /^n\.txt:3:1: bad placeholder/);
  // The HTML file's own name and lines.
  templateError(() => parseTemplate('Subject: x\n\nok', 'n.txt', ['user'], { source: '<p>\n<b>{{nope}}</b>', file: 'n.html' }), /^n\.html:2:4: unknown placeholder/);
  // CRLF files read as LF files; a missing value is an error, not an empty string.
  const crlf = parseTemplate('Subject: {{user}}\r\n\r\na\r\nb {{user}}\r\n', 'c.txt', ['user']);
  assert.is(renderTemplate(crlf, { user: 'u' }).text, 'a\nb u');
  templateError(() => renderTemplate(crlf, {}), /no value for \{\{user\}\}/);
});

test('template: files are read bounded and as UTF-8', () => {
  const dir = tempDir();
  const big = join(dir, 'big.txt');
  writeFileSync(big, `Subject: x\n\n${'a'.repeat(MAX_TEMPLATE_BYTES)}`);
  templateError(() => loadTemplate(big, undefined, []), /big\.txt: \d+ bytes, more than a template may have/);
  const latin1 = join(dir, 'latin1.txt');
  writeFileSync(latin1, Buffer.from('Subject: caf\xe9\n\nx', 'latin1'));
  templateError(() => loadTemplate(latin1, undefined, []), /latin1\.txt: not UTF-8/);
  templateError(() => loadTemplate(join(dir, 'absent.txt'), undefined, []), /absent\.txt: cannot read: ENOENT/);
});

test('template: a value cannot add a header to the subject, nor lines to the text, nor markup to the HTML', () => {
  const t = parseTemplate('Subject: New device: {{client}}\n\nDevice: {{client}}\nEnd', 'n.txt', ['client'], { source: '<p title="{{client}}">{{client}}</p>', file: 'n.html' });
  const r = renderTemplate(t, { client: 'Evil\r\nBcc: x@evil\r\n\r\n<script>alert("1")</script>\u202e' });
  assert.is(r.subject, 'New device: Evil Bcc: x@evil <script>alert("1")</script>');
  assert.not.match(r.subject, /[\r\n]/);
  assert.is(r.text, 'Device: EvilBcc: x@evil<script>alert("1")</script>\nEnd');
  assert.is(r.html, '<p title="EvilBcc: x@evil&lt;script&gt;alert(&quot;1&quot;)&lt;/script&gt;">EvilBcc: x@evil&lt;script&gt;alert(&quot;1&quot;)&lt;/script&gt;</p>');
  assert.is(renderTemplate(t, { client: `it's & <b>` }).html, '<p title="it&#39;s &amp; &lt;b&gt;">it&#39;s &amp; &lt;b&gt;</p>');
  // Composed, the subject is still one header: no Bcc header in the message.
  const msg = composeMessage({ ...base(), subject: r.subject, text: r.text, html: r.html! }).toString('latin1');
  const { headers } = splitMessage(msg);
  assert.not.ok(headers.some((h) => /^bcc:/i.test(h)), 'a Bcc header appeared');
  assert.is(decodeEncodedWords(headers.find((h) => h.startsWith('Subject:'))!.slice(9)), r.subject);
});

test('template: long values are cut, links are checked whole', () => {
  const t = parseTemplate('Subject: {{client}}\n\n{{approve_url}}', 'n.txt', ['client', 'approve_url']);
  const r = renderTemplate(t, { client: 'x'.repeat(5000), approve_url: DEVICE_VALUES.approve_url! });
  assert.is([...r.subject].length, MAX_VALUE_CHARS);
  assert.ok(r.subject.endsWith('…'));
  templateError(() => renderTemplate(t, { client: 'c', approve_url: 'javascript:alert(1)' }), /approve_url.*not an http\(s\) link/);
  templateError(() => renderTemplate(t, { client: 'c', approve_url: 'https://x.example/a b' }), /not an http\(s\) link/);
  templateError(() => renderTemplate(t, { client: 'c', approve_url: `https://x.example/${'a'.repeat(3000)}` }), /longer than/);
});

test('the shipped templates load with their variable lists and use every variable', () => {
  const device = loadTemplate(DEFAULT_DEVICE_TEMPLATE.text, DEFAULT_DEVICE_TEMPLATE.html, DEVICE_NOTICE_VARS);
  const r = renderTemplate(device, DEVICE_VALUES);
  for (const v of Object.values(DEVICE_VALUES)) {
    assert.ok(r.text.includes(v), `text lacks ${v}`);
    assert.ok(r.html!.includes(v), `html lacks ${v}`);
  }
  assert.match(r.subject, /^Was this you\?/);
  assert.match(r.text, /Not me/);
  assert.match(r.text, /before checking the password/);
  assert.match(r.text, /Change your mailbox password/);
  const signin = loadTemplate(DEFAULT_SIGNIN_TEMPLATE.text, DEFAULT_SIGNIN_TEMPLATE.html, SIGNIN_NOTICE_VARS);
  const values = { user: 'alice@example.com', signin_url: 'https://mail.example.com/account/signin?t=x.y', expires: 'in 15 minutes', portal_url: 'https://mail.example.com/account/' };
  const s = renderTemplate(signin, values);
  for (const v of Object.values(values)) assert.ok(s.text.includes(v) && s.html!.includes(v), v);
  assert.match(s.text, /did not ask for this, ignore it/);
  // The sign-in template knows no approval link: a device placeholder there is a load error.
  templateError(() => parseTemplate('Subject: x\n\n{{approve_url}}', 'n.txt', SIGNIN_NOTICE_VARS), /unknown placeholder \{\{approve_url\}\}/);
});

// ---- messages ----

function base(): NoticeMessage {
  return {
    from: 'Mail security <postmaster@example.org>',
    to: 'alice@example.com',
    subject: 'Was this you?',
    text: 'Hello,\nhere is the link: https://mail.example.com/a\n',
    date: new Date(Date.UTC(2025, 5, 3, 10, 2, 3)),
    messageId: '<1.abc@example.org>',
  };
}

const allLines = (msg: Buffer) => msg.toString('latin1').split('\r\n');

test('composeMessage: headers, CRLF, 7-bit, automatic-reply suppression', () => {
  const msg = composeMessage({ ...base(), headers: { 'X-Cidlock-Notice': 'device' } });
  assert.ok(msg.every((b) => b < 0x80), '8-bit byte in the message');
  assert.not.match(msg.toString('latin1'), /[^\r]\n/, 'a bare LF');
  const { headers, body } = splitMessage(msg.toString('latin1'));
  assert.equal(headers, [
    'Date: Tue, 03 Jun 2025 10:02:03 +0000',
    'From: Mail security <postmaster@example.org>',
    'To: <alice@example.com>',
    'Subject: Was this you?',
    'Message-ID: <1.abc@example.org>',
    'MIME-Version: 1.0',
    'Auto-Submitted: auto-generated',
    'X-Auto-Response-Suppress: All',
    'X-Cidlock-Notice: device',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: quoted-printable',
  ]);
  assert.is(decodeQuotedPrintable(body), 'Hello,\r\nhere is the link: https://mail.example.com/a\r\n');
  for (const l of allLines(msg)) assert.ok(l.length <= 78, `line too long: ${l}`);
});

test('composeMessage: a non-ASCII subject and display name as RFC 2047 words, folded to 78, whole characters per word', () => {
  const subject = 'Était-ce vous ? Un nouvel appareil a essayé de se connecter à votre boîte aux lettres 📱 — 確認してください '.repeat(2).trim();
  const msg = composeMessage({ ...base(), subject, from: 'Sécurité du courrier <postmaster@example.org>' });
  const text = msg.toString('latin1');
  const { headers } = splitMessage(text);
  const subj = headers.find((h) => h.startsWith('Subject:'))!;
  const folded = subj.split('\r\n');
  assert.ok(folded.length > 3, 'the subject was not folded');
  for (const l of folded) {
    assert.ok(l.length <= 78, `line of ${l.length}: ${l}`);
    for (const w of l.trim().replace(/^Subject: /, '').split(' ')) {
      assert.ok(w.length <= 75, 'encoded-word longer than 75');
      // Each word decodes on its own to valid UTF-8: no character split between words.
      const b64 = /^=\?UTF-8\?B\?([A-Za-z0-9+/=]+)\?=$/.exec(w);
      assert.ok(b64, `not an encoded-word: ${w}`);
      assert.not.throws(() => new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(b64![1]!, 'base64')));
    }
  }
  assert.is(decodeEncodedWords(subj.slice('Subject:'.length)), subject);
  const from = headers.find((h) => h.startsWith('From:'))!;
  assert.match(from, /^From: =\?UTF-8\?B\?[^?]+\?=.*<postmaster@example\.org>$/s);
  assert.is(decodeEncodedWords(from.slice(5).replace(/<[^>]+>$/, '')), 'Sécurité du courrier ');
  for (const l of allLines(msg)) {
    assert.ok(l.length <= 78, `line too long: ${l}`);
    if (l.includes('=?')) assert.ok(l.length <= 76, `a line with encoded-words longer than 76: ${l}`);
  }
  const longName = splitMessage(composeMessage({ ...base(), from: `${'Sécurité '.repeat(12)}<postmaster@example.org>` }).toString('latin1')).headers.find((h) => h.startsWith('From:'))!;
  for (const l of longName.split('\r\n')) assert.ok(l.length <= 76, `From line of ${l.length}`);
  assert.is(decodeEncodedWords(longName.slice(5).replace(/<[^>]+>$/, '')), 'Sécurité '.repeat(12));
  // A plain long ASCII subject is folded at spaces, as it is.
  const long = 'Was this you? '.repeat(12).trim();
  const plain = splitMessage(composeMessage({ ...base(), subject: long }).toString('latin1')).headers.find((h) => h.startsWith('Subject:'))!;
  assert.ok(plain.includes('\r\n '), 'not folded');
  assert.is(plain.replace(/\r\n/g, '').slice('Subject: '.length), long);
  // Text that looks like an encoded-word is encoded, so no client decodes what the template said.
  assert.match(splitMessage(composeMessage({ ...base(), subject: 'see =?UTF-8?B?eA==?=' }).toString('latin1')).headers.find((h) => h.startsWith('Subject:'))!, /^Subject: =\?UTF-8\?B\?/);
});

test('quoted-printable: lines of at most 76, exact round trip, trailing spaces and "From " encoded', () => {
  const text = [
    'é'.repeat(100),
    `${'x'.repeat(74)}=${'y'.repeat(10)}`,
    'trailing spaces   ',
    'From here on',
    '.a line with a dot',
    '',
    'a'.repeat(300),
    '日本語のテキスト、とても長い行です。'.repeat(6),
  ].join('\n');
  const qp = quotedPrintable(text);
  for (const l of qp.split('\r\n')) assert.ok(l.length <= 76, `QP line of ${l.length}`);
  assert.not.match(qp, /[ \t]\r\n|[ \t]$/);
  assert.match(qp, /^=46rom here on$/m);
  assert.is(decodeQuotedPrintable(qp), text.replace(/\n/g, '\r\n'));
  assert.ok(Buffer.from(qp, 'latin1').every((b) => b < 0x80));
});

test('composeMessage: multipart/alternative with text and HTML, boundaries delimit both parts', () => {
  const html = '<p>Hello <a href="https://mail.example.com/a">approve</a> — ok</p>';
  const msg = composeMessage({ ...base(), html }).toString('latin1');
  const { headers, body } = splitMessage(msg);
  const ct = headers.find((h) => h.startsWith('Content-Type:'))!;
  const boundary = /boundary="([^"]+)"/.exec(ct)![1]!;
  assert.match(ct, /^Content-Type: multipart\/alternative;/);
  assert.not.ok(headers.some((h) => h.startsWith('Content-Transfer-Encoding')), 'a CTE on the multipart');
  const segments = body.split(`\r\n--${boundary}`);
  assert.is(segments.length, 4, 'preamble, two parts, and the close');
  assert.ok(segments[3]!.startsWith('--'), 'no closing boundary');
  const [textPart, htmlPart] = [segments[1]!, segments[2]!].map((s) => splitMessage(s.replace(/^\r\n/, '')));
  assert.equal(textPart!.headers, ['Content-Type: text/plain; charset=utf-8', 'Content-Transfer-Encoding: quoted-printable']);
  assert.equal(htmlPart!.headers, ['Content-Type: text/html; charset=utf-8', 'Content-Transfer-Encoding: quoted-printable']);
  // The CRLF before a boundary is the boundary's (RFC 2046), so neither part ends with a newline.
  assert.is(decodeQuotedPrintable(textPart!.body), 'Hello,\r\nhere is the link: https://mail.example.com/a');
  assert.is(decodeQuotedPrintable(htmlPart!.body), html);
  // Two messages, two boundaries.
  assert.is.not(/boundary="([^"]+)"/.exec(composeMessage({ ...base(), html }).toString('latin1'))![1], boundary);
});

test('composeMessage: addresses and header values are checked', () => {
  noticeError(() => composeMessage({ ...base(), to: 'alice@example.com\r\nBcc: x@evil.example' }), /^to: CR and LF/);
  noticeError(() => composeMessage({ ...base(), to: '' }), /^to: not a mail address/);
  noticeError(() => composeMessage({ ...base(), to: '<>' }), /^to: not a mail address/);
  noticeError(() => composeMessage({ ...base(), to: 'Alice <alice@example.com>' }), /^to: not a mail address/);
  noticeError(() => composeMessage({ ...base(), to: 'alice' }), /^to: not a mail address/);
  noticeError(() => composeMessage({ ...base(), to: 'alice@exa mple.com' }), /^to: not a mail address/);
  noticeError(() => composeMessage({ ...base(), to: 'alïce@example.com' }), /^to: not a mail address/);
  noticeError(() => composeMessage({ ...base(), from: 'x <>' }), /^from: not a mail address/);
  noticeError(() => composeMessage({ ...base(), from: 'Mail\r\nBcc: x@evil <postmaster@example.org>' }), /^from: control characters/);
  noticeError(() => composeMessage({ ...base(), headers: { 'X-A': 'a\r\nBcc: x@evil' } }), /only printable ASCII/);
  noticeError(() => composeMessage({ ...base(), headers: { Bcc: 'x@evil.example' } }), /Bcc is set by composeMessage/);
  noticeError(() => composeMessage({ ...base(), headers: { 'Content-Type': 'text/html' } }), /Content-Type is set by composeMessage/);
  noticeError(() => composeMessage({ ...base(), messageId: '<a\r\nb@x>' }), /^messageId: not a message id/);
  noticeError(() => composeMessage({ ...base(), date: new Date(NaN) }), /^date: not a valid date/);
  // A display name with specials is quoted; a bare from address stays bare.
  const quoted = splitMessage(composeMessage({ ...base(), from: 'Mail "security", Inc. <postmaster@example.org>' }).toString('latin1')).headers;
  assert.ok(quoted.includes('From: "Mail \\"security\\", Inc." <postmaster@example.org>'), quoted.join('\n'));
  assert.ok(splitMessage(composeMessage({ ...base(), from: 'postmaster@example.org' }).toString('latin1')).headers.includes('From: <postmaster@example.org>'));
});

test('makeMessageId: unique, bracketed, for the domain', () => {
  const a = makeMessageId('example.org');
  assert.match(a, /^<[0-9a-z]+\.[0-9a-f]{24}@example\.org>$/);
  assert.is.not(makeMessageId('example.org'), a);
  noticeError(() => makeMessageId('bad domain'), /not a domain name/);
});

test.run();
