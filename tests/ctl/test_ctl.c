/* Unit tests of the control protocol: frame codec and command grammar. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctl/ctl.h"

/* ---- codec --------------------------------------------------------------- */
static void test_frame_roundtrip(void **state)
{
	(void)state;
	uint8_t buf[64];
	int n = ctl_frame_encode(buf, sizeof(buf), CTL_OUT, "hello", 5);
	assert_int_equal(n, 10);
	assert_memory_equal(buf, "\0\0\0\5\4hello", 10);
	struct ctl_frame f;
	assert_int_equal(ctl_frame_decode(buf, (size_t)n, &f), 10);
	assert_int_equal(f.type, CTL_OUT);
	assert_int_equal(f.len, 5);
	assert_memory_equal(f.payload, "hello", 5);
	/* Every prefix is "incomplete", never an error. */
	for (int i = 0; i < n; i++)
		assert_int_equal(ctl_frame_decode(buf, (size_t)i, &f), 0);
	/* Two frames back to back decode one at a time. */
	int m = ctl_frame_encode(buf + n, sizeof(buf) - (size_t)n, CTL_IN_END, NULL, 0);
	assert_int_equal(m, 5);
	assert_int_equal(ctl_frame_decode(buf, (size_t)(n + m), &f), 10);
	assert_int_equal(ctl_frame_decode(buf + 10, (size_t)m, &f), 5);
	assert_int_equal(f.type, CTL_IN_END);
}

static void test_frame_rejects(void **state)
{
	(void)state;
	uint8_t buf[32];
	struct ctl_frame f;
	assert_int_equal(ctl_frame_encode(buf, sizeof(buf), 0, NULL, 0), -EINVAL);
	assert_int_equal(ctl_frame_encode(buf, sizeof(buf), 99, NULL, 0), -EINVAL);
	assert_int_equal(ctl_frame_encode(buf, 8, CTL_OUT, "0123456789", 10), -ENOBUFS);
	assert_int_equal(ctl_frame_encode(buf, sizeof(buf), CTL_OUT, buf, CTL_MAX_PAYLOAD + 1),
	                 -EMSGSIZE);
	/* Oversized length: refused from the header alone. */
	uint8_t big[5] = {0x00, 0x20, 0x00, 0x00, CTL_OUT};
	assert_int_equal(ctl_frame_decode(big, 5, &f), -EMSGSIZE);
	uint8_t huge[5] = {0xff, 0xff, 0xff, 0xff, CTL_OUT};
	assert_int_equal(ctl_frame_decode(huge, 5, &f), -EMSGSIZE);
	/* Unknown type, and fixed-size types with the wrong length. */
	uint8_t badtype[5] = {0, 0, 0, 0, 0x42};
	assert_int_equal(ctl_frame_decode(badtype, 5, &f), -EPROTO);
	uint8_t badexit[8] = {0, 0, 0, 3, CTL_EXIT, 0, 0, 0};
	assert_int_equal(ctl_frame_decode(badexit, 8, &f), -EPROTO);
	uint8_t badend[6] = {0, 0, 0, 1, CTL_IN_END, 0};
	assert_int_equal(ctl_frame_decode(badend, 6, &f), -EPROTO);
	uint8_t badprog[5] = {0, 0, 0, 3, CTL_PROGRESS};
	assert_int_equal(ctl_frame_decode(badprog, 5, &f), -EPROTO);
}

