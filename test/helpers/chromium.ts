// A small Chrome DevTools Protocol driver for browser tests, with no dependencies: headless
// Chromium over --remote-debugging-pipe (NUL-terminated JSON on fds 3 and 4), one flat session per
// page. Every call and wait has a deadline; the browser is killed when the test process exits.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { tempDir } from './tmp.js';

/** Debian's binary itself: its /usr/bin/chromium wrapper adds extension flags and fails a shell test on hosts with two /dev/shm mounts. */
const CANDIDATES = ['/usr/lib/chromium/chromium', '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'];
export const CHROMIUM: string | null = [process.env.CHROMIUM, ...CANDIDATES].find((p) => p && existsSync(p)) ?? null;

const CALL_TIMEOUT_MS = 15_000;
const NAVIGATION_TIMEOUT_MS = 15_000;
/** How long a click may take to start a navigation before we call it a click that navigates nowhere. */
const CLICK_NAVIGATION_START_MS = 500;
const CLOSE_GRACE_MS = 5_000;
/** A full-page PNG in base64 is the largest message we expect; anything bigger is a runaway. */
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
const STDERR_TAIL_BYTES = 8 * 1024;

const FLAGS = [
  '--headless', '--remote-debugging-pipe', '--no-sandbox', '--no-first-run', '--no-default-browser-check',
  '--disable-gpu', '--disable-extensions', '--disable-background-networking', '--disable-dev-shm-usage',
  '--disable-component-update', '--disable-sync', '--disable-default-apps',
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows',
  '--disable-features=Translate,MediaRouter,OptimizationHints', '--password-store=basic', '--use-mock-keychain',
  '--mute-audio', '--hide-scrollbars',
];

/** False, with the skip notice on stderr, when no Chromium is installed. */
export function requireChromium(testName: string): boolean {
  if (CHROMIUM !== null) return true;
  process.stderr.write(`\n*** SKIPPED: "${testName}": chromium not found (apt-get install chromium, or set CHROMIUM) ***\n`);
  return false;
}

/** The main document's response; header names in lower case, repeated headers (Set-Cookie) joined by newlines. */
export interface DocumentResponse { status: number; headers: Record<string, string> }
export interface Cookie { name: string; value: string; httpOnly: boolean; secure: boolean; sameSite?: string }
export interface AXNode { role: string; name: string }
/** CDP parameters and results, loosely typed: the protocol is large and the driver reads few fields. */
export type Params = Record<string, any>;

export interface Page {
  goto(url: string): Promise<DocumentResponse>;
  /** A real mouse click; the new document's response when the click navigated, else undefined. */
  click(selector: string): Promise<DocumentResponse | undefined>;
  /** Focuses the field, selects what it holds and types over it. */
  fill(selector: string, value: string): Promise<void>;
  text(selector?: string): Promise<string>;
  html(): Promise<string>;
  url(): Promise<string>;
  exists(selector: string): Promise<boolean>;
  evaluate<T = unknown>(expression: string): Promise<T>;
  setViewport(width: number, height: number, o?: { mobile?: boolean; deviceScaleFactor?: number }): Promise<void>;
  screenshot(file: string, o?: { fullPage?: boolean }): Promise<void>;
  /** Console errors, uncaught exceptions and browser log errors (CSP violations among them) since the page opened. */
  problems(): string[];
  accessibility(): Promise<AXNode[]>;
  cookies(): Promise<Cookie[]>;
  /** Any other CDP command, on this page's session. */
  send(method: string, params?: Params): Promise<Params>;
  close(): Promise<void>;
}

export interface Browser {
  version: string;
  pid: number;
  /** The temporary profile folder, removed by close(). */
  profile: string;
  newPage(): Promise<Page>;
  /** Ends the browser (SIGTERM, then SIGKILL) and removes its profile; safe after a crash. */
  close(): Promise<void>;
}

