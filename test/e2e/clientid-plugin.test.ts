// End-to-end: cidlock's CLIENTID login plugin (src/dovecot-clientid), built here from source with
// its Makefile and loaded by a private Dovecot 2.3 configured from `cidlock config dovecot
// --clientid`, talked to over real sockets: what it advertises where, every reply, the bounds, that
// an accepted CID decides the login in cidlock, that the token stays out of the logs, and 10,000
// random CLIENTID lines that imap-login survives.
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cidlock } from '../helpers/cli.js';
import { buildClientidPlugin, clientidSnippetFor, requirePluginTools } from '../helpers/clientid-plugin.js';
import { converse, type Conversation } from '../helpers/mail-clients.js';
import { serverDir, startCidlock, startDovecot, type Cidlock, type Dovecot } from './harness.js';

const FAILED = 'NO [AUTHENTICATIONFAILED] Authentication failed.';
/** imap-login's own reply to a malformed command, which the plugin gives to a CLIENTID syntax error. */
const SYNTAX = 'BAD Error in IMAP command received by server.';
const PRIVACY = 'NO [PRIVACYREQUIRED] CLIENTID is accepted only over TLS.';
const TOKEN = '5a1e0c3d-plugin-laptop-0001';
const RULES = `policy: { mode: monitor }
users:
  alice@example.com: { mode: enforce }
# The fuzz logs bob in with thousands of random CIDs: its refusals are not what this file tests.
defences: { mode: monitor }
`;
const USERS = { 'alice@example.com': 'alice-pw', 'bob@example.com': 'bob-pw' };

const ready = requirePluginTools('CLIENTID plugin end-to-end');
const check = ready ? test : test.skip;
let dir = '';
let pluginDir = '';
let cl: Cidlock;
let dv: Dovecot;
let strict: Dovecot | undefined;

// uvu swallows errors thrown in before() hooks, so setup runs inside the first test that needs it.
let setupOnce: Promise<void> | undefined;
const setup = () => (setupOnce ??= (async () => {
  pluginDir = buildClientidPlugin();
  dir = serverDir();
  cl = await startCidlock(dir, RULES);
  const add = cidlock(['devices', 'add', 'alice@example.com', `UUID ${TOKEN}`, '--label', 'laptop', '--config', cl.cfg]);
  if (add.status !== 0) throw new Error(add.stderr);
  await cl.waitFor((l) => l.event === 'registry_reloaded', 'the daemon to see the new device');
  // The harness's Dovecot has auth_debug = yes, plaintext logins allowed and STARTTLS offered.
  dv = await startDovecot({ dir, users: USERS, imaps: true, snippet: clientidSnippetFor(cl.cfg, pluginDir) });
})());

// A server that requires TLS, logs no auth debugging, and lists one capability of its own.
let strictOnce: Promise<Dovecot> | undefined;
const startStrict = () => (strictOnce ??= (async () => {
  await setup();
  strict = await startDovecot({
    dir, users: USERS, imaps: true, name: 'strict',
    snippet: `${clientidSnippetFor(cl.cfg, pluginDir)}\nssl = required\ndisable_plaintext_auth = yes\nauth_debug = no\nimap_capability = +XCIDLOCK-TEST\n`,
  });
  return strict;
})());

test.after(async () => {
  if (setupOnce === undefined) return;
  strict?.stop();
  dv?.stop();
  await cl?.stop();
});

type Mode = 'plain' | 'starttls' | 'imaps';

/** A connection past the greeting (and STARTTLS), with the greeting line. */
async function open(d: Dovecot, mode: Mode, localAddress?: string): Promise<{ c: Conversation; greeting: string }> {
  const c = await converse(mode === 'imaps' ? d.imapsPort : d.imapPort, { tls: mode === 'imaps', timeoutMs: 10_000, ...(localAddress ? { localAddress } : {}) });
  const greeting = await c.readLine();
  if (mode === 'starttls') {
    assert.is(await cmd(c, 's1', 'STARTTLS'), 'OK Begin TLS negotiation now.');
    await c.startTls();
  }
  return { c, greeting };
}

/** Sends one tagged command; returns its tagged reply without the tag ("BYE ..." if the server hung up). */
async function cmd(c: Conversation, tag: string, line: string | Buffer): Promise<string> {
  if (typeof line === 'string') c.send(`${tag} ${line}`);
  else c.sendRaw(Buffer.concat([Buffer.from(`${tag} `), line, Buffer.from('\r\n')]));
  return (await replyTo(c, tag)).final;
}

