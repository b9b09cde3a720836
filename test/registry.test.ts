import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileStore } from '../src/core/registry/file-store.js';
import { parseImport } from '../src/core/registry/import.js';
import { openRegistry } from '../src/core/registry/registry.js';
import { RegistryError } from '../src/core/registry/types.js';
import { tempDir } from './helpers/tmp.js';

const LAPTOP = { type: 'UUID', token: '23bf83be-aad7-46aa-9e0f-39191ccf402f' };
const PHONE = { type: 'TBIRD-UUID', token: 'phone-token-1' };
const registryModule = fileURLToPath(new URL('../src/core/registry/registry.js', import.meta.url));
const storeModule = fileURLToPath(new URL('../src/core/registry/file-store.js', import.meta.url));

const open = (dir: string, create = true) => openRegistry(fileStore(dir), { create });

test('a CID is stored as HMAC-SHA256 under a 0600 secret, never raw', () => {
  const dir = join(tempDir(), 'state');
  const reg = open(dir);
  const r = reg.add('alice@example.com', { kind: 'cid', cid: LAPTOP, label: 'laptop' }, 'admin');
  assert.is(r.status, 'added');
  const secretHex = readFileSync(join(dir, 'secret'), 'utf8').trim();
  assert.match(secretHex, /^[0-9a-f]{64}$/);
  assert.is(statSync(join(dir, 'secret')).mode & 0o777, 0o600);
  assert.is(statSync(join(dir, 'registry.journal')).mode & 0o777, 0o600);
  assert.is(statSync(dir).mode & 0o777, 0o700);
  const expected = createHmac('sha256', Buffer.from(secretHex, 'hex')).update(`UUID ${LAPTOP.token}`).digest('hex');
  if (r.status !== 'added') return;
  assert.is(r.device.hash, expected);
  assert.is(r.device.id, expected.slice(0, 12));
  const stored = readFileSync(join(dir, 'registry.journal'), 'utf8');
  assert.not.ok(stored.includes(LAPTOP.token), 'raw token in the registry file');
  assert.ok(stored.includes(expected));
});

test('lookups find registered CIDs and certificates per user, after a reopen', () => {
  const dir = tempDir();
  const fp = 'ab'.repeat(32);
  const reg = open(dir);
  reg.add('alice@example.com', { kind: 'cid', cid: LAPTOP }, 'admin');
  reg.add('alice@example.com', { kind: 'cert', fingerprint: fp }, 'admin');
  const again = open(dir, false);
  assert.ok(again.findCid('alice@example.com', LAPTOP));
  assert.not.ok(again.findCid('alice@example.com', PHONE));
  assert.not.ok(again.findCid('bob@example.com', LAPTOP));
  assert.is(again.findCert('alice@example.com', ['cd'.repeat(32), fp])!.kind, 'cert');
  assert.equal(again.size(), { users: 1, devices: 2 });
});

test('lookups return plain data; listings carry the date and count the devices', () => {
  const dir = tempDir();
  const reg = open(dir);
  const at = new Date('2026-03-04T05:06:07.000Z');
  reg.add('alice@example.com', { kind: 'cid', cid: LAPTOP, label: 'laptop' }, 'admin', { now: at });
  const hit = reg.findCid('alice@example.com', LAPTOP)!;
  // An accessor on a per-login object made V8 promote every lookup to the old generation.
  for (const [key, d] of Object.entries(Object.getOwnPropertyDescriptors(hit))) assert.ok('value' in d, `${key} is an accessor`);
  assert.is(hit.label, 'laptop');
  assert.is(reg.devices('alice@example.com')[0]!.added, at.toISOString());
  assert.is(reg.deviceCount('alice@example.com'), 1);
  assert.is(reg.deviceCount('nobody@example.com'), 0);
});

