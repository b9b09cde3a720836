import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseAttributeBlock, parseAttributeBlocks } from '../src/postfix-policy/attributes.js';
import { translatePostfix } from '../src/postfix-policy/translate.js';
import { readFixture } from './helpers/paths.js';

const CAPTURE = readFixture('captures', 'postfix-3.7-policy-tls-client-cert.txt');
const NAMES_37 = 'request protocol_state protocol_name client_address client_name client_port reverse_client_name server_address server_port helo_name sender recipient recipient_count queue_id instance size etrn_domain stress sasl_method sasl_username sasl_sender ccert_subject ccert_issuer ccert_fingerprint ccert_pubkey_fingerprint encryption_protocol encryption_cipher encryption_keysize policy_context'.split(' ');

test('the real Postfix 3.7 capture parses into four complete blocks', () => {
  const blocks = parseAttributeBlocks(CAPTURE);
  assert.is(blocks.length, 4);
  const attrs = blocks.map((b) => (b.ok ? b.attrs : assert.unreachable(b.error)) as Map<string, string>);
  for (const a of attrs) assert.equal([...a.keys()], NAMES_37);
  assert.is(attrs[0]!.get('protocol_state'), 'CONNECT');
  assert.is(attrs[0]!.get('client_address'), '127.0.0.1');
  assert.is(attrs[2]!.get('ccert_pubkey_fingerprint'), '28:FC:DF:A5:4B:CC:0A:58:DD:FC:1B:CD:14:42:BB:99:42:10:5A:5F:C8:36:79:0F:2C:9C:1F:0C:62:FC:2F:E4');
  assert.is(attrs[3]!.get('protocol_state'), 'RCPT');
  assert.is(attrs[3]!.get('sasl_username'), 'alice@example.com');
  assert.is(attrs[3]!.get('sender'), 'alice@example.com');
  assert.is(attrs[3]!.get('recipient'), 'bob@example.org');
  assert.is(attrs[3]!.get('instance'), '4105.6b0adf16.35ef0.0');
});

test('values may contain "="; duplicates resolve to the last; names are case-insensitive', () => {
  const r = parseAttributeBlock('ccert_subject=CN=alice,O=x\nsender=a\nsender=b\nSASL_USERNAME=Bob\n');
  assert.ok(r.ok);
  if (!r.ok) return;
  assert.is(r.attrs.get('ccert_subject'), 'CN=alice,O=x');
  assert.is(r.attrs.get('sender'), 'b');
  assert.is(r.attrs.get('sasl_username'), 'Bob');
});

test('malformed blocks are reported without echoing values', () => {
  const cases: Array<[string, RegExp]> = [
    ['request=x\nno equals sign here\n', /line 2: expected name=value/],
    ['=value\n', /line 1: empty attribute name/],
    ['bad-name=1\n', /outside \[a-z0-9_\]/],
    ['request=smtpd_access_policy\r\n', /contains CR/],
    ['request=a\0b\n', /NUL byte/],
    [`sender=${'x'.repeat(9000)}\n`, /line 1: longer than 8192 bytes/],
    [Array.from({ length: 101 }, (_, i) => `a${i}=1`).join('\n'), /more than 100 attributes/],
  ];
  for (const [text, want] of cases) {
    const r = parseAttributeBlock(text);
    assert.is(r.ok, false, JSON.stringify(text.slice(0, 30)));
    if (!r.ok) {
      assert.match(r.error, want);
      assert.not.ok(r.error.includes('xxxxxxxx'));
    }
  }
  assert.is(parseAttributeBlock('a=1\nb=2\n', { maxLineLength: 8192, maxAttributes: 1 }).ok, false);
});

test('blank lines around blocks and a missing final empty line are tolerated', () => {
  const blocks = parseAttributeBlocks('\n\nrequest=a\nsender=x\n\n\n\nrequest=b\nsender=y');
  assert.equal(blocks.map((b) => (b.ok ? b.attrs.get('request') : b.error)), ['a', 'b']);
});

test('translation: unauthenticated requests are skipped; authenticated ones carry normalised fingerprints', () => {
  const blocks = parseAttributeBlocks(CAPTURE).map((b) => (b.ok ? b.attrs : new Map<string, string>()));
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
