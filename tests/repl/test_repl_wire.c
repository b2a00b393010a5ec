/* Unit tests of the replication wire codec (src/repl/wire.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "repl/wire.h"

static uint8_t buf[WIRE_FRAME_MAX];
static uint8_t payload[WIRE_DATA_MAX];

/* One message of every type, with fields that differ from zero. */
static int sample(unsigned i, struct wire_msg *m)
{
	memset(m, 0, sizeof(*m));
	switch (i) {
	case 0:
		m->type = WIRE_HELLO;
		m->u.hello.vmin = 1;
		m->u.hello.vmax = 3;
		memset(m->u.hello.nonce, 0xa5, WIRE_NONCE_LEN);
		strcpy(m->u.hello.site, "site-a");
		return 0;
	case 1:
		m->type = WIRE_HELLO_OK;
		m->u.hello_ok.version = 1;
		memset(m->u.hello_ok.nonce, 0x11, WIRE_NONCE_LEN);
		memset(m->u.hello_ok.mac, 0x22, WIRE_MAC_LEN);
		strcpy(m->u.hello_ok.site, "site-b");
		return 0;
	case 2:
		m->type = WIRE_AUTH;
		memset(m->u.auth.mac, 0x33, WIRE_MAC_LEN);
		return 0;
	case 3: m->type = WIRE_AUTH_OK; return 0;
	case 4:
		m->type = WIRE_ERROR;
		m->u.error.code = EACCES;
		strcpy(m->u.error.msg, "authentication failed: wrong secret");
		return 0;
	case 5: m->type = WIRE_PING; m->u.ping.token = 0x0102030405060708ull; return 0;
	case 6: m->type = WIRE_PONG; m->u.ping.token = 42; return 0;
	case 7:
		m->type = WIRE_PAIR_OPEN;
		strcpy(m->u.pair_open.pair_id, "0123456789abcdef");
		strcpy(m->u.pair_open.pair, "db");
		strcpy(m->u.pair_open.volume, "db-copy");
		strcpy(m->u.pair_open.snap, "ferry.db.000000");
		strcpy(m->u.pair_open.origin, "127.0.0.1:7450");
		m->u.pair_open.size = 200ull << 30;
		m->u.pair_open.object_size = 4u << 20;
		m->u.pair_open.block_size = 512;
		m->u.pair_open.flags = WIRE_OPEN_CREATE | WIRE_OPEN_FORCE;
		return 0;
	case 8:
		m->type = WIRE_PAIR_INFO;
		m->u.pair_info.last_cycle = 7;
		m->u.pair_info.last_time = 1790000000;
		strcpy(m->u.pair_info.last_snap, "ferry.db.000007");
		return 0;
	case 9:
		m->type = WIRE_CYCLE_BEGIN;
		strcpy(m->u.cycle_begin.volume, "db");
		strcpy(m->u.cycle_begin.pair_id, "0123456789abcdef");
		strcpy(m->u.cycle_begin.base, "ferry.db.000007");
		strcpy(m->u.cycle_begin.target, "ferry.db.000008");
		m->u.cycle_begin.cycle = 8;
		m->u.cycle_begin.objects = 12;
		m->u.cycle_begin.bytes = 12345678;
		m->u.cycle_begin.time = 1790000060;
		return 0;
	case 10:
		m->type = WIRE_CYCLE_READY;
		m->u.cycle_ready.cycle = 8;
		m->u.cycle_ready.status = WIRE_READY_RESUME;
		m->u.cycle_ready.resume_objno = 5;
		return 0;
	case 11:
		m->type = WIRE_DATA;
		m->u.data.objno = 3;
		m->u.data.offset = (3ull << 22) + 4096;
		m->u.data.raw_len = 8192;
		m->u.data.codec = WIRE_CODEC_NONE;
		for (size_t k = 0; k < 8192; k++)
			payload[k] = (uint8_t)(k * 7);
		m->u.data.data = payload;
		m->u.data.data_len = 8192;
		return 0;
	case 12:
		m->type = WIRE_ZERO;
		m->u.zero.objno = 9;
		m->u.zero.offset = 9ull << 22;
		m->u.zero.length = 4u << 20;
		return 0;
	case 13: m->type = WIRE_OBJ_DONE; m->u.obj_done.objno = 9; return 0;
	case 14:
		m->type = WIRE_CYCLE_END;
		m->u.cycle_end.cycle = 8;
		m->u.cycle_end.objects = 12;
		return 0;
	case 15:
		m->type = WIRE_CYCLE_COMMITTED;
		m->u.committed.cycle = 8;
		strcpy(m->u.committed.snap, "ferry.db.000008");
		return 0;
	case 16:
		m->type = WIRE_VERIFY_REQ;
		strcpy(m->u.verify_req.volume, "db");
		strcpy(m->u.verify_req.snap, "ferry.db.000008");
		return 0;
	case 17: {
		static uint8_t raw[3 * 16];
		for (size_t k = 0; k < sizeof(raw); k++)
			raw[k] = (uint8_t)k;
		m->type = WIRE_DIGESTS;
		m->u.digests.count = 3;
		m->u.digests.raw = raw;
		return 0;
	}
	case 18:
		m->type = WIRE_VERIFY_SUM;
		memset(m->u.verify_sum.md5, 0xd4, 16);
		m->u.verify_sum.objects = 3;
		return 0;
	case 19:
		m->type = WIRE_PAIR_REMOVE;
		strcpy(m->u.pair_remove.volume, "db");
		strcpy(m->u.pair_remove.pair_id, "0123456789abcdef");
		return 0;
	case 20: m->type = WIRE_OK; return 0;
	case 21:
		m->type = WIRE_ROLE;
		strcpy(m->u.role.volume, "db");
		strcpy(m->u.role.pair_id, "0123456789abcdef");
		m->u.role.op = WIRE_ROLE_DEMOTED;
		m->u.role.epoch = 3;
		m->u.role.last_cycle = 7;
		m->u.role.period_s = 60;
		strcpy(m->u.role.last_snap, "ferry.db.000007");
		strcpy(m->u.role.sender_volume, "db");
		strcpy(m->u.role.addr, "127.0.0.1:7450");
		return 0;
	case 22:
		m->type = WIRE_ROLE_INFO;
		m->u.role_info.role = WIRE_RI_PRIMARY;
		m->u.role_info.flags = WIRE_RI_SPLIT_BRAIN;
		m->u.role_info.epoch = 4;
		m->u.role_info.last_cycle = 7;
		strcpy(m->u.role_info.last_snap, "ferry.db.000007");
		return 0;
	case 23: {
		static uint8_t raw[32];
		for (unsigned k = 0; k < sizeof(raw); k++)
			raw[k] = (uint8_t)(k * 3);
		m->type = WIRE_EXTENTS;
		m->u.digests.count = 2;
		m->u.digests.raw = raw;
		return 0;
	}
	case 24:
		m->type = WIRE_SYNCED;
		strcpy(m->u.synced.volume, "db-copy");
		strcpy(m->u.synced.pair_id, "0123456789abcdef");
		m->u.synced.last_cycle = 7;
		strcpy(m->u.synced.last_snap, "ferry.db.000007");
		m->u.synced.as_of = 1790000123;
		return 0;
	default: return -1;
	}
}

