/* Crash test: a child runs a random write/flush/snapshot workload and logs
 * each operation to a pipe (intent before, completion after); the parent
 * SIGKILLs it at a random moment, reopens the volume and checks:
 *  - every snapshot whose creation completed reads exactly as logged;
 *  - the head holds every write completed before the last completed flush
 *    (per 4 KiB block: the flushed value or one a later write produced);
 *  - diffs never under-report.
 * FERRY_SEED=N replays, FERRY_ROUNDS=N scales.  Runs against the backend
 * FERRY_STORE_BACKEND names (store_test_util.h); on rbd the reopen after
 * the kill also takes the dead child's lock over, as ferryd restarting
 * after a kill -9 does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "store_test_util.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

enum { L_WRITE = 1, L_ZERO, L_FLUSH_DONE, L_SNAP, L_SNAP_DONE, L_DEL, L_DEL_DONE };

struct logrec {
	uint32_t type;
	uint32_t pad;
	uint64_t off, len, seed;
	char name[STORE_NAME_MAX + 1];
};

struct csnap {
	char name[STORE_NAME_MAX + 1];
	uint8_t *img;
	bool done;     /* creation completed */
	bool del;      /* delete started */
};

struct pw { /* a write logged after the last completed flush */
	uint64_t off, len, seed;
	bool zero;
};

struct crash {
	uint64_t seed, round;
	char *dir;
	uint64_t size;
	uint8_t *img;      /* head, all logged writes applied */
	uint8_t *flushed;  /* head at the last completed flush */
	struct pw *pend;
	size_t n_pend;
	struct csnap snaps[256];
	size_t n_snaps;
	uint64_t newer; /* head blocks found newer than the last flush */
};

#define CHECK(c, cond, ...)                                                               \
	do {                                                                                  \
		if (!(cond)) {                                                                    \
			print_message("FAIL FERRY_SEED=%llu round=%llu: ", (unsigned long long)(c)->seed, \
			              (unsigned long long)(c)->round);                                \
			print_message(__VA_ARGS__);                                                   \
			print_message("\n");                                                          \
			fail();                                                                       \
		}                                                                                 \
	} while (0)

static void gen_data(uint64_t seed, uint8_t *buf, uint64_t len)
{
	struct rng r = {.s = seed};
	rng_fill(&r, buf, len);
	/* some all-zero blocks inside data writes */
	if (seed % 3 == 0)
		for (uint64_t a = 0; a < len; a += 3 * STORE_BLOCK)
			memset(buf + a, 0, MIN(STORE_BLOCK, len - a));
}

static void logw(int fd, const struct logrec *l)
{
	if (write_full(fd, l, sizeof(*l)))
		_exit(3);
}

/* The child: never returns. */
static void child(const char *dir, uint64_t seed, uint64_t size, int fd)
{
	struct store *st;
	struct vol *v;
	log_set_level(LOG_ERROR);
	if (test_store_open(dir, &st) || vol_open(st, "v", &v))
		_exit(2);
	struct rng r = {.s = seed};
	uint8_t *buf = malloc(512 << 10);
	for (uint64_t op = 0; op < 5000; op++) {
		uint64_t x = rng_below(&r, 100);
		struct logrec l = {0};
		int rc = 0;
		if (x < 70) {
			l.len = 1 + rng_below(&r, rng_below(&r, 4) ? 16 << 10 : 512 << 10);
			if (rng_below(&r, 2))
				l.len = DIV_ROUND_UP(l.len, 512) * 512;
			l.off = rng_below(&r, size - l.len + 1);
			if (rng_below(&r, 2))
				l.off &= ~511ull;
			l.seed = rng_next(&r);
			l.type = x < 55 ? L_WRITE : L_ZERO;
			logw(fd, &l);
			if (l.type == L_WRITE) {
				gen_data(l.seed, buf, l.len);
				rc = vol_write(v, buf, l.off, l.len);
			} else {
				rc = vol_discard(v, l.off, l.len);
			}
		} else if (x < 82) {
			rc = vol_flush(v);
			l.type = L_FLUSH_DONE;
			if (!rc)
				logw(fd, &l);
		} else if (x < 92) {
			struct snap_info *si;
			size_t n;
			if (vol_snap_list(v, &si, &n))
				_exit(2);
			free(si);
			if (n >= 8)
				continue;
			snprintf(l.name, sizeof(l.name), "c%llx", (unsigned long long)rng_next(&r));
			l.type = L_SNAP;
			logw(fd, &l);
			rc = vol_snap_create(v, l.name);
			l.type = L_SNAP_DONE;
			if (!rc)
				logw(fd, &l);
		} else {
			struct snap_info *si;
			size_t n;
			if (vol_snap_list(v, &si, &n))
				_exit(2);
			if (n > 2) {
				snprintf(l.name, sizeof(l.name), "%s", si[rng_below(&r, n)].name);
				l.type = L_DEL;
				logw(fd, &l);
				rc = vol_snap_delete(v, l.name);
				l.type = L_DEL_DONE;
				if (!rc)
					logw(fd, &l);
			}
			free(si);
		}
		if (rc)
			_exit(4);
	}
	_exit(0);
}

