/* Clones and flatten in the local store: isolation from the parent, the
 * refusals that keep a parent's snapshot alive, clones of clones, a
 * randomized run against a reference model, and a flatten killed at each
 * stage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "store/store_int.h"
#include "store_test_util.h"

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>

struct fx {
	char *dir;
	struct store *st;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	f->dir = make_tmpdir();
	if (!f->dir || store_open(f->dir, &f->st))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	store_close(f->st);
	rm_rf(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

static struct vol *mkvol(struct fx *f, const char *name, uint64_t size, uint32_t osz)
{
	struct vol_params p = {.size = size, .object_size = osz, .block_size = 512};
	assert_int_equal(store_vol_create(f->st, name, &p), 0);
	struct vol *v;
	assert_int_equal(vol_open(f->st, name, &v), 0);
	return v;
}

static void expect_read(struct vol *v, const char *snap, uint64_t off, const void *want, size_t len)
{
	uint8_t *got = malloc(len);
	assert_int_equal(vol_read(v, snap, got, off, len), 0);
	assert_memory_equal(got, want, len);
	free(got);
}

static void expect_parent(struct vol *v, const char *want)
{
	struct vol_info vi;
	assert_int_equal(vol_info(v, &vi), 0);
	assert_string_equal(vi.parent, want);
}

static size_t nclones(struct fx *f, const char *src, const char *snap)
{
	char(*names)[STORE_NAME_MAX + 1];
	size_t n;
	assert_int_equal(store_vol_clones(f->st, src, snap, &names, &n), 0);
	free(names);
	return n;
}

static int count_diff(void *ctx, const struct diff_object *o)
{
	uint64_t *bytes = ctx;
	for (size_t i = 0; i < o->n_extents; i++)
		if (o->extents[i].kind == EXTENT_DATA)
			*bytes += o->extents[i].length;
	return 0;
}

static void test_clone_basic(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 8 << 20;
	struct store_caps caps;
	store_get_caps(f->st, &caps);
	assert_true(caps.clone);
	struct vol *v = mkvol(f, "v", size, 1 << 20);
	struct rng r = {42};
	uint8_t *s1 = malloc(size), *head = malloc(size), *c = malloc(size);
	memset(s1, 0, size);
	rng_fill(&r, s1, 3 << 20);                  /* objects 0..2 */
	rng_fill(&r, s1 + (5 << 20), 4096);          /* one block of object 5 */
	assert_int_equal(vol_write(v, s1, 0, size), 0);
	assert_int_equal(vol_snap_create(v, "s1"), 0);
	memcpy(head, s1, size);
	rng_fill(&r, head + 4096, 8192);
	assert_int_equal(vol_write(v, head + 4096, 4096, 8192), 0);

	assert_int_equal(store_vol_clone(f->st, "v", "nosuch", "c"), -ENOENT);
	assert_int_equal(store_vol_clone(f->st, "nosuch", "s1", "c"), -ENOENT);
	assert_int_equal(store_vol_clone(f->st, "v", "s1", "v"), -EINVAL);
	assert_int_equal(store_vol_clone(f->st, "v", "s1", "c"), 0);
	assert_int_equal(store_vol_clone(f->st, "v", "s1", "c"), -EEXIST);
	struct vol *cv;
	assert_int_equal(vol_open(f->st, "c", &cv), 0);
	expect_parent(cv, "v@s1");
	expect_parent(v, "");
	expect_read(cv, NULL, 0, s1, size);
	struct vol_info vi;
	assert_int_equal(vol_info(cv, &vi), 0);
	assert_int_equal(vi.size, size);
	assert_int_equal(vi.allocated_bytes, 0); /* thin: nothing copied */

	/* writes to the clone, partial blocks too (read-modify-write through
	 * the parent), never reach the parent */
	memcpy(c, s1, size);
	rng_fill(&r, c + 100, 5000);
	assert_int_equal(vol_write(cv, c + 100, 100, 5000), 0);
	rng_fill(&r, c + (2 << 20) + 7, 300);
	assert_int_equal(vol_write(cv, c + (2 << 20) + 7, (2 << 20) + 7, 300), 0);
	memset(c + (1 << 20), 0, 65536);
	assert_int_equal(vol_write_zeroes(cv, 1 << 20, 65536), 0);
	expect_read(cv, NULL, 0, c, size);
	expect_read(v, "s1", 0, s1, size);
	expect_read(v, NULL, 0, head, size);

	/* what keeps the parent's snapshot alive */
	assert_int_equal(nclones(f, "v", "s1"), 1);
	assert_int_equal(nclones(f, "v", NULL), 1);
	assert_int_equal(nclones(f, "c", NULL), 0);
	assert_int_equal(vol_snap_delete(v, "s1"), -EBUSY);
	assert_int_equal(vol_snap_create(v, "s2"), 0);
	assert_int_equal(vol_snap_delete(v, "s2"), 0); /* other snapshots go */
	assert_int_equal(vol_resize(cv, size * 2), -EBUSY);
	uint64_t bytes = 0;
	assert_int_equal(vol_diff(cv, NULL, NULL, count_diff, &bytes), -EOPNOTSUPP);
	/* the clone's own snapshots and diffs between them */
	assert_int_equal(vol_snap_create(cv, "a"), 0);
	rng_fill(&r, c + (4 << 20), 8192);
	assert_int_equal(vol_write(cv, c + (4 << 20), 4 << 20, 8192), 0);
	assert_int_equal(vol_snap_create(cv, "b"), 0);
	bytes = 0;
	assert_int_equal(vol_diff(cv, "a", "b", count_diff, &bytes), 0);
	assert_int_equal(bytes, 8192);
	/* object_is_zero sees the parent's data */
	bool zero;
	assert_int_equal(vol_object_is_zero(cv, "a", 5, &zero), 0);
	assert_false(zero);
	assert_int_equal(vol_object_is_zero(cv, "a", 6, &zero), 0);
	assert_true(zero);

	/* reopen from disk: the parent is opened with the clone */
	vol_close(cv);
	vol_close(v);
	store_close(f->st);
	assert_int_equal(store_open(f->dir, &f->st), 0);
	assert_int_equal(store_vol_remove(f->st, "v", true), -EBUSY); /* has a clone */
	assert_int_equal(vol_open(f->st, "c", &cv), 0);
	expect_read(cv, NULL, 0, c, size);
	assert_int_equal(vol_open(f->st, "v", &v), 0);
	expect_read(v, "s1", 0, s1, size);

	/* flatten: same content, no parent, the snapshot can go */
	assert_int_equal(vol_flatten(v, NULL, NULL), -EINVAL);
	assert_int_equal(vol_flatten(cv, NULL, NULL), 0);
	expect_parent(cv, "");
	expect_read(cv, NULL, 0, c, size);
	assert_int_equal(nclones(f, "v", NULL), 0);
	assert_int_equal(vol_snap_delete(v, "s1"), 0);
	vol_close(v);
	assert_int_equal(store_vol_remove(f->st, "v", true), 0);
	expect_read(cv, NULL, 0, c, size);
	/* a diff from creation now holds the parent's data */
	bytes = 0;
	assert_int_equal(vol_diff(cv, NULL, "a", count_diff, &bytes), 0);
	assert_true(bytes >= (3 << 20) - 65536);
	vol_close(cv);
	assert_int_equal(vol_open(f->st, "c", &cv), 0);
	expect_read(cv, NULL, 0, c, size);
	vol_close(cv);
	free(s1);
	free(head);
	free(c);
}

