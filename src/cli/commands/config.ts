import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { isAbsolute } from 'node:path';
import { dovecotApiKey } from '../../dovecot-policy/api-key.js';
import { dovecotSnippet, dovecotSyntaxFor, type DovecotVersion } from '../../dovecot-policy/config-snippet.js';
import { POSTFIX_FORMATS, PostfixConfigError, postfixConfig, type PostfixFormat } from '../../postfix-policy/config-snippet.js';
import { CONFIG_OPTION, configPath, parseCommand, UsageError } from '../args.js';
import { ExitError, loadRulesOrExit, type Io } from '../context.js';
import { HELP } from '../help.js';

const OPTIONS = {
  ...CONFIG_OPTION,
  dovecot: { type: 'string' },
  nonce: { type: 'string' },
  clientid: { type: 'boolean' },
  'login-plugin-dir': { type: 'string' },
  format: { type: 'string' },
  'postfix-config': { type: 'string' },
  'queue-directory': { type: 'string' },
} as const;

const POSTFIX_ONLY = ['format', 'postfix-config', 'queue-directory'] as const;

/** How long `dovecot --version` may take before cidlock gives up asking. */
const DOVECOT_VERSION_TIMEOUT_MS = 5_000;

/** What the installed Dovecot says it is, or null when there is none here to ask. */
function installedDovecot(): string | null {
  // Run as a user whose PATH lacks the sbin folders, too.
  const path = [process.env.PATH ?? '', '/usr/sbin', '/sbin'].filter((p) => p !== '').join(':');
  const r = spawnSync('dovecot', ['--version'], { encoding: 'utf8', timeout: DOVECOT_VERSION_TIMEOUT_MS, env: { ...process.env, PATH: path } });
  return r.status === 0 && typeof r.stdout === 'string' ? r.stdout.trim() : null;
}

function absoluteDir(option: string, value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (!isAbsolute(value) || /[\s'"\\]/.test(value)) throw new UsageError(`--${option}: expected an absolute directory path without spaces or quotes, got ${JSON.stringify(value)}`);
  return value.replace(/(.)\/+$/, '$1');
}

export function configCommand(argv: string[], io: Io): number {
  const [target, ...rest] = argv;
  if (target === undefined || target === '--help' || target === '-h' || target === 'help') return io.out(HELP.config!), 0;
  const { values } = parseCommand(rest, OPTIONS, { min: 0, max: 0, names: '' });
  if (values.help) return io.out(HELP.config!), 0;
  if (target !== 'dovecot' && target !== 'postfix') throw new UsageError(`unknown target ${JSON.stringify(target)} (expected dovecot or postfix)`);
  const file = configPath(values.config);
  if (target === 'postfix') {
    if (values.dovecot !== undefined || values.nonce !== undefined || values.clientid !== undefined || values['login-plugin-dir'] !== undefined) {
      throw new UsageError('--dovecot, --nonce, --clientid and --login-plugin-dir apply to "config dovecot" only');
    }
    const format = (values.format ?? 'commands') as PostfixFormat;
    if (!POSTFIX_FORMATS.includes(format)) throw new UsageError(`--format must be one of ${POSTFIX_FORMATS.join(', ')}`);
    const opts = {
      source: file,
      queueDirectory: absoluteDir('queue-directory', values['queue-directory']),
      configDirectory: absoluteDir('postfix-config', values['postfix-config']),
    };
    const rules = loadRulesOrExit(file, io);
    try {
      io.out(postfixConfig(rules, format, opts));
    } catch (err) {
      if (err instanceof PostfixConfigError) throw new ExitError(2, `${file}: ${err.message}`);
      throw err;
    }
    return 0;
  }
  for (const o of POSTFIX_ONLY) if (values[o] !== undefined) throw new UsageError(`--${o} applies to "config postfix" only`);
  let version = values.dovecot as DovecotVersion | undefined;
  if (version !== undefined && version !== '2.3' && version !== '2.4') throw new UsageError('--dovecot must be 2.3 or 2.4');
  if (version === undefined) {
    // The syntax of the Dovecot on this host, when there is one; else 2.3 (Debian 12).
    const found = installedDovecot();
    const syntax = found === null ? null : dovecotSyntaxFor(found);
    version = syntax ?? '2.3';
    io.err(found === null
      ? 'cidlock: no dovecot found here; printing Dovecot 2.3 syntax (--dovecot 2.4 for Dovecot 2.4)'
      : syntax === null
        ? `cidlock: cannot tell the syntax of Dovecot ${JSON.stringify(found.slice(0, 40))}; printing 2.3 syntax (--dovecot 2.3|2.4 chooses)`
        : `cidlock: Dovecot ${found.split(' ')[0]} found here; printing its ${syntax} syntax (--dovecot 2.3|2.4 overrides)`);
  }
  if (values.nonce !== undefined && !/^[\x21-\x7e]{8,128}$/.test(values.nonce)) throw new UsageError('--nonce: 8 to 128 printable characters without spaces');
  const loginPluginDir = absoluteDir('login-plugin-dir', values['login-plugin-dir']);
  if (loginPluginDir !== undefined && values.clientid !== true) throw new UsageError('--login-plugin-dir goes with --clientid');
  const rules = loadRulesOrExit(file, io);
  // A URL for a listener that is off would point Dovecot at nothing, or at whatever else took the port.
  if (rules.listen.dovecot === null) throw new ExitError(2, `${file}: listen.dovecot is off, so there is no policy service for Dovecot to ask; set listen.dovecot (the default is 127.0.0.1:8425) or leave Dovecot's configuration as it is`);
  io.out(dovecotSnippet(rules, { version, nonce: values.nonce ?? randomBytes(16).toString('hex'), apiKey: dovecotApiKey(rules.dovecot, { create: true }), source: file, clientid: values.clientid === true, ...(loginPluginDir !== undefined ? { loginPluginDir } : {}) }));
  return 0;
}
