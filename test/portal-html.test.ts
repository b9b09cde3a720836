import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { escapeHtml, fill, html, layout, PORTAL_CSS, texts } from '../src/portal/html.js';
import { createSignInLimiter, SIGNIN_WINDOW_MS } from '../src/portal/limits.js';
import { approvePage, devicesPage, formatWhen, homePage } from '../src/portal/pages.js';
import { cleanLabel, isCrossSite, MAX_LABEL_LENGTH, parseCookies, parseForm, routePath } from '../src/portal/request.js';
import { parseApproveSubject, verifyExact } from '../src/portal/routes.js';
import { loadPortalStrings, PortalStringsError, STRING_KEYS } from '../src/portal/strings.js';
import { signToken } from '../src/portal/tokens.js';
import { device, pendingDevice } from './helpers/fake-accounts.js';
import { tempDir } from './helpers/tmp.js';

const strings = loadPortalStrings();
const t = texts(strings);
const HOSTILE = `<script>alert(1)</script>"><img src=x onerror=alert(2)>'&`;

function stringsFile(text: string): string {
  const f = join(tempDir(), 'strings.yaml');
  writeFileSync(f, text);
  return f;
}

function stringsError(text: string): PortalStringsError {
  try {
    loadPortalStrings(stringsFile(text));
  } catch (e) {
    if (e instanceof PortalStringsError) return e;
    throw e;
  }
  throw new Error('no error');
}

test('escaping: text and attributes, and the html tag escapes every value it did not make', () => {
  assert.is(escapeHtml(HOSTILE), '&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;&#39;&amp;');
  const h = html`<p title="${HOSTILE}">${HOSTILE}${html`<b>${'<i>'}</b>`}${[1, '<', null, undefined, false]}</p>`;
  assert.not.ok(h.__html.includes('<script'));
  assert.not.ok(h.__html.includes('"><img'));
  assert.ok(h.__html.includes('<b>&lt;i&gt;</b>'), 'nested markup kept, its values escaped');
  assert.ok(h.__html.endsWith('1&lt;</p>'));
  assert.is(fill('{user} has {n} {unknown}', { user: 'a', n: 2 }), 'a has 2 {unknown}');
});

test('layout: doctype, lang, viewport, title, one main with one h1, the stylesheet, no script or inline style', () => {
  const page = layout({ strings, base: '/cidlock/', title: 'T <x>', body: html`<p>hi</p>` });
  assert.ok(page.startsWith('<!doctype html>\n<html lang="en">'));
  assert.ok(page.includes('<meta name="viewport" content="width=device-width, initial-scale=1">'));
  assert.ok(page.includes('<title>T &lt;x&gt; – Mail device lock</title>'));
  assert.ok(page.includes('<link rel="stylesheet" href="/cidlock/portal.css">'));
  assert.is(page.match(/<main>/g)?.length, 1);
  assert.is(page.match(/<h1>/g)?.length, 1);
  assert.ok(page.includes('<h1>T &lt;x&gt;</h1>'));
  assert.not.ok(/<script|style=|<style|\son[a-z]+=/i.test(page));
  assert.ok(PORTAL_CSS.includes('max-width'));
});

/** Every input, select and textarea that is not hidden has a <label for> naming its id. */
function assertLabelled(page: string) {
  const inputs = [...page.matchAll(/<input\b[^>]*>/g)].map((m) => m[0]).filter((i) => !i.includes('type="hidden"'));
  assert.ok(inputs.length > 0);
  for (const i of inputs) {
    const id = /\bid="([^"]+)"/.exec(i)?.[1];
    assert.ok(id, `an input without id: ${i}`);
    assert.ok(page.includes(`<label for="${id}">`), `no label for #${id}`);
  }
  for (const b of page.matchAll(/<button\b[^>]*>([^<]*)<\/button>/g)) assert.ok(b[1]!.trim().length > 0, `a button without text: ${b[0]}`);
}

