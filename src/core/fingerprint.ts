import { createHash, X509Certificate } from 'node:crypto';

/**
 * A SHA-256 fingerprint in any common spelling (Postfix's "28:FC:...", openssl's, bare hex) as
 * 64 lowercase hex digits; null for anything else, including SHA-1 or MD5 lengths.
 */
export function normalizeFingerprint(text: string): string | null {
  const t = text.trim();
  if (t.length > 128) return null;
  const hex = /^[0-9a-f]{64}$/i.test(t) ? t : /^[0-9a-f]{2}(:[0-9a-f]{2}){31}$/i.test(t) ? t.replace(/:/g, '') : null;
  return hex === null ? null : hex.toLowerCase();
}

export function displayFingerprint(hex64: string): string {
  return hex64.toUpperCase().replace(/(..)(?!$)/g, '$1:');
}

export interface CertFingerprints { pubkey: string; cert: string; subject: string; notAfter: string }

const PEM = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/;

/** Fingerprints exactly as Postfix computes them: SHA-256 of the SPKI DER and of the certificate DER. */
export function certFingerprints(pem: string): CertFingerprints {
  const block = PEM.exec(pem);
  if (block === null) throw new Error('no PEM certificate found in the file');
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(block[0]);
  } catch (err) {
    throw new Error(`not a valid X.509 certificate: ${(err as Error).message}`);
  }
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  return {
    pubkey: createHash('sha256').update(spki).digest('hex'),
    cert: createHash('sha256').update(cert.raw).digest('hex'),
    subject: cert.subject.replace(/\n/g, ', '),
    notAfter: cert.validTo,
  };
}
