import { openAuditLog, type AuditLog } from '../alerts/audit-log.js';
import { createEventSink, type EventSink } from '../alerts/events.js';
import { createWebhook, type Webhook } from '../alerts/webhook.js';
import type { Logger } from '../core/log.js';
import type { Metrics } from '../core/metrics.js';
import type { Rules } from '../core/rules/types.js';

/** The audit log and webhook follow the rules: a reload that changes them reopens them. */
export function createOutputs(logger: Logger, metrics: Metrics) {
  let audit: AuditLog | null = null;
  let webhook: Webhook | null = null;
  let auditKey = '';
  let webhookKey = '';
  const auditErrors = metrics.counter('audit_write_errors_total', 'Audit log writes that failed (disk full, read-only)');
  const configure = (rules: Rules) => {
    const ak = JSON.stringify(rules.audit);
    if (ak !== auditKey) {
      audit?.close();
      auditKey = ak;
      audit = rules.audit.file === '' ? null : openAuditLog(rules.audit.file, rules.audit.fsync, (error) => logger.log('error', 'audit_write_failed', { error }));
    }
    const wk = JSON.stringify(rules.webhook);
    if (wk !== webhookKey) {
      void webhook?.close();
      webhookKey = wk;
      webhook = rules.webhook === null ? null : createWebhook({
        url: rules.webhook.url,
        secret: rules.webhook.secret,
        maxQueue: rules.webhook.queue,
        maxAttempts: rules.webhook.attempts,
        onError: (i) => logger.log(i.final ? 'error' : 'warn', 'webhook_delivery_failed', { event: i.event, attempt: i.attempt, error: i.error, final: i.final }),
      });
    }
  };
  let lastAuditErrors = 0;
  const sink = createEventSink({
    logger,
    audit: {
      write: (e) => {
        if (audit === null) return;
        audit.write(e);
        if (audit.errors > lastAuditErrors) auditErrors.inc(undefined, audit.errors - lastAuditErrors);
        lastAuditErrors = audit.errors;
      },
      get errors() { return audit?.errors ?? 0; },
      close: () => audit?.close(),
    },
    webhook: { send: (e) => webhook?.send(e) },
  });
  for (const [name, read] of [
    ['webhook_queue', () => webhook?.stats().queued ?? 0],
    ['webhook_in_flight', () => webhook?.stats().inFlight ?? 0],
    ['webhook_delivered', () => webhook?.stats().delivered ?? 0],
    ['webhook_failed', () => webhook?.stats().failed ?? 0],
    ['webhook_dropped', () => webhook?.stats().dropped ?? 0],
  ] as const) metrics.gaugeFn(name, `Webhook ${name.slice(8).replace('_', ' ')} events${name === 'webhook_queue' || name === 'webhook_in_flight' ? '' : ' (monotonic)'}`, read);
  return {
    sink: sink as EventSink,
    configure,
    async close() {
      audit?.close();
      await webhook?.close();
    },
  };
}
