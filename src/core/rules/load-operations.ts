import { resolve as resolvePath } from 'node:path';
import type { Node } from 'yaml';
import { parseDuration } from '../duration.js';
import { listOf, oneOf, str } from './fields.js';
import { MAX_DELAY_SECONDS } from '../delay.js';
import { DEFENCE_MODES, LIMIT_KEYS, type DefenceMode, type CounterSettings, type DecisionLogLevel, type FsyncPolicy, type LimitAction, type LimitRule, type Rules } from './types.js';
import { describe, entriesOf, knownEntries, scalarValue, type Entry, type PathSegment, type Walker } from './yaml-walk.js';

/** Top-level keys for attack defences, alerts and operations (the rest of the rules file is policy). */
export const OPERATIONS_KEYS = ['limits', 'defences', 'counters', 'alerts', 'audit', 'webhook', 'log', 'admin'] as const;

type Operations = Pick<Rules, 'limits' | 'defences' | 'counters' | 'alerts' | 'audit' | 'webhook' | 'log' | 'admin'>;

const MIN = 60_000;
const HOUR = 60 * MIN;

/** Sensible defaults: slow a guessing address, then shut it out; catch dictionary runs; slow guesses on one account. */
export const DEFAULT_LIMITS: readonly LimitRule[] = [
  { path: 'limits[0] (default)', key: 'address', failures: 10, windowMs: 10 * MIN, then: { action: 'delay', seconds: 5 } },
  { path: 'limits[1] (default)', key: 'address', failures: 30, windowMs: HOUR, then: { action: 'reject', forMs: HOUR } },
  { path: 'limits[2] (default)', key: 'network', failures: 100, windowMs: 10 * MIN, then: { action: 'delay', seconds: 5 } },
  { path: 'limits[3] (default)', key: 'user', failures: 20, windowMs: 10 * MIN, then: { action: 'delay', seconds: 5 } },
  { path: 'limits[4] (default)', key: 'address', distinctUsers: 10, windowMs: 10 * MIN, then: { action: 'reject', forMs: HOUR } },
];

const DEFAULT_COUNTERS: CounterSettings = { maxEntries: 100_000, prefixV4: 24, prefixV6: 64 };

const MAX_WINDOW = 7 * 24 * HOUR;

export function duration(w: Walker, e: Entry, path: PathSegment[], max: number, what: string): number | undefined {
  const v = scalarValue(e.value);
  const ms = typeof v === 'string' ? parseDuration(v) : null;
  if (ms !== null && ms > 0 && ms <= max) return ms;
  w.error(e.value ?? e.keyNode, path, `expected ${what}, got ${describe(e.value)}`);
  return undefined;
}

export function int(w: Walker, e: Entry, path: PathSegment[], min: number, max: number): number | undefined {
  const v = scalarValue(e.value);
  if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
  w.error(e.value ?? e.keyNode, path, `expected a whole number from ${min} to ${max}, got ${describe(e.value)}`);
  return undefined;
}

/** "delay 5s", "reject 1h", or "reject" (refuse while over the limit). */
export function parseLimitAction(text: string): LimitAction | null {
  const m = /^(delay|reject)(?:\s+(\S+))?$/.exec(text.trim());
  if (m === null) return null;
  const ms = m[2] === undefined ? 0 : parseDuration(m[2]);
  if (ms === null) return null;
  if (m[1] === 'delay') {
    if (ms < 1000 || ms > MAX_DELAY_SECONDS * 1000 || ms % 1000 !== 0) return null;
    return { action: 'delay', seconds: ms / 1000 };
  }
  return ms > MAX_WINDOW ? null : { action: 'reject', forMs: ms };
}

