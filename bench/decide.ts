// Decision throughput of the core decide() alone (no I/O), half registered and half unknown CIDs.
// Server benchmarks, with their bare-Node baselines, come with the adapters (see BENCHMARKS.md later).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decide } from '../src/core/decide.js';
import { parseRules } from '../src/core/rules/load.js';
import { fileStore } from '../src/core/registry/file-store.js';
import { openRegistry } from '../src/core/registry/registry.js';
import type { AuthRequest } from '../src/core/request.js';
import { createVouchStore } from '../src/core/vouches.js';

const USERS = Number(process.env.BENCH_USERS ?? 20_000);
const N = Number(process.env.BENCH_N ?? 500_000);
const dir = mkdtempSync(join(tmpdir(), 'cidlock-bench-'));
try {
  const r = parseRules(`state_dir: ${dir}\npolicy:\n  mode: enforce\ndomains:\n  example.com: { mode: enforce }\n`, join(dir, 'r.yaml'));
  if (!r.ok) throw new Error('bad rules');
  const registry = openRegistry(fileStore(dir), { create: true });
  const items = [];
  for (let u = 0; u < USERS; u++) items.push({ user: `user${u}@example.com`, input: { kind: 'cid' as const, cid: { type: 'UUID', token: `device-${u}` } } });
  let t = process.hrtime.bigint();
  registry.addMany(items);
  const loadMs = Number(process.hrtime.bigint() - t) / 1e6;
  const ctx = { rules: r.rules, registry, vouches: createVouchStore(), now: Date.now() };
  const make = (i: number): AuthRequest => ({
    protocol: 'imap', user: `user${i % USERS}@example.com`, remote: '198.51.100.7', tls: true,
    cid: { type: 'UUID', token: i % 2 === 0 ? `device-${i % USERS}` : 'unknown' }, certFingerprints: [], stage: 'before_auth',
  });
  let sink = 0;
  for (let i = 0; i < 10_000; i++) sink += decide(make(i), ctx).action.length; // warm-up
  t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) sink += decide(make(i), ctx).action.length;
  const decideNs = Number(process.hrtime.bigint() - t);
  const perSec = (ns: number) => Math.round(N / (ns / 1e9));
  console.log(JSON.stringify({
    bench: 'decide', users: USERS, requests: N, registry_write_ms: Math.round(loadMs),
    decide_per_s: perSec(decideNs), us_per_decision: +(decideNs / N / 1000).toFixed(2),
    rss_mb: Math.round(process.memoryUsage().rss / 1048576), node: process.version, sink: sink > 0,
  }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
