// test/clients/libetpan-clientid.c, compiled outside the checkout (once per source and libetpan
// version) and run as a real CLIENTID client.
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './paths.js';
import { testCacheRoot } from './test-ca.js';

export const LIBETPAN_CLIENT_SRC = join(repoRoot, 'test', 'clients', 'libetpan-clientid.c');

function pkgConfig(args: string[]): string | null {
  const r = spawnSync('pkg-config', args, { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** Whether the client can be built here: gcc, pkg-config and libetpan-dev. Prints the skip notice. */
export function requireLibetpan(test: string): boolean {
  const missing: string[] = [];
  if (spawnSync('gcc', ['--version'], { stdio: 'ignore' }).status !== 0) missing.push('gcc');
  if (pkgConfig(['--exists', 'libetpan']) === null) missing.push('libetpan (pkg-config libetpan; apt-get install libetpan-dev pkg-config)');
  if (missing.length === 0) return true;
  process.stderr.write(`\n*** SKIPPED: e2e "${test}": ${missing.join(', ')} not found; .ci/run installs them ***\n`);
  return false;
}

/** Compiles the client into the test cache (keyed by its source and libetpan's version); returns the binary. */
export function buildLibetpanClient(): string {
  const cflags = pkgConfig(['--cflags', 'libetpan']) ?? '';
  const libs = pkgConfig(['--libs', 'libetpan']) ?? '-letpan';
  const version = pkgConfig(['--modversion', 'libetpan']) ?? '?';
  const src = readFileSync(LIBETPAN_CLIENT_SRC);
  const key = createHash('sha256').update(src).update(cflags).update(libs).update(version).digest('hex').slice(0, 16);
  const dir = join(testCacheRoot(), `libetpan-client-${key}`);
  const bin = join(dir, 'libetpan-clientid');
  if (existsSync(bin)) return bin;
  mkdirSync(testCacheRoot(), { recursive: true, mode: 0o700 });
  const tmp = `${dir}.${process.pid}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  const args = ['-O1', '-Wall', '-Werror', '-o', join(tmp, 'libetpan-clientid'), LIBETPAN_CLIENT_SRC, ...cflags.split(/\s+/).filter(Boolean), ...libs.split(/\s+/).filter(Boolean)];
  const r = spawnSync('gcc', args, { encoding: 'utf8' });
  if (r.status !== 0) {
    rmSync(tmp, { recursive: true, force: true });
    throw new Error(`gcc ${args.join(' ')} failed:\n${r.stderr}`);
  }
  try {
    renameSync(tmp, dir);
  } catch {
    rmSync(tmp, { recursive: true, force: true });
  }
  return bin;
}

export type LibetpanMode = 'starttls' | 'imaps' | 'plain' | 'clear-starttls';

export interface LibetpanResult {
  status: number | null;
  /** Each `key: value` line the client printed. */
  lines: Record<string, string>;
  stdout: string;
  stderr: string;
}

/** One login with the libetpan client. */
export function libetpanLogin(o: { port: number; mode: LibetpanMode; user: string; pass: string; cid?: { type: string; token: string } }): Promise<LibetpanResult> {
  const bin = buildLibetpanClient();
  const args = ['127.0.0.1', String(o.port), o.mode, o.user, o.pass, ...(o.cid ? [o.cid.type, o.cid.token] : [])];
  return new Promise((resolve) => {
    execFile(bin, args, { timeout: 60_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const lines: Record<string, string> = {};
      for (const l of stdout.split('\n')) {
        const i = l.indexOf(': ');
        if (i > 0) lines[l.slice(0, i)] = l.slice(i + 2);
      }
      const status = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null;
      resolve({ status, lines, stdout, stderr });
    });
  });
}
