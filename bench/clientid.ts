// Issue 11: what cidlock's CLIENTID login plugin costs. Real Dovecot 2.3 logins per second through
// imap-login (implicit TLS, a new imap-login and imap process per login, as Debian runs them), all
// asking the same cidlock in enforce mode, every login from a registered device. Three variants,
// measured in alternated rounds in the same run:
//   no-plugin      Dovecot without the plugin; the client presents its CID in the IMAP ID (the
//                  only way before the plugin): ID, LOGIN, LOGOUT
//   plugin-loaded  the same client against a Dovecot that loads the plugin: what loading it costs
//   plugin         the plugin's way: CLIENTID, LOGIN, LOGOUT
// Both Dovecots use the same `cidlock config dovecot --clientid` lines; the baseline's lack only
// the protocol imap block that loads the plugin. Reported per round: logins per second (all of the
// machine's CPU is busy, the load generator's TLS included, so it varies by 15 % between rounds on
// this VM) and Dovecot's own CPU time per login (its processes' utime + stime, 6 %).
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cidlock } from '../test/helpers/cli.js';
import { buildClientidPlugin, clientidSnippetFor, PLUGIN_NAME, requirePluginTools } from '../test/helpers/clientid-plugin.js';
import { converse } from '../test/helpers/mail-clients.js';
import { serverDir, startCidlock, startDovecot, type Dovecot } from '../test/e2e/harness.js';
import { median } from './lib.js';

const SECONDS = Number(process.env.BENCH_CLIENTID_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_CLIENTID_ROUNDS ?? 12);
const CONCURRENCY = Number(process.env.BENCH_CLIENTID_CONCURRENCY ?? 12);
const USERS = 24;

type Variant = 'no-plugin' | 'plugin-loaded' | 'plugin';
const VARIANTS: Variant[] = ['no-plugin', 'plugin-loaded', 'plugin'];

const token = (i: number) => `bench-clientid-device-${i}`;

/** One login as a device-locked client makes it; throws unless Dovecot lets it in. */
async function login(d: Dovecot, i: number, viaClientid: boolean): Promise<void> {
  const c = await converse(d.imapsPort, { tls: true, timeoutMs: 10_000 });
  try {
    await c.readLine();
    c.send(viaClientid ? `a1 CLIENTID UUID ${token(i)}` : `a1 ID ("clientid" "UUID ${token(i)}" "name" "bench")`);
    const first = (await c.readUntil((l) => l.startsWith('a1 '))).pop()!;
    if (!first.startsWith('a1 OK')) throw new Error(`${viaClientid ? 'CLIENTID' : 'ID'}: ${first}`);
    c.send(`a2 LOGIN user${i}@example.com pw${i}`);
    const r = (await c.readUntil((l) => l.startsWith('a2 '))).pop()!;
    if (!r.startsWith('a2 OK')) throw new Error(`LOGIN: ${r}`);
    c.send('a3 LOGOUT');
    await c.readUntil((l) => l.startsWith('a3 '));
  } finally {
    c.close();
  }
}

const TICK_MS = 1000 / 100; // USER_HZ on Linux

/** utime, stime, cutime, cstime and parent of a process, in clock ticks. */
function procTimes(pid: string): { own: number; children: number; ppid: string } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { ppid: f[1]!, own: Number(f[11]) + Number(f[12]), children: Number(f[13]) + Number(f[14]) };
  } catch {
    return null;
  }
}

/**
 * CPU time a Dovecot instance has used so far, in ms: its master, the children it has reaped
 * (every imap-login and imap process of a finished login) and the ones still running (auth,
 * config, log, anvil...). Less noisy than throughput on a shared VM: it is what a login costs.
 */
function dovecotCpuMs(d: Dovecot): number {
  const master = readFileSync(join(d.conf, '..', 'run', 'master.pid'), 'utf8').trim();
  const m = procTimes(master);
  if (m === null) throw new Error('dovecot master is gone');
  let ticks = m.own + m.children;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const t = procTimes(pid);
    if (t !== null && t.ppid === master) ticks += t.own + t.children;
  }
  return ticks * TICK_MS;
}

interface Round { logins_per_s: number; cpu_ms_per_login: number }

/** CONCURRENCY clients logging in back to back for SECONDS. */
async function round(d: Dovecot, viaClientid: boolean): Promise<Round> {
  const end = Date.now() + SECONDS * 1000;
  let done = 0;
  let next = 0;
  const cpu0 = dovecotCpuMs(d);
  const t0 = Date.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (Date.now() < end) {
      await login(d, next++ % USERS, viaClientid);
      done++;
    }
  }));
  // Reaped children count once the master has waited for them: give it a moment.
  const wall = (Date.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 300));
  return { logins_per_s: +(done / wall).toFixed(1), cpu_ms_per_login: +((dovecotCpuMs(d) - cpu0) / done).toFixed(2) };
}

