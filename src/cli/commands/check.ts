import { accessSync, constants, readFileSync, statSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import { isLoopback, loadRulesFile, POSTFIX_SOCKET_DIR } from '../../core/rules/load.js';
import { formatRulesIssue, type ListenAddress, type ListenerName, type Rules } from '../../core/rules/types.js';
import { effectivePolicy } from '../../core/rules/resolve.js';
import { groupId, OTHERS_ENTER_OR_WRITE, POSTFIX_GROUP } from '../../net/unix-socket.js';
import { CONFIG_OPTION, configPath, parseCommand } from '../args.js';
import { openStoreFor, type Io } from '../context.js';
import { openRegistry } from '../../core/registry/registry.js';
import { StoreUnreachableError } from '../../core/registry/open-store.js';
import { redisDurabilityWarnings } from '../../core/registry/redis-durability.js';
import { HELP } from '../help.js';
import { loadNoticeTemplates } from '../../daemon/accounts.js';
import { loadPortalStrings } from '../../portal/strings.js';

export function formatListen(a: ListenAddress | null): string {
  if (a === null) return 'off';
  if ('path' in a) return `unix:${a.path}`;
  const addr = a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
  return a.clients === undefined ? addr : `${addr} (clients ${a.clients.map((c) => c.text).join(', ')})`;
}

/** The daemon's user, as far as the files tell: state_dir's owner (check usually runs as root). */
interface DaemonUser {
  uid: number;
  gids: Set<number>;
  name: string;
  /** state_dir does not exist yet: assume the user running check. */
  assumed: boolean;
}

function passwdEntries(): string[][] {
  try {
    return readFileSync('/etc/passwd', 'utf8').split('\n').map((l) => l.split(':'));
  } catch {
    return [];
  }
}

function daemonUser(stateDir: string): DaemonUser {
  let uid = process.geteuid?.() ?? 0;
  const gids = new Set<number>([process.getegid?.() ?? 0]);
  let assumed = true;
  try {
    const st = statSync(stateDir);
    uid = st.uid;
    gids.clear();
    gids.add(st.gid);
    assumed = false;
  } catch {
    // not created yet: the daemon makes it as whoever starts it
  }
  const entry = passwdEntries().find((e) => e[2] === String(uid));
  const name = entry?.[0] ?? `uid ${uid}`;
  if (entry?.[3] !== undefined && /^\d+$/.test(entry[3])) gids.add(Number(entry[3]));
  try {
    for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
      const [, , gid, members] = line.split(':');
      if (gid !== undefined && members?.split(',').includes(name)) gids.add(Number(gid));
    }
  } catch {
    // no /etc/group: the primary group is all we know
  }
  return { uid, gids, name, assumed };
}

const R = 4;
const W = 2;
const X = 1;

/** Whether `who` may do `bits` (R, W, X) on a file with these stats, by its mode bits. */
function permits(st: Stats, who: DaemonUser, bits: number): boolean {
  if (who.uid === 0) return (bits & X) === 0 || st.isDirectory() || (st.mode & 0o111) !== 0;
  const shift = st.uid === who.uid ? 6 : who.gids.has(st.gid) ? 3 : 0;
  return ((st.mode >> shift) & bits) === bits;
}

