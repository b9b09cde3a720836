#!/bin/sh
# Builds the CLIENTID login plugin's .deb (scripts/package-plugin.ts) in a fresh copy of a Debian
# release's dev root (roots.sh RELEASE+dev: the base root plus dovecot-dev, gcc, make, libc6-dev,
# dpkg-dev, binutils), on the release's own nodejs and gcc, with the checkout bind-mounted; then
# checks the .deb, installs it with apt-get in a fresh copy of the plain release root (no dev
# packages), runs that root's Dovecot with the plugin loaded (private base_dir, TLS, free high
# ports; Dovecot 2.4 syntax on trixie) and asks for its capabilities: CLIENTID after STARTTLS and
# on the implicit-TLS port, not in plaintext. Then dpkg --purge, and lintian on the host.
#
#   test/dist/plugin-package.sh RELEASE OUTDIR
#
# RELEASE is bookworm or trixie; OUTDIR (a host folder, created if missing) receives
# cidlock-dovecot-clientid_<version>~deb<N>_<arch>.deb. Build first (npx tsc -p .). The first run
# builds the dev root (about 15 s over the cached base root). The last line is
# "N passed, N failed"; the exit status is non-zero on any failure.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(cd "$here/../.." && pwd)
usage="usage: plugin-package.sh RELEASE OUTDIR"
release=${1:?$usage}
out=${2:?$usage}
case "$release" in bookworm|trixie) ;; *) echo "plugin-package.sh: RELEASE is bookworm or trixie"; echo "0 passed, 1 failed"; exit 1 ;; esac
[ -f "$checkout/dist/scripts/package-plugin.js" ] || { echo "plugin-package.sh: build first (npx tsc -p .)"; echo "0 passed, 1 failed"; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | tail -n 30 | sed 's/^/     /'; }
now() { date +%s.%N | cut -c1-14; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
# The roots' results: the in-root part prints ok/FAIL/note lines and its own "N passed, N failed".
tally() {
  printf '%s\n' "$1" | grep -v '^[0-9]* passed, [0-9]* failed$'
  p=$(printf '%s\n' "$1" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' | tail -n 1)
  f=$(printf '%s\n' "$1" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' | tail -n 1)
  if [ -z "$p" ]; then bad "$2 did not finish"; else passed=$((passed + p)) failed=$((failed + f)); fi
}

devdir=$(mktemp -d "${TMPDIR:-/tmp}/cidlock-root-$release+dev.XXXXXX")
plaindir=$(mktemp -d "${TMPDIR:-/tmp}/cidlock-root-$release.XXXXXX")
trap '"$here/roots.sh" drop "$devdir"; "$here/roots.sh" drop "$plaindir"' EXIT INT TERM

# The same epoch and revision for every build of a commit: the roots have no git.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$checkout" log -1 --format=%ct 2>/dev/null || stat -c %Y "$checkout/package.json")}
revision=${DEB_REVISION:-1}

t0=$(now)
cache=${CIDLOCK_ROOTS_CACHE:-/var/cache/cidlock-test/roots}
devroot_state=cached
devpath=$("$here/roots.sh" path "$release+dev" 2>"$devdir.log") || { cat "$devdir.log"; rm -f "$devdir.log"; bad "roots.sh path $release+dev"; echo "$passed passed, $failed failed"; exit 1; }
built=$(sed -n 's/^roots\.sh: built .* in \([0-9]*\) s$/\1/p' "$devdir.log" | paste -sd+ -)
[ -z "$built" ] || devroot_state="built now in $built s"
rm -f "$devdir.log"
"$here/roots.sh" fresh "$release+dev" "$devdir" >/dev/null
t1=$(now)
echo "dev root $devpath ($devroot_state)"

# The build, on the release's node, gcc and dpkg-deb; the checkout is read, the .deb goes to /out.
if build=$("$here/roots.sh" exec "$devdir" -b "$checkout:/opt/cidlock" -b "$out:/out" -- \
  sh -c 'cd /opt/cidlock && SOURCE_DATE_EPOCH=$1 DEB_REVISION=$2 node dist/scripts/package-plugin.js --out /out' sh "$epoch" "$revision" 2>&1); then
  ok "package-plugin.js in the $release+dev root: $build"
else
  bad "package-plugin.js in the $release+dev root" "$build"
fi
t2=$(now)

# What the dev root says the package must be: its release, arch, Dovecot, login module dir.
facts=$("$here/roots.sh" exec "$devdir" sh -c '
  . /etc/os-release
  echo "suffix=~deb$VERSION_ID"
  echo "arch=$(dpkg --print-architecture)"
  echo "core=$(dpkg-query -W -f "\${Version}" dovecot-core)"
  echo "moduledir=$(. /usr/lib/dovecot/dovecot-config && printf %s "$dovecot_moduledir")"
  echo "tools=Debian $(cat /etc/debian_version), node $(node --version), $(gcc --version | head -n 1), dovecot $(dovecot --version)"
')
suffix=$(printf '%s\n' "$facts" | sed -n 's/^suffix=//p')
arch=$(printf '%s\n' "$facts" | sed -n 's/^arch=//p')
core=$(printf '%s\n' "$facts" | sed -n 's/^core=//p')
logindir=$(printf '%s\n' "$facts" | sed -n 's/^moduledir=//p')/login
echo "$(printf '%s\n' "$facts" | sed -n 's/^tools=//p')"
version=$(cd "$checkout" && node --input-type=module -e '
  import { readFileSync } from "node:fs";
  const { debianVersion } = await import(process.cwd() + "/dist/scripts/package.js");
  console.log(debianVersion(JSON.parse(readFileSync("package.json", "utf8")).version, process.argv[1]));
' "$revision")$suffix
name="cidlock-dovecot-clientid_${version#*:}_$arch.deb"
deb="$out/$name"
so="$logindir/lib20_cidlock_clientid_plugin.so"

if [ -f "$deb" ]; then ok "$name in $out ($(stat -c %s "$deb") bytes)"; else bad "no $name in $out" "$(ls -l "$out")"; fi
if [ -f "$deb" ]; then
  v=$(dpkg-deb -f "$deb" Version)
  [ "$v" = "$version" ] && ok "Version: $v" || bad "Version: $v (expected $version)"
  dep=$(dpkg-deb -f "$deb" Depends)
  case ", $dep," in
    *", dovecot-core (= $core),"*) ok "Depends names the root's dovecot-core exactly: $dep" ;;
    *) bad "Depends: $dep (expected dovecot-core (= $core))" ;;
  esac
  case "$dep" in libc6*) ok "Depends has the libc dependency (dpkg-shlibdeps)" ;; *) bad "Depends has no libc6: $dep" ;; esac
  [ "$(dpkg-deb -f "$deb" Section)" = mail ] && ok "Section: mail" || bad "Section: $(dpkg-deb -f "$deb" Section)"
  list=$(dpkg-deb -c "$deb" | awk '{ print $6 }')
  want="./${so#/}
./usr/share/doc/cidlock-dovecot-clientid/README.md.gz
./usr/share/doc/cidlock-dovecot-clientid/changelog.Debian.gz
./usr/share/doc/cidlock-dovecot-clientid/copyright"
  missing=$(printf '%s\n' "$want" | while read -r f; do printf '%s\n' "$list" | grep -qxF "$f" || echo "$f"; done)
  [ -z "$missing" ] && ok "contents: $so and the doc files" || bad "missing from the .deb: $missing" "$list"
  ctl=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t | sed 's,^\./,,' | grep -v '^$' | sort | tr '\n' ' ')
  [ "$ctl" = "control md5sums " ] && ok "control files: $ctl(no maintainer scripts)" || bad "control files: $ctl"
  # Stripped: no symbol table, no debug sections (the dev root's readelf).
  mkdir -p "$devdir/root/tmp/x" && dpkg-deb -x "$deb" "$devdir/root/tmp/x"
  kept=$("$here/roots.sh" exec "$devdir" readelf -SW "/tmp/x$so" 2>&1 | grep -oE '\.(symtab|debug_[a-z]+|comment)' | sort -u | tr '\n' ' ')
  [ -z "$kept" ] && ok "the .so is stripped (no .symtab, .debug_*, .comment)" || bad "the .so keeps $kept"
