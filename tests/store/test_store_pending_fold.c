/* A snapshot delete whose fold cannot run for lack of space leaves the
 * deleted snapshot's layer behind (a leftover).  The volume must still
 * open while the disk is full, and every path must treat leftovers right:
 * reads of the head and of every snapshot, diffs, writes, snapshot create,
 * rollback, further deletes; once there is space, the next open or delete
 * folds them and nothing reads differently.
 *
 * The same scenario runs twice per way of filling the disk:
 *  - hook: src/store's fold fault injection fails the fold after a few
 *    copied runs (no privileges needed; exact and repeatable);
 *  - tmpfs: a real small file system filled with a fallocated file, in a
 *    private mount namespace of a child process (root, or an unprivileged
 *    user namespace; skipped when neither is available).
 * In one run the leftovers are folded by a reopen, in the other by a
 * delete. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "store/store_int.h"
#include "store_test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>

#define VSIZE (16u << 20)
#define OSZ (64u << 10)
#define NBLK (VSIZE / STORE_BLOCK)
#define MAXS 8
#define MAXE 16

#define CK(cond, ...)                                                             \
	do {                                                                          \
		if (!(cond)) {                                                            \
			print_message("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);         \
			print_message(__VA_ARGS__);                                           \
			print_message("\n");                                                  \
			return -1;                                                            \
		}                                                                         \
	} while (0)
#define TRY(expr)                \
	do {                         \
		if ((expr) < 0)          \
			return -1;           \
	} while (0)

/* How the disk is made full: keep about `keep` bytes free, or undo it. */
struct env {
	const char *what;
	int (*full)(struct env *e, uint64_t keep);
	int (*space)(struct env *e);
	char pool[4096];
	char filler[4200];
};

/* Reference: images of the head and of each snapshot, and which blocks each
 * epoch touched (for exact diffs), as in test_store_model. */
struct sc {
	struct env *e;
	struct store *st;
	struct vol *v;
	uint8_t *head;
	struct {
		char name[16];
		uint64_t epoch;
		uint8_t *img;
	} snaps[MAXS];
	size_t n;
	uint64_t H;
	uint8_t touched[MAXE][NBLK];
	uint8_t *rbuf;
};

/* ---- disk full by fault injection --------------------------------------- */

static int hook_budget;

static int hook_fault(uint64_t folded)
{
	(void)folded;
	return hook_budget-- > 0 ? 0 : -ENOSPC;
}

static int hook_full(struct env *e, uint64_t keep)
{
	(void)e;
	hook_budget = (int)(keep / (64 << 10)); /* copied runs before it fails */
	store_fold_fault = hook_fault;
	return 0;
}

static int hook_space(struct env *e)
{
	(void)e;
	store_fold_fault = NULL;
	return 0;
}

/* ---- disk full for real: a small tmpfs ------------------------------------ */

static uint64_t fs_free(const char *path)
{
	struct statvfs sv;
	return statvfs(path, &sv) ? 0 : (uint64_t)sv.f_bavail * sv.f_frsize;
}

