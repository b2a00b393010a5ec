/* iscsi/pdu.h (private to src/iscsi, and to its tests and fuzz targets):
 * the iSCSI PDU and text codecs (RFC 7143).
 *
 * Everything here is a pure function over caller buffers: no I/O, no
 * allocation, no global state, so that all of it can be fuzzed.  Wire
 * structs describe the 48-byte Basic Header Segment per opcode; multi-byte
 * fields are big-endian on the wire and are read and written with the
 * be*_get/put helpers (the structs may sit at any alignment).
 */
#ifndef FERRY_ISCSI_PDU_H
#define FERRY_ISCSI_PDU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ISCSI_BHS_LEN 48u
#define ISCSI_DIGEST_LEN 4u
#define ISCSI_AHS_MAX (255u * 4u)        /* TotalAHSLength is in words */
#define ISCSI_DLEN_MAX 0xffffffu         /* 24-bit DataSegmentLength */
#define ISCSI_RSVD_TAG 0xffffffffu

/* Opcodes (byte 0, low 6 bits). */
enum {
	ISCSI_OP_NOP_OUT = 0x00,
	ISCSI_OP_SCSI_CMD = 0x01,
	ISCSI_OP_TMF_REQ = 0x02,
	ISCSI_OP_LOGIN_REQ = 0x03,
	ISCSI_OP_TEXT_REQ = 0x04,
	ISCSI_OP_DATA_OUT = 0x05,
	ISCSI_OP_LOGOUT_REQ = 0x06,
	ISCSI_OP_SNACK = 0x10,
	ISCSI_OP_NOP_IN = 0x20,
	ISCSI_OP_SCSI_RSP = 0x21,
	ISCSI_OP_TMF_RSP = 0x22,
	ISCSI_OP_LOGIN_RSP = 0x23,
	ISCSI_OP_TEXT_RSP = 0x24,
	ISCSI_OP_DATA_IN = 0x25,
	ISCSI_OP_LOGOUT_RSP = 0x26,
	ISCSI_OP_R2T = 0x31,
	ISCSI_OP_ASYNC = 0x32,
	ISCSI_OP_REJECT = 0x3f,
};

#define ISCSI_OP_MASK 0x3f
#define ISCSI_OP_IMMEDIATE 0x40
#define ISCSI_FLAG_FINAL 0x80
/* SCSI Command flags (byte 1) */
#define ISCSI_CMD_READ 0x40
#define ISCSI_CMD_WRITE 0x20
#define ISCSI_CMD_ATTR_MASK 0x07
/* Data-In flags */
#define ISCSI_DATAIN_ACK 0x40
#define ISCSI_DATAIN_OVERFLOW 0x04
#define ISCSI_DATAIN_UNDERFLOW 0x02
#define ISCSI_DATAIN_STATUS 0x01
/* SCSI Response flags */
#define ISCSI_RSP_BIDI_OVERFLOW 0x10
#define ISCSI_RSP_BIDI_UNDERFLOW 0x08
#define ISCSI_RSP_OVERFLOW 0x04
#define ISCSI_RSP_UNDERFLOW 0x02
/* Login / Text flags */
#define ISCSI_LOGIN_TRANSIT 0x80
#define ISCSI_TEXT_CONTINUE 0x40
#define ISCSI_LOGIN_CSG(f) (((f) >> 2) & 3)
#define ISCSI_LOGIN_NSG(f) ((f) & 3)
enum { ISCSI_STAGE_SECURITY = 0, ISCSI_STAGE_OPERATIONAL = 1, ISCSI_STAGE_FULL = 3 };

/* Reject reasons (RFC 7143 11.17.1) */
enum {
	ISCSI_REJECT_DIGEST = 0x02,
	ISCSI_REJECT_SNACK = 0x03,
	ISCSI_REJECT_PROTOCOL = 0x04,
	ISCSI_REJECT_NOT_SUPPORTED = 0x05,
	ISCSI_REJECT_IMMEDIATE = 0x06,
	ISCSI_REJECT_TASK_IN_PROGRESS = 0x07,
	ISCSI_REJECT_INVALID_DATA_ACK = 0x08,
	ISCSI_REJECT_INVALID_FIELD = 0x09,
	ISCSI_REJECT_LONG_OP = 0x0a,
	ISCSI_REJECT_NEGOTIATION_RESET = 0x0b,
	ISCSI_REJECT_WAITING_LOGOUT = 0x0c,
};

