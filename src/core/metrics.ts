/**
 * A tiny Prometheus registry rendering the text exposition format 0.0.4.
 *
 * Hot-path design: every inc/set/observe validates its labels with a key-count loop (no regex, no
 * arrays) and builds one string, the series key, which is the already-escaped label body
 * (`a="x",b="y"`). render() reuses that key verbatim, so label values are escaped once per call.
 */

export type Labels = Record<string, string>;
export interface Counter {
  inc(labels?: Labels, by?: number): void;
  get(labels?: Labels): number;
}
export interface Gauge {
  set(value: number, labels?: Labels): void;
  inc(labels?: Labels, by?: number): void;
  get(labels?: Labels): number;
}
export interface Histogram {
  observe(value: number, labels?: Labels): void;
}
export interface Metrics {
  counter(name: string, help: string, labelNames?: readonly string[]): Counter;
  gauge(name: string, help: string, labelNames?: readonly string[]): Gauge;
  histogram(name: string, help: string, buckets: readonly number[], labelNames?: readonly string[]): Histogram;
  /** Gauges whose value is read at scrape time (e.g. a map's size). */
  gaugeFn(name: string, help: string, read: () => number): void;
  /** Counters kept by another module, read at scrape time; `read` must never decrease (name it `_total`). */
  counterFn(name: string, help: string, read: () => number): void;
  render(): string;
}

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Label sets kept per metric; new label sets beyond this are dropped and counted. */
export const MAX_SERIES_PER_METRIC = 10_000;

const METRIC_NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

const BACKSLASH = 92;
const QUOTE = 34;
const NEWLINE = 10;

/** Escapes a label value (`\` → `\\`, `"` → `\"`, LF → `\n`); returns the input itself when clean. */
function escapeLabelValue(value: string): string {
  const n = value.length;
  let i = 0;
  for (; i < n; i++) {
    const c = value.charCodeAt(i);
    if (c === BACKSLASH || c === QUOTE || c === NEWLINE) break;
  }
  if (i === n) return value;
  let out = value.slice(0, i);
  for (; i < n; i++) {
    const c = value.charCodeAt(i);
    if (c === BACKSLASH) out += '\\\\';
    else if (c === QUOTE) out += '\\"';
    else if (c === NEWLINE) out += '\\n';
    else out += value[i];
  }
  return out;
}

/** HELP text escapes only `\` and LF. */
function escapeHelp(help: string): string {
  return help.replaceAll('\\', '\\\\').replaceAll('\n', '\\n');
}

function formatValue(v: number): string {
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  if (Number.isNaN(v)) return 'NaN';
  return String(v);
}

type KeyFn = (labels: Labels | undefined) => string;

function labelError(metric: string, labelNames: readonly string[], labels: Labels | undefined): Error {
  const given = labels === undefined ? [] : Object.keys(labels);
  const unknown = given.filter((k) => !labelNames.includes(k));
  const missing = labelNames.filter((k) => labels === undefined || !Object.hasOwn(labels, k));
  const notString = labelNames.filter(
    (k) => labels !== undefined && Object.hasOwn(labels, k) && typeof labels[k] !== 'string',
  );
  const parts: string[] = [];
  if (unknown.length > 0) parts.push(`undeclared label(s) ${unknown.map((k) => JSON.stringify(k)).join(', ')}`);
  if (missing.length > 0) parts.push(`missing label(s) ${missing.map((k) => JSON.stringify(k)).join(', ')}`);
  if (notString.length > 0) parts.push(`non-string value for label(s) ${notString.map((k) => JSON.stringify(k)).join(', ')}`);
  if (parts.length === 0) parts.push('labels do not match the declared label names');
  const declared = labelNames.length === 0 ? 'none' : labelNames.join(', ');
  return new Error(`metrics: ${metric}: ${parts.join('; ')} (declared: ${declared})`);
}

/** Builds the function turning a label object into the (escaped, declared-order) series key. */
function makeKeyFn(metric: string, labelNames: readonly string[]): KeyFn {
  const n = labelNames.length;
  if (n === 0) {
    return (labels) => {
      if (labels !== undefined) {
        for (const _ in labels) throw labelError(metric, labelNames, labels);
      }
      return '';
    };
  }
  const heads = labelNames.map((l, i) => `${i === 0 ? '' : ','}${l}="`);
  return (labels) => {
    if (labels === undefined) throw labelError(metric, labelNames, labels);
    let count = 0;
    for (const _ in labels) count++;
    if (count !== n) throw labelError(metric, labelNames, labels);
    let key = '';
    for (let i = 0; i < n; i++) {
      const v = labels[labelNames[i]!];
      if (typeof v !== 'string') throw labelError(metric, labelNames, labels);
      key += heads[i]! + escapeLabelValue(v) + '"';
    }
    return key;
  };
}