test('pages: labels for every field, buttons with text, the ids browser tests drive, and hostile values escaped', () => {
  const home = homePage(t, '/', 'CSRF').body.__html;
  assertLabelled(home);
  assert.ok(home.includes('id="signin-address"') && home.includes('id="signin-submit"'));
  const devices = devicesPage(t, '/', {
    user: 'alice@example.org',
    devices: [device('0123456789ab', HOSTILE)],
    pending: [pendingDevice({ id: 'abcdefabcdef', client: HOSTILE })],
    refusals: [{ at: '2025-03-01T10:00:00Z', protocol: 'imap', remote: null, reason: 'unknown device', client: HOSTILE }],
    lock: { mode: 'learn', choices: ['learn', 'enforce'], own: null },
    csrf: 'CSRF',
  }).body.__html;
  assertLabelled(devices);
  for (const id of ['rename-0123456789ab', 'rename-0123456789ab-submit', 'remove-0123456789ab', 'approve-abcdefabcdef', 'reject-abcdefabcdef', 'mode-learn', 'mode-enforce', 'lock-submit', 'signout']) {
    assert.ok(devices.includes(`id="${id}"`), `#${id} missing`);
  }
  assert.ok(/<fieldset>\s*<legend>/.test(devices), 'the lock radios are in a fieldset with a legend');
  assert.ok(devices.includes('id="mode-learn" name="mode" value="learn" checked'));
  assert.not.ok(/<script|<img/i.test(devices), 'a hostile label or client name reached the page as markup');
  assert.ok(devices.includes('&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img'));
  const approve = approvePage(t, '/', 'bob@example.org', pendingDevice({ client: HOSTILE, remote: null }), 'TOK', 'CSRF').body.__html;
  assert.ok(approve.includes('id="approve"') && approve.includes('id="reject"'));
  assert.not.ok(/<script|<img/i.test(approve));
  assert.ok(approve.includes('>unknown<'), 'no address: said so');
  const fixed = devicesPage(t, '/', { user: 'a@b', devices: [], pending: [], refusals: [], lock: { mode: 'enforce', choices: [], own: null }, csrf: 'C' }).body.__html;
  assert.not.ok(fixed.includes('id="lock-submit"'), 'no lock form without choices');
  assert.ok(fixed.includes(t('lock_fixed')));
});

test('formatWhen: one unambiguous form; a date stays a date; junk is shown as given', () => {
  assert.is(formatWhen('2025-03-01T10:05:59.000Z'), '2025-03-01 10:05 UTC');
  assert.is(formatWhen('2025-02-27'), '2025-02-27');
  assert.is(formatWhen('soon'), 'soon');
});

test('strings: the shipped file has every key; an operator file overrides some and falls back for the rest', () => {
  for (const k of STRING_KEYS) assert.type(strings[k], 'string', k);
  const s = loadPortalStrings(stringsFile('lang: de\nhome_title: Geräte verwalten\nsignin_sent_text: "Link unterwegs, {minutes} Minuten gültig."\n'));
  assert.is(s.lang, 'de');
  assert.is(s.home_title, 'Geräte verwalten');
  assert.is(s.site_name, strings.site_name, 'a key left out keeps the shipped text');
  assert.is(loadPortalStrings(stringsFile('# nothing yet\n')).home_title, strings.home_title);
});

test('strings: unknown keys, non-text values, unknown placeholders and YAML errors are reported at file:line:col', () => {
  const unknown = stringsError('lang: en\nhome_titel: Typo\n');
  assert.match(unknown.message, /strings\.yaml:2:1: unknown key "home_titel"/);
  const number = stringsError('lang: en\nsite_name: 12\n');
  assert.match(number.message, /strings\.yaml:2:12: site_name: expected a text/);
  const nested = stringsError('home_title:\n  - a\n');
  assert.match(nested.message, /:2:3: home_title: expected a text/);
  const empty = stringsError('home_title:\n');
  assert.match(empty.message, /:1:1: home_title: expected a text/);
  const placeholder = stringsError('signin_sent_text: "valid {hours} hours"\n');
  assert.match(placeholder.message, /:1:19: signin_sent_text: unknown placeholder \{hours\}/);
  const twice = stringsError('lang: en\nlang: de\n');
  assert.match(twice.message, /strings\.yaml:2:1: YAML syntax: Map keys must be unique/);
  assert.match(stringsError('lang: en\nsite_name: "unclosed\n').message, /strings\.yaml:\d+:\d+: YAML syntax: Missing closing/);
  const list = stringsError('- lang\n');
  assert.match(list.message, /:1:1: expected a mapping/);
  const both = stringsError('a: 1\nb: 2\n');
  assert.is(both.issues.length, 2, 'every problem at once');
  assert.throws(() => loadPortalStrings(join(tempDir(), 'missing.yaml')), (e: unknown) => e instanceof PortalStringsError && /missing\.yaml:1:1: cannot read/.test((e as Error).message));
});