function readLimit(w: Walker, node: Node | null, path: PathSegment[], index: number): LimitRule | undefined {
  const entries = entriesOf(w, node, path);
  if (entries === null) return undefined;
  const known = knownEntries(w, entries, ['key', 'failures', 'distinct_users', 'window', 'then'], path);
  const by = new Map(known.map((e) => [e.key, e]));
  let ok = known.length === entries.length;
  const keyE = by.get('key');
  const key = keyE === undefined ? undefined : oneOf(w, keyE.value, keyE.keyNode, [...path, 'key'], LIMIT_KEYS);
  const failuresE = by.get('failures');
  const distinctE = by.get('distinct_users');
  const windowE = by.get('window');
  const thenE = by.get('then');
  for (const [name, e] of [['key', keyE], ['window', windowE], ['then', thenE]] as const) {
    if (e === undefined) {
      w.error(node, path, `missing "${name}"`);
      ok = false;
    }
  }
  if ((failuresE === undefined) === (distinctE === undefined)) {
    w.error(node, path, 'give exactly one of "failures" (failed logins) or "distinct_users" (user names tried, for dictionary attacks)');
    ok = false;
  }
  const failures = failuresE === undefined ? undefined : int(w, failuresE, [...path, 'failures'], 1, 1_000_000);
  const distinctUsers = distinctE === undefined ? undefined : int(w, distinctE, [...path, 'distinct_users'], 2, 100_000);
  if (distinctE !== undefined && key !== undefined && key !== 'address') {
    w.error(distinctE.keyNode, [...path, 'distinct_users'], 'distinct_users counts user names per client address: use it with key: address');
    ok = false;
  }
  const windowMs = windowE === undefined ? undefined : duration(w, windowE, [...path, 'window'], MAX_WINDOW, 'a duration up to 7d such as 10m');
  let then: LimitAction | null = null;
  if (thenE !== undefined) {
    const v = scalarValue(thenE.value);
    then = typeof v === 'string' ? parseLimitAction(v) : null;
    if (then === null) w.error(thenE.value ?? thenE.keyNode, [...path, 'then'], `expected "delay <1s..${MAX_DELAY_SECONDS}s>", "reject <duration>" or "reject", got ${describe(thenE.value)}`);
  }
  if (!ok || key === undefined || windowMs === undefined || then === null || (failuresE !== undefined && failures === undefined) || (distinctE !== undefined && distinctUsers === undefined)) return undefined;
  return { path: `limits[${index}]`, key, ...(failures !== undefined ? { failures } : {}), ...(distinctUsers !== undefined ? { distinctUsers } : {}), windowMs, then };
}

function isHttpUrl(text: string): boolean {
  try {
    const u = new URL(text);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
  } catch {
    return false;
  }
}

export function section(w: Walker, e: Entry | undefined, path: string | PathSegment[], keys: readonly string[]): Map<string, Entry> {
  const out = new Map<string, Entry>();
  if (e === undefined) return out;
  const p = typeof path === 'string' ? [path] : path;
  const entries = entriesOf(w, e.value, p, e.keyNode);
  for (const x of knownEntries(w, entries ?? [], keys, p)) out.set(x.key, x);
  return out;
}

