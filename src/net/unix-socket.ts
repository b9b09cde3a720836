import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { connect, type Server } from 'node:net';
import { dirname } from 'node:path';

/**
 * Postfix's policy and socketmap protocols carry no credentials, so the file system is the
 * authentication: the socket's directory (owner cidlock, group postfix) lets in only Postfix's
 * processes, and the socket (group postfix) lets them connect. Nobody else can even reach it.
 * The directory is setgid, so a socket made in it takes its group without cidlock having to be
 * a member of group postfix.
 */
export const SOCKET_DIR_MODE = 0o2750;
export const SOCKET_MODE = 0o660;
/** The group smtpd runs in on Debian and in Postfix's own defaults (mail_owner / default_privs aside). */
export const POSTFIX_GROUP = 'postfix';
/** How long a connect() may take before a socket file left at the path counts as stale. */
const LIVE_PROBE_MS = 500;
/** Mode bits for "others": entering (x) or writing (w) the directory lets any local user reach or replace the socket. */
export const OTHERS_ENTER_OR_WRITE = 0o003;

export class UnixSocketError extends Error {
  override readonly name = 'UnixSocketError';
}

const octal = (mode: number) => `0${(mode & 0o7777).toString(8)}`;

/** A group's id from /etc/group (Node has no getgrnam); null when there is no such group. */
export function groupId(name: string, groupFile = '/etc/group'): number | null {
  let text: string;
  try {
    text = readFileSync(groupFile, 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n')) {
    const [g, , gid] = line.split(':');
    if (g === name && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  return null;
}

/**
 * The directory a socket lives in: created when missing (2750, group postfix when running as
 * root), refused when other users may enter or write to it. Returns the group the socket gets.
 */
export function prepareSocketDir(dir: string): number {
  let st;
  try {
    st = statSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new UnixSocketError(`${dir}: cannot use the socket directory (${(err as NodeJS.ErrnoException).code})`);
    try {
      mkdirSync(dir, { mode: SOCKET_DIR_MODE });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new UnixSocketError(code === 'ENOENT'
        ? `${dir}: cannot create the socket directory: ${dirname(dir)} does not exist (is Postfix installed? the default sockets live in its queue directory)`
        : `${dir}: cannot create the socket directory (${code}); create it as root: install -d -o cidlock -g ${POSTFIX_GROUP} -m 2750 ${dir}`);
    }
    chmodSync(dir, SOCKET_DIR_MODE); // mkdir's mode is filtered by the umask
    const postfix = process.geteuid?.() === 0 ? groupId(POSTFIX_GROUP) : null;
    if (postfix !== null) chownSync(dir, 0, postfix);
    st = statSync(dir);
  }
  if (!st.isDirectory()) throw new UnixSocketError(`${dir}: not a directory; the socket needs a directory of its own`);
  if ((st.mode & OTHERS_ENTER_OR_WRITE) !== 0) {
    throw new UnixSocketError(`${dir}: every local user may ${st.mode & 0o002 ? 'write to' : 'enter'} this directory (mode ${octal(st.mode)}), so anyone could reach or replace the socket in it; run: chmod o-rwx ${dir}`);
  }
  return st.gid;
}

/** True when something accepts connections on the path: another cidlock, or another program. */
function listening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (live: boolean) => { s.destroy(); clearTimeout(t); resolve(live); };
    const t = setTimeout(() => done(true), LIVE_PROBE_MS);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Removes a socket file a previous run left behind; anything else at the path is an error. */
export async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return; // absent: nothing to remove
  }
  if (!st.isSocket()) throw new UnixSocketError(`${path}: exists and is not a socket; remove or move it, cidlock will not replace it`);
  if (await listening(path)) throw new UnixSocketError(`${path}: another process is listening on this socket (a second cidlock?)`);
  unlinkSync(path);
}

/**
 * Listens on a UNIX socket only Postfix's processes can use: the directory checked (or made),
 * a stale socket replaced, the socket given mode 0660 and the directory's group.
 */
export async function listenUnix(server: Server, path: string): Promise<void> {
  const gid = prepareSocketDir(dirname(path));
  await removeStaleSocket(path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  try {
    chmodSync(path, SOCKET_MODE);
    if (statSync(path).gid !== gid) chownSync(path, -1, gid);
  } catch (err) {
    await new Promise((r) => server.close(r));
    throw new UnixSocketError(`${path}: cannot give the socket mode 0660 and the group of its directory (gid ${gid}): ${(err as NodeJS.ErrnoException).code}; make the directory setgid so its sockets take its group: chmod g+s ${dirname(path)}`);
  }
}
