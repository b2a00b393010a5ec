/* repl wire codec: the framed binary protocol between two ferryd sites.
 *
 * Pure functions over caller buffers: no I/O, no allocation, no globals,
 * so the decoder can be fuzzed (tests/fuzz/fuzz_repl_wire.c).  The format
 * is specified in docs/PROTOCOL.md; keep the two in step.
 *
 * Frame = 16-byte header + payload:
 *   u32 magic "FRY1" | u8 type | u8 flags (0) | u16 reserved (0) |
 *   u32 payload length | u32 CRC32C(header bytes 0..11 + payload)
 * All integers are little-endian.
 */
#ifndef FERRY_REPL_WIRE_H
#define FERRY_REPL_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_MAGIC 0x31595246u        /* "FRY1" as bytes on the wire */
#define WIRE_HDR_LEN 16u
#define WIRE_VERSION 1u                /* the only version this build speaks */
#define WIRE_NONCE_LEN 32u
#define WIRE_MAC_LEN 32u               /* HMAC-SHA256 */
#define WIRE_NAME_MAX 64u              /* volume / snapshot / pair names */
#define WIRE_TEXT_MAX 255u             /* error messages, site names, peers */
#define WIRE_DATA_MAX (1u << 20)       /* raw bytes in one DATA record */
/* A DATA payload may be zstd output, which can exceed its input slightly. */
#define WIRE_MAX_PAYLOAD (WIRE_DATA_MAX + 8192u)
#define WIRE_FRAME_MAX (WIRE_HDR_LEN + WIRE_MAX_PAYLOAD)
#define WIRE_DIGESTS_MAX 1024u         /* (objno, digest) pairs per frame */

enum wire_type {
	WIRE_HELLO = 1,          /* client -> server, first frame */
	WIRE_HELLO_OK = 2,       /* server -> client */
	WIRE_AUTH = 3,           /* client -> server */
	WIRE_AUTH_OK = 4,        /* server -> client */
	WIRE_ERROR = 5,          /* either way; ends the current request */
	WIRE_PING = 6,
	WIRE_PONG = 7,
	WIRE_PAIR_OPEN = 8,      /* primary -> secondary */
	WIRE_PAIR_INFO = 9,      /* reply to PAIR_OPEN */
	WIRE_CYCLE_BEGIN = 10,
	WIRE_CYCLE_READY = 11,
	WIRE_DATA = 12,
	WIRE_ZERO = 13,
	WIRE_OBJ_DONE = 14,
	WIRE_CYCLE_END = 15,
	WIRE_CYCLE_COMMITTED = 16,
	WIRE_VERIFY_REQ = 17,
	WIRE_DIGESTS = 18,
	WIRE_VERIFY_SUM = 19,
	WIRE_PAIR_REMOVE = 20,
	WIRE_OK = 21,
	WIRE_ROLE = 22,          /* role exchange of a pair (epoch, demote, resync) */
	WIRE_ROLE_INFO = 23,     /* reply to ROLE */
	WIRE_EXTENTS = 24,       /* S->C, layout of DIGESTS: (offset, length) pairs */
	WIRE_SYNCED = 25,        /* C->S, heartbeat of an idle primary: still in
	                          * sync with the last synced snapshot (OK back) */
	WIRE_TYPE_MAX = 25,
};

enum wire_codec { WIRE_CODEC_NONE = 0, WIRE_CODEC_ZSTD = 1 };

/* PAIR_OPEN flags */
#define WIRE_OPEN_CREATE 0x01u  /* create the secondary volume if missing */
#define WIRE_OPEN_FORCE 0x02u   /* accept a non-empty existing volume */
#define WIRE_OPEN_BASE 0x04u    /* re-pair: base_* name a snapshot both sides
                                 * kept at `pair rm` (fields present only
                                 * with this flag) */

/* CYCLE_READY status */
enum wire_ready {
	WIRE_READY_FRESH = 0,      /* start at the first object */
	WIRE_READY_RESUME = 1,     /* continue at resume_objno */
	WIRE_READY_COMMITTED = 2,  /* the target is already committed */
};

