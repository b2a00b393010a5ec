/* Unit tests of the volume store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "store/store_int.h"
#include "store_test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

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

static struct vol *mkvol(struct fx *f, const char *name, uint64_t size, uint32_t osz, uint32_t bs)
{
	struct vol_params p = {.size = size, .object_size = osz, .block_size = bs};
	assert_int_equal(store_vol_create(f->st, name, &p), 0);
	struct vol *v;
	assert_int_equal(vol_open(f->st, name, &v), 0);
	return v;
}

static void fill(void *buf, size_t len, uint8_t seed)
{
	uint8_t *p = buf;
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 7 + (i >> 12) + 1) | 1;
}

static void expect_read(struct vol *v, const char *snap, uint64_t off, const void *want, size_t len)
{
	uint8_t *got = malloc(len);
	assert_int_equal(vol_read(v, snap, got, off, len), 0);
	assert_memory_equal(got, want, len);
	free(got);
}

static void expect_zero(struct vol *v, const char *snap, uint64_t off, size_t len)
{
	uint8_t *z = calloc(1, len);
	expect_read(v, snap, off, z, len);
	free(z);
}

static uint64_t allocated(struct vol *v)
{
	struct vol_info i;
	assert_int_equal(vol_info(v, &i), 0);
	return i.allocated_bytes;
}

/* ---- pool and parameters ---------------------------------------------- */

