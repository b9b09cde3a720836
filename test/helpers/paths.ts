import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { readFileSync } from 'node:fs';

// Tests run from dist/test/..., so resolve the repository root from this file's compiled location.
const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = join(here, '..', '..', '..');

export function fixturePath(...parts: string[]): string {
  return join(repoRoot, 'test', 'fixtures', ...parts);
}

export function readFixture(...parts: string[]): string {
  return readFileSync(fixturePath(...parts), 'utf8');
}

/** Captured Dovecot requests: one `{path, body, note?}` object per line. */
export function readDovecotCapture(name: string): Array<{ path: string; body: string; note?: string }> {
  return readFixture('captures', name)
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as { path: string; body: string; note?: string });
}