/* Task management functions and responses (11.5, 11.6) */
enum {
	ISCSI_TMF_ABORT_TASK = 1,
	ISCSI_TMF_ABORT_TASK_SET = 2,
	ISCSI_TMF_CLEAR_ACA = 3,
	ISCSI_TMF_CLEAR_TASK_SET = 4,
	ISCSI_TMF_LUN_RESET = 5,
	ISCSI_TMF_TARGET_WARM_RESET = 6,
	ISCSI_TMF_TARGET_COLD_RESET = 7,
	ISCSI_TMF_TASK_REASSIGN = 8,
};
enum {
	ISCSI_TMF_RSP_COMPLETE = 0,
	ISCSI_TMF_RSP_NO_TASK = 1,
	ISCSI_TMF_RSP_NO_LUN = 2,
	ISCSI_TMF_RSP_ALLEGIANT = 3,
	ISCSI_TMF_RSP_NO_REASSIGN = 4,
	ISCSI_TMF_RSP_NOT_SUPPORTED = 5,
	ISCSI_TMF_RSP_AUTH_FAILED = 6,
	ISCSI_TMF_RSP_REJECTED = 255,
};

/* Login status class << 8 | detail (11.13.5) */
enum {
	ISCSI_LOGIN_OK = 0x0000,
	ISCSI_LOGIN_INIT_ERR = 0x0200,
	ISCSI_LOGIN_AUTH_FAILED = 0x0201,
	ISCSI_LOGIN_AUTHZ_FAILED = 0x0202,
	ISCSI_LOGIN_NOT_FOUND = 0x0203,
	ISCSI_LOGIN_TARGET_REMOVED = 0x0204,
	ISCSI_LOGIN_UNSUPPORTED_VERSION = 0x0205,
	ISCSI_LOGIN_TOO_MANY_CONNS = 0x0206,
	ISCSI_LOGIN_MISSING_PARAM = 0x0207,
	ISCSI_LOGIN_NO_SESSION_SPANNING = 0x0208,
	ISCSI_LOGIN_NO_SESSION_TYPE = 0x0209,
	ISCSI_LOGIN_NO_SESSION = 0x020a,
	ISCSI_LOGIN_INVALID_REQUEST = 0x020b,
	ISCSI_LOGIN_TARGET_ERR = 0x0300,
	ISCSI_LOGIN_SERVICE_UNAVAILABLE = 0x0301,
	ISCSI_LOGIN_OUT_OF_RESOURCES = 0x0302,
};

/* ---- wire structs ------------------------------------------------------
 * Byte arrays for the 24-bit and 64-bit fields and uint8_t[4] for the
 * 32-bit ones keep every struct free of padding and alignment needs. */
typedef uint8_t be32_t[4];

struct iscsi_bhs { /* the fields every opcode shares */
	uint8_t opcode;          /* I bit | opcode */
	uint8_t flags;           /* F bit | opcode-specific */
	uint8_t spec1[2];
	uint8_t total_ahs_len;   /* in 4-byte words */
	uint8_t dlen[3];         /* DataSegmentLength, without padding */
	uint8_t lun[8];          /* or opcode-specific */
	be32_t itt;
	uint8_t spec2[28];
};

struct iscsi_bhs_scsi_cmd {
	uint8_t opcode, flags, rsvd[2], total_ahs_len, dlen[3], lun[8];
	be32_t itt, edtl, cmd_sn, exp_stat_sn;
	uint8_t cdb[16];
};

struct iscsi_bhs_scsi_rsp {
	uint8_t opcode, flags, response, status, total_ahs_len, dlen[3], rsvd[8];
	be32_t itt, snack_tag, stat_sn, exp_cmd_sn, max_cmd_sn, exp_data_sn;
	be32_t bidi_residual, residual;
};

struct iscsi_bhs_data { /* Data-Out and Data-In */
	uint8_t opcode, flags, rsvd, status, total_ahs_len, dlen[3], lun[8];
	be32_t itt, ttt;
	be32_t stat_sn;          /* Data-In: StatSN; Data-Out: ExpStatSN */
	be32_t exp_cmd_sn, max_cmd_sn; /* Data-In only */
	be32_t data_sn, buffer_offset, residual;
};

