import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

export const CIDLOCK = join(repoRoot, 'bin', 'cidlock');

export interface CliResult { status: number; stdout: string; stderr: string }

/** Runs the real CLI as a child process, exactly as an operator would. */
export function cidlock(args: string[], opts: { input?: string; env?: Record<string, string> } = {}): CliResult {
  const r = spawnSync(process.execPath, [CIDLOCK, ...args], {
    input: opts.input ?? '',
    encoding: 'utf8',
    env: { ...process.env, CIDLOCK_CONFIG: '', ...opts.env },
    cwd: repoRoot,
    timeout: 30_000,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function cidlockAsync(args: string[]) {
  return spawn(process.execPath, [CIDLOCK, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}
