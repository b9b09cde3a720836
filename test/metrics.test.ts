import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CONTENT_TYPE, MAX_SERIES_PER_METRIC, createMetrics } from '../src/core/metrics.js';

const DROPPED_TAIL = (prefix: string, n: number): string =>
  `# HELP ${prefix}metrics_dropped_series_total New label sets dropped because their metric already had 10000 series.\n` +
  `# TYPE ${prefix}metrics_dropped_series_total counter\n` +
  `${prefix}metrics_dropped_series_total ${n}\n`;

const LABEL = String.raw`[a-zA-Z_][a-zA-Z0-9_]*="(?:\\[\\"n]|[^"\\\n])*"`;
const SAMPLE_RE = new RegExp(
  String.raw`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{${LABEL}(,${LABEL})*\})? (NaN|[+-]Inf|-?\d+(\.\d+)?(e[+-]?\d+)?)$`,
);
const COMMENT_RE = /^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram|summary|untyped))$/;

function assertParses(text: string): void {
  assert.ok(text.endsWith('\n'), 'output ends with a newline');
  const lines = text.slice(0, -1).split('\n');
  for (const line of lines) {
    if (line.startsWith('#')) assert.ok(COMMENT_RE.test(line), `bad comment line: ${JSON.stringify(line)}`);
    else assert.ok(SAMPLE_RE.test(line), `bad sample line: ${JSON.stringify(line)}`);
  }
}

function throwsMatching(fn: () => unknown, re: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof Error, 'throws an Error');
    assert.match((e as Error).message, re);
    return;
  }
  assert.unreachable(`expected a throw matching ${re}`);
}

test('content type is the 0.0.4 text format', () => {
  assert.is(CONTENT_TYPE, 'text/plain; version=0.0.4; charset=utf-8');
});

test('empty registry renders only the built-in dropped-series counter', () => {
  assert.is(createMetrics().render(), DROPPED_TAIL('', 0));
  assert.is(createMetrics('cidlock_').render(), DROPPED_TAIL('cidlock_', 0));
});

test('counter without labels: starts at 0, prefix applied, no _total added', () => {
  const m = createMetrics('cidlock_');
  const c = m.counter('logins_total', 'Login decisions.');
  const plain = m.counter('restarts', 'No suffix added.');
  assert.is(c.get(), 0);
  c.inc();
  c.inc(undefined, 2.5);
  c.inc({}, 0);
  assert.is(c.get(), 3.5);
  plain.inc();
  assert.is(
    m.render(),
    '# HELP cidlock_logins_total Login decisions.\n' +
      '# TYPE cidlock_logins_total counter\n' +
      'cidlock_logins_total 3.5\n' +
      '# HELP cidlock_restarts No suffix added.\n' +
      '# TYPE cidlock_restarts counter\n' +
      'cidlock_restarts 1\n' +
      DROPPED_TAIL('cidlock_', 0),
  );
});

test('counter with labels: insertion order of series, declared order of keys', () => {
  const m = createMetrics();
  const c = m.counter('decisions_total', 'Decisions by outcome.', ['service', 'outcome']);
  c.inc({ outcome: 'allow', service: 'imap' });
  c.inc({ service: 'smtp', outcome: 'deny' }, 4);
  c.inc({ outcome: 'allow', service: 'imap' }, 2);
  assert.is(c.get({ service: 'imap', outcome: 'allow' }), 3);
  assert.is(c.get({ service: 'pop3', outcome: 'allow' }), 0);
  assert.is(
    m.render(),
    '# HELP decisions_total Decisions by outcome.\n' +
      '# TYPE decisions_total counter\n' +
      'decisions_total{service="imap",outcome="allow"} 3\n' +
      'decisions_total{service="smtp",outcome="deny"} 4\n' +
      DROPPED_TAIL('', 0),
  );
});

test('labelled metric with no series renders only HELP and TYPE', () => {
  const m = createMetrics();
  m.counter('x_total', 'Nothing yet.', ['a']);
  assert.is(m.render(), '# HELP x_total Nothing yet.\n# TYPE x_total counter\n' + DROPPED_TAIL('', 0));
});

