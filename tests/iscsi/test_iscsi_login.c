/* Protocol tests of the iSCSI target through a real TCP socket: a small
 * hand-written initiator drives login (discovery, CHAP one-way and mutual,
 * reflected challenges, unknown targets), operational negotiation,
 * digests, R2T sequences, Data-In, the CmdSN window, NOP, task management,
 * Reject and hostile input.  The SCSI layer is the RAM-disk fake. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/common.h"
#include "fake_scsi.h"
#include "iscsi/iscsi.h"
#include "iscsi/pdu.h"

#define T_OPEN "iqn.2026-11.io.ferry:open"
#define T_CHAP "iqn.2026-11.io.ferry:chap"
#define T_MUT "iqn.2026-11.io.ferry:mutual"
#define T_SLOW "iqn.2026-11.io.ferry:slow"
#define INI "iqn.2026-11.io.ferry.test:ini"

static struct iscsi_server *srv;
static struct scsi_lu *lu_open, *lu_chap, *lu_mut, *lu_slow;
static int port;

struct ini {
	int fd;
	struct iscsi_digests dg;
	uint32_t cmdsn, statsn, itt;
	uint32_t max_cmd_sn, exp_cmd_sn;
	uint8_t isid_hi, isid_lo; /* the last two ISID bytes */
	uint8_t rx[1 << 20];
	size_t rx_len;
};

struct pdu {
	uint8_t bhs[ISCSI_BHS_LEN];
	uint8_t *data;
	uint32_t dlen;
};

static int conn_open(struct ini *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	static uint8_t next_isid;
	c->itt = 0x100;
	c->cmdsn = 1;
	c->isid_hi = 0x02;
	c->isid_lo = ++next_isid; /* distinct sessions, no reinstatement */
	return connect(c->fd, (struct sockaddr *)&a, sizeof(a));
}

static void conn_close_(struct ini *c)
{
	close(c->fd);
}

static void send_raw(struct ini *c, uint8_t *bhs, const void *data, uint32_t dlen)
{
	static uint8_t out[(1 << 20) + 128];
	long n = iscsi_pdu_build(out, sizeof(out), bhs, data, dlen, &c->dg);
	assert_true(n > 0);
	assert_int_equal(write_full(c->fd, out, (size_t)n), 0);
}

/* Receives one PDU (5 s deadline).  Returns 0, or -EPIPE on EOF. */
static int recv_pdu(struct ini *c, struct pdu *p)
{
	for (;;) {
		struct iscsi_pdu_view v;
		long n = iscsi_pdu_parse(c->rx, c->rx_len, &c->dg, 1 << 20, &v);
		assert_true(n >= 0);
		if (n > 0) {
			memcpy(p->bhs, v.bhs, ISCSI_BHS_LEN);
			p->dlen = v.dlen;
			p->data = malloc(v.dlen + 1);
			memcpy(p->data, v.data ? v.data : (const uint8_t *)"", v.dlen);
			p->data[v.dlen] = 0;
			memmove(c->rx, c->rx + n, c->rx_len - (size_t)n);
			c->rx_len -= (size_t)n;
			if ((p->bhs[0] & 0x3f) != ISCSI_OP_DATA_IN && (p->bhs[0] & 0x3f) != ISCSI_OP_R2T) {
				c->statsn = be32_get(p->bhs + 24) + 1;
			}
			c->exp_cmd_sn = be32_get(p->bhs + 28);
			c->max_cmd_sn = be32_get(p->bhs + 32);
			return 0;
		}
		struct pollfd pf = { .fd = c->fd, .events = POLLIN };
		int pr = poll(&pf, 1, 5000);
		assert_true(pr > 0); /* a missing answer is a failure, not a hang */
		ssize_t r = read(c->fd, c->rx + c->rx_len, sizeof(c->rx) - c->rx_len);
		if (r <= 0)
			return -EPIPE;
		c->rx_len += (size_t)r;
	}
}

/* True when nothing arrives within ms milliseconds. */
static bool quiet(struct ini *c, int ms)
{
	struct pollfd pf = { .fd = c->fd, .events = POLLIN };
	return c->rx_len == 0 && poll(&pf, 1, ms) == 0;
}

static bool closed_by_peer(struct ini *c)
{
	struct pdu p;
	for (int i = 0; i < 8; i++) {
		if (recv_pdu(c, &p) < 0)
			return true;
		free(p.data);
	}
	return false;
}

static const char *kv_get(const struct pdu *p, const char *key, char *out, size_t cap)
{
	struct iscsi_kv kv[64];
	int n = iscsi_text_parse((const char *)p->data, p->dlen, kv, 64);
	for (int i = 0; i < n; i++)
		if (iscsi_kv_key_is(&kv[i], key)) {
			if (iscsi_kv_value(&kv[i], out, cap) < 0)
				return NULL;
			return out;
		}
	return NULL;
}

static uint16_t login_req(struct ini *c, uint8_t csg, uint8_t nsg, bool transit, const char *text,
                          size_t len, struct pdu *rsp)
{
	struct iscsi_bhs_login_req r;
	memset(&r, 0, sizeof(r));
	r.opcode = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
	r.flags = (uint8_t)((transit ? ISCSI_LOGIN_TRANSIT : 0) | csg << 2 | nsg);
	memcpy(r.isid, "\x80\x00\x00\x01\x02\x03", 6);
	r.isid[4] = c->isid_hi;
	r.isid[5] = c->isid_lo;
	be32_put(r.itt, 0x1);
	be32_put(r.cmd_sn, c->cmdsn);
	be32_put(r.exp_stat_sn, c->statsn);
	send_raw(c, (uint8_t *)&r, text, (uint32_t)len);
	if (recv_pdu(c, rsp) < 0)
		return 0xffff;
	assert_int_equal(rsp->bhs[0] & 0x3f, ISCSI_OP_LOGIN_RSP);
	return (uint16_t)(rsp->bhs[36] << 8 | rsp->bhs[37]);
}

struct tb {
	char b[8192];
	size_t len;
};
static void tb_add(struct tb *t, const char *k, const char *v)
{
	assert_int_equal(iscsi_text_add(t->b, sizeof(t->b), &t->len, k, v), 0);
}

/* Operational stage with given digests and limits; ends in full feature. */
static void login_oper(struct ini *c, bool hdig, uint32_t max_burst, uint32_t mrdsl,
                       bool initial_r2t, bool immediate)
{
	struct tb t = { .len = 0 };
	char num[32];
	tb_add(&t, "HeaderDigest", hdig ? "CRC32C,None" : "None");
	tb_add(&t, "DataDigest", hdig ? "CRC32C" : "None");
	snprintf(num, sizeof(num), "%u", max_burst);
	tb_add(&t, "MaxBurstLength", num);
	tb_add(&t, "FirstBurstLength", "4096");
	snprintf(num, sizeof(num), "%u", mrdsl);
	tb_add(&t, "MaxRecvDataSegmentLength", num);
	tb_add(&t, "InitialR2T", initial_r2t ? "Yes" : "No");
	tb_add(&t, "ImmediateData", immediate ? "Yes" : "No");
	tb_add(&t, "MaxOutstandingR2T", "2");
	tb_add(&t, "ErrorRecoveryLevel", "2");
	tb_add(&t, "X-com.example.Unknown", "1");
	struct pdu p;
	assert_int_equal(login_req(c, 1, 3, true, t.b, t.len, &p), 0);
	char v[64];
	assert_true(p.bhs[1] & ISCSI_LOGIN_TRANSIT);
	assert_int_equal(p.bhs[1] & 3, 3);
	assert_string_equal(kv_get(&p, "HeaderDigest", v, sizeof(v)), hdig ? "CRC32C" : "None");
	assert_string_equal(kv_get(&p, "ErrorRecoveryLevel", v, sizeof(v)), "0");
	assert_string_equal(kv_get(&p, "MaxOutstandingR2T", v, sizeof(v)), "2");
	assert_string_equal(kv_get(&p, "X-com.example.Unknown", v, sizeof(v)), "NotUnderstood");
	uint64_t mb;
	assert_int_equal(iscsi_text_number(kv_get(&p, "MaxBurstLength", v, sizeof(v)), &mb), 0);
	assert_int_equal(mb, max_burst);
	assert_non_null(kv_get(&p, "MaxRecvDataSegmentLength", v, sizeof(v)));
	assert_int_not_equal(be16_get(p.bhs + 14), 0); /* TSIH assigned */
	free(p.data);
	c->dg.header = hdig;
	c->dg.data = hdig;
}