static struct csnap *find_snap(struct crash *c, const char *name)
{
	for (size_t i = 0; i < c->n_snaps; i++)
		if (!strcmp(c->snaps[i].name, name))
			return &c->snaps[i];
	return NULL;
}

static void apply(struct crash *c, const struct logrec *l)
{
	switch (l->type) {
	case L_WRITE:
	case L_ZERO:
		if (l->type == L_WRITE)
			gen_data(l->seed, c->img + l->off, l->len);
		else
			memset(c->img + l->off, 0, l->len);
		c->pend = realloc(c->pend, (c->n_pend + 1) * sizeof(*c->pend));
		c->pend[c->n_pend++] = (struct pw){l->off, l->len, l->seed, l->type == L_ZERO};
		break;
	case L_SNAP_DONE:
	case L_FLUSH_DONE:
		memcpy(c->flushed, c->img, c->size);
		c->n_pend = 0;
		if (l->type == L_SNAP_DONE) {
			struct csnap *s = find_snap(c, l->name);
			CHECK(c, s, "snap done without intent");
			s->done = true;
		}
		break;
	case L_SNAP: {
		CHECK(c, c->n_snaps < ARRAY_SIZE(c->snaps), "too many snapshots");
		struct csnap *s = &c->snaps[c->n_snaps++];
		memset(s, 0, sizeof(*s));
		snprintf(s->name, sizeof(s->name), "%s", l->name);
		s->img = malloc(c->size);
		memcpy(s->img, c->img, c->size);
		break;
	}
	case L_DEL:
	case L_DEL_DONE: {
		struct csnap *s = find_snap(c, l->name);
		CHECK(c, s, "delete of an unknown snapshot %s", l->name);
		s->del = true;
		if (l->type == L_DEL_DONE) {
			/* gone for good: if it shows up after the crash it is
			 * reported as an unknown snapshot */
			free(s->img);
			*s = c->snaps[--c->n_snaps];
		}
		break;
	}
	default:
		CHECK(c, 0, "bad log record");
	}
}

/* Head check for one 4 KiB block: its value must be the flushed one or one
 * of the values later writes produced, in order. */
static bool head_block_ok(struct crash *c, uint64_t blk, const uint8_t *got)
{
	uint64_t bs = blk * STORE_BLOCK, bl = MIN(STORE_BLOCK, c->size - bs);
	uint8_t cur[STORE_BLOCK], *tmp = NULL;
	memcpy(cur, c->flushed + bs, bl);
	if (!memcmp(cur, got, bl))
		return true;
	for (size_t i = 0; i < c->n_pend; i++) {
		const struct pw *w = &c->pend[i];
		if (w->off >= bs + bl || w->off + w->len <= bs)
			continue;
		if (!tmp) {
			tmp = malloc(512 << 10);
		}
		if (!w->zero)
			gen_data(w->seed, tmp, w->len);
		uint64_t a = MAX(bs, w->off), b = MIN(bs + bl, w->off + w->len);
		if (w->zero)
			memset(cur + (a - bs), 0, b - a);
		else
			memcpy(cur + (a - bs), tmp + (a - w->off), b - a);
		if (!memcmp(cur, got, bl)) {
			free(tmp);
			return true;
		}
	}
	free(tmp);
	return false;
}

