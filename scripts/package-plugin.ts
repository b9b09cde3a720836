/**
 * Builds the CLIENTID login plugin (src/dovecot-clientid) against the installed Dovecot and
 * packages it as cidlock-dovecot-clientid_<version>~deb<N>_<arch>.deb with dpkg-deb.
 *
 *   npm run package:plugin                          # npm run build, then this
 *   node dist/scripts/package-plugin.js [--out DIR] [--keep-stage]
 *
 * Run it on the Debian release the package is for, with its dovecot-dev, gcc, make, libc6-dev,
 * dpkg-dev and binutils: Dovecot refuses a plugin built for another release (DOVECOT_ABI_VERSION),
 * so the package Depends on the exact dovecot-core version it was built against, and its version
 * carries the release (~deb12, ~deb13: /etc/os-release VERSION_ID) so the builds differ.
 * Needs nothing but Node's standard library (Debian 12's nodejs 18.20 runs it).
 *
 * Environment: SOURCE_DATE_EPOCH (default: the last commit's time), DEB_REVISION (default 1),
 * DEB_MAINTAINER ("Name <email>"), DOVECOT_CONFIG (default /usr/lib/dovecot/dovecot-config).
 *
 * Layout:
 *   <dovecot_moduledir>/login/lib20_cidlock_clientid_plugin.so   (stripped; /usr/lib/dovecot/modules/login)
 *   /usr/share/doc/cidlock-dovecot-clientid/{copyright, changelog.Debian.gz, README.md.gz}
 * No maintainer scripts: Dovecot loads the plugin only once its configuration names it
 * (`cidlock config dovecot --clientid` prints those lines).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  MIT, REPO_ROOT, copyrightYears, debMaintainer, debianVersion, dep5Text, gitRevision, gz, packageArgs, put,
  sealDeb, sourceDateEpoch,
} from './package.js';

export const PLUGIN_PKG = 'cidlock-dovecot-clientid';
export const PLUGIN_SO = 'lib20_cidlock_clientid_plugin.so';
const DOC = `usr/share/doc/${PLUGIN_PKG}`;
const SRC = join(REPO_ROOT, 'src', 'dovecot-clientid');

export interface PluginBuildOptions {
  /** Where the .deb goes (created if missing). Default: REPO_ROOT/dist. */
  outDir?: string;
  sourceDateEpoch?: number;
  revision?: string;
  maintainer?: string;
  keepStage?: boolean;
}

export interface PluginBuildResult {
  deb: string;
  version: string;
  arch: string;
  dovecotCore: string;
  depends: string;
  installedSizeKiB: number;
  bytes: number;
  stage?: string;
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; message: string };
    const detail = `${err.stdout ?? ''}${err.stderr ?? ''}`.trim();
    throw new Error(`package-plugin: ${cmd} ${args.join(' ')} failed${detail ? `:\n${detail}` : `: ${err.message}`}`);
  }
}