/* Logs in as initiator port ini,i,0x80000001<isid_hi><isid_lo> (isid_hi 0:
 * a fresh ISID, so no reinstatement). */
static void login_open_as(struct ini *c, const char *target, bool hdig, const char *ini,
                          uint8_t isid_hi, uint8_t isid_lo)
{
	assert_int_equal(conn_open(c), 0);
	if (isid_hi) {
		c->isid_hi = isid_hi;
		c->isid_lo = isid_lo;
	}
	struct tb t = { .len = 0 };
	tb_add(&t, "InitiatorName", ini);
	tb_add(&t, "SessionType", "Normal");
	tb_add(&t, "TargetName", target);
	tb_add(&t, "AuthMethod", "None");
	struct pdu p;
	assert_int_equal(login_req(c, 0, 1, true, t.b, t.len, &p), 0);
	char v[64];
	assert_string_equal(kv_get(&p, "AuthMethod", v, sizeof(v)), "None");
	assert_string_equal(kv_get(&p, "TargetPortalGroupTag", v, sizeof(v)), "1");
	free(p.data);
	login_oper(c, hdig, 65536, 8192, true, true);
}

static void login_open(struct ini *c, const char *target, bool hdig)
{
	login_open_as(c, target, hdig, INI, 0, 0);
}

static void md5(uint8_t id, const char *secret, const uint8_t *chal, size_t n, uint8_t out[16])
{
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	unsigned l;
	EVP_DigestInit_ex(m, EVP_md5(), NULL);
	EVP_DigestUpdate(m, &id, 1);
	EVP_DigestUpdate(m, secret, strlen(secret));
	EVP_DigestUpdate(m, chal, n);
	EVP_DigestFinal_ex(m, out, &l);
	EVP_MD_CTX_free(m);
}

/* CHAP login; returns the final status.  mode: 0 one-way, 1 mutual,
 * 2 mutual with the target's own challenge reflected.  target NULL: a
 * discovery session. */
static uint16_t login_chap(struct ini *c, const char *target, const char *user,
                           const char *secret, int mode)
{
	assert_int_equal(conn_open(c), 0);
	struct tb t = { .len = 0 };
	tb_add(&t, "InitiatorName", INI);
	if (target)
		tb_add(&t, "TargetName", target);
	else
		tb_add(&t, "SessionType", "Discovery");
	tb_add(&t, "AuthMethod", "CHAP,None");
	struct pdu p;
	char v[512];
	uint16_t st = login_req(c, 0, 1, false, t.b, t.len, &p);
	if (st)
		return st;
	assert_string_equal(kv_get(&p, "AuthMethod", v, sizeof(v)), "CHAP");
	free(p.data);
	t.len = 0;
	tb_add(&t, "CHAP_A", "7,5");
	assert_int_equal(login_req(c, 0, 1, false, t.b, t.len, &p), 0);
	assert_string_equal(kv_get(&p, "CHAP_A", v, sizeof(v)), "5");
	uint64_t id;
	assert_int_equal(iscsi_text_number(kv_get(&p, "CHAP_I", v, sizeof(v)), &id), 0);
	uint8_t chal[64];
	int cl = iscsi_text_binary(kv_get(&p, "CHAP_C", v, sizeof(v)), chal, sizeof(chal));
	assert_true(cl >= 16);
	free(p.data);
	uint8_t resp[16];
	char hex[80];
	md5((uint8_t)id, secret, chal, (size_t)cl, resp);
	iscsi_text_hex(resp, 16, hex);
	t.len = 0;
	tb_add(&t, "CHAP_N", user);
	tb_add(&t, "CHAP_R", hex);
	uint8_t mychal[16] = "0123456789abcdef";
	if (mode >= 1) {
		tb_add(&t, "CHAP_I", "77");
		iscsi_text_hex(mode == 2 ? chal : mychal, mode == 2 ? (size_t)cl : 16, hex);
		tb_add(&t, "CHAP_C", hex);
	}
	st = login_req(c, 0, target ? 1 : 3, true, t.b, t.len, &p);
	if (st == 0 && mode == 1) {
		/* the target proves it knows the mutual secret */
		assert_string_equal(kv_get(&p, "CHAP_N", v, sizeof(v)), "target-user");
		uint8_t want[16], got[16];
		md5(77, "mutual-secret-xyz", mychal, 16, want);
		assert_int_equal(iscsi_text_binary(kv_get(&p, "CHAP_R", v, sizeof(v)), got, 16), 16);
		assert_memory_equal(want, got, 16);
	}
	if (st == 0)
		assert_true(p.bhs[1] & ISCSI_LOGIN_TRANSIT);
	free(p.data);
	return st;
}

static void scsi_cmd(struct ini *c, uint32_t itt, const uint8_t *cdb, uint8_t flags, uint32_t edtl,
                     const void *imm, uint32_t imm_len, bool immediate)
{
	struct iscsi_bhs_scsi_cmd h;
	memset(&h, 0, sizeof(h));
	h.opcode = ISCSI_OP_SCSI_CMD | (immediate ? ISCSI_OP_IMMEDIATE : 0);
	h.flags = flags;
	be32_put(h.itt, itt);
	be32_put(h.edtl, edtl);
	be32_put(h.cmd_sn, c->cmdsn);
	if (!immediate)
		c->cmdsn++;
	be32_put(h.exp_stat_sn, c->statsn);
	memcpy(h.cdb, cdb, 16);
	send_raw(c, (uint8_t *)&h, imm, imm_len);
}

static void nop_ping(struct ini *c, uint32_t itt)
{
	struct iscsi_bhs_nop n;
	memset(&n, 0, sizeof(n));
	n.opcode = ISCSI_OP_NOP_OUT | ISCSI_OP_IMMEDIATE;
	n.flags = ISCSI_FLAG_FINAL;
	be32_put(n.itt, itt);
	be32_put(n.ttt, ISCSI_RSVD_TAG);
	be32_put(n.sn1, c->cmdsn);
	be32_put(n.sn2, c->statsn);
	send_raw(c, (uint8_t *)&n, "ping", 4);
	struct pdu p;
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_NOP_IN);
	assert_int_equal(be32_get(p.bhs + 16), itt);
	assert_int_equal(p.dlen, 4);
	assert_memory_equal(p.data, "ping", 4);
	free(p.data);
}

/* ---- tests --------------------------------------------------------------- */
/* SendTargets=All on a logged-in discovery session: a bit per target
 * listed (1 open, 2 chap, 4 mutual, 8 slow), every address checked. */
static unsigned send_targets(struct ini *c)
{
	struct iscsi_bhs_text tr;
	memset(&tr, 0, sizeof(tr));
	tr.opcode = ISCSI_OP_TEXT_REQ;
	tr.flags = ISCSI_FLAG_FINAL;
	be32_put(tr.itt, 5);
	be32_put(tr.ttt, ISCSI_RSVD_TAG);
	be32_put(tr.sn1, c->cmdsn++);
	send_raw(c, (uint8_t *)&tr, "SendTargets=All", 16);
	struct pdu p;
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_TEXT_RSP);
	assert_true(p.bhs[1] & ISCSI_FLAG_FINAL);
	char addr[64];
	snprintf(addr, sizeof(addr), "127.0.0.1:%d,1", port);
	unsigned seen = 0;
	struct iscsi_kv kv[32];
	int n = iscsi_text_parse((char *)p.data, p.dlen, kv, 32);
	static const char *const names[] = { T_OPEN, T_CHAP, T_MUT, T_SLOW };
	for (int i = 0; i < n; i++) {
		char v[256];
		iscsi_kv_value(&kv[i], v, sizeof(v));
		if (iscsi_kv_key_is(&kv[i], "TargetName")) {
			unsigned bit = 0;
			for (unsigned k = 0; k < 4; k++)
				if (!strcmp(v, names[k]))
					bit = 1u << k;
			assert_int_not_equal(bit, 0);
			assert_false(seen & bit); /* listed once */
			seen |= bit;
		} else {
			assert_string_equal(v, addr);
		}
	}
	free(p.data);
	return seen;
}

