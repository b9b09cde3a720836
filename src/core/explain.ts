import { clientReply } from './client-reply.js';
import type { Decision } from './decide.js';
import type { AuthRequest } from './request.js';

/** The one structured record of a decision: the daemons log it, `cidlock test --json` prints it. */
export function decisionRecord(req: AuthRequest, d: Decision): Record<string, unknown> {
  const rec: Record<string, unknown> = {
    event: 'decision',
    user: req.user,
    protocol: req.protocol,
    remote: req.remote,
    tls: req.tls,
    stage: req.stage,
    action: d.action,
    mode: d.mode,
    would_reject: d.would_reject,
    reason: d.reason,
    rule: d.rule,
    layer: d.layer,
    why: d.why,
    evidence: d.evidence.map(({ kind, status, used, accepted, device, detail }) => ({ kind, status, used, accepted, ...(device ? { device } : {}), detail })),
  };
  if (d.seconds !== undefined) rec.seconds = d.seconds;
  if (req.mailbox !== undefined) rec.mailbox = req.mailbox;
  if (req.loginName !== undefined) rec.login_name = req.loginName;
  if (req.sessionId) rec.session = req.sessionId;
  if (req.via) rec.via = req.via;
  if (req.clientName !== undefined) rec.client_name = req.clientName;
  if (d.limit !== undefined) rec.limit = d.limit;
  if (d.learn !== undefined) rec.learn = d.learn.kind === 'cid' ? { kind: 'cid', device: d.learn.hashPrefix } : { kind: 'cert', device: d.learn.fingerprint.slice(0, 12) };
  return rec;
}

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