test('a read-only open creates nothing and matches nothing before a secret exists', () => {
  const dir = join(tempDir(), 'state');
  const reg = open(dir, false);
  assert.is(reg.cidHash(LAPTOP), null);
  assert.not.ok(reg.findCid('a@b.c', LAPTOP));
  assert.not.ok(existsSync(dir));
  assert.throws(() => reg.add('a@b.c', { kind: 'cid', cid: LAPTOP }, 'admin'), /read-only/);
});

test('adding an existing device changes nothing; max_devices is enforced for learning', () => {
  const dir = tempDir();
  const reg = open(dir);
  assert.is(reg.add('a@b.c', { kind: 'cid', cid: LAPTOP }, 'admin').status, 'added');
  const before = readFileSync(join(dir, 'registry.journal'), 'utf8');
  assert.is(reg.add('a@b.c', { kind: 'cid', cid: LAPTOP, label: 'other' }, 'learn').status, 'exists');
  assert.is(readFileSync(join(dir, 'registry.journal'), 'utf8'), before);
  assert.is(reg.add('a@b.c', { kind: 'cid', cid: PHONE }, 'learn', { maxDevices: 1 }).status, 'full');
  assert.is(reg.devices('a@b.c').length, 1);
});

test('remove by ID prefix or label; an ambiguous prefix removes nothing', () => {
  const reg = open(tempDir());
  reg.add('a@b.c', { kind: 'cert', fingerprint: `abcdef${'0'.repeat(58)}`, label: 'one' }, 'admin');
  reg.add('a@b.c', { kind: 'cert', fingerprint: `abcdef${'1'.repeat(58)}`, label: 'two' }, 'admin');
  reg.add('a@b.c', { kind: 'cid', cid: LAPTOP, label: 'two' }, 'admin');
  assert.throws(() => reg.remove('a@b.c', { id: 'abcdef' }), (e: unknown) => e instanceof RegistryError && /ambiguous/.test(e.message));
  assert.is(reg.devices('a@b.c').length, 3);
  assert.is(reg.remove('a@b.c', { id: `abcdef${'0'.repeat(6)}` }).length, 1);
  assert.is(reg.remove('a@b.c', { label: 'two' }).length, 2);
  assert.is(reg.remove('a@b.c', { label: 'two' }).length, 0);
  assert.is(reg.devices('a@b.c').length, 0);
});

test('per-user mode is stored, cleared with null, and seen by another process after refresh', () => {
  const dir = tempDir();
  const a = open(dir);
  const b = open(dir, false);
  a.setMode('bob@example.com', 'enforce');
  assert.equal(b.settings('bob@example.com'), {});
  assert.is(b.refresh(), true);
  assert.equal(b.settings('bob@example.com'), { mode: 'enforce' });
  assert.is(b.refresh(), false);
  a.setMode('bob@example.com', null);
  b.refresh();
  assert.equal(b.settings('bob@example.com'), {});
});

test('a damaged snapshot or journal entry is refused, never overwritten', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'registry.json'), '{"format":"cidlock-registry","version":2}\n{"u":"a@b.c","d":[["ab');
  assert.throws(() => open(dir), (e: unknown) => e instanceof RegistryError && /damaged/.test(e.message));
  writeFileSync(join(dir, 'registry.json'), '{"format":"cidlock-registry","version":2}\n{"u":"a@b.c","d":[["zz"]]}\n');
  assert.throws(() => open(dir), (e: unknown) => e instanceof RegistryError && /registry\.json: line 2/.test(e.message));
  writeFileSync(join(dir, 'registry.json'), '{"format":"cidlock-registry","version":7}\n');
  assert.throws(() => open(dir), /version 7 is not supported/);
  writeFileSync(join(dir, 'registry.json'), '{"format":"cidlock-registry","version":2}\n');
  const reg = open(dir);
  writeFileSync(join(dir, 'registry.json'), 'garbage');
  assert.throws(() => reg.add('a@b.c', { kind: 'cid', cid: LAPTOP }, 'admin'), (e: unknown) => e instanceof RegistryError);
  assert.is(readFileSync(join(dir, 'registry.json'), 'utf8'), 'garbage');
  rmSync(join(dir, 'registry.json'));
  writeFileSync(join(dir, 'registry.journal'), '{"op":"explode","u":"a@b.c"}\n');
  assert.throws(() => open(dir), /unknown operation "explode"/);
});