static int fs_full(struct env *e, uint64_t keep)
{
	unlink(e->filler);
	uint64_t avail = fs_free(e->pool);
	CK(avail > keep + (1 << 20), "only %llu bytes free", (unsigned long long)avail);
	int fd = open(e->filler, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	CK(fd >= 0, "create filler");
	int rc = fallocate(fd, 0, 0, (off_t)(avail - keep));
	close(fd);
	CK(rc == 0, "fallocate filler: %s", strerror(errno));
	uint64_t left = fs_free(e->pool);
	CK(left <= keep + 8192, "still %llu bytes free", (unsigned long long)left);
	return 0;
}

static int fs_space(struct env *e)
{
	CK(unlink(e->filler) == 0, "unlink filler");
	return 0;
}

/* ---- the reference -------------------------------------------------------- */

static int sc_open(struct sc *s)
{
	int rc = store_open(s->e->pool, &s->st);
	CK(rc == 0, "store_open: %d", rc);
	rc = vol_open(s->st, "v", &s->v);
	CK(rc == 0, "vol_open: %s", strerror(-rc));
	return 0;
}

static void sc_close(struct sc *s)
{
	vol_close(s->v);
	store_close(s->st);
}

static int sc_write(struct sc *s, uint64_t off, uint64_t len, uint8_t seed)
{
	uint8_t *b = malloc(len);
	struct rng r = {.s = seed};
	rng_fill(&r, b, len);
	int rc = vol_write(s->v, b, off, len);
	if (rc == 0) {
		memcpy(s->head + off, b, len);
		for (uint64_t k = off / STORE_BLOCK; k < DIV_ROUND_UP(off + len, STORE_BLOCK); k++)
			s->touched[s->H][k] = 1;
	}
	free(b);
	CK(rc == 0, "write %llu+%llu: %s", (unsigned long long)off, (unsigned long long)len,
	   strerror(-rc));
	return 0;
}

static int sc_snap(struct sc *s, const char *name)
{
	int rc = vol_snap_create(s->v, name);
	CK(rc == 0, "snap create %s: %s", name, strerror(-rc));
	snprintf(s->snaps[s->n].name, sizeof(s->snaps[s->n].name), "%s", name);
	s->snaps[s->n].epoch = s->H++;
	s->snaps[s->n].img = malloc(VSIZE);
	memcpy(s->snaps[s->n].img, s->head, VSIZE);
	s->n++;
	return 0;
}

static int sc_find(struct sc *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->snaps[i].name, name))
			return (int)i;
	return -1;
}

/* The delete commits even when its fold fails (want_rc -ENOSPC). */
static int sc_delete(struct sc *s, const char *name, int want_rc)
{
	int i = sc_find(s, name);
	int rc = vol_snap_delete(s->v, name);
	CK(rc == want_rc, "delete %s: got %d want %d", name, rc, want_rc);
	struct snap_info si;
	CK(vol_snap_get(s->v, name, &si) == -ENOENT, "%s still listed", name);
	free(s->snaps[i].img);
	memmove(&s->snaps[i], &s->snaps[i + 1], (s->n - (size_t)i - 1) * sizeof(s->snaps[0]));
	s->n--;
	return 0;
}

static int sc_rollback(struct sc *s, const char *name, int want_rc)
{
	int i = sc_find(s, name);
	int rc = vol_rollback(s->v, name);
	CK(rc == want_rc, "rollback %s: got %d want %d", name, rc, want_rc);
	if (rc == 0) {
		memcpy(s->head, s->snaps[i].img, VSIZE);
		for (uint64_t e = s->snaps[i].epoch + 1; e <= s->H; e++)
			memset(s->touched[e], 0, NBLK);
	}
	return 0;
}

static int check_read(struct sc *s, const char *snap, const uint8_t *want)
{
	int rc = vol_read(s->v, snap, s->rbuf, 0, VSIZE);
	CK(rc == 0, "read %s: %s", snap ? snap : "head", strerror(-rc));
	size_t k = 0;
	while (k < VSIZE && s->rbuf[k] == want[k])
		k++;
	CK(k == VSIZE, "%s differs at byte %zu", snap ? snap : "head", k);
	return 0;
}

/* fi, ti: snapshot index or -1 (creation / head). */
static int check_diff(struct sc *s, int fi, int ti)
{
	uint64_t a = fi < 0 ? 0 : s->snaps[fi].epoch, b = ti < 0 ? s->H : s->snaps[ti].epoch;
	const uint8_t *to = ti < 0 ? s->head : s->snaps[ti].img;
	struct diff_rec d;
	diff_rec_init(&d, VSIZE, OSZ);
	int rc = vol_diff(s->v, fi < 0 ? NULL : s->snaps[fi].name,
	                  ti < 0 ? NULL : s->snaps[ti].name, diff_rec_cb, &d);
	int bad = -1;
	for (uint64_t k = 0; k < NBLK && bad < 0 && !rc; k++) {
		bool t = false;
		for (uint64_t e = a + 1; e <= b && !t; e++)
			t = s->touched[e][k];
		uint8_t want = t ? (buf_is_zero(to + k * STORE_BLOCK, STORE_BLOCK) ? 2 : 1) : 0;
		if (d.kind[k] != want)
			bad = (int)k;
	}
	bool ok = !d.err[0];
	diff_rec_free(&d);
	CK(rc == 0 && ok, "diff %d..%d: rc %d", fi, ti, rc);
	CK(bad < 0, "diff %d..%d wrong at block %d", fi, ti, bad);
	return 0;
}

