// Dovecot path throughput: cidlock's auth_policy server against a bare node:http server that
// answers a constant {"status":0}, both in a child process, loaded in the same run by 100
// keep-alive connections (Dovecot's default maximum) replaying the real captured bodies.
import { fork } from 'node:child_process';
import { Agent, createServer, request } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 100);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const here = fileURLToPath(import.meta.url);

async function serve(kind: string, stateDir: string): Promise<void> {
  let server;
  if (kind === 'bare') {
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":0}'));
    });
    server.keepAliveTimeout = 65_000;
  } else {
    const { parseRules } = await import('../src/core/rules/load.js');
    const { createEngine } = await import('../src/core/engine.js');
    const { openRegistry } = await import('../src/core/registry/registry.js');
    const { fileStore } = await import('../src/core/registry/file-store.js');
    const { createDovecotServer } = await import('../src/dovecot-policy/server.js');
    const r = parseRules(`state_dir: ${stateDir}\npolicy: { mode: enforce }\nlimits: []\n`, join(stateDir, 'r.yaml'));
    if (!r.ok) throw new Error('rules');
    const registry = openRegistry(fileStore(stateDir), { create: true });
    registry.add('alice@example.com', { kind: 'cid', cid: { type: 'UUID', token: '23bf83be-aad7-46aa-9e0f-39191ccf402f' } }, 'admin');
    const logger = { log() {} }; // decision logging is measured separately; stdout would dominate here
    server = createDovecotServer({ engine: createEngine({ rules: r.rules, registry, logger }), logger });
  }
  server.listen(0, '127.0.0.1', () => process.send!((server.address() as { port: number }).port));
}

function captureBodies(): Array<{ path: string; body: string }> {
  const file = join(here, '..', '..', '..', 'test', 'fixtures', 'captures', 'dovecot-2.3.19-imap-pop3.jsonl');
  const caps = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { path: string; body: string });
  // Vary users and sessions so the before/after pairing and registry lookups do real work.
  const out: Array<{ path: string; body: string }> = [];
  for (let i = 0; i < 1000; i++) {
    for (const c of caps) out.push({ path: c.path, body: c.body.replace('alice@example.com', `user${i % 200}@example.com`).replace(/"session_id":"[^"]*"/, `"session_id":"s${i}"`) });
  }
  return out;
}

async function load(port: number, bodies: Array<{ path: string; body: string }>): Promise<{ rps: number; p50: number; p99: number; p999: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  const lat: number[] = [];
  const end = Date.now() + SECONDS * 1000;
  let n = 0;
  const worker = async (w: number) => {
    for (let i = w; Date.now() < end; i += CONNECTIONS) {
      const b = bodies[i % bodies.length]!;
      const t0 = process.hrtime.bigint();
      await new Promise<void>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path: b.path, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(b.body) } }, (res) => {
          res.resume();
          res.on('end', resolve);
        });
        req.on('error', reject);
        req.end(b.body);
      });
      lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
      n++;
    }
  };
  const t0 = Date.now();
  await Promise.all(Array.from({ length: CONNECTIONS }, (_, w) => worker(w)));
  const secs = (Date.now() - t0) / 1000;
  agent.destroy();
  lat.sort((a, b) => a - b);
  const q = (p: number) => +lat[Math.min(lat.length - 1, Math.floor(lat.length * p))]!.toFixed(2);
  return { rps: Math.round(n / secs), p50: q(0.5), p99: q(0.99), p999: q(0.999) };
}

async function main(): Promise<void> {
  if (process.argv[2] === 'serve') return serve(process.argv[3]!, process.argv[4]!);
  const bodies = captureBodies();
  const results: Record<string, unknown> = {};
  for (const kind of ['bare', 'cidlock']) {
    const state = mkdtempSync(join(tmpdir(), 'cidlock-bench-'));
    const child = fork(here, ['serve', kind, state], { stdio: 'inherit' });
    const port = await new Promise<number>((resolve) => child.once('message', (m) => resolve(Number(m))));
    await load(port, bodies.slice(0, 2000)); // warm-up
    results[kind] = await load(port, bodies);
    child.kill();
    rmSync(state, { recursive: true, force: true });
  }
  const bare = results.bare as { rps: number };
  const cid = results.cidlock as { rps: number };
  const out = { bench: 'dovecot-http', connections: CONNECTIONS, seconds: SECONDS, ...results, ratio: +(cid.rps / bare.rps).toFixed(3), node: process.version };
  writeFileSync(1, `${JSON.stringify(out)}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
