/* libFuzzer target: iSCSI login negotiation (src/iscsi/login.c) driven the
 * way the server's handle_login() drives it, over several login requests of
 * one connection, against three targets: open, one-way CHAP, mutual CHAP.
 *
 * Input: a sequence of records  FLAGS VMIN LEN_HI LEN_LO TEXT[LEN]  where
 * FLAGS is the login request's flags byte (T, C, CSG, NSG), VMIN its
 * VersionMin.  A record with C set only accumulates text, as on the wire;
 * the first record starts the login.  Since a fuzzer cannot guess an MD5
 * answer to a random challenge, "CHAP_R=@" in the text is replaced by the
 * correct response to the pending challenge, so the mutual-CHAP and
 * operational stages behind it are reached too.
 *
 * A discovery session may authenticate with the discovery credentials or a
 * target's; bit 5 of the first record's FLAGS (reserved on the wire, and
 * cleared) makes discovery authentication required.
 *
 * Properties checked: no memory error; the response text fits the buffer
 * and parses back as key=value pairs; a refused request carries no text;
 * full feature phase only after authentication, by CHAP where it is
 * required. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/common.h"
#include "iscsi/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct target g_targets[3];
static struct chap_cred g_disc;
static bool g_disc_required;

/* The server's target table, reduced to what login.c asks of it (this file
 * replaces server.c, so the iSCSI library's server object is not linked). */
struct target *server_target_get(struct iscsi_server *srv, const char *name)
{
	(void)srv;
	for (size_t i = 0; i < 3; i++)
		if (!strcasecmp(g_targets[i].name, name))
			return &g_targets[i];
	return NULL;
}

void server_target_put(struct iscsi_server *srv, struct target *t)
{
	(void)srv;
	(void)t;
}

void server_discovery_auth(struct iscsi_server *srv, bool *required, bool *possible)
{
	(void)srv;
	*required = g_disc_required;
	*possible = true;
}

bool server_chap_match(struct iscsi_server *srv, const char *user, uint8_t id,
                       const uint8_t *chal, size_t chal_len, const uint8_t *resp, size_t resp_len,
                       struct chap_cred *out)
{
	(void)srv;
	const struct chap_cred *c[] = { &g_disc, &g_targets[1].cred, &g_targets[2].cred };
	for (size_t i = 0; i < 3; i++)
		if (!strcmp(c[i]->user, user) &&
		    chap_verify(id, c[i]->secret, chal, chal_len, resp, resp_len) == 1) {
			*out = *c[i];
			return true;
		}
	return false;
}

static void init_once(void)
{
	if (g_targets[0].name[0])
		return;
	log_set_level(LOG_ERROR);
	snprintf(g_targets[0].name, sizeof(g_targets[0].name), "iqn.2026-11.io.ferry:open");
	snprintf(g_targets[1].name, sizeof(g_targets[1].name), "iqn.2026-11.io.ferry:chap");
	struct chap_cred *c = &g_targets[1].cred;
	c->set = true;
	snprintf(c->user, sizeof(c->user), "user");
	snprintf(c->secret, sizeof(c->secret), "secretsecret12");
	g_targets[2] = g_targets[1];
	snprintf(g_targets[2].name, sizeof(g_targets[2].name), "iqn.2026-11.io.ferry:mutual");
	c = &g_targets[2].cred;
	c->mutual = true;
	snprintf(c->mut_user, sizeof(c->mut_user), "tgt");
	snprintf(c->mut_secret, sizeof(c->mut_secret), "mutualsecret34");
	g_disc.set = g_disc.mutual = true;
	snprintf(g_disc.user, sizeof(g_disc.user), "disc");
	snprintf(g_disc.secret, sizeof(g_disc.secret), "discoverysecret5");
	snprintf(g_disc.mut_user, sizeof(g_disc.mut_user), "tgt");
	snprintf(g_disc.mut_secret, sizeof(g_disc.mut_secret), "discoverymutual6");
}

/* Replaces the first "CHAP_R=@" of text by the right answer (for a
 * discovery session: with the discovery secret); returns a new malloc'd
 * text (or NULL when there is nothing to replace). */
