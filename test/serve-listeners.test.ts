// `cidlock serve` binds its listeners securely: a TCP listener with clients closes other peers
// (here the Dovecot one, whose key check would otherwise be the only gate), and a UNIX socket in
// a folder every user may enter is refused at start, naming the folder.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { cidlock } from './helpers/cli.js';
import { startServe } from './helpers/daemon.js';
import { tempDir } from './helpers/tmp.js';

/** Sends an HTTP request from a given loopback address; resolves with the reply, '' when closed unanswered. */
function ask(port: number, localAddress: string): Promise<string> {
  return new Promise((resolve) => {
    let data = '';
    const s = connect({ port, host: '127.0.0.1', localAddress }, () => s.write('POST /?command=allow HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}'));
    s.on('data', (d) => (data += d));
    s.on('error', () => resolve(data));
    s.on('close', () => resolve(data));
  });
}

test('a Dovecot listener with clients: a listed peer gets HTTP (401 without the key); any other is closed unanswered and logged', async () => {
  const dir = tempDir();
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, 'listen:\n  dovecot: { address: 127.0.0.1:0, clients: [127.0.0.2/32] }\n  postfix: off\n  socketmap: off\n  admin: off\n');
  const serve = startServe(cfg);
  try {
    const port = Number((await serve.address('dovecot')).split(':').pop());
    assert.match(await ask(port, '127.0.0.2'), /^HTTP\/1\.1 401 /);
    assert.is(await ask(port, '127.0.0.3'), '');
    const line = await serve.waitFor((l) => l.event === 'client_refused', 'client_refused');
    assert.equal([line.listener, line.last_peer, line.closed], ['dovecot', '127.0.0.3', 1]);
    const handled = serve.lines.filter((l) => l.event === 'dovecot_bad_request').map((l) => l.peer);
    assert.equal(handled, ['127.0.0.2'], 'the HTTP server never saw the refused peer');
  } finally {
    await serve.stop();
  }
});

test('a Postfix socket in a folder every user may enter: serve refuses to start and names the folder', () => {
  const dir = tempDir();
  const open = join(dir, 'open');
  mkdirSync(open);
  chmodSync(open, 0o755);
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, `listen:\n  dovecot: off\n  admin: off\n  socketmap: off\n  postfix: unix:${open}/policy\n`);
  const r = cidlock(['serve', '--config', cfg]);
  assert.is(r.status, 1);
  assert.match(r.stderr, `cidlock: cannot start: ${open}: every local user may enter this directory (mode 0755), so anyone could reach or replace the socket in it; run: chmod o-rwx ${open}`);
});

test('a Postfix socket whose folder is missing: serve makes it (2750) and listens', async () => {
  const dir = tempDir();
  chmodSync(dir, 0o755);
  const cfg = join(dir, 'cidlock.yaml');
  writeFileSync(cfg, `listen:\n  dovecot: off\n  admin: off\n  socketmap: off\n  postfix: unix:${dir}/cidlock/policy\n`);
  const serve = startServe(cfg);
  try {
    assert.is(await serve.address('postfix'), `unix:${dir}/cidlock/policy`);
    const reply = await new Promise<string>((resolve) => {
      let data = '';
      const s = connect(join(dir, 'cidlock', 'policy'), () => s.write('request=smtpd_access_policy\nprotocol_state=RCPT\n\n'));
      s.on('data', (d) => { data += d; if (data.endsWith('\n\n')) s.end(); });
      s.on('close', () => resolve(data));
    });
    assert.is(reply, 'action=DUNNO\n\n');
  } finally {
    await serve.stop();
  }
});

test.run();
