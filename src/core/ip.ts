// IP parsing, normalisation and CIDR matching. Runs on every login request, so
// parsing is a hand-written single pass over char codes: no regexes, no split(),
// one 16-byte allocation per parsed address.

/** 16 bytes; IPv4 addresses are stored in IPv4-mapped form ::ffff:a.b.c.d so v4 rules match v4-mapped v6 clients. */
export interface ParsedIp {
  bytes: Uint8Array;
  /** true for a.b.c.d and for ::ffff:a.b.c.d */
  v4: boolean;
}

/** prefix is in the 128-bit space (v4 /24 => 120); text is canonical "addr/len" with the v4 length for v4. */
export interface Cidr {
  text: string;
  bytes: Uint8Array;
  prefix: number;
  v4: boolean;
}

// Longest legal form is a bracketed IPv6 with an IPv4 tail (47 chars); the cap
// keeps hostile input from costing anything.
const MAX_IP_TEXT = 64;
const MAX_CIDR_TEXT = MAX_IP_TEXT + 4;

const COLON = 58;
const DOT = 46;

function isV4Mapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

// Leading zeros are rejected because inet_aton and friends read them as octal,
// so "010.0.0.1" means 8.0.0.1 to some tools and 10.0.0.1 to others.
function parseV4Into(s: string, start: number, end: number, out: Uint8Array, pos: number): boolean {
  let octets = 0;
  let value = 0;
  let digits = 0;
  for (let i = start; i <= end; i++) {
    const c = i === end ? DOT : s.charCodeAt(i);
    if (c === DOT) {
      if (digits === 0 || octets === 4) return false;
      out[pos + octets] = value;
      octets++;
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 1 && value === 0) return false;
      value = value * 10 + (c - 48);
      if (value > 255) return false;
      digits++;
    } else {
      return false;
    }
  }
  return octets === 4;
}

function countGroups(s: string, start: number, end: number): number {
  if (start === end) return 0;
  let n = 1;
  for (let i = start; i < end; i++) if (s.charCodeAt(i) === COLON) n++;
  return n;
}

// Callers have already checked the group count, so writes stay inside out.
function parseGroupsInto(s: string, start: number, end: number, out: Uint8Array, pos: number): boolean {
  if (start === end) return true;
  let value = 0;
  let digits = 0;
  for (let i = start; i <= end; i++) {
    const c = i === end ? COLON : s.charCodeAt(i);
    if (c === COLON) {
      if (digits === 0) return false;
      out[pos++] = value >> 8;
      out[pos++] = value & 0xff;
      value = 0;
      digits = 0;
    } else {
      const h = hexValue(c);
      if (h < 0 || digits === 4) return false;
      value = (value << 4) | h;
      digits++;
    }
  }
  return true;
}

function parseV6Into(s: string, out: Uint8Array): boolean {
  let end = s.length;
  let maxGroups = 8;
  const lastColon = s.lastIndexOf(':');
  if (lastColon === -1) return false;
  if (s.indexOf('.', lastColon + 1) !== -1) {
    if (!parseV4Into(s, lastColon + 1, s.length, out, 12)) return false;
    maxGroups = 6;
    // Keep the colon when it belongs to "::" (e.g. "::1.2.3.4"); otherwise it
    // is only the separator before the IPv4 tail.
    end = lastColon > 0 && s.charCodeAt(lastColon - 1) === COLON ? lastColon + 1 : lastColon;
  }

  const dbl = s.indexOf('::');
  if (dbl === -1 || dbl >= end) {
    if (countGroups(s, 0, end) !== maxGroups) return false;
    return parseGroupsInto(s, 0, end, out, 0);
  }
  if (s.indexOf('::', dbl + 1) !== -1) return false;

  const headCount = countGroups(s, 0, dbl);
  const tailCount = countGroups(s, dbl + 2, end);
  // "::" stands for at least one zero group.
  if (headCount + tailCount > maxGroups - 1) return false;
  return (
    parseGroupsInto(s, 0, dbl, out, 0) &&
    parseGroupsInto(s, dbl + 2, end, out, (maxGroups - tailCount) * 2)
  );
}

