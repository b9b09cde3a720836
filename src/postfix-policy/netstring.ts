/** Postfix socketmap replies are at most 100,000 bytes; requests (a table name and a key) far less. */
const MAX_NETSTRING = 100_000;

export type NetstringParse =
  | { kind: 'more' } // incomplete: wait for more bytes
  | { kind: 'ok'; value: Buffer; next: number } // next: offset after the trailing comma
  | { kind: 'error'; error: string };

/**
 * One netstring `<len>:<bytes>,` starting at `offset`. Pure and incremental: a partial netstring
 * asks for more bytes; anything that can never become valid is an error at once.
 */
export function parseNetstring(buf: Buffer, offset = 0, maxLen = MAX_NETSTRING): NetstringParse {
  let i = offset;
  let len = 0;
  const maxDigits = String(maxLen).length;
  for (; i < buf.length; i++) {
    const c = buf[i]!;
    if (c === 0x3a) break; // ':'
    if (c < 0x30 || c > 0x39) return { kind: 'error', error: 'length is not a decimal number' };
    if (i - offset >= maxDigits) return { kind: 'error', error: `length longer than ${maxLen}` };
    len = len * 10 + (c - 0x30);
  }
  if (i >= buf.length) return { kind: 'more' };
  if (i === offset) return { kind: 'error', error: 'empty length' };
  if (buf[offset] === 0x30 && i - offset > 1) return { kind: 'error', error: 'length with a leading zero' };
  if (len > maxLen) return { kind: 'error', error: `length longer than ${maxLen}` };
  const start = i + 1;
  const end = start + len;
  if (buf.length < end + 1) return { kind: 'more' };
  if (buf[end] !== 0x2c) return { kind: 'error', error: 'missing "," after the data' };
  return { kind: 'ok', value: buf.subarray(start, end), next: end + 1 };
}

export function encodeNetstring(text: string): Buffer {
  const data = Buffer.from(text, 'utf8');
  return Buffer.concat([Buffer.from(`${data.length}:`), data, Buffer.from(',')]);
}
