/* vol_resize: grow and shrink, with snapshots, diffs, reopen, and a crash
 * (the process killed) at each step of a resize. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "store/store_int.h"
#include "store_test_util.h"

#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define K 1024ull
#define M (1024ull * 1024)

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

/* Closes v and the store, opens both again (a daemon restart). */
static struct vol *reopen(struct fx *f, struct vol *v, const char *name)
{
	vol_close(v);
	store_close(f->st);
	assert_int_equal(store_open(f->dir, &f->st), 0);
	assert_int_equal(vol_open(f->st, name, &v), 0);
	return v;
}

static void fill(uint8_t *p, size_t len, uint8_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 13 + (i >> 9)) | 1;
}

/* The whole image of v (snap NULL: head) equals want[0..size). */
static void expect_image(struct vol *v, const char *snap, const uint8_t *want, uint64_t size)
{
	struct vol_info vi;
	assert_int_equal(vol_info(v, &vi), 0);
	assert_int_equal(vi.size, size);
	assert_int_equal(vol_size(v), size);
	uint8_t *got = malloc(size);
	assert_int_equal(vol_read(v, snap, got, 0, size), 0);
	assert_memory_equal(got, want, size);
	free(got);
	uint8_t b;
	assert_int_equal(vol_read(v, snap, &b, size, 1), -ERANGE);
}

static void test_grow(void **state)
{
	struct fx *f = *state;
	const uint64_t s0 = 3 * M + 1536, s1 = 9 * M + 512; /* unaligned to 4 KiB */
	struct vol *v = mkvol(f, "g", s0, 1 * M);
	uint8_t *img = calloc(1, s1), *snapimg = calloc(1, s1);
	fill(img, s0, 1);
	assert_int_equal(vol_write(v, img, 0, s0), 0);
	assert_int_equal(vol_snap_create(v, "before"), 0);
	memcpy(snapimg, img, s0);
	assert_int_equal(vol_resize(v, s1), 0);
	struct vol_info vi;
	assert_int_equal(vol_info(v, &vi), 0);
	assert_int_equal(vi.objects, 10);
	/* head and snapshot: the old content, then zeros */
	expect_image(v, NULL, img, s1);
	expect_image(v, "before", snapimg, s1);
	/* the new range is writable, and only what is written shows in a diff */
	fill(img + 8 * M, s1 - 8 * M, 7);
	assert_int_equal(vol_write(v, img + 8 * M, 8 * M, s1 - 8 * M), 0);
	assert_int_equal(vol_snap_create(v, "after"), 0);
	struct diff_rec d;
	diff_rec_init(&d, s1, 1 * M);
	assert_int_equal(vol_diff(v, "before", "after", diff_rec_cb, &d), 0);
	assert_string_equal(d.err, "");
	assert_int_equal(d.objects, 2); /* 8 and the short 9 */
	assert_int_equal(d.kind[8 * M / STORE_BLOCK], 1);
	assert_int_equal(d.kind[s0 / STORE_BLOCK + 1], 0);
	diff_rec_free(&d);
	v = reopen(f, v, "g");
	expect_image(v, NULL, img, s1);
	expect_image(v, "before", snapimg, s1);
	/* no-op, bad sizes */
	assert_int_equal(vol_resize(v, s1), 0);
	assert_int_equal(vol_resize(v, 0), -EINVAL);
	assert_int_equal(vol_resize(v, s1 + 100), -EINVAL);
	assert_int_equal(vol_resize(v, STORE_MAX_SIZE + 512), -EINVAL);
	/* shrinking a volume with snapshots is refused and changes nothing */
	assert_int_equal(vol_resize(v, 1 * M), -ENOTEMPTY);
	expect_image(v, NULL, img, s1);
	vol_close(v);
	free(img);
	free(snapimg);
}

