import { parseArgs, type ParseArgsConfig } from 'node:util';
import { accountName, parseLoginName } from '../core/login-name.js';

/** A mistake in how a command was called: exit status 2 and a pointer to --help. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

type Options = NonNullable<ParseArgsConfig['options']>;

const HELP_OPTION = { help: { type: 'boolean', short: 'h' } } as const satisfies Options;

export const CONFIG_OPTION = { config: { type: 'string', short: 'c' } } as const satisfies Options;

type Values<O extends Options> = {
  [K in keyof O]?: O[K] extends { type: 'boolean' }
    ? O[K] extends { multiple: true } ? boolean[] : boolean
    : O[K] extends { multiple: true } ? string[] : string;
} & { help?: boolean };

export function parseCommand<O extends Options>(argv: string[], options: O, positionals: { min: number; max: number; names: string }): { values: Values<O>; positionals: string[] } {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...options, ...HELP_OPTION }, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
  const values = parsed.values as Values<O>;
  const pos = parsed.positionals;
  if (!values.help) {
    if (pos.length < positionals.min) throw new UsageError(`missing ${positionals.names}`);
    if (pos.length > positionals.max) throw new UsageError(`unexpected argument ${JSON.stringify(pos[positionals.max])}`);
  }
  return { values, positionals: pos };
}

const DEFAULT_CONFIG = '/etc/cidlock/cidlock.yaml';

export function configPath(value: unknown): string {
  if (typeof value === 'string' && value !== '') return value;
  return process.env.CIDLOCK_CONFIG || DEFAULT_CONFIG;
}

/** A login name from the command line, as the account the mail servers name (see accounts.default_domain). */
export function userArg(value: string | undefined, defaultDomain = ''): string {
  const r = parseLoginName(value ?? '');
  if (!r.ok) throw new UsageError(r.error);
  return accountName(r.name, defaultDomain);
}
