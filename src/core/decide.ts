import { createHash } from 'node:crypto';
import { cidText, type Cid } from './cid.js';
import { findNetwork } from './ip.js';
import type { Registry } from './registry/registry.js';
import type { AuthRequest } from './request.js';
import { effectivePolicy, protocolKey, type EffectivePolicy, type LayerName } from './rules/resolve.js';
import type { EvidenceKind, Mode, Protocol, ProtocolRule, Rules } from './rules/types.js';
import type { VouchLookup } from './vouches.js';
import { formatDuration } from './duration.js';

export type Action = 'allow' | 'reject' | 'delay';

export type Reason =
  | 'mode_off'
  | 'trusted_network'
  | 'protocol_allow'
  | 'protocol_deny'
  | 'registered_device'
  | 'learning'
  | 'device_type'
  | 'vouched'
  | 'unknown_device'
  | 'no_device_proof'
  | 'limit';

export type EvidenceStatus =
  | 'registered' | 'unregistered' | 'ignored' | 'malformed' | 'matched' | 'unmatched' | 'valid' | 'expired' | 'revoked' | 'absent';

/** What was seen and what it counted for. Never holds a raw CID: only a device id or hash prefix. */
export interface Evidence {
  kind: EvidenceKind | 'network';
  status: EvidenceStatus;
  /** This evidence is what decided the outcome. */
  used: boolean;
  /** The protocol's rule accepts this kind of evidence. */
  accepted: boolean;
  device?: string;
  detail: string;
}

/**
 * A device to register if the login that presented it succeeds (learn mode). `slot` names it
 * among the user's devices being learned (its registry hash, or a hash of the CID while the
 * registry has no secret yet): the engine reserves the slot until the login's outcome is known.
 */
export type LearnCandidate =
  | { kind: 'cid'; cid: Cid; hashPrefix: string; slot: string; label: string; maxDevices: number }
  | { kind: 'cert'; fingerprint: string; slot: string; label: string; maxDevices: number };

export interface Decision {
  action: Action;
  seconds?: number;
  mode: Mode;
  would_reject: boolean;
  reason: Reason;
  /** Path of the rules key that decided, e.g. `users["alice@example.com"].mode` or `policy.protocols.imap`. */
  rule: string;
  /** Which layer set the user's mode: default, server, domain, registry or user (the rules file's users:). */
  layer: LayerName;
  /** Human summary of why, one sentence. */
  why: string;
  evidence: Evidence[];
  protocol: { name: Protocol; rule: ProtocolRule; from: string };
  /** Text for a refused client; "" lets the server send its generic failure. */
  message: string;
  /** The registered device that proved this login (it vouches for the address once the login succeeds). */
  proven?: { id: string; hash: string };
  learn?: LearnCandidate;
  /** An attack-defence limit that applies: enforced, or only noted (defences or the account in monitor mode). */
  limit?: { rule: string; key: string; action: string; count: number; enforced: boolean };
}

export interface DecideContext {
  rules: Rules;
  registry: Pick<Registry, 'settings' | 'findCid' | 'findCert' | 'deviceCount' | 'cidHash' | 'hasDevice'>;
  vouches: VouchLookup;
  now: number;
  /**
   * Devices of the user admitted by learn mode whose registration is still pending, other than
   * `slot`: they count against max_devices, so concurrent logins cannot admit more than it allows.
   */
  learning?: (user: string, slot: string) => number;
  /**
   * Why no device can be registered now (the shared store several hosts write to is unreachable),
   * or undefined when one can. Learn mode then refuses new devices, as enforce would, rather than
   * admit a device whose registration would be lost.
   */
  registryReadOnly?: string;
}

type Outcome = { allow: true; reason: Reason; rule: string; why: string } | { allow: false; reason: Reason; rule: string; why: string };

/** The registry hash when there is one; before the first registration made the secret, an in-memory stand-in. */
function learnSlot(hash: string | null, cid: Cid): string {
  return hash ?? `unkeyed:${createHash('sha256').update(cidText(cid)).digest('hex')}`;
}

function describeRule(rule: ProtocolRule): string {
  return typeof rule === 'string' ? rule : rule.length === 0 ? '[] (nothing)' : `[${rule.join(', ')}]`;
}

