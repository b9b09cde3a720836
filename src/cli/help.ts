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
     cidlock test    [-c FILE] (--dovecot-json FILE | --postfix FILE)
     cidlock users   (set USER --mode MODE | show USER) [-c FILE]
     cidlock devices (list | add | remove | import) ... [-c FILE]
     cidlock pending (list | approve | reject) ... [-c FILE]
     cidlock config  (dovecot [--dovecot 2.3|2.4] [--clientid] | postfix) [-c FILE]
     cidlock store   copy --from STORE --to STORE [--force] [-c FILE]
     cidlock help    [COMMAND]
     cidlock --version

DESCRIPTION
     cidlock answers Dovecot's auth policy requests, Postfix's policy
     delegation requests and Postfix socketmap lookups. In enforce mode a
     login is allowed only when it proves one of the user's registered
     devices: a CID sent in the IMAP ID, a TLS client certificate, or a
     recent proof from the same address. Dovecot (IMAP, POP3, submission,
     ManageSieve, and SMTP AUTH through Dovecot SASL) asks before the
     password is checked, and a refusal gets exactly the wrong-password
     reply unless the rules set a message. Postfix's policy service refuses
     an authenticated SMTP session with 554 5.7.1 where its check sits (at
     RCPT in the generated configuration).

     Modes, per server, domain or user: off (allow without looking),
     monitor (decide, allow, log would_reject), learn (enforce, but register
     a new device once its login succeeds, up to learn.max_devices),
     enforce.

     Run "cidlock COMMAND --help" for each command.

EXIT STATUS
     0 success; 1 failure (for "test": a refused login; for "check": invalid
     rules); 2 usage error, or invalid rules for the other commands; for
     commands that read or change the registry: 3 a device ID matches several
     devices, 4 the registry is locked by another cidlock process, 5 a state
     file cannot be read or written, 6 the registry is damaged.
`,
  serve: `NAME
     cidlock serve - run the policy daemon

SYNOPSIS
     cidlock serve [-c FILE]

DESCRIPTION
     Starts every listener configured under listen: in one process, named
     "cidlock" so that "pidof cidlock" finds it. Unless the rules file says
     otherwise: Dovecot's policy listener on 127.0.0.1:8425 (Dovecot must
     send the API key: dovecot.api_key, else the one in dovecot.api_key_file,
     default state_dir/dovecot.key, created on first start), the admin
     listener on 127.0.0.1:8426, and the Postfix policy service and
     socketmap tables on the UNIX sockets /var/spool/postfix/cidlock/policy
     and .../socketmap. "off" disables a listener.

     Logs one JSON line per event on standard output; decision lines as
     log.decisions says (refusals and would_reject by default, or all, or
     none). Decision lines carry the rule and evidence; they never contain a
     raw CID, password hash or key.

     The admin listener serves GET /healthz (status, version, pid,
     uptime_seconds, rules: the rules file, rules_loaded_at: when the rules
     in force were loaded), GET /readyz (200 while the registry is readable,
     and a Redis store connected, else 503), GET /metrics (Prometheus) and,
     when admin.token is set, the /api routes.

     The rules file is re-read within about two seconds of a change, and on
     SIGHUP. Device and user changes (cidlock devices, cidlock users, the
     admin API) reach the daemon within a second, without a signal; with a
     Redis store (store.redis), changes made on any host reach every host
     within a second, and hosts share vouches, attack counters, learn slots
     and alerts. A host that starts while Redis does not answer (it waits
     3 s) decides from its local copy of the registry
     (state_dir/shared-registry-copy) and fails /readyz until Redis is back.

SIGNALS
     SIGHUP   re-read the rules file now. An invalid rules file is logged
              with file:line:column, counted in
              cidlock_rules_reloads_total{result="rejected"}, and the old
              rules stay in force. Listener addresses, state_dir and store
              change only on restart.
     SIGTERM, SIGINT
              close the listeners and every open connection, wait for webhook
              deliveries in flight (at most 5 s), write the local copy of a
              shared registry if it changed, exit 0.

OPTIONS
${CONFIG}

EXIT STATUS
     0 after a clean stop, 1 if it cannot start (a listener address in use,
     an unreadable state_dir or API key file), 2 on a usage or rules error.

EXAMPLES
     cidlock serve --config /etc/cidlock/cidlock.yaml
     systemctl reload cidlock          # examples/cidlock.service: check, then SIGHUP
     kill -HUP $(pidof cidlock)        # the same without systemd
     curl -s http://127.0.0.1:8426/healthz
`,
  check: `NAME
     cidlock check - validate the rules file, the registry and what they expose

SYNOPSIS
     cidlock check [-c FILE]

