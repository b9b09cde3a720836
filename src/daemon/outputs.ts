import { openAuditLog, type AuditLog } from '../alerts/audit-log.js';
import { createEventSink, type EventSink } from '../alerts/events.js';
import { createWebhook, type Webhook, type WebhookStats } from '../alerts/webhook.js';
import type { Logger } from '../core/log.js';
import type { Metrics } from '../core/metrics.js';
import type { Rules } from '../core/rules/types.js';

type Tally = keyof Pick<WebhookStats, 'delivered' | 'failed' | 'dropped'>;
const TALLIES: readonly Tally[] = ['delivered', 'failed', 'dropped'];

/** The audit log and webhook follow the rules: a reload that changes them reopens them. */
export function createOutputs(logger: Logger, metrics: Metrics) {
  let audit: AuditLog | null = null;
  let webhook: Webhook | null = null;
  let auditKey = '';
  let webhookKey = '';
  const auditErrors = metrics.counter('audit_write_errors_total', 'Audit log writes that failed (disk full, read-only)');
  // A reload that changes the webhook replaces it, and the new one counts from zero: the counters
  // add up every webhook this process had, so they never go down (Prometheus would read a reset).
  const retired: Record<Tally, number> = { delivered: 0, failed: 0, dropped: 0 };
  const retiring = new Set<Webhook>();
  const retire = (w: Webhook) => {
    retiring.add(w);
    void w.close().then(() => {
      // close() resolves once no delivery is left in flight: these numbers are final.
      const s = w.stats();
      for (const k of TALLIES) retired[k] += s[k];
      retiring.delete(w);
    });
  };
  const total = (k: Tally) => {
    let n = retired[k] + (webhook?.stats()[k] ?? 0);
    for (const w of retiring) n += w.stats()[k];
    return n;
  };
  const configure = (rules: Rules) => {
    const ak = JSON.stringify(rules.audit);
    if (ak !== auditKey) {
      audit?.close();
      auditKey = ak;
      audit = rules.audit.file === '' ? null : openAuditLog(rules.audit.file, rules.audit.fsync, (error) => logger.log('error', 'audit_write_failed', { error }));
    }
    const wk = JSON.stringify(rules.webhook);
    if (wk !== webhookKey) {
      if (webhook !== null) retire(webhook);
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
  metrics.gaugeFn('webhook_queue', 'Webhook events waiting: queued, or backing off before a retry', () => webhook?.stats().queued ?? 0);
  metrics.gaugeFn('webhook_in_flight', 'Webhook deliveries in flight', () => webhook?.stats().inFlight ?? 0);
  metrics.counterFn('webhook_delivered_total', 'Webhook events delivered (the receiver answered 2xx)', () => total('delivered'));
  metrics.counterFn('webhook_failed_total', 'Webhook events given up: a permanent error, or every attempt failed', () => total('failed'));
  metrics.counterFn('webhook_dropped_total', 'Webhook events dropped: the queue was full, or they were still waiting at a reload or stop', () => total('dropped'));
  return {
    sink: sink as EventSink,
    configure,
    async close() {
      audit?.close();
      await Promise.all([webhook, ...retiring].map((w) => w?.close()));
    },
  };
}
