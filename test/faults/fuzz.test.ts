// Fuzzing every protocol cidlock speaks, seeded from the real captures: random and mutated
// inputs through the very functions the servers use (100,000 per protocol), then mutated
// requests over real sockets to running servers (3,000 per protocol; 100,000 with FAULTS_LONG=1,
// which `npm run faults` and .ci/run set). Nothing may throw, memory must stay bounded, every
// answer is one the protocol allows, and a Dovecot request without the API key never gets past it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, type AddressInfo, type Server } from 'node:net';
import { Agent, request } from 'node:http';
import { TEST_DOVECOT_KEY } from '../helpers/http.js';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parseCid } from '../../src/core/cid.js';
import { createEngine } from '../../src/core/engine.js';
import { fileStore } from '../../src/core/registry/file-store.js';
import { openRegistry } from '../../src/core/registry/registry.js';
import { answerFor } from '../../src/dovecot-policy/answer.js';
import { parseImapId, idField } from '../../src/dovecot-policy/imap-id.js';
import { createDovecotServer } from '../../src/dovecot-policy/server.js';
import { translateDovecot } from '../../src/dovecot-policy/translate.js';
import { parseAttributeBlock } from '../../src/postfix-policy/attributes.js';
import { encodeNetstring, parseNetstring } from '../../src/postfix-policy/netstring.js';
import { policyAction } from '../../src/postfix-policy/policy-action.js';
import { createPolicyServer, POLICY_LIMITS } from '../../src/postfix-policy/policy-server.js';
import { createSocketmapServer, SOCKETMAP_LIMITS } from '../../src/postfix-policy/socketmap-server.js';
import { lookupTable } from '../../src/postfix-policy/tables.js';
import { translatePostfix } from '../../src/postfix-policy/translate.js';
import { readDovecotCapture, readFixture } from '../helpers/paths.js';
import { rulesFrom } from '../helpers/tmp.js';

const LONG = process.env.FAULTS_LONG === '1';
const PURE = 100_000;
const OVER_SOCKETS = LONG ? 100_000 : 3_000;

/** Deterministic PRNG (mulberry32) so a failure can be replayed from its seed. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]! };
}

const SPECIAL = ['\0', '\r', '\n', '"', '\\', '=', ',', ':', ' ', '\t', '\u00e9', '\u{1f600}', '\uffff', '{', '}', '[', ']', 'NIL', 'null', '-1', '99999999999999999999'];

/** Byte-level and token-level mutations of a seed string. */
function mutate(r: ReturnType<typeof rng>, seed: string): string {
  let s = seed;
  const n = 1 + r.int(4);
  for (let k = 0; k < n; k++) {
    const at = r.int(s.length + 1);
    switch (r.int(7)) {
      case 0: s = s.slice(0, at) + s.slice(at + 1 + r.int(8)); break; // delete
      case 1: s = s.slice(0, at) + r.pick(SPECIAL) + s.slice(at); break; // insert special
      case 2: s = s.slice(0, at) + String.fromCharCode(r.int(256)) + s.slice(at + 1); break; // flip a byte
      case 3: s = s.slice(0, at); break; // truncate
      case 4: s = s + s.slice(r.int(s.length)); break; // duplicate a tail
      case 5: s = s.slice(0, at) + 'x'.repeat(r.int(3) === 0 ? 20_000 : r.int(300)) + s.slice(at); break; // grow
      default: s = Array.from({ length: r.int(64) }, () => String.fromCharCode(r.int(128))).join(''); // noise
    }
  }
  return s;
}

async function engineFor() {
  const rules = rulesFrom('policy: { mode: enforce }\nlimits:\n  - { key: address, failures: 1000000, window: 1m, then: delay 1s }\n');
  const registry = await openRegistry(fileStore(rules.stateDir), { create: true });
  await registry.add('alice@example.com', { kind: 'cid', cid: { type: 'UUID', token: '23bf83be-aad7-46aa-9e0f-39191ccf402f' } }, 'admin');
  return createEngine({ rules, registry, logger: { log() {} } });
}

// A full GC before each reading, so the heap measures what is kept, not garbage awaiting collection.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
function heapMb(): number {
  gc();
  return process.memoryUsage().heapUsed / 1048576;
}

