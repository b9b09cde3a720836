// A test certificate authority and server certificates it signs, for clients that check the
// server's name (Thunderbird): a self-signed certificate is not enough for them.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where test caches live: never in the checkout. CIDLOCK_TEST_CACHE overrides. */
export function testCacheRoot(): string {
  if (process.env.CIDLOCK_TEST_CACHE) return process.env.CIDLOCK_TEST_CACHE;
  return process.getuid?.() === 0 ? '/var/cache/cidlock-test' : join(tmpdir(), 'cidlock-test-cache');
}

export interface TestCa { dir: string; cert: string; key: string }

/**
 * The test CA, made once and kept in the cache: a client's trust store (Thunderbird's
 * policies.json in its cached install copy) can then point at a path that stays valid across
 * runs. Its key signs only the short-lived server certificates of the tests.
 */
export function testCa(): TestCa {
  const dir = join(testCacheRoot(), 'test-ca-v1');
  const ca = { dir, cert: join(dir, 'ca.pem'), key: join(dir, 'ca.key') };
  if (existsSync(ca.cert) && existsSync(ca.key)) return ca;
  mkdirSync(testCacheRoot(), { recursive: true, mode: 0o700 });
  const tmp = `${dir}.${process.pid}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { mode: 0o755 });
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', join(tmp, 'ca.key'), '-out', join(tmp, 'ca.pem'), '-days', '3650',
    '-subj', '/CN=cidlock test CA (not for production)',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ], { stdio: 'ignore' });
  chmodSync(join(tmp, 'ca.pem'), 0o644);
  try {
    renameSync(tmp, dir);
  } catch {
    rmSync(tmp, { recursive: true, force: true }); // another run made it first
  }
  return ca;
}

/**
 * A server certificate signed by the test CA, valid for `localhost` and 127.0.0.1 (Thunderbird
 * checks the name it connected to), readable by the servers' unprivileged users.
 */
export function serverCertFromCa(dir: string, name = 'server'): { cert: string; key: string } {
  const ca = testCa();
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.pem`);
  const ext = join(dir, `${name}.ext`);
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=localhost'], { stdio: 'ignore' });
  writeFileSync(ext, 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n');
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-CAserial', join(dir, `${name}.srl`), '-out', cert, '-days', '2', '-extfile', ext], { stdio: 'ignore' });
  chmodSync(key, 0o644);
  return { cert, key };
}