/** /etc/os-release as a map (shell-style NAME=value lines, values maybe quoted). */
export function osRelease(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    let v = m[2]!;
    if (/^".*"$/.test(v)) v = v.slice(1, -1).replace(/\\(["$`\\])/g, '$1');
    else if (/^'.*'$/.test(v)) v = v.slice(1, -1);
    out.set(m[1]!, v);
  }
  return out;
}

/** The release suffix of the package version: "~deb12" on Debian 12, "~ubuntu24.04" elsewhere. */
export function releaseSuffix(os: Map<string, string>): string {
  const id = os.get('ID') ?? '';
  const ver = os.get('VERSION_ID') ?? '';
  if (!/^[a-z0-9]+$/.test(id) || !/^[0-9][0-9.]*$/.test(ver)) {
    throw new Error(`package-plugin: /etc/os-release has no usable ID and VERSION_ID (ID="${id}", VERSION_ID="${ver}"); `
      + 'build on a released Debian (testing and sid have no VERSION_ID)');
  }
  return `~${id === 'debian' ? 'deb' : id}${ver}`;
}

/** One variable of Dovecot's dovecot-config (a shell fragment), as the Makefile reads it. */
function dovecotConfigVar(config: string, name: string): string {
  return run('sh', ['-c', `. "$1" && printf '%s' "$${name}"`, 'sh', config]);
}

function installedVersion(pkg: string): string {
  return run('dpkg-query', ['-W', '-f', '${Version}', pkg]).trim();
}

/** The shared-library dependencies of an ELF file, as dpkg-shlibdeps computes them ("libc6 (>= 2.14)"). */
function shlibsDepends(so: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cidlock-shlibdeps-'));
  try {
    // dpkg-shlibdeps wants a debian/control naming the binary package; a throwaway one does.
    put(dir, 'debian/control', `Source: ${PLUGIN_PKG}\n\nPackage: ${PLUGIN_PKG}\nArchitecture: any\n`);
    // Warnings about the symbols imap-login provides (not a library the plugin links) are expected.
    const out = run('dpkg-shlibdeps', ['-O', `-e${so}`], { cwd: dir });
    const m = /^shlibs:Depends=(.*)$/m.exec(out);
    return m ? m[1]!.trim() : '';
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function copyright(epoch: number): string {
  return [
    'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/',
    'Upstream-Name: cidlock',
    'Comment: The CLIENTID login plugin of cidlock (src/dovecot-clientid), built against',
    ' the Dovecot headers of the release it is installed on.',
    '',
    'Files: *',
    `Copyright: ${copyrightYears(epoch)} the cidlock authors`,
    'License: Expat',
    '',
    'License: Expat',
    dep5Text(MIT),
    '',
  ].join('\n');
}

/** Words wrapped to lines of at most `width` characters, each starting with `indent`. */
export function wrap(text: string, indent: string, width = 79): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter((w) => w !== '')) {
    if (line !== '' && indent.length + line.length + 1 + word.length > width) {
      lines.push(indent + line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') lines.push(indent + line);
  return lines;
}

function changelog(version: string, upstream: string, dovecot: string, distribution: string, maintainer: string, epoch: number): string {
  const date = new Date(epoch * 1000).toUTCString().replace('GMT', '+0000');
  const rev = gitRevision();
  const entry = wrap(`The CLIENTID login plugin of cidlock ${upstream}${rev ? ` (git ${rev})` : ''}, built `
    + `against dovecot-dev ${dovecot} with npm run package:plugin.`, '    ');
  entry[0] = `  * ${entry[0]!.trimStart()}`;
  return `${PLUGIN_PKG} (${version}) ${distribution}; urgency=medium\n\n${entry.join('\n')}\n\n`
    + ` -- ${maintainer}  ${date}\n`;
}

function control(f: {
  version: string; arch: string; maintainer: string; installedSize: number; depends: string; dovecot: string;
}): string {
  return [
    `Package: ${PLUGIN_PKG}`,
    `Version: ${f.version}`,
    `Architecture: ${f.arch}`,
    `Maintainer: ${f.maintainer}`,
    `Installed-Size: ${f.installedSize}`,
    `Depends: ${f.depends}`,
    'Enhances: dovecot-imapd',
    'Suggests: cidlock',
    'Section: mail',
    'Priority: optional',
    'Description: CLIENTID login plugin for Dovecot\'s imap-login (cidlock)',
    ' A login plugin for Dovecot\'s own imap-login that implements the CLIENTID',
    ' command of draft-yu-imap-client-id: over TLS, a mail client names its',
    ' device before it logs in, and Dovecot\'s auth policy request hands the',
    ' client ID to cidlock, which locks each mailbox to its owner\'s devices.',
    ' .',
    ...wrap(`This build is for dovecot-core ${f.dovecot} only: Dovecot refuses a plugin built for another `
      + 'release, so it must be rebuilt and reinstalled for each Dovecot release (after every Dovecot upgrade).', ' '),
    ' .',
    ' Nothing is loaded until Dovecot\'s configuration names the plugin:',
    ' "cidlock config dovecot --clientid" prints the Dovecot lines that load it.',
    '',
  ].join('\n');
}

export function buildPluginDeb(opts: PluginBuildOptions = {}): PluginBuildResult {
  const outDir = opts.outDir ?? join(REPO_ROOT, 'dist');
  const epoch = opts.sourceDateEpoch ?? sourceDateEpoch();
  const env = process.env;
  const maintainer = debMaintainer(opts.maintainer);
  const rootPkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version?: string };
  const upstream = String(rootPkg.version);
  const os = osRelease(readFileSync(existsSync('/etc/os-release') ? '/etc/os-release' : '/usr/lib/os-release', 'utf8'));
  const version = debianVersion(upstream, opts.revision ?? env.DEB_REVISION ?? '1') + releaseSuffix(os);
  const distribution = os.get('VERSION_CODENAME') || 'unstable';

  const dovecotConfig = env.DOVECOT_CONFIG ?? '/usr/lib/dovecot/dovecot-config';
  if (!existsSync(dovecotConfig)) {
    throw new Error(`package-plugin: ${dovecotConfig} not found: install Dovecot's headers (apt-get install dovecot-dev gcc make libc6-dev dpkg-dev binutils)`);
  }
  const moduledir = dovecotConfigVar(dovecotConfig, 'dovecot_moduledir');
  if (!moduledir.startsWith('/')) throw new Error(`package-plugin: ${dovecotConfig} has no dovecot_moduledir`);
  const loginDir = `${moduledir.replace(/\/+$/, '')}/login`;
  const dovecot = installedVersion('dovecot-core');
  const dev = installedVersion('dovecot-dev');
  if (!dovecot) throw new Error('package-plugin: dovecot-core is not installed');
  if (dev !== dovecot) throw new Error(`package-plugin: dovecot-dev ${dev || '(none)'} is not dovecot-core ${dovecot}: the plugin must be built with the installed Dovecot's own headers`);
  const arch = run('dpkg', ['--print-architecture']).trim();

  const stage = mkdtempSync(join(tmpdir(), 'cidlock-plugin-deb-'));
  const build = join(stage, 'build');
  const root = join(stage, 'root');
  try {
    mkdirSync(root, { mode: 0o755 });
    // Out of tree: the checkout may be read-only. Dovecot's own CFLAGS carry Debian's hardening;
    // link it as Dovecot links its binaries (relro, now).
    run('make', ['-C', SRC, `O=${build}`, `DOVECOT_CONFIG=${dovecotConfig}`, 'LDFLAGS=-Wl,-z,relro -Wl,-z,now'], {
      env: { ...env, SOURCE_DATE_EPOCH: String(epoch) },
    });
    const so = join(root, loginDir.replace(/^\//, ''), PLUGIN_SO);
    put(root, relative('/', join(loginDir, PLUGIN_SO)), readFileSync(join(build, PLUGIN_SO)), 0o644);
    run('strip', ['--strip-unneeded', '--remove-section=.comment', '--remove-section=.note', so]);
    const shlibs = shlibsDepends(so);
    const depends = [shlibs, `dovecot-core (= ${dovecot})`].filter((d) => d !== '').join(', ');

    put(root, `${DOC}/copyright`, copyright(epoch));
    put(root, `${DOC}/changelog.Debian.gz`, gz(changelog(version, upstream, dovecot, distribution, maintainer, epoch)));
    put(root, `${DOC}/README.md.gz`, gz(readFileSync(join(SRC, 'README.md'))));

    const deb = join(outDir, `${PLUGIN_PKG}_${version.replace(/^\d+:/, '')}_${arch}.deb`);
    const sealed = sealDeb(root, deb, epoch, (kib) => control({ version, arch, maintainer, installedSize: kib, depends, dovecot }));
    const result: PluginBuildResult = { deb, version, arch, dovecotCore: dovecot, depends, ...sealed };
    if (opts.keepStage) result.stage = root;
    return result;
  } finally {
    if (!opts.keepStage) rmSync(stage, { recursive: true, force: true });
    else rmSync(build, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const opts: PluginBuildOptions = packageArgs(process.argv.slice(2), 'package-plugin.js');
  const t0 = Date.now();
  try {
    const r = buildPluginDeb(opts);
    const shown = relative(process.cwd(), r.deb);
    process.stdout.write(`${shown && !shown.startsWith('..') ? shown : r.deb}: ${r.version} for dovecot-core ${r.dovecotCore}, `
      + `Depends: ${r.depends}, ${r.bytes} bytes, Installed-Size ${r.installedSizeKiB} KiB, ${Date.now() - t0} ms`
      + `${r.stage ? `, staged in ${r.stage}` : ''}\n`);
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    process.exit(1);
  }
}