static void test_req_roundtrip(void **state)
{
	(void)state;
	const char *in[] = {"volume", "create", "db", "--size", "1G", ""};
	uint8_t buf[256];
	int n = ctl_req_encode(buf, sizeof(buf), 6, in);
	assert_true(n > 0);
	const char *out[8];
	int argc;
	assert_int_equal(ctl_req_decode(buf, (size_t)n, &argc, out, 8), 0);
	assert_int_equal(argc, 6);
	for (int i = 0; i < 6; i++)
		assert_string_equal(out[i], in[i]);
	assert_null(out[6]);
	/* Truncated anywhere: rejected (never reads past the payload). */
	for (int i = 0; i < n; i++)
		assert_int_equal(ctl_req_decode(buf, (size_t)i, &argc, out, 8), -EPROTO);
	/* Trailing garbage after the last string. */
	buf[n] = 'x';
	assert_int_equal(ctl_req_decode(buf, (size_t)n + 1, &argc, out, 8), -EPROTO);
	/* More strings than the caller's array holds. */
	assert_int_equal(ctl_req_decode(buf, (size_t)n, &argc, out, 6), -EPROTO);
	/* argc that lies. */
	uint8_t lie[8] = {0xff, 0xff, 0xff, 0xff, 'a', 0, 'b', 0};
	assert_int_equal(ctl_req_decode(lie, sizeof(lie), &argc, out, 8), -EPROTO);
	/* Too small a buffer, too many args. */
	assert_int_equal(ctl_req_encode(buf, 10, 6, in), -ENOBUFS);
	const char *many[CTL_MAX_ARGC + 1];
	for (size_t i = 0; i < ARRAY_SIZE(many); i++)
		many[i] = "x";
	assert_int_equal(ctl_req_encode(buf, sizeof(buf), (int)ARRAY_SIZE(many), many), -E2BIG);
}

static void test_progress_exit(void **state)
{
	(void)state;
	uint8_t buf[128];
	int n = ctl_progress_encode(buf, sizeof(buf), 123456789012ull, 987654321098ull, "export");
	assert_int_equal(n, 17 + 6);
	uint64_t d, t;
	char label[CTL_LABEL_MAX + 1];
	assert_int_equal(ctl_progress_decode(buf, (size_t)n, &d, &t, label), 0);
	assert_int_equal(d, 123456789012ull);
	assert_int_equal(t, 987654321098ull);
	assert_string_equal(label, "export");
	assert_int_equal(ctl_progress_decode(buf, (size_t)n - 1, &d, &t, label), -EPROTO);
	buf[16] = 200; /* label longer than allowed */
	assert_int_equal(ctl_progress_decode(buf, (size_t)n, &d, &t, label), -EPROTO);
	/* A long label is cut, not overflowed. */
	char longl[200];
	memset(longl, 'a', sizeof(longl) - 1);
	longl[sizeof(longl) - 1] = '\0';
	n = ctl_progress_encode(buf, sizeof(buf), 1, 2, longl);
	assert_int_equal(n, 17 + CTL_LABEL_MAX);
	assert_int_equal(ctl_progress_encode(buf, 10, 1, 2, "x"), -ENOBUFS);

	int32_t st;
	assert_int_equal(ctl_exit_encode(buf, sizeof(buf), -3), 4);
	assert_int_equal(ctl_exit_decode(buf, 4, &st), 0);
	assert_int_equal(st, -3);
	assert_int_equal(ctl_exit_decode(buf, 3, &st), -EPROTO);
	assert_int_equal(ctl_exit_encode(buf, 3, 0), -ENOBUFS);
}

/* ctl_send / ctl_recv over a socketpair, with a frame bigger than the
 * socket buffer (so both sides really interleave). */
