import type { PortalStrings, StringKey } from './strings.js';

/**
 * Markup for the account page: escaping, the layout and its stylesheet. Every value reaches the
 * page through the `html` tag, which escapes it unless it is markup the tag made itself, so
 * forgetting to escape a label or a client name is not possible by omission.
 */

/** Markup that is already safe to put in a page. Only `html` and `raw` make one. */
export interface Html { readonly __html: string }

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Text for element content and for attribute values (always written in double quotes here). */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}
export const escapeAttr = escapeHtml;

/** Trusted markup written in this folder (never data). */
export const raw = (s: string): Html => ({ __html: s });

const isHtml = (v: unknown): v is Html => typeof v === 'object' && v !== null && typeof (v as Html).__html === 'string';

function piece(v: unknown): string {
  if (v === null || v === undefined || v === false) return '';
  if (isHtml(v)) return v.__html;
  if (Array.isArray(v)) return v.map(piece).join('');
  return escapeHtml(String(v));
}

export function html(parts: TemplateStringsArray, ...values: unknown[]): Html {
  let out = parts[0]!;
  for (let i = 0; i < values.length; i++) out += piece(values[i]) + parts[i + 1]!;
  return raw(out);
}

/** Fills `{name}` placeholders; the result is text, escaped when it goes into a page. */
export function fill(template: string, vars: Record<string, string | number> = {}): string {
  return template.replace(/\{([a-z_]+)\}/g, (m, k: string) => (Object.hasOwn(vars, k) ? String(vars[k]) : m));
}

/** A text from the strings file, filled in. */
export type Texts = (key: StringKey, vars?: Record<string, string | number>) => string;
export const texts = (s: PortalStrings): Texts => (key, vars) => fill(s[key], vars);

export interface PageInput {
  strings: PortalStrings;
  /** The path the portal is served under, ending with "/": "/cidlock/" or "/". */
  base: string;
  title: string;
  body: Html;
}

/**
 * One page: no script at all, the only style a stylesheet from this origin, so the CSP can forbid
 * everything else. The referrer meta repeats the header for proxies that drop it: links carry tokens.
 */
export function layout(p: PageInput): string {
  const s = p.strings;
  return `<!doctype html>\n${html`<html lang="${s.lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex, nofollow">
<title>${p.title} – ${s.site_name}</title>
<link rel="stylesheet" href="${p.base}portal.css">
<link rel="icon" href="${p.base}favicon.ico">
</head>
<body>
<header><p class="site">${s.site_name}</p></header>
<main>
<h1>${p.title}</h1>
${p.body}
</main>
</body>
</html>
`.__html}`;
}

/** A hidden field; the values are tokens and ids, escaped all the same. */
export const hidden = (name: string, value: string): Html => html`<input type="hidden" name="${name}" value="${value}">`;

/** A POST form: every form carries its CSRF token, so none can be forgotten. */
export function postForm(action: string, csrf: string, body: Html, cls = ''): Html {
  return html`<form method="post" action="${action}"${cls === '' ? '' : html` class="${cls}"`}>
${hidden('csrf', csrf)}
${body}
</form>`;
}

/**
 * Readable on a 360px phone (one column, large touch targets), AA contrast for every text and
 * button colour on its background, and a visible focus ring for keyboard users.
 */
export const PORTAL_CSS = `:root{color-scheme:light}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;font:1.0625rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1a1a1a;background:#fff}
header{background:#1f3a5f;color:#fff;padding:.75rem 1rem}
header .site{margin:0;font-weight:600}
main{max-width:40rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;line-height:1.25;margin:.5rem 0 1rem}
h2{font-size:1.2rem;line-height:1.3;margin:2rem 0 .5rem}
p{margin:.5rem 0}
a{color:#0b57d0}
a:visited{color:#6a1b9a}
label{display:block;font-weight:600;margin:.75rem 0 .25rem}
input[type=text],input[type=email]{display:block;width:100%;font:inherit;padding:.5rem;border:1px solid #5f6368;border-radius:4px;color:#1a1a1a;background:#fff}
button{font:inherit;min-height:2.75rem;padding:.5rem 1rem;margin:.5rem .5rem 0 0;border-radius:4px;border:2px solid #0b57d0;background:#0b57d0;color:#fff;cursor:pointer;max-width:100%;overflow-wrap:anywhere}
button.secondary{background:#fff;color:#0b57d0}
button.danger{background:#b3261e;border-color:#b3261e;color:#fff}
a:focus-visible,button:focus-visible,input:focus-visible{outline:3px solid #1a1a1a;outline-offset:2px}
form{margin:.5rem 0}
form.inline{display:inline-block}
ul.items{list-style:none;padding:0;margin:0}
ul.items>li{border:1px solid #8a8d91;border-radius:6px;padding:.75rem;margin:0 0 .75rem}
.name{font-size:1.0625rem;font-weight:600;margin:0;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.25rem .75rem;margin:.5rem 0}
dt{font-weight:600}
dd{margin:0;overflow-wrap:anywhere}
fieldset{border:1px solid #8a8d91;border-radius:6px;padding:.75rem;margin:.5rem 0;min-width:0}
legend{font-weight:600;padding:0 .25rem}
.choice{display:flex;gap:.5rem;align-items:flex-start;margin:.5rem 0}
.choice input{flex:none;width:1.25rem;height:1.25rem;margin:.2rem 0 0}
.choice label{margin:0}
.hint{display:block;font-weight:400;color:#3c4043}
.warning{border-left:4px solid #b3261e;background:#fdecea;padding:.5rem .75rem;margin:1rem 0}
.signout{margin-top:2.5rem;border-top:1px solid #8a8d91;padding-top:1rem}
@media (max-width:30rem){dl{grid-template-columns:minmax(0,1fr)}dd{margin-bottom:.5rem}button{width:100%;margin-right:0}form.inline{display:block}}
`;

/** No script, no inline style, no framing; forms post only here. */
export const CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
