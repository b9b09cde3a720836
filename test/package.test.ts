// npm run package: the .deb that dpkg-deb builds, read back with dpkg-deb (issue 12).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { buildDeb, debianVersion, type BuildResult } from '../scripts/package.js';
import { repoRoot } from './helpers/paths.js';
import { tempDir } from './helpers/tmp.js';

function which(name: string): boolean {
  return (process.env.PATH ?? '').split(':').concat(['/usr/bin', '/bin', '/usr/sbin']).some((d) => d && existsSync(join(d, name)));
}

const ready = which('dpkg-deb');
if (!ready) process.stderr.write('\n*** SKIPPED: package tests: dpkg-deb not found (apt-get install dpkg) ***\n');
const t = ready ? test : test.skip;

const EPOCH = 1_700_000_000;
let built: BuildResult | null = null;
function deb(): BuildResult {
  built ??= buildDeb({ outDir: tempDir('cidlock-deb-out-'), sourceDateEpoch: EPOCH, maintainer: 'Test Maintainer <test@example.org>' });
  return built;
}
function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
}

interface Entry { mode: string; owner: string; size: number; path: string; link?: string }
let listing: Entry[] | null = null;
function contents(): Entry[] {
  listing ??= run('dpkg-deb', ['-c', deb().deb]).trim().split('\n').map((l) => {
    const m = /^(\S+) (\S+)\s+(\d+) \S+ \S+ \.\/(.*?)(?: -> (.*))?$/.exec(l);
    if (!m) throw new Error(`unexpected dpkg-deb -c line: ${l}`);
    const e: Entry = { mode: m[1]!, owner: m[2]!, size: Number(m[3]), path: `/${m[4]!}` };
    if (m[5]) e.link = m[5];
    return e;
  });
  return listing;
}
let extractedDir: string | null = null;
function extracted(): string {
  if (extractedDir === null) {
    extractedDir = tempDir('cidlock-deb-x-');
    run('dpkg-deb', ['-x', deb().deb, extractedDir]);
  }
  return extractedDir;
}
function controlFile(name: string): string {
  return run('dpkg-deb', ['-I', deb().deb, name]);
}

test('Debian versions from semver: a pre-release sorts before its release', () => {
  assert.is(debianVersion('0.1.0'), '0.1.0-1');
  assert.is(debianVersion('1.2.0-rc.1', '2'), '1.2.0~rc.1-2');
  assert.is(debianVersion('1.2.0+build-5'), '1.2.0+build.5-1');
  assert.throws(() => debianVersion('1.2'));
  assert.throws(() => debianVersion('1.2.0', 'a_b'));
});

t('dpkg-deb -I: name, version from package.json, Depends nodejs (>= 18.20), computed Installed-Size', () => {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  const r = deb();
  assert.ok(r.deb.endsWith(`/cidlock_${debianVersion(pkg.version)}_all.deb`), r.deb);
  const f = (name: string) => run('dpkg-deb', ['-f', r.deb, name]).trim();
  assert.is(f('Package'), 'cidlock');
  assert.is(f('Version'), debianVersion(pkg.version));
  assert.is(f('Architecture'), 'all');
  assert.is(f('Section'), 'mail');
  assert.is(f('Priority'), 'optional');
  assert.is(f('Maintainer'), 'Test Maintainer <test@example.org>');
  const depends = f('Depends').split(/,\s*/);
  assert.ok(depends.includes('nodejs (>= 18.20)'), f('Depends'));
  assert.ok(depends.includes('adduser'), f('Depends'));
  assert.match(f('Recommends'), /dovecot-core/);
  assert.match(f('Recommends'), /postfix/);
  assert.is(Number(f('Installed-Size')), r.installedSizeKiB);
  assert.ok(r.installedSizeKiB > 100 && r.installedSizeKiB < 20_000, String(r.installedSizeKiB));
  const info = run('dpkg-deb', ['-I', r.deb]);
  for (const s of ['postinst', 'prerm', 'postrm', 'conffiles', 'md5sums']) assert.match(info, new RegExp(`\\b${s}\\b`));
});