static void test_io(void **state)
{
	(void)state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	uint8_t *payload = malloc(CTL_CHUNK), *rx = malloc(CTL_MAX_FRAME);
	assert_non_null(payload);
	assert_non_null(rx);
	for (size_t i = 0; i < CTL_CHUNK; i++)
		payload[i] = (uint8_t)(i * 7 + 3);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[0]);
		int e = ctl_send(sv[1], CTL_IN, payload, CTL_CHUNK, 5000);
		e = e ? e : ctl_send(sv[1], CTL_IN_END, NULL, 0, 5000);
		_exit(e ? 1 : 0);
	}
	close(sv[1]);
	struct ctl_frame f;
	assert_int_equal(ctl_recv(sv[0], rx, &f, 5000), 0);
	assert_int_equal(f.type, CTL_IN);
	assert_int_equal(f.len, CTL_CHUNK);
	assert_memory_equal(f.payload, payload, CTL_CHUNK);
	assert_int_equal(ctl_recv(sv[0], rx, &f, 5000), 0);
	assert_int_equal(f.type, CTL_IN_END);
	/* Peer gone: a clean EOF before a header. */
	assert_int_equal(ctl_recv(sv[0], rx, &f, 5000), -ECONNRESET);
	close(sv[0]);

	/* A stalled peer costs the deadline, not a hang. */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	uint64_t t0 = now_mono_ns();
	assert_int_equal(ctl_recv(sv[0], rx, &f, 200), -ETIMEDOUT);
	assert_true(now_mono_ns() - t0 >= 150000000ull);
	/* Half a frame then EOF. */
	assert_int_equal(write(sv[1], "\0\0\0\5\4ab", 7), 7);
	close(sv[1]);
	assert_int_equal(ctl_recv(sv[0], rx, &f, 1000), -EPIPE);
	close(sv[0]);
	int wst;
	waitpid(pid, &wst, 0);
	assert_true(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
	free(payload);
	free(rx);
}

/* ---- grammar ------------------------------------------------------------- */
#define ARGV(...) ((const char *[]){__VA_ARGS__})
#define NARGS(...) ((int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)))
#define PARSE(cmd, err, ...)                                                             \
	ctl_cmd_parse(NARGS(__VA_ARGS__), ARGV(__VA_ARGS__), (cmd), (err), sizeof(err))