test('a journal entry torn by a crash is ignored, then cut off by the next write', () => {
  const dir = tempDir();
  const reg = open(dir);
  reg.add('a@b.c', { kind: 'cid', cid: LAPTOP }, 'admin');
  const whole = readFileSync(join(dir, 'registry.journal'), 'utf8');
  writeFileSync(join(dir, 'registry.journal'), `${whole}{"op":"add","u":"a@b.c","d":["ab`);
  const again = open(dir);
  assert.equal(again.size(), { users: 1, devices: 1 });
  again.add('a@b.c', { kind: 'cid', cid: PHONE }, 'admin');
  const lines = readFileSync(join(dir, 'registry.journal'), 'utf8').split('\n');
  assert.is(lines.length, 3, 'two entries and the final newline');
  assert.equal(open(dir, false).size(), { users: 1, devices: 2 });
});

test('a large journal is folded into a new snapshot, and other processes follow the change', () => {
  const dir = tempDir();
  const writer = open(dir);
  const reader = open(dir, false);
  const items = Array.from({ length: 120_000 }, (_, i) => ({ user: `u${i % 5000}@b.c`, input: { kind: 'cert' as const, fingerprint: i.toString(16).padStart(64, '0'), label: 'x'.repeat(40) } }));
  writer.addMany(items.slice(0, 60_000));
  writer.addMany(items.slice(60_000));
  assert.ok(statSync(join(dir, 'registry.json')).size > 1_000_000, 'no snapshot was written');
  assert.ok(statSync(join(dir, 'registry.journal')).size < 1_000_000, 'the journal was not emptied');
  assert.is(reader.refresh(), true);
  assert.equal(reader.size(), { users: 5000, devices: 120_000 });
  assert.equal(open(dir, false).size(), { users: 5000, devices: 120_000 });
});

test('a corrupted secret is refused rather than replaced (every stored CID depends on it)', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'secret'), 'short\n');
  assert.throws(() => open(dir), /refusing to replace it/);
});

test('writes leave no temp files and a lock left by a killed process is taken over', () => {
  const dir = tempDir();
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
  writeFileSync(join(dir, 'registry.lock'), dead);
  const reg = open(dir);
  assert.is(reg.add('a@b.c', { kind: 'cid', cid: LAPTOP }, 'admin').status, 'added');
  assert.equal(readdirSync(dir).sort(), ['registry.journal', 'secret']);
});

test('a lock held by a live process is waited for, not stolen', async () => {
  const dir = tempDir();
  const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
  try {
    writeFileSync(join(dir, 'registry.lock'), String(holder.pid));
    const reg = open(dir);
    // Release the lock from another process shortly after; add() must block until then.
    const child = spawn(process.execPath, ['-e', `setTimeout(() => require('fs').unlinkSync(${JSON.stringify(join(dir, 'registry.lock'))}), 300)`]);
    const started = Date.now();
    assert.is(reg.add('a@b.c', { kind: 'cid', cid: LAPTOP }, 'admin').status, 'added');
    assert.ok(Date.now() - started >= 250, 'add() did not wait for the lock');
    await new Promise((r) => child.on('exit', r));
  } finally {
    holder.kill('SIGKILL');
  }
});

function childAdder(dir: string, user: string, n: number, prefix: string): string {
  return `
    import { openRegistry } from ${JSON.stringify(registryModule)};
    import { fileStore } from ${JSON.stringify(storeModule)};
    const reg = openRegistry(fileStore(${JSON.stringify(dir)}), { create: true });
    for (let i = 0; i < ${n}; i++) {
      reg.add(${JSON.stringify(user)}, { kind: 'cid', cid: { type: 'UUID', token: ${JSON.stringify(prefix)} + i } }, 'admin');
      process.stdout.write('ok ' + i + '\\n');
    }`;
}

