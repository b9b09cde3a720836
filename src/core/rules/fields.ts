import type { Node } from 'yaml';
import { describe, isSeq, scalarValue, type Entry, type PathSegment, type Walker } from './yaml-walk.js';

export function str(w: Walker, e: Entry, path: PathSegment[], what = 'text'): string | undefined {
  const v = scalarValue(e.value);
  if (typeof v === 'string') return v;
  w.error(e.value ?? e.keyNode, path, `expected ${what}, got ${describe(e.value)}`);
  return undefined;
}

export function bool(w: Walker, e: Entry, path: PathSegment[]): boolean | undefined {
  const v = scalarValue(e.value);
  if (typeof v === 'boolean') return v;
  const hint = typeof v === 'string' && /^(yes|no|on|off|y|n)$/i.test(v) ? ' (YAML 1.2 reads yes/no/on/off as text)' : '';
  w.error(e.value ?? e.keyNode, path, `expected true or false, got ${describe(e.value)}${hint}`);
  return undefined;
}

export function oneOf<T extends string>(w: Walker, node: Node | null, at: Node, path: PathSegment[], allowed: readonly T[]): T | undefined {
  const v = scalarValue(node);
  if (typeof v === 'string' && (allowed as readonly string[]).includes(v)) return v as T;
  w.error(node ?? at, path, `expected one of ${allowed.join(', ')}, got ${describe(node)}`);
  return undefined;
}

export function listOf(w: Walker, e: Entry, path: PathSegment[], max: number): Array<{ node: Node | null; path: PathSegment[] }> | undefined {
  if (!isSeq(e.value)) {
    w.error(e.value ?? e.keyNode, path, `expected a list, got ${describe(e.value)}`);
    return undefined;
  }
  if (e.value.items.length > max) {
    w.error(e.value, path, `at most ${max} entries are allowed, got ${e.value.items.length}`);
    return undefined;
  }
  return e.value.items.map((item, i) => ({ node: w.resolve(item), path: [...path, i] }));
}

