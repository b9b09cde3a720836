import { closeSync, fsyncSync, linkSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { link, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/** writeSync may write less than asked (a full disk, a signal): loop until all of it is out. */
export function writeFully(fd: number, data: string | Uint8Array): void {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  let off = 0;
  while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
}

function writeAndSync(path: string, data: string | Uint8Array, mode: number): void {
  const fd = openSync(path, 'wx', mode);
  try {
    writeFully(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The rename is only durable once the directory entry itself is on disk. */
export function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic there.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Replaces `path` with `data` so that a crash at any moment leaves either the old or the new
 * content, never a mix: write a temp file in the same directory, fsync, rename, fsync the dir.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): void {
  const tmp = tempPathFor(path);
  try {
    writeAndSync(tmp, data, mode);
    renameSync(tmp, path);
  } catch (err) {
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw err;
  }
  syncDir(dirname(path));
}

/**
 * Creates `path` with `data` only if it does not exist yet, atomically and durably; returns false
 * if another process created it first. link() fails on an existing target, so two racing
 * processes can never both "win" and a reader never sees a half-written file.
 */
export function createFileExclusive(path: string, data: string | Uint8Array, mode = 0o600): boolean {
  const tmp = tempPathFor(path);
  try {
    writeAndSync(tmp, data, mode);
    try {
      linkSync(tmp, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw err;
    }
  } finally {
    try { unlinkSync(tmp); } catch { /* already gone */ }
  }
  syncDir(dirname(path));
  return true;
}

// Asynchronous counterparts for the daemon, whose main thread must never wait on a disk.

/** FileHandle.write may write less than asked too. */
export async function writeAll(fh: FileHandle, data: string | Uint8Array): Promise<void> {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  let off = 0;
  while (off < buf.length) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
}

export async function syncDirAsync(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic there.
  } finally {
    await fh?.close();
  }
}

/**
 * Replaces `path` with what `write` writes, atomically and durably (temp file in the same
 * directory, fsync, rename, fsync the directory). A failure removes the temp file and leaves
 * `path` as it was.
 */
export async function replaceFileAsync(path: string, write: (fh: FileHandle) => Promise<void>, mode = 0o600): Promise<void> {
  const tmp = tempPathFor(path);
  const fh = await open(tmp, 'wx', mode);
  try {
    await write(fh);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  await syncDirAsync(dirname(path));
}

/** createFileExclusive without blocking: false if another process created `path` first. */
export async function createFileExclusiveAsync(path: string, data: string | Uint8Array, mode = 0o600): Promise<boolean> {
  const tmp = tempPathFor(path);
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await writeAll(fh, data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(tmp, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw err;
    }
  } finally {
    await unlink(tmp).catch(() => {});
  }
  await syncDirAsync(dirname(path));
  return true;
}