fi

# Install, load, purge: the plain root, as an administrator's system has it (no dev packages).
t3=$(now)
root=$("$here/roots.sh" fresh "$release" "$plaindir")
mkdir -p "$root/tmp/deb"
[ ! -f "$deb" ] || cp "$deb" "$root/tmp/deb/"
res=$("$here/roots.sh" exec "$plaindir" sh -s "/tmp/deb/$name" "$so" <<'EOF' 2>&1
deb=$1 so=$2
export DEBIAN_FRONTEND=noninteractive
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | tail -n 30 | sed 's/^/     /'; }
[ -f "$deb" ] || { bad "no .deb to install"; echo "$passed passed, $failed failed"; exit 1; }
pkg=$(dpkg-deb -f "$deb" Package)
if out=$(apt-get install -y -q "$deb" 2>&1); then ok "apt-get install $deb (plain root: $(dpkg-query -W -f '${Version}' dovecot-core))"; else bad "apt-get install" "$out"; fi
dpkg -L "$pkg" 2>/dev/null | grep -qxF "$so" && ok "dpkg -L $pkg lists $so" || bad "dpkg -L $pkg does not list $so" "$(dpkg -L "$pkg" 2>&1)"
[ -f "$so" ] && ok "$so installed" || bad "$so not on disk"

