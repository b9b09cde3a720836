/**
 * Dovecot's %{client_id} (imap_id_retain = yes) is the client's IMAP ID list re-serialised by imap-login:
 * `"key" "value"` or `"key" NIL` pairs separated by spaces, with `"` and `\` escaped. The client chooses every
 * byte of it, so this parser is lenient but never trusts it: bounded input, bounded output, no exceptions.
 */
export interface ImapIdFields {
  /** In order, keys as sent, values unescaped, null for NIL. */
  pairs: Array<[key: string, value: string | null]>;
  /** Input ended inside a string or with a key lacking its value, was cut to the size limit, or had more pairs than kept. */
  truncated: boolean;
  /** Something not matching the grammar was skipped (stray chars, unquoted atoms other than NIL, bad escapes). */
  malformed: boolean;
}

const MAX_INPUT = 8192;
const MAX_PAIRS = 64;
const SPACE = 0x20;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

type Token =
  | { kind: 'string'; value: string }
  | { kind: 'nil' }
  // Delimited like a string (so it fills a key or value slot) but its content is invalid.
  | { kind: 'bad-string' }
  // An unquoted atom, stray characters, or a string with something glued to it: no clear key or value.
  | { kind: 'junk' }
  // Input ended inside the token.
  | { kind: 'cut' };

// ASCII-only folding: Unicode folding would let e.g. KELVIN SIGN (U+212A) match "k" in a key name.
function asciiUpper(text: string): string {
  return text.replace(/[a-z]/g, (c) => c.toUpperCase());
}

function asciiLower(text: string): string {
  return text.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

function nextSpace(s: string, from: number): number {
  const at = s.indexOf(' ', from);
  return at < 0 ? s.length : at;
}

/** Parses the IMAP ID list Dovecot forwards as %{client_id}. Never throws; bounded and linear in the (capped) input length. */
export function parseImapId(raw: string): ImapIdFields {
  const fields: ImapIdFields = { pairs: [], truncated: false, malformed: false };
  let s = raw;
  if (s.length > MAX_INPUT) {
    s = s.slice(0, MAX_INPUT);
    fields.truncated = true;
  }
  const n = s.length;
  let i = 0;

  function readQuoted(): Token {
    const parts: string[] = [];
    let bad = false;
    let run = i + 1;
    let j = run;
    for (;;) {
      if (j >= n) {
        i = n;
        return { kind: 'cut' };
      }
      const c = s.charCodeAt(j);
      if (c === QUOTE) break;
      if (c === BACKSLASH) {
        if (j + 1 >= n) {
          i = n;
          return { kind: 'cut' };
        }
        const e = s.charCodeAt(j + 1);
        if (e !== QUOTE && e !== BACKSLASH) bad = true;
        parts.push(s.slice(run, j), s.charAt(j + 1));
        j += 2;
        run = j;
        continue;
      }
      j++;
    }
    parts.push(s.slice(run, j));
    j++;
    if (j < n && s.charCodeAt(j) !== SPACE) {
      // Something glued to the closing quote (`"a"x`, `""""`): it is unclear whether this was one string
      // or a key and value run together, so the piece is junk and parsing resumes at the next space.
      i = nextSpace(s, j);
      return { kind: 'junk' };
    }
    i = j;
    return bad ? { kind: 'bad-string' } : { kind: 'string', value: parts.join('') };
  }

  function readAtom(): Token {
    const end = nextSpace(s, i);
    const word = asciiUpper(s.slice(i, end));
    i = end;
    // IMAP atoms are case-insensitive, so `nil` is NIL too.
    if (word === 'NIL') return { kind: 'nil' };
    // `"name" NI` at the very end is a NIL cut short by a length limit, not garbage.
    if (end === n && 'NIL'.startsWith(word)) return { kind: 'cut' };
    return { kind: 'junk' };
  }

  // undefined: expecting a key. null: the key slot held something invalid, so its pair will be dropped.
  let key: string | null | undefined;
  for (;;) {
    while (i < n && s.charCodeAt(i) === SPACE) i++;
    if (i >= n) break;
    if (fields.pairs.length >= MAX_PAIRS) {
      fields.truncated = true;
      break;
    }
    const token = s.charCodeAt(i) === QUOTE ? readQuoted() : readAtom();
    if (token.kind === 'cut') {
      fields.truncated = true;
      key = undefined;
      break;
    }
    if (key === undefined) {
      if (token.kind === 'string') key = token.value;
      else {
        fields.malformed = true;
        // Junk between pairs is skipped on its own so the next quoted string can still be a key; a NIL or a
        // broken string sits where a key belongs, so it takes the value after it down with it.
        if (token.kind !== 'junk') key = null;
      }
      continue;
    }
    if (token.kind === 'string' || token.kind === 'nil') {
      if (key !== null) fields.pairs.push([key, token.kind === 'string' ? token.value : null]);
    } else {
      fields.malformed = true;
    }
    key = undefined;
  }
  // Only a well-formed key counts as cut off; a broken one left at the end is already reported as malformed.
  if (typeof key === 'string') fields.truncated = true;
  return fields;
}

/** First value of the first of `names` present (case-insensitive key match), or undefined; NIL values count as absent. */
export function idField(fields: ImapIdFields, names: readonly string[]): string | undefined {
  for (const name of names) {
    const wanted = asciiLower(name);
    // Only the first occurrence counts: a later repeat must not override what the client said first.
    const pair = fields.pairs.find(([key]) => key.length === wanted.length && (key === wanted || asciiLower(key) === wanted));
    if (pair !== undefined && pair[1] !== null) return pair[1];
  }
  return undefined;
}
