// Postfix path throughput: cidlock's policy server against a bare node:net server answering
// action=DUNNO, both in a child process, loaded in the same run by persistent connections that
// send the real captured requests one after another, as smtpd does.
import { fork } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 300);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const here = fileURLToPath(import.meta.url);

async function serve(kind: string, stateDir: string): Promise<void> {
  let server;
  if (kind === 'bare') {
    server = createServer((sock) => {
      let buf = '';
      sock.on('data', (d) => {
        buf += d.toString();
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          buf = buf.slice(i + 2);
          sock.write('action=DUNNO\n\n');
        }
      });
      sock.on('error', () => sock.destroy());
    });
  } else {
    const { parseRules } = await import('../src/core/rules/load.js');
    const { createEngine } = await import('../src/core/engine.js');
    const { openRegistry } = await import('../src/core/registry/registry.js');
    const { fileStore } = await import('../src/core/registry/file-store.js');
    const { createPolicyServer } = await import('../src/postfix-policy/policy-server.js');
    const r = parseRules(`state_dir: ${stateDir}\npolicy: { mode: enforce }\nlimits: []\n`, join(stateDir, 'r.yaml'));
    if (!r.ok) throw new Error('rules');
    const registry = openRegistry(fileStore(stateDir), { create: true });
    const items = Array.from({ length: 1000 }, (_, i) => ({ user: `user${i}@example.com`, input: { kind: 'cert' as const, fingerprint: (i === 0 ? '28fcdfa54bcc0a58ddfc1bcd1442bb9942105a5fc836790f2c9c1f0c62fc2fe4' : i.toString(16).padStart(64, '0')) } }));
    registry.addMany(items);
    const logger = { log() {} };
    server = createPolicyServer({ engine: createEngine({ rules: r.rules, registry, logger }), logger });
  }
  server.listen(0, '127.0.0.1', () => process.send!((server.address() as { port: number }).port));
}

function requests(): string[] {
  const file = join(here, '..', '..', '..', 'test', 'fixtures', 'captures', 'postfix-3.7-policy-tls-client-cert.txt');
  const blocks = readFileSync(file, 'utf8').trim().split('\n\n').map((b) => `${b}\n\n`);
  const out: string[] = [];
  for (let i = 0; i < 1000; i++) out.push(blocks[i % 4]!.replace(/alice@example\.com/g, `user${i % 1000}@example.com`));
  return out;
}

async function load(port: number, reqs: string[]): Promise<{ rps: number; p50: number; p99: number; p999: number }> {
  const lat: number[] = [];
  const end = Date.now() + SECONDS * 1000;
  let n = 0;
  const worker = (w: number) => new Promise<void>((resolve) => {
    const sock: Socket = connect(port, '127.0.0.1');
    let i = w;
    let t0 = 0n;
    let buf = '';
    const next = () => {
      if (Date.now() >= end) { sock.destroy(); resolve(); return; }
      t0 = process.hrtime.bigint();
      sock.write(reqs[i++ % reqs.length]!);
    };
    sock.on('connect', next);
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\n\n')) {
        buf = '';
        lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
        n++;
        next();
      }
    });
    sock.on('error', () => resolve());
  });
  const t0 = Date.now();
  await Promise.all(Array.from({ length: CONNECTIONS }, (_, w) => worker(w)));
  const secs = (Date.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const q = (p: number) => +lat[Math.min(lat.length - 1, Math.floor(lat.length * p))]!.toFixed(2);
  return { rps: Math.round(n / secs), p50: q(0.5), p99: q(0.99), p999: q(0.999) };
}

async function main(): Promise<void> {
  if (process.argv[2] === 'serve') return serve(process.argv[3]!, process.argv[4]!);
  const reqs = requests();
  const results: Record<string, { rps: number }> = {};
  for (const kind of ['bare', 'cidlock']) {
    const state = mkdtempSync(join(tmpdir(), 'cidlock-bench-'));
    const child = fork(here, ['serve', kind, state], { stdio: 'inherit' });
    const port = await new Promise<number>((resolve) => child.once('message', (m) => resolve(Number(m))));
    await load(port, reqs);
    results[kind] = await load(port, reqs);
    child.kill();
    rmSync(state, { recursive: true, force: true });
  }
  const out = { bench: 'postfix-policy', connections: CONNECTIONS, seconds: SECONDS, ...results, ratio: +(results.cidlock!.rps / results.bare!.rps).toFixed(3), node: process.version };
  writeFileSync(1, `${JSON.stringify(out)}\n`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