test(`client_id and CID strings: ${PURE} mutated inputs, never a throw, every CID valid or explained`, () => {
  const r = rng(1);
  const seeds = readDovecotCapture('dovecot-2.3.19-imap-pop3.jsonl').map((c) => (JSON.parse(c.body) as { device_id: string }).device_id).filter((s) => s !== '');
  for (let i = 0; i < PURE; i++) {
    const raw = mutate(r, r.pick(seeds));
    const f = parseImapId(raw);
    assert.ok(f.pairs.length <= 64);
    const v = idField(f, ['clientid']);
    if (v !== undefined) {
      const c = parseCid(v);
      if (c.ok) assert.ok(/^[A-Z0-9_-]{1,16}$/.test(c.cid.type) && /^[\x21-\x7e]{1,128}$/.test(c.cid.token));
      else assert.not.ok(c.reason.includes(v) && v.length > 8, 'a reason echoed the CID');
    }
  }
});

test(`Dovecot bodies: ${PURE} mutated requests decided or refused as 400, answers always valid, memory bounded`, async () => {
  const r = rng(2);
  const engine = await engineFor();
  const seeds = readDovecotCapture('dovecot-2.3.19-imap-pop3.jsonl').map((c) => c.body);
  let decided = 0;
  let half = 0;
  for (let i = 0; i < PURE; i++) {
    if (i === PURE / 2) half = heapMb();
    const text = mutate(r, r.pick(seeds));
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      continue; // the server answers 400: covered over sockets below
    }
    const t = translateDovecot(body, { idFields: ['clientid'], stage: 'before_auth' });
    if (!t.ok) continue;
    const a = answerFor(engine.decide(t.request));
    assert.ok(Number.isInteger(a.status) && a.status >= -1 && a.status <= 30);
    if (a.status < 0) assert.type(a.msg, 'string');
    if (i % 2 === 0) engine.reportFailure(t.request, { policyReject: false });
    decided++;
  }
  assert.ok(decided > PURE / 20, `only ${decided} inputs reached a decision`);
  // The counters fill up to their caps in the first half; the second half must not keep growing.
  const grew = heapMb() - half;
  assert.ok(grew < 40, `heap grew by ${Math.round(grew)} MB over the second ${PURE / 2} requests`);
});

test(`Postfix attribute blocks: ${PURE} mutated requests, each parsed or refused, actions never empty`, async () => {
  const r = rng(3);
  const engine = await engineFor();
  const seeds = readFixture('captures', 'postfix-3.7-policy-tls-client-cert.txt').trim().split('\n\n').map((b) => `${b}\n`);
  for (let i = 0; i < PURE; i++) {
    const p = parseAttributeBlock(mutate(r, r.pick(seeds)));
    if (!p.ok) {
      assert.ok(p.error.length < 120, 'an error echoed input');
      continue;
    }
    const t = translatePostfix(p.attrs);
    if (t.kind === 'skip') continue;
    const action = policyAction(engine.decide(t.request));
    assert.match(action, /^(DUNNO|REJECT 5\.7\.1 .+|DEFER_IF_PERMIT 4\.7\.1 .+)$/);
  }
});

test(`socketmap netstrings: ${PURE} mutated requests, framed replies always within the protocol`, async () => {
  const r = rng(4);
  const engine = await engineFor();
  const seeds = ['client 192.0.2.1', 'sasl alice@example.com', 'ccert 28:FC:DF:A5:4B:CC:0A:58:DD:FC:1B:CD:14:42:BB:99:42:10:5A:5F:C8:36:79:0F:2C:9C:1F:0C:62:FC:2F:E4', 'virtual x'].map((s) => encodeNetstring(s).toString('latin1'));
  for (let i = 0; i < PURE; i++) {
    const buf = Buffer.from(mutate(r, r.pick(seeds)), 'latin1');
    const n = parseNetstring(buf, 0, 4096);
    if (n.kind !== 'ok') continue;
    const text = n.value.toString('utf8');
    const sp = text.indexOf(' ');
    const reply = sp <= 0 ? 'PERM expected "<table> <key>"' : lookupTable(engine, text.slice(0, sp), text.slice(sp + 1));
    assert.match(reply, /^(OK .+|NOTFOUND |PERM .+)$/s);
    assert.ok(Buffer.byteLength(reply) < 100_000);
  }
});