static void test_discovery(void **st)
{
	(void)st;
	struct ini *c = malloc(sizeof(*c));
	assert_int_equal(conn_open(c), 0);
	struct tb t = { .len = 0 };
	tb_add(&t, "InitiatorName", INI);
	tb_add(&t, "SessionType", "Discovery");
	tb_add(&t, "AuthMethod", "None");
	struct pdu p;
	assert_int_equal(login_req(c, 0, 3, true, t.b, t.len, &p), 0);
	free(p.data);
	/* without authentication only the targets that need none */
	assert_int_equal(send_targets(c), 1 | 8);
	/* SCSI commands are not allowed in a discovery session: Reject */
	uint8_t tur[16] = { 0 };
	scsi_cmd(c, 6, tur, ISCSI_FLAG_FINAL, 0, NULL, 0, false);
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_REJECT);
	assert_int_equal(p.bhs[2], ISCSI_REJECT_PROTOCOL);
	assert_int_equal(p.dlen, ISCSI_BHS_LEN);
	free(p.data);
	conn_close_(c);

	/* CHAP with a target's credentials: that target is listed too */
	assert_int_equal(login_chap(c, NULL, "alice", "alice-secret-123", 0), 0);
	assert_int_equal(send_targets(c), 1 | 2 | 8);
	conn_close_(c);
	assert_int_equal(login_chap(c, NULL, "bob", "bob-secret-4567", 1), 0);
	assert_int_equal(send_targets(c), 1 | 4 | 8);
	conn_close_(c);
	assert_int_equal(login_chap(c, NULL, "alice", "bob-secret-4567", 0), ISCSI_LOGIN_AUTH_FAILED);
	conn_close_(c);

	/* required discovery authentication */
	struct iscsi_chap disc = { "disco", "discovery-secret-1" };
	struct iscsi_chap bad = { "disco", "short" };
	assert_int_equal(iscsi_discovery_auth(srv, &bad, NULL), -EINVAL);
	assert_int_equal(iscsi_discovery_auth(srv, &disc, NULL), 0);
	assert_int_equal(conn_open(c), 0);
	assert_int_equal(login_req(c, 0, 3, true, t.b, t.len, &p), ISCSI_LOGIN_AUTH_FAILED);
	free(p.data);
	conn_close_(c);
	assert_int_equal(login_chap(c, NULL, "disco", "discovery-secret-1", 0), 0);
	assert_int_equal(send_targets(c), 1 | 8);
	conn_close_(c);
	assert_int_equal(login_chap(c, NULL, "disco", "discovery-secret-2", 0),
	                 ISCSI_LOGIN_AUTH_FAILED);
	conn_close_(c);
	assert_int_equal(login_chap(c, NULL, "alice", "alice-secret-123", 0), 0);
	assert_int_equal(send_targets(c), 1 | 2 | 8);
	conn_close_(c);
	/* a normal session is not affected by discovery authentication */
	login_open(c, T_OPEN, false);
	conn_close_(c);
	assert_int_equal(iscsi_discovery_auth(srv, NULL, NULL), 0);
	free(c);
}

/* Login text split over two PDUs with the C bit: the first request's keys
 * (InitiatorName, TargetName) count even though they arrive in pieces. */
static void test_login_continuation(void **st)
{
	(void)st;
	struct ini *c = malloc(sizeof(*c));
	assert_int_equal(conn_open(c), 0);
	struct tb t = { .len = 0 };
	tb_add(&t, "InitiatorName", INI);
	tb_add(&t, "TargetName", T_OPEN);
	tb_add(&t, "AuthMethod", "None");
	size_t cut = 10; /* in the middle of the first key */
	struct iscsi_bhs_login_req r;
	memset(&r, 0, sizeof(r));
	r.opcode = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
	r.flags = ISCSI_TEXT_CONTINUE | 0 << 2 | 1;
	memcpy(r.isid, "\x80\x00\x00\x09\x09\x09", 6);
	be32_put(r.itt, 1);
	be32_put(r.cmd_sn, c->cmdsn);
	send_raw(c, (uint8_t *)&r, t.b, (uint32_t)cut);
	struct pdu p;
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_LOGIN_RSP);
	assert_int_equal(p.bhs[36] << 8 | p.bhs[37], 0);
	assert_int_equal(p.dlen, 0);
	assert_false(p.bhs[1] & ISCSI_LOGIN_TRANSIT);
	free(p.data);
	r.flags = ISCSI_LOGIN_TRANSIT | 0 << 2 | 1;
	send_raw(c, (uint8_t *)&r, t.b + cut, (uint32_t)(t.len - cut));
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[36] << 8 | p.bhs[37], 0);
	assert_true(p.bhs[1] & ISCSI_LOGIN_TRANSIT);
	free(p.data);
	login_oper(c, false, 65536, 8192, true, true);
	nop_ping(c, 1);
	conn_close_(c);
	free(c);
}

static void test_login_refusals(void **st)
{
	(void)st;
	struct ini *c = malloc(sizeof(*c));
	struct pdu p;
	struct tb t = { .len = 0 };
	/* unknown target: 0x0203, then the connection closes */
	assert_int_equal(conn_open(c), 0);
	tb_add(&t, "InitiatorName", INI);
	tb_add(&t, "TargetName", "iqn.2026-11.io.ferry:nope");
	assert_int_equal(login_req(c, 0, 1, true, t.b, t.len, &p), ISCSI_LOGIN_NOT_FOUND);
	free(p.data);
	assert_true(closed_by_peer(c));
	conn_close_(c);
	/* no InitiatorName: missing parameter */
	assert_int_equal(conn_open(c), 0);
	t.len = 0;
	tb_add(&t, "TargetName", T_OPEN);
	assert_int_equal(login_req(c, 0, 1, true, t.b, t.len, &p), ISCSI_LOGIN_MISSING_PARAM);
	free(p.data);
	conn_close_(c);
	/* skipping the security stage of a CHAP target */
	assert_int_equal(conn_open(c), 0);
	t.len = 0;
	tb_add(&t, "InitiatorName", INI);
	tb_add(&t, "TargetName", T_CHAP);
	assert_int_equal(login_req(c, 1, 3, true, t.b, t.len, &p), ISCSI_LOGIN_AUTH_FAILED);
	free(p.data);
	conn_close_(c);
	/* offering only None to a CHAP target */
	assert_int_equal(conn_open(c), 0);
	t.len = 0;
	tb_add(&t, "InitiatorName", INI);
	tb_add(&t, "TargetName", T_CHAP);
	tb_add(&t, "AuthMethod", "None");
	assert_int_equal(login_req(c, 0, 1, true, t.b, t.len, &p), ISCSI_LOGIN_AUTH_FAILED);
	free(p.data);
	conn_close_(c);
	/* a SCSI command before login ends the connection */
	assert_int_equal(conn_open(c), 0);
	uint8_t tur[16] = { 0 };
	scsi_cmd(c, 6, tur, ISCSI_FLAG_FINAL, 0, NULL, 0, false);
	assert_true(closed_by_peer(c));
	conn_close_(c);
	free(c);
}

static void test_chap(void **st)
{
	(void)st;
	struct ini *c = malloc(sizeof(*c));
	assert_int_equal(login_chap(c, T_CHAP, "alice", "alice-secret-123", 0), 0);
	login_oper(c, false, 65536, 8192, true, true);
	nop_ping(c, 9);
	conn_close_(c);
	assert_int_equal(login_chap(c, T_CHAP, "alice", "wrong-secret-123", 0),
	                 ISCSI_LOGIN_AUTH_FAILED);
	conn_close_(c);
	assert_int_equal(login_chap(c, T_CHAP, "mallory", "alice-secret-123", 0),
	                 ISCSI_LOGIN_AUTH_FAILED);
	conn_close_(c);
	/* mutual: the target answers our challenge with its own secret */
	assert_int_equal(login_chap(c, T_MUT, "bob", "bob-secret-4567", 1), 0);
	login_oper(c, false, 65536, 8192, true, true);
	nop_ping(c, 10);
	conn_close_(c);
	/* reflecting the target's challenge back is refused */
	assert_int_equal(login_chap(c, T_MUT, "bob", "bob-secret-4567", 2), ISCSI_LOGIN_AUTH_FAILED);
	conn_close_(c);
	/* asking a one-way target for mutual authentication fails */
	assert_int_equal(login_chap(c, T_CHAP, "alice", "alice-secret-123", 1),
	                 ISCSI_LOGIN_AUTH_FAILED);
	conn_close_(c);
	free(c);
}