struct iscsi_bhs_r2t {
	uint8_t opcode, flags, rsvd[2], total_ahs_len, dlen[3], lun[8];
	be32_t itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, r2t_sn, buffer_offset, desired_len;
};

struct iscsi_bhs_nop { /* NOP-Out and NOP-In */
	uint8_t opcode, flags, rsvd[2], total_ahs_len, dlen[3], lun[8];
	be32_t itt, ttt;
	be32_t sn1;              /* NOP-Out: CmdSN; NOP-In: StatSN */
	be32_t sn2;              /* NOP-Out: ExpStatSN; NOP-In: ExpCmdSN */
	be32_t max_cmd_sn;       /* NOP-In only */
	uint8_t rsvd2[12];
};

struct iscsi_bhs_tmf_req {
	uint8_t opcode, function, rsvd[2], total_ahs_len, dlen[3], lun[8];
	be32_t itt, ref_itt, cmd_sn, exp_stat_sn, ref_cmd_sn, exp_data_sn;
	uint8_t rsvd2[8];
};

struct iscsi_bhs_tmf_rsp {
	uint8_t opcode, flags, response, rsvd, total_ahs_len, dlen[3], rsvd2[8];
	be32_t itt, rsvd3, stat_sn, exp_cmd_sn, max_cmd_sn;
	uint8_t rsvd4[12];
};

struct iscsi_bhs_login_req {
	uint8_t opcode, flags, version_max, version_min, total_ahs_len, dlen[3];
	uint8_t isid[6], tsih[2];
	be32_t itt;
	uint8_t cid[2], rsvd[2];
	be32_t cmd_sn, exp_stat_sn;
	uint8_t rsvd2[16];
};

struct iscsi_bhs_login_rsp {
	uint8_t opcode, flags, version_max, version_active, total_ahs_len, dlen[3];
	uint8_t isid[6], tsih[2];
	be32_t itt, rsvd, stat_sn, exp_cmd_sn, max_cmd_sn;
	uint8_t status_class, status_detail, rsvd2[10];
};

struct iscsi_bhs_text { /* Text Request and Text Response */
	uint8_t opcode, flags, rsvd[2], total_ahs_len, dlen[3], lun[8];
	be32_t itt, ttt;
	be32_t sn1;              /* req: CmdSN; rsp: StatSN */
	be32_t sn2;              /* req: ExpStatSN; rsp: ExpCmdSN */
	be32_t max_cmd_sn;       /* rsp only */
	uint8_t rsvd2[12];
};

struct iscsi_bhs_logout_req {
	uint8_t opcode, reason, rsvd[2], total_ahs_len, dlen[3], rsvd2[8];
	be32_t itt;
	uint8_t cid[2], rsvd3[2];
	be32_t cmd_sn, exp_stat_sn;
	uint8_t rsvd4[16];
};

struct iscsi_bhs_logout_rsp {
	uint8_t opcode, flags, response, rsvd, total_ahs_len, dlen[3], rsvd2[8];
	be32_t itt, rsvd3, stat_sn, exp_cmd_sn, max_cmd_sn, rsvd4;
	uint8_t time2wait[2], time2retain[2], rsvd5[4];
};

struct iscsi_bhs_reject {
	uint8_t opcode, flags, reason, rsvd, total_ahs_len, dlen[3], rsvd2[8];
	be32_t all_ones, rsvd3, stat_sn, exp_cmd_sn, max_cmd_sn, data_sn;
	uint8_t rsvd4[8];
};

