import { randomBytes } from 'node:crypto';
import { NoticeError } from './error.js';

/**
 * Notices as RFC 5322 messages that any relay takes as they are: 7-bit only (the subject and a
 * display name as RFC 2047 encoded-words, bodies quoted-printable), CRLF line ends, header lines
 * at most 78 characters. Marked as automatic (RFC 3834) so autoresponders do not answer them.
 */

/** RFC 5322's recommended line length, which header folding keeps to. */
export const MAX_HEADER_LINE = 78;
/** RFC 2045: quoted-printable lines are at most 76 characters (the soft-break "=" included). */
export const MAX_QP_LINE = 76;
export const MAX_SUBJECT_CHARS = 500;
export const MAX_BODY_BYTES = 256 * 1024;
export const MAX_EXTRA_HEADERS = 16;
/** RFC 5322's hard limit for a line, which no unfoldable header value may pass. */
const MAX_LINE = 998;
/** RFC 5321 path limits. */
const MAX_ADDRESS = 254;
const MAX_LOCAL_PART = 64;

const ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]";
const DOT_ATOM = new RegExp(`^${ATEXT}+(?:\\.${ATEXT}+)*$`);
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * A plain `local@domain` address, ASCII only (the message is 7-bit and SMTPUTF8 is not used),
 * no quoted local parts, no address literals, no source routes: what a mailbox name is.
 */
export function isMailAddress(a: string): boolean {
  if (a.length > MAX_ADDRESS) return false;
  const at = a.lastIndexOf('@');
  if (at <= 0) return false;
  const local = a.slice(0, at);
  const domain = a.slice(at + 1);
  return local.length <= MAX_LOCAL_PART && DOT_ATOM.test(local) && domain.split('.').every((l) => LABEL.test(l));
}

const safe = (s: string) => JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}...` : s);

function checkAddress(a: string, what: string): string {
  if (!isMailAddress(a)) throw new NoticeError('invalid', `${what}: not a mail address (local@domain): ${safe(a)}`);
  return a;
}

const b64Word = (bytes: Buffer) => `=?UTF-8?B?${bytes.toString('base64')}?=`;
const WORD_OVERHEAD = '=?UTF-8?B??='.length;

/**
 * Text as RFC 2047 encoded-words: the first fits after `firstUsed` characters of its line, each
 * next one on a folded line of its own; a word holds whole characters only (RFC 2047 section 5),
 * never half of a UTF-8 sequence.
 */
function encodedWords(text: string, firstUsed: number): string[] {
  // Base64 turns 3 bytes into 4 characters; lines with encoded-words stay within 76 (RFC 2047).
  const capacity = (used: number) => Math.floor((76 - used - WORD_OVERHEAD) / 4) * 3;
  const words: string[] = [];
  let room = capacity(firstUsed);
  let cur: Buffer[] = [];
  let len = 0;
  for (const ch of text) {
    const b = Buffer.from(ch, 'utf8');
    if (len + b.length > room && len > 0) {
      words.push(b64Word(Buffer.concat(cur)));
      cur = [];
      len = 0;
      room = capacity(1);
    }
    cur.push(b);
    len += b.length;
  }
  if (len > 0 || words.length === 0) words.push(b64Word(Buffer.concat(cur)));
  return words;
}

/** Folds space-separated tokens into `Name: ...` lines of at most `limit`; null when a token is too long. */
function foldTokens(name: string, tokens: readonly string[], limit = MAX_HEADER_LINE): string | null {
  const lines: string[] = [];
  let cur = `${name}:`;
  for (const t of tokens) {
    if (cur.length + 1 + t.length > limit && cur !== `${name}:`) {
      lines.push(cur);
      cur = '';
    }
    cur += ` ${t}`;
    if (cur.length > limit) return null;
  }
  lines.push(cur);
  return lines.join('\r\n');
}

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/** An unstructured header (Subject): as it is when it is plain ASCII that folds, else encoded-words. */
function unstructuredHeader(name: string, value: string): string {
  // "=?" in plain text would be read as the start of an encoded-word by the recipient's client.
  if (PRINTABLE_ASCII.test(value) && !value.includes('=?')) {
    const tokens = value.split(' ').filter((t) => t !== '');
    // Runs of spaces are not kept by folding; only then is the plain form exact.
    if (tokens.join(' ') === value) {
      const folded = foldTokens(name, tokens);
      if (folded !== null) return folded;
    }
  }
  return `${name}: ${encodedWords(value, name.length + 2).join('\r\n ')}`;
}

/** A display name and address for From: `Name <addr>`, the name as a phrase, quoted string or encoded-words. */
function mailboxHeader(name: string, display: string, addr: string): string {
  const tail = `<${addr}>`;
  if (display === '') return `${name}: ${tail}`;
  let phrase: string[];
  let limit = MAX_HEADER_LINE;
  if (PRINTABLE_ASCII.test(display) && !display.includes('=?')) {
    phrase = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+$/.test(display) && !display.includes('  ')
      ? display.split(' ').filter((t) => t !== '')
      : [`"${display.replace(/["\\]/g, '\\$&')}"`];
  } else {
    phrase = encodedWords(display, name.length + 2);
    // RFC 2047 section 2: a line holding encoded-words is at most 76 characters.
    limit = 76;
  }
  const folded = foldTokens(name, [...phrase, tail], limit);
  if (folded === null) throw new NoticeError('invalid', `${name}: the display name is too long for one header line`);
  return folded;
}

