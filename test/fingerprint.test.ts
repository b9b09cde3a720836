import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { certFingerprints, displayFingerprint, normalizeFingerprint } from '../src/core/fingerprint.js';
import { parseAttributeBlocks } from '../src/postfix-policy/attributes.js';
import { fixturePath, readFixture } from './helpers/paths.js';

// Computed with the openssl command line (OpenSSL 3.0), an independent implementation, when the
// fixtures were made:
//   openssl x509 -noout -fingerprint -sha256 -in X.pem                                          => cert
//   openssl x509 -pubkey -noout -in X.pem | openssl pkey -pubin -outform DER | openssl dgst -sha256 => pubkey
// alice-laptop: self-signed RSA 2048; alice-phone: self-signed EC P-256; legacy-v1: a version 1
// certificate (no extensions, no version field in the DER) with an RSA 2048 key.
const EXPECTED = {
  'alice-laptop': {
    cert: '1948807a1ef7f87a0807ed6f30e732bf970966983d5023255e62bebc31cdcb54',
    pubkey: 'cb23a3591f6a342542e62eb8693c8692bb96db61b3b577398dc3d8eb2cf9bafa',
    subject: 'CN=alice-laptop',
    notAfter: '2126-11-04T15:56:45.000Z',
  },
  'alice-phone': {
    cert: 'b6b9383d9ce76beecaa3642aa0cf07384afe6b57ed17f2c83819c694e072bc54',
    pubkey: 'b62ae5e1e48df693bec1a1ad61ea4a6fe305f0ed01831ffcdffa4842914cdb03',
    subject: 'CN=alice-phone',
    notAfter: '2126-11-04T15:56:45.000Z',
  },
  'legacy-v1': {
    cert: '1abb5bd8afcb7ccf2b401bf871c43807e7517996a6c97f23e4a866f7d0b7bb94',
    pubkey: 'a6b368324192dd0c425bec8f46e7642b11605ded938146b29d642a2627edf7ac',
    subject: 'CN=legacy-v1',
    notAfter: '2126-11-04T17:33:39.000Z',
  },
} as const;
type Fixture = keyof typeof EXPECTED;
const FIXTURES = Object.keys(EXPECTED) as Fixture[];

const HEX = '28fcdfa54bcc0a58ddfc1bcd1442bb9942105a5fc836790f2c9c1f0c62fc2fe4';
const POSTFIX = '28:FC:DF:A5:4B:CC:0A:58:DD:FC:1B:CD:14:42:BB:99:42:10:5A:5F:C8:36:79:0F:2C:9C:1F:0C:62:FC:2F:E4';

const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

test('certificate and public-key fingerprints match the values openssl computed (RSA, EC, v1)', () => {
  for (const name of FIXTURES) {
    assert.equal(certFingerprints(readFixture('certs', `${name}.pem`)), EXPECTED[name], name);
  }
});

test('the public-key fingerprint is that of the matching private key, the certificate one that of Node', () => {
  for (const name of FIXTURES) {
    const fp = certFingerprints(readFixture('certs', `${name}.pem`));
    const spki = createPublicKey(createPrivateKey(readFixture('certs', `${name}.key.pem`))).export({ type: 'spki', format: 'der' });
    assert.is(fp.pubkey, sha256(spki), name);
    assert.is(fp.cert, normalizeFingerprint(new X509Certificate(readFixture('certs', `${name}.pem`)).fingerprint256), name);
  }
});