/* Writes len bytes at LBA 0 through R2Ts, reads them back with Data-In. */
static void write_read(struct ini *c, uint32_t len, uint32_t max_burst, uint32_t mrdsl,
                       bool initial_r2t)
{
	uint8_t *data = malloc(len), *back = malloc(len);
	for (uint32_t i = 0; i < len; i++)
		data[i] = (uint8_t)(i * 7 + len);
	uint8_t cdb[16] = { 0x2a };
	be16_put(cdb + 7, (uint16_t)(len / 512));
	uint32_t imm = 4096; /* FirstBurstLength was 4096 */
	scsi_cmd(c, 0x77, cdb, initial_r2t ? (ISCSI_FLAG_FINAL | ISCSI_CMD_WRITE) : ISCSI_CMD_WRITE,
	         len, data, imm, false);
	/* with InitialR2T=No the immediate data already fills FirstBurstLength
	 * (4096), so no unsolicited Data-Out follows */
	uint32_t sent = imm;
	uint32_t r2ts = 0;
	struct pdu p;
	while (sent < len) {
		assert_int_equal(recv_pdu(c, &p), 0);
		if ((p.bhs[0] & 0x3f) != ISCSI_OP_R2T)
			fail_msg("expected R2T, got opcode 0x%x", p.bhs[0] & 0x3f);
		uint32_t off = be32_get(p.bhs + 40), dl = be32_get(p.bhs + 44);
		uint32_t ttt = be32_get(p.bhs + 20);
		assert_int_equal(be32_get(p.bhs + 36), r2ts); /* R2TSN */
		assert_int_equal(off, sent);
		assert_true(dl <= max_burst);
		r2ts++;
		free(p.data);
		/* answer in Data-Out PDUs of at most 8 KiB */
		for (uint32_t o = 0, sn = 0; o < dl; sn++) {
			uint32_t n = MIN(8192u, dl - o);
			struct iscsi_bhs_data d;
			memset(&d, 0, sizeof(d));
			d.opcode = ISCSI_OP_DATA_OUT;
			d.flags = o + n == dl ? ISCSI_FLAG_FINAL : 0;
			be32_put(d.itt, 0x77);
			be32_put(d.ttt, ttt);
			be32_put(d.data_sn, sn);
			be32_put(d.buffer_offset, off + o);
			send_raw(c, (uint8_t *)&d, data + off + o, n);
			o += n;
		}
		sent += dl;
	}
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_SCSI_RSP);
	assert_int_equal(p.bhs[3], SCSI_STATUS_GOOD);
	assert_int_equal(be32_get(p.bhs + 36), r2ts); /* ExpDataSN counts R2Ts */
	free(p.data);
	assert_true(r2ts >= (len - imm + max_burst - 1) / max_burst);
	assert_memory_equal(fake_lu_data(lu_open), data, len);
	/* read it back */
	uint8_t rcdb[16] = { 0x28 };
	be16_put(rcdb + 7, (uint16_t)(len / 512));
	scsi_cmd(c, 0x78, rcdb, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, len, NULL, 0, false);
	uint32_t got = 0, datasn = 0;
	for (;;) {
		assert_int_equal(recv_pdu(c, &p), 0);
		assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_DATA_IN);
		assert_true(p.dlen <= mrdsl);
		assert_int_equal(be32_get(p.bhs + 36), datasn++);
		assert_int_equal(be32_get(p.bhs + 40), got);
		memcpy(back + got, p.data, p.dlen);
		got += p.dlen;
		bool status = p.bhs[1] & ISCSI_DATAIN_STATUS;
		if (got % max_burst == 0 || got == len)
			assert_true(p.bhs[1] & ISCSI_FLAG_FINAL); /* sequences end at MaxBurstLength */
		free(p.data);
		if (status) {
			assert_int_equal(got, len);
			break;
		}
	}
	assert_memory_equal(back, data, len);
	free(data);
	free(back);
}

static void test_r2t_and_datain(void **st)
{
	(void)st;
	struct ini *c = malloc(sizeof(*c));
	login_open(c, T_OPEN, false);
	write_read(c, 256 * 1024, 65536, 8192, true);
	conn_close_(c);
	/* the same with header and data digests on every PDU */
	login_open(c, T_OPEN, true);
	write_read(c, 128 * 1024, 65536, 8192, true);
	nop_ping(c, 0x1234);
	conn_close_(c);
	free(c);
}

static void test_residuals_and_sense(void **st)
{
	(void)st;
	struct ini *c = malloc(sizeof(*c));
	login_open(c, T_OPEN, false);
	struct pdu p;
	/* INQUIRY asking 255 bytes: 36 come back, underflow 219 */
	uint8_t inq[16] = { 0x12, 0, 0, 0, 255 };
	scsi_cmd(c, 1, inq, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, 255, NULL, 0, false);
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_DATA_IN);
	assert_true(p.bhs[1] & ISCSI_DATAIN_STATUS);
	assert_true(p.bhs[1] & ISCSI_DATAIN_UNDERFLOW);
	assert_int_equal(be32_get(p.bhs + 44), 219);
	assert_int_equal(p.dlen, 36);
	free(p.data);
	/* an unknown opcode: CHECK CONDITION with sense in a SCSI Response */
	uint8_t bad[16] = { 0xd9 };
	scsi_cmd(c, 2, bad, ISCSI_FLAG_FINAL, 0, NULL, 0, false);
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_SCSI_RSP);
	assert_int_equal(p.bhs[3], SCSI_STATUS_CHECK_CONDITION);
	assert_int_equal(be16_get(p.data), 18);
	assert_int_equal(p.data[2 + 2] & 0x0f, 0x05);
	free(p.data);
	/* a LUN that does not exist */
	struct iscsi_bhs_scsi_cmd h;
	memset(&h, 0, sizeof(h));
	h.opcode = ISCSI_OP_SCSI_CMD;
	h.flags = ISCSI_FLAG_FINAL;
	h.lun[1] = 9;
	be32_put(h.itt, 3);
	be32_put(h.cmd_sn, c->cmdsn++);
	send_raw(c, (uint8_t *)&h, NULL, 0);
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[3], SCSI_STATUS_CHECK_CONDITION);
	assert_int_equal(p.data[2 + 12], 0x25); /* LOGICAL UNIT NOT SUPPORTED */
	free(p.data);
	/* REPORT LUNS answered by the target */
	uint8_t rl[16] = { 0xa0 };
	be32_put(rl + 6, 64);
	scsi_cmd(c, 4, rl, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, 64, NULL, 0, false);
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_DATA_IN);
	assert_int_equal(be32_get(p.data), 8); /* one LUN */
	free(p.data);
	/* an unknown iSCSI opcode gets a Reject, the session lives on */
	uint8_t odd[ISCSI_BHS_LEN] = { 0x1c | ISCSI_OP_IMMEDIATE, 0x80 };
	send_raw(c, odd, NULL, 0);
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_REJECT);
	assert_int_equal(p.bhs[2], ISCSI_REJECT_NOT_SUPPORTED);
	free(p.data);
	nop_ping(c, 77);
	conn_close_(c);
	free(c);
}

static void test_cmdsn_window(void **st)
{
	(void)st;
	struct ini *c = malloc(sizeof(*c));
	login_open(c, T_OPEN, false);
	nop_ping(c, 1);
	uint32_t max = c->max_cmd_sn;
	assert_true(sn_le(c->cmdsn, max));
	assert_true(max - c->cmdsn >= 16);
	/* a command beyond MaxCmdSN is ignored (no answer) */
	uint8_t tur[16] = { 0 };
	uint32_t keep = c->cmdsn;
	c->cmdsn = max + 10;
	scsi_cmd(c, 50, tur, ISCSI_FLAG_FINAL, 0, NULL, 0, false);
	assert_true(quiet(c, 300));
	c->cmdsn = keep;
	scsi_cmd(c, 51, tur, ISCSI_FLAG_FINAL, 0, NULL, 0, false);
	struct pdu p;
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(be32_get(p.bhs + 16), 51);
	assert_int_equal(c->exp_cmd_sn, keep + 1);
	free(p.data);
	/* logout: answered, then the target closes */
	struct iscsi_bhs_logout_req l;
	memset(&l, 0, sizeof(l));
	l.opcode = ISCSI_OP_LOGOUT_REQ | ISCSI_OP_IMMEDIATE;
	l.reason = 0x80;
	be32_put(l.itt, 99);
	be32_put(l.cmd_sn, c->cmdsn);
	send_raw(c, (uint8_t *)&l, NULL, 0);
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_LOGOUT_RSP);
	assert_int_equal(p.bhs[2], 0);
	free(p.data);
	assert_true(closed_by_peer(c));
	conn_close_(c);
	free(c);
}

