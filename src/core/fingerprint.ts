import { createHash, X509Certificate } from 'node:crypto';

const isHexCode = (c: number) => (c >= 48 && c <= 57) || ((c | 0x20) >= 97 && (c | 0x20) <= 102);

/**
 * A SHA-256 fingerprint in any common spelling (Postfix's "28:FC:...", openssl's, bare hex, any
 * case) as 64 lowercase hex digits; null for anything else, including SHA-1 or MD5 lengths, so a
 * fingerprint made with the wrong digest is refused rather than never matching.
 */
export function normalizeFingerprint(text: string): string | null {
  // Most Postfix requests carry no certificate: answer those at once.
  if (text.length < 64) return null;
  const t = text.trim();
  // On every authenticated Postfix request: a character loop, not regular expressions.
  if (t.length === 64) {
    for (let i = 0; i < 64; i++) if (!isHexCode(t.charCodeAt(i))) return null;
    return t.toLowerCase();
  }
  if (t.length === 95) {
    for (let i = 0; i < 95; i++) {
      const c = t.charCodeAt(i);
      if (i % 3 === 2 ? c !== 58 : !isHexCode(c)) return null;
    }
    return t.replaceAll(':', '').toLowerCase();
  }
  return null;
}

/** Display form as Postfix prints it: uppercase hex pairs joined by ':'. Throws on a non-SHA-256 input. */
export function displayFingerprint(hex64: string): string {
  const hex = normalizeFingerprint(hex64);
  if (hex === null) throw new TypeError('not a SHA-256 fingerprint');
  return hex.toUpperCase().replace(/(..)(?!$)/g, '$1:');
}

export interface CertFingerprints { pubkey: string; cert: string; subject: string; notAfter: string }

// Only the plain label: "TRUSTED CERTIFICATE" carries openssl trust data after the DER, and
// "CERTIFICATE REQUEST" is not a certificate.
const PEM = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Fingerprints exactly as Postfix computes them: SHA-256 of the certificate DER and of the
 * SubjectPublicKeyInfo DER. Takes the first CERTIFICATE block, so a key before it or a chain
 * after it does not matter. notAfter is ISO 8601 (UTC).
 */
export function certFingerprints(pem: string): CertFingerprints {
  const block = PEM.exec(pem);
  if (block === null) throw new Error('no PEM certificate found in the file');
  // Buffer.from(…, 'base64') silently skips bad characters; a damaged file must fail loudly instead.
  const b64 = block[1]!.replace(/\s+/g, '');
  if (b64 === '' || !BASE64.test(b64)) throw new Error('not a valid X.509 certificate: the PEM body is not valid base64');
  const raw = Buffer.from(b64, 'base64');
  const outer = readTlv(raw, 0);
  if (outer === null || outer.tag !== 0x30 || outer.end !== raw.length) {
    throw new Error('not a valid X.509 certificate: the DER data is truncated or damaged');
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(raw);
  } catch {
    // Node tries PEM before DER and reports the PEM failure ("no start line"), which misleads.
    throw new Error('not a valid X.509 certificate: the DER data does not parse as a certificate');
  }
  const der = cert.raw;
  const expiry = new Date(cert.validTo);
  return {
    pubkey: sha256hex(spkiOf(der)),
    cert: sha256hex(der),
    subject: cert.subject.replace(/\n/g, ', '),
    notAfter: Number.isNaN(expiry.getTime()) ? cert.validTo : expiry.toISOString(),
  };
}

function sha256hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * The SubjectPublicKeyInfo bytes exactly as they appear in the certificate. Postfix hashes
 * i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert)), i.e. these bytes; re-exporting Node's KeyObject
 * would re-encode the key and throws for algorithms Node cannot load.
 */
function spkiOf(der: Buffer): Buffer {
  const fail = (): never => {
    throw new Error('not a valid X.509 certificate: cannot locate the public key');
  };
  const certificate = readTlv(der, 0) ?? fail();
  const tbs = readTlv(der, certificate.body) ?? fail();
  if (certificate.tag !== 0x30 || tbs.tag !== 0x30) fail();
  let at = tbs.body;
  let el = readTlv(der, at, tbs.end) ?? fail();
  if (el.tag === 0xa0) el = readTlv(der, (at = el.end), tbs.end) ?? fail(); // explicit version
  // serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo.
  for (let i = 0; i < 5; i++) el = readTlv(der, (at = el.end), tbs.end) ?? fail();
  if (el.tag !== 0x30) fail();
  return der.subarray(at, el.end);
}

/** One DER element at `at`: its tag, where its content starts and where it ends; null if it overruns `limit`. */
function readTlv(buf: Buffer, at: number, limit = buf.length): { tag: number; body: number; end: number } | null {
  if (at + 2 > limit) return null;
  const tag = buf[at]!;
  let len = buf[at + 1]!;
  let body = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    // DER has no indefinite length, and a certificate never needs more than 4 length bytes.
    if (n === 0 || n > 4 || body + n > limit) return null;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[body + i]!;
    body += n;
  }
  const end = body + len;
  return end > limit ? null : { tag, body, end };
}
