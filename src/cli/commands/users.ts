import { effectivePolicy, type Source } from '../../core/rules/resolve.js';
import { MODES, type Mode } from '../../core/rules/types.js';
import { formatDuration } from '../../core/duration.js';
import { CONFIG_OPTION, configPath, parseCommand, UsageError, userArg } from '../args.js';
import { auditFromCli, loadRulesOrExit, openRegistryFor, type Io } from '../context.js';
import { HELP } from '../help.js';
import { deviceRows } from './devices.js';

const OPTIONS = { ...CONFIG_OPTION, mode: { type: 'string' }, json: { type: 'boolean' } } as const;

export async function usersCommand(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') return io.out(HELP.users!), 0;
  if (sub !== 'set' && sub !== 'show') throw new UsageError(`unknown users command ${JSON.stringify(sub)} (expected set or show)`);
  const { values, positionals } = parseCommand(rest, OPTIONS, { min: 1, max: 1, names: 'USER' });
  if (values.help) return io.out(HELP.users!), 0;
  const rules = loadRulesOrExit(configPath(values.config), io);
  const user = userArg(positionals[0], rules.accounts.defaultDomain);

  if (sub === 'set') {
    const m = values.mode;
    if (m === undefined) throw new UsageError('--mode is required');
    if (m !== 'default' && !(MODES as readonly string[]).includes(m)) throw new UsageError(`--mode must be one of ${MODES.join(', ')}, default`);
    const registry = await openRegistryFor(rules, true);
    await registry.setMode(user, m === 'default' ? null : (m as Mode));
    auditFromCli(rules, io, { event: 'user_mode_set', user, mode: m === 'default' ? null : m, source: 'admin' });
    const eff = effectivePolicy(rules, user, registry.settings(user));
    io.out(`${user}: registry mode ${m === 'default' ? 'removed' : m}; effective mode ${eff.mode} (${eff.sources.mode!.path})`);
    if (rules.users.get(user)?.mode !== undefined) io.err(`warning: ${rules.file}: users["${user}"].mode overrides the registry for this user`);
    return 0;
  }

  const registry = await openRegistryFor(rules, false);
  const eff = effectivePolicy(rules, user, registry.settings(user));
  const devices = registry.devices(user);
  if (values.json) {
    io.out(JSON.stringify({
      user,
      mode: eff.mode, require_tls: eff.require_tls, message: eff.message, vouch_ttl: formatDuration(eff.vouch_ttl),
      protocols: eff.protocols, device_types: eff.device_types.patterns, networks: eff.networks.map((n) => n.text),
      learn: { max_devices: eff.learn.max_devices, until: eff.learn.until === null ? null : new Date(eff.learn.until).toISOString() },
      sources: eff.sources,
      devices: devices.map(({ id, kind, type, label, added, source }) => ({ id, kind, type, label, added, source })),
    }));
    return 0;
  }
  const from = (s: Source | undefined) => (s === undefined ? '' : `  (${s.path})`);
  const row = (k: string, v: string, key = k) => io.out(`  ${k.padEnd(22)}${v}${from(eff.sources[key])}`);
  io.out(`${user}`);
  row('mode', eff.mode);
  row('require_tls', String(eff.require_tls));
  row('message', eff.message === '' ? '"" (server\'s generic failure)' : JSON.stringify(eff.message));
  row('vouch_ttl', formatDuration(eff.vouch_ttl));
  for (const [p, r] of Object.entries(eff.protocols)) row(`protocols.${p}`, typeof r === 'string' ? r : `[${r.join(', ')}]`);
  row('device_types', `[${eff.device_types.patterns.join(', ')}]`);
  row('networks', `[${eff.networks.map((n) => n.text).join(', ')}]`);
  row('learn.max_devices', String(eff.learn.max_devices));
  row('learn.until', eff.learn.until === null ? 'null' : new Date(eff.learn.until).toISOString());
  io.out(`  devices (${devices.length})${devices.length === 0 ? ': none registered' : ':'}`);
  if (devices.length > 0) for (const line of deviceRows(devices.map((d) => [user, d]), false)) io.out(`    ${line}`);
  return 0;
}
