import type { AddressInfo, Server, Socket } from 'node:net';
import { createEngine, type Engine } from '../core/engine.js';
import type { Logger } from '../core/log.js';
import { loadRulesFile } from '../core/rules/load.js';
import { formatRulesIssue, type ListenAddress, type ListenerName, type Rules } from '../core/rules/types.js';
import { fileStore } from '../core/registry/file-store.js';
import { openRegistry } from '../core/registry/registry.js';
import { createAdminServer } from '../admin/server.js';
import { createDovecotServer } from '../dovecot-policy/server.js';
import { createPolicyServer } from '../postfix-policy/policy-server.js';
import { createSocketmapServer } from '../postfix-policy/socketmap-server.js';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';

export interface Daemon {
  readonly engine: Engine;
  /** Actual bound addresses, e.g. { admin: "127.0.0.1:8426" }. */
  readonly addresses: Partial<Record<ListenerName, string>>;
  /** Re-reads the rules file and the registry; invalid rules leave the old ones in force. */
  reload(): boolean;
  close(): Promise<void>;
}

function removeStaleSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // absent: nothing to remove
  }
}

function listen(server: Server, addr: ListenAddress): Promise<string> {
  if ('path' in addr) removeStaleSocket(addr.path);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      const a = server.address();
      resolve(typeof a === 'string' ? `unix:${a}` : a === null ? '?' : fmt(a));
    };
    // Postfix's smtpd (user postfix) must reach a unix socket: run cidlock in group postfix.
    if ('path' in addr) server.listen(addr.path, () => { chmodSync(addr.path, 0o660); done(); });
    else server.listen(addr.port, addr.host, done);
  });
}

function fmt(a: AddressInfo): string {
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

const sameAddress = (a: ListenAddress | null, b: ListenAddress | null) => JSON.stringify(a) === JSON.stringify(b);

const REGISTRY_POLL_MS = 1000;


export async function startDaemon(opts: { rules: Rules; logger: Logger }): Promise<Daemon> {
  const { logger } = opts;
  const registry = openRegistry(fileStore(opts.rules.stateDir), { create: true });
  const engine = createEngine({ rules: opts.rules, registry, logger });
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
    const adminAddr = listenAt.admin;
    if (adminAddr !== null) {
      const admin = createAdminServer({
        health: () => ({ ok: true, detail: { rules: engine.rules.file, devices: engine.registry.size().devices } }),
      });
      track(admin);
      addresses.admin = await listen(admin, adminAddr);
    }
    const make: Record<Exclude<ListenerName, 'admin'>, () => Server> = {
      dovecot: () => createDovecotServer({ engine, logger }),
      postfix: () => createPolicyServer({ engine, logger }),
      socketmap: () => createSocketmapServer({ engine, logger }),
    };
    for (const name of ['dovecot', 'postfix', 'socketmap'] as const) {
      const addr = listenAt[name];
      if (addr === null) continue;
      const server = make[name]();
      track(server);
      addresses[name] = await listen(server, addr);
    }
  } catch (err) {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    throw err;
  }
  for (const [name, addr] of Object.entries(addresses)) logger.log('info', 'listening', { listener: name, address: addr });
  // CLI edits (devices add, users set) reach the running daemon within a second: one stat() per tick.
  let refreshFailed = false;
  const refresher = setInterval(() => {
    try {
      if (engine.registry.refresh()) logger.log('info', 'registry_reloaded', { devices: engine.registry.size().devices });
      refreshFailed = false;
    } catch (err) {
      if (!refreshFailed) logger.log('error', 'registry_reload_failed', { error: (err as Error).message, note: 'the registry in memory stays in force' });
      refreshFailed = true;
    }
  }, REGISTRY_POLL_MS);
  refresher.unref();
  const size = registry.size();
  logger.log('info', 'started', { rules: opts.rules.file, state_dir: opts.rules.stateDir, users: size.users, devices: size.devices });

  return {
    engine,
    addresses,
    reload() {
      const file = engine.rules.file;
      const r = loadRulesFile(file);
      if (!r.ok) {
        logger.log('error', 'rules_rejected', { rules: file, errors: r.errors.map(formatRulesIssue), note: 'the previous rules stay in force' });
        return false;
      }
      for (const w of r.warnings) logger.log('warn', 'rules_warning', { warning: formatRulesIssue(w) });
      if (r.rules.stateDir !== engine.rules.stateDir) {
        logger.log('error', 'rules_rejected', { rules: file, errors: ['state_dir changed: restart cidlock to move the registry'], note: 'the previous rules stay in force' });
        return false;
      }
      for (const name of Object.keys(listenAt) as ListenerName[]) {
        if (!sameAddress(listenAt[name], r.rules.listen[name])) logger.log('warn', 'listen_changed', { listener: name, note: 'listener addresses change on restart only' });
      }
      listenAt = r.rules.listen;
      engine.setRules(r.rules);
      let registryReloaded = false;
      try {
        registryReloaded = engine.registry.refresh();
      } catch (err) {
        logger.log('error', 'registry_reload_failed', { error: (err as Error).message, note: 'the registry in memory stays in force' });
      }
      logger.log('info', 'rules_reloaded', { rules: file, registry_reloaded: registryReloaded, devices: engine.registry.size().devices });
      return true;
    },
    async close() {
      clearInterval(refresher);
      await Promise.all(servers.map((srv) => new Promise<void>((resolve) => {
        srv.close(() => resolve());
        // Postfix and Dovecot keep connections open for minutes; a stop must not wait for them.
        for (const sock of sockets.get(srv) ?? []) sock.destroy();
      })));
    },
  };
}
