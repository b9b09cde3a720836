export type PolicyAttributes = Map<string, string>;
export type BlockResult = { ok: true; attrs: PolicyAttributes } | { ok: false; error: string };
export interface AttributeLimits { maxLineLength: number; maxAttributes: number }

/** Postfix 3.7 sends 29 attributes, all short except ccert_subject/issuer; these leave ample room. */
export const DEFAULT_LIMITS: AttributeLimits = { maxLineLength: 8192, maxAttributes: 100 };

const NAME = /^[a-z0-9_]+$/i;

/**
 * One Postfix policy request without its terminating empty line (one trailing "\n" is fine).
 * Pure, so the streaming server and `cidlock test --postfix` share it. Errors name the line but
 * never echo its content: a malformed client may be sending a password or binary junk.
 * Names are lowercased, so a later "SENDER=" overrides "sender=" like any duplicate does.
 */
export function parseAttributeBlock(text: string, limits: AttributeLimits = DEFAULT_LIMITS): BlockResult {
  const attrs: PolicyAttributes = new Map();
  const body = text.endsWith('\n') ? text.slice(0, -1) : text;
  if (body === '') return { ok: true, attrs };
  const lines = body.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const where = `line ${i + 1}`;
    // Counted per line, not per distinct name, so a flood of duplicates is bounded too.
    if (i >= limits.maxAttributes) return { ok: false, error: `more than ${limits.maxAttributes} attributes` };
    // The limit is in bytes because that is what it protects; a char count can only be lower.
    if (line.length > limits.maxLineLength || (line.length * 3 > limits.maxLineLength && Buffer.byteLength(line, 'utf8') > limits.maxLineLength)) {
      return { ok: false, error: `${where}: longer than ${limits.maxLineLength} bytes` };
    }
    // Postfix never sends CR or NUL: a client that does is not Postfix (a CRLF client is malformed).
    if (line.includes('\r')) return { ok: false, error: `${where}: contains CR (Postfix ends lines with a bare LF)` };
    if (line.includes('\0')) return { ok: false, error: `${where}: contains a NUL byte` };
    if (line === '') return { ok: false, error: `${where}: empty line inside the request` };
    const eq = line.indexOf('=');
    if (eq < 0) return { ok: false, error: `${where}: expected name=value` };
    if (eq === 0) return { ok: false, error: `${where}: empty attribute name` };
    const name = line.slice(0, eq);
    if (!NAME.test(name)) return { ok: false, error: `${where}: attribute name with characters outside [a-z0-9_]` };
    attrs.set(name.toLowerCase(), line.slice(eq + 1));
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
