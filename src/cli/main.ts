import { VERSION } from '../core/version.js';
import { RegistryError, type RegistryErrorCode } from '../core/registry/types.js';
import { beginCommand, endReplay, replaying, StateOwnerError } from './owner-handoff.js';
import { ApiKeyError } from '../dovecot-policy/api-key.js';
import { UsageError } from './args.js';
import { checkCommand } from './commands/check.js';
import { configCommand } from './commands/config.js';
import { devicesCommand } from './commands/devices.js';
import { pendingCommand } from './commands/pending.js';
import { serveCommand } from './commands/serve.js';
import { storeCommand } from './commands/store.js';
import { testCommand } from './commands/test.js';
import { usersCommand } from './commands/users.js';
import { closeStores, ExitError, stdio, type Io } from './context.js';
import { HELP } from './help.js';

/** Registry failures, so scripts can tell "retry later" from "fix the input" (help.ts documents them). */
const REGISTRY_EXIT: Record<RegistryErrorCode, number> = { ambiguous: 3, locked: 4, io: 5, corrupt: 6 };

const COMMANDS: Record<string, (argv: string[], io: Io) => number | Promise<number>> = {
  serve: serveCommand,
  check: checkCommand,
  test: testCommand,
  users: usersCommand,
  devices: devicesCommand,
  pending: pendingCommand,
  config: configCommand,
  store: storeCommand,
};

export async function main(argv: string[], io: Io = stdio): Promise<number> {
  const [cmd, ...rest] = argv;
  // A reader that stopped reading (cidlock check | head) ends a command quietly, as it ends
  // other Unix tools. Not the daemon: its standard output is its log, handled where it is written.
  if (io === stdio && cmd !== 'serve') {
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
      process.exit(process.exitCode ?? 0);
    });
  }
  if (cmd === undefined || cmd === '--help' || cmd === '-h') return io.out(HELP.main!), cmd === undefined ? 2 : 0;
  if (cmd === 'help') {
    const topic = rest[0] ?? 'main';
    const text = HELP[topic];
    if (text === undefined) return io.err(`cidlock: no help for ${JSON.stringify(topic)}`), 2;
    return io.out(text), 0;
  }
  if (cmd === '--version') return io.out(`cidlock ${VERSION}`), 0;
  const run = COMMANDS[cmd];
  if (run === undefined) {
    io.err(`cidlock: unknown command ${JSON.stringify(cmd)}; see "cidlock --help"`);
    return 2;
  }
  // A child replaying its parent's command prints nothing the parent printed already.
  const quiet: Io = { out: (t) => replaying() || io.out(t), err: (t) => replaying() || io.err(t) };
  try {
    beginCommand(argv);
    return await run(rest, quiet);
  } catch (err) {
    // Past the point where the parent handed over, or a replay that went its own way: show it.
    endReplay();
    if (err instanceof UsageError) {
      io.err(`cidlock ${cmd}: ${err.message}; see "cidlock ${cmd} --help"`);
      return 2;
    }
    if (err instanceof ExitError) {
      if (err.message !== '') io.err(`cidlock ${cmd}: ${err.message}`);
      return err.status;
    }
    if (err instanceof StateOwnerError) {
      io.err(`cidlock ${cmd}: ${err.message}`);
      return 1;
    }
    if (err instanceof ApiKeyError) {
      io.err(`cidlock ${cmd}: ${err.message}`);
      return 1;
    }
    if (err instanceof RegistryError) {
      io.err(`cidlock ${cmd}: registry: ${err.message}`);
      return REGISTRY_EXIT[err.code];
    }
    throw err;
  } finally {
    await closeStores();
  }
}