static void tmf(struct ini *c, uint8_t fn, uint32_t ref_itt, uint8_t lun, uint8_t want)
{
	struct iscsi_bhs_tmf_req t;
	memset(&t, 0, sizeof(t));
	t.opcode = ISCSI_OP_TMF_REQ | ISCSI_OP_IMMEDIATE;
	t.function = 0x80 | fn;
	t.lun[1] = lun;
	be32_put(t.itt, 0x999);
	be32_put(t.ref_itt, ref_itt);
	be32_put(t.cmd_sn, c->cmdsn);
	be32_put(t.ref_cmd_sn, c->cmdsn - 1);
	send_raw(c, (uint8_t *)&t, NULL, 0);
	struct pdu p;
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_TMF_RSP);
	assert_int_equal(be32_get(p.bhs + 16), 0x999);
	assert_int_equal(p.bhs[2], want);
	free(p.data);
}

static void test_task_management(void **st)
{
	(void)st;
	struct ini *c = malloc(sizeof(*c)), *o = malloc(sizeof(*o));
	login_open(c, T_SLOW, false);
	login_open(o, T_SLOW, false);
	/* the slow LU takes 300 ms per command: abort one in flight */
	uint8_t tur[16] = { 0 };
	scsi_cmd(c, 0x10, tur, ISCSI_FLAG_FINAL, 0, NULL, 0, false);
	usleep(50 * 1000);
	tmf(c, ISCSI_TMF_ABORT_TASK, 0x10, 0, ISCSI_TMF_RSP_COMPLETE);
	assert_true(quiet(c, 500)); /* no SCSI Response for the aborted task */
	tmf(c, ISCSI_TMF_ABORT_TASK, 0x4242, 0, ISCSI_TMF_RSP_NO_TASK);
	/* LUN RESET aborts the other session's command too */
	uint64_t resets = fake_lu_resets(lu_slow);
	scsi_cmd(o, 0x20, tur, ISCSI_FLAG_FINAL, 0, NULL, 0, false);
	usleep(50 * 1000);
	tmf(c, ISCSI_TMF_LUN_RESET, 0, 0, ISCSI_TMF_RSP_COMPLETE);
	assert_int_equal(fake_lu_resets(lu_slow), resets + 1);
	assert_true(quiet(o, 500));
	tmf(c, ISCSI_TMF_LUN_RESET, 0, 5, ISCSI_TMF_RSP_NO_LUN);
	tmf(c, ISCSI_TMF_TASK_REASSIGN, 0, 0, ISCSI_TMF_RSP_NO_REASSIGN);
	tmf(c, ISCSI_TMF_ABORT_TASK_SET, 0, 0, ISCSI_TMF_RSP_COMPLETE);
	tmf(c, ISCSI_TMF_TARGET_WARM_RESET, 0, 0, ISCSI_TMF_RSP_COMPLETE);
	assert_int_equal(fake_lu_resets(lu_slow), resets + 2);
	nop_ping(o, 3);
	/* TARGET COLD RESET answers, then drops every session of the target */
	tmf(c, ISCSI_TMF_TARGET_COLD_RESET, 0, 0, ISCSI_TMF_RSP_COMPLETE);
	assert_true(closed_by_peer(c));
	assert_true(closed_by_peer(o));
	conn_close_(c);
	conn_close_(o);
	free(c);
	free(o);
}

/* ---- READs stream in pieces, within the data-in budget --------------------- */
#define T_BIG "iqn.2026-11.io.ferry:big"
#define BIG_SIZE (40u << 20)

/* READ(16) of n blocks at lba, EDTL edtl. */
static void read16(struct ini *c, uint32_t itt, uint64_t lba, uint32_t n, uint32_t edtl)
{
	uint8_t cdb[16] = { 0x88 };
	be32_put(cdb + 2, (uint32_t)(lba >> 32));
	be32_put(cdb + 6, (uint32_t)lba);
	be32_put(cdb + 10, n);
	scsi_cmd(c, itt, cdb, ISCSI_FLAG_FINAL | ISCSI_CMD_READ, edtl, NULL, 0, false);
}

/* The answers of n READs with ITTs itt0.. (the i-th reading the LU from
 * byte off0 + i * stride), however their Data-In interleave: checks each
 * one's offsets, DataSN, sequence ends at max_burst and bytes.  Returns the
 * first status that is not GOOD, else GOOD; got[i] gets the bytes of each (may be
 * NULL for n == 1: *got0), *asc the ASC of sense data. */
static uint8_t read_many(struct ini *c, uint32_t itt0, uint32_t n, const uint8_t *lu,
                         uint64_t off0, uint64_t stride, uint32_t max_burst, uint32_t *got,
                         uint8_t *asc)
{
	uint32_t *sn = calloc(n, sizeof(*sn));
	bool *done = calloc(n, sizeof(*done));
	uint32_t left = n;
	uint8_t st = 0xff;
	*asc = 0;
	for (uint32_t i = 0; i < n; i++)
		got[i] = 0;
	while (left) {
		struct pdu p;
		assert_int_equal(recv_pdu(c, &p), 0);
		uint32_t i = be32_get(p.bhs + 16) - itt0;
		assert_true(i < n && !done[i]);
		if ((p.bhs[0] & 0x3f) == ISCSI_OP_SCSI_RSP) {
			if (st == 0xff || st == SCSI_STATUS_GOOD)
				st = p.bhs[3];
			if (p.dlen >= 2 + 14)
				*asc = p.data[2 + 12];
			free(p.data);
			done[i] = true;
			left--;
			continue;
		}
		assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_DATA_IN);
		assert_int_equal(be32_get(p.bhs + 36), sn[i]++);
		assert_int_equal(be32_get(p.bhs + 40), got[i]);
		assert_memory_equal(p.data, lu + off0 + i * stride + got[i], p.dlen);
		got[i] += p.dlen;
		bool status = p.bhs[1] & ISCSI_DATAIN_STATUS;
		if (got[i] % max_burst == 0)
			assert_true(p.bhs[1] & ISCSI_FLAG_FINAL); /* bursts end across pieces too */
		else if (!status)
			assert_false(p.bhs[1] & ISCSI_FLAG_FINAL);
		if (status) {
			if (st == 0xff || st == SCSI_STATUS_GOOD)
				st = p.bhs[3];
			done[i] = true;
			left--;
		}
		free(p.data);
	}
	free(sn);
	free(done);
	return st;
}

static uint8_t read_back(struct ini *c, uint32_t itt, const uint8_t *lu, uint64_t off,
                         uint32_t max_burst, uint32_t *got, uint8_t *asc)
{
	return read_many(c, itt, 1, lu, off, 0, max_burst, got, asc);
}

/* Waits until the target's READ buffers stop changing (bounded); returns
 * the largest value seen. */
