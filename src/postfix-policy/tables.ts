import type { Engine } from '../core/engine.js';
import { normalizeFingerprint } from '../core/fingerprint.js';
import { normalizeIp } from '../core/ip.js';
import { effectivePolicy } from '../core/rules/resolve.js';

/** Socketmap reply bodies, before netstring framing. `NOTFOUND ` keeps its space, as Postfix expects. */
export type TableReply = string;

export const TABLES = ['client', 'sasl', 'ccert'] as const;

const refusal = (engine: Engine, user: string) => effectivePolicy(engine.rules, user, engine.registry.settings(user)).message || 'Access denied';

/**
 * Lookups for the socketmap tables. Pure over the engine's current state, so the socketmap
 * server stays a thin framing shell.
 */
export function lookupTable(engine: Engine, table: string, key: string): TableReply {
  switch (table) {
    case 'client': {
      const ip = normalizeIp(key);
      if (ip === null) return 'NOTFOUND ';
      const flag = engine.addressVerdict(ip);
      if (flag === undefined) return 'NOTFOUND ';
      return flag.action === 'reject' ? `OK REJECT 5.7.1 ${flag.text}` : `OK DEFER_IF_PERMIT 4.7.1 ${flag.text}`;
    }
    case 'sasl': {
      const user = key.toLowerCase();
      const eff = effectivePolicy(engine.rules, user, engine.registry.settings(user));
      // Only enforcing modes refuse; monitor never changes what a user experiences.
      if (eff.protocols.smtp === 'deny' && (eff.mode === 'enforce' || eff.mode === 'learn')) return `OK REJECT 5.7.1 ${refusal(engine, user)}`;
      return 'NOTFOUND ';
    }
    case 'ccert': {
      const fp = normalizeFingerprint(key);
      return fp !== null && engine.registry.certRegistered(fp) ? 'OK DUNNO' : 'NOTFOUND ';
    }
    default:
      return `PERM unknown table ${JSON.stringify(table.slice(0, 40))}; cidlock serves ${TABLES.join(', ')}`;
  }
}