/* ROLE ops */
enum wire_role_op {
	WIRE_ROLE_CHECK = 1,       /* a primary before a cycle: "I am primary at epoch" */
	WIRE_ROLE_DEMOTED = 2,     /* the primary demoted after its final cycle */
	WIRE_ROLE_RESYNC = 3,      /* new primary: keep your divergence, list it */
	WIRE_ROLE_CHECK_RESYNC = 4,/* CHECK for the cycle that carries a resync */
	WIRE_ROLE_CHECK_DEMOTING = 5, /* CHECK for a demoting primary's final cycle */
	WIRE_ROLE_CALLBACK = 6,    /* a secondary with no listener offers this
	                            * connection to its primary, which then uses
	                            * it as the client (docs/PROTOCOL.md 11) */
	WIRE_ROLE_QUERY = 7,       /* a secondary about to promote --force asks
	                            * whether the primary is alive: ROLE_INFO,
	                            * nothing changes */
	WIRE_ROLE_OP_MAX = 7,
};

/* ROLE_INFO role and flags */
#define WIRE_RI_PRIMARY 1u
#define WIRE_RI_SECONDARY 2u
#define WIRE_RI_DEMOTED 0x01u      /* a primary that is demoting / demoted */
#define WIRE_RI_SPLIT_BRAIN 0x02u
#define WIRE_RI_NEEDS_RESYNC 0x04u /* a demoted ex-primary waiting for resync */

/* ROLE settings flags (the optional settings block of ROLE) */
#define WIRE_RS_COMPRESS 0x01u
#define WIRE_RS_KEEP_WRITING 0x02u   /* split-brain policy keep-writing */

struct wire_digest {
	uint64_t objno;
	uint64_t hash;             /* XXH3-64 of the object's bytes */
};

/* A decoded message.  Strings are NUL-terminated copies; `data` and
 * `digests` point into the buffer that was decoded (valid while it is). */
struct wire_msg {
	enum wire_type type;
	union {
		struct {
			uint16_t vmin, vmax;
			uint8_t nonce[WIRE_NONCE_LEN];
			char site[WIRE_TEXT_MAX + 1];
		} hello;
		struct {
			uint16_t version;
			uint8_t nonce[WIRE_NONCE_LEN];
			uint8_t mac[WIRE_MAC_LEN];  /* server's proof */
			char site[WIRE_TEXT_MAX + 1];
		} hello_ok;
		struct {
			uint8_t mac[WIRE_MAC_LEN];  /* client's proof */
		} auth;
		struct {
			int32_t code;               /* positive errno */
			char msg[WIRE_TEXT_MAX + 1];
		} error;
		struct {
			uint64_t token;
		} ping; /* PING and PONG */
		struct {
			char pair_id[WIRE_NAME_MAX + 1];
			char pair[WIRE_NAME_MAX + 1];     /* primary-side pair name */
			char volume[WIRE_NAME_MAX + 1];   /* secondary volume */
			char snap[WIRE_NAME_MAX + 1];     /* base snapshot to take */
			char origin[WIRE_TEXT_MAX + 1];   /* primary's site, informative */
			uint64_t size;
			uint32_t object_size;
			uint32_t block_size;
			uint32_t flags;
			/* with WIRE_OPEN_BASE only */
			char base_snap[WIRE_NAME_MAX + 1];
			char base_id[WIRE_NAME_MAX + 1];  /* id of the pair that made it */
			uint64_t base_cycle;
		} pair_open;
		struct {
			uint64_t last_cycle;              /* 0: none committed */
			uint64_t last_time;
			char last_snap[WIRE_NAME_MAX + 1];
		} pair_info;
		struct {
			char volume[WIRE_NAME_MAX + 1];
			char pair_id[WIRE_NAME_MAX + 1];
			char base[WIRE_NAME_MAX + 1];     /* "" for the initial sync */
			char target[WIRE_NAME_MAX + 1];
			uint64_t cycle;
			uint64_t objects;                 /* changed objects */
			uint64_t bytes;                   /* changed bytes */
			uint64_t time;                    /* target's unix time */
			uint64_t size;                    /* primary volume's size; optional
			                                   * on the wire (0 = not sent) */
		} cycle_begin;
		struct {
			uint64_t cycle;
			uint32_t status;                  /* enum wire_ready */
			uint64_t resume_objno;
		} cycle_ready;
		struct {
			uint64_t objno;
			uint64_t offset;                  /* volume-relative */
			uint32_t raw_len;
			uint32_t codec;                   /* enum wire_codec */
			const uint8_t *data;
			uint32_t data_len;
		} data;
		struct {
			uint64_t objno;
			uint64_t offset;
			uint64_t length;
		} zero;
		struct {
			uint64_t objno;
		} obj_done;
		struct {
			uint64_t cycle;
			uint64_t objects;                 /* same as in CYCLE_BEGIN */
		} cycle_end;
		struct {
			uint64_t cycle;
			char snap[WIRE_NAME_MAX + 1];
		} committed;
		struct {
			char volume[WIRE_NAME_MAX + 1];
			char snap[WIRE_NAME_MAX + 1];
		} verify_req;
		struct {
			uint32_t count;
			const uint8_t *raw;               /* count * 16 bytes */
		} digests;
		struct {
			uint8_t md5[16];
			uint64_t objects;                 /* digests sent in total */
		} verify_sum;
		struct {
			char volume[WIRE_NAME_MAX + 1];
			char pair_id[WIRE_NAME_MAX + 1];
		} pair_remove;
		struct {
			char volume[WIRE_NAME_MAX + 1];   /* receiver's volume */
			char pair_id[WIRE_NAME_MAX + 1];
			uint32_t op;                      /* enum wire_role_op */
			uint64_t epoch;                   /* sender's pair epoch */
			uint64_t last_cycle;
			uint64_t period_s;                /* sender's cycle period, 0 = unknown */
			char last_snap[WIRE_NAME_MAX + 1];/* "" or a name */
			char sender_volume[WIRE_NAME_MAX + 1];
			char addr[WIRE_TEXT_MAX + 1];     /* sender's --listen, "" = none */
			/* Optional block (a peer of before may end the frame after
			 * addr): the primary's settings, which its secondary keeps. */
			bool has_settings;
			uint64_t peer_timeout_s;          /* 0 = the default */
			uint64_t bandwidth;
			uint32_t max_inflight;
			uint32_t settings_flags;          /* WIRE_RS_* */
			/* Optional after the settings block (absent: keep 1,
			 * keep_for 0, as before recovery points): how many synced
			 * cycles the secondary keeps, and for how long. */
			bool has_retention;
			uint32_t keep;                    /* >= 1 */
			uint64_t keep_for_s;              /* 0 = none */
		} role;
		struct {
			uint32_t role;                    /* WIRE_RI_PRIMARY / SECONDARY */
			uint32_t flags;                   /* WIRE_RI_* */
			uint64_t epoch;
			uint64_t last_cycle;
			char last_snap[WIRE_NAME_MAX + 1];/* "" or a name */
		} role_info;
		struct {
			char volume[WIRE_NAME_MAX + 1];   /* receiver's volume */
			char pair_id[WIRE_NAME_MAX + 1];
			uint64_t last_cycle;              /* >= 1 */
			char last_snap[WIRE_NAME_MAX + 1];/* a name */
			uint64_t as_of;                   /* unix s, >= 1: the primary's
			                                   * volume still read as last_snap */
		} synced;
	} u;
};

