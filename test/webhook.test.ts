import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createWebhook, signature, verifySignature, type WebhookOptions } from '../src/alerts/webhook.js';
import { createMetrics } from '../src/core/metrics.js';
import { createOutputs } from '../src/daemon/outputs.js';
import { rulesFrom } from './helpers/tmp.js';

const SECRET = 'test-secret-0123456789abcdef';
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

interface Hit {
  n: number;
  method: string;
  url: string;
  body: string;
  headers: IncomingHttpHeaders;
  json: Record<string, unknown>;
  res: ServerResponse;
}

/** A real receiver on 127.0.0.1:0. `handle` answers (or not) each request; unanswered ones are cut at close. */
async function receiver(handle: (hit: Hit) => void) {
  const hits: Hit[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const hit: Hit = { n: hits.length + 1, method: req.method ?? '', url: req.url ?? '', body, headers: req.headers, json: JSON.parse(body) as Record<string, unknown>, res };
      hits.push(hit);
      handle(hit);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    hits,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** A port nothing listens on (connection refused). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function waitFor(what: string, cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type ErrorInfo = Parameters<NonNullable<WebhookOptions['onError']>>[0];

test('signature: sha256=HMAC-SHA256(secret, "timestamp.body") in hex', () => {
  // Independent vector (computed with `openssl dgst -sha256 -hmac key` over "1700000000.{}").
  assert.is(signature('key', '1700000000', '{}'), 'sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae');
  assert.match(signature('key', '1', 'x'), /^sha256=[0-9a-f]{64}$/);
  assert.is.not(signature('key', '1', 'x'), signature('key', '2', 'x'));
  assert.is.not(signature('key', '1', 'x'), signature('other', '1', 'x'));
});

test('a delivered event: event fields + id + ts, signed headers that verify', async () => {
  const rx = await receiver((h) => h.res.writeHead(204).end());
  const wh = createWebhook({ url: rx.url, secret: SECRET, now: () => 1_700_000_000_123 });
  try {
    wh.send({ event: 'unknown_device_refused', user: 'alice@example.com', protocol: 'imap', remote: null });
    await waitFor('delivery', () => wh.stats().delivered === 1);
    assert.is(rx.hits.length, 1);
    const hit = rx.hits[0]!;
    assert.is(hit.method, 'POST');
    assert.is(hit.url, '/hook');
    assert.is(hit.json.event, 'unknown_device_refused');
    assert.is(hit.json.user, 'alice@example.com');
    assert.is(hit.json.protocol, 'imap');
    assert.is(hit.json.remote, null);
    assert.match(String(hit.json.id), UUID_RE);
    assert.is(hit.json.ts, '2023-11-14T22:13:20.123Z');
    assert.is(hit.headers['content-type'], 'application/json');
    assert.is(hit.headers['user-agent'], 'cidlock-webhook');
    assert.is(hit.headers['x-cidlock-timestamp'], '1700000000');
    const ts = String(hit.headers['x-cidlock-timestamp']);
    const sig = String(hit.headers['x-cidlock-signature']);
    assert.match(sig, /^sha256=[0-9a-f]{64}$/);
    assert.is(sig, signature(SECRET, ts, hit.body));
    assert.ok(verifySignature(SECRET, ts, hit.body, sig));
    assert.not.ok(verifySignature(SECRET, ts, hit.body.replace('alice', 'mallory'), sig), 'tampered body');
    assert.not.ok(verifySignature('another-secret-0123456789', ts, hit.body, sig), 'wrong secret');
    assert.not.ok(verifySignature(SECRET, '1700000001', hit.body, sig), 'replayed under another timestamp');
    assert.not.ok(verifySignature(SECRET, ts, hit.body, sig.slice(0, -1)), 'truncated header');
    assert.not.ok(verifySignature(SECRET, ts, hit.body, ''), 'empty header');
    assert.not.ok(verifySignature(SECRET, ts, hit.body, sig.toUpperCase()), 'different header');
    assert.equal(wh.stats(), { queued: 0, inFlight: 0, delivered: 1, failed: 0, dropped: 0, retries: 0 });
  } finally {
    await wh.close();
    await rx.close();
  }
});

test('a receiver named localhost is reached on 127.0.0.1 even when ::1 resolves first (Node 18 too)', async () => {
  const rx = await receiver((h) => h.res.writeHead(204).end());
  const wh = createWebhook({ url: rx.url.replace('127.0.0.1', 'localhost'), secret: SECRET, backoffMs: 10, maxAttempts: 1 });
  try {
    wh.send({ event: 'unknown_device_refused', user: 'alice@example.com' });
    await waitFor('delivery', () => wh.stats().delivered + wh.stats().failed === 1);
    assert.equal(wh.stats(), { queued: 0, inFlight: 0, delivered: 1, failed: 0, dropped: 0, retries: 0 });
    assert.is(rx.hits.length, 1);
  } finally {
    await wh.close();
    await rx.close();
  }
});

test('the id cannot be overridden by an event field, and every event gets its own id', async () => {
  const rx = await receiver((h) => h.res.writeHead(200).end('ok'));
  const wh = createWebhook({ url: rx.url, secret: SECRET });
  try {
    wh.send({ event: 'a', id: 'attacker-chosen', ts: 'yesterday' });
    wh.send({ event: 'b' });
    await waitFor('deliveries', () => wh.stats().delivered === 2);
    const ids = rx.hits.map((h) => String(h.json.id));
    for (const id of ids) assert.match(id, UUID_RE);
    assert.is.not(ids[0], ids[1]);
    for (const h of rx.hits) assert.match(String(h.json.ts), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  } finally {
    await wh.close();
    await rx.close();
  }
});

test('500, 429 and 408 are retried with backoff; the id and body stay the same', async () => {
  const statuses = [500, 429, 408, 202];
  const rx = await receiver((h) => h.res.writeHead(statuses[h.n - 1] ?? 500).end('x'));
  const errors: ErrorInfo[] = [];
  const wh = createWebhook({ url: rx.url, secret: SECRET, backoffMs: 20, maxAttempts: 4, onError: (i) => errors.push(i) });
  try {
    wh.send({ event: 'rules_reloaded', rules: '/etc/cidlock/rules.yaml' });
    await waitFor('delivery', () => wh.stats().delivered === 1);
    assert.is(rx.hits.length, 4);
    const first = rx.hits[0]!;
    for (const h of rx.hits) {
      assert.is(h.body, first.body, 'same body on every attempt');
      assert.is(h.json.id, first.json.id);
      assert.ok(verifySignature(SECRET, String(h.headers['x-cidlock-timestamp']), h.body, String(h.headers['x-cidlock-signature'])));
    }
    assert.equal(errors, [
      { event: 'rules_reloaded', attempt: 1, error: 'HTTP 500', final: false },
      { event: 'rules_reloaded', attempt: 2, error: 'HTTP 429', final: false },
      { event: 'rules_reloaded', attempt: 3, error: 'HTTP 408', final: false },
    ]);
    assert.equal(wh.stats(), { queued: 0, inFlight: 0, delivered: 1, failed: 0, dropped: 0, retries: 3 });
  } finally {
    await wh.close();
    await rx.close();
  }
});

test('backoff grows: retry n waits about backoffMs * 2^(n-1)', async () => {
  const times: number[] = [];
  const rx = await receiver((h) => {
    times.push(performance.now());
    h.res.writeHead(h.n < 3 ? 503 : 200).end();
  });
  const wh = createWebhook({ url: rx.url, secret: SECRET, backoffMs: 60 });
  try {
    wh.send({ event: 'x' });
    await waitFor('delivery', () => wh.stats().delivered === 1);
    const [t1, t2, t3] = times as [number, number, number];
    assert.ok(t2 - t1 >= 60 * 0.8 - 5, `first retry after ${t2 - t1} ms`);
    assert.ok(t3 - t2 >= 120 * 0.8 - 5, `second retry after ${t3 - t2} ms`);
    assert.ok(t3 - t2 < 1000, `second retry after ${t3 - t2} ms`);
  } finally {
    await wh.close();
    await rx.close();
  }
});

test('400 is a permanent failure: one request, no retry', async () => {
  const rx = await receiver((h) => h.res.writeHead(400).end('bad'));
  const errors: ErrorInfo[] = [];
  const wh = createWebhook({ url: rx.url, secret: SECRET, backoffMs: 10, onError: (i) => errors.push(i) });
  try {
    wh.send({ event: 'device_registered', user: 'bob' });
    await waitFor('failure', () => wh.stats().failed === 1);
    await sleep(100);
    assert.is(rx.hits.length, 1);
    assert.equal(errors, [{ event: 'device_registered', attempt: 1, error: 'HTTP 400', final: true }]);
    assert.equal(wh.stats(), { queued: 0, inFlight: 0, delivered: 0, failed: 1, dropped: 0, retries: 0 });
  } finally {
    await wh.close();
    await rx.close();
  }
});

test('redirects are never followed', async () => {
  const rx = await receiver((h) => h.res.writeHead(302, { location: '/elsewhere' }).end());
  const errors: ErrorInfo[] = [];
  const wh = createWebhook({ url: rx.url, secret: SECRET, backoffMs: 10, onError: (i) => errors.push(i) });
  try {
    wh.send({ event: 'x' });
    await waitFor('failure', () => wh.stats().failed === 1);
    await sleep(50);
    assert.equal(rx.hits.map((h) => h.url), ['/hook']);
    assert.is(errors[0]?.final, true);
    assert.match(errors[0]?.error ?? '', /302/);
  } finally {
    await wh.close();
    await rx.close();
  }
});

test('a request that times out is retried', async () => {
  const rx = await receiver((h) => {
    if (h.n > 1) h.res.writeHead(200).end();
    // the first request is never answered
  });
  const errors: ErrorInfo[] = [];
  const wh = createWebhook({ url: rx.url, secret: SECRET, timeoutMs: 150, backoffMs: 20, onError: (i) => errors.push(i) });
  try {
    wh.send({ event: 'limit_triggered', rule: 'limits[0]', key: 'address', subject: '192.0.2.1', count: 10, then: 'delay 5s' });
    await waitFor('delivery', () => wh.stats().delivered === 1);
    assert.is(rx.hits.length, 2);
    assert.is(rx.hits[1]!.json.id, rx.hits[0]!.json.id);
    assert.is(errors.length, 1);
    assert.is(errors[0]!.final, false);
    assert.match(errors[0]!.error, /timed out after 150 ms/);
    assert.is(wh.stats().retries, 1);
  } finally {
    await wh.close();
    await rx.close();
  }
});

test('a full queue drops the oldest events; concurrency limits requests in flight', async () => {
  let hold = true;
  const held: Hit[] = [];
  const rx = await receiver((h) => {
    if (hold) held.push(h);
    else h.res.writeHead(204).end();
  });
  const wh = createWebhook({ url: rx.url, secret: SECRET, maxQueue: 3 });
  try {
    wh.send({ event: 'e', seq: 0 });
    wh.send({ event: 'e', seq: 1 });
    await waitFor('two requests held by the slow receiver', () => held.length === 2);
    assert.is(wh.stats().inFlight, 2);
    for (let seq = 2; seq < 12; seq++) wh.send({ event: 'e', seq });
    assert.equal(wh.stats(), { queued: 3, inFlight: 2, delivered: 0, failed: 0, dropped: 7, retries: 0 });
    await sleep(30);
    assert.is(rx.hits.length, 2, 'no third request while two are in flight');
    hold = false;
    for (const h of held) h.res.writeHead(204).end();
    await waitFor('deliveries', () => wh.stats().delivered === 5);
    assert.equal(rx.hits.map((h) => h.json.seq).sort((a, b) => Number(a) - Number(b)), [0, 1, 9, 10, 11]);
    assert.equal(wh.stats(), { queued: 0, inFlight: 0, delivered: 5, failed: 0, dropped: 7, retries: 0 });
  } finally {
    await wh.close();
    await rx.close();
  }
});

test('send() returns at once with the receiver down; the event fails after maxAttempts', async () => {
  const port = await closedPort();
  const errors: ErrorInfo[] = [];
  const wh = createWebhook({ url: `http://127.0.0.1:${port}/hook`, secret: SECRET, maxAttempts: 3, backoffMs: 20, onError: (i) => errors.push(i) });
  try {
    const t0 = performance.now();
    const r = wh.send({ event: 'unknown_device', user: 'alice', attempts: 3, window: '1h', remote: '192.0.2.7' });
    const dt = performance.now() - t0;
    assert.is(r, undefined);
    assert.ok(dt < 50, `send() took ${dt} ms`);
    assert.is(wh.stats().queued, 1);
    await waitFor('final failure', () => wh.stats().failed === 1);
    assert.equal(errors.map((e) => [e.attempt, e.final]), [[1, false], [2, false], [3, true]]);
    for (const e of errors) {
      assert.is(e.event, 'unknown_device');
      assert.match(e.error, /ECONNREFUSED/);
    }
    assert.equal(wh.stats(), { queued: 0, inFlight: 0, delivered: 0, failed: 1, dropped: 0, retries: 2 });
  } finally {
    await wh.close();
  }
});

test('close() resolves promptly with pending retries; waiting events are dropped and counted', async () => {
  const rx = await receiver((h) => h.res.writeHead(500).end());
  const errors: ErrorInfo[] = [];
  const wh = createWebhook({ url: rx.url, secret: SECRET, backoffMs: 10_000, concurrency: 1, onError: (i) => errors.push(i) });
  try {
    wh.send({ event: 'a' });
    wh.send({ event: 'b' });
    wh.send({ event: 'c' });
    await waitFor('first attempt failed', () => errors.length === 1);
    assert.equal(wh.stats(), { queued: 3, inFlight: 0, delivered: 0, failed: 0, dropped: 0, retries: 0 });
    const t0 = performance.now();
    await wh.close();
    const dt = performance.now() - t0;
    assert.ok(dt < 250, `close() took ${dt} ms`);
    assert.equal(wh.stats(), { queued: 0, inFlight: 0, delivered: 0, failed: 0, dropped: 3, retries: 0 });
    wh.send({ event: 'd' });
    await sleep(20);
    assert.is(wh.stats().dropped, 4, 'send() after close() drops');
    assert.is(rx.hits.length, 1);
    assert.is(wh.close(), wh.close(), 'close() is idempotent');
  } finally {
    await wh.close();
    await rx.close();
  }
});

test('close() waits for an in-flight delivery to finish', async () => {
  const rx = await receiver((h) => setTimeout(() => h.res.writeHead(204).end(), 80));
  const wh = createWebhook({ url: rx.url, secret: SECRET });
  try {
    wh.send({ event: 'a' });
    await waitFor('request received', () => wh.stats().inFlight === 1 && rx.hits.length === 1);
    await wh.close();
    assert.equal(wh.stats(), { queued: 0, inFlight: 0, delivered: 1, failed: 0, dropped: 0, retries: 0 });
  } finally {
    await rx.close();
  }
});

test('close() waits at most timeoutMs for a receiver that never answers, and does not retry', async () => {
  const rx = await receiver(() => {});
  const errors: ErrorInfo[] = [];
  const wh = createWebhook({ url: rx.url, secret: SECRET, timeoutMs: 300, backoffMs: 10, onError: (i) => errors.push(i) });
  try {
    wh.send({ event: 'a' });
    await waitFor('request received', () => rx.hits.length === 1);
    const t0 = performance.now();
    await wh.close();
    const dt = performance.now() - t0;
    assert.ok(dt < 500, `close() took ${dt} ms`);
    assert.equal(wh.stats(), { queued: 0, inFlight: 0, delivered: 0, failed: 1, dropped: 0, retries: 0 });
    assert.equal(errors.map((e) => [e.attempt, e.final]), [[1, true]]);
    await sleep(30);
    assert.is(rx.hits.length, 1);
  } finally {
    await rx.close();
  }
});

test('the response body is bounded: a receiver streaming an endless 2xx body does not hold the slot', async () => {
  const rx = await receiver((h) => {
    h.res.writeHead(200, { 'content-type': 'text/plain' });
    h.res.write(Buffer.alloc(100 * 1024, 'x'));
    // ...and never ends it
  });
  const wh = createWebhook({ url: rx.url, secret: SECRET, timeoutMs: 4000 });
  try {
    const t0 = performance.now();
    wh.send({ event: 'a' });
    await waitFor('delivery', () => wh.stats().delivered === 1, 1500);
    assert.ok(performance.now() - t0 < 1500);
    assert.is(wh.stats().inFlight, 0);
  } finally {
    await wh.close();
    await rx.close();
  }
});

test('send() never throws, even for an event that cannot be serialised', async () => {
  const errors: ErrorInfo[] = [];
  const wh = createWebhook({ url: 'http://127.0.0.1:9/hook', secret: SECRET, onError: (i) => errors.push(i) });
  const circular: Record<string, unknown> = { event: 'loop' };
  circular.self = circular;
  wh.send(circular as { event: string });
  wh.send({ event: 'big', n: 1n });
  assert.equal(wh.stats(), { queued: 0, inFlight: 0, delivered: 0, failed: 2, dropped: 0, retries: 0 });
  assert.equal(errors.map((e) => [e.event, e.attempt, e.final]), [['loop', 0, true], ['big', 0, true]]);
  await wh.close();
});

test('a throwing onError does not break delivery', async () => {
  const rx = await receiver((h) => h.res.writeHead(h.n === 1 ? 500 : 200).end());
  const wh = createWebhook({ url: rx.url, secret: SECRET, backoffMs: 10, onError: () => { throw new Error('logger broke'); } });
  try {
    wh.send({ event: 'a' });
    await waitFor('delivery', () => wh.stats().delivered === 1);
  } finally {
    await wh.close();
    await rx.close();
  }
});

test('invalid options are refused when the webhook is created', () => {
  assert.throws(() => createWebhook({ url: 'ftp://example.com/', secret: SECRET }), /http: or https:/);
  assert.throws(() => createWebhook({ url: 'not a url', secret: SECRET }), /invalid url/);
  assert.throws(() => createWebhook({ url: 'https://example.com/', secret: '' }), /secret/);
  assert.throws(() => createWebhook({ url: 'https://example.com/', secret: SECRET, maxQueue: 0 }), /maxQueue/);
  assert.throws(() => createWebhook({ url: 'https://example.com/', secret: SECRET, maxAttempts: 1.5 }), /maxAttempts/);
  assert.throws(() => createWebhook({ url: 'https://example.com/', secret: SECRET, concurrency: -1 }), /concurrency/);
  assert.throws(() => createWebhook({ url: 'https://example.com/', secret: SECRET, timeoutMs: 0 }), /timeoutMs/);
  assert.throws(() => createWebhook({ url: 'https://example.com/', secret: SECRET, backoffMs: Number.NaN }), /backoffMs/);
});

test('a pending retry never keeps the process alive', async () => {
  const port = await closedPort();
  const moduleUrl = new URL('../src/alerts/webhook.js', import.meta.url).href;
  const script = `
    import { createWebhook } from ${JSON.stringify(moduleUrl)};
    const wh = createWebhook({ url: 'http://127.0.0.1:${port}/', secret: 's', backoffMs: 30000, maxAttempts: 5,
      onError: (i) => console.log(JSON.stringify(i)) });
    wh.send({ event: 'x' });
  `;
  const t0 = performance.now();
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 4000 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
  const dt = performance.now() - t0;
  assert.ok(dt < 3000, `child exited after ${dt} ms`);
  const lines = out.trim().split('\n').map((l) => JSON.parse(l) as ErrorInfo);
  assert.is(lines.length, 1);
  assert.is(lines[0]!.attempt, 1);
  assert.is(lines[0]!.final, false);
});

/** The value of an unlabelled sample in Prometheus text, and its declared type. */
function sample(text: string, name: string): { type: string; value: number } {
  const type = new RegExp(`^# TYPE ${name} (\\w+)$`, 'm').exec(text)?.[1];
  const value = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1];
  if (type === undefined || value === undefined) throw new Error(`${name} is not in the metrics:\n${text}`);
  return { type, value: Number(value) };
}

test('the daemon exports webhook outcomes as _total counters that add up across reloads; queue and in-flight are gauges', async () => {
  // /ok accepts, /bad refuses for good (400: no retry), /slow answers after a while.
  const rx = await receiver((h) => {
    if (h.url === '/slow') setTimeout(() => h.res.writeHead(200).end(), 300);
    else h.res.writeHead(h.url === '/ok' ? 200 : 400).end();
  });
  const base = rx.url.replace(/\/hook$/, '');
  const metrics = createMetrics('cidlock_');
  const outputs = createOutputs({ log() {} }, metrics);
  const rulesFor = (path: string) => rulesFrom(`audit: { file: "" }\nwebhook: { url: "${base}${path}", secret: ${SECRET} }\n`);
  const emit = (n: number) => { for (let i = 0; i < n; i++) outputs.sink.emit({ event: 'rules_reloaded', rules: `r${i}` }); };
  const read = () => {
    const text = metrics.render();
    return {
      delivered: sample(text, 'cidlock_webhook_delivered_total'),
      failed: sample(text, 'cidlock_webhook_failed_total'),
      dropped: sample(text, 'cidlock_webhook_dropped_total'),
      queue: sample(text, 'cidlock_webhook_queue'),
      inFlight: sample(text, 'cidlock_webhook_in_flight'),
    };
  };
  const values = () => { const m = read(); return [m.delivered.value, m.failed.value, m.dropped.value]; };
  try {
    const m = read();
    assert.equal([m.delivered.type, m.failed.type, m.dropped.type, m.queue.type, m.inFlight.type], ['counter', 'counter', 'counter', 'gauge', 'gauge']);
    assert.not.match(metrics.render(), /^cidlock_webhook_(delivered|failed|dropped) /m, 'the old gauge names are gone');

    outputs.configure(rulesFor('/ok'));
    emit(2);
    await waitFor('2 delivered', () => values()[0] === 2);

    outputs.configure(rulesFor('/bad'));
    emit(1);
    await waitFor('1 failed', () => values()[1] === 1);
    assert.equal(values(), [2, 1, 0], 'the replaced webhook\'s deliveries still count');

    // Two slow deliveries in flight (the webhook's concurrency), three queued; a reload drops the queued ones.
    outputs.configure(rulesFor('/slow'));
    emit(5);
    await waitFor('2 in flight', () => read().inFlight.value === 2);
    assert.is(read().queue.value, 3);
    outputs.configure(rulesFor('/ok'));
    assert.equal(values(), [2, 1, 3], 'queued events dropped at the reload');
    assert.is(read().queue.value, 0);
    await waitFor('the in-flight deliveries of the replaced webhook', () => values()[0] === 4, 3000);
    emit(1);
    await waitFor('one more delivered', () => values()[0] === 5);
    assert.equal(values(), [5, 1, 3]);
  } finally {
    await outputs.close();
    await rx.close();
  }
});

test.run();
