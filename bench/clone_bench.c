/* Clone creation time (issue 12: goal <= 10 ms on a 1 TiB volume with
 * 10 GiB written), and that it does not depend on the data written: two
 * 1 TiB volumes with SMALL and BIG GiB of random data spread over them,
 * one snapshot each; then, ROUNDS times, store_vol_clone of each
 * (alternating which goes first), each clone checked to read its
 * parent's bytes, then removed.  Prints one line per sample
 * (variant, round, ms) and a summary (median, min, max per variant).
 *
 *   clone_bench DIR SMALL_GIB BIG_GIB ROUNDS
 */
#include "store/store.h"

#include "common/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static _Noreturn void die(const char *what, int rc)
{
	fprintf(stderr, "clone_bench: %s: %s\n", what, strerror(-rc));
	exit(1);
}

static uint64_t rng_s = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	uint64_t z = (rng_s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* A 1 TiB volume with gib GiB of fresh random data in 1 MiB writes spread
 * evenly over it, and snapshot "s". */
static void fill(struct store *s, const char *name, uint64_t gib)
{
	struct vol_params p = {.size = 1ull << 40, .object_size = 0, .block_size = 512};
	int rc = store_vol_create(s, name, &p);
	if (rc)
		die("create", rc);
	struct vol *v;
	if ((rc = vol_open(s, name, &v)))
		die("open", rc);
	const uint64_t chunk = 1 << 20, n = gib << 10, stride = p.size / (n ? n : 1);
	uint64_t *buf = malloc(chunk);
	uint64_t t0 = now_mono_ns();
	for (uint64_t i = 0; i < n; i++) {
		for (size_t k = 0; k < chunk / 8; k++)
			buf[k] = rnd();
		if ((rc = vol_write(v, buf, i * stride, chunk)))
			die("write", rc);
	}
	if ((rc = vol_flush(v)) || (rc = vol_snap_create(v, "s")))
		die("snapshot", rc);
	double sec = (double)(now_mono_ns() - t0) / 1e9;
	struct vol_info vi;
	vol_info(v, &vi);
	printf("# %s: 1 TiB volume, %llu GiB of random data written in %.1f s (%.0f MB/s), "
	       "allocated %llu bytes\n", name, (unsigned long long)gib, sec,
	       sec > 0 ? (double)(gib << 30) / sec / 1e6 : 0, (unsigned long long)vi.allocated_bytes);
	free(buf);
	vol_close(v);
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: clone_bench DIR SMALL_GIB BIG_GIB ROUNDS\n");
		return 2;
	}
	log_set_level(LOG_WARN);
	char pool[4096];
	snprintf(pool, sizeof(pool), "%s/pool", argv[1]);
	rm_rf(pool);
	uint64_t gib[2] = {strtoull(argv[2], NULL, 10), strtoull(argv[3], NULL, 10)};
	unsigned rounds = (unsigned)strtoul(argv[4], NULL, 10);
	const char *names[2] = {"small", "big"};
	struct store *s;
	int rc = store_open(pool, &s);
	if (rc)
		die("store_open", rc);
	for (int k = 0; k < 2; k++)
		fill(s, names[k], gib[k]);
	sync(); /* no writeback of the fill left to slow the clones' fsyncs */
	/* Open, as in a running ferryd that serves or replicates them: the
	 * clone then takes the source's lock instead of reading its meta. */
	struct vol *src[2];
	for (int k = 0; k < 2; k++)
		if ((rc = vol_open(s, names[k], &src[k])))
			die("open", rc);
	double *ms[2] = {calloc(rounds, sizeof(double)), calloc(rounds, sizeof(double))};
	uint8_t a[4096], b[4096];
	for (unsigned r = 0; r < rounds; r++) {
		for (int j = 0; j < 2; j++) {
			int k = r % 2 ? 1 - j : j; /* A/B, then B/A */
			char cn[64];
			snprintf(cn, sizeof(cn), "%s-clone-%u", names[k], r);
			uint64_t t0 = now_mono_ns();
			if ((rc = store_vol_clone(s, names[k], "s", cn)))
				die("clone", rc);
			ms[k][r] = (double)(now_mono_ns() - t0) / 1e6;
			printf("%s\t%u\t%.3f\n", names[k], r, ms[k][r]);
			/* it reads its parent's snapshot (the first data chunk) */
			struct vol *c;
			if ((rc = vol_open(s, cn, &c)))
				die("open clone", rc);
			if ((rc = vol_read(c, NULL, a, 0, sizeof(a))) ||
			    (rc = vol_read(src[k], "s", b, 0, sizeof(b))))
				die("read", rc);
			if (memcmp(a, b, sizeof(a))) {
				fprintf(stderr, "clone_bench: %s reads differently from %s@s\n", cn, names[k]);
				return 1;
			}
			vol_close(c);
			if ((rc = store_vol_remove(s, cn, true)))
				die("remove clone", rc);
		}
	}
	for (int k = 0; k < 2; k++) {
		qsort(ms[k], rounds, sizeof(double), cmp_d);
		printf("clone of a 1 TiB volume with %llu GiB written: median %.3f ms, min %.3f, "
		       "max %.3f (%u clones)\n", (unsigned long long)gib[k], ms[k][rounds / 2],
		       ms[k][0], ms[k][rounds - 1], rounds);
	}
	printf("ratio big/small (medians): %.2f\n", ms[1][rounds / 2] / ms[0][rounds / 2]);
	/* flatten of a clone of the small one: its cost follows the data */
	{
		struct vol *c = NULL;
		if ((rc = store_vol_clone(s, names[0], "s", "flat")) || (rc = vol_open(s, "flat", &c)))
			die("clone for flatten", rc);
		sync();
		uint64_t t0 = now_mono_ns();
		if ((rc = vol_flatten(c, NULL, NULL)))
			die("flatten", rc);
		double sec = (double)(now_mono_ns() - t0) / 1e9;
		printf("flatten of a clone of the %llu GiB volume: %.2f s (%.0f MB/s of data copied)\n",
		       (unsigned long long)gib[0], sec, sec > 0 ? (double)(gib[0] << 30) / sec / 1e6 : 0);
		vol_close(c);
	}
	for (int k = 0; k < 2; k++)
		vol_close(src[k]);
	store_close(s);
	rm_rf(pool);
	free(ms[0]);
	free(ms[1]);
	return 0;
}
