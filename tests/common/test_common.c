#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"

static void test_parse_size(void **st)
{
	(void)st;
	uint64_t v;
	assert_int_equal(parse_size("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(parse_size("4K", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(parse_size("200G", &v), 0);
	assert_int_equal(v, 200ull << 30);
	assert_int_equal(parse_size("16T", &v), 0);
	assert_int_equal(v, 16ull << 40);
	assert_int_equal(parse_size("1MiB", &v), 0);
	assert_int_equal(v, 1ull << 20);
	assert_int_equal(parse_size("", &v), -EINVAL);
	assert_int_equal(parse_size("-1", &v), -EINVAL);
	assert_int_equal(parse_size("1X", &v), -EINVAL);
	assert_int_equal(parse_size("K", &v), -EINVAL);
	assert_int_equal(parse_size("99999999999999999999", &v), -ERANGE);
	assert_int_equal(parse_size("17179869184T", &v), -ERANGE);
}

static void test_parse_duration(void **st)
{
	(void)st;
	uint64_t v;
	assert_int_equal(parse_duration("90", &v), 0);
	assert_int_equal(v, 90);
	assert_int_equal(parse_duration("90s", &v), 0);
	assert_int_equal(v, 90);
	assert_int_equal(parse_duration("5m", &v), 0);
	assert_int_equal(v, 300);
	assert_int_equal(parse_duration("1h", &v), 0);
	assert_int_equal(v, 3600);
	assert_int_equal(parse_duration("2d", &v), 0);
	assert_int_equal(v, 172800);
	assert_int_equal(parse_duration("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(parse_duration("", &v), -EINVAL);
	assert_int_equal(parse_duration("m", &v), -EINVAL);
	assert_int_equal(parse_duration("5x", &v), -EINVAL);
	assert_int_equal(parse_duration("5ms", &v), -EINVAL);
	assert_int_equal(parse_duration("-5", &v), -EINVAL);
	assert_int_equal(parse_duration("1 h", &v), -EINVAL);
	assert_int_equal(parse_duration("99999999999999999999", &v), -ERANGE);
	assert_int_equal(parse_duration("307445734561825861h", &v), -ERANGE);
}

static void test_name_valid(void **st)
{
	(void)st;
	assert_true(name_valid("db"));
	assert_true(name_valid("a.b-c_d9"));
	assert_false(name_valid(""));
	assert_false(name_valid("."));
	assert_false(name_valid(".."));
	assert_false(name_valid("-x"));
	assert_false(name_valid("a/b"));
	assert_false(name_valid("a b"));
	char long_name[70];
	memset(long_name, 'a', 64);
	long_name[64] = 0;
	assert_true(name_valid(long_name));
	long_name[64] = 'a';
	long_name[65] = 0;
	assert_false(name_valid(long_name));
}

static void test_json(void **st)
{
	(void)st;
	struct sbuf b;
	struct jw w;
	sbuf_init(&b);
	jw_init(&w, &b);
	jw_obj_begin(&w);
	jw_key(&w, "a");
	jw_u64(&w, 1);
	jw_key(&w, "s");
	jw_str(&w, "q\"\n");
	jw_key(&w, "l");
	jw_arr_begin(&w);
	jw_u64(&w, 1);
	jw_obj_begin(&w);
	jw_obj_end(&w);
	jw_null(&w);
	jw_arr_end(&w);
	jw_key(&w, "t");
	jw_bool(&w, true);
	jw_obj_end(&w);
	assert_string_equal(b.p, "{\"a\":1,\"s\":\"q\\\"\\n\",\"l\":[1,{},null],\"t\":true}");
	sbuf_free(&b);
}

static void test_crc32c(void **st)
{
	(void)st;
	/* The standard check value of CRC-32C. */
	assert_int_equal(crc32c(0, "123456789", 9), 0xE3069283u);
	/* Chaining gives the same result as one call. */
	uint32_t c = crc32c(0, "1234", 4);
	assert_int_equal(crc32c(c, "56789", 5), 0xE3069283u);
}

static void test_zero(void **st)
{
	(void)st;
	char buf[8193];
	memset(buf, 0, sizeof(buf));
	assert_true(buf_is_zero(buf, sizeof(buf)));
	assert_true(buf_is_zero(buf + 1, sizeof(buf) - 1));
	for (size_t i = 0; i < sizeof(buf); i += 97) {
		buf[i] = 1;
		assert_false(buf_is_zero(buf, sizeof(buf)));
		buf[i] = 0;
	}
	buf[8192] = 1;
	assert_false(buf_is_zero(buf + 3, 8190));
}


static void test_split_hostport(void **st)
{
	(void)st;
	char h[64], p[8];
	assert_int_equal(split_hostport("127.0.0.1:3260", h, sizeof(h), p, sizeof(p)), 0);
	assert_string_equal(h, "127.0.0.1");
	assert_string_equal(p, "3260");
	assert_int_equal(split_hostport("[::1]:7450", h, sizeof(h), p, sizeof(p)), 0);
	assert_string_equal(h, "::1");
	assert_string_equal(p, "7450");
	assert_int_equal(split_hostport(":0", h, sizeof(h), p, sizeof(p)), 0);
	assert_string_equal(h, "");
	assert_string_equal(p, "0");
	assert_int_equal(split_hostport("site-b:65535", h, sizeof(h), p, sizeof(p)), 0);
	static const char *const bad[] = {"", "host", "host:", "host:65536", "host:-1", "host:1x",
	                                  "::1:3260", "[::1]", "[::1]3260", "[]:1", "[::1:1",
	                                  "a:b:1", "host:99999999999999999999"};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		assert_int_equal(split_hostport(bad[i], h, sizeof(h), p, sizeof(p)), -EINVAL);
	char small[4];
	assert_int_equal(split_hostport("longhost:1", small, sizeof(small), p, sizeof(p)), -EINVAL);
	assert_int_equal(split_hostport(NULL, h, sizeof(h), p, sizeof(p)), -EINVAL);
}

struct hooked {
	int lines;
	enum log_level last;
	char msg[128];
};

static void hook(void *ctx, enum log_level level, const char *msg)
{
	struct hooked *h = ctx;
	h->lines++;
	h->last = level;
	snprintf(h->msg, sizeof(h->msg), "%s", msg);
}

/* A log file on fd 2, reopened after it was moved (logrotate); the level
 * filters before the hook sees a line. */
static void test_log_file(void **st)
{
	(void)st;
	char dir[] = "/tmp/ferry-test-ops-log.XXXXXX", a[64], b[64];
	assert_non_null(mkdtemp(dir));
	snprintf(a, sizeof(a), "%s/a.log", dir);
	snprintf(b, sizeof(b), "%s/a.log.1", dir);
	int saved = dup(2);
	assert_true(saved >= 0);
	struct hooked h = {0};
	log_set_hook(hook, &h);
	log_set_level(LOG_INFO);
	assert_int_equal(log_set_dest(LOG_TO_FILE, a), 0);
	log_info("first %d", 1);
	log_debug("not shown");
	assert_int_equal(h.lines, 1);
	assert_string_equal(h.msg, "first 1");
	assert_int_equal(rename(a, b), 0);
	assert_int_equal(log_reopen(), 0);
	log_warn("second");
	assert_int_equal(h.last, LOG_WARN);
	char *text;
	size_t len;
	assert_int_equal(read_file(b, 4096, &text, &len), 0);
	assert_non_null(strstr(text, "info: first 1"));
	assert_null(strstr(text, "second"));
	assert_null(strstr(text, "not shown"));
	free(text);
	assert_int_equal(read_file(a, 4096, &text, &len), 0);
	assert_non_null(strstr(text, "warn: second"));
	free(text);
	char nodir[96];
	snprintf(nodir, sizeof(nodir), "%s/none/x.log", dir);
	assert_int_equal(log_set_dest(LOG_TO_FILE, nodir), -ENOENT);
	log_set_hook(NULL, NULL);
	log_shutdown();
	dup2(saved, 2);
	close(saved);
	assert_string_equal(log_level_name(LOG_DEBUG), "debug");
	rm_rf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_name_valid),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_zero),
		cmocka_unit_test(test_split_hostport),
		cmocka_unit_test(test_log_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
