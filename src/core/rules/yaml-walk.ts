import { isAlias, isMap, isScalar, isSeq, type Document, type LineCounter, type Node } from 'yaml';
import type { RulesIssue } from './types.js';

export type PathSegment = string | number;

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** users["alice@example.com"].protocols.imap[1]: what an operator can paste back into a search. */
function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (IDENT.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** Collects every problem of one rules file, so `cidlock check` reports them all in one run. */
export interface Walker {
  readonly file: string;
  readonly issues: RulesIssue[];
  readonly warnings: RulesIssue[];
  error(node: Node | null | undefined, path: readonly PathSegment[], message: string): void;
  warn(node: Node | null | undefined, path: readonly PathSegment[], message: string): void;
  /** Follows aliases (`*anchor`) so validation sees the value they stand for. */
  resolve(node: unknown): Node | null;
  lineOf(node: Node): number;
}

export function createWalker(file: string, doc: Document, lines: LineCounter): Walker {
  const issues: RulesIssue[] = [];
  const warnings: RulesIssue[] = [];
  const locate = (node: Node | null | undefined): { line: number; col: number } => {
    const offset = node?.range?.[0];
    return offset === undefined ? { line: 1, col: 1 } : lines.linePos(offset);
  };
  const push = (to: RulesIssue[], node: Node | null | undefined, path: readonly PathSegment[], message: string) =>
    to.push({ file, ...locate(node), path: formatPath(path), message });
  return {
    file,
    issues,
    warnings,
    error: (node, path, message) => push(issues, node, path, message),
    warn: (node, path, message) => push(warnings, node, path, message),
    lineOf: (node) => locate(node).line,
    resolve(node) {
      let n = node;
      for (let hops = 0; isAlias(n) && hops < 100; hops++) n = n.resolve(doc);
      return (n ?? null) as Node | null;
    },
  };
}

export interface Entry {
  key: string;
  keyNode: Node;
  value: Node | null; // null for `key:` with nothing after it
}

export function describe(node: Node | null): string {
  if (node === null) return 'nothing';
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (isScalar(node)) {
    const v = node.value;
    if (v === null) return 'nothing';
    if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
    return String(v);
  }
  return 'an unsupported value';
}

/** Entries of a mapping, or null after reporting that something else was found. */
export function entriesOf(w: Walker, node: Node | null, path: readonly PathSegment[], at: Node | null = node): Entry[] | null {
  if (!isMap(node)) {
    w.error(node ?? at, path, `expected a mapping of keys, got ${describe(node)}`);
    return null;
  }
  const out: Entry[] = [];
  const seen = new Map<string, Node>();
  for (const pair of node.items) {
    const keyNode = w.resolve(pair.key);
    if (!isScalar(keyNode) || keyNode.value === null || typeof keyNode.value === 'object') {
      w.error(keyNode ?? node, path, 'keys must be plain text');
      continue;
    }
    // Checked here rather than by the YAML parser so the error can name the key's path.
    const first = seen.get(String(keyNode.value));
    if (first !== undefined) {
      w.error(keyNode, [...path, String(keyNode.value)], `duplicate key (first set at line ${w.lineOf(first)}); remove one of them`);
      continue;
    }
    seen.set(String(keyNode.value), keyNode);
    const value = w.resolve(pair.value);
    out.push({ key: String(keyNode.value), keyNode, value: isScalar(value) && value.value === null ? null : value });
  }
  return out;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

function unknownKeyMessage(key: string, allowed: readonly string[]): string {
  const near = allowed.find((k) => editDistance(k, key.toLowerCase()) <= 2);
  const hint = near === undefined ? '' : `; did you mean "${near}"?`;
  return `unknown key "${key}" (expected one of: ${allowed.join(', ')})${hint}`;
}

/** Reports keys outside `allowed`; returns only the known entries. */
export function knownEntries(w: Walker, entries: Entry[], allowed: readonly string[], path: readonly PathSegment[]): Entry[] {
  return entries.filter((e) => {
    if (allowed.includes(e.key)) return true;
    w.error(e.keyNode, [...path, e.key], unknownKeyMessage(e.key, allowed));
    return false;
  });
}

export function scalarValue(node: Node | null): unknown {
  if (node === null) return null;
  return isScalar(node) ? node.value : undefined;
}

export { isMap, isScalar, isSeq };
