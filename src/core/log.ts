export type LogLevel = 'info' | 'warn' | 'error';

export interface Logger {
  log(level: LogLevel, event: string, fields?: Record<string, unknown>): void;
}

/** One JSON object per line, so operators can grep it and log shippers need no parser config. */
export function jsonLogger(write: (line: string) => void = (l) => process.stdout.write(l)): Logger {
  return {
    log(level, event, fields = {}) {
      write(`${JSON.stringify({ ts: new Date().toISOString(), level, event, ...fields })}\n`);
    },
  };
}

