import type { Cidr } from '../ip.js';
import type { RedisAddress } from '../../redis/types.js';

export const MODES = ['off', 'monitor', 'learn', 'enforce'] as const;
export type Mode = (typeof MODES)[number];

export const EVIDENCE_KINDS = ['cid', 'cert', 'vouch', 'device_type'] as const;
export type EvidenceKind = (typeof EVIDENCE_KINDS)[number];

/**
 * Protocol names as Dovecot's %s and the Postfix adapter report them. `other` covers anything
 * else (a new Dovecot service), so an unlisted protocol is never silently unlocked.
 */
export const PROTOCOLS = ['imap', 'pop3', 'submission', 'smtp', 'sieve', 'other'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/** `allow` and `deny` decide without evidence; a list names the evidence that proves a device. */
export type ProtocolRule = 'allow' | 'deny' | readonly EvidenceKind[];

export interface DeviceTypes {
  readonly patterns: readonly string[];
  readonly match: (clientName: string) => string | undefined; // the matching pattern
}

/** One layer of policy as written: every key optional, absent keys inherit from the layer below. */
export interface PolicyLayer {
  mode?: Mode;
  require_tls?: boolean;
  message?: string;
  vouch_ttl?: number; // ms
  protocols?: Partial<Record<Protocol, ProtocolRule>>;
  device_types?: DeviceTypes;
  networks?: readonly Cidr[];
  learn?: { max_devices?: number; until?: number | null }; // until: epoch ms
}

/**
 * A TCP listener (optionally only for the given client networks) or a UNIX socket. The mail
 * servers' side of cidlock has no authentication of its own on Postfix's protocols, so a UNIX
 * socket whose directory only Postfix can enter is the default there.
 */
export type ListenAddress = { host: string; port: number; clients?: readonly Cidr[] } | { path: string };

export type ListenerName = 'dovecot' | 'postfix' | 'socketmap' | 'admin' | 'portal';

export const LIMIT_KEYS = ['address', 'network', 'user'] as const;
export type LimitKey = (typeof LIMIT_KEYS)[number];

export type LimitAction = { action: 'delay'; seconds: number } | { action: 'reject'; forMs: number };

/** One attack-defence limit: too many failures (or distinct user names) per key within a window. */
export interface LimitRule {
  /** `limits[2]`, for explanations and logs. */
  path: string;
  key: LimitKey;
  /** Failed logins that trigger the limit; or, with distinctUsers, different user names tried. */
  failures?: number;
  distinctUsers?: number;
  windowMs: number;
  then: LimitAction;
}

export interface CounterSettings {
  maxEntries: number;
  prefixV4: number;
  prefixV6: number;
}

/** The attack defences' own switch, independent of the device lock's mode. */
export const DEFENCE_MODES = ['off', 'monitor', 'enforce'] as const;
export type DefenceMode = (typeof DEFENCE_MODES)[number];

export type DecisionLogLevel = 'all' | 'refusals' | 'none';
export type FsyncPolicy = 'always' | 'interval' | 'never';

export interface Rules {
  /** Absolute path of the rules file these rules came from ("" when built in code). */
  readonly file: string;
  readonly listen: Readonly<Record<ListenerName, ListenAddress | null>>;
  readonly stateDir: string; // absolute
  /**
   * Where the registry and the state every host shares live: redis null is the file store in
   * stateDir; otherwise a Redis server (or the primary its Sentinels name) that several cidlock
   * hosts share. url is as written (it never holds a password); passwordFile is absolute or "".
   */
  readonly store: { readonly redis: null | { readonly url: string; readonly address: RedisAddress; readonly passwordFile: string; readonly keyPrefix: string; readonly replicas: number } };
  /**
   * apiKey: the key written in the rules file, or "" to use apiKeyFile (created with a random key
   * on first use). Dovecot must always send one.
   */
  readonly dovecot: { readonly apiKey: string; readonly apiKeyFile: string; readonly idFields: readonly string[] };
  /** How login names become accounts: a name without a domain gets defaultDomain ("" = none). */
  readonly accounts: { readonly defaultDomain: string };
  readonly policy: PolicyLayer;
  readonly domains: ReadonlyMap<string, PolicyLayer>;
  readonly users: ReadonlyMap<string, PolicyLayer>;
  readonly limits: readonly LimitRule[];
  /** Whether the limits are enforced, only logged, or off; whatever the target account's lock mode. */
  readonly defences: { readonly mode: DefenceMode };
  readonly counters: CounterSettings;
  readonly alerts: { readonly unknownDevice: { readonly attempts: number; readonly windowMs: number } };
  /** Absolute path of the audit log, or "" for none. */
  readonly audit: { readonly file: string; readonly fsync: FsyncPolicy };
  readonly webhook: { readonly url: string; readonly secret: string; readonly queue: number; readonly attempts: number } | null;
  readonly log: { readonly decisions: DecisionLogLevel };
  /** Bearer token for the admin API; "" disables the API (health and metrics stay open). */
  readonly admin: { readonly token: string };
  /**
   * The account page (served on listen.portal, behind the operator's HTTPS proxy at url), or null.
   * strings: the operator's strings file, "" for the shipped one.
   */
  readonly portal: null | {
    readonly url: string; // ends with "/"
    readonly userModes: readonly Mode[];
    readonly linkTtlMs: number;
    readonly sessionTtlMs: number;
    readonly strings: string;
    readonly signInPerHour: { readonly address: number; readonly account: number; readonly total: number };
  };
  /** Notices mailed to the account's own mailbox; template paths "" are the shipped templates. */
  readonly notice: null | {
    readonly from: string;
    readonly transport: { readonly kind: 'sendmail'; readonly command: readonly string[] } | { readonly kind: 'smtp'; readonly host: string; readonly port: number };
    readonly deviceTemplate: string;
    readonly deviceHtml: string;
    readonly signinTemplate: string;
    readonly signinHtml: string;
    readonly perAccountPerDay: number;
    /** Added to account names without a domain to mail them; "" uses accounts.default_domain. */
    readonly toDomain: string;
  };
  /** Refused devices remembered for their holder's answer: how long, and how many. */
  readonly pending: { readonly expireMs: number; readonly perAccount: number; readonly total: number };
}

/** A problem in a rules file, located precisely enough to jump to it in an editor. */
export interface RulesIssue {
  file: string;
  line: number;
  col: number;
  path: string; // users["alice@example.com"].protocols.imap[1]; "" for the whole document
  message: string;
}

export function formatRulesIssue(issue: RulesIssue): string {
  const where = `${issue.file}:${issue.line}:${issue.col}`;
  return issue.path === '' ? `${where}: ${issue.message}` : `${where}: ${issue.path}: ${issue.message}`;
}
