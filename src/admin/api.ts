import { accountName, parseLoginName } from '../core/login-name.js';
import type { EventSink } from '../alerts/events.js';
import { parseCid } from '../core/cid.js';
import type { Engine } from '../core/engine.js';
import { certFingerprints, normalizeFingerprint } from '../core/fingerprint.js';
import type { DeviceInput } from '../core/registry/registry.js';
import { RegistryError, type RegistryErrorCode } from '../core/registry/types.js';
import { effectivePolicy } from '../core/rules/resolve.js';
import { MODES, type Mode } from '../core/rules/types.js';
import { approvePending, livePending, pendingById, rejectPending } from '../core/pending.js';
import type { PendingDevice } from '../core/registry/types.js';

export interface ApiResponse { status: number; body: unknown }

const ok = (body: unknown, status = 200): ApiResponse => ({ status, body });
const err = (status: number, error: string): ApiResponse => ({ status, body: { error } });

function userFrom(segment: string, defaultDomain: string): string | null {
  let r;
  try {
    r = parseLoginName(decodeURIComponent(segment));
  } catch {
    return null;
  }
  return r.ok ? accountName(r.name, defaultDomain) : null;
}

const deviceView = (d: { id: string; kind: string; type: string; label: string; added: string; source: string }) =>
  ({ id: d.id, kind: d.kind, type: d.type, label: d.label, added: d.added, source: d.source });

function deviceInput(body: Record<string, unknown>): DeviceInput | string {
  const label = typeof body.label === 'string' ? body.label : undefined;
  const given = ['cid', 'cert_fingerprint', 'cert_pem'].filter((k) => body[k] !== undefined);
  if (given.length !== 1) return 'give exactly one of "cid" ("TYPE TOKEN"), "cert_fingerprint" or "cert_pem"';
  if (typeof body.cid === 'string') {
    const c = parseCid(body.cid);
    return c.ok ? { kind: 'cid', cid: c.cid, ...(label !== undefined ? { label } : {}) } : c.reason;
  }
  if (typeof body.cert_fingerprint === 'string') {
    const fp = normalizeFingerprint(body.cert_fingerprint);
    return fp === null ? 'cert_fingerprint: expected a SHA-256 fingerprint (64 hex digits, colons allowed)' : { kind: 'cert', fingerprint: fp, ...(label !== undefined ? { label } : {}) };
  }
  if (typeof body.cert_pem === 'string') {
    try {
      const fp = certFingerprints(body.cert_pem);
      return { kind: 'cert', fingerprint: fp.pubkey, label: label ?? fp.subject };
    } catch (e) {
      return `cert_pem: ${(e as Error).message}`;
    }
  }
  return 'values must be strings';
}

/**
 * Registry failures as HTTP statuses: a portal retries a 503 later, fixes its request after a 409,
 * and pages someone after a 500.
 */
const REGISTRY_STATUS: Record<RegistryErrorCode, number> = { ambiguous: 409, locked: 503, io: 503, corrupt: 500 };

/**
 * The self-service API a customer portal calls: a user's devices, mode and recent refusals.
 * Routing and validation only; the registry does the work under its lock, as the CLI does.
 */
