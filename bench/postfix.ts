// Postfix path: cidlock's policy server against a bare node:net server answering action=DUNNO and
// against postfwd (Debian's package) with an equivalent 1,000-user rule set: an authenticated
// user whose client certificate is not theirs is refused. Several hundred persistent connections
// send the captured requests one after another, as smtpd does.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchUsers, postfixRequests } from './fixtures.js';
import { BEFORE_ROUNDS, beforeBench, roundOrder, CLIENT_CORE, median, peakRssMb, percentiles, pinSelf, SERVER_CORE, sleep, startServer } from './lib.js';

const USERS = 1000;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 300);

/** Closed loop: every connection sends its next request when the previous answer arrives. */
export async function load(port: number, reqs: string[], seconds: number, connections: number): Promise<{ rps: number; errors: number; rejects: number } & ReturnType<typeof percentiles>> {
  const lat: number[] = [];
  let n = 0;
  let errors = 0;
  let rejects = 0;
  const end = performance.now() + seconds * 1000;
  const worker = (w: number) => new Promise<void>((resolve) => {
    const sock: Socket = connect(port, '127.0.0.1');
    let i = w * 7;
    let t0 = 0;
    let buf = '';
    const next = () => {
      if (performance.now() >= end) { sock.destroy(); resolve(); return; }
      t0 = performance.now();
      sock.write(reqs[i++ % reqs.length]!);
    };
    sock.on('connect', next);
    sock.on('data', (d) => {
      buf += d.toString();
      const at = buf.indexOf('\n\n');
      if (at < 0) return;
      if (!buf.startsWith('action=')) errors++;
      else if (buf.startsWith('action=REJECT')) rejects++;
      buf = buf.slice(at + 2);
      lat.push(performance.now() - t0);
      n++;
      next();
    });
    sock.on('error', () => { errors++; resolve(); });
    sock.on('close', () => resolve());
  });
  const t0 = performance.now();
  await Promise.all(Array.from({ length: connections }, (_, w) => worker(w)));
  return { rps: Math.round(n / ((performance.now() - t0) / 1000)), errors, rejects, ...percentiles(lat) };
}

/** postfwd rules equivalent to cidlock's lock: one rule per user, refuse any other certificate. */
function postfwdRules(users: number): string {
  const colon = (hex: string) => hex.toUpperCase().replace(/(..)(?!$)/g, '$1:');
  return benchUsers(users).map((u, i) => `id=U${i}; sasl_username==${u.user}; ccert_pubkey_fingerprint!=${colon(u.fingerprint)}; action=REJECT 5.7.1 Access denied\n`).join('');
}

async function startPostfwd(dir: string, cached: boolean): Promise<{ port: number; stop: () => void; pid: () => number }> {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const rules = join(dir, 'postfwd.cf');
  writeFileSync(rules, postfwdRules(USERS), { mode: 0o644 });
  chmodSync(dir, 0o755); // postfwd reads its rules as user nobody
  const pidfile = join(dir, `postfwd-${port}.pid`);
  // Not -L: in daemon mode its log lines would go into the client connection. -P: no syslog.
  const args = ['-d', '-P', '-n', '-f', rules, '-i', '127.0.0.1', '-p', String(port), '-u', 'nobody', '-g', 'nogroup', '--pidfile', pidfile, '--noidlestats',
    ...(cached ? ['-c', '600', '--cacheid', 'sasl_username,ccert_pubkey_fingerprint'] : ['-c', '0'])];
  const r = spawnSync('taskset', ['-c', String(SERVER_CORE), 'postfwd', ...args], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`postfwd did not start: ${r.stderr}${r.stdout}`);
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (up) break;
    await sleep(100);
  }
  const pid = () => Number(readFileSync(pidfile, 'utf8').trim());
  // Its children run as nobody and outlive a kill of the parent: match them by the rules path.
  return { port, pid, stop: () => { spawnSync('pkill', ['-f', rules], { stdio: 'ignore' }); } };
}

export async function benchPostfix(): Promise<Record<string, unknown>> {
  pinSelf(CLIENT_CORE);
  const reqs = postfixRequests(USERS);
  const dir = mkdtempSync(join(tmpdir(), 'cidlock-bench-'));
  const out: Record<string, unknown> = { connections: CONNECTIONS, seconds: SECONDS, users: USERS };
  try {
    for (const kind of ['bare-net', 'cidlock-postfix']) {
      const s = await startServer(kind, mkdtempSync(join(dir, 'state-')), USERS);
      await load(s.port, reqs, 2, CONNECTIONS); // warm-up
      out[kind] = { ...(await load(s.port, reqs, SECONDS, CONNECTIONS)), peak_rss_mb: peakRssMb(s.proc.pid!) };
      await s.stop();
    }
    if (beforeBench !== undefined) {
      const rounds: Record<'before' | 'now', number[]> = { before: [], now: [] };
      for (let r = 0; r < BEFORE_ROUNDS; r++) {
        for (const which of roundOrder(r)) {
          const s = await startServer('cidlock-postfix', mkdtempSync(join(dir, 'state-')), USERS, which === 'before' ? beforeBench : undefined);
          await load(s.port, reqs, 2, CONNECTIONS);
          rounds[which].push((await load(s.port, reqs, SECONDS, CONNECTIONS)).rps);
          await s.stop();
        }
      }
      out.vs_before = { rounds: rounds.before.length, before_rps: rounds.before, now_rps: rounds.now, ratio: +(median(rounds.now) / median(rounds.before)).toFixed(3) };
    }
    if (spawnSync('sh', ['-c', 'command -v postfwd']).status === 0) {
      for (const cached of [false, true]) {
        const p = await startPostfwd(dir, cached);
        try {
          // postfwd handles a connection per child process: a few connections, as its docs suggest.
          // Cached: a stream of 100 sessions that repeats, so every (user, certificate) pair can be
          // in the cache; one slow pass fills it first. Uncached: the full stream, like cidlock's.
          const stream = cached ? postfixRequests(USERS, 400) : reqs;
          if (cached) await load(p.port, stream, 25, 10);
          const res = await load(p.port, stream, SECONDS, 10);
          if (res.rejects === 0) throw new Error('postfwd refused nothing: its rules were not loaded');
          out[cached ? 'postfwd-cached' : 'postfwd'] = res;
        } finally {
          p.stop();
        }
      }
    } else {
      out.postfwd = 'not installed (apt-get install postfwd)';
    }
    const rps = (k: string) => (out[k] as { rps?: number } | undefined)?.rps ?? NaN;
    out.ratio_bare = +(rps('cidlock-postfix') / rps('bare-net')).toFixed(3);
    out.ratio_postfwd = +(rps('cidlock-postfix') / rps('postfwd')).toFixed(1);
    out.ratio_postfwd_cached = +(rps('cidlock-postfix') / rps('postfwd-cached')).toFixed(1);
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
