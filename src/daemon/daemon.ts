import { statSync, unwatchFile, watchFile } from 'node:fs';
import type { AddressInfo, Server, Socket } from 'node:net';
import { createAdminServer } from '../admin/server.js';
import { createEngine, type Engine } from '../core/engine.js';
import type { Logger } from '../core/log.js';
import { createMetrics, type Metrics } from '../core/metrics.js';
import { openStore } from '../core/registry/open-store.js';
import { LOCAL_COPY_DIR, withLocalCopy } from '../core/registry/local-copy.js';
import { join } from 'node:path';
import { redisDurabilityWarnings } from '../core/registry/redis-durability.js';
import { redisSharedState } from './shared-redis.js';
import { openRegistry } from '../core/registry/registry.js';
import { loadRulesFile } from '../core/rules/load.js';
import { formatRulesIssue, type ListenAddress, type ListenerName, type Rules } from '../core/rules/types.js';
import { dovecotApiKey } from '../dovecot-policy/api-key.js';
import { createDovecotServer } from '../dovecot-policy/server.js';
import { createPolicyServer } from '../postfix-policy/policy-server.js';
import { createSocketmapServer } from '../postfix-policy/socketmap-server.js';
import { allowOnly } from '../net/client-allow-list.js';
import { listenUnix } from '../net/unix-socket.js';
import { createServer as createHttpServer } from 'node:http';
import { createPendingTracker } from '../core/pending.js';
import { createPortal, PORTAL_SERVER_LIMITS } from '../portal/server.js';
import { loadPortalStrings } from '../portal/strings.js';
import { createAccounts, loadNoticeTemplates } from './accounts.js';
import { createOutputs } from './outputs.js';
import { startRegistrySync } from './registry-sync.js';

export interface Daemon {
  readonly engine: Engine;
  readonly metrics: Metrics;
  /** Actual bound addresses, e.g. { admin: "127.0.0.1:8426" }. */
  readonly addresses: Partial<Record<ListenerName, string>>;
  /** Re-reads the rules file (registry changes arrive on their own within a second); invalid rules leave the old ones in force. */
  reload(trigger: string): boolean;
  close(): Promise<void>;
}

/**
 * Binds one listener. A UNIX socket (the Postfix default) is protected by its directory and
 * mode; a TCP listener with `clients` closes every other peer before reading anything.
 */
function listen(server: Server, addr: ListenAddress, name: ListenerName, logger: Logger): Promise<string> {
  if ('path' in addr) return listenUnix(server, addr.path).then(() => `unix:${addr.path}`);
  if (addr.clients !== undefined) allowOnly(server, addr.clients, logger, name);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(addr.port, addr.host, () => {
      server.off('error', reject);
      const a = server.address();
      resolve(typeof a === 'string' ? `unix:${a}` : a === null ? '?' : fmt(a));
    });
  });
}

