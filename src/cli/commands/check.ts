import { loadRulesFile } from '../../core/rules/load.js';
import { formatRulesIssue, type ListenAddress } from '../../core/rules/types.js';
import { effectivePolicy } from '../../core/rules/resolve.js';
import { CONFIG_OPTION, configPath, parseCommand } from '../args.js';
import { openRegistryFor, type Io } from '../context.js';
import { HELP } from '../help.js';

export function formatListen(a: ListenAddress | null): string {
  if (a === null) return 'off';
  if ('path' in a) return `unix:${a.path}`;
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

export async function checkCommand(argv: string[], io: Io): Promise<number> {
  const { values } = parseCommand(argv, CONFIG_OPTION, { min: 0, max: 0, names: '' });
  if (values.help) return io.out(HELP.check!), 0;
  const file = configPath(values.config);
  const r = loadRulesFile(file);
  for (const w of r.warnings) io.err(`warning: ${formatRulesIssue(w)}`);
  if (!r.ok) {
    for (const e of r.errors) io.err(formatRulesIssue(e));
    io.err(`${file}: ${r.errors.length} error${r.errors.length === 1 ? '' : 's'}`);
    return 1;
  }
  const rules = r.rules;
  const server = effectivePolicy({ ...rules, domains: new Map(), users: new Map() }, '');
  io.out(`${file}: OK`);
  io.out(`  listen:    ${Object.entries(rules.listen).map(([k, v]) => `${k} ${formatListen(v)}`).join(', ')}`);
  io.out(`  policy:    mode ${server.mode}, require_tls ${server.require_tls}, vouch_ttl ${server.vouch_ttl / 1000}s`);
  io.out(`  domains:   ${rules.domains.size}`);
  io.out(`  users:     ${rules.users.size} in the rules file`);
  try {
    const reg = await openRegistryFor(rules, false);
    const size = reg.size();
    let withMode = 0;
    for (const u of reg.users()) if (reg.settings(u).mode !== undefined) withMode++;
    io.out(`  registry:  ${reg.location}: ${size.users} users (${withMode} with their own mode), ${size.devices} devices`);
  } catch (err) {
    io.err(`registry: ${(err as Error).message}`);
    return 1;
  }
  return 0;
}
