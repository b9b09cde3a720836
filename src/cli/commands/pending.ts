import { approvePending, livePending, pendingById, rejectPending } from '../../core/pending.js';
import type { PendingDevice } from '../../core/registry/types.js';
import { RegistryError } from '../../core/registry/types.js';
import { CONFIG_OPTION, configPath, parseCommand, UsageError, userArg } from '../args.js';
import { auditFromCli, ExitError, loadRulesOrExit, openRegistryFor, type Io } from '../context.js';
import { HELP } from '../help.js';

const OPTIONS = { ...CONFIG_OPTION, label: { type: 'string' }, json: { type: 'boolean' } } as const;

const iso = (t: number) => `${new Date(t).toISOString().slice(0, 19)}Z`;

export function pendingRows(rows: Array<[string, PendingDevice]>): string[] {
  const table = rows.map(([user, p]) => [user, p.hash.slice(0, 12), p.kind, p.type, p.state, String(p.tries), iso(p.first), iso(p.last), p.protocol, p.remote ?? '-', p.client || '-']);
  const head = ['USER', 'ID', 'KIND', 'TYPE', 'STATE', 'TRIES', 'FIRST', 'LAST', 'PROTOCOL', 'ADDRESS', 'CLIENT'];
  const widths = head.map((h, i) => Math.max(h.length, ...table.map((r) => r[i]!.length)));
  const fmt = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [fmt(head), ...table.map(fmt)];
}

/** `cidlock pending`: devices a locked account refused, waiting for an answer; the operator's side of the account page. */
export async function pendingCommand(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') return io.out(HELP.pending!), 0;
  const shape = { list: { min: 0, max: 1, names: 'USER' }, approve: { min: 2, max: 2, names: 'USER ID' }, reject: { min: 2, max: 2, names: 'USER ID' } }[sub];
  if (shape === undefined) throw new UsageError(`unknown pending command ${JSON.stringify(sub)} (expected list, approve or reject)`);
  const { values, positionals } = parseCommand(rest, OPTIONS, shape);
  if (values.help) return io.out(HELP.pending!), 0;
  const rules = loadRulesOrExit(configPath(values.config), io);
  const now = Date.now();
  const expireMs = rules.pending.expireMs;

  if (sub === 'list') {
    const registry = await openRegistryFor(rules, false);
    const names = positionals[0] !== undefined ? [userArg(positionals[0], rules.accounts.defaultDomain)] : [...registry.users()].sort();
    const rows = names.flatMap((u) => livePending(registry, u, now, expireMs).map((p): [string, PendingDevice] => [u, p]));
    if (values.json) {
      for (const [user, p] of rows) io.out(JSON.stringify({ user, id: p.hash.slice(0, 12), kind: p.kind, type: p.type, state: p.state, tries: p.tries, first: iso(p.first), last: iso(p.last), protocol: p.protocol, remote: p.remote, client: p.client }));
    } else if (rows.length === 0) io.out(positionals[0] !== undefined ? `${names[0]}: no pending devices` : 'no pending devices');
    else for (const line of pendingRows(rows)) io.out(line);
    return 0;
  }

  const user = userArg(positionals[0], rules.accounts.defaultDomain);
  const id = positionals[1]!;
  if (!/^[0-9a-f]{6,64}$/i.test(id)) throw new UsageError('a pending device ID is 6 to 64 hex digits, as "cidlock pending list" shows it');
  if (sub === 'reject' && values.label !== undefined) throw new UsageError('--label is for approve');
  const registry = await openRegistryFor(rules, true);
  const hits = pendingById(registry, user, id, expireMs, now);
  if (hits.length > 1) throw new RegistryError('ambiguous', `pending device ID ${id} is ambiguous for ${user}: it matches ${hits.length} devices; give more digits`);
  if (hits.length === 0) throw new ExitError(1, `${user}: no pending device with ID ${id}`);
  const p = hits[0]!;
  if (sub === 'approve') {
    const d = await approvePending(registry, user, p.hash, { now, expireMs, source: 'admin', ...(typeof values.label === 'string' ? { label: values.label } : {}) });
    if (d === null) throw new ExitError(1, `${user}: device ${id} is no longer pending`);
    auditFromCli(rules, io, { event: 'device_registered', user, device: d.hash.slice(0, 12), kind: d.kind, type: d.type, source: 'admin', label: d.label });
    io.out(`${user}: approved ${d.kind} device ${d.hash.slice(0, 12)}${d.label ? ` (${d.label})` : ''}; it is registered now`);
    return 0;
  }
  if (!(await rejectPending(registry, user, p.hash, { now, expireMs }))) throw new ExitError(1, `${user}: device ${id} is not waiting for an answer (rejected already?)`);
  auditFromCli(rules, io, { event: 'device_rejected', user, device: p.hash.slice(0, 12), source: 'admin' });
  io.out(`${user}: rejected device ${p.hash.slice(0, 12)}; it stays locked out and brings no more notices`);
  return 0;
}