static void check_no_underreport(struct crash *c, struct vol *v, const char *from,
                                 const char *to, const uint8_t *fimg, const uint8_t *timg)
{
	struct vol_info vi;
	CHECK(c, vol_info(v, &vi) == 0, "vol_info");
	struct diff_rec d;
	diff_rec_init(&d, c->size, vi.object_size);
	int rc = vol_diff(v, from, to, diff_rec_cb, &d);
	CHECK(c, rc == 0, "diff: %d", rc);
	CHECK(c, !d.err[0], "diff %s..%s: %s", from ? from : "-", to ? to : "head", d.err);
	for (uint64_t blk = 0; blk < DIV_ROUND_UP(c->size, STORE_BLOCK); blk++) {
		uint64_t bs = blk * STORE_BLOCK, bl = MIN(STORE_BLOCK, c->size - bs);
		bool differs = fimg ? memcmp(fimg + bs, timg + bs, bl) != 0 : !buf_is_zero(timg + bs, bl);
		CHECK(c, !differs || d.kind[blk], "diff %s..%s under-reports block %llu",
		      from ? from : "-", to ? to : "head", (unsigned long long)blk);
		if (d.kind[blk])
			CHECK(c, (d.kind[blk] == 2) == buf_is_zero(timg + bs, bl),
			      "diff %s..%s: wrong kind for block %llu", from ? from : "-",
			      to ? to : "head", (unsigned long long)blk);
	}
	for (uint64_t o = 0; o < vi.objects; o++) {
		if (!d.obj_zero[o])
			continue;
		uint64_t oo = o * vi.object_size, ol = MIN(vi.object_size, c->size - oo);
		CHECK(c, (d.obj_zero[o] == 2) == buf_is_zero(timg + oo, ol), "all_zero wrong");
	}
	diff_rec_free(&d);
}

/* Reopens, verifies against the log, and resets the model to what is on
 * disk for the next round. */
static void verify(struct crash *c)
{
	struct store *st;
	struct vol *v;
	CHECK(c, test_store_open(c->dir, &st) == 0, "store_open");
	int rc = vol_open(st, "v", &v);
	CHECK(c, rc == 0, "vol_open after crash: %d", rc);
	struct snap_info *si;
	size_t n;
	CHECK(c, vol_snap_list(v, &si, &n) == 0, "snap list");
	for (size_t i = 0; i < c->n_snaps; i++) {
		struct csnap *s = &c->snaps[i];
		bool present = false;
		for (size_t j = 0; j < n; j++)
			present |= !strcmp(si[j].name, s->name);
		if (s->done && !s->del)
			CHECK(c, present, "completed snapshot %s lost", s->name);
	}
	uint8_t *buf = malloc(c->size), *prev = NULL;
	const char *prevname = NULL;
	struct csnap *keep = calloc(n + 1, sizeof(*keep));
	for (size_t j = 0; j < n; j++) {
		struct csnap *s = find_snap(c, si[j].name);
		CHECK(c, s, "unknown snapshot %s", si[j].name);
		CHECK(c, vol_read(v, s->name, buf, 0, c->size) == 0, "read snapshot");
		if (memcmp(buf, s->img, c->size)) {
			uint64_t k = 0;
			while (buf[k] == s->img[k])
				k++;
			CHECK(c, 0, "snapshot %s differs at byte %llu", s->name, (unsigned long long)k);
		}
		check_no_underreport(c, v, prevname, s->name, prev, s->img);
		prev = s->img;
		prevname = s->name;
		keep[j] = *s;
		s->img = NULL;
	}
	CHECK(c, vol_read(v, NULL, buf, 0, c->size) == 0, "read head");
	for (uint64_t blk = 0; blk < DIV_ROUND_UP(c->size, STORE_BLOCK); blk++) {
		uint64_t bs = blk * STORE_BLOCK, bl = MIN(STORE_BLOCK, c->size - bs);
		CHECK(c, head_block_ok(c, blk, buf + bs),
		      "head block %llu is neither the flushed value nor a later write",
		      (unsigned long long)blk);
		c->newer += memcmp(buf + bs, c->flushed + bs, bl) != 0;
	}
	check_no_underreport(c, v, prevname, NULL, prev, buf);
	/* the model now follows what is on disk */
	for (size_t i = 0; i < c->n_snaps; i++)
		free(c->snaps[i].img);
	memcpy(c->snaps, keep, n * sizeof(*keep));
	for (size_t j = 0; j < n; j++)
		c->snaps[j].done = true;
	c->n_snaps = n;
	memcpy(c->img, buf, c->size);
	memcpy(c->flushed, buf, c->size);
	c->n_pend = 0;
	free(keep);
	free(buf);
	free(si);
	vol_close(v);
	store_close(st);
}

