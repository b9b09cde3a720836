/**
 * The longest tarpit cidlock ever asks for. Dovecot waits up to 150 s for an auth request and
 * Postfix 100 s for a policy answer (smtpd_policy_service_timeout); 30 s stays well inside both.
 */
export const MAX_DELAY_SECONDS = 30;

/** A delay as the servers get it: whole seconds from 1 to MAX_DELAY_SECONDS. */
export function clampDelaySeconds(seconds: number | undefined): number {
  return Math.max(1, Math.min(MAX_DELAY_SECONDS, Math.round(seconds ?? 1)));
}
