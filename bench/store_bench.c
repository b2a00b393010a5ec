/* Store benchmark: the volume store against a raw sparse file driven the
 * same way, on the same file system, in one run.  Prints one line per
 * metric with the ratio.  Not a test: nothing here passes or fails.
 *
 * usage: store_bench DIR [--quick]
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "store/store.h"

static uint64_t g_rng = 88172645463325252ull;
static uint64_t rnd(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return g_rng;
}

static double secs(uint64_t t0) { return (double)(now_mono_ns() - t0) / 1e9; }

static void die(const char *what, int rc)
{
	fprintf(stderr, "store_bench: %s: %s\n", what, strerror(-rc));
	exit(1);
}

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &v) == 1)
			break;
	if (f)
		fclose(f);
	return v;
}

static void row(const char *metric, double store, double raw, const char *unit)
{
	if (raw > 0)
		printf("%-44s store %12.1f %-6s raw %12.1f %-6s ratio %.2fx\n", metric, store, unit, raw,
		       unit, store / raw);
	else
		printf("%-44s store %12.3f %s\n", metric, store, unit);
	fflush(stdout);
}

struct counter { uint64_t objs, blocks; };
static int count_cb(void *ctx, const struct diff_object *o)
{
	struct counter *c = ctx;
	c->objs++;
	for (size_t i = 0; i < o->n_extents; i++)
		c->blocks += o->extents[i].length / 4096;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: store_bench DIR [--quick]\n");
		return 2;
	}
	bool quick = argc > 2 && !strcmp(argv[2], "--quick");
	log_set_level(LOG_WARN);
	char pool[4096], rawpath[4200];
	snprintf(pool, sizeof(pool), "%s/pool", argv[1]);
	snprintf(rawpath, sizeof(rawpath), "%s/raw.img", argv[1]);
	rm_rf(pool);
	unlink(rawpath);

	struct store *s;
	int rc = store_open(pool, &s);
	if (rc)
		die("store_open", rc);
	const uint64_t span = quick ? (256ull << 20) : (2ull << 30); /* region exercised */
	const unsigned nrand = quick ? 20000 : 200000;
	struct vol_params p = {.size = 4ull << 30, .object_size = 0, .block_size = 512};
	if ((rc = store_vol_create(s, "bench", &p)))
		die("create", rc);
	struct vol *v;
	if ((rc = vol_open(s, "bench", &v)))
		die("open", rc);
	int raw = open(rawpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (raw < 0 || ftruncate(raw, (off_t)p.size) < 0)
		die("raw", -errno);

	char *buf = aligned_alloc(4096, 1 << 20);
	for (size_t i = 0; i < (1 << 20); i++)
		buf[i] = (char)(rnd() | 1);
	uint64_t *offs = malloc(nrand * sizeof(*offs));
	for (unsigned i = 0; i < nrand; i++)
		offs[i] = (rnd() % (span / 4096)) * 4096;

	printf("# store_bench on %s: %u random 4 KiB ops over %" PRIu64 " MiB, 1 MiB sequential over "
	       "%" PRIu64 " MiB (page cache; no flush inside the timed loops)\n",
	       argv[1], nrand, span >> 20, span >> 20);

	/* 4 KiB random write IOPS (first pass: allocating writes). */
	uint64_t t0 = now_mono_ns();
	for (unsigned i = 0; i < nrand; i++) {
		buf[0] = (char)i | 1;
		if ((rc = vol_write(v, buf, offs[i], 4096)))
			die("vol_write", rc);
	}
	double ts = secs(t0);
	t0 = now_mono_ns();
	for (unsigned i = 0; i < nrand; i++) {
		buf[0] = (char)i | 1;
		if ((rc = pwrite_full(raw, buf, 4096, offs[i])))
			die("pwrite", rc);
	}
	double tr = secs(t0);
	row("4K random write (IOPS)", nrand / ts, nrand / tr, "IOPS");

	/* 4 KiB random read IOPS. */
	t0 = now_mono_ns();
	for (unsigned i = 0; i < nrand; i++)
		if ((rc = vol_read(v, NULL, buf, offs[nrand - 1 - i], 4096)))
			die("vol_read", rc);
	ts = secs(t0);
	t0 = now_mono_ns();
	for (unsigned i = 0; i < nrand; i++)
		if ((rc = pread_full(raw, buf, 4096, offs[nrand - 1 - i])))
			die("pread", rc);
	tr = secs(t0);
	row("4K random read (IOPS)", nrand / ts, nrand / tr, "IOPS");

	/* 1 MiB sequential write / read. */
	for (size_t i = 0; i < (1 << 20); i++)
		buf[i] = (char)(rnd() | 1);
	t0 = now_mono_ns();
	for (uint64_t o = 0; o < span; o += 1 << 20)
		if ((rc = vol_write(v, buf, o, 1 << 20)))
			die("vol_write", rc);
	if ((rc = vol_flush(v)))
		die("flush", rc);
	ts = secs(t0);
	t0 = now_mono_ns();
	for (uint64_t o = 0; o < span; o += 1 << 20)
		if ((rc = pwrite_full(raw, buf, 1 << 20, o)))
			die("pwrite", rc);
	fdatasync(raw);
	tr = secs(t0);
	row("1M sequential write + flush (MiB/s)", (double)(span >> 20) / ts,
	    (double)(span >> 20) / tr, "MiB/s");
	t0 = now_mono_ns();
	for (uint64_t o = 0; o < span; o += 1 << 20)
		if ((rc = vol_read(v, NULL, buf, o, 1 << 20)))
			die("vol_read", rc);
	ts = secs(t0);
	t0 = now_mono_ns();
	for (uint64_t o = 0; o < span; o += 1 << 20)
		if ((rc = pread_full(raw, buf, 1 << 20, o)))
			die("pread", rc);
	tr = secs(t0);
	row("1M sequential read (MiB/s)", (double)(span >> 20) / ts, (double)(span >> 20) / tr,
	    "MiB/s");

	/* First writes after a snapshot vs steady-state writes (store only). */
	t0 = now_mono_ns();
	if ((rc = vol_snap_create(v, "s1")))
		die("snap", rc);
	double snap_after_seq = secs(t0);
	t0 = now_mono_ns();
	for (unsigned i = 0; i < nrand; i++)
		if ((rc = vol_write(v, buf, offs[i], 4096)))
			die("vol_write", rc);
	double first = secs(t0);
	t0 = now_mono_ns();
	for (unsigned i = 0; i < nrand; i++)
		if ((rc = vol_write(v, buf, offs[i], 4096)))
			die("vol_write", rc);
	double again = secs(t0);
	row("4K random write, first after snapshot (IOPS)", nrand / first, nrand / again, "IOPS");
	printf("%-44s (ratio = first-after-snapshot / rewrite of the same blocks)\n", "");
	char lbl[96];
	snprintf(lbl, sizeof(lbl), "snapshot create after %" PRIu64 " MiB seq write (ms)", span >> 20);
	row(lbl, snap_after_seq * 1e3, 0, "ms");
	vol_close(v);

	/* Snapshot create with 10,000 objects written. */
	struct vol_params p2 = {.size = 10000ull * (4u << 20), .object_size = 0, .block_size = 512};
	if ((rc = store_vol_create(s, "snaps", &p2)))
		die("create", rc);
	if ((rc = vol_open(s, "snaps", &v)))
		die("open", rc);
	for (uint64_t o = 0; o < 10000; o++)
		if ((rc = vol_write(v, buf, o * (4u << 20) + 8192, 4096)))
			die("vol_write", rc);
	t0 = now_mono_ns();
	if ((rc = vol_snap_create(v, "a")))
		die("snap", rc);
	row("snapshot create, 10,000 objects dirty (ms)", secs(t0) * 1e3, 0, "ms");
	for (uint64_t o = 0; o < 10000; o++)
		if ((rc = vol_write(v, buf, o * (4u << 20) + 16384, 4096)))
			die("vol_write", rc);
	vol_flush(v);
	t0 = now_mono_ns();
	if ((rc = vol_snap_create(v, "b")))
		die("snap", rc);
	row("snapshot create, 10,000 objects, flushed (ms)", secs(t0) * 1e3, 0, "ms");
	vol_close(v);

	/* Diff cost: 64 GiB thin volume, 1% changed in random 4 KiB writes;
	 * then the same absolute change on a 1 TiB volume. */
	uint64_t sizes[2] = {64ull << 30, 1ull << 40};
	uint64_t nchg = quick ? 20000 : (64ull << 30) / 100 / 4096; /* 1% of 64 GiB */
	for (int k = 0; k < 2; k++) {
		char name[32];
		snprintf(name, sizeof(name), "diff%d", k);
		struct vol_params p3 = {.size = sizes[k], .object_size = 0, .block_size = 512};
		if ((rc = store_vol_create(s, name, &p3)))
			die("create", rc);
		if ((rc = vol_open(s, name, &v)))
			die("open", rc);
		long rss0 = rss_kib();
		if ((rc = vol_snap_create(v, "base")))
			die("snap", rc);
		uint64_t span3 = 64ull << 30;
		for (uint64_t i = 0; i < nchg; i++)
			if ((rc = vol_write(v, buf + (i % 255), (rnd() % (span3 / 4096)) * 4096, 4096)))
				die("vol_write", rc);
		if ((rc = vol_snap_create(v, "top")))
			die("snap", rc);
		struct counter c = {0, 0};
		t0 = now_mono_ns();
		if ((rc = vol_diff(v, "base", "top", count_cb, &c)))
			die("diff", rc);
		double td = secs(t0);
		char label[96];
		snprintf(label, sizeof(label), "diff %" PRIu64 " GiB vol, %" PRIu64 " blocks chg (ms)",
		         sizes[k] >> 30, c.blocks);
		row(label, td * 1e3, 0, "ms");
		long rss1 = rss_kib();
		snprintf(label, sizeof(label), "RSS growth, %" PRIu64 " GiB vol, %" PRIu64 " objs (MiB)",
		         sizes[k] >> 30, c.objs);
		row(label, (double)(rss1 - rss0) / 1024.0, 0, "MiB");
		vol_close(v);
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("%-44s %ld MiB (whole run)\n", "peak RSS", ru.ru_maxrss / 1024);
	store_close(s);
	close(raw);
	rm_rf(pool);
	unlink(rawpath);
	free(buf);
	free(offs);
	return 0;
}
