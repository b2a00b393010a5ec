/* iscsi/internal.h: state shared by the server loop (server.c) and the
 * login / negotiation code (login.c).  Private to src/iscsi. */
#ifndef FERRY_ISCSI_INTERNAL_H
#define FERRY_ISCSI_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "iscsi/iscsi.h"
#include "iscsi/pdu.h"

/* What the target offers; the negotiated values are the min of these and
 * the initiator's. */
#define ISCSI_OUR_MRDSL (256u * 1024)      /* what we accept per PDU */
#define ISCSI_OUR_MAX_BURST (16u * 1024 * 1024 - 1024)
#define ISCSI_OUR_FIRST_BURST (256u * 1024)
#define ISCSI_OUR_MAX_R2T 16u
#define ISCSI_QUEUE_DEPTH 128u             /* CmdSN window per session */
#define ISCSI_MAX_XFER (32u * 1024 * 1024) /* largest EDTL we buffer */
#define ISCSI_LOGIN_TEXT_MAX (64u * 1024)
#define ISCSI_LOGIN_DLEN_MAX (64u * 1024)  /* RFC says 8192; we are lenient */
#define ISCSI_TEXT_RSP_MAX (64u * 1024)

struct lun_ent {
	uint64_t lun;
	struct scsi_lu *lu;
	unsigned inflight;       /* tasks holding it, under srv->lock */
	bool removed;
	struct lun_ent *next;
};

/* CHAP credentials of a target, or of discovery sessions. */
struct chap_cred {
	bool set;                /* initiators must authenticate */
	bool mutual;             /* ... and we answer back with mut_* */
	char user[ISCSI_CHAP_SECRET_MAX + 1], secret[ISCSI_CHAP_SECRET_MAX + 1];
	char mut_user[ISCSI_CHAP_SECRET_MAX + 1], mut_secret[ISCSI_CHAP_SECRET_MAX + 1];
};

struct target {
	char name[ISCSI_NAME_MAX + 1];
	struct chap_cred cred;   /* fixed once added */
	struct lun_ent *luns;
	unsigned refs;           /* sessions holding it, under srv->lock */
	bool removed;
	struct target *next;
};

/* Negotiated operational parameters of one connection/session. */
struct iscsi_params {
	uint32_t max_xmit_dsl;   /* initiator's MaxRecvDataSegmentLength */
	uint32_t max_burst;
	uint32_t first_burst;
	uint32_t max_r2t;
	bool initial_r2t;
	bool immediate_data;
	struct iscsi_digests dg;
};

enum chap_state { CHAP_NONE, CHAP_WAIT_A, CHAP_WAIT_R, CHAP_DONE };

/* Login state machine of one connection. */
struct login_state {
	bool started;            /* the first login PDU arrived */
	bool first_done;         /* the first complete request was processed */
	uint8_t isid[6];
	uint16_t tsih;
	uint32_t itt;
	uint8_t stage;           /* current stage */
	bool auth_done;          /* security stage passed */
	bool auth_chap;          /* AuthMethod=CHAP chosen */
	enum chap_state chap;
	uint8_t chap_id;
	uint8_t chap_c[16];
	char *text;              /* accumulated request text (C bit) */
	size_t text_len;
	/* the credentials the initiator proved with CHAP (set: it did); a
	 * discovery session's SendTargets lists the CHAP targets with the
	 * same user and secret */
	struct chap_cred auth;
	/* pending digests: take effect after the final login response */
	struct iscsi_digests dg_next;
};

struct iscsi_server;
struct conn;

/* Outcome of one complete login request, computed by login.c. */
struct login_result {
	uint16_t status;         /* ISCSI_LOGIN_* */
	bool transit;
	uint8_t csg, nsg;
	char *text;              /* response keys; owned by the caller's buffer */
	size_t text_len;
};

/* The pieces of the connection login.c reads and fills. */
struct login_ctx {
	struct iscsi_server *srv;
	struct login_state *ls;
	struct iscsi_params *params;
	bool *discovery;
	struct target **tgt;     /* set when a normal session names a target */
	char *initiator;         /* ISCSI_NAME_MAX + 1 */
	bool first;              /* first request of this login */
};

/* Processes one login request (header + complete text).  Fills res->text
 * (up to cap bytes in buf).  Never does I/O. */
void login_process(struct login_ctx *lc, const struct iscsi_bhs_login_req *req,
                   const char *text, size_t text_len, char *buf, size_t cap,
                   struct login_result *res);

/* Looks a target up by name and takes a reference (srv->lock taken inside). */
struct target *server_target_get(struct iscsi_server *srv, const char *name);
void server_target_put(struct iscsi_server *srv, struct target *t);
/* Appends SendTargets answers (all targets, or just `only`) to buf.
 * addr is "ip:port" of the portal the initiator reached.  With auth
 * (a discovery session), a target that requires CHAP is listed only when
 * auth holds the same user and secret. */
int server_send_targets(struct iscsi_server *srv, const char *only, const char *addr,
                        const struct chap_cred *auth, char *buf, size_t cap, size_t *len);
/* Discovery: whether CHAP is required (discovery credentials are set) and
 * whether any credentials exist to check a CHAP login against. */
void server_discovery_auth(struct iscsi_server *srv, bool *required, bool *possible);
/* Discovery: finds the credentials (the discovery ones, then every
 * target's) with this user whose secret gives resp for challenge chal
 * with id; copies them to out.  True when found. */
bool server_chap_match(struct iscsi_server *srv, const char *user, uint8_t id,
                       const uint8_t *chal, size_t chal_len, const uint8_t *resp, size_t resp_len,
                       struct chap_cred *out);
/* Compares a CHAP response with MD5(id || secret || chal) in constant
 * time.  1 equal, 0 not, -EIO. */
int chap_verify(uint8_t id, const char *secret, const uint8_t *chal, size_t chal_len,
                const uint8_t *resp, size_t resp_len);

/* CHAP MD5 response: MD5(id || secret || challenge).  0 or -EIO. */
int chap_md5(uint8_t id, const char *secret, const uint8_t *chal, size_t chal_len,
             uint8_t out[16]);

#endif
