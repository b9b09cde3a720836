// 1,000 connections that send nothing, or one byte at a time, must not stop the servers from
// answering everyone else, and must be closed by the idle and request limits.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { createEngine } from '../../src/core/engine.js';
import { fileStore } from '../../src/core/registry/file-store.js';
import { openRegistry } from '../../src/core/registry/registry.js';
import { createDovecotServer } from '../../src/dovecot-policy/server.js';
import { createPolicyServer } from '../../src/postfix-policy/policy-server.js';
import { createSocketmapServer } from '../../src/postfix-policy/socketmap-server.js';
import { encodeNetstring } from '../../src/postfix-policy/netstring.js';
import { post, TEST_DOVECOT_KEY } from '../helpers/http.js';
import { readFixture } from '../helpers/paths.js';
import { rulesFrom } from '../helpers/tmp.js';

const SLOW = 1000;
const LIMIT_MS = 2000; // the tests shorten the production limits (10 s to 330 s) to keep CI fast

async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

test('1,000 idle and dribbling connections: others are still answered, and the limits close them all', async () => {
  const rules = rulesFrom('policy: { mode: enforce }\n');
  const engine = createEngine({ rules, registry: await openRegistry(fileStore(rules.stateDir), { create: true }), logger: { log() {} } });
  const logger = { log() {} };
  const dv = createDovecotServer({ engine, logger, apiKey: () => TEST_DOVECOT_KEY, limits: { headersTimeoutMs: LIMIT_MS, requestTimeoutMs: LIMIT_MS, keepAliveMs: LIMIT_MS } });
  const pf = createPolicyServer({ engine, logger, limits: { idleMs: LIMIT_MS, requestTimeoutMs: LIMIT_MS } });
  const sm = createSocketmapServer({ engine, logger, limits: { idleMs: LIMIT_MS, requestTimeoutMs: LIMIT_MS } });
  const ports = { dv: await listen(dv), pf: await listen(pf), sm: await listen(sm) };
  const slow: Socket[] = [];
  let closed = 0;
  const dribblers: NodeJS.Timeout[] = [];
  try {
    const payloads: Record<keyof typeof ports, string> = {
      dv: 'POST /?command=allow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"login":',
      pf: readFixture('captures', 'postfix-3.7-policy-tls-client-cert.txt').split('\n\n')[0]!,
      sm: encodeNetstring('client 192.0.2.1').toString(),
    };
    for (let i = 0; i < SLOW; i++) {
      const which = (['dv', 'pf', 'sm'] as const)[i % 3]!;
      const s = connect(ports[which], '127.0.0.1');
      s.on('error', () => {});
      s.on('close', () => closed++);
      slow.push(s);
      if (i % 2 === 1) {
        // One byte every 300 ms, never finishing the request (the idle timer alone would not catch it).
        let k = 0;
        const t = setInterval(() => { if (!s.destroyed) s.write(payloads[which][k++ % (payloads[which].length - 1)]!); }, 300);
        dribblers.push(t);
      }
    }
    await new Promise((r) => setTimeout(r, 300));
    // Meanwhile, normal requests on all three listeners.
    const lat: number[] = [];
    for (let i = 0; i < 50; i++) {
      const t0 = performance.now();
      const r = await post(ports.dv, '/?command=allow', JSON.stringify({ login: `u${i}@example.com`, protocol: 'imap', remote: '192.0.2.7' }));
      assert.is(r.body, '{"status":-1,"msg":""}');
      lat.push(performance.now() - t0);
    }
    const ask = (port: number, payload: string, done: (d: string) => boolean) => new Promise<string>((resolve) => {
      const s = connect(port, '127.0.0.1', () => s.write(payload));
      let d = '';
      s.on('data', (c) => { d += c; if (done(d)) { s.destroy(); resolve(d); } });
    });
    assert.is(await ask(ports.pf, `${payloads.pf}\n\n`, (d) => d.endsWith('\n\n')), 'action=DUNNO\n\n');
    assert.is(await ask(ports.sm, payloads.sm, (d) => d.endsWith(',')), '9:NOTFOUND ,');
    lat.sort((a, b) => a - b);
    // A liveness bound, not a speed claim (that is bench/): far below Dovecot's 2 s policy timeout.
    assert.ok(lat[lat.length - 1]! < 1000, `slowest answer ${Math.round(lat[lat.length - 1]!)} ms`);

    const deadline = Date.now() + 4 * LIMIT_MS + 3000;
    while (closed < SLOW && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    assert.is(closed, SLOW, `${SLOW - closed} slow connections were still open`);
  } finally {
    for (const t of dribblers) clearInterval(t);
    for (const s of slow) s.destroy();
    for (const s of [dv, pf, sm]) s.close();
    (dv as unknown as { closeAllConnections(): void }).closeAllConnections();
  }
});


test('more slow connections than the connection limit: the mail servers keep theirs, newcomers are answered', async () => {
  const CAP = 200;
  const rules = rulesFrom('policy: { mode: enforce }\n');
  const engine = createEngine({ rules, registry: await openRegistry(fileStore(rules.stateDir), { create: true }), logger: { log() {} } });
  const events: Array<Record<string, unknown>> = [];
  const logger = { log(_l: string, event: string, f?: Record<string, unknown>) { if (event === 'connection_limit') events.push(f ?? {}); } };
  const dv = createDovecotServer({ engine, logger, apiKey: () => TEST_DOVECOT_KEY, limits: { maxConnections: CAP } });
  const pf = createPolicyServer({ engine, logger, limits: { maxConnections: CAP } });
  const sm = createSocketmapServer({ engine, logger, limits: { maxConnections: CAP } });
  const ports = { dv: await listen(dv), pf: await listen(pf), sm: await listen(sm) };
  const sockets: Socket[] = [];
  const open = (port: number) => {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => {});
    sockets.push(s);
    return s;
  };
  // A persistent client that sends a request and waits for the whole answer on the same socket.
  const exchange = (s: Socket, payload: string, done: (d: string) => boolean, what = payload.slice(0, 20)) => new Promise<string>((resolve, reject) => {
    let d = '';
    // Never hang the suite: a missing answer fails with what did arrive.
    const timer = setTimeout(() => reject(new Error(`${JSON.stringify(what)}: no complete answer within 5 s; received ${JSON.stringify(d)}`)), 5000);
    const onData = (c: Buffer) => { d += c; if (done(d)) { clearTimeout(timer); s.off('data', onData); resolve(d); } };
    s.on('data', onData);
    s.once('close', () => { clearTimeout(timer); reject(new Error(`${JSON.stringify(what)}: connection closed; received ${JSON.stringify(d)}`)); });
    s.write(payload);
  });
  const body = JSON.stringify({ login: 'mailserver@example.com', protocol: 'imap', remote: '192.0.2.9' });
  const http = `POST /?command=allow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-API-Key: ${TEST_DOVECOT_KEY}\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  const httpDone = (d: string) => /\r\n\r\n[\s\S]*\}(\r\n0\r\n\r\n)?$/.test(d);
  const policy = `${readFixture('captures', 'postfix-3.7-policy-tls-client-cert.txt').split('\n\n')[0]!}\n\n`;
  const netstring = encodeNetstring('client 192.0.2.1').toString();
  try {
    // The mail servers connect first and are served, as Dovecot and smtpd would be.
    const mail = { dv: open(ports.dv), pf: open(ports.pf), sm: open(ports.sm) };
    assert.match(await exchange(mail.dv, http, httpDone, 'first'), /"status":-1/);
    assert.is(await exchange(mail.pf, policy, (d) => d.endsWith('\n\n')), 'action=DUNNO\n\n');
    assert.is(await exchange(mail.sm, netstring, (d) => d.endsWith(',')), '9:NOTFOUND ,');
    // Then 1,000 connections that never finish a request: five times what each listener keeps.
    // Half send nothing; half the first byte of a valid request (a netstring's length for socketmap).
    for (let i = 0; i < SLOW; i++) {
      const s = open([ports.dv, ports.pf, ports.sm][i % 3]!);
      if (i % 2 === 1) s.write(['P', 'r', '1'][i % 3]!);
    }
    await new Promise((r) => setTimeout(r, 500));
    // The served connections survived the flood and still get answers.
    assert.match(await exchange(mail.dv, http, httpDone, 'second'), /"status":-1/);
    assert.is(await exchange(mail.pf, policy, (d) => d.endsWith('\n\n')), 'action=DUNNO\n\n');
    assert.is(await exchange(mail.sm, netstring, (d) => d.endsWith(',')), '9:NOTFOUND ,');
    // A newcomer is accepted and answered too, at the cost of the oldest idle connection.
    assert.match(await exchange(open(ports.dv), http, httpDone, 'newcomer'), /"status":-1/);
    assert.is(await exchange(open(ports.pf), policy, (d) => d.endsWith('\n\n')), 'action=DUNNO\n\n');
    const stillOpen = sockets.filter((s) => !s.destroyed && s.readyState === 'open').length;
    assert.ok(stillOpen <= 3 * CAP + 3, `${stillOpen} client sockets still open, expected at most ${3 * CAP + 3}`);
    assert.equal(events.map((e) => e.listener).sort(), ['dovecot', 'postfix-policy', 'socketmap'], 'one connection_limit line per listener');
    for (const e of events) assert.ok(Number(e.closed) > 0 && e.max === CAP, JSON.stringify(e));
  } finally {
    for (const s of sockets) s.destroy();
    for (const s of [dv, pf, sm]) s.close();
    (dv as unknown as { closeAllConnections(): void }).closeAllConnections();
  }
});

test.run();