static int check_all(struct sc *s)
{
	TRY(check_read(s, NULL, s->head));
	for (size_t i = 0; i < s->n; i++)
		TRY(check_read(s, s->snaps[i].name, s->snaps[i].img));
	for (int f = -1; f < (int)s->n; f++) {
		for (int t = f + 1; t < (int)s->n; t++)
			TRY(check_diff(s, f, t));
		TRY(check_diff(s, f, -1));
	}
	return 0;
}

/* Layer directories on disk that no snapshot or the head anchors. */
static int leftovers_on_disk(struct sc *s)
{
	char p[4200], *txt;
	size_t n;
	struct store_meta m;
	snprintf(p, sizeof(p), "%s/volumes/v/volume.meta", s->e->pool);
	if (read_file(p, 1 << 20, &txt, &n))
		return -1;
	int rc = store_meta_parse(txt, n, &m, NULL);
	free(txt);
	if (rc)
		return -1;
	snprintf(p, sizeof(p), "%s/volumes/v/layers", s->e->pool);
	DIR *d = opendir(p);
	if (!d) {
		store_meta_free(&m);
		return -1;
	}
	int count = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (strlen(de->d_name) != 16)
			continue;
		uint64_t t = strtoull(de->d_name, NULL, 16);
		bool anchor = t == m.head_epoch;
		for (size_t i = 0; i < m.n_snaps; i++)
			anchor = anchor || m.snaps[i].epoch == t;
		count += !anchor;
	}
	closedir(d);
	store_meta_free(&m);
	return count;
}

static int reopen(struct sc *s)
{
	sc_close(s);
	return sc_open(s);
}

