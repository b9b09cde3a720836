import { formatIp, parseIp } from '../ip.js';

/** The /24 (or /64, configurable) an address belongs to, as text: "198.51.100.0/24". */
export function networkKey(remote: string, prefixV4: number, prefixV6: number): string | null {
  const ip = parseIp(remote);
  if (ip === null) return null;
  const prefix = ip.v4 ? 96 + prefixV4 : prefixV6;
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    bytes[i] = ip.bytes[i]! & (0xff << (8 - bits)) & 0xff;
  }
  return `${formatIp({ bytes, v4: ip.v4 })}/${ip.v4 ? prefixV4 : prefixV6}`;
}
