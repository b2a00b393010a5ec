/* iSCSI login: security (None / CHAP MD5, one-way and mutual) and
 * operational negotiation (RFC 7143 sec. 6, 12, 13).  No I/O: the server
 * loop feeds complete requests and sends what this returns. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/evp.h>

#include "common/common.h"
#include "iscsi/internal.h"

#define MAX_KEYS 128

int chap_md5(uint8_t id, const char *secret, const uint8_t *chal, size_t chal_len,
             uint8_t out[16])
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	unsigned len = 0;
	int ok = m && EVP_DigestInit_ex(m, EVP_md5(), NULL) && EVP_DigestUpdate(m, &id, 1) &&
	         EVP_DigestUpdate(m, secret, strlen(secret)) &&
	         EVP_DigestUpdate(m, chal, chal_len) && EVP_DigestFinal_ex(m, out, &len) &&
	         len == 16;
	EVP_MD_CTX_free(m);
	if (!ok) {
		log_error("iscsi: MD5 via OpenSSL EVP failed");
		return -EIO;
	}
	return 0;
}

int chap_verify(uint8_t id, const char *secret, const uint8_t *chal, size_t chal_len,
                const uint8_t *resp, size_t resp_len)
{
	uint8_t want[16];
	if (chap_md5(id, secret, chal, chal_len, want) < 0)
		return -EIO;
	/* Compare in constant time so the response leaks nothing. */
	unsigned diff = resp_len == 16 ? 0 : 1;
	for (int i = 0; i < 16; i++)
		diff |= (unsigned)(want[i] ^ (resp_len == 16 ? resp[i] : 0));
	return diff == 0;
}

/* Accumulates the response; a full buffer turns into a target error. */
struct rsp {
	char *buf;
	size_t cap, len;
	bool overflow;
};

static void add(struct rsp *r, const char *k, const char *v)
{
	if (iscsi_text_add(r->buf, r->cap, &r->len, k, v) < 0)
		r->overflow = true;
}

static void add_u(struct rsp *r, const char *k, uint64_t v)
{
	char s[24];
	snprintf(s, sizeof(s), "%llu", (unsigned long long)v);
	add(r, k, s);
}

/* Picks the first entry of a comma list we support. */
static bool list_has(const char *list, const char *item)
{
	size_t il = strlen(item);
	for (const char *p = list; *p;) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l == il && strncmp(p, item, l) == 0)
			return true;
		if (!e)
			break;
		p = e + 1;
	}
	return false;
}

/* The first entry of an AuthMethod list that is "CHAP" (when chap) or
 * "None" (when none); NULL if there is none. */
static const char *first_method(const char *list, bool chap, bool none)
{
	for (const char *p = list; *p;) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (chap && l == 4 && strncmp(p, "CHAP", 4) == 0)
			return "CHAP";
		if (none && l == 4 && strncmp(p, "None", 4) == 0)
			return "None";
		if (!e)
			break;
		p = e + 1;
	}
	return NULL;
}

static const char *pick_digest(const char *list, bool *crc)
{
	for (const char *p = list; *p;) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l == 6 && strncmp(p, "CRC32C", 6) == 0) {
			*crc = true;
			return "CRC32C";
		}
		if (l == 4 && strncmp(p, "None", 4) == 0) {
			*crc = false;
			return "None";
		}
		if (!e)
			break;
		p = e + 1;
	}
	return NULL;
}

static bool parse_bool(const char *v, bool *out)
{
	if (strcmp(v, "Yes") == 0)
		*out = true;
	else if (strcmp(v, "No") == 0)
		*out = false;
	else
		return false;
	return true;
}

/* Numeric key negotiated to min(offer, ours) within [lo, hi]. */
static int num_min(const char *v, uint64_t lo, uint64_t hi, uint64_t ours, uint64_t *res)
{
	uint64_t n;
	if (iscsi_text_number(v, &n) < 0 || n < lo || n > hi)
		return -EINVAL;
	*res = MIN(n, ours);
	return 0;
}

