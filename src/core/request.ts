import type { Cid } from './cid.js';

/**
 * One login attempt, as every adapter describes it. Adapters translate their protocol into this
 * and the core never sees HTTP bodies or Postfix attributes.
 */
export interface AuthRequest {
  /** imap, pop3, submission, smtp, sieve, ... (lowercase). */
  protocol: string;
  /**
   * The account whose credentials are presented, as the mail server names it after its own
   * translations (lowercased ASCII; a name without a domain has accounts.default_domain added).
   * For a master-user login, the master user.
   */
  user: string;
  /** The mailbox a master user logs into, when it is not `user`. */
  mailbox?: string;
  /** The name exactly as the client typed it, when the server turned it into another account name. */
  loginName?: string;
  /** Normalised client address, or null when the server did not give a valid one. */
  remote: string | null;
  /** The client's channel is encrypted (TLS to the mail server). */
  tls: boolean;
  /** A well-formed CID the client presented. */
  cid?: Cid;
  /**
   * How the CID arrived: the CLIENTID command (through cidlock's Dovecot login plugin, which
   * accepts it only over TLS, so it counts as sent over TLS), or a field of the IMAP ID.
   */
  cidVia?: 'clientid' | 'imap_id';
  /** The IMAP ID carried a CID that differs from the CLIENTID one; the CLIENTID one decided. */
  cidMismatch?: boolean;
  /** Why a presented CID was unusable (malformed); the CID then counts as absent. */
  cidProblem?: string;
  /** Normalised SHA-256 fingerprints of a TLS client certificate: public key first, then certificate. */
  certFingerprints: readonly string[];
  /** Client software name and OS from the IMAP ID, when sent. */
  clientName?: string;
  clientOs?: string;
  /** The IMAP ID "version" field, shown to the account holder next to the name. */
  clientVersion?: string;
  /** Where in the login the server asks: before_auth, after_auth, RCPT, offline (cidlock test). */
  stage: string;
  /** The server's session id, for correlating log lines. */
  sessionId?: string;
  /** Which adapter connection carried the request (e.g. "postfix#3"), for the log. */
  via?: string;
  /** An opaque tag of the password guess (Dovecot's truncated pwhash): repeats count once. Never logged. */
  guessTag?: string;
}
