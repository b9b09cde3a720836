// Shared by the Redis fault tests: a registry writer in its own process (redis-writer.ts), what it
// acknowledged, and a fresh reader that checks every acknowledged device is in the registry.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openStoreAt } from '../../src/core/registry/open-store.js';
import { openRegistry, type Registry } from '../../src/core/registry/registry.js';
import { parseRedisUrl } from '../../src/redis/url.js';

const writerScript = fileURLToPath(new URL('./redis-writer.js', import.meta.url));

export interface Ack { token: string; user: string; t: number }
export interface WriterError { code: string; msg: string; t: number }

export interface Writer {
  proc: ChildProcess;
  acks: Ack[];
  errors: WriterError[];
  /** Resolves once `n` more acknowledgements than now have arrived (rejects after `timeoutMs`). */
  acked(n: number, timeoutMs: number, what: string): Promise<void>;
  /** SIGKILL; resolves once the process is gone and its last stdout line is read. */
  kill9(): Promise<void>;
  readonly exited: boolean;
}

export function startWriter(url: string, keyPrefix: string, tokenPrefix: string, o: { replicas?: number; compactBytes?: number } = {}): Writer {
  const args = [writerScript, url, keyPrefix, tokenPrefix, String(o.replicas ?? 0), ...(o.compactBytes === undefined ? [] : [String(o.compactBytes)])];
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const acks: Ack[] = [];
  const errors: WriterError[] = [];
  let stderr = '';
  let buf = '';
  let waiters: Array<() => void> = [];
  proc.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    for (const p of parts) {
      const l = JSON.parse(p) as { ack?: string; user?: string; err?: string; msg?: string; t: number };
      if (l.ack !== undefined) acks.push({ token: l.ack, user: l.user!, t: l.t });
      else if (l.err !== undefined) errors.push({ code: l.err, msg: l.msg ?? '', t: l.t });
    }
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  });
  let exited = false;
  const gone = new Promise<void>((resolve) => proc.stdout!.on('close', () => resolve()));
  const exit = new Promise<void>((resolve) => proc.on('exit', () => { exited = true; resolve(); }));
  return {
    proc,
    acks,
    errors,
    get exited() { return exited; },
    acked(n, timeoutMs, what) {
      const want = acks.length + n;
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`${what}: the writer acknowledged ${acks.length - (want - n)} of ${n} devices within ${timeoutMs} ms; its last errors: ${JSON.stringify(errors.slice(-3))}; stderr: ${stderr}`)), timeoutMs);
        const check = () => {
          if (acks.length >= want) { clearTimeout(t); resolve(); }
          else if (exited) { clearTimeout(t); reject(new Error(`${what}: the writer exited: ${stderr}`)); }
          else waiters.push(check);
        };
        check();
        void exit.then(() => check());
      });
    },
    async kill9() {
      if (!exited) proc.kill('SIGKILL');
      await Promise.all([exit, gone]);
    },
  };
}

/** A fresh registry on the store, on its own connection, as another host would open it. */
export async function withFreshRegistry<T>(url: string, keyPrefix: string, f: (r: Registry) => Promise<T> | T): Promise<T> {
  const parsed = parseRedisUrl(url);
  if (!parsed.ok) throw new Error(parsed.error);
  const opened = await openStoreAt({ kind: 'redis', url, address: parsed.address, passwordFile: '', keyPrefix, replicas: 0 }, { role: 'fault-check' });
  try {
    return await f(await openRegistry(opened.store, { create: false }));
  } finally {
    await opened.close();
  }
}

/** The acknowledged devices not in `r`. */
export const missing = (r: Registry, acks: readonly Ack[]): Ack[] => acks.filter((a) => !r.findCid(a.user, { type: 'UUID', token: a.token }));

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
