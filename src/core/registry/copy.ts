import { createHash } from 'node:crypto';
import { openRegistry, type Registry } from './registry.js';
import { slicer } from './slice.js';
import type { RegistryStore, UserSnapshot } from './types.js';

export type CopyResult =
  | { status: 'copied'; users: number; devices: number; digest: string }
  | { status: 'not_empty' };

/** What a registry holds, as one hash over every user's mode and devices in a fixed order: equal registries, equal digests. */
export async function registryDigest(registry: Registry): Promise<{ users: number; devices: number; digest: string }> {
  const h = createHash('sha256');
  const slice = slicer();
  const users = [...registry.users()].sort();
  let devices = 0;
  for (const u of users) {
    const ds = registry.devices(u).map((d) => `${d.hash} ${d.kind} ${d.type} ${d.source} ${d.added} ${JSON.stringify(d.label)}`).sort();
    devices += ds.length;
    h.update(`${JSON.stringify(u)} ${registry.settings(u).mode ?? '-'}\n${ds.join('\n')}\n`);
    if (slice.due()) await slice.pause();
  }
  return { users: users.length, devices, digest: h.digest('hex') };
}

/** A registry in memory as a store's snapshot takes it: every user's mode, devices, pending devices and links. */
export function registryEntries(registry: Registry): Generator<[string, UserSnapshot]> {
  return registry.entries();
}

/**
 * Copies a whole registry, its CID key included, from one store to another (a state_dir to Redis
 * and back), holding both stores' locks so no writer changes either meanwhile. A target that holds
 * anything is left alone unless `replace`. The target is then read back and must hold exactly
 * what the source holds; the digest says so.
 */
export async function copyRegistry(from: RegistryStore, to: RegistryStore, o: { replace: boolean }): Promise<CopyResult> {
  return from.withLock(() => to.withLock(async () => {
    if (!o.replace && !(await to.isEmpty())) return { status: 'not_empty' as const };
    const source = await openRegistry(from, { create: false });
    const secret = await from.secret(false);
    if (secret !== null) await to.writeSecret(secret, o.replace);
    await to.compact(registryEntries(source));
    const want = await registryDigest(source);
    const got = await registryDigest(await openRegistry(to, { create: false }));
    if (got.digest !== want.digest) throw new Error(`the copy does not read back as the source (source ${want.users} users, ${want.devices} devices; copy ${got.users} users, ${got.devices} devices)`);
    return { status: 'copied' as const, ...want };
  }));
}
