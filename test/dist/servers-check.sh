#!/bin/sh
# Runs a Debian release's own Dovecot and Postfix with a private configuration in a fresh copy of
# the release's root (roots.sh), with cidlock (the built checkout, on the release's nodejs) as
# Dovecot's auth policy server: IMAP and POP3 logins, then SMTP AUTH through Postfix with Dovecot
# SASL; each must succeed and reach cidlock. Debian 12: Dovecot 2.3.19, Postfix 3.7; Debian 13:
# Dovecot 2.4.1 (its new configuration syntax), Postfix 3.10.
#
#   test/dist/servers-check.sh RELEASE
#
# Build first. The last line is "N passed, N failed"; the exit status is non-zero on any failure.
# The commands are the ones an operator or a test would run; the servers share the host's network
# (loopback, free high ports).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(cd "$here/../.." && pwd)
release=${1:?usage: servers-check.sh RELEASE}
[ -f "$checkout/dist/src/cli/main.js" ] || { echo "servers-check.sh: build first (npx tsc -p .)"; echo "0 passed, 1 failed"; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/cidlock-root-$release.XXXXXX")
trap '"$here/roots.sh" drop "$dir"' EXIT INT TERM
root=$("$here/roots.sh" fresh "$release" "$dir")
mkdir -p "$root/opt/cidlock"
tar -C "$checkout" -ch bin dist/src node_modules/yaml node_modules/lru-cache package.json examples | tar -C "$root/opt/cidlock" -x

"$here/roots.sh" exec "$dir" sh -s <<'EOF'
cd /opt/cidlock
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/     /'; }
freeport() { node -e 's=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
waitport() { # waitport PORT: up to 15 s
  node -e '
    const net = require("node:net"); const port = Number(process.argv[1]); const end = Date.now() + 15000;
    (function again() { const s = net.connect(port, "127.0.0.1", () => { s.destroy(); }); s.on("error", () => { if (Date.now() > end) process.exit(1); setTimeout(again, 100); }); })();
  ' "$1"
}
# talk PORT [tls] then SEND EXPECT pairs: after the greeting, send each line, wait for a line
# matching EXPECT (a regex), fail on a line matching the protocol's error replies. Prints the dialogue.
cat >/tmp/talk.js <<'JS'
const net = require('node:net');
const [port, ...steps] = process.argv.slice(2);
const sock = net.connect(Number(port), '127.0.0.1');
let buf = '', i = -2, want = /^(\* OK|\+OK|220 )/;
const fail = /^([a-z0-9]+ (NO|BAD)|-ERR|[45]\d\d )/;
const t = setTimeout(() => { console.log('timeout'); process.exit(1); }, 10000);
sock.on('data', (d) => {
  buf += d;
  let n;
  while ((n = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, n).replace(/\r$/, ''); buf = buf.slice(n + 1);
    console.log('S: ' + line);
    if (fail.test(line) && !want.test(line)) { console.log('unexpected reply'); process.exit(1); }
    if (!want.test(line)) continue;
    i += 2;
    if (i >= steps.length) { clearTimeout(t); sock.end(); return; }
    console.log('C: ' + steps[i]); sock.write(steps[i] + '\r\n'); want = new RegExp(steps[i + 1]);
  }
});
sock.on('error', (e) => { console.log(e.message); process.exit(1); });
JS
talk() { out=$(node /tmp/talk.js "$@" 2>&1); s=$?; printf '%s\n' "$out" >>/srv/t/dialogues; return $s; }

echo "Debian $(cat /etc/debian_version), node $(node --version), $(dovecot --version | cut -d' ' -f1), postfix $(postconf -h mail_version)"
mkdir -p /srv/t && chmod 755 /srv/t
t=/srv/t

# cidlock, Dovecot's policy server on a free port, every decision logged.
cport=$(freeport)
cat >$t/cidlock.yaml <<YAML
state_dir: $t/cidlock-state
listen: { dovecot: 127.0.0.1:$cport, postfix: off, socketmap: off, admin: 127.0.0.1:0 }
policy: { mode: monitor, require_tls: false }
log: { decisions: all }
YAML
node bin/cidlock serve -c $t/cidlock.yaml >$t/cidlock.log 2>&1 &
cpid=$!
if waitport $cport; then ok "cidlock serve listens on 127.0.0.1:$cport"; else bad "cidlock serve" "$(cat $t/cidlock.log)"; fi

# Dovecot, private: base_dir, state_dir, log in /srv/t/dovecot; passwd-file users; TLS; high ports.
d=$t/dovecot
mkdir -p $d/run $d/state $d/home && chmod 755 $d $d/run $d/state && chown 65534:65534 $d/home
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $d/server.key -out $d/server.pem -days 2 -subj /CN=mail.example.test 2>/dev/null
chmod 644 $d/server.key
echo 'alice@example.com:{PLAIN}secret::::::' >$d/users
imap=$(freeport) pop3=$(freeport)
# The same in both syntaxes: private ports, no implicit TLS, the SASL socket Postfix uses below.
services="service imap-login {
  inet_listener imap {
    port = $imap
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    port = $pop3
  }
  inet_listener pop3s {
    port = 0
  }
}
service auth {
  unix_listener $d/auth-sasl {
    mode = 0666
  }
}"
# What both syntaxes share: a private base, state and log, loopback only, TLS.
common="base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = yes"
case "$(dovecot --version)" in
  2.3.*)
    snippet=$(node bin/cidlock config dovecot -c $t/cidlock.yaml)
    cat >$d/dovecot.conf <<CONF
