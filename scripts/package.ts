/**
 * Builds dist/cidlock_<version>_all.deb with Debian's own dpkg-deb (issue 12), from the compiled
 * dist/src and the production node_modules (yaml, lru-cache): nothing is downloaded.
 *
 *   npm run package                          # npm run build, then this
 *   node dist/scripts/package.js [--out DIR] [--keep-stage]
 *
 * Environment: SOURCE_DATE_EPOCH (default: the last commit's time, for reproducible builds),
 * DEB_REVISION (default 1), DEB_MAINTAINER ("Name <email>").
 *
 * Layout (debhelper conventions, by hand):
 *   /usr/lib/cidlock/{bin/cidlock, dist/src, templates, package.json, node_modules/{yaml,lru-cache}}
 *   /usr/bin/cidlock -> ../lib/cidlock/bin/cidlock        (runs /usr/bin/node)
 *   /etc/cidlock/cidlock.yaml                              (conffile; postinst: 0640 root:cidlock)
 *   /lib/systemd/system/cidlock.service
 *   /usr/share/man/man1/cidlock.1.gz, cidlock-COMMAND.1.gz (from src/cli/help.ts)
 *   /usr/share/cidlock/dovecot-clientid/                   (the login plugin's source)
 *   /usr/share/doc/cidlock/{copyright, changelog.Debian.gz, README.md.gz, examples/}
 * Maintainer scripts: packaging/debian/{postinst,prerm,postrm}.
 */
import { execFileSync } from 'node:child_process';
import {
  chmodSync, copyFileSync, existsSync, lstatSync, lutimesSync, mkdirSync, mkdtempSync, readdirSync,
  readFileSync, rmSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync, constants as zlib } from 'node:zlib';
import { HELP } from '../src/cli/help.js';

/** The repository root: this file runs as dist/scripts/package.js. */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface BuildOptions {
  /** Where the .deb goes (created if missing). Default: REPO_ROOT/dist. */
  outDir?: string;
  /** Unix time stamped on every file and in the changelog. Default: $SOURCE_DATE_EPOCH, else git. */
  sourceDateEpoch?: number;
  revision?: string;
  maintainer?: string;
  /** Keep the staging tree (its path is returned) instead of deleting it. */
  keepStage?: boolean;
}

export interface BuildResult {
  deb: string;
  version: string;
  installedSizeKiB: number;
  bytes: number;
  stage?: string;
}

/** The example folders shipped in /usr/share/doc/cidlock/examples. */
const EXAMPLE_DIRS = ['dovecot', 'grafana', 'postfix'];
const DEFAULT_MAINTAINER = 'cidlock maintainers <maintainers@cidlock.invalid>';
const PKG = 'cidlock';
const LIB = 'usr/lib/cidlock';
const DOC = 'usr/share/doc/cidlock';
const CONFFILE = '/etc/cidlock/cidlock.yaml';