function run(code: string): Promise<number> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'ignore', 'inherit'] });
    p.on('exit', (c) => resolve(c ?? -1));
  });
}

test('concurrent writers in separate processes never lose a device', async () => {
  const dir = tempDir();
  const codes = await Promise.all([0, 1, 2, 3].map((k) => run(childAdder(dir, 'a@b.c', 15, `p${k}-`))));
  assert.equal(codes, [0, 0, 0, 0]);
  const reg = open(dir, false);
  assert.is(reg.devices('a@b.c').length, 60);
  for (let k = 0; k < 4; k++) for (let i = 0; i < 15; i++) assert.ok(reg.findCid('a@b.c', { type: 'UUID', token: `p${k}-${i}` }), `p${k}-${i}`);
});

test('kill -9 during registrations: the registry always loads and every acknowledged device is there', async () => {
  const dir = tempDir();
  for (let cycle = 0; cycle < 5; cycle++) {
    const acked: string[] = [];
    await new Promise<void>((resolve) => {
      const p = spawn(process.execPath, ['--input-type=module', '-e', childAdder(dir, 'k@b.c', 10_000, `c${cycle}-`)], { stdio: ['ignore', 'pipe', 'inherit'] });
      let buf = '';
      p.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        const lines = buf.split('\n');
        buf = lines.pop()!;
        for (const l of lines) acked.push(`c${cycle}-${l.slice(3)}`);
        if (acked.length >= 5 + cycle * 7) p.kill('SIGKILL');
      });
      p.on('exit', () => resolve());
    });
    const reg = open(dir, false);
    for (const token of acked) assert.ok(reg.findCid('k@b.c', { type: 'UUID', token }), `lost acknowledged ${token} in cycle ${cycle}`);
  }
});

test('import: one device per line, all-or-nothing with line numbers', () => {
  const ok = parseImport('# devices\nAlice@Example.com UUID 23bf laptop at home\n\nbob@example.com --cert 28:FC:DF:A5:4B:CC:0A:58:DD:FC:1B:CD:14:42:BB:99:42:10:5A:5F:C8:36:79:0F:2C:9C:1F:0C:62:FC:2F:E4 phone\n', 'f');
  assert.ok(ok.ok);
  if (!ok.ok) return;
  assert.is(ok.items.length, 2);
  assert.is(ok.items[0]!.user, 'alice@example.com');
  assert.equal(ok.items[0]!.input, { kind: 'cid', cid: { type: 'UUID', token: '23bf' }, label: 'laptop at home' });
  assert.equal(ok.items[1]!.input, { kind: 'cert', fingerprint: '28fcdfa54bcc0a58ddfc1bcd1442bb9942105a5fc836790f2c9c1f0c62fc2fe4', label: 'phone' });
  const bad = parseImport('a@b.c UUID ok\na@b.c\na@b.c --cert 12:34\na@b.c TOOLONGTYPE-XXXXXXXXXX tok\n', 'list.txt');
  assert.is(bad.ok, false);
  if (bad.ok) return;
  assert.equal(bad.errors.map((e) => e.split(':').slice(0, 2).join(':')), ['list.txt:2', 'list.txt:3', 'list.txt:4']);
});

test('addMany registers a bulk list in one write and counts existing devices', () => {
  const dir = tempDir();
  const reg = open(dir);
  reg.add('a@b.c', { kind: 'cid', cid: LAPTOP }, 'admin');
  const r = reg.addMany([
    { user: 'a@b.c', input: { kind: 'cid', cid: LAPTOP } },
    { user: 'a@b.c', input: { kind: 'cid', cid: PHONE } },
    { user: 'z@b.c', input: { kind: 'cid', cid: PHONE } },
  ]);
  assert.equal(r, { added: 2, existing: 1 });
  assert.equal(open(dir, false).size(), { users: 2, devices: 3 });
});

test.run();
