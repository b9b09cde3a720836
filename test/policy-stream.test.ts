// The Postfix policy server's input path: requests found however the client splits its writes,
// each byte looked at once, and nothing more read while a tarpit reply is held back, so a client
// flooding its socket meanwhile costs no memory and no time.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { createEngine } from '../src/core/engine.js';
import { fileStore } from '../src/core/registry/file-store.js';
import { openRegistry } from '../src/core/registry/registry.js';
import { createPolicyServer, POLICY_LIMITS } from '../src/postfix-policy/policy-server.js';
import { rulesFrom } from './helpers/tmp.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const block = (user: string, address: string) =>
  `request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=${address}\nsasl_username=${user}\n\n`;

async function start(yaml: string) {
  const rules = rulesFrom(yaml);
  const engine = createEngine({ rules, registry: await openRegistry(fileStore(rules.stateDir), { create: true }), logger: { log() {} } });
  const server: Server = createPolicyServer({ engine, logger: { log() {} } });
  const accepted: Socket[] = [];
  server.on('connection', (s: Socket) => accepted.push(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { engine, accepted, port: (server.address() as AddressInfo).port, stop: () => new Promise<void>((r) => server.close(() => r())) };
}

function connection(port: number) {
  const sock = connect(port, '127.0.0.1');
  sock.setNoDelay(true);
  let got = '';
  let closed = false;
  sock.on('data', (d) => (got += d.toString('latin1')));
  sock.on('close', () => (closed = true));
  sock.on('error', () => {});
  return { sock, replies: () => got.split('\n\n').filter((x) => x !== ''), closed: () => closed };
}

async function until(pred: () => boolean, what: string, ms = 5000): Promise<void> {
  for (const deadline = Date.now() + ms; !pred();) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

test('requests split into single bytes, with the blank line across writes, and several in one write, are each answered in order', async () => {
  const s = await start('policy: { mode: enforce, protocols: { smtp: allow } }\nlimits: []\n');
  try {
    const c = connection(s.port);
    for (const ch of block('a@b.c', '192.0.2.1')) {
      c.sock.write(ch);
      await sleep(1);
    }
    await until(() => c.replies().length === 1, 'the dribbled request');
    c.sock.write(block('a@b.c', '192.0.2.1') + block('b@b.c', '192.0.2.2').slice(0, -1));
    await sleep(50);
    c.sock.write('\n' + block('c@b.c', '192.0.2.3'));
    await until(() => c.replies().length === 4, 'the pipelined requests');
    assert.equal(c.replies(), ['action=DUNNO', 'action=DUNNO', 'action=DUNNO', 'action=DUNNO']);
    assert.is(s.engine.stats.decisions, 4);
    c.sock.destroy();
  } finally {
    await s.stop();
  }
});

test('an unfinished request larger than the limit is closed without a reply', async () => {
  const s = await start('limits: []\n');
  try {
    const c = connection(s.port);
    c.sock.write(`request=smtpd_access_policy\nx=${'y'.repeat(POLICY_LIMITS.maxRequestBytes)}\n`);
    await until(c.closed, 'the connection to close');
    assert.equal(c.replies(), []);
  } finally {
    await s.stop();
  }
});

test('while a tarpit reply is held back nothing more is read: megabytes written meanwhile stay in the kernel, then the connection is closed', async () => {
  const s = await start('policy: { mode: enforce, protocols: { smtp: allow } }\nlimits: [{ key: address, failures: 1, window: 10m, then: delay 1s }]\n');
  try {
    s.engine.reportFailure({ protocol: 'imap', user: 'x@b.c', remote: '192.0.2.66', tls: true, certFingerprints: [], stage: 'report' }, { policyReject: false });
    const c = connection(s.port);
    const t = Date.now();
    c.sock.write(block('t@b.c', '192.0.2.66'));
    await until(() => s.accepted.length === 1, 'the connection');
    await sleep(50);
    // Eight megabytes of a request that never ends, as fast as the socket takes them.
    const junk = Buffer.alloc(256 * 1024, 'x');
    let written = 0;
    while (written < 8 * 1024 * 1024 && c.replies().length === 0 && Date.now() - t < 800) {
      if (!c.sock.write(junk)) await Promise.race([new Promise((r) => c.sock.once('drain', r)), sleep(100)]);
      written += junk.length;
    }
    const read = s.accepted[0]!.bytesRead;
    assert.equal(c.replies(), [], 'the delayed reply came early');
    assert.ok(written >= 1024 * 1024, `only ${written} bytes could be written`);
    // The server read the request and at most a few buffers more; the rest waits in the kernel.
    assert.ok(read < 512 * 1024, `the server read ${read} bytes during the tarpit`);
    await until(() => c.replies().length === 1, 'the delayed reply');
    assert.ok(Date.now() - t >= 950, 'the reply was not delayed');
    assert.equal(c.replies(), ['action=DUNNO']);
    await until(c.closed, 'the flood to be cut off');
  } finally {
    await s.stop();
  }
});

test.run();
