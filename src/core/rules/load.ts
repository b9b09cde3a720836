import { readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve as resolvePath } from 'node:path';
import { LineCounter, parseDocument, type Node } from 'yaml';
import { parseDuration } from '../duration.js';
import { compileGlob } from '../glob.js';
import { normalizeIp, parseCidr, type Cidr } from '../ip.js';
import {
  EVIDENCE_KINDS, MODES, PROTOCOLS,
  type EvidenceKind, type ListenAddress, type ListenerName, type PolicyLayer, type Protocol,
  type ProtocolRule, type Rules, type RulesIssue,
} from './types.js';
import {
  createWalker, describe, entriesOf, isMap, isScalar, isSeq, knownEntries, scalarValue,
  type Entry, type PathSegment, type Walker,
} from './yaml-walk.js';
import { bool, listOf, oneOf, str } from './fields.js';
import { PORTAL_KEYS, readPortalRules } from './load-portal.js';
import { OPERATIONS_KEYS, readOperations } from './load-operations.js';
import { readStore } from './load-store.js';
import { loginNameProblem, lowerAscii } from '../login-name.js';

export type RulesResult =
  | { ok: true; rules: Rules; warnings: RulesIssue[] }
  | { ok: false; errors: RulesIssue[]; warnings: RulesIssue[] };

/** A rules file is a few KB; a limit keeps a wrong path (a log file, /dev/zero) from eating memory. */
const MAX_RULES_BYTES = 16 * 1024 * 1024;

/**
 * Postfix's policy and socketmap protocols carry no credentials, so by default they listen on UNIX
 * sockets inside Postfix's queue directory: smtpd reaches them there, chrooted or not, and the
 * directory (owner cidlock, group postfix, mode 0750) keeps every other local user out. Dovecot
 * sends an API key; the admin API needs its token.
 */
export const POSTFIX_SOCKET_DIR = '/var/spool/postfix/cidlock';
export const DEFAULT_LISTEN: Readonly<Record<ListenerName, ListenAddress>> = {
  dovecot: { host: '127.0.0.1', port: 8425 },
  postfix: { path: `${POSTFIX_SOCKET_DIR}/policy` },
  socketmap: { path: `${POSTFIX_SOCKET_DIR}/socketmap` },
  admin: { host: '127.0.0.1', port: 8426 },
  // Served only when the rules have portal:; loopback, behind the operator's HTTPS reverse proxy.
  portal: { host: '127.0.0.1', port: 8427 },
};

/** The file Dovecot's API key is kept in when the rules do not give one: state_dir/dovecot.key. */
export const DOVECOT_KEY_FILE = 'dovecot.key';

const TOP_KEYS = ['listen', 'state_dir', 'store', 'dovecot', 'accounts', 'policy', 'domains', 'users', ...OPERATIONS_KEYS, ...PORTAL_KEYS] as const;
const LISTENERS = ['dovecot', 'postfix', 'socketmap', 'admin', 'portal'] as const;
const LAYER_KEYS = ['mode', 'require_tls', 'message', 'vouch_ttl', 'protocols', 'device_types', 'networks', 'learn'] as const;
const MAX_MESSAGE = 200;
const MAX_VOUCH_TTL = 7 * 86_400_000;
const MAX_LIST = 1000;

const LISTEN_FORMS = (name: ListenerName) =>
  `host:port (127.0.0.1:8425, [::1]:8425), a port number, ${name === 'postfix' || name === 'socketmap' ? 'unix:/path, ' : ''}{ address: host:port, clients: [CIDR, ...] } or off`;

function readTcpAddress(v: unknown): { host: string; port: number } | null {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 && v <= 65535 ? { host: '127.0.0.1', port: v } : null;
  if (typeof v !== 'string') return null;
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v);
  if (m === null) return null;
  const hostText = m[1] ?? m[2]!;
  const host = hostText === 'localhost' ? '127.0.0.1' : normalizeIp(hostText);
  const port = Number(m[3]);
  return host !== null && port <= 65535 && (m[1] === undefined || host.includes(':')) ? { host, port } : null;
}