static void chap_step(struct login_ctx *lc, const struct iscsi_kv *kv, int nkv, struct rsp *r,
                      uint16_t *status)
{
	struct login_state *ls = lc->ls;
	struct target *t = *lc->tgt;
	/* what the initiator authenticates to: its target, or discovery */
	const char *to = t ? t->name : "discovery";
	char v[ISCSI_VALUE_MAX + 1];
	const struct iscsi_kv *k_a = NULL, *k_n = NULL, *k_r = NULL, *k_i = NULL, *k_c = NULL;
	for (int i = 0; i < nkv; i++) {
		if (iscsi_kv_key_is(&kv[i], "CHAP_A"))
			k_a = &kv[i];
		else if (iscsi_kv_key_is(&kv[i], "CHAP_N"))
			k_n = &kv[i];
		else if (iscsi_kv_key_is(&kv[i], "CHAP_R"))
			k_r = &kv[i];
		else if (iscsi_kv_key_is(&kv[i], "CHAP_I"))
			k_i = &kv[i];
		else if (iscsi_kv_key_is(&kv[i], "CHAP_C"))
			k_c = &kv[i];
	}
	if (ls->chap == CHAP_WAIT_A) {
		if (!k_a)
			return; /* the initiator may still be settling AuthMethod */
		iscsi_kv_value(k_a, v, sizeof(v));
		if (!list_has(v, "5")) {
			log_warn("iscsi: initiator %s offers no CHAP_A we support (%s)",
			         lc->initiator, v);
			add(r, "CHAP_A", "Reject");
			*status = ISCSI_LOGIN_AUTH_FAILED;
			return;
		}
		uint8_t id;
		if (getrandom(&id, 1, 0) != 1 ||
		    getrandom(ls->chap_c, sizeof(ls->chap_c), 0) != (ssize_t)sizeof(ls->chap_c)) {
			log_error("iscsi: getrandom failed: %s", strerror(errno));
			*status = ISCSI_LOGIN_TARGET_ERR;
			return;
		}
		ls->chap_id = id;
		char hex[2 * sizeof(ls->chap_c) + 3];
		iscsi_text_hex(ls->chap_c, sizeof(ls->chap_c), hex);
		add(r, "CHAP_A", "5");
		add_u(r, "CHAP_I", id);
		add(r, "CHAP_C", hex);
		ls->chap = CHAP_WAIT_R;
		return;
	}
	if (ls->chap != CHAP_WAIT_R)
		return;
	if (!k_n || !k_r) {
		log_warn("iscsi: CHAP from %s without CHAP_N/CHAP_R", lc->initiator);
		*status = ISCSI_LOGIN_AUTH_FAILED;
		return;
	}
	uint8_t got[64];
	char user[ISCSI_VALUE_MAX + 1];
	iscsi_kv_value(k_n, user, sizeof(user));
	iscsi_kv_value(k_r, v, sizeof(v));
	int gl = iscsi_text_binary(v, got, sizeof(got));
	size_t glen = gl < 0 ? 0 : (size_t)gl;
	struct chap_cred *cred = &ls->auth;
	bool ok;
	if (t) {
		int m = strcmp(user, t->cred.user) == 0 ? 1 : 0;
		int e = chap_verify(ls->chap_id, t->cred.secret, ls->chap_c, sizeof(ls->chap_c), got,
		                    glen);
		if (e < 0) {
			*status = ISCSI_LOGIN_TARGET_ERR;
			return;
		}
		ok = m && e == 1;
		if (ok)
			*cred = t->cred;
	} else {
		/* discovery: the discovery credentials, or any target's */
		ok = server_chap_match(lc->srv, user, ls->chap_id, ls->chap_c, sizeof(ls->chap_c), got,
		                       glen, cred);
	}
	if (!ok) {
		memset(cred, 0, sizeof(*cred));
		log_warn("iscsi: CHAP authentication of %s to %s failed", lc->initiator, to);
		*status = ISCSI_LOGIN_AUTH_FAILED;
		return;
	}
	if (k_i || k_c) { /* the initiator asks us to authenticate (mutual) */
		uint8_t chal[1024];
		uint64_t mid;
		if (!k_i || !k_c || !cred->mutual) {
			log_warn("iscsi: %s asks for mutual CHAP that %s %s", lc->initiator, to,
			         cred->mutual ? "cannot parse" : "has no credentials for");
			*status = ISCSI_LOGIN_AUTH_FAILED;
			return;
		}
		iscsi_kv_value(k_i, v, sizeof(v));
		if (iscsi_text_number(v, &mid) < 0 || mid > 255) {
			*status = ISCSI_LOGIN_AUTH_FAILED;
			return;
		}
		iscsi_kv_value(k_c, v, sizeof(v));
		int cl = iscsi_text_binary(v, chal, sizeof(chal));
		/* A reflected challenge would let an attacker use us as an
		 * oracle for our own challenge (RFC 7143 12.1.3). */
		if (cl <= 0 || (cl == (int)sizeof(ls->chap_c) &&
		                memcmp(chal, ls->chap_c, sizeof(ls->chap_c)) == 0)) {
			log_warn("iscsi: %s sent a bad or reflected CHAP challenge", lc->initiator);
			*status = ISCSI_LOGIN_AUTH_FAILED;
			return;
		}
		uint8_t resp[16];
		char hex[2 * 16 + 3];
		if (chap_md5((uint8_t)mid, cred->mut_secret, chal, (size_t)cl, resp) < 0) {
			*status = ISCSI_LOGIN_TARGET_ERR;
			return;
		}
		iscsi_text_hex(resp, 16, hex);
		add(r, "CHAP_N", cred->mut_user);
		add(r, "CHAP_R", hex);
	}
	ls->chap = CHAP_DONE;
	ls->auth_done = true;
}

