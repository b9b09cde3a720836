// Real Thunderbird, headless, as a test's IMAP client.
//
// Thunderbird reads its start-up customisation from its install directory (autoconfig, enterprise
// policies), so the tests run a copy of the installed one, cached outside the checkout and rebuilt
// when the installed version changes:
//   defaults/pref/autoconfig.js + mozilla.cfg  stores the IMAP password given in the environment
//                                              (CIDLOCK_TB_LOGINS) through the login manager;
//   distribution/policies.json                  trusts the test CA (Certificates.Install) and turns
//                                               clientidEnabled on by default (Preferences), as the
//                                               README tells an organisation to.
// Each test writes its own profile (user.js: one IMAP account), starts
// `thunderbird --headless --no-remote --profile DIR` with MOZ_LOG=IMAP:5, waits for what it
// expects in the servers' logs, and kills it with its children.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import {
  cpSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { testCa, testCacheRoot } from './test-ca.js';
import { tempDir } from './tmp.js';

export const THUNDERBIRD_INSTALL = process.env.CIDLOCK_TB_INSTALL ?? '/usr/lib/thunderbird';

/** Version and build of the installed Thunderbird (application.ini), or null when there is none. */
export function installedThunderbird(): { version: string; buildId: string } | null {
  const ini = join(THUNDERBIRD_INSTALL, 'application.ini');
  if (!existsSync(ini) || !existsSync(join(THUNDERBIRD_INSTALL, 'thunderbird-bin'))) return null;
  const text = readFileSync(ini, 'utf8');
  const version = /^Version=(.+)$/m.exec(text)?.[1]?.trim();
  const buildId = /^BuildID=(.+)$/m.exec(text)?.[1]?.trim();
  return version && buildId ? { version, buildId } : null;
}

/** Bump when what the cache holds (autoconfig, policies, layout) changes. */
const LAYOUT = 3;

// Runs in Thunderbird's autoconfig scope (unsandboxed, chrome privileges) before any account
// connects. Its first line must be a comment: Thunderbird skips it.
const MOZILLA_CFG = `// cidlock test harness: logins from the environment, nothing else.
try {
  var spec = getenv("CIDLOCK_TB_LOGINS");
  if (spec) {
    var LoginInfo = Components.Constructor("@mozilla.org/login-manager/loginInfo;1", Components.interfaces.nsILoginInfo, "init");
    var list = JSON.parse(spec);
    for (var i = 0; i < list.length; i++) {
      var l = list[i];
      // A fresh profile has no logins. addLogin is gone since Gecko 121: addLoginAsync.
      Services.logins.addLoginAsync(new LoginInfo(l.origin, null, l.origin, l.user, l.pass, "", "")).then(
        function () { dump("cidlock autoconfig: login stored\\n"); },
        function (e) { dump("cidlock autoconfig: storing the login failed: " + e + "\\n"); });
    }
  }
} catch (e) {
  Components.utils.reportError("cidlock autoconfig: " + e);
  dump("cidlock autoconfig failed: " + e + "\\n");
}
`;

/**
 * The cached install copy: binaries copied (Thunderbird finds its files next to the real path of
 * the running executable), the rest symlinked, `defaults` and `distribution` real folders with
 * the harness's files. Built in a temp folder and renamed into place, so a killed build never
 * leaves half a copy.
 */
