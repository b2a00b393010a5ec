/* Scattered 4 KiB writes on a large thin volume: the store's write path
 * (what an iSCSI client's writes cost the primary) against a raw sparse
 * file driven the same way, with the same flush policy.
 *
 *   scatter_bench store|raw DIR [SIZE [COUNT [SEED [EVERY]]]]
 *
 * store: a thin volume of SIZE (default 1T) in a fresh pool DIR/pool, one
 *        snapshot taken first (as after a replication cycle), so every
 *        write is the first to its block in the new layer;
 * raw:   a sparse file DIR/raw.img of SIZE.
 * Then COUNT (default 25600) writes of 4 KiB of random data at distinct
 * random 4 KiB offsets (chosen by SEED, the same for both modes), a flush
 * (vol_flush / fdatasync) after every EVERY (default 64) writes and at
 * the end: "first_s".  Then the same blocks again with new data, same
 * flushes: "rewrite_s".  Set-up is not timed.  Output: "key value" lines.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "store/store.h"

static uint64_t g_rng;
static uint64_t rnd(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return g_rng;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "scatter_bench: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
	exit(1);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

struct target {
	struct vol *v;    /* store mode */
	int fd;           /* raw mode */
};

static int t_write(struct target *t, const void *buf, uint64_t off)
{
	if (t->v)
		return vol_write(t->v, buf, off, 4096);
	return pwrite_full(t->fd, buf, 4096, off);
}

static int t_flush(struct target *t)
{
	if (t->v)
		return vol_flush(t->v);
	return fdatasync(t->fd) < 0 ? -errno : 0;
}

static double pass(struct target *t, const uint64_t *blk, size_t n, unsigned every)
{
	uint8_t buf[4096];
	uint64_t t0 = now_mono_ns();
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < sizeof(buf); k += 8) {
			uint64_t x = rnd();
			memcpy(buf + k, &x, 8);
		}
		int rc = t_write(t, buf, blk[i] * 4096);
		if (rc < 0)
			die("write", rc);
		if ((i + 1) % every == 0 && (rc = t_flush(t)) < 0) {
			fprintf(stderr, "scatter_bench: %s: flush after write %zu\n",
			        t->v ? "store" : "raw", i + 1);
			die("flush", rc);
		}
	}
	int rc = t_flush(t);
	if (rc < 0)
		die("flush", rc);
	return (double)(now_mono_ns() - t0) / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 3 || (strcmp(argv[1], "store") && strcmp(argv[1], "raw"))) {
		fprintf(stderr, "usage: scatter_bench store|raw DIR [SIZE [COUNT [SEED [EVERY]]]]\n");
		return 2;
	}
	bool store_mode = !strcmp(argv[1], "store");
	uint64_t size = 1ull << 40, count = 25600, seed = 1, every = 64;
	if ((argc > 3 && parse_size(argv[3], &size) < 0) ||
	    (argc > 4 && parse_u64(argv[4], &count) < 0) ||
	    (argc > 5 && parse_u64(argv[5], &seed) < 0) ||
	    (argc > 6 && (parse_u64(argv[6], &every) < 0 || every == 0))) {
		fprintf(stderr, "scatter_bench: bad SIZE, COUNT, SEED or EVERY\n");
		return 2;
	}
	log_set_level(LOG_WARN);
	uint64_t nblk = size / 4096;
	if (count > nblk / 2)
		die("COUNT", EINVAL);
	/* distinct random blocks, written in random order */
	g_rng = 0x9e3779b97f4a7c15ull * (seed + 1);
	uint64_t *blk = malloc(count * sizeof(*blk));
	if (!blk)
		die("malloc", ENOMEM);
	size_t n = 0;
	while (n < count) {
		while (n < count)
			blk[n++] = rnd() % nblk;
		qsort(blk, n, sizeof(*blk), cmp_u64);
		size_t u = 1;
		for (size_t i = 1; i < n; i++)
			if (blk[i] != blk[u - 1])
				blk[u++] = blk[i];
		n = u;
	}
	for (size_t i = count - 1; i > 0; i--) {
		size_t j = (size_t)(rnd() % (i + 1));
		uint64_t x = blk[i];
		blk[i] = blk[j];
		blk[j] = x;
	}

	struct target t = { .fd = -1 };
	struct store *s = NULL;
	char path[4200];
	if (store_mode) {
		snprintf(path, sizeof(path), "%s/pool", argv[2]);
		int rc = store_open(path, &s);
		struct vol_params p = { .size = size };
		if (rc == 0)
			rc = store_vol_create(s, "v", &p);
		if (rc == 0)
			rc = vol_open(s, "v", &t.v);
		if (rc == 0)
			rc = vol_snap_create(t.v, "base");
		if (rc < 0)
			die("store set-up", rc);
	} else {
		snprintf(path, sizeof(path), "%s/raw.img", argv[2]);
		t.fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);
		if (t.fd < 0 || ftruncate(t.fd, (off_t)size) < 0)
			die("raw set-up", errno);
	}
	double first = pass(&t, blk, count, (unsigned)every);
	double again = pass(&t, blk, count, (unsigned)every);
	printf("mode %s\nsize %" PRIu64 "\nwrites %" PRIu64 "\nflush_every %" PRIu64
	       "\nfirst_s %.3f\nrewrite_s %.3f\nfirst_iops %.0f\nrewrite_iops %.0f\n",
	       argv[1], size, count, every, first, again, (double)count / first,
	       (double)count / again);
	if (t.v) {
		vol_close(t.v);
		store_close(s);
	} else {
		close(t.fd);
	}
	free(blk);
	return 0;
}
