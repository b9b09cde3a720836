/**
 * Small MIME readers for the notice tests, written apart from src/notice so a test does not
 * check the encoder with itself.
 */

/** Header fields (each with its folds, CRLF kept) and the body, split at the first empty line. */
export function splitMessage(msg: string): { headers: string[]; body: string } {
  const end = msg.indexOf('\r\n\r\n');
  const head = end < 0 ? msg : msg.slice(0, end);
  const body = end < 0 ? '' : msg.slice(end + 4);
  const headers: string[] = [];
  for (const line of head.split('\r\n')) {
    if (/^[ \t]/.test(line) && headers.length > 0) headers[headers.length - 1] += `\r\n${line}`;
    else if (line !== '') headers.push(line);
  }
  return { headers, body };
}

/** RFC 2047 encoded-words (B and Q, UTF-8) in an unfolded header value; space between two words is dropped. */
export function decodeEncodedWords(value: string): string {
  const unfolded = value.replace(/\r\n(?=[ \t])/g, '').replace(/^ /, '');
  return unfolded
    .replace(/(\?=)[ \t]+(?==\?)/g, '$1')
    .replace(/=\?([^?]+)\?([BbQq])\?([^?]*)\?=/g, (_, charset: string, enc: string, data: string) => {
      if (charset.toLowerCase() !== 'utf-8') throw new Error(`charset ${charset}`);
      const bytes = enc.toUpperCase() === 'B'
        ? Buffer.from(data, 'base64')
        : Buffer.from(data.replace(/_/g, ' ').replace(/=([0-9A-F]{2})/gi, (_m, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1');
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    });
}

/** Quoted-printable to UTF-8 text: soft breaks joined, =XX decoded. */
export function decodeQuotedPrintable(qp: string): string {
  const bytes = qp.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
  return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(bytes, 'latin1'));
}
