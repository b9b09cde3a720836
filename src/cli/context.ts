import { readFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { loadRulesFile, readRulesBytes } from '../core/rules/load.js';
import { formatRulesIssue, type Rules } from '../core/rules/types.js';
import { openStore, readPasswordFile, type OpenedStore } from '../core/registry/open-store.js';
import { openRegistry, type Registry } from '../core/registry/registry.js';
import { endReplay, handOffToStateOwner, readAll, readCliFile } from './owner-handoff.js';
import { openAuditLog } from '../alerts/audit-log.js';
import type { SecurityEvent } from '../alerts/events.js';

/** Output streams, injectable so commands can be run in-process by tests if needed. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
}

export const stdio: Io = {
  out: (t) => process.stdout.write(t.endsWith('\n') ? t : `${t}\n`),
  err: (t) => process.stderr.write(t.endsWith('\n') ? t : `${t}\n`),
};

/** A failure already explained to the user; carries the exit status. */
export class ExitError extends Error {
  constructor(readonly status: number, message = '') {
    super(message);
  }
}

export function loadRulesOrExit(file: string, io: Io, status = 2): Rules {
  const r = loadRulesFile(file, (f) => readCliFile(f, readRulesBytes));
  for (const w of r.warnings) io.err(`warning: ${formatRulesIssue(w)}`);
  if (!r.ok) {
    for (const e of r.errors) io.err(formatRulesIssue(e));
    io.err(`cidlock: ${r.errors.length} error${r.errors.length === 1 ? '' : 's'} in ${file}; nothing was changed`);
    throw new ExitError(status);
  }
  return r.rules;
}

/** The CLI's scheduling niceness while it works on the registry (0 normal, 19 lowest). */
const CLI_NICE = 10;

/**
 * Loading a million devices and writing an import take seconds of CPU: batch work, which on a
 * small host must not take the cores from the daemon, whose answers Dovecot waits for (2 s, then
 * it lets the login through). An operator's own lower setting is kept.
 */
function lowerPriority(): void {
  try {
    setPriority(Math.max(getPriority(), CLI_NICE));
  } catch {
    // Not allowed here (a container without the capability): run at the normal priority.
  }
}

/**
 * Opens the registry for a command. Run as root, a command that changes it hands its work over to
 * state_dir's owner here (see owner-handoff): call this after reading the rules and input files.
 */
export async function openRegistryFor(rules: Rules, create: boolean): Promise<Registry> {
  lowerPriority();
  // Redis's password file is root's and cidlock's: read here, before a handoff, like the rules.
  const pw = rules.store.redis?.passwordFile ?? '';
  if (pw !== '') readPasswordFile(pw, (f) => readCliFile(f, readFileSync));
  if (create) {
    const status = await handOffToStateOwner(rules.stateDir);
    // The child did the work and printed its outcome: this process only passes its status on.
    if (status !== null) throw new ExitError(status);
  }
  endReplay();
  return openRegistry((await openStoreFor(rules)).store, { create });
}

/** Opens the rules' store for this run (closed by main when the command is done). */
export async function openStoreFor(rules: Rules): Promise<OpenedStore> {
  const opened = await openStore(rules, { role: 'cli', readFile: (f) => readCliFile(f, readFileSync), waitMs: CLI_REDIS_WAIT_MS });
  stores.open.push(opened);
  return opened;
}

/** An operator at the prompt wants a clear answer soon; the daemon, starting, waits longer. */
export const CLI_REDIS_WAIT_MS = 3000;

/** The stores one CLI run opened: a Redis connection keeps the process alive until it is closed. */
const stores = { open: [] as OpenedStore[] };

/** Closes what openRegistryFor opened; main calls it once the command is done. */
export async function closeStores(): Promise<void> {
  const all = stores.open.splice(0);
  await Promise.all(all.map((s) => s.close()));
}

/** Registry edits made with the CLI are security events too: they go to the same audit log. */
export function auditFromCli(rules: Rules, io: Io, event: SecurityEvent): void {
  if (rules.audit.file === '') return;
  const log = openAuditLog(rules.audit.file, 'always', (error) => io.err(`warning: audit log: ${error}`));
  log.write({ ...event, via: 'cli' });
  log.close();
}

/** Reads a file argument, "-" meaning standard input. */
export function readInput(path: string, maxBytes = 64 * 1024 * 1024): string {
  const buf = readCliFile(path, (p) => (p === '-' ? readAll(0, maxBytes) : readFileSync(p)));
  if (buf.length > maxBytes) throw new ExitError(2, `${path}: larger than ${maxBytes} bytes`);
  return buf.toString('utf8');
}