DESCRIPTION
     Reads the rules file and reports every problem in one run, each as
     FILE:LINE:COLUMN: KEY.PATH: what was expected. Then prints the
     listeners and the server policy, counts domains and users in the rules,
     reads the registry (in state_dir, or in the Redis store.redis names:
     users, users with their own mode, devices), and says where Dovecot's
     API key is kept and whether it can be read.

     Warnings (printed, but the check still passes) for what is valid but
     probably unintended, and for channels into cidlock that are not
     authenticated:
       - a Postfix policy or socketmap listener over TCP: that protocol has
         no password, so any local user (or any host that reaches the port)
         can send requests as if it were Postfix;
       - a socket directory other users may enter (cidlock serve refuses
         it), or one Postfix's group cannot enter;
       - an admin listener off loopback without admin.token, or Dovecot's
         key or the admin token crossing the network in clear HTTP;
       - a rules file every local user can read that holds a key
         (dovecot.api_key, admin.token, webhook.secret), and a Dovecot key
         file others can read or the daemon's user cannot;
       - a Redis store whose settings can lose acknowledged registrations
         (appendonly no, appendfsync other than always, a maxmemory-policy
         other than noeviction), and a Redis store that does not answer
         (the daemon then starts from its local copy of the registry).

     The check fails when the audit log (audit.file) could not be written
     by the daemon's user, taken to be state_dir's owner: at run time the
     events would be lost. Nothing is written.

OPTIONS
${CONFIG}

EXIT STATUS
     0 when the rules and registry are valid and the audit log is
     writable, 1 otherwise, 2 on usage errors.

EXAMPLES
     cidlock check -c /etc/cidlock/cidlock.yaml && systemctl reload cidlock
`,
  test: `NAME
     cidlock test - explain the decision for a login, offline

SYNOPSIS
     cidlock test [-c FILE] --user USER --protocol PROTO [--ip ADDR] [--tls]
                  [--clientid "TYPE TOKEN"] [--cid "TYPE TOKEN"]
                  [--client-name NAME] [--client-os OS]
                  [--cert-fingerprint HEX]... [--assume-vouch] [--json]
     cidlock test [-c FILE] --dovecot-json FILE|-  [--json]
     cidlock test [-c FILE] --postfix FILE|-  [--json]

DESCRIPTION
     Decides a login exactly as the daemon would, with the same rules and
     registry, and prints why: the verdict, the reason, the rules key that
     decided, the layer that set the user's mode (built-in default, server
     policy, domain, registry, or a users: entry in the rules file), every
     piece of evidence, and for a refusal what the client sees: the reply
     the mail server sends, word for word (for --protocol smtp both paths:
     AUTH through Dovecot SASL and RCPT through the policy service). --json
     prints the record the daemon logs instead.

     Nothing is written and no daemon is contacted, so its live state is
     unknown: vouches (pass --assume-vouch to see the outcome when a device
     was recently proven from the same address) and the attack-defence
     counters (so no limit applies and no login is delayed here).

     --dovecot-json reads a Dovecot auth_policy request body, or captured
     lines of the form {"path": ..., "body": ...}, one per line. --postfix
     reads Postfix policy attribute blocks (name=value lines, blocks
     separated by an empty line); the client sees the reply for the block's
     protocol_state. Each request is decided in turn; one the daemon would
     not decide (a report, an unauthenticated SMTP session) prints
     NO DECISION and why.

OPTIONS
     --user USER           login name as Dovecot sees it (compared lowercased)
     --protocol PROTO      imap, pop3, submission, smtp or sieve; any other
                           name falls under protocols.other
     --ip ADDR             client address (IPv4 or IPv6)
     --tls                 the client connection is encrypted
     --clientid "TYPE TOKEN"
                           the CID the client sent with the CLIENTID command
                           (through the login plugin; counts as over TLS)
     --cid "TYPE TOKEN"    the CID the client sent in an IMAP ID field, e.g.
                           "UUID 23bf83be-..."; with --clientid as well, the
                           CLIENTID one decides and the mismatch is shown
     --client-name NAME    the IMAP ID name, matched against device_types
     --client-os OS        the IMAP ID os
     --cert-fingerprint HEX
                           SHA-256 fingerprint of a TLS client certificate's
                           public key (or of the certificate), with or
                           without colons; repeat for both
     --assume-vouch        act as if a device was proven from --ip just now
     --json                print one JSON decision record per request
${CONFIG}

EXIT STATUS
     0 every login allowed (a monitor-mode would_reject prints a warning),
     1 a login refused, 2 usage or rules error.