/** Why `who` cannot append to `file` (creating it and its folders if missing), or null when it can. */
function cannotAppend(file: string, who: DaemonUser): string | null {
  // The nearest existing ancestor is where the daemon would create what is missing.
  let target = file;
  let st: Stats | null = null;
  for (;;) {
    try {
      st = statSync(target);
      break;
    } catch {
      const up = dirname(target);
      if (up === target) return 'no existing folder above it';
      target = up;
    }
  }
  const exists = target === file;
  if (exists && !st.isFile()) return 'not a regular file';
  for (let d = dirname(target); ; d = dirname(d)) {
    if (!permits(statSync(d), who, X)) return `${d} is not searchable by ${who.name}`;
    if (dirname(d) === d) break;
  }
  if (!permits(st, who, exists ? W : W | X)) return exists ? `${who.name} may not write to it (mode ${octal(st.mode)}, owner uid ${st.uid})` : `${who.name} may not create it in ${target} (mode ${octal(st.mode)}, owner uid ${st.uid})`;
  // Mode bits say nothing about a read-only file system: ask the kernel where it can answer for us.
  try {
    accessSync(target, constants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EROFS') return 'the file system is read-only';
    if (who.uid === process.geteuid?.()) return `not writable (${code})`;
  }
  return null;
}

const octal = (mode: number) => `0${(mode & 0o7777).toString(8)}`;

function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

/** Listeners anyone could talk to without authenticating, and how to close them. */
function exposureWarnings(rules: Rules): string[] {
  const out: string[] = [];
  for (const name of ['postfix', 'socketmap'] as const) {
    const a = rules.listen[name];
    if (a === null) continue;
    if ('host' in a) {
      const who = isLoopback(a.host)
        ? 'any local user'
        : a.clients === undefined ? `any host that reaches ${a.host}:${a.port}` : `any process on ${a.clients.map((c) => c.text).join(', ')}`;
      const risk = name === 'postfix'
        ? 'can send policy requests as if it were Postfix (the protocol carries no password) and so forge the vouch that lets a password alone log in from an address'
        : 'can query the socketmap tables as if it were Postfix (the protocol carries no password): which accounts, addresses and certificates cidlock knows';
      out.push(`listen.${name} is TCP (${formatListen(a)}): ${who} ${risk}; use the default UNIX socket unix:${POSTFIX_SOCKET_DIR}/${name === 'postfix' ? 'policy' : 'socketmap'}, or firewall the port and list only the Postfix hosts in clients`);
      continue;
    }
    const dir = dirname(a.path);
    const st = statOrNull(dir);
    if (st === null) {
      if (statOrNull(dirname(dir)) === null) out.push(`listen.${name}: ${dirname(dir)} does not exist, so cidlock cannot create ${dir} at start (is Postfix installed? its queue directory holds the default sockets)`);
      continue;
    }
    if ((st.mode & OTHERS_ENTER_OR_WRITE) !== 0) out.push(`listen.${name}: every local user may enter or write to ${dir} (mode ${octal(st.mode)}) and reach or replace the socket; cidlock serve refuses to start; run: chmod o-rwx ${dir}`);
    const postfix = groupId(POSTFIX_GROUP);
    if (postfix !== null && st.gid !== postfix) out.push(`listen.${name}: ${dir} is not in group ${POSTFIX_GROUP}, so Postfix cannot reach the socket; run: chgrp ${POSTFIX_GROUP} ${dir} && chmod 2750 ${dir}`);
  }
  const dovecot = rules.listen.dovecot;
  if (dovecot !== null && 'host' in dovecot && !isLoopback(dovecot.host)) {
    out.push(`listen.dovecot is ${formatListen(dovecot)}: Dovecot's API key crosses the network in clear HTTP; keep it on a private network or VPN, and list the Dovecot hosts in clients`);
  }
  const admin = rules.listen.admin;
  if (admin !== null && 'host' in admin && !isLoopback(admin.host)) {
    out.push(rules.admin.token === ''
      ? `listen.admin is ${formatListen(admin)} and admin.token is unset: health and metrics (user names included) are open to anyone who reaches it; listen on loopback, or list the monitoring hosts in clients`
      : `listen.admin is ${formatListen(admin)}: the admin token crosses the network in clear HTTP; keep it on a private network or VPN, and list the portal hosts in clients`);
  }
  return out;
}

/** Keys in the rules file itself, by their rules path. */
function keysInRules(rules: Rules): string[] {
  const keys: string[] = [];
  if (rules.dovecot.apiKey !== '') keys.push('dovecot.api_key');
  if (rules.admin.token !== '') keys.push('admin.token');
  if (rules.webhook !== null && rules.webhook.secret !== '') keys.push('webhook.secret');
  return keys;
}

function groupName(gid: number): string {
  try {
    for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
      const [name, , id] = line.split(':');
      if (id === String(gid) && name !== undefined) return name;
    }
  } catch {
    // fall through
  }
  return String(gid);
}

function secretWarnings(rules: Rules, who: DaemonUser): { line: string; warnings: string[] } {
  const warnings: string[] = [];
  const keys = keysInRules(rules);
  const st = statOrNull(rules.file);
  if (keys.length > 0 && st !== null && (st.mode & 0o004) !== 0) {
    const group = groupName([...who.gids][0] ?? 0);
    warnings.push(`${rules.file} is readable by every local user (mode ${octal(st.mode)}) and holds ${keys.join(', ')}: run: chown root:${group} ${rules.file} && chmod 640 ${rules.file}`);
  }
  if (rules.listen.dovecot === null) return { line: 'off', warnings };
  if (rules.dovecot.apiKey !== '') return { line: 'API key in the rules file (dovecot.api_key)', warnings };
  const file = rules.dovecot.apiKeyFile;
  const kst = statOrNull(file);
  if (kst === null) return { line: `API key in ${file}: not created yet ("cidlock serve" or "cidlock config dovecot" creates it)`, warnings };
  let readable = 'readable';
  try {
    accessSync(file, constants.R_OK);
  } catch (err) {
    readable = `unreadable here (${(err as NodeJS.ErrnoException).code})`;
  }
  if (!permits(kst, who, R)) warnings.push(`${file}: the daemon's user ${who.name} cannot read Dovecot's API key (mode ${octal(kst.mode)}, owner uid ${kst.uid}); run: chown ${who.name} ${file}`);
  if ((kst.mode & 0o004) !== 0) warnings.push(`${file} is readable by every local user (mode ${octal(kst.mode)}): anyone could send requests as Dovecot; run: chmod 600 ${file}`);
  return { line: `API key in ${file} (${readable})`, warnings };
}

