#!/bin/sh
# Fresh Debian roots for distribution tests (issue 12): a cached base root per release with Debian's
# own nodejs and mail servers, and throw-away copies of it to run commands in.
#
#   roots.sh path RELEASE            build the cached base root if missing; print its path
#   roots.sh fresh RELEASE DIR       make DIR/root a fresh copy of it (overlay, or cp -a); print DIR/root
#   roots.sh exec DIR [-b SRC:DST]... [--] CMD [ARG]...
#                                    run CMD chrooted in DIR/root, in a private mount namespace with
#                                    /proc, /sys, /dev and any -b bind mounts; the host's network
#   roots.sh drop DIR                end the processes running in DIR/root, unmount it, remove DIR
#   roots.sh run RELEASE [-b SRC:DST]... [--] CMD [ARG]...
#                                    fresh + exec + drop in one
#   roots.sh versions RELEASE        the versions of the packages that matter, one "name version" a line
#
# RELEASE is bookworm (Debian 12) or trixie (Debian 13), or bookworm+dev / trixie+dev: the base root
# plus a C toolchain and dovecot-dev (DEV_PACKAGES below), to build the CLIENTID login plugin
# against the release's Dovecot. Needs root, debootstrap, unshare, chroot.
# Environment: CIDLOCK_ROOTS_CACHE (default /var/cache/cidlock-test/roots), CIDLOCK_DEBIAN_MIRROR
# (default http://deb.debian.org/debian), CIDLOCK_ROOTS_COPY (overlay | cp; default overlay, cp
# when the kernel refuses the overlay mount).
#
# The base root is debootstrap --variant=minbase --include=PACKAGES, then the release's security and
# updates suites, upgraded; it is built in a side folder and renamed into place, so an interrupted
# build never leaves a half root behind. Its name carries a hash of the release, mirror, package list
# and recipe version: change any and a new root is built. It keeps /usr/sbin/policy-rc.d answering
# 101, so no package starts its own service (an init script started from the chroot would share the
# host's network and ports): the tests start private instances of the servers.
set -eu

RECIPE=1
CACHE=${CIDLOCK_ROOTS_CACHE:-/var/cache/cidlock-test/roots}
MIRROR=${CIDLOCK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES="nodejs dovecot-imapd dovecot-pop3d postfix openssl ca-certificates"
DEV_RECIPE=1
DEV_PACKAGES="dovecot-dev gcc make libc6-dev dpkg-dev binutils"

die() { echo "roots.sh: $*" >&2; exit 1; }

check_release() {
  case "$1" in
    bookworm|trixie|bookworm+dev|trixie+dev) ;;
    *) die "unknown release '$1' (bookworm, trixie, bookworm+dev or trixie+dev)" ;;
  esac
}

root_name() {
  h=$(printf '%s\n' "$1" "$MIRROR" "$PACKAGES" "$RECIPE" | sha256sum | cut -c1-12)
  echo "$1-$h"
}

cmd_path() {
  check_release "$1"
  case "$1" in *+dev) dev_path "${1%+dev}"; return ;; esac
  base="$CACHE/$(root_name "$1")"
  cached "$base" "$1" build "$1" "$base"
}

# cached DIR LOCK CMD...: prints DIR, built first by CMD (which builds aside and renames into
# place) when missing. One build per LOCK at a time; the loser of the race finds DIR built.
cached() {
  c_dir=$1 c_lock=$2; shift 2
  if [ ! -d "$c_dir" ]; then
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock-$c_lock"
    flock 9
    [ -d "$c_dir" ] || "$@" >&2
    exec 9>&-
  fi
  echo "$c_dir"
}

