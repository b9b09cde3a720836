// The servers of the CLIENTID end-to-end tests: cidlock, and a private Dovecot 2.3 configured from
// `cidlock config dovecot --clientid --login-plugin-dir DIR` with cidlock's login plugin built from
// src/dovecot-clientid, serving a certificate from the test CA (for clients that check it).
import { buildClientidPlugin, clientidSnippetFor } from '../helpers/clientid-plugin.js';
import { serverCertFromCa } from '../helpers/test-ca.js';
import { startDovecot, type Dovecot } from './harness.js';

/**
 * Dovecot with the plugin, IMAP on STARTTLS and implicit TLS. `imap_id_log = *` makes imap log
 * the ID a client sends after login (Thunderbird sends its name and version there), which ties a
 * session to the client that made it.
 */
export async function startClientidDovecot(o: { dir: string; cfg: string; users: Record<string, string>; name?: string }): Promise<Dovecot> {
  const pluginDir = buildClientidPlugin();
  const tls = serverCertFromCa(o.dir, `${o.name ?? 'dovecot'}-server`);
  return startDovecot({
    dir: o.dir,
    users: o.users,
    snippet: `${clientidSnippetFor(o.cfg, pluginDir)}\nimap_id_log = *\n`,
    tls,
    imaps: true,
    ...(o.name ? { name: o.name } : {}),
  });
}

/** Dovecot's log lines naming a session (`session=<ID>` or `<ID>` in a prefix). */
export function sessionLines(log: string, session: string): string[] {
  return log.split('\n').filter((l) => l.includes(`<${session}>`));
}

/** The sessions Dovecot logged a successful IMAP login for, for one user. */
export function imapLoginSessions(log: string, user: string): string[] {
  const re = new RegExp(`imap-login: Info: Login: user=<${user.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}>,.* session=<([^>]+)>`);
  return log.split('\n').map((l) => re.exec(l)?.[1]).filter((s): s is string => s !== undefined);
}