/** A semver version as Debian orders it: a pre-release sorts before the release ("~"). */
export function debianVersion(semver: string, revision = '1'): string {
  const m = /^(\d+\.\d+\.\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$/.exec(semver);
  if (!m) throw new Error(`package.json version "${semver}" is not semver`);
  let v = m[1]!;
  if (m[2]) v += `~${m[2].replace(/-/g, '.')}`;
  if (m[3]) v += `+${m[3].replace(/-/g, '.')}`;
  if (!/^[0-9A-Za-z.+~]+$/.test(revision)) throw new Error(`DEB_REVISION "${revision}" is not a Debian revision`);
  return `${v}-${revision}`;
}

export function sourceDateEpoch(): number {
  const env = process.env.SOURCE_DATE_EPOCH;
  if (env && /^\d+$/.test(env)) return Number(env);
  try {
    const out = execFileSync('git', ['log', '-1', '--format=%ct'], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (/^\d+$/.test(out)) return Number(out);
  } catch { /* not a checkout */ }
  const t = Math.floor(statSync(join(REPO_ROOT, 'package.json')).mtimeMs / 1000);
  process.stderr.write(`package: no SOURCE_DATE_EPOCH and no git; using package.json's mtime (${t})\n`);
  return t;
}

export function gitRevision(): string | null {
  try {
    return execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() || null;
  } catch {
    return null;
  }
}

/** gzip -9n: no name, no time stamp, so the same input gives the same bytes. */
export function gz(data: string | Buffer): Buffer {
  const out = gzipSync(data, { level: zlib.Z_BEST_COMPRESSION });
  out[9] = 3; // OS = Unix, as gzip(1) writes it (zlib leaves "unknown")
  return out;
}

export function put(stage: string, path: string, data: string | Buffer, mode = 0o644): void {
  const full = join(stage, path);
  mkdirSync(dirname(full), { recursive: true });
  writeFileSync(full, data);
  chmodSync(full, mode);
}

/** Copies a tree, skipping what `skip(relativePath, isDir)` rejects. */
function copyTree(from: string, to: string, skip: (rel: string, isDir: boolean) => boolean, rel = ''): void {
  for (const name of readdirSync(join(from, rel)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = lstatSync(join(from, r));
    if (skip(r, st.isDirectory())) continue;
    if (st.isDirectory()) {
      copyTree(from, to, skip, r);
    } else if (st.isFile()) {
      mkdirSync(dirname(join(to, r)), { recursive: true });
      copyFileSync(join(from, r), join(to, r));
      chmodSync(join(to, r), 0o644);
    } else {
      throw new Error(`package: ${join(from, r)} is neither a file nor a folder`);
    }
  }
}

interface NpmPackage { name?: string; version?: string; license?: string; dependencies?: Record<string, string> }

/** The production dependencies and theirs, resolved in node_modules (nothing is fetched). */
function productionModules(rootPkg: NpmPackage): Map<string, NpmPackage> {
  const found = new Map<string, NpmPackage>();
  const queue = Object.keys(rootPkg.dependencies ?? {});
  while (queue.length > 0) {
    const name = queue.shift()!;
    if (found.has(name)) continue;
    const file = join(REPO_ROOT, 'node_modules', name, 'package.json');
    if (!existsSync(file)) throw new Error(`package: ${name} is not in node_modules; run "npm ci" first`);
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as NpmPackage;
    found.set(name, pkg);
    queue.push(...Object.keys(pkg.dependencies ?? {}));
  }
  return found;
}

/** What a module ships that Node does not run: types, source maps, its docs and CLI. */
function moduleSkip(rel: string, isDir: boolean): boolean {
  if (isDir) return rel === 'node_modules' || rel.endsWith('/node_modules');
  return /\.(d\.ts|d\.mts|d\.cts|map)$/.test(rel) || /^(README|CHANGELOG|LICENSE|LICENCE)(\.[a-z]+)?$/i.test(rel) || rel === 'bin.mjs';
}

// ---- man pages, from the --help texts ----

function roffLine(s: string): string {
  const t = s.replace(/\\/g, '\\e').replace(/-/g, '\\-');
  return /^[.']/.test(t) ? `\\&${t}` : t;
}

/**
 * One man page from one HELP text. The texts are laid out for a terminal already (NAME, SYNOPSIS,
 * ... at column 0, bodies indented five spaces), so the bodies stay as written (no-fill); NAME
 * becomes the "page \- summary" line whatis and lexgrog expect.
 */
export function manPage(command: string | null, help: string, version: string, date: string, seeAlso: string[]): string {
  const page = command ? `cidlock-${command}` : 'cidlock';
  const out: string[] = [
    `.\\" Generated from src/cli/help.ts by scripts/package.ts: edit the --help text, not this file.`,
    `.TH ${page.toUpperCase()} 1 ${date} "cidlock ${version}" "cidlock manual"`,
    '.nh', // no hyphenation: command names and options stay whole
    '.ad l',
  ];
  const lines = help.replace(/\n+$/, '').split('\n');
  let body: string[] = [];
  let section: string | null = null;
  const flush = () => {
    if (section === null) return;
    while (body.length > 0 && body[body.length - 1]!.trim() === '') body.pop();
    out.push(`.SH ${section}`);
    if (section === 'NAME') {
      const m = /^\s*cidlock(?: (\S+))? - (.*)$/.exec(body.join(' ').trim());
      if (!m) throw new Error(`package: the NAME of "${page}" is not "cidlock [command] - summary"`);
      out.push(`${roffLine(page)} \\- ${roffLine(m[2]!)}`);
    } else {
      out.push('.nf');
      for (const l of body) out.push(l.trim() === '' ? '' : roffLine(l.replace(/^ {1,5}/, '')));
      out.push('.fi');
    }
    body = [];
  };
  for (const l of lines) {
    if (/^[A-Z][A-Z ]*[A-Z]$/.test(l)) {
      flush();
      section = l;
    } else {
      if (section === null) throw new Error(`package: the help text of "${page}" does not start with a section`);
      if (body.length === 0 && l.trim() === '') continue;
      body.push(l);
    }
  }
  flush();
  if (seeAlso.length > 0) {
    out.push('.SH SEE ALSO');
    out.push(seeAlso.map((p) => `.BR ${p} (1)`).join(',\n'));
    out.push('.PP', `/usr/share/doc/cidlock/README.md.gz and the examples beside it.`);
  }
  return `${out.join('\n')}\n`;
}

// ---- the package's text files ----

function unitFile(example: string): string {
  let unit = example;
  const header = '# cidlock\'s systemd unit, installed by the cidlock package. Change it with\n'
    + '# "systemctl edit cidlock" (a drop-in survives upgrades), not here.\n'
    + '# Reload the rules (also picked up automatically when the file changes): systemctl reload cidlock\n';
  const start = unit.indexOf('[Unit]');
  if (start < 0) throw new Error('package: examples/cidlock.service has no [Unit]');
  unit = header + unit.slice(start);
  const replace = (from: RegExp, to: string) => {
    if (!from.test(unit)) throw new Error(`package: examples/cidlock.service no longer matches ${from}`);
    unit = unit.replace(from, to);
  };
  replace(/^Documentation=.*$/m, 'Documentation=man:cidlock(1) file:///usr/share/doc/cidlock/README.md.gz');
  replace(/\/opt\/cidlock\//g, '/usr/lib/cidlock/');
  // Postfix is only recommended: without its group the socket folder is not made (set
  // listen.postfix and listen.socketmap to off), and the sandbox does not need it to exist.
  replace(/^ExecStartPre=\+\/usr\/bin\/install -d -o cidlock -g postfix -m 2750 \/var\/spool\/postfix\/cidlock$/m,
    'ExecStartPre=+/bin/sh -c \'if getent group postfix >/dev/null; then exec /usr/bin/install -d -o cidlock -g postfix -m 2750 /var/spool/postfix/cidlock; fi\'');
  replace(/^ReadWritePaths=\/var\/lib\/cidlock \/run\/cidlock \/var\/spool\/postfix\/cidlock$/m,
    'ReadWritePaths=/var/lib/cidlock /run/cidlock -/var/spool/postfix/cidlock');
  if (unit.includes('/opt/')) throw new Error('package: the unit still names /opt');
  return unit;
}

function confFile(example: string): string {
  const re = /^state_dir:[^\n#]*?(\s*#.*)?$/m;
  if (!re.test(example)) throw new Error('package: examples/cidlock.yaml has no state_dir line');
  return example.replace(re, (_l, comment: string | undefined) => `state_dir: /var/lib/cidlock${comment ?? ''}`);
}

export const MIT = `Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.`;

/** A licence text as a DEP-5 paragraph body: each line indented, blank lines as " .". */
export function dep5Text(text: string): string {
  return text.trim().split('\n').map((l) => (l.trim() === '' ? ' .' : ` ${l.trimEnd()}`)).join('\n');
}

/** The first "Copyright (c) ..." line of a module's licence file, for its Copyright: field. */
function moduleLicence(name: string): { holder: string; text: string } {
  const dir = join(REPO_ROOT, 'node_modules', name);
  const file = readdirSync(dir).find((f) => /^licen[cs]e(\.md|\.txt)?$/i.test(f));
  if (!file) throw new Error(`package: node_modules/${name} has no licence file for debian/copyright`);
  const text = readFileSync(join(dir, file), 'utf8');
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { author?: string | { name?: string; email?: string } };
  const author = typeof pkg.author === 'string' ? pkg.author
    : pkg.author?.name ? `${pkg.author.name}${pkg.author.email ? ` <${pkg.author.email}>` : ''}` : null;
  const holder = /^\s*Copyright\s+(?:\(c\)|©)\s*(.+)$/im.exec(text)?.[1]?.trim() ?? author ?? `the ${name} authors`;
  return { holder, text };
}

/** "2025-2026": the first commit's year to the build's (SOURCE_DATE_EPOCH). */
export function copyrightYears(epoch: number): string {
  const last = new Date(epoch * 1000).getUTCFullYear();
  let first = last;
  try {
    const out = execFileSync('git', ['log', '--max-parents=0', '--format=%ct'], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    for (const t of out.split('\n')) if (/^\d+$/.test(t)) first = Math.min(first, new Date(Number(t) * 1000).getUTCFullYear());
  } catch { /* not a checkout */ }
  return first === last ? String(last) : `${first}-${last}`;
}

function copyright(modules: Map<string, NpmPackage>, epoch: number): string {
  const parts = [
    'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/',
    'Upstream-Name: cidlock',
    '',
    'Files: *',
    `Copyright: ${copyrightYears(epoch)} the cidlock authors`,
    'License: Expat',
  ];
  const licences = new Map<string, string>([['Expat', MIT]]);
  for (const [name, pkg] of modules) {
    const { holder, text } = moduleLicence(name);
    const id = pkg.license === 'MIT' ? 'Expat' : (pkg.license ?? 'unknown');
    parts.push('', `Files: usr/lib/cidlock/node_modules/${name}/*`, `Copyright: ${holder}`, `License: ${id}`);
    if (!licences.has(id)) {
      // The licence's own text, without its title and copyright lines.
      licences.set(id, text.replace(/^#.*\n+/, '').replace(/^Copyright.*\n+/im, '').trim());
    }
  }
  for (const [id, text] of licences) parts.push('', `License: ${id}`, dep5Text(text));
  return `${parts.join('\n')}\n`;
}

function changelog(version: string, upstream: string, maintainer: string, epoch: number): string {
  const date = new Date(epoch * 1000).toUTCString().replace('GMT', '+0000');
  const rev = gitRevision();
  return `cidlock (${version}) unstable; urgency=medium\n\n`
    + `  * Package of cidlock ${upstream}${rev ? ` (git ${rev})` : ''}, built with npm run package.\n\n`
    + ` -- ${maintainer}  ${date}\n`;
}

function control(version: string, maintainer: string, installedSize: number, description: string): string {
  return [
    `Package: ${PKG}`,
    `Version: ${version}`,
    'Architecture: all',
    `Maintainer: ${maintainer}`,
    `Installed-Size: ${installedSize}`,
    'Depends: nodejs (>= 18.20), adduser',
    'Recommends: dovecot-core, postfix',
    'Suggests: dovecot-dev, gcc, make',
    'Section: mail',
    'Priority: optional',
    `Description: ${description}`,
    ' cidlock asks for the other half of a login: proof that it comes from one',
    ' of the mailbox owner\'s registered devices. Dovecot (auth policy) and',
    ' Postfix (policy delegation, socketmap) ask cidlock before the password is',
    ' checked; a login from an unknown device gets the wrong-password reply.',
    ' .',
    ' A device proves itself with a client ID sent in IMAP (CLIENTID or ID), a',
    ' TLS client certificate, or a recent proof from the same address. Accounts',
    ' move from monitor (log what would be refused) to learn to enforce, per',
    ' server, domain or user. Built-in defences slow and shut out addresses',
    ' that guess passwords.',
    ' .',
    ' The package starts the daemon in monitor mode: nothing is locked until',
    ' /etc/cidlock/cidlock.yaml says so.',
    '',
  ].join('\n');
}

// ---- staging ----

/** Every file, folder and symlink under dir (relative paths, sorted), DEBIAN excluded. */
function walk(dir: string, rel = ''): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(dir, rel)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    if (r === 'DEBIAN') continue;
    out.push(r);
    const st = lstatSync(join(dir, r));
    if (st.isDirectory()) out.push(...walk(dir, r));
  }
  return out;
}

/** The Maintainer: the option, else $DEB_MAINTAINER, else "$DEBFULLNAME <$DEBEMAIL>", else a placeholder. */
export function debMaintainer(given?: string): string {
  const env = process.env;
  return given ?? env.DEB_MAINTAINER ?? (env.DEBFULLNAME && env.DEBEMAIL ? `${env.DEBFULLNAME} <${env.DEBEMAIL}>` : DEFAULT_MAINTAINER);
}

/**
 * Finishes a staged package tree and builds `deb` from it: DEBIAN/md5sums (not of conffiles under
 * etc/, as dh_md5sums), Installed-Size as dpkg-gencontrol counts it, DEBIAN/control from
 * `control(kib)`, folders 0755 and every time stamp SOURCE_DATE_EPOCH, so the same input gives the
 * same bytes.
 */
export function sealDeb(root: string, deb: string, epoch: number, control: (installedSizeKiB: number) => string): { installedSizeKiB: number; bytes: number } {
  let kib = 0;
  const sums: string[] = [];
  for (const r of walk(root)) {
    const st = lstatSync(join(root, r));
    if (st.isFile()) {
      kib += Math.ceil(st.size / 1024);
      if (!r.startsWith('etc/')) sums.push(`${createHash('md5').update(readFileSync(join(root, r))).digest('hex')}  ${r}`);
    } else {
      kib += 1; // as dpkg-gencontrol counts folders and symlinks
    }
  }
  put(root, 'DEBIAN/md5sums', `${sums.join('\n')}\n`);
  put(root, 'DEBIAN/control', control(kib));
  for (const r of [...walk(root), 'DEBIAN', ...readdirSync(join(root, 'DEBIAN')).map((f) => `DEBIAN/${f}`)]) {
    const full = join(root, r);
    if (lstatSync(full).isDirectory()) chmodSync(full, 0o755);
    lutimesSync(full, epoch, epoch);
  }
  lutimesSync(root, epoch, epoch);
  mkdirSync(dirname(deb), { recursive: true });
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', root, deb], {
    env: { ...process.env, SOURCE_DATE_EPOCH: String(epoch) },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return { installedSizeKiB: kib, bytes: statSync(deb).size };
}

/** The command line of both packaging scripts: [--out DIR] [--keep-stage]; exits 2 on anything else. */
export function packageArgs(argv: string[], script: string): { outDir?: string; keepStage?: boolean } {
  const opts: { outDir?: string; keepStage?: boolean } = {};
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out' && argv[i + 1]) opts.outDir = argv[++i]!;
    else if (argv[i] === '--keep-stage') opts.keepStage = true;
    else {
      process.stderr.write(`usage: node dist/scripts/${script} [--out DIR] [--keep-stage]\n`);
      process.exit(2);
    }
  }
  return opts;
}

export function buildDeb(opts: BuildOptions = {}): BuildResult {
  const outDir = opts.outDir ?? join(REPO_ROOT, 'dist');
  const epoch = opts.sourceDateEpoch ?? sourceDateEpoch();
  const maintainer = debMaintainer(opts.maintainer);
  const rootPkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as NpmPackage & Record<string, unknown>;
  const upstream = String(rootPkg.version);
  const version = debianVersion(upstream, opts.revision ?? process.env.DEB_REVISION ?? '1');
  const compiled = join(REPO_ROOT, 'dist', 'src');
  if (!existsSync(join(compiled, 'cli', 'main.js'))) throw new Error('package: dist/src is not built; run "npm run build" first');

  const stage = mkdtempSync(join(tmpdir(), 'cidlock-deb-'));
  const root = join(stage, 'root');
  try {
    mkdirSync(root, { mode: 0o755 });

    // /usr/lib/cidlock: the program, run by Debian's node.
    copyTree(compiled, join(root, LIB, 'dist', 'src'), (rel, isDir) => !isDir && !rel.endsWith('.js'));
    const launcher = readFileSync(join(REPO_ROOT, 'bin', 'cidlock'), 'utf8');
    if (!launcher.startsWith('#!/usr/bin/env node\n')) throw new Error('package: bin/cidlock does not start with #!/usr/bin/env node');
    put(root, `${LIB}/bin/cidlock`, launcher.replace('#!/usr/bin/env node\n', '#!/usr/bin/node\n'), 0o755);
    const runtimePkg = {
      name: rootPkg.name, version: rootPkg.version, description: rootPkg.description, type: rootPkg.type,
      license: rootPkg.license, engines: rootPkg.engines, bin: rootPkg.bin, dependencies: rootPkg.dependencies,
    };
    put(root, `${LIB}/package.json`, `${JSON.stringify(runtimePkg, null, 2)}\n`);
    // The shipped notice templates and account page texts, found beside dist/ (an operator's own
    // copies, named in the rules, live in /etc/cidlock).
    copyTree(join(REPO_ROOT, 'templates'), join(root, LIB, 'templates'), (rel) => /(^|\/)\./.test(rel));
    const modules = productionModules(rootPkg);
    for (const name of [...modules.keys()].sort()) {
      copyTree(join(REPO_ROOT, 'node_modules', name), join(root, LIB, 'node_modules', name), moduleSkip);
    }
    mkdirSync(join(root, 'usr/bin'), { recursive: true });
    symlinkSync('../lib/cidlock/bin/cidlock', join(root, 'usr/bin/cidlock'));

    // Configuration, service, the Dovecot login plugin's source.
    put(root, 'etc/cidlock/cidlock.yaml', confFile(readFileSync(join(REPO_ROOT, 'examples', 'cidlock.yaml'), 'utf8')), 0o640);
    put(root, 'lib/systemd/system/cidlock.service', unitFile(readFileSync(join(REPO_ROOT, 'examples', 'cidlock.service'), 'utf8')));
    copyTree(join(REPO_ROOT, 'src', 'dovecot-clientid'), join(root, 'usr/share/cidlock/dovecot-clientid'), (rel) => /\.(so|o)$/.test(rel) || /(^|\/)\./.test(rel));

    // Man pages.
    const date = new Date(epoch * 1000).toISOString().slice(0, 10);
    const commands = Object.keys(HELP).filter((k) => k !== 'main').sort();
    put(root, 'usr/share/man/man1/cidlock.1.gz', gz(manPage(null, HELP.main!, upstream, date, commands.map((c) => `cidlock-${c}`))));
    for (const c of commands) {
      put(root, `usr/share/man/man1/cidlock-${c}.1.gz`, gz(manPage(c, HELP[c]!, upstream, date, ['cidlock'])));
    }

    // Documentation.
    put(root, `${DOC}/copyright`, copyright(modules, epoch));
    put(root, 'usr/share/lintian/overrides/cidlock', readFileSync(join(REPO_ROOT, 'packaging', 'debian', 'lintian-overrides')));
    put(root, `${DOC}/changelog.Debian.gz`, gz(changelog(version, upstream, maintainer, epoch)));
    put(root, `${DOC}/README.md.gz`, gz(readFileSync(join(REPO_ROOT, 'README.md'))));
    // What the repository ships, nothing a working copy made: `npm start` leaves a Dovecot key in
    // examples/state, and that must never end up in a package.
    copyTree(join(REPO_ROOT, 'examples'), join(root, DOC, 'examples'), (rel, isDir) =>
      isDir
        ? !EXAMPLE_DIRS.includes(rel.split('/')[0]!)
        : rel === 'dev.yaml' || rel === 'cidlock.service' || !/\.(ya?ml|conf|json|cf|sh)$/.test(rel));

    // DEBIAN/: maintainer scripts, conffiles; sealDeb adds md5sums and control.
    for (const s of ['postinst', 'prerm', 'postrm']) {
      put(root, `DEBIAN/${s}`, readFileSync(join(REPO_ROOT, 'packaging', 'debian', s)), 0o755);
    }
    put(root, 'DEBIAN/conffiles', `${CONFFILE}\n`);
    const deb = join(outDir, `${PKG}_${version.replace(/^\d+:/, '')}_all.deb`);
    const sealed = sealDeb(root, deb, epoch, (kib) => control(version, maintainer, kib, String(rootPkg.description ?? 'cidlock')));
    const result: BuildResult = { deb, version, ...sealed };
    if (opts.keepStage) result.stage = root;
    return result;
  } finally {
    if (!opts.keepStage) rmSync(stage, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const opts: BuildOptions = packageArgs(process.argv.slice(2), 'package.js');
  const t0 = Date.now();
  const r = buildDeb(opts);
  process.stdout.write(`${relative(process.cwd(), r.deb) || r.deb}: ${r.version}, ${r.bytes} bytes, Installed-Size ${r.installedSizeKiB} KiB, ${Date.now() - t0} ms${r.stage ? `, staged in ${r.stage}` : ''}\n`);
}
