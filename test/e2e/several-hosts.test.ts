// Real Dovecot 2.3 and Postfix 3.7 behind two cidlock hosts that share one Redis, as mail hosts
// behind a balancer would: Dovecot "A" (IMAP) asks cidlock host A; Dovecot "B" (IMAP, POP3, and
// SASL for Postfix) and Postfix's policy service ask cidlock host B. A device proven on one host
// works on the other, a vouch given on A lets POP3 and SMTP AUTH through B, and failures seen
// by both Dovecots add up to one limit.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cidlock } from '../helpers/cli.js';
import { imapLogin, pop3Login, smtpSession } from '../helpers/mail-clients.js';
import { requireRedis, startRedis, type RedisInstance } from '../helpers/redis.js';
import { tempDir } from '../helpers/tmp.js';
import {
  dovecotSaslInQueue, dovecotSnippetFor, freePort, postfixDirs, postfixScriptFor, preparePostfixQueue, requireTools, runPostfixScript,
  serverDir, startCidlock, startDovecot, startPostfix, type Cidlock, type Dovecot, type Postfix,
} from './harness.js';

const PW = 'pw-for-tests';
const USERS = { 'alice@example.com': PW, 'bob@example.com': PW, 'carl@example.com': PW, 'dora@example.com': PW };
const FAILED = 'NO [AUTHENTICATIONFAILED] Authentication failed.';
const CID = 'UUID 6f1f0bde-2b8e-4c8e-9a43-8d1b7c1c0a11';
const ID: Array<[string, string]> = [['clientid', CID]];

const ready = requireTools('several hosts end-to-end', ['postfix', 'dovecot', 'openssl']) && requireRedis('several hosts end-to-end');
const check = ready ? test : test.skip;

let redis: RedisInstance;
let hostA: Cidlock;
let hostB: Cidlock;
let dovecotA: Dovecot;
let dovecotB: Dovecot;
let pf: Postfix;