static uint64_t read_buffered_settled(void)
{
	uint64_t last = UINT64_MAX, peak = 0;
	int same = 0;
	for (int i = 0; i < 500 && same < 25; i++) { /* 10 s at most, 0.5 s stable */
		struct iscsi_stats s;
		iscsi_server_stats(srv, &s);
		peak = MAX(peak, s.read_buffered);
		same = s.read_buffered == last ? same + 1 : 0;
		last = s.read_buffered;
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return peak;
}

/* Waits until nothing more arrives in c's socket (bounded): the target's
 * send is then stuck on the initiator that reads nothing. */
static void wait_stalled(struct ini *c)
{
	int last = -1, same = 0;
	for (int i = 0; i < 1500 && same < 25; i++) { /* 30 s at most */
		int n = 0;
		assert_int_equal(ioctl(c->fd, FIONREAD, &n), 0);
		/* n > 0: on a loaded machine the READ may not have started yet */
		same = n > 0 && n == last ? same + 1 : 0;
		last = n;
		nanosleep(&(struct timespec){ 0, 20 * 1000 * 1000 }, NULL);
	}
	assert_true(same >= 25);
}

static void *lun_remove_thread(void *arg)
{
	(void)arg;
	iscsi_lun_remove(srv, T_BIG, 0);
	return NULL;
}

static void test_read_streaming(void **st)
{
	(void)st;
	struct scsi_lu *lu = fake_lu_create(BIG_SIZE, 512, 0, 7);
	uint8_t *d = (uint8_t *)fake_lu_data(lu); /* the fake's RAM: fill it */
	for (uint32_t i = 0; i < BIG_SIZE; i += 4)
		be32_put(d + i, i * 2654435761u);
	assert_int_equal(iscsi_target_add(srv, T_BIG, NULL, NULL), 0);
	assert_int_equal(iscsi_lun_add(srv, T_BIG, 0, lu), 0);
	struct ini *c = malloc(sizeof(*c));
	const uint32_t burst = 3 * 65536 + 512; /* bursts that do not align with pieces */
	uint32_t got;
	uint8_t asc;

	/* one 32 MiB READ: 32 pieces, one stream of Data-In */
	assert_int_equal(conn_open(c), 0);
	{
		struct tb t = { .len = 0 };
		tb_add(&t, "InitiatorName", INI);
		tb_add(&t, "TargetName", T_BIG);
		tb_add(&t, "AuthMethod", "None");
		struct pdu p;
		assert_int_equal(login_req(c, 0, 1, true, t.b, t.len, &p), 0);
		free(p.data);
		login_oper(c, false, burst, 65536, true, true);
	}
	read16(c, 1, 1000, (32u << 20) / 512, 32u << 20);
	assert_int_equal(read_back(c, 1, d, 1000 * 512, burst, &got, &asc), SCSI_STATUS_GOOD);
	assert_int_equal(got, 32u << 20);
	/* EDTL shorter than the CDB (overflow): only EDTL travels */
	read16(c, 2, 0, 8192, 3u << 20);
	assert_int_equal(read_back(c, 2, d, 0, burst, &got, &asc), SCSI_STATUS_GOOD);
	assert_int_equal(got, 3u << 20);

	/* 36 READs of 1 MiB while the initiator reads nothing: the target
	 * holds at most 8 MiB of them (docs/ISCSI.md), and every one is
	 * answered, in full and in order of data, once it reads */
	for (uint32_t i = 0; i < 36; i++)
		read16(c, 0x100 + i, (uint64_t)i * 2048, 2048, 1u << 20);
	uint64_t held = read_buffered_settled();
	assert_true(held >= (1u << 20));
	assert_true(held <= (8u << 20));
	uint32_t gots[36];
	assert_int_equal(read_many(c, 0x100, 36, d, 0, 1u << 20, burst, gots, &asc),
	                 SCSI_STATUS_GOOD);
	for (uint32_t i = 0; i < 36; i++)
		assert_int_equal(gots[i], 1u << 20);
	nop_ping(c, 5);
	struct iscsi_stats s;
	iscsi_server_stats(srv, &s);
	assert_int_equal(s.read_buffered, 0);

	/* ABORT TASK of a READ half sent: the answer comes once the piece on
	 * its way is out, and no status for the READ follows */
	read16(c, 0x200, 0, 65536, 32u << 20);
	struct pdu p;
	for (int i = 0; i < 3; i++) { /* some Data-In arrives */
		assert_int_equal(recv_pdu(c, &p), 0);
		assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_DATA_IN);
		free(p.data);
	}
	struct iscsi_bhs_tmf_req t;
	memset(&t, 0, sizeof(t));
	t.opcode = ISCSI_OP_TMF_REQ | ISCSI_OP_IMMEDIATE;
	t.function = 0x80 | ISCSI_TMF_ABORT_TASK;
	be32_put(t.itt, 0x999);
	be32_put(t.ref_itt, 0x200);
	be32_put(t.cmd_sn, c->cmdsn);
	be32_put(t.ref_cmd_sn, c->cmdsn - 1);
	send_raw(c, (uint8_t *)&t, NULL, 0);
	uint32_t data_after = 0;
	for (;;) {
		assert_int_equal(recv_pdu(c, &p), 0);
		uint8_t op = p.bhs[0] & 0x3f;
		if (op == ISCSI_OP_DATA_IN) {
			assert_int_equal(be32_get(p.bhs + 16), 0x200);
			assert_false(p.bhs[1] & ISCSI_DATAIN_STATUS);
			data_after += p.dlen;
			free(p.data);
			continue;
		}
		assert_int_equal(op, ISCSI_OP_TMF_RSP);
		assert_int_equal(p.bhs[2], ISCSI_TMF_RSP_COMPLETE);
		free(p.data);
		break;
	}
	assert_true(data_after < (32u << 20));
	assert_true(quiet(c, 300)); /* nothing more for the aborted READ */
	nop_ping(c, 6);

	/* CLEAR TASK SET from another session hits a READ whose initiator
	 * reads nothing: the TMF waits for the piece stuck in the socket, and
	 * is answered when that initiator hangs up (the READ goes with its
	 * connection); under ASan a leak of either would fail the test */
	struct ini *h = malloc(sizeof(*h)), *o = malloc(sizeof(*o));
	login_open(h, T_BIG, false);
	login_open(o, T_BIG, false);
	read16(h, 0x400, 0, 65536, 32u << 20);
	wait_stalled(h);
	memset(&t, 0, sizeof(t));
	t.opcode = ISCSI_OP_TMF_REQ | ISCSI_OP_IMMEDIATE;
	t.function = 0x80 | ISCSI_TMF_CLEAR_TASK_SET;
	be32_put(t.itt, 0x998);
	be32_put(t.cmd_sn, o->cmdsn);
	send_raw(o, (uint8_t *)&t, NULL, 0);
	assert_true(quiet(o, 300)); /* h's READ is not done: no answer yet */
	conn_close_(h);
	free(h);
	assert_int_equal(recv_pdu(o, &p), 0);
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_TMF_RSP);
	assert_int_equal(be32_get(p.bhs + 16), 0x998);
	assert_int_equal(p.bhs[2], ISCSI_TMF_RSP_COMPLETE);
	free(p.data);
	nop_ping(o, 9);
	conn_close_(o);
	free(o);
	for (int i = 0; i < 500; i++) { /* 10 s at most: its buffers are freed */
		iscsi_server_stats(srv, &s);
		if (s.read_buffered == 0)
			break;
		nanosleep(&(struct timespec){ 0, 20 * 1000 * 1000 }, NULL);
	}
	assert_int_equal(s.read_buffered, 0);
	nop_ping(c, 8);

	/* the LUN removed while a READ waits for an initiator that reads
	 * nothing: iscsi_lun_remove() must not wait for the socket */
	read16(c, 0x300, 0, 65536, 32u << 20);
	wait_stalled(c);
	assert_true(read_buffered_settled() > 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, lun_remove_thread, NULL), 0);
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 20;
	assert_int_equal(pthread_timedjoin_np(th, NULL, &dl), 0);
	/* the initiator reads: data, then CHECK CONDITION, LUN NOT SUPPORTED */
	assert_int_equal(read_back(c, 0x300, d, 0, burst, &got, &asc), SCSI_STATUS_CHECK_CONDITION);
	assert_int_equal(asc, 0x25);
	assert_true(got < (32u << 20));
	nop_ping(c, 7);
	conn_close_(c);

	/* WRITE data is counted from the command on, and given back when a
	 * connection goes with the data still coming */
	login_open(c, T_OPEN, false);
	uint8_t w10[16] = { 0x2a };
	be16_put(w10 + 7, 2048);
	scsi_cmd(c, 0x500, w10, ISCSI_FLAG_FINAL | ISCSI_CMD_WRITE, 1u << 20, NULL, 0, false);
	assert_int_equal(recv_pdu(c, &p), 0); /* an R2T: the target waits for data */
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_R2T);
	free(p.data);
	iscsi_server_stats(srv, &s);
	assert_int_equal(s.write_buffered, 1u << 20);
	conn_close_(c);
	for (int i = 0; i < 500; i++) {
		iscsi_server_stats(srv, &s);
		if (s.write_buffered == 0 && s.read_buffered == 0)
			break;
		nanosleep(&(struct timespec){ 0, 20 * 1000 * 1000 }, NULL);
	}
	assert_int_equal(s.write_buffered, 0);
	assert_int_equal(s.read_buffered, 0);
	free(c);
	assert_int_equal(iscsi_target_remove(srv, T_BIG), 0);
	fake_lu_destroy(lu);
}

