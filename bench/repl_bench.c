/* Replication benchmark, in-process: two stores, two repl instances, real
 * TCP over loopback (the same engine ferryd runs).  Driven in phases by
 * bench/repl.sh, which also runs the baselines (cp, rsync) and the
 * two-daemon initial sync; the pools persist between phases.
 *
 *   repl_bench init DIR PORT SIZE IMG   volume of SIZE, first half random,
 *                                       second half zeros; IMG gets the same
 *                                       raw image; pair + initial sync
 *   repl_bench incr DIR PORT IMG        1% of the volume in random 4 KiB
 *                                       writes (also applied to IMG); cycle
 *   repl_bench discard DIR PORT         discard 1 GiB; cycle
 *   repl_bench load DIR PORT SECONDS    10 MB/s random 4 KiB writes with a
 *                                       1 s period; reports the cycles
 *
 * Output: "key value" lines, for the script to turn into ratios. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "repl/engine.h"
#include "repl/repl.h"
#include "store/store.h"

#define SECRET "bench-secret-0123456789"

static struct store *sa, *sb;
static struct repl *ra, *rb;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void fill(uint8_t *b, size_t n)
{
	for (size_t i = 0; i + 8 <= n; i += 8) {
		uint64_t x = rnd();
		memcpy(b + i, &x, 8);
	}
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "repl_bench: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
	exit(1);
}

static void up(const char *dir, const char *port)
{
	char pa[4096], pb[4096], listen[64];
	snprintf(pa, sizeof(pa), "%s/a", dir);
	snprintf(pb, sizeof(pb), "%s/b", dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%s", port);
	int rc = store_open(pa, &sa);
	if (rc == 0)
		rc = store_open(pb, &sb);
	if (rc < 0)
		die("store_open", rc);
	/* FERRY_BENCH_PLAINTEXT=1 measures the link without TLS. */
	bool plain = getenv("FERRY_BENCH_PLAINTEXT") && *getenv("FERRY_BENCH_PLAINTEXT") == '1';
	struct repl_opts ob = { .listen = listen, .secret = (const uint8_t *)SECRET,
	                        .secret_len = strlen(SECRET), .plaintext = plain };
	struct repl_opts oa = { .secret = (const uint8_t *)SECRET, .secret_len = strlen(SECRET),
	                        .plaintext = plain };
	if ((rc = repl_create(sb, pb, &ob, &rb)) < 0 || (rc = repl_start(rb)) < 0 ||
	    (rc = repl_create(sa, pa, &oa, &ra)) < 0 || (rc = repl_start(ra)) < 0)
		die("repl", rc);
}

static void down(void)
{
	repl_destroy(ra);
	repl_destroy(rb);
	store_close(sa);
	store_close(sb);
}

static struct rec_stats sync_now(double *secs)
{
	struct repl_err err = { "" };
	uint64_t t0 = now_mono_ns();
	int rc = repl_pair_sync(ra, "v", &err);
	*secs = (double)(now_mono_ns() - t0) / 1e9;
	if (rc < 0) {
		fprintf(stderr, "%s\n", err.msg);
		die("sync", rc);
	}
	pthread_mutex_lock(&ra->mu);
	struct rec_stats st = pair_find(ra, "v")->rec.stats;
	pthread_mutex_unlock(&ra->mu);
	return st;
}

static void report(const char *phase, const struct rec_stats *st, double secs)
{
	printf("%s_cycle_seconds %.3f\n%s_wait_seconds %.3f\n%s_data_bytes %" PRIu64
	       "\n%s_zero_bytes %" PRIu64 "\n%s_wire_bytes %" PRIu64 "\n%s_extents %" PRIu64 "\n",
	       phase, st->seconds, phase, secs, phase, st->data_bytes, phase, st->zero_bytes,
	       phase, st->wire_bytes, phase, st->extents);
}

