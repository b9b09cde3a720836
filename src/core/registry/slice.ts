import { performance } from 'node:perf_hooks';

/**
 * Registry work on the daemon's main thread (reading a million devices, writing a snapshot) runs
 * in slices of about this long, and pending requests are served between two slices. Dovecot gives
 * up after 2 s and lets the login through; the target is that no request waits 100 ms. Measured
 * on 2 cores with 1M devices (test/faults/stall.test.ts): with 10 ms slices requests waited up to
 * 35 ms (p99 20 ms), with 5 ms up to 25 ms (p99 13 ms; the rest is garbage collection), and a
 * whole re-read took no longer.
 */
export const SLICE_MS = 5;

export interface Slicer {
  /** Whether the current slice is used up: then `await pause()`. */
  due(): boolean;
  /** Lets the event loop serve pending I/O, then starts a new slice. */
  pause(): Promise<void>;
}

export function slicer(ms = SLICE_MS): Slicer {
  let start = performance.now();
  return {
    due: () => performance.now() - start >= ms,
    async pause() {
      // setImmediate, not a resolved promise: it runs after the poll phase, so sockets get a turn.
      await new Promise<void>((resolve) => setImmediate(resolve));
      start = performance.now();
    },
  };
}