/** `Name <addr>`, `"Name" <addr>` or a bare address. */
function parseFrom(from: string): { display: string; addr: string } {
  if (/[\u0000-\u001f\u007f]/.test(from)) throw new NoticeError('invalid', 'from: control characters (CR, LF...) are not allowed');
  const m = /^(.*?)\s*<([^<>]*)>$/s.exec(from.trim());
  if (m === null) return { display: '', addr: checkAddress(from.trim(), 'from') };
  let display = m[1]!.trim();
  if (display.length > 2 && display.startsWith('"') && display.endsWith('"')) display = display.slice(1, -1).replace(/\\(.)/g, '$1');
  if (display.length > MAX_SUBJECT_CHARS) throw new NoticeError('invalid', 'from: the display name is too long');
  return { display, addr: checkAddress(m[2]!, 'from') };
}

/**
 * Quoted-printable (RFC 2045) of UTF-8 text with CRLF line ends, lines of at most 76. "From " at
 * the start of a line is encoded too, so an mbox on the way cannot mangle it into ">From ".
 */
export function quotedPrintable(text: string): string {
  const out: string[] = [];
  for (const line of text.replace(/\r\n|\r|\n/g, '\n').split('\n')) {
    const bytes = Buffer.from(line, 'utf8');
    const tokens: string[] = [];
    bytes.forEach((b, i) => {
      const last = i === bytes.length - 1;
      const fromLine = i === 0 && line.startsWith('From ');
      const literal = ((b >= 33 && b <= 126 && b !== 61) || ((b === 32 || b === 9) && !last)) && !fromLine;
      tokens.push(literal ? String.fromCharCode(b) : `=${b.toString(16).toUpperCase().padStart(2, '0')}`);
    });
    let cur = '';
    tokens.forEach((t, i) => {
      const rest = i === tokens.length - 1 ? 0 : 1; // room for the soft break "=" unless this ends the line
      if (cur.length + t.length + rest > MAX_QP_LINE) {
        out.push(`${cur}=`);
        cur = '';
      }
      cur += t;
    });
    out.push(cur);
  }
  return out.join('\r\n');
}

/** A Message-ID for this domain: `<time.random@domain>`. */
export function makeMessageId(domain: string): string {
  if (!domain.split('.').every((l) => LABEL.test(l))) throw new NoticeError('invalid', `makeMessageId: not a domain name: ${safe(domain)}`);
  return `<${Date.now().toString(36)}.${randomBytes(12).toString('hex')}@${domain}>`;
}

/** RFC 5322 date-time, in UTC. */
function rfc5322Date(d: Date): string {
  if (Number.isNaN(d.getTime())) throw new NoticeError('invalid', 'date: not a valid date');
  return d.toUTCString().replace(/GMT$/, '+0000');
}

// Headers composeMessage writes itself: a caller's copy would make two, or break the MIME structure.
const OWN_HEADERS = new Set(['date', 'from', 'to', 'cc', 'bcc', 'subject', 'message-id', 'mime-version', 'auto-submitted', 'x-auto-response-suppress', 'sender', 'return-path']);