function readListenAddress(w: Walker, e: Entry, path: PathSegment[], name: ListenerName): ListenAddress | null | undefined {
  if (isMap(e.value)) {
    // { address: 192.0.2.5:10031, clients: [192.0.2.25/32] }: a TCP listener only these peers may use.
    let addr: { host: string; port: number } | null = null;
    let clients: Cidr[] | undefined;
    let ok = true;
    for (const le of knownEntries(w, entriesOf(w, e.value, path, e.keyNode) ?? [], ['address', 'clients'], path)) {
      const p = [...path, le.key];
      if (le.key === 'address') {
        addr = readTcpAddress(scalarValue(le.value));
        if (addr === null) {
          ok = false;
          w.error(le.value ?? le.keyNode, p, `expected host:port (192.0.2.5:10031, [2001:db8::5]:10031), got ${describe(le.value)}`);
        }
        continue;
      }
      const items = listOf(w, le, p, MAX_LIST);
      if (items === undefined) { ok = false; continue; }
      const nets: Cidr[] = [];
      for (const it of items) {
        const v = scalarValue(it.node);
        const c = typeof v === 'string' ? parseCidr(v) : { error: `expected a CIDR such as 192.0.2.25/32, got ${describe(it.node)}` };
        if ('error' in c) { ok = false; w.error(it.node ?? le.value, it.path, c.error); } else nets.push(c);
      }
      clients = nets;
    }
    if (addr === null && ok) {
      w.error(e.value, path, 'missing "address" (host:port)');
      return undefined;
    }
    return ok && addr !== null ? { ...addr, ...(clients !== undefined ? { clients } : {}) } : undefined;
  }
  const v = scalarValue(e.value);
  if (v === null || v === false || v === 'off') return null;
  if (typeof v === 'string' && v.startsWith('unix:')) {
    const p = v.slice(5);
    if (name !== 'postfix' && name !== 'socketmap') {
      w.error(e.value, path, `a unix socket is only supported for postfix and socketmap; Dovecot and the admin API speak HTTP over TCP`);
      return undefined;
    }
    if (isAbsolute(p)) return { path: p };
    w.error(e.value, path, `expected an absolute socket path after "unix:", got ${JSON.stringify(p)}`);
    return undefined;
  }
  const tcp = readTcpAddress(v);
  if (tcp !== null) return tcp;
  w.error(e.value ?? e.keyNode, path, `expected ${LISTEN_FORMS(name)}; got ${describe(e.value)}`);
  return undefined;
}

function readListen(w: Walker, node: Node | null, at: Node): Record<ListenerName, ListenAddress | null> {
  const out: Record<ListenerName, ListenAddress | null> = { ...DEFAULT_LISTEN };
  const entries = entriesOf(w, node, ['listen'], at);
  if (entries === null) return out;
  for (const e of knownEntries(w, entries, LISTENERS, ['listen'])) {
    const name = e.key as ListenerName;
    const addr = readListenAddress(w, e, ['listen', name], name);
    if (addr === undefined) continue;
    out[name] = addr;
    if (addr !== null && 'host' in addr && !isLoopback(addr.host) && addr.clients === undefined) {
      w.warn(e.value, ['listen', name], `listens on ${addr.host}, which is not a loopback address; list the mail servers that may connect ({ address: ..., clients: [...] }) and firewall the port`);
    }
  }
  return out;
}

export function isLoopback(host: string): boolean {
  return host === '::1' || host.startsWith('127.');
}