/* Encodes m as one frame into buf[0..cap).  Returns the frame length or
 * -ENOSPC (buffer too small), -EINVAL (a field out of range, e.g. a string
 * too long or a payload over WIRE_MAX_PAYLOAD).  Nothing is allocated. */
int wire_encode(const struct wire_msg *m, uint8_t *buf, size_t cap);

/* Checks a frame header (magic, type, reserved bits, length bound).  On
 * success stores the payload length and returns 0; -EPROTO otherwise. */
int wire_header_check(const uint8_t hdr[WIRE_HDR_LEN], uint32_t *payload_len);

/* Decodes one whole frame from buf[0..len).  Returns the number of bytes
 * consumed (header + payload), -EAGAIN when buf holds less than one frame,
 * -EPROTO for a malformed frame (bad magic, CRC, length, field), -EBADMSG
 * for a CRC mismatch.  Pointer fields of out point into buf. */
int wire_decode(const uint8_t *buf, size_t len, struct wire_msg *out);

/* Digest pair i of a decoded DIGESTS message. */
struct wire_digest wire_digest_at(const struct wire_msg *m, uint32_t i);

/* Encodes a DIGESTS frame from an array (count <= WIRE_DIGESTS_MAX). */
int wire_encode_digests(const struct wire_digest *d, uint32_t count,
                        uint8_t *buf, size_t cap);

/* Encodes an EXTENTS frame: count (<= WIRE_DIGESTS_MAX) pairs of
 * (offset, length); read them back with wire_digest_at (objno = offset,
 * hash = length). */
int wire_encode_extents(const struct wire_digest *d, uint32_t count,
                        uint8_t *buf, size_t cap);

/* Name of a message type for logs ("?" when unknown); static string. */
const char *wire_type_name(unsigned type);

#endif