export function thunderbirdInstall(): string {
  const tb = installedThunderbird();
  if (tb === null) throw new Error(`no Thunderbird in ${THUNDERBIRD_INSTALL}`);
  const ca = testCa();
  const dir = join(testCacheRoot(), `thunderbird-${tb.version}-${tb.buildId}-h${LAYOUT}`);
  if (existsSync(join(dir, 'distribution', 'policies.json'))) return dir;
  // Older copies (another version) go: each is a few hundred MB.
  if (existsSync(testCacheRoot())) {
    for (const e of readdirSync(testCacheRoot())) if (e.startsWith('thunderbird-') && e !== `thunderbird-${tb.version}-${tb.buildId}-h${LAYOUT}`) rmSync(join(testCacheRoot(), e), { recursive: true, force: true });
  }
  mkdirSync(testCacheRoot(), { recursive: true, mode: 0o700 });
  const tmp = `${dir}.${process.pid}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  for (const e of readdirSync(THUNDERBIRD_INSTALL)) {
    const src = join(THUNDERBIRD_INSTALL, e);
    const dst = join(tmp, e);
    const st = lstatSync(src);
    if (e === 'defaults') cpSync(realpathSync(src), dst, { recursive: true, dereference: true });
    else if (e === 'distribution') continue;
    else if (st.isSymbolicLink() && !readlinkSync(src).includes('/')) symlinkSync(readlinkSync(src), dst); // thunderbird -> thunderbird-bin
    else if (st.isFile() && !e.endsWith('.so') && !e.endsWith('.ja')) cpSync(src, dst); // executables and .ini files
    else symlinkSync(realpathSync(src), dst);
  }
  mkdirSync(join(tmp, 'defaults', 'pref'), { recursive: true });
  writeFileSync(join(tmp, 'defaults', 'pref', 'autoconfig.js'), 'pref("general.config.filename", "mozilla.cfg");\npref("general.config.obscure_value", 0);\npref("general.config.sandbox_enabled", false);\n');
  writeFileSync(join(tmp, 'mozilla.cfg'), MOZILLA_CFG);
  mkdirSync(join(tmp, 'distribution'));
  writeFileSync(join(tmp, 'distribution', 'policies.json'), JSON.stringify({
    policies: {
      Certificates: { Install: [ca.cert] },
      // The organisation-wide switch the README gives operators: accounts whose own
      // clientidEnabled is unset send their CID. A profile's user.js still overrides it.
      Preferences: { 'mail.server.default.clientidEnabled': { Value: true, Status: 'default' } },
      DisableAppUpdate: true,
      DisableTelemetry: true,
    },
  }, null, 2));
  writeFileSync(join(tmp, 'cidlock-test-cache.txt'), `A copy of ${THUNDERBIRD_INSTALL} (${tb.version}, build ${tb.buildId}) for cidlock's tests; safe to delete.\n`);
  try {
    renameSync(tmp, dir);
  } catch {
    rmSync(tmp, { recursive: true, force: true }); // another run made it first
  }
  return dir;
}

export interface ThunderbirdAccount {
  /** What Thunderbird connects to: 127.0.0.1 (no IPv6 first attempt) or localhost. */
  host: string;
  port: number;
  security: 'starttls' | 'ssl';
  user: string;
  pass: string;
  /** mail.server.server1.clientid; a fresh UUID when absent. */
  clientid?: string;
  /** mail.server.server1.clientidEnabled; unset: the default, which the cached install's policies.json sets to true. */
  clientidEnabled?: boolean;
  /** An SMTP server for the identity (never used to send by these tests). */
  smtp?: { host: string; port: number };
}

const q = (v: string | number | boolean) => (typeof v === 'string' ? JSON.stringify(v) : String(v));