test('gauge: set, inc (incl. negative), get, special values', () => {
  const m = createMetrics();
  const g = m.gauge('queue_depth', 'Queue depth.');
  const h = m.gauge('temp', 'By room.', ['room']);
  g.set(10);
  g.inc();
  g.inc(undefined, -3.5);
  assert.is(g.get(), 7.5);
  h.set(Infinity, { room: 'a' });
  h.set(-Infinity, { room: 'b' });
  h.set(NaN, { room: 'c' });
  h.inc({ room: 'd' }, -2);
  assert.is(h.get({ room: 'd' }), -2);
  const out = m.render();
  assert.is(
    out,
    '# HELP queue_depth Queue depth.\n' +
      '# TYPE queue_depth gauge\n' +
      'queue_depth 7.5\n' +
      '# HELP temp By room.\n' +
      '# TYPE temp gauge\n' +
      'temp{room="a"} +Inf\n' +
      'temp{room="b"} -Inf\n' +
      'temp{room="c"} NaN\n' +
      'temp{room="d"} -2\n' +
      DROPPED_TAIL('', 0),
  );
  assertParses(out);
});

test('gaugeFn is read at every render; a throwing reader yields NaN', () => {
  const m = createMetrics('cidlock_');
  const map = new Map<string, number>();
  m.gaugeFn('sessions', 'Tracked sessions.', () => map.size);
  m.gaugeFn('broken', 'Reader throws.', () => {
    throw new Error('boom');
  });
  const expected = (n: number): string =>
    '# HELP cidlock_sessions Tracked sessions.\n' +
    '# TYPE cidlock_sessions gauge\n' +
    `cidlock_sessions ${n}\n` +
    '# HELP cidlock_broken Reader throws.\n' +
    '# TYPE cidlock_broken gauge\n' +
    'cidlock_broken NaN\n' +
    DROPPED_TAIL('cidlock_', 0);
  assert.is(m.render(), expected(0));
  map.set('a', 1).set('b', 2);
  assert.is(m.render(), expected(2));
});

test('counterFn is a counter read at every render, from a tally another module keeps', () => {
  const m = createMetrics('cidlock_');
  let delivered = 0;
  m.counterFn('webhook_delivered_total', 'Delivered.', () => delivered);
  const expected = (n: number): string =>
    '# HELP cidlock_webhook_delivered_total Delivered.\n' +
    '# TYPE cidlock_webhook_delivered_total counter\n' +
    `cidlock_webhook_delivered_total ${n}\n` +
    DROPPED_TAIL('cidlock_', 0);
  assert.is(m.render(), expected(0));
  delivered = 7;
  assert.is(m.render(), expected(7));
  throwsMatching(() => m.counterFn('webhook_delivered_total', 'h', () => 0), /already registered/);
  throwsMatching(() => m.gaugeFn('webhook_delivered_total', 'h', () => 0), /already registered/);
  throwsMatching(() => m.counterFn('bad-name', 'h', () => 0), /invalid metric name/);
  throwsMatching(() => m.counterFn('x_total', 'h', 5 as unknown as () => number), /read must be a function/);
  // The failed registration claimed nothing.
  m.counterFn('x_total', 'h', () => 1);
  assertParses(m.render());
});

test('histogram with two label sets: cumulative buckets, +Inf, sum, count', () => {
  const m = createMetrics();
  const h = m.histogram('decide_seconds', 'Decision latency.', [0.01, 0.1, 1], ['service']);
  for (const v of [0.005, 0.01, 0.05, 0.5, 2]) h.observe(v, { service: 'imap' });
  h.observe(0.25, { service: 'smtp' });
  h.observe(0.75, { service: 'smtp' });
  const out = m.render();
  assert.is(
    out,
    '# HELP decide_seconds Decision latency.\n' +
      '# TYPE decide_seconds histogram\n' +
      'decide_seconds_bucket{service="imap",le="0.01"} 2\n' +
      'decide_seconds_bucket{service="imap",le="0.1"} 3\n' +
      'decide_seconds_bucket{service="imap",le="1"} 4\n' +
      'decide_seconds_bucket{service="imap",le="+Inf"} 5\n' +
      'decide_seconds_sum{service="imap"} 2.565\n' +
      'decide_seconds_count{service="imap"} 5\n' +
      'decide_seconds_bucket{service="smtp",le="0.01"} 0\n' +
      'decide_seconds_bucket{service="smtp",le="0.1"} 0\n' +
      'decide_seconds_bucket{service="smtp",le="1"} 2\n' +
      'decide_seconds_bucket{service="smtp",le="+Inf"} 2\n' +
      'decide_seconds_sum{service="smtp"} 1\n' +
      'decide_seconds_count{service="smtp"} 2\n' +
      DROPPED_TAIL('', 0),
  );
  assertParses(out);
});

