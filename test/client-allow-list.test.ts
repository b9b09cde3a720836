// TCP listeners with `clients`: a peer outside the list is closed before anything is read, never
// reaches the protocol handler or the connection cap, and a burst of them is logged once.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { parseCidr, type Cidr } from '../src/core/ip.js';
import type { Logger } from '../src/core/log.js';
import { allowOnly } from '../src/net/client-allow-list.js';
import { capConnections } from '../src/net/connection-cap.js';

const cidr = (t: string) => parseCidr(t) as Cidr;

interface Line { level: string; event: string; fields: Record<string, unknown> }
function capture(): { logger: Logger; lines: Line[] } {
  const lines: Line[] = [];
  return { lines, logger: { log: (level, event, fields = {}) => lines.push({ level, event, fields }) } };
}

async function listening(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as { port: number }).port;
}

/** Connects from a given loopback address; resolves with what the server sent before closing. */
function exchange(port: number, localAddress: string, send = 'request\n'): Promise<{ data: string; closedBy: 'server' | 'error' }> {
  return new Promise((resolve) => {
    let data = '';
    const s = connect({ port, host: '127.0.0.1', localAddress }, () => s.write(send));
    s.on('data', (d) => (data += d));
    s.on('error', () => resolve({ data, closedBy: 'error' }));
    s.on('close', () => resolve({ data, closedBy: 'server' }));
  });
}

test('a listed peer is served; any other is closed before the handler sees it, and logged', async () => {
  const { logger, lines } = capture();
  const seen: string[] = [];
  const server = createServer((sock) => {
    seen.push(sock.remoteAddress!);
    sock.on('data', () => sock.end('answer\n'));
  });
  const list = allowOnly(server, [cidr('127.0.0.2/32'), cidr('::1/128')], logger, 'postfix');
  const port = await listening(server);
  try {
    const ok = await exchange(port, '127.0.0.2');
    assert.is(ok.data, 'answer\n');
    const refused = await exchange(port, '127.0.0.3');
    assert.is(refused.data, '', 'nothing answered');
    assert.equal(seen, ['127.0.0.2'], 'the handler never saw the refused peer');
    assert.is(list.refused, 1);
    assert.is(lines.length, 1);
    assert.is(lines[0]!.event, 'client_refused');
    assert.equal(lines[0]!.fields, { listener: 'postfix', closed: 1, last_peer: '127.0.0.3', why: 'not in listen.postfix.clients' });
  } finally {
    server.close();
  }
});

test('a burst of refused peers is one log line, and cannot evict the listed peers through the connection cap', async () => {
  const { logger, lines } = capture();
  const server = createServer((sock) => sock.on('data', () => sock.write('answer\n')));
  // The order daemon.ts has: the server (and its cap) are made first, the allow-list added at listen.
  const cap = capConnections(server, 2, logger, 'socketmap');
  allowOnly(server, [cidr('127.0.0.2/32')], logger, 'socketmap');
  const port = await listening(server);
  const held: Socket[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const s = connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' });
      await new Promise((r) => s.once('connect', r));
      held.push(s);
    }
    await Promise.all(Array.from({ length: 40 }, (_, i) => exchange(port, `127.0.1.${i + 1}`)));
    assert.is(cap.evicted, 0, 'refused connections evicted a listed peer');
    for (const s of held) {
      assert.not.ok(s.destroyed);
      const reply = await new Promise<string>((r) => { s.once('data', (d) => r(String(d))); s.write('ping\n'); });
      assert.is(reply, 'answer\n');
    }
    const refusals = lines.filter((l) => l.event === 'client_refused');
    assert.is(refusals.length, 1, 'one line at the start of the burst; the rest are summed up later');
    assert.not.ok(lines.some((l) => l.event === 'connection_limit'));
  } finally {
    for (const s of held) s.destroy();
    server.close();
  }
});

test.run();
