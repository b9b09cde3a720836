import type { Logger } from '../core/log.js';
import type { AuditLog } from './audit-log.js';

/** Security events: what the audit log records and the webhook delivers. Never a raw CID. */
export type SecurityEvent =
  | { event: 'device_registered'; user: string; device: string; kind: string; type: string; source: 'admin' | 'learn' | 'holder'; label?: string; remote?: string | null }
  | { event: 'device_removed'; user: string; device: string; kind: string; source: 'admin' | 'holder'; remote?: string | null }
  /** A refused device the account remembers for its holder's answer. */
  | { event: 'device_pending'; user: string; device: string; type: string; protocol: string; remote: string | null; client?: string }
  /** Answered "not me" (by the holder) or rejected by the operator: it stays out and brings no more notices. */
  | { event: 'device_rejected'; user: string; device: string; source: 'admin' | 'holder'; remote?: string | null }
  | { event: 'device_renamed'; user: string; device: string; label: string; source: 'holder'; remote?: string | null }
  | { event: 'notice_sent'; user: string; notice: 'device' | 'signin'; device?: string }
  | { event: 'notice_failed'; user: string; notice: 'device' | 'signin'; device?: string; error: string }
  | { event: 'unknown_device_refused'; user: string; protocol: string; remote: string | null; device?: string; device_type?: string; client_name?: string }
  | { event: 'unknown_device'; user: string; attempts: number; window: string; remote: string | null; device?: string; device_type?: string; client_name?: string }
  | { event: 'limit_triggered'; rule: string; key: string; subject: string; count: number; then: string }
  | { event: 'rules_reloaded'; rules: string }
  | { event: 'rules_rejected'; rules: string; errors: string[] }
  | { event: 'user_mode_set'; user: string; mode: string | null; source: 'admin' | 'holder'; remote?: string | null }
  | { event: 'devices_imported'; added: number; existing: number; source: 'admin' }
  | { event: 'registry_copied'; from: string; to: string; users: number; devices: number; source: 'admin' };

export interface EventSink {
  emit(e: SecurityEvent): void;
}

export interface WebhookLike {
  send(e: { event: string } & Record<string, unknown>): void;
}

/** One place every security event goes through: the log, the audit file, the webhook. */
export function createEventSink(opts: { logger: Logger; audit?: AuditLog | null; webhook?: WebhookLike | null }): EventSink {
  return {
    emit(e) {
      const { event, ...fields } = e;
      opts.logger.log(event === 'rules_rejected' || event === 'limit_triggered' || event === 'unknown_device' || event === 'notice_failed' ? 'warn' : 'info', event, fields);
      opts.audit?.write(e);
      opts.webhook?.send(e);
    },
  };
}

