// npm run bench: every benchmark in one run, each ratio against its baseline measured in the same
// run on the same machine. Results go to stdout and bench/results.json; BENCHMARKS.md explains them.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchClientid } from './clientid.js';
import { benchDovecot } from './dovecot.js';
import { distBench, machine } from './lib.js';
import { benchPostfix } from './postfix.js';
import { benchRedis } from './redis.js';
import { benchScale } from './scale.js';

const only = process.argv[2];
const file = join(distBench, '..', '..', 'bench', 'results.json');
// Running one part keeps the other parts' last results, so results.json always shows all of them.
const previous = only !== undefined && existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>) : {};
const results: Record<string, unknown> = { ...previous, date: new Date().toISOString(), machine: machine() };
const run = async (name: string, f: () => Promise<unknown>) => {
  if (only !== undefined && only !== name) return;
  process.stderr.write(`bench ${name}...\n`);
  results[name] = await f();
  process.stdout.write(`${JSON.stringify({ [name]: results[name] })}\n`);
};
await run('dovecot', benchDovecot);
await run('postfix', benchPostfix);
await run('scale', benchScale);
await run('clientid', benchClientid);
await run('redis', benchRedis);
writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