#define ISCSI_CHECK_BHS(type)                                                  \
	_Static_assert(sizeof(struct type) == ISCSI_BHS_LEN, #type " size")
ISCSI_CHECK_BHS(iscsi_bhs);
ISCSI_CHECK_BHS(iscsi_bhs_scsi_cmd);
ISCSI_CHECK_BHS(iscsi_bhs_scsi_rsp);
ISCSI_CHECK_BHS(iscsi_bhs_data);
ISCSI_CHECK_BHS(iscsi_bhs_r2t);
ISCSI_CHECK_BHS(iscsi_bhs_nop);
ISCSI_CHECK_BHS(iscsi_bhs_tmf_req);
ISCSI_CHECK_BHS(iscsi_bhs_tmf_rsp);
ISCSI_CHECK_BHS(iscsi_bhs_login_req);
ISCSI_CHECK_BHS(iscsi_bhs_login_rsp);
ISCSI_CHECK_BHS(iscsi_bhs_text);
ISCSI_CHECK_BHS(iscsi_bhs_logout_req);
ISCSI_CHECK_BHS(iscsi_bhs_logout_rsp);
ISCSI_CHECK_BHS(iscsi_bhs_reject);
/* Offsets the RFC fixes and that are easy to get wrong. */
_Static_assert(__builtin_offsetof(struct iscsi_bhs, itt) == 16, "itt");
_Static_assert(__builtin_offsetof(struct iscsi_bhs_scsi_cmd, edtl) == 20, "edtl");
_Static_assert(__builtin_offsetof(struct iscsi_bhs_scsi_cmd, cdb) == 32, "cdb");
_Static_assert(__builtin_offsetof(struct iscsi_bhs_scsi_rsp, exp_data_sn) == 36, "expdatasn");
_Static_assert(__builtin_offsetof(struct iscsi_bhs_scsi_rsp, residual) == 44, "residual");
_Static_assert(__builtin_offsetof(struct iscsi_bhs_data, data_sn) == 36, "datasn");
_Static_assert(__builtin_offsetof(struct iscsi_bhs_data, buffer_offset) == 40, "bufoff");
_Static_assert(__builtin_offsetof(struct iscsi_bhs_r2t, desired_len) == 44, "ddtl");
_Static_assert(__builtin_offsetof(struct iscsi_bhs_tmf_req, ref_cmd_sn) == 32, "refcmdsn");
_Static_assert(__builtin_offsetof(struct iscsi_bhs_login_req, cid) == 20, "cid");
_Static_assert(__builtin_offsetof(struct iscsi_bhs_login_rsp, status_class) == 36, "status");
_Static_assert(__builtin_offsetof(struct iscsi_bhs_logout_rsp, time2wait) == 40, "t2w");
_Static_assert(__builtin_offsetof(struct iscsi_bhs_reject, data_sn) == 36, "rej datasn");

static inline uint32_t be32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void be32_put(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline uint16_t be16_get(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline void be16_put(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline uint32_t be24_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}
static inline void be24_put(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 16);
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)v;
}
static inline uint32_t iscsi_pad4(uint32_t n) { return (4 - (n & 3)) & 3; }

/* Serial number arithmetic (RFC 1982, 32 bits) for CmdSN/StatSN. */
static inline bool sn_lt(uint32_t a, uint32_t b) { return a != b && (int32_t)(a - b) < 0; }
static inline bool sn_le(uint32_t a, uint32_t b) { return a == b || sn_lt(a, b); }

/* ---- PDU framing ------------------------------------------------------ */
struct iscsi_digests {
	bool header; /* HeaderDigest=CRC32C */
	bool data;   /* DataDigest=CRC32C */
};

/* A parsed PDU: pointers into the caller's buffer. */
struct iscsi_pdu_view {
	const uint8_t *bhs;      /* ISCSI_BHS_LEN bytes */
	const uint8_t *ahs;      /* ahs_len bytes (0 when none) */
	uint32_t ahs_len;
	const uint8_t *data;     /* dlen bytes, padding and digest excluded */
	uint32_t dlen;
	uint8_t opcode;          /* low 6 bits of byte 0 */
	bool immediate;
};

/* Number of bytes a PDU whose BHS is bhs occupies on the wire with the
 * given digests (BHS + AHS + header digest + data + padding + data digest),
 * or -EMSGSIZE when its data segment exceeds max_dlen.  Pure. */
long iscsi_pdu_wire_len(const uint8_t bhs[ISCSI_BHS_LEN], const struct iscsi_digests *dg,
                        uint32_t max_dlen);

/* Parses one PDU from buf[0..len).  Returns the number of bytes it
 * occupies (> 0) and fills *v with pointers into buf; 0 when buf does not
 * yet hold a whole PDU; -EMSGSIZE for a data segment above max_dlen;
 * -EBADMSG for a header digest mismatch; -EILSEQ for a data digest
 * mismatch (the header is then valid and *v filled, so the caller may
 * answer with a Reject); -EPROTO for a malformed AHS.  Pure. */
long iscsi_pdu_parse(const uint8_t *buf, size_t len, const struct iscsi_digests *dg,
                     uint32_t max_dlen, struct iscsi_pdu_view *v);

/* Finishes an outgoing header: stores dlen in bhs (whose AHS length must
 * be 0) and copies it into out followed by its digest when enabled.
 * Returns the bytes written to out (48 or 52). */
size_t iscsi_pdu_hdr_finish(uint8_t bhs[ISCSI_BHS_LEN], uint32_t dlen,
                            const struct iscsi_digests *dg, uint8_t out[ISCSI_BHS_LEN + 4]);
/* The bytes that follow a data segment on the wire: padding to 4 bytes,
 * then the data digest when enabled.  Returns their number (0..7). */
size_t iscsi_pdu_tail(const void *data, uint32_t dlen, const struct iscsi_digests *dg,
                      uint8_t out[8]);
/* Builds a whole PDU into out[0..cap): convenience for small PDUs.
 * Returns the length or -ENOSPC. */
long iscsi_pdu_build(uint8_t *out, size_t cap, uint8_t bhs[ISCSI_BHS_LEN], const void *data,
                     uint32_t dlen, const struct iscsi_digests *dg);

/* The iSCSI digest of a buffer: CRC32C as the RFC defines it, returned as
 * the 4 bytes in wire order. */
void iscsi_digest(const void *data, size_t len, uint8_t out[4]);

/* Looks for an AHS of the given type (1 = extended CDB, 2 = expected
 * bidirectional read length).  On success (0) p and plen give its
 * specific bytes, those after the 4-byte AHS header; -ENOENT if absent,
 * -EPROTO if the AHS chain is malformed. */
int iscsi_ahs_find(const uint8_t *ahs, uint32_t ahs_len, uint8_t type, const uint8_t **p,
                   uint32_t *plen);
/* Assembles the full CDB of a SCSI Command PDU (BHS CDB + extended CDB
 * AHS) into cdb[0..cap).  Returns its length (16..cap) or -EPROTO. */
int iscsi_cdb_assemble(const struct iscsi_pdu_view *v, uint8_t *cdb, size_t cap);

/* Single-level LUN encoding (SAM-5 peripheral / flat addressing). */
uint64_t iscsi_lun_decode(const uint8_t lun[8]);
void iscsi_lun_encode(uint64_t lun, uint8_t out[8]);

/* ---- text key=value ---------------------------------------------------
 * Text and Login data segments are a sequence of "key=value\0". */
#define ISCSI_KEY_MAX 63u
#define ISCSI_VALUE_MAX 8192u   /* CHAP challenges/responses may be long */

struct iscsi_kv {
	const char *key; /* not NUL-terminated: use klen */
	uint32_t klen;
	const char *val;
	uint32_t vlen;
};

/* Splits data[0..len) into at most cap pairs pointing into data.  Returns
 * the number of pairs, or -EINVAL for a pair with no '=', an empty or
 * too long key, a key with bytes outside [A-Za-z0-9.-:+@_] or a too long
 * value; -E2BIG for more than cap pairs; -EPROTO when the last pair is
 * not NUL-terminated (trailing NUL padding is accepted).  Pure. */
int iscsi_text_parse(const char *data, size_t len, struct iscsi_kv *kv, size_t cap);
/* Compares a parsed key with a C string. */
bool iscsi_kv_key_is(const struct iscsi_kv *kv, const char *key);
/* Copies a value into a C string buffer; -ENAMETOOLONG if it does not fit. */
int iscsi_kv_value(const struct iscsi_kv *kv, char *out, size_t cap);
/* Appends "key=value\0" to buf (length *len, capacity cap).  Returns 0 or
 * -ENOSPC (buf unchanged).  Pure. */
int iscsi_text_add(char *buf, size_t cap, size_t *len, const char *key, const char *val);

/* Parses a numerical value (decimal, 0x hex) into *out; 0 or -EINVAL. */
int iscsi_text_number(const char *s, uint64_t *out);
/* Decodes a binary value "0x<hex>" or "0b<base64>" into out[0..cap).
 * Returns the byte count or -EINVAL / -ENOSPC.  Pure. */
int iscsi_text_binary(const char *s, uint8_t *out, size_t cap);
/* Encodes in[0..n) as "0x<hex>" into out (at least 2n + 3 bytes). */
void iscsi_text_hex(const uint8_t *in, size_t n, char *out);

#endif
