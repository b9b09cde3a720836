import { readFileSync } from 'node:fs';
import { parseCid } from '../../core/cid.js';
import { certFingerprints, normalizeFingerprint } from '../../core/fingerprint.js';
import { parseImport } from '../../core/registry/import.js';
import type { DeviceInput } from '../../core/registry/registry.js';
import type { Device } from '../../core/registry/types.js';
import { CONFIG_OPTION, configPath, parseCommand, UsageError, userArg } from '../args.js';
import { readCliFile } from '../owner-handoff.js';
import { auditFromCli, ExitError, loadRulesOrExit, openRegistryFor, readInput, type Io } from '../context.js';
import { HELP } from '../help.js';

const OPTIONS = {
  ...CONFIG_OPTION,
  label: { type: 'string' },
  cert: { type: 'string' },
  'cert-fingerprint': { type: 'string' },
  json: { type: 'boolean' },
} as const;

export function deviceRows(rows: Array<[string, Device]>, withUser: boolean): string[] {
  const table = rows.map(([user, d]) => [...(withUser ? [user] : []), d.id, d.kind, d.type, d.label || '-', d.added.slice(0, 19) + 'Z', d.source]);
  const head = [...(withUser ? ['USER'] : []), 'ID', 'KIND', 'TYPE', 'LABEL', 'ADDED', 'SOURCE'];
  const widths = head.map((h, i) => Math.max(h.length, ...table.map((r) => r[i]!.length)));
  const fmt = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [fmt(head), ...table.map(fmt)];
}

function addInput(values: Record<string, unknown>, positional: string | undefined): DeviceInput {
  const label = typeof values.label === 'string' ? values.label : undefined;
  const given = [positional !== undefined, values.cert !== undefined, values['cert-fingerprint'] !== undefined].filter(Boolean).length;
  if (given !== 1) throw new UsageError('give exactly one of "TYPE TOKEN", --cert FILE.pem or --cert-fingerprint HEX');
  if (typeof values.cert === 'string') {
    let pem: string;
    try {
      pem = readCliFile(values.cert, readFileSync).toString('utf8');
    } catch (err) {
      throw new ExitError(1, `${values.cert}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    try {
      const fp = certFingerprints(pem);
      return { kind: 'cert', fingerprint: fp.pubkey, label: label ?? fp.subject };
    } catch (err) {
      throw new ExitError(1, `${values.cert}: ${(err as Error).message}`);
    }
  }
  if (typeof values['cert-fingerprint'] === 'string') {
    const fp = normalizeFingerprint(values['cert-fingerprint']);
    if (fp === null) throw new UsageError('--cert-fingerprint: expected a SHA-256 fingerprint (64 hex digits, colons allowed)');
    return { kind: 'cert', fingerprint: fp, ...(label !== undefined ? { label } : {}) };
  }
  const cid = parseCid(positional!);
  if (!cid.ok) throw new UsageError(`"TYPE TOKEN": ${cid.reason}`);
  return { kind: 'cid', cid: cid.cid, ...(label !== undefined ? { label } : {}) };
}

export async function devicesCommand(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') return io.out(HELP.devices!), 0;
  const shape = { list: { min: 0, max: 1, names: 'USER' }, add: { min: 1, max: 2, names: 'USER' }, remove: { min: 1, max: 2, names: 'USER' }, import: { min: 1, max: 1, names: 'FILE' } }[sub];
  if (shape === undefined) throw new UsageError(`unknown devices command ${JSON.stringify(sub)} (expected list, add, remove or import)`);
  const { values, positionals } = parseCommand(rest, OPTIONS, shape);
  if (values.help) return io.out(HELP.devices!), 0;
  const rules = loadRulesOrExit(configPath(values.config), io);

  switch (sub) {
    case 'list': {
      const registry = await openRegistryFor(rules, false);
      const names = positionals[0] !== undefined ? [userArg(positionals[0], rules.accounts.defaultDomain)] : [...registry.users()].sort();
      const rows: Array<[string, Device]> = names.flatMap((u) => registry.devices(u).map((d): [string, Device] => [u, d]));
      if (values.json) {
        for (const [user, { id, kind, type, label, added, source }] of rows) io.out(JSON.stringify({ user, id, kind, type, label, added, source }));
      } else if (rows.length === 0) {
        io.out(positionals[0] !== undefined ? `${names[0]}: no registered devices` : 'no registered devices');
      } else {
        for (const line of deviceRows(rows, true)) io.out(line);
      }
      return 0;
    }
    case 'add': {
      const user = userArg(positionals[0], rules.accounts.defaultDomain);
      const input = addInput(values, positionals[1]);
      const registry = await openRegistryFor(rules, true);
      const r = await registry.add(user, input, 'admin');
      if (r.status === 'full') throw new ExitError(1, `${user}: device limit reached`);
      if (r.status === 'added') auditFromCli(rules, io, { event: 'device_registered', user, device: r.device.id, kind: r.device.kind, type: r.device.type, source: 'admin', label: r.device.label });
      io.out(`${user}: ${r.status === 'added' ? 'added' : 'already registered:'} ${r.device.kind} device ${r.device.id}${r.device.label ? ` (${r.device.label})` : ''}`);
      return 0;
    }
    case 'remove': {
      const user = userArg(positionals[0], rules.accounts.defaultDomain);
      const id = positionals[1];
      const label = values.label;
      if ((id === undefined) === (label === undefined)) throw new UsageError('give either a device ID or --label L');
      if (id !== undefined && !/^[0-9a-f]{6,64}$/i.test(id)) throw new UsageError('a device ID is 6 to 64 hex digits, as "cidlock devices list" shows it');
      const registry = await openRegistryFor(rules, true);
      const removed = await registry.remove(user, id !== undefined ? { id } : { label: label! });
      if (removed.length === 0) throw new ExitError(1, `${user}: no device ${id !== undefined ? `with ID ${id}` : `labelled ${JSON.stringify(label)}`}`);
      for (const d of removed) {
        io.out(`${user}: removed ${d.kind} device ${d.id}${d.label ? ` (${d.label})` : ''}`);
        auditFromCli(rules, io, { event: 'device_removed', user, device: d.id, kind: d.kind, source: 'admin' });
      }
      return 0;
    }
    case 'import': {
      const file = positionals[0]!;
      const parsed = parseImport(readInput(file), file === '-' ? 'stdin' : file, rules.accounts.defaultDomain);
      if (!parsed.ok) {
        for (const e of parsed.errors) io.err(e);
        throw new ExitError(1, `import aborted: ${parsed.errors.length} bad line${parsed.errors.length === 1 ? '' : 's'}; nothing was changed`);
      }
      const registry = await openRegistryFor(rules, true);
      const r = await registry.addMany(parsed.items);
      if (r.added > 0) auditFromCli(rules, io, { event: 'devices_imported', added: r.added, existing: r.existing, source: 'admin' });
      io.out(`imported ${parsed.items.length} devices: ${r.added} added, ${r.existing} already registered`);
      return 0;
    }
  }
  return 2;
}
