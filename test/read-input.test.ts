// `cidlock devices import -` and `cidlock test --dovecot-json -` read standard input synchronously.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { readInput } from '../src/cli/context.js';
import { repoRoot } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

const CONTEXT = pathToFileURL(join(repoRoot, 'dist', 'src', 'cli', 'context.js')).href;

/** readInput('-') in a child whose stdin is a pipe from this process, written in pieces. */
function readInChild(pieces: Array<{ afterMs: number; data: string }>): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', `const { readInput } = await import(${JSON.stringify(CONTEXT)}); process.stdout.write(JSON.stringify(readInput('-')));`], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  let at = 0;
  for (const p of pieces) {
    at += p.afterMs;
    setTimeout(() => child.stdin!.write(p.data), at);
  }
  setTimeout(() => child.stdin!.end(), at + 50);
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, out, err })));
}

test('readInput("-") waits for a pipe that is empty at first (Node 18 threw EAGAIN) and reads it to the end', async () => {
  const r = await readInChild([{ afterMs: 300, data: 'alice@example.com UUID a1\n' }, { afterMs: 100, data: 'bob@example.com UUID b1\n' }]);
  assert.is(r.code, 0, r.err);
  assert.is(JSON.parse(r.out), 'alice@example.com UUID a1\nbob@example.com UUID b1\n');
});

test('readInput("-") of an empty, closed pipe is ""; more than 64 KiB arrives whole', async () => {
  const empty = await readInChild([]);
  assert.is(empty.code, 0, empty.err);
  assert.is(JSON.parse(empty.out), '');
  const big = 'x'.repeat(200 * 1024) + '\n';
  const r = await readInChild([{ afterMs: 50, data: big.slice(0, 70_000) }, { afterMs: 50, data: big.slice(70_000) }]);
  assert.is(r.code, 0, r.err);
  assert.is((JSON.parse(r.out) as string).length, big.length);
});

test('readInput reads a named file as before', () => {
  const f = join(tempDir(), 'in.txt');
  writeFileSync(f, 'carol@example.com UUID c1\n');
  assert.is(readInput(f), 'carol@example.com UUID c1\n');
});

test.run();
