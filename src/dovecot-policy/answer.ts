import type { Decision } from '../core/decide.js';
import { clampDelaySeconds } from '../core/delay.js';

export interface PolicyAnswer {
  status: number;
  msg?: string;
}

/**
 * A decision as Dovecot's auth_policy reads it: -1 fails the login (before the password is
 * checked when asked before auth), N > 0 tarpits N seconds, 0 continues. An empty msg makes the
 * client see exactly the wrong-password reply.
 */
export function answerFor(d: Pick<Decision, 'action' | 'seconds' | 'message'>): PolicyAnswer {
  switch (d.action) {
    case 'allow':
      return { status: 0 };
    case 'delay':
      return { status: clampDelaySeconds(d.seconds) };
    case 'reject':
      return { status: -1, msg: d.message };
  }
}