static void test_roundtrip_every_type(void **st)
{
	(void)st;
	struct wire_msg m, d;
	unsigned seen = 0;
	for (unsigned i = 0; sample(i, &m) == 0; i++) {
		int n = wire_encode(&m, buf, sizeof(buf));
		assert_true(n >= (int)WIRE_HDR_LEN);
		assert_int_equal(wire_decode(buf, (size_t)n, &d), n);
		assert_int_equal(d.type, m.type);
		/* re-encoding the decoded message gives the same bytes */
		static uint8_t again[WIRE_FRAME_MAX];
		assert_int_equal(wire_encode(&d, again, sizeof(again)), n);
		assert_memory_equal(buf, again, (size_t)n);
		seen |= 1u << m.type;
		/* every strict prefix asks for more */
		for (int cut = 0; cut < n; cut += (n > 200 ? 97 : 1))
			assert_int_equal(wire_decode(buf, (size_t)cut, &d), -EAGAIN);
	}
	for (unsigned t = 1; t <= WIRE_TYPE_MAX; t++)
		assert_true(seen & (1u << t));
}

static void test_fields_survive(void **st)
{
	(void)st;
	struct wire_msg m, d;
	sample(9, &m);
	int n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), n);
	assert_string_equal(d.u.cycle_begin.base, "ferry.db.000007");
	assert_string_equal(d.u.cycle_begin.target, "ferry.db.000008");
	assert_int_equal(d.u.cycle_begin.cycle, 8);
	assert_int_equal(d.u.cycle_begin.bytes, 12345678);
	assert_int_equal(d.u.cycle_begin.size, 0);
	/* the optional volume size: present when set, and never 0 on the wire */
	sample(9, &m);
	m.u.cycle_begin.size = 3ull << 30;
	int n2 = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(n2, n + 8);
	assert_int_equal(wire_decode(buf, (size_t)n2, &d), n2);
	assert_int_equal(d.u.cycle_begin.size, 3ull << 30);
	m.u.cycle_begin.size = 1;
	n2 = wire_encode(&m, buf, sizeof(buf));
	memset(buf + n2 - 8, 0, 8); /* size 0, CRC made valid again below */
	{
		uint32_t plen = (uint32_t)(n2 - WIRE_HDR_LEN);
		uint32_t crc = crc32c(crc32c(0, buf, 12), buf + WIRE_HDR_LEN, plen);
		for (int i = 0; i < 4; i++) /* little-endian, like every field */
			buf[12 + i] = (uint8_t)(crc >> (8 * i));
	}
	assert_int_equal(wire_decode(buf, (size_t)n2, &d), -EPROTO);
	sample(11, &m);
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), n);
	assert_int_equal(d.u.data.offset, (3ull << 22) + 4096);
	assert_int_equal(d.u.data.data_len, 8192);
	assert_memory_equal(d.u.data.data, payload, 8192);
	struct wire_digest dg[2] = { { 5, 0xdeadbeefcafef00dull }, { 1ull << 40, 1 } };
	n = wire_encode_digests(dg, 2, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(wire_decode(buf, (size_t)n, &d), n);
	assert_int_equal(d.u.digests.count, 2);
	assert_int_equal(wire_digest_at(&d, 0).hash, 0xdeadbeefcafef00dull);
	assert_int_equal(wire_digest_at(&d, 1).objno, 1ull << 40);
}

