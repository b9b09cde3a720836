/* Copyright (c) cidlock authors, MIT licence (see the repository's package.json) */

/* imap-login plugin: the CLIENTID command of draft-yu-imap-client-id.

   A mail client sends "CLIENTID <type> <token>" over TLS before it
   authenticates. The pair is handed to the auth process as the forward
   fields "clientid_type" and "clientid", which auth_policy_request_attributes
   sends to cidlock as %{passdb:forward_clientid_type} and
   %{passdb:forward_clientid}. Whether the device may log in is decided
   there, at authentication, so that a refused device gets exactly the reply
   a wrong password gets: this command never refuses a well-formed CID.

   The token identifies a device: it is never logged and never put into the
   process title. */

#include "login-common.h"
#include "module-context.h"
#include "imap-arg.h"
#include "imap-resp-code.h"
#include "imap-login-client.h"
#include "imap-login-commands.h"
#include "imap-login-settings.h"
#include "cidlock-clientid-compat.h"

/* The draft's bounds (REFERENCE.md section 1). */
#define CLIENTID_TYPE_MAX_LEN 16
#define CLIENTID_TOKEN_MAX_LEN 128

#define CLIENTID_CONTEXT(obj) \
	MODULE_CONTEXT(obj, cidlock_clientid_login_module)

struct cidlock_clientid_client {
	union login_client_module_context module_ctx;
	/* A CLIENTID was accepted: the draft allows one per connection, and
	   the value that reaches authentication must not change under it. */
	bool accepted:1;
};

const char *cidlock_clientid_plugin_version = DOVECOT_ABI_VERSION;
/* An array, not a pointer: module-dir.c reads the symbol's bytes as the
   binary name (a pointer makes imap-login die with a garbage name). */
const char cidlock_clientid_plugin_binary_dependency[] = "imap-login";

void cidlock_clientid_plugin_init(struct module *module);
void cidlock_clientid_plugin_deinit(void);

static MODULE_CONTEXT_DEFINE_INIT(cidlock_clientid_login_module,
				  &login_module_register);
static bool cidlock_clientid_registered = FALSE;

static bool clientid_type_valid(const char *str, size_t len)
{
	size_t i;

	if (len == 0 || len > CLIENTID_TYPE_MAX_LEN)
		return FALSE;
	for (i = 0; i < len; i++) {
		/* ASCII only, whatever the locale */
		if (!((str[i] >= 'A' && str[i] <= 'Z') ||
		      (str[i] >= 'a' && str[i] <= 'z') ||
		      (str[i] >= '0' && str[i] <= '9') || str[i] == '-'))
			return FALSE;
	}
	return TRUE;
}

static bool clientid_token_valid(const char *str, size_t len)
{
	size_t i;

	if (len == 0 || len > CLIENTID_TOKEN_MAX_LEN)
		return FALSE;
	for (i = 0; i < len; i++) {
		if ((unsigned char)str[i] < 0x21 || (unsigned char)str[i] > 0x7e)
			return FALSE;
	}
	return TRUE;
}

/* An astring (atom, quoted string or literal, as IMAP clients send
   arguments; libetpan quotes a token with '"' or '\' in it) whose bytes are
   all there: a literal may hold a NUL that would cut the C string short. */
static bool
clientid_arg_get(const struct imap_arg *arg, const char **str_r, size_t *len_r)
{
	if (!imap_arg_get_astring(arg, str_r))
		return FALSE;
	*len_r = strlen(*str_r);
	return *len_r == arg->str_len;
}

