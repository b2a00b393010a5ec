/* vol_snap_create_cut: the cut of a consistency group, against writers
 * that cannot cheat.  Each writer writes record n to volume 1, waits for
 * the write to return (its acknowledgement), then writes record n to
 * volume 2, and goes on with n + 1.  Every cut must then hold a prefix of
 * the records on each volume, and volume 2's prefix is never longer than
 * volume 1's (nor shorter by more than the one record in flight).  Also:
 * all or none when a member already has the name, held writes are not
 * failed, and the hold time is reported.  Runs on RBD too (rbd_run.sh). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "store/store_int.h"
#include "store_test_util.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>

#define REC 4096u
#define WRITERS 2u
#define REGION (2048u * REC) /* records per writer: 2048 */
#define BUDGET 24u           /* records a writer may write per cut started */
#define VSIZE (WRITERS * REGION)

struct fx {
	char *dir;
	struct store *st;
	struct vol *v[3];
};

static const char *const names[3] = {"cut-a", "cut-b", "cut-c"};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	f->dir = make_tmpdir();
	if (!f->dir || test_store_open(f->dir, &f->st))
		return -1;
	struct vol_params p = {.size = VSIZE, .object_size = 256u << 10};
	for (int i = 0; i < 3; i++) {
		store_vol_remove(f->st, names[i], true); /* rbd: a leftover */
		if (store_vol_create(f->st, names[i], &p) || vol_open(f->st, names[i], &f->v[i]))
			return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	for (int i = 0; i < 3; i++) {
		vol_close(f->v[i]);
		store_vol_remove(f->st, names[i], true);
	}
	store_close(f->st);
	rm_rf(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

/* Pacing: a writer writes at most BUDGET records per cut started, so that
 * the records spread over all the cuts and writes are on the move while a
 * cut begins (the cutter raises the budget just before each cut). */
static pthread_mutex_t pace_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pace_cv = PTHREAD_COND_INITIALIZER;
static uint64_t pace_budget;

struct writer {
	struct fx *f;
	unsigned k;          /* region */
	atomic_bool *stop;
	uint64_t written;    /* records written to both volumes */
	int err;
};

static void rec_fill(uint8_t *b, unsigned k, uint64_t n)
{
	for (size_t i = 0; i < REC; i += 16) {
		memcpy(b + i, &n, 8);
		uint64_t kk = k + 1;
		memcpy(b + i + 8, &kk, 8);
	}
}

static void *writer_run(void *arg)
{
	struct writer *w = arg;
	uint8_t *b = malloc(REC);
	for (uint64_t n = 1; n <= REGION / REC && !atomic_load(w->stop); n++) {
		pthread_mutex_lock(&pace_mu);
		while (n > pace_budget && !atomic_load(w->stop))
			pthread_cond_wait(&pace_cv, &pace_mu);
		pthread_mutex_unlock(&pace_mu);
		rec_fill(b, w->k, n);
		uint64_t off = (uint64_t)w->k * REGION + (n - 1) * REC;
		int rc = vol_write(w->f->v[0], b, off, REC);
		if (!rc)
			rc = vol_write(w->f->v[1], b, off, REC);
		if (rc) {
			w->err = rc;
			break;
		}
		__atomic_store_n(&w->written, n, __ATOMIC_RELAXED);
	}
	free(b);
	return NULL;
}

/* The number of leading records of region k in snap; -1 when what
 * follows them is not all zeros (not a prefix). */
static int64_t prefix_len(struct vol *v, const char *snap, unsigned k)
{
	uint8_t *buf = malloc(REGION), *want = malloc(REC);
	assert_int_equal(vol_read(v, snap, buf, (uint64_t)k * REGION, REGION), 0);
	int64_t p = 0;
	uint64_t n;
	for (n = 1; n <= REGION / REC; n++) {
		rec_fill(want, k, n);
		if (memcmp(buf + (n - 1) * REC, want, REC))
			break;
		p = (int64_t)n;
	}
	for (uint64_t i = (uint64_t)p * REC; i < REGION; i++)
		if (buf[i]) {
			p = -1;
			break;
		}
	free(buf);
	free(want);
	return p;
}

/* Members' snapshots a little apart in time: without the write gate a
 * writer's record would land between them and break the prefix order. */
static void cut_spread(size_t member)
{
	usleep((useconds_t)member * 3000);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void test_cut_prefix(void **state)
{
	struct fx *f = *state;
	unsigned cuts = (unsigned)env_u64("FERRY_CUTS", test_rbd() ? 20 : 60);
	atomic_bool stop = false;
	pace_budget = BUDGET;
	struct writer w[WRITERS];
	pthread_t th[WRITERS];
	for (unsigned k = 0; k < WRITERS; k++) {
		w[k] = (struct writer){.f = f, .k = k, .stop = &stop};
		assert_int_equal(pthread_create(&th[k], NULL, writer_run, &w[k]), 0);
	}
	uint64_t *hold = calloc(cuts, sizeof(*hold));
	store_cut_hook = cut_spread;
	struct vol *both[2] = {f->v[0], f->v[1]};
	unsigned made = 0;
	for (unsigned c = 0; c < cuts; c++) {
		char sn[32];
		snprintf(sn, sizeof(sn), "c%04u", c);
		pthread_mutex_lock(&pace_mu);
		pace_budget += BUDGET;
		pthread_cond_broadcast(&pace_cv);
		pthread_mutex_unlock(&pace_mu);
		assert_int_equal(vol_snap_create_cut(both, 2, sn, &hold[c]), 0);
		assert_true(hold[c] > 0);
		made++;
		/* let the writers use their budget (a bounded wait for it) */
		uint64_t t = now_mono_ns();
		for (unsigned k = 0; k < WRITERS; k++)
			while (__atomic_load_n(&w[k].written, __ATOMIC_RELAXED) + 2 < pace_budget &&
			       now_mono_ns() - t < 500000000ull)
				usleep(200);
	}
	store_cut_hook = NULL;
	atomic_store(&stop, true);
	pthread_mutex_lock(&pace_mu);
	pthread_cond_broadcast(&pace_cv);
	pthread_mutex_unlock(&pace_mu);
	for (unsigned k = 0; k < WRITERS; k++) {
		pthread_join(th[k], NULL);
		assert_int_equal(w[k].err, 0); /* held, never failed */
	}
	unsigned moving = 0;
	int64_t last[WRITERS] = {0};
	for (unsigned c = 0; c < made; c++) {
		char sn[32];
		snprintf(sn, sizeof(sn), "c%04u", c);
		for (unsigned k = 0; k < WRITERS; k++) {
			int64_t p1 = prefix_len(f->v[0], sn, k), p2 = prefix_len(f->v[1], sn, k);
			if (p1 < 0 || p2 < 0 || p2 > p1 || p1 > p2 + 1)
				fail_msg("cut %s region %u: volume 1 prefix %" PRId64 ", volume 2 prefix %"
				         PRId64, sn, k, p1, p2);
			if (p1 < last[k])
				fail_msg("cut %s region %u went back: %" PRId64 " < %" PRId64, sn, k, p1,
				         last[k]);
			if (p1 != last[k])
				moving++;
			last[k] = p1;
		}
	}
	/* the writers really wrote between cuts (else the test proves nothing) */
	assert_true(moving >= made / 2);
	qsort(hold, made, sizeof(*hold), cmp_u64);
	printf("cut: %u cuts of 2 volumes with %u writers; hold median %.3f ms, max %.3f ms; "
	       "records %" PRIu64 " + %" PRIu64 "\n",
	       made, WRITERS, hold[made / 2] / 1e6, hold[made - 1] / 1e6, w[0].written,
	       w[1].written);
	free(hold);
}

static void test_cut_all_or_none(void **state)
{
	struct fx *f = *state;
	struct vol *all[3] = {f->v[0], f->v[1], f->v[2]};
	assert_int_equal(vol_snap_create(f->v[1], "taken"), 0);
	uint64_t hold = 1;
	assert_int_equal(vol_snap_create_cut(all, 3, "taken", &hold), -EEXIST);
	assert_int_equal(hold, 0);
	struct snap_info si;
	assert_int_equal(vol_snap_get(f->v[0], "taken", &si), -ENOENT);
	assert_int_equal(vol_snap_get(f->v[2], "taken", &si), -ENOENT);
	/* a volume twice, no volume, a bad name */
	struct vol *twice[2] = {f->v[0], f->v[0]};
	assert_int_equal(vol_snap_create_cut(twice, 2, "x", NULL), -EINVAL);
	assert_int_equal(vol_snap_create_cut(all, 0, "x", NULL), -EINVAL);
	assert_int_equal(vol_snap_create_cut(all, 3, "../x", NULL), -EINVAL);
	/* a good one: every member has it, the head still takes writes */
	assert_int_equal(vol_snap_create_cut(all, 3, "g1", &hold), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(vol_snap_get(f->v[i], "g1", &si), 0);
	uint8_t b[REC];
	memset(b, 7, sizeof(b));
	assert_int_equal(vol_write(f->v[2], b, 0, REC), 0);
	assert_int_equal(vol_discard(f->v[2], 0, REC), 0);
	assert_int_equal(vol_write_zeroes(f->v[2], REC, REC), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cut_prefix, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cut_all_or_none, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