function readProtocols(w: Walker, e: Entry, path: PathSegment[]): Partial<Record<Protocol, ProtocolRule>> | undefined {
  const entries = entriesOf(w, e.value, path, e.keyNode);
  if (entries === null) return undefined;
  const out: Partial<Record<Protocol, ProtocolRule>> = {};
  for (const pe of knownEntries(w, entries, PROTOCOLS, path)) {
    const p = [...path, pe.key];
    const v = scalarValue(pe.value);
    if (v === 'allow' || v === 'deny') {
      out[pe.key as Protocol] = v;
      continue;
    }
    if (!isSeq(pe.value)) {
      w.error(pe.value ?? pe.keyNode, p, `expected allow, deny, or a list of evidence (${EVIDENCE_KINDS.join(', ')}), got ${describe(pe.value)}`);
      continue;
    }
    const kinds: EvidenceKind[] = [];
    let bad = false;
    pe.value.items.forEach((item, i) => {
      const node = w.resolve(item);
      const kind = oneOf(w, node, pe.value as Node, [...p, i], EVIDENCE_KINDS);
      if (kind === undefined) bad = true;
      else if (kinds.includes(kind)) {
        w.error(node, [...p, i], `${kind} is listed twice`);
        bad = true;
      } else kinds.push(kind);
    });
    if (!bad) out[pe.key as Protocol] = kinds;
  }
  return out;
}

function readLearn(w: Walker, e: Entry, path: PathSegment[]): PolicyLayer['learn'] {
  const entries = entriesOf(w, e.value, path, e.keyNode);
  if (entries === null) return undefined;
  const out: NonNullable<PolicyLayer['learn']> = {};
  for (const le of knownEntries(w, entries, ['max_devices', 'until'], path)) {
    const p = [...path, le.key];
    const v = scalarValue(le.value);
    if (le.key === 'max_devices') {
      if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 1000) out.max_devices = v;
      else w.error(le.value ?? le.keyNode, p, `expected a whole number from 0 to 1000, got ${describe(le.value)}`);
    } else if (v === null) {
      out.until = null;
    } else {
      const t = typeof v === 'string' ? parseTimestamp(v) : null;
      if (t !== null) out.until = t;
      else w.error(le.value ?? le.keyNode, p, `expected a date (2026-12-31), a UTC timestamp (2026-12-31T18:00:00Z) or null, got ${describe(le.value)}`);
    }
  }
  return out;
}

/** Date-only values mean the start of that day in UTC; timestamps must name their zone. */
function parseTimestamp(text: string): number | null {
  if (/^\d{4}-\d{2}-\d{2}$/.test(text)) text += 'T00:00:00Z';
  else if (!/^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(text)) return null;
  const t = Date.parse(text.replace(' ', 'T'));
  return Number.isFinite(t) ? t : null;
}