static void test_grammar_accepts(void **state)
{
	(void)state;
	struct ctl_cmd c;
	char err[256];
	assert_int_equal(PARSE(&c, err, "volume", "create", "db", "--size", "1G"), 0);
	assert_string_equal(c.group->name, "volume");
	assert_string_equal(c.spec->verb, "create");
	assert_string_equal(ctl_pos(&c, "NAME")->vol, "db");
	assert_int_equal(ctl_flag(&c, "size")->u64, 1ull << 30);
	assert_false(ctl_flag(&c, "object-size")->set);

	assert_int_equal(PARSE(&c, err, "volume", "create", "db", "--size=4096", "--object-size",
	                       "64K", "--block-size", "4096"),
	                 0);
	assert_int_equal(ctl_flag(&c, "size")->u64, 4096);
	assert_int_equal(ctl_flag(&c, "object-size")->u64, 65536);
	assert_int_equal(ctl_flag(&c, "block-size")->u64, 4096);
	/* Flags before positionals. */
	assert_int_equal(PARSE(&c, err, "volume", "create", "--size", "1M", "db"), 0);
	assert_string_equal(ctl_pos(&c, "NAME")->vol, "db");

	/* a CTL_REST positional takes every value left */
	assert_int_equal(PARSE(&c, err, "group", "create", "pg", "data", "wal", "idx"), 0);
	assert_string_equal(ctl_pos(&c, "NAME")->str, "pg");
	assert_int_equal(c.n_rest, 3);
	assert_string_equal(c.rest[0], "data");
	assert_string_equal(c.rest[2], "idx");
	assert_string_equal(ctl_pos(&c, "VOLUME...")->vol, "data");
	assert_int_equal(PARSE(&c, err, "group", "create", "pg", "data"), 0);
	assert_int_equal(c.n_rest, 1);
	assert_int_equal(PARSE(&c, err, "group", "info", "pg", "--json"), 0);
	assert_int_equal(c.n_rest, 0);

	assert_int_equal(PARSE(&c, err, "volume", "list"), 0);
	assert_false(ctl_flag(&c, "json")->set);
	assert_int_equal(PARSE(&c, err, "volume", "list", "--json"), 0);
	assert_true(ctl_flag(&c, "json")->set);
	assert_int_equal(PARSE(&c, err, "volume", "info", "db", "--json"), 0);
	assert_int_equal(PARSE(&c, err, "volume", "rm", "db", "--force"), 0);
	assert_true(ctl_flag(&c, "force")->set);
	assert_int_equal(PARSE(&c, err, "volume", "resize", "db", "--size", "2G", "--shrink"), 0);
	assert_int_equal(ctl_flag(&c, "size")->u64, 2ull << 30);
	assert_true(ctl_flag(&c, "shrink")->set);
	assert_int_equal(PARSE(&c, err, "status"), 0);
	assert_string_equal(c.group->name, "status");
	assert_false(ctl_flag(&c, "json")->set);
	assert_int_equal(PARSE(&c, err, "status", "--json"), 0);
	assert_true(ctl_flag(&c, "json")->set);

	assert_int_equal(PARSE(&c, err, "volume", "write", "db", "--offset", "1M", "f.img"), 0);
	const struct ctl_val *fin = ctl_file_arg(&c, CTL_A_FILE_IN);
	assert_non_null(fin);
	assert_true(fin->set);
	assert_string_equal(fin->str, "f.img");
	assert_int_equal(fin->argi, 5);
	assert_int_equal(ctl_flag(&c, "offset")->u64, 1u << 20);
	assert_int_equal(PARSE(&c, err, "volume", "write", "db", "--offset", "0", "-"), 0);
	assert_int_equal(PARSE(&c, err, "volume", "write", "db", "--offset", "0"), 0);
	assert_false(ctl_file_arg(&c, CTL_A_FILE_IN)->set);
	assert_null(ctl_file_arg(&c, CTL_A_FILE_OUT));

	assert_int_equal(
	    PARSE(&c, err, "volume", "discard", "db", "--offset", "4K", "--length", "8K"), 0);
	assert_int_equal(ctl_flag(&c, "length")->u64, 8192);

	assert_int_equal(PARSE(&c, err, "volume", "export", "db@s1", "out.img"), 0);
	assert_string_equal(ctl_pos(&c, "NAME[@SNAP]")->vol, "db");
	assert_string_equal(ctl_pos(&c, "NAME[@SNAP]")->snap, "s1");
	assert_string_equal(ctl_file_arg(&c, CTL_A_FILE_OUT)->str, "out.img");
	assert_int_equal(PARSE(&c, err, "volume", "export", "db"), 0);
	assert_string_equal(ctl_pos(&c, "NAME[@SNAP]")->snap, "");
	assert_int_equal(PARSE(&c, err, "volume", "md5", "db@s1"), 0);
	assert_int_equal(PARSE(&c, err, "volume", "md5", "db"), 0);

	assert_int_equal(PARSE(&c, err, "snap", "create", "db@s1"), 0);
	assert_string_equal(ctl_pos(&c, "NAME@SNAP")->snap, "s1");
	assert_int_equal(PARSE(&c, err, "snap", "list", "db", "--json"), 0);
	assert_int_equal(PARSE(&c, err, "snap", "rm", "db@s1"), 0);

	/* diff: one snapshot is TO, two are FROM TO. */
	assert_int_equal(PARSE(&c, err, "snap", "diff", "db@s2"), 0);
	assert_false(ctl_pos(&c, "NAME@FROM")->set);
	assert_string_equal(ctl_pos(&c, "NAME@TO")->snap, "s2");
	assert_int_equal(PARSE(&c, err, "snap", "diff", "db@s1", "db@s2", "--json"), 0);
	assert_string_equal(ctl_pos(&c, "NAME@FROM")->snap, "s1");
	assert_string_equal(ctl_pos(&c, "NAME@TO")->snap, "s2");
	assert_true(ctl_flag(&c, "json")->set);

	/* Unknown names give a static unset value, never NULL. */
	assert_false(ctl_flag(&c, "nope")->set);
	assert_false(ctl_pos(&c, "NOPE")->set);
}

