// What a refused or delayed client reads, per server, protocol and SMTP stage. Every expected
// string below was captured from Dovecot 2.3.19 and Postfix 3.7.11; test/e2e/client-replies.test.ts
// checks clientReply against the running servers.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AS_WRONG_PASSWORD, clientReply } from '../src/cli/client-reply.js';
import type { Action, Decision } from '../src/core/decide.js';
import type { AuthRequest } from '../src/core/request.js';
import { cidlock } from './helpers/cli.js';
import { fixturePath } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

const MSG = 'Unknown device: register it at https://example.com/devices';

const req = (protocol: string, stage: string): AuthRequest => ({ protocol, user: 'alice@example.com', remote: '192.0.2.1', tls: true, certFingerprints: [], stage });
const decision = (action: Action, message = '', seconds?: number): Decision => ({
  action, message, mode: 'enforce', would_reject: false, reason: action === 'delay' ? 'limit' : 'unknown_device', rule: 'policy.mode', layer: 'server',
  why: 'test', evidence: [], protocol: { name: 'imap', rule: ['cid'], from: 'policy.protocols.imap' }, ...(seconds === undefined ? {} : { seconds }),
});

test('Dovecot, no message: exactly the wrong-password reply of each protocol', () => {
  const seen = Object.fromEntries(['imap', 'pop3', 'submission', 'sieve', 'smtp'].map((p) => [p, clientReply(req(p, 'before_auth'), decision('reject'))]));
  assert.equal(seen, {
    imap: `NO [AUTHENTICATIONFAILED] Authentication failed.${AS_WRONG_PASSWORD}`,
    pop3: `-ERR [AUTH] Authentication failed.${AS_WRONG_PASSWORD}`,
    submission: `535 5.7.8 Authentication failed.${AS_WRONG_PASSWORD}`,
    sieve: `NO "Authentication failed."${AS_WRONG_PASSWORD}`,
    smtp: `535 5.7.8 Error: authentication failed: (reason unavailable)${AS_WRONG_PASSWORD}`,
  });
  // A protocol with no capture (a new Dovecot service) is described, not invented.
  assert.is(clientReply(req('lmtp', 'before_auth'), decision('reject')), `the server's generic authentication failure${AS_WRONG_PASSWORD}`);
});

test('Dovecot, with a message: the text replaces the generic failure', () => {
  assert.is(clientReply(req('imap', 'before_auth'), decision('reject', MSG)), `NO [ALERT] ${MSG}`);
  assert.is(clientReply(req('pop3', 'before_auth'), decision('reject', MSG)), `-ERR [AUTH] ${MSG}`);
  assert.is(clientReply(req('submission', 'before_auth'), decision('reject', MSG)), `535 5.7.8 ${MSG}`);
  assert.is(clientReply(req('sieve', 'before_auth'), decision('reject', 'see "Devices" \\ help')), 'NO "see \\"Devices\\" \\\\ help"');
  assert.is(clientReply(req('smtp', 'before_auth'), decision('reject', MSG)), `535 5.7.8 Error: authentication failed: ${MSG}`);
});

test('Postfix policy service: 554 5.7.1 worded by the SMTP stage, the message or "Access denied" last', () => {
  const at = (stage: string, message = '') => clientReply(req('smtp', stage), decision('reject', message));
  assert.is(at('RCPT'), '554 5.7.1 <recipient>: Recipient address rejected: Access denied');
  assert.is(at('MAIL'), '554 5.7.1 <sender>: Sender address rejected: Access denied');
  assert.is(at('EHLO'), '554 5.7.1 <helo name>: Helo command rejected: Access denied');
  assert.is(at('HELO'), '554 5.7.1 <helo name>: Helo command rejected: Access denied');
  assert.is(at('DATA'), '554 5.7.1 <DATA>: Data command rejected: Access denied');
  assert.is(at('END-OF-MESSAGE'), '554 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Access denied');
  assert.is(at('RCPT', MSG), `554 5.7.1 <recipient>: Recipient address rejected: ${MSG}`);
});

test('a delay: the usual reply, later; capped as each server caps it', () => {
  assert.is(clientReply(req('imap', 'before_auth'), decision('delay', '', 5)), 'the usual reply, 5 s later: Dovecot waits before it checks the password (a wrong one then gets NO [AUTHENTICATIONFAILED] Authentication failed.)');
  assert.match(clientReply(req('pop3', 'before_auth'), decision('delay', '', 600)), /^the usual reply, 30 s later: .*-ERR \[AUTH\] Authentication failed\.\)$/);
  assert.is(clientReply(req('smtp', 'RCPT'), decision('delay', '', 5)), "the reply to RCPT 5 s later; then the restrictions after cidlock's decide");
  assert.is(clientReply(req('smtp', 'MAIL'), decision('delay', '', 600)), "the reply to MAIL 30 s later; then the restrictions after cidlock's decide");
});

test('offline (cidlock test --protocol): Dovecot protocols as Dovecot says them; smtp on both paths', () => {
  assert.is(clientReply(req('imap', 'offline'), decision('reject')), `NO [AUTHENTICATIONFAILED] Authentication failed.${AS_WRONG_PASSWORD}`);
  assert.is(clientReply(req('smtp', 'offline'), decision('reject', MSG)),
    `at AUTH through Dovecot SASL: 535 5.7.8 Error: authentication failed: ${MSG}; at RCPT through the policy service: 554 5.7.1 <recipient>: Recipient address rejected: ${MSG}`);
  assert.match(clientReply(req('imap', 'offline'), decision('allow')), /usual reply/);
});

function rules(yaml: string): string {
  const file = join(tempDir(), 'cidlock.yaml');
  writeFileSync(file, yaml);
  return file;
}

test('cidlock test --postfix on captured Postfix requests: the RCPT refusal shows 554 5.7.1 as Postfix sends it', () => {
  const capture = fixturePath('captures', 'postfix-3.7-policy-tls-client-cert.txt');
  const r = cidlock(['test', '--config', rules('policy: { mode: enforce }\n'), '--postfix', capture]);
  assert.is(r.status, 1, r.stderr);
  assert.match(r.stdout, /#4: REJECT {2}alice@example\.com smtp from 127\.0\.0\.1 over TLS\n/);
  assert.match(r.stdout, /\n {2}client sees: 554 5\.7\.1 <recipient>: Recipient address rejected: Access denied\n/);
  assert.is(r.stdout.match(/client sees:/g)?.length, 1, 'the unauthenticated CONNECT and EHLO requests are not decided');

  const withMessage = cidlock(['test', '--config', rules(`policy: { mode: enforce, message: "${MSG}" }\n`), '--postfix', capture]);
  assert.match(withMessage.stdout, new RegExp(`client sees: 554 5\\.7\\.1 <recipient>: Recipient address rejected: ${MSG.replace(/[.]/g, '\\.')}\\n`));
});

test('cidlock test --dovecot-json on captured Dovecot requests: IMAP and POP3 replies as Dovecot sends them', () => {
  const r = cidlock(['test', '--config', rules('policy: { mode: enforce }\n'), '--dovecot-json', fixturePath('captures', 'dovecot-2.3.19-imap-pop3.jsonl')]);
  assert.is(r.status, 1, r.stderr);
  assert.match(r.stdout, /client sees: NO \[AUTHENTICATIONFAILED\] Authentication failed\. \(as for a wrong password\)\n/);
  assert.match(r.stdout, /client sees: -ERR \[AUTH\] Authentication failed\. \(as for a wrong password\)\n/);
});

test.run();
