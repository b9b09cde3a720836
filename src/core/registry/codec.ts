import { MODES, type Mode } from '../rules/types.js';
import { RegistryError, type PendingDevice, type RegistryOp, type StoredDevice, type UserSnapshot } from './types.js';

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

type DeviceTuple = [hash: string, kind: string, type: string, label: string, added: number, source: string, used?: number];

export function encodeDevice(d: StoredDevice): DeviceTuple {
  return d.used === undefined ? [d.hash, d.kind, d.type, d.label, d.added, d.source] : [d.hash, d.kind, d.type, d.label, d.added, d.source, d.used];
}

const SOURCES = ['admin', 'learn', 'approved'];
const LINK_ID = /^[0-9a-f]{32}$/;
/** Bounds on what a refused client tells about itself: it is untrusted text that ends up in mail and pages. */
export const PENDING_CLIENT_MAX = 120;
const PENDING_PROTOCOL_MAX = 16;
const PENDING_REMOTE_MAX = 64;
const LABEL_TEXT_MAX = 200;

const epoch = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

function decodeDevice(raw: unknown, where: string): StoredDevice {
  if (!Array.isArray(raw) || (raw.length !== 6 && raw.length !== 7)) throw new RegistryError('corrupt', `${where}: a device must be [hash, kind, type, label, added, source, used?]`);
  const [hash, kind, type, label, added, source, used] = raw as unknown[];
  if (typeof hash !== 'string' || !HEX64.test(hash)) throw new RegistryError('corrupt', `${where}: hash must be 64 lowercase hex digits`);
  if (kind !== 'cid' && kind !== 'cert') throw new RegistryError('corrupt', `${where}: kind must be cid or cert`);
  if (typeof type !== 'string' || (kind === 'cert' ? type !== 'cert' : !TYPE.test(type))) throw new RegistryError('corrupt', `${where}: bad type`);
  if (typeof label !== 'string') throw new RegistryError('corrupt', `${where}: label must be text`);
  if (typeof added !== 'number' || !Number.isFinite(added)) throw new RegistryError('corrupt', `${where}: added must be a time in ms`);
  if (typeof source !== 'string' || !SOURCES.includes(source)) throw new RegistryError('corrupt', `${where}: source must be one of ${SOURCES.join(', ')}`);
  if (used !== undefined && !epoch(used)) throw new RegistryError('corrupt', `${where}: used must be a time in ms`);
  const d: StoredDevice = { hash, kind: intern(kind) as 'cid' | 'cert', type: intern(type), label, added, source: intern(source) as StoredDevice['source'] };
  if (used !== undefined) d.used = used;
  return d;
}

type PendingTuple = [hash: string, kind: string, type: string, client: string, protocol: string, remote: string | null, first: number, last: number, tries: number, state: string, noticed: number];

export function encodePending(p: PendingDevice): PendingTuple {
  return [p.hash, p.kind, p.type, p.client, p.protocol, p.remote, p.first, p.last, p.tries, p.state, p.noticed];
}

function decodePending(raw: unknown, where: string): PendingDevice {
  if (!Array.isArray(raw) || raw.length !== 11) throw new RegistryError('corrupt', `${where}: a pending device must be [hash, kind, type, client, protocol, remote, first, last, tries, state, noticed]`);
  const [hash, kind, type, client, protocol, remote, first, last, tries, state, noticed] = raw as unknown[];
  if (typeof hash !== 'string' || !HEX64.test(hash)) throw new RegistryError('corrupt', `${where}: hash must be 64 lowercase hex digits`);
  if (kind !== 'cid' && kind !== 'cert') throw new RegistryError('corrupt', `${where}: kind must be cid or cert`);
  if (typeof type !== 'string' || (kind === 'cert' ? type !== 'cert' : !TYPE.test(type))) throw new RegistryError('corrupt', `${where}: bad type`);
  if (typeof client !== 'string' || client.length > PENDING_CLIENT_MAX) throw new RegistryError('corrupt', `${where}: client must be text of at most ${PENDING_CLIENT_MAX} characters`);
  if (typeof protocol !== 'string' || protocol.length > PENDING_PROTOCOL_MAX) throw new RegistryError('corrupt', `${where}: bad protocol`);
  if (remote !== null && (typeof remote !== 'string' || remote.length > PENDING_REMOTE_MAX)) throw new RegistryError('corrupt', `${where}: bad remote address`);
  if (!epoch(first) || !epoch(last) || !epoch(noticed)) throw new RegistryError('corrupt', `${where}: first, last and noticed must be times in ms`);
  if (typeof tries !== 'number' || !Number.isInteger(tries) || tries < 0) throw new RegistryError('corrupt', `${where}: tries must be a count`);
  if (state !== 'pending' && state !== 'rejected') throw new RegistryError('corrupt', `${where}: state must be pending or rejected`);
  return { hash, kind: intern(kind) as 'cid' | 'cert', type: intern(type), client, protocol: intern(protocol), remote, first, last, tries, state, noticed };
}

function hashes(raw: unknown, where: string): string[] {
  if (!Array.isArray(raw) || !raw.every((h) => typeof h === 'string' && HEX64.test(h))) throw new RegistryError('corrupt', `${where}: "h" must be a list of hashes`);
  return raw as string[];
}

