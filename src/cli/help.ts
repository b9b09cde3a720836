const CONFIG = `     -c, --config FILE
            The rules file. Default: $CIDLOCK_CONFIG, else /etc/cidlock/cidlock.yaml.
            state_dir in it locates the device registry.`;

export const HELP: Record<string, string> = {
  main: `NAME
     cidlock - lock each mailbox to its owner's devices on Dovecot and Postfix

SYNOPSIS
     cidlock serve   [-c FILE]
     cidlock check   [-c FILE]
     cidlock test    [-c FILE] --user USER --protocol PROTO [options]
     cidlock users   (set USER --mode MODE | show USER) [-c FILE]
     cidlock devices (list | add | remove | import) ... [-c FILE]
     cidlock config  (dovecot [--dovecot 2.3|2.4] | postfix) [-c FILE]
     cidlock help    [COMMAND]

DESCRIPTION
     cidlock answers Dovecot's auth policy requests and Postfix's policy
     delegation requests. A login is allowed only when it proves one of the
     user's registered devices (a CID sent in the IMAP ID, a TLS client
     certificate, or a recent proof from the same address), before the
     password is checked. Refusals look exactly like a wrong password.

     Modes, per server, domain or user: off, monitor (log would_reject only),
     learn (register new devices up to learn.max_devices), enforce.

     Run "cidlock COMMAND --help" for each command.

EXIT STATUS
     0 success, 1 failure (or a refused login for "test"), 2 usage or rules error.
`,
  serve: `NAME
     cidlock serve - run the policy daemons

SYNOPSIS
     cidlock serve [-c FILE]

DESCRIPTION
     Starts every listener configured under listen: in one process, on
     loopback unless the rules file says otherwise, and logs one JSON line
     per event and per decision on standard output. Decision lines carry the
     rule and evidence; they never contain a raw CID, password hash or key.

     The admin listener answers GET /healthz.

SIGNALS
     SIGHUP   re-read the rules file and the device registry. An invalid rules
              file is logged with file:line:column and the old rules stay in
              force. Listener addresses change only on restart.
     SIGTERM, SIGINT
              stop accepting connections and exit 0.

OPTIONS
${CONFIG}

EXIT STATUS
     0 after a clean stop, 1 if a listener cannot start, 2 on a usage or rules error.

EXAMPLES
     cidlock serve --config /etc/cidlock/cidlock.yaml
     kill -HUP $(pidof cidlock)      # reload after editing the rules
`,
  check: `NAME
     cidlock check - validate the rules file and registry

SYNOPSIS
     cidlock check [-c FILE]

DESCRIPTION
     Reads the rules file and reports every problem in one run, each as
     FILE:LINE:COLUMN: KEY.PATH: what was expected. Then counts domains and
     users in the rules and users and devices in the registry. Warnings
     (valid but probably unintended settings) are printed but do not fail.
     Nothing is written.

OPTIONS
${CONFIG}

EXIT STATUS
     0 when the rules and registry are valid, 1 otherwise, 2 on usage errors.

EXAMPLES
     cidlock check -c /etc/cidlock/cidlock.yaml && systemctl reload cidlock
`,
  test: `NAME
     cidlock test - explain the decision for a login, offline

SYNOPSIS
     cidlock test [-c FILE] --user USER --protocol PROTO [--ip ADDR] [--tls]
                  [--cid "TYPE TOKEN"] [--client-name NAME] [--client-os OS]
                  [--cert-fingerprint HEX] [--assume-vouch] [--json]
     cidlock test [-c FILE] --dovecot-json FILE|-  [--json]
     cidlock test [-c FILE] --postfix FILE|-  [--json]

DESCRIPTION
     Decides a login exactly as the daemon would, with the same rules and
     registry, and prints why: the verdict, the reason, the rules key that
     decided, the layer that set the user's mode (server policy, domain,
     registry, or a users: entry in the rules file) and every piece of
     evidence. Nothing is written and no daemon is contacted, so live
     vouches are unknown: pass --assume-vouch to see the outcome when a
     device was recently proven from the same address.

     --dovecot-json reads a Dovecot auth_policy request body, or captured
     lines of the form {"path": ..., "body": ...}, one per line. --postfix
     reads Postfix policy attribute blocks (name=value lines, blocks
     separated by an empty line). Each request is decided in turn.

OPTIONS
     --user USER           login name as Dovecot sees it (compared lowercased)
     --protocol PROTO      imap, pop3, submission, smtp, sieve
     --ip ADDR             client address (IPv4 or IPv6)
     --tls                 the client connection is encrypted
     --cid "TYPE TOKEN"    the CID the client sent, e.g. "UUID 23bf83be-..."
     --client-name NAME    the IMAP ID name, matched against device_types
     --client-os OS        the IMAP ID os
     --cert-fingerprint HEX
                           SHA-256 public-key fingerprint of a TLS client
                           certificate, with or without colons
     --assume-vouch        act as if a device was proven from --ip just now
     --json                print one JSON decision record per request
${CONFIG}

EXIT STATUS
     0 every login allowed (a monitor-mode would_reject prints a warning),
     1 a login refused or delayed, 2 usage or rules error.

EXAMPLES
     cidlock test -c examples/cidlock.yaml --user alice@example.com \\
         --protocol imap --tls --cid "UUID 23bf83be-aad7-46aa-9e0f-39191ccf402f"
     cidlock test --dovecot-json captured-request.json
`,
  users: `NAME
     cidlock users - per-user settings kept in the registry

SYNOPSIS
     cidlock users set USER --mode (off | monitor | learn | enforce | default) [-c FILE]
     cidlock users show USER [--json] [-c FILE]

DESCRIPTION
     "set" stores a mode for one user in the registry, so a customer portal
     or a help desk can lock a mailbox without editing YAML. "default"
     removes it. The registry overrides the policy: and domains: sections but
     not a users: entry in the rules file, which is the operator's final word.
     A running daemon picks the change up on SIGHUP.

     "show" prints the user's effective policy, which layer set each value,
     and the registered devices.

OPTIONS
     --mode MODE   the mode to store
     --json        machine-readable output (show)
${CONFIG}

EXIT STATUS
     0 success
     1 failure
     2 usage or rules error
     4 the registry is locked by another cidlock process: try again
     5 a state file cannot be read or written (permissions, a full or
       read-only disk); the message names the file and the error
     6 the registry is damaged; nothing was changed or overwritten

EXAMPLES
     cidlock users set bob@example.com --mode enforce
     cidlock users show bob@example.com
`,
  devices: `NAME
     cidlock devices - manage a user's registered devices

SYNOPSIS
     cidlock devices list [USER] [--json] [-c FILE]
     cidlock devices add USER "TYPE TOKEN" [--label L] [-c FILE]
     cidlock devices add USER --cert FILE.pem [--label L] [-c FILE]
     cidlock devices add USER --cert-fingerprint HEX [--label L] [-c FILE]
     cidlock devices remove USER (ID | --label L) [-c FILE]
     cidlock devices import FILE|- [-c FILE]

DESCRIPTION
     A CID is stored only as HMAC-SHA256 under a secret kept in state_dir
     (created on first use, mode 0600): the registry never holds the raw
     value. A certificate is stored as the SHA-256 fingerprint of its public
     key, as Postfix reports it in ccert_pubkey_fingerprint. Every change is
     written atomically (temp file, fsync, rename) under a lock shared with
     the daemon, so no device is ever lost. A running daemon picks changes up
     on SIGHUP.

     list     users and their devices: ID (first 12 hex digits of the
              stored hash), kind, type, label, added, source.
     add      registers a device; adding one that exists is not an error.
     remove   removes the device with that ID (a unique prefix of at least
              6 hex digits is enough) or every device with that label.
     import   registers many devices in one atomic write. One per line:
                  USER TYPE TOKEN [LABEL...]
                  USER --cert FINGERPRINT [LABEL...]
              Blank lines and lines starting with # are ignored. Any bad line
              aborts the import with its line number; nothing is changed.

OPTIONS
     --label L            a name for the device ("Alice's laptop")
     --cert FILE.pem      a PEM client certificate (a key or chain may follow)
     --cert-fingerprint HEX
                          the public-key fingerprint from a Postfix log
     --json               machine-readable output (list)
${CONFIG}

EXIT STATUS
     0 success
     1 failure (remove: nothing matched; import: a bad line)
     2 usage or rules error
     3 remove: the ID prefix matches several devices: give more digits
     4 the registry is locked by another cidlock process: try again
     5 a state file cannot be read or written (permissions, a full or
       read-only disk); the message names the file and the error
     6 the registry is damaged; nothing was changed or overwritten

EXAMPLES
     cidlock devices add alice@example.com "UUID 23bf83be-aad7-46aa-9e0f-39191ccf402f" --label laptop
     cidlock devices add alice@example.com --cert alice-phone.pem --label phone
     cidlock devices remove alice@example.com 3f9a21c07d1e
`,
  config: `NAME
     cidlock config - print the lines to add to your mail servers' configuration

SYNOPSIS
     cidlock config dovecot [--dovecot 2.3|2.4] [--nonce TEXT] [-c FILE]
     cidlock config postfix [-c FILE]

DESCRIPTION
     Prints the dovecot.conf settings that send every login to cidlock
     before the password is checked, filled in from the rules file: the
     policy URL from listen.dovecot, the API key header from dovecot.api_key,
     the request attributes cidlock reads, and imap_id_retain = yes so the
     CID a client sends in the IMAP ID reaches cidlock. Save the output as
     /etc/dovecot/conf.d/95-cidlock.conf and run "doveadm reload".

     The fail-open versus fail-closed choice (auth_policy_reject_on_fail) is
     printed commented out, with its trade-off.

     "postfix" prints the main.cf lines (check_policy_service with its
     default_action, fail-open and fail-closed variants, and the socketmap
     tables client and sasl, placed before permit_sasl_authenticated), then,
     after a "### master.cf" line, a submission service on port 587 with TLS,
     client certificates (smtpd_tls_ask_ccert) and Dovecot SASL.

OPTIONS
     --dovecot VERSION   2.3 (Debian 12, the default) or 2.4 (block syntax,
                         renamed variables, fail_type)
     --nonce TEXT        auth_policy_hash_nonce; default: a fresh random value.
                         Use the same value on every Dovecot server of a cluster.
${CONFIG}

EXIT STATUS
     0 success, 2 usage or rules error.

EXAMPLES
     cidlock config dovecot -c /etc/cidlock/cidlock.yaml > /etc/dovecot/conf.d/95-cidlock.conf
     cidlock config postfix -c /etc/cidlock/cidlock.yaml
`,
};
