/* Unit tests of the iSCSI PDU and text codecs (pure functions). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "iscsi/pdu.h"

static void test_digest_rfc_vectors(void **st)
{
	(void)st;
	/* RFC 3720 B.4: 32 bytes of zeros -> aa 36 91 8a; of 0xff -> 43 ab a8 62;
	 * incrementing 0..31 -> 4e 79 dd 46. */
	uint8_t b[32], d[4];
	memset(b, 0, 32);
	iscsi_digest(b, 32, d);
	assert_memory_equal(d, "\xaa\x36\x91\x8a", 4);
	memset(b, 0xff, 32);
	iscsi_digest(b, 32, d);
	assert_memory_equal(d, "\x43\xab\xa8\x62", 4);
	for (int i = 0; i < 32; i++)
		b[i] = (uint8_t)i;
	iscsi_digest(b, 32, d);
	assert_memory_equal(d, "\x4e\x79\xdd\x46", 4);
}

static void mk_bhs(uint8_t *bhs, uint8_t op, uint32_t dlen, uint8_t ahs_words)
{
	memset(bhs, 0, ISCSI_BHS_LEN);
	bhs[0] = op;
	bhs[4] = ahs_words;
	be24_put(bhs + 5, dlen);
}

static void test_parse_roundtrip(void **st)
{
	(void)st;
	for (int mode = 0; mode < 4; mode++) {
		struct iscsi_digests dg = { mode & 1, (mode >> 1) & 1 };
		uint8_t bhs[ISCSI_BHS_LEN], out[512];
		mk_bhs(bhs, ISCSI_OP_SCSI_CMD | ISCSI_OP_IMMEDIATE, 0, 0);
		be32_put(bhs + 16, 0x1234);
		const char data[] = "hello"; /* 5 bytes: needs 3 bytes of padding */
		long n = iscsi_pdu_build(out, sizeof(out), bhs, data, 5, &dg);
		assert_int_equal(n, 48 + (dg.header ? 4 : 0) + 8 + (dg.data ? 4 : 0));
		struct iscsi_pdu_view v;
		/* every strict prefix is "need more" */
		for (long i = 0; i < n; i++)
			assert_int_equal(iscsi_pdu_parse(out, (size_t)i, &dg, 8192, &v), 0);
		assert_int_equal(iscsi_pdu_parse(out, (size_t)n, &dg, 8192, &v), n);
		assert_int_equal(v.opcode, ISCSI_OP_SCSI_CMD);
		assert_true(v.immediate);
		assert_int_equal(v.dlen, 5);
		assert_memory_equal(v.data, "hello", 5);
		assert_int_equal(be32_get(v.bhs + 16), 0x1234);
		/* padding is zero on the wire */
		size_t pad_at = 48 + (dg.header ? 4 : 0) + 5;
		assert_memory_equal(out + pad_at, "\0\0\0", 3);
		if (dg.header) {
			out[20] ^= 1;
			assert_int_equal(iscsi_pdu_parse(out, (size_t)n, &dg, 8192, &v), -EBADMSG);
			out[20] ^= 1;
		}
		if (dg.data) {
			out[pad_at - 1] ^= 1;
			assert_int_equal(iscsi_pdu_parse(out, (size_t)n, &dg, 8192, &v), -EILSEQ);
			out[pad_at - 1] ^= 1;
		}
		/* too long for the receiver */
		assert_int_equal(iscsi_pdu_parse(out, (size_t)n, &dg, 4, &v), -EMSGSIZE);
	}
}

static void test_ahs_ext_cdb(void **st)
{
	(void)st;
	struct iscsi_digests dg = { 0, 0 };
	uint8_t buf[128];
	mk_bhs(buf, ISCSI_OP_SCSI_CMD, 0, 5); /* 20 bytes of AHS */
	for (int i = 0; i < 16; i++)
		buf[32 + i] = (uint8_t)i;
	be16_put(buf + 48, 17); /* 16 CDB bytes + the reserved byte */
	buf[50] = 1;
	buf[51] = 0;
	for (int i = 0; i < 16; i++)
		buf[52 + i] = (uint8_t)(16 + i);
	struct iscsi_pdu_view v;
	assert_int_equal(iscsi_pdu_parse(buf, 68, &dg, 0, &v), 68);
	uint8_t cdb[64];
	assert_int_equal(iscsi_cdb_assemble(&v, cdb, sizeof(cdb)), 32);
	for (int i = 0; i < 32; i++)
		assert_int_equal(cdb[i], i);
	/* an AHS whose length overruns TotalAHSLength is malformed */
	be16_put(buf + 48, 40);
	assert_int_equal(iscsi_pdu_parse(buf, 68, &dg, 0, &v), -EPROTO);
	be16_put(buf + 48, 0);
	assert_int_equal(iscsi_pdu_parse(buf, 68, &dg, 0, &v), -EPROTO);
}

