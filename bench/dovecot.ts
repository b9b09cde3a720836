// Dovecot path: cidlock's auth_policy server against a bare node:http server answering a constant
// {"status":0}. Each server gets its own core; wrk loads it from the other core with 100
// keep-alive connections (Dovecot's default maximum) replaying the captured allow and report
// bodies. Then latency at half of cidlock's maximum rate, open loop (no coordinated omission).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dovecotBodies } from './fixtures.js';
import { CLIENT_CORE, distBench, peakRssMb, percentiles, pinSelf, sleep, startServer } from './lib.js';

const USERS = 1000;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CONNECTIONS = 100;

function wrk(port: number, file: string): { rps: number; p50: number; p99: number } {
  const script = join(distBench, '..', '..', 'bench', 'wrk-dovecot.lua');
  const r = spawnSync('taskset', ['-c', String(CLIENT_CORE), 'wrk', '-t1', `-c${CONNECTIONS}`, `-d${SECONDS}s`, '--latency', '-s', script, `http://127.0.0.1:${port}/`, '--', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
  const num = (re: RegExp) => Number(re.exec(r.stdout)?.[1] ?? NaN);
  const ms = (label: string) => {
    const m = new RegExp(`\\s${label}%\\s+([\\d.]+)(us|ms|s)`).exec(r.stdout);
    if (!m) return NaN;
    return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
  };
  if (/Non-2xx/.test(r.stdout)) throw new Error(`non-2xx answers:\n${r.stdout}`);
  return { rps: Math.round(num(/Requests\/sec:\s+([\d.]+)/)), p50: ms('50'), p99: ms('99') };
}

/** Sends at a fixed rate and measures from the intended send time, so queueing shows. */
async function openLoop(port: number, bodies: Array<{ path: string; body: string }>, rate: number): Promise<ReturnType<typeof percentiles> & { sent: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  const lat: number[] = [];
  const start = performance.now();
  const total = Math.round(rate * SECONDS);
  let i = 0;
  const inflight: Promise<void>[] = [];
  while (i < total) {
    const due = start + (i * 1000) / rate;
    const now = performance.now();
    if (due > now) await sleep(Math.max(0, due - now - 0.5));
    for (; i < total && start + (i * 1000) / rate <= performance.now(); i++) {
      const intended = start + (i * 1000) / rate;
      const b = bodies[i % bodies.length]!;
      inflight.push(new Promise<void>((resolve) => {
        const req = request({ host: '127.0.0.1', port, path: b.path, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b.body) } }, (res) => {
          res.resume();
          res.on('end', () => { lat.push(performance.now() - intended); resolve(); });
        });
        req.on('error', () => resolve());
        req.end(b.body);
      }));
    }
  }
  await Promise.all(inflight);
  agent.destroy();
  return { ...percentiles(lat), sent: total };
}

export async function benchDovecot(): Promise<Record<string, unknown>> {
  pinSelf(CLIENT_CORE);
  const bodies = dovecotBodies(USERS);
  const dir = mkdtempSync(join(tmpdir(), 'cidlock-bench-'));
  const file = join(dir, 'bodies.txt');
  writeFileSync(file, bodies.map((b) => `${b.path}\n${b.body}\n`).join(''));
  const out: Record<string, unknown> = { connections: CONNECTIONS, seconds: SECONDS, users: USERS };
  try {
    for (const kind of ['bare-http', 'cidlock-dovecot']) {
      const state = mkdtempSync(join(dir, 'state-'));
      const s = await startServer(kind, state, USERS);
      wrk(s.port, file); // warm-up: JIT, caches
      const max = wrk(s.port, file);
      const res: Record<string, unknown> = { ...max };
      if (kind === 'cidlock-dovecot') res.half_rate = { rate: Math.round(max.rps / 2), ...(await openLoop(s.port, bodies, max.rps / 2)) };
      res.peak_rss_mb = peakRssMb(s.proc.pid!);
      await s.stop();
      out[kind] = res;
    }
    out.ratio = +((out['cidlock-dovecot'] as { rps: number }).rps / (out['bare-http'] as { rps: number }).rps).toFixed(3);
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
