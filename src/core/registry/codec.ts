import { MODES, type Mode } from '../rules/types.js';
import { RegistryError, type RegistryOp, type StoredDevice } from './types.js';

export const REGISTRY_FORMAT = 'cidlock-registry';
export const REGISTRY_VERSION = 2;
export const SNAPSHOT_HEADER = `${JSON.stringify({ format: REGISTRY_FORMAT, version: REGISTRY_VERSION })}\n`;

const HEX64 = /^[0-9a-f]{64}$/;
const TYPE = /^[A-Z0-9_-]{1,16}$/;

// Repeated small strings (kinds, types, sources) share one copy: millions of devices, a few values.
const interned = new Map<string, string>();
function intern(s: string): string {
  const hit = interned.get(s);
  if (hit !== undefined) return hit;
  if (interned.size < 10_000) interned.set(s, s);
  return s;
}

type DeviceTuple = [hash: string, kind: string, type: string, label: string, added: number, source: string];

export function encodeDevice(d: StoredDevice): DeviceTuple {
  return [d.hash, d.kind, d.type, d.label, d.added, d.source];
}

function decodeDevice(raw: unknown, where: string): StoredDevice {
  if (!Array.isArray(raw) || raw.length !== 6) throw new RegistryError('corrupt', `${where}: a device must be [hash, kind, type, label, added, source]`);
  const [hash, kind, type, label, added, source] = raw as unknown[];
  if (typeof hash !== 'string' || !HEX64.test(hash)) throw new RegistryError('corrupt', `${where}: hash must be 64 lowercase hex digits`);
  if (kind !== 'cid' && kind !== 'cert') throw new RegistryError('corrupt', `${where}: kind must be cid or cert`);
  if (typeof type !== 'string' || (kind === 'cert' ? type !== 'cert' : !TYPE.test(type))) throw new RegistryError('corrupt', `${where}: bad type`);
  if (typeof label !== 'string') throw new RegistryError('corrupt', `${where}: label must be text`);
  if (typeof added !== 'number' || !Number.isFinite(added)) throw new RegistryError('corrupt', `${where}: added must be a time in ms`);
  if (source !== 'admin' && source !== 'learn') throw new RegistryError('corrupt', `${where}: source must be admin or learn`);
  return { hash, kind: intern(kind) as 'cid' | 'cert', type: intern(type), label, added, source: intern(source) as 'admin' | 'learn' };
}

function mode(raw: unknown, where: string): Mode | null {
  if (raw === null) return null;
  if ((MODES as readonly unknown[]).includes(raw)) return raw as Mode;
  throw new RegistryError('corrupt', `${where}: mode must be one of ${MODES.join(', ')} or null`);
}

function parse(line: string, where: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (err) {
    throw new RegistryError('corrupt', `${where}: not valid JSON (${(err as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new RegistryError('corrupt', `${where}: expected an object`);
  return v as Record<string, unknown>;
}

export function checkSnapshotHeader(line: string, where: string): void {
  const h = parse(line, where);
  if (h.format !== REGISTRY_FORMAT) throw new RegistryError('corrupt', `${where}: not a ${REGISTRY_FORMAT} file`);
  if (h.version !== REGISTRY_VERSION) throw new RegistryError('corrupt', `${where}: version ${String(h.version)} is not supported (expected ${REGISTRY_VERSION})`);
}

/** One user line of the snapshot: {"u": user, "m"?: mode, "d": [device, ...]}, replayed as operations. */
export function snapshotLineOps(line: string, where: string, apply: (op: RegistryOp) => void): void {
  const o = parse(line, where);
  if (typeof o.u !== 'string' || o.u === '') throw new RegistryError('corrupt', `${where}: "u" must be a user name`);
  if (o.m !== undefined) apply({ op: 'mode', user: o.u, mode: mode(o.m, where) });
  if (!Array.isArray(o.d)) throw new RegistryError('corrupt', `${where}: "d" must be a list of devices`);
  for (let i = 0; i < o.d.length; i++) apply({ op: 'add', user: o.u, device: decodeDevice(o.d[i], `${where}: device ${i + 1}`) });
}

export function encodeSnapshotLine(user: string, m: Mode | undefined, devices: Iterable<StoredDevice>): string {
  const d = [...devices].map(encodeDevice);
  return `${JSON.stringify(m === undefined ? { u: user, d } : { u: user, m, d })}\n`;
}

export function encodeOp(op: RegistryOp): string {
  switch (op.op) {
    case 'add': return `${JSON.stringify({ op: 'add', u: op.user, d: encodeDevice(op.device) })}\n`;
    case 'remove': return `${JSON.stringify({ op: 'rm', u: op.user, h: op.hashes })}\n`;
    case 'mode': return `${JSON.stringify({ op: 'mode', u: op.user, m: op.mode })}\n`;
  }
}

export function decodeOp(line: string, where: string): RegistryOp {
  const o = parse(line, where);
  if (typeof o.u !== 'string' || o.u === '') throw new RegistryError('corrupt', `${where}: "u" must be a user name`);
  switch (o.op) {
    case 'add': return { op: 'add', user: o.u, device: decodeDevice(o.d, where) };
    case 'rm':
      if (!Array.isArray(o.h) || !o.h.every((h) => typeof h === 'string' && HEX64.test(h))) throw new RegistryError('corrupt', `${where}: "h" must be a list of hashes`);
      return { op: 'remove', user: o.u, hashes: o.h as string[] };
    case 'mode': return { op: 'mode', user: o.u, mode: mode(o.m, where) };
    default: throw new RegistryError('corrupt', `${where}: unknown operation ${JSON.stringify(o.op)}`);
  }
}