interface Waiter { check: () => boolean; resolve: (met: boolean) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
interface Call { method: string; sessionId: string; resolve: (r: Params) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
type Listener = (method: string, params: Params) => void;

/** Browsers still running, by their profile folder: killed, whatever happened, when the test process exits. */
const running = new Map<ChildProcess, string>();
process.on('exit', () => {
  for (const [p, profile] of running) {
    p.kill('SIGKILL');
    killCrashpad(profile);
    rmSync(profile, { recursive: true, force: true });
  }
});

/**
 * Crashpad's handlers detach (their parent is init) and outlive the browser by a second or so, and
 * --disable-crashpad-for-testing crashes this build. They are ours by their database in our profile.
 */
function killCrashpad(profile: string): void {
  for (const pid of readdirSync('/proc').filter((f) => /^\d+$/.test(f))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(`--database=${profile}/`)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
}

/** The pipe connection: calls with deadlines, events by session, waits re-checked after every message. */
function connect(proc: ChildProcess, stderrTail: () => string) {
  const out = proc.stdio[3] as Writable;
  const inp = proc.stdio[4] as Readable;
  const pending = new Map<number, Call>();
  const listeners = new Map<string, Listener>();
  const waiters = new Set<Waiter>();
  let nextId = 1;
  let dead: Error | null = null;
  let chunks: Buffer[] = [];
  let buffered = 0;

  const fail = (e: Error, sessionId?: string): void => {
    for (const [id, c] of pending) {
      if (sessionId !== undefined && c.sessionId !== sessionId) continue;
      pending.delete(id);
      clearTimeout(c.timer);
      c.reject(new Error(`${c.method}: ${e.message}`));
    }
  };
  const die = (e: Error): void => {
    if (dead) return;
    dead = e;
    fail(e);
    for (const w of waiters) { clearTimeout(w.timer); w.reject(e); }
    waiters.clear();
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  };
  proc.on('exit', (code, signal) => die(new Error(`chromium exited (${signal ?? code})\n${stderrTail()}`)));
  out.on('error', () => {}); // a write after the browser died: die() already reported it

  const dispatch = (text: string): void => {
    const m = JSON.parse(text) as { id?: number; method?: string; params?: Params; result?: Params; error?: { message: string }; sessionId?: string };
    if (m.id !== undefined) {
      const p = pending.get(m.id);
      if (!p) return;
      pending.delete(m.id);
      clearTimeout(p.timer);
      if (m.error) p.reject(new Error(`${p.method}: ${m.error.message}`));
      else p.resolve(m.result ?? {});
    } else if (m.method) {
      listeners.get(m.sessionId ?? '')?.(m.method, m.params ?? {});
    }
    for (const w of waiters) if (w.check()) { waiters.delete(w); clearTimeout(w.timer); w.resolve(true); }
  };
  inp.on('data', (d: Buffer) => {
    let from = 0;
    for (let nul = d.indexOf(0); nul !== -1; nul = d.indexOf(0, from)) {
      chunks.push(d.subarray(from, nul));
      const text = Buffer.concat(chunks).toString('utf8');
      chunks = [];
      buffered = 0;
      from = nul + 1;
      try { dispatch(text); } catch (e) { die(new Error(`bad CDP message: ${(e as Error).message}`)); return; }
    }
    chunks.push(d.subarray(from));
    buffered += d.length - from;
    if (buffered > MAX_MESSAGE_BYTES) die(new Error(`a CDP message over ${MAX_MESSAGE_BYTES} bytes`));
  });

  return {
    send(method: string, params: Params = {}, sessionId = ''): Promise<Params> {
      if (dead) return Promise.reject(new Error(`${method}: ${dead.message}`));
      const id = nextId++;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { pending.delete(id); reject(new Error(`${method}: no answer within ${CALL_TIMEOUT_MS} ms`)); }, CALL_TIMEOUT_MS);
        pending.set(id, { method, sessionId, resolve, reject, timer });
        out.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0');
      });
    },
    /** Rejects the calls a page (session) still waits for: it crashed, and will not answer. */
    fail: (sessionId: string, e: Error): void => fail(e, sessionId),
    /** True once check() holds, checked now and after every incoming message; false at the deadline. */
    until(check: () => boolean, timeoutMs: number): Promise<boolean> {
      if (dead) return Promise.reject(dead);
      if (check()) return Promise.resolve(true);
      return new Promise((resolve, reject) => {
        const w: Waiter = { check, resolve, reject, timer: setTimeout(() => { waiters.delete(w); resolve(false); }, timeoutMs) };
        waiters.add(w);
      });
    },
    listen(sessionId: string, l: Listener | undefined): void {
      if (l) listeners.set(sessionId, l); else listeners.delete(sessionId);
    },
  };
}
type Connection = ReturnType<typeof connect>;