async function replyTo(c: Conversation, tag: string): Promise<{ lines: string[]; final: string }> {
  const lines = await c.readUntil((l) => l.startsWith(`${tag} `) || l.startsWith('* BYE '));
  const last = lines[lines.length - 1]!;
  return { lines, final: last.startsWith('* BYE ') ? last.slice(2) : last.slice(tag.length + 1) };
}

const capsOf = (line: string): string[] => {
  const m = /^\* (?:OK \[CAPABILITY ([^\]]*)\]|CAPABILITY (.*))/.exec(line);
  if (m === null) throw new Error(`no capability list in ${line}`);
  return (m[1] ?? m[2]!).split(' ');
};

async function capability(c: Conversation): Promise<string[]> {
  c.send('c1 CAPABILITY');
  const { lines, final } = await replyTo(c, 'c1');
  assert.match(final, /^OK /);
  return capsOf(lines.find((l) => l.startsWith('* CAPABILITY '))!);
}

const sorted = (xs: string[]) => [...xs].sort();

check('CLIENTID is advertised only over TLS: not in the plaintext greeting or CAPABILITY; after STARTTLS and on imaps; nothing else changes', async () => {
  await setup();
  const plain = await open(dv, 'plain');
  const plainGreeting = capsOf(plain.greeting);
  assert.ok(plainGreeting.includes('STARTTLS'), plain.greeting);
  assert.not.ok(plainGreeting.includes('CLIENTID'), plain.greeting);
  const plainCaps = await capability(plain.c);
  assert.not.ok(plainCaps.includes('CLIENTID'), plainCaps.join(' '));
  assert.is(await cmd(plain.c, 's1', 'STARTTLS'), 'OK Begin TLS negotiation now.');
  await plain.c.startTls();
  const afterStarttls = await capability(plain.c);
  // Dovecot's default list, with STARTTLS gone (as without the plugin) and CLIENTID added.
  assert.equal(sorted(afterStarttls), sorted([...plainCaps.filter((x) => x !== 'STARTTLS'), 'CLIENTID']));
  plain.c.close();

  const imaps = await open(dv, 'imaps');
  assert.equal(sorted(capsOf(imaps.greeting)), sorted(afterStarttls), imaps.greeting);
  assert.equal(sorted(await capability(imaps.c)), sorted(afterStarttls));
  imaps.c.close();
});

check('replies: OK once per connection, BAD for a second, NO [PRIVACYREQUIRED] in the clear, syntax errors as imap-login\'s own BAD', async () => {
  await setup();
  const t = await open(dv, 'imaps');
  assert.is(await cmd(t.c, 'a1', `CLIENTID UUID ${TOKEN}`), 'OK CLIENTID completed.');
  assert.is(await cmd(t.c, 'a2', `CLIENTID UUID ${TOKEN}`), 'BAD CLIENTID was already sent.');
  assert.is(await cmd(t.c, 'a3', 'CLIENTID UUID another-token'), 'BAD CLIENTID was already sent.');
  // A second CLIENTID is not a syntax error: it does not count towards imap-login's limit of three.
  for (const tag of ['a4', 'a5', 'a6']) assert.is(await cmd(t.c, tag, 'CLIENTID UUID x'), 'BAD CLIENTID was already sent.');
  assert.is(await cmd(t.c, 'a7', 'NOOP'), 'OK NOOP completed.');
  t.c.close();

  // In the clear: refused whatever its arguments, and refusing it does not use up the connection's one CLIENTID.
  const p = await open(dv, 'plain');
  assert.is(await cmd(p.c, 'b1', `CLIENTID UUID ${TOKEN}`), PRIVACY);
  assert.is(await cmd(p.c, 'b2', 'CLIENTID'), PRIVACY);
  assert.is(await cmd(p.c, 'b3', 'STARTTLS'), 'OK Begin TLS negotiation now.');
  await p.c.startTls();
  assert.is(await cmd(p.c, 'b4', `CLIENTID UUID ${TOKEN}`), 'OK CLIENTID completed.');
  p.c.close();

  // Syntax errors: imap-login's own reply and its limit (the third invalid command ends the connection).
  const s = await open(dv, 'starttls');
  assert.is(await cmd(s.c, 'c1', 'CLIENTID UUID'), SYNTAX);
  assert.is(await cmd(s.c, 'c2', 'CLIENTID'), SYNTAX);
  assert.is(await cmd(s.c, 'c3', 'CLIENTID U_ID x'), 'BYE Too many invalid IMAP commands.');
  const after = await s.c.readLine().then((l) => `read ${l}`, (e: unknown) => String(e));
  assert.match(after, /closed by the server/);
});

