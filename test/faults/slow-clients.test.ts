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
import { post } from '../helpers/http.js';
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
  const engine = createEngine({ rules, registry: openRegistry(fileStore(rules.stateDir), { create: true }), logger: { log() {} } });
  const logger = { log() {} };
  const dv = createDovecotServer({ engine, logger, limits: { headersTimeoutMs: LIMIT_MS, requestTimeoutMs: LIMIT_MS, keepAliveMs: LIMIT_MS } });
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

test.run();