static void test_clone_chain(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 2 << 20;
	struct vol *v = mkvol(f, "v", size, 256 << 10);
	struct rng r = {7};
	uint8_t *a = calloc(size, 1), *b = malloc(size), *c = malloc(size);
	rng_fill(&r, a, size / 2);
	assert_int_equal(vol_write(v, a, 0, size), 0);
	assert_int_equal(vol_snap_create(v, "s"), 0);
	assert_int_equal(store_vol_clone(f->st, "v", "s", "c1"), 0);
	struct vol *c1, *c2;
	assert_int_equal(vol_open(f->st, "c1", &c1), 0);
	memcpy(b, a, size);
	rng_fill(&r, b + size / 2, 4096);
	assert_int_equal(vol_write(c1, b + size / 2, size / 2, 4096), 0);
	assert_int_equal(vol_snap_create(c1, "t"), 0);
	assert_int_equal(store_vol_clone(f->st, "c1", "t", "c2"), 0);
	assert_int_equal(vol_open(f->st, "c2", &c2), 0);
	memcpy(c, b, size);
	rng_fill(&r, c, 4096);
	assert_int_equal(vol_write(c2, c, 0, 4096), 0);
	expect_read(c2, NULL, 0, c, size);
	expect_read(c1, NULL, 0, b, size);
	expect_read(c1, "t", 0, b, size);
	expect_read(v, "s", 0, a, size);
	assert_int_equal(vol_snap_delete(c1, "t"), -EBUSY);
	/* flatten the middle one: the grandchild still reads through it */
	assert_int_equal(vol_flatten(c1, NULL, NULL), 0);
	expect_read(c2, NULL, 0, c, size);
	assert_int_equal(vol_snap_delete(v, "s"), 0);
	assert_int_equal(vol_flatten(c2, NULL, NULL), 0);
	expect_read(c2, NULL, 0, c, size);
	assert_int_equal(vol_snap_delete(c1, "t"), 0);
	vol_close(c2);
	vol_close(c1);
	vol_close(v);
	free(a);
	free(b);
	free(c);
}