export async function launchChromium(o: { args?: string[] } = {}): Promise<Browser> {
  if (CHROMIUM === null) throw new Error('chromium not found');
  const profile = tempDir('cidlock-chromium-');
  const proc = spawn(CHROMIUM, [...FLAGS, `--user-data-dir=${profile}`, ...(o.args ?? []), 'about:blank'], {
    // Crashpad keeps its database under XDG_CONFIG_HOME: in the profile, not in ~/.config/chromium.
    stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'], env: { ...process.env, XDG_CONFIG_HOME: profile },
  });
  running.set(proc, profile);
  const exited = new Promise<void>((resolve) => proc.on('exit', () => { running.delete(proc); resolve(); }));
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-STDERR_TAIL_BYTES); });
  proc.on('error', () => {}); // a spawn failure also ends in 'exit' for the connection to report
  const cdp = connect(proc, () => stderr);
  const { product } = await cdp.send('Browser.getVersion');
  return {
    version: String(product),
    pid: proc.pid ?? 0,
    profile,
    newPage: () => openPage(cdp),
    async close() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), CLOSE_GRACE_MS);
      await exited;
      clearTimeout(t);
      killCrashpad(profile);
      rmSync(profile, { recursive: true, force: true, maxRetries: 3 });
    },
  };
}

