// Private redis-server and redis-sentinel instances for tests: own ports, own temp folders, config
// files written here, killed when the test process exits, whatever happened.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';

const spawned = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of spawned) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
});

function onPath(name: string): boolean {
  return (process.env.PATH ?? '').split(':').concat(['/usr/bin', '/usr/local/bin']).some((d) => d !== '' && existsSync(join(d, name)));
}

export const redisReady = ['redis-server', 'redis-sentinel', 'redis-cli'].every(onPath);

/** False, with the skip notice on stderr, when the Redis tools are missing. */
export function requireRedis(testName: string): boolean {
  if (redisReady) return true;
  process.stderr.write(`\n*** SKIPPED: "${testName}": redis-server, redis-sentinel or redis-cli not found (apt-get install redis-server redis-sentinel) ***\n`);
  return false;
}

/** A port nobody listens on right now (the kernel's choice, released at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

/** One raw PING: true once the server answers anything RESP (+PONG, or -NOAUTH with a password, or -LOADING). */
function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, 500);
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      clearTimeout(t);
      s.destroy();
      resolve(/^[+-]/.test(d.toString()));
    });
    s.on('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

async function waitAnswers(port: number, proc: ChildProcess, log: () => string, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (proc.exitCode !== null) throw new Error(`redis on port ${port} exited (${proc.exitCode}):\n${log()}`);
    if (await answers(port)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`redis on port ${port} did not answer PING within ${timeoutMs} ms:\n${log()}`);
}

export interface RedisInstance {
  port: number;
  dir: string;
  readonly pid: number | undefined;
  /** redis-cli against this instance (with its password); stdout, trimmed. */
  cli(args: readonly string[]): Promise<string>;
  /** SIGTERM (then SIGKILL after 5 s); resolves when the process is gone. */
  stop(): Promise<void>;
  kill9(): Promise<void>;
  /** Starts the same config on the same port again. */
  restart(): Promise<void>;
}

function runInstance(binary: string, conf: string, port: number, dir: string, password?: string): Promise<RedisInstance> {
  let proc: ChildProcess;
  let out = '';
  const exited = new Map<ChildProcess, Promise<void>>();
  const start = async () => {
    out = '';
    proc = spawn(binary, [conf], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    spawned.add(proc);
    const p = proc;
    exited.set(
      p,
      new Promise((r) =>
        p.once('exit', () => {
          spawned.delete(p);
          r();
        }),
      ),
    );
    p.stdout!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
    p.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-20_000)));
    await waitAnswers(port, p, () => out);
  };
  const end = async (signal: NodeJS.Signals) => {
    const p = proc;
    if (p.exitCode === null && p.signalCode === null) {
      p.kill(signal);
      const t = setTimeout(() => p.kill('SIGKILL'), 5000);
      await exited.get(p);
      clearTimeout(t);
    }
  };
  const inst: RedisInstance = {
    port,
    dir,
    get pid() {
      return proc.pid;
    },
    cli: (args) =>
      new Promise((resolve, reject) => {
        const auth = password !== undefined ? ['--no-auth-warning', '-a', password] : [];
        execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...auth, ...args], { timeout: 10_000 }, (err, stdout, stderr) =>
          err ? reject(new Error(`redis-cli ${args.join(' ')}: ${err.message} ${stderr}`)) : resolve(stdout.trim()),
        );
      }),
    stop: () => end('SIGTERM'),
    kill9: () => end('SIGKILL'),
    restart: () => start(),
  };
  return start().then(() => inst);
}

export interface RedisOptions {
  dir: string;
  port?: number;
  password?: string;
  appendonly?: boolean;
  appendfsync?: 'always' | 'everysec' | 'no';
  /** host:port of the primary to replicate. */
  replicaOf?: { host: string; port: number };
  /** Extra config lines. */
  extra?: string[];
}

export async function startRedis(o: RedisOptions): Promise<RedisInstance> {
  const port = o.port ?? (await freePort());
  const lines = [
    `port ${port}`,
    'bind 127.0.0.1',
    'daemonize no',
    'protected-mode no',
    `dir ${o.dir}`,
    'save ""',
    'logfile ""',
    'loglevel warning',
    `appendonly ${o.appendonly ? 'yes' : 'no'}`,
  ];
  if (o.appendfsync) lines.push(`appendfsync ${o.appendfsync}`);
  if (o.password !== undefined) lines.push(`requirepass ${o.password}`, `masterauth ${o.password}`);
  if (o.replicaOf) lines.push(`replicaof ${o.replicaOf.host} ${o.replicaOf.port}`);
  lines.push(...(o.extra ?? []));
  const conf = join(o.dir, `redis-${port}.conf`);
  writeFileSync(conf, lines.join('\n') + '\n');
  return runInstance('redis-server', conf, port, o.dir, o.password);
}

export interface SentinelOptions {
  dir: string;
  port?: number;
  master: { host: string; port: number; name: string };
  quorum: number;
  downAfterMs: number;
  failoverTimeoutMs: number;
  /** The data servers' requirepass, for the sentinel's own connections to them. */
  authPass?: string;
}

/** redis-sentinel rewrites its config file, so it lives in the (writable) temp folder. */
export async function startSentinel(o: SentinelOptions): Promise<RedisInstance> {
  const port = o.port ?? (await freePort());
  const { name, host } = o.master;
  const lines = [
    `port ${port}`,
    'bind 127.0.0.1',
    'daemonize no',
    'protected-mode no',
    `dir ${o.dir}`,
    'logfile ""',
    'loglevel warning',
    'sentinel resolve-hostnames no',
    `sentinel monitor ${name} ${host} ${o.master.port} ${o.quorum}`,
    `sentinel down-after-milliseconds ${name} ${o.downAfterMs}`,
    `sentinel failover-timeout ${name} ${o.failoverTimeoutMs}`,
    `sentinel parallel-syncs ${name} 1`,
  ];
  if (o.authPass !== undefined) lines.push(`sentinel auth-pass ${name} ${o.authPass}`);
  const conf = join(o.dir, `sentinel-${port}.conf`);
  writeFileSync(conf, lines.join('\n') + '\n');
  return runInstance('redis-sentinel', conf, port, o.dir);
}

/** Polls `check` every 50 ms until it returns true, or throws with `what`. */
export async function waitUntil(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // Not yet.
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
