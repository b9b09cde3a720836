import type { Cidr } from '../ip.js';
import type { DeviceTypes, Mode, PolicyLayer, Protocol, ProtocolRule, Rules } from './types.js';
import { PROTOCOLS } from './types.js';

/** The four places a setting can come from, lowest first; `users:` in the rules file has the final word. */
export type LayerName = 'default' | 'server' | 'domain' | 'registry' | 'user';

export interface Source {
  layer: LayerName;
  /** Where to look: `policy.mode`, `domains["example.com"].mode`, `registry users["bob@example.com"].mode`. */
  path: string;
}

export interface EffectivePolicy {
  mode: Mode;
  require_tls: boolean;
  message: string;
  vouch_ttl: number;
  protocols: Readonly<Record<Protocol, ProtocolRule>>;
  device_types: DeviceTypes;
  networks: readonly Cidr[];
  learn: { max_devices: number; until: number | null };
  /** Keyed like `mode`, `protocols.imap`, `learn.max_devices`. */
  sources: Readonly<Record<string, Source>>;
}

/** Settings the registry may hold per user (set with `cidlock users set`). */
export interface RegistryUserSettings {
  mode?: Mode;
}

const BUILTIN_POLICY = {
  mode: 'monitor',
  require_tls: true,
  message: '',
  vouch_ttl: 30 * 60_000,
  protocols: {
    imap: ['cid'],
    pop3: ['vouch'],
    submission: ['vouch'],
    smtp: ['cert', 'vouch'],
    sieve: ['vouch'],
    other: ['cid', 'cert', 'vouch'],
  },
  device_types: { patterns: [], match: () => undefined },
  networks: [],
  learn: { max_devices: 5, until: null },
} as const satisfies Omit<EffectivePolicy, 'sources'>;

const q = (s: string) => JSON.stringify(s);

function domainOf(user: string): string {
  const at = user.lastIndexOf('@');
  return at < 0 ? '' : user.slice(at + 1);
}

function applyLayer(eff: EffectivePolicy & { sources: Record<string, Source> }, layer: PolicyLayer, name: LayerName, prefix: string): void {
  const src = (key: string) => { eff.sources[key] = { layer: name, path: `${prefix}.${key}` }; };
  if (layer.mode !== undefined) { eff.mode = layer.mode; src('mode'); }
  if (layer.require_tls !== undefined) { eff.require_tls = layer.require_tls; src('require_tls'); }
  if (layer.message !== undefined) { eff.message = layer.message; src('message'); }
  if (layer.vouch_ttl !== undefined) { eff.vouch_ttl = layer.vouch_ttl; src('vouch_ttl'); }
  if (layer.protocols !== undefined) {
    const merged = { ...eff.protocols };
    for (const p of PROTOCOLS) {
      const rule = layer.protocols[p];
      if (rule !== undefined) { merged[p] = rule; src(`protocols.${p}`); }
    }
    eff.protocols = merged;
  }
  if (layer.device_types !== undefined) { eff.device_types = layer.device_types; src('device_types'); }
  if (layer.networks !== undefined) { eff.networks = layer.networks; src('networks'); }
  if (layer.learn !== undefined) {
    const learn = { ...eff.learn };
    if (layer.learn.max_devices !== undefined) { learn.max_devices = layer.learn.max_devices; src('learn.max_devices'); }
    if (layer.learn.until !== undefined) { learn.until = layer.learn.until; src('learn.until'); }
    eff.learn = learn;
  }
}

/**
 * Merges built-in defaults < `policy:` < `domains:` < registry settings < `users:`, key by key,
 * remembering which layer set each key so a decision can say why.
 */
type Mutable = EffectivePolicy & { sources: Record<string, Source> };

function copy(eff: EffectivePolicy): Mutable {
  return { ...eff, learn: { ...eff.learn }, sources: { ...eff.sources } };
}

// The server layer is the same for every request under one Rules object: merge it once.
const serverLevel = new WeakMap<Rules, EffectivePolicy>();

function serverPolicy(rules: Rules): EffectivePolicy {
  let eff = serverLevel.get(rules);
  if (eff === undefined) {
    const sources: Record<string, Source> = {};
    for (const key of ['mode', 'require_tls', 'message', 'vouch_ttl', 'device_types', 'networks', 'learn.max_devices', 'learn.until', ...PROTOCOLS.map((p) => `protocols.${p}`)]) {
      sources[key] = { layer: 'default', path: `policy.${key} (built-in default)` };
    }
    const m: Mutable = { ...BUILTIN_POLICY, protocols: BUILTIN_POLICY.protocols, learn: { ...BUILTIN_POLICY.learn }, sources };
    applyLayer(m, rules.policy, 'server', 'policy');
    eff = m;
    serverLevel.set(rules, eff);
  }
  return eff;
}

/**
 * Merges built-in defaults < `policy:` < `domains:` < registry settings < `users:`, key by key,
 * remembering which layer set each key so a decision can say why.
 */
export function effectivePolicy(rules: Rules, user: string, registry?: RegistryUserSettings): EffectivePolicy {
  const base = serverPolicy(rules);
  const domain = domainOf(user);
  const dl = domain === '' ? undefined : rules.domains.get(domain);
  const ul = rules.users.get(user);
  if (dl === undefined && ul === undefined && registry?.mode === undefined) return base;
  const eff = copy(base);
  if (dl !== undefined) applyLayer(eff, dl, 'domain', `domains[${q(domain)}]`);
  if (registry?.mode !== undefined) applyLayer(eff, { mode: registry.mode }, 'registry', `registry users[${q(user)}]`);
  if (ul !== undefined) applyLayer(eff, ul, 'user', `users[${q(user)}]`);
  return eff;
}

export function protocolKey(protocol: string): Protocol {
  return (PROTOCOLS as readonly string[]).includes(protocol) && protocol !== 'other' ? (protocol as Protocol) : 'other';
}