t('dpkg-deb -c: the layout, owned by root, modes 0644/0755 (the conffile 0640)', () => {
  const c = contents();
  const byPath = new Map(c.map((e) => [e.path.replace(/\/$/, ''), e]));
  for (const p of ['/usr/lib/cidlock/bin/cidlock', '/usr/lib/cidlock/package.json', '/usr/lib/cidlock/dist/src/cli/main.js',
    '/usr/lib/cidlock/dist/src/core/version.js', '/usr/lib/cidlock/node_modules/yaml/package.json',
    '/usr/lib/cidlock/node_modules/lru-cache/package.json', '/etc/cidlock/cidlock.yaml', '/lib/systemd/system/cidlock.service',
    '/usr/share/man/man1/cidlock.1.gz', '/usr/share/man/man1/cidlock-serve.1.gz', '/usr/share/man/man1/cidlock-devices.1.gz',
    '/usr/share/doc/cidlock/copyright', '/usr/share/doc/cidlock/changelog.Debian.gz', '/usr/share/doc/cidlock/README.md.gz',
    '/usr/share/doc/cidlock/examples/cidlock-advanced.yaml', '/usr/share/cidlock/dovecot-clientid/cidlock-clientid-plugin.c',
    '/usr/lib/cidlock/templates/notice-device.txt', '/usr/lib/cidlock/templates/notice-signin.html', '/usr/lib/cidlock/templates/portal-strings.yaml']) {
    assert.ok(byPath.has(p), `missing ${p}`);
  }
  assert.is(byPath.get('/usr/bin/cidlock')?.link, '../lib/cidlock/bin/cidlock');
  for (const e of c) {
    assert.is(e.owner, 'root/root', e.path);
    const expected = e.link ? 'lrwxrwxrwx'
      : e.path.endsWith('/') ? 'drwxr-xr-x'
        : e.path === '/usr/lib/cidlock/bin/cidlock' ? '-rwxr-xr-x'
          : e.path === '/etc/cidlock/cidlock.yaml' ? '-rw-r-----'
            : '-rw-r--r--';
    assert.is(e.mode, expected, e.path);
  }
  // Nothing outside these trees; /var/lib/cidlock is made by postinst, not shipped.
  for (const e of c) assert.match(e.path, /^\/((usr|etc|lib)\/.*)?$/, e.path);
});

