import { spawn } from 'node:child_process';
import { readSync, statSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Run as root, a command that changes the registry does that work as state_dir's owner (the
 * daemon's user): it reads the rules and its input files with root's rights, then runs itself
 * again in a child process started with the owner's uid and gid, handing over the bytes it read.
 * The child replays the command on those bytes, silently up to the point where the parent handed
 * over, and does the registry work.
 *
 * Why a child rather than switching users in this process (process.setuid): Node.js built with
 * Debian's shared libuv (Debian 13's nodejs 20) refuses every user switch in-process, as libuv may
 * use io_uring (CVE-2024-22017); a child's credentials are set between fork and exec, where that
 * does not apply. Why not run as root and chown what was created: every file then belongs to the
 * daemon's user from the moment it exists (the daemon polls the directory and never meets a
 * root-owned journal); a file a later change adds (a temp file, the audit log, the lock) cannot be
 * forgotten; and root never writes into a directory another user controls, where a planted
 * symlink (registry.journal -> /etc/shadow) would make root append to any file on the system.
 */

/** Names the descriptor the parent writes the handoff to; set only for the child. */
const HANDOFF_ENV = 'CIDLOCK_HANDOFF_FD';
const HANDOFF_FD = 3;
/** A 64 MiB import, the rules and a certificate, with room to spare. */
const MAX_HANDOFF_BYTES = 80 * 1024 * 1024;
const LAUNCHER = fileURLToPath(new URL('../../../bin/cidlock', import.meta.url));

/** A command run as root could not hand its work to state_dir's owner; nothing was changed. */
export class StateOwnerError extends Error {
  override readonly name = 'StateOwnerError';
}

/**
 * The files one CLI run read (path, or "-" for standard input), kept for a handoff; in a child,
 * the files its parent read. Owned by the CLI process: one run, one record.
 */
const record = {
  argv: [] as string[],
  files: new Map<string, Buffer>(),
  replayed: null as Map<string, Buffer> | null,
  /** A replaying child prints nothing until it reaches the registry: its parent printed that part. */
  quiet: false,
};

/** Starts the record of one command; in a child, takes over what its parent read. */
export function beginCommand(argv: string[]): void {
  record.argv = argv;
  record.files.clear();
  const fd = process.env[HANDOFF_ENV];
  if (fd === undefined) return;
  delete process.env[HANDOFF_ENV];
  record.replayed = decode(readAll(Number(fd), MAX_HANDOFF_BYTES));
  record.quiet = true;
}

/** Whether output is held back (a child replaying what its parent already printed). */
export const replaying = (): boolean => record.quiet;

/** Output is the child's own from here on. */
export function endReplay(): void {
  record.quiet = false;
}

/**
 * A file the command reads as input ("-": standard input), recorded for a handoff. `read` is how
 * it is read when not replayed, so each caller keeps its own checks (size, file type).
 */
export function readCliFile(path: string, read: (path: string) => Buffer): Buffer {
  const replayed = record.replayed;
  if (replayed !== null) {
    const b = replayed.get(path);
    if (b === undefined) throw new StateOwnerError(`${path}: not among the files handed over by the parent process`);
    return b;
  }
  const b = read(path);
  record.files.set(path, b);
  return b;
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
 * When run as root on a state_dir another user owns: runs this command again as that user and
 * resolves to its exit status. Otherwise (not root, or state_dir root's own) resolves to null and
 * the caller goes on itself.
 */
export async function handOffToStateOwner(stateDir: string): Promise<number | null> {
  if (process.geteuid?.() !== 0) return null;
  const { uid, gid } = ownerOf(stateDir);
  if (uid === 0) return null;
  const stdio: Array<'inherit' | 'pipe'> = ['inherit', 'inherit', 'inherit', 'pipe'];
  // libuv drops the supplementary groups before it sets gid and uid in the child.
  const child = spawn(process.execPath, [...process.execArgv, LAUNCHER, ...record.argv], {
    uid, gid, stdio, env: { ...process.env, [HANDOFF_ENV]: String(HANDOFF_FD) },
  });
  const started = new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (err) => reject(new StateOwnerError(`cannot run as state_dir's owner (uid ${uid}, gid ${gid}): ${err.message}; nothing was changed`)));
  });
  const exited = new Promise<number>((resolve) => child.once('exit', (code, signal) => resolve(code ?? 128 + (signal !== null ? constants.signals[signal] : 0))));
  await started;
  const pipe = child.stdio[HANDOFF_FD] as NodeJS.WritableStream;
  // A child that ends before reading it all closes the pipe: its exit status says why.
  pipe.on('error', () => {});
  pipe.end(encode(record.files));
  return exited;
}

/** One JSON line naming each file and its length, then the files' bytes one after another. */
function encode(files: Map<string, Buffer>): Buffer {
  const head = JSON.stringify([...files].map(([path, b]) => [path, b.length]));
  return Buffer.concat([Buffer.from(`${head}\n`), ...files.values()]);
}

function decode(data: Buffer): Map<string, Buffer> {
  const nl = data.indexOf(0x0a);
  const bad = () => new StateOwnerError('the handoff from the parent process is malformed');
  if (nl < 0) throw bad();
  let list: unknown;
  try {
    list = JSON.parse(data.toString('utf8', 0, nl));
  } catch {
    throw bad();
  }
  if (!Array.isArray(list)) throw bad();
  const files = new Map<string, Buffer>();
  let at = nl + 1;
  for (const entry of list) {
    if (!Array.isArray(entry) || typeof entry[0] !== 'string' || !Number.isSafeInteger(entry[1]) || entry[1] < 0 || at + entry[1] > data.length) throw bad();
    files.set(entry[0], data.subarray(at, at + entry[1]));
    at += entry[1];
  }
  if (at !== data.length) throw bad();
  return files;
}

/**
 * All of a descriptor, synchronously: standard input or the handoff pipe; reading stops once more
 * than `maxBytes` arrived (the caller sees the length). readFileSync(0) fails with EAGAIN on Node
 * 18 (Debian 12's nodejs) when the descriptor is a non-blocking pipe that has no data yet, e.g.
 * one a parent Node.js process holds open: wait for the data instead, as Node 20 does.
 */
export function readAll(fd: number, maxBytes: number): Buffer {
  const chunks: Buffer[] = [];
  const chunk = Buffer.allocUnsafe(64 * 1024);
  const nap = new Int32Array(new SharedArrayBuffer(4));
  let size = 0;
  for (;;) {
    let n: number;
    try {
      n = readSync(fd, chunk, 0, chunk.length, null);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      Atomics.wait(nap, 0, 0, 10); // nothing to read yet: sleep 10 ms
      continue;
    }
    if (n === 0) return Buffer.concat(chunks, size);
    size += n;
    chunks.push(Buffer.from(chunk.subarray(0, n)));
    if (size > maxBytes) return Buffer.concat(chunks, size);
  }
}