static void test_shrink_then_grow(void **state)
{
	struct fx *f = *state;
	const uint64_t s0 = 4 * M, s1 = 1 * M + 1536, s2 = 4 * M;
	struct vol *v = mkvol(f, "s", s0, 64 * K);
	uint8_t *img = calloc(1, s0);
	fill(img, s0, 3);
	assert_int_equal(vol_write(v, img, 0, s0), 0);
	assert_int_equal(vol_flush(v), 0);
	struct vol_info vi;
	assert_int_equal(vol_info(v, &vi), 0);
	uint64_t alloc0 = vi.allocated_bytes;
	assert_int_equal(vol_resize(v, s1), 0);
	expect_image(v, NULL, img, s1);
	assert_int_equal(vol_info(v, &vi), 0);
	assert_true(vi.allocated_bytes < alloc0 / 2);
	assert_int_equal(vi.objects, DIV_ROUND_UP(s1, 64 * K));
	/* grown again: what was cut reads as zeros, also the rest of the 4
	 * KiB block the old end fell in */
	assert_int_equal(vol_resize(v, s2), 0);
	memset(img + s1, 0, s0 - s1);
	expect_image(v, NULL, img, s2);
	v = reopen(f, v, "s");
	expect_image(v, NULL, img, s2);
	/* a snapshot taken after a shrink and a grow sees the same */
	assert_int_equal(vol_resize(v, s1), 0);
	assert_int_equal(vol_snap_create(v, "x"), 0);
	assert_int_equal(vol_resize(v, s2), 0);
	expect_image(v, "x", img, s2);
	vol_close(v);
	free(img);
}

/* ---- crash at every step ------------------------------------------------ */
static int g_crash_step;

static void crash_hook(int step)
{
	if (step == g_crash_step)
		_exit(42);
}

/* Runs vol_resize(name, to) in a child that dies at step; the parent
 * checks that the volume has the old or the new size, keeps its content,
 * reads zeros past the old end, and resizes again. */
static void crash_at(struct fx *f, uint64_t from, uint64_t to, int step)
{
	char name[32];
	snprintf(name, sizeof(name), "c%d-%llu", step, (unsigned long long)to);
	struct vol *v = mkvol(f, name, from, 64 * K);
	uint64_t big = MAX(from, to);
	uint8_t *img = calloc(1, big);
	fill(img, from, (uint8_t)step);
	assert_int_equal(vol_write(v, img, 0, from), 0);
	assert_int_equal(vol_flush(v), 0);
	vol_close(v);
	store_close(f->st);
	f->st = NULL;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct store *st;
		struct vol *cv;
		if (store_open(f->dir, &st) || vol_open(st, name, &cv))
			_exit(1);
		g_crash_step = step;
		store_resize_hook = crash_hook;
		int rc = vol_resize(cv, to);
		_exit(rc == 0 ? 0 : 2);
	}
	int wst;
	assert_int_equal(waitpid(pid, &wst, 0), pid);
	assert_true(WIFEXITED(wst));
	/* steps 1 and 2 come only with a grow */
	int want = (to > from || step == 3) ? 42 : 0;
	assert_int_equal(WEXITSTATUS(wst), want);
	assert_int_equal(store_open(f->dir, &f->st), 0);
	assert_int_equal(vol_open(f->st, name, &v), 0);
	uint64_t now = vol_size(v);
	uint64_t expect_size = (step == 3 || want == 0) ? to : from;
	assert_int_equal(now, expect_size);
	if (to < from)
		memset(img + to, 0, from - to);
	expect_image(v, NULL, img, now);
	/* every layer's map matches the volume again */
	for (size_t i = 0; i < v->n_layers; i++)
		assert_int_equal(v->layers[i]->objects, v->objects);
	/* and a further grow shows zeros past what is kept */
	assert_int_equal(vol_resize(v, big + 64 * K), 0);
	uint8_t *img2 = calloc(1, big + 64 * K);
	memcpy(img2, img, MIN(from, to));
	expect_image(v, NULL, img2, big + 64 * K);
	vol_close(v);
	free(img);
	free(img2);
}

static void test_crash(void **state)
{
	struct fx *f = *state;
	for (int step = 1; step <= 3; step++) {
		crash_at(f, 1 * M + 512, 3 * M + 1024, step);   /* grow */
		crash_at(f, 3 * M, 1 * M + 2560, step);          /* shrink (step 3 only) */
	}
}

int main(void)
{
	log_set_level(getenv("FERRY_TEST_DEBUG") ? LOG_DEBUG : LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_grow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shrink_then_grow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