interface Case { name: string; args: string | Buffer; reply: string | RegExp; literal?: boolean }
const upTo = (n: number) => Array.from({ length: n }, (_, i) => String.fromCharCode(0x21 + (i % 94))).join('');
const atomToken = (n: number) => 'x'.repeat(n);
const quote = (s: string) => `"${s.replace(/["\\]/g, '\\$&')}"`;
const bytes = (...parts: Array<string | number[]>) => Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));

const CASES: Case[] = [
  { name: 'a 16-character type', args: 'ABCDEFGHIJKLMNOP tok', reply: 'OK CLIENTID completed.' },
  { name: 'a 17-character type', args: 'ABCDEFGHIJKLMNOPQ tok', reply: SYNTAX },
  { name: 'a type of letters, digits and hyphens, lower case', args: 'tbird-uuid2 tok', reply: 'OK CLIENTID completed.' },
  { name: 'an underscore in the type', args: 'DEVICE_ID tok', reply: SYNTAX },
  { name: 'a dot in the type', args: 'UU.ID tok', reply: SYNTAX },
  { name: 'an 8-bit byte in a quoted type', args: bytes('"U', [0xdc], 'ID" tok'), reply: SYNTAX },
  { name: 'an empty type', args: '"" tok', reply: SYNTAX },
  { name: 'a 128-byte token of every printable character, quoted', args: `UUID ${quote(upTo(128))}`, reply: 'OK CLIENTID completed.' },
  { name: 'a 128-byte atom token', args: `UUID ${atomToken(128)}`, reply: 'OK CLIENTID completed.' },
  { name: 'a 129-byte token', args: `UUID ${atomToken(129)}`, reply: SYNTAX },
  { name: 'a 129-byte quoted token', args: `UUID ${quote(upTo(129))}`, reply: SYNTAX },
  { name: 'an empty token', args: 'UUID ""', reply: SYNTAX },
  { name: 'a space in a quoted token', args: 'UUID "a b"', reply: SYNTAX },
  { name: 'a tab in a quoted token', args: 'UUID "a\tb"', reply: SYNTAX },
  { name: 'an 8-bit byte in a quoted token', args: bytes('UUID "caf', [0xe9], '"'), reply: SYNTAX },
  { name: 'an 8-bit byte in an atom token (imap-login\'s parser)', args: bytes('UUID caf', [0xe9]), reply: /^BAD 8bit data in atom/ },
  { name: 'a NUL in an atom token (imap-login\'s parser)', args: bytes('UUID ab', [0], 'cd'), reply: /^BAD / },
  { name: 'a NUL in a quoted token (imap-login\'s parser)', args: bytes('UUID "ab', [0], 'cd"'), reply: /^BAD / },
  { name: 'a NUL in a literal token', args: bytes('UUID {5}\r\nab', [0], 'cd'), reply: SYNTAX, literal: true },
  { name: 'a synchronising literal token', args: 'UUID {5}\r\nabcde', reply: 'OK CLIENTID completed.', literal: true },
  { name: 'a non-synchronising literal token (LITERAL+)', args: 'UUID {5+}\r\nabcde', reply: 'OK CLIENTID completed.' },
  { name: 'a literal type', args: '{4+}\r\nUUID tok', reply: 'OK CLIENTID completed.' },
  { name: 'a literal token with CRLF inside', args: 'UUID {4+}\r\na\r\nb', reply: SYNTAX },
  { name: 'a literal larger than a line', args: 'UUID {100000}', reply: /^BYE / },
  { name: 'no arguments', args: '', reply: SYNTAX },
  { name: 'only a type', args: 'UUID', reply: SYNTAX },
  { name: 'an extra argument', args: 'UUID tok extra', reply: SYNTAX },
  // RFC 3501: an astring NIL is the three letters (nil exists only where nstring is allowed).
  { name: 'NIL as the token', args: 'UUID NIL', reply: 'OK CLIENTID completed.' },
  { name: 'a list as the token', args: 'UUID (a b)', reply: SYNTAX },
  { name: 'a list as the type', args: '(UUID) tok', reply: SYNTAX },
  { name: 'an unterminated quoted token', args: 'UUID "abc', reply: /^BAD / },
  { name: 'a 20,000-byte line', args: `UUID ${'y'.repeat(20_000)}`, reply: /^(BAD|BYE) / },
];