/** user.js for a profile with one IMAP account and Local Folders, every background service off. */
export function userJs(a: ThunderbirdAccount & { clientid: string }): string {
  const p: Array<[string, string | number | boolean]> = [
    // The account.
    ['mail.accountmanager.accounts', 'account1,account2'],
    ['mail.accountmanager.defaultaccount', 'account1'],
    ['mail.accountmanager.localfoldersserver', 'server2'],
    ['mail.account.account1.server', 'server1'],
    ['mail.account.account1.identities', 'id1'],
    ['mail.account.account2.server', 'server2'],
    ['mail.server.server1.type', 'imap'],
    ['mail.server.server1.hostname', a.host],
    ['mail.server.server1.realhostname', a.host],
    ['mail.server.server1.port', a.port],
    ['mail.server.server1.socketType', a.security === 'ssl' ? 3 : 2],
    ['mail.server.server1.authMethod', 3], // normal password
    ['mail.server.server1.userName', a.user],
    ['mail.server.server1.realuserName', a.user],
    ['mail.server.server1.name', `cidlock test ${a.user}`],
    ['mail.server.server1.clientid', a.clientid],
    ['mail.server.server1.login_at_startup', true],
    ['mail.server.server1.check_new_mail', true],
    ['mail.server.server1.check_time', 1],
    ['mail.server.server1.download_on_biff', false],
    ['mail.server.server1.offline_download', false],
    ['mail.server.server1.autosync_offline_stores', false],
    ['mail.server.server1.directory-rel', '[ProfD]ImapMail/server1'],
    ['mail.server.server1.storeContractID', '@mozilla.org/msgstore/berkeleystore;1'],
    ['mail.server.server2.type', 'none'],
    ['mail.server.server2.hostname', 'Local Folders'],
    ['mail.server.server2.userName', 'nobody'],
    ['mail.server.server2.name', 'Local Folders'],
    ['mail.server.server2.directory-rel', '[ProfD]Mail/Local Folders'],
    ['mail.identity.id1.fullName', 'cidlock test'],
    ['mail.identity.id1.useremail', a.user],
    ['mail.identity.id1.valid', true],
    ['mail.identity.id1.draft_folder', ''],
    ['mail.identity.id1.fcc', false],
    // The password comes from the login manager, never a prompt: a headless prompt would hang.
    ['signon.rememberSignons', true],
    ['mail.biff.play_sound', false],
    ['mail.biff.show_alert', false],
    ['mail.biff.show_tray_icon', false],
    // First-run and start-up UI.
    ['mail.provider.enabled', false],
    ['mail.shell.checkDefaultClient', false],
    ['mail.shell.checkDefaultMail', false],
    ['mail.rights.override', true],
    ['mail.rights.version', 1],
    ['mailnews.start_page.enabled', false],
    ['mailnews.start_page_override.mstone', 'ignore'],
    ['mail.ui.folderpane.version', 99],
    ['mail.spotlight.firstRunDone', true],
    ['mail.winsearch.firstRunDone', true],
    ['mail.inappnotifications.enabled', false],
    ['browser.aboutwelcome.enabled', false],
    ['app.donation.eoy.version.viewed', 999],
    ['mail.dashboard.enabled', false],
    // Updates and telemetry.
    ['app.update.auto', false],
    ['app.update.checkInstallTime', false],
    ['extensions.update.enabled', false],
    ['extensions.update.autoUpdateDefault', false],
    ['extensions.getAddons.cache.enabled', false],
    ['extensions.systemAddon.update.enabled', false],
    ['toolkit.telemetry.enabled', false],
    ['toolkit.telemetry.unified', false],
    ['toolkit.telemetry.server', ''],
    ['toolkit.telemetry.archive.enabled', false],
    ['datareporting.healthreport.uploadEnabled', false],
    ['datareporting.policy.dataSubmissionEnabled', false],
    ['datareporting.policy.firstRunURL', ''],
    ['services.settings.server', 'data:,#remote-settings-disabled'],
    ['browser.safebrowsing.malware.enabled', false],
    ['browser.safebrowsing.phishing.enabled', false],
    ['browser.safebrowsing.downloads.enabled', false],
    ['browser.safebrowsing.provider.google4.updateURL', ''],
    ['browser.region.network.url', ''],
    ['browser.region.update.enabled', false],
    ['mailnews.auto_config_url', ''],
    ['mailnews.auto_config.addons_url', ''],
    ['messenger.options.messagesStyle.variant', ''],
    ['mail.addr_book.im.onlineCheckAllowed', false],
    // No network traffic besides the account.
    ['network.prefetch-next', false],
    ['network.dns.disablePrefetch', true],
    ['network.predictor.enabled', false],
    ['network.http.speculative-parallel-limit', 0],
    ['network.connectivity-service.enabled', false],
    ['network.captive-portal-service.enabled', false],
    ['network.manage-offline-status', false],
    ['offline.autoDetect', false],
    ['security.OCSP.enabled', 0],
    ['security.remote_settings.crlite_filters.enabled', false],
    ['security.remote_settings.intermediates.enabled', false],
    ['mailnews.imap.jsmodule', false],
    ['browser.dom.window.dump.enabled', true],
  ];
  if (a.clientidEnabled !== undefined) p.push(['mail.server.server1.clientidEnabled', a.clientidEnabled]);
  if (a.smtp !== undefined) {
    p.push(
      ['mail.smtpservers', 'smtp1'],
      ['mail.smtp.defaultserver', 'smtp1'],
      ['mail.smtpserver.smtp1.hostname', a.smtp.host],
      ['mail.smtpserver.smtp1.port', a.smtp.port],
      ['mail.smtpserver.smtp1.try_ssl', 2],
      ['mail.smtpserver.smtp1.authMethod', 3],
      ['mail.smtpserver.smtp1.username', a.user],
      ['mail.identity.id1.smtpServer', 'smtp1'],
    );
  }
  return p.map(([k, v]) => `user_pref(${q(k)}, ${q(v)});`).join('\n') + '\n';
}