const openssl = (args: string[], input?: string | Buffer): Buffer => {
  const r = spawnSync('openssl', args, input === undefined ? {} : { input });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.stderr.toString()}`);
  return r.stdout;
};
const digestOf = (out: Buffer): string | null => normalizeFingerprint(/([0-9a-f]{64})\s*$/i.exec(out.toString())?.[1] ?? '');

test('fingerprints agree with the openssl on this machine, when there is one', () => {
  const probe = spawnSync('openssl', ['version']);
  if (probe.error !== undefined || probe.status !== 0) return; // the constants above still test the computation
  for (const name of FIXTURES) {
    const file = fixturePath('certs', `${name}.pem`);
    const fp = certFingerprints(readFixture('certs', `${name}.pem`));
    const certOut = openssl(['x509', '-noout', '-fingerprint', '-sha256', '-in', file]).toString();
    assert.is(normalizeFingerprint(certOut.slice(certOut.indexOf('=') + 1)), fp.cert, name);
    const pubPem = openssl(['x509', '-pubkey', '-noout', '-in', file]);
    const spki = openssl(['pkey', '-pubin', '-outform', 'DER'], pubPem);
    assert.is(digestOf(openssl(['dgst', '-sha256'], spki)), fp.pubkey, name);
  }
});

test('normalizeFingerprint: the capture\'s Postfix values, in every spelling', () => {
  const rcpt = parseAttributeBlocks(readFixture('captures', 'postfix-3.7-policy-tls-client-cert.txt'))[3]!;
  assert.ok(rcpt.ok);
  if (!rcpt.ok) return;
  const pubkey = rcpt.attrs.get('ccert_pubkey_fingerprint')!;
  const cert = rcpt.attrs.get('ccert_fingerprint')!;
  assert.is(pubkey, POSTFIX);
  assert.is(normalizeFingerprint(pubkey), HEX);
  assert.is(normalizeFingerprint(cert), 'c6f1c99014d9435f4fc2afb5918e4c2e8477cf094e5041a597655b47644594f0');
  for (const spelling of [POSTFIX, POSTFIX.toLowerCase(), HEX, HEX.toUpperCase(), `  ${POSTFIX}\n`, `\t${HEX}\r\n`, POSTFIX.replace(/:/g, ''), HEX.slice(0, 32).toUpperCase() + HEX.slice(32)]) {
    assert.is(normalizeFingerprint(spelling), HEX, JSON.stringify(spelling));
  }
  assert.is(displayFingerprint(HEX), POSTFIX);
  assert.is(displayFingerprint(POSTFIX.toLowerCase()), POSTFIX);
  assert.is(displayFingerprint(normalizeFingerprint(cert)!), cert);
});

test('normalizeFingerprint: anything but 32 bytes of hex is null', () => {
  const cases: Record<string, string> = {
    'SHA-1 with colons': 'AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01',
    'SHA-1 bare': 'abcdef0123456789abcdef0123456789abcdef01',
    'MD5 with colons': 'AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89',
    'SHA-512': 'ab'.repeat(64),
    'odd length': `${HEX}0`,
    'one short': HEX.slice(0, 63),
    'misplaced colon': POSTFIX.replace('28:FC', '2:8FC'),
    'trailing colon': `${POSTFIX}:`,
    'leading colon': `:${POSTFIX}`,
    'double colon': POSTFIX.replace('28:FC', '28::FC'),
    'mixed colons': `${HEX.slice(0, 2)}:${HEX.slice(2)}`,
    'spaces between pairs': POSTFIX.replace(/:/g, ' '),
    'dashes between pairs': POSTFIX.replace(/:/g, '-'),
    'g in bare hex': `${HEX.slice(0, 63)}g`,
    'G in pairs': `G${POSTFIX.slice(1)}`,
    '@ and backquote (a-f with the case bit folded)': `@\`${HEX.slice(2)}`,
    'slash and colon in bare hex (0-9 neighbours)': `/:${HEX.slice(2)}`,
    'non-hex': 'zz'.repeat(32),
    'with a label': `SHA256 Fingerprint=${POSTFIX}`,
    'inner space': `${HEX.slice(0, 30)} ${HEX.slice(30)}`,
    empty: '',
    blank: '   ',
  };
  for (const [what, text] of Object.entries(cases)) assert.is(normalizeFingerprint(text), null, what);
  assert.throws(() => displayFingerprint('abc'), /not a SHA-256 fingerprint/);
});

test('a key or other text before the certificate, and a chain after it, are fine; the first certificate wins', () => {
  const laptop = readFixture('certs', 'alice-laptop.pem');
  const phone = readFixture('certs', 'alice-phone.pem');
  const key = readFixture('certs', 'alice-laptop.key.pem');
  assert.is(certFingerprints(`${key}${laptop}`).pubkey, EXPECTED['alice-laptop'].pubkey);
  assert.is(certFingerprints(`${key}\n${laptop}\n${phone}`).cert, EXPECTED['alice-laptop'].cert);
  assert.is(certFingerprints(`${phone}${laptop}`).cert, EXPECTED['alice-phone'].cert);
  assert.is(certFingerprints(`Bag Attributes\n    friendlyName: alice\nsubject=CN = alice-phone\n\n${phone}`).pubkey, EXPECTED['alice-phone'].pubkey);
  assert.is(certFingerprints(phone.replace(/\n/g, '\r\n')).pubkey, EXPECTED['alice-phone'].pubkey, 'CRLF PEM');
});

test('no certificate in the text is a clear error', () => {
  for (const text of [readFixture('certs', 'alice-laptop.key.pem'), '', 'hello', '-----BEGIN CERTIFICATE-----\nMIIB\n']) {
    assert.throws(() => certFingerprints(text), (e: Error) => e.message === 'no PEM certificate found in the file');
  }
  const csrLike = readFixture('certs', 'alice-phone.pem').replace(/CERTIFICATE/g, 'CERTIFICATE REQUEST');
  assert.throws(() => certFingerprints(csrLike), /no PEM certificate found/);
});

test('a corrupted certificate is a clear error', () => {
  const phone = readFixture('certs', 'alice-phone.pem');
  const lines = phone.split('\n');
  const BASE64 = 'not a valid X.509 certificate: the PEM body is not valid base64';
  const DAMAGED = 'not a valid X.509 certificate: the DER data is truncated or damaged';
  const invalid = (text: string, want: string, what: string): void => assert.throws(() => certFingerprints(text), (e: Error) => e.message === want, what);
  // Characters outside base64, which Buffer.from would silently skip.
  invalid(phone.replace(/\n([A-Za-z0-9+/]{4})/, '\n!!$1'), BASE64, 'bad characters');
  invalid(phone.replace(/\n[A-Za-z0-9+/]{20}/, '\n********************'), BASE64, 'bad characters replacing data');
  invalid(phone.replace(/=*\n-----END/, 'A\n-----END'), BASE64, 'bad padding');
  invalid('-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n', BASE64, 'empty body');
  // Valid base64, but not (all of) a certificate.
  invalid([...lines.slice(0, 3), ...lines.slice(-2)].join('\n'), DAMAGED, 'truncated');
  invalid('-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n', DAMAGED, 'junk');
  invalid(phone.replace(/\n[A-Za-z0-9+/]{20}/, '\nAAAAAAAAAAAAAAAAAAAA'), DAMAGED, 'header overwritten');
  // A well-formed DER SEQUENCE that is not a certificate: SEQUENCE { INTEGER 0 }.
  invalid('-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n', 'not a valid X.509 certificate: the DER data does not parse as a certificate', 'not a certificate');
});

test.run();