build() {
  release=$1 base=$2
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"
  tmp="$base.build-$$"
  rm -rf "$tmp"
  started=$(date +%s)
  echo "roots.sh: building $base (debootstrap $release, about 2 minutes)"
  if ! debootstrap --variant=minbase --include="$(echo $PACKAGES | tr ' ' ,)" "$release" "$tmp" "$MIRROR" >"$tmp.log" 2>&1; then
    tail -n 30 "$tmp.log" >&2
    rm -rf "$tmp"
    die "debootstrap $release failed (log: $tmp.log)"
  fi
  printf '#!/bin/sh\n# cidlock test roots: packages do not start services; the tests start private instances.\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
  chmod 755 "$tmp/usr/sbin/policy-rc.d"
  security=${CIDLOCK_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
  cat >"$tmp/etc/apt/sources.list" <<EOF
deb $MIRROR $release main
deb $MIRROR $release-updates main
deb $security $release-security main
EOF
  cp /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true
  if ! in_root "$tmp" sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get -y -q -o Dpkg::Options::=--force-confold dist-upgrade && apt-get clean' >>"$tmp.log" 2>&1; then
    tail -n 30 "$tmp.log" >&2
    rm -rf "$tmp"
    die "upgrading $release failed (log: $tmp.log)"
  fi
  in_root "$tmp" dpkg-query -W -f '${Package} ${Version}\n' $PACKAGES >"$tmp/.cidlock-root-versions"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - started )) s from $MIRROR" >"$tmp/.cidlock-root-built"
  mv "$tmp.log" "$tmp/.cidlock-root-build.log"
  mv "$tmp" "$base"
  echo "roots.sh: built $base in $(( $(date +%s) - started )) s"
}

dev_path() {
  plain=$(cmd_path "$1")
  h=$(printf '%s\n' "$DEV_PACKAGES" "$DEV_RECIPE" | sha256sum | cut -c1-12)
  dev="$plain-dev-$h"
  cached "$dev" "$1+dev" build_dev "$plain" "$dev"
}

build_dev() {
  plain=$1 dev=$2
  tmp="$dev.build-$$"
  rm -rf "$tmp" "$tmp.log"
  started=$(date +%s)
  echo "roots.sh: building $dev (the base root plus $DEV_PACKAGES, about a minute)"
  cp -a --reflink=auto "$plain" "$tmp"
  rm -f "$tmp/.cidlock-root-build.log"
  cp /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null || true
  # shellcheck disable=SC2016
  if ! in_root "$tmp" sh -c '
    set -e
    export DEBIAN_FRONTEND=noninteractive
    dpkg-query -W -f "\${Package} \${Version}\n" | sort >/tmp/before
    core=$(dpkg-query -W -f "\${Version}" dovecot-core)
    libc=$(dpkg-query -W -f "\${Version}" libc6)
    pinned=""
    for p in "$@"; do
      case "$p" in
        dovecot-dev) pinned="$pinned dovecot-dev=$core" ;;
        libc6-dev) pinned="$pinned libc6-dev=$libc" ;;
        *) pinned="$pinned $p" ;;
      esac
    done
    if ! apt-get install -y -q --no-install-recommends $pinned; then
      echo "roots.sh: the base root'"'"'s package lists are stale; apt-get update and again"
      apt-get update -q
      apt-get install -y -q --no-install-recommends $pinned
    fi
    apt-get clean
    dpkg-query -W -f "\${Package} \${Version}\n" | sort >/tmp/after
    changed=$(join /tmp/before /tmp/after | awk "\$2 != \$3")
    if [ -n "$changed" ]; then
      echo "roots.sh: installing the dev packages changed packages of the base root (package old new):"
      echo "$changed"
      echo "roots.sh: rebuild the base root (remove it) so that its versions are current"
      exit 1
    fi
    rm -f /tmp/before /tmp/after
  ' dev $DEV_PACKAGES >"$tmp.log" 2>&1; then
    tail -n 30 "$tmp.log" >&2
    rm -rf "$tmp"
    die "installing $DEV_PACKAGES in a copy of $plain failed (log: $tmp.log)"
  fi
  in_root "$tmp" dpkg-query -W -f '${Package} ${Version}\n' $PACKAGES dovecot-core $DEV_PACKAGES >"$tmp/.cidlock-root-versions"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - started )) s from $plain plus $DEV_PACKAGES" >"$tmp/.cidlock-root-built"
  mv "$tmp.log" "$tmp/.cidlock-root-build.log"
  mv "$tmp" "$dev"
  echo "roots.sh: built $dev in $(( $(date +%s) - started )) s"
}

