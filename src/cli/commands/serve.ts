import { jsonLogger } from '../../core/log.js';
import { loadRulesFile } from '../../core/rules/load.js';
import { formatRulesIssue } from '../../core/rules/types.js';
import { startDaemon } from '../../daemon/daemon.js';
import { CONFIG_OPTION, configPath, parseCommand } from '../args.js';
import type { Io } from '../context.js';
import { HELP } from '../help.js';

export async function serveCommand(argv: string[], io: Io): Promise<number> {
  const { values } = parseCommand(argv, CONFIG_OPTION, { min: 0, max: 0, names: '' });
  if (values.help) return io.out(HELP.serve!), 0;
  // Named like the command, not "node", so `pidof cidlock` finds the daemon: pidof matches
  // argv[0], which this rewrites (and the thread name). Other cidlock commands stay "node".
  process.title = 'cidlock';
  const logger = jsonLogger();
  const file = configPath(values.config);
  const r = loadRulesFile(file);
  for (const w of r.warnings) logger.log('warn', 'rules_warning', { warning: formatRulesIssue(w) });
  if (!r.ok) {
    logger.log('error', 'rules_rejected', { rules: file, errors: r.errors.map(formatRulesIssue) });
    for (const e of r.errors) io.err(formatRulesIssue(e));
    return 2;
  }
  let daemon;
  try {
    daemon = await startDaemon({ rules: r.rules, logger });
  } catch (err) {
    logger.log('error', 'start_failed', { error: (err as Error).message });
    io.err(`cidlock: cannot start: ${(err as Error).message}`);
    return 1;
  }
  return new Promise<number>((resolve) => {
    process.on('SIGHUP', () => daemon.reload('SIGHUP'));
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.log('info', 'stopping', { signal });
      daemon.close().then(() => {
        logger.log('info', 'stopped', {});
        resolve(0);
      });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}