export async function handleApi(engine: Engine, events: EventSink, method: string, path: string, body: unknown): Promise<ApiResponse> {
  const m = /^\/api\/users\/([^/]+)(?:\/(devices|mode|refusals|pending)(?:\/([0-9a-fA-F]{6,64}))?)?\/?$/.exec(path);
  if (m === null) return err(404, 'unknown API path; see the README for the routes');
  const user = userFrom(m[1]!, engine.rules.accounts.defaultDomain);
  if (user === null) return err(400, 'not a login name');
  const what = m[2];
  const id = m[3];
  const reg = engine.registry;
  try {
    if (what === undefined && method === 'GET') {
      const eff = effectivePolicy(engine.rules, user, reg.settings(user));
      return ok({ user, mode: eff.mode, mode_set_by: eff.sources.mode, registry_mode: reg.settings(user).mode ?? null, devices: reg.devices(user).map(deviceView) });
    }
    if (what === 'devices' && id === undefined && method === 'GET') return ok({ user, devices: reg.devices(user).map(deviceView) });
    if (what === 'devices' && id === undefined && method === 'POST') {
      if (typeof body !== 'object' || body === null || Array.isArray(body)) return err(400, 'expected a JSON object');
      const input = deviceInput(body as Record<string, unknown>);
      if (typeof input === 'string') return err(400, input);
      const r = await reg.add(user, input, 'admin');
      if (r.status === 'full') return err(409, 'device limit reached');
      if (r.status === 'added') events.emit({ event: 'device_registered', user, device: r.device.id, kind: r.device.kind, type: r.device.type, source: 'admin', label: r.device.label });
      return ok({ status: r.status, device: deviceView(r.device) }, r.status === 'added' ? 201 : 200);
    }
    if (what === 'devices' && id !== undefined && method === 'DELETE') {
      const removed = await reg.remove(user, { id });
      if (removed.length === 0) return err(404, 'no such device');
      for (const d of removed) events.emit({ event: 'device_removed', user, device: d.id, kind: d.kind, source: 'admin' });
      return ok({ removed: removed.map(deviceView) });
    }
    if (what === 'mode' && method === 'PUT') {
      const mode = (body as { mode?: unknown } | null)?.mode;
      if (mode !== null && !(typeof mode === 'string' && (MODES as readonly string[]).includes(mode))) return err(400, `"mode" must be one of ${MODES.join(', ')}, or null to remove it`);
      await reg.setMode(user, mode as Mode | null);
      events.emit({ event: 'user_mode_set', user, mode: mode as string | null, source: 'admin' });
      const eff = effectivePolicy(engine.rules, user, reg.settings(user));
      return ok({ user, registry_mode: mode, mode: eff.mode, mode_set_by: eff.sources.mode });
    }
    if (what === 'refusals' && method === 'GET') return ok({ user, refusals: engine.defences.recentRefusals(user) });
    if (what === 'pending') return await pendingRoute(engine, events, method, user, id, body);
    return err(405, `${method} is not served on this path`);
  } catch (e) {
    if (e instanceof RegistryError) return err(REGISTRY_STATUS[e.code], `registry: ${e.message}`);
    throw e;
  }
}

const pendingView = (p: PendingDevice) => ({
  id: p.hash.slice(0, 12), kind: p.kind, type: p.type, state: p.state, tries: p.tries, first: new Date(p.first).toISOString(),
  last: new Date(p.last).toISOString(), protocol: p.protocol, remote: p.remote, client: p.client,
});

/** GET the pending devices; POST { "answer": "approve" | "reject", "label"? } to one of them, as the operator. */
async function pendingRoute(engine: Engine, events: EventSink, method: string, user: string, id: string | undefined, body: unknown): Promise<ApiResponse> {
  const reg = engine.registry;
  const now = Date.now();
  const expireMs = engine.rules.pending.expireMs;
  if (id === undefined) {
    if (method !== 'GET') return err(405, `${method} is not served on this path`);
    return ok({ user, pending: livePending(reg, user, now, expireMs).map(pendingView) });
  }
  if (method !== 'POST') return err(405, `${method} is not served on this path`);
  const b = (typeof body === 'object' && body !== null && !Array.isArray(body) ? body : {}) as Record<string, unknown>;
  if (b.answer !== 'approve' && b.answer !== 'reject') return err(400, '"answer" must be "approve" or "reject"');
  if (b.label !== undefined && (typeof b.label !== 'string' || b.answer !== 'approve')) return err(400, '"label" is text, for approve');
  const hits = pendingById(reg, user, id, expireMs, now);
  if (hits.length > 1) return err(409, `pending device ID ${id} is ambiguous: give more digits`);
  if (hits.length === 0) return err(404, 'no such pending device');
  const p = hits[0]!;
  if (b.answer === 'approve') {
    const d = await approvePending(reg, user, p.hash, { now, expireMs, source: 'admin', ...(typeof b.label === 'string' ? { label: b.label } : {}) });
    if (d === null) return err(404, 'no longer pending');
    events.emit({ event: 'device_registered', user, device: d.hash.slice(0, 12), kind: d.kind, type: d.type, source: 'admin', label: d.label });
    return ok({ status: 'approved', device: { id: d.hash.slice(0, 12), kind: d.kind, type: d.type, label: d.label, added: new Date(d.added).toISOString(), source: d.source } });
  }
  if (!(await rejectPending(reg, user, p.hash, { now, expireMs }))) return err(409, 'not waiting for an answer (rejected already)');
  events.emit({ event: 'device_rejected', user, device: p.hash.slice(0, 12), source: 'admin' });
  return ok({ status: 'rejected', id: p.hash.slice(0, 12) });
}