function seriesName(name: string, key: string): string {
  return key === '' ? name : `${name}{${key}}`;
}

interface HistogramSeries {
  /** Non-cumulative per-bucket counts; last slot is the +Inf bucket. Cumulated at render. */
  counts: number[];
  sum: number;
}

type Renderer = (out: string[]) => void;

const DROPPED_HELP = `New label sets dropped because their metric already had ${MAX_SERIES_PER_METRIC} series.`;

export function createMetrics(prefix = ''): Metrics {
  const claimed = new Set<string>();
  const renderers: Renderer[] = [];
  let dropped = 0;
  /** Whether a new series fits under the cap; one that does not is counted as dropped. */
  const roomFor = (series: Map<string, unknown>): boolean => {
    if (series.size < MAX_SERIES_PER_METRIC) return true;
    dropped++;
    return false;
  };

  /** Validates the name (with prefix) and checks it, and any derived names, are still free. */
  function register(name: string, help: string, type: string, derived: readonly string[]): string {
    if (typeof name !== 'string' || typeof help !== 'string') {
      throw new TypeError('metrics: name and help must be strings');
    }
    const full = prefix + name;
    if (!METRIC_NAME_RE.test(full)) {
      throw new Error(`metrics: invalid metric name ${JSON.stringify(full)}: must match [a-zA-Z_:][a-zA-Z0-9_:]*`);
    }
    for (const n of [full, ...derived.map((s) => full + s)]) {
      if (claimed.has(n)) {
        throw new Error(`metrics: metric name ${JSON.stringify(n)} is already registered (registering ${type} ${full})`);
      }
    }
    return full;
  }

  /** Call only once every other check for the metric has passed, so a failed registration claims nothing. */
  function claim(full: string, derived: readonly string[]): void {
    claimed.add(full);
    for (const s of derived) claimed.add(full + s);
  }

  function checkLabelNames(metric: string, labelNames: readonly string[], reserved: readonly string[]): string[] {
    if (!Array.isArray(labelNames)) throw new TypeError(`metrics: ${metric}: labelNames must be an array`);
    const seen = new Set<string>();
    for (const l of labelNames) {
      if (typeof l !== 'string' || !LABEL_NAME_RE.test(l)) {
        throw new Error(`metrics: ${metric}: invalid label name ${JSON.stringify(l)}: must match [a-zA-Z_][a-zA-Z0-9_]*`);
      }
      if (l.startsWith('__')) throw new Error(`metrics: ${metric}: label name ${JSON.stringify(l)} is reserved (starts with "__")`);
      if (reserved.includes(l)) throw new Error(`metrics: ${metric}: label name ${JSON.stringify(l)} is reserved`);
      if (seen.has(l)) throw new Error(`metrics: ${metric}: duplicate label name ${JSON.stringify(l)}`);
      seen.add(l);
    }
    return [...labelNames];
  }

  function header(out: string[], name: string, help: string, type: string): void {
    out.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
  }

  /** Shared storage for counters and gauges: series key → value. */
  function scalarFamily(name: string, help: string, type: 'counter' | 'gauge', labelNames: readonly string[]) {
    const full = register(name, help, type, []);
    const names = checkLabelNames(full, labelNames, []);
    claim(full, []);
    const keyOf = makeKeyFn(full, names);
    const values = new Map<string, number>();
    if (names.length === 0) values.set('', 0);
    renderers.push((out) => {
      header(out, full, help, type);
      for (const [key, v] of values) out.push(`${seriesName(full, key)} ${formatValue(v)}`);
    });
    /** Adds `by` (or sets, when `replace`) to the series; drops new series past the cap. */
    const update = (labels: Labels | undefined, v: number, replace: boolean): void => {
      const key = keyOf(labels);
      const cur = values.get(key);
      if (cur === undefined && !roomFor(values)) return;
      values.set(key, replace || cur === undefined ? v : cur + v);
    };
    const get = (labels?: Labels): number => values.get(keyOf(labels)) ?? 0;
    return { full, update, get };
  }

  /** An unlabelled series whose value another module owns; a throwing reader renders NaN. */
  function readAtScrape(name: string, help: string, type: 'counter' | 'gauge', read: () => number): void {
    const full = register(name, help, type, []);
    if (typeof read !== 'function') throw new TypeError(`metrics: ${full}: read must be a function`);
    claim(full, []);
    renderers.push((out) => {
      let v: number;
      try {
        v = read();
      } catch {
        v = NaN;
      }
      header(out, full, help, type);
      out.push(`${full} ${formatValue(typeof v === 'number' ? v : NaN)}`);
    });
  }

  const droppedName = register('metrics_dropped_series_total', DROPPED_HELP, 'counter', []);
  claim(droppedName, []);

  const metrics: Metrics = {
    counter(name, help, labelNames = []) {
      const f = scalarFamily(name, help, 'counter', labelNames);
      return {
        inc(labels, by = 1) {
          if (!(by >= 0 && by < Infinity)) {
            throw new RangeError(`metrics: ${f.full}: counter increment must be a finite number >= 0, got ${by}`);
          }
          f.update(labels, by, false);
        },
        get: f.get,
      };
    },

    gauge(name, help, labelNames = []) {
      const f = scalarFamily(name, help, 'gauge', labelNames);
      return {
        set(value, labels) {
          f.update(labels, value, true);
        },
        inc(labels, by = 1) {
          f.update(labels, by, false);
        },
        get: f.get,
      };
    },

    histogram(name, help, buckets, labelNames = []) {
      const full = register(name, help, 'histogram', ['_bucket', '_sum', '_count']);
      const names = checkLabelNames(full, labelNames, ['le']);
      if (!Array.isArray(buckets)) throw new TypeError(`metrics: ${full}: buckets must be an array`);
      const bounds = buckets.length > 0 && buckets[buckets.length - 1] === Infinity ? buckets.slice(0, -1) : [...buckets];
      for (let i = 0; i < bounds.length; i++) {
        const b = bounds[i]!;
        if (typeof b !== 'number' || !Number.isFinite(b)) {
          throw new Error(`metrics: ${full}: bucket bounds must be finite numbers (a trailing +Inf is implied), got ${b}`);
        }
        if (i > 0 && !(b > bounds[i - 1]!)) {
          throw new Error(`metrics: ${full}: buckets must be strictly increasing, got ${bounds[i - 1]} then ${b}`);
        }
      }
      claim(full, ['_bucket', '_sum', '_count']);
      const les = [...bounds.map(formatValue), '+Inf'];
      const nb = bounds.length;
      const keyOf = makeKeyFn(full, names);
      const series = new Map<string, HistogramSeries>();
      const fresh = (): HistogramSeries => ({ counts: new Array<number>(nb + 1).fill(0), sum: 0 });
      if (names.length === 0) series.set('', fresh());

      renderers.push((out) => {
        header(out, full, help, 'histogram');
        for (const [key, s] of series) {
          const lead = key === '' ? `${full}_bucket{le="` : `${full}_bucket{${key},le="`;
          let cum = 0;
          for (let i = 0; i <= nb; i++) {
            cum += s.counts[i]!;
            out.push(`${lead}${les[i]!}"} ${cum}`);
          }
          out.push(`${seriesName(`${full}_sum`, key)} ${formatValue(s.sum)}`);
          out.push(`${seriesName(`${full}_count`, key)} ${cum}`);
        }
      });

      return {
        observe(value, labels) {
          if (typeof value !== 'number' || Number.isNaN(value)) {
            throw new TypeError(`metrics: ${full}: observed value must be a number, got ${value}`);
          }
          const key = keyOf(labels);
          let s = series.get(key);
          if (s === undefined) {
            if (!roomFor(series)) return;
            s = fresh();
            series.set(key, s);
          }
          let i = 0;
          while (i < nb && value > bounds[i]!) i++;
          s.counts[i]!++;
          s.sum += value;
        },
      };
    },

    gaugeFn(name, help, read) {
      readAtScrape(name, help, 'gauge', read);
    },

    counterFn(name, help, read) {
      readAtScrape(name, help, 'counter', read);
    },

    render() {
      const out: string[] = [];
      for (const r of renderers) r(out);
      // Built-in, always rendered last.
      header(out, droppedName, DROPPED_HELP, 'counter');
      out.push(`${droppedName} ${dropped}`);
      return out.join('\n') + '\n';
    },
  };

  return metrics;
}
