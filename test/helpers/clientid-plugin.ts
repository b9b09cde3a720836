// Builds cidlock's CLIENTID plugin for imap-login (src/dovecot-clientid) outside the checkout, and
// the dovecot.conf lines that load it. Tests and the benchmark share one build per source version.
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cidlock } from './cli.js';
import { repoRoot } from './paths.js';

export const PLUGIN_NAME = 'cidlock_clientid';
export const PLUGIN_FILE = `lib20_${PLUGIN_NAME}_plugin.so`;
export const PLUGIN_SRC = join(repoRoot, 'src', 'dovecot-clientid');
const DOVECOT_CONFIG = '/usr/lib/dovecot/dovecot-config';

function onPath(name: string): boolean {
  return (process.env.PATH ?? '').split(':').concat(['/usr/bin', '/usr/sbin']).some((d) => d !== '' && existsSync(join(d, name)));
}

/**
 * What building the plugin needs and is missing: the compiler, make and Dovecot's headers
 * (dovecot-dev ships dovecot-config). Prints the skip notice the other e2e tests print.
 */
export function requirePluginTools(test: string): boolean {
  const missing = ['gcc', 'make', 'dovecot', 'openssl'].filter((n) => !onPath(n));
  if (!existsSync(DOVECOT_CONFIG)) missing.push(`${DOVECOT_CONFIG} (dovecot-dev)`);
  if (missing.length === 0) return true;
  process.stderr.write(`\n*** SKIPPED: e2e "${test}": ${missing.join(', ')} not found; .ci/run installs them (apt-get install dovecot-dev gcc make dovecot-imapd openssl) ***\n`);
  return false;
}

/**
 * Builds the plugin with its own Makefile (make O=DIR) into a cache folder named by the hash of
 * its sources and of the installed Dovecot's dovecot-config (a plugin only loads into the release
 * it was built for). Built into a fresh folder and renamed into place, so test files running at
 * once never load a half-written file. Returns the folder, usable as login_plugin_dir.
 */
export function buildClientidPlugin(): string {
  const h = createHash('sha256');
  for (const f of ['Makefile', 'cidlock-clientid-plugin.c', 'cidlock-clientid-compat.h']) h.update(f).update(readFileSync(join(PLUGIN_SRC, f)));
  h.update(readFileSync(DOVECOT_CONFIG));
  const dir = join(tmpdir(), `cidlock-clientid-plugin-${h.digest('hex').slice(0, 16)}`);
  if (existsSync(join(dir, PLUGIN_FILE))) return dir;
  const work = `${dir}.${process.pid}.${Date.now()}`;
  mkdirSync(work, { recursive: true });
  const r = spawnSync('make', ['-s', '-C', PLUGIN_SRC, `O=${work}`], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0 || !existsSync(join(work, PLUGIN_FILE))) {
    rmSync(work, { recursive: true, force: true });
    throw new Error(`building the CLIENTID plugin failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  }
  // imap-login loads it as root before dropping privileges, but keep it readable like a package's.
  chmodSync(work, 0o755);
  try {
    renameSync(work, dir);
  } catch {
    // Another process put its build there first: same sources, same result.
    rmSync(work, { recursive: true, force: true });
  }
  return dir;
}

/**
 * `cidlock config dovecot --clientid --login-plugin-dir DIR`, exactly as an operator gets it: the
 * policy settings with the plugin's forward fields, and the protocol imap block that loads it.
 */
export function clientidSnippetFor(cfg: string, pluginDir: string): string {
  const r = cidlock(['config', 'dovecot', '--dovecot', '2.3', '--config', cfg, '--nonce', 'e2e-test-nonce-0123456789', '--clientid', '--login-plugin-dir', pluginDir]);
  if (r.status !== 0) throw new Error(`cidlock config dovecot --clientid failed: ${r.stderr}`);
  if (!r.stdout.includes(`login_plugins = $login_plugins ${PLUGIN_NAME}`)) throw new Error(`the snippet does not load ${PLUGIN_NAME}:\n${r.stdout}`);
  return r.stdout;
}