/* Random writes to a parent and its clone, snapshots of the clone,
 * flattens, reopens: every read matches the reference buffers. */
static void test_clone_random(void **state)
{
	struct fx *f = *state;
	uint64_t seed = env_u64("FERRY_SEED", now_mono_ns() ^ (uint64_t)getpid());
	print_message("test_clone_random: FERRY_SEED=%llu\n", (unsigned long long)seed);
	struct rng r = {seed};
	const uint64_t size = (4 << 20) - 3 * 512; /* last block partial */
	uint8_t *p = calloc(size, 1), *ps = malloc(size), *c = malloc(size), *buf = malloc(size);
	uint8_t *cs = malloc(size);
	struct vol *v = mkvol(f, "v", size, 128 << 10), *cv = NULL;
	bool have_cs = false;
	int gen = 0;
	for (int op = 0; op < 600; op++) {
		uint64_t x = rng_below(&r, 100);
		uint64_t off = rng_below(&r, size), len = 1 + rng_below(&r, MIN(size - off, 70000));
		if (!cv) {
			/* a new clone of a fresh snapshot of the parent */
			char sn[16], cn[16];
			snprintf(sn, sizeof(sn), "s%d", gen);
			snprintf(cn, sizeof(cn), "c%d", gen++);
			rng_fill(&r, buf, len);
			memcpy(p + off, buf, len);
			assert_int_equal(vol_write(v, buf, off, len), 0);
			assert_int_equal(vol_snap_create(v, sn), 0);
			memcpy(ps, p, size);
			assert_int_equal(store_vol_clone(f->st, "v", sn, cn), 0);
			assert_int_equal(vol_open(f->st, cn, &cv), 0);
			memcpy(c, ps, size);
			have_cs = false;
		} else if (x < 30) {
			rng_fill(&r, buf, len);
			memcpy(c + off, buf, len);
			assert_int_equal(vol_write(cv, buf, off, len), 0);
		} else if (x < 40) {
			memset(c + off, 0, len);
			assert_int_equal(vol_write_zeroes(cv, off, len), 0);
		} else if (x < 55) {
			rng_fill(&r, buf, len);
			memcpy(p + off, buf, len);
			assert_int_equal(vol_write(v, buf, off, len), 0);
		} else if (x < 60 && !have_cs) {
			assert_int_equal(vol_snap_create(cv, "cs"), 0);
			memcpy(cs, c, size);
			have_cs = true;
		} else if (x < 65) {
			/* reopen both */
			struct vol_info vi;
			assert_int_equal(vol_info(cv, &vi), 0);
			vol_close(cv);
			vol_close(v);
			assert_int_equal(vol_open(f->st, vi.name, &cv), 0);
			assert_int_equal(vol_open(f->st, "v", &v), 0);
		} else if (x < 70) {
			struct vol_info vi;
			assert_int_equal(vol_info(cv, &vi), 0);
			assert_int_equal(vol_flatten(cv, NULL, NULL), 0);
			expect_read(cv, NULL, 0, c, size);
			if (have_cs)
				expect_read(cv, "cs", 0, cs, size);
			/* retire it: the parent's snapshot is free again */
			char sn[16];
			snprintf(sn, sizeof(sn), "s%d", gen - 1);
			vol_close(cv);
			cv = NULL;
			assert_int_equal(vol_snap_delete(v, sn), 0);
			assert_int_equal(store_vol_remove(f->st, vi.name, true), 0);
		} else {
			expect_read(cv, NULL, 0, c, size);
			expect_read(v, NULL, 0, p, size);
			char sn[16];
			snprintf(sn, sizeof(sn), "s%d", gen - 1);
			expect_read(v, sn, 0, ps, size);
			if (have_cs)
				expect_read(cv, "cs", 0, cs, size);
		}
	}
	if (cv)
		vol_close(cv);
	vol_close(v);
	free(p);
	free(ps);
	free(c);
	free(cs);
	free(buf);
}

