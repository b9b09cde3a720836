#!/bin/sh
# The start of issue 12's distribution test: install a cidlock .deb into a fresh copy of a Debian
# release's root (roots.sh: Debian's own nodejs, dovecot-imapd, dovecot-pop3d, postfix), check that
# it runs, then remove and purge it and check what is left.
#
#   test/dist/distribution.sh RELEASE PATH/TO/cidlock.deb
#
# apt-get resolves the .deb's dependencies from the release (network, the cached root's lists).
# The root's policy-rc.d keeps the package's service from starting (the servers' tests start private
# instances). The last line is "N passed, N failed"; the exit status is non-zero on any failure.
# Still to come: configure from `cidlock config dovecot|postfix` and run core e2e cases against
# the release's servers (servers-check.sh shows how they run in the root).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
release=${1:?usage: distribution.sh RELEASE DEB}
deb=${2:?usage: distribution.sh RELEASE DEB}
[ -f "$deb" ] || { echo "distribution.sh: no such file: $deb"; echo "0 passed, 1 failed"; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/cidlock-root-$release.XXXXXX")
trap '"$here/roots.sh" drop "$dir"' EXIT INT TERM
root=$("$here/roots.sh" fresh "$release" "$dir")
mkdir -p "$root/tmp/deb"
cp "$deb" "$root/tmp/deb/"

"$here/roots.sh" exec "$dir" sh -s "/tmp/deb/$(basename "$deb")" <<'EOF'
deb=$1
export DEBIAN_FRONTEND=noninteractive
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | tail -n 30 | sed 's/^/     /'; }
echo "Debian $(cat /etc/debian_version), node $(node --version), package $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
pkg=$(dpkg-deb -f "$deb" Package)

if out=$(apt-get install -y -q "$deb" 2>&1); then ok "apt-get install $deb"; else bad "apt-get install" "$out"; fi
v=$(cidlock --version 2>&1) && ok "cidlock --version: $v" || bad "cidlock --version" "$v"
files=$(dpkg -L "$pkg" 2>/dev/null | wc -l)
echo "note $pkg installs $files paths; conffiles: $(dpkg-query -W -f '${Conffiles}' "$pkg" 2>/dev/null | awk '{print $1}' | tr '\n' ' ')"

if out=$(apt-get remove -y -q "$pkg" 2>&1); then ok "apt-get remove $pkg"; else bad "apt-get remove" "$out"; fi
command -v cidlock >/dev/null 2>&1 && bad "cidlock still on PATH after remove" || ok "cidlock gone from PATH after remove"
# dpkg, not apt-get: apt no longer knows a local package that left no conffiles behind.
if out=$(dpkg --purge "$pkg" 2>&1); then ok "dpkg --purge $pkg"; else bad "dpkg --purge" "$out"; fi
st=$(dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null)
[ -z "$st" ] || [ "$st" = not-installed ] && ok "dpkg: $pkg not installed after purge" || bad "dpkg status after purge: $st"
left=$(ls -d /etc/cidlock /var/lib/cidlock /usr/lib/cidlock /opt/cidlock 2>/dev/null)
[ -z "$left" ] && ok "nothing left in /etc/cidlock, /var/lib/cidlock, /usr/lib/cidlock, /opt/cidlock" || bad "left after purge: $left"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
EOF