static void test_corruption_detected(void **st)
{
	(void)st;
	struct wire_msg m, d;
	sample(9, &m);
	int n = wire_encode(&m, buf, sizeof(buf));
	/* any flipped bit in header or payload is caught */
	for (int i = 0; i < n; i++) {
		for (int bit = 0; bit < 8; bit += 3) {
			buf[i] ^= (uint8_t)(1u << bit);
			int rc = wire_decode(buf, (size_t)n, &d);
			assert_true(rc == -EBADMSG || rc == -EPROTO || rc == -EAGAIN);
			buf[i] ^= (uint8_t)(1u << bit);
		}
	}
	assert_int_equal(wire_decode(buf, (size_t)n, &d), n);
}

/* Re-seals a hand-edited frame so that only the field checks can reject it. */
static void reseal(uint8_t *f, size_t plen)
{
	f[8] = (uint8_t)plen;
	f[9] = (uint8_t)(plen >> 8);
	f[10] = (uint8_t)(plen >> 16);
	f[11] = (uint8_t)(plen >> 24);
	uint32_t crc = crc32c(crc32c(0, f, 12), f + WIRE_HDR_LEN, plen);
	for (int i = 0; i < 4; i++)
		f[12 + i] = (uint8_t)(crc >> (8 * i));
}

/* The role messages: an unknown op, role or flag, a name that could
 * escape the pool, and an EXTENTS frame read back pair by pair. */
