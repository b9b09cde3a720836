import { readFileSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { copyRegistry } from '../../core/registry/copy.js';
import { openStoreAt, readPasswordFile, type StoreSpec } from '../../core/registry/open-store.js';
import { DEFAULT_KEY_PREFIX } from '../../core/rules/load-store.js';
import type { Rules } from '../../core/rules/types.js';
import { parseRedisUrl } from '../../redis/url.js';
import { CONFIG_OPTION, configPath, parseCommand, UsageError } from '../args.js';
import { auditFromCli, CLI_REDIS_WAIT_MS, ExitError, loadRulesOrExit, type Io } from '../context.js';
import { HELP } from '../help.js';
import { endReplay, handOffToStateOwner, readCliFile } from '../owner-handoff.js';

const OPTIONS = {
  ...CONFIG_OPTION,
  from: { type: 'string' },
  to: { type: 'string' },
  force: { type: 'boolean' },
  'password-file': { type: 'string' },
  'key-prefix': { type: 'string' },
} as const;

const isUrl = (s: string) => /^(redis|sentinel):\/\//i.test(s);

/**
 * A store named on the command line. A Redis URL takes its password file and key prefix from the
 * options, else from the rules when the rules name the same URL: the password never goes on the
 * command line, where every local user can read it in the process list.
 */
function storeArg(text: string, rules: Rules, o: { passwordFile?: string; keyPrefix?: string }): StoreSpec {
  if (!isUrl(text)) return { kind: 'file', stateDir: resolvePath(text) };
  const parsed = parseRedisUrl(text);
  if (!parsed.ok) throw new UsageError(parsed.error);
  const same = rules.store.redis !== null && rules.store.redis.url === text ? rules.store.redis : null;
  return {
    kind: 'redis', url: text, address: parsed.address,
    passwordFile: o.passwordFile !== undefined ? resolvePath(o.passwordFile) : same?.passwordFile ?? '',
    keyPrefix: o.keyPrefix ?? same?.keyPrefix ?? DEFAULT_KEY_PREFIX,
    replicas: same?.replicas ?? 0,
  };
}

const describeSpec = (s: StoreSpec) => (s.kind === 'file' ? `${s.stateDir} (file store)` : `${s.url} (key prefix ${JSON.stringify(s.keyPrefix)})`);

export async function storeCommand(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') return io.out(HELP.store!), 0;
  if (sub !== 'copy') throw new UsageError(`unknown store command ${JSON.stringify(sub)} (expected copy)`);
  const { values } = parseCommand(rest, OPTIONS, { min: 0, max: 0, names: '' });
  if (values.help) return io.out(HELP.store!), 0;
  if (values.from === undefined || values.to === undefined) throw new UsageError('--from and --to are required');
  const rules = loadRulesOrExit(configPath(values.config), io);
  const o = { ...(values['password-file'] !== undefined ? { passwordFile: values['password-file'] } : {}), ...(values['key-prefix'] !== undefined ? { keyPrefix: values['key-prefix'] } : {}) };
  if (o.keyPrefix !== undefined && (o.keyPrefix === '' || /[^\x21-\x7e]/.test(o.keyPrefix))) throw new UsageError('--key-prefix must be printable characters without spaces');
  const from = storeArg(values.from, rules, o);
  const to = storeArg(values.to, rules, o);
  if (JSON.stringify(from) === JSON.stringify(to)) throw new UsageError('--from and --to name the same store');

  const readFile = (f: string) => readCliFile(f, readFileSync);
  // Read as the caller (root) before a handoff, like the rules: the child reads no file itself.
  for (const s of [from, to]) if (s.kind === 'redis' && s.passwordFile !== '') readPasswordFile(s.passwordFile, readFile);
  // A state_dir on either side is written (the copy, or the lock while reading): as its owner.
  const dir = to.kind === 'file' ? to.stateDir : from.kind === 'file' ? from.stateDir : null;
  if (dir !== null) {
    const status = await handOffToStateOwner(dir);
    if (status !== null) throw new ExitError(status);
  }
  endReplay();
  const src = await openStoreAt(from, { role: 'cli', readFile, waitMs: CLI_REDIS_WAIT_MS });
  try {
    const dst = await openStoreAt(to, { role: 'cli', readFile, waitMs: CLI_REDIS_WAIT_MS });
    try {
      const r = await copyRegistry(src.store, dst.store, { replace: values.force === true });
      if (r.status === 'not_empty') throw new ExitError(1, `${describeSpec(to)} holds a registry already; nothing was changed (--force replaces it, CID key included)`);
      auditFromCli(rules, io, { event: 'registry_copied', from: describeSpec(from), to: describeSpec(to), users: r.users, devices: r.devices, source: 'admin' });
      io.out(`copied ${r.users} users and ${r.devices} devices, with the CID key, from ${describeSpec(from)} to ${describeSpec(to)}; read back: identical (sha256 ${r.digest.slice(0, 16)})`);
      return 0;
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
}
