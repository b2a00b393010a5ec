/* Group cut benchmark (bench/group.sh): the write hold of a consistency
 * group's cut (vol_snap_create_cut) under a 4K random-write load on 4
 * volumes, and what cuts every second cost that load.  In process, on the
 * store (the layer every client's write goes through); not a test.
 *
 *   group_bench DIR [--cuts N] [--rounds R] [--round-secs S] [--size MIB]
 *               [--rate IOPS]
 *
 * --rate: the writers together offer IOPS writes/s (paced, as a client at
 * a fixed rate); without it they write as fast as they can (page-cache
 * speed, far beyond what an iSCSI client gets here).
 *
 * 1. hold: one writer thread per volume writes random 4 KiB blocks of
 *    random data; N cuts, 20 ms apart; the last two cuts' snapshots are
 *    kept, older ones deleted (outside the hold).  Prints the hold's
 *    median, p90, p99 and max, and the median of the first and of the
 *    last tenth of the cuts.
 * 2. IOPS: R rounds of two S-second runs each, interleaved: without cuts,
 *    then with a cut every second (order alternates per round).  Prints
 *    every run, the median of each mode and the ratio.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "store/store.h"

#define NV 4
#define BLK 4096u
#define POOLBUF (256u * BLK) /* random data the writers pick blocks from */

static struct vol *g_v[NV];
static uint64_t g_blocks;
static uint8_t *g_data;
static atomic_bool g_stop;
static atomic_uint_fast64_t g_writes;
static uint64_t g_rate; /* writes/s per writer; 0 = as fast as it can */

static void die(const char *what, int rc)
{
	fprintf(stderr, "group_bench: %s: %s\n", what, strerror(-rc));
	exit(1);
}

static void *writer(void *arg)
{
	size_t k = (size_t)arg;
	uint64_t x = 0x9e3779b97f4a7c15ull * (k + 1), n = 0, t0 = now_mono_ns();
	while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
		if (g_rate) {
			/* paced like a client with a fixed rate: write n is due at n / rate */
			uint64_t due = t0 + n++ * 1000000000ull / g_rate, now = now_mono_ns();
			if (due > now) {
				struct timespec ts = {(time_t)((due - now) / 1000000000ull),
				                      (long)((due - now) % 1000000000ull)};
				nanosleep(&ts, NULL);
			}
		}
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint64_t b = x % g_blocks;
		int rc = vol_write(g_v[k], g_data + (x >> 40) % (POOLBUF / BLK) * BLK, b * BLK, BLK);
		if (rc)
			die("write", rc);
		atomic_fetch_add_explicit(&g_writes, 1, memory_order_relaxed);
	}
	return NULL;
}

static pthread_t g_th[NV];
static void load_start(void)
{
	atomic_store(&g_stop, false);
	for (size_t k = 0; k < NV; k++)
		if (pthread_create(&g_th[k], NULL, writer, (void *)k))
			die("thread", -errno);
}

static void load_stop(void)
{
	atomic_store(&g_stop, true);
	for (size_t k = 0; k < NV; k++)
		pthread_join(g_th[k], NULL);
}

static unsigned g_seq;
static uint64_t g_cut_ns, g_del_ns; /* whole cut calls, snapshot deletes */
/* One cut; the snapshot of the cut before the previous one is deleted
 * after it, outside the hold (as replication drops its old cycle
 * snapshots; it also bounds the space the run takes).  Returns the hold
 * in ns. */
