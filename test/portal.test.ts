import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { jsonLogger } from '../src/core/log.js';
import { PortalRefusal } from '../src/portal/account.js';
import { createPortalServer, DEFAULT_LINK_TTL_MS, DEFAULT_SESSION_TTL_MS, type PortalSettings } from '../src/portal/server.js';
import { loadPortalStrings } from '../src/portal/strings.js';
import { signToken } from '../src/portal/tokens.js';
import { device, FAKE_KEY, fakeAccounts, pendingDevice, type FakeAccounts } from './helpers/fake-accounts.js';

const strings = loadPortalStrings();
const URL_BASE = 'https://mail.example.org/cidlock/';
const ORIGIN = 'https://mail.example.org';
const HOSTILE = `<script>alert(1)</script>"><img src=x onerror=alert(2)>`;
const ALICE = 'alice@example.org';
const BOB = 'bob@example.org';

interface Reply { status: number; headers: Record<string, string | string[] | undefined>; body: string }

function send(port: number, method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false, headers: { ...(body === undefined ? {} : { 'content-length': String(Buffer.byteLength(body)) }), ...headers } }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (data += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: data }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The headers every answer must carry, whatever the route or the outcome. */
function assertSecurityHeaders(r: Reply, what: string) {
  assert.is(r.headers['content-security-policy'], "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'", what);
  assert.is(r.headers['x-content-type-options'], 'nosniff', what);
  assert.is(r.headers['referrer-policy'], 'no-referrer', what);
  assert.is(r.headers['cache-control'], 'no-store', what);
  assert.is(r.headers['x-frame-options'], 'DENY', what);
}

/** A browser, as far as the portal can tell: a cookie jar, forms posted as browsers post them. */
function browser(port: number, name = 'browser') {
  const jar = new Map<string, string>();
  const go = async (method: string, path: string, fields?: Record<string, string>, headers: Record<string, string> = {}) => {
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const body = fields === undefined ? undefined : new URLSearchParams(fields).toString();
    const r = await send(port, method, path, body, {
      ...(cookie === '' ? {} : { cookie }),
      ...(fields === undefined ? {} : { 'content-type': 'application/x-www-form-urlencoded', origin: ORIGIN, 'sec-fetch-site': 'same-origin' }),
      ...headers,
    });
    assertSecurityHeaders(r, `${name} ${method} ${path}`);
    for (const c of [r.headers['set-cookie'] ?? []].flat()) {
      const [pair] = c.split(';');
      const eq = pair!.indexOf('=');
      const value = pair!.slice(eq + 1);
      if (value === '' || /Max-Age=0\b/.test(c)) jar.delete(pair!.slice(0, eq));
      else jar.set(pair!.slice(0, eq), value);
    }
    return r;
  };
  return { jar, get: (path: string, headers?: Record<string, string>) => go('GET', path, undefined, headers), post: go.bind(null, 'POST') };
}

/** A hidden or text field's value in a page. */
function field(page: string, name: string): string {
  const m = new RegExp(`name="${name}" value="([^"]*)"`).exec(page);
  if (m === null) throw new Error(`no field ${name} in:\n${page}`);
  return m[1]!;
}

const settle = () => new Promise((r) => setTimeout(r, 30));

