// Fuzzing every protocol cidlock speaks, seeded from the real captures: random and mutated
// inputs through the very functions the servers use (100,000 per protocol), then a share of
// them over real sockets to running servers. Nothing may throw, memory must stay bounded, and
// every malformed input gets the answer its protocol expects.
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
import { parseClientId, idField } from '../../src/dovecot-policy/client-id.js';
import { createDovecotServer } from '../../src/dovecot-policy/server.js';
import { translateDovecot } from '../../src/dovecot-policy/translate.js';
import { parseAttributeBlock } from '../../src/postfix-policy/attributes.js';
import { encodeNetstring, parseNetstring } from '../../src/postfix-policy/netstring.js';
import { policyAction } from '../../src/postfix-policy/policy-action.js';
import { createPolicyServer } from '../../src/postfix-policy/policy-server.js';
import { createSocketmapServer } from '../../src/postfix-policy/socketmap-server.js';
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
    const f = parseClientId(raw);
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

test(`over sockets: ${OVER_SOCKETS} mutated requests per protocol; the servers answer or close, and keep serving`, async () => {
  const r = rng(5);
  const engine = await engineFor();
  const logger = { log() {} };
  const dv = createDovecotServer({ engine, logger, apiKey: () => TEST_DOVECOT_KEY });
  const pf = createPolicyServer({ engine, logger });
  const sm = createSocketmapServer({ engine, logger });
  const [dvPort, pfPort, smPort] = [await listen(dv), await listen(pf), await listen(sm)];
  const ok = JSON.stringify({ login: 'a@b.c', protocol: 'imap', remote: '192.0.2.1' });
  try {
    const agent = new Agent({ keepAlive: true, maxSockets: 20 });
    const dvSeeds = readDovecotCapture('dovecot-2.3.19-imap-pop3.jsonl').map((c) => c.body);
    const statuses = new Map<number, number>();
    const post = (body: string) => new Promise<number>((resolve) => {
      const req = request({ host: '127.0.0.1', port: dvPort, path: '/?command=allow', method: 'POST', agent, headers: { 'content-type': 'application/json', 'x-api-key': TEST_DOVECOT_KEY } }, (res) => {
        let data = '';
        res.on('data', (d) => (data += d));
        res.on('end', () => {
          if (res.statusCode === 200) assert.ok(Number.isInteger((JSON.parse(data) as { status: number }).status));
          resolve(res.statusCode ?? 0);
        });
      });
      req.on('error', () => resolve(-1));
      req.end(body);
    });
    for (let i = 0; i < OVER_SOCKETS; i += 20) {
      const codes = await Promise.all(Array.from({ length: 20 }, () => post(mutate(r, r.pick(dvSeeds)))));
      for (const c of codes) statuses.set(c, (statuses.get(c) ?? 0) + 1);
    }
    agent.destroy();
    assert.ok([...statuses.keys()].every((c) => [200, 400, 413].includes(c)), `unexpected statuses ${JSON.stringify([...statuses])}`);
    assert.is(await post(ok), 200);

    const pfSeeds = readFixture('captures', 'postfix-3.7-policy-tls-client-cert.txt').trim().split('\n\n').map((b) => `${b}\n\n`);
    const smSeeds = ['client 192.0.2.1', 'sasl alice@example.com', 'ccert ab'].map((s) => encodeNetstring(s).toString('latin1'));
    const exchange = (port: number, payload: Buffer, done: (data: string) => boolean) => new Promise<string>((resolve) => {
      // Half-close after the request: an incomplete one then ends at once instead of waiting for more.
      const s = connect(port, '127.0.0.1', () => s.end(payload));
      let data = '';
      const t = setTimeout(() => { s.destroy(); resolve(`${data}<timeout>`); }, 2000);
      s.on('data', (d) => { data += d.toString('latin1'); if (done(data)) { clearTimeout(t); s.destroy(); resolve(data); } });
      s.on('close', () => { clearTimeout(t); resolve(data); });
      s.on('error', () => {});
    });
    for (let i = 0; i < OVER_SOCKETS; i += 25) {
      const replies = await Promise.all(Array.from({ length: 25 }, (_, k) => k % 2 === 0
        ? exchange(pfPort, Buffer.from(`${mutate(r, r.pick(pfSeeds)).replace(/\n*$/, '')}\n\n`, 'latin1'), (d) => d.includes('\n\n'))
        : exchange(smPort, Buffer.from(mutate(r, r.pick(smSeeds)), 'latin1'), (d) => /^\d+:.*,$/s.test(d))));
      for (const [k, rep] of replies.entries()) {
        if (k % 2 === 0) assert.ok(rep === '' || /^action=(DUNNO|REJECT 5\.7\.1 .+|DEFER_IF_PERMIT 4\.7\.1 .+)\n\n$/.test(rep), `policy reply ${JSON.stringify(rep.slice(0, 80))}`);
        else assert.ok(rep === '' || rep.endsWith('<timeout>') || /^\d+:(OK .+|NOTFOUND |PERM .+),/s.test(rep), `socketmap reply ${JSON.stringify(rep.slice(0, 80))}`);
      }
    }
    assert.is(await exchange(pfPort, Buffer.from(pfSeeds[0]!), (d) => d.includes('\n\n')), 'action=DUNNO\n\n');
    assert.is(await exchange(smPort, encodeNetstring('client 192.0.2.9'), (d) => d.endsWith(',')), '9:NOTFOUND ,');
  } finally {
    for (const s of [dv, pf, sm]) s.close();
    (dv as unknown as { closeAllConnections(): void }).closeAllConnections();
  }
});

test.run();
