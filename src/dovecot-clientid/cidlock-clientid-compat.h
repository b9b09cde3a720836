#ifndef CIDLOCK_CLIENTID_COMPAT_H
#define CIDLOCK_CLIENTID_COMPAT_H

/* Everything that differs between Dovecot releases lives here, so a port
   touches this file and little else. README.md lists what 2.4 changes. */

#if DOVECOT_PREREQ(2, 4, 0)

#include "settings.h"

/* 2.4: v.create takes only the client and can fail. */
#define CLIENTID_CREATE_RET int
#define CLIENTID_CREATE_PARAMS struct client *client
#define CLIENTID_CREATE_SUPER(ctx, client) \
	STMT_START { \
		if ((ctx)->module_ctx.super.create(client) < 0) \
			return -1; \
	} STMT_END
#define CLIENTID_CREATE_DONE return 0

/* 2.4 sets connection_tls_secured for implicit TLS before v.create and for
   STARTTLS before v.starttls returns; TLS that HAProxy terminated is not
   TLS to us. */
static inline bool clientid_client_is_tls(const struct client *client)
{
	return client->connection_tls_secured &&
		!client->haproxy_terminated_tls;
}

/* 2.4's settings are reference-counted and freed by imap-login, so they
   cannot be swapped for a copy. imap-login itself adds and removes
   capabilities with overrides on the client's own settings instance
   (imap_capability is a boolean list); the plugin does the same and asks
   for the settings again. */
static inline void
clientid_advertise(struct imap_client *imap_client)
{
	struct client *client = &imap_client->common;
	const struct imap_login_settings *set;
	const char *error;

	if (imap_client->set_instance == NULL) {
		/* settings shared with others: leave them alone */
		return;
	}
	settings_override(imap_client->set_instance, "imap_capability/CLIENTID",
			  "yes", SETTINGS_OVERRIDE_TYPE_CODE);
	if (settings_get(client->event, &imap_login_setting_parser_info, 0,
			 &set, &error) < 0) {
		e_error(client->event, "cidlock_clientid: %s", error);
		return;
	}
	settings_free(imap_client->set);
	imap_client->set = set;
}

#else

/* 2.3: v.create takes the protocol's settings and returns nothing. */
#define CLIENTID_CREATE_RET void
#define CLIENTID_CREATE_PARAMS struct client *client, void **other_sets
#define CLIENTID_CREATE_SUPER(ctx, client) \
	(ctx)->module_ctx.super.create(client, other_sets)
#define CLIENTID_CREATE_DONE return

/* 2.3 sets client->tls for implicit TLS before v.create and for STARTTLS
   before v.starttls; a proxy's TLS (HAProxy) is not TLS to us. */
static inline bool clientid_client_is_tls(const struct client *client)
{
	return client->tls;
}

/* 2.3 builds the capability list from imap_capability: "" means Dovecot's
   default list, "+EXTRA" the default list plus EXTRA, anything else is the
   whole list. Appending " CLIENTID" keeps each form's meaning. */
static inline const char *
clientid_capability_with(pool_t pool, const char *configured)
{
	if (configured[0] == '\0' ||
	    (configured[0] == '+' && configured[1] == '\0'))
		return "+CLIENTID";
	return p_strconcat(pool, configured, " CLIENTID", NULL);
}

/* The settings are shared by every client of the process and owned by the
   settings parser, so the client gets its own copy (in its pool, freed with
   it) that differs only in imap_capability. */
static inline void
clientid_advertise(struct imap_client *imap_client)
{
	pool_t pool = imap_client->common.pool;
	struct imap_login_settings *set;

	set = p_new(pool, struct imap_login_settings, 1);
	*set = *imap_client->set;
	set->imap_capability =
		clientid_capability_with(pool, imap_client->set->imap_capability);
	imap_client->set = set;
}

#endif
#endif