static void expect_usage(int r, const char *err, const char *needle)
{
	assert_int_equal(r, -EINVAL);
	if (!strstr(err, needle))
		fail_msg("error '%s' does not mention '%s'", err, needle);
	assert_null(strchr(err, '\n'));
}

static void test_grammar_rejects(void **state)
{
	(void)state;
	struct ctl_cmd c;
	char err[256];
	expect_usage(ctl_cmd_parse(0, ARGV(NULL), &c, err, sizeof(err)), err, "missing command");
	expect_usage(PARSE(&c, err, "frob"), err, "unknown command 'frob'");
	expect_usage(PARSE(&c, err, "volume"), err, "missing command after 'volume'");
	expect_usage(PARSE(&c, err, "volume", "frob"), err, "unknown command 'volume frob'");
	expect_usage(PARSE(&c, err, "volume", "create", "db"), err, "missing --size");
	expect_usage(PARSE(&c, err, "volume", "resize", "db"), err, "missing --size");
	expect_usage(PARSE(&c, err, "status", "extra"), err, "unexpected argument 'extra' for 'status'");
	expect_usage(PARSE(&c, err, "status", "--frob"), err, "unknown option '--frob' for 'status'");
	expect_usage(PARSE(&c, err, "volume", "create", "--size", "1G"), err, "missing NAME");
	expect_usage(PARSE(&c, err, "group", "create", "pg"), err, "missing VOLUME...");
	expect_usage(PARSE(&c, err, "group", "create", "pg", "a", "b@s"), err,
	             "a snapshot is not allowed here");
	expect_usage(PARSE(&c, err, "group", "create", "pg", "a", "../x"), err, "bad volume name");
	expect_usage(PARSE(&c, err, "group", "add", "pg", "a", "b"), err, "unexpected argument 'b'");
	expect_usage(PARSE(&c, err, "volume", "create", "db", "--size"), err, "needs a value");
	expect_usage(PARSE(&c, err, "volume", "create", "db", "--size", "1Q"), err, "bad size '1Q'");
	expect_usage(PARSE(&c, err, "volume", "create", "db", "--size", "-1"), err, "bad size");
	expect_usage(PARSE(&c, err, "volume", "create", "db", "--size", "99999999999T"), err,
	             "too large");
	expect_usage(PARSE(&c, err, "volume", "create", "db", "--size", "1G", "--block-size", "1024"),
	             err, "one of 512|4096");
	expect_usage(PARSE(&c, err, "volume", "create", "db", "--size", "1G", "--frob"), err,
	             "unknown option '--frob'");
	expect_usage(PARSE(&c, err, "volume", "create", "db", "--size", "1G", "-x"), err,
	             "unknown option '-x'");
	expect_usage(PARSE(&c, err, "volume", "create", "db", "--size", "1G", "--size", "2G"), err,
	             "given twice");
	expect_usage(PARSE(&c, err, "volume", "create", "db", "extra", "--size", "1G"), err,
	             "unexpected argument 'extra'");
	expect_usage(PARSE(&c, err, "volume", "create", "-bad", "--size", "1G"), err,
	             "unknown option");
	expect_usage(PARSE(&c, err, "volume", "create", ".bad", "--size", "1G"), err,
	             "bad volume name '.bad'");
	expect_usage(PARSE(&c, err, "volume", "create", "a/b", "--size", "1G"), err,
	             "bad volume name");
	expect_usage(PARSE(&c, err, "volume", "create", "db@s", "--size", "1G"), err,
	             "bad volume name");
	char longname[80];
	memset(longname, 'a', 65);
	longname[65] = '\0';
	expect_usage(PARSE(&c, err, "volume", "create", longname, "--size", "1G"), err,
	             "bad volume name");
	expect_usage(PARSE(&c, err, "volume", "list", "--json=1"), err, "takes no value");
	expect_usage(PARSE(&c, err, "volume", "info"), err, "missing NAME");
	expect_usage(PARSE(&c, err, "volume", "write", "db@s1", "--offset", "0"), err,
	             "snapshots are read-only");
	expect_usage(PARSE(&c, err, "volume", "write", "db"), err, "missing --offset");
	expect_usage(PARSE(&c, err, "volume", "write", "db", "--offset", "0", "a", "b"), err,
	             "unexpected argument 'b'");
	expect_usage(PARSE(&c, err, "volume", "discard", "db@s", "--offset", "0", "--length", "1"),
	             err, "snapshots are read-only");
	expect_usage(PARSE(&c, err, "volume", "discard", "db", "--offset", "0"), err,
	             "missing --length");
	expect_usage(PARSE(&c, err, "volume", "export", "db@"), err, "bad snapshot name");
	expect_usage(PARSE(&c, err, "snap", "create", "db"), err, "expected NAME@SNAP");
	expect_usage(PARSE(&c, err, "snap", "create", "db@.x"), err, "bad snapshot name");
	expect_usage(PARSE(&c, err, "snap", "rm", "db"), err, "expected NAME@SNAP");
	expect_usage(PARSE(&c, err, "snap", "list", "db@s"), err, "bad volume name");
	expect_usage(PARSE(&c, err, "snap", "diff"), err, "missing NAME@TO");
	expect_usage(PARSE(&c, err, "snap", "diff", "db"), err, "expected NAME@SNAP");
	expect_usage(PARSE(&c, err, "snap", "diff", "a@1", "a@2", "a@3"), err,
	             "unexpected argument 'a@3'");
}