static void test_hostile(void **st)
{
	(void)st;
	struct ini *good = malloc(sizeof(*good)), *bad = malloc(sizeof(*bad));
	login_open(good, T_OPEN, true);
	uint64_t seed = 12345;
	for (int round = 0; round < 20; round++) {
		assert_int_equal(conn_open(bad), 0);
		uint8_t junk[4096];
		for (size_t i = 0; i < sizeof(junk); i++) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			junk[i] = (uint8_t)(seed >> 33);
		}
		if (round % 4 == 1) { /* a login header announcing a huge segment */
			memset(junk, 0, 48);
			junk[0] = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
			junk[5] = 0xff;
		}
		size_t n = round % 4 == 2 ? 30 : sizeof(junk); /* truncated PDU */
		if (write_full(bad->fd, junk, n) == 0 && round % 4 != 2)
			assert_true(closed_by_peer(bad));
		conn_close_(bad);
	}
	/* a logged-in session sending a corrupted header digest is dropped */
	login_open(bad, T_OPEN, true);
	uint8_t tur[ISCSI_BHS_LEN + 4] = { ISCSI_OP_NOP_OUT | ISCSI_OP_IMMEDIATE, 0x80 };
	be32_put(tur + 16, 5);
	memset(tur + 48, 0xee, 4);
	assert_int_equal(write_full(bad->fd, tur, sizeof(tur)), 0);
	assert_true(closed_by_peer(bad));
	conn_close_(bad);
	/* a data digest error: Reject (reason 0x02), then the connection ends */
	login_open(bad, T_OPEN, true);
	{
		struct iscsi_bhs_nop n;
		memset(&n, 0, sizeof(n));
		n.opcode = ISCSI_OP_NOP_OUT | ISCSI_OP_IMMEDIATE;
		n.flags = ISCSI_FLAG_FINAL;
		be32_put(n.itt, 6);
		be32_put(n.ttt, ISCSI_RSVD_TAG);
		uint8_t out[128];
		long len = iscsi_pdu_build(out, sizeof(out), (uint8_t *)&n, "ping", 4, &bad->dg);
		assert_true(len > 0);
		out[len - 1] ^= 0xff; /* the data digest is the last 4 bytes */
		assert_int_equal(write_full(bad->fd, out, (size_t)len), 0);
		struct pdu p;
		assert_int_equal(recv_pdu(bad, &p), 0);
		assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_REJECT);
		assert_int_equal(p.bhs[2], ISCSI_REJECT_DIGEST);
		free(p.data);
		assert_true(closed_by_peer(bad));
	}
	conn_close_(bad);
	/* ... and none of it disturbed the good session */
	nop_ping(good, 4242);
	write_read(good, 64 * 1024, 65536, 8192, true);
	conn_close_(good);
	struct iscsi_stats s;
	iscsi_server_stats(srv, &s);
	assert_true(s.conn_errors >= 10);
	free(good);
	free(bad);
}

static void test_api(void **st)
{
	(void)st;
	struct iscsi_chap weak = { "u", "short" }, ok = { "u", "long-enough-secret" };
	assert_int_equal(iscsi_target_add(srv, "not-an-iqn", NULL, NULL), -EINVAL);
	assert_int_equal(iscsi_target_add(srv, T_OPEN, NULL, NULL), -EEXIST);
	assert_int_equal(iscsi_target_add(srv, "iqn.2026-11.io.ferry:x", &weak, NULL), -EINVAL);
	assert_int_equal(iscsi_target_add(srv, "iqn.2026-11.io.ferry:x", NULL, &ok), -EINVAL);
	assert_int_equal(iscsi_target_add(srv, "iqn.2026-11.io.ferry:x", &ok, &ok), -EINVAL);
	assert_int_equal(iscsi_lun_add(srv, "iqn.2026-11.io.ferry:none", 0, lu_open), -ENOENT);
	assert_int_equal(iscsi_lun_add(srv, T_OPEN, 0, lu_open), -EEXIST);
	assert_int_equal(iscsi_lun_add(srv, T_OPEN, 99999, lu_open), -EINVAL);
	assert_int_equal(iscsi_target_remove(srv, T_OPEN), -EBUSY);
	assert_int_equal(iscsi_lun_remove(srv, T_OPEN, 7), -ENOENT);
	/* remove a LUN while a session uses it: the session then sees no LUN */
	struct ini *c = malloc(sizeof(*c));
	struct scsi_lu *extra = fake_lu_create(1 << 20, 512, 0, 99);
	assert_int_equal(iscsi_target_add(srv, "iqn.2026-11.io.ferry:tmp", NULL, NULL), 0);
	assert_int_equal(iscsi_lun_add(srv, "iqn.2026-11.io.ferry:tmp", 3, extra), 0);
	login_open(c, "iqn.2026-11.io.ferry:tmp", false);
	struct pdu p;
	struct iscsi_bhs_scsi_cmd h;
	memset(&h, 0, sizeof(h));
	h.opcode = ISCSI_OP_SCSI_CMD;
	h.flags = ISCSI_FLAG_FINAL;
	h.lun[1] = 3;
	be32_put(h.itt, 3);
	be32_put(h.cmd_sn, c->cmdsn++);
	send_raw(c, (uint8_t *)&h, NULL, 0);
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[3], SCSI_STATUS_GOOD);
	free(p.data);
	assert_int_equal(iscsi_lun_remove(srv, "iqn.2026-11.io.ferry:tmp", 3), 0);
	fake_lu_destroy(extra);
	be32_put(h.itt, 4);
	be32_put(h.cmd_sn, c->cmdsn++);
	send_raw(c, (uint8_t *)&h, NULL, 0);
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[3], SCSI_STATUS_CHECK_CONDITION);
	free(p.data);
	/* removing the target ends its sessions */
	assert_int_equal(iscsi_target_remove(srv, "iqn.2026-11.io.ferry:tmp"), 0);
	assert_true(closed_by_peer(c));
	conn_close_(c);
	free(c);
}

/* Sends a write CDB with EDTL bytes of immediate data and returns the SCSI
 * Response (the caller frees p->data). */
static void write_imm(struct ini *c, uint32_t itt, const uint8_t *cdb, uint32_t edtl,
                      struct pdu *p)
{
	uint8_t data[512];
	memset(data, 0xab, sizeof(data));
	assert_true(edtl <= sizeof(data));
	scsi_cmd(c, itt, cdb, ISCSI_FLAG_FINAL | (edtl ? ISCSI_CMD_WRITE : 0), edtl, data, edtl,
	         false);
	assert_int_equal(recv_pdu(c, p), 0);
	assert_int_equal(p->bhs[0] & 0x3f, ISCSI_OP_SCSI_RSP);
	assert_int_equal(be32_get(p->bhs + 16), itt);
}

/* A WRITE whose EDTL is less than one logical block still reaches the
 * SCSI layer (as a write of 0 blocks), so its checks decide the status:
 * a reservation conflict must not turn into GOOD.  The residual still
 * reports the overflow against the CDB's length. */
static void test_sub_block_write(void **st)
{
	(void)st;
	const char *tn = "iqn.2026-11.io.ferry:bs4k";
	struct scsi_lu *lu = fake_lu_create(1 << 20, 4096, 0, 5);
	assert_int_equal(iscsi_target_add(srv, tn, NULL, NULL), 0);
	assert_int_equal(iscsi_lun_add(srv, tn, 0, lu), 0);
	struct ini *c = malloc(sizeof(*c));
	login_open(c, tn, false);
	struct pdu p;
	struct fake_seen seen;

	/* WRITE(10) of 1 block (4096 bytes) with EDTL 512 */
	uint8_t w10[16] = { 0x2a, 0, 0, 0, 0, 3, 0, 0, 1 };
	write_imm(c, 1, w10, 512, &p);
	assert_int_equal(p.bhs[3], SCSI_STATUS_GOOD);
	assert_true(p.bhs[1] & ISCSI_RSP_OVERFLOW);
	assert_int_equal(be32_get(p.bhs + 44), 4096 - 512);
	free(p.data);
	fake_lu_seen(lu, &seen);
	assert_int_equal(seen.cmds, 1);
	assert_int_equal(seen.cdb[0], 0x2a);
	assert_int_equal(be32_get(seen.cdb + 2), 3);      /* the LBA is kept */
	assert_int_equal(be16_get(seen.cdb + 7), 0);      /* 0 blocks */
	assert_int_equal(seen.data_out_len, 512);
	for (size_t i = 0; i < 8192 * 2; i++)
		assert_int_equal(fake_lu_data(lu)[i], 0);     /* nothing written */

	/* the SCSI layer's answer is what the initiator gets */
	fake_lu_set_conflict(lu, true);
	write_imm(c, 2, w10, 512, &p);
	assert_int_equal(p.bhs[3], SCSI_STATUS_RESERVATION_CONFLICT);
	assert_true(p.bhs[1] & ISCSI_RSP_OVERFLOW);
	assert_int_equal(be32_get(p.bhs + 44), 4096 - 512);
	free(p.data);

	/* WRITE(6) cannot say 0 blocks: it arrives as the same WRITE(10) */
	uint8_t w6[16] = { 0x0a, 0x01, 0x00, 0x05, 1, 0 };
	write_imm(c, 3, w6, 512, &p);
	assert_int_equal(p.bhs[3], SCSI_STATUS_RESERVATION_CONFLICT);
	assert_int_equal(be32_get(p.bhs + 44), 4096 - 512);
	free(p.data);
	fake_lu_seen(lu, &seen);
	assert_int_equal(seen.cmds, 3);
	assert_int_equal(seen.cdb_len, 10);
	assert_int_equal(seen.cdb[0], 0x2a);
	assert_int_equal(be32_get(seen.cdb + 2), 0x10005);
	assert_int_equal(be16_get(seen.cdb + 7), 0);

	/* EDTL 0 and no W bit: WRITE(16) of 2 blocks, still submitted */
	fake_lu_set_conflict(lu, false);
	uint8_t w16[16] = { 0x8a };
	be32_put(w16 + 10, 2);
	write_imm(c, 4, w16, 0, &p);
	assert_int_equal(p.bhs[3], SCSI_STATUS_GOOD);
	assert_true(p.bhs[1] & ISCSI_RSP_OVERFLOW);
	assert_int_equal(be32_get(p.bhs + 44), 8192);
	free(p.data);
	fake_lu_seen(lu, &seen);
	assert_int_equal(seen.cmds, 4);
	assert_int_equal(seen.cdb[0], 0x8a);
	assert_int_equal(be32_get(seen.cdb + 10), 0);

	conn_close_(c);
	free(c);
	assert_int_equal(iscsi_lun_remove(srv, tn, 0), 0);
	assert_int_equal(iscsi_target_remove(srv, tn), 0);
	fake_lu_destroy(lu);
}