test('unlabelled histogram renders zeros before any observation; trailing +Inf bucket accepted', () => {
  const m = createMetrics();
  const h = m.histogram('size_bytes', 'Sizes.', [100, 1000, Infinity]);
  const zero =
    '# HELP size_bytes Sizes.\n' +
    '# TYPE size_bytes histogram\n' +
    'size_bytes_bucket{le="100"} 0\n' +
    'size_bytes_bucket{le="1000"} 0\n' +
    'size_bytes_bucket{le="+Inf"} 0\n' +
    'size_bytes_sum 0\n' +
    'size_bytes_count 0\n';
  assert.is(m.render(), zero + DROPPED_TAIL('', 0));
  h.observe(1000);
  h.observe(-5);
  assert.ok(m.render().includes('size_bytes_bucket{le="100"} 1\nsize_bytes_bucket{le="1000"} 2\n'));
  assert.ok(m.render().includes('size_bytes_sum 995\nsize_bytes_count 2\n'));
});

test('label values and HELP text are escaped per the exposition format', () => {
  const m = createMetrics();
  const c = m.counter('esc_total', 'Help with \\ backslash\nand "quotes".', ['v']);
  c.inc({ v: 'a\\b"c\nd' });
  c.inc({ v: 'plain' });
  c.inc({ v: '\\' });
  c.inc({ v: '' });
  assert.is(c.get({ v: 'a\\b"c\nd' }), 1);
  const out = m.render();
  assert.is(
    out,
    '# HELP esc_total Help with \\\\ backslash\\nand "quotes".\n' +
      '# TYPE esc_total counter\n' +
      'esc_total{v="a\\\\b\\"c\\nd"} 1\n' +
      'esc_total{v="plain"} 1\n' +
      'esc_total{v="\\\\"} 1\n' +
      'esc_total{v=""} 1\n' +
      DROPPED_TAIL('', 0),
  );
  assertParses(out);
});

test('distinct label values never collide after escaping', () => {
  const m = createMetrics();
  const c = m.counter('k_total', 'h', ['a', 'b']);
  c.inc({ a: 'x",b="y', b: 'z' });
  c.inc({ a: 'x', b: 'y",b="z' });
  assert.is(c.get({ a: 'x",b="y', b: 'z' }), 1);
  assert.is(c.get({ a: 'x', b: 'y",b="z' }), 1);
  assertParses(m.render());
});

test('errors: invalid metric names (including via prefix)', () => {
  const m = createMetrics();
  throwsMatching(() => m.counter('', 'h'), /invalid metric name ""/);
  throwsMatching(() => m.counter('9lives', 'h'), /invalid metric name "9lives"/);
  throwsMatching(() => m.gauge('has-dash', 'h'), /invalid metric name "has-dash"/);
  throwsMatching(() => m.histogram('sp ace', 'h', [1]), /invalid metric name/);
  throwsMatching(() => m.gaugeFn('é', 'h', () => 1), /invalid metric name/);
  throwsMatching(() => createMetrics('0bad_'), /invalid metric name "0bad_metrics_dropped_series_total"/);
  // colons are allowed in metric names
  m.counter('ns:ok_total', 'h');
  m.gauge('_x', 'h');
});

test('errors: invalid, reserved and duplicate label names', () => {
  const m = createMetrics();
  throwsMatching(() => m.counter('a_total', 'h', ['ok', 'not:ok']), /invalid label name "not:ok"/);
  throwsMatching(() => m.counter('b_total', 'h', ['1x']), /invalid label name "1x"/);
  throwsMatching(() => m.counter('c_total', 'h', ['']), /invalid label name ""/);
  throwsMatching(() => m.gauge('d', 'h', ['__name']), /reserved/);
  throwsMatching(() => m.gauge('e', 'h', ['x', 'x']), /duplicate label name "x"/);
  throwsMatching(() => m.histogram('f', 'h', [1], ['le']), /label name "le" is reserved/);
  // A failed registration does not claim the name.
  m.counter('a_total', 'h', ['ok']);
  m.histogram('f', 'h', [1], ['l']);
});

