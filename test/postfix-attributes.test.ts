import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DEFAULT_LIMITS, parseAttributeBlock, parseAttributeBlocks, type BlockResult, type PolicyAttributes } from '../src/postfix-policy/attributes.js';
import { translatePostfix } from '../src/postfix-policy/translate.js';
import { readFixture } from './helpers/paths.js';

const CAPTURE = readFixture('captures', 'postfix-3.7-policy-tls-client-cert.txt');
const NAMES_37 = 'request protocol_state protocol_name client_address client_name client_port reverse_client_name server_address server_port helo_name sender recipient recipient_count queue_id instance size etrn_domain stress sasl_method sasl_username sasl_sender ccert_subject ccert_issuer ccert_fingerprint ccert_pubkey_fingerprint encryption_protocol encryption_cipher encryption_keysize policy_context'.split(' ');
const CERT_FP = 'C6:F1:C9:90:14:D9:43:5F:4F:C2:AF:B5:91:8E:4C:2E:84:77:CF:09:4E:50:41:A5:97:65:5B:47:64:45:94:F0';
const PUBKEY_FP = '28:FC:DF:A5:4B:CC:0A:58:DD:FC:1B:CD:14:42:BB:99:42:10:5A:5F:C8:36:79:0F:2C:9C:1F:0C:62:FC:2F:E4';

function attrsOf(r: BlockResult): PolicyAttributes {
  if (!r.ok) return assert.unreachable(`unexpected parse error: ${r.error}`) as never;
  return r.attrs;
}

function errorOf(r: BlockResult): string {
  if (r.ok) return assert.unreachable('expected a parse error') as never;
  return r.error;
}

test('the real Postfix 3.7 capture parses into four blocks carrying all 29 attributes', () => {
  const blocks = parseAttributeBlocks(CAPTURE).map(attrsOf);
  assert.is(blocks.length, 4);
  for (const a of blocks) {
    assert.equal([...a.keys()], NAMES_37);
    assert.is(a.get('request'), 'smtpd_access_policy');
  }
  const [connect, ehlo, starttls, rcpt] = blocks as [PolicyAttributes, PolicyAttributes, PolicyAttributes, PolicyAttributes];

  assert.is(connect.get('protocol_state'), 'CONNECT');
  assert.is(connect.get('client_address'), '127.0.0.1');
  assert.is(connect.get('client_port'), '37906');
  // Unavailable attributes are present but empty, or "0".
  assert.is(connect.get('helo_name'), '');
  assert.is(connect.get('ccert_fingerprint'), '');
  assert.is(connect.get('encryption_keysize'), '0');

  assert.is(ehlo.get('protocol_state'), 'EHLO');
  assert.is(ehlo.get('protocol_name'), 'SMTP');
  assert.is(ehlo.get('helo_name'), 'vm');

  assert.is(starttls.get('protocol_name'), 'ESMTP');
  assert.is(starttls.get('ccert_pubkey_fingerprint'), PUBKEY_FP);
  assert.is(starttls.get('ccert_fingerprint'), CERT_FP);
  assert.is(starttls.get('encryption_protocol'), 'TLSv1.3');
  assert.is(starttls.get('encryption_cipher'), 'TLS_AES_256_GCM_SHA384');
  assert.is(starttls.get('encryption_keysize'), '256');
  assert.is(starttls.get('sasl_username'), '');

  assert.is(rcpt.get('protocol_state'), 'RCPT');
  assert.is(rcpt.get('sasl_method'), 'PLAIN');
  assert.is(rcpt.get('sasl_username'), 'alice@example.com');
  assert.is(rcpt.get('sender'), 'alice@example.com');
  assert.is(rcpt.get('recipient'), 'bob@example.org');
  assert.is(rcpt.get('instance'), '4105.6b0adf16.35ef0.0');
  assert.is(rcpt.get('ccert_pubkey_fingerprint'), PUBKEY_FP);
});

test('blocks as the streaming server cuts them (up to and including the first "\\n" of "\\n\\n") parse alike', () => {
  const pieces = CAPTURE.split('\n\n').filter((p) => p !== '');
  assert.is(pieces.length, 4);
  const streamed = pieces.map((p) => attrsOf(parseAttributeBlock(`${p}\n`)));
  assert.equal(streamed, parseAttributeBlocks(CAPTURE).map(attrsOf));
  // The trailing "\n" is optional.
  assert.equal(attrsOf(parseAttributeBlock(pieces[3]!)), streamed[3]);
});