static void test_lun(void **st)
{
	(void)st;
	uint8_t l[8];
	for (uint64_t lun = 0; lun < 16384; lun += 37) {
		iscsi_lun_encode(lun, l);
		assert_int_equal(iscsi_lun_decode(l), lun);
	}
	memset(l, 0, 8);
	l[0] = 0x01; /* peripheral addressing with bus 1: not ours */
	assert_true(iscsi_lun_decode(l) > 16383);
	l[0] = 0xc0; /* extended addressing */
	assert_true(iscsi_lun_decode(l) > 16383);
}

static void test_text_parse(void **st)
{
	(void)st;
	static const char t[] = "InitiatorName=iqn.x\0AuthMethod=CHAP,None\0Empty=\0\0\0";
	struct iscsi_kv kv[8];
	assert_int_equal(iscsi_text_parse(t, sizeof(t) - 1, kv, 8), 3);
	assert_true(iscsi_kv_key_is(&kv[0], "InitiatorName"));
	assert_false(iscsi_kv_key_is(&kv[0], "InitiatorNam"));
	char v[32];
	assert_int_equal(iscsi_kv_value(&kv[1], v, sizeof(v)), 0);
	assert_string_equal(v, "CHAP,None");
	assert_int_equal(kv[2].vlen, 0);
	assert_int_equal(iscsi_kv_value(&kv[1], v, 4), -ENAMETOOLONG);
	assert_int_equal(iscsi_text_parse(t, sizeof(t) - 1, kv, 2), -E2BIG);
	assert_int_equal(iscsi_text_parse("a=b", 3, kv, 8), -EPROTO);   /* no NUL */
	assert_int_equal(iscsi_text_parse("ab\0", 3, kv, 8), -EINVAL);  /* no '=' */
	assert_int_equal(iscsi_text_parse("=b\0", 3, kv, 8), -EINVAL);  /* empty key */
	assert_int_equal(iscsi_text_parse("a b=c\0", 6, kv, 8), -EINVAL);
	char big[ISCSI_VALUE_MAX + 8];
	memset(big, 'x', sizeof(big));
	big[0] = 'k';
	big[1] = '=';
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(iscsi_text_parse(big, sizeof(big), kv, 8), -EINVAL);
	assert_int_equal(iscsi_text_parse("", 0, kv, 8), 0);
}

static void test_text_build_and_values(void **st)
{
	(void)st;
	char buf[32];
	size_t len = 0;
	assert_int_equal(iscsi_text_add(buf, sizeof(buf), &len, "MaxConnections", "1"), 0);
	assert_int_equal(len, 17);
	assert_memory_equal(buf, "MaxConnections=1\0", 17);
	assert_int_equal(iscsi_text_add(buf, sizeof(buf), &len, "TooLongForTheRest", "x"), -ENOSPC);
	assert_int_equal(len, 17);
	uint64_t n;
	assert_int_equal(iscsi_text_number("262144", &n), 0);
	assert_int_equal(n, 262144);
	assert_int_equal(iscsi_text_number("0x10", &n), 0);
	assert_int_equal(n, 16);
	assert_int_equal(iscsi_text_number("", &n), -EINVAL);
	assert_int_equal(iscsi_text_number("12a", &n), -EINVAL);
	assert_int_equal(iscsi_text_number("99999999999999999999999", &n), -EINVAL);
	uint8_t b[16];
	assert_int_equal(iscsi_text_binary("0x0102ff", b, sizeof(b)), 3);
	assert_memory_equal(b, "\x01\x02\xff", 3);
	assert_int_equal(iscsi_text_binary("0x102", b, sizeof(b)), 2); /* odd: leading 0 */
	assert_memory_equal(b, "\x01\x02", 2);
	assert_int_equal(iscsi_text_binary("0bAQL/", b, sizeof(b)), 3);
	assert_memory_equal(b, "\x01\x02\xff", 3);
	assert_int_equal(iscsi_text_binary("0bAQI=", b, sizeof(b)), 2);
	assert_int_equal(iscsi_text_binary("0x", b, sizeof(b)), -EINVAL);
	assert_int_equal(iscsi_text_binary("0xzz", b, sizeof(b)), -EINVAL);
	assert_int_equal(iscsi_text_binary("1234", b, sizeof(b)), -EINVAL);
	assert_int_equal(iscsi_text_binary("0x0102", b, 1), -ENOSPC);
	char hex[40];
	iscsi_text_hex((const uint8_t *)"\x00\xab", 2, hex);
	assert_string_equal(hex, "0x00ab");
}

static void test_sn_arith(void **st)
{
	(void)st;
	assert_true(sn_lt(1, 2));
	assert_true(sn_lt(0xffffffffu, 0));
	assert_false(sn_lt(0, 0xffffffffu));
	assert_true(sn_le(5, 5));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_digest_rfc_vectors),
		cmocka_unit_test(test_parse_roundtrip),
		cmocka_unit_test(test_ahs_ext_cdb),
		cmocka_unit_test(test_lun),
		cmocka_unit_test(test_text_parse),
		cmocka_unit_test(test_text_build_and_values),
		cmocka_unit_test(test_sn_arith),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
