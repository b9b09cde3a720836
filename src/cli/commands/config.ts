import { randomBytes } from 'node:crypto';
import { dovecotApiKey } from '../../dovecot-policy/api-key.js';
import { dovecotSnippet, type DovecotVersion } from '../../dovecot-policy/config-snippet.js';
import { postfixSnippet } from '../../postfix-policy/config-snippet.js';
import { CONFIG_OPTION, configPath, parseCommand, UsageError } from '../args.js';
import { loadRulesOrExit, type Io } from '../context.js';
import { HELP } from '../help.js';

const OPTIONS = { ...CONFIG_OPTION, dovecot: { type: 'string' }, nonce: { type: 'string' } } as const;

export function configCommand(argv: string[], io: Io): number {
  const [target, ...rest] = argv;
  if (target === undefined || target === '--help' || target === '-h' || target === 'help') return io.out(HELP.config!), 0;
  const { values } = parseCommand(rest, OPTIONS, { min: 0, max: 0, names: '' });
  if (values.help) return io.out(HELP.config!), 0;
  if (target !== 'dovecot' && target !== 'postfix') throw new UsageError(`unknown target ${JSON.stringify(target)} (expected dovecot or postfix)`);
  if (target === 'postfix') {
    if (values.dovecot !== undefined || values.nonce !== undefined) throw new UsageError('--dovecot and --nonce apply to "config dovecot" only');
    const file = configPath(values.config);
    const snippet = postfixSnippet(loadRulesOrExit(file, io), { source: file });
    io.out(`${snippet.mainCf}
### master.cf

${snippet.masterCf}`);
    return 0;
  }
  const version = (values.dovecot ?? '2.3') as DovecotVersion;
  if (version !== '2.3' && version !== '2.4') throw new UsageError('--dovecot must be 2.3 or 2.4');
  if (values.nonce !== undefined && !/^[\x21-\x7e]{8,128}$/.test(values.nonce)) throw new UsageError('--nonce: 8 to 128 printable characters without spaces');
  const file = configPath(values.config);
  const rules = loadRulesOrExit(file, io);
  io.out(dovecotSnippet(rules, { version, nonce: values.nonce ?? randomBytes(16).toString('hex'), apiKey: dovecotApiKey(rules.dovecot, { create: true }), source: file }));
  return 0;
}
