// End-to-end against real Dovecot 2.3: holes an attack review found, closed. A removed device
// stops vouching at once; learn mode never admits more new devices than max_devices, however
// many log in at the same moment; and a fresh install with the example rules stops a dictionary
// run, although nothing is locked yet.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cidlock } from '../helpers/cli.js';
import { converse, imapLogin, pop3Login } from '../helpers/mail-clients.js';
import { repoRoot } from '../helpers/paths.js';
import { dovecotSnippetFor, requireTools, serverDir, startCidlock, startDovecot, type Cidlock, type Dovecot } from './harness.js';

const FAILED = 'NO [AUTHENTICATIONFAILED] Authentication failed.';
const POP_FAILED = '-ERR [AUTH] Authentication failed.';
const LAPTOP = 'UUID 5a1e0c3d-revocation-laptop';
const RULES = `policy: { mode: monitor }
users:
  alice@example.com: { mode: enforce }
  lena@example.com: { mode: learn, learn: { max_devices: 1 } }
`;
const USERS = { 'alice@example.com': 'alice-pw', 'lena@example.com': 'lena-pw', 'bob@example.com': 'bob-pw' };

const ready = requireTools('lock end-to-end', ['dovecot', 'openssl']);
const check = ready ? test : test.skip;
let dir = '';
let cl: Cidlock;
let dv: Dovecot;

let setupOnce: Promise<void> | undefined;
const setup = () => (setupOnce ??= (async () => {
  dir = serverDir();
  cl = await startCidlock(dir, RULES);
  dv = await startDovecot({ dir, users: USERS, snippet: dovecotSnippetFor(cl.cfg) });
})());

const stops: Array<() => unknown> = [];
test.after(async () => {
  if (setupOnce === undefined) return;
  for (const s of stops) await s();
  dv?.stop();
  await cl?.stop();
});

const decisions = (c: Cidlock, user: string, remote: string) => c.lines.filter((l) => l.event === 'decision' && l.user === user && l.remote === remote);

check('a device removed with the CLI stops vouching at once: POP3 from its address is refused, and no log names it', async () => {
  await setup();
  const add = cidlock(['devices', 'add', 'alice@example.com', LAPTOP, '--label', 'laptop', '--config', cl.cfg]);
  assert.is(add.status, 0, add.stderr);
  const id = /device ([0-9a-f]{12})/.exec(add.stdout)![1]!;
  await cl.waitFor((l) => l.event === 'registry_reloaded', 'the daemon to see the new device');
  const remote = '127.0.4.1';
  assert.match((await imapLogin(dv.imapPort, { user: 'alice@example.com', pass: 'alice-pw', starttls: true, id: [['clientid', LAPTOP]], localAddress: remote })).reply, /Logged in/);
  assert.match(await pop3Login(dv.pop3Port, { user: 'alice@example.com', pass: 'alice-pw', stls: true, localAddress: remote }), /^\+OK/);
  assert.is(decisions(cl, 'alice@example.com', remote).pop()!.reason, 'vouched');

  const reloads = cl.lines.filter((l) => l.event === 'registry_reloaded').length;
  const rm = cidlock(['devices', 'remove', 'alice@example.com', id, '--config', cl.cfg]);
  assert.is(rm.status, 0, rm.stderr);
  await cl.waitFor(() => cl.lines.filter((l) => l.event === 'registry_reloaded').length > reloads, 'the daemon to see the removal');
  assert.is(await pop3Login(dv.pop3Port, { user: 'alice@example.com', pass: 'alice-pw', stls: true, localAddress: remote }), POP_FAILED);
  const last = decisions(cl, 'alice@example.com', remote).pop()!;
  assert.is(last.reason, 'no_device_proof');
  assert.not.ok(JSON.stringify(last).includes(id), 'the refusal names the removed device');
});