$common
ssl_cert = <$d/server.pem
ssl_key = <$d/server.key
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_cache_size = 0
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
$snippet
CONF
    ;;
  *)
    # Dovecot 2.4: a config version first; ssl_server_*_file, auth_allow_cleartext, named
    # passdb/userdb blocks with their own settings, mail_driver/mail_path, %{user}.
    snippet=$(node bin/cidlock config dovecot --dovecot 2.4 -c $t/cidlock.yaml)
    cat >$d/dovecot.conf <<CONF
dovecot_config_version = $(dovecot --version | sed 's/[- ].*//')
dovecot_storage_version = $(dovecot --version | sed 's/[- ].*//')
$common
ssl_server_cert_file = $d/server.pem
ssl_server_key_file = $d/server.key
auth_allow_cleartext = yes
auth_mechanisms = plain login
auth_verbose = yes
auth_cache_size = 0
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
$snippet
CONF
    ;;
esac
# Its output to a file: the daemon keeps an inherited pipe open, $(...) would wait for it to exit.
if dovecot -c $d/dovecot.conf >$d/start.out 2>&1 && waitport $imap && waitport $pop3; then
  ok "dovecot -c $d/dovecot.conf (imap $imap, pop3 $pop3)"
else
  bad "dovecot did not start" "$(cat $d/start.out)
$(doveconf -c $d/dovecot.conf -n 2>&1 | tail -n 5)
$(tail -n 20 $d/dovecot.log 2>/dev/null)"
fi
case "$(dovecot --version)" in
  2.3.*) url=$(doveconf -c $d/dovecot.conf -h auth_policy_server_url 2>&1) ;;
  # 2.4.1: "doveconf -h auth_policy_server_url" fails (exit 89, "Multiple settings matched with -h
  # parameter") and "doveconf auth_policy_server_url" prints an empty value; -n shows the setting
  # as server_url inside an auth_policy { } block.
  *) url=$(doveconf -c $d/dovecot.conf -n 2>&1 | sed -n 's/^ *server_url = //p') ;;
esac
[ "$url" = "http://127.0.0.1:$cport/" ] && ok "doveconf: auth_policy_server_url = $url" || bad "doveconf: auth_policy_server_url" "$url"