function canRun(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

export async function checkCommand(argv: string[], io: Io): Promise<number> {
  const { values } = parseCommand(argv, CONFIG_OPTION, { min: 0, max: 0, names: '' });
  if (values.help) return io.out(HELP.check!), 0;
  const file = configPath(values.config);
  const r = loadRulesFile(file);
  for (const w of r.warnings) io.err(`warning: ${formatRulesIssue(w)}`);
  if (!r.ok) {
    for (const e of r.errors) io.err(formatRulesIssue(e));
    io.err(`${file}: ${r.errors.length} error${r.errors.length === 1 ? '' : 's'}`);
    return 1;
  }
  const rules = r.rules;
  const who = daemonUser(rules.stateDir);
  const secrets = secretWarnings(rules, who);
  for (const w of [...exposureWarnings(rules), ...secrets.warnings]) io.err(`warning: ${w}`);
  const server = effectivePolicy({ ...rules, domains: new Map(), users: new Map() }, '');
  io.out(`${file}: OK`);
  io.out(`  listen:    ${(Object.entries(rules.listen) as Array<[ListenerName, ListenAddress | null]>).filter(([k]) => k !== 'portal' || rules.portal !== null).map(([k, v]) => `${k} ${formatListen(v)}`).join(', ')}`);
  io.out(`  dovecot:   ${secrets.line}`);
  io.out(`  policy:    mode ${server.mode}, require_tls ${server.require_tls}, vouch_ttl ${server.vouch_ttl / 1000}s`);
  io.out(`  domains:   ${rules.domains.size}`);
  io.out(`  users:     ${rules.users.size} in the rules file`);
  let status = 0;
  // The templates and page texts are read at start and reload: a mistake in them is found here first.
  if (rules.notice !== null && rules.portal !== null) {
    try {
      loadNoticeTemplates(rules.notice);
      loadPortalStrings(rules.portal.strings === '' ? undefined : rules.portal.strings);
      const t = rules.notice.transport;
      io.out(`  portal:    ${rules.portal.url} (served on ${formatListen(rules.listen.portal)}), holders may choose ${rules.portal.userModes.join(', ') || 'no mode'}`);
      io.out(`  notices:   from ${rules.notice.from} through ${t.kind === 'smtp' ? `SMTP ${t.host}:${t.port}` : t.command.join(' ')}, at most ${rules.notice.perAccountPerDay} a day per account`);
      if (t.kind === 'sendmail' && !canRun(t.command[0]!)) io.err(`warning: notice.sendmail: ${t.command[0]} is not an executable program here; notices would fail (install an MTA, or use notice.smtp)`);
    } catch (err) {
      io.err(`notice/portal: ${(err as Error).message}`);
      status = 1;
    }
  }
  if (rules.audit.file !== '') {
    const why = cannotAppend(rules.audit.file, who);
    const user = `${who.name}${who.assumed ? ' (state_dir does not exist yet: assumed to be you)' : ", the daemon's user (state_dir's owner)"}`;
    if (why === null) io.out(`  audit:     ${rules.audit.file}, writable by ${user}`);
    else {
      // Audit events would be lost silently at run time: fail now, while someone is looking.
      io.err(`audit: ${rules.audit.file}: cannot be written by ${user}: ${why}`);
      status = 1;
    }
  }
  try {
    const opened = await openStoreFor(rules);
    if (opened.redis !== null) {
      const server = opened.redis.server ?? '?';
      io.out(`  store:     ${rules.store.redis!.url} (Redis at ${server}, key prefix ${JSON.stringify(rules.store.redis!.keyPrefix)})`);
      // Acknowledged registrations must survive a crash of Redis: say when its settings would not.
      for (const w of await redisDurabilityWarnings(opened.redis)) io.err(`warning: store: ${w}`);
    }
    const reg = await openRegistry(opened.store, { create: false });
    const size = reg.size();
    let withMode = 0;
    for (const u of reg.users()) if (reg.settings(u).mode !== undefined) withMode++;
    io.out(`  registry:  ${reg.location}: ${size.users} users (${withMode} with their own mode), ${size.devices} devices`);
  } catch (err) {
    // Redis down is a state the daemon rides out (it decides from its local copy), not a
    // mistake in the rules: the unit's ExecStartPre check must not keep it from starting.
    if (err instanceof StoreUnreachableError) {
      io.err(`warning: store: ${err.message}`);
      return status;
    }
    io.err(`registry: ${(err as Error).message}`);
    return 1;
  }
  return status;
}