async function start(over: Partial<PortalSettings> = {}, now?: () => number) {
  const service: FakeAccounts = fakeAccounts();
  service.accounts.set(ALICE, {
    devices: [device('0123456789ab', 'Laptop'), device('ba9876543210', 'Phone')],
    pending: [pendingDevice({ client: HOSTILE })],
    refusals: [{ at: '2025-03-01T10:00:00Z', protocol: 'imap', remote: '192.0.2.7', reason: 'unknown_device', client: 'Thunderbird 128.0' }],
    mode: 'learn',
    own: null,
  });
  service.accounts.set(BOB, { devices: [device('bbbbbbbbbbbb', 'Bob laptop')], pending: [pendingDevice()], refusals: [], mode: 'enforce', own: null });
  const logs: Array<Record<string, unknown>> = [];
  const settings: PortalSettings = {
    url: URL_BASE,
    userModes: ['learn', 'enforce'],
    linkTtlMs: DEFAULT_LINK_TTL_MS,
    sessionTtlMs: DEFAULT_SESSION_TTL_MS,
    signInPerHour: { address: 3, account: 4, total: 100 },
    ...over,
  };
  const server = createPortalServer({ service, settings, strings, logger: jsonLogger((l) => logs.push(JSON.parse(l))), ...(now === undefined ? {} : { now }) });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return { service, logs, port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

const approveToken = (user: string, p: { hash: string; first: string }, exp = Date.now() + 3_600_000) =>
  signToken(FAKE_KEY, { purpose: 'approve', user, subject: `${p.hash}.${Date.parse(p.first)}`, exp });

/** Asks for a sign-in link in one browser and signs in with it: the session's browser and the link. */
async function signIn(port: number, service: FakeAccounts, address = ALICE) {
  const b = browser(port, address);
  const home = await b.get('/cidlock/');
  const mail = service.nextMail();
  const sent = await b.post('/cidlock/signin', { csrf: field(home.body, 'csrf'), address });
  assert.is(sent.status, 200);
  const { link } = await mail;
  const path = new URL(link).pathname;
  const confirm = await b.get(path);
  const done = await b.post('/cidlock/s', { token: field(confirm.body, 'token'), csrf: field(confirm.body, 'csrf') });
  assert.is(done.status, 303);
  const devices = await b.get('/cidlock/devices');
  assert.is(devices.status, 200);
  return { b, link, path, csrf: field(devices.body, 'csrf'), devices };
}

test('approval link: GET shows the device without acting, POST approves it, and the link works once', async () => {
  const { service, port, close, logs } = await start();
  try {
    const b = browser(port);
    const p = service.accounts.get(ALICE)!.pending[0]!;
    const token = approveToken(ALICE, p);
    const show = await b.get(`/cidlock/approve/${token}`);
    assert.is(show.status, 200);
    for (const s of ['TBIRD-UUID', 'imap', '192.0.2.7', '2025-03-01 10:00 UTC', '2025-03-01 10:05 UTC', '<dd>3</dd>', 'id="approve"', 'id="reject"', ALICE]) assert.ok(show.body.includes(s), s);
    assert.not.ok(/<script|<img/i.test(show.body), 'the client name reached the page as markup');
    assert.ok(show.body.includes('&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;'));
    assert.is(service.changes.length, 0, 'showing the page changed nothing (mail scanners fetch links)');
    const ok = await b.post('/approve', { token, csrf: field(show.body, 'csrf'), answer: 'approve' }, { 'x-forwarded-for': '203.0.113.1, 198.51.100.9' });
    assert.is(ok.status, 200);
    assert.ok(ok.body.includes(strings.approved_text));
    assert.equal(service.changes.map((c) => c.what), [`approve ${ALICE} ${p.hash}`]);
    assert.is(service.changes[0]!.actor.remote, '198.51.100.9', 'the proxy\'s client address is the actor');
    assert.ok(service.accounts.get(ALICE)!.devices.some((d) => d.id === p.id && d.source === 'approved'));
    const again = await b.get(`/cidlock/approve/${token}`);
    assert.is(again.status, 403);
    assert.ok(again.body.includes(strings.invalid_link_title));
    const reuse = await b.post('/cidlock/approve', { token, csrf: field(show.body, 'csrf'), answer: 'approve' });
    assert.is(reuse.status, 403);
    assert.ok(reuse.body.includes(strings.invalid_link_title));
    assert.is(service.changes.length, 1);
    assert.not.ok(JSON.stringify(logs).includes(token), 'a token reached the log');
  } finally {
    await close();
  }
});

test('approval link: "Not me" keeps the device out and says to change the password; a link for an older sighting is dead', async () => {
  const { service, port, close } = await start();
  try {
    const b = browser(port);
    const p = service.accounts.get(ALICE)!.pending[0]!;
    const token = approveToken(ALICE, p);
    const show = await b.get(`/approve/${token}`);
    const no = await b.post('/approve', { token, csrf: field(show.body, 'csrf'), answer: 'reject' });
    assert.is(no.status, 200);
    assert.ok(no.body.includes('change it now'));
    assert.ok(no.body.includes(strings.rejected_where));
    assert.is(p.state, 'rejected');
    assert.is((await b.post('/approve', { token, csrf: field(show.body, 'csrf'), answer: 'approve' })).status, 403, 'no approving after "not me" with the same link');
    assert.equal(service.changes.map((c) => c.what), [`reject ${ALICE} ${p.hash}`]);
    // The same device seen again later is a new sighting; the old link is not for it.
    const bobs = service.accounts.get(BOB)!.pending[0]!;
    const old = approveToken(BOB, { hash: bobs.hash, first: '2025-01-01T00:00:00.000Z' });
    assert.is((await b.get(`/approve/${old}`)).status, 403);
  } finally {
    await close();
  }
});

test('sign-in: a link by mail, a button on GET, consumed on POST once, a strict session cookie, then the devices page', async () => {
  const { service, port, close, logs } = await start();
  try {
    const b = browser(port);
    const home = await b.get('/cidlock/');
    assert.is(home.status, 200);
    assert.ok(home.body.includes('id="signin-address"') && home.body.includes('id="signin-submit"'));
    assert.ok(home.body.includes('action="/cidlock/signin"'));
    const pre = [home.headers['set-cookie'] ?? []].flat()[0]!;
    assert.match(pre, /^__Host-cidlock-pre=[A-Za-z0-9_-]{22}; Path=\/; Max-Age=\d+; HttpOnly; SameSite=Strict; Secure$/);
    const mail = service.nextMail();
    const sent = await b.post('/cidlock/signin', { csrf: field(home.body, 'csrf'), address: '  Alice@Example.org ' });
    assert.is(sent.status, 200);
    assert.ok(sent.body.includes('30 minutes'));
    const { user, link } = await mail;
    assert.is(user, ALICE);
    assert.match(link, /^https:\/\/mail\.example\.org\/cidlock\/s\/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    const path = new URL(link).pathname;
    const confirm = await b.get(path);
    assert.is(confirm.status, 200);
    assert.ok(confirm.body.includes('id="signin-confirm"'));
    assert.is((await b.get(path)).status, 200, 'GET does not use the link up (mail scanners prefetch)');
    const done = await b.post('/cidlock/s', { token: field(confirm.body, 'token'), csrf: field(confirm.body, 'csrf') });
    assert.is(done.status, 303);
    assert.is(done.headers.location, `${URL_BASE}devices`);
    const session = [done.headers['set-cookie'] ?? []].flat()[0]!;
    assert.match(session, /^__Host-cidlock-session=[^;]+; Path=\/; Max-Age=900; HttpOnly; SameSite=Strict; Secure$/);
    const twice = await b.post('/cidlock/s', { token: field(confirm.body, 'token'), csrf: field(confirm.body, 'csrf') });
    assert.is(twice.status, 403, 'a used link is refused');
    assert.ok(twice.body.includes(strings.invalid_link_title));
    const page = await b.get('/cidlock/devices');
    assert.is(page.status, 200);
    for (const s of ['Laptop', 'Phone', 'id="rename-0123456789ab"', 'id="remove-ba9876543210"', 'id="mode-learn"', 'id="mode-enforce"', 'id="lock-submit"', 'id="signout"', 'Thunderbird 128.0', 'A device that is not one of yours', `Signed in as ${ALICE}`]) {
      assert.ok(page.body.includes(s), s);
    }
    assert.not.ok(/<script|<img/i.test(page.body));
    const text = JSON.stringify(logs);
    assert.not.ok(text.includes(path.slice(10)), 'a sign-in token reached the log');
    assert.not.ok(text.includes(session.split(';')[0]!.split('=')[1]!), 'a session cookie reached the log');
    assert.ok(logs.some((l) => l.event === 'portal_request' && l.route === '/signin' && l.signin === 'sent'));
  } finally {
    await close();
  }
});

test('devices page: rename (bounded, control characters out, escaped), remove, answer a pending device, set the lock; a mode not offered is refused', async () => {
  const { service, port, close } = await start();
  try {
    const { b, csrf } = await signIn(port, service);
    const alice = service.accounts.get(ALICE)!;
    const renamed = await b.post('/cidlock/devices/rename', { csrf, id: '0123456789ab', label: `${HOSTILE}\u0000\u202e${'x'.repeat(200)}` });
    assert.is(renamed.status, 303);
    assert.is(renamed.headers.location, `${URL_BASE}devices`);
    const label = alice.devices[0]!.label;
    assert.is([...label].length, 100);
    assert.not.ok(/[\u0000\u202e]/.test(label));
    const page = await b.get('/cidlock/devices');
    assert.not.ok(/<script|<img/i.test(page.body), 'a hostile label reached the page as markup');
    assert.ok(page.body.includes('&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;'));
    assert.is((await b.post('/cidlock/devices/rename', { csrf, id: '0123456789ab', label: ' \u0001 ' })).status, 400, 'an empty name is refused');
    assert.is((await b.post('/cidlock/devices/remove', { csrf, id: 'ba9876543210' })).status, 303);
    assert.equal(alice.devices.map((d) => d.id), ['0123456789ab']);
    assert.is((await b.post('/cidlock/devices/remove', { csrf, id: 'ba9876543210' })).status, 409, 'already gone');
    assert.is((await b.post('/cidlock/devices/remove', { csrf, id: '../etc' })).status, 400);
    const p = alice.pending[0]!;
    assert.is((await b.post('/cidlock/pending/reject', { csrf, hash: p.hash })).status, 303);
    assert.is(p.state, 'rejected');
    assert.ok((await b.get('/cidlock/devices')).body.includes(strings.pending_rejected));
    const lock = await b.post('/cidlock/lock', { csrf, mode: 'enforce' });
    assert.is(lock.status, 303);
    assert.is(alice.mode, 'enforce');
    const before = service.changes.length;
    for (const mode of ['off', 'monitor', 'strict', '']) {
      const r = await b.post('/cidlock/lock', { csrf, mode });
      assert.is(r.status, 400, mode);
      assert.ok(r.body.includes(strings.mode_not_offered));
    }
    assert.is(alice.mode, 'enforce');
    assert.ok(page.body.includes('id="mode-learn"'));
    // The service has the last word: its refusal is shown as it says it, escaped.
    service.failWith = new PortalRefusal('<b>not now</b>');
    const refused = await b.post('/cidlock/devices/rename', { csrf, id: '0123456789ab', label: 'x' });
    service.failWith = null;
    assert.is(refused.status, 400);
    assert.ok(refused.body.includes('&lt;b&gt;not now&lt;/b&gt;'));
    assert.is(service.changes.length, before);
    const out = await b.post('/cidlock/signout', { csrf });
    assert.is(out.status, 200);
    assert.match([out.headers['set-cookie'] ?? []].flat()[0]!, /^__Host-cidlock-session=; Path=\/; Max-Age=0;/);
    const after = await b.get('/cidlock/devices');
    assert.is(after.status, 303);
    assert.is(after.headers.location, URL_BASE);
  } finally {
    await close();
  }
});

test('a signed-out session cookie replayed is refused', async () => {
  const { service, port, close } = await start();
  try {
    const { b, csrf } = await signIn(port, service);
    const cookie = `__Host-cidlock-session=${b.jar.get('__Host-cidlock-session')}`;
    await b.post('/cidlock/signout', { csrf });
    assert.is((await send(port, 'GET', '/cidlock/devices', undefined, { cookie })).status, 303);
    const r = await send(port, 'POST', '/cidlock/devices/remove', new URLSearchParams({ csrf, id: '0123456789ab' }).toString(), { cookie, 'content-type': 'application/x-www-form-urlencoded' });
    assert.is(r.status, 403);
    assert.is(service.accounts.get(ALICE)!.devices.length, 2);
  } finally {
    await close();
  }
});

test('abuse: expired, altered and other-purpose links get one neutral page', async () => {
  let clock = Date.parse('2025-03-01T12:00:00Z');
  const { service, port, close } = await start({}, () => clock);
  try {
    const b = browser(port);
    const home = await b.get('/');
    const mail = service.nextMail();
    await b.post('/signin', { csrf: field(home.body, 'csrf'), address: ALICE });
    const { link } = await mail;
    const path = new URL(link).pathname;
    const token = path.slice('/cidlock/s/'.length);
    const confirm = await b.get(path);
    const csrf = field(confirm.body, 'csrf');
    const neutral = (await b.get('/s/nonsense')).body;
    const tries: Array<[string, Reply]> = [];
    // One character changed, in the claims and in the signature (also the last one, whose spare bits base64 ignores).
    const mid = token.length >> 1;
    for (const altered of [token.slice(0, 5) + (token[5] === 'A' ? 'B' : 'A') + token.slice(6), token.slice(0, mid) + (token[mid] === 'A' ? 'B' : 'A') + token.slice(mid + 1), token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A')]) {
      tries.push(['altered GET', await b.get(`/s/${altered}`)]);
      tries.push(['altered POST', await b.post('/s', { token: altered, csrf })]);
    }
    const bobP = service.accounts.get(BOB)!.pending[0]!;
    const approve = approveToken(BOB, bobP, clock + 3_600_000);
    tries.push(['approve token as sign-in link', await b.get(`/s/${approve}`)]);
    tries.push(['sign-in token as approval link', await b.get(`/approve/${token}`)]);
    tries.push(['session token as sign-in link', await b.get(`/s/${signToken(FAKE_KEY, { purpose: 'session', user: ALICE, subject: 'x', exp: clock + 60_000 })}`)]);
    tries.push(['another key', await b.get(`/s/${signToken(Buffer.alloc(32, 9), { purpose: 'signin', user: ALICE, subject: 'x', exp: clock + 60_000 })}`)]);
    clock += DEFAULT_LINK_TTL_MS + 1;
    tries.push(['expired GET', await b.get(path)]);
    tries.push(['expired POST', await b.post('/s', { token, csrf })]);
    tries.push(['expired approval', await b.get(`/approve/${approveToken(BOB, bobP, clock - 1)}`)]);
    for (const [what, r] of tries) {
      assert.is(r.status, 403, what);
      assert.is(r.body, neutral, `${what}: not the one neutral page`);
    }
    assert.is(b.jar.has('__Host-cidlock-session'), false, 'no session from any of them');
    assert.is(service.changes.length, 0);
  } finally {
    await close();
  }
});

test('abuse: CSRF missing, from another session or another account, cross-site requests: 403 and nothing changed', async () => {
  const { service, port, close } = await start();
  try {
    const alice = await signIn(port, service, ALICE);
    const alice2 = await signIn(port, service, ALICE);
    const bob = await signIn(port, service, BOB);
    const before = JSON.stringify([...service.accounts]);
    const attempts: Array<[string, Promise<Reply>]> = [
      ['no csrf', alice.b.post('/cidlock/devices/remove', { id: '0123456789ab' })],
      ['empty csrf', alice.b.post('/cidlock/devices/remove', { csrf: '', id: '0123456789ab' })],
      ['another session of the same account', alice.b.post('/cidlock/devices/remove', { csrf: alice2.csrf, id: '0123456789ab' })],
      ["another account's csrf", alice.b.post('/cidlock/devices/remove', { csrf: bob.csrf, id: '0123456789ab' })],
      ["alice's csrf in bob's session", bob.b.post('/cidlock/devices/remove', { csrf: alice.csrf, id: 'bbbbbbbbbbbb' })],
      ['a session cookie as csrf', alice.b.post('/cidlock/lock', { csrf: alice.b.jar.get('__Host-cidlock-session')!, mode: 'enforce' })],
      ['cross-site origin', alice.b.post('/cidlock/lock', { csrf: alice.csrf, mode: 'enforce' }, { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' })],
      ['cross-site origin only', alice.b.post('/cidlock/lock', { csrf: alice.csrf, mode: 'enforce' }, { origin: 'https://evil.example', 'sec-fetch-site': '' })],
      ['same-site subdomain', alice.b.post('/cidlock/signout', { csrf: alice.csrf }, { origin: 'https://webmail.example.org', 'sec-fetch-site': 'same-site' })],
      ['no session', browser(port).post('/cidlock/devices/remove', { csrf: alice.csrf, id: '0123456789ab' })],
      ['sign-in without csrf', browser(port).post('/cidlock/signin', { address: ALICE })],
    ];
    const pending = service.accounts.get(ALICE)!.pending[0]!;
    const token = approveToken(ALICE, pending);
    const show = await browser(port).get(`/approve/${token}`);
    const otherToken = approveToken(BOB, service.accounts.get(BOB)!.pending[0]!);
    const otherCsrf = field((await browser(port).get(`/approve/${otherToken}`)).body, 'csrf');
    attempts.push(['approval without csrf', browser(port).post('/approve', { token, answer: 'approve' })]);
    attempts.push(["approval with another link's csrf", browser(port).post('/approve', { token, csrf: otherCsrf, answer: 'approve' })]);
    attempts.push(['approval with a session csrf', browser(port).post('/approve', { token, csrf: alice.csrf, answer: 'approve' })]);
    attempts.push(['approval cross-site', browser(port).post('/approve', { token, csrf: field(show.body, 'csrf'), answer: 'approve' }, { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' })]);
    for (const [what, r] of attempts) assert.is((await r).status, 403, what);
    await settle();
    assert.is(JSON.stringify([...service.accounts]), before, 'something changed');
    assert.is(service.changes.length, 0);
    assert.is((await alice.b.get('/cidlock/devices')).status, 200, 'the refused sign-out did not sign out');
  } finally {
    await close();
  }
});

test('abuse: /signin answers the same for any address, and the rate limits send no mail but the same page', async () => {
  const { service, port, close, logs } = await start({ signInPerHour: { address: 2, account: 3, total: 5 } });
  try {
    const b = browser(port);
    const csrf = field((await b.get('/')).body, 'csrf');
    const ask = (address: string) => b.post('/signin', { csrf, address });
    const known = await ask(ALICE);
    for (const address of ['nobody@example.org', 'nobody', 'not an address', 'x'.repeat(400), '']) {
      const r = await ask(address);
      assert.is(r.status, known.status, address);
      assert.is(r.body, known.body, `${address}: another answer than for an account`);
      assert.equal(r.headers['set-cookie'], known.headers['set-cookie']);
    }
    await settle();
    assert.equal(service.mails.map((m) => m.user), [ALICE], 'a mail for an address that is no account');
    // Per address: the second mail goes, the third is held back.
    assert.is((await ask(ALICE)).body, known.body);
    assert.is((await ask(ALICE)).body, known.body);
    await settle();
    assert.is(service.mails.length, 2);
    // Per account: another address for the same account counts for it.
    await ask(' alice');
    await ask('Alice');
    await settle();
    assert.is(service.mails.length, 3);
    // In total: bob gets two more, then nobody gets anything.
    await ask(BOB);
    await ask(BOB);
    const last = await ask(BOB.toUpperCase());
    await settle();
    assert.is(service.mails.length, 5);
    assert.is(last.body, known.body);
    const limited = logs.filter((l) => l.signin === 'limited').map((l) => l.limit);
    assert.equal(limited, ['address', 'account', 'total']);
  } finally {
    await close();
  }
});

test('bounds and errors: 413, 400, 415, 404, 405, 503, the stylesheet, HEAD; every answer carries the security headers', async () => {
  const { service, port, close, logs } = await start();
  try {
    const b = browser(port);
    const csrf = field((await b.get('/')).body, 'csrf');
    const big = await b.post('/signin', { csrf, address: 'a'.repeat(9 * 1024) });
    assert.is(big.status, 413);
    const many = await b.post('/signin', Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`f${i}`, '1'])));
    assert.is(many.status, 400);
    const twice = await send(port, 'POST', '/signin', 'address=a&address=b', { 'content-type': 'application/x-www-form-urlencoded' });
    assertSecurityHeaders(twice, 'field twice');
    assert.is(twice.status, 400);
    const json = await send(port, 'POST', '/signin', '{"address":"a"}', { 'content-type': 'application/json' });
    assertSecurityHeaders(json, 'json');
    assert.is(json.status, 415);
    assert.is((await b.get('/nowhere')).status, 404);
    assert.is((await b.get(`/cidlock/approv/${'T'.repeat(40)}`)).status, 404);
    assert.ok(logs.some((l) => l.status === 404 && l.route === '(unknown)'));
    assert.not.ok(JSON.stringify(logs).includes('T'.repeat(40)), 'an unknown path, maybe a mistyped link, reached the log');
    assert.is((await b.get('/cidlock/s')).status, 405);
    assert.is((await b.get('/signin')).status, 405);
    const put = await send(port, 'PUT', '/cidlock/', '');
    assertSecurityHeaders(put, 'PUT');
    assert.is(put.status, 405);
    assert.is(put.headers.allow, 'GET, HEAD, POST');
    const css = await b.get('/cidlock/portal.css');
    assert.is(css.status, 200);
    assert.match(String(css.headers['content-type']), /^text\/css/);
    const head = await send(port, 'HEAD', '/cidlock/');
    assertSecurityHeaders(head, 'HEAD');
    assert.is(head.status, 200);
    assert.is(head.body, '');
    const token = approveToken(ALICE, service.accounts.get(ALICE)!.pending[0]!);
    service.failWith = new Error('registry locked');
    const down = await b.get(`/approve/${token}`);
    service.failWith = null;
    assert.is(down.status, 503);
    assert.ok(down.body.includes(strings.unavailable_title));
    const err = logs.find((l) => l.event === 'portal_service_error');
    assert.ok(err !== undefined && err.error === 'registry locked');
    assert.not.ok(JSON.stringify(logs).includes(token), 'a token reached the log');
    assert.is((await b.get(`/approve/${token}`)).status, 200, 'up again');
  } finally {
    await close();
  }
});

test('plain http base without a prefix: cookies without __Host- or Secure, scoped to the base', async () => {
  const { service, port, close } = await start({ url: 'http://127.0.0.1:1/portal/' });
  try {
    const b = browser(port);
    const home = await b.get('/portal/');
    assert.ok(home.body.includes('action="/portal/signin"'));
    assert.match([home.headers['set-cookie'] ?? []].flat()[0]!, /^cidlock-pre=[^;]+; Path=\/portal\/; Max-Age=\d+; HttpOnly; SameSite=Strict$/);
    const mail = service.nextMail();
    await b.post('/signin', { csrf: field(home.body, 'csrf'), address: BOB }, { origin: 'http://127.0.0.1:1' });
    assert.match((await mail).link, /^http:\/\/127\.0\.0\.1:1\/portal\/s\//);
  } finally {
    await close();
  }
});

test('the lock form offers only the modes both the service and the portal settings allow', async () => {
  const { service, port, close } = await start({ userModes: ['enforce'] });
  try {
    const { b, devices, csrf } = await signIn(port, service);
    assert.ok(devices.body.includes('id="mode-enforce"'));
    assert.not.ok(devices.body.includes('id="mode-learn"'));
    assert.is((await b.post('/cidlock/lock', { csrf, mode: 'learn' })).status, 400);
    assert.is(service.accounts.get(ALICE)!.mode, 'learn');
  } finally {
    await close();
  }
});

test.run();