static void test_role_messages(void **st)
{
	(void)st;
	struct wire_msg m, d;
	sample(21, &m);
	int n = wire_encode(&m, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(wire_decode(buf, (size_t)n, &d), n);
	assert_int_equal(d.u.role.op, WIRE_ROLE_DEMOTED);
	assert_int_equal(d.u.role.epoch, 3);
	assert_string_equal(d.u.role.addr, "127.0.0.1:7450");
	assert_int_equal(d.u.role.period_s, 60);
	m.u.role.op = WIRE_ROLE_CALLBACK;   /* the newest op decodes */
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), n);
	assert_int_equal(d.u.role.op, WIRE_ROLE_CALLBACK);
	m.u.role.op = WIRE_ROLE_OP_MAX + 1;
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	m.u.role.op = 0;
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	sample(21, &m);
	strcpy(m.u.role.sender_volume, "../x");
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	sample(22, &m);
	m.u.role_info.flags = 8;
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	sample(22, &m);
	m.u.role_info.role = 3;
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	struct wire_digest e[2] = { { 4096, 8192 }, { 1 << 20, 4096 } };
	n = wire_encode_extents(e, 2, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(wire_decode(buf, (size_t)n, &d), n);
	assert_int_equal(d.type, WIRE_EXTENTS);
	assert_int_equal(d.u.digests.count, 2);
	assert_int_equal(wire_digest_at(&d, 1).objno, 1 << 20);
	assert_int_equal(wire_digest_at(&d, 1).hash, 4096);
	assert_int_equal(wire_encode_extents(e, WIRE_DIGESTS_MAX + 1, buf, sizeof(buf)), -EINVAL);
}

