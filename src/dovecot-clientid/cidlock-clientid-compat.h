#ifndef CIDLOCK_CLIENTID_COMPAT_H
#define CIDLOCK_CLIENTID_COMPAT_H

/* Everything that differs between Dovecot releases lives here, so a port
   touches this file and little else. README.md lists what 2.4 changes. */

#if DOVECOT_PREREQ(2, 4, 0)
#  error "cidlock_clientid supports Dovecot 2.3 only for now; see README.md, Dovecot 2.4"
#else

/* 2.3: v.create takes the protocol's settings and returns nothing. */
#define CLIENTID_CREATE_PARAMS struct client *client, void **other_sets
#define CLIENTID_CREATE_SUPER(ctx, client) \
	(ctx)->module_ctx.super.create(client, other_sets)

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
