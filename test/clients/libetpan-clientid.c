/*
 * A minimal IMAP client on libetpan's CLIENTID support (draft-yu-imap-client-id), for cidlock's
 * end-to-end tests: connect, optionally STARTTLS, CLIENTID, LOGIN, LOGOUT. It prints one
 * machine-readable line per step on stdout:
 *
 *   capability-clientid-before-tls: 0|1   (modes with a plaintext phase)
 *   capability-clientid: 0|1              (where the CID is sent, after TLS if any)
 *   clientid: ok|failed <code> <server text>|not-sent
 *   login: ok|failed <code> <server text>
 *
 * usage: libetpan-clientid HOST PORT MODE USER PASS [TYPE TOKEN]
 *   MODE starttls      STARTTLS, then CLIENTID if advertised, then LOGIN (what a client does)
 *        imaps         implicit TLS, then CLIENTID if advertised, then LOGIN
 *        plain         no TLS; CLIENTID sent even though not advertised, then LOGIN
 *        clear-starttls CLIENTID sent in the clear before STARTTLS (not advertised there),
 *                      then STARTTLS and LOGIN without sending it again
 *   Without TYPE TOKEN no CLIENTID is sent.
 * Exit status 0 when the login succeeded, 1 when it was refused, 2 on usage or connection errors.
 * Server certificates are not checked: the tests own the server.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libetpan/libetpan.h>
#include <libetpan/clientid.h> /* not included by libetpan.h in 1.9.4 */

static const char *server_text(mailimap *imap) {
  return imap->imap_response != NULL ? imap->imap_response : "";
}

static int refresh_capability(mailimap *imap) {
  struct mailimap_capability_data *cap = NULL;
  int r = mailimap_capability(imap, &cap);
  if (r != MAILIMAP_NO_ERROR) return r;
  mailimap_capability_data_free(cap);
  return MAILIMAP_NO_ERROR;
}

int main(int argc, char **argv) {
  if (argc != 6 && argc != 8) {
    fprintf(stderr, "usage: %s HOST PORT starttls|imaps|plain|clear-starttls USER PASS [TYPE TOKEN]\n", argv[0]);
    return 2;
  }
  const char *host = argv[1];
  uint16_t port = (uint16_t)atoi(argv[2]);
  const char *mode = argv[3];
  const char *user = argv[4];
  const char *pass = argv[5];
  const char *cid_type = argc == 8 ? argv[6] : NULL;
  const char *cid_token = argc == 8 ? argv[7] : NULL;
  int imaps = strcmp(mode, "imaps") == 0;
  int starttls = strcmp(mode, "starttls") == 0;
  int plain = strcmp(mode, "plain") == 0;
  int clear_starttls = strcmp(mode, "clear-starttls") == 0;
  if (!imaps && !starttls && !plain && !clear_starttls) {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  mailimap *imap = mailimap_new(0, NULL);
  mailimap_set_timeout(imap, 30);
  int r = imaps ? mailimap_ssl_connect(imap, host, port) : mailimap_socket_connect(imap, host, port);
  if (r != MAILIMAP_NO_ERROR_NON_AUTHENTICATED && r != MAILIMAP_NO_ERROR) {
    printf("connect: failed %d\n", r);
    mailimap_free(imap);
    return 2;
  }
  if (!imaps) {
    if (refresh_capability(imap) != MAILIMAP_NO_ERROR) { printf("capability: failed\n"); return 2; }
    printf("capability-clientid-before-tls: %d\n", mailimap_has_clientid(imap));
  }
  int cid_sent = 0;
  if (clear_starttls && cid_type != NULL) {
    /* Deliberately where the server did not advertise it. */
    r = mailimap_clientid(imap, cid_type, cid_token);
    printf("clientid-before-tls: %s %d %s\n", r == MAILIMAP_NO_ERROR ? "ok" : "failed", r, server_text(imap));
    cid_sent = 1;
  }
  if (starttls || clear_starttls) {
    r = mailimap_socket_starttls(imap);
    if (r != MAILIMAP_NO_ERROR) { printf("starttls: failed %d %s\n", r, server_text(imap)); return 2; }
    printf("starttls: ok\n");
  }
  if (!plain) {
    /* Capabilities change with TLS (RFC 3501 6.2.1): ask again, as a client must. */
    if (refresh_capability(imap) != MAILIMAP_NO_ERROR) { printf("capability: failed\n"); return 2; }
  }
  printf("capability-clientid: %d\n", mailimap_has_clientid(imap));
  if (cid_type != NULL && !cid_sent) {
    if (plain || mailimap_has_clientid(imap)) {
      r = mailimap_clientid(imap, cid_type, cid_token);
      if (r == MAILIMAP_NO_ERROR) printf("clientid: ok %s\n", server_text(imap));
      else printf("clientid: failed %d %s\n", r, server_text(imap));
    } else {
      printf("clientid: not-sent\n");
    }
  } else if (cid_type == NULL) {
    printf("clientid: not-sent\n");
  }
  r = mailimap_login(imap, user, pass);
  int ok = r == MAILIMAP_NO_ERROR;
  if (ok) printf("login: ok %s\n", server_text(imap));
  else printf("login: failed %d %s\n", r, server_text(imap));
  if (ok) mailimap_logout(imap);
  mailimap_free(imap);
  return ok ? 0 : 1;
}
