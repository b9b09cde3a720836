import type { Decision } from '../core/decide.js';

/** The Postfix action for a decision. Never OK (later restrictions must still apply), never empty. */
export function policyAction(d: Decision): string {
  switch (d.action) {
    case 'allow':
    case 'delay': // the tarpit is the delayed reply itself
      return 'DUNNO';
    case 'reject':
      return `REJECT 5.7.1 ${(d.message || 'Access denied').replace(/[\r\n]/g, ' ')}`;
  }
}

const DUNNO_REPLY = 'action=DUNNO\n\n';

export function formatReply(action: string): string {
  // Bare LF: a CRLF reply makes Postfix wait for the rest until it times out.
  return action === 'DUNNO' ? DUNNO_REPLY : `action=${action}\n\n`;
}