static void test_crash(void **state)
{
	(void)state;
	struct crash C = {0}, *c = &C;
	c->seed = env_u64("FERRY_SEED", now_mono_ns() ^ (uint64_t)getpid() << 20);
	uint64_t rounds = env_u64("FERRY_ROUNDS", test_rbd() ? 10 : sanitized() ? 30 : 60);
	print_message("test_store_crash: FERRY_SEED=%llu FERRY_ROUNDS=%llu\n",
	              (unsigned long long)c->seed, (unsigned long long)rounds);
	log_set_level(LOG_WARN);
	struct rng r = {.s = c->seed};
	c->dir = make_tmpdir();
	assert_non_null(c->dir);
	static const uint32_t osz[] = {64 << 10, 256 << 10, 1 << 20};
	uint32_t bs = rng_below(&r, 2) ? 512 : 4096;
	c->size = (8ull << 20) - rng_below(&r, 16) * bs;
	struct vol_params p = {.size = c->size, .object_size = osz[rng_below(&r, 3)],
	                       .block_size = bs};
	struct store *st;
	assert_int_equal(test_store_open(c->dir, &st), 0);
	assert_int_equal(store_vol_create(st, "v", &p), 0);
	store_close(st);
	c->img = calloc(1, c->size);
	c->flushed = calloc(1, c->size);
	uint64_t total_recs = 0;
	for (c->round = 0; c->round < rounds; c->round++) {
		int pfd[2];
		assert_int_equal(pipe(pfd), 0);
		uint64_t cseed = rng_next(&r);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(pfd[0]);
			if (test_rbd()) {
				/* A forked child would draw the same "random" Ceph
				 * client nonces as the parent (fork copies the
				 * generator), so the parent's next client would
				 * have the dead child's address, which the reopen
				 * fences.  A fresh program seeds its own. */
				char a[4][32];
				snprintf(a[0], sizeof(a[0]), "%llu", (unsigned long long)cseed);
				snprintf(a[1], sizeof(a[1]), "%llu", (unsigned long long)c->size);
				snprintf(a[2], sizeof(a[2]), "%d", pfd[1]);
				execl("/proc/self/exe", "test_store_crash", "--child", c->dir, a[0], a[1],
				      a[2], (char *)NULL);
				_exit(5);
			}
			child(c->dir, cseed, c->size, pfd[1]);
		}
		close(pfd[1]);
		uint64_t want = 1 + rng_below(&r, 400), got = 0;
		struct logrec l;
		bool eof = false;
		while (got < want) {
			struct pollfd pf = {.fd = pfd[0], .events = POLLIN};
			int pr = poll(&pf, 1, 20000);
			CHECK(c, pr == 1, "child produced nothing for 20 s");
			if (read_full(pfd[0], &l, sizeof(l))) {
				eof = true;
				break;
			}
			apply(c, &l);
			got++;
		}
		/* a random moment inside whatever the child is doing now */
		uint64_t until = now_mono_ns() + rng_below(&r, 3000) * 1000;
		while (now_mono_ns() < until)
			;
		kill(pid, SIGKILL);
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		CHECK(c, (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ||
		             (WIFEXITED(status) && WEXITSTATUS(status) == 0),
		      "child failed (status %d)", status);
		while (!eof && read_full(pfd[0], &l, sizeof(l)) == 0) {
			apply(c, &l);
			got++;
		}
		close(pfd[0]);
		total_recs += got;
		verify(c);
	}
	print_message("test_store_crash: %llu rounds, %llu logged operations verified, "
	              "%llu head blocks held unflushed writes\n",
	              (unsigned long long)rounds, (unsigned long long)total_recs,
	              (unsigned long long)c->newer);
	for (size_t i = 0; i < c->n_snaps; i++)
		free(c->snaps[i].img);
	free(c->img);
	free(c->flushed);
	free(c->pend);
	test_store_cleanup(c->dir, "v");
	assert_int_equal(rm_rf(c->dir), 0);
	free(c->dir);
}

int main(int argc, char **argv)
{
	if (argc == 6 && !strcmp(argv[1], "--child")) {
		uint64_t seed, size, fd;
		if (parse_u64(argv[3], &seed) || parse_u64(argv[4], &size) || parse_u64(argv[5], &fd))
			return 2;
		child(argv[2], seed, size, (int)fd);
	}
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_crash)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
