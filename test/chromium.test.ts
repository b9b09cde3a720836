// The test browser driver against real headless Chromium and a real local HTTP server.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { launchChromium, requireChromium, type Browser } from './helpers/chromium.js';
import { tempDir } from './helpers/tmp.js';

const ready = requireChromium('chromium test driver');
const check = ready ? test : test.skip;

const STRICT_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'";
const FORM = `<!doctype html><html lang="en"><head><title>Sign in</title></head><body>
<form method="post" action="/submit">
  <label for="name">Your name</label> <input id="name" name="name" type="text" value="old">
  <button type="submit">Send</button>
</form>
<button id="idle" type="button">Nothing</button>
</body></html>`;
const LONG = `<!doctype html><html lang="en"><head><title>Long</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="margin:0"><div style="height:3000px">tall</div></body></html>`;

const posted: string[] = [];
function route(req: IncomingMessage, res: ServerResponse, body: string): void {
  const page = (html: string, headers: Record<string, string | string[]> = {}): void => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': STRICT_CSP, ...headers });
    res.end(html);
  };
  if (req.method === 'GET' && req.url === '/form') return page(FORM);
  if (req.method === 'POST' && req.url === '/submit') {
    const name = new URLSearchParams(body).get('name') ?? '';
    posted.push(name);
    return page(`<!doctype html><title>Done</title><p id="greeting">Hello, ${name.replace(/[<&]/g, '')}</p>`, {
      'set-cookie': ['session=s3cret; Path=/; HttpOnly; SameSite=Strict'], 'x-result': 'ok',
    });
  }
  if (req.url === '/inline-script') return page('<!doctype html><title>CSP</title><script>document.title = "ran"</script><p>hi</p>');
  if (req.url === '/clean') return page('<!doctype html><title>Clean</title><p>hi</p>');
  if (req.url === '/long') return page(LONG);
  res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
}

const server = createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (d: string) => (body += d));
  req.on('end', () => route(req, res, body));
});
let base = '';
let browser: Browser;

if (ready) {
  test.before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    browser = await launchChromium();
  });
  test.after(async () => {
    await browser?.close();
    await new Promise((resolve) => server.close(resolve));
  });
}

check('a form is filled and submitted with real input events; the POST reaches the server and its response is returned', async () => {
  const page = await browser.newPage();
  const first = await page.goto(`${base}/form`);
  assert.is(first.status, 200);
  assert.is(first.headers['content-security-policy'], STRICT_CSP);
  assert.ok(await page.exists('#name'));
  assert.not.ok(await page.exists('#missing'));

  await page.fill('#name', 'Alice <b>');
  assert.is(await page.evaluate<string>('document.querySelector("#name").value'), 'Alice <b>', 'fill replaces what the field held');
  assert.is(await page.click('#idle'), undefined, 'a button that submits nothing navigates nowhere');

  const done = await page.click('button[type=submit]');
  assert.ok(done, 'the submit navigated');
  assert.is(done.status, 200);
  assert.is(done.headers['x-result'], 'ok');
  assert.match(done.headers['set-cookie'] ?? '', /HttpOnly; SameSite=Strict/);
  assert.equal(posted, ['Alice <b>']);
  assert.is(await page.url(), `${base}/submit`);
  assert.is(await page.text('#greeting'), 'Hello, Alice b>');
  assert.match(await page.html(), /<p id="greeting">/);
  assert.equal(page.problems(), []);

  const session = (await page.cookies()).find((c) => c.name === 'session');
  assert.equal(session, { name: 'session', value: 's3cret', httpOnly: true, secure: false, sameSite: 'Strict' });
  assert.is(await page.evaluate<string>('document.cookie'), '', 'HttpOnly keeps the cookie from scripts');
  await page.close();
});

