import { MODES, type Mode } from '../rules/types.js';
import { RegistryError, type Device, type RegistryData, type UserRecord } from './types.js';

export const REGISTRY_FORMAT = 'cidlock-registry';
export const REGISTRY_VERSION = 1;

const HEX64 = /^[0-9a-f]{64}$/;
const TYPE = /^[A-Z0-9_-]{1,16}$/;

function fail(where: string, what: string): never {
  throw new RegistryError(`${where}: ${what}`);
}

function decodeDevice(raw: unknown, where: string): Device {
  if (typeof raw !== 'object' || raw === null) fail(where, 'expected an object');
  const d = raw as Record<string, unknown>;
  const kind = d.kind;
  if (kind !== 'cid' && kind !== 'cert') fail(where, 'kind must be cid or cert');
  if (typeof d.hash !== 'string' || !HEX64.test(d.hash)) fail(where, 'hash must be 64 lowercase hex digits');
  if (typeof d.type !== 'string' || (kind === 'cert' ? d.type !== 'cert' : !TYPE.test(d.type))) fail(where, 'bad type');
  if (d.source !== 'admin' && d.source !== 'learn') fail(where, 'source must be admin or learn');
  if (typeof d.label !== 'string' || typeof d.added !== 'string') fail(where, 'label and added must be text');
  return { id: d.hash.slice(0, 12), kind, type: d.type, hash: d.hash, label: d.label, added: d.added, source: d.source };
}

export function decodeRegistry(text: string, file: string): RegistryData {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    fail(file, `not valid JSON (${(err as Error).message})`);
  }
  const top = raw as Record<string, unknown>;
  if (typeof top !== 'object' || top === null || top.format !== REGISTRY_FORMAT) fail(file, `not a ${REGISTRY_FORMAT} file`);
  if (top.version !== REGISTRY_VERSION) fail(file, `version ${String(top.version)} is not supported (expected ${REGISTRY_VERSION})`);
  const users = new Map<string, UserRecord>();
  const rawUsers = top.users;
  if (typeof rawUsers !== 'object' || rawUsers === null) fail(file, 'users must be an object');
  for (const [user, rec] of Object.entries(rawUsers)) {
    const where = `${file}: users[${JSON.stringify(user)}]`;
    if (typeof rec !== 'object' || rec === null) fail(where, 'expected an object');
    const r = rec as Record<string, unknown>;
    const out: UserRecord = { devices: [] };
    if (r.mode !== undefined) {
      if (!(MODES as readonly unknown[]).includes(r.mode)) fail(where, `mode must be one of ${MODES.join(', ')}`);
      out.mode = r.mode as Mode;
    }
    if (!Array.isArray(r.devices)) fail(where, 'devices must be a list');
    out.devices = r.devices.map((d, i) => decodeDevice(d, `${where}.devices[${i}]`));
    users.set(user, out);
  }
  return { users };
}

/** One line per user keeps the file readable and diffable while staying compact at scale. */
export function encodeRegistry(data: RegistryData): string {
  const lines: string[] = [];
  const names = [...data.users.keys()].sort();
  for (const name of names) {
    const rec = data.users.get(name)!;
    if (rec.mode === undefined && rec.devices.length === 0) continue;
    const devices = rec.devices.map(({ kind, type, hash, label, added, source }) => ({ kind, type, hash, label, added, source }));
    const body = rec.mode === undefined ? { devices } : { mode: rec.mode, devices };
    lines.push(`${JSON.stringify(name)}:${JSON.stringify(body)}`);
  }
  return `{"format":${JSON.stringify(REGISTRY_FORMAT)},"version":${REGISTRY_VERSION},"users":{\n${lines.join(',\n')}\n}}\n`;
}
