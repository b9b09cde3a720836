import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cidrContains, findNetwork, formatIp, normalizeIp, parseCidr, parseIp } from '../src/core/ip.js';
import type { Cidr } from '../src/core/ip.js';

function cidr(text: string): Cidr {
  const c = parseCidr(text);
  if ('error' in c) throw new Error(`unexpected parseCidr error for ${text}: ${c.error}`);
  return c;
}

function ip(text: string) {
  const p = parseIp(text);
  if (p === null) throw new Error(`unexpected parseIp failure for ${text}`);
  return p;
}

test('valid IPv4 normalises to itself and is stored v4-mapped', () => {
  assert.is(normalizeIp('1.2.3.4'), '1.2.3.4');
  assert.is(normalizeIp('0.0.0.0'), '0.0.0.0');
  assert.is(normalizeIp('255.255.255.255'), '255.255.255.255');
  const p = ip('192.0.2.1');
  assert.ok(p.v4);
  assert.equal(Array.from(p.bytes), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]);
});

test('invalid IPv4 is rejected', () => {
  for (const bad of [
    '256.1.1.1',
    '1.2.3.256',
    '1.2.3',
    '1.2.3.4.5',
    '01.2.3.4',
    '1.2.3.00',
    ' 1.2.3.4',
    '1.2.3.4 ',
    '1..2.3',
    '1.2.3.4.',
    '.1.2.3',
    '1.2.3.-4',
    '1.2.3.0x4',
    '[1.2.3.4]',
    '',
    '1.2.3.4:25',
  ]) {
    assert.is(parseIp(bad), null, `expected ${JSON.stringify(bad)} to be rejected`);
  }
});

