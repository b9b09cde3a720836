// UNIX socket listeners for Postfix: the directory and the socket's mode are the authentication.
// The access checks run real connect() calls from processes with other uids and gids.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { groupId, listenUnix, SOCKET_DIR_MODE, UnixSocketError } from '../src/net/unix-socket.js';
import { repoRoot } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

const NOBODY = 65534;
const POSTFIX_GID = groupId('postfix');
const asRoot = process.geteuid?.() === 0;
// Connecting as another user needs root to switch uid, and the postfix group to exist.
const withUsers = asRoot && POSTFIX_GID !== null ? test : test.skip;
if (!(asRoot && POSTFIX_GID !== null)) process.stderr.write('\n*** SKIPPED: unix-socket access tests need root and a postfix group ***\n');

const servers: Server[] = [];
const echo = () => {
  const s = createServer((c) => { c.on('error', () => {}); c.end('hello\n'); });
  servers.push(s);
  return s;
};
test.after(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

/** A parent every user may traverse, as /var/spool/postfix is (mktemp makes 0700 folders). */
function openParent(): string {
  const d = tempDir('cidlock-sock-');
  chmodSync(d, 0o755);
  return d;
}

/**
 * connect() from a separate process with the given uid and gid: "hello" or the error code.
 * Asynchronous: the server answering it runs in this process.
 */
function connectAs(path: string, uid: number, gid: number): Promise<string> {
  const code = `const s=require('net').connect(${JSON.stringify(path)});s.on('data',d=>{process.stdout.write(String(d).trim());s.destroy()});s.on('error',e=>process.stdout.write(e.code))`;
  return new Promise((resolve) => {
    execFile(process.execPath, ['-e', code], { uid, gid, encoding: 'utf8', timeout: 10_000 }, (_err, stdout) => resolve(stdout));
  });
}

withUsers('a missing directory is created 2750 (setgid) with the postfix group; the socket is 0660 with the same group', async () => {
  const dir = join(openParent(), 'cidlock');
  const path = join(dir, 'policy');
  await listenUnix(echo(), path);
  const d = statSync(dir);
  assert.is(d.mode & 0o7777, SOCKET_DIR_MODE);
  assert.is(d.gid, POSTFIX_GID);
  const s = statSync(path);
  assert.ok(s.isSocket());
  assert.is(s.mode & 0o777, 0o660);
  assert.is(s.gid, POSTFIX_GID);
});

withUsers('a process in group postfix connects; nobody gets EACCES', async () => {
  const dir = join(openParent(), 'cidlock');
  const path = join(dir, 'socketmap');
  await listenUnix(echo(), path);
  assert.is(await connectAs(path, NOBODY, POSTFIX_GID!), 'hello', 'smtpd runs in group postfix');
  assert.is(await connectAs(path, NOBODY, NOBODY), 'EACCES');
});

withUsers('an existing directory keeps its own group, and the socket gets it', async () => {
  const dir = join(openParent(), 'own');
  mkdirSync(dir, { mode: 0o750 });
  chmodSync(dir, 0o750);
  const path = join(dir, 'policy');
  await listenUnix(echo(), path);
  assert.is(statSync(path).gid, statSync(dir).gid);
  assert.is(statSync(dir).gid, 0, 'not changed to postfix');
  assert.is(await connectAs(path, NOBODY, POSTFIX_GID!), 'EACCES', 'postfix is not in this directory\'s group');
});

/** listenUnix in a separate process running as nobody (not in group postfix): "listening" or the error. */
function listenAsNobody(path: string): Promise<string> {
  const mod = join(repoRoot, 'dist', 'src', 'net', 'unix-socket.js');
  const code = `import(${JSON.stringify(mod)}).then(async (m) => { const s = require('net').createServer(); try { await m.listenUnix(s, ${JSON.stringify(path)}); process.stdout.write('listening'); s.close(); } catch (e) { process.stdout.write(e.message); } })`;
  return new Promise((resolve) => execFile(process.execPath, ['-e', code], { uid: NOBODY, gid: NOBODY, encoding: 'utf8', timeout: 10_000 }, (_e, out) => resolve(out)));
}

withUsers('a daemon outside group postfix (systemd: User=cidlock Group=cidlock): the setgid directory gives its socket group postfix', async () => {
  const dir = join(openParent(), 'cidlock');
  // What the unit's ExecStartPre makes: install -d -o cidlock -g postfix -m 2750
  mkdirSync(dir);
  chownSync(dir, NOBODY, POSTFIX_GID!);
  chmodSync(dir, 0o2750);
  assert.is(await listenAsNobody(join(dir, 'policy')), 'listening');
  // Without the setgid bit the socket would get the daemon's group, which it cannot change.
  chmodSync(dir, 0o750);
  const msg = await listenAsNobody(join(dir, 'policy'));
  assert.ok(msg.startsWith(`${join(dir, 'policy')}: cannot give the socket mode 0660 and the group of its directory (gid ${POSTFIX_GID})`), msg);
  assert.match(msg, `chmod g+s ${dir}`);
});

test('a directory other users may enter or write to is refused, naming the path', async () => {
  for (const mode of [0o751, 0o757, 0o1777]) {
    const dir = join(openParent(), 'open');
    mkdirSync(dir);
    chmodSync(dir, mode);
    const path = join(dir, 'policy');
    try {
      await listenUnix(echo(), path);
      assert.unreachable(`mode ${mode.toString(8)} accepted`);
    } catch (err) {
      assert.instance(err, UnixSocketError);
      assert.ok((err as Error).message.startsWith(`${dir}: every local user may`), (err as Error).message);
      assert.match((err as Error).message, `chmod o-rwx ${dir}`);
    }
  }
});

test('a stale socket is replaced; a live socket or a regular file at the path is not', async () => {
  const dir = join(openParent(), 'cidlock');
  mkdirSync(dir, { mode: 0o750 });
  const path = join(dir, 'policy');
  // What a killed daemon leaves behind: a socket file nobody listens on.
  const bound = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  assert.is(bound.signal, 'SIGKILL');
  assert.ok(statSync(path).isSocket());
  await listenUnix(echo(), path);
  assert.is(await connectAs(path, 0, 0), 'hello', 'the new socket answers');
  // A live socket (a second cidlock) is refused.
  try {
    await listenUnix(createServer(), path);
    assert.unreachable('a live socket was taken over');
  } catch (err) {
    assert.match((err as Error).message, `${path}: another process is listening`);
  }
  // A regular file is never removed.
  const file = join(dir, 'notasocket');
  writeFileSync(file, 'data');
  try {
    await listenUnix(createServer(), file);
    assert.unreachable('a regular file was replaced');
  } catch (err) {
    assert.match((err as Error).message, `${file}: exists and is not a socket`);
  }
});

test('a missing parent directory is a clear error', async () => {
  const path = join(openParent(), 'no', 'such', 'policy');
  try {
    await listenUnix(createServer(), path);
    assert.unreachable('listened');
  } catch (err) {
    assert.match((err as Error).message, 'does not exist');
  }
});

test.run();