function readLayer(w: Walker, node: Node | null, at: Node, path: PathSegment[]): PolicyLayer {
  const layer: PolicyLayer = {};
  const entries = entriesOf(w, node, path, at);
  if (entries === null) return layer;
  for (const e of knownEntries(w, entries, LAYER_KEYS, path)) {
    const p = [...path, e.key];
    switch (e.key as (typeof LAYER_KEYS)[number]) {
      case 'mode': {
        const m = oneOf(w, e.value, e.keyNode, p, MODES);
        if (m !== undefined) layer.mode = m;
        break;
      }
      case 'require_tls': {
        const b = bool(w, e, p);
        if (b !== undefined) layer.require_tls = b;
        break;
      }
      case 'message': {
        const s = e.value === null ? '' : str(w, e, p);
        if (s === undefined) break;
        if (s.length > MAX_MESSAGE) w.error(e.value, p, `at most ${MAX_MESSAGE} characters, got ${s.length}`);
        else if (/[^\x20-\x7e]/.test(s)) w.error(e.value, p, 'only printable ASCII on one line: the text goes into IMAP, POP3 and SMTP replies');
        else layer.message = s;
        break;
      }
      case 'vouch_ttl': {
        if (typeof scalarValue(e.value) === 'number') {
          w.error(e.value, p, `expected a duration with a unit such as 30m, 1h or 45s, got ${describe(e.value)} (a bare number is ambiguous)`);
          break;
        }
        const s = str(w, e, p, 'a duration such as 30m');
        if (s === undefined) break;
        const ms = parseDuration(s);
        if (ms === null || ms > MAX_VOUCH_TTL) w.error(e.value, p, `expected a duration up to 7d such as 30m, 1h or 0s (no vouching), got ${describe(e.value)}`);
        else layer.vouch_ttl = ms;
        break;
      }
      case 'protocols': {
        const protocols = readProtocols(w, e, p);
        if (protocols !== undefined) layer.protocols = protocols;
        break;
      }
      case 'device_types': {
        const items = listOf(w, e, p, MAX_LIST);
        if (items === undefined) break;
        const patterns: string[] = [];
        for (const it of items) {
          const v = scalarValue(it.node);
          if (typeof v === 'string' && v.length > 0 && v.length <= 64) patterns.push(v);
          else w.error(it.node ?? e.value, it.path, `expected a client name pattern of 1 to 64 characters such as "Thunderbird*", got ${describe(it.node)}`);
        }
        if (patterns.length === items.length) {
          const matchers = patterns.map((pat) => [pat, compileGlob(pat)] as const);
          layer.device_types = { patterns, match: (name) => matchers.find(([, m]) => m(name))?.[0] };
        }
        break;
      }
      case 'networks': {
        const items = listOf(w, e, p, MAX_LIST);
        if (items === undefined) break;
        const nets: Cidr[] = [];
        for (const it of items) {
          const v = scalarValue(it.node);
          const c = typeof v === 'string' ? parseCidr(v) : { error: `expected a CIDR such as 192.0.2.0/24 or 2001:db8::/32, got ${describe(it.node)}` };
          if ('error' in c) w.error(it.node ?? e.value, it.path, c.error);
          else nets.push(c);
        }
        if (nets.length === items.length) layer.networks = nets;
        break;
      }
      case 'learn': {
        const learn = readLearn(w, e, p);
        if (learn !== undefined) layer.learn = learn;
        break;
      }
    }
  }
  return layer;
}

/** An API key sits in an HTTP header and guards every login decision: long, printable, no spaces. */
export const MIN_KEY_LENGTH = 16;