check(`bounds and odd input: ${CASES.length} cases, each over TLS on its own connection, each followed by a well-formed CLIENTID`, async () => {
  await setup();
  const seen: string[] = [];
  for (const k of CASES) {
    const { c } = await open(dv, 'imaps');
    const args = typeof k.args === 'string' ? Buffer.from(k.args, 'latin1') : k.args;
    c.sendRaw(Buffer.concat([Buffer.from(args.length === 0 ? 'k1 CLIENTID' : 'k1 CLIENTID '), args, Buffer.from('\r\n')]));
    const { lines, final } = await replyTo(c, 'k1');
    seen.push(`${k.name}: ${final}`);
    if (typeof k.reply === 'string') assert.is(final, k.reply, k.name);
    else assert.ok(k.reply.test(final), `${k.name}: ${final}`);
    if (k.literal === true) assert.ok(lines.includes('+ OK'), `${k.name}: no continuation`);
    if (final.startsWith('BYE ')) {
      c.close();
      continue;
    }
    // A refused CLIENTID is not the connection's one CLIENTID; an accepted one is.
    const next = await cmd(c, 'k2', `CLIENTID UUID ${TOKEN}`);
    assert.is(next, final.startsWith('OK') ? 'BAD CLIENTID was already sent.' : 'OK CLIENTID completed.', `${k.name}: then ${next}`);
    c.close();
  }
  process.stderr.write(`  (replies: ${seen.join('; ')})\n`);
  // imap-login still answers.
  const { c } = await open(dv, 'imaps');
  assert.is(await cmd(c, 'z1', `CLIENTID UUID ${TOKEN}`), 'OK CLIENTID completed.');
  c.close();
});

check('CLIENTID after login reaches the imap process, which answers as real Dovecot does: BAD, unknown command', async () => {
  await setup();
  const { c } = await open(dv, 'imaps');
  assert.is(await cmd(c, 'a1', 'CLIENTID UUID bob-device'), 'OK CLIENTID completed.');
  assert.match(await cmd(c, 'a2', 'LOGIN bob@example.com bob-pw'), /^OK .*Logged in/);
  assert.match(await cmd(c, 'a3', 'CLIENTID UUID bob-device'), /^BAD Error in IMAP command CLIENTID: Unknown command/);
  assert.match(await cmd(c, 'a4', 'CLIENTID'), /^BAD Error in IMAP command CLIENTID: Unknown command/);
  assert.match(await cmd(c, 'a5', 'NOOP'), /^OK NOOP completed/);
  c.close();
});

check('a server requiring TLS: CLIENTID before STARTTLS gets NO [PRIVACYREQUIRED], after it OK; imap_capability "+X" keeps its meaning', async () => {
  const s = await startStrict();
  // Not from 127.0.0.1 to 127.0.0.1: Dovecot counts such a connection as secured and allows LOGIN.
  const p = await open(s, 'plain', '127.0.7.30');
  const greeting = capsOf(p.greeting);
  assert.ok(greeting.includes('LOGINDISABLED') && greeting.includes('XCIDLOCK-TEST') && greeting.includes('IMAP4rev1'), p.greeting);
  assert.not.ok(greeting.includes('CLIENTID'), p.greeting);
  assert.is(await cmd(p.c, 'a1', `CLIENTID UUID ${TOKEN}`), PRIVACY);
  assert.is(await cmd(p.c, 'a2', 'STARTTLS'), 'OK Begin TLS negotiation now.');
  await p.c.startTls();
  const caps = await capability(p.c);
  // Over TLS the password mechanisms appear too (disable_plaintext_auth hides them before).
  const noAuth = (xs: string[]) => xs.filter((x) => !x.startsWith('AUTH='));
  assert.ok(caps.includes('AUTH=PLAIN'), caps.join(' '));
  assert.equal(sorted(noAuth(caps)), sorted([...noAuth(greeting).filter((x) => x !== 'STARTTLS' && x !== 'LOGINDISABLED'), 'CLIENTID']));
  assert.is(await cmd(p.c, 'a3', `CLIENTID UUID ${TOKEN}`), 'OK CLIENTID completed.');
  p.c.close();
  const t = await open(s, 'imaps');
  assert.equal(sorted(capsOf(t.greeting)), sorted(caps));
  t.c.close();
});