static char *answer_chap(const struct login_state *ls, const struct target *t, bool discovery,
                         const char *text, size_t len, size_t *out_len)
{
	static const char pat[] = "CHAP_R=@";
	const char *p = memmem(text, len, pat, sizeof(pat) - 1);
	if (!p || (!t && !discovery) || ls->chap != CHAP_WAIT_R)
		return NULL;
	uint8_t md[16];
	const char *secret = t ? t->cred.secret : g_disc.secret;
	if (chap_md5(ls->chap_id, secret, ls->chap_c, sizeof(ls->chap_c), md) < 0)
		abort();
	char hex[2 * 16 + 3];
	iscsi_text_hex(md, 16, hex);
	size_t pre = (size_t)(p - text) + 7, hl = strlen(hex);
	char *n = malloc(len - 1 + hl);
	if (!n)
		abort();
	memcpy(n, text, pre);
	memcpy(n + pre, hex, hl);
	memcpy(n + pre + hl, p + 8, len - pre - 1);
	*out_len = len - 1 + hl;
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char buf[ISCSI_LOGIN_TEXT_MAX];
	init_once();

	struct login_state ls;
	struct iscsi_params params;
	bool discovery = false;
	struct target *tgt = NULL;
	char initiator[ISCSI_NAME_MAX + 1] = "";
	memset(&ls, 0, sizeof(ls));
	memset(&params, 0, sizeof(params));

	size_t off = 0;
	g_disc_required = size && (data[0] & 0x20);
	while (size - off >= 4) {
		uint8_t flags = data[off], vmin = data[off + 1];
		if (off == 0)
			flags &= (uint8_t)~0x20;
		size_t len = (size_t)data[off + 2] << 8 | data[off + 3];
		off += 4;
		if (len > size - off)
			len = size - off;
		/* handle_login(): the first PDU starts the login */
		ls.started = true;
		if (ls.text_len + len > ISCSI_LOGIN_TEXT_MAX)
			break;
		if (len) {
			char *n = realloc(ls.text, ls.text_len + len);
			if (!n)
				abort();
			ls.text = n;
			memcpy(ls.text + ls.text_len, data + off, len);
			ls.text_len += len;
		}
		off += len;
		if (flags & ISCSI_TEXT_CONTINUE)
			continue;

		struct iscsi_bhs_login_req req;
		memset(&req, 0, sizeof(req));
		req.opcode = ISCSI_OP_LOGIN_REQ;
		req.flags = flags;
		req.version_min = vmin;
		size_t tl = ls.text_len;
		char *answered =
			ls.text ? answer_chap(&ls, tgt, discovery, ls.text, ls.text_len, &tl) : NULL;
		struct login_ctx lc = {
			.srv = NULL, .ls = &ls, .params = &params, .discovery = &discovery,
			.tgt = &tgt, .initiator = initiator, .first = !ls.first_done,
		};
		struct login_result res;
		bool was_auth = ls.auth_done;
		login_process(&lc, &req, answered ? answered : ls.text ? ls.text : "", tl, buf,
		              sizeof(buf), &res);
		ls.first_done = true;
		free(answered);
		free(ls.text);
		ls.text = NULL;
		ls.text_len = 0;

		if (res.text_len > sizeof(buf))
			abort();
		if (res.status != ISCSI_LOGIN_OK && res.text_len)
			abort();
		if (res.text_len) {
			struct iscsi_kv kv[256];
			if (iscsi_text_parse(res.text, res.text_len, kv, 256) < 0)
				abort(); /* we must answer with well-formed text */
		}
		if (res.transit && res.nsg == ISCSI_STAGE_FULL && !ls.auth_done)
			abort();
		if (!was_auth && ls.auth_done && !discovery && tgt && tgt->cred.set &&
		    ls.chap != CHAP_DONE)
			abort(); /* a CHAP target authenticated without CHAP */
		if (!was_auth && ls.auth_done && discovery && g_disc_required && ls.chap != CHAP_DONE)
			abort(); /* required discovery authentication skipped */
		if (ls.auth_done && ls.chap == CHAP_DONE && !ls.auth.set)
			abort(); /* CHAP passed but the proved credentials were not kept */
		/* handle_login() closes the connection on any refusal */
		if (res.status != ISCSI_LOGIN_OK)
			break;
		if (res.transit && res.nsg == ISCSI_STAGE_FULL)
			break;
	}
	free(ls.text);
	return 0;
}