function extraHeader(name: string, value: string): string {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(name)) throw new NoticeError('invalid', `headers: not a header name: ${safe(name)}`);
  const lower = name.toLowerCase();
  if (OWN_HEADERS.has(lower) || lower.startsWith('content-')) throw new NoticeError('invalid', `headers: ${name} is set by composeMessage`);
  if (!PRINTABLE_ASCII.test(value)) throw new NoticeError('invalid', `headers: ${name}: only printable ASCII (no CR, LF or other controls)`);
  if (value.length > MAX_LINE - name.length - 2) throw new NoticeError('invalid', `headers: ${name}: longer than a header may be`);
  const tokens = value.split(' ').filter((t) => t !== '');
  return (tokens.join(' ') === value ? foldTokens(name, tokens) : null) ?? `${name}: ${value}`;
}

function textPart(type: 'plain' | 'html', body: string): string {
  if (Buffer.byteLength(body, 'utf8') > MAX_BODY_BYTES) throw new NoticeError('invalid', `${type} body: more than ${MAX_BODY_BYTES} bytes`);
  // The line end after the body belongs to the message's end, or to the next boundary.
  const content = body.replace(/(?:\r\n|\r|\n)+$/, '');
  return `Content-Type: text/${type}; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n${quotedPrintable(content)}\r\n`;
}

export interface NoticeMessage {
  /** `local@domain`, or with a display name: `Mail security <postmaster@example.org>`. */
  from: string;
  /** `local@domain` only. */
  to: string;
  subject: string;
  text: string;
  html?: string;
  date: Date;
  /** As makeMessageId makes it (`<...@domain>`); the angle brackets may be left out. */
  messageId: string;
  /** Extra headers (X-..., Reply-To), printable ASCII; not ones composeMessage writes. */
  headers?: Record<string, string>;
}

/** The message, ready for sendMail: 7-bit, CRLF line ends, not dot-stuffed (the SMTP client does that). */
export function composeMessage(m: NoticeMessage): Buffer {
  const from = parseFrom(m.from);
  if (/[\r\n]/.test(m.to)) throw new NoticeError('invalid', 'to: CR and LF are not allowed');
  const to = checkAddress(m.to, 'to');
  const subject = m.subject.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').trim();
  if (subject === '') throw new NoticeError('invalid', 'subject: empty');
  if ([...subject].length > MAX_SUBJECT_CHARS) throw new NoticeError('invalid', `subject: more than ${MAX_SUBJECT_CHARS} characters`);
  const id = m.messageId.startsWith('<') && m.messageId.endsWith('>') ? m.messageId.slice(1, -1) : m.messageId;
  if (!/^[\x21-\x7e]{1,200}$/.test(id) || /[<>()\[\]\\,;:"]/.test(id) || id.indexOf('@') <= 0 || id.indexOf('@') !== id.lastIndexOf('@')) {
    throw new NoticeError('invalid', `messageId: not a message id (left@right): ${safe(m.messageId)}`);
  }
  const extra = Object.entries(m.headers ?? {});
  if (extra.length > MAX_EXTRA_HEADERS) throw new NoticeError('invalid', `headers: more than ${MAX_EXTRA_HEADERS}`);
  const head = [
    `Date: ${rfc5322Date(m.date)}`,
    mailboxHeader('From', from.display, from.addr),
    `To: <${to}>`,
    unstructuredHeader('Subject', subject),
    `Message-ID: <${id}>`,
    'MIME-Version: 1.0',
    // RFC 3834: an automatic message; autoresponders and vacation scripts must not answer it.
    'Auto-Submitted: auto-generated',
    // Exchange and Outlook ignore Auto-Submitted; this is their word for the same thing.
    'X-Auto-Response-Suppress: All',
    ...extra.map(([k, v]) => extraHeader(k, v)),
  ];
  let body: string;
  if (m.html === undefined) {
    body = textPart('plain', m.text);
  } else {
    // "=_" never occurs in quoted-printable text (an "=" is followed by hex digits or a line
    // end), so the boundary cannot occur in either part, whatever the notice says.
    const boundary = `=_cidlock_${randomBytes(12).toString('hex')}`;
    head.push(`Content-Type: multipart/alternative;\r\n boundary="${boundary}"`);
    body = `\r\nThis is a MIME message: a text and an HTML version of the same notice.\r\n\r\n--${boundary}\r\n${textPart('plain', m.text)}--${boundary}\r\n${textPart('html', m.html)}--${boundary}--\r\n`;
  }
  return Buffer.from(`${head.join('\r\n')}\r\n${body}`, 'ascii');
}