static int scenario(struct env *e, bool fold_by_open)
{
	print_message("pending fold: %s, folded by %s\n", e->what, fold_by_open ? "open" : "delete");
	static struct sc S;
	struct sc *s = &S;
	memset(s, 0, sizeof(*s));
	s->e = e;
	s->H = 1;
	s->head = calloc(1, VSIZE);
	s->rbuf = malloc(VSIZE);
	struct store *st;
	CK(store_open(e->pool, &st) == 0, "store_open");
	struct vol_params p = {.size = VSIZE, .object_size = OSZ, .block_size = 512};
	CK(store_vol_create(st, "v", &p) == 0, "create");
	store_close(st);
	TRY(sc_open(s));

	/* s1: A at [0,4M); s2: B over [0,2M); s3: Y at [8M,9M); head: Z */
	TRY(sc_write(s, 0, 4 << 20, 1));
	TRY(sc_snap(s, "s1"));
	TRY(sc_write(s, 0, 2 << 20, 2));
	TRY(sc_snap(s, "s2"));
	TRY(sc_write(s, 8 << 20, 1 << 20, 3));
	TRY(sc_snap(s, "s3"));
	TRY(sc_write(s, 12 << 20, 256 << 10, 4));
	TRY(check_all(s));

	/* Folding s3's layer (1 MiB) into s2's needs more than is free. */
	TRY(e->full(e, 64 << 10));
	TRY(sc_delete(s, "s2", -ENOSPC));
	TRY(check_all(s));
	CK(leftovers_on_disk(s) == 1, "one leftover expected, %d", leftovers_on_disk(s));

	/* The bug: this open failed with ENOSPC while the disk stayed full. */
	TRY(reopen(s));
	CK(leftovers_on_disk(s) == 1, "leftover folded on a full disk?");
	TRY(check_all(s));

	/* Room for small writes, not for the fold. */
	TRY(e->full(e, 384 << 10));
	TRY(sc_write(s, 5 << 20, 16 << 10, 5));
	TRY(sc_snap(s, "s4"));
	TRY(sc_write(s, (5 << 20) + 12288, 8192, 6)); /* partial overlap */
	TRY(check_all(s));
	TRY(sc_rollback(s, "s4", 0));
	TRY(check_all(s));
	TRY(sc_rollback(s, "s1", -EBUSY));

	/* A leftover above the newest snapshot: deleting s4 (layer 4) cannot
	 * fold the head's 192 KiB into it. */
	TRY(sc_write(s, 14 << 20, 192 << 10, 7));
	TRY(e->full(e, 64 << 10));
	TRY(sc_delete(s, "s4", -ENOSPC));
	TRY(check_all(s));
	CK(leftovers_on_disk(s) == 2, "two leftovers expected, %d", leftovers_on_disk(s));
	/* Two layers above s3 cannot go away in one rename: refused, and
	 * nothing changed. */
	TRY(sc_rollback(s, "s3", -ENOSPC));
	TRY(check_all(s));

	/* Another delete on a full disk: committed; its fold waits behind the
	 * leftover of s2 (same interval), never lands past it. */
	TRY(e->full(e, 16 << 10));
	TRY(sc_delete(s, "s1", -ENOSPC));
	TRY(check_all(s));
	CK(leftovers_on_disk(s) == 3, "three leftovers expected, %d", leftovers_on_disk(s));
	TRY(reopen(s));
	TRY(check_all(s));
	TRY(reopen(s));
	TRY(check_all(s));

	/* Space again: the next open, or the next delete, folds everything. */
	TRY(e->space(e));
	if (fold_by_open) {
		TRY(reopen(s));
	} else {
		TRY(sc_snap(s, "s5"));
		TRY(sc_delete(s, "s5", 0));
	}
	CK(leftovers_on_disk(s) == 0, "%d leftovers after the fold", leftovers_on_disk(s));
	TRY(check_all(s));
	TRY(reopen(s));
	TRY(check_all(s));
	TRY(sc_rollback(s, "s3", 0));
	TRY(check_all(s));
	TRY(sc_write(s, 100 << 10, 5000, 8));
	TRY(sc_snap(s, "s6"));
	TRY(sc_delete(s, "s3", 0));
	TRY(reopen(s));
	TRY(check_all(s));
	CK(leftovers_on_disk(s) == 0, "leftovers at the end");

	sc_close(s);
	for (size_t i = 0; i < s->n; i++)
		free(s->snaps[i].img);
	free(s->head);
	free(s->rbuf);
	return 0;
}

static void test_hook(void **state)
{
	(void)state;
	for (int by_open = 0; by_open < 2; by_open++) {
		struct env e = {.what = "fault injection", .full = hook_full, .space = hook_space};
		char *d = make_tmpdir();
		assert_non_null(d);
		snprintf(e.pool, sizeof(e.pool), "%s", d);
		int rc = scenario(&e, by_open);
		store_fold_fault = NULL;
		rm_rf(d);
		free(d);
		assert_int_equal(rc, 0);
	}
}

/* RELIABILITY.md finding 1, now with the leftover still pending: while
 * the fold of s2's layer cannot run, a delete of the older s1 must not fold
 * s1's layer past it into s3's (s1's block 0 would then shadow s2's in
 * s3).  Only the fold of layer 2 fails here, so s1's fold itself could
 * run: it must wait. */
static uint64_t hook_victim;

static int hook_only(uint64_t folded)
{
	return folded == hook_victim ? -ENOSPC : 0;
}

