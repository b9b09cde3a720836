/**
 * Compiles a shell-style glob ("Thunderbird*", "K-9 Mail ?.?") into a case-insensitive matcher.
 * Only `*` and `?` are special: client names are free text and operators expect no other syntax.
 */
export function compileGlob(pattern: string): (text: string) => boolean {
  let source = '';
  for (const ch of pattern) {
    if (ch === '*') source += '.*';
    else if (ch === '?') source += '.';
    else source += ch.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
  }
  const re = new RegExp(`^${source}$`, 'is');
  return (text) => re.test(text);
}