static int cmd_init(const char *dir, const char *port, uint64_t size, const char *img)
{
	char pa[4096];
	snprintf(pa, sizeof(pa), "%s/a", dir);
	mkdir_p(pa, 0700);
	up(dir, port);
	struct vol_params p = { .size = size };
	int rc = store_vol_create(sa, "v", &p);
	if (rc < 0)
		die("create", rc);
	struct vol *v;
	vol_open(sa, "v", &v);
	int fd = open(img, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	if (fd < 0)
		die("img", errno);
	size_t chunk = 4u << 20;
	uint8_t *b = malloc(chunk);
	for (uint64_t off = 0; off < size / 2; off += chunk) {
		fill(b, chunk);
		if ((rc = vol_write(v, b, off, chunk)) < 0 || (rc = pwrite_full(fd, b, chunk, off)) < 0)
			die("write", rc);
	}
	if (ftruncate(fd, (off_t)size) < 0)
		die("truncate", errno);
	fsync(fd);
	close(fd);
	vol_flush(v);
	vol_close(v);
	free(b);
	struct repl_pair_opts po = { .peer = NULL, .s = { .period_s = 3600 } };
	char peer[64];
	snprintf(peer, sizeof(peer), "127.0.0.1:%s", port);
	po.peer = peer;
	struct repl_created res;
	struct repl_err err = { "" };
	uint64_t t0 = now_mono_ns();
	rc = repl_pair_create(ra, "v", &po, &res, &err);
	if (rc < 0) {
		fprintf(stderr, "%s\n", err.msg);
		die("pair create", rc);
	}
	/* The initial cycle is the one create started. */
	for (;;) {
		pthread_mutex_lock(&ra->mu);
		uint64_t c = pair_find(ra, "v")->rec.last_cycle;
		struct rec_stats st = pair_find(ra, "v")->rec.stats;
		pthread_mutex_unlock(&ra->mu);
		if (c >= 1) {
			report("initial", &st, (double)(now_mono_ns() - t0) / 1e9);
			break;
		}
		struct timespec ts = { 0, 20000000 };
		nanosleep(&ts, NULL);
	}
	down();
	return 0;
}

static int cmd_incr(const char *dir, const char *port, const char *img)
{
	up(dir, port);
	struct vol *v;
	vol_open(sa, "v", &v);
	struct vol_info vi;
	vol_info(v, &vi);
	int fd = open(img, O_WRONLY);
	if (fd < 0)
		die("img", errno);
	uint64_t blocks = vi.size / 4096, n = blocks / 100;
	uint8_t *seen = calloc(blocks / 8 + 1, 1);
	uint64_t unique = 0;
	uint8_t b[4096];
	rng ^= now_mono_ns();
	for (uint64_t i = 0; i < n; i++) {
		uint64_t blk = rnd() % blocks;
		fill(b, sizeof(b));
		int rc = vol_write(v, b, blk * 4096, 4096);
		if (rc == 0)
			rc = pwrite_full(fd, b, 4096, blk * 4096);
		if (rc < 0)
			die("write", rc);
		if (!(seen[blk / 8] & (1u << (blk % 8)))) {
			seen[blk / 8] |= (uint8_t)(1u << (blk % 8));
			unique++;
		}
	}
	fsync(fd);
	close(fd);
	free(seen);
	vol_flush(v);
	vol_close(v);
	printf("incr_changed_bytes %" PRIu64 "\n", unique * 4096);
	double secs;
	struct rec_stats st = sync_now(&secs);
	report("incr", &st, secs);
	down();
	return 0;
}

static int cmd_discard(const char *dir, const char *port)
{
	up(dir, port);
	struct vol *v;
	vol_open(sa, "v", &v);
	struct vol_info vi;
	vol_info(v, &vi);
	/* 1 GiB of the random half (less on a small test volume) */
	uint64_t len = MIN(1ull << 30, vi.size / 2);
	int rc = vol_discard(v, 0, len);
	if (rc < 0)
		die("discard", rc);
	vol_close(v);
	printf("discard_discarded_bytes %" PRIu64 "\n", len);
	double secs;
	struct rec_stats st = sync_now(&secs);
	report("discard", &st, secs);
	down();
	return 0;
}

struct loader {
	struct vol *v;
	uint64_t blocks;
	volatile bool stop;
	uint64_t written;
};

/* 10 MB/s of random 4 KiB writes, paced every 10 ms. */
static void *load_main(void *arg)
{
	struct loader *l = arg;
	uint8_t b[4096];
	uint64_t t0 = now_mono_ns();
	while (!l->stop) {
		uint64_t due = (uint64_t)((double)(now_mono_ns() - t0) / 1e9 * 10e6);
		while (l->written < due) {
			fill(b, sizeof(b));
			if (vol_write(l->v, b, (rnd() % l->blocks) * 4096, 4096) < 0)
				return NULL;
			l->written += 4096;
		}
		struct timespec ts = { 0, 10000000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static int cmd_load(const char *dir, const char *port, unsigned seconds)
{
	up(dir, port);
	/* period 1 s: the shortest the CLI allows (pair set) */
	struct repl_settings set = { .set = REPL_SET_PERIOD, .period_s = 1 }, before, after;
	struct repl_err err;
	if (repl_pair_set(ra, "v", &set, &before, &after, &err) < 0)
		die("pair set", -EINVAL);
	pthread_mutex_lock(&ra->mu);
	struct pair *p = pair_find(ra, "v");
	p->next_due_ns = now_mono_ns();
	pthread_cond_broadcast(&ra->cv);
	uint64_t c0 = p->rec.last_cycle;
	pthread_mutex_unlock(&ra->mu);
	struct loader l = { 0 };
	vol_open(sa, "v", &l.v);
	struct vol_info vi;
	vol_info(l.v, &vi);
	l.blocks = vi.size / 4096;
	pthread_t th;
	pthread_create(&th, NULL, load_main, &l);
	uint64_t t0 = now_mono_ns(), max_lag = 0;
	double max_cycle = 0;
	uint64_t last_seen = c0;
	while (now_mono_ns() - t0 < (uint64_t)seconds * 1000000000ull) {
		struct timespec ts = { 0, 100000000 };
		nanosleep(&ts, NULL);
		pthread_mutex_lock(&ra->mu);
		p = pair_find(ra, "v");
		uint64_t lag = now_wall_s() - p->rec.last_time;
		if (p->rec.last_cycle != last_seen) {
			last_seen = p->rec.last_cycle;
			if (p->rec.stats.seconds > max_cycle)
				max_cycle = p->rec.stats.seconds;
		}
		pthread_mutex_unlock(&ra->mu);
		if (lag > max_lag)
			max_lag = lag;
	}
	l.stop = true;
	pthread_join(th, NULL);
	vol_close(l.v);
	printf("load_seconds %u\nload_written_bytes %" PRIu64 "\nload_cycles %" PRIu64
	       "\nload_max_cycle_seconds %.3f\nload_max_rpo_lag_s %" PRIu64 "\n", seconds,
	       l.written, last_seen - c0, max_cycle, max_lag);
	down();
	return 0;
}

int main(int argc, char **argv)
{
	log_set_level(LOG_WARN);
	/* As ferryd does (src/daemon/main.c): a vanished peer costs an EPIPE. */
	signal(SIGPIPE, SIG_IGN);
	uint64_t size;
	if (argc == 6 && !strcmp(argv[1], "init") && parse_size(argv[4], &size) == 0)
		return cmd_init(argv[2], argv[3], size, argv[5]);
	if (argc == 5 && !strcmp(argv[1], "incr"))
		return cmd_incr(argv[2], argv[3], argv[4]);
	if (argc == 4 && !strcmp(argv[1], "discard"))
		return cmd_discard(argv[2], argv[3]);
	if (argc == 5 && !strcmp(argv[1], "load"))
		return cmd_load(argv[2], argv[3], (unsigned)atoi(argv[4]));
	fprintf(stderr, "usage: see the comment at the top of bench/repl_bench.c\n");
	return 2;
}
