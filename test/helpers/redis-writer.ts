// A registry writer for the Redis fault tests, run as its own process (so it can be killed -9):
//   node dist/test/helpers/redis-writer.js <redis:// or sentinel:// URL> <key prefix> <token prefix> [replicas] [compact bytes]
// It opens the registry on the Redis store exactly as `cidlock serve` and the CLI do
// (openStoreAt) and registers devices in a loop, one at a time. With a compaction threshold, the
// store is made as openStoreAt makes it but with that threshold, so kills also land in the middle
// of writing a new snapshot. Every line on stdout is JSON:
//   {"ack":"<token>","user":"<user>","t":<epoch ms>}  printed only after add() resolved
//                                                     ("added", or "exists" after a retry whose
//                                                     first attempt landed but was not answered)
//   {"err":"<RegistryError code>","msg":"...","t":<epoch ms>}  a refused attempt; the same device is retried
//   {"open":<epoch ms>}  the registry is open
// A failed attempt is retried with the same token, so no acknowledged device is ever skipped.
import { openStoreAt } from '../../src/core/registry/open-store.js';
import { redisStore } from '../../src/core/registry/redis-store.js';
import { openRegistry } from '../../src/core/registry/registry.js';
import { RegistryError } from '../../src/core/registry/types.js';
import { createRedisClient } from '../../src/redis/client.js';
import { parseRedisUrl } from '../../src/redis/url.js';

const [url, keyPrefix, tokenPrefix, replicasArg, compactArg] = process.argv.slice(2);
if (url === undefined || keyPrefix === undefined || tokenPrefix === undefined) throw new Error('usage: redis-writer URL PREFIX TOKEN-PREFIX [replicas] [compact bytes]');
const parsed = parseRedisUrl(url);
if (!parsed.ok) throw new Error(parsed.error);
const address = parsed.address;
const users = 7;
const replicas = Number(replicasArg ?? 0);
const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function store() {
  if (compactArg === undefined) {
    return (await openStoreAt({ kind: 'redis', url: url!, address, passwordFile: '', keyPrefix: keyPrefix!, replicas }, { role: 'fault-writer', waitMs: 20_000 })).store;
  }
  const client = createRedisClient({ address, name: 'cidlock-fault-writer' });
  await client.ready(20_000);
  return redisStore(client, { url: url!, keyPrefix: keyPrefix!, replicas, compactBytes: Number(compactArg) });
}
const opened = { store: await store() };
let registry;
for (;;) {
  try {
    registry = await openRegistry(opened.store, { create: true });
    break;
  } catch (err) {
    out({ err: err instanceof RegistryError ? err.code : 'other', msg: (err as Error).message, t: Date.now(), at: 'open' });
    await sleep(50);
  }
}
out({ open: Date.now() });
for (let i = 0; ; ) {
  const token = `${tokenPrefix}${i}`;
  const user = `u${i % users}@example.com`;
  try {
    const r = await registry.add(user, { kind: 'cid', cid: { type: 'UUID', token } }, 'learn', { maxDevices: 1_000_000 });
    if (r.status === 'full') throw new Error('full');
    out({ ack: token, user, t: Date.now() });
    i++;
  } catch (err) {
    out({ err: err instanceof RegistryError ? err.code : 'other', msg: (err as Error).message, t: Date.now() });
    await sleep(20);
  }
}