static void test_params(void **state)
{
	struct fx *f = *state;
	struct vol_params p = {.size = 1 << 20};
	assert_int_equal(store_vol_create(f->st, "../x", &p), -EINVAL);
	assert_int_equal(store_vol_create(f->st, "", &p), -EINVAL);
	assert_int_equal(store_vol_create(f->st, ".hidden", &p), -EINVAL);
	struct vol_params bad[] = {
		{.size = 0},
		{.size = 1000},                              /* not a multiple of 512 */
		{.size = 4096 * 3 + 512, .block_size = 4096},
		{.size = STORE_MAX_SIZE + 4096},
		{.size = 1 << 20, .block_size = 1024},
		{.size = 1 << 20, .object_size = 32 << 10},
		{.size = 1 << 20, .object_size = 128 << 20},
		{.size = 1 << 20, .object_size = (64 << 10) + 4096},
	};
	log_set_level(LOG_ERROR + 0);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		assert_int_equal(store_vol_create(f->st, "bad", &bad[i]), -EINVAL);
	assert_false(store_vol_exists(f->st, "bad"));

	assert_int_equal(store_vol_create(f->st, "b", &p), 0);
	assert_int_equal(store_vol_create(f->st, "a", &p), 0);
	assert_int_equal(store_vol_create(f->st, "a", &p), -EEXIST);
	assert_true(store_vol_exists(f->st, "a"));
	char(*names)[STORE_NAME_MAX + 1];
	size_t n;
	assert_int_equal(store_vol_list(f->st, &names, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(names[0], "a");
	assert_string_equal(names[1], "b");
	free(names);

	struct vol *v, *v2;
	assert_int_equal(vol_open(f->st, "a", &v), 0);
	assert_int_equal(vol_open(f->st, "a", &v2), 0);
	assert_ptr_equal(v, v2); /* one shared object */
	struct vol_info info;
	assert_int_equal(vol_info(v, &info), 0);
	assert_string_equal(info.name, "a");
	assert_int_equal(info.size, 1 << 20);
	assert_int_equal(info.object_size, STORE_DEFAULT_OBJECT);
	assert_int_equal(info.block_size, 512);
	assert_int_equal(info.objects, 1);
	assert_int_equal(strlen(info.uuid), 36);
	assert_int_equal(vol_snap_create(v, "s"), 0);
	assert_int_equal(vol_snap_create(v, "bad/name"), -EINVAL);
	assert_int_equal(store_vol_remove(f->st, "a", false), -EBUSY);
	vol_close(v2);
	assert_int_equal(store_vol_remove(f->st, "a", false), -EBUSY);
	vol_close(v);
	assert_int_equal(store_vol_remove(f->st, "a", false), -ENOTEMPTY);
	assert_int_equal(store_vol_remove(f->st, "a", true), 0);
	assert_false(store_vol_exists(f->st, "a"));
	assert_int_equal(store_vol_remove(f->st, "b", false), 0);
	assert_int_equal(store_vol_remove(f->st, "b", false), -ENOENT);
	assert_int_equal(vol_open(f->st, "b", &v), -ENOENT);
	assert_int_equal(store_vol_list(f->st, &names, &n), 0);
	assert_int_equal(n, 0);
	free(names);
}

static void test_errors(void **state)
{
	struct fx *f = *state;
	struct vol *v = mkvol(f, "v", 1 << 20, 64 << 10, 512);
	uint8_t b[8192] = {1};
	assert_int_equal(vol_write(v, b, (1 << 20) - 100, 101), -ERANGE);
	assert_int_equal(vol_write(v, b, UINT64_MAX - 10, 100), -ERANGE);
	assert_int_equal(vol_read(v, NULL, b, (1 << 20), 1), -ERANGE);
	assert_int_equal(vol_discard(v, 0, (1 << 20) + 1), -ERANGE);
	assert_int_equal(vol_read(v, "nope", b, 0, 10), -ENOENT);
	assert_int_equal(vol_snap_delete(v, "nope"), -ENOENT);
	assert_int_equal(vol_rollback(v, "nope"), -ENOENT);
	struct snap_info si;
	assert_int_equal(vol_snap_get(v, "nope", &si), -ENOENT);
	bool z;
	assert_int_equal(vol_object_is_zero(v, NULL, 16, &z), -ERANGE);
	assert_int_equal(vol_write(v, b, 0, 0), 0);
	assert_int_equal(vol_write(v, b, 1 << 20, 0), 0);
	vol_close(v);
}

/* ---- the map file ------------------------------------------------------- */

static void test_layer_map(void **state)
{
	struct fx *f = *state;
	struct vol *v = mkvol(f, "v", 8 << 20, 64 << 10, 512);
	uint8_t b[4096];
	fill(b, sizeof(b), 3);
	/* block 5 of object 3 = volume block 3*16+5 */
	assert_int_equal(vol_write(v, b, (3 * 16 + 5) * 4096ull, 4096), 0);
	memset(b, 0, sizeof(b));
	assert_int_equal(vol_write(v, b, (3 * 16 + 6) * 4096ull, 4096), 0);
	assert_int_equal(vol_flush(v), 0);

	char p[4200];
	snprintf(p, sizeof(p), "%s/volumes/v/layers/0000000000000001/map", f->dir);
	int fd = open(p, O_RDONLY);
	assert_true(fd >= 0);
	uint8_t hdr[64];
	assert_int_equal(pread(fd, hdr, sizeof(hdr), 0), sizeof(hdr));
	assert_memory_equal(hdr, "FERRYMAP", 8);
	assert_int_equal(hdr[12], 4); /* record: 16 present bits + 16 data bits */
	uint8_t rec[4];
	assert_int_equal(pread(fd, rec, 4, 4096 + 3 * 4), 4);
	assert_int_equal(rec[0], 0x60); /* present: blocks 5 and 6 */
	assert_int_equal(rec[1], 0);
	assert_int_equal(rec[2], 0x20); /* data: block 5 only (6 is zero) */
	assert_int_equal(rec[3], 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 4096 + 128 * 4 + (4096 - 128 * 4));
	/* sparse: the header page and one record page */
	assert_true(st.st_blocks * 512 <= 2 * 4096);
	close(fd);
	/* a map whose header is damaged is refused */
	vol_close(v);
	fd = open(p, O_WRONLY);
	assert_int_equal(pwrite(fd, "X", 1, 0), 1);
	close(fd);
	log_set_level(LOG_ERROR);
	assert_int_equal(vol_open(f->st, "v", &v), -EIO);
	fd = open(p, O_WRONLY);
	assert_int_equal(pwrite(fd, "F", 1, 0), 1);
	close(fd);
	assert_int_equal(vol_open(f->st, "v", &v), 0);
	fill(b, sizeof(b), 3);
	expect_read(v, NULL, (3 * 16 + 5) * 4096ull, b, 4096);
	vol_close(v);
}

/* ---- writes ------------------------------------------------------------- */

static void test_rmw(void **state)
{
	struct fx *f = *state;
	const uint64_t size = (1 << 20) + 3 * 512; /* last 4 KiB block is partial */
	struct vol *v = mkvol(f, "v", size, 64 << 10, 512);
	uint8_t *ref = calloc(1, size), *b = malloc(70000);
	struct {
		uint64_t off;
		size_t len;
	} w[] = {{4097, 1}, {4095, 2}, {0, 512}, {512 * 9, 512 * 3}, {65530, 20},
	         {100, 70000}, {size - 1, 1}, {size - 1000, 1000}, {size - 5000, 300}};
	for (size_t i = 0; i < ARRAY_SIZE(w); i++) {
		fill(b, w[i].len, (uint8_t)(i * 31));
		assert_int_equal(vol_write(v, b, w[i].off, w[i].len), 0);
		memcpy(ref + w[i].off, b, w[i].len);
		expect_read(v, NULL, 0, ref, size);
	}
	/* a zero write inside a data block keeps the rest */
	memset(b, 0, 100);
	assert_int_equal(vol_write(v, b, 4000, 100), 0);
	memset(ref + 4000, 0, 100);
	assert_int_equal(vol_write_zeroes(v, 3, 5), 0);
	memset(ref + 3, 0, 5);
	expect_read(v, NULL, 0, ref, size);
	/* unaligned reads of every shape */
	for (uint64_t off = 0; off < 9000; off += 997)
		expect_read(v, NULL, off, ref + off, 5000);
	expect_read(v, NULL, size - 3, ref + size - 3, 3);
	vol_close(v);
	assert_int_equal(vol_open(f->st, "v", &v), 0);
	expect_read(v, NULL, 0, ref, size);
	vol_close(v);
	free(ref);
	free(b);
}

static void test_zero_space(void **state)
{
	struct fx *f = *state;
	struct vol *v = mkvol(f, "v", 16 << 20, 1 << 20, 4096);
	uint8_t *b = calloc(1, 4 << 20);
	assert_int_equal(vol_write(v, b, 0, 4 << 20), 0);
	assert_int_equal(vol_flush(v), 0);
	assert_int_equal(allocated(v), 0); /* zeros take no space */
	fill(b, 4 << 20, 9);
	memset(b + 8192, 0, 4096); /* one zero block inside */
	assert_int_equal(vol_write(v, b, 1 << 20, 4 << 20), 0);
	assert_int_equal(vol_flush(v), 0);
	uint64_t a = allocated(v);
	assert_true(a >= (4 << 20) - 4096 && a <= (4 << 20) + (64 << 10));
	/* discard frees; writing zeros frees too */
	assert_int_equal(vol_discard(v, 1 << 20, 2 << 20), 0);
	assert_int_equal(vol_flush(v), 0);
	a = allocated(v);
	assert_true(a <= (2 << 20) + (64 << 10));
	memset(b, 0, 2 << 20);
	assert_int_equal(vol_write(v, b, 3 << 20, 2 << 20), 0);
	assert_int_equal(vol_flush(v), 0);
	assert_true(allocated(v) < (64 << 10));
	expect_zero(v, NULL, 0, 16 << 20);
	/* a discard that does not cover whole blocks frees only whole blocks */
	fill(b, 3 * 4096, 1);
	assert_int_equal(vol_write(v, b, 0, 3 * 4096), 0);
	assert_int_equal(vol_discard(v, 100, 3 * 4096 - 200), 0);
	uint8_t want[3 * 4096] = {0};
	memcpy(want, b, 100);
	memcpy(want + 3 * 4096 - 100, b + 3 * 4096 - 100, 100);
	expect_read(v, NULL, 0, want, sizeof(want));
	assert_int_equal(vol_flush(v), 0);
	assert_true(allocated(v) <= 2 * 4096 + (64 << 10));
	vol_close(v);
	free(b);
}

/* ---- snapshots ---------------------------------------------------------- */

static void test_snap_isolation(void **state)
{
	struct fx *f = *state;
	struct vol *v = mkvol(f, "v", 4 << 20, 64 << 10, 512);
	uint8_t a[8192], b[8192];
	fill(a, sizeof(a), 1);
	fill(b, sizeof(b), 2);
	assert_int_equal(vol_write(v, a, 0, sizeof(a)), 0);
	assert_int_equal(vol_snap_create(v, "s1"), 0);
	assert_int_equal(vol_snap_create(v, "s1"), -EEXIST);
	assert_int_equal(vol_write(v, b, 4096, sizeof(b)), 0);
	assert_int_equal(vol_discard(v, 0, 4096), 0);
	expect_read(v, "s1", 0, a, sizeof(a));
	expect_zero(v, "s1", 8192, 4096);
	expect_zero(v, NULL, 0, 4096);
	expect_read(v, NULL, 4096, b, sizeof(b));
	assert_int_equal(vol_snap_create(v, "s2"), 0);
	struct snap_info *l;
	size_t n;
	assert_int_equal(vol_snap_list(v, &l, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(l[0].name, "s1");
	assert_string_equal(l[1].name, "s2");
	assert_true(l[0].id < l[1].id);
	assert_true(l[0].ctime > 1700000000);
	free(l);
	/* ids never reused */
	assert_int_equal(vol_snap_delete(v, "s2"), 0);
	assert_int_equal(vol_snap_create(v, "s3"), 0);
	struct snap_info s3;
	assert_int_equal(vol_snap_get(v, "s3", &s3), 0);
	assert_int_equal(s3.id, 3);
	/* rollback: later snapshots block it; the last one works */
	assert_int_equal(vol_rollback(v, "s1"), -EBUSY);
	assert_int_equal(vol_write(v, a, 0, sizeof(a)), 0);
	assert_int_equal(vol_rollback(v, "s3"), 0);
	expect_zero(v, NULL, 0, 4096);
	expect_read(v, NULL, 4096, b, sizeof(b));
	assert_int_equal(vol_snap_delete(v, "s3"), 0);
	assert_int_equal(vol_rollback(v, "s1"), 0);
	expect_read(v, NULL, 0, a, sizeof(a));
	expect_zero(v, NULL, 8192, 4096);
	vol_close(v);
	assert_int_equal(vol_open(f->st, "v", &v), 0);
	expect_read(v, NULL, 0, a, sizeof(a));
	expect_read(v, "s1", 0, a, sizeof(a));
	vol_close(v);
}

/* Three snapshots with overlapping writes, deleted in each of the 6
 * orders; the layers are sized so that both merge directions happen. */
static void test_delete_orders(void **state)
{
	struct fx *f = *state;
	static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
	                                {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
	const uint64_t size = 2 << 20;
	for (int big = 0; big < 2; big++) {
		for (int pi = 0; pi < 6; pi++) {
			char name[16];
			snprintf(name, sizeof(name), "v%d%d", big, pi);
			struct vol *v = mkvol(f, name, size, 64 << 10, 512);
			uint8_t *img[4], *b = malloc(size);
			uint8_t *cur = calloc(1, size);
			const char *sn[3] = {"a", "b", "c"};
			for (int s = 0; s < 4; s++) {
				/* epoch s writes: big ones when (s % 2 == big) */
				uint64_t len = (s % 2 == big) ? (1 << 20) : 3 * 4096;
				uint64_t off = (uint64_t)s * 5 * 4096;
				fill(b, len, (uint8_t)(s * 40 + pi));
				if (s == 2)
					memset(b, 0, 4096); /* a zero block over older data */
				assert_int_equal(vol_write(v, b, off, len), 0);
				memcpy(cur + off, b, len);
				if (s == 1) {
					assert_int_equal(vol_discard(v, 0, 4096), 0);
					memset(cur, 0, 4096);
				}
				img[s] = malloc(size);
				memcpy(img[s], cur, size);
				if (s < 3)
					assert_int_equal(vol_snap_create(v, sn[s]), 0);
			}
			bool gone[3] = {false};
			for (int k = 0; k < 3; k++) {
				int d = perms[pi][k];
				assert_int_equal(vol_snap_delete(v, sn[d]), 0);
				gone[d] = true;
				for (int s = 0; s < 3; s++)
					if (!gone[s])
						expect_read(v, sn[s], 0, img[s], size);
				expect_read(v, NULL, 0, img[3], size);
				/* the diff from creation still covers everything */
				struct diff_rec dr;
				diff_rec_init(&dr, size, 64 << 10);
				assert_int_equal(vol_diff(v, NULL, NULL, diff_rec_cb, &dr), 0);
				assert_false(dr.err[0]);
				for (uint64_t blk = 0; blk < size / 4096; blk++) {
					bool data = !buf_is_zero(img[3] + blk * 4096, 4096);
					if (data)
						assert_int_equal(dr.kind[blk], 1);
				}
				assert_int_equal(dr.kind[0], 2); /* discarded */
				diff_rec_free(&dr);
			}
			vol_close(v);
			assert_int_equal(vol_open(f->st, name, &v), 0);
			expect_read(v, NULL, 0, img[3], size);
			struct vol_info vi;
			assert_int_equal(vol_info(v, &vi), 0);
			assert_int_equal(vi.snapshots, 0);
			vol_close(v);
			char p[4200];
			snprintf(p, sizeof(p), "%s/volumes/%s/layers", f->dir, name);
			int cnt = 0;
			DIR *dd = opendir(p);
			struct dirent *de;
			while ((de = readdir(dd)))
				cnt += de->d_name[0] != '.';
			closedir(dd);
			assert_int_equal(cnt, 1); /* everything folded into the head */
			for (int s = 0; s < 4; s++)
				free(img[s]);
			free(b);
			free(cur);
		}
	}
}

/* ---- diff --------------------------------------------------------------- */

static void test_diff(void **state)
{
	struct fx *f = *state;
	/* 5 objects of 64 KiB, the last one short and ending mid 4 KiB block */
	const uint64_t size = 4 * (64 << 10) + 8192 + 1536;
	struct vol *v = mkvol(f, "v", size, 64 << 10, 512);
	uint8_t b[64 << 10];
	fill(b, sizeof(b), 5);
	assert_int_equal(vol_write(v, b, 0, 3 * 4096), 0);          /* obj 0: data */
	assert_int_equal(vol_write(v, b, (64 << 10) + 4096, 100), 0); /* obj 1: partial */
	assert_int_equal(vol_write(v, b, size - 1000, 1000), 0);     /* last, short block */
	assert_int_equal(vol_snap_create(v, "a"), 0);
	assert_int_equal(vol_discard(v, 4096, 4096), 0);               /* obj 0 block 1 */
	assert_int_equal(vol_discard(v, 64 << 10, 64 << 10), 0);       /* obj 1 all zero */
	assert_int_equal(vol_write(v, b, 3 * (64 << 10), 64 << 10), 0);  /* obj 3 */
	assert_int_equal(vol_write(v, b, 3 * (64 << 10) + 8192, 4096), 0); /* again */
	assert_int_equal(vol_snap_create(v, "b"), 0);

	struct diff_rec d;
	diff_rec_init(&d, size, 64 << 10);
	assert_int_equal(vol_diff(v, "a", "b", diff_rec_cb, &d), 0);
	assert_false(d.err[0]);
	assert_int_equal(d.objects, 3);
	assert_int_equal(d.kind[0], 0);
	assert_int_equal(d.kind[1], 2);
	assert_int_equal(d.kind[2], 0);
	for (int i = 16; i < 32; i++)
		assert_int_equal(d.kind[i], 2);
	for (int i = 48; i < 64; i++)
		assert_int_equal(d.kind[i], 1);
	assert_int_equal(d.obj_zero[0], 1);
	assert_int_equal(d.obj_zero[1], 2); /* the seed's all-zero object */
	assert_int_equal(d.obj_zero[2], 0);
	assert_int_equal(d.obj_zero[3], 1);
	assert_int_equal(d.obj_zero[4], 0);
	diff_rec_free(&d);

	/* from creation: includes the short last object, ending at size */
	diff_rec_init(&d, size, 64 << 10);
	assert_int_equal(vol_diff(v, NULL, "a", diff_rec_cb, &d), 0);
	assert_false(d.err[0]);
	assert_int_equal(d.objects, 3);
	assert_int_equal(d.obj_zero[4], 1);
	assert_int_equal(d.kind[DIV_ROUND_UP(size, 4096) - 1], 1);
	diff_rec_free(&d);

	/* empty increment: no callback at all */
	diff_rec_init(&d, size, 64 << 10);
	assert_int_equal(vol_diff(v, "b", NULL, diff_rec_cb, &d), 0);
	assert_int_equal(d.objects, 0);
	assert_int_equal(vol_diff(v, "b", "b", diff_rec_cb, &d), 0);
	assert_int_equal(d.objects, 0);
	assert_int_equal(vol_diff(v, "b", "a", diff_rec_cb, &d), -EINVAL);
	assert_int_equal(vol_diff(v, "zz", "a", diff_rec_cb, &d), -ENOENT);
	diff_rec_free(&d);

	/* every object all-zero, including the last (short) one */
	assert_int_equal(vol_discard(v, 0, size), 0);
	diff_rec_init(&d, size, 64 << 10);
	assert_int_equal(vol_diff(v, "b", NULL, diff_rec_cb, &d), 0);
	assert_false(d.err[0]);
	assert_int_equal(d.objects, 5);
	for (int o = 0; o < 5; o++)
		assert_int_equal(d.obj_zero[o], 2);
	diff_rec_free(&d);
	bool z;
	assert_int_equal(vol_object_is_zero(v, "b", 3, &z), 0);
	assert_false(z);
	assert_int_equal(vol_object_is_zero(v, NULL, 3, &z), 0);
	assert_true(z);
	assert_int_equal(vol_object_is_zero(v, "a", 2, &z), 0);
	assert_true(z);

	vol_close(v);
}

static int stop_cb(void *c, const struct diff_object *o)
{
	(*(int *)c)++;
	return o->objno == 1 ? 42 : 0;
}

struct read_ctx {
	struct vol *v;
	int objs, bad;
};

static int read_cb(void *c, const struct diff_object *o)
{
	struct read_ctx *r = c;
	uint8_t want[4096], got[4096];
	fill(want, sizeof(want), 1);
	for (size_t i = 0; i < o->n_extents; i++) {
		if (vol_read(r->v, NULL, got, o->extents[i].offset, 4096) ||
		    memcmp(got, want, 4096) || o->extents[i].kind != EXTENT_DATA)
			r->bad++;
	}
	r->objs++;
	return 0;
}

static void test_diff_stop(void **state)
{
	struct fx *f = *state;
	struct vol *v = mkvol(f, "v", 1 << 20, 64 << 10, 512);
	uint8_t b[4096];
	fill(b, sizeof(b), 1);
	for (int o = 0; o < 4; o++)
		assert_int_equal(vol_write(v, b, (uint64_t)o << 16, 4096), 0);
	int calls = 0;
	assert_int_equal(vol_diff(v, NULL, NULL, stop_cb, &calls), 42);
	assert_int_equal(calls, 2);
	/* the callback may read the volume (what the replication sender does) */
	struct read_ctx rc = {.v = v};
	assert_int_equal(vol_snap_create(v, "s"), 0);
	assert_int_equal(vol_diff(v, NULL, "s", read_cb, &rc), 0);
	assert_int_equal(vol_diff(v, NULL, NULL, read_cb, &rc), 0);
	assert_int_equal(rc.objs, 8);
	assert_int_equal(rc.bad, 0);
	vol_close(v);
}

/* ---- volume.meta -------------------------------------------------------- */

static void test_meta_parser(void **state)
{
	(void)state;
	struct store_meta m = {.size = 1 << 30, .object_size = 4 << 20, .block_size = 512,
	                       .head_epoch = 9, .next_snap_id = 5};
	strcpy(m.uuid, "0123abcd-0000-4000-8000-00000000beef");
	struct meta_snap s1 = {.id = 1, .epoch = 2, .ctime = 1234, .name = "first"};
	struct meta_snap s2 = {.id = 4, .epoch = 7, .ctime = 1235, .name = "x.y-z_1"};
	assert_int_equal(store_meta_add_snap(&m, &s1), 0);
	assert_int_equal(store_meta_add_snap(&m, &s2), 0);
	char *txt;
	size_t n;
	assert_int_equal(store_meta_format(&m, &txt, &n), 0);
	struct store_meta p;
	const char *why;
	assert_int_equal(store_meta_parse(txt, n, &p, &why), 0);
	assert_int_equal(p.n_snaps, 2);
	assert_string_equal(p.snaps[1].name, "x.y-z_1");
	assert_int_equal(p.snaps[1].epoch, 7);
	assert_int_equal(p.head_epoch, 9);
	assert_string_equal(p.uuid, m.uuid);
	store_meta_free(&p);
	assert_int_equal(store_meta_fuzz((const uint8_t *)txt, n), 0);
	/* every truncation (a torn write) is rejected */
	for (size_t k = 0; k < n; k++)
		assert_int_equal(store_meta_parse(txt, k, &p, &why), -EIO);
	/* every single-bit flip is rejected */
	for (size_t k = 0; k < n; k++) {
		for (int bit = 0; bit < 8; bit++) {
			txt[k] ^= (char)(1 << bit);
			assert_int_equal(store_meta_parse(txt, n, &p, &why), -EIO);
			txt[k] ^= (char)(1 << bit);
		}
	}
	free(txt);
	/* semantically bad files with a valid checksum */
	struct {
		const char *body;
	} bad[] = {
		{"ferry-volume 2\n"},
		{"ferry-volume 1\nuuid 0123abcd-0000-4000-8000-00000000beef\nsize 1024\n"
		 "object_size 4194304\nblock_size 512\nhead_epoch 3\nnext_snap_id 2\n"
		 "snap 1 3 0 a\n"}, /* epoch not below head */
		{"ferry-volume 1\nuuid 0123abcd-0000-4000-8000-00000000beef\nsize 1024\n"
		 "object_size 4194304\nblock_size 512\nhead_epoch 3\nnext_snap_id 3\n"
		 "snap 1 1 0 a\nsnap 2 2 0 a\n"}, /* duplicate name */
		{"ferry-volume 1\nuuid 0123abcd-0000-4000-8000-00000000beef\nsize 1024\n"
		 "object_size 4194304\nblock_size 512\nhead_epoch 3\nnext_snap_id 3\n"
		 "snap 2 1 0 a\nsnap 1 2 0 b\n"}, /* out of order */
		{"ferry-volume 1\nuuid 0123abcd-0000-4000-8000-00000000beef\nsize 1000\n"
		 "object_size 4194304\nblock_size 512\nhead_epoch 3\nnext_snap_id 3\n"}, /* size */
		{"ferry-volume 1\nuuid 0123abcd-0000-4000-8000-00000000beef\nsize 1024\n"
		 "object_size 4194304\nblock_size 512\nhead_epoch 3\nnext_snap_id 3\n"
		 "snap 1 1 0 ../x\n"}, /* name */
		{"ferry-volume 1\nuuid 0123abcd-0000-4000-8000-00000000beef\nsize 01024\n"
		 "object_size 4194304\nblock_size 512\nhead_epoch 3\nnext_snap_id 3\n"},
		{"ferry-volume 1\nsize 1024\nuuid 0123abcd-0000-4000-8000-00000000beef\n"
		 "object_size 4194304\nblock_size 512\nhead_epoch 3\nnext_snap_id 3\n"},
		{"ferry-volume 1\nuuid 0123abcd-0000-4000-8000-00000000beef\nsize 1024\n"
		 "object_size 4194304\nblock_size 512\nhead_epoch 3\nnext_snap_id 3\n"
		 "snap 1 1 0  a\n"}, /* double space */
		{""},
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char buf[1024];
		int l = snprintf(buf, sizeof(buf), "%s", bad[i].body);
		l += snprintf(buf + l, sizeof(buf) - (size_t)l, "crc32c %08x\n",
		              crc32c(0, buf, (size_t)l));
		assert_int_equal(store_meta_parse(buf, (size_t)l, &p, &why), -EIO);
		assert_non_null(why);
		store_meta_fuzz((const uint8_t *)buf, (size_t)l);
	}
	store_meta_free(&m);
	assert_int_equal(store_meta_parse("", 0, &p, NULL), -EIO);
}

static void test_meta_corrupt_volume(void **state)
{
	struct fx *f = *state;
	struct vol *v = mkvol(f, "v", 1 << 20, 64 << 10, 512);
	vol_close(v);
	char p[4200];
	snprintf(p, sizeof(p), "%s/volumes/v/volume.meta", f->dir);
	int fd = open(p, O_RDWR);
	assert_true(fd >= 0);
	/* Change one byte inside the (random) uuid: always a real change, so
	 * the checksum no longer matches. */
	char c;
	assert_int_equal(pread(fd, &c, 1, 30), 1);
	c = c == '9' ? '8' : '9';
	assert_int_equal(pwrite(fd, &c, 1, 30), 1);
	close(fd);
	log_set_level(LOG_ERROR);
	assert_int_equal(vol_open(f->st, "v", &v), -EIO);
	assert_int_equal(store_vol_remove(f->st, "v", false), -EIO);
	assert_int_equal(store_vol_remove(f->st, "v", true), 0);
}

/* An interrupted snapshot delete (volume.meta already rewritten, layers
 * not yet folded) is finished at the next open, in both merge directions
 * and for the rename case. */
static void test_delete_repair(void **state)
{
	struct fx *f = *state;
	for (int variant = 0; variant < 3; variant++) {
		char name[8];
		snprintf(name, sizeof(name), "r%d", variant);
		const uint64_t size = 2 << 20;
		struct vol *v = mkvol(f, name, size, 64 << 10, 512);
		uint8_t *b = malloc(size), *s1 = malloc(size), *s2 = malloc(size), *hd;
		fill(b, size, 1);
		assert_int_equal(vol_write(v, b, 0, variant == 0 ? size : 8192), 0);
		assert_int_equal(vol_snap_create(v, "s1"), 0);
		assert_int_equal(vol_read(v, NULL, s1, 0, size), 0);
		fill(b, size, 2);
		assert_int_equal(vol_write(v, b, 4096, variant == 1 ? size - 4096 : 8192), 0);
		assert_int_equal(vol_snap_create(v, "s2"), 0);
		assert_int_equal(vol_read(v, NULL, s2, 0, size), 0);
		if (variant != 2) {
			fill(b, 4096, 3);
			assert_int_equal(vol_write(v, b, 0, 4096), 0);
		}
		hd = malloc(size);
		assert_int_equal(vol_read(v, NULL, hd, 0, size), 0);
		vol_close(v);
		/* drop s1 from volume.meta only, as a crash right after would */
		char p[4200], *txt;
		size_t n;
		snprintf(p, sizeof(p), "%s/volumes/%s/volume.meta", f->dir, name);
		assert_int_equal(read_file(p, 1 << 20, &txt, &n), 0);
		struct store_meta m;
		assert_int_equal(store_meta_parse(txt, n, &m, NULL), 0);
		free(txt);
		if (variant == 2) { /* delete the last: folds into the (absent) head */
			m.n_snaps = 1;
			memcpy(s2, s1, size);
		} else {
			m.snaps[0] = m.snaps[1];
			m.n_snaps = 1;
		}
		assert_int_equal(store_meta_format(&m, &txt, &n), 0);
		assert_int_equal(write_file_atomic(p, txt, n), 0);
		free(txt);
		store_meta_free(&m);
		assert_int_equal(vol_open(f->st, name, &v), 0);
		const char *left = variant == 2 ? "s1" : "s2";
		expect_read(v, left, 0, s2, size);
		expect_read(v, NULL, 0, hd, size);
		struct vol_info vi;
		assert_int_equal(vol_info(v, &vi), 0);
		assert_int_equal(vi.snapshots, 1);
		vol_close(v);
		free(b);
		free(s1);
		free(s2);
		free(hd);
	}
}

/* ---- scale -------------------------------------------------------------- */

static void test_snap_scale(void **state)
{
	struct fx *f = *state;
	/* 10,000 objects written, then a snapshot: O(1) */
	const uint64_t nobj = 10000;
	struct vol *v = mkvol(f, "big", nobj * (64 << 10), 64 << 10, 512);
	uint8_t b[4096];
	fill(b, sizeof(b), 7);
	uint64_t t0 = now_mono_ns();
	for (uint64_t o = 0; o < nobj; o++) {
		b[0] = (uint8_t)o | 1;
		assert_int_equal(vol_write(v, b, o << 16, 4096), 0);
	}
	uint64_t t1 = now_mono_ns();
	assert_int_equal(vol_flush(v), 0);
	uint64_t t2 = now_mono_ns();
	assert_int_equal(vol_snap_create(v, "s"), 0);
	uint64_t t3 = now_mono_ns();
	for (uint64_t o = 0; o < nobj; o += 97) {
		b[0] = (uint8_t)o | 1;
		expect_read(v, "s", o << 16, b, 4096);
	}
	/* writes after the snapshot, then a snapshot without a prior flush */
	for (uint64_t o = 0; o < nobj; o++)
		assert_int_equal(vol_write(v, b, (o << 16) + 4096, 4096), 0);
	uint64_t t4 = now_mono_ns();
	assert_int_equal(vol_snap_create(v, "s2"), 0);
	uint64_t t5 = now_mono_ns();
	print_message("measure: %llu 4 KiB writes to distinct objects: %.1f us/write; flush %.2f ms\n",
	              (unsigned long long)nobj, (double)(t1 - t0) / 1e3 / (double)nobj,
	              (double)(t2 - t1) / 1e6);
	print_message("measure: snapshot create with %llu objects written (after flush): %.3f ms\n",
	              (unsigned long long)nobj, (double)(t3 - t2) / 1e6);
	print_message("measure: snapshot create incl. flushing %llu dirty 4 KiB writes: %.3f ms\n",
	              (unsigned long long)nobj, (double)(t5 - t4) / 1e6);
	struct diff_rec d;
	diff_rec_init(&d, nobj << 16, 64 << 10);
	uint64_t t6 = now_mono_ns();
	assert_int_equal(vol_diff(v, "s", "s2", diff_rec_cb, &d), 0);
	uint64_t t7 = now_mono_ns();
	assert_int_equal(d.objects, nobj);
	print_message("measure: diff of %llu changed objects: %.2f ms\n", (unsigned long long)nobj,
	              (double)(t7 - t6) / 1e6);
	diff_rec_free(&d);
	assert_int_equal(vol_snap_delete(v, "s"), 0);
	uint64_t t8 = now_mono_ns();
	print_message("measure: snapshot delete (merge 10,000 objects): %.2f ms\n",
	              (double)(t8 - t7) / 1e6);
	vol_close(v);
}

static void test_many_snapshots(void **state)
{
	struct fx *f = *state;
	const int N = 1000;
	struct vol *v = mkvol(f, "many", 4 << 20, 64 << 10, 512);
	uint64_t t0 = now_mono_ns();
	for (int i = 0; i < N; i++) {
		char nm[16];
		uint32_t x = (uint32_t)i + 1;
		assert_int_equal(vol_write(v, &x, (uint64_t)(i % 64) * 65536 + 8, sizeof(x)), 0);
		snprintf(nm, sizeof(nm), "s%d", i);
		assert_int_equal(vol_snap_create(v, nm), 0);
	}
	uint64_t t1 = now_mono_ns();
	print_message("measure: %d snapshots (each after a small write): %.2f ms each\n", N,
	              (double)(t1 - t0) / 1e6 / N);
	vol_close(v);
	assert_int_equal(vol_open(f->st, "many", &v), 0);
	/* snapshot i sees value i+1 at slot i%64, and the later slots from
	 * the previous round */
	for (int i = 0; i < N; i += 37) {
		char nm[16];
		snprintf(nm, sizeof(nm), "s%d", i);
		uint32_t x;
		assert_int_equal(vol_read(v, nm, &x, (uint64_t)(i % 64) * 65536 + 8, sizeof(x)), 0);
		assert_int_equal(x, (uint32_t)i + 1);
	}
	/* delete in a scrambled order, checking a survivor as we go */
	struct rng r = {.s = 42};
	int order[1000];
	for (int i = 0; i < N; i++)
		order[i] = i;
	for (int i = N - 1; i > 0; i--) {
		int j = (int)rng_below(&r, (uint64_t)i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	for (int k = 0; k < N; k++) {
		char nm[16];
		snprintf(nm, sizeof(nm), "s%d", order[k]);
		assert_int_equal(vol_snap_delete(v, nm), 0);
		if (k + 1 < N && k % 50 == 0) {
			int i = order[N - 1];
			snprintf(nm, sizeof(nm), "s%d", i);
			uint32_t x;
			assert_int_equal(vol_read(v, nm, &x, (uint64_t)(i % 64) * 65536 + 8, 4), 0);
			assert_int_equal(x, (uint32_t)i + 1);
		}
	}
	for (int s = 0; s < 64; s++) {
		uint32_t x;
		assert_int_equal(vol_read(v, NULL, &x, (uint64_t)s * 65536 + 8, 4), 0);
		int last = (N / 64) * 64 + s < N ? (N / 64) * 64 + s : (N / 64 - 1) * 64 + s;
		assert_int_equal(x, (uint32_t)last + 1);
	}
	vol_close(v);
}

static void test_16tib(void **state)
{
	struct fx *f = *state;
	struct vol *v = mkvol(f, "huge", STORE_MAX_SIZE, 0, 512);
	uint8_t b[8192], got[8192];
	fill(b, sizeof(b), 77);
	/* the very last block (segment 15) and across a 1 TiB boundary */
	assert_int_equal(vol_write(v, b, STORE_MAX_SIZE - 4096, 4096), 0);
	assert_int_equal(vol_write(v, b, (1ull << 40) - 4096, 8192), 0);
	assert_int_equal(vol_snap_create(v, "s"), 0);
	vol_close(v);
	assert_int_equal(vol_open(f->st, "huge", &v), 0);
	assert_int_equal(vol_read(v, "s", got, STORE_MAX_SIZE - 4096, 4096), 0);
	assert_memory_equal(got, b, 4096);
	assert_int_equal(vol_read(v, NULL, got, (1ull << 40) - 4096, 8192), 0);
	assert_memory_equal(got, b, 8192);
	struct diff_rec d = {0};
	int calls = 0;
	assert_int_equal(vol_diff(v, NULL, "s", stop_cb, &calls), 0);
	assert_int_equal(calls, 3); /* the last object, and two across the 1 TiB line */
	(void)d;
	vol_close(v);
}

/* ---- concurrency -------------------------------------------------------- */

struct conc {
	struct vol *v;
	const uint8_t *img;
	size_t size;
	volatile bool stop;
	int bad;
	uint64_t reads;
};

static void *reader(void *arg)
{
	struct conc *c = arg;
	uint8_t *buf = malloc(c->size);
	while (!c->stop) {
		if (vol_read(c->v, "s", buf, 0, c->size) || memcmp(buf, c->img, c->size))
			c->bad++;
		c->reads++;
	}
	free(buf);
	return NULL;
}

static void test_concurrent(void **state)
{
	struct fx *f = *state;
	const size_t size = 1 << 20;
	struct vol *v = mkvol(f, "c", size, 64 << 10, 512);
	uint8_t *img = malloc(size), *b = malloc(65536);
	fill(img, size, 4);
	assert_int_equal(vol_write(v, img, 0, size), 0);
	assert_int_equal(vol_snap_create(v, "s"), 0);
	struct conc c = {.v = v, .img = img, .size = size};
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, reader, &c);
	struct rng r = {.s = 1};
	uint64_t end = now_mono_ns() + 500000000ull;
	int n = 0;
	while (now_mono_ns() < end) {
		rng_fill(&r, b, 65536);
		uint64_t off = rng_below(&r, size - 65536);
		if (n % 5 == 4)
			assert_int_equal(vol_discard(v, off, 65536), 0);
		else
			assert_int_equal(vol_write(v, b, off, 1 + rng_below(&r, 65535)), 0);
		if (n % 50 == 49) {
			assert_int_equal(vol_snap_create(v, "t"), 0);
			assert_int_equal(vol_snap_delete(v, "t"), 0);
		}
		n++;
	}
	c.stop = true;
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(c.bad, 0);
	assert_true(c.reads > 0);
	vol_close(v);
	free(img);
	free(b);
}

/* vol_head_unchanged: only when the snapshot is the newest and nothing
 * touched the head since; it survives a close and reopen (the layers say
 * it, not a counter in memory). */
static void test_head_unchanged(void **state)
{
	struct fx *f = *state;
	struct vol *v = mkvol(f, "v", 4 << 20, 64 << 10, 512);
	uint8_t a[4096];
	fill(a, sizeof(a), 3);
	bool same = true;
	assert_int_equal(vol_head_unchanged(v, "s1", &same), -ENOENT);
	assert_false(same);
	assert_int_equal(vol_snap_create(v, "s1"), 0);
	assert_int_equal(vol_head_unchanged(v, "s1", &same), 0);
	assert_true(same); /* never written at all */
	assert_int_equal(vol_write(v, a, 8192, sizeof(a)), 0);
	assert_int_equal(vol_head_unchanged(v, "s1", &same), 0);
	assert_false(same);
	assert_int_equal(vol_snap_create(v, "s2"), 0);
	assert_int_equal(vol_head_unchanged(v, "s2", &same), 0);
	assert_true(same);
	assert_int_equal(vol_head_unchanged(v, "s1", &same), 0);
	assert_false(same); /* not the newest */
	/* the same across a reopen */
	vol_close(v);
	assert_int_equal(vol_open(f->st, "v", &v), 0);
	assert_int_equal(vol_head_unchanged(v, "s2", &same), 0);
	assert_true(same);
	/* a discard of never-written blocks and a write of zeros touch it too */
	assert_int_equal(vol_discard(v, 1 << 20, 4096), 0);
	assert_int_equal(vol_head_unchanged(v, "s2", &same), 0);
	assert_false(same);
	assert_int_equal(vol_rollback(v, "s2"), 0);
	assert_int_equal(vol_head_unchanged(v, "s2", &same), 0);
	assert_true(same); /* rolled back: reads as s2 again */
	memset(a, 0, sizeof(a));
	assert_int_equal(vol_write(v, a, 0, sizeof(a)), 0);
	vol_close(v);
	assert_int_equal(vol_open(f->st, "v", &v), 0);
	assert_int_equal(vol_head_unchanged(v, "s2", &same), 0);
	assert_false(same);
	/* a newer snapshot taken and deleted after writes: its layer folds
	 * into the head, which then holds blocks s2 does not */
	assert_int_equal(vol_rollback(v, "s2"), 0);
	fill(a, sizeof(a), 4);
	assert_int_equal(vol_write(v, a, 0, sizeof(a)), 0);
	assert_int_equal(vol_snap_create(v, "s3"), 0);
	assert_int_equal(vol_snap_delete(v, "s3"), 0);
	assert_int_equal(vol_head_unchanged(v, "s2", &same), 0);
	assert_false(same);
	vol_close(v);
}

/* vol_flush syncs without holding the writers' lock: flushes in a loop on
 * another thread while the volume is written, snapshotted and snapshots
 * deleted; nothing deadlocks, every flush succeeds, and the head and a
 * snapshot taken mid-way hold exactly what was written. */
struct flushing {
	struct vol *v;
	volatile bool stop;
	int bad;
	uint64_t flushes;
};

static void *flusher(void *arg)
{
	struct flushing *fl = arg;
	while (!fl->stop) {
		if (vol_flush(fl->v))
			fl->bad++;
		fl->flushes++;
	}
	return NULL;
}

static void test_flush_concurrent(void **state)
{
	struct fx *f = *state;
	const size_t size = 4 << 20;
	struct vol *v = mkvol(f, "fc", size, 64 << 10, 512);
	uint8_t *model = calloc(1, size), *snap = malloc(size), *b = malloc(65536);
	struct flushing fl = {.v = v};
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, flusher, &fl);
	struct rng r = {.s = 7};
	uint64_t end = now_mono_ns() + 700000000ull;
	int n = 0;
	bool have_snap = false;
	while (now_mono_ns() < end || n < 200) {
		size_t len = 1 + rng_below(&r, 65535);
		uint64_t off = rng_below(&r, size - len);
		rng_fill(&r, b, len);
		assert_int_equal(vol_write(v, b, off, len), 0);
		memcpy(model + off, b, len);
		if (n % 40 == 39) {
			if (have_snap)
				assert_int_equal(vol_snap_delete(v, "m"), 0);
			assert_int_equal(vol_snap_create(v, "m"), 0);
			memcpy(snap, model, size);
			have_snap = true;
		}
		n++;
	}
	fl.stop = true;
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(fl.bad, 0);
	assert_true(fl.flushes > 0);
	assert_int_equal(vol_flush(v), 0);
	expect_read(v, NULL, 0, model, size);
	assert_true(have_snap);
	expect_read(v, "m", 0, snap, size);
	vol_close(v);
	free(model);
	free(snap);
	free(b);
}

int main(void)
{
	log_set_level(getenv("FERRY_TEST_DEBUG") ? LOG_DEBUG : LOG_WARN);
	if (getenv("FERRY_TEST_FILTER"))
		cmocka_set_test_filter(getenv("FERRY_TEST_FILTER"));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_params, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_layer_map, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rmw, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_space, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snap_isolation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_head_unchanged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_orders, setup, teardown),
		cmocka_unit_test_setup_teardown(test_diff, setup, teardown),
		cmocka_unit_test_setup_teardown(test_diff_stop, setup, teardown),
		cmocka_unit_test(test_meta_parser),
		cmocka_unit_test_setup_teardown(test_meta_corrupt_volume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_repair, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snap_scale, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_snapshots, setup, teardown),
		cmocka_unit_test_setup_teardown(test_16tib, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flush_concurrent, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