/**
 * The whole policy in one pure function: same inputs, same decision, no I/O. It says which rule
 * decided and what evidence it saw, so a refused login can always be explained.
 */
export function decide(req: AuthRequest, ctx: DecideContext): Decision {
  const { rules, registry, vouches, now } = ctx;
  const eff: EffectivePolicy = effectivePolicy(rules, req.user, registry.settings(req.user));
  const modeFrom = eff.sources.mode!;
  const proto = protocolKey(req.protocol);
  const protoRule = eff.protocols[proto];
  const protoFrom = eff.sources[`protocols.${proto}`]!.path;
  const accepted = (k: EvidenceKind) => typeof protoRule !== 'string' && protoRule.includes(k);
  // The login plugin accepts CLIENTID only over TLS, whatever the login's own channel says.
  const cidTls = req.tls || req.cidVia === 'clientid';
  const evidence: Evidence[] = [];
  let proven: { id: string; hash: string } | undefined;
  let learn: LearnCandidate | undefined;

  const finish = (o: Outcome): Decision => {
    const wouldReject = !o.allow && eff.mode === 'monitor';
    const action: Action = o.allow || wouldReject ? 'allow' : 'reject';
    const d: Decision = {
      action,
      mode: eff.mode,
      would_reject: wouldReject,
      reason: o.reason,
      rule: o.rule,
      layer: modeFrom.layer,
      why: o.why,
      evidence,
      protocol: { name: proto, rule: protoRule, from: protoFrom },
      message: action === 'allow' ? '' : eff.message,
    };
    if (o.allow && proven !== undefined) d.proven = proven;
    if (o.allow && learn !== undefined) d.learn = learn;
    return d;
  };

  if (eff.mode === 'off') {
    return finish({ allow: true, reason: 'mode_off', rule: modeFrom.path, why: `mode is off for this user (${modeFrom.path})` });
  }

  if (req.remote !== null && eff.networks.length > 0) {
    const net = findNetwork(eff.networks, req.remote);
    if (net !== null) {
      const i = eff.networks.indexOf(net);
      const path = `${eff.sources.networks!.path}[${i}]`;
      evidence.push({ kind: 'network', status: 'matched', used: true, accepted: true, detail: `${req.remote} is in ${net.text}` });
      return finish({ allow: true, reason: 'trusted_network', rule: path, why: `client address ${req.remote} is in the trusted network ${net.text} (${path})` });
    }
  }
  if (protoRule === 'allow') {
    return finish({ allow: true, reason: 'protocol_allow', rule: protoFrom, why: `${proto} is set to allow (${protoFrom})` });
  }
  if (protoRule === 'deny') {
    return finish({ allow: false, reason: 'protocol_deny', rule: protoFrom, why: `${proto} is set to deny (${protoFrom})` });
  }

  // Gather every kind of evidence first so the explanation shows all of it, decided or not.
  let registeredCid: { id: string; hash: string } | undefined;
  let unknownCid: Cid | undefined;
  if (req.cidProblem !== undefined) {
    evidence.push({ kind: 'cid', status: 'malformed', used: false, accepted: accepted('cid'), detail: `${req.cidProblem}; counted as no CID` });
  } else if (req.cid !== undefined) {
    const hashPrefix = registry.cidHash(req.cid)?.slice(0, 12);
    const how = `${req.cid.type} CID${req.cidVia === 'clientid' ? ' (CLIENTID command)' : req.cidVia === 'imap_id' ? ' (IMAP ID)' : ''}`;
    const also = req.cidMismatch === true ? '; the IMAP ID carried a different CID, ignored' : '';
    if (eff.require_tls && !cidTls) {
      evidence.push({ kind: 'cid', status: 'ignored', used: false, accepted: accepted('cid'), detail: `${how} sent without TLS and require_tls is on (${eff.sources.require_tls!.path}); ignored` });
    } else {
      const dev = registry.findCid(req.user, req.cid);
      if (dev !== undefined) {
        registeredCid = { id: dev.id, hash: dev.hash };
        evidence.push({ kind: 'cid', status: 'registered', used: false, accepted: accepted('cid'), device: dev.id, detail: `${how} of registered device ${dev.id}${dev.label ? ` (${dev.label})` : ''}${also}` });
      } else {
        unknownCid = req.cid;
        evidence.push({ kind: 'cid', status: 'unregistered', used: false, accepted: accepted('cid'), ...(hashPrefix ? { device: hashPrefix } : {}), detail: `${how} not registered for ${req.user}${also}` });
      }
    }
  } else if (accepted('cid')) {
    evidence.push({ kind: 'cid', status: 'absent', used: false, accepted: true, detail: 'no CID was sent' });
  }

  let registeredCert: { id: string; hash: string } | undefined;
  let unknownCert: string | undefined;
  if (req.certFingerprints.length > 0) {
    const dev = registry.findCert(req.user, req.certFingerprints);
    if (dev !== undefined) {
      registeredCert = { id: dev.id, hash: dev.hash };
      evidence.push({ kind: 'cert', status: 'registered', used: false, accepted: accepted('cert'), device: dev.id, detail: `client certificate of registered device ${dev.id}${dev.label ? ` (${dev.label})` : ''}` });
    } else {
      unknownCert = req.certFingerprints[0];
      evidence.push({ kind: 'cert', status: 'unregistered', used: false, accepted: accepted('cert'), device: unknownCert!.slice(0, 12), detail: `client certificate ${unknownCert!.slice(0, 12)} not registered for ${req.user}` });
    }
  } else if (accepted('cert')) {
    evidence.push({ kind: 'cert', status: 'absent', used: false, accepted: true, detail: 'no client certificate' });
  }

  let typeMatch: string | undefined;
  if (eff.device_types.patterns.length > 0 && (accepted('device_type') || req.clientName !== undefined)) {
    if (req.clientName === undefined) {
      evidence.push({ kind: 'device_type', status: 'absent', used: false, accepted: accepted('device_type'), detail: 'the client sent no name' });
    } else {
      typeMatch = eff.device_types.match(req.clientName);
      evidence.push({
        kind: 'device_type', status: typeMatch === undefined ? 'unmatched' : 'matched', used: false, accepted: accepted('device_type'),
        detail: typeMatch === undefined
          ? `client name ${JSON.stringify(req.clientName)} matches none of ${eff.sources.device_types!.path}`
          : `client name ${JSON.stringify(req.clientName)} matches ${JSON.stringify(typeMatch)}`,
      });
    }
  }

  let vouch: { device: string } | undefined;
  if (accepted('vouch')) {
    const v = req.remote === null ? undefined : vouches.get(req.user, req.remote);
    if (v === undefined) {
      evidence.push({ kind: 'vouch', status: 'absent', used: false, accepted: true, detail: `no device proven for ${req.user} from ${req.remote ?? 'this address'} recently` });
    } else if (!registry.hasDevice(req.user, v.hash)) {
      // Removed since it was proven (by the CLI, the API, or another cidlock): it vouches no more.
      evidence.push({ kind: 'vouch', status: 'revoked', used: false, accepted: true, detail: `the device that was proven from ${req.remote} is no longer registered` });
    } else if (now - v.at > eff.vouch_ttl) {
      evidence.push({ kind: 'vouch', status: 'expired', used: false, accepted: true, device: v.device, detail: `device ${v.device} was proven from ${req.remote} ${formatDuration(now - v.at)} ago, beyond vouch_ttl ${formatDuration(eff.vouch_ttl)}` });
    } else {
      vouch = { device: v.device };
      evidence.push({ kind: 'vouch', status: 'valid', used: false, accepted: true, device: v.device, detail: `device ${v.device} was proven from ${req.remote} ${formatDuration(now - v.at)} ago` });
    }
  }

  const use = (kind: Evidence['kind']) => {
    for (const e of evidence) if (e.kind === kind) e.used = true;
  };
  const modeText = `mode ${eff.mode} (${modeFrom.path})`;

  if (registeredCid !== undefined && accepted('cid')) {
    use('cid');
    proven = registeredCid;
    return finish({ allow: true, reason: 'registered_device', rule: protoFrom, why: `registered device ${registeredCid.id} presented its CID; ${proto} accepts ${describeRule(protoRule)} (${protoFrom})` });
  }
  if (registeredCert !== undefined && accepted('cert')) {
    use('cert');
    proven = registeredCert;
    return finish({ allow: true, reason: 'registered_device', rule: protoFrom, why: `registered device ${registeredCert.id} presented its client certificate; ${proto} accepts ${describeRule(protoRule)} (${protoFrom})` });
  }

  // An unregistered CID or certificate is an unknown device: vouches never cover it.
  const unknown = unknownCid !== undefined || unknownCert !== undefined;
  let learnNote = '';
  if (unknown && eff.mode === 'learn') {
    const slot = unknownCid !== undefined ? learnSlot(registry.cidHash(unknownCid), unknownCid) : unknownCert ?? '';
    const count = registry.deviceCount(req.user) + (ctx.learning?.(req.user, slot) ?? 0);
    // What the holder recognises in a device list: the client's name where it sent one before
    // login, else what kind of device it was, and where and when it first came.
    const label = [req.clientName, req.clientOs].filter((s) => s !== undefined && s !== '').join(' / ')
      || `${unknownCid !== undefined ? `${unknownCid.type} device` : 'certificate'} first seen from ${req.remote ?? 'an unknown address'} on ${new Date(now).toISOString().slice(0, 10)}`;
    const canCid = unknownCid !== undefined && cidTls && accepted('cid');
    const canCert = unknownCert !== undefined && accepted('cert');
    if (ctx.registryReadOnly !== undefined) {
      learnNote = `; no device can be registered now: ${ctx.registryReadOnly}`;
    } else if (eff.learn.until !== null && now >= eff.learn.until) {
      learnNote = `; learning ended at ${new Date(eff.learn.until).toISOString()} (${eff.sources['learn.until']!.path})`;
    } else if (count >= eff.learn.max_devices) {
      const pending = count - registry.deviceCount(req.user);
      learnNote = `; ${req.user} already has ${count} of at most ${eff.learn.max_devices} devices${pending > 0 ? ` (${pending} of them being learned by logins in progress)` : ''} (${eff.sources['learn.max_devices']!.path})`;
    } else if (canCid) {
      learn = { kind: 'cid', cid: unknownCid!, hashPrefix: registry.cidHash(unknownCid!)?.slice(0, 12) ?? '', slot, label, maxDevices: eff.learn.max_devices };
      use('cid');
    } else if (canCert) {
      learn = { kind: 'cert', fingerprint: unknownCert!, slot, label, maxDevices: eff.learn.max_devices };
      use('cert');
    } else {
      learnNote = unknownCid !== undefined && !cidTls ? '; a CID is only learned over TLS' : `; ${proto} does not accept this kind of evidence (${protoFrom})`;
    }
    if (learn !== undefined) {
      return finish({ allow: true, reason: 'learning', rule: modeFrom.path, why: `learning: new device will be registered for ${req.user} if the login succeeds (${count + 1} of at most ${eff.learn.max_devices})` });
    }
  }

  if (typeMatch !== undefined && accepted('device_type')) {
    use('device_type');
    return finish({ allow: true, reason: 'device_type', rule: eff.sources.device_types!.path, why: `client name ${JSON.stringify(req.clientName)} matches the approved device type ${JSON.stringify(typeMatch)} (${eff.sources.device_types!.path})` });
  }
  if (vouch !== undefined && !unknown) {
    use('vouch');
    return finish({ allow: true, reason: 'vouched', rule: protoFrom, why: `device ${vouch.device} was proven for ${req.user} from ${req.remote} within vouch_ttl; ${proto} accepts ${describeRule(protoRule)} (${protoFrom})` });
  }

  if (unknown) {
    const what = unknownCid !== undefined ? 'a CID' : 'a client certificate';
    return finish({ allow: false, reason: 'unknown_device', rule: modeFrom.path, why: `unknown device: ${what} not registered for ${req.user}${vouch !== undefined ? ' (vouches never cover an unknown device)' : ''}${learnNote}; ${modeText}` });
  }
  return finish({ allow: false, reason: 'no_device_proof', rule: modeFrom.path, why: `no proof of a registered device; ${proto} accepts ${describeRule(protoRule)} (${protoFrom}); ${modeText}` });
}
