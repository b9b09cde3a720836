import { registryEntries } from './copy.js';
import { fileStore } from './file-store.js';
import type { Registry } from './registry.js';
import { RegistryError, type RegistryStore, type StoreCursor } from './types.js';

/** Where a host keeps its copy of a shared registry, in state_dir. */
export const LOCAL_COPY_DIR = 'shared-registry-copy';
/** The cursor of a registry read from the local copy: any news from the shared store replaces it whole. */
const FROM_COPY = 'local-copy';

export interface LocalCopyStore extends RegistryStore {
  /** Whether the registry in memory came from the local copy (the shared store was unreachable when it was read). */
  readonly fromCopy: boolean;
  /** Writes the registry in memory to the local copy if the shared store changed since the last save; true when it wrote. */
  save(registry: Registry): Promise<boolean>;
}

/**
 * A shared store (Redis) with a copy of its registry on this host's disk, for one case: a host
 * that starts while the shared store is unreachable. Without the copy it could not decide at all,
 * and Dovecot lets logins through when cidlock does not answer; with it, the host decides from
 * the registry as it last saw it (and says so: /readyz fails until the shared store is back, then
 * the registry is read from it whole). Every write still goes to the shared store only.
 */
export function withLocalCopy(primary: RegistryStore, dir: string): LocalCopyStore {
  const copy = fileStore(dir);
  let fromCopy = false;
  let copySecret: Buffer | null = null;
  let last: StoreCursor | null = null;
  let saved = '';
  const track = (c: StoreCursor): StoreCursor => ((last = c), c);
  const unreachable = (err: unknown) => err instanceof RegistryError && err.code === 'io';

  return {
    location: primary.location,
    get fromCopy() {
      return fromCopy;
    },
    async readAll(apply) {
      let applied = 0;
      try {
        const c = await primary.readAll((op) => {
          applied++;
          apply(op);
        });
        fromCopy = false;
        return track(c);
      } catch (err) {
        // Half a registry from one place and half from another would be neither: only a store
        // that could not be read at all is replaced by the copy.
        if (applied > 0 || !unreachable(err) || (await copy.isEmpty())) throw err;
        await copy.readAll(apply);
        copySecret = await copy.secret(false);
        fromCopy = true;
        return { snapshot: FROM_COPY, journal: FROM_COPY, offset: 0 };
      }
    },
    async readSince(cursor, apply) {
      if (cursor.snapshot === FROM_COPY) return null;
      const c = await primary.readSince(cursor, apply);
      return c === null ? null : track(c);
    },
    async changedSince(cursor) {
      // Read from the copy: "changed" as soon as the shared store answers (then it is read whole).
      if (cursor.snapshot === FROM_COPY) return primary.changedSince({ snapshot: FROM_COPY, journal: '0', offset: -1 });
      return primary.changedSince(cursor);
    },
    withLock: (fn) => primary.withLock(fn),
    append: async (cursor, ops) => track(await primary.append(cursor, ops)),
    shouldCompact: (cursor) => primary.shouldCompact(cursor),
    compact: async (users) => track(await primary.compact(users)),
    async secret(create) {
      try {
        return await primary.secret(create);
      } catch (err) {
        if (fromCopy && !create && unreachable(err)) return copySecret;
        throw err;
      }
    },
    writeSecret: (secret, replace) => primary.writeSecret(secret, replace),
    isEmpty: () => primary.isEmpty(),
    async save(registry) {
      if (fromCopy || last === null) return false;
      const at = JSON.stringify(last);
      if (at === saved) return false;
      const secret = await primary.secret(false);
      await copy.withLock(async () => {
        if (secret !== null) await copy.writeSecret(secret, true);
        await copy.compact(registryEntries(registry));
      });
      saved = at;
      return true;
    },
  };
}
