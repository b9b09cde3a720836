import type { ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { cidlockAsync } from './cli.js';

export type LogLine = Record<string, unknown>;

export interface ServeProcess {
  proc: ChildProcess;
  lines: LogLine[];
  stderr(): string;
  waitFor(pred: (l: LogLine) => boolean, what: string, timeoutMs?: number): Promise<LogLine>;
  /** Address of a listener from its "listening" log line. */
  address(listener: string): Promise<string>;
  stop(): Promise<number | null>;
}

/** `cidlock serve` as a child process; every stdout line must be JSON. */
export function startServe(cfg: string): ServeProcess {
  const proc = cidlockAsync(['serve', '--config', cfg]);
  const lines: LogLine[] = [];
  const waiters: Array<{ pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];
  let buf = '';
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    for (const p of parts) {
      const l = JSON.parse(p) as LogLine;
      lines.push(l);
      for (const w of [...waiters]) if (w.pred(l)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(l); }
    }
  });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const waitFor = (pred: (l: LogLine) => boolean, what: string, timeoutMs = 15_000): Promise<LogLine> => {
    const seen = lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}; log so far:\n${lines.map((l) => JSON.stringify(l)).join('\n')}\n${err}`)), timeoutMs);
      waiters.push({ pred, resolve: (l) => { clearTimeout(t); resolve(l); } });
    });
  };
  return {
    proc,
    lines,
    stderr: () => err,
    waitFor,
    async address(listener) {
      return String((await waitFor((l) => l.event === 'listening' && l.listener === listener, `${listener} listening`)).address);
    },
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

export function httpGet(address: string, path: string): Promise<{ status: number; body: string }> {
  const i = address.lastIndexOf(':');
  const [host, port] = [address.slice(0, i).replace(/^\[|\]$/g, ''), Number(address.slice(i + 1))];
  return new Promise((resolve, reject) => {
    request({ host, port, path, method: 'GET', agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject).end();
  });
}