freeport() { node -e 's=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
waitport() {
  node -e '
    const net = require("node:net"); const port = Number(process.argv[1]); const end = Date.now() + 15000;
    (function again() { const s = net.connect(port, "127.0.0.1", () => { s.destroy(); }); s.on("error", () => { if (Date.now() > end) process.exit(1); setTimeout(again, 100); }); })();
  ' "$1"
}
# caps PORT plain|starttls|tls [CMD]: the capabilities Dovecot lists (greeting and CAPABILITY), one
# line "caps: ..."; with CMD, sends it (over TLS) and prints the tagged reply "reply: ...".
cat >/tmp/caps.js <<'JS'
const net = require('node:net'), tls = require('node:tls');
const [port, mode, extra] = process.argv.slice(2);
const t = setTimeout(() => { console.log('timeout'); process.exit(1); }, 10000);
let sock, buf = '', waiting = null;
const caps = new Set();
function onData(d) {
  buf += d;
  let n;
  while ((n = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, n).replace(/\r$/, ''); buf = buf.slice(n + 1);
    const m = /^\* (?:OK \[)?CAPABILITY ([^\]]*)/i.exec(line);
    if (m) for (const c of m[1].split(' ')) caps.add(c);
    if (waiting && waiting.test(line)) { const w = waiting; waiting = null; next(line, w); }
    else if (/^\S+ (NO|BAD) /.test(line) && waiting) { console.log('reply: ' + line); waiting = null; next(line, null); }
  }
}
let steps;
function send(cmd, expect) { waiting = expect; sock.write(cmd + '\r\n'); }
function next(line) { const s = steps.shift(); if (s) s(line); }
function attach(s) { sock = s; sock.setEncoding('utf8'); sock.on('data', onData); sock.on('error', (e) => { console.log(e.message); process.exit(1); }); }
const plainSteps = [
  () => send('c1 CAPABILITY', /^c1 /),
];
const done = () => { console.log('caps: ' + [...caps].join(' ')); steps = [() => {}]; send('z LOGOUT', /^z /); setTimeout(() => { clearTimeout(t); process.exit(0); }, 200); };
const tlsTail = [
  () => send('c2 CAPABILITY', /^c2 /),
  ...(extra ? [(l) => send('c3 ' + extra, /^c3 /), (l) => { console.log('reply: ' + l); done(); }] : [() => done()]),
];
if (mode === 'tls') {
  attach(tls.connect({ port: Number(port), host: '127.0.0.1', rejectUnauthorized: false }));
  waiting = /^\* OK/; steps = [...tlsTail];
} else {
  attach(net.connect(Number(port), '127.0.0.1'));
  waiting = /^\* OK/;
  if (mode === 'plain') steps = [...plainSteps, () => done()];
  else steps = [...plainSteps, () => { caps.clear(); send('c0 STARTTLS', /^c0 OK/); }, () => {
    const raw = sock; raw.removeAllListeners('data'); buf = '';
    attach(tls.connect({ socket: raw, rejectUnauthorized: false }));
    next();
  }, ...tlsTail];
}
JS

d=/srv/t/dovecot
mkdir -p $d/run $d/state $d/home && chmod 755 /srv/t $d $d/run $d/state && chown 65534:65534 $d/home
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $d/server.key -out $d/server.pem -days 2 -subj /CN=mail.example.test 2>/dev/null
chmod 644 $d/server.key
echo 'alice@example.com:{PLAIN}secret::::::' >$d/users
imap=$(freeport) imaps=$(freeport)
services="service imap-login {
  inet_listener imap {
    port = $imap
  }
  inet_listener imaps {
    port = $imaps
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    port = 0
  }
}"
# What both syntaxes share: a private base, state and log, loopback only, TLS.
common="base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes"
dv=$(dovecot --version)
case "$dv" in
  2.3.*)
    cat >$d/dovecot.conf <<CONF
$common
ssl_cert = <$d/server.pem
ssl_key = <$d/server.key
auth_mechanisms = plain
passdb {
  driver = passwd-file
  args = scheme=PLAIN $d/users
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=$d/home/%u
}
mail_location = maildir:~/Maildir
$services
protocol imap {
  login_plugins = \$login_plugins cidlock_clientid
}
CONF
    ;;
  *)
    cat >$d/dovecot.conf <<CONF
dovecot_config_version = ${dv%%[- ]*}
dovecot_storage_version = ${dv%%[- ]*}
$common
ssl_server_cert_file = $d/server.pem
ssl_server_key_file = $d/server.key
auth_mechanisms = plain
passdb passwd-file {
  passwd_file_path = $d/users
  default_password_scheme = PLAIN
}
userdb static {
  fields {
    uid = 65534
    gid = 65534
    home = $d/home/%{user}
  }
}
mail_driver = maildir
mail_path = ~/Maildir
$services
protocol imap {
  login_plugins {
    cidlock_clientid = yes
  }
}
CONF
    ;;