function readDovecot(w: Walker, node: Node | null, at: Node, stateDir: string, baseDir: string): Rules['dovecot'] {
  const out = { apiKey: '', apiKeyFile: resolvePath(stateDir, DOVECOT_KEY_FILE), idFields: ['clientid'] as readonly string[] };
  const entries = entriesOf(w, node, ['dovecot'], at);
  if (entries === null) return out;
  const byKey = new Map(knownEntries(w, entries, ['api_key', 'api_key_file', 'id_fields'], ['dovecot']).map((e) => [e.key, e]));
  const keyE = byKey.get('api_key');
  const fileE = byKey.get('api_key_file');
  if (keyE !== undefined && fileE !== undefined && scalarValue(keyE.value) !== '' && scalarValue(keyE.value) !== null) {
    w.error(fileE.keyNode, ['dovecot', 'api_key_file'], 'give api_key or api_key_file, not both');
  }
  if (keyE !== undefined) {
    const s = keyE.value === null ? '' : str(w, keyE, ['dovecot', 'api_key']);
    if (s !== undefined && s !== '') {
      if (/[^\x21-\x7e]/.test(s) || s.length < MIN_KEY_LENGTH) {
        w.error(keyE.value, ['dovecot', 'api_key'], `expected at least ${MIN_KEY_LENGTH} printable characters without spaces (Dovecot sends it in an HTTP header); or leave it out and cidlock keeps a random key in state_dir/${DOVECOT_KEY_FILE}`);
      } else out.apiKey = s;
    }
  }
  if (fileE !== undefined) {
    const f = str(w, fileE, ['dovecot', 'api_key_file'], 'a file path');
    if (f === '') w.error(fileE.value, ['dovecot', 'api_key_file'], 'expected a file path, got an empty text');
    else if (f !== undefined) out.apiKeyFile = resolvePath(baseDir, f);
  }
  const idE = byKey.get('id_fields');
  if (idE !== undefined) {
    const p = ['dovecot', 'id_fields'];
    const items = listOf(w, idE, p, 8);
    if (items !== undefined) {
      const fields: string[] = [];
      for (const it of items) {
        const v = scalarValue(it.node);
        // RFC 2971 keys are at most 30 octets; Dovecot refuses longer ones.
        if (typeof v === 'string' && /^[\x21-\x7e]{1,30}$/.test(v) && !/["\\]/.test(v)) fields.push(v.toLowerCase());
        else w.error(it.node ?? idE.value, it.path, `expected an IMAP ID field name of 1 to 30 characters without spaces or quotes, got ${describe(it.node)}`);
      }
      if (fields.length === 0 && items.length === 0) w.error(idE.value, p, 'list at least one IMAP ID field name, e.g. [clientid]');
      else if (fields.length === items.length) out.idFields = fields;
    }
  }
  return out;
}

function readAccounts(w: Walker, node: Node | null, at: Node): Rules['accounts'] {
  const out = { defaultDomain: '' };
  const entries = entriesOf(w, node, ['accounts'], at);
  if (entries === null) return out;
  for (const e of knownEntries(w, entries, ['default_domain'], ['accounts'])) {
    const v = e.value === null ? '' : str(w, e, ['accounts', e.key], 'a domain name');
    if (v === undefined || v === '') continue;
    if (DOMAIN.test(v.toLowerCase())) out.defaultDomain = v.toLowerCase();
    else w.error(e.value, ['accounts', e.key], `expected a domain name such as example.com, got ${describe(e.value)}`);
  }
  return out;
}

const DOMAIN = /^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

function readNamedLayers(w: Walker, node: Node | null, at: Node, key: 'domains' | 'users'): Map<string, PolicyLayer> {
  const out = new Map<string, PolicyLayer>();
  const entries = entriesOf(w, node, [key], at);
  if (entries === null) return out;
  const seen = new Map<string, string>();
  for (const e of entries) {
    const name = key === 'users' ? lowerAscii(e.key.trim()) : e.key.toLowerCase();
    const path = [key, e.key];
    if (key === 'domains' && !DOMAIN.test(name)) {
      w.error(e.keyNode, path, 'expected a domain name such as example.com (the part of a login after the last @)');
      continue;
    }
    const problem = key === 'users' ? loginNameProblem(name) : null;
    if (problem !== null) {
      w.error(e.keyNode, path, `expected a login name (${problem})`);
      continue;
    }
    const earlier = seen.get(name);
    if (earlier !== undefined) {
      w.error(e.keyNode, path, `same ${key === 'users' ? 'user' : 'domain'} as "${earlier}" (names are compared lowercased)`);
      continue;
    }
    seen.set(name, e.key);
    out.set(name, readLayer(w, e.value, e.keyNode, path));
  }
  return out;
}

/** Warnings for settings that are valid but almost certainly do not do what the operator meant. */
function lint(w: Walker, rules: Rules): void {
  const layers: Array<[string, PolicyLayer]> = [['policy', rules.policy]];
  for (const [d, l] of rules.domains) layers.push([`domains["${d}"]`, l]);
  for (const [u, l] of rules.users) layers.push([`users["${u}"]`, l]);
  const anyAcceptsDeviceType = layers.some(([, l]) =>
    Object.values(l.protocols ?? {}).some((r) => Array.isArray(r) && r.includes('device_type')));
  for (const [name, l] of layers) {
    if (l.device_types !== undefined && l.device_types.patterns.length > 0 && !anyAcceptsDeviceType) {
      w.warn(null, [], `${name}.device_types is set, but no protocols list accepts device_type evidence (e.g. protocols: { imap: [cid, device_type] })`);
    }
  }
}

export function parseRules(text: string, file: string): RulesResult {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false });
  const w = createWalker(file, doc, lines);
  for (const err of doc.errors) {
    const pos = lines.linePos(err.pos[0]);
    w.issues.push({ file, line: pos.line, col: pos.col, path: '', message: `YAML syntax: ${err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}` });
  }
  if (w.issues.length > 0) return { ok: false, errors: w.issues, warnings: [] };

  const root = w.resolve(doc.contents);
  const empty = root === null || (isScalar(root) && root.value === null);
  const entries = empty ? [] : entriesOf(w, root, []);
  const byKey = new Map<string, Entry>();
  for (const e of knownEntries(w, entries ?? [], TOP_KEYS, [])) byKey.set(e.key, e);

  const baseDir = file === '' ? process.cwd() : dirname(resolvePath(file));
  let stateDir = resolvePath(baseDir, 'state');
  const sd = byKey.get('state_dir');
  if (sd !== undefined) {
    const s = str(w, sd, ['state_dir'], 'a directory path');
    if (s !== undefined && s.length > 0) stateDir = resolvePath(baseDir, s);
    else if (s === '') w.error(sd.value, ['state_dir'], 'expected a directory path, got an empty text');
  }
  const at = (k: string) => byKey.get(k);
  const listenE = at('listen');
  const storeE = at('store');
  const dovecotE = at('dovecot');
  const accountsE = at('accounts');
  const policyE = at('policy');
  const domainsE = at('domains');
  const usersE = at('users');
  const rules: Rules = {
    file: file === '' ? '' : resolvePath(file),
    listen: listenE === undefined ? { ...DEFAULT_LISTEN } : readListen(w, listenE.value, listenE.keyNode),
    stateDir,
    store: storeE === undefined ? { redis: null } : readStore(w, storeE.value, storeE.keyNode, baseDir),
    dovecot: dovecotE === undefined
      ? { apiKey: '', apiKeyFile: resolvePath(stateDir, DOVECOT_KEY_FILE), idFields: ['clientid'] }
      : readDovecot(w, dovecotE.value, dovecotE.keyNode, stateDir, baseDir),
    accounts: accountsE === undefined ? { defaultDomain: '' } : readAccounts(w, accountsE.value, accountsE.keyNode),
    policy: policyE === undefined ? {} : readLayer(w, policyE.value, policyE.keyNode, ['policy']),
    domains: domainsE === undefined || domainsE.value === null ? new Map() : readNamedLayers(w, domainsE.value, domainsE.keyNode, 'domains'),
    users: usersE === undefined || usersE.value === null ? new Map() : readNamedLayers(w, usersE.value, usersE.keyNode, 'users'),
    ...readOperations(w, byKey, stateDir),
    ...readPortalRules(w, byKey, baseDir),
  };
  const byPlace = (a: RulesIssue, b: RulesIssue) => a.line - b.line || a.col - b.col;
  w.issues.sort(byPlace);
  if (w.issues.length > 0) return { ok: false, errors: w.issues, warnings: w.warnings };
  lint(w, rules);
  return { ok: true, rules, warnings: w.warnings };
}