test('IPv6 RFC 5952 canonicalisation', () => {
  assert.is(normalizeIp('2001:DB8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
  assert.is(normalizeIp('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1');
  assert.is(normalizeIp('2001:0db8:0000:0000:0000:0000:0000:0001'), '2001:db8::1');
  assert.is(normalizeIp('2001:db8:0:0:1:0:0:0'), '2001:db8:0:0:1::');
  assert.is(normalizeIp('1:0:0:2:0:0:0:3'), '1:0:0:2::3');
  assert.is(normalizeIp('0:0:0:0:0:0:0:0'), '::');
  assert.is(normalizeIp('::'), '::');
  assert.is(normalizeIp('::1'), '::1');
  assert.is(normalizeIp('1::'), '1::');
  assert.is(normalizeIp('[::1]'), '::1');
  assert.is(normalizeIp('FE80::ABCD'), 'fe80::abcd');
  assert.is(normalizeIp('1::2:3:4:5:6:7'), '1:0:2:3:4:5:6:7');
  assert.is(normalizeIp('64:ff9b::1.2.3.4'), '64:ff9b::102:304');
  assert.is(normalizeIp('::1.2.3.4'), '::102:304');
  assert.is(normalizeIp('1:2:3:4:5:6:1.2.3.4'), '1:2:3:4:5:6:102:304');
  assert.not.ok(ip('2001:db8::1').v4);
});

test('invalid IPv6 is rejected', () => {
  for (const bad of [
    'fe80::1%eth0',
    '[fe80::1%eth0]',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7',
    '1::2::3',
    ':::',
    '1:::2',
    '12345::1',
    '::g',
    ':1::2',
    '1::2:',
    '1:2:3:4:5:6:7:8::',
    '1:2:3:4:5:6:7::8',
    '[::1',
    '::1]',
    ' ::1',
    '1:2:3:4:5:6:7:1.2.3.4',
    '::ffff:01.2.3.4',
    '::1.2.3',
    '1.2::3',
    'a'.repeat(65),
  ]) {
    assert.is(parseIp(bad), null, `expected ${JSON.stringify(bad)} to be rejected`);
  }
});

test('input longer than 64 chars is rejected even if otherwise valid-looking', () => {
  assert.is(parseIp('0000:0000:0000:0000:0000:0000:0000:0001' + ':'.repeat(30)), null);
});

test('IPv4-mapped IPv6 normalises to dotted quad', () => {
  assert.is(normalizeIp('::ffff:192.0.2.1'), '192.0.2.1');
  assert.is(normalizeIp('::FFFF:c000:0201'), '192.0.2.1');
  assert.is(normalizeIp('[::ffff:192.0.2.1]'), '192.0.2.1');
  assert.is(normalizeIp('0:0:0:0:0:ffff:c000:201'), '192.0.2.1');
  const mapped = ip('::ffff:192.0.2.1');
  assert.ok(mapped.v4);
  assert.equal(mapped.bytes, ip('192.0.2.1').bytes);
  assert.is(formatIp(mapped), '192.0.2.1');
  // ::fffe:... is not mapped and must stay IPv6.
  assert.is(normalizeIp('::fffe:c000:201'), '::fffe:c000:201');
});

test('parseCidr: valid networks and canonical text', () => {
  const v4 = cidr('10.0.0.0/8');
  assert.is(v4.text, '10.0.0.0/8');
  assert.is(v4.prefix, 104);
  assert.ok(v4.v4);
  const v6 = cidr('2001:DB8::/32');
  assert.is(v6.text, '2001:db8::/32');
  assert.is(v6.prefix, 32);
  assert.not.ok(v6.v4);
  assert.is(cidr('192.0.2.7').text, '192.0.2.7/32');
  assert.is(cidr('192.0.2.7').prefix, 128);
  assert.is(cidr('::1').text, '::1/128');
  assert.is(cidr('0.0.0.0/0').text, '0.0.0.0/0');
  assert.is(cidr('0.0.0.0/0').prefix, 96);
  assert.is(cidr('::/0').text, '::/0');
  assert.is(cidr('[2001:db8::]/48').text, '2001:db8::/48');
});

test('parseCidr: v4-mapped v6 network is stored as v4', () => {
  const c = cidr('::ffff:10.0.0.0/104');
  assert.is(c.text, '10.0.0.0/8');
  assert.ok(c.v4);
  assert.is(c.prefix, 104);
  assert.equal(c.bytes, cidr('10.0.0.0/8').bytes);
  assert.is(cidr('::ffff:1.2.3.4').text, '1.2.3.4/32');
});

test('parseCidr: errors', () => {
  const err = (text: string): string => {
    const r = parseCidr(text);
    if (!('error' in r)) throw new Error(`expected error for ${text}`);
    return r.error;
  };
  assert.is(err('10.0.0.1/8'), 'host bits set in 10.0.0.1/8; did you mean 10.0.0.0/8?');
  assert.match(err('2001:db8::1/32'), 'did you mean 2001:db8::/32?');
  assert.match(err('10.0.0.0/33'), '/0 to /32');
  assert.match(err('2001:db8::/129'), '/0 to /128');
  assert.match(err('::ffff:10.0.0.0/80'), 'host bits set');
  assert.match(err('garbage'), 'invalid address');
  assert.match(err(''), 'empty');
  assert.match(err('10.0.0.0/'), 'invalid prefix');
  assert.match(err('10.0.0.0/8/8'), 'invalid prefix');
  assert.match(err('10.0.0.0/-1'), 'invalid prefix');
  assert.match(err('10.0.0.0/ 8'), 'invalid prefix');
  assert.match(err('10.0.0.0/08'), 'invalid prefix');
  assert.match(err(' 10.0.0.0/8'), 'invalid address');
  assert.match(err('fe80::%eth0/64'), 'invalid address');
  assert.match(err('1'.repeat(200)), 'too long');
});

test('cidrContains: IPv4 boundaries', () => {
  const c = cidr('192.168.1.0/24');
  assert.ok(cidrContains(c, ip('192.168.1.0')));
  assert.ok(cidrContains(c, ip('192.168.1.255')));
  assert.not.ok(cidrContains(c, ip('192.168.2.0')));
  assert.not.ok(cidrContains(c, ip('192.168.0.255')));
  const odd = cidr('10.0.0.0/13');
  assert.ok(cidrContains(odd, ip('10.7.255.255')));
  assert.not.ok(cidrContains(odd, ip('10.8.0.0')));
  const host = cidr('10.1.2.3');
  assert.ok(cidrContains(host, ip('10.1.2.3')));
  assert.not.ok(cidrContains(host, ip('10.1.2.4')));
});

test('cidrContains: v4 rule matches v4-mapped client, not a native v6 one', () => {
  const c = cidr('192.0.2.0/24');
  assert.ok(cidrContains(c, ip('::ffff:192.0.2.99')));
  assert.ok(cidrContains(c, ip('::ffff:c000:2ff')));
  assert.not.ok(cidrContains(c, ip('::c000:263')));
  assert.not.ok(cidrContains(c, ip('64:ff9b::192.0.2.99')));
  // And the reverse: a rule written in mapped form matches a plain v4 client.
  assert.ok(cidrContains(cidr('::ffff:192.0.2.0/120'), ip('192.0.2.5')));
});

test('cidrContains: IPv6 /64 boundaries', () => {
  const c = cidr('2001:db8:1:2::/64');
  assert.ok(cidrContains(c, ip('2001:db8:1:2::')));
  assert.ok(cidrContains(c, ip('2001:db8:1:2:ffff:ffff:ffff:ffff')));
  assert.not.ok(cidrContains(c, ip('2001:db8:1:3::')));
  assert.not.ok(cidrContains(c, ip('2001:db8:1:1:ffff:ffff:ffff:ffff')));
  const odd = cidr('2001:db8::/33');
  assert.ok(cidrContains(odd, ip('2001:db8:7fff:ffff:ffff:ffff:ffff:ffff')));
  assert.not.ok(cidrContains(odd, ip('2001:db8:8000::')));
});

test('cidrContains: /0 semantics', () => {
  const allV4 = cidr('0.0.0.0/0');
  assert.ok(cidrContains(allV4, ip('1.2.3.4')));
  assert.ok(cidrContains(allV4, ip('255.255.255.255')));
  assert.ok(cidrContains(allV4, ip('::ffff:8.8.8.8')));
  assert.not.ok(cidrContains(allV4, ip('2001:db8::1')));
  assert.not.ok(cidrContains(allV4, ip('::1')));
  const all = cidr('::/0');
  assert.ok(cidrContains(all, ip('2001:db8::1')));
  assert.ok(cidrContains(all, ip('1.2.3.4')));
  assert.ok(cidrContains(all, ip('::')));
});

test('findNetwork returns the first match, or null', () => {
  const list = [cidr('10.0.0.0/8'), cidr('10.1.0.0/16'), cidr('2001:db8::/32'), cidr('::/0')];
  assert.is(findNetwork(list, '10.1.2.3')?.text, '10.0.0.0/8');
  assert.is(findNetwork(list, ip('10.1.2.3')), list[0]);
  assert.is(findNetwork(list, '::ffff:10.9.9.9')?.text, '10.0.0.0/8');
  assert.is(findNetwork(list, '2001:db8:ffff::1')?.text, '2001:db8::/32');
  assert.is(findNetwork(list, '2001:db9::1')?.text, '::/0');
  const narrow = list.slice(0, 3);
  assert.is(findNetwork(narrow, '192.0.2.1'), null);
  assert.is(findNetwork(narrow, 'not an ip'), null);
  assert.is(findNetwork(list, ''), null);
  assert.is(findNetwork([], '10.0.0.1'), null);
});

test.run();
