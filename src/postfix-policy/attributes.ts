export type PolicyAttributes = Map<string, string>;
export type BlockResult = { ok: true; attrs: PolicyAttributes } | { ok: false; error: string };
export interface AttributeLimits { maxLineLength: number; maxAttributes: number }

export const DEFAULT_LIMITS: AttributeLimits = { maxLineLength: 8192, maxAttributes: 100 };

const NAME = /^[a-z0-9_]+$/i;

/**
 * One Postfix policy request without its terminating empty line. Pure, so the streaming server
 * and `cidlock test --postfix` share it; errors never echo a value back.
 */
export function parseAttributeBlock(text: string, limits: AttributeLimits = DEFAULT_LIMITS): BlockResult {
  const attrs: PolicyAttributes = new Map();
  const body = text.endsWith('\n') ? text.slice(0, -1) : text;
  if (body === '') return { ok: true, attrs };
  const lines = body.split('\n');
  let n = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const where = `line ${i + 1}`;
    if (line.length > limits.maxLineLength) return { ok: false, error: `${where}: longer than ${limits.maxLineLength} bytes` };
    // Postfix never sends CR or NUL: a client that does is not Postfix.
    if (line.includes('\r')) return { ok: false, error: `${where}: contains CR (Postfix ends lines with a bare LF)` };
    if (line.includes('\0')) return { ok: false, error: `${where}: contains a NUL byte` };
    const eq = line.indexOf('=');
    if (eq < 0) return { ok: false, error: `${where}: expected name=value` };
    if (eq === 0) return { ok: false, error: `${where}: empty attribute name` };
    const name = line.slice(0, eq);
    if (!NAME.test(name)) return { ok: false, error: `${where}: attribute name with characters outside [a-z0-9_]` };
    if (++n > limits.maxAttributes) return { ok: false, error: `more than ${limits.maxAttributes} attributes` };
    attrs.set(name.toLowerCase(), line.slice(eq + 1));
  }
  return { ok: true, attrs };
}

/** A whole capture: blocks separated by empty lines, tolerant of blank lines around them. */
export function parseAttributeBlocks(text: string, limits: AttributeLimits = DEFAULT_LIMITS): BlockResult[] {
  return text
    .replace(/\r?\n?$/, '')
    .split(/\n[ \t]*\n+/)
    .map((b) => b.replace(/^\n+/, ''))
    .filter((b) => b.trim() !== '')
    .map((b) => parseAttributeBlock(b, limits));
}