esac
if out=$(doveconf -c $d/dovecot.conf -n 2>&1); then
  printf '%s\n' "$out" | grep -q 'cidlock_clientid' && ok "doveconf -n accepts the configuration and names cidlock_clientid ($dv)" \
    || bad "doveconf -n does not show cidlock_clientid" "$out"
else
  bad "doveconf -n" "$out"
fi
if dovecot -c $d/dovecot.conf >$d/start.out 2>&1 && waitport $imap && waitport $imaps; then
  ok "dovecot -c $d/dovecot.conf (imap $imap, imaps $imaps)"
else
  bad "dovecot did not start" "$(cat $d/start.out)
$(tail -n 20 $d/dovecot.log 2>/dev/null)"
fi
cid='UUID 23bf83be-8d14-4a8e-9d5a-1c1e0c7a3b11'
r=$(node /tmp/caps.js $imap plain 2>&1)
case " $(printf '%s\n' "$r" | sed -n 's/^caps: //p') " in
  *" CLIENTID "*) bad "plaintext CAPABILITY lists CLIENTID (only over TLS)" "$r" ;;
  "  ") bad "plaintext CAPABILITY: no answer" "$r$(tail -n 20 $d/dovecot.log 2>/dev/null)" ;;
  *) ok "plaintext CAPABILITY without CLIENTID" ;;
esac
r=$(node /tmp/caps.js $imap starttls "CLIENTID $cid" 2>&1)
case " $(printf '%s\n' "$r" | sed -n 's/^caps: //p') " in
  *" CLIENTID "*) ok "STARTTLS, CAPABILITY lists CLIENTID: $(printf '%s\n' "$r" | sed -n 's/^caps: //p')" ;;
  *) bad "STARTTLS, CAPABILITY without CLIENTID" "$r
$(tail -n 20 $d/dovecot.log 2>/dev/null)" ;;
esac
printf '%s\n' "$r" | grep -q '^reply: c3 OK' && ok "CLIENTID $cid: $(printf '%s\n' "$r" | sed -n 's/^reply: //p')" || bad "CLIENTID over STARTTLS" "$r"
r=$(node /tmp/caps.js $imaps tls 2>&1)
case " $(printf '%s\n' "$r" | sed -n 's/^caps: //p') " in
  *" CLIENTID "*) ok "implicit TLS (port $imaps): CLIENTID listed" ;;
  *) bad "implicit TLS: no CLIENTID" "$r" ;;
esac
dovecot -c $d/dovecot.conf stop >/dev/null 2>&1 && ok "dovecot stop" || bad "dovecot stop"
sleep 0.3
errs=$(grep -iE 'error|fatal|panic|abi|mismatch' $d/dovecot.log 2>/dev/null | head -n 10)
[ -z "$errs" ] && ok "no errors in dovecot.log (the plugin loaded, no ABI complaint)" || bad "dovecot.log" "$errs"

if out=$(dpkg --purge "$pkg" 2>&1); then ok "dpkg --purge $pkg"; else bad "dpkg --purge" "$out"; fi
[ ! -e "$so" ] && ok "no $so after purge" || bad "$so left after purge"
st=$(dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null)
[ -z "$st" ] || [ "$st" = not-installed ] && ok "dpkg: $pkg not installed after purge" || bad "dpkg status after purge: $st"
dpkg-query -W -f '${Version}' dovecot-core >/dev/null 2>&1 && ok "dovecot-core still installed" || bad "dovecot-core went with the plugin"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
EOF
) || true
tally "$res" "the install checks in the $release root"
t4=$(now)

if [ -f "$deb" ]; then
  if command -v lintian >/dev/null 2>&1; then
    lint=$(lintian --info "$deb" 2>&1 | grep -v '^running with root privileges' || true)
    if [ -z "$lint" ]; then
      echo "note lintian $(lintian --version | awk '{print $2}'): no tags"
    else
      echo "note lintian $(lintian --version | awk '{print $2}'):"; printf '%s\n' "$lint" | sed 's/^/     /'
    fi
  else
    echo "note lintian is not installed on this host (apt-get install lintian)"
  fi
fi
t5=$(now)
echo "note timings: dev root ready $(secs "$t0" "$t1") s ($devroot_state), build $(secs "$t1" "$t2") s, checks $(secs "$t2" "$t3") s, plain root install/run/purge $(secs "$t3" "$t4") s, lintian $(secs "$t4" "$t5") s, total $(secs "$t0" "$t5") s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