/** LOGIN on a prepared connection; the tagged reply. */
async function loginWith(mode: Mode, clientid: string | null, remote: string, d: Dovecot = dv): Promise<string> {
  const { c } = await open(d, mode, remote);
  try {
    if (clientid !== null) assert.is(await cmd(c, 'a1', `CLIENTID ${clientid}`), 'OK CLIENTID completed.');
    return await cmd(c, 'a2', 'LOGIN alice@example.com alice-pw');
  } finally {
    c.close();
  }
}

const decisions = (remote: string) => cl.lines.filter((l) => l.event === 'decision' && l.user === 'alice@example.com' && l.remote === remote);

check('an accepted CLIENTID reaches cidlock: the registered device logs in under enforce, another CID gets the wrong-password reply', async () => {
  await setup();
  assert.match(await loginWith('imaps', `UUID ${TOKEN}`, '127.0.7.1'), /^OK .*Logged in/);
  const ok = decisions('127.0.7.1');
  assert.is(ok.length, 1, JSON.stringify(ok));
  assert.equal([ok[0]!.action, ok[0]!.reason, ok[0]!.cid_via], ['allow', 'registered_device', 'clientid']);
  assert.match(await loginWith('starttls', `uuid ${TOKEN}`, '127.0.7.2'), /^OK .*Logged in/, 'the type is compared as the registry does (upper-cased)');

  assert.is(await loginWith('imaps', 'UUID 00000000-not-registered', '127.0.7.3'), FAILED);
  assert.is(decisions('127.0.7.3')[0]!.reason, 'unknown_device');
  assert.is(await loginWith('imaps', `LICENSE ${TOKEN}`, '127.0.7.4'), FAILED, 'the type is part of the CID');
  assert.is(await loginWith('imaps', null, '127.0.7.5'), FAILED);
  assert.is(decisions('127.0.7.5')[0]!.reason, 'no_device_proof');

  // A CID sent in the clear was refused by the plugin, so it never reaches cidlock, even after STARTTLS.
  const { c } = await open(dv, 'plain', '127.0.7.6');
  assert.is(await cmd(c, 'a1', `CLIENTID UUID ${TOKEN}`), PRIVACY);
  assert.is(await cmd(c, 'a2', 'STARTTLS'), 'OK Begin TLS negotiation now.');
  await c.startTls();
  assert.is(await cmd(c, 'a3', 'LOGIN alice@example.com alice-pw'), FAILED);
  c.close();
  assert.is(decisions('127.0.7.6')[0]!.reason, 'no_device_proof');
  // A wrong password with the registered device is refused as usual.
  const { c: w } = await open(dv, 'imaps', '127.0.7.7');
  assert.is(await cmd(w, 'a1', `CLIENTID UUID ${TOKEN}`), 'OK CLIENTID completed.');
  assert.is(await cmd(w, 'a2', 'LOGIN alice@example.com guess'), FAILED);
  // ...and the next try on the same connection still carries the CID (the forward fields stay).
  assert.match(await cmd(w, 'a3', 'LOGIN alice@example.com alice-pw'), /^OK .*Logged in/);
  w.close();
});

/** Command lines of the running imap-login processes (their titles). */
function loginTitles(): string[] {
  const out: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'latin1').replace(/\0/g, ' ');
      if (cmdline.includes('imap-login')) out.push(cmdline);
    } catch { /* gone */ }
  }
  return out;
}