static void test_hook_order(void **state)
{
	(void)state;
	static struct sc S;
	struct sc *s = &S;
	struct env e = {.what = "fault injection on one layer"};
	char *d = make_tmpdir();
	assert_non_null(d);
	snprintf(e.pool, sizeof(e.pool), "%s", d);
	memset(s, 0, sizeof(*s));
	s->e = &e;
	s->H = 1;
	s->head = calloc(1, VSIZE);
	s->rbuf = malloc(VSIZE);
	struct store *st;
	assert_int_equal(store_open(e.pool, &st), 0);
	struct vol_params p = {.size = VSIZE, .object_size = OSZ, .block_size = 512};
	assert_int_equal(store_vol_create(st, "v", &p), 0);
	store_close(st);
	assert_int_equal(sc_open(s), 0);
	assert_int_equal(sc_write(s, 0, 4096, 1), 0); /* small: folds by copying into s3 */
	assert_int_equal(sc_snap(s, "s1"), 0);
	assert_int_equal(sc_write(s, 0, 4 << 20, 2), 0);
	assert_int_equal(sc_snap(s, "s2"), 0);
	assert_int_equal(sc_write(s, 8 << 20, 1 << 20, 3), 0);
	assert_int_equal(sc_snap(s, "s3"), 0);
	hook_victim = s->snaps[1].epoch;
	store_fold_fault = hook_only;
	assert_int_equal(sc_delete(s, "s2", -ENOSPC), 0);
	assert_int_equal(sc_delete(s, "s1", -ENOSPC), 0); /* committed, its fold waits */
	assert_int_equal(check_all(s), 0);
	assert_int_equal(leftovers_on_disk(s), 2);
	assert_int_equal(reopen(s), 0);
	assert_int_equal(check_all(s), 0);
	store_fold_fault = NULL;
	assert_int_equal(reopen(s), 0);
	assert_int_equal(leftovers_on_disk(s), 0);
	assert_int_equal(check_all(s), 0);
	sc_close(s);
	free(s->snaps[0].img);
	free(s->head);
	free(s->rbuf);
	rm_rf(d);
	free(d);
}

static int write_proc(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = write_full(fd, text, strlen(text));
	close(fd);
	return rc;
}

/* In the child: a private mount namespace with a 48 MiB tmpfs on mnt.
 * 0, or -1 when this machine does not allow it. */
static int private_tmpfs(const char *mnt)
{
	uid_t uid = getuid();
	gid_t gid = getgid();
	if (unshare(CLONE_NEWNS) < 0) {
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
			return -1;
		char m[64];
		snprintf(m, sizeof(m), "0 %u 1\n", (unsigned)uid);
		if (write_proc("/proc/self/setgroups", "deny") ||
		    write_proc("/proc/self/uid_map", m))
			return -1;
		snprintf(m, sizeof(m), "0 %u 1\n", (unsigned)gid);
		if (write_proc("/proc/self/gid_map", m))
			return -1;
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return -1;
	if (mount("ferry-test", mnt, "tmpfs", 0, "size=48m,mode=0700") < 0)
		return -1;
	return 0;
}

static void test_tmpfs(void **state)
{
	(void)state;
	char *d = make_tmpdir();
	assert_non_null(d);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (private_tmpfs(d)) {
			print_message("no private tmpfs here: %s\n", strerror(errno));
			_exit(77);
		}
		int rc = 0;
		for (int by_open = 0; by_open < 2 && !rc; by_open++) {
			struct env e = {.what = "full tmpfs", .full = fs_full, .space = fs_space};
			snprintf(e.pool, sizeof(e.pool), "%s/pool%d", d, by_open);
			snprintf(e.filler, sizeof(e.filler), "%s/filler", d);
			rc = scenario(&e, by_open);
			unlink(e.filler);
			rm_rf(e.pool);
		}
		_exit(rc ? 1 : 0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	rmdir(d); /* the mount went with the child's namespace */
	free(d);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	log_set_level(LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hook),
		cmocka_unit_test(test_hook_order),
		cmocka_unit_test(test_tmpfs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
