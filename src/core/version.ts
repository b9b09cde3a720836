import { readFileSync } from 'node:fs';

/**
 * cidlock's version, from package.json: one place to bump. Read relative to this module, which
 * runs as dist/src/core/version.js, two folders below the package root that npm always ships.
 */
export const VERSION: string = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
})();