export async function benchClientid(): Promise<Record<string, unknown>> {
  if (!requirePluginTools('bench clientid')) return { skipped: 'gcc, make, dovecot or dovecot-dev missing' };
  const pluginDir = buildClientidPlugin();
  const dir = serverDir();
  const cl = await startCidlock(dir, 'policy: { mode: enforce }\nlimits: []\nlog: { decisions: refusals }\n');
  const dovecots: Dovecot[] = [];
  try {
    const devices = join(dir, 'devices.txt');
    writeFileSync(devices, Array.from({ length: USERS }, (_, i) => `user${i}@example.com UUID ${token(i)}`).join('\n') + '\n');
    const imp = cidlock(['devices', 'import', devices, '--config', cl.cfg]);
    if (imp.status !== 0) throw new Error(imp.stderr);
    await cl.waitFor((l) => l.event === 'registry_reloaded', 'the daemon to see the devices');
    const users = Object.fromEntries(Array.from({ length: USERS }, (_, i) => [`user${i}@example.com`, `pw${i}`]));
    // Production logging: no auth debugging (the harness turns it on for the tests).
    const quiet = '\nauth_debug = no\nauth_verbose = no\n';
    const withPlugin = clientidSnippetFor(cl.cfg, pluginDir);
    const withoutPlugin = withPlugin.replace(/\nprotocol imap \{\n[^}]*\}\n/, '\n');
    if (withoutPlugin.includes(PLUGIN_NAME) || !withPlugin.includes(PLUGIN_NAME)) throw new Error(`could not remove the plugin block from:\n${withPlugin}`);
    const plain = await startDovecot({ dir, users, imaps: true, name: 'no-plugin', snippet: withoutPlugin + quiet });
    dovecots.push(plain);
    const plugged = await startDovecot({ dir, users, imaps: true, name: 'plugin', snippet: withPlugin + quiet });
    dovecots.push(plugged);
    const target: Record<Variant, { d: Dovecot; viaClientid: boolean }> = {
      'no-plugin': { d: plain, viaClientid: false },
      'plugin-loaded': { d: plugged, viaClientid: false },
      plugin: { d: plugged, viaClientid: true },
    };
    // Every variant's login is let in as a registered device (a refusal would measure the failure delay).
    for (const v of VARIANTS) await login(target[v].d, 0, target[v].viaClientid);
    const accepted = cl.lines.filter((l) => l.event === 'decision');
    if (accepted.length > 0) throw new Error(`refused during warm-up: ${JSON.stringify(accepted)}`);
    for (const v of VARIANTS) await round(target[v].d, target[v].viaClientid); // warm-up: caches, JIT, page cache

    const rounds: Record<Variant, Round[]> = { 'no-plugin': [], 'plugin-loaded': [], plugin: [] };
    for (let r = 0; r < ROUNDS; r++) {
      // Which variant goes first rotates: on this VM a back-to-back second run can be slower.
      for (let k = 0; k < VARIANTS.length; k++) {
        const v = VARIANTS[(r + k) % VARIANTS.length]!;
        rounds[v].push(await round(target[v].d, target[v].viaClientid));
      }
      process.stderr.write(`  clientid round ${r + 1}/${ROUNDS}: ${VARIANTS.map((v) => `${v} ${rounds[v][r]!.logins_per_s}/s ${rounds[v][r]!.cpu_ms_per_login} ms`).join(', ')}\n`);
    }
    const refused = cl.lines.filter((l) => l.event === 'decision');
    if (refused.length > 0) throw new Error(`cidlock refused ${refused.length} bench logins: ${JSON.stringify(refused[0])}`);
    const ratio = (a: number, b: number) => +(a / b).toFixed(3);
    const col = (v: Variant, k: keyof Round) => rounds[v].map((x) => x[k]);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    // Each round's variants ran back to back, so a round's own ratio cancels the VM's slow drift.
    const compare = (v: Variant, k: keyof Round) => ({
      median: ratio(median(col(v, k)), median(col('no-plugin', k))),
      mean: ratio(mean(col(v, k)), mean(col('no-plugin', k))),
      median_of_round_ratios: ratio(median(col(v, k).map((x, i) => x / col('no-plugin', k)[i]!)), 1),
    });
    for (const d of dovecots) {
      const log = d.log();
      for (const bad of ['Panic', 'Fatal', 'killed with signal']) if (log.includes(bad)) throw new Error(`${bad} in Dovecot's log`);
    }
    return {
      seconds: SECONDS,
      rounds: ROUNDS,
      concurrency: CONCURRENCY,
      users: USERS,
      logins_per_s: Object.fromEntries(VARIANTS.map((v) => [v, col(v, 'logins_per_s')])),
      cpu_ms_per_login: Object.fromEntries(VARIANTS.map((v) => [v, col(v, 'cpu_ms_per_login')])),
      median_logins_per_s: Object.fromEntries(VARIANTS.map((v) => [v, median(col(v, 'logins_per_s'))])),
      median_cpu_ms_per_login: Object.fromEntries(VARIANTS.map((v) => [v, median(col(v, 'cpu_ms_per_login'))])),
      // logins/s: above 1 is faster; Dovecot CPU per login: above 1 costs more.
      plugin_vs_no_plugin: { logins_per_s: compare('plugin', 'logins_per_s'), cpu_ms_per_login: compare('plugin', 'cpu_ms_per_login') },
      loaded_vs_no_plugin: { logins_per_s: compare('plugin-loaded', 'logins_per_s'), cpu_ms_per_login: compare('plugin-loaded', 'cpu_ms_per_login') },
    };
  } finally {
    for (const d of dovecots) d.stop();
    await cl.stop();
  }
}
