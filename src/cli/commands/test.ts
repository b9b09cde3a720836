import { presentedCid } from '../../core/cid.js';
import { decide, type Decision } from '../../core/decide.js';
import { decisionRecord } from '../../core/explain.js';
import { explainText } from '../explain-text.js';
import { normalizeFingerprint } from '../../core/fingerprint.js';
import { normalizeIp } from '../../core/ip.js';
import type { AuthRequest } from '../../core/request.js';
import type { Rules } from '../../core/rules/types.js';
import type { VouchLookup } from '../../core/vouches.js';
import { commandFromPath, translateDovecot } from '../../dovecot-policy/translate.js';
import { parseAttributeBlocks } from '../../postfix-policy/attributes.js';
import { translatePostfix } from '../../postfix-policy/translate.js';
import { CONFIG_OPTION, configPath, parseCommand, UsageError, userArg } from '../args.js';
import { loadRulesOrExit, openRegistryFor, readInput, type Io } from '../context.js';
import { HELP } from '../help.js';

const OPTIONS = {
  ...CONFIG_OPTION,
  user: { type: 'string' },
  protocol: { type: 'string' },
  ip: { type: 'string' },
  tls: { type: 'boolean' },
  cid: { type: 'string' },
  clientid: { type: 'string' },
  'client-name': { type: 'string' },
  'client-os': { type: 'string' },
  'cert-fingerprint': { type: 'string', multiple: true },
  'assume-vouch': { type: 'boolean' },
  json: { type: 'boolean' },
  'dovecot-json': { type: 'string' },
  postfix: { type: 'string' },
} as const;

type Item = { label: string; request: AuthRequest } | { label: string; note: string };

function fromFlags(v: Record<string, unknown>, rules: Rules): Item {
  if (typeof v.user !== 'string') throw new UsageError('--user is required (or --dovecot-json / --postfix)');
  if (typeof v.protocol !== 'string' || !/^[a-z0-9-]{1,20}$/i.test(v.protocol)) throw new UsageError('--protocol is required: imap, pop3, submission, smtp or sieve');
  let remote: string | null = null;
  if (typeof v.ip === 'string') {
    remote = normalizeIp(v.ip);
    if (remote === null) throw new UsageError(`--ip: not an IP address: ${JSON.stringify(v.ip)}`);
  }
  const req: AuthRequest = { protocol: v.protocol.toLowerCase(), user: userArg(v.user, rules.accounts.defaultDomain), remote, tls: v.tls === true, certFingerprints: [], stage: 'offline' };
  // A malformed CID is explained like the daemon would, not refused as a usage error.
  Object.assign(req, presentedCid(typeof v.clientid === 'string' ? v.clientid : undefined, typeof v.cid === 'string' ? v.cid : undefined, '--cid'));
  if (typeof v['client-name'] === 'string') req.clientName = v['client-name'];
  if (typeof v['client-os'] === 'string') req.clientOs = v['client-os'];
  for (const fp of (v['cert-fingerprint'] as string[] | undefined) ?? []) {
    const n = normalizeFingerprint(fp);
    if (n === null) throw new UsageError(`--cert-fingerprint: expected a SHA-256 fingerprint (64 hex digits, colons allowed): ${JSON.stringify(fp)}`);
    req.certFingerprints = [...req.certFingerprints, n];
  }
  return { label: 'command line', request: req };
}

function fromDovecot(text: string, source: string, rules: Rules): Item[] {
  let objects: unknown[];
  try {
    objects = [JSON.parse(text)];
  } catch {
    objects = text.split('\n').map((l, i) => ({ l, i })).filter(({ l }) => l.trim() !== '').map(({ l, i }) => {
      try {
        return JSON.parse(l);
      } catch (err) {
        throw new UsageError(`${source}:${i + 1}: not JSON: ${(err as Error).message}`);
      }
    });
  }
  return objects.map((obj, i): Item => {
    const label = `${source} #${i + 1}`;
    let body = obj;
    let command: string | null = 'allow';
    const o = obj as Record<string, unknown>;
    if (o !== null && typeof o === 'object' && typeof o.body === 'string') {
      // A capture line: {"path": "/?command=allow", "body": "<the raw HTTP body>"}.
      command = typeof o.path === 'string' ? commandFromPath(o.path) : 'allow';
      try {
        body = JSON.parse(o.body);
      } catch (err) {
        return { label, note: `body is not JSON (${(err as Error).message}): the daemon answers 400` };
      }
    }
    if (command === 'report') return { label, note: 'report: not a decision (Dovecot never reads the answer)' };
    const t = translateDovecot(body, { idFields: rules.dovecot.idFields, defaultDomain: rules.accounts.defaultDomain, stage: 'before_auth' });
    return t.ok ? { label, request: t.request } : { label, note: `malformed request: ${t.error}` };
  });
}

function fromPostfix(text: string, source: string, rules: Rules): Item[] {
  return parseAttributeBlocks(text).map((b, i): Item => {
    const label = `${source} #${i + 1}`;
    if (!b.ok) return { label, note: `malformed request: ${b.error}` };
    const t = translatePostfix(b.attrs, rules.accounts.defaultDomain);
    return t.kind === 'decide' ? { label, request: t.request } : { label, note: t.why };
  });
}

export async function testCommand(argv: string[], io: Io): Promise<number> {
  const { values } = parseCommand(argv, OPTIONS, { min: 0, max: 0, names: '' });
  if (values.help) return io.out(HELP.test!), 0;
  const sources = [values['dovecot-json'], values.postfix].filter((s) => s !== undefined).length;
  if (sources > 1) throw new UsageError('give either --dovecot-json or --postfix, not both');
  const rules = loadRulesOrExit(configPath(values.config), io);
  const registry = await openRegistryFor(rules, false);
  const items: Item[] =
    values['dovecot-json'] !== undefined ? fromDovecot(readInput(values['dovecot-json']), values['dovecot-json'] === '-' ? 'stdin' : values['dovecot-json'], rules)
      : values.postfix !== undefined ? fromPostfix(readInput(values.postfix), values.postfix === '-' ? 'stdin' : values.postfix, rules)
        : [fromFlags(values, rules)];
  if (items.length === 0) throw new UsageError('no request found in the input');

  const now = Date.now();
  // An assumed vouch comes from a device that exists as far as this explanation goes.
  const assumed = { at: now, device: 'assumed', hash: '' };
  const vouches: VouchLookup = values['assume-vouch'] ? { get: () => assumed } : { get: () => undefined };
  const lookups = { ...registry, hasDevice: (user: string, hash: string) => hash === '' || registry.hasDevice(user, hash) };
  let status = 0;
  for (const item of items) {
    if ('note' in item) {
      if (values.json) io.out(JSON.stringify({ event: 'no_decision', source: item.label, why: item.note }));
      else io.out(`${items.length > 1 ? `${item.label}: ` : ''}NO DECISION  ${item.note}`);
      continue;
    }
    const d: Decision = decide(item.request, { rules, registry: lookups, vouches, now });
    if (values.json) io.out(JSON.stringify(decisionRecord(item.request, d)));
    else io.out(`${items.length > 1 ? `${item.label}: ` : ''}${explainText(item.request, d)}`);
    if (d.would_reject) io.err(`warning: ${item.request.user}: monitor mode allows this login, but enforce would refuse it (${d.reason})`);
    if (d.action !== 'allow') status = 1;
  }
  return status;
}