# in_root ROOT [-b SRC:DST]... [--] CMD...: chroot into ROOT in a private mount namespace.
in_root() {
  r=$1; shift
  binds=""
  while [ $# -gt 0 ]; do
    case "$1" in
      -b) [ $# -ge 2 ] || die "-b needs SRC:DST"; binds="$binds $2"; shift 2 ;;
      --) shift; break ;;
      *) break ;;
    esac
  done
  [ $# -gt 0 ] || die "no command to run"
  # The mounts live as long as a process in the namespace does (a daemon keeps them).
  # --propagation private: nothing mounted here shows on the host, nor in other copies.
  unshare --mount --propagation private -- sh -c '
    set -e
    r=$1 binds=$2; shift 2
    mount -t proc proc "$r/proc"
    mount --rbind /sys "$r/sys"
    mount --rbind /dev "$r/dev"
    for b in $binds; do
      src=${b%%:*} dst=${b#*:}
      mkdir -p "$r$dst"
      mount --bind "$src" "$r$dst"
    done
    exec chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" "$@"
  ' in_root "$r" "$binds" "$@"
}

cmd_fresh() {
  release=$1 dir=$2
  base=$(cmd_path "$release")
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ ! -e "$dir/root" ] || die "$dir/root exists"
  mkdir -p "$dir/root"
  mode=${CIDLOCK_ROOTS_COPY:-overlay}
  if [ "$mode" = overlay ]; then
    mkdir -p "$dir/upper" "$dir/work"
    if mount -t overlay overlay -o "lowerdir=$base,upperdir=$dir/upper,workdir=$dir/work" "$dir/root" 2>/dev/null; then
      echo overlay >"$dir/mode"
    else
      rm -rf "$dir/upper" "$dir/work"
      mode=cp
    fi
  fi
  if [ "$mode" = cp ]; then
    cp -a --reflink=auto "$base/." "$dir/root/"
    echo cp >"$dir/mode"
  fi
  cp /etc/resolv.conf "$dir/root/etc/resolv.conf" 2>/dev/null || true
  echo "$dir/root"
}

cmd_exec() {
  dir=$1; shift
  [ -d "$dir/root/usr" ] || die "$dir/root is not a root (roots.sh fresh RELEASE $dir first)"
  in_root "$dir/root" "$@"
}

# The processes whose root is the copy (started by exec), found by their /proc/PID/root.
pids_in() {
  for p in /proc/[0-9]*; do
    link=$(readlink "$p/root" 2>/dev/null) || continue
    [ "$link" = "$1" ] && echo "${p#/proc/}"
  done
  return 0
}

cmd_drop() {
  dir=$1
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  r="$dir/root"
  pids=$(pids_in "$r")
  if [ -n "$pids" ]; then
    kill -TERM $pids 2>/dev/null || true
    i=0
    while [ $i -lt 50 ] && [ -n "$(pids_in "$r")" ]; do sleep 0.1; i=$((i + 1)); done
    pids=$(pids_in "$r")
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    sleep 0.2
  fi
  if mountpoint -q "$r"; then
    umount "$r" 2>/dev/null || umount -l "$r"
  fi
  rm -rf "$dir"
}

cmd_run() {
  release=$1; shift
  check_release "$release"
  dir=$(mktemp -d "${TMPDIR:-/tmp}/cidlock-root-$release.XXXXXX")
  trap 'cmd_drop "$dir"' EXIT INT TERM
  cmd_fresh "$release" "$dir" >/dev/null
  set +e
  cmd_exec "$dir" "$@"
  status=$?
  set -e
  cmd_drop "$dir"
  trap - EXIT INT TERM
  return $status
}

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, mount, chroot)"
[ $# -ge 1 ] || die "usage: roots.sh path|fresh|exec|drop|run|versions ... (see the head of this script)"
sub=$1; shift
case "$sub" in
  path) [ $# -eq 1 ] || die "usage: roots.sh path RELEASE"; cmd_path "$1" ;;
  fresh) [ $# -eq 2 ] || die "usage: roots.sh fresh RELEASE DIR"; check_release "$1"; cmd_fresh "$1" "$2" ;;
  exec) [ $# -ge 2 ] || die "usage: roots.sh exec DIR [-b SRC:DST]... [--] CMD..."; cmd_exec "$@" ;;
  drop) [ $# -eq 1 ] || die "usage: roots.sh drop DIR"; cmd_drop "$1" ;;
  run) [ $# -ge 2 ] || die "usage: roots.sh run RELEASE [-b SRC:DST]... [--] CMD..."; cmd_run "$@" ;;
  versions) [ $# -eq 1 ] || die "usage: roots.sh versions RELEASE"; cat "$(cmd_path "$1")/.cidlock-root-versions" ;;
  *) die "unknown command '$sub'" ;;
esac