static void test_malformed_rejected(void **st)
{
	(void)st;
	struct wire_msg m, d;
	uint32_t plen;
	/* bad magic, unknown type, flags set, huge length */
	sample(20, &m);
	int n = wire_encode(&m, buf, sizeof(buf));
	buf[0] ^= 1;
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	buf[0] ^= 1;
	buf[4] = 0;
	assert_int_equal(wire_header_check(buf, &plen), -EPROTO);
	buf[4] = WIRE_TYPE_MAX + 1;
	assert_int_equal(wire_header_check(buf, &plen), -EPROTO);
	buf[4] = WIRE_OK;
	buf[5] = 1;
	assert_int_equal(wire_header_check(buf, &plen), -EPROTO);
	buf[5] = 0;
	reseal(buf, WIRE_MAX_PAYLOAD + 1);
	assert_int_equal(wire_header_check(buf, &plen), -EPROTO);
	/* a trailing byte after the fields */
	sample(13, &m);
	n = wire_encode(&m, buf, sizeof(buf));
	buf[n] = 0;
	reseal(buf, (size_t)n - WIRE_HDR_LEN + 1);
	assert_int_equal(wire_decode(buf, (size_t)n + 1, &d), -EPROTO);
	/* a name that would escape the pool directory */
	sample(16, &m);
	strcpy(m.u.verify_req.volume, "../etc");
	n = wire_encode(&m, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	/* an embedded NUL in a string */
	sample(16, &m);
	n = wire_encode(&m, buf, sizeof(buf));
	buf[WIRE_HDR_LEN + 3] = 0;
	reseal(buf, (size_t)n - WIRE_HDR_LEN);
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	/* DATA whose uncompressed length disagrees with its payload */
	sample(11, &m);
	n = wire_encode(&m, buf, sizeof(buf));
	buf[WIRE_HDR_LEN + 16] ^= 0x10; /* raw_len */
	reseal(buf, (size_t)n - WIRE_HDR_LEN);
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	/* ZERO of length 0, or wrapping around */
	sample(12, &m);
	m.u.zero.length = 0;
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	m.u.zero.length = 2;
	m.u.zero.offset = UINT64_MAX;
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	/* ERROR with a non-errno code */
	sample(4, &m);
	m.u.error.code = -5;
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	/* DIGESTS whose count disagrees with its length */
	sample(17, &m);
	n = wire_encode(&m, buf, sizeof(buf));
	buf[WIRE_HDR_LEN] = 4;
	reseal(buf, (size_t)n - WIRE_HDR_LEN);
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
}

static void test_encode_bounds(void **st)
{
	(void)st;
	struct wire_msg m;
	sample(11, &m);
	assert_int_equal(wire_encode(&m, buf, 100), -ENOSPC);
	assert_int_equal(wire_encode(&m, buf, 8), -ENOSPC);
	m.u.data.raw_len = WIRE_DATA_MAX + 1;
	assert_int_equal(wire_encode(&m, buf, sizeof(buf)), -EINVAL);
	sample(16, &m);
	memset(m.u.verify_req.volume, 'a', WIRE_NAME_MAX);
	m.u.verify_req.volume[WIRE_NAME_MAX] = '\0';
	assert_true(wire_encode(&m, buf, sizeof(buf)) > 0);
	/* a largest DATA frame fits WIRE_FRAME_MAX */
	sample(11, &m);
	m.u.data.raw_len = WIRE_DATA_MAX;
	m.u.data.data_len = WIRE_DATA_MAX;
	int n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(n, (int)(WIRE_HDR_LEN + 24 + WIRE_DATA_MAX));
	struct wire_msg d;
	assert_int_equal(wire_decode(buf, (size_t)n, &d), n);
	assert_string_equal(wire_type_name(WIRE_CYCLE_BEGIN), "CYCLE_BEGIN");
	assert_string_equal(wire_type_name(99), "?");
}

/* ROLE's optional blocks: the settings, then the retention of recovery
 * points (issue 12).  A frame of before (no retention) still decodes, and
 * means keep 1; keep 0 on the wire is malformed. */
static void role_with_retention(struct wire_msg *m)
{
	sample(21, m);
	m->u.role.op = WIRE_ROLE_CHECK;
	m->u.role.has_settings = true;
	m->u.role.peer_timeout_s = 45;
	m->u.role.bandwidth = 1 << 20;
	m->u.role.max_inflight = 8;
	m->u.role.settings_flags = WIRE_RS_COMPRESS;
	m->u.role.has_retention = true;
	m->u.role.keep = 5;
	m->u.role.keep_for_s = 7 * 86400;
}

static void test_role_retention(void **st)
{
	(void)st;
	struct wire_msg m, d;
	role_with_retention(&m);
	m.u.role.has_retention = false;
	int n0 = wire_encode(&m, buf, sizeof(buf));
	assert_true(n0 > 0);
	assert_int_equal(wire_decode(buf, (size_t)n0, &d), n0);
	assert_true(d.u.role.has_settings);
	assert_false(d.u.role.has_retention); /* a primary of before */
	role_with_retention(&m);
	int n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(n, n0 + 12);
	assert_int_equal(wire_decode(buf, (size_t)n, &d), n);
	assert_true(d.u.role.has_settings);
	assert_true(d.u.role.has_retention);
	assert_int_equal(d.u.role.keep, 5);
	assert_int_equal(d.u.role.keep_for_s, 7 * 86400);
	assert_int_equal(d.u.role.settings_flags, WIRE_RS_COMPRESS);
	/* retention without the settings block is not encoded (it follows it) */
	role_with_retention(&m);
	m.u.role.has_settings = false;
	int n1 = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n1, &d), n1);
	assert_false(d.u.role.has_settings);
	assert_false(d.u.role.has_retention);
	/* keep 0 is malformed */
	role_with_retention(&m);
	m.u.role.keep = 1;
	n = wire_encode(&m, buf, sizeof(buf));
	memset(buf + n - 12, 0, 4); /* keep = 0, CRC made valid again */
	uint32_t plen = (uint32_t)(n - WIRE_HDR_LEN);
	uint32_t crc = crc32c(crc32c(0, buf, 12), buf + WIRE_HDR_LEN, plen);
	for (int i = 0; i < 4; i++)
		buf[12 + i] = (uint8_t)(crc >> (8 * i));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	/* a truncated retention block is malformed too */
	role_with_retention(&m);
	n = wire_encode(&m, buf, sizeof(buf));
	uint8_t cut[WIRE_FRAME_MAX];
	memcpy(cut, buf, (size_t)n - 4);
	plen = (uint32_t)(n - 4 - WIRE_HDR_LEN);
	for (int i = 0; i < 4; i++)
		cut[8 + i] = (uint8_t)(plen >> (8 * i));
	crc = crc32c(crc32c(0, cut, 12), cut + WIRE_HDR_LEN, plen);
	for (int i = 0; i < 4; i++)
		cut[12 + i] = (uint8_t)(crc >> (8 * i));
	assert_int_equal(wire_decode(cut, (size_t)n - 4, &d), -EPROTO);
}