static uint64_t cut(void)
{
	char name[32], old[32];
	snprintf(name, sizeof(name), "cut%u", g_seq);
	uint64_t hold, t0 = now_mono_ns();
	int rc = vol_snap_create_cut(g_v, NV, name, &hold);
	if (rc)
		die("cut", rc);
	uint64_t t1 = now_mono_ns();
	g_cut_ns += t1 - t0;
	if (g_seq >= 2) {
		snprintf(old, sizeof(old), "cut%u", g_seq - 2);
		for (size_t k = 0; k < NV; k++)
			if ((rc = vol_snap_delete(g_v[k], old)) && rc != -ENOSPC)
				die("snapshot delete", rc);
	}
	g_del_ns += now_mono_ns() - t1;
	g_seq++;
	return hold;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* One IOPS run of secs seconds; with_cuts: a cut every second. */
static double run(unsigned secs, bool with_cuts, uint64_t *hold_max)
{
	uint64_t w0 = atomic_load(&g_writes), t0 = now_mono_ns();
	load_start();
	for (unsigned s = 0; s < secs; s++) {
		sleep_ms(1000);
		if (with_cuts) {
			uint64_t h = cut();
			if (h > *hold_max)
				*hold_max = h;
		}
	}
	load_stop();
	return (double)(atomic_load(&g_writes) - w0) / ((double)(now_mono_ns() - t0) / 1e9);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: group_bench DIR [--cuts N] [--rounds R] [--round-secs S] "
		                "[--size MIB] [--rate IOPS]\n");
		return 2;
	}
	unsigned cuts = 1000, rounds = 5, secs = 10;
	uint64_t mib = 256;
	for (int i = 2; i + 1 < argc; i += 2) {
		uint64_t v;
		if (parse_u64(argv[i + 1], &v) < 0 || !v) {
			fprintf(stderr, "group_bench: bad %s\n", argv[i]);
			return 2;
		}
		if (!strcmp(argv[i], "--cuts"))
			cuts = (unsigned)v;
		else if (!strcmp(argv[i], "--rounds"))
			rounds = (unsigned)v;
		else if (!strcmp(argv[i], "--round-secs"))
			secs = (unsigned)v;
		else if (!strcmp(argv[i], "--size"))
			mib = v;
		else if (!strcmp(argv[i], "--rate"))
			g_rate = v / NV;
	}
	log_set_level(LOG_WARN);
	struct store *st;
	int rc = store_open(argv[1], &st);
	if (rc)
		die("store_open", rc);
	g_blocks = (mib << 20) / BLK;
	g_data = malloc(POOLBUF);
	FILE *ur = fopen("/dev/urandom", "rb");
	if (!g_data || !ur || fread(g_data, 1, POOLBUF, ur) != POOLBUF)
		die("random data", -EIO);
	fclose(ur);
	for (size_t k = 0; k < NV; k++) {
		char name[16];
		snprintf(name, sizeof(name), "g%zu", k);
		struct vol_params p = {.size = mib << 20};
		if ((rc = store_vol_create(st, name, &p)) || (rc = vol_open(st, name, &g_v[k])))
			die("volume", rc);
	}

	/* 1. the hold */
	uint64_t *hold = calloc(cuts, sizeof(*hold));
	uint64_t w0 = atomic_load(&g_writes), t0 = now_mono_ns();
	load_start();
	for (unsigned c = 0; c < cuts; c++) {
		sleep_ms(20);
		hold[c] = cut();
		if ((c + 1) % 50 == 0 && c + 1 < cuts) {
			/* so far, for a run that does not get to the end */
			uint64_t *sofar = malloc((c + 1) * sizeof(*sofar));
			memcpy(sofar, hold, (c + 1) * sizeof(*sofar));
			qsort(sofar, c + 1, sizeof(*sofar), cmp_u64);
			printf("so_far\tcuts=%u\tmedian_ms=%.3f\tmax_ms=%.3f\tcut_call_mean_ms=%.1f\t"
			       "delete_mean_ms=%.1f\n", c + 1, sofar[(c + 1) / 2] / 1e6, sofar[c] / 1e6,
			       g_cut_ns / 1e6 / (c + 1), g_del_ns / 1e6 / (c + 1));
			fflush(stdout);
			free(sofar);
		}
	}
	load_stop();
	double wps = (double)(atomic_load(&g_writes) - w0) / ((double)(now_mono_ns() - t0) / 1e9);
	size_t tenth = cuts / 10 ? cuts / 10 : 1;
	uint64_t *part = calloc(tenth, sizeof(*part));
	memcpy(part, hold, tenth * sizeof(*part));
	qsort(part, tenth, sizeof(*part), cmp_u64);
	double first = part[tenth / 2] / 1e6;
	memcpy(part, hold + cuts - tenth, tenth * sizeof(*part));
	qsort(part, tenth, sizeof(*part), cmp_u64);
	double last = part[tenth / 2] / 1e6;
	free(part);
	qsort(hold, cuts, sizeof(*hold), cmp_u64);
	printf("hold\tcuts=%u\tvolumes=%d\tmedian_ms=%.3f\tp90_ms=%.3f\tp99_ms=%.3f\tmax_ms=%.3f\t"
	       "first_tenth_median_ms=%.3f\tlast_tenth_median_ms=%.3f\tload_iops=%.0f\t"
	       "cut_call_mean_ms=%.1f\tdelete_mean_ms=%.1f\n",
	       cuts, NV, hold[cuts / 2] / 1e6, hold[cuts * 9 / 10] / 1e6, hold[cuts * 99 / 100] / 1e6,
	       hold[cuts - 1] / 1e6, first, last, wps, g_cut_ns / 1e6 / cuts, g_del_ns / 1e6 / cuts);
	fflush(stdout);
	free(hold);

	/* 2. IOPS with and without a cut every second, interleaved */
	double *a = calloc(rounds, sizeof(double)), *b = calloc(rounds, sizeof(double));
	uint64_t hmax = 0;
	for (unsigned r = 0; r < rounds; r++) {
		bool cuts_first = r & 1;
		if (cuts_first)
			b[r] = run(secs, true, &hmax);
		a[r] = run(secs, false, &hmax);
		if (!cuts_first)
			b[r] = run(secs, true, &hmax);
		printf("round\t%u\tno_cuts_iops=%.0f\tcuts_1s_iops=%.0f\n", r + 1, a[r], b[r]);
		fflush(stdout);
	}
	qsort(a, rounds, sizeof(double), cmp_dbl);
	qsort(b, rounds, sizeof(double), cmp_dbl);
	double ma = a[rounds / 2], mb = b[rounds / 2];
	printf("iops\trounds=%u\tsecs=%u\tno_cuts_median=%.0f (%.0f..%.0f)\tcuts_1s_median=%.0f "
	       "(%.0f..%.0f)\tratio=%.3f\tloss_pct=%.1f\tmax_hold_ms=%.3f\n",
	       rounds, secs, ma, a[0], a[rounds - 1], mb, b[0], b[rounds - 1], mb / ma,
	       100.0 * (1.0 - mb / ma), hmax / 1e6);
	for (size_t k = 0; k < NV; k++)
		vol_close(g_v[k]);
	store_close(st);
	free(a);
	free(b);
	free(g_data);
	return 0;
}