static void test_grammar_help(void **state)
{
	(void)state;
	struct ctl_cmd c;
	char err[256];
	struct sbuf b;

	assert_int_equal(PARSE(&c, err, "--help"), 0);
	assert_true(c.help);
	assert_null(c.group);
	sbuf_init(&b);
	ctl_help(&c, "ferry", &b);
	assert_non_null(strstr(b.p, "volume create NAME --size SIZE"));
	assert_non_null(strstr(b.p, "snap diff [NAME@FROM] NAME@TO [--json]"));
	sbuf_free(&b);

	assert_int_equal(PARSE(&c, err, "volume", "--help"), 0);
	assert_true(c.help);
	assert_non_null(c.group);
	assert_null(c.spec);
	sbuf_init(&b);
	ctl_help(&c, "ferry", &b);
	assert_non_null(strstr(b.p, "discard"));
	sbuf_free(&b);

	/* --help wins over otherwise missing arguments. */
	assert_int_equal(PARSE(&c, err, "volume", "create", "--help"), 0);
	assert_true(c.help);
	assert_string_equal(c.spec->verb, "create");
	sbuf_init(&b);
	ctl_help(&c, "ferry", &b);
	assert_non_null(strstr(b.p, "--block-size 512|4096"));
	assert_non_null(strstr(b.p, "(required)"));
	sbuf_free(&b);

	/* A group that is one command: "status". */
	assert_int_equal(PARSE(&c, err, "status", "--help"), 0);
	assert_true(c.help);
	assert_string_equal(c.spec->verb, "");
	sbuf_init(&b);
	ctl_help(&c, "ferry", &b);
	assert_non_null(strstr(b.p, "usage: ferry --pool DIR status [--json]"));
	sbuf_free(&b);

	/* After "--", --help is a positional. */
	expect_usage(PARSE(&c, err, "volume", "info", "--", "--help"), err, "bad volume name");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_roundtrip), cmocka_unit_test(test_frame_rejects),
		cmocka_unit_test(test_req_roundtrip),   cmocka_unit_test(test_progress_exit),
		cmocka_unit_test(test_io),              cmocka_unit_test(test_grammar_accepts),
		cmocka_unit_test(test_grammar_rejects), cmocka_unit_test(test_grammar_help),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
