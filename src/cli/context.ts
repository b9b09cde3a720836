import { readFileSync, readSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { loadRulesFile } from '../core/rules/load.js';
import { formatRulesIssue, type Rules } from '../core/rules/types.js';
import { fileStore } from '../core/registry/file-store.js';
import { openRegistry, type Registry } from '../core/registry/registry.js';
import { becomeStateOwner } from '../core/state-owner.js';
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
  const r = loadRulesFile(file);
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
 * Opens the registry for a command. Commands that change it run from here on as state_dir's owner
 * when started as root (see becomeStateOwner): call this after reading the rules and input files.
 */
export async function openRegistryFor(rules: Rules, create: boolean): Promise<Registry> {
  lowerPriority();
  if (create) becomeStateOwner(rules.stateDir);
  return openRegistry(fileStore(rules.stateDir), { create });
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
  const buf = path === '-' ? readStdinSync() : readFileSync(path);
  if (buf.length > maxBytes) throw new ExitError(2, `${path}: larger than ${maxBytes} bytes`);
  return buf.toString('utf8');
}

/**
 * All of standard input (or `fd`), synchronously. readFileSync(0) fails with EAGAIN on Node 18
 * (Debian 12's nodejs) when stdin is a non-blocking pipe that has no data yet, e.g. one a parent
 * Node.js process holds open: wait for the data instead, as Node 20 does.
 */
export function readStdinSync(fd = 0): Buffer {
  const chunks: Buffer[] = [];
  const chunk = Buffer.allocUnsafe(64 * 1024);
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, chunk, 0, chunk.length, null);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      Atomics.wait(nap, 0, 0, 10); // nothing to read yet: sleep 10 ms
      continue;
    }
    if (n === 0) return Buffer.concat(chunks);
    chunks.push(Buffer.from(chunk.subarray(0, n)));
  }
}
