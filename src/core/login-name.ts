/**
 * The one rule for login names, wherever they come from: Dovecot, Postfix, the rules file, the
 * CLI, the admin API and imports all go through here, so a name is compared the same way
 * everywhere.
 */

/** RFC 5321's longest address (64 + 1 + 255), with room to spare. */
export const MAX_LOGIN_LENGTH = 320;

/**
 * Lowercases ASCII only, as Dovecot's %Lu (the default auth_username_format) does: "ÄLICE" stays
 * "Älice" on both sides, so a name an administrator types matches the one Dovecot sends.
 */
export function lowerAscii(text: string): string {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x41 && c <= 0x5a) return text.replace(/[A-Z]+/g, (s) => s.toLowerCase());
  }
  return text;
}

/** Why a typed name is not a login name, or null when it is one. */
export function loginNameProblem(name: string): string | null {
  if (name === '') return 'empty';
  if (name.length > MAX_LOGIN_LENGTH) return `longer than ${MAX_LOGIN_LENGTH} characters`;
  // eslint-disable-next-line no-control-regex
  if (/[\s\x00-\x1f\x7f"]/.test(name)) return 'contains a space, a control character or a quote';
  return null;
}

/** A name typed by an administrator (CLI, API, rules, import): trimmed, lowercased, validated. */
export function parseLoginName(text: string): { ok: true; name: string } | { ok: false; error: string } {
  const name = lowerAscii(text.trim());
  const problem = loginNameProblem(name);
  return problem === null ? { ok: true, name } : { ok: false, error: `not a login name (${problem}): ${JSON.stringify(text.slice(0, 80))}` };
}

/**
 * The account a name from a mail server stands for. Never refuses: a mail server has already
 * accepted the name, and an answer of "bad request" would let Dovecot fall open. A name without a
 * domain gets `defaultDomain` (set it when Dovecot names accounts by local part, auth_username_format
 * = %Ln), so domain rules apply to it.
 */
export function accountName(name: string, defaultDomain: string): string {
  const lower = lowerAscii(name);
  return defaultDomain !== '' && lower !== '' && !lower.includes('@') ? `${lower}@${defaultDomain}` : lower;
}