async function openPage(cdp: Connection): Promise<Page> {
  const { targetId } = await cdp.send('Target.createTarget', { url: 'about:blank' });
  const { sessionId } = await cdp.send('Target.attachToTarget', { targetId, flatten: true });
  const send = (method: string, params?: Params): Promise<Params> =>
    s.crashed ? Promise.reject(new Error(`${method}: the page crashed`)) : cdp.send(method, params, sessionId);
  const s = {
    mainFrame: '', loader: '', loaded: new Set<string>(), starts: 0, stops: 0, crashed: false,
    responses: new Map<string, { requestId: string; status: number; headers: Record<string, string> }>(),
    rawHeaders: new Map<string, Record<string, string>>(), problems: [] as string[],
  };
  /** The main document's response by navigation (loader) id, with the raw headers when Chromium sent them. */
  const response = (loaderId: string): DocumentResponse | undefined => {
    const r = s.responses.get(loaderId);
    const headers = Object.entries({ ...r?.headers, ...s.rawHeaders.get(r?.requestId ?? '') }).map(([k, v]) => [k.toLowerCase(), v]);
    return r && { status: r.status, headers: Object.fromEntries(headers) };
  };
  cdp.listen(sessionId, (method, p) => {
    switch (method) {
      case 'Page.frameStartedLoading': if (p.frameId === s.mainFrame) s.starts++; break;
      case 'Page.frameStoppedLoading': if (p.frameId === s.mainFrame) s.stops++; break;
      case 'Page.lifecycleEvent':
        if (p.frameId !== s.mainFrame) break;
        if (p.name === 'init') s.loader = p.loaderId;
        if (p.name === 'load') s.loaded.add(p.loaderId);
        break;
      case 'Network.responseReceived':
        if (p.type === 'Document' && p.frameId === s.mainFrame) s.responses.set(p.loaderId, { requestId: p.requestId, status: p.response.status, headers: p.response.headers });
        break;
      // The raw headers: responseReceived leaves out Set-Cookie. A redirect's hop comes first, so the last one is the final response's.
      case 'Network.responseReceivedExtraInfo': s.rawHeaders.set(p.requestId, p.headers); break;
      case 'Runtime.consoleAPICalled':
        if (p.type === 'error' || p.type === 'assert') s.problems.push(`console.${p.type}: ${p.args.map((a: Params) => a.value ?? a.description).join(' ')}`);
        break;
      case 'Runtime.exceptionThrown': s.problems.push(`exception: ${p.exceptionDetails.exception?.description ?? p.exceptionDetails.text}`); break;
      case 'Log.entryAdded': if (p.entry.level === 'error') s.problems.push(`${p.entry.source}: ${p.entry.text}`); break;
      case 'Inspector.targetCrashed': s.crashed = true; cdp.fail(sessionId, new Error('the page crashed')); break;
    }
  });
  for (const domain of ['Page', 'Network', 'Runtime', 'Log']) await send(`${domain}.enable`);
  await send('Page.setLifecycleEventsEnabled', { enabled: true });
  s.mainFrame = (await send('Page.getFrameTree')).frameTree.frame.id;

  /** Waits for a navigation to end as `done` tells, or for the page to crash. */
  const navigated = async (what: string, done: () => boolean, timeoutMs = NAVIGATION_TIMEOUT_MS): Promise<boolean> => {
    const met = await cdp.until(() => s.crashed || done(), timeoutMs);
    if (s.crashed) throw new Error(`${what}: the page crashed`);
    return met;
  };
  const evaluate = async <T>(expression: string): Promise<T> => {
    const r = await send('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true });
    if (r.exceptionDetails) throw new Error(`evaluate ${expression.slice(0, 80)}: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value as T;
  };
  /** Runs `body` with `el` bound to the selector's element; throws when there is none. */
  const onElement = <T>(selector: string, body: string): Promise<T> =>
    evaluate<T>(`(() => { const el = document.querySelector(${JSON.stringify(selector)}); if (!el) throw new Error('no element matches ' + ${JSON.stringify(selector)}); ${body} })()`);

  return {
    async goto(url) {
      const nav = await send('Page.navigate', { url });
      if (nav.errorText) throw new Error(`goto ${url}: ${nav.errorText}`);
      if (!await navigated(`goto ${url}`, () => s.loaded.has(nav.loaderId))) throw new Error(`goto ${url}: no load event within ${NAVIGATION_TIMEOUT_MS} ms`);
      const r = response(nav.loaderId);
      if (!r) throw new Error(`goto ${url}: no document response`);
      return r;
    },
    async click(selector) {
      const box = await onElement<{ x: number; y: number }>(selector, `el.scrollIntoView({ block: 'center', inline: 'center' });
        const r = el.getBoundingClientRect();
        if (r.width === 0 || r.height === 0) throw new Error('not visible: ' + ${JSON.stringify(selector)});
        return { x: r.left + r.width / 2, y: r.top + r.height / 2 };`);
      const [before, starts, stops] = [s.loader, s.starts, s.stops];
      await send('Input.dispatchMouseEvent', { type: 'mouseMoved', ...box });
      await send('Input.dispatchMouseEvent', { type: 'mousePressed', button: 'left', clickCount: 1, ...box });
      await send('Input.dispatchMouseEvent', { type: 'mouseReleased', button: 'left', clickCount: 1, ...box });
      const what = `click ${selector}`;
      if (!await navigated(what, () => s.starts > starts, CLICK_NAVIGATION_START_MS)) return undefined;
      // A navigation that commits nothing (204, a download) stops loading on the old document.
      const ended = () => (s.loader !== before && s.loaded.has(s.loader)) || (s.stops > stops && s.loader === before);
      if (!await navigated(what, ended)) throw new Error(`${what}: the navigation did not end within ${NAVIGATION_TIMEOUT_MS} ms`);
      if (s.loader === before) return undefined;
      const r = response(s.loader);
      if (!r) throw new Error(`${what}: the navigation had no document response`);
      return r;
    },
    async fill(selector, value) {
      await onElement(selector, `el.focus(); if (typeof el.select === 'function') el.select();`);
      await send('Input.insertText', { text: value });
    },
    text: (selector = 'body') => onElement<string>(selector, 'return el.innerText;'),
    html: () => evaluate<string>('document.documentElement.outerHTML'),
    url: () => evaluate<string>('location.href'),
    exists: (selector) => evaluate<boolean>(`document.querySelector(${JSON.stringify(selector)}) !== null`),
    evaluate,
    async setViewport(width, height, o = {}) {
      await send('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: o.deviceScaleFactor ?? 1, mobile: o.mobile ?? false });
      await send('Emulation.setTouchEmulationEnabled', { enabled: o.mobile ?? false });
    },
    async screenshot(file, o = {}) {
      const params: Params = { format: 'png' };
      if (o.fullPage) {
        const { cssContentSize: c } = await send('Page.getLayoutMetrics');
        Object.assign(params, { captureBeyondViewport: true, clip: { x: 0, y: 0, width: c.width, height: c.height, scale: 1 } });
      }
      writeFileSync(file, Buffer.from(String((await send('Page.captureScreenshot', params)).data), 'base64'));
    },
    problems: () => [...s.problems],
    async accessibility() {
      const { nodes } = await send('Accessibility.getFullAXTree');
      return (nodes as Params[]).filter((n) => !n.ignored).map((n) => ({ role: String(n.role?.value ?? ''), name: String(n.name?.value ?? '') }));
    },
    async cookies() {
      const { cookies } = await send('Network.getCookies');
      return (cookies as Params[]).map((c) => ({ name: c.name, value: c.value, httpOnly: c.httpOnly, secure: c.secure, ...(c.sameSite ? { sameSite: c.sameSite } : {}) }));
    },
    send,
    async close() {
      cdp.listen(sessionId, undefined);
      await cdp.send('Target.closeTarget', { targetId });
    },
  };
}