test('errors: registering the same name twice, including histogram-derived names', () => {
  const m = createMetrics('cidlock_');
  m.counter('x_total', 'h');
  throwsMatching(() => m.counter('x_total', 'h'), /"cidlock_x_total" is already registered/);
  throwsMatching(() => m.gauge('x_total', 'h'), /already registered/);
  throwsMatching(() => m.gaugeFn('x_total', 'h', () => 0), /already registered/);
  throwsMatching(() => m.counter('metrics_dropped_series_total', 'h'), /already registered/);
  m.histogram('lat', 'h', [1]);
  throwsMatching(() => m.histogram('lat', 'h', [1]), /"cidlock_lat" is already registered/);
  throwsMatching(() => m.counter('lat_count', 'h'), /"cidlock_lat_count" is already registered/);
  throwsMatching(() => m.gauge('lat_bucket', 'h'), /already registered/);
  m.gauge('q_sum', 'h');
  throwsMatching(() => m.histogram('q', 'h', [1]), /"cidlock_q_sum" is already registered/);
  // Separate registries are independent.
  createMetrics('cidlock_').counter('x_total', 'h');
});

test('errors: histogram buckets must be strictly increasing finite numbers', () => {
  const m = createMetrics();
  throwsMatching(() => m.histogram('h1', 'h', [1, 1]), /strictly increasing, got 1 then 1/);
  throwsMatching(() => m.histogram('h2', 'h', [1, 0.5]), /strictly increasing/);
  throwsMatching(() => m.histogram('h3', 'h', [NaN]), /finite/);
  throwsMatching(() => m.histogram('h4', 'h', [-Infinity, 1]), /finite/);
  throwsMatching(() => m.histogram('h5', 'h', [1, Infinity, 2]), /finite/);
  throwsMatching(() => m.histogram('h6', 'h', [1, 2, Infinity, Infinity]), /finite/);
  // empty bucket list: only +Inf
  const h = m.histogram('h7', 'h', []);
  h.observe(3);
  assert.ok(m.render().includes('h7_bucket{le="+Inf"} 1\nh7_sum 3\nh7_count 1\n'));
});

test('errors: undeclared, missing and non-string labels on every operation', () => {
  const m = createMetrics();
  const c = m.counter('c_total', 'h', ['a', 'b']);
  const g = m.gauge('g', 'h', ['a']);
  const h = m.histogram('hist', 'h', [1], ['a']);
  const none = m.counter('n_total', 'h');
  throwsMatching(() => c.inc({ a: '1' }), /c_total: missing label\(s\) "b" \(declared: a, b\)/);
  throwsMatching(() => c.inc(), /missing label\(s\) "a", "b"/);
  throwsMatching(() => c.inc({ a: '1', b: '2', z: '3' }), /undeclared label\(s\) "z"/);
  throwsMatching(() => c.inc({ a: '1', z: '3' }), /undeclared label\(s\) "z"; missing label\(s\) "b"/);
  throwsMatching(() => c.get({ a: '1' }), /missing label/);
  throwsMatching(() => c.inc({ a: '1', b: 2 as unknown as string }), /non-string value for label\(s\) "b"/);
  throwsMatching(() => g.set(1, { b: 'x' }), /undeclared label\(s\) "b"; missing label\(s\) "a"/);
  throwsMatching(() => g.inc(), /missing label/);
  throwsMatching(() => g.get({}), /missing label/);
  throwsMatching(() => h.observe(1), /hist: missing label/);
  throwsMatching(() => h.observe(1, { a: 'x', le: '1' }), /undeclared label\(s\) "le"/);
  throwsMatching(() => none.inc({ a: 'x' }), /undeclared label\(s\) "a" \(declared: none\)/);
  // nothing was recorded by the failed calls
  assert.is(
    m.render(),
    '# HELP c_total h\n# TYPE c_total counter\n' +
      '# HELP g h\n# TYPE g gauge\n' +
      '# HELP hist h\n# TYPE hist histogram\n' +
      '# HELP n_total h\n# TYPE n_total counter\nn_total 0\n' +
      DROPPED_TAIL('', 0),
  );
});

