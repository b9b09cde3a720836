// Loaded into a daemon under test with `node --import`: reports, as JSON lines on stdout like the
// daemon's own log, the longest its event loop went without running a 5 ms timer in each 200 ms,
// and how much of that gap the main thread spent waiting for a CPU (Linux schedstat). Tells a
// stall of the daemon's own making from one where other processes had the cores.
import { readFileSync } from 'node:fs';
import { performance, PerformanceObserver } from 'node:perf_hooks';

const EVERY_MS = 5;

/** Nanoseconds the main thread ran, and waited runnable for a CPU; null where unsupported. */
function schedstat(): [number, number] | null {
  try {
    const [run, wait] = readFileSync('/proc/self/schedstat', 'utf8').split(' ');
    return [Number(run) / 1e6, Number(wait) / 1e6];
  } catch {
    return null;
  }
}

// Garbage collection pauses the main thread too: the longest pause per report.
let gcWorst = 0;
let gcKind = '';
// perf_hooks' NODE_PERFORMANCE_GC_* kinds: 1 minor (scavenge), 2 major (mark-compact), 4 incremental, 8 weak callbacks.
const KINDS: Record<number, string> = { 1: 'minor', 2: 'major', 4: 'incremental', 8: 'weakcb' };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    if (e.duration <= gcWorst) continue;
    gcWorst = e.duration;
    gcKind = KINDS[(e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0] ?? 'other';
  }
}).observe({ entryTypes: ['gc'] });

let last = performance.now();
let lastSched = schedstat();
let worst = { gap: 0, ran: 0, waited: 0 };
setInterval(() => {
  const now = performance.now();
  const sched = schedstat();
  const gap = now - last - EVERY_MS;
  if (gap > worst.gap) {
    worst = { gap, ran: sched && lastSched ? sched[0] - lastSched[0] : NaN, waited: sched && lastSched ? sched[1] - lastSched[1] : NaN };
  }
  last = now;
  lastSched = sched;
}, EVERY_MS).unref();
setInterval(() => {
  process.stdout.write(`${JSON.stringify({ ts: new Date().toISOString(), event: 'test_loop_delay', max_ms: +worst.gap.toFixed(1), ran_ms: +worst.ran.toFixed(1), waited_ms: +worst.waited.toFixed(1), gc_ms: +gcWorst.toFixed(1), gc_kind: gcKind })}\n`);
  worst = { gap: 0, ran: 0, waited: 0 };
  gcWorst = 0;
  gcKind = '';
}, 200).unref();