check('the token is never logged: not in imap-login\'s lines or titles; with auth_debug = no nowhere in Dovecot\'s log', async () => {
  const s = await startStrict();
  const secret = 'never-logged-7f3e9a0c1b2d';
  const { c } = await open(s, 'imaps', '127.0.7.20');
  assert.is(await cmd(c, 'a1', `CLIENTID UUID ${secret}`), 'OK CLIENTID completed.');
  const titles = loginTitles();
  assert.ok(titles.length > 0);
  assert.not.ok(titles.some((t) => t.includes(secret)), titles.join('\n'));
  assert.is(await cmd(c, 'a2', 'LOGIN alice@example.com alice-pw'), FAILED);
  c.close();
  // It did reach cidlock (refused: not registered), so the fields were sent.
  const d = await cl.waitFor((l) => l.event === 'decision' && l.remote === '127.0.7.20', 'the decision');
  assert.is(d.reason, 'unknown_device');
  await new Promise((r) => setTimeout(r, 300));
  assert.match(s.log(), /imap-login: Info: Disconnected/);
  assert.not.ok(s.log().includes(secret), s.log());

  // With auth_debug = yes, Dovecot's auth process logs the forward fields (its own debug lines,
  // like the policy request body); imap-login's lines never hold the token.
  await setup();
  assert.match(await loginWith('imaps', `UUID ${TOKEN}`, '127.0.7.21'), /^OK .*Logged in/);
  await new Promise((r) => setTimeout(r, 300));
  const lines = dv.log().split('\n');
  assert.ok(lines.some((l) => / auth: Debug: .*forward_fields=.*clientid=/.test(l) && l.includes(TOKEN)), 'auth_debug logs the forward fields');
  const loginLines = lines.filter((l) => / imap-login: /.test(l));
  assert.ok(loginLines.some((l) => l.includes('rip=127.0.7.21')));
  assert.not.ok(loginLines.some((l) => l.includes(TOKEN)), loginLines.join('\n'));
});

// ---- fuzz ----

/** A small seeded generator (mulberry32), so a failing run can be replayed with CLIENTID_FUZZ_SEED. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function fuzzer(rand: () => number) {
  const int = (n: number) => Math.floor(rand() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const TYPE_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-';
  // Bytes for random content: never CR, LF or '{' (a stray "{5}" at a line's end would make the
  // server wait for a literal that never comes); literals are made on purpose below, exact.
  const anyByte = () => {
    for (;;) {
      const b = int(256);
      if (b !== 0x0d && b !== 0x0a && b !== 0x7b) return b;
    }
  };
  const printable = () => {
    for (;;) {
      const b = 0x21 + int(94);
      if (b !== 0x7b) return b;
    }
  };
  const len = () => pick([0, 1, 2, 15, 16, 17, 127, 128, 129, 300, int(40), int(200), int(3000)]);
  const from = (n: number, gen: () => number) => Buffer.from(Array.from({ length: n }, gen));
  const validType = () => Buffer.from(Array.from({ length: 1 + int(16) }, () => TYPE_CHARS[int(TYPE_CHARS.length)]!).join(''));
  const validToken = () => from(1 + int(128), printable);
  const word = (): Buffer => {
    switch (int(9)) {
      case 0: return validType();
      case 1: return validToken();
      case 2: return from(len(), printable);
      case 3: return from(len(), anyByte);
      case 4: { // quoted, escaped or not
        const body = from(len(), anyByte).toString('latin1');
        return Buffer.from(rand() < 0.7 ? `"${body.replace(/["\\]/g, '\\$&')}"` : `"${body}"`, 'latin1');
      }
      case 5: { // literal, synchronising or not, exact size (CR/LF inside allowed)
        const body = Buffer.from(Array.from({ length: len() }, () => int(256)));
        return Buffer.concat([Buffer.from(`{${body.length}${rand() < 0.5 ? '+' : ''}}\r\n`), body]);
      }
      case 6: return Buffer.from(pick(['NIL', '()', '(a b)', '""', '"\\', '\\', ')', '%', '*', ']', '[']));
      case 7: return from(1, anyByte);
      default: return from(len(), () => pick([0x00, 0x09, 0x20, 0x7f, 0x80, 0xff, 0x41]));
    }
  };
  return {
    int,
    /** One CLIENTID line (without tag and CRLF). */
    clientid(): Buffer {
      const r = rand();
      const name = Buffer.from(pick(['CLIENTID', 'CLIENTID', 'clientid', 'ClientId']));
      if (r < 0.25) return Buffer.concat([name, Buffer.from(' '), validType(), Buffer.from(' '), validToken()]);
      if (r < 0.3) return Buffer.concat([name, Buffer.from(' UUID '), Buffer.alloc(5000 + int(20_000), 0x61)]);
      const parts: Buffer[] = [name];
      const n = pick([0, 1, 2, 2, 2, 3, 4, 6]);
      for (let i = 0; i < n; i++) parts.push(Buffer.from(pick([' ', ' ', ' ', '  ', '\t', ''])), word());
      return Buffer.concat(parts);
    },
  };
}

interface FuzzStats { lines: number; connections: number; logins: number; starttls: number; replies: Record<string, number> }

