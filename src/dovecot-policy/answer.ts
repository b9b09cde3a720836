import type { Decision } from '../core/decide.js';

/** Dovecot waits at most 150 s for an auth request; a tarpit must stay well inside that. */
export const MAX_DELAY_SECONDS = 30;

export interface PolicyAnswer {
  status: number;
  msg?: string;
}

/**
 * A decision as Dovecot's auth_policy reads it: -1 fails the login (before the password is
 * checked when asked before auth), N > 0 tarpits N seconds, 0 continues. An empty msg makes the
 * client see exactly the wrong-password reply.
 */
export function answerFor(d: Decision): PolicyAnswer {
  switch (d.action) {
    case 'allow':
      return { status: 0 };
    case 'delay':
      return { status: Math.max(1, Math.min(MAX_DELAY_SECONDS, Math.round(d.seconds ?? 1))) };
    // Dovecot has no "try again later": a temporary failure is a refusal for this attempt.
    case 'reject':
    case 'tempfail':
      return { status: -1, msg: d.message };
  }
}