test('values are split at the first "=" only and kept verbatim', () => {
  const a = attrsOf(parseAttributeBlock('ccert_subject=CN=alice,O=Example=Org\npolicy_context==\nsender=\nhelo_name= spaced \n'));
  assert.is(a.get('ccert_subject'), 'CN=alice,O=Example=Org');
  assert.is(a.get('policy_context'), '=');
  assert.is(a.get('sender'), '');
  assert.is(a.get('helo_name'), ' spaced ');
});

test('duplicate names: the last one wins; names are case-insensitive and stored lowercase', () => {
  const a = attrsOf(parseAttributeBlock('sender=a\nrecipient=r\nsender=b\nSASL_USERNAME=Bob\nsasl_username=carol\nClient_Address=10.0.0.1\n'));
  assert.is(a.get('sender'), 'b');
  assert.is(a.get('sasl_username'), 'carol');
  assert.is(a.get('client_address'), '10.0.0.1');
  assert.is(a.has('Client_Address'), false);
  assert.equal([...a.keys()], ['sender', 'recipient', 'sasl_username', 'client_address']);
});

test('each malformed line is reported by number, with a short message', () => {
  const cases: Array<[string, string]> = [
    ['request=x\nno equals sign here\n', 'line 2: expected name=value'],
    ['request=x\n=value\n', 'line 2: empty attribute name'],
    ['bad-name=1\n', 'line 1: attribute name with characters outside [a-z0-9_]'],
    ['sasl username=alice\n', 'line 1: attribute name with characters outside [a-z0-9_]'],
    ['nämé=1\n', 'line 1: attribute name with characters outside [a-z0-9_]'],
    ['request=smtpd_access_policy\r\nsender=a\r\n', 'line 1: contains CR (Postfix ends lines with a bare LF)'],
    ['request=smtpd_access_policy\nsender=a\rb\n', 'line 2: contains CR (Postfix ends lines with a bare LF)'],
    ['request=a\0b\n', 'line 1: contains a NUL byte'],
    ['na\0me=1\n', 'line 1: contains a NUL byte'],
    ['request=a\n\nsender=b\n', 'line 2: empty line inside the request'],
    [`request=a\nsender=${'x'.repeat(9000)}\n`, 'line 2: longer than 8192 bytes'],
    [Array.from({ length: 101 }, (_, i) => `a${i}=1`).join('\n'), 'more than 100 attributes'],
  ];
  for (const [text, want] of cases) assert.is(errorOf(parseAttributeBlock(text)), want, JSON.stringify(text.slice(0, 40)));
});

test('errors never echo the offending content', () => {
  const secret = 'hunter2-SECRET';
  for (const text of [`password ${secret}\n`, `=${secret}\n`, `x-${secret}=1\n`, `sender=${secret}\r\n`, `sender=${secret}\0\n`, `sender=${secret.repeat(1000)}\n`]) {
    const error = errorOf(parseAttributeBlock(text));
    assert.not.ok(error.includes('hunter2'), error);
    assert.ok(error.length < 80, error);
  }
});

test('the line length limit is in bytes and applies to the whole "name=value" line', () => {
  const limits = { maxLineLength: 20, maxAttributes: 100 };
  assert.ok(parseAttributeBlock(`sender=${'x'.repeat(13)}\n`, limits).ok, 'exactly 20 bytes');
  assert.is(errorOf(parseAttributeBlock(`sender=${'x'.repeat(14)}\n`, limits)), 'line 1: longer than 20 bytes');
  // "é" is 2 bytes in UTF-8: 7 + 7 chars but 7 + 14 bytes.
  assert.is(errorOf(parseAttributeBlock(`sender=${'é'.repeat(7)}\n`, limits)), 'line 1: longer than 20 bytes');
  assert.ok(parseAttributeBlock(`sender=${'é'.repeat(6)}x\n`, limits).ok, '20 bytes, 14 chars');
  // The default limit, at the edge.
  assert.ok(parseAttributeBlock(`sender=${'x'.repeat(DEFAULT_LIMITS.maxLineLength - 7)}`).ok);
  assert.is(parseAttributeBlock(`sender=${'x'.repeat(DEFAULT_LIMITS.maxLineLength - 6)}`).ok, false);
});