async function fuzzWorker(rand: () => number, quota: { left: number }, stats: FuzzStats): Promise<void> {
  const f = fuzzer(rand);
  let seq = 0;
  while (quota.left > 0) {
    const mode: Mode = rand() < 0.5 ? 'imaps' : 'plain';
    const { c } = await open(dv, mode);
    stats.connections++;
    let tls = mode === 'imaps';
    let loggedIn = false;
    try {
      for (let n = 1 + f.int(60); n > 0 && quota.left > 0; n--) {
        const r = rand();
        const tag = `f${++seq}`;
        if (r < 0.03 && !tls && !loggedIn) {
          const reply = await cmd(c, tag, 'STARTTLS');
          if (!reply.startsWith('OK')) break;
          await c.startTls();
          tls = true;
          stats.starttls++;
          continue;
        }
        if (r < 0.06 && !loggedIn) {
          // bob's right password (monitor mode: let in); now and then alice (enforce: refused after the failure delay)
          const who = rand() < 0.05 ? 'alice@example.com alice-pw' : 'bob@example.com bob-pw';
          const reply = await cmd(c, tag, `LOGIN ${who}`);
          stats.logins++;
          if (reply.startsWith('BYE')) break;
          loggedIn = reply.startsWith('OK');
          if (loggedIn) n = Math.min(n, 3); // a few lines for the imap process, then reconnect
          continue;
        }
        quota.left--;
        stats.lines++;
        c.sendRaw(Buffer.concat([Buffer.from(`${tag} `), f.clientid(), Buffer.from(`\r\nz${seq} NOOP\r\n`)]));
        // Replies to garbage may be untagged; the NOOP after each line marks where its replies end.
        const lines = await c.readUntil((l) => l.startsWith(`z${seq} `) || l.startsWith('* BYE '));
        const mine = lines.find((l) => l.startsWith(`${tag} `)) ?? lines.find((l) => l.startsWith('* BAD') || l.startsWith('* BYE')) ?? '(none)';
        const kind = mine.replace(/^\S+ /, '').split(' ')[0]!;
        stats.replies[kind] = (stats.replies[kind] ?? 0) + 1;
        if (lines[lines.length - 1]!.startsWith('* BYE ')) break;
      }
    } catch (e) {
      // The server may close on us (BYE, too long a line); anything else is a failure.
      if (!/closed by the server/.test(String(e))) throw e;
    } finally {
      c.close();
    }
  }
}

check('fuzz: 10,000 random CLIENTID lines over real connections (plaintext, STARTTLS, imaps, LOGIN among them); imap-login never crashes', async () => {
  await setup();
  const seed = Number(process.env.CLIENTID_FUZZ_SEED ?? Date.now() % 1_000_000);
  const quota = { left: 10_000 };
  const stats: FuzzStats = { lines: 0, connections: 0, logins: 0, starttls: 0, replies: {} };
  const t0 = Date.now();
  try {
    await Promise.all(Array.from({ length: 4 }, (_, i) => fuzzWorker(rng(seed * 7 + i), quota, stats)));
  } catch (e) {
    throw new Error(`fuzz failed with CLIENTID_FUZZ_SEED=${seed}: ${String(e)}`);
  }
  process.stderr.write(`  (fuzz seed ${seed}: ${stats.lines} lines, ${stats.connections} connections, ${stats.starttls} STARTTLS, ${stats.logins} LOGIN in ${Date.now() - t0} ms; replies ${JSON.stringify(stats.replies)})\n`);
  assert.is(stats.lines, 10_000);
  // Every kind of answer came up: accepted, refused in the clear, repeated, malformed.
  for (const k of ['OK', 'NO', 'BAD']) assert.ok((stats.replies[k] ?? 0) > 0, `no ${k} reply in ${JSON.stringify(stats.replies)}`);
  const log = dv.log();
  for (const bad of ['Panic', 'Fatal', 'killed with signal', 'Error: Raw backtrace']) assert.not.ok(log.includes(bad), `${bad} in Dovecot's log:\n${log.split('\n').filter((l) => l.includes(bad)).join('\n')}`);
  // And it still answers.
  const { c, greeting } = await open(dv, 'imaps');
  assert.ok(capsOf(greeting).includes('CLIENTID'));
  assert.is(await cmd(c, 'z1', `CLIENTID UUID ${TOKEN}`), 'OK CLIENTID completed.');
  c.close();
});

test.run();