void login_process(struct login_ctx *lc, const struct iscsi_bhs_login_req *req,
                   const char *text, size_t text_len, char *buf, size_t cap,
                   struct login_result *res)
{
	struct login_state *ls = lc->ls;
	struct iscsi_params *pp = lc->params;
	struct rsp r = { .buf = buf, .cap = cap };
	struct iscsi_kv kv[MAX_KEYS];
	char v[ISCSI_VALUE_MAX + 1];
	uint16_t status = ISCSI_LOGIN_OK;
	uint8_t csg = ISCSI_LOGIN_CSG(req->flags), nsg = ISCSI_LOGIN_NSG(req->flags);
	bool transit = (req->flags & ISCSI_LOGIN_TRANSIT) != 0;

	memset(res, 0, sizeof(*res));
	res->csg = csg;
	int nkv = iscsi_text_parse(text, text_len, kv, MAX_KEYS);
	if (nkv < 0) {
		log_warn("iscsi: malformed login text (%s)", strerror(-nkv));
		res->status = ISCSI_LOGIN_INIT_ERR;
		return;
	}
	if (csg == 2 || (transit && (nsg == 2 || nsg <= csg))) {
		res->status = ISCSI_LOGIN_INIT_ERR;
		return;
	}
	if (lc->first) {
		if (req->version_min > 0) {
			res->status = ISCSI_LOGIN_UNSUPPORTED_VERSION;
			return;
		}
		const char *stype = "Normal";
		char tname[ISCSI_NAME_MAX + 1] = "";
		lc->initiator[0] = '\0';
		for (int i = 0; i < nkv; i++) {
			if (iscsi_kv_key_is(&kv[i], "InitiatorName")) {
				if (iscsi_kv_value(&kv[i], lc->initiator, ISCSI_NAME_MAX + 1) < 0) {
					res->status = ISCSI_LOGIN_INIT_ERR;
					return;
				}
			} else if (iscsi_kv_key_is(&kv[i], "TargetName")) {
				if (iscsi_kv_value(&kv[i], tname, sizeof(tname)) < 0) {
					res->status = ISCSI_LOGIN_NOT_FOUND;
					return;
				}
			} else if (iscsi_kv_key_is(&kv[i], "SessionType")) {
				if (kv[i].vlen == 9 && memcmp(kv[i].val, "Discovery", 9) == 0)
					stype = "Discovery";
				else if (!(kv[i].vlen == 6 && memcmp(kv[i].val, "Normal", 6) == 0)) {
					res->status = ISCSI_LOGIN_NO_SESSION_TYPE;
					return;
				}
			}
		}
		if (!lc->initiator[0]) {
			log_warn("iscsi: login without InitiatorName");
			res->status = ISCSI_LOGIN_MISSING_PARAM;
			return;
		}
		*lc->discovery = strcmp(stype, "Discovery") == 0;
		if (!*lc->discovery) {
			if (!tname[0]) {
				res->status = ISCSI_LOGIN_MISSING_PARAM;
				return;
			}
			*lc->tgt = server_target_get(lc->srv, tname);
			if (!*lc->tgt) {
				log_warn("iscsi: %s asks for unknown target %s", lc->initiator, tname);
				res->status = ISCSI_LOGIN_NOT_FOUND;
				return;
			}
		}
		ls->stage = csg;
		if (!*lc->discovery)
			add(&r, "TargetPortalGroupTag", "1");
	}
	if (csg != ls->stage) {
		res->status = ISCSI_LOGIN_INIT_ERR;
		return;
	}
	/* need_chap: None is not acceptable; may_chap: there are credentials
	 * to check a CHAP login against.  A discovery session may use CHAP
	 * (to see CHAP targets) even when it need not. */
	bool need_chap, may_chap;
	if (*lc->discovery) {
		server_discovery_auth(lc->srv, &need_chap, &may_chap);
	} else {
		need_chap = (*lc->tgt)->cred.set;
		may_chap = need_chap;
	}
	for (int i = 0; i < nkv; i++) {
		const struct iscsi_kv *k = &kv[i];
		if (iscsi_kv_value(k, v, sizeof(v)) < 0) {
			status = ISCSI_LOGIN_INIT_ERR;
			break;
		}
		char key[ISCSI_KEY_MAX + 1];
		memcpy(key, k->key, k->klen);
		key[k->klen] = '\0';
		uint64_t n;
		bool b;
		if (!strcmp(key, "InitiatorName") || !strcmp(key, "TargetName") ||
		    !strcmp(key, "SessionType") || !strcmp(key, "InitiatorAlias") ||
		    !strncmp(key, "CHAP_", 5)) {
			continue; /* declarative or handled elsewhere */
		} else if (!strcmp(key, "AuthMethod")) {
			if (csg != ISCSI_STAGE_SECURITY) {
				status = ISCSI_LOGIN_INIT_ERR;
				break;
			}
			/* the first method of the initiator's list that we take
			 * (RFC 7143 6.2); none: Reject, so that it fails with a
			 * clear reason */
			const char *pick = first_method(v, may_chap, !need_chap);
			if (pick && !strcmp(pick, "CHAP")) {
				add(&r, key, "CHAP");
				ls->auth_chap = true;
				ls->chap = CHAP_WAIT_A;
			} else if (pick) {
				add(&r, key, "None");
				ls->auth_done = true;
			} else {
				add(&r, key, "Reject");
				status = ISCSI_LOGIN_AUTH_FAILED;
			}
		} else if (!strcmp(key, "HeaderDigest") || !strcmp(key, "DataDigest")) {
			bool crc = false;
			const char *p = pick_digest(v, &crc);
			add(&r, key, p ? p : "Reject");
			if (p && key[0] == 'H')
				ls->dg_next.header = crc;
			else if (p)
				ls->dg_next.data = crc;
		} else if (!strcmp(key, "MaxConnections")) {
			if (num_min(v, 1, 65535, 1, &n) < 0)
				add(&r, key, "Reject");
			else
				add_u(&r, key, n);
		} else if (!strcmp(key, "InitialR2T")) {
			if (!parse_bool(v, &b)) {
				add(&r, key, "Reject");
				continue;
			}
			pp->initial_r2t = b; /* OR with our No */
			add(&r, key, b ? "Yes" : "No");
		} else if (!strcmp(key, "ImmediateData")) {
			if (!parse_bool(v, &b)) {
				add(&r, key, "Reject");
				continue;
			}
			pp->immediate_data = b; /* AND with our Yes */
			add(&r, key, b ? "Yes" : "No");
		} else if (!strcmp(key, "MaxRecvDataSegmentLength")) {
			if (iscsi_text_number(v, &n) < 0 || n < 512 || n > ISCSI_DLEN_MAX) {
				add(&r, key, "Reject");
				continue;
			}
			pp->max_xmit_dsl = (uint32_t)n; /* declarative: no answer */
		} else if (!strcmp(key, "MaxBurstLength")) {
			if (num_min(v, 512, ISCSI_DLEN_MAX, ISCSI_OUR_MAX_BURST, &n) < 0) {
				add(&r, key, "Reject");
				continue;
			}
			pp->max_burst = (uint32_t)n;
			add_u(&r, key, n);
		} else if (!strcmp(key, "FirstBurstLength")) {
			if (num_min(v, 512, ISCSI_DLEN_MAX, ISCSI_OUR_MAX_BURST, &n) < 0) {
				add(&r, key, "Reject");
				continue;
			}
			pp->first_burst = (uint32_t)n;
			add_u(&r, key, n);
		} else if (!strcmp(key, "MaxOutstandingR2T")) {
			if (num_min(v, 1, 65535, ISCSI_OUR_MAX_R2T, &n) < 0) {
				add(&r, key, "Reject");
				continue;
			}
			pp->max_r2t = (uint32_t)n;
			add_u(&r, key, n);
		} else if (!strcmp(key, "DefaultTime2Wait")) {
			if (iscsi_text_number(v, &n) < 0 || n > 3600)
				add(&r, key, "Reject");
			else
				add_u(&r, key, MAX(n, 2));
		} else if (!strcmp(key, "DefaultTime2Retain")) {
			if (iscsi_text_number(v, &n) < 0 || n > 3600)
				add(&r, key, "Reject");
			else
				add_u(&r, key, 0); /* ERL 0: nothing to retain */
		} else if (!strcmp(key, "ErrorRecoveryLevel")) {
			if (iscsi_text_number(v, &n) < 0 || n > 2)
				add(&r, key, "Reject");
			else
				add(&r, key, "0");
		} else if (!strcmp(key, "DataPDUInOrder") || !strcmp(key, "DataSequenceInOrder")) {
			if (!parse_bool(v, &b))
				add(&r, key, "Reject");
			else
				add(&r, key, "Yes"); /* OR: we require in-order data */
		} else if (!strcmp(key, "IFMarker") || !strcmp(key, "OFMarker")) {
			add(&r, key, "No");
		} else if (!strcmp(key, "IFMarkInt") || !strcmp(key, "OFMarkInt")) {
			add(&r, key, "Irrelevant");
		} else if (!strcmp(key, "TargetAlias") || !strcmp(key, "TargetAddress") ||
		           !strcmp(key, "TargetPortalGroupTag")) {
			/* target-declared keys sent by an initiator */
			status = ISCSI_LOGIN_INIT_ERR;
			break;
		} else if (!strcmp(key, "SendTargets")) {
			status = ISCSI_LOGIN_INIT_ERR;
			break;
		} else {
			add(&r, key, "NotUnderstood");
		}
	}
	if (status == ISCSI_LOGIN_OK && ls->auth_chap && csg == ISCSI_STAGE_SECURITY)
		chap_step(lc, kv, nkv, &r, &status);
	if (status == ISCSI_LOGIN_OK && csg == ISCSI_STAGE_OPERATIONAL && !ls->auth_done) {
		if (need_chap) {
			log_warn("iscsi: %s skipped CHAP required by %s", lc->initiator,
			         *lc->tgt ? (*lc->tgt)->name : "discovery");
			status = ISCSI_LOGIN_AUTH_FAILED;
		} else {
			ls->auth_done = true; /* no security stage needed */
		}
	}
	/* CHAP still running: stay in the security stage. */
	if (status == ISCSI_LOGIN_OK && transit && csg == ISCSI_STAGE_SECURITY && !ls->auth_done)
		transit = false;
	if (status == ISCSI_LOGIN_OK && transit &&
	    (csg == ISCSI_STAGE_OPERATIONAL || nsg == ISCSI_STAGE_FULL)) {
		/* Declarations the target makes before full feature phase. */
		add_u(&r, "MaxRecvDataSegmentLength", ISCSI_OUR_MRDSL);
		if (!*lc->discovery)
			add(&r, "TargetAlias", "ferry");
	}
	if (r.overflow && status == ISCSI_LOGIN_OK)
		status = ISCSI_LOGIN_OUT_OF_RESOURCES;
	res->status = status;
	res->transit = status == ISCSI_LOGIN_OK && transit;
	res->nsg = res->transit ? nsg : 0;
	res->text = buf;
	res->text_len = status == ISCSI_LOGIN_OK ? r.len : 0;
	if (res->transit)
		ls->stage = nsg;
}