export function parseIp(text: string): ParsedIp | null {
  const len = text.length;
  if (len === 0 || len > MAX_IP_TEXT) return null;
  let s = text;
  let bracketed = false;
  if (s.charCodeAt(0) === 91 /* [ */) {
    if (s.charCodeAt(len - 1) !== 93 /* ] */) return null;
    s = s.slice(1, -1);
    bracketed = true;
  }
  const bytes = new Uint8Array(16);
  if (s.indexOf(':') === -1) {
    // Brackets only make sense around IPv6 literals (RFC 3986 IP-literal).
    if (bracketed || !parseV4Into(s, 0, s.length, bytes, 12)) return null;
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    return { bytes, v4: true };
  }
  if (!parseV6Into(s, bytes)) return null;
  return { bytes, v4: isV4Mapped(bytes) };
}

// Decided from the bytes rather than ip.v4 so a hand-built ParsedIp still
// prints consistently with what it would match.
export function formatIp(ip: ParsedIp): string {
  const b = ip.bytes;
  if (isV4Mapped(b)) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;

  // RFC 5952: compress the longest run of >= 2 zero groups, leftmost on ties.
  let bestStart = -1;
  let bestLen = 1;
  let runStart = -1;
  for (let g = 0; g <= 8; g++) {
    const zero = g < 8 && b[g * 2] === 0 && b[g * 2 + 1] === 0;
    if (zero) {
      if (runStart === -1) runStart = g;
    } else if (runStart !== -1) {
      if (g - runStart > bestLen) {
        bestStart = runStart;
        bestLen = g - runStart;
      }
      runStart = -1;
    }
  }

  let out = '';
  for (let g = 0; g < 8; g++) {
    if (g === bestStart) {
      out += '::';
      g += bestLen - 1;
      continue;
    }
    if (out.length > 0 && !out.endsWith(':')) out += ':';
    out += ((b[g * 2]! << 8) | b[g * 2 + 1]!).toString(16);
  }
  return out;
}

/**
 * Canonical text: IPv4 dotted quad (also for IPv4-mapped IPv6), IPv6 in RFC 5952
 * form. Accepts surrounding [brackets]; rejects zone ids, leading zeros in IPv4
 * octets, empty strings and whitespace. null when invalid.
 */
/** True for a dotted quad already in canonical form ("192.0.2.1"): the common case, checked without allocating. */
function isCanonicalV4(text: string): boolean {
  const n = text.length;
  if (n < 7 || n > 15) return false;
  let parts = 0;
  let digits = 0;
  let value = 0;
  let first = 0;
  for (let i = 0; i <= n; i++) {
    const c = i === n ? 0x2e : text.charCodeAt(i);
    if (c === 0x2e) {
      if (digits === 0 || value > 255 || (digits > 1 && first === 0x30)) return false;
      parts++;
      digits = 0;
      value = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      if (digits === 0) first = c;
      digits++;
      value = value * 10 + (c - 0x30);
    } else {
      return false;
    }
  }
  return parts === 4;
}

export function normalizeIp(text: string): string | null {
  if (isCanonicalV4(text)) return text;
  const ip = parseIp(text);
  return ip === null ? null : formatIp(ip);
}

function hasHostBits(bytes: Uint8Array, prefix: number): boolean {
  const full = prefix >> 3;
  const rem = prefix & 7;
  if (rem !== 0 && (bytes[full]! & (0xff >> rem)) !== 0) return true;
  for (let i = rem === 0 ? full : full + 1; i < 16; i++) if (bytes[i] !== 0) return true;
  return false;
}

function maskBytes(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(16);
  const full = prefix >> 3;
  const rem = prefix & 7;
  for (let i = 0; i < full; i++) out[i] = bytes[i]!;
  if (rem !== 0) out[full] = bytes[full]! & (0xff << (8 - rem));
  return out;
}

