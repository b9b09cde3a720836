import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const distBench = join(fileURLToPath(import.meta.url), '..');

/** Two cores here: the server under test gets core 0, the load generator core 1. */
export const SERVER_CORE = 0;
export const CLIENT_CORE = 1;
const hasTaskset = spawnSync('taskset', ['-c', '0', 'true']).status === 0;

export function pinnedSpawn(core: number, cmd: string, args: string[], opts: Parameters<typeof spawn>[2] = {}): ChildProcess {
  return hasTaskset ? spawn('taskset', ['-c', String(core), cmd, ...args], opts) : spawn(cmd, args, opts);
}

export function pinSelf(core: number): void {
  if (hasTaskset) spawnSync('taskset', ['-pc', String(core), String(process.pid)], { stdio: 'ignore' });
}

/** Peak resident memory of a process, from the kernel's own high-water mark. */
export function peakRssMb(pid: number): number {
  const f = `/proc/${pid}/status`;
  if (!existsSync(f)) return NaN;
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(f, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

export interface RunningServer { port: number; proc: ChildProcess; stop(): Promise<void> }

/**
 * BENCH_BEFORE=<another checkout's dist/bench>: the previous design's servers are measured in the
 * same run, against the same load, so "no slower than before" is a ratio, not a memory.
 */
export const beforeBench = process.env.BENCH_BEFORE;

/**
 * Rounds of the previous design against this one. Which goes first alternates too: on this VM the
 * second server of a back-to-back pair measured up to 20 % slower, whichever it was.
 */
export const BEFORE_ROUNDS = Number(process.env.BENCH_BEFORE_ROUNDS ?? 4);
export const roundOrder = (r: number): Array<'before' | 'now'> => (r % 2 === 0 ? ['before', 'now'] : ['now', 'before']);

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function startServer(kind: string, stateDir: string, users: number, dist = distBench): Promise<RunningServer> {
  // BENCH_CPU_PROF=<dir>: each server under test writes a V8 CPU profile there when stopped.
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`, `--cpu-prof-name=${kind}-${Date.now()}.cpuprofile`] : [];
  const proc = pinnedSpawn(SERVER_CORE, process.execPath, [...prof, join(dist, 'servers.js'), kind, stateDir, String(users)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    proc.once('exit', (c) => reject(new Error(`${kind} exited with ${c}`)));
  });
  return { port, proc, stop: () => new Promise((r) => { proc.once('exit', () => r()); proc.kill(); }) };
}

export function percentiles(lat: number[]): { p50: number; p99: number; p999: number } {
  const s = [...lat].sort((a, b) => a - b);
  const q = (p: number) => +(s[Math.min(s.length - 1, Math.floor(s.length * p))] ?? NaN).toFixed(3);
  return { p50: q(0.5), p99: q(0.99), p999: q(0.999) };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function machine(): Record<string, unknown> {
  const cpu = /model name\s+:\s+(.*)/.exec(existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '')?.[1] ?? 'unknown';
  return { node: process.version, cpu, cores: Number(spawnSync('nproc').stdout?.toString().trim() || 0), pinned: hasTaskset };
}
