export type PolicyAttributes = Map<string, string>;
export type BlockResult = { ok: true; attrs: PolicyAttributes } | { ok: false; error: string };
export interface AttributeLimits { maxLineLength: number; maxAttributes: number }

/** Postfix 3.7 sends 29 attributes, all short except ccert_subject/issuer; these leave ample room. */
export const DEFAULT_LIMITS: AttributeLimits = { maxLineLength: 8192, maxAttributes: 100 };

const LF = 0x0a;
const EQ = 0x3d;

const lineError = (line: number, what: string): BlockResult => ({ ok: false, error: `line ${line}: ${what}` });

/** Where CR or NUL first appears, as a line error; Postfix never sends either. */
function forbiddenByteError(text: string, end: number): BlockResult | null {
  const cr = text.indexOf('\r');
  const nul = text.indexOf('\0');
  const at = cr >= 0 && cr < end ? (nul >= 0 && nul < cr ? nul : cr) : nul >= 0 && nul < end ? nul : -1;
  if (at < 0) return null;
  let line = 1;
  for (let i = text.indexOf('\n'); i >= 0 && i < at; i = text.indexOf('\n', i + 1)) line++;
  return lineError(line, text.charCodeAt(at) === 0 ? 'contains a NUL byte' : 'contains CR (Postfix ends lines with a bare LF)');
}

/**
 * One Postfix policy request without its terminating empty line (one trailing "\n" is fine).
 * Pure, so the streaming server and `cidlock test --postfix` share it. Errors name the line but
 * never echo its content: a malformed client may be sending a password or binary junk.
 * Names are lowercased, so a later "SENDER=" overrides "sender=" like any duplicate does.
 * One pass over the characters, no split or regex: it runs for every SMTP stage of every session.
 */
export function parseAttributeBlock(text: string, limits: AttributeLimits = DEFAULT_LIMITS): BlockResult {
  const attrs: PolicyAttributes = new Map();
  let end = text.length;
  if (end > 0 && text.charCodeAt(end - 1) === LF) end--;
  if (end === 0) return { ok: true, attrs };
  const bad = forbiddenByteError(text, end);
  if (bad !== null) return bad;
  let start = 0;
  for (let line = 1; start <= end; line++) {
    let nl = text.indexOf('\n', start);
    if (nl < 0 || nl > end) nl = end;
    // Counted per line, not per distinct name, so a flood of duplicates is bounded too.
    if (line > limits.maxAttributes) return { ok: false, error: `more than ${limits.maxAttributes} attributes` };
    const length = nl - start;
    // The limit is in bytes because that is what it protects; a char count can only be lower.
    if (length > limits.maxLineLength || (length * 3 > limits.maxLineLength && Buffer.byteLength(text.slice(start, nl), 'utf8') > limits.maxLineLength)) {
      return lineError(line, `longer than ${limits.maxLineLength} bytes`);
    }
    if (length === 0) return lineError(line, 'empty line inside the request');
    let eq = start;
    let upper = false;
    for (; eq < nl; eq++) {
      const c = text.charCodeAt(eq);
      if (c === EQ) break;
      if ((c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x5f) continue;
      if (c >= 0x41 && c <= 0x5a) upper = true;
      else eq = nl + 1; // not a name character: report below
    }
    if (eq === nl) return lineError(line, 'expected name=value');
    if (eq === start) return lineError(line, 'empty attribute name');
    if (eq > nl) {
      return text.indexOf('=', start) < 0 || text.indexOf('=', start) > nl
        ? lineError(line, 'expected name=value')
        : lineError(line, 'attribute name with characters outside [a-z0-9_]');
    }
    const name = text.slice(start, eq);
    attrs.set(upper ? name.toLowerCase() : name, text.slice(eq + 1, nl));
    start = nl + 1;
  }
  return { ok: true, attrs };
}

/**
 * A whole capture: blocks separated by one or more empty lines, with blank lines before, between
 * and after them and a missing final empty line tolerated. Lines of only spaces/tabs count as
 * blank here because captures get hand-edited; the wire parser above stays strict.
 */
export function parseAttributeBlocks(text: string, limits: AttributeLimits = DEFAULT_LIMITS): BlockResult[] {
  const results: BlockResult[] = [];
  let current: string[] = [];
  const flush = (): void => {
    if (current.length > 0) results.push(parseAttributeBlock(current.join('\n'), limits));
    current = [];
  };
  for (const line of text.split('\n')) {
    if (/^[ \t]*$/.test(line)) flush();
    else current.push(line);
  }
  flush();
  return results;
}