/* Sends TEST UNIT READY and returns what the LU saw. */
static void tur_seen(struct ini *c, struct scsi_lu *lu, uint32_t itt, struct fake_seen *seen)
{
	uint8_t tur[16] = { 0 };
	scsi_cmd(c, itt, tur, ISCSI_FLAG_FINAL, 0, NULL, 0, false);
	struct pdu p;
	assert_int_equal(recv_pdu(c, &p), 0);
	assert_int_equal(p.bhs[0] & 0x3f, ISCSI_OP_SCSI_RSP);
	assert_int_equal(p.bhs[3], SCSI_STATUS_GOOD);
	free(p.data);
	fake_lu_seen(lu, seen);
}

/* Waits (5 s at most) until the LU has seen `want` nexus-gone calls. */
static void wait_gone(struct scsi_lu *lu, uint64_t want, uint64_t *last)
{
	uint64_t deadline = now_mono_ns() + 5000000000ull;
	while (fake_lu_nexus_gone(lu, last) < want && now_mono_ns() < deadline)
		usleep(5000);
	assert_int_equal(fake_lu_nexus_gone(lu, last), want);
}

/* The I_T nexus id is the initiator port's (name + ISID) and the target
 * port's: the same for every login of that port, so PR registrations
 * survive a new login, and different for another ISID or target.  A second
 * login of the same port reinstates the session: the old one is closed and
 * the SCSI layer hears once of the nexus loss, before the new session's
 * first command. */
static void test_nexus_identity(void **st)
{
	(void)st;
	const char *tn = "iqn.2026-11.io.ferry:nexus";
	const char *port_a = INI ",i,0x80000001a051";
	struct scsi_lu *lu = fake_lu_create(1 << 20, 512, 0, 6);
	assert_int_equal(iscsi_target_add(srv, tn, NULL, NULL), 0);
	assert_int_equal(iscsi_lun_add(srv, tn, 0, lu), 0);
	struct ini *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b)), *o = malloc(sizeof(*o)),
	           *d = malloc(sizeof(*d));
	struct fake_seen seen;
	uint64_t last;

	login_open_as(a, tn, false, INI, 0xa0, 0x51);
	tur_seen(a, lu, 1, &seen);
	uint64_t nx = seen.nexus;
	assert_int_not_equal(nx, 0);
	assert_string_equal(seen.initiator, port_a);
	/* logging out (here: dropping the connection) ends the nexus once */
	conn_close_(a);
	wait_gone(lu, 1, &last);
	assert_int_equal(last, nx);

	/* logging in again as the same port: the same nexus */
	login_open_as(b, tn, false, INI, 0xa0, 0x51);
	tur_seen(b, lu, 2, &seen);
	assert_int_equal(seen.nexus, nx);
	assert_string_equal(seen.initiator, port_a);

	/* another ISID of the same initiator, at the same time: another port */
	login_open_as(o, tn, false, INI, 0xa0, 0x52);
	tur_seen(o, lu, 3, &seen);
	assert_int_not_equal(seen.nexus, nx);
	assert_string_equal(seen.initiator, INI ",i,0x80000001a052");
	uint64_t nx_o = seen.nexus;

	/* the same port to another target is another I_T nexus */
	struct ini *t2 = malloc(sizeof(*t2));
	login_open_as(t2, T_OPEN, false, INI, 0xa0, 0x51);
	tur_seen(t2, lu_open, 4, &seen);
	assert_int_not_equal(seen.nexus, nx);
	assert_int_not_equal(seen.nexus, nx_o);
	conn_close_(t2);
	free(t2);
	nop_ping(b, 5); /* ...and did not reinstate b */
	assert_int_equal(fake_lu_nexus_gone(lu, NULL), 1);

	/* b's port logs in again while b lives (names fold case): the target
	 * closes b, reports the nexus loss once, and d goes on with it */
	login_open_as(d, tn, false, "IQN.2026-11.io.Ferry.Test:INI", 0xa0, 0x51);
	assert_true(closed_by_peer(b));
	conn_close_(b);
	wait_gone(lu, 2, &last);
	assert_int_equal(last, nx);
	tur_seen(d, lu, 6, &seen);
	assert_int_equal(seen.nexus, nx);
	nop_ping(o, 7); /* the other port's session is untouched */
	assert_int_equal(fake_lu_nexus_gone(lu, NULL), 2);

	conn_close_(o);
	conn_close_(d);
	wait_gone(lu, 4, NULL);
	assert_int_equal(iscsi_lun_remove(srv, tn, 0), 0);
	assert_int_equal(iscsi_target_remove(srv, tn), 0);
	fake_lu_destroy(lu);
	free(a);
	free(b);
	free(o);
	free(d);
}

static int setup(void **st)
{
	(void)st;
	signal(SIGPIPE, SIG_IGN);
	log_set_level(getenv("ISCSI_TEST_DEBUG") ? LOG_DEBUG : LOG_WARN);
	if (iscsi_server_create("127.0.0.1:0", &srv) < 0)
		return -1;
	port = iscsi_server_port(srv);
	struct iscsi_chap alice = { "alice", "alice-secret-123" }, bob = { "bob", "bob-secret-4567" },
	                  tgt = { "target-user", "mutual-secret-xyz" };
	lu_open = fake_lu_create(4 << 20, 512, 0, 1);
	lu_chap = fake_lu_create(1 << 20, 512, 0, 2);
	lu_mut = fake_lu_create(1 << 20, 512, 0, 3);
	lu_slow = fake_lu_create(1 << 20, 512, 300, 4);
	if (iscsi_target_add(srv, T_OPEN, NULL, NULL) || iscsi_target_add(srv, T_CHAP, &alice, NULL) ||
	    iscsi_target_add(srv, T_MUT, &bob, &tgt) || iscsi_target_add(srv, T_SLOW, NULL, NULL) ||
	    iscsi_lun_add(srv, T_OPEN, 0, lu_open) || iscsi_lun_add(srv, T_CHAP, 0, lu_chap) ||
	    iscsi_lun_add(srv, T_MUT, 0, lu_mut) || iscsi_lun_add(srv, T_SLOW, 0, lu_slow))
		return -1;
	return 0;
}

static int teardown(void **st)
{
	(void)st;
	iscsi_lun_remove(srv, T_OPEN, 0);
	iscsi_lun_remove(srv, T_CHAP, 0);
	iscsi_lun_remove(srv, T_MUT, 0);
	iscsi_lun_remove(srv, T_SLOW, 0);
	iscsi_server_destroy(srv);
	fake_lu_destroy(lu_open);
	fake_lu_destroy(lu_chap);
	fake_lu_destroy(lu_mut);
	fake_lu_destroy(lu_slow);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_discovery),
		cmocka_unit_test(test_login_continuation),
		cmocka_unit_test(test_login_refusals),
		cmocka_unit_test(test_chap),
		cmocka_unit_test(test_r2t_and_datain),
		cmocka_unit_test(test_residuals_and_sense),
		cmocka_unit_test(test_cmdsn_window),
		cmocka_unit_test(test_task_management),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_api),
		cmocka_unit_test(test_sub_block_write),
		cmocka_unit_test(test_nexus_identity),
		cmocka_unit_test(test_read_streaming),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