/** A rules file that is not one cidlock will read (a folder, too large). */
export class RulesFileError extends Error {
  override readonly name = 'RulesFileError';
}

/** The bytes of a rules file, refusing what is not a regular file of a sane size. */
export function readRulesBytes(file: string): Buffer {
  const st = statSync(file);
  if (!st.isFile()) throw new RulesFileError('not a regular file');
  if (st.size > MAX_RULES_BYTES) throw new RulesFileError(`file is larger than ${MAX_RULES_BYTES} bytes`);
  return readFileSync(file);
}

/** Loads a rules file; `read` lets the CLI record the bytes it read (see cli/owner-handoff). */
export function loadRulesFile(file: string, read: (file: string) => Buffer = readRulesBytes): RulesResult {
  const fail = (message: string): RulesResult => ({ ok: false, errors: [{ file, line: 1, col: 1, path: '', message }], warnings: [] });
  let text: string;
  try {
    text = read(file).toString('utf8');
  } catch (err) {
    if (err instanceof RulesFileError) return fail(err.message);
    const e = err as NodeJS.ErrnoException;
    // Not the file system's refusal (the reader's own failure): the caller's to report.
    if (typeof e.code !== 'string') throw err;
    return fail(e.code === 'ENOENT' ? 'no such file' : `cannot read the file (${e.code ?? e.message})`);
  }
  return parseRules(text, file);
}