export interface ThunderbirdRun {
  proc: ChildProcess;
  profile: string;
  clientid: string;
  /** MOZ_LOG output (IMAP:5), read now. */
  mozLog(): string;
  /** Thunderbird's stdout and stderr so far. */
  output(): string;
  /** Polls `pred` until it holds (or Thunderbird exits, or the time is up). */
  waitFor(pred: () => boolean, what: string, timeoutMs?: number): Promise<void>;
  /** Kills Thunderbird and every process it started; resolves once it has exited. */
  stop(): Promise<void>;
}

function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(e)]);
    } catch { /* gone */ }
  }
  const out: number[] = [];
  const walk = (p: number) => { for (const c of children.get(p) ?? []) { out.push(c); walk(c); } };
  walk(pid);
  return out;
}

const running = new Set<ThunderbirdRun>();
process.on('exit', () => {
  for (const r of running) {
    for (const pid of [r.proc.pid!, ...descendants(r.proc.pid!)]) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  }
});

/** Starts headless Thunderbird on a fresh profile with one account. */
export function startThunderbird(a: ThunderbirdAccount): ThunderbirdRun {
  const install = thunderbirdInstall();
  const root = tempDir('cidlock-tb-');
  const profile = join(root, 'profile');
  const home = join(root, 'home');
  mkdirSync(profile);
  mkdirSync(home);
  const clientid = a.clientid ?? randomUUID();
  writeFileSync(join(profile, 'user.js'), userJs({ ...a, clientid }));
  const mozLogFile = join(root, 'moz.log');
  let out = '';
  // The password for the login manager: origin and realm are how Thunderbird looks IMAP ones up.
  const origin = `imap://${a.host}`;
  const proc = spawn(join(install, 'thunderbird'), ['--headless', '--no-remote', '--profile', profile], {
    detached: true, // its own process group: stop() kills it whole
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: home,
      TMPDIR: root,
      XDG_RUNTIME_DIR: root,
      XDG_CONFIG_HOME: join(home, '.config'),
      XDG_CACHE_HOME: join(home, '.cache'),
      LANG: 'C.UTF-8',
      MOZ_HEADLESS: '1',
      MOZ_LOG: 'timestamp,sync,IMAP:5',
      MOZ_LOG_FILE: mozLogFile,
      MOZ_CRASHREPORTER_DISABLE: '1',
      MOZ_DISABLE_AUTO_SAFE_MODE: '1',
      MOZ_DISABLE_CONTENT_SANDBOX: '1',
      MOZ_DISABLE_GMP_SANDBOX: '1',
      MOZ_DISABLE_RDD_SANDBOX: '1',
      MOZ_DISABLE_SOCKET_PROCESS_SANDBOX: '1',
      MOZ_DISABLE_UTILITY_SANDBOX: '1',
      MOZ_SANDBOX_LOGGING: '0',
      MOZ_ASSUME_USER_NS: '0',
      MOZ_APP_NO_DEFAULT_BROWSER_CHECK: '1',
      CIDLOCK_TB_LOGINS: JSON.stringify([{ origin, user: a.user, pass: a.pass }]),
    },
  });
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  let exited = false;
  const exit = new Promise<void>((resolve) => proc.on('exit', () => { exited = true; resolve(); }));
  // MOZ_LOG_FILE gets a suffix per process (moz.log.child-N, sometimes moz.log.moz_log): read all.
  const mozLog = () => readdirSync(root).filter((f) => f.startsWith('moz.log')).sort().map((f) => readFileSync(join(root, f), 'latin1')).join('');
  const run: ThunderbirdRun = {
    proc,
    profile,
    clientid,
    mozLog,
    output: () => out,
    async waitFor(pred, what, timeoutMs = 90_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (pred()) return;
        if (exited) throw new Error(`Thunderbird exited before ${what}:\n${out}`);
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; Thunderbird said:\n${out}\nIMAP log tail:\n${mozLog().split('\n').slice(-30).join('\n')}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    },
    async stop() {
      if (!exited) {
        const pids = [proc.pid!, ...descendants(proc.pid!)];
        try { process.kill(-proc.pid!, 'SIGKILL'); } catch { /* gone */ }
        for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
        await Promise.race([exit, new Promise((r) => setTimeout(r, 5000))]);
      }
      running.delete(run);
    },
  };
  running.add(run);
  return run;
}

/** Whether this machine can run the Thunderbird tests at all (an install, and openssl for the CA). */
export function thunderbirdAvailable(): boolean {
  return installedThunderbird() !== null && spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
}