EXAMPLES
     cidlock test -c examples/cidlock.yaml --user alice@example.com \\
         --protocol imap --tls --cid "UUID 23bf83be-aad7-46aa-9e0f-39191ccf402f"
     cidlock test --user alice@example.com --protocol imap \\
         --clientid "UUID 8c3f2a1e-4b5d-4e6f-9a7b-1c2d3e4f5a6b"
     cidlock test --dovecot-json captured-request.json
     cidlock test --postfix captured-policy-requests.txt
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
     A running daemon picks the change up within a second.

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
  pending: `NAME
     cidlock pending - devices a locked account refused, waiting for an answer

SYNOPSIS
     cidlock pending list [USER] [--json] [-c FILE]
     cidlock pending approve USER ID [--label L] [-c FILE]
     cidlock pending reject USER ID [-c FILE]

DESCRIPTION
     When an account in enforce mode (or in learn mode past its
     learn.max_devices) refuses a device it does not know, cidlock remembers
     it as pending: the keyed hash of its CID (never the CID) or its
     certificate fingerprint, the client's name and version from its IMAP ID,
     the protocol, the address, when it was first and last seen and how many
     tries it made. With portal: and notice: in the rules, the account's own
     mailbox gets a notice with a link to approve it. Pending devices expire
     after pending.expire (7d) without a try; an account keeps at most
     pending.per_account (10) of them, the least recently seen making room.

     list     pending devices: user, ID, kind, type, state (pending, or
              rejected: answered "not me"), tries, first and last seen,
              protocol, address, client.
     approve  registers the device, as the holder's Approve button does
              (source admin); the next login from it is let in.
     reject   marks it "not me": it stays locked out and brings no more
              notices.

OPTIONS
     --label L            a name for the approved device (default: its client)
     --json               machine-readable output (list)
${CONFIG}

EXIT STATUS
     0 done; 1 no such pending device; 2 usage error or invalid rules;
     3 an ID matches several pending devices; 4 registry locked; 5 a state
     file cannot be read or written; 6 the registry is damaged.
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
     appended to state_dir/registry.journal and fsynced before the command
     reports it, under a lock shared with the daemon; the journal is folded
     into registry.json (temp file, fsync, rename) as it grows. No reported
     change is lost, even to a crash. A running daemon picks changes up
     within a second.

     list     users and their devices: user, ID (first 12 hex digits of
              the stored hash), kind, type, label, added, source (admin or
              learn).
     add      registers a device; adding one that exists is not an error.
     remove   removes the device with that ID (a unique prefix of at least
              6 hex digits is enough) or every device with that label.
     import   registers many devices under one lock, with one fsync.
              One per line:
                  USER TYPE TOKEN [LABEL...]
                  USER --cert FINGERPRINT [LABEL...]
              Blank lines and lines starting with # are ignored. Any bad line
              aborts the import with its line number; nothing is changed.

OPTIONS
     --label L            a name for the device ("Alice's laptop")
     --cert FILE.pem      a PEM client certificate (a key or chain may follow)
     --cert-fingerprint HEX
                          the SHA-256 public-key fingerprint, as Postfix's
                          ccert_pubkey_fingerprint (colons optional)
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
     cidlock config dovecot [--dovecot 2.3|2.4] [--nonce TEXT]
                            [--clientid [--login-plugin-dir DIR]] [-c FILE]
     cidlock config postfix [--format commands|main.cf|master.cf]
                            [--postfix-config DIR] [--queue-directory DIR] [-c FILE]

DESCRIPTION
     Both are filled in from the rules file, and refuse (status 2) when the
     listener they would point at is off.

     "dovecot" prints the dovecot.conf settings that send every login to
     cidlock before the password is checked: the policy URL from
     listen.dovecot, the API key header (dovecot.api_key, else the key kept
     in state_dir/dovecot.key, created on first use), the request attributes
     cidlock reads, and imap_id_retain = yes so the CID a client sends in
     the IMAP ID reaches cidlock. The output holds the key: install it
     readable by root only, as its first lines say:
         ... | install -m 600 -o root -g root /dev/stdin \
               /etc/dovecot/private/cidlock.conf
         echo '!include_try ../private/cidlock.conf' \
               > /etc/dovecot/conf.d/95-cidlock.conf
     Dovecot's config process runs as root and reads it. Not in conf.d
     itself: Dovecot programs run as another user (dovecot-lda delivering
     as the mail user, doveadm) read every conf.d/*.conf file and stop at
     one they cannot read; !include_try lets them skip it. The fail-open
     versus fail-closed choice (auth_policy_reject_on_fail) is printed
     commented out, with its trade-off.

     With --clientid it also loads cidlock's login plugin into imap-login
     (inside protocol imap { }, so POP3 and submission do not load it) and
     asks Dovecot for the plugin's forward fields (fwd_clientid,
     fwd_clientid_type): the CLIENTID command that Thunderbird sends. Build
     and install the plugin first: apt-get install dovecot-dev gcc make;
     make -C src/dovecot-clientid && make -C src/dovecot-clientid install.

     "postfix" prints, by default, a shell script of postconf commands to
     review and run as root. postconf -e sets one main.cf parameter,
     -M replaces one master.cf entry, -P sets one option of an entry, each
     in place: the script changes nothing it does not name, can be run
     again, "postconf -n" and "postconf -M" show its result, and it first
     keeps copies of main.cf and master.cf (*.before-cidlock) to undo it.
     It ends with "postfix check", which must print nothing.

     What it sets: cidlock_policy in main.cf (check_policy_service with
     default_action=DUNNO, fail-open; the fail-closed variant commented),
     used only by a submission service (port 587, TLS, client certificates,
     Dovecot SASL at private/auth) that it creates with postconf -M,
     REPLACING an existing submission entry and its -o options; skip that
     one line to keep yours and only add the options. Port 25 never
     depends on cidlock. cidlock's socketmap tables (client, sasl) are
     printed commented: a table has no default_action, so while cidlock is
     down every session of the service that uses one is answered 451 4.3.5;
     in main.cf (port 25) that would defer all inbound mail.

     Sockets inside Postfix's queue directory (the default:
     /var/spool/postfix/cidlock) are named relative to it
     (unix:cidlock/policy), as a chrooted smtpd sees them; a socket
     elsewhere makes the submission service unchrooted; a TCP listener is
     printed with a reminder that only its clients list and a firewall
     protect it.

OPTIONS
     --dovecot VERSION   2.3 (Debian 12) or 2.4 (Debian 13: block syntax,
                         renamed variables, fail_type). Default: the syntax
                         of the Dovecot installed here (dovecot --version,
                         said on stderr), else 2.3
     --nonce TEXT        auth_policy_hash_nonce; default: a fresh random value.
                         Use the same value on every Dovecot server of a cluster.
     --clientid          load the CLIENTID login plugin and read its fields
     --login-plugin-dir DIR
                         where the plugin is, when not Dovecot's default
                         login_plugin_dir (/usr/lib/dovecot/modules/login)
     --format FORMAT     commands (the default); main.cf or master.cf print
                         that file's part alone, for configuration managed
                         with tools (templates), where editing in place is
                         not how files change. Install both parts or neither.
     --postfix-config DIR
                         Postfix's configuration directory, when it is not
                         /etc/postfix: printed as postconf -c DIR.
     --queue-directory DIR
                         Postfix's queue_directory, when it is not
                         /var/spool/postfix ("postconf -h queue_directory").
${CONFIG}

EXIT STATUS
     0 success, 2 usage or rules error, or the listener is off.

EXAMPLES
     cidlock config dovecot -c /etc/cidlock/cidlock.yaml | install -m 600 -o root -g root /dev/stdin /etc/dovecot/private/cidlock.conf
     cidlock config postfix -c /etc/cidlock/cidlock.yaml > /root/cidlock-postfix.sh
     less /root/cidlock-postfix.sh && sh /root/cidlock-postfix.sh && postfix reload
`,
  store: `NAME
     cidlock store - move a registry between stores

SYNOPSIS
     cidlock store copy --from STORE --to STORE [--force]
                        [--password-file FILE] [--key-prefix PREFIX] [-c FILE]

DESCRIPTION
     A STORE is a state_dir (the file store: registry.json, its journal and
     the CID key) or a Redis URL: redis://HOST[:PORT][/DB] or
     sentinel://HOST[:PORT],HOST[:PORT]/MASTER[/DB]. A Redis store's
     password is read from --password-file, else from store.password_file in
     the rules when the rules name the same URL; it is never given on the
     command line. Keys start with --key-prefix, else the rules' key_prefix
     for that URL, else "cidlock:".

     copy     copies every user's devices and registry mode, and the CID key
              (every stored CID is a keyed hash: without the key no device
              would match). It holds both stores' locks meanwhile, so no
              cidlock writes to either; then it reads the copy back and
              compares it with the source entry by entry. A target that
              holds anything (a device, a mode, a key) is left alone unless
              --force, which replaces it, key included. The source is not
              changed. Moving to Redis: stop learn-mode writes (or every
              daemon), copy, set store.redis in the rules, restart.
${CONFIG}

EXIT STATUS
     0 copied; 1 the target holds a registry (nothing was changed); 2 usage
     error; 4 a store is locked by another cidlock; 5 a store cannot be read
     or written (Redis unreachable); 6 the source is damaged.

EXAMPLES
     cidlock store copy --from /var/lib/cidlock --to redis://10.0.0.5:6379/0
     cidlock store copy --from sentinel://10.0.0.5,10.0.0.6,10.0.0.7/cidlock --to /var/backups/cidlock
`,
};
