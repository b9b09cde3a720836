import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/**
 * Notice templates: a text file (`Subject: ...`, an empty line, the text/plain body) and an
 * optional HTML file (the whole file is the body), with `{{name}}` placeholders. Templates are
 * the operator's; values are partly an attacker's (a client's name and address come from the
 * refused login), so rendering makes each value harmless for the place it lands in.
 */

/** A template is a few paragraphs; anything larger is a wrong path, not a template. */
export const MAX_TEMPLATE_BYTES = 64 * 1024;
/** Longer values (a client name of a kilobyte) are cut: a notice must still go out. */
export const MAX_VALUE_CHARS = 256;
/** Links are never cut (a cut link does not work); a longer one is the caller's mistake. */
export const MAX_URL_CHARS = 2048;

export const DEVICE_NOTICE_VARS = ['user', 'client', 'protocol', 'remote', 'when', 'tries', 'approve_url', 'expires', 'portal_url'] as const;
export const SIGNIN_NOTICE_VARS = ['user', 'signin_url', 'expires', 'portal_url'] as const;

// This file runs as dist/src/notice/template.js; the templates ship at the package root.
const TEMPLATES_DIR = fileURLToPath(new URL('../../../templates/', import.meta.url));

export const DEFAULT_DEVICE_TEMPLATE = { text: join(TEMPLATES_DIR, 'notice-device.txt'), html: join(TEMPLATES_DIR, 'notice-device.html') } as const;
export const DEFAULT_SIGNIN_TEMPLATE = { text: join(TEMPLATES_DIR, 'notice-signin.txt'), html: join(TEMPLATES_DIR, 'notice-signin.html') } as const;

export class TemplateError extends Error {
  override readonly name = 'TemplateError';
}

type Part = string | { readonly name: string };

export interface NoticeTemplate {
  readonly file: string;
  readonly htmlFile?: string;
  readonly subject: readonly Part[];
  readonly text: readonly Part[];
  readonly html?: readonly Part[];
}

export interface RenderedNotice {
  subject: string;
  text: string;
  html?: string;
}

const NAME = /^[A-Za-z0-9_]+/;

/** Splits one line into text and placeholders; `at(col)` names the place for errors. */
function scanLine(line: string, allowed: ReadonlySet<string>, at: (col: number) => string): Part[] {
  const parts: Part[] = [];
  let i = 0;
  for (;;) {
    const open = line.indexOf('{{', i);
    if (open < 0) {
      if (i < line.length) parts.push(line.slice(i));
      return parts;
    }
    if (open > i) parts.push(line.slice(i, open));
    const close = line.indexOf('}}', open + 2);
    if (close < 0) throw new TemplateError(`${at(open + 1)}: unterminated {{ (a placeholder ends on the same line with }})`);
    const inner = line.slice(open + 2, close);
    const m = NAME.exec(inner);
    if (m === null || m[0].length !== inner.length) {
      throw new TemplateError(`${at(open + 1)}: bad placeholder {{${inner.slice(0, 40)}}}: a name is letters, digits and underscores`);
    }
    if (!allowed.has(inner)) {
      throw new TemplateError(`${at(open + 1)}: unknown placeholder {{${inner}}} (known: ${[...allowed].join(', ')})`);
    }
    parts.push({ name: inner });
    i = close + 2;
  }
}

function scanBody(lines: readonly string[], firstLine: number, allowed: ReadonlySet<string>, file: string): Part[] {
  const parts: Part[] = [];
  lines.forEach((line, k) => {
    if (k > 0) parts.push('\n');
    parts.push(...scanLine(line, allowed, (col) => `${file}:${firstLine + k}:${col}`));
  });
  return parts;
}

/** Template text to lines: UTF-8 (a BOM dropped), any line ending. */
function linesOf(source: string): string[] {
  return source.replace(/^\uFEFF/, '').split(/\r\n|\r|\n/);
}

/**
 * Parses a template from text (what loadTemplate does after reading); `file` and `htmlFile`
 * only name the sources in errors.
 */
