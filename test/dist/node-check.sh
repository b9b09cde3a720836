#!/bin/sh
# Runs a built cidlock checkout on a Debian release's own Node.js (issue 12): Debian 12 ships
# nodejs 18.20, Debian 13 nodejs 20.19. In a fresh copy of the release's root (roots.sh):
# the unit tests that need no mail server, `cidlock --version`, `cidlock check`, `cidlock test`,
# and `cidlock serve` started, asked for /healthz and stopped.
#
#   test/dist/node-check.sh RELEASE [PATTERN]
#
# Build first (`npx tsc -p .` or `npm run build`). PATTERN is the uvu file pattern under dist/test
# (default: the top-level unit tests, "^[^/]+\.test\.js$"). The last line is "N passed, N failed";
# the exit status is non-zero on any failure.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(cd "$here/../.." && pwd)
release=${1:?usage: node-check.sh RELEASE [PATTERN]}
# package.test builds the .deb from the checkout's sources: it runs on the build host, and the .deb
# itself is tried in the roots by distribution.sh. chromium.test drives the build host's browser,
# which the roots do not have.
pattern=${2:-'^(?!(?:package|chromium)\.test\.js$)[^/]+\.test\.js$'}
[ -f "$checkout/dist/src/cli/main.js" ] || { echo "node-check.sh: build first (npx tsc -p .)"; echo "0 passed, 1 failed"; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/cidlock-root-$release.XXXXXX")
trap '"$here/roots.sh" drop "$dir"' EXIT INT TERM
root=$("$here/roots.sh" fresh "$release" "$dir")
mkdir -p "$root/opt/cidlock"
# -h: node_modules may be a symlink (a worktree sharing another's); copy what it points to.
tar -C "$checkout" -ch bin dist node_modules package.json README.md examples templates test/fixtures | tar -C "$root/opt/cidlock" -x

"$here/roots.sh" exec "$dir" sh -s "$pattern" <<'EOF'
pattern=$1
cd /opt/cidlock
export NO_COLOR=1 FORCE_COLOR=0
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/     /'; }
step() { # step NAME CMD...: ok when CMD exits 0
  name=$1; shift
  if out=$("$@" 2>&1); then ok "$name"; else bad "$name (exit $?)" "$out"; fi
}

echo "Debian $(cat /etc/debian_version), node $(node --version)"

log=$(mktemp)
node node_modules/uvu/bin.js dist/test "$pattern" >"$log" 2>&1
status=$?
total=$(sed -n 's/^ *Total: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
upassed=$(sed -n 's/^ *Passed: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
if [ "$status" -eq 0 ] && [ -n "$total" ] && [ "$total" = "$upassed" ]; then
  ok "unit tests ($upassed/$total, $pattern)"
else
  bad "unit tests (exit $status, passed ${upassed:-?} of ${total:-?})" "$(grep -v '^[•✘ ]*$' "$log" | tail -n 60)"
fi
# Anything Node printed about itself (ExperimentalWarning, DeprecationWarning, other warnings).
if grep -E '\(node:[0-9]+\) ' "$log" >/dev/null; then
  echo "note node warnings during the unit tests:"; grep -E -A1 '\(node:[0-9]+\) ' "$log" | sed 's/^/     /'
fi

v=$(node bin/cidlock --version 2>&1) && [ -n "$v" ] && ok "cidlock --version: $v" || bad "cidlock --version" "$v"

mkdir -p /var/lib/cidlock
step "cidlock check -c examples/cidlock.yaml" node bin/cidlock check -c examples/cidlock.yaml
step "cidlock check -c examples/cidlock-advanced.yaml" node bin/cidlock check -c examples/cidlock-advanced.yaml
step "cidlock test (imap, CID, TLS)" node bin/cidlock test -c examples/cidlock.yaml --user bob@example.com --protocol imap --tls --ip 198.51.100.7 --clientid "UUID 23bf83be-8d14-4a8e-9d5a-1c1e0c7a3b11"
step "cidlock test --json (smtp)" node bin/cidlock test -c examples/cidlock.yaml --user bob@example.com --protocol smtp --ip 198.51.100.7 --json
step "cidlock config dovecot" node bin/cidlock config dovecot -c examples/cidlock.yaml
step "cidlock config postfix" node bin/cidlock config postfix -c examples/cidlock.yaml

# serve: every listener on port 0 (the log names the real one), state in a temp folder.
s=$(mktemp -d)
cat >"$s/cidlock.yaml" <<YAML
state_dir: $s/state
listen: { dovecot: 127.0.0.1:0, postfix: off, socketmap: off, admin: 127.0.0.1:0 }
policy: { mode: monitor }
YAML
node bin/cidlock serve -c "$s/cidlock.yaml" >"$s/out" 2>"$s/err" &
pid=$!
admin=""
i=0
while [ $i -lt 100 ] && [ -z "$admin" ] && kill -0 $pid 2>/dev/null; do
  admin=$(grep '"event":"listening"' "$s/out" | grep '"listener":"admin"' | sed -n 's/.*"address":"\([^"]*\)".*/\1/p' | head -n 1)
  [ -n "$admin" ] || sleep 0.1
  i=$((i + 1))
done
if [ -z "$admin" ]; then
  bad "cidlock serve started" "$(cat "$s/out" "$s/err")"
else
  ok "cidlock serve started (admin on $admin)"
  h=$(node -e '
    const http = require("node:http");
    const [host, port] = process.argv[1].split(":");
    http.get({ host, port, path: "/healthz" }, (res) => {
      let b = ""; res.on("data", (d) => (b += d));
      res.on("end", () => { console.log(res.statusCode, b); process.exitCode = res.statusCode === 200 ? 0 : 1; });
    }).on("error", (e) => { console.log(e.message); process.exitCode = 1; });
  ' "$admin" 2>&1) && ok "serve /healthz: $h" || bad "serve /healthz" "$h"
fi
kill -TERM $pid 2>/dev/null
wait $pid
code=$?
if [ "$code" -eq 0 ]; then ok "cidlock serve stopped on SIGTERM (exit 0)"; else bad "cidlock serve stopped on SIGTERM (exit $code)" "$(tail -n 5 "$s/out"; cat "$s/err")"; fi
if [ -s "$s/err" ]; then echo "note serve wrote to stderr:"; sed 's/^/     /' "$s/err"; fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
EOF