function fmt(a: AddressInfo): string {
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

const RULES_POLL_MS = 1000;
/** How long a starting daemon waits for Redis before it decides from its local copy. */
const START_WAIT_MS = 3000;
/** How often the local copy of a shared registry is written, when it changed. */
const LOCAL_COPY_SAVE_MS = 10 * 60_000;
const RULES_SETTLE_MS = 300;

/** The account page for these rules, or null when they have none. */
function portalFor(rules: Rules, accounts: ReturnType<typeof createAccounts>, logger: Logger) {
  if (rules.portal === null) return null;
  return createPortal({ service: accounts, settings: rules.portal, strings: loadPortalStrings(rules.portal.strings === '' ? undefined : rules.portal.strings), logger });
}

export async function startDaemon(opts: { rules: Rules; logger: Logger }): Promise<Daemon> {
  const { logger } = opts;
  const metrics = createMetrics('cidlock_');
  const outputs = createOutputs(logger, metrics);
  outputs.configure(opts.rules);
  const storeUrl = opts.rules.store.redis?.url ?? null;
  const syncRef: { sync?: ReturnType<typeof startRegistrySync> } = {};
  const opened = await openStore(opts.rules, {
    // Redis may be down when this host starts: it then decides from its local copy of the registry.
    unreachableOk: true,
    waitMs: START_WAIT_MS,
    role: 'serve',
    // Every change of the shared store's connection is news for whoever watches the host.
    onState: (state, detail) => {
      logger.log(state === 'ready' || state === 'closed' ? 'info' : 'warn', 'store_connection', { store: storeUrl, state, detail });
      // Back after an outage: read what other hosts changed meanwhile now, not at the end of a backoff.
      if (state === 'ready') syncRef.sync?.now();
    },
  });
  // A shared registry is also kept on this host's disk, for a start while Redis is unreachable.
  const localCopy = opened.redis === null ? null : withLocalCopy(opened.store, join(opts.rules.stateDir, LOCAL_COPY_DIR));
  const store = localCopy ?? opened.store;
  let registry;
  let shared: ReturnType<typeof redisSharedState> | undefined;
  try {
    // Hosts that share a store share the CID key from the start: a learn slot is then named by
    // the keyed hash on every host, never by a stand-in made of the raw CID.
    if (opened.redis !== null) await opened.store.secret(true).catch(() => {}); // unreachable: the local copy's key, or no start
    registry = await openRegistry(store, { create: true });
    if (opened.redis !== null && opened.subscribe !== undefined) {
      shared = redisSharedState({ client: opened.redis, subscribe: opened.subscribe, keyPrefix: opened.keyPrefix, logger, metrics });
      await shared.start();
    }
  } catch (err) {
    await opened.close();
    throw err;
  }
  // Refused devices wait for their holder's answer; the notices and the account page act on them.
  const notifyRef: { notify?: (user: string, hash: string) => void } = {};
  const tracker = createPendingTracker({ registry, rules: opts.rules, logger, metrics, events: outputs.sink, notify: (u, h) => notifyRef.notify?.(u, h) });
  const engine = createEngine({ rules: opts.rules, registry, logger, events: outputs.sink, metrics, pending: tracker, ...(shared ? { shared } : {}) });
  let accounts: ReturnType<typeof createAccounts>;
  let portal: ReturnType<typeof portalFor>;
  try {
    // Bad templates or strings stop the start with their file:line:col, like bad rules.
    accounts = createAccounts({
      engine, tracker, events: outputs.sink, logger, metrics,
      templates: opts.rules.notice === null ? null : loadNoticeTemplates(opts.rules.notice),
      secret: async () => {
        const key = await store.secret(true);
        if (key === null) throw new Error('the registry has no key yet');
        return key;
      },
    });
    portal = portalFor(opts.rules, accounts, logger);
  } catch (err) {
    tracker.stop();
    await shared?.stop();
    await opened.close();
    throw err;
  }
  notifyRef.notify = accounts.notify;
  const reloads = metrics.counter('rules_reloads_total', 'Rules reloads by result', ['result']);
  metrics.gaugeFn('rules_loaded_timestamp_seconds', 'When the rules in force were loaded', () => loadedAt / 1000);
  let loadedAt = Date.now();

  // Read (or created) once here and on every reload, never per request.
  let dovecotKey = opts.rules.listen.dovecot === null ? '' : dovecotApiKey(opts.rules.dovecot, { create: true });
  // CLI edits (devices add, users set) reach the running daemon within a second.
  const sync = startRegistrySync({ registry, logger, metrics, watch: opened.watch });
  syncRef.sync = sync;
  const redis = opened.redis;
  if (redis !== null) metrics.gaugeFn('store_up', 'Whether the shared Redis store is connected (1) or not (0)', () => (redis.state === 'ready' ? 1 : 0));
  const storeUp = () => redis === null || (redis.state === 'ready' && localCopy?.fromCopy !== true);
  if (localCopy?.fromCopy) {
    logger.log('warn', 'registry_from_local_copy', { store: storeUrl, devices: registry.size().devices, note: 'Redis is unreachable: deciding from this host\'s last copy of the registry until it is back; no device can be added meanwhile' });
  }
  // The copy is refreshed now and then, when the shared registry changed: a start during an outage then knows recent devices.
  const saveCopy = () => {
    if (localCopy === null) return;
    localCopy.save(registry).then(
      (wrote) => { if (wrote) logger.log('info', 'local_copy_saved', { devices: registry.size().devices }); },
      (err: unknown) => logger.log('warn', 'local_copy_failed', { error: (err as Error).message }),
    );
  };
  saveCopy();
  const copyTimer = localCopy === null ? undefined : setInterval(saveCopy, LOCAL_COPY_SAVE_MS);
  copyTimer?.unref();
  if (redis !== null) {
    // Said at every start: acknowledged registrations must survive a crash of Redis.
    redisDurabilityWarnings(redis).then(
      (ws) => { for (const w of ws) logger.log('warn', 'store_durability', { store: storeUrl, warning: w }); },
      (err: unknown) => logger.log('warn', 'store_durability', { store: storeUrl, warning: `could not read Redis's settings: ${(err as Error).message}` }),
    );
  }

  const servers: Server[] = [];
  const addresses: Partial<Record<ListenerName, string>> = {};
  const sockets = new Map<Server, Set<Socket>>();
  const track = (srv: Server) => {
    const set = new Set<Socket>();
    sockets.set(srv, set);
    servers.push(srv);
    srv.on('connection', (sock: Socket) => {
      set.add(sock);
      sock.on('close', () => set.delete(sock));
    });
  };
  let listenAt = opts.rules.listen;

  try {
    const make: Record<ListenerName, () => Server> = {
      admin: () => createAdminServer({
        engine, metrics, events: outputs.sink, logger,
        readiness: () => ({
          ready: sync.ok && storeUp(),
          detail: {
            rules: engine.rules.file,
            registry: sync.ok ? 'readable' : 'unreadable',
            ...(sync.lastError === null ? {} : { registry_error: sync.lastError }),
            devices: engine.registry.size().devices,
            store: redis === null ? 'file' : storeUrl,
            ...(redis === null ? {} : { store_state: redis.state, store_server: redis.server, registry_source: localCopy?.fromCopy ? 'local copy' : 'store' }),
          },
        }),
        rulesLoadedAt: () => loadedAt,
      }),
      dovecot: () => createDovecotServer({ engine, logger, apiKey: () => dovecotKey, ...(shared ? { shared } : {}) }),
      postfix: () => createPolicyServer({ engine, logger }),
      socketmap: () => createSocketmapServer({ engine, logger }),
      portal: () => {
        const srv = createHttpServer({
          maxHeaderSize: PORTAL_SERVER_LIMITS.maxHeaderSize,
          requestTimeout: PORTAL_SERVER_LIMITS.requestTimeout,
          headersTimeout: PORTAL_SERVER_LIMITS.headersTimeout,
          connectionsCheckingInterval: 1000,
        }, (req, res) => {
          if (portal === null) {
            res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('The account page is not configured.\n');
          } else portal.handle(req, res);
        });
        srv.keepAliveTimeout = PORTAL_SERVER_LIMITS.keepAliveTimeout;
        srv.maxConnections = PORTAL_SERVER_LIMITS.maxConnections;
        return srv;
      },
    };
    for (const name of ['admin', 'dovecot', 'postfix', 'socketmap', 'portal'] as const) {
      const addr = listenAt[name];
      if (addr === null) continue;
      // The account page is served only when the rules configure it.
      if (name === 'portal' && opts.rules.portal === null) continue;
      const server = make[name]();
      track(server);
      addresses[name] = await listen(server, addr, name, logger);
    }
  } catch (err) {
    sync.stop();
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    await outputs.close();
    await opened.close();
    throw err;
  }
  for (const [name, addr] of Object.entries(addresses)) logger.log('info', 'listening', { listener: name, address: addr });

  const reload = (trigger: string): boolean => {
    const file = engine.rules.file;
    const reject = (errors: string[]) => {
      reloads.inc({ result: 'rejected' });
      outputs.sink.emit({ event: 'rules_rejected', rules: file, errors });
      logger.log('error', 'rules_kept', { rules: file, trigger, note: 'the previous rules stay in force' });
      return false;
    };
    // An empty file means built-in defaults at start, but on a running daemon it is far more
    // likely a truncated save than a wish to drop every rule.
    try {
      if (statSync(file).size === 0) return reject([`${file}:1:1: the file is empty; write the rules again (an empty file is accepted only at start)`]);
    } catch {
      // missing: loadRulesFile reports it with its place
    }
    const r = loadRulesFile(file);
    if (!r.ok) return reject(r.errors.map(formatRulesIssue));
    if (r.rules.stateDir !== engine.rules.stateDir) return reject(['state_dir changed: restart cidlock to move the registry']);
    if (!sameJson(r.rules.store, engine.rules.store)) return reject(['store changed: restart cidlock to use another store (cidlock store copy moves a registry)']);
    let nextKey = dovecotKey;
    if (r.rules.listen.dovecot !== null || listenAt.dovecot !== null) {
      try {
        nextKey = dovecotApiKey(r.rules.dovecot, { create: true });
      } catch (err) {
        return reject([(err as Error).message]);
      }
    }
    for (const w of r.warnings) logger.log('warn', 'rules_warning', { warning: formatRulesIssue(w) });
    for (const name of Object.keys(listenAt) as ListenerName[]) {
      if (!sameJson(listenAt[name], r.rules.listen[name])) logger.log('warn', 'listen_changed', { listener: name, note: 'listener addresses change on restart only' });
    }
    // New templates and page texts are read before anything changes: a bad one keeps the old rules.
    let templates = null;
    let nextPortal = null;
    try {
      templates = r.rules.notice === null ? null : loadNoticeTemplates(r.rules.notice);
      nextPortal = portalFor(r.rules, accounts, logger);
    } catch (err) {
      return reject([(err as Error).message]);
    }
    if ((r.rules.portal === null) !== (engine.rules.portal === null)) logger.log('warn', 'listen_changed', { listener: 'portal', note: 'the account page starts or stops on restart only' });
    listenAt = r.rules.listen;
    // One assignment between two requests: every request sees either the old rules or the new.
    engine.setRules(r.rules);
    accounts.setTemplates(templates);
    portal = nextPortal;
    dovecotKey = nextKey;
    outputs.configure(r.rules);
    loadedAt = Date.now();
    reloads.inc({ result: 'ok' });
    outputs.sink.emit({ event: 'rules_reloaded', rules: file });
    return true;
  };

  // Editors save by rename, which breaks inotify watches; polling the path's stat survives that.
  // A change is reloaded once the file has stopped changing, so a save caught half-written is not.
  const rulesFile = opts.rules.file;
  let settle: NodeJS.Timeout | undefined;
  const statKey = () => {
    try {
      const st = statSync(rulesFile);
      return `${st.ino}:${st.size}:${st.mtimeMs}`;
    } catch {
      return 'absent';
    }
  };
  if (rulesFile !== '') {
    watchFile(rulesFile, { interval: RULES_POLL_MS, persistent: false }, (cur, prev) => {
      if (cur.mtimeMs === prev.mtimeMs && cur.size === prev.size && cur.ino === prev.ino) return;
      const seen = statKey();
      clearTimeout(settle);
      const check = (last: string) => {
        settle = setTimeout(() => {
          const now = statKey();
          if (now !== last) return check(now);
          reload('file changed');
        }, RULES_SETTLE_MS);
        settle.unref();
      };
      check(seen);
    });
  }

  const size = registry.size();
  logger.log('info', 'started', { rules: opts.rules.file, state_dir: opts.rules.stateDir, store: storeUrl ?? 'file', users: size.users, devices: size.devices });

  return {
    engine,
    metrics,
    addresses,
    reload,
    async close() {
      sync.stop();
      clearInterval(copyTimer);
      clearTimeout(settle);
      if (rulesFile !== '') unwatchFile(rulesFile);
      await Promise.all(servers.map((srv) => new Promise<void>((resolve) => {
        srv.close(() => resolve());
        // Postfix and Dovecot keep connections open for minutes; a stop must not wait for them.
        for (const sock of sockets.get(srv) ?? []) sock.destroy();
      })));
      // Registrations learn mode started are written before the process goes, and what the
      // pending tracker holds (tries, last-used days), and the notices on their way.
      tracker.stop();
      await engine.idle();
      await tracker.flush().catch((err: unknown) => logger.log('warn', 'registry_write_failed', { what: 'pending and last-used', error: (err as Error).message }));
      await accounts.idle();
      // The freshest copy for the next start, should Redis be unreachable then.
      await localCopy?.save(registry).catch((err: unknown) => logger.log('warn', 'local_copy_failed', { error: (err as Error).message }));
      await outputs.close();
      await shared?.stop();
      await opened.close();
    },
  };
}
