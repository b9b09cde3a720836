/**
 * The `store.redis` URL: redis://HOST[:PORT][/DB] or sentinel://HOST[:PORT],HOST[:PORT]/MASTER[/DB].
 * Pure. Credentials never go in the URL (it is logged and shown by `cidlock config`): a URL with a
 * userinfo part is refused without repeating it, and the password comes from password_file.
 */
import { isIPv6 } from 'node:net';
import type { RedisAddress } from './types.js';

export const DEFAULT_REDIS_PORT = 6379;
export const DEFAULT_SENTINEL_PORT = 26379;
/** More sentinels than this is a configuration mistake (deployments run 3 or 5). */
export const MAX_SENTINELS = 16;
/**
 * Redis' `databases` setting may be raised up to INT_MAX, so any index up to that parses; a
 * server with fewer databases refuses SELECT and the client reports it ("DB index is out of range").
 */
export const MAX_DB = 2 ** 31 - 1;
export const MAX_URL_LENGTH = 2048;
/** Sentinel master names as written in sentinel.conf: no spaces, no slashes. */
const MASTER_NAME = /^[A-Za-z0-9._-]{1,64}$/;
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

export type ParsedRedisUrl = { ok: true; address: RedisAddress } | { ok: false; error: string };

type Endpoint = { host: string; port: number };

function parseEndpoint(text: string, defaultPort: number): Endpoint | string {
  let host: string;
  let portText: string | undefined;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close === -1) return 'an IPv6 address must be closed with "]"';
    host = text.slice(1, close);
    if (!isIPv6(host)) return `"${host}" is not an IPv6 address`;
    const rest = text.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) return `unexpected "${rest}" after the IPv6 address`;
    portText = rest === '' ? undefined : rest.slice(1);
  } else {
    const colon = text.indexOf(':');
    if (colon !== -1 && text.indexOf(':', colon + 1) !== -1) return 'an IPv6 address must be written in brackets, as [::1]:6379';
    host = colon === -1 ? text : text.slice(0, colon);
    portText = colon === -1 ? undefined : text.slice(colon + 1);
    if (host === '') return 'a host is missing';
    if (!HOSTNAME.test(host)) return `"${host}" is not a host name or IPv4 address`;
  }
  if (portText === undefined) return { host, port: defaultPort };
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) return `port "${portText}" is not a number from 1 to 65535`;
  return { host, port: Number(portText) };
}

function parseDb(text: string): number | string {
  if (!/^\d{1,10}$/.test(text) || Number(text) > MAX_DB) return `database "${text}" is not a number from 0 to ${MAX_DB}`;
  return Number(text);
}

export function parseRedisUrl(input: string): ParsedRedisUrl {
  const fail = (error: string): ParsedRedisUrl => ({ ok: false, error });
  const text = input.trim();
  if (text.length > MAX_URL_LENGTH) return fail(`the Redis URL is longer than ${MAX_URL_LENGTH} characters`);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  if (!scheme) return fail('expected redis://HOST:PORT/DB or sentinel://HOST:PORT,HOST:PORT/MASTER/DB');
  const kind = scheme[1]!.toLowerCase();
  const rest = text.slice(scheme[0].length);
  const slash = rest.indexOf('/');
  const authority = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash + 1);
  // Checked first, on the whole rest (a password may hold "/", "?" or "#"), before any message
  // could quote a piece of the URL back. No valid host, master name or database holds "@".
  if (rest.includes('@')) {
    const userinfo = rest.slice(0, rest.lastIndexOf('@'));
    return fail(
      userinfo.includes(':')
        ? 'the Redis URL contains a password; remove it from the URL and put it in password_file'
        : 'the Redis URL contains a user name; credentials do not belong in the URL: use username and password_file',
    );
  }
  if (kind === 'rediss') return fail('rediss:// (TLS) is not supported; use redis:// on a trusted network or a TLS tunnel');
  if (kind !== 'redis' && kind !== 'sentinel') return fail(`unknown scheme "${kind}://"; expected redis:// or sentinel://`);
  if (/[?#\s]/.test(rest)) return fail('the Redis URL takes no query, fragment or spaces');

  if (kind === 'redis') {
    const ep = parseEndpoint(authority, DEFAULT_REDIS_PORT);
    if (typeof ep === 'string') return fail(ep);
    const segments = path === '' ? [] : path.split('/');
    if (segments.length > 1 && !(segments.length === 2 && segments[1] === '')) return fail('expected redis://HOST:PORT/DB (one path segment, the database number)');
    const db = segments[0] === undefined || segments[0] === '' ? 0 : parseDb(segments[0]);
    if (typeof db === 'string') return fail(db);
    return { ok: true, address: { target: { kind: 'direct', host: ep.host, port: ep.port }, db } };
  }

  if (authority === '') return fail('sentinel:// needs at least one HOST:PORT');
  const list = authority.split(',');
  if (list.length > MAX_SENTINELS) return fail(`at most ${MAX_SENTINELS} sentinels may be listed, got ${list.length}`);
  const sentinels: Endpoint[] = [];
  for (const item of list) {
    if (item === '') return fail('an empty entry in the sentinel list');
    const ep = parseEndpoint(item, DEFAULT_SENTINEL_PORT);
    if (typeof ep === 'string') return fail(ep);
    if (sentinels.some((s) => s.host === ep.host && s.port === ep.port)) return fail(`sentinel ${item} is listed twice`);
    sentinels.push(ep);
  }
  const segments = path.split('/');
  if (segments.length > 0 && segments[segments.length - 1] === '' && segments.length > 1) segments.pop();
  const master = segments[0] ?? '';
  if (master === '') return fail('sentinel:// needs the master name: sentinel://HOST:PORT,HOST:PORT/MASTER[/DB]');
  if (!MASTER_NAME.test(master)) return fail(`master name "${master.slice(0, 64)}" may hold only letters, digits, ".", "_" and "-" (at most 64)`);
  if (segments.length > 2) return fail('expected sentinel://HOST:PORT,HOST:PORT/MASTER/DB (two path segments at most)');
  const db = segments[1] === undefined ? 0 : parseDb(segments[1]);
  if (typeof db === 'string') return fail(db);
  return { ok: true, address: { target: { kind: 'sentinel', sentinels, master }, db } };
}