function cidrText(bytes: Uint8Array, prefix: number, v4: boolean): string {
  return `${formatIp({ bytes, v4 })}/${v4 ? prefix - 96 : prefix}`;
}

const EXPECTED = 'expected an address or network like 10.0.0.0/8 or 2001:db8::/32';

/**
 * "10.0.0.0/8", "2001:db8::/32" or a bare address (/32 or /128). Host bits set
 * is an error. A v4-mapped v6 network (::ffff:10.0.0.0/104) is stored as the v4
 * network (10.0.0.0/8).
 */
export function parseCidr(text: string): Cidr | { error: string } {
  if (text.length === 0) return { error: `empty network; ${EXPECTED}` };
  if (text.length > MAX_CIDR_TEXT) return { error: `network text too long (${text.length} chars); ${EXPECTED}` };

  const slash = text.indexOf('/');
  const addrText = slash === -1 ? text : text.slice(0, slash);
  const ip = parseIp(addrText);
  if (ip === null) return { error: `invalid address "${addrText}" in "${text}"; ${EXPECTED}` };

  // Written as plain dotted quad => the prefix is in the 32-bit space.
  const writtenV4 = addrText.indexOf(':') === -1;
  const maxLen = writtenV4 ? 32 : 128;

  let len = maxLen;
  if (slash !== -1) {
    const p = text.slice(slash + 1);
    let n = 0;
    let ok = p.length > 0 && p.length <= 3 && !(p.length > 1 && p.charCodeAt(0) === 48);
    for (let i = 0; ok && i < p.length; i++) {
      const c = p.charCodeAt(i);
      if (c < 48 || c > 57) ok = false;
      else n = n * 10 + (c - 48);
    }
    if (!ok || n > maxLen) {
      return {
        error: `invalid prefix length "/${p}" in "${text}"; expected ${writtenV4 ? 'IPv4 /0 to /32' : 'IPv6 /0 to /128'}`,
      };
    }
    len = n;
  }

  const prefix = writtenV4 ? len + 96 : len;
  if (hasHostBits(ip.bytes, prefix)) {
    const masked = maskBytes(ip.bytes, prefix);
    const maskedV4 = prefix >= 96 && isV4Mapped(masked);
    return { error: `host bits set in ${text}; did you mean ${cidrText(masked, prefix, maskedV4)}?` };
  }

  // A v4-mapped address with prefix < 96 always has host bits (the ffff), so
  // reaching here with a mapped address means prefix >= 96.
  const v4 = ip.v4 && prefix >= 96;
  return { text: cidrText(ip.bytes, prefix, v4), bytes: ip.bytes, prefix, v4 };
}

/**
 * Plain prefix comparison in the 128-bit space. Consequences, by design:
 * 0.0.0.0/0 is ::ffff:0:0/96, so it matches every IPv4 and v4-mapped client but
 * no native IPv6; ::/0 is the whole 128-bit space, so it matches everything,
 * v4 and v4-mapped clients included.
 */
export function cidrContains(cidr: Cidr, ip: ParsedIp): boolean {
  const a = cidr.bytes;
  const b = ip.bytes;
  const full = cidr.prefix >> 3;
  for (let i = 0; i < full; i++) if (a[i] !== b[i]) return false;
  const rem = cidr.prefix & 7;
  if (rem === 0) return true;
  const mask = (0xff << (8 - rem)) & 0xff;
  return (a[full]! & mask) === (b[full]! & mask);
}

/** First network in the list containing the address, or null. Invalid text => null. */
export function findNetwork(list: readonly Cidr[], ip: string | ParsedIp): Cidr | null {
  const parsed = typeof ip === 'string' ? parseIp(ip) : ip;
  if (parsed === null) return null;
  for (const cidr of list) if (cidrContains(cidr, parsed)) return cidr;
  return null;
}
