/**
 * A sliding-window count in constant space: the current fixed window plus the previous one,
 * weighted by how much of it still overlaps the sliding window. Exact enough for rate limits and
 * never grows with the number of events.
 */
export interface WindowCount {
  start: number; // start of the current fixed window
  cur: number;
  prev: number;
}

function roll(w: WindowCount, now: number, windowMs: number): void {
  const elapsed = now - w.start;
  if (elapsed < windowMs) return;
  const windows = Math.floor(elapsed / windowMs);
  w.prev = windows === 1 ? w.cur : 0;
  w.cur = 0;
  w.start += windows * windowMs;
}

export function newWindow(now: number): WindowCount {
  return { start: now, cur: 0, prev: 0 };
}

export function addToWindow(w: WindowCount, now: number, windowMs: number, n = 1): void {
  roll(w, now, windowMs);
  w.cur += n;
}

export function windowEstimate(w: WindowCount, now: number, windowMs: number): number {
  roll(w, now, windowMs);
  const overlap = 1 - (now - w.start) / windowMs;
  return w.cur + w.prev * Math.max(0, overlap);
}
