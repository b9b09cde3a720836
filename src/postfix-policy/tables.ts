import type { Engine } from '../core/engine.js';
import { normalizeFingerprint } from '../core/fingerprint.js';
import { normalizeIp } from '../core/ip.js';
import { accountName } from '../core/login-name.js';

/** Socketmap reply bodies, before netstring framing. `NOTFOUND ` keeps its space, as Postfix expects. */
type TableReply = string;

const TABLES = ['client', 'sasl', 'ccert'] as const;

/**
 * Lookups for the socketmap tables: translation only, the engine holds every rule. The socketmap
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
      const denied = engine.smtpDenied(accountName(key, engine.rules.accounts.defaultDomain));
      return denied === undefined ? 'NOTFOUND ' : `OK REJECT 5.7.1 ${denied.text.replace(/[\r\n]/g, ' ')}`;
    }
    case 'ccert': {
      const fp = normalizeFingerprint(key);
      return fp !== null && engine.registry.certRegistered(fp) ? 'OK DUNNO' : 'NOTFOUND ';
    }
    default:
      return `PERM unknown table ${JSON.stringify(table.slice(0, 40))}; cidlock serves ${TABLES.join(', ')}`;
  }
}