test('parseForm: urlencoded fields; too many fields, a field twice and broken escapes refused', () => {
  const f = parseForm('a=1&b=x+y%26z&c=&d');
  assert.ok(f.ok);
  if (f.ok) assert.equal([...f.fields], [['a', '1'], ['b', 'x y&z'], ['c', ''], ['d', '']]);
  assert.not.ok(parseForm(Array.from({ length: 21 }, (_, i) => `f${i}=1`).join('&')).ok);
  assert.ok(parseForm(Array.from({ length: 20 }, (_, i) => `f${i}=1`).join('&')).ok);
  assert.not.ok(parseForm('a=1&a=2').ok);
  assert.not.ok(parseForm('a=%E0%A4%A').ok);
});

test('parseCookies, routePath, isCrossSite, cleanLabel', () => {
  assert.equal([...parseCookies('a=1; b = 2;c=x=y; a=3; junk')], [['a', '1'], ['b', '2'], ['c', 'x=y']]);
  assert.is(routePath('/cidlock/approve/TOK?x=1', '/cidlock/'), '/approve/TOK');
  assert.is(routePath('/approve/TOK', '/cidlock/'), '/approve/TOK');
  assert.is(routePath('/cidlock', '/cidlock/'), '/');
  assert.is(routePath('/cidlock/', '/cidlock/'), '/');
  assert.is(routePath('/cidlockx/devices', '/cidlock/'), '/cidlockx/devices');
  assert.is(routePath('/devices', '/'), '/devices');
  const own = 'https://mail.example.org';
  assert.not.ok(isCrossSite({}, own));
  assert.not.ok(isCrossSite({ origin: 'https://mail.example.org', 'sec-fetch-site': 'same-origin' }, own));
  assert.not.ok(isCrossSite({ origin: 'null' }, own), 'our own no-referrer forms send Origin: null');
  assert.ok(isCrossSite({ origin: 'https://evil.example' }, own));
  assert.ok(isCrossSite({ 'sec-fetch-site': 'cross-site' }, own));
  assert.ok(isCrossSite({ 'sec-fetch-site': 'same-site' }, own));
  assert.is(cleanLabel('  my\u0000 \u202Elaptop\n\tnew  '), 'my laptop new');
  assert.is([...cleanLabel('é'.repeat(500))].length, MAX_LABEL_LENGTH);
});

test('sign-in limits: per address, per account, in total, per sliding hour', () => {
  const l = createSignInLimiter({ address: 2, account: 3, total: 5 });
  const t0 = 1_000_000;
  assert.is(l.take('a@x', 'a@x', t0), 'ok');
  assert.is(l.take('a@x', 'a@x', t0), 'ok');
  assert.is(l.take('a@x', 'a@x', t0), 'address');
  assert.is(l.take('A@x ', 'a@x', t0), 'ok', 'another spelling of the same account');
  assert.is(l.take('a2@x', 'a@x', t0), 'account');
  assert.is(l.take('b@x', 'b@x', t0), 'ok');
  assert.is(l.take('c@x', 'c@x', t0), 'ok');
  assert.is(l.take('d@x', 'd@x', t0), 'total');
  assert.is(l.take('a@x', 'a@x', t0 + 2 * SIGNIN_WINDOW_MS), 'ok', 'an hour later it counts again');
});

test('tokens: an approval subject parses; a token is accepted only in the exact spelling it was signed in', () => {
  assert.equal(parseApproveSubject('abc.1740823200000'), { hash: 'abc', first: 1740823200000 });
  assert.is(parseApproveSubject('abc'), null);
  assert.is(parseApproveSubject('abc.12x'), null);
  const key = Buffer.alloc(32, 1);
  const now = 1_000;
  const tok = signToken(key, { purpose: 'signin', user: 'a@x', subject: 'id', exp: now + 10 });
  assert.ok(verifyExact(key, tok, 'signin', now));
  // Base64 decoding ignores the spare bits of the last character and stray characters.
  const spellings = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'].map((c) => tok.slice(0, -1) + c).filter((x) => x !== tok);
  for (const s of [...spellings, `${tok}!`, tok.replace('.', '.!')]) assert.is(verifyExact(key, s, 'signin', now), null, s);
  assert.is(verifyExact(key, tok, 'session', now), null);
  assert.is(verifyExact(key, tok, 'signin', now + 10), null);
});

test.run();