let setupOnce: Promise<void> | undefined;
const setup = () => (setupOnce ??= (async () => {
  redis = await startRedis({ dir: tempDir('cidlock-redis-'), appendonly: true, appendfsync: 'always' });
  const rules = `store: { redis: "redis://127.0.0.1:${redis.port}/0" }
policy: { mode: enforce }
limits:
  - { key: address, distinct_users: 3, window: 10m, then: reject 1h }
`;
  const dirA = serverDir();
  const dirB = serverDir();
  const queue = preparePostfixQueue(dirB);
  hostA = await startCidlock(dirA, rules);
  hostB = await startCidlock(dirB, rules, undefined, { queue });
  dovecotA = await startDovecot({ dir: dirA, users: USERS, snippet: dovecotSnippetFor(hostA.cfg), name: 'dovecot-a' });
  dovecotB = await startDovecot({ dir: dirB, users: USERS, snippet: `${dovecotSnippetFor(hostB.cfg)}\n${dovecotSaslInQueue(queue)}`, name: 'dovecot-b' });
  const script = postfixScriptFor(hostB.cfg, postfixDirs(dirB));
  const submissionPort = await freePort();
  const onPort = script.replace(/submission\/inet/g, `${submissionPort}/inet`).replace(/'submission inet /g, `'${submissionPort} inet `);
  pf = await startPostfix({ dir: dirB, saslPath: dovecotB.authSocket, mainExtra: 'relay_domains = example.net\n', services: [], configure: () => { runPostfixScript(onPort, dirB); }, configuredPorts: { submission: submissionPort } });
})());

test.after(async () => {
  if (!ready || setupOnce === undefined) return;
  pf?.stop();
  dovecotA?.stop();
  dovecotB?.stop();
  await hostA?.stop();
  await hostB?.stop();
  await redis?.stop();
});

const imap = (d: Dovecot, user: string, from: string, id = ID) => imapLogin(d.imapPort, { user, pass: PW, starttls: true, id, localAddress: from });

check('a device added with host A\'s CLI logs in through Dovecot B within a second; another CID gets the wrong-password reply', async () => {
  await setup();
  const r = cidlock(['devices', 'add', 'alice@example.com', CID, '--label', 'laptop', '--config', hostA.cfg]);
  assert.is(r.status, 0, r.stderr);
  const t = Date.now();
  let reply = '';
  while (Date.now() - t < 5000) {
    reply = (await imap(dovecotB, 'alice@example.com', '127.0.0.40')).reply;
    if (/Logged in/.test(reply)) break;
    await new Promise((res) => setTimeout(res, 50));
  }
  assert.match(reply, /Logged in/);
  assert.ok(Date.now() - t < 1500, `took ${Date.now() - t} ms (each try is a whole IMAP login)`);
  const d = await hostB.waitFor((l) => l.event === 'decision' && l.user === 'alice@example.com' && l.reason === 'registered_device', 'host B decides on A\'s device');
  assert.is(d.protocol, 'imap');
  assert.is((await imap(dovecotB, 'alice@example.com', '127.0.0.41', [['clientid', 'UUID not-alice']])).reply, FAILED);
});

check('an IMAP login through host A vouches for POP3 and SMTP AUTH through host B from its address only', async () => {
  await setup();
  assert.match((await imap(dovecotA, 'alice@example.com', '127.0.0.44')).reply, /Logged in/);
  await hostA.waitFor((l) => l.event === 'decision' && l.remote === '127.0.0.44' && l.reason === 'registered_device', 'host A decides');
  assert.match(await pop3Login(dovecotB.pop3Port, { user: 'alice@example.com', pass: PW, stls: true, localAddress: '127.0.0.44' }), /^\+OK/);
  const vouched = await hostB.waitFor((l) => l.event === 'decision' && l.protocol === 'pop3' && l.remote === '127.0.0.44', 'host B decides POP3');
  assert.is(vouched.reason, 'vouched');
  const smtp = await smtpSession(pf.ports.submission!, { auth: { user: 'alice@example.com', pass: PW }, localAddress: '127.0.0.44', transactions: [{ from: 'alice@example.com', rcpts: ['bob@example.org'] }] });
  assert.match(smtp.auth!, /^235 /);
  assert.match(smtp.transactions[0]!.rcpts[0]!, /^250 /);
  assert.match(await pop3Login(dovecotB.pop3Port, { user: 'alice@example.com', pass: PW, stls: true, localAddress: '127.0.0.45' }), /^-ERR \[AUTH\] Authentication failed\./);
  const other = await smtpSession(pf.ports.submission!, { auth: { user: 'alice@example.com', pass: PW }, localAddress: '127.0.0.46', transactions: [] });
  assert.match(other.auth!, /^535 /);
});

check('wrong passwords through Dovecot A and Dovecot B add up to one dictionary limit, enforced on both hosts', async () => {
  await setup();
  const from = '127.0.0.50';
  // Three user names from one address, spread over both hosts: neither saw three.
  assert.is((await imap(dovecotA, 'bob@example.com', from, [])).reply, FAILED);
  assert.is((await imap(dovecotB, 'carl@example.com', from, [])).reply, FAILED);
  assert.is((await imap(dovecotA, 'dora@example.com', from, [])).reply, FAILED);
  // Dovecot reports each failure after its reply: the limit comes into force on whichever host counted the third.
  await Promise.race([hostA, hostB].map((h) => h.waitFor((l) => l.event === 'limit_triggered' && l.subject === from, 'the dictionary limit', 10_000)));
  // Alice's own device and password, from that address, through B: the address is shut out.
  assert.is((await imap(dovecotB, 'alice@example.com', from)).reply, FAILED);
  const d = await hostB.waitFor((l) => l.event === 'decision' && l.user === 'alice@example.com' && l.remote === from, 'host B decides alice from the attacker\'s address');
  assert.is(d.reason, 'limit');
  assert.match(await pop3Login(dovecotB.pop3Port, { user: 'alice@example.com', pass: PW, stls: true, localAddress: '127.0.0.44' }), /^\+OK/, 'from her own address she still gets in');
});

test.run();