async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

/** Requests in flight at once over sockets: enough to overlap, far below every connection cap. */
const PARALLEL = 20;

async function inBatches<T>(total: number, one: (i: number) => Promise<T>, check: (result: T, i: number) => void): Promise<void> {
  for (let i = 0; i < total; i += PARALLEL) {
    const n = Math.min(PARALLEL, total - i);
    const results = await Promise.all(Array.from({ length: n }, (_, k) => one(i + k)));
    results.forEach((res, k) => check(res, i + k));
  }
}

/**
 * One connection: write the payload, half-close, collect every byte until the server closes.
 * Half-closing ends an incomplete request at once, and waiting for the close (not for the first
 * answer) sees every answer the server sends: a payload may hold several requests.
 */
function exchange(port: number, payload: Buffer): Promise<{ data: Buffer; timedOut: boolean }> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.end(payload));
    const chunks: Buffer[] = [];
    const t = setTimeout(() => { s.destroy(); resolve({ data: Buffer.concat(chunks), timedOut: true }); }, EXCHANGE_TIMEOUT_MS);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('close', () => { clearTimeout(t); resolve({ data: Buffer.concat(chunks), timedOut: false }); });
    s.on('error', () => {});
  });
}

/** A server answers a half-closed connection at once; this only catches one that hangs. */
const EXCHANGE_TIMEOUT_MS = 5000;

/** A Postfix policy answer as the protocol allows it: one action line and the empty line. */
const POLICY_ANSWER = /^action=(DUNNO|REJECT 5\.7\.1 [^\n]+|DEFER_IF_PERMIT 4\.7\.1 [^\n]+)\n\n/;

/**
 * How many answers a policy payload must get: requests end at an empty line, and the server
 * answers each well-formed one in order until the first it cannot parse, then closes.
 */
function expectedPolicyAnswers(payload: Buffer): number {
  let buf = payload;
  let n = 0;
  for (;;) {
    const end = buf.indexOf('\n\n');
    if (end < 0 || end > POLICY_LIMITS.maxRequestBytes) return n;
    const p = parseAttributeBlock(buf.subarray(0, end + 1).toString('utf8'), POLICY_LIMITS);
    if (!p.ok || p.attrs.get('request') !== 'smtpd_access_policy') return n;
    n++;
    buf = buf.subarray(end + 2);
  }
}

/** The policy answers in a reply, in order; throws on anything that is not exactly a sequence of valid answers. */
function policyAnswers(reply: string): string[] {
  const out: string[] = [];
  let rest = reply;
  while (rest !== '') {
    const m = POLICY_ANSWER.exec(rest);
    if (m === null) throw new Error(`not a valid answer at ${JSON.stringify(rest.slice(0, 80))} in ${JSON.stringify(reply.slice(0, 160))}`);
    out.push(m[1]!);
    rest = rest.slice(m[0].length);
  }
  return out;
}

/** How many netstring requests a socketmap payload holds before the framing breaks or ends. */
function expectedSocketmapAnswers(payload: Buffer): number {
  let n = 0;
  for (let off = 0; ;) {
    const r = parseNetstring(payload, off, SOCKETMAP_LIMITS.maxRequestBytes);
    if (r.kind !== 'ok') return n;
    n++;
    off = r.next;
  }
}

/** The socketmap replies in a reply stream; throws on anything but whole, valid netstrings. */
function socketmapAnswers(reply: Buffer): string[] {
  const out: string[] = [];
  for (let off = 0; off < reply.length;) {
    const r = parseNetstring(reply, off);
    if (r.kind !== 'ok') throw new Error(`reply is not a sequence of netstrings: ${JSON.stringify(reply.toString('latin1').slice(0, 160))}`);
    const text = r.value.toString('utf8');
    if (!/^(OK .+|NOTFOUND |PERM .+)$/s.test(text)) throw new Error(`not a socketmap reply: ${JSON.stringify(text.slice(0, 80))}`);
    out.push(text);
    off = r.next;
  }
  return out;
}

const dovecotSeeds = () => readDovecotCapture('dovecot-2.3.19-imap-pop3.jsonl').map((c) => c.body);

