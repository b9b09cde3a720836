const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses "30m", "1h30m", "45s", "2d", "500ms" into milliseconds. A bare number is refused:
 * "30" is ambiguous (seconds? minutes?) and operators misread it.
 */
export function parseDuration(text: string): number | null {
  if (text.length === 0 || text.length > 32) return null;
  const re = /(\d+)(ms|s|m|h|d)/gy;
  let total = 0;
  let pos = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    total += Number(m[1]) * (UNIT_MS[m[2]!] ?? 0);
    pos = re.lastIndex;
  }
  if (pos !== text.length || !Number.isSafeInteger(total)) return null;
  return total;
}

export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  const parts: string[] = [];
  let rest = ms;
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = UNIT_MS[unit]!;
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  if (rest > 0) parts.push(`${rest}ms`);
  return parts.join('');
}
