#!/bin/sh
# Issue 12's distribution test: a Debian administrator's whole path, in a fresh copy of a release's
# root (roots.sh: Debian's own nodejs, dovecot-imapd, dovecot-pop3d, postfix).
#
#   test/dist/distribution.sh RELEASE PATH/TO/cidlock_*.deb [PATH/TO/cidlock-dovecot-clientid_*.deb]
#
# 1. install: `apt-get install ./cidlock_*.deb` (and the plugin's package), with the root's
#    policy-rc.d keeping services from starting;
# 2. use (admin-e2e.js, on the release's node, in a private network namespace so the stock ports
#    are free): the stock Dovecot and Postfix configured only with `cidlock config dovecot|postfix`
#    as README says, cidlock started as its unit says, and the core cases against the real servers;
# 3. upgrade: the same package with "+1" on its version over it; the rules (changed by the
#    administrator) and the registry are kept;
# 4. remove and purge, and what is left.
# Build first (npm run build; the .deb with npm run package). Each phase prints "N passed, N
# failed"; the last line is their sum, and the exit status is non-zero on any failure.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(cd "$here/../.." && pwd)
release=${1:?usage: distribution.sh RELEASE DEB [PLUGIN_DEB]}
deb=${2:?usage: distribution.sh RELEASE DEB [PLUGIN_DEB]}
plugin=${3:-}
e2e="$checkout/dist/test/dist/admin-e2e.js"
for f in "$deb" ${plugin:+"$plugin"} "$e2e"; do
  [ -f "$f" ] || { echo "distribution.sh: no such file: $f (build first)"; echo "0 passed, 1 failed"; exit 1; }
done

total_passed=0 total_failed=0
# phase NAME CMD...: runs CMD, shows its output as it comes, adds up its last "N passed, N failed".
phase() {
  name=$1; shift
  t0=$(date +%s)
  log=$(mktemp)
  { "$@" 2>&1; echo "$?" >"$log.rc"; } | tee "$log" | grep -v ' passed, .* failed$' || true
  rc=$(cat "$log.rc")
  line=$(tail -n 1 "$log")
  rm -f "$log" "$log.rc"
  case "$line" in
    *" passed, "*" failed") p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed} ;;
    *) p=0 f=1; echo "FAIL $name ended without a count (exit $rc)" ;;
  esac
  [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && { f=1; echo "FAIL $name: exit $rc"; }
  total_passed=$((total_passed + p)) total_failed=$((total_failed + f))
  echo "note $name: $p passed, $f failed in $(( $(date +%s) - t0 )) s"
}

# in_copy [ARG]...: the shell script on standard input, run in the copy with ARGs, between the
# counters and ok/bad it reports with and the "N passed, N failed" line phase adds up.
in_copy() {
  { cat <<'PRE'
export DEBIAN_FRONTEND=noninteractive
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | tail -n 30 | sed 's/^/     /'; }
PRE
    cat
    echo 'echo "$passed passed, $failed failed"'
  } | "$here/roots.sh" exec "$dir" sh -s "$@"
}

started=$(date +%s)
dir=$(mktemp -d "${TMPDIR:-/tmp}/cidlock-root-$release.XXXXXX")
trap '"$here/roots.sh" drop "$dir"' EXIT INT TERM
root=$("$here/roots.sh" fresh "$release" "$dir")
mkdir -p "$root/tmp/deb" "$root/tmp/e2e"
cp "$deb" ${plugin:+"$plugin"} "$root/tmp/deb/"
cp "$e2e" "$root/tmp/e2e/admin-e2e.mjs"
debs=$(cd "$root/tmp/deb" && ls | sed 's|^|/tmp/deb/|' | tr '\n' ' ')
# The next version of the same package, for the upgrade: the .deb repacked with "+1" on its version.
next=$(mktemp -d)
dpkg-deb -R "$deb" "$next/pkg"
version=$(dpkg-deb -f "$deb" Version)
sed -i "s/^Version: .*/Version: $version+1/" "$next/pkg/DEBIAN/control"
mkdir -p "$root/tmp/next"
dpkg-deb --root-owner-group -Zxz -b "$next/pkg" "$root/tmp/next/cidlock_${version}+1_all.deb" >/dev/null
rm -rf "$next"

phase install in_copy $debs <<'EOF'
echo "Debian $(cat /etc/debian_version), node $(node --version)"
for d in "$@"; do echo "note $(dpkg-deb -f "$d" Package) $(dpkg-deb -f "$d" Version) ($(dpkg-deb -f "$d" Architecture)), depends: $(dpkg-deb -f "$d" Depends)"; done
if out=$(apt-get install -y -q "$@" 2>&1); then ok "apt-get install $*"; else bad "apt-get install" "$out"; fi
v=$(cidlock --version 2>&1) && ok "cidlock --version: $v" || bad "cidlock --version" "$v"
man -w cidlock >/dev/null 2>&1 || [ -f /usr/share/man/man1/cidlock.1.gz ] && ok "man page cidlock(1) installed" || bad "no cidlock(1) man page"
# No systemd runs in the root: postinst enables the unit (deb-systemd-helper) and starts nothing.
[ -L /etc/systemd/system/multi-user.target.wants/cidlock.service ] && ok "cidlock.service enabled (multi-user.target.wants)" || bad "cidlock.service not enabled"
EOF