/* SYNCED: the fields survive; cycle 0, time 0, no snapshot or a name
 * that could escape the pool are refused. */
static void test_synced(void **st)
{
	(void)st;
	struct wire_msg m, d;
	sample(24, &m);
	int n = wire_encode(&m, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(wire_decode(buf, (size_t)n, &d), n);
	assert_string_equal(d.u.synced.volume, "db-copy");
	assert_string_equal(d.u.synced.last_snap, "ferry.db.000007");
	assert_int_equal(d.u.synced.last_cycle, 7);
	assert_int_equal(d.u.synced.as_of, 1790000123);
	sample(24, &m);
	m.u.synced.last_cycle = 0;
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	sample(24, &m);
	m.u.synced.as_of = 0;
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	sample(24, &m);
	m.u.synced.last_snap[0] = '\0';
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	sample(24, &m);
	strcpy(m.u.synced.volume, "../x");
	n = wire_encode(&m, buf, sizeof(buf));
	assert_int_equal(wire_decode(buf, (size_t)n, &d), -EPROTO);
	/* a peer of before knows no type 25: its header check refuses it */
	sample(24, &m);
	n = wire_encode(&m, buf, sizeof(buf));
	buf[4] = WIRE_TYPE_MAX + 1;
	uint32_t plen;
	assert_int_equal(wire_header_check(buf, &plen), -EPROTO);
}

/* test_repl_wire --write-corpus DIR: writes the fuzz seed corpus. */
static int write_corpus(const char *dir)
{
	struct wire_msg m;
	char path[4096];
	for (unsigned i = 0; sample(i, &m) == 0; i++) {
		if (m.type == WIRE_DATA)
			m.u.data.raw_len = m.u.data.data_len = 64;
		int n = wire_encode(&m, buf, sizeof(buf));
		snprintf(path, sizeof(path), "%s/%02u-%s", dir, i, wire_type_name(m.type));
		if (n < 0 || write_file_atomic(path, buf, (size_t)n) < 0)
			return 1;
	}
	/* ROLE with both optional blocks */
	role_with_retention(&m);
	int nr = wire_encode(&m, buf, sizeof(buf));
	snprintf(path, sizeof(path), "%s/21-ROLE-retention", dir);
	if (nr < 0 || write_file_atomic(path, buf, (size_t)nr) < 0)
		return 1;
	/* a stream of several frames, as a link carries them */
	size_t off = 0;
	unsigned seq[] = { 9, 12, 13, 11, 13, 14 };
	for (size_t k = 0; k < ARRAY_SIZE(seq); k++) {
		sample(seq[k], &m);
		if (m.type == WIRE_DATA)
			m.u.data.raw_len = m.u.data.data_len = 4096;
		off += (size_t)wire_encode(&m, buf + off, sizeof(buf) - off);
	}
	snprintf(path, sizeof(path), "%s/stream-cycle", dir);
	return write_file_atomic(path, buf, off) < 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--write-corpus"))
		return write_corpus(argv[2]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_every_type),
		cmocka_unit_test(test_fields_survive),
		cmocka_unit_test(test_role_retention),
		cmocka_unit_test(test_synced),
		cmocka_unit_test(test_corruption_detected),
		cmocka_unit_test(test_malformed_rejected),
		cmocka_unit_test(test_role_messages),
		cmocka_unit_test(test_encode_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
