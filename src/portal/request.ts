/**
 * Pure parsers for what a browser sends the account page: form bodies, cookies, paths, the
 * headers that tell a cross-site request. Each refuses rather than guesses: a form with a field
 * twice, or a broken escape, is not half-read.
 */

/** A form here has a handful of short fields; 8 KiB is generous and stops a body from costing memory. */
export const MAX_BODY_BYTES = 8 * 1024;
export const MAX_FORM_FIELDS = 20;
/** Browsers send a few cookies for this host; more is not a browser talking to us. */
export const MAX_COOKIES = 50;
/** The longest address an SMTP path may hold (RFC 5321); a longer one is not an account. */
export const MAX_ADDRESS_LENGTH = 320;
export const MAX_LABEL_LENGTH = 100;

export type FormResult = { ok: true; fields: Map<string, string> } | { ok: false; reason: string };

const decode = (s: string): string | null => {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return null;
  }
};

/** application/x-www-form-urlencoded, as browsers send it. */
export function parseForm(body: string, maxFields = MAX_FORM_FIELDS): FormResult {
  const fields = new Map<string, string>();
  if (body === '') return { ok: true, fields };
  const parts = body.split('&');
  if (parts.length > maxFields) return { ok: false, reason: `more than ${maxFields} fields` };
  for (const part of parts) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const name = decode(eq < 0 ? part : part.slice(0, eq));
    const value = decode(eq < 0 ? '' : part.slice(eq + 1));
    if (name === null || value === null) return { ok: false, reason: 'a broken %-escape' };
    // Two values for one name would leave it to chance which one a check saw and which one acted.
    if (fields.has(name)) return { ok: false, reason: `the field "${name.slice(0, 40)}" twice` };
    fields.set(name, value);
  }
  return { ok: true, fields };
}

export function isFormContentType(header: string | undefined): boolean {
  if (header === undefined) return false;
  return header.split(';')[0]!.trim().toLowerCase() === 'application/x-www-form-urlencoded';
}

/** The Cookie header as name → value; the first of a repeated name wins, as in browsers' order (most specific path first). */
export function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (header === undefined || header === '') return out;
  const parts = header.split(';');
  for (const part of parts.slice(0, MAX_COOKIES)) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (!out.has(name)) out.set(name, part.slice(eq + 1).trim());
  }
  return out;
}

/**
 * The portal's own path for a request path: the proxy in front may strip the base path or pass
 * it on, so both "/cidlock/approve" and "/approve" mean "/approve" when the base is "/cidlock/".
 * The query is dropped: no route reads one.
 */
export function routePath(url: string, base: string): string {
  const q = url.search(/[?#]/);
  const path = q < 0 ? url : url.slice(0, q);
  if (base !== '/') {
    if (path === base.slice(0, -1)) return '/';
    if (path.startsWith(base)) return path.slice(base.length - 1);
  }
  return path === '' ? '/' : path;
}

/**
 * Whether a POST comes from another site. Sec-Fetch-Site is the browser's own verdict; Origin is
 * compared with the portal's public origin. "null" is let through: this page's own
 * `Referrer-Policy: no-referrer` makes browsers send `Origin: null` on its forms, and the CSRF
 * token still has to match.
 */
export function isCrossSite(headers: { origin?: string | undefined; 'sec-fetch-site'?: string | undefined }, ownOrigin: string): boolean {
  const site = headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return true;
  const origin = headers.origin;
  if (origin !== undefined && origin !== 'null' && origin.toLowerCase() !== ownOrigin.toLowerCase()) return true;
  return false;
}

// C0/C1 controls, and the bidirectional overrides that make a label read differently than it is.
const UNSAFE_IN_LABEL = /[\p{Cc}\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/gu;

/** A device name as typed: controls removed, spaces collapsed, at most MAX_LABEL_LENGTH characters. */
export function cleanLabel(typed: string): string {
  const s = typed.replace(UNSAFE_IN_LABEL, ' ').replace(/\s+/g, ' ').trim();
  return [...s].slice(0, MAX_LABEL_LENGTH).join('').trim();
}