if talk $imap 'a1 ID ("name" "check" "clientid" "UUID 23bf83be-8d14-4a8e-9d5a-1c1e0c7a3b11")' '^a1 OK' 'a2 LOGIN alice@example.com secret' '^a2 OK' 'a3 LOGOUT' '^a3 OK'; then ok "IMAP LOGIN (with an ID clientid)"; else bad "IMAP LOGIN" "$out
$(tail -n 20 $d/dovecot.log)"; fi
if talk $pop3 'USER alice@example.com' '^\+OK' 'PASS secret' '^\+OK' 'QUIT' '^\+OK'; then ok "POP3 USER/PASS"; else bad "POP3 USER/PASS" "$out
$(tail -n 20 $d/dovecot.log)"; fi
if talk $imap 'a2 LOGIN alice@example.com wrong' '^a2 NO'; then ok "IMAP LOGIN, wrong password: NO"; else bad "IMAP LOGIN, wrong password" "$out"; fi
sleep 0.5
n=$(grep -c '"user":"alice@example.com"' $t/cidlock.log)
if grep '"event":"decision"' $t/cidlock.log | grep '"protocol":"imap"' | grep -q '"cid_via":"imap_id"'; then ok "cidlock saw the logins ($n log lines for alice, the IMAP one with its CID from ID)"; else bad "cidlock did not log the IMAP login with its CID" "$(tail -n 20 $t/cidlock.log)"; fi

# Postfix, private: own config, queue and data directories, maillog_file (no syslog), loopback;
# SMTP AUTH through Dovecot's SASL socket.
p=$t/postfix
mkdir -p $p/etc $p/queue $p/data && chmod 755 $p $p/queue && chown postfix $p/data
smtp=$(freeport)
cat >$p/etc/main.cf <<CONF
compatibility_level = 3.6
queue_directory = $p/queue
data_directory = $p/data
maillog_file = $p/maillog
maillog_file_prefixes = $p
inet_interfaces = loopback-only
inet_protocols = ipv4
smtpd_peername_lookup = no
myhostname = mx.example.test
mydestination =
mynetworks = 127.0.0.1/32
alias_maps =
alias_database =
local_transport = discard
default_transport = discard
relay_transport = discard
smtpd_tls_security_level = may
smtpd_tls_cert_file = $d/server.pem
smtpd_tls_key_file = $d/server.key
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $d/auth-sasl
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
CONF
cat >$p/etc/master.cf <<CONF
$smtp     inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CONF
if postfix -c $p/etc start >$p/start.out 2>&1 && waitport $smtp; then ok "postfix -c $p/etc start (smtpd on $smtp)"; else bad "postfix did not start" "$(cat $p/start.out)
$(tail -n 20 $p/maillog 2>/dev/null)"; fi
plain=$(printf '\0alice@example.com\0secret' | base64)
if talk $smtp 'EHLO client.example.test' '^250 ' "AUTH PLAIN $plain" '^235 ' 'QUIT' '^221 '; then ok "SMTP AUTH PLAIN through Dovecot SASL: 235"; else bad "SMTP AUTH" "$out
$(tail -n 20 $p/maillog 2>/dev/null)"; fi
sleep 0.5
if grep '"event":"decision"' $t/cidlock.log | grep -q '"protocol":"smtp"'; then ok "cidlock saw the SMTP AUTH"; else bad "cidlock did not log the SMTP AUTH" "$(tail -n 5 $t/cidlock.log)"; fi

postfix -c $p/etc stop >/dev/null 2>&1 && ok "postfix stop" || bad "postfix stop"
dovecot -c $d/dovecot.conf stop >/dev/null 2>&1 && ok "dovecot stop" || bad "dovecot stop"
kill -TERM $cpid; wait $cpid && ok "cidlock serve stopped" || bad "cidlock serve exit status"
warn=$(grep -iE 'warning|error|fatal' $d/dovecot.log $p/maillog 2>/dev/null | grep -v 'wrong' | head -n 10)
[ -z "$warn" ] || { echo "note server warnings:"; printf '%s\n' "$warn" | sed 's/^/     /'; }
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
EOF