# The root's own network namespace: only its loopback, so Dovecot's and Postfix's stock ports
# (993, 995, 587, 25) and cidlock's (8425, 8426) cannot meet the host's or another test's.
# shellcheck disable=SC2016
phase use timeout 900 unshare --net sh -c 'ip link set lo up && exec "$@"' sh "$here/roots.sh" exec "$dir" node /tmp/e2e/admin-e2e.mjs

phase upgrade in_copy <<'EOF'
new=$(ls /tmp/next/*.deb)
echo '# a local change the upgrade must keep' >>/etc/cidlock/cidlock.yaml
before=$(cidlock devices list --json | sort)
[ -n "$before" ] || bad "no devices registered before the upgrade"
if out=$(apt-get install -y -q "$new" 2>&1); then ok "apt-get install $new (upgrade from $(dpkg-deb -f "$(ls /tmp/deb/cidlock_*_all.deb)" Version))"; else bad "upgrade" "$out"; fi
v=$(dpkg-query -W -f '${Version}' cidlock)
[ "$v" = "$(dpkg-deb -f "$new" Version)" ] && ok "cidlock $v installed" || bad "installed version $v"
grep -q '^# a local change the upgrade must keep$' /etc/cidlock/cidlock.yaml && ok "the administrator's rules kept (conffile)" || bad "the rules' local change is gone"
[ "$(stat -c '%a %U:%G' /etc/cidlock/cidlock.yaml)" = "640 root:cidlock" ] && ok "rules still 0640 root:cidlock" || bad "rules: $(stat -c '%a %U:%G' /etc/cidlock/cidlock.yaml)"
after=$(cidlock devices list --json | sort)
[ "$before" = "$after" ] && ok "the registry kept: $(printf '%s\n' "$after" | wc -l) devices" || bad "the registry changed" "before: $before
after: $after"
foreign=$(find /var/lib/cidlock ! -user cidlock)
[ -z "$foreign" ] && ok "state_dir still all cidlock's" || bad "state files not cidlock's: $foreign"
EOF

phase purge in_copy <<'EOF'
pkgs=$(dpkg-query -W -f '${Package}\n' 'cidlock*' 2>/dev/null | sort -r | tr '\n' ' ')
if out=$(apt-get remove -y -q $pkgs 2>&1); then ok "apt-get remove $pkgs"; else bad "apt-get remove" "$out"; fi
command -v cidlock >/dev/null 2>&1 && bad "cidlock still on PATH after remove" || ok "cidlock gone from PATH after remove"
[ -d /var/lib/cidlock ] && ok "remove keeps the registry (/var/lib/cidlock) for a reinstall" || bad "remove deleted /var/lib/cidlock"
# dpkg, not apt-get: apt no longer knows a local package that left no conffiles behind.
if out=$(dpkg --purge $pkgs 2>&1); then ok "dpkg --purge $pkgs"; else bad "dpkg --purge" "$out"; fi
for p in $pkgs; do
  st=$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null)
  [ -z "$st" ] || [ "$st" = not-installed ] || bad "dpkg status of $p after purge: $st"
done
left=$(ls -d /etc/cidlock /var/lib/cidlock /usr/lib/cidlock /var/spool/postfix/cidlock /run/cidlock /usr/lib/dovecot/modules/login/lib20_cidlock_clientid_plugin.so 2>/dev/null)
[ -z "$left" ] && ok "purge left none of the package's paths (/etc/cidlock, /var/lib/cidlock, /usr/lib/cidlock, the socket folder, the plugin)" || bad "left after purge: $left"
[ -e /etc/systemd/system/multi-user.target.wants/cidlock.service ] && bad "cidlock.service still enabled after purge" || ok "cidlock.service no longer enabled after purge"
getent passwd cidlock >/dev/null && echo "note the cidlock system user stays after purge (Debian policy: its uid may own files elsewhere)"
echo "note the administrator's own files stay: $(ls /etc/dovecot/private/cidlock.conf /etc/dovecot/conf.d/95-cidlock.conf /etc/dovecot/conf.d/91-postfix-auth.conf /root/cidlock-postfix.sh 2>/dev/null | tr '\n' ' ')"
EOF

echo "note distribution test on $release: $(( $(date +%s) - started )) s in all"
echo "$total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
