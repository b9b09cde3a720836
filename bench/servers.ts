// The servers under test, one per child process so each can be pinned to its own CPU core:
//   node dist/bench/servers.js <bare-http|cidlock-dovecot|bare-net|cidlock-postfix> <stateDir> [users]
// Prints the listening port on stdout.
import { createServer as createHttpServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server } from 'node:net';
import { join } from 'node:path';
import { createEngine } from '../src/core/engine.js';
import { createPendingTracker } from '../src/core/pending.js';
import { fileStore } from '../src/core/registry/file-store.js';
import { openRegistry } from '../src/core/registry/registry.js';
import { parseRules } from '../src/core/rules/load.js';
import { createDovecotServer } from '../src/dovecot-policy/server.js';
import { createPolicyServer } from '../src/postfix-policy/policy-server.js';
import { benchUsers } from './fixtures.js';

/** Also in wrk-dovecot.lua and slow-clients.ts. */
const BENCH_DOVECOT_KEY = 'bench-dovecot-key-0123456789abcdef';

const [kind, stateDir, usersArg] = process.argv.slice(2);
const users = Number(usersArg ?? 1000);

async function cidlockEngine() {
  // Production defaults except limits: every bench request comes from 127.0.0.1, and a tarpit for
  // that one address would measure the tarpit, not the server.
  const r = parseRules(`state_dir: ${stateDir}\npolicy: { mode: enforce }\nlimits: []\nlog: { decisions: refusals }\n`, join(stateDir!, 'r.yaml'));
  if (!r.ok) throw new Error('bench rules');
  const registry = await openRegistry(fileStore(stateDir!), { create: true });
  if (registry.size().devices === 0) await registry.addMany(benchUsers(users).flatMap((u) => [{ user: u.user, input: { kind: 'cid' as const, cid: u.cid } }, { user: u.user, input: { kind: 'cert' as const, fingerprint: u.fingerprint } }]));
  // Decision lines go to stdout in production; here to /dev/null-like sink so the bench measures the server, not the terminal.
  const logger = { log(_l: string, _e: string, f?: Record<string, unknown>) { if (f) JSON.stringify(f); } };
  // As the daemon runs it: refused devices remembered as pending, last-used days kept.
  const pending = createPendingTracker({ registry, rules: r.rules, logger });
  return { engine: createEngine({ rules: r.rules, registry, logger, pending }), logger };
}

let server: Server;
if (kind === 'bare-http') {
  const s = createHttpServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":0}'));
  });
  s.keepAliveTimeout = 65_000;
  server = s;
} else if (kind === 'cidlock-dovecot') {
  // The bench measures the key check too: production always has one.
  server = createDovecotServer({ ...(await cidlockEngine()), apiKey: () => BENCH_DOVECOT_KEY });
} else if (kind === 'bare-net') {
  server = createNetServer((sock) => {
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        buf = buf.slice(i + 2);
        sock.write('action=DUNNO\n\n');
      }
    });
    sock.on('error', () => sock.destroy());
  });
} else if (kind === 'cidlock-postfix') {
  server = createPolicyServer(await cidlockEngine());
} else {
  throw new Error(`unknown server kind ${kind}`);
}
// An orderly exit on SIGTERM, so --cpu-prof (BENCH_CPU_PROF) gets to write its profile.
process.on('SIGTERM', () => process.exit(0));
server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