export function readOperations(w: Walker, byKey: ReadonlyMap<string, Entry>, stateDir: string): Operations {
  let limits: readonly LimitRule[] = DEFAULT_LIMITS;
  const limitsE = byKey.get('limits');
  if (limitsE !== undefined) {
    const items = limitsE.value === null ? [] : listOf(w, limitsE, ['limits'], 100);
    if (items !== undefined) {
      const read = items.map((it, i) => readLimit(w, it.node, it.path, i));
      if (read.every((r) => r !== undefined)) limits = read as LimitRule[];
    }
  }

  // Enforced by default: a fresh install stops a dictionary run, whatever mode the accounts are in.
  let defenceMode: DefenceMode = 'enforce';
  const dm = section(w, byKey.get('defences'), 'defences', ['mode']).get('mode');
  if (dm !== undefined) defenceMode = oneOf(w, dm.value, dm.keyNode, ['defences', 'mode'], DEFENCE_MODES) ?? defenceMode;

  const counters = { ...DEFAULT_COUNTERS };
  for (const [k, e] of section(w, byKey.get('counters'), 'counters', ['max_entries', 'prefix_v4', 'prefix_v6'])) {
    const p = ['counters', k];
    if (k === 'max_entries') counters.maxEntries = int(w, e, p, 1000, 10_000_000) ?? counters.maxEntries;
    if (k === 'prefix_v4') counters.prefixV4 = int(w, e, p, 8, 32) ?? counters.prefixV4;
    if (k === 'prefix_v6') counters.prefixV6 = int(w, e, p, 16, 128) ?? counters.prefixV6;
  }

  const unknownDevice = { attempts: 3, windowMs: HOUR };
  const alertsS = section(w, byKey.get('alerts'), 'alerts', ['unknown_device']);
  const ud = alertsS.get('unknown_device');
  if (ud !== undefined) {
    for (const [k, e] of section(w, ud, ['alerts', 'unknown_device'], ['attempts', 'window'])) {
      if (k === 'attempts') unknownDevice.attempts = int(w, e, ['alerts', 'unknown_device', k], 1, 100_000) ?? unknownDevice.attempts;
      if (k === 'window') unknownDevice.windowMs = duration(w, e, ['alerts', 'unknown_device', k], MAX_WINDOW, 'a duration up to 7d such as 1h') ?? unknownDevice.windowMs;
    }
  }

  let auditFile = resolvePath(stateDir, 'audit.log');
  let fsync: FsyncPolicy = 'interval';
  for (const [k, e] of section(w, byKey.get('audit'), 'audit', ['file', 'fsync'])) {
    if (k === 'file') {
      const f = e.value === null ? '' : str(w, e, ['audit', 'file'], 'a file path, or "" for no audit log');
      // Relative to state_dir, which the daemon can write, not to the rules file's folder (/etc).
      if (f !== undefined) auditFile = f === '' ? '' : resolvePath(stateDir, f);
    } else {
      fsync = oneOf(w, e.value, e.keyNode, ['audit', 'fsync'], ['always', 'interval', 'never'] as const) ?? fsync;
    }
  }

  let webhook: Operations['webhook'] = null;
  const wh = section(w, byKey.get('webhook'), 'webhook', ['url', 'secret', 'queue', 'attempts']);
  if (wh.size > 0) {
    const urlE = wh.get('url');
    const url = urlE === undefined ? '' : (str(w, urlE, ['webhook', 'url'], 'an http:// or https:// URL') ?? '');
    if (url !== '' && !isHttpUrl(url)) w.error(urlE!.value, ['webhook', 'url'], `expected an http:// or https:// URL, got ${describe(urlE!.value)}`);
    const secretE = wh.get('secret');
    const secret = secretE === undefined ? '' : (str(w, secretE, ['webhook', 'secret']) ?? '');
    if (url !== '' && secret.length < 16) w.error(secretE?.value ?? byKey.get('webhook')!.keyNode, ['webhook', 'secret'], 'a webhook needs a secret of at least 16 characters: receivers verify the HMAC signature with it');
    const queueE = wh.get('queue');
    const attemptsE = wh.get('attempts');
    const queue = queueE === undefined ? 1000 : int(w, queueE, ['webhook', 'queue'], 1, 1_000_000) ?? 1000;
    const attempts = attemptsE === undefined ? 5 : int(w, attemptsE, ['webhook', 'attempts'], 1, 20) ?? 5;
    if (url !== '') webhook = { url, secret, queue, attempts };
  }

  let decisions: DecisionLogLevel = 'refusals';
  const logS = section(w, byKey.get('log'), 'log', ['decisions']);
  const dl = logS.get('decisions');
  if (dl !== undefined) decisions = oneOf(w, dl.value, dl.keyNode, ['log', 'decisions'], ['all', 'refusals', 'none'] as const) ?? decisions;

  let token = '';
  const tk = section(w, byKey.get('admin'), 'admin', ['token']).get('token');
  if (tk !== undefined) {
    const t = tk.value === null ? '' : str(w, tk, ['admin', 'token']);
    if (t !== undefined && t !== '' && (t.length < 16 || /[^\x21-\x7e]/.test(t))) w.error(tk.value, ['admin', 'token'], 'expected at least 16 printable characters without spaces (it sits in an HTTP header)');
    else if (t !== undefined) token = t;
  }

  return { limits, defences: { mode: defenceMode }, counters, alerts: { unknownDevice }, audit: { file: auditFile, fsync }, webhook, log: { decisions }, admin: { token } };
}
