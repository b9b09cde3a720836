import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { isMap, isScalar, LineCounter, parseDocument, type Node } from 'yaml';

/**
 * Every text the account page shows, from one flat YAML file an operator can translate. The
 * shipped file is the reference: an operator's file may leave keys out (they keep the shipped
 * text) but may not add keys, so a typo never silently shows the English text.
 */

export const STRING_KEYS = [
  'lang', 'site_name',
  'home_title', 'home_intro', 'signin_address_label', 'signin_submit', 'signin_sent_title', 'signin_sent_text', 'signin_sent_again',
  'signin_confirm_title', 'signin_confirm_text', 'signin_confirm_button',
  'invalid_link_title', 'invalid_link_text', 'invalid_link_action',
  'devices_title', 'devices_signed_in_as', 'devices_heading', 'devices_none', 'device_type', 'device_added', 'device_last_used', 'device_never_used',
  'rename_label', 'rename_submit', 'remove_submit', 'pending_heading', 'pending_none', 'pending_rejected', 'approve_after_all', 'refusals_heading', 'refusals_none',
  'reason_unknown_device', 'reason_no_device_proof', 'reason_protocol_deny', 'reason_limit', 'reason_other',
  'field_client', 'field_type', 'field_protocol', 'field_address', 'field_first_seen', 'field_last_seen', 'field_tries', 'field_when', 'field_reason',
  'unknown_client', 'unknown_address',
  'lock_heading', 'lock_current', 'lock_legend', 'lock_submit', 'lock_fixed',
  'mode_off_name', 'mode_off_text', 'mode_monitor_name', 'mode_monitor_text', 'mode_learn_name', 'mode_learn_text', 'mode_enforce_name', 'mode_enforce_text',
  'signout_button', 'signed_out_title', 'signed_out_text', 'back_to_devices', 'label_empty', 'mode_not_offered',
  'approve_title', 'approve_intro', 'approve_button', 'reject_button', 'approved_title', 'approved_text', 'rejected_title', 'rejected_text', 'rejected_where',
  'forbidden_title', 'forbidden_text', 'not_found_title', 'not_found_text', 'method_title', 'method_text', 'too_large_title', 'too_large_text',
  'bad_form_title', 'bad_form_text', 'refused_title', 'gone_title', 'gone_text', 'unavailable_title', 'unavailable_text',
] as const;

export type StringKey = (typeof STRING_KEYS)[number];
export type PortalStrings = Readonly<Record<StringKey, string>>;

/** Compiled to dist/src/portal/strings.js; the package root, which holds templates/, is three folders up. */
export const SHIPPED_STRINGS_FILE = fileURLToPath(new URL('../../../templates/portal-strings.yaml', import.meta.url));

/** A strings file is a page of text; anything bigger is a mistake (or not a strings file). */
export const MAX_STRINGS_FILE_BYTES = 256 * 1024;
/** One text is a sentence or two; a limit keeps a runaway value from bloating every page. */
export const MAX_STRING_LENGTH = 2000;

export interface StringsIssue { file: string; line: number; col: number; message: string }

export class PortalStringsError extends Error {
  override readonly name = 'PortalStringsError';
  constructor(readonly issues: readonly StringsIssue[]) {
    super(issues.map((i) => `${i.file}:${i.line}:${i.col}: ${i.message}`).join('\n'));
  }
}

const KNOWN = new Set<string>(STRING_KEYS);
const PLACEHOLDER = /\{([a-z_]+)\}/g;
const placeholders = (text: string): Set<string> => new Set([...text.matchAll(PLACEHOLDER)].map((m) => m[1]!));

/**
 * Parses one strings file into its texts. `reference`, when given, is the shipped set: a text may
 * only use the placeholders its shipped text has, since cidlock fills in nothing else.
 */
export function parsePortalStrings(text: string, file: string, reference?: PortalStrings): Partial<Record<StringKey, string>> {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const issues: StringsIssue[] = [];
  const at = (node: Node | null | undefined, message: string) => {
    const pos = lines.linePos(node?.range?.[0] ?? 0);
    issues.push({ file, line: pos.line, col: pos.col, message });
  };
  for (const e of doc.errors) {
    const pos = lines.linePos(e.pos[0]);
    issues.push({ file, line: pos.line, col: pos.col, message: `YAML syntax: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}` });
  }
  if (issues.length > 0) throw new PortalStringsError(issues);
  const out: Partial<Record<StringKey, string>> = {};
  const root = doc.contents;
  if (root === null || (isScalar(root) && root.value === null)) return out;
  if (!isMap(root)) {
    at(root, 'expected a mapping of keys to texts');
    throw new PortalStringsError(issues);
  }
  for (const pair of root.items) {
    const keyNode = pair.key as Node | null;
    const key = isScalar(keyNode) ? keyNode.value : undefined;
    if (typeof key !== 'string') {
      at(keyNode, 'expected a text key');
      continue;
    }
    if (!KNOWN.has(key)) {
      at(keyNode, `unknown key "${key}"`);
      continue;
    }
    const value = pair.value as Node | null;
    if (!isScalar(value) || typeof value.value !== 'string') {
      // `yes`, `12` or a nested list parse as something else than text: quoting is the fix.
      const nothing = value === null || (isScalar(value) && value.value === null);
      at(nothing ? keyNode : value, `${key}: expected a text (put it in quotes if it looks like a number or yes/no)`);
      continue;
    }
    const v = value.value;
    if (v.length > MAX_STRING_LENGTH) {
      at(value, `${key}: longer than ${MAX_STRING_LENGTH} characters`);
      continue;
    }
    if (reference !== undefined) {
      const allowed = placeholders(reference[key as StringKey]);
      const extra = [...placeholders(v)].filter((p) => !allowed.has(p));
      if (extra.length > 0) {
        at(value, `${key}: unknown placeholder ${extra.map((p) => `{${p}}`).join(', ')}${allowed.size > 0 ? ` (this text has ${[...allowed].map((p) => `{${p}}`).join(', ')})` : ' (this text has none)'}`);
        continue;
      }
    }
    out[key as StringKey] = v;
  }
  if (issues.length > 0) throw new PortalStringsError(issues);
  return out;
}

function readStrings(file: string): string {
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (e) {
    throw new PortalStringsError([{ file, line: 1, col: 1, message: `cannot read: ${(e as Error).message}` }]);
  }
  if (buf.length > MAX_STRINGS_FILE_BYTES) throw new PortalStringsError([{ file, line: 1, col: 1, message: `larger than ${MAX_STRINGS_FILE_BYTES} bytes` }]);
  return buf.toString('utf8');
}

function shipped(): PortalStrings {
  const got = parsePortalStrings(readStrings(SHIPPED_STRINGS_FILE), SHIPPED_STRINGS_FILE);
  const missing = STRING_KEYS.filter((k) => got[k] === undefined);
  if (missing.length > 0) throw new PortalStringsError([{ file: SHIPPED_STRINGS_FILE, line: 1, col: 1, message: `missing ${missing.join(', ')}` }]);
  return got as PortalStrings;
}

/** The shipped texts, with an operator's file (if given) laid over them. */
export function loadPortalStrings(file?: string): PortalStrings {
  const base = shipped();
  if (file === undefined) return Object.freeze({ ...base });
  return Object.freeze({ ...base, ...parsePortalStrings(readStrings(file), file, base) });
}