check('problems() reports a CSP violation by an inline script and nothing on a clean page', async () => {
  const bad = await browser.newPage();
  await bad.goto(`${base}/inline-script`);
  assert.is(await bad.evaluate<string>('document.title'), 'CSP', 'the inline script did not run');
  const problems = bad.problems();
  assert.ok(problems.some((p) => /inline script.*violates the following Content Security Policy directive/.test(p)), problems.join('\n'));
  await bad.close();

  const clean = await browser.newPage();
  await clean.goto(`${base}/clean`);
  assert.equal(clean.problems(), []);
  await clean.evaluate('console.error("boom")');
  await clean.evaluate('setTimeout(() => { throw new Error("late") })');
  await clean.evaluate('new Promise((resolve) => setTimeout(resolve, 50))');
  assert.equal(clean.problems().map((p) => p.split('\n')[0]), ['console.error: boom', 'exception: Error: late']);
  await clean.close();
});

check('evaluate() throws the page exception; goto() rejects an unreachable address', async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/clean`);
  assert.is(await page.evaluate<number>('Promise.resolve(6 * 7)'), 42);
  await rejects(page.evaluate('null.x'), /TypeError/);
  await rejects(page.text('#missing'), /no element matches #missing/);
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  await rejects(page.goto(`http://127.0.0.1:${port}/`), /ERR_CONNECTION_REFUSED/);
  await page.close();
});

check('a mobile viewport screenshot is a PNG as wide as the CSS width times the device scale factor', async () => {
  const page = await browser.newPage();
  await page.setViewport(390, 844, { mobile: true, deviceScaleFactor: 2 });
  await page.goto(`${base}/long`);
  assert.is(await page.evaluate<number>('innerWidth'), 390);
  const dir = tempDir('cidlock-shot-');
  await page.screenshot(join(dir, 'view.png'));
  assert.equal(pngSize(readFileSync(join(dir, 'view.png'))), { width: 780, height: 1688 });
  await page.screenshot(join(dir, 'full.png'), { fullPage: true });
  assert.equal(pngSize(readFileSync(join(dir, 'full.png'))), { width: 780, height: 6000 });
  await page.close();
});

check('accessibility() names the textbox by its label and the button by its text', async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/form`);
  const ax = await page.accessibility();
  assert.ok(ax.some((n) => n.role === 'textbox' && n.name === 'Your name'), JSON.stringify(ax));
  assert.ok(ax.some((n) => n.role === 'button' && n.name === 'Send'), JSON.stringify(ax));
  await page.close();
});

check('a crashed page rejects the calls it still owes and any later one; the browser goes on', async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/clean`);
  const waiting = page.evaluate('new Promise(() => {})');
  await rejects(page.send('Page.crash'), /crashed/);
  await rejects(waiting, /Runtime.evaluate: the page crashed/);
  await rejects(page.url(), /the page crashed/);
  await rejects(page.goto(`${base}/clean`), /the page crashed/);
  await page.close();
  const next = await browser.newPage();
  assert.is((await next.goto(`${base}/clean`)).status, 200);
  await next.close();
});

check('a browser that dies rejects the calls still waiting, and close() leaves no process or profile behind', async () => {
  const b = await launchChromium();
  const page = await b.newPage();
  const waiting = page.evaluate('new Promise(() => {})');
  process.kill(b.pid, 'SIGKILL');
  await rejects(waiting, /Runtime.evaluate: chromium exited \(SIGKILL\)/);
  await rejects(page.url(), /chromium exited/);
  await b.close();
  assert.equal(processesUsing(b.profile), []);
  assert.not.ok(existsSync(b.profile));
});

/** Live processes (not zombies waiting for init) that name the profile folder: renderers, crashpad. */
function processesUsing(profile: string): string[] {
  return readdirSync('/proc').filter((pid) => {
    try {
      return /^\d+$/.test(pid) && readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(profile) && !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'latin1'));
    } catch {
      return false;
    }
  });
}

async function rejects(p: Promise<unknown>, message: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.match((e as Error).message, message);
    return;
  }
  assert.unreachable(`resolved; expected a rejection matching ${message}`);
}

function pngSize(png: Buffer): { width: number; height: number } {
  assert.is(png.subarray(0, 8).toString('hex'), '89504e470d0a1a0a', 'PNG signature');
  assert.is(png.subarray(12, 16).toString('latin1'), 'IHDR');
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

test.run();
