import type { Decision } from '../core/decide.js';
import type { AuthRequest } from '../core/request.js';
import { clientReply } from './client-reply.js';

const LAYER_TEXT = {
  default: 'built-in default',
  server: 'server policy',
  domain: 'domain rule',
  registry: 'registry (cidlock users set)',
  user: 'users: entry in the rules file',
} as const;

/** What `cidlock test` prints: the verdict first, then the reasoning an operator can check. */
export function explainText(req: AuthRequest, d: Decision): string {
  const verdict = d.would_reject
    ? 'ALLOW (monitor mode; enforce would REJECT: would_reject)'
    : d.action === 'allow'
      ? 'ALLOW'
      : d.action === 'delay'
        ? `DELAY ${d.seconds ?? 0}s`
        : d.action.toUpperCase();
  const lines = [
    `${verdict}  ${req.user} ${req.protocol} from ${req.remote ?? '(no address)'}${req.tls ? ' over TLS' : ' without TLS'}`,
    `  reason:   ${d.reason}: ${d.why}`,
    `  rule:     ${d.rule}`,
    `  mode:     ${d.mode}, set by the ${LAYER_TEXT[d.layer]}`,
    `  accepts:  ${d.protocol.name} ${typeof d.protocol.rule === 'string' ? d.protocol.rule : `[${d.protocol.rule.join(', ')}]`} (${d.protocol.from})`,
  ];
  if (d.evidence.length === 0) lines.push('  evidence: none considered');
  for (const [i, e] of d.evidence.entries()) {
    const flag = e.used ? 'decided' : e.accepted ? 'accepted kind' : 'not accepted here';
    lines.push(`  ${i === 0 ? 'evidence:' : '         '} ${e.kind} ${e.status} [${flag}]: ${e.detail}`);
  }
  if (d.learn !== undefined) lines.push(`  learn:    on success the device is registered (source learn, label ${JSON.stringify(d.learn.label)})`);
  if (d.action !== 'allow') {
    lines.push(`  client sees: ${clientReply(req, d)}`);
  }
  return lines.join('\n');
}
