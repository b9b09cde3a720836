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
  if (req.cidVia !== undefined) rec.cid_via = req.cidVia;
  if (req.cidMismatch === true) rec.cid_mismatch = true;
  if (d.limit !== undefined) rec.limit = d.limit;
  if (d.learn !== undefined) rec.learn = d.learn.kind === 'cid' ? { kind: 'cid', device: d.learn.hashPrefix } : { kind: 'cert', device: d.learn.fingerprint.slice(0, 12) };
  return rec;
}