function linkId(raw: unknown, where: string): string {
  if (typeof raw !== 'string' || !LINK_ID.test(raw)) throw new RegistryError('corrupt', `${where}: a link id must be 32 hex digits`);
  return raw;
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
  if (o.p !== undefined) {
    if (!Array.isArray(o.p)) throw new RegistryError('corrupt', `${where}: "p" must be a list of pending devices`);
    for (let i = 0; i < o.p.length; i++) apply({ op: 'pend', user: o.u, pending: decodePending(o.p[i], `${where}: pending device ${i + 1}`) });
  }
  if (o.n !== undefined) {
    if (!Array.isArray(o.n) || !o.n.every(epoch)) throw new RegistryError('corrupt', `${where}: "n" must be a list of times in ms`);
    for (const at of o.n as number[]) apply({ op: 'notice', user: o.u, at });
  }
  if (o.l !== undefined) {
    if (!Array.isArray(o.l)) throw new RegistryError('corrupt', `${where}: "l" must be a list of sign-in links`);
    for (let i = 0; i < o.l.length; i++) {
      const l = o.l[i] as unknown;
      if (!Array.isArray(l) || l.length !== 2 || !epoch(l[1])) throw new RegistryError('corrupt', `${where}: link ${i + 1} must be [id, expiry]`);
      apply({ op: 'link', user: o.u, id: linkId(l[0], `${where}: link ${i + 1}`), exp: l[1] as number });
    }
  }
}

export function encodeSnapshotLine(user: string, rec: UserSnapshot): string {
  const line: Record<string, unknown> = { u: user };
  if (rec.mode !== undefined) line.m = rec.mode;
  line.d = [...rec.devices].map(encodeDevice);
  const p = rec.pending === undefined ? [] : [...rec.pending].map(encodePending);
  if (p.length > 0) line.p = p;
  const l = rec.links === undefined ? [] : [...rec.links];
  if (l.length > 0) line.l = l;
  const n = rec.notices === undefined ? [] : [...rec.notices];
  if (n.length > 0) line.n = n;
  return `${JSON.stringify(line)}\n`;
}

export function encodeOp(op: RegistryOp): string {
  switch (op.op) {
    case 'add': return `${JSON.stringify({ op: 'add', u: op.user, d: encodeDevice(op.device) })}\n`;
    case 'remove': return `${JSON.stringify({ op: 'rm', u: op.user, h: op.hashes })}\n`;
    case 'mode': return `${JSON.stringify({ op: 'mode', u: op.user, m: op.mode })}\n`;
    case 'label': return `${JSON.stringify({ op: 'label', u: op.user, h: op.hash, l: op.label })}\n`;
    case 'used': return `${JSON.stringify({ op: 'used', u: op.user, h: op.hashes, t: op.at })}\n`;
    case 'pend': return `${JSON.stringify({ op: 'pend', u: op.user, p: encodePending(op.pending) })}\n`;
    case 'unpend': return `${JSON.stringify({ op: 'unpend', u: op.user, h: op.hashes })}\n`;
    case 'notice': return `${JSON.stringify({ op: 'notice', u: op.user, t: op.at })}\n`;
    case 'unnotice': return `${JSON.stringify({ op: 'unnotice', u: op.user, t: op.at })}\n`;
    case 'link': return `${JSON.stringify({ op: 'link', u: op.user, i: op.id, e: op.exp })}\n`;
    case 'unlink': return `${JSON.stringify({ op: 'unlink', u: op.user, i: op.id })}\n`;
  }
}

export function decodeOp(line: string, where: string): RegistryOp {
  const o = parse(line, where);
  if (typeof o.u !== 'string' || o.u === '') throw new RegistryError('corrupt', `${where}: "u" must be a user name`);
  switch (o.op) {
    case 'add': return { op: 'add', user: o.u, device: decodeDevice(o.d, where) };
    case 'rm': return { op: 'remove', user: o.u, hashes: hashes(o.h, where) };
    case 'mode': return { op: 'mode', user: o.u, mode: mode(o.m, where) };
    case 'label':
      if (typeof o.h !== 'string' || !HEX64.test(o.h) || typeof o.l !== 'string' || o.l.length > LABEL_TEXT_MAX) throw new RegistryError('corrupt', `${where}: a label change needs "h" (a hash) and "l" (text)`);
      return { op: 'label', user: o.u, hash: o.h, label: o.l };
    case 'used':
      if (!epoch(o.t)) throw new RegistryError('corrupt', `${where}: "t" must be a time in ms`);
      return { op: 'used', user: o.u, hashes: hashes(o.h, where), at: o.t };
    case 'pend': return { op: 'pend', user: o.u, pending: decodePending(o.p, where) };
    case 'unpend': return { op: 'unpend', user: o.u, hashes: hashes(o.h, where) };
    case 'notice':
    case 'unnotice':
      if (!epoch(o.t)) throw new RegistryError('corrupt', `${where}: "t" must be a time in ms`);
      return { op: o.op, user: o.u, at: o.t };
    case 'link':
      if (!epoch(o.e)) throw new RegistryError('corrupt', `${where}: "e" must be a time in ms`);
      return { op: 'link', user: o.u, id: linkId(o.i, where), exp: o.e };
    case 'unlink': return { op: 'unlink', user: o.u, id: linkId(o.i, where) };
    default: throw new RegistryError('corrupt', `${where}: unknown operation ${JSON.stringify(o.op)}`);
  }
}