/** POSTs a body; resolves with the status and, for 200, the parsed answer (-1 = connection failed). */
function postTo(port: number, agent: Agent, path: string, body: string, headers: Record<string, string>) {
  return new Promise<{ status: number; body: string }>((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'POST', agent, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (data += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
    });
    req.on('error', () => resolve({ status: -1, body: '' }));
    req.end(body);
  });
}

test(`Dovecot over sockets: ${OVER_SOCKETS} mutated bodies with the key, each a valid answer, 400 or 413; the server keeps serving`, async () => {
  const r = rng(5);
  const engine = await engineFor();
  const dv = createDovecotServer({ engine, logger: { log() {} }, apiKey: () => TEST_DOVECOT_KEY });
  const port = await listen(dv);
  const agent = new Agent({ keepAlive: true, maxSockets: PARALLEL });
  const seeds = dovecotSeeds();
  const key = { 'x-api-key': TEST_DOVECOT_KEY };
  const statuses = new Map<number, number>();
  try {
    await inBatches(OVER_SOCKETS, () => postTo(port, agent, '/?command=allow', mutate(r, r.pick(seeds)), key), (res) => {
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status !== 200) return;
      const a = JSON.parse(res.body) as { status: unknown; msg?: unknown };
      assert.ok(Number.isInteger(a.status) && (a.status as number) >= -1 && (a.status as number) <= 30, res.body);
      if (a.status === -1) assert.type(a.msg, 'string');
    });
    assert.ok([...statuses.keys()].every((c) => [200, 400, 413].includes(c)), `unexpected statuses ${JSON.stringify([...statuses])}`);
    assert.ok((statuses.get(200) ?? 0) > OVER_SOCKETS / 20, `only ${statuses.get(200) ?? 0} requests reached a decision`);
    const ok = JSON.stringify({ login: 'a@b.c', protocol: 'imap', remote: '192.0.2.1' });
    assert.is((await postTo(port, agent, '/?command=allow', ok, key)).status, 200);
  } finally {
    agent.destroy();
    dv.close();
    (dv as unknown as { closeAllConnections(): void }).closeAllConnections();
  }
});

/** Characters Node refuses in a header value; a wrong key is still a sendable header. */
const NOT_IN_HEADER = /[^\t\x20-\x7e\x80-\xff]/g;

test(`Dovecot over sockets: ${OVER_SOCKETS} requests without the key or with a wrong one, every one 401, none reaches the engine`, async () => {
  const r = rng(6);
  const engine = await engineFor();
  const dv = createDovecotServer({ engine, logger: { log() {} }, apiKey: () => TEST_DOVECOT_KEY });
  const port = await listen(dv);
  const agent = new Agent({ keepAlive: true, maxSockets: PARALLEL });
  const seeds = dovecotSeeds();
  /** A key that is not TEST_DOVECOT_KEY, however the server trims it. */
  const wrongKey = (): string => {
    for (;;) {
      const k = mutate(r, TEST_DOVECOT_KEY).replace(NOT_IN_HEADER, '').slice(0, 4000);
      if (k.trim() !== TEST_DOVECOT_KEY) return k;
    }
  };
  const credentials = (): Record<string, string> => {
    switch (r.int(6)) {
      case 0: return {};
      case 1: return { 'x-api-key': wrongKey() };
      case 2: return { authorization: `Bearer ${wrongKey()}` };
      case 3: return { authorization: `Basic ${Buffer.from(`dovecot:${wrongKey()}`, 'latin1').toString('base64')}` };
      case 4: return { 'x-api-key2': TEST_DOVECOT_KEY, authorization: `Digest ${TEST_DOVECOT_KEY}` }; // the right key where it is not read
      default: return { 'x-api-key': '' };
    }
  };
  const statuses = new Map<number, number>();
  try {
    await inBatches(OVER_SOCKETS, () => {
      // Half are well-formed captured requests: with a key they would be decided.
      const body = r.int(2) === 0 ? r.pick(seeds) : mutate(r, r.pick(seeds));
      return postTo(port, agent, r.pick(['/?command=allow', '/?command=report']), body, credentials());
    }, (res) => {
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status === 401) assert.is(res.body, '{"error":"missing or wrong API key"}');
    });
    assert.equal([...statuses], [[401, OVER_SOCKETS]], `statuses ${JSON.stringify([...statuses])}`);
    assert.equal({ ...engine.stats }, { decisions: 0, successes: 0, failures: 0, policyRejects: 0 }, 'a request without the key reached the engine');
    // The same listener still serves Dovecot when the key is right.
    assert.is((await postTo(port, agent, '/?command=allow', seeds[0]!, { 'x-api-key': TEST_DOVECOT_KEY })).status, 200);
    assert.is(engine.stats.decisions, 1);
  } finally {
    agent.destroy();
    dv.close();
    (dv as unknown as { closeAllConnections(): void }).closeAllConnections();
  }
});

