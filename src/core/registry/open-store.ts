import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { createRedisClient, createRedisSubscriber } from '../../redis/client.js';
import type { RedisAddress, RedisClient, RedisState, RedisSubscriber } from '../../redis/types.js';
import type { Rules } from '../rules/types.js';
import { fileStore } from './file-store.js';
import { redisStore } from './redis-store.js';
import { RegistryError, type RegistryStore } from './types.js';

/** The shared store did not answer: a state that passes (unlike a refused password or bad data). */
export class StoreUnreachableError extends RegistryError {
  constructor(message: string) {
    super('io', message);
  }
}

/** A password file holds one line; anything larger is the wrong file. */
const MAX_PASSWORD_BYTES = 4096;
/** How long opening a Redis store waits for its first connection before it gives up with a clear error. */
export const REDIS_CONNECT_WAIT_MS = 10_000;

export interface OpenedStore {
  store: RegistryStore;
  /** The Redis connection of a shared store (for the state every host shares); null for the file store. */
  redis: RedisClient | null;
  /** Calls `onChange` when another host announces a registry change; a no-op for the file store, which is polled. */
  watch(onChange: () => void): Promise<() => Promise<void>>;
  /** A shared store's pub/sub, for the state hosts share besides the registry; absent for the file store. */
  subscribe?: (channel: string, onMessage: (message: string) => void) => Promise<() => Promise<void>>;
  /** The shared store's key prefix ("" for the file store). */
  keyPrefix: string;
  close(): Promise<void>;
}

/** Reads Redis's password: one line, trailing newline dropped; never echoed in an error. */
export function readPasswordFile(file: string, read: (file: string) => Buffer = readFileSync): string {
  let buf: Buffer;
  try {
    buf = read(file);
  } catch (err) {
    throw new RegistryError('io', `${file}: cannot read Redis's password file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (buf.length > MAX_PASSWORD_BYTES) throw new RegistryError('io', `${file}: larger than ${MAX_PASSWORD_BYTES} bytes; is it the password file?`);
  const text = buf.toString('utf8').replace(/\r?\n$/, '');
  if (text === '' || /[\r\n]/.test(text)) throw new RegistryError('io', `${file}: expected the password on one line`);
  return text;
}

/** A store named on the command line: a state_dir path, or a redis:// or sentinel:// URL. */
export type StoreSpec =
  | { kind: 'file'; stateDir: string }
  | { kind: 'redis'; url: string; address: RedisAddress; passwordFile: string; keyPrefix: string; replicas: number };

export const specOfRules = (rules: Rules): StoreSpec =>
  rules.store.redis === null ? { kind: 'file', stateDir: rules.stateDir } : { kind: 'redis', ...rules.store.redis };

/**
 * Opens the registry's store as the rules say: the file store in state_dir, or the Redis store
 * several hosts share. `role` names the connection in Redis's CLIENT LIST ("serve", "cli").
 */
export function openStore(rules: Rules, o: OpenOptions): Promise<OpenedStore> {
  return openStoreAt(specOfRules(rules), o);
}

interface OpenOptions {
  role: string;
  readFile?: (file: string) => Buffer;
  onState?: (state: RedisState, detail: string) => void;
  waitMs?: number;
  /**
   * The daemon: a Redis that does not answer in time is not an error here (the client keeps
   * trying; the registry may be read from the local copy meanwhile). A refused password still is.
   */
  unreachableOk?: boolean;
}

export async function openStoreAt(spec: StoreSpec, o: OpenOptions): Promise<OpenedStore> {
  if (spec.kind === 'file') {
    return { store: fileStore(spec.stateDir), redis: null, keyPrefix: '', watch: async () => async () => {}, close: async () => {} };
  }
  const r = spec;
  const password = r.passwordFile === '' ? undefined : readPasswordFile(r.passwordFile, o.readFile);
  const base = { address: r.address, ...(password === undefined ? {} : { password }), name: `cidlock-${o.role}-${hostname()}` };
  // The last thing the client said about its connection (refused, authentication failed...): the
  // error names it. A refused password will not get better by waiting: that fails at once.
  let lastDetail = '';
  let authFailed: (() => void) | undefined;
  const client = createRedisClient({
    ...base,
    onState(state, detail) {
      if (state !== 'closed') lastDetail = detail;
      if (state === 'down' && detail.startsWith('authentication failed')) authFailed?.();
      o.onState?.(state, detail);
    },
  });
  const store = redisStore(client, { url: r.url, keyPrefix: r.keyPrefix, replicas: r.replicas });
  // One pub/sub connection for every channel this process listens to, made on first use.
  let sub: RedisSubscriber | undefined;
  const subscribe = (channel: string, onMessage: (message: string) => void) => (sub ??= createRedisSubscriber(base)).subscribe(channel, onMessage);
  const opened: OpenedStore = {
    store,
    redis: client,
    keyPrefix: r.keyPrefix,
    subscribe,
    watch: (onChange) => subscribe(store.channel, () => onChange()),
    async close() {
      await sub?.close();
      await client.close();
    },
  };
  const waitMs = o.waitMs ?? REDIS_CONNECT_WAIT_MS;
  try {
    await Promise.race([client.ready(waitMs), new Promise<never>((_, reject) => { authFailed = () => reject(new Error('auth')); })]);
  } catch {
    const why = lastDetail === '' ? '' : ` (${lastDetail})`;
    const auth = lastDetail.startsWith('authentication failed');
    // The daemon goes on with a client that keeps trying; a refused password fails everyone.
    if (!auth && o.unreachableOk === true) return opened;
    await client.close();
    if (auth) throw new RegistryError('io', `${r.url}: Redis refused the password${why}; check store.password_file; nothing was changed`);
    throw new StoreUnreachableError(`${r.url}: cannot reach Redis within ${waitMs / 1000} s${why}; nothing was changed`);
  } finally {
    authFailed = undefined;
  }
  return opened;
}