export function parseTemplate(source: string, file: string, allowed: readonly string[], html?: { source: string; file: string }): NoticeTemplate {
  const names = new Set(allowed);
  const lines = linesOf(source);
  const first = lines[0] ?? '';
  const m = /^Subject:[ \t]*/i.exec(first);
  if (m === null) throw new TemplateError(`${file}:1:1: the first line must be "Subject: ..."`);
  if (first.slice(m[0].length).trim() === '') throw new TemplateError(`${file}:1:${m[0].length + 1}: the subject is empty`);
  if (lines.length < 2 || lines[1] !== '') throw new TemplateError(`${file}:2:1: an empty line must follow the Subject line`);
  const subject = scanLine(first.slice(m[0].length).trimEnd(), names, (col) => `${file}:1:${m[0].length + col}`);
  // Trailing empty lines are an editor's, not the author's: the body ends with one newline.
  const body = lines.slice(2);
  while (body.length > 0 && body[body.length - 1]!.trim() === '') body.pop();
  const text = scanBody(body, 3, names, file);
  if (html === undefined) return { file, subject, text };
  const htmlLines = linesOf(html.source);
  while (htmlLines.length > 0 && htmlLines[htmlLines.length - 1]!.trim() === '') htmlLines.pop();
  return { file, htmlFile: html.file, subject, text, html: scanBody(htmlLines, 1, names, html.file) };
}

function readBounded(file: string): string {
  let size: number;
  try {
    size = statSync(file).size;
  } catch (e) {
    throw new TemplateError(`${file}: cannot read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  if (size > MAX_TEMPLATE_BYTES) throw new TemplateError(`${file}: ${size} bytes, more than a template may have (${MAX_TEMPLATE_BYTES})`);
  const bytes = readFileSync(file);
  if (bytes.length > MAX_TEMPLATE_BYTES) throw new TemplateError(`${file}: more than ${MAX_TEMPLATE_BYTES} bytes`);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new TemplateError(`${file}: not UTF-8 text`);
  }
}

/**
 * Reads and checks a notice template: `allowed` are the placeholders the caller will fill
 * (DEVICE_NOTICE_VARS or SIGNIN_NOTICE_VARS), so a typo is found when the daemon starts, not
 * when a customer gets "Hello {{usr}}".
 */
export function loadTemplate(file: string, htmlFile: string | undefined, allowed: readonly string[]): NoticeTemplate {
  const source = readBounded(file);
  return parseTemplate(source, file, allowed, htmlFile === undefined ? undefined : { source: readBounded(htmlFile), file: htmlFile });
}

// C0 and C1 controls (CR, LF, TAB among them), the line and paragraph separators, and the bidi
// controls, with which a client name could make the text around it read backwards.
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);

/** A value fit to render: links checked whole, anything else cut to MAX_VALUE_CHARS. */
function boundedValue(name: string, value: string): string {
  if (name.endsWith('_url')) {
    if (value.length > MAX_URL_CHARS) throw new TemplateError(`{{${name}}}: a link longer than ${MAX_URL_CHARS} characters`);
    // Only web links: a javascript: or data: link in a mail is never what the daemon meant.
    if (!/^https?:\/\/[^\s\u0000-\u001f\u007f"'<>]+$/i.test(value)) throw new TemplateError(`{{${name}}}: not an http(s) link`);
    return value;
  }
  const chars = [...value];
  return chars.length > MAX_VALUE_CHARS ? `${chars.slice(0, MAX_VALUE_CHARS - 1).join('')}…` : value;
}

function fill(parts: readonly Part[], vars: Readonly<Record<string, string>>, place: (v: string) => string, where: string): string {
  let out = '';
  for (const p of parts) {
    if (typeof p === 'string') {
      out += p;
      continue;
    }
    const v = Object.prototype.hasOwnProperty.call(vars, p.name) ? vars[p.name] : undefined;
    if (typeof v !== 'string') throw new TemplateError(`${where}: no value for {{${p.name}}}`);
    out += place(boundedValue(p.name, v));
  }
  return out;
}

/**
 * Fills a template. Every placeholder needs a value. In the subject, control characters of values
 * become spaces, so no value can end the Subject header and start another; in the text they are
 * dropped, so a value cannot add lines of its own (a fake "call this number"); in HTML values are
 * also escaped.
 */
export function renderTemplate(t: NoticeTemplate, vars: Readonly<Record<string, string>>): RenderedNotice {
  const subject = fill(t.subject, vars, (v) => v.replace(CONTROLS, ' '), t.file).replace(/\s+/g, ' ').trim();
  const text = fill(t.text, vars, (v) => v.replace(CONTROLS, ''), t.file);
  if (t.html === undefined) return { subject, text };
  return { subject, text, html: fill(t.html, vars, (v) => escapeHtml(v.replace(CONTROLS, '')), t.htmlFile ?? t.file) };
}