test('the attribute count limit counts lines, duplicates included', () => {
  assert.equal(DEFAULT_LIMITS, { maxLineLength: 8192, maxAttributes: 100 });
  const lines = (n: number, name?: string): string => Array.from({ length: n }, (_, i) => `${name ?? `a${i}`}=1`).join('\n');
  assert.is(attrsOf(parseAttributeBlock(lines(100))).size, 100);
  assert.is(errorOf(parseAttributeBlock(lines(101))), 'more than 100 attributes');
  assert.is(errorOf(parseAttributeBlock(lines(101, 'sender'))), 'more than 100 attributes');
  const two = { maxLineLength: 8192, maxAttributes: 2 };
  assert.ok(parseAttributeBlock('a=1\nb=2\n', two).ok);
  assert.is(errorOf(parseAttributeBlock('a=1\nb=2\nc=3\n', two)), 'more than 2 attributes');
  // Postfix's 29 attributes fit the defaults with room to spare.
  assert.ok(parseAttributeBlocks(CAPTURE, { maxLineLength: 200, maxAttributes: 29 }).every((b) => b.ok));
});

test('an empty block parses to no attributes (the caller decides what a request without "request=" means)', () => {
  assert.is(attrsOf(parseAttributeBlock('')).size, 0);
  assert.is(attrsOf(parseAttributeBlock('\n')).size, 0);
});

test('captures: blank lines around and between blocks, and a missing final empty line, are tolerated', () => {
  const requests = (text: string): Array<string | undefined> => parseAttributeBlocks(text).map((b) => (b.ok ? b.attrs.get('request') : b.error));
  assert.equal(requests('\n\nrequest=a\nsender=x\n\n\n\nrequest=b\nsender=y'), ['a', 'b']);
  assert.equal(requests('request=a\n\nrequest=b\n\n'), ['a', 'b']);
  assert.equal(requests(' \n\t\nrequest=a\n  \nrequest=b\n\n \n'), ['a', 'b']);
  assert.equal(requests(`\n\n${CAPTURE}\n\n\n`), ['smtpd_access_policy', 'smtpd_access_policy', 'smtpd_access_policy', 'smtpd_access_policy']);
  assert.equal(requests(CAPTURE.replace(/\n+$/, '')).length, 4);
  assert.equal(parseAttributeBlocks(''), []);
  assert.equal(parseAttributeBlocks('\n\n  \n'), []);
});

test('captures: a malformed block is reported in place and the others still parse', () => {
  const results = parseAttributeBlocks('request=a\n\nrequest=b\nbroken line\n\nrequest=c\n');
  assert.equal(results.map((b) => (b.ok ? b.attrs.get('request') : b.error)), ['a', 'line 2: expected name=value', 'c']);
  // A CRLF capture is not what Postfix sends, so it is refused rather than half-read.
  const crlf = parseAttributeBlocks(CAPTURE.replace(/\n/g, '\r\n'));
  assert.ok(crlf.length > 0);
  assert.ok(crlf.every((b) => !b.ok && b.error === 'line 1: contains CR (Postfix ends lines with a bare LF)'));
});

test('translation: unauthenticated requests are skipped; authenticated ones carry normalised fingerprints', () => {
  const blocks = parseAttributeBlocks(CAPTURE).map(attrsOf);
  for (const a of blocks.slice(0, 3)) assert.is(translatePostfix(a).kind, 'skip');
  const t = translatePostfix(blocks[3]!);
  assert.is(t.kind, 'decide');
  if (t.kind !== 'decide') return;
  assert.equal(t.request, {
    protocol: 'smtp',
    user: 'alice@example.com',
    remote: '127.0.0.1',
    tls: true,
    certFingerprints: ['28fcdfa54bcc0a58ddfc1bcd1442bb9942105a5fc836790f2c9c1f0c62fc2fe4', 'c6f1c99014d9435f4fc2afb5918e4c2e8477cf094e5041a597655b47644594f0'],
    stage: 'RCPT',
    sessionId: '4105.6b0adf16.35ef0.0',
  });
});

test.run();
