import { chownSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Gives a file cidlock just created the owner and group of its folder when running as root, so a
 * command an administrator runs with sudo leaves state_dir usable by the daemon's own user.
 */
export function ownLikeParent(path: string): void {
  if (process.geteuid?.() !== 0) return;
  const dir = statSync(dirname(path));
  const st = statSync(path);
  if (st.uid !== dir.uid || st.gid !== dir.gid) chownSync(path, dir.uid, dir.gid);
}

/** The owner of `path`, or of its nearest existing ancestor when it does not exist yet. */
function ownerOf(path: string): { uid: number; gid: number } {
  for (let p = path; ; p = dirname(p)) {
    try {
      const st = statSync(p);
      return { uid: st.uid, gid: st.gid };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || dirname(p) === p) throw err;
    }
  }
}

/**
 * Run as root, a command that changes the registry becomes state_dir's owner (user and group)
 * before it opens the registry, after it read the rules and its input files with root's rights.
 *
 * Why drop privileges rather than chown each file the CLI creates: every file then belongs to the
 * daemon's user from the moment it exists (the daemon polls the directory and never meets a
 * root-owned journal, not even between a create and a chown); a file added by a later change
 * (a new temp file, the audit log, the lock) cannot be forgotten; and root never writes into a
 * directory another user controls, where a planted symlink (registry.journal -> /etc/shadow)
 * would make root append to any file on the system.
 *
 * Returns the uid switched to, or null when nothing changed (not root, or state_dir owned by root).
 */
export function becomeStateOwner(stateDir: string): number | null {
  if (process.geteuid?.() !== 0 || process.setuid === undefined || process.setgid === undefined) return null;
  const { uid, gid } = ownerOf(stateDir);
  if (uid === 0) return null;
  // Groups first, then the group, then the user: after setuid nothing else may be changed.
  try {
    process.setgroups?.([gid]);
  } catch (err) {
    // Node.js built against a shared libuv (Debian 13's nodejs 20) refuses every user switch, as
    // libuv may use io_uring (CVE-2024-22017); UV_USE_IO_URING=0 does not lift it. Nothing has
    // changed yet: refuse rather than write state_dir as root.
    if ((err as NodeJS.ErrnoException).code === 'ERR_INVALID_STATE') {
      throw new StateOwnerError(`cannot become state_dir's owner (uid ${uid}, gid ${gid}): this Node.js refuses to switch users (${(err as Error).message}); run the command as that user instead, e.g. setpriv --reuid=${uid} --regid=${gid} --clear-groups cidlock ...`);
    }
    throw err;
  }
  process.setgid(gid);
  process.setuid(uid);
  return uid;
}

/** A command run as root could not switch to state_dir's owner; nothing was changed. */
export class StateOwnerError extends Error {
  override readonly name = 'StateOwnerError';
}