test('errors: counters reject negative and non-finite increments; histograms reject NaN', () => {
  const m = createMetrics();
  const c = m.counter('c_total', 'h');
  throwsMatching(() => c.inc(undefined, -1), /c_total: counter increment must be a finite number >= 0, got -1/);
  throwsMatching(() => c.inc(undefined, NaN), /got NaN/);
  throwsMatching(() => c.inc(undefined, Infinity), /got Infinity/);
  assert.is(c.get(), 0);
  const h = m.histogram('h', 'h', [1]);
  throwsMatching(() => h.observe(NaN), /observed value must be a number, got NaN/);
  throwsMatching(() => m.gaugeFn('f', 'h', 42 as unknown as () => number), /read must be a function/);
});

test('cardinality cap: new label sets past the cap are dropped and counted', () => {
  assert.is(MAX_SERIES_PER_METRIC, 10_000);
  const m = createMetrics('cidlock_');
  const c = m.counter('per_user_total', 'h', ['user']);
  const h = m.histogram('per_user_seconds', 'h', [1], ['user']);
  const g = m.gauge('per_user_gauge', 'h', ['user']);
  for (let i = 0; i < MAX_SERIES_PER_METRIC; i++) c.inc({ user: `u${i}` });
  c.inc({ user: 'overflow1' });
  c.inc({ user: 'overflow2' }, 5);
  c.inc({ user: 'overflow1' });
  // existing series keep counting
  c.inc({ user: 'u0' });
  assert.is(c.get({ user: 'u0' }), 2);
  assert.is(c.get({ user: 'overflow1' }), 0);
  for (let i = 0; i < MAX_SERIES_PER_METRIC + 2; i++) h.observe(0.5, { user: `u${i}` });
  for (let i = 0; i < MAX_SERIES_PER_METRIC + 1; i++) g.set(i, { user: `u${i}` });
  const out = m.render();
  assert.ok(out.endsWith(DROPPED_TAIL('cidlock_', 6)), out.slice(-300));
  assert.not.ok(out.includes('overflow'));
  const lines = out.split('\n');
  assert.is(lines.filter((l) => l.startsWith('cidlock_per_user_total{')).length, MAX_SERIES_PER_METRIC);
  assert.is(lines.filter((l) => l.startsWith('cidlock_per_user_seconds_count{')).length, MAX_SERIES_PER_METRIC);
  assert.is(lines.filter((l) => l.startsWith('cidlock_per_user_gauge{')).length, MAX_SERIES_PER_METRIC);
  assertParses(out);
});

test('a realistic registry renders as valid exposition text line by line', () => {
  const m = createMetrics('cidlock_');
  const c = m.counter('decisions_total', 'Decisions.', ['service', 'outcome']);
  const g = m.gauge('known_devices', 'Devices.');
  const h = m.histogram('decide_seconds', 'Latency.', [0.0005, 0.001, 0.01, 1e-7 * 1e6, 10], ['service']);
  m.gaugeFn('cache_entries', 'Entries.', () => 1e21);
  c.inc({ service: 'imap', outcome: 'allow' });
  c.inc({ service: 'smtp\n"x"', outcome: 'deny\\' }, 1e-9);
  g.set(-0.25);
  h.observe(0.0007, { service: 'imap' });
  h.observe(123, { service: 'smtp' });
  const out = m.render();
  assertParses(out);
  assert.ok(out.includes('cidlock_cache_entries 1e+21\n'));
  assert.ok(out.includes('cidlock_decisions_total{service="smtp\\n\\"x\\"",outcome="deny\\\\"} 1e-9\n'));
  // the parser regex itself rejects malformed lines
  assert.not.ok(SAMPLE_RE.test('foo{a="b} 1'));
  assert.not.ok(SAMPLE_RE.test('foo{a="b"}'));
  assert.not.ok(SAMPLE_RE.test('foo 1 2 3'));
});

test.run();