check('learn mode: five simultaneous logins with five new devices admit exactly max_devices (1)', async () => {
  await setup();
  const tries = await Promise.all([0, 1, 2, 3, 4].map((i) => imapLogin(dv.imapPort, {
    user: 'lena@example.com', pass: 'lena-pw', starttls: true, id: [['clientid', `UUID lena-new-device-${i}`]], localAddress: `127.0.4.${10 + i}`,
  })));
  const admitted = tries.filter((t) => /Logged in/.test(t.reply));
  assert.is(admitted.length, 1, tries.map((t) => t.reply).join('\n'));
  assert.ok(tries.filter((t) => t.reply === FAILED).length === 4);
  await cl.waitFor((l) => l.event === 'device_registered' && l.user === 'lena@example.com', 'the learned device');
  const listed = cidlock(['devices', 'list', 'lena@example.com', '--json', '--config', cl.cfg]);
  assert.is(listed.stdout.trim().split('\n').length, 1, listed.stdout);
  const refused = cl.lines.filter((l) => l.event === 'decision' && l.user === 'lena@example.com' && l.action === 'reject');
  assert.is(refused.length, 4);
  // Whether a refusal came while the admitted device was still being registered depends on
  // timing here; test/dovecot-server.test.ts replays the overlapping order deterministically.
  assert.ok(refused.every((l) => /already has 1 of at most 1 devices/.test(String(l.why))), refused.map((l) => String(l.why)).join('\n'));
});

check('a fresh install with the example rules stops a dictionary run, though every account is only watched', async () => {
  await setup();
  // The example a newcomer copies, with this test's own state_dir and ports.
  const exampleDir = serverDir();
  const example = readFileSync(join(repoRoot, 'examples', 'cidlock.yaml'), 'utf8')
    .replace(/^state_dir: .*$/m, '')
    .replace(/^listen:[\s\S]*?\n\n/m, '')
    .replace(/^log: .*$/m, '');
  const fresh = await startCidlock(exampleDir, example);
  stops.push(() => fresh.stop());
  const dv2 = await startDovecot({ dir: exampleDir, users: USERS, snippet: dovecotSnippetFor(fresh.cfg), name: 'fresh' });
  stops.push(() => dv2.stop());
  const bot = '127.0.4.50';
  // Ten names that do not exist, guessed at once from one address.
  const guesses = await Promise.all(Array.from({ length: 10 }, (_, i) => imapLogin(dv2.imapPort, { user: `user${i}@example.com`, pass: 'password1', starttls: true, localAddress: bot })));
  assert.ok(guesses.every((g) => g.reply === FAILED));
  await fresh.waitFor((l) => l.event === 'limit_triggered' && l.subject === bot, 'the dictionary limit');
  // Now even a real account with its right password is refused from that address, before the password is checked...
  const after = await imapLogin(dv2.imapPort, { user: 'bob@example.com', pass: 'bob-pw', starttls: true, localAddress: bot });
  assert.is(after.reply, FAILED);
  const d = decisions(fresh, 'bob@example.com', bot).pop()!;
  assert.equal([d.mode, d.action, d.reason], ['monitor', 'reject', 'limit']);
  assert.not.ok(dv2.log().includes(`passwd-file(bob@example.com,${bot},`), 'the password was checked');
  // ...while bob from his own address only shows up in the monitor log.
  assert.match((await imapLogin(dv2.imapPort, { user: 'bob@example.com', pass: 'bob-pw', starttls: true, localAddress: '127.0.4.51' })).reply, /Logged in/);
});

check('a CID sent in the clear before STARTTLS counts as TLS: Dovecot keeps the ID and reports only the login\'s channel (README says so)', async () => {
  await setup();
  const reloads = () => cl.lines.filter((l) => l.event === 'registry_reloaded').length;
  const seen = reloads();
  const add = cidlock(['devices', 'add', 'alice@example.com', 'UUID 5a1e0c3d-cleartext-laptop', '--config', cl.cfg]);
  assert.is(add.status, 0, add.stderr);
  await cl.waitFor(() => reloads() > seen, 'the daemon to see the device');
  const c = await converse(dv.imapPort, { localAddress: '127.0.4.60' });
  try {
    await c.readLine();
    c.send('i1 ID ("clientid" "UUID 5a1e0c3d-cleartext-laptop")'); // in the clear
    await c.readUntil((l) => l.startsWith('i1 '));
    c.send('s1 STARTTLS');
    await c.readUntil((l) => l.startsWith('s1 '));
    await c.startTls();
    c.send('l1 LOGIN "alice@example.com" "alice-pw"');
    const r = await c.readUntil((l) => l.startsWith('l1 '));
    assert.match(r[r.length - 1]!, /^l1 OK/, 'the CID that crossed the network in the clear proved the device');
  } finally {
    c.close();
  }
  const d = decisions(cl, 'alice@example.com', '127.0.4.60')[0]!;
  assert.equal([d.tls, d.reason], [true, 'registered_device']);
});

test.run();
