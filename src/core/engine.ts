import { LRUCache } from 'lru-cache';
import { decide, type Decision } from './decide.js';
import { decisionRecord } from './explain.js';
import type { Logger } from './log.js';
import type { Registry } from './registry/registry.js';
import type { AuthRequest } from './request.js';
import { effectivePolicy } from './rules/resolve.js';
import type { Rules } from './rules/types.js';
import { createVouchStore, type VouchStore } from './vouches.js';

export interface SuccessOutcome {
  vouched: boolean;
  learned?: { device: string; status: 'added' | 'exists' | 'full' };
}

/**
 * The one owner of the daemon's mutable state: current rules, registry and vouches. Adapters
 * call decide() and report(); everything else stays inside.
 */
export interface Engine {
  readonly rules: Rules;
  readonly registry: Registry;
  readonly vouches: VouchStore;
  decide(req: AuthRequest): Decision;
  /** A login finished successfully: vouch for its address and register a learned device. */
  reportSuccess(req: AuthRequest, decision?: Decision): SuccessOutcome;
  /** A login failed: wrong password, unknown user, or refused by cidlock. Attack defences hook in here. */
  reportFailure(req: AuthRequest, info: FailureInfo): void;
  /**
   * A TLS client certificate was presented from this address (Postfix at EHLO after STARTTLS).
   * Remembered briefly so the SASL login that follows on the same connection can count it.
   */
  noteClientCertificate(remote: string, fingerprints: readonly string[]): void;
  recentClientCertificate(remote: string): readonly string[];
  /** Whether the attack defences currently refuse this client address (Postfix's client table). */
  addressVerdict(remote: string): AddressVerdict | undefined;
  readonly stats: Readonly<EngineStats>;
  /** Swaps in new rules between requests; the caller has validated them. */
  setRules(rules: Rules): void;
}

export interface FailureInfo {
  /** The failure was cidlock's own refusal, not a wrong password. */
  policyReject: boolean;
}

export interface AddressVerdict {
  action: 'reject' | 'defer';
  text: string;
}

export interface EngineStats {
  decisions: number;
  successes: number;
  failures: number;
  policyRejects: number;
}

export interface EngineOptions {
  rules: Rules;
  registry: Registry;
  logger: Logger;
  now?: () => number;
  vouches?: VouchStore;
  onFailure?: (req: AuthRequest, info: FailureInfo, now: number) => void;
  /** The attack defences' view of an address; none flags any address until they are configured. */
  addressVerdict?: (remote: string, now: number) => AddressVerdict | undefined;
}

/** Long enough to cover STARTTLS, EHLO and AUTH of one SMTP connection; short enough not to leak to the next. */
export const CERT_MEMORY_MS = 30_000;

export function createEngine(opts: EngineOptions): Engine {
  let rules = opts.rules;
  const { registry, logger } = opts;
  const now = opts.now ?? Date.now;
  const vouches = opts.vouches ?? createVouchStore();
  const stats: EngineStats = { decisions: 0, successes: 0, failures: 0, policyRejects: 0 };
  const certsSeen = new LRUCache<string, { fps: readonly string[]; at: number }>({ max: 100_000 });

  return {
    get rules() { return rules; },
    registry,
    vouches,
    stats,
    decide(req) {
      const d = decide(req, { rules, registry, vouches, now: now() });
      stats.decisions++;
      logger.log(d.action === 'allow' && !d.would_reject ? 'info' : 'warn', 'decision', decisionRecord(req, d));
      return d;
    },
    reportSuccess(req, decision) {
      const d = decision ?? decide(req, { rules, registry, vouches, now: now() });
      stats.successes++;
      const out: SuccessOutcome = { vouched: false };
      let device = d.proven;
      if (d.learn !== undefined) {
        const input = d.learn.kind === 'cid'
          ? { kind: 'cid' as const, cid: d.learn.cid, label: d.learn.label }
          : { kind: 'cert' as const, fingerprint: d.learn.fingerprint, label: d.learn.label };
        const r = registry.add(req.user, input, 'learn', { maxDevices: d.learn.maxDevices, now: new Date(now()) });
        const id = r.status === 'full' ? (d.learn.kind === 'cid' ? d.learn.hashPrefix : d.learn.fingerprint.slice(0, 12)) : r.device.id;
        out.learned = { device: id, status: r.status };
        logger.log(r.status === 'full' ? 'warn' : 'info', 'device_learned', { user: req.user, device: id, status: r.status, kind: d.learn.kind, remote: req.remote });
        if (r.status !== 'full') device = r.device.id;
      }
      if (device !== undefined && req.remote !== null) {
        const ttl = effectivePolicy(rules, req.user, registry.settings(req.user)).vouch_ttl;
        vouches.add(req.user, req.remote, { at: now(), device }, ttl);
        out.vouched = ttl > 0;
      }
      return out;
    },
    reportFailure(req, info) {
      stats.failures++;
      if (info.policyReject) stats.policyRejects++;
      opts.onFailure?.(req, info, now());
    },
    noteClientCertificate(remote, fps) {
      if (fps.length > 0) certsSeen.set(remote, { fps, at: now() });
    },
    recentClientCertificate(remote) {
      const seen = certsSeen.get(remote);
      return seen !== undefined && now() - seen.at <= CERT_MEMORY_MS ? seen.fps : [];
    },
    addressVerdict(remote) {
      return opts.addressVerdict?.(remote, now());
    },
    setRules(next) {
      rules = next;
    },
  };
}