test(`Postfix policy over sockets: ${OVER_SOCKETS} mutated requests, one valid answer per well-formed request, none after the first bad one`, async () => {
  const r = rng(7);
  const engine = await engineFor();
  const pf = createPolicyServer({ engine, logger: { log() {} } });
  const port = await listen(pf);
  const seeds = readFixture('captures', 'postfix-3.7-policy-tls-client-cert.txt').trim().split('\n\n');
  // A request holding an empty line is two requests: both are answered, in order.
  const two = await exchange(port, Buffer.from(`${seeds[0]}\n\n${seeds[3]}\n\n`));
  assert.is(two.data.toString(), 'action=DUNNO\n\naction=REJECT 5.7.1 Access denied\n\n');
  let answered = 0;
  let several = 0;
  try {
    await inBatches(OVER_SOCKETS, () => {
      // One payload in ten is two requests back to back, as a pipelining client would send them.
      const text = r.int(10) === 0 ? `${r.pick(seeds)}\n\n${mutate(r, r.pick(seeds))}` : mutate(r, r.pick(seeds));
      const payload = Buffer.from(`${text.replace(/\n*$/, '')}\n\n`, 'latin1');
      return exchange(port, payload).then((x) => ({ payload, ...x }));
    }, ({ payload, data, timedOut }) => {
      assert.not.ok(timedOut, `no answer and no close within ${EXCHANGE_TIMEOUT_MS} ms`);
      const answers = policyAnswers(data.toString('latin1'));
      assert.is(answers.length, expectedPolicyAnswers(payload), `answers ${JSON.stringify(answers)} to ${JSON.stringify(payload.toString('latin1').slice(0, 160))}`);
      answered += answers.length;
      if (answers.length > 1) several++;
    });
    assert.ok(answered > OVER_SOCKETS / 20, `only ${answered} answers`);
    assert.ok(several > 0, 'no payload held two requests: the oracle for several answers went untested');
    assert.is((await exchange(port, Buffer.from(`${seeds[0]}\n\n`))).data.toString(), 'action=DUNNO\n\n');
  } finally {
    pf.close();
  }
});

test(`socketmap over sockets: ${OVER_SOCKETS} mutated lookups, one valid netstring per well-formed request, none after broken framing`, async () => {
  const r = rng(8);
  const engine = await engineFor();
  const sm = createSocketmapServer({ engine, logger: { log() {} } });
  const port = await listen(sm);
  const seeds = ['client 192.0.2.1', 'sasl alice@example.com', 'ccert ab'].map((s) => encodeNetstring(s).toString('latin1'));
  let answered = 0;
  try {
    await inBatches(OVER_SOCKETS, () => {
      const payload = Buffer.from(mutate(r, r.pick(seeds)), 'latin1');
      return exchange(port, payload).then((x) => ({ payload, ...x }));
    }, ({ payload, data, timedOut }) => {
      assert.not.ok(timedOut, `no answer and no close within ${EXCHANGE_TIMEOUT_MS} ms`);
      const answers = socketmapAnswers(data);
      assert.is(answers.length, expectedSocketmapAnswers(payload), `answers ${JSON.stringify(answers)} to ${JSON.stringify(payload.toString('latin1').slice(0, 160))}`);
      answered += answers.length;
    });
    assert.ok(answered > OVER_SOCKETS / 20, `only ${answered} answers`);
    assert.is((await exchange(port, encodeNetstring('client 192.0.2.9'))).data.toString(), '9:NOTFOUND ,');
  } finally {
    sm.close();
  }
});

test.run();