static int cmd_clientid(struct imap_client *imap_client,
			const struct imap_arg *args)
{
	struct client *client = &imap_client->common;
	struct cidlock_clientid_client *ctx = CLIENTID_CONTEXT(client);
	const char *type, *token;
	size_t type_len, token_len;

	if (ctx == NULL) {
		/* not our client (cannot happen): answer as for an unknown
		   command */
		return -2;
	}
	if (!clientid_client_is_tls(client)) {
		/* Not advertised here. A client that sends it anyway has
		   already exposed the token; refusing it keeps a CID sent in
		   the clear from ever counting. RFC 5530's code tells the
		   client that STARTTLS would help. */
		client_send_reply_code(client, IMAP_CMD_REPLY_NO,
				       IMAP_RESP_CODE_PRIVACYREQUIRED,
				       "CLIENTID is accepted only over TLS.");
		return 1;
	}
	if (ctx->accepted) {
		/* Once per connection, like STARTTLS ("TLS is already
		   active" is BAD too); the first value stays. */
		client_send_reply(client, IMAP_CMD_REPLY_BAD,
				  "CLIENTID was already sent.");
		return 1;
	}
	/* Short-circuit order matters: args ends at the first EOL. */
	if (!clientid_arg_get(&args[0], &type, &type_len) ||
	    !clientid_arg_get(&args[1], &token, &token_len) ||
	    !IMAP_ARG_IS_EOL(&args[2]) ||
	    !clientid_type_valid(type, type_len) ||
	    !clientid_token_valid(token, token_len)) {
		/* A syntax error: imap-login's own BAD reply, counted
		   towards its limit of invalid commands. */
		return -1;
	}
	/* Both strings are bounded above; client_add_forward_field copies
	   them once into the client's pre-proxy pool. */
	client_add_forward_field(client, "clientid_type", type);
	client_add_forward_field(client, "clientid", token);
	ctx->accepted = TRUE;
	client_send_reply(client, IMAP_CMD_REPLY_OK, "CLIENTID completed.");
	return 1;
}

static const struct imap_login_command cidlock_clientid_commands[] = {
	{ "CLIENTID", cmd_clientid },
};

static CLIENTID_CREATE_RET
cidlock_clientid_client_create(CLIENTID_CREATE_PARAMS)
{
	struct cidlock_clientid_client *ctx = CLIENTID_CONTEXT(client);

	CLIENTID_CREATE_SUPER(ctx, client);
	/* implicit TLS: the greeting, sent after this, lists CLIENTID */
	if (clientid_client_is_tls(client))
		clientid_advertise((struct imap_client *)client);
	CLIENTID_CREATE_DONE;
}

static void cidlock_clientid_client_starttls(struct client *client)
{
	struct cidlock_clientid_client *ctx = CLIENTID_CONTEXT(client);

	ctx->module_ctx.super.starttls(client);
	/* The client must ask for CAPABILITY again after STARTTLS; the
	   new list has CLIENTID. */
	if (clientid_client_is_tls(client) && !client->destroyed)
		clientid_advertise((struct imap_client *)client);
}

static void cidlock_clientid_client_allocated(struct client *client)
{
	struct cidlock_clientid_client *ctx;
	struct client_vfuncs *v = client->vlast;

	if (!cidlock_clientid_registered) {
		/* Not in plugin_init: imap-login loads plugins before it
		   creates its command table, which would drop or crash on a
		   command registered that early. The first client comes after
		   it exists. */
		imap_login_commands_register(cidlock_clientid_commands,
			N_ELEMENTS(cidlock_clientid_commands));
		cidlock_clientid_registered = TRUE;
	}

	ctx = p_new(client->pool, struct cidlock_clientid_client, 1);
	ctx->module_ctx.super = *v;
	client->vlast = &ctx->module_ctx.super;
	v->create = cidlock_clientid_client_create;
	v->starttls = cidlock_clientid_client_starttls;
	MODULE_CONTEXT_SET(client, cidlock_clientid_login_module, ctx);
}

static const struct login_client_hooks cidlock_clientid_login_hooks = {
	.client_allocated = cidlock_clientid_client_allocated,
};

void cidlock_clientid_plugin_init(struct module *module)
{
	login_client_hooks_add(module, &cidlock_clientid_login_hooks);
}

void cidlock_clientid_plugin_deinit(void)
{
	/* No unregistering: imap-login has freed its command table by the
	   time plugins are deinitialised. */
	login_client_hooks_remove(&cidlock_clientid_login_hooks);
}