static uint64_t kill_at;
static void flatten_kill(uint64_t objno)
{
	if (objno == kill_at)
		raise(SIGKILL);
}

/* A flatten killed after some objects, or just before its commit: the
 * clone still reads the same (through the parent), the next open cleans
 * up, and a new flatten completes. */
static void test_flatten_crash(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 2 << 20;
	struct vol *v = mkvol(f, "v", size, 64 << 10);
	struct rng r = {99};
	uint8_t *a = malloc(size), *c = malloc(size);
	rng_fill(&r, a, size);
	assert_int_equal(vol_write(v, a, 0, size), 0);
	assert_int_equal(vol_snap_create(v, "s"), 0);
	vol_close(v);
	static const uint64_t points[] = {0, 5, 31, UINT64_MAX};
	for (size_t k = 0; k < ARRAY_SIZE(points); k++) {
		char cn[16];
		snprintf(cn, sizeof(cn), "c%zu", k);
		assert_int_equal(store_vol_clone(f->st, "v", "s", cn), 0);
		struct vol *cv;
		assert_int_equal(vol_open(f->st, cn, &cv), 0);
		memcpy(c, a, size);
		rng_fill(&r, c + 70000, 9000);
		assert_int_equal(vol_write(cv, c + 70000, 70000, 9000), 0);
		assert_int_equal(vol_snap_create(cv, "x"), 0);
		rng_fill(&r, c + 300000, 5000);
		assert_int_equal(vol_write(cv, c + 300000, 300000, 5000), 0);
		assert_int_equal(vol_flush(cv), 0);
		vol_close(cv);
		store_close(f->st);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct store *st;
			struct vol *x;
			if (store_open(f->dir, &st) || vol_open(st, cn, &x))
				_exit(2);
			kill_at = points[k];
			store_flatten_hook = flatten_kill;
			vol_flatten(x, NULL, NULL);
			_exit(3); /* not reached */
		}
		int ws;
		assert_int_equal(waitpid(pid, &ws, 0), pid);
		assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
		assert_int_equal(store_open(f->dir, &f->st), 0);
		assert_int_equal(vol_open(f->st, cn, &cv), 0);
		expect_parent(cv, "v@s");
		expect_read(cv, NULL, 0, c, size);
		assert_int_equal(vol_flatten(cv, NULL, NULL), 0);
		expect_parent(cv, "");
		expect_read(cv, NULL, 0, c, size);
		vol_close(cv);
		assert_int_equal(vol_open(f->st, cn, &cv), 0);
		expect_read(cv, NULL, 0, c, size);
		vol_close(cv);
		assert_int_equal(store_vol_remove(f->st, cn, true), 0);
	}
	free(a);
	free(c);
}

/* O(1): a clone of a volume with data costs what a clone of an empty one
 * does (loosely bounded: this is a test, not a benchmark). */
static void test_clone_o1(void **state)
{
	struct fx *f = *state;
	struct vol *v = mkvol(f, "big", 1ull << 40, 4 << 20);
	uint8_t *b = malloc(1 << 20);
	struct rng r = {5};
	rng_fill(&r, b, 1 << 20);
	for (uint64_t i = 0; i < 64; i++)
		assert_int_equal(vol_write(v, b, i * (16ull << 30), 1 << 20), 0);
	assert_int_equal(vol_snap_create(v, "s"), 0);
	uint64_t t0 = now_mono_ns();
	assert_int_equal(store_vol_clone(f->st, "big", "s", "c"), 0);
	uint64_t dt = now_mono_ns() - t0;
	print_message("clone of a 1 TiB volume with 64 MiB written: %.2f ms\n", (double)dt / 1e6);
	assert_true(dt < 2000000000ull);
	struct vol *cv;
	assert_int_equal(vol_open(f->st, "c", &cv), 0);
	expect_read(cv, NULL, 5 * (16ull << 30), b, 1 << 20);
	vol_close(cv);
	vol_close(v);
	free(b);
}

int main(void)
{
	log_set_level(LOG_WARN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_clone_basic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clone_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clone_random, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flatten_crash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_clone_o1, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
