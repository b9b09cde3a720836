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
