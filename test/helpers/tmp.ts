import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseRules } from '../../src/core/rules/load.js';
import { formatRulesIssue, type Rules } from '../../src/core/rules/types.js';

const made: string[] = [];
process.on('exit', () => {
  for (const d of made) rmSync(d, { recursive: true, force: true });
});

/** A fresh directory removed when the test process exits. */
export function tempDir(prefix = 'cidlock-test-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
}

/** Parses rules text that is known to be valid; state_dir defaults to a fresh temp folder. */
export function rulesFrom(yaml: string, dir = tempDir()): Rules {
  const file = join(dir, 'cidlock.yaml');
  writeFileSync(file, yaml);
  const r = parseRules(yaml, file);
  if (!r.ok) throw new Error(r.errors.map(formatRulesIssue).join('\n'));
  return r.rules;
}
