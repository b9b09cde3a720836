import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { certFingerprints, displayFingerprint, normalizeFingerprint } from '../src/core/fingerprint.js';
import { fixturePath, readFixture } from './helpers/paths.js';

// Computed with the openssl command line, an independent implementation, when the fixtures were made:
//   openssl x509 -noout -fingerprint -sha256 -in X.pem
//   openssl x509 -pubkey -noout -in X.pem | openssl pkey -pubin -outform DER | openssl dgst -sha256
const EXPECTED = {
  'alice-laptop': { cert: '1948807a1ef7f87a0807ed6f30e732bf970966983d5023255e62bebc31cdcb54', pubkey: 'cb23a3591f6a342542e62eb8693c8692bb96db61b3b577398dc3d8eb2cf9bafa' },
  'alice-phone': { cert: 'b6b9383d9ce76beecaa3642aa0cf07384afe6b57ed17f2c83819c694e072bc54', pubkey: 'b62ae5e1e48df693bec1a1ad61ea4a6fe305f0ed01831ffcdffa4842914cdb03' },
} as const;

test('certificate and public-key fingerprints match openssl (RSA and EC)', () => {
  for (const [name, want] of Object.entries(EXPECTED)) {
    const fp = certFingerprints(readFixture('certs', `${name}.pem`));
    assert.is(fp.cert, want.cert, name);
    assert.is(fp.pubkey, want.pubkey, name);
    assert.match(fp.subject, new RegExp(`CN=${name}`));
  }
});

test('fingerprints agree with the openssl on this machine, when there is one', () => {
  const probe = spawnSync('openssl', ['version']);
  if (probe.status !== 0) return; // the constants above still test the computation
  const pem = fixturePath('certs', 'alice-phone.pem');
  const out = spawnSync('openssl', ['x509', '-noout', '-fingerprint', '-sha256', '-in', pem], { encoding: 'utf8' }).stdout;
  assert.is(normalizeFingerprint(out.split('=')[1]!), certFingerprints(readFixture('certs', 'alice-phone.pem')).cert);
});

test('a key before the certificate and a chain after it are fine; the first certificate wins', () => {
  const laptop = readFixture('certs', 'alice-laptop.pem');
  const phone = readFixture('certs', 'alice-phone.pem');
  const key = readFixture('certs', 'alice-laptop.key.pem');
  assert.is(certFingerprints(`${key}\n${laptop}\n${phone}`).pubkey, EXPECTED['alice-laptop'].pubkey);
  assert.is(certFingerprints(`Subject: whatever\n${phone}${laptop}`).pubkey, EXPECTED['alice-phone'].pubkey);
});

test('no certificate, or a corrupted one, is a clear error', () => {
  assert.throws(() => certFingerprints(readFixture('certs', 'alice-laptop.key.pem')), /no PEM certificate found/);
  const broken = readFixture('certs', 'alice-laptop.pem').replace(/\n[A-Za-z0-9+/]{20}/, '\nAAAAAAAAAAAAAAAAAAAA');
  assert.throws(() => certFingerprints(broken), /not a valid X\.509 certificate/);
});

test('normalizeFingerprint accepts Postfix, openssl and bare spellings of SHA-256 only', () => {
  const postfix = '28:FC:DF:A5:4B:CC:0A:58:DD:FC:1B:CD:14:42:BB:99:42:10:5A:5F:C8:36:79:0F:2C:9C:1F:0C:62:FC:2F:E4';
  const hex = '28fcdfa54bcc0a58ddfc1bcd1442bb9942105a5fc836790f2c9c1f0c62fc2fe4';
  assert.is(normalizeFingerprint(postfix), hex);
  assert.is(normalizeFingerprint(` ${hex.toUpperCase()}\n`), hex);
  assert.is(normalizeFingerprint(postfix.toLowerCase()), hex);
  assert.is(normalizeFingerprint('AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01'), null, 'SHA-1');
  assert.is(normalizeFingerprint(postfix.replace('28:FC', '2:8FC')), null, 'misplaced colon');
  assert.is(normalizeFingerprint(`${hex}0`), null);
  assert.is(normalizeFingerprint('zz'.repeat(32)), null);
  assert.is(normalizeFingerprint(''), null);
  assert.is(displayFingerprint(hex), postfix);
});

test.run();
