import { resolve as resolvePath } from 'node:path';
import type { Node } from 'yaml';
import { parseRedisUrl } from '../../redis/url.js';
import { str } from './fields.js';
import type { Rules } from './types.js';
import { describe, entriesOf, knownEntries, scalarValue, type Walker } from './yaml-walk.js';

export const DEFAULT_KEY_PREFIX = 'cidlock:';
const MAX_KEY_PREFIX = 64;
const MAX_REPLICAS = 16;

/**
 * `store:` says where the state every host must share lives. Absent, or without `redis`, it is the
 * embedded file store in state_dir, as before. A password never sits in the URL or the rules
 * (which several people read): it is in password_file, readable by root and cidlock only.
 */
export function readStore(w: Walker, node: Node | null, at: Node, baseDir: string): Rules['store'] {
  const entries = entriesOf(w, node, ['store'], at);
  if (entries === null) return { redis: null };
  const by = new Map(knownEntries(w, entries, ['redis', 'password_file', 'key_prefix', 'replicas'], ['store']).map((e) => [e.key, e]));
  const urlE = by.get('redis');
  const url = urlE === undefined || urlE.value === null ? '' : (str(w, urlE, ['store', 'redis'], 'a redis:// or sentinel:// URL') ?? '');
  let address = null;
  if (url !== '') {
    const parsed = parseRedisUrl(url);
    if (parsed.ok) address = parsed.address;
    // The parser's message never repeats a password the URL may hold; neither does this one.
    else w.error(urlE!.value, ['store', 'redis'], parsed.error);
  }
  let passwordFile = '';
  const pwE = by.get('password_file');
  if (pwE !== undefined && pwE.value !== null) {
    const f = str(w, pwE, ['store', 'password_file'], 'a file path');
    if (f === '') w.error(pwE.value, ['store', 'password_file'], 'expected a file path, got an empty text');
    else if (f !== undefined) passwordFile = resolvePath(baseDir, f);
  }
  let keyPrefix = DEFAULT_KEY_PREFIX;
  const kpE = by.get('key_prefix');
  if (kpE !== undefined) {
    const k = str(w, kpE, ['store', 'key_prefix']);
    if (k !== undefined && (k.length === 0 || k.length > MAX_KEY_PREFIX || /[^\x21-\x7e]/.test(k))) {
      w.error(kpE.value, ['store', 'key_prefix'], `expected 1 to ${MAX_KEY_PREFIX} printable characters without spaces, got ${describe(kpE.value)}`);
    } else if (k !== undefined) keyPrefix = k;
  }
  // Redis replicates after it answers: a write is acknowledged only once this many replicas hold it.
  let replicas = 0;
  const repE = by.get('replicas');
  if (repE !== undefined) {
    const v = scalarValue(repE.value);
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= MAX_REPLICAS) replicas = v;
    else w.error(repE.value ?? repE.keyNode, ['store', 'replicas'], `expected a whole number from 0 to ${MAX_REPLICAS} (replicas that must confirm each write), got ${describe(repE.value)}`);
  }
  if (address === null) {
    if (passwordFile !== '' || kpE !== undefined || repE !== undefined) w.error(at, ['store'], 'password_file, key_prefix and replicas belong to a Redis store: give store.redis too');
    return { redis: null };
  }
  return { redis: { url, address, passwordFile, keyPrefix, replicas } };
}