t('no dev dependencies, tests, benches, sources, source maps or secrets in the package', () => {
  const paths = contents().map((e) => e.path);
  const modules = new Set(paths.map((p) => /^\/usr\/lib\/cidlock\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(p)?.[1]).filter(Boolean));
  assert.equal([...modules].sort(), ['lru-cache', 'yaml']);
  for (const p of paths) {
    assert.not.match(p, /\/(typescript|uvu|@types)\//, p);
    assert.not.match(p, /\/dist\/(test|bench|scripts)\//, p);
    assert.not.match(p, /\.(ts|map)$/, p);
    assert.not.match(p, /\/node_modules\/.*\/node_modules\//, p);
    assert.not.match(p, /(\.key|\.pem|\/secret|admin\.token|dovecot\.key|registry\.json|registry\.journal|audit\.log|\/dev-state\/|\/state\/)$/, p);
    assert.not.match(p, /\/\.[^/]+$/, `dotfile ${p}`);
  }
  // Every compiled module of dist/src is shipped, nothing else from dist/.
  const want = readdirSync(join(repoRoot, 'dist', 'src'), { recursive: true }).map(String).filter((f) => f.endsWith('.js')).sort();
  const have = paths.filter((p) => p.startsWith('/usr/lib/cidlock/dist/')).filter((p) => !p.endsWith('/'))
    .map((p) => p.slice('/usr/lib/cidlock/dist/src/'.length)).sort();
  assert.equal(have, want);
  // The shipped package.json is the runtime part: no scripts, no dev dependencies.
  const pkg = JSON.parse(readFileSync(join(extracted(), 'usr/lib/cidlock/package.json'), 'utf8')) as Record<string, unknown>;
  assert.is(pkg.type, 'module');
  assert.is(pkg.devDependencies, undefined);
  assert.is(pkg.scripts, undefined);
  assert.equal(Object.keys(pkg.dependencies as object).sort(), ['lru-cache', 'yaml']);
});

t('conffiles: the rules, in monitor mode, state in /var/lib/cidlock, no key', () => {
  assert.is(controlFile('conffiles'), '/etc/cidlock/cidlock.yaml\n');
  const conf = readFileSync(join(extracted(), 'etc/cidlock/cidlock.yaml'), 'utf8');
  assert.match(conf, /^state_dir: \/var\/lib\/cidlock\b/m);
  assert.match(conf, /^ {2}mode: monitor\b/m);
  assert.equal(conf.match(/^ *mode: (\S+)/gm)?.map((l) => l.trim()), ['mode: monitor']);
  assert.match(conf, /^domains: \{\}/m);
  assert.match(conf, /^users: \{\}/m);
  assert.not.match(conf, /^\s*(api_key|token|secret):/m);
  // The conffile is not in md5sums (dpkg tracks it), everything else is, with the right sums.
  const sums = controlFile('md5sums').trim().split('\n').map((l) => l.split(/ {2}/) as [string, string]);
  assert.ok(!sums.some(([, p]) => p.startsWith('etc/')));
  const files = contents().filter((e) => e.mode.startsWith('-') && !e.path.startsWith('/etc/'));
  assert.is(sums.length, files.length);
  for (const [sum, p] of sums) assert.is(createHash('md5').update(readFileSync(join(extracted(), p))).digest('hex'), sum, p);
});

t('the systemd unit runs Debian\'s node on /usr/lib/cidlock, sandboxed, as cidlock', () => {
  const unit = readFileSync(join(extracted(), 'lib/systemd/system/cidlock.service'), 'utf8');
  assert.match(unit, /^Documentation=man:cidlock\(1\)/m);
  assert.match(unit, /^ExecStart=\/usr\/bin\/node \/usr\/lib\/cidlock\/bin\/cidlock serve --config \/etc\/cidlock\/cidlock\.yaml$/m);
  assert.match(unit, /^ExecStartPre=\/usr\/bin\/node \/usr\/lib\/cidlock\/bin\/cidlock check /m);
  assert.match(unit, /^User=cidlock$/m);
  assert.match(unit, /^ProtectSystem=strict$/m);
  assert.match(unit, /^NoNewPrivileges=yes$/m);
  assert.match(unit, /^StateDirectoryMode=0700$/m);
  assert.match(unit, /^WantedBy=multi-user\.target$/m);
  assert.not.match(unit, /\/opt\//);
});

t('maintainer scripts: POSIX sh (sh -n, checkbashisms when installed), set -e, the decisions', () => {
  const dir = tempDir('cidlock-deb-ctl-');
  run('dpkg-deb', ['-e', deb().deb, dir]);
  for (const s of ['postinst', 'prerm', 'postrm']) {
    const text = readFileSync(join(dir, s), 'utf8');
    assert.ok(text.startsWith('#!/bin/sh\n'), s);
    assert.match(text, /^set -e$/m, s);
    const r = spawnSync('sh', ['-n', join(dir, s)], { encoding: 'utf8' });
    assert.is(r.status, 0, `${s}: ${r.stderr}`);
    if (which('checkbashisms')) {
      const b = spawnSync('checkbashisms', [join(dir, s)], { encoding: 'utf8' });
      assert.is(b.status, 0, `${s}: ${b.stdout}${b.stderr}`);
    }
  }
  const postinst = readFileSync(join(dir, 'postinst'), 'utf8');
  assert.match(postinst, /adduser --system --group --quiet --home "\$STATE" --no-create-home cidlock/);
  assert.match(postinst, /getent passwd cidlock/);
  assert.match(postinst, /set_perms cidlock cidlock 0700 "\$STATE"/);
  assert.match(postinst, /set_perms root cidlock 0640 "\$CONF"/);
  assert.match(postinst, /dpkg-statoverride --list/);
  assert.match(postinst, /\[ -d \/run\/systemd\/system \]/);
  assert.match(postinst, /deb-systemd-helper enable cidlock\.service/);
  assert.match(postinst, /deb-systemd-invoke "\$_action" cidlock\.service/);
  assert.not.match(postinst, /chown -R|rm -/);
  assert.match(readFileSync(join(dir, 'prerm'), 'utf8'), /"\$1" = remove[\s\S]*deb-systemd-invoke stop cidlock\.service/);
  const postrm = readFileSync(join(dir, 'postrm'), 'utf8');
  // Only purge deletes the registry; the user stays.
  assert.match(postrm, /if \[ "\$1" = purge \]; then[\s\S]*rm -rf \/var\/lib\/cidlock /);
  const postrmCode = postrm.split('\n').filter((l) => !/^\s*#/.test(l)).join('\n');
  assert.not.match(postrmCode, /deluser|userdel|delgroup|groupdel/);
  assert.is((postrm.match(/rm -rf/g) ?? []).length, 1);
});

t('man pages: one per command, from the --help texts, gzip -9n, and they render', () => {
  const man = join(extracted(), 'usr/share/man/man1');
  const pages = readdirSync(man).sort();
  assert.equal(pages, ['cidlock-check.1.gz', 'cidlock-config.1.gz', 'cidlock-devices.1.gz', 'cidlock-pending.1.gz', 'cidlock-serve.1.gz', 'cidlock-store.1.gz', 'cidlock-test.1.gz', 'cidlock-users.1.gz', 'cidlock.1.gz']);
  for (const p of pages) {
    const raw = readFileSync(join(man, p));
    assert.is(raw.readUInt32LE(4), 0, `${p}: gzip header time stamp`);
    assert.is(raw[3]! & 0x08, 0, `${p}: gzip header file name`);
    const roff = gunzipSync(raw).toString('utf8');
    assert.match(roff, /^\.TH CIDLOCK/m);
    assert.match(roff, /^\.SH NAME\ncidlock(\\-[a-z]+)? \\- \S/m);
  }
  const main = gunzipSync(readFileSync(join(man, 'cidlock.1.gz'))).toString('utf8');
  assert.match(main, /^\.BR cidlock\\?-serve \(1\)/m);
  if (which('man')) {
    const r = spawnSync('man', ['--warnings', '-l', join(man, 'cidlock-devices.1.gz')], { encoding: 'utf8', env: { ...process.env, MANWIDTH: '80', MANPAGER: 'cat', PAGER: 'cat', LC_ALL: 'C.UTF-8' } });
    assert.is(r.status, 0, r.stderr);
    assert.is(r.stderr, '', 'groff warnings');
    assert.match(r.stdout, /cidlock-devices - manage a user's registered devices/);
    assert.match(r.stdout, /cidlock devices add USER "TYPE TOKEN" \[--label L\] \[-c FILE\]/);
  } else {
    process.stderr.write('\n(package test: man not installed, the pages were not rendered)\n');
  }
});

t('doc: machine-readable copyright, changelog.Debian.gz for this version', () => {
  const doc = join(extracted(), 'usr/share/doc/cidlock');
  const copyright = readFileSync(join(doc, 'copyright'), 'utf8');
  assert.match(copyright, /^Format: https:\/\/www\.debian\.org\/doc\/packaging-manuals\/copyright-format\/1\.0\/$/m);
  assert.match(copyright, /^Files: \*\nCopyright: \d{4}(-\d{4})? the cidlock authors\nLicense: Expat$/m);
  assert.match(copyright, /^Files: usr\/lib\/cidlock\/node_modules\/yaml\/\*$/m);
  assert.match(copyright, /^Files: usr\/lib\/cidlock\/node_modules\/lru-cache\/\*$/m);
  for (const id of ['Expat', 'ISC', 'BlueOak-1.0.0']) assert.match(copyright, new RegExp(`^License: ${id}\\n `, 'm'));
  const changelog = gunzipSync(readFileSync(join(doc, 'changelog.Debian.gz'))).toString('utf8');
  assert.match(changelog, new RegExp(`^cidlock \\(${deb().version.replace(/[.+~]/g, '\\$&')}\\) unstable; urgency=medium$`, 'm'));
  assert.match(changelog, /^ -- Test Maintainer <test@example\.org> {2}Tue, 14 Nov 2023 22:13:20 \+0000$/m);
});

t('the extracted tree runs: cidlock --version, help, check of the shipped rules', () => {
  const x = extracted();
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  const cli = (args: string[]) => spawnSync(process.execPath, [join(x, 'usr/lib/cidlock/bin/cidlock'), ...args], { encoding: 'utf8', env: { ...process.env, CIDLOCK_CONFIG: '' } });
  const v = cli(['--version']);
  assert.is(v.status, 0, v.stderr);
  assert.is(v.stdout.trim(), `cidlock ${pkg.version}`);
  const h = cli(['help']);
  assert.is(h.status, 0, h.stderr);
  assert.match(h.stdout, /^NAME\n {5}cidlock - /);
  const c = cli(['check', '-c', join(x, 'etc/cidlock/cidlock.yaml')]);
  assert.is(c.status, 0, c.stdout + c.stderr);
  assert.match(c.stdout, /mode monitor/);
  // /usr/bin/cidlock is the same program, through its symlink.
  const viaLink = spawnSync(process.execPath, [join(x, 'usr/bin/cidlock'), '--version'], { encoding: 'utf8' });
  assert.is(viaLink.stdout.trim(), `cidlock ${pkg.version}`);
  assert.ok(readFileSync(join(x, 'usr/lib/cidlock/bin/cidlock'), 'utf8').startsWith('#!/usr/bin/node\n'));
});

t('reproducible: the same commit and SOURCE_DATE_EPOCH give the same bytes', () => {
  const again = buildDeb({ outDir: tempDir('cidlock-deb-out-'), sourceDateEpoch: EPOCH, maintainer: 'Test Maintainer <test@example.org>' });
  const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
  assert.is(sha(again.deb), sha(deb().deb));
  // Every entry carries SOURCE_DATE_EPOCH (2023-11-14 22:13:20 UTC), shown in local time.
  const stamps = new Set(execFileSync('dpkg-deb', ['-c', again.deb], { encoding: 'utf8', env: { ...process.env, TZ: 'UTC' } })
    .trim().split('\n').map((l) => l.split(/\s+/).slice(3, 5).join(' ')));
  assert.equal([...stamps], ['2023-11-14 22:13']);
});

t('lintian (when installed): no errors or warnings beyond packaging/debian/lintian-overrides', () => {
  if (!which('lintian')) {
    process.stderr.write('\n(package test: lintian not installed, not run; apt-get install lintian)\n');
    return;
  }
  const r = spawnSync('lintian', ['--pedantic', deb().deb], { encoding: 'utf8', timeout: 120_000 });
  const tags = r.stdout.split('\n').filter((l) => /^[EW]: /.test(l));
  assert.equal(tags, [], r.stdout);
  assert.is(r.status, 0, `lintian exited ${r.status}: ${r.stderr}`);
});

test.run();
