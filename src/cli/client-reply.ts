import { answerFor } from '../dovecot-policy/answer.js';
import { policyAction } from '../postfix-policy/policy-action.js';
import type { Decision } from '../core/decide.js';
import { clampDelaySeconds } from '../core/delay.js';
import type { AuthRequest } from '../core/request.js';

/*
 * What a mail client is sent when cidlock refuses or delays its login. cidlock never talks to the
 * client: it answers Dovecot or Postfix (answerFor, policyAction), and the server words the reply.
 * Every string here was captured from Dovecot 2.3.19 and Postfix 3.7.11, and
 * test/e2e/client-replies.test.ts checks each against the real servers.
 */

/** Dovecot's reply when the policy answers -1 with an empty msg: exactly its wrong-password reply. */
const DOVECOT_FAILED: Readonly<Record<string, string>> = {
  imap: 'NO [AUTHENTICATIONFAILED] Authentication failed.',
  pop3: '-ERR [AUTH] Authentication failed.',
  submission: '535 5.7.8 Authentication failed.',
  sieve: 'NO "Authentication failed."',
  // SMTP AUTH in Postfix through Dovecot SASL: Postfix words it, Dovecot gives no reason.
  smtp: '535 5.7.8 Error: authentication failed: (reason unavailable)',
};

/** Dovecot's reply when the policy answers -1 with a msg: the text replaces the generic failure. */
const DOVECOT_MESSAGE: Readonly<Record<string, (msg: string) => string>> = {
  imap: (m) => `NO [ALERT] ${m}`,
  pop3: (m) => `-ERR [AUTH] ${m}`,
  submission: (m) => `535 5.7.8 ${m}`,
  sieve: (m) => `NO ${sieveString(m)}`,
  smtp: (m) => `535 5.7.8 Error: authentication failed: ${m}`,
};

/** ManageSieve sends text as a quoted string, escaping `"` and `\` (rules messages are one line of ASCII). */
const sieveString = (m: string) => `"${m.replace(/["\\]/g, '\\$&')}"`;

/** Appended where the reply is exactly the one a wrong password gets. */
export const AS_WRONG_PASSWORD = ' (as for a wrong password)';

/**
 * How Postfix words a policy REJECT at each SMTP stage: `<what was checked>: <list> rejected: <text>`.
 * At RCPT this is the wording of smtpd_relay_restrictions and smtpd_recipient_restrictions, where
 * `cidlock config postfix` puts the check (from smtpd_client_restrictions it would read
 * `<name[address]>: Client host rejected`).
 */
const POSTFIX_STAGE: Readonly<Record<string, string>> = {
  RCPT: '<recipient>: Recipient address rejected',
  MAIL: '<sender>: Sender address rejected',
  EHLO: '<helo name>: Helo command rejected',
  HELO: '<helo name>: Helo command rejected',
  DATA: '<DATA>: Data command rejected',
  'END-OF-MESSAGE': '<END-OF-MESSAGE>: End-of-data rejected',
};

/** Stages of a Dovecot request; a Postfix request's stage is its protocol_state, cidlock test's is offline. */
const DOVECOT_STAGES = new Set(['before_auth', 'report']);

function dovecotReply(protocol: string, d: Decision): string {
  const a = answerFor(d);
  if (a.status > 0) {
    const failed = DOVECOT_FAILED[protocol];
    return `the usual reply, ${a.status} s later: Dovecot waits before it checks the password${failed === undefined ? '' : ` (a wrong one then gets ${failed})`}`;
  }
  const msg = a.msg ?? '';
  if (msg === '') {
    const failed = DOVECOT_FAILED[protocol];
    return failed === undefined ? `the server's generic authentication failure${AS_WRONG_PASSWORD}` : `${failed}${AS_WRONG_PASSWORD}`;
  }
  const withMessage = DOVECOT_MESSAGE[protocol];
  return withMessage === undefined ? `an authentication failure with the text ${JSON.stringify(msg)}` : withMessage(msg);
}

function postfixReply(stage: string, d: Decision): string {
  if (d.action === 'delay') {
    const s = clampDelaySeconds(d.seconds);
    return `the reply to ${stage} ${s} s later; then the restrictions after cidlock's decide`;
  }
  const action = policyAction(d);
  // Postfix answers REJECT 5.7.1 with 554 5.7.1.
  const m = /^REJECT (\d\.\d\.\d) (.*)$/.exec(action);
  if (m === null) return `Postfix's reply to ${action}`;
  // A stage with no capture (VRFY, ETRN) keeps the shape, not invented words.
  const where = POSTFIX_STAGE[stage] ?? '<...>: ... rejected';
  return `554 ${m[1]} ${where}: ${m[2]}`;
}

/**
 * The reply a client gets for a decision that is not a plain allow, as the real server sends it:
 * Dovecot (IMAP, POP3, submission, ManageSieve, and SMTP AUTH in Postfix through Dovecot SASL)
 * before the password is checked, or Postfix's policy service at the SMTP stage of the request.
 * Offline (`cidlock test`), SMTP can be either path: both replies are given.
 */
export function clientReply(req: AuthRequest, d: Decision): string {
  if (d.action === 'allow') return 'the server\'s usual reply: cidlock lets the password decide';
  if (DOVECOT_STAGES.has(req.stage)) return dovecotReply(req.protocol, d);
  if (req.stage !== 'offline') return postfixReply(req.stage, d);
  if (req.protocol !== 'smtp') return dovecotReply(req.protocol, d);
  return `at AUTH through Dovecot SASL: ${dovecotReply('smtp', d)}; at RCPT through the policy service: ${postfixReply('RCPT', d)}`;
}
