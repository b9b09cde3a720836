// npm run bench: every benchmark in one run, each ratio against its baseline measured in the same
// run on the same machine. Results go to stdout and bench/results.json; BENCHMARKS.md explains them.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchDovecot } from './dovecot.js';
import { distBench, machine } from './lib.js';
import { benchPostfix } from './postfix.js';
import { benchScale } from './scale.js';

const only = process.argv[2];
const results: Record<string, unknown> = { date: new Date().toISOString(), machine: machine() };
const run = async (name: string, f: () => Promise<unknown>) => {
  if (only !== undefined && only !== name) return;
  process.stderr.write(`bench ${name}...\n`);
  results[name] = await f();
  process.stdout.write(`${JSON.stringify({ [name]: results[name] })}\n`);
};
await run('dovecot', benchDovecot);
await run('postfix', benchPostfix);
await run('scale', benchScale);
writeFileSync(join(distBench, '..', '..', 'bench', 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
