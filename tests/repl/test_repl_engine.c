/* The replication engine in-process: two stores in two temp dirs, two
 * repl instances on 127.0.0.1 free ports, real cycles over TCP.
 *
 * After every scenario the secondary's last synced snapshot must equal the
 * primary's same-named snapshot byte for byte, and the secondary's head
 * must equal it too (nothing half-applied is left behind). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/common.h"
#include "repl/engine.h"
#include "repl/repl.h"
#include "store/store.h"

#define SECRET "test-secret-0123456789"

struct site {
	char dir[256];
	struct store *s;
	struct repl *r;
	char listen[64];
};

struct env {
	struct site a, b;
	uint64_t seed;
};

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void site_up(struct site *st, const char *listen, const char *secret)
{
	if (!st->s)
		assert_int_equal(store_open(st->dir, &st->s), 0);
	struct repl_opts o = { .listen = listen, .secret = (const uint8_t *)secret,
	                       .secret_len = strlen(secret), .timeout_ms = 2000,
	                       .max_transfers = 2, .site = "test" };
	assert_int_equal(repl_create(st->s, st->dir, &o, &st->r), 0);
	assert_int_equal(repl_start(st->r), 0);
	if (listen)
		snprintf(st->listen, sizeof(st->listen), "%s", repl_listen_addr(st->r));
}

static void site_down(struct site *st)
{
	repl_destroy(st->r);
	st->r = NULL;
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	snprintf(e->a.dir, sizeof(e->a.dir), "/tmp/ferry-repl-a.XXXXXX");
	snprintf(e->b.dir, sizeof(e->b.dir), "/tmp/ferry-repl-b.XXXXXX");
	assert_non_null(mkdtemp(e->a.dir));
	assert_non_null(mkdtemp(e->b.dir));
	site_up(&e->b, "127.0.0.1:0", SECRET);
	site_up(&e->a, NULL, SECRET);
	e->seed = 0x1234567ull;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	if (e->a.r)
		site_down(&e->a);
	if (e->b.r)
		site_down(&e->b);
	store_close(e->a.s);
	store_close(e->b.s);
	rm_rf(e->a.dir);
	rm_rf(e->b.dir);
	free(e);
	return 0;
}

static struct vol *mkvol(struct store *s, const char *name, uint64_t size, uint32_t osz)
{
	struct vol_params p = { .size = size, .object_size = osz, .block_size = 512 };
	assert_int_equal(store_vol_create(s, name, &p), 0);
	struct vol *v;
	assert_int_equal(vol_open(s, name, &v), 0);
	return v;
}

static void fill(struct vol *v, uint64_t off, size_t len, uint64_t *seed)
{
	uint8_t *b = malloc(len);
	for (size_t i = 0; i < len; i += 8) {
		uint64_t x = rnd(seed);
		memcpy(b + i, &x, MIN((size_t)8, len - i));
	}
	assert_int_equal(vol_write(v, b, off, len), 0);
	free(b);
}

static void create_pair(struct env *e, const char *name, struct repl_pair_opts *po)
{
	struct repl_pair_opts def = { 0 };
	if (!po)
		po = &def;
	po->peer = e->b.listen;
	if (!po->s.period_s)
		po->s.period_s = 3600; /* cycles only when the test asks */
	struct repl_created res;
	struct repl_err err = { "" };
	int rc = repl_pair_create(e->a.r, name, po, &res, &err);
	if (rc)
		print_error("pair create: %s", err.msg);
	assert_int_equal(rc, 0);
}

static void sync_wait(struct env *e, const char *name)
{
	struct repl_err err = { "" };
	int rc = repl_pair_sync(e->a.r, name, &err);
	if (rc)
		print_error("pair sync: %s", err.msg);
	assert_int_equal(rc, 0);
}

static void last_snap(struct repl *r, const char *name, char *snap)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_find(r, name);
	assert_non_null(p);
	snprintf(snap, STORE_NAME_MAX + 1, "%s", p->rec.last_snap);
	pthread_mutex_unlock(&r->mu);
}

static struct repl_cycle_stats last_stats(struct repl *r, const char *name)
{
	struct repl_status st;
	struct repl_err err;
	assert_int_equal(repl_pair_status(r, name, &st, &err), 0);
	assert_true(st.has_stats);
	return st.last;
}

/* Byte-for-byte: A@snap == B@snap == B head, skipping regions where both
 * sides report all-zero objects (so huge sparse volumes stay cheap). */
static void check_same(struct env *e, const char *name)
{
	char snap[STORE_NAME_MAX + 1], snapb[STORE_NAME_MAX + 1];
	last_snap(e->a.r, name, snap);
	last_snap(e->b.r, name, snapb);
	assert_true(snap[0]);
	assert_string_equal(snap, snapb);
	struct vol *va, *vb;
	assert_int_equal(vol_open(e->a.s, name, &va), 0);
	assert_int_equal(vol_open(e->b.s, name, &vb), 0);
	struct vol_info ia, ib;
	vol_info(va, &ia);
	vol_info(vb, &ib);
	assert_int_equal(ia.size, ib.size);
	uint8_t *x = malloc(ia.object_size), *y = malloc(ia.object_size),
	        *h = malloc(ia.object_size);
	for (uint64_t o = 0; o < ia.objects; o++) {
		bool za, zb, zh;
		assert_int_equal(vol_object_is_zero(va, snap, o, &za), 0);
		assert_int_equal(vol_object_is_zero(vb, snap, o, &zb), 0);
		assert_int_equal(vol_object_is_zero(vb, NULL, o, &zh), 0);
		if (za && zb && zh)
			continue;
		uint64_t off = o * ia.object_size;
		size_t len = (size_t)MIN((uint64_t)ia.object_size, ia.size - off);
		assert_int_equal(vol_read(va, snap, x, off, len), 0);
		assert_int_equal(vol_read(vb, snap, y, off, len), 0);
		assert_int_equal(vol_read(vb, NULL, h, off, len), 0);
		if (memcmp(x, y, len) || memcmp(y, h, len))
			fail_msg("object %llu differs between primary and secondary",
			         (unsigned long long)o);
	}
	free(x);
	free(y);
	free(h);
	vol_close(va);
	vol_close(vb);
	struct repl_verify v;
	struct repl_err err = { "" };
	int rc = repl_pair_verify(e->a.r, name, NULL, NULL, NULL, &v, &err);
	if (rc)
		print_error("verify: %s", err.msg);
	assert_int_equal(rc, 0);
	assert_true(v.match);
	assert_string_equal(v.primary_md5, v.secondary_md5);
	free(v.mismatch);
}

/* ---- resync: the union of both sides' changes ---------------------------- */
struct ucol {
	uint64_t objno[16];
	struct extent ext[16][8];
	size_t n[16];
	bool zero[16];
	size_t count;
};

static int ucol_cb(void *ctx, const struct diff_object *o)
{
	struct ucol *c = ctx;
	assert_true(c->count < 16 && o->n_extents <= 8);
	c->objno[c->count] = o->objno;
	memcpy(c->ext[c->count], o->extents, o->n_extents * sizeof(*o->extents));
	c->n[c->count] = o->n_extents;
	c->zero[c->count] = o->all_zero;
	c->count++;
	return 0;
}

static void test_diff_union(void **state)
{
	struct env *e = *state;
	const uint64_t K = 4096, O = 64 * K;
	struct vol *v = mkvol(e->a.s, "u", 8 * O, (uint32_t)O);
	fill(v, 0, (size_t)(8 * O), &e->seed);
	assert_int_equal(vol_snap_create(v, "s0"), 0);
	fill(v, 2 * K, 2 * K, &e->seed);             /* object 0: blocks 2..3 */
	fill(v, 3 * O + 8 * K, K, &e->seed);          /* object 3 */
	assert_int_equal(vol_write_zeroes(v, 5 * O, O), 0); /* object 5: all zero */
	assert_int_equal(vol_snap_create(v, "s1"), 0);
	/* the other side's: overlapping object 0's, across objects 1..2, one
	 * inside the previous, one in the all-zero object, one alone in 7 */
	struct wire_digest x[] = {
		{ K, 2 * K },                 /* blocks 1..2 of object 0 */
		{ 2 * O - K, 2 * K },         /* last block of 1, first of 2 */
		{ 2 * O, K },                 /* inside the previous */
		{ 5 * O + K, K },             /* object 5 */
		{ 7 * O + 4 * K, 3 * K },     /* object 7 */
	};
	struct ucol c = { 0 };
	assert_int_equal(diff_union(v, O, "s0", "s1", x, ARRAY_SIZE(x), ucol_cb, &c), 0);
	assert_int_equal(c.count, 6);
	uint64_t want_obj[] = { 0, 1, 2, 3, 5, 7 };
	for (size_t i = 0; i < 6; i++)
		assert_int_equal(c.objno[i], want_obj[i]);
	/* object 0: the diff's [8K, 16K) merged with the other side's [4K, 12K) */
	assert_int_equal(c.n[0], 1);
	assert_int_equal(c.ext[0][0].offset, K);
	assert_int_equal(c.ext[0][0].length, 3 * K);
	assert_int_equal(c.ext[0][0].kind, EXTENT_DATA);
	assert_int_equal(c.n[1], 1);
	assert_int_equal(c.ext[1][0].offset, 2 * O - K);
	assert_int_equal(c.ext[1][0].length, K);
	assert_int_equal(c.n[2], 1);
	assert_int_equal(c.ext[2][0].offset, 2 * O);
	assert_int_equal(c.ext[2][0].length, K);
	assert_true(c.zero[4]);  /* object 5 stays one ZERO: zero at the target */
	assert_int_equal(c.n[5], 1);
	assert_int_equal(c.ext[5][0].offset, 7 * O + 4 * K);
	assert_int_equal(c.ext[5][0].length, 3 * K);
	/* no extras: exactly vol_diff */
	memset(&c, 0, sizeof(c));
	assert_int_equal(diff_union(v, O, "s0", "s1", NULL, 0, ucol_cb, &c), 0);
	assert_int_equal(c.count, 3);
	vol_close(v);
}

static void test_initial_sync_sparse(void **state)
{
	struct env *e = *state;
	struct vol *v = mkvol(e->a.s, "db", 64ull << 20, 1u << 20);
	fill(v, 0, 8192, &e->seed);
	fill(v, (10ull << 20) + 4096, 100000, &e->seed);
	fill(v, (64ull << 20) - 4096, 4096, &e->seed);
	create_pair(e, "db", NULL);
	sync_wait(e, "db");
	check_same(e, "db");
	assert_int_equal(repl_volume_role(e->b.r, "db"), REPL_ROLE_SECONDARY);
	assert_int_equal(repl_volume_role(e->a.r, "db"), REPL_ROLE_PRIMARY);
	assert_int_equal(repl_volume_role(e->a.r, "nope"), REPL_ROLE_NONE);
	/* Only changed data travels: a 64 MiB volume with ~110 KB written. */
	struct repl_cycle_stats st = last_stats(e->a.r, "db");
	assert_true(st.wire_bytes < 200000);
	/* status says what the CLI prints */
	struct repl_status s;
	struct repl_err err;
	assert_int_equal(repl_pair_status(e->a.r, "db", &s, &err), 0);
	assert_string_equal(s.name, "db");
	assert_int_equal(s.role, REPL_ROLE_PRIMARY);
	assert_int_equal(s.state, REPL_ST_IDLE);
	assert_int_equal(s.period_s, 3600);
	assert_true(s.has_last && s.last_cycle >= 1);
	assert_false(s.running);
	assert_true(s.has_stats);
	assert_string_equal(s.error, "");
	assert_true(s.peer_last_contact > 0);
	assert_true(s.counters.cycles_ok >= 1);
	assert_int_equal(repl_pair_status(e->b.r, "db", &s, &err), 0);
	assert_int_equal(s.role, REPL_ROLE_SECONDARY);
	assert_true(s.has_last && s.last_cycle >= 1);
	assert_true(s.counters.cycles_ok >= 1);
	vol_close(v);
}

/* Item 3.4: the shapes that made the seed's throttle hang. */
static void test_last_object_all_zero(void **state)
{
	struct env *e = *state;
	struct vol *v = mkvol(e->a.s, "v", 8u << 20, 1u << 20);
	fill(v, 0, 1u << 20, &e->seed);
	fill(v, 7u << 20, 1u << 20, &e->seed);
	create_pair(e, "v", NULL);
	sync_wait(e, "v");
	/* change object 0 and zero the last object completely */
	fill(v, 4096, 4096, &e->seed);
	assert_int_equal(vol_write_zeroes(v, 7u << 20, 1u << 20), 0);
	sync_wait(e, "v");
	check_same(e, "v");
	struct repl_cycle_stats st = last_stats(e->a.r, "v");
	assert_true(st.zero_bytes >= (1u << 20));
	assert_true(st.wire_bytes < 64 * 1024); /* the zeroed MiB costs no data */
	vol_close(v);
}

static void test_every_object_all_zero(void **state)
{
	struct env *e = *state;
	struct vol *v = mkvol(e->a.s, "v", 8u << 20, 1u << 20);
	for (int i = 0; i < 8; i++)
		fill(v, (uint64_t)i << 20, 65536, &e->seed);
	create_pair(e, "v", NULL);
	sync_wait(e, "v");
	assert_int_equal(vol_discard(v, 0, 8u << 20), 0);
	sync_wait(e, "v");
	check_same(e, "v");
	struct repl_cycle_stats st = last_stats(e->a.r, "v");
	assert_int_equal(st.data_bytes, 0);
	vol_close(v);
}

static void test_empty_increment(void **state)
{
	struct env *e = *state;
	struct vol *v = mkvol(e->a.s, "v", 4u << 20, 1u << 20);
	fill(v, 0, 4096, &e->seed);
	create_pair(e, "v", NULL);
	sync_wait(e, "v");
	/* nothing changed: the cycle still completes and commits */
	sync_wait(e, "v");
	sync_wait(e, "v");
	check_same(e, "v");
	struct repl_cycle_stats st = last_stats(e->a.r, "v");
	assert_int_equal(st.extents, 0);
	assert_int_equal(st.data_bytes, 0);
	char snap[STORE_NAME_MAX + 1];
	last_snap(e->a.r, "v", snap);
	/* create's snapshot is cycle 1; each sync --wait needs a cycle taken
	 * after it: 2, 3, 4 */
	assert_non_null(strstr(snap, ".000004"));
	vol_close(v);
}

/* An empty volume's initial sync is an empty increment too. */
static void test_empty_initial(void **state)
{
	struct env *e = *state;
	struct vol *v = mkvol(e->a.s, "v", 4u << 20, 1u << 20);
	create_pair(e, "v", NULL);
	sync_wait(e, "v");
	check_same(e, "v");
	vol_close(v);
}

static void test_last_object_short(void **state)
{
	struct env *e = *state;
	/* 3.5 objects: the last one is half an object */
	uint64_t size = (3ull << 20) + (512u << 10);
	struct vol *v = mkvol(e->a.s, "v", size, 1u << 20);
	fill(v, size - 8192, 8192, &e->seed);
	create_pair(e, "v", NULL);
	sync_wait(e, "v");
	check_same(e, "v");
	fill(v, size - 4096, 4096, &e->seed);
	fill(v, 3u << 20, 4096, &e->seed);
	sync_wait(e, "v");
	check_same(e, "v");
	assert_int_equal(vol_write_zeroes(v, 3u << 20, 512u << 10), 0);
	sync_wait(e, "v");
	check_same(e, "v");
	vol_close(v);
}

/* What mkfs does: discard everything, then write a few small blocks. */
static void test_discard_then_few_writes(void **state)
{
	struct env *e = *state;
	struct vol *v = mkvol(e->a.s, "v", 32u << 20, 1u << 20);
	for (int i = 0; i < 32; i += 3)
		fill(v, (uint64_t)i << 20, 200000, &e->seed);
	create_pair(e, "v", NULL);
	sync_wait(e, "v");
	assert_int_equal(vol_discard(v, 0, 32u << 20), 0);
	fill(v, 0, 4096, &e->seed);
	fill(v, 1u << 20, 4096, &e->seed);
	fill(v, (16u << 20) + 8192, 4096, &e->seed);
	fill(v, (32u << 20) - 4096, 4096, &e->seed);
	sync_wait(e, "v");
	check_same(e, "v");
	struct repl_cycle_stats st = last_stats(e->a.r, "v");
	assert_true(st.wire_bytes < 100000);
	vol_close(v);
}

/* Many objects, only the last one changed: the enumeration must not wait
 * for data from the unchanged ones, and the cost follows the change. */
static void test_huge_count_last_changed(void **state)
{
	struct env *e = *state;
	uint64_t size = 64ull << 30; /* 64 GiB of 64 KiB objects: 1 Mi objects */
	struct vol *v = mkvol(e->a.s, "v", size, 64u << 10);
	create_pair(e, "v", NULL);
	sync_wait(e, "v");
	fill(v, size - 4096, 4096, &e->seed);
	uint64_t t0 = now_mono_ns();
	sync_wait(e, "v");
	double dt = (double)(now_mono_ns() - t0) / 1e9;
	struct repl_cycle_stats st = last_stats(e->a.r, "v");
	assert_int_equal(st.extents, 1);
	assert_int_equal(st.data_bytes, 4096);
	assert_true(dt < 20.0);
	/* byte compare of the changed object only; verify would hash 64 GiB */
	struct vol *vb;
	assert_int_equal(vol_open(e->b.s, "v", &vb), 0);
	uint8_t x[4096], y[4096];
	char snap[STORE_NAME_MAX + 1];
	last_snap(e->a.r, "v", snap);
	assert_int_equal(vol_read(v, snap, x, size - 4096, 4096), 0);
	assert_int_equal(vol_read(vb, snap, y, size - 4096, 4096), 0);
	assert_memory_equal(x, y, 4096);
	vol_close(vb);
	vol_close(v);
}

static void test_random_cycles(void **state)
{
	struct env *e = *state;
	uint64_t size = 24u << 20;
	struct vol *v = mkvol(e->a.s, "v", size, 256u << 10);
	struct repl_pair_opts po = { .s = { .max_inflight = 3, .compress = true } };
	create_pair(e, "v", &po);
	for (int c = 0; c < 12; c++) {
		int ops = 1 + (int)(rnd(&e->seed) % 20);
		for (int i = 0; i < ops; i++) {
			uint64_t off = (rnd(&e->seed) % (size / 512)) * 512;
			uint64_t len = MIN(size - off, 512 + rnd(&e->seed) % (600u << 10));
			switch (rnd(&e->seed) % 4) {
			case 0: assert_int_equal(vol_write_zeroes(v, off, len), 0); break;
			case 1: assert_int_equal(vol_discard(v, off, len), 0); break;
			default: fill(v, off, (size_t)len, &e->seed);
			}
		}
		sync_wait(e, "v");
		check_same(e, "v");
	}
	vol_close(v);
}

static void test_compress_and_bandwidth(void **state)
{
	struct env *e = *state;
	struct vol *v = mkvol(e->a.s, "v", 16u << 20, 1u << 20);
	/* compressible: repeated text */
	char *t = malloc(4u << 20);
	for (size_t i = 0; i < (4u << 20); i++)
		t[i] = "ferry replicates volumes "[i % 25];
	assert_int_equal(vol_write(v, t, 0, 4u << 20), 0);
	free(t);
	struct repl_pair_opts po = { .s = { .compress = true, .bandwidth = 4u << 20 } };
	create_pair(e, "v", &po);
	sync_wait(e, "v");
	check_same(e, "v");
	struct repl_cycle_stats st = last_stats(e->a.r, "v");
	assert_true(st.wire_bytes < (1u << 20)); /* 4 MiB squeezed by zstd */
	/* incompressible 2 MiB at 4 MiB/s takes about half a second */
	fill(v, 8u << 20, 2u << 20, &e->seed);
	uint64_t t0 = now_mono_ns();
	sync_wait(e, "v");
	double dt = (double)(now_mono_ns() - t0) / 1e9;
	assert_true(dt > 0.35);
	check_same(e, "v");
	vol_close(v);
}

static void test_wrong_secret(void **state)
{
	struct env *e = *state;
	site_down(&e->a);
	site_up(&e->a, NULL, "not-the-secret");
	struct vol *v = mkvol(e->a.s, "v", 4u << 20, 1u << 20);
	struct repl_pair_opts po = { .peer = e->b.listen };
	struct repl_created res;
	struct repl_err err = { "" };
	int rc = repl_pair_create(e->a.r, "v", &po, &res, &err);
	assert_int_equal(rc, -EACCES);
	assert_non_null(strstr(err.msg, "secret"));
	/* no access to any volume: nothing was created on the secondary */
	assert_false(store_vol_exists(e->b.s, "v"));
	assert_int_equal(repl_volume_role(e->a.r, "v"), REPL_ROLE_NONE);
	vol_close(v);
}

static void test_secondary_not_empty_refused(void **state)
{
	struct env *e = *state;
	struct vol *v = mkvol(e->a.s, "v", 4u << 20, 1u << 20);
	fill(v, 0, 4096, &e->seed);
	struct vol *vb = mkvol(e->b.s, "v", 4u << 20, 1u << 20);
	fill(vb, 8192, 4096, &e->seed);
	struct repl_pair_opts po = { .peer = e->b.listen, .s = { .period_s = 3600 } };
	struct repl_created res;
	struct repl_err err = { "" };
	assert_int_equal(repl_pair_create(e->a.r, "v", &po, &res, &err), -ENOTEMPTY);
	assert_non_null(strstr(err.msg, "not empty"));
	/* --force overwrites it */
	po.force = true;
	create_pair(e, "v", &po);
	sync_wait(e, "v");
	check_same(e, "v");
	vol_close(vb);
	vol_close(v);
}

/* A TCP proxy that can cut the connection after n bytes A->B. */
struct proxy {
	int lfd;
	char addr[64];
	char target[64];
	uint64_t cut_after;      /* 0 = never */
	uint64_t forwarded;
	volatile bool refuse;    /* close new connections at once */
	volatile bool stop;
	pthread_t th;
};

static void *proxy_main(void *arg)
{
	struct proxy *px = arg;
	while (!px->stop) {
		char peer[64];
		int c = link_accept(px->lfd, 100, peer, sizeof(peer));
		if (c < 0)
			continue;
		if (px->refuse) {
			close(c);
			continue;
		}
		struct link *up;
		char err[256];
		if (link_connect(px->target, 2000, &up, err, sizeof(err)) < 0) {
			close(c);
			continue;
		}
		int s = up->fd;
		/* blocking writes: the proxy forwards everything it read */
		fcntl(c, F_SETFL, fcntl(c, F_GETFL) & ~O_NONBLOCK);
		fcntl(s, F_SETFL, fcntl(s, F_GETFL) & ~O_NONBLOCK);
		uint64_t fwd = 0;
		uint8_t buf[65536];
		bool done = false;
		while (!done && !px->stop) {
			struct pollfd p[2] = { { .fd = c, .events = POLLIN }, { .fd = s, .events = POLLIN } };
			if (poll(p, 2, 100) <= 0)
				continue;
			for (int i = 0; i < 2 && !done; i++) {
				if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
					continue;
				ssize_t n = recv(p[i].fd, buf, sizeof(buf), 0);
				if (n <= 0) {
					if (n < 0 && (errno == EAGAIN || errno == EINTR))
						continue;
					done = true;
					break;
				}
				if (i == 0 && px->cut_after && fwd + (uint64_t)n > px->cut_after) {
					px->cut_after = 0; /* cut once */
					done = true;
					break;
				}
				if (i == 0)
					fwd += (uint64_t)n;
				if (write_full(p[1 - i].fd, buf, (size_t)n) < 0)
					done = true;
			}
		}
		px->forwarded += fwd;
		close(c);
		link_close(up);
	}
	return NULL;
}

static void proxy_start(struct proxy *px, const char *target, uint64_t cut)
{
	memset(px, 0, sizeof(*px));
	snprintf(px->target, sizeof(px->target), "%s", target);
	px->cut_after = cut;
	assert_int_equal(link_listen("127.0.0.1:0", &px->lfd, px->addr, sizeof(px->addr)), 0);
	pthread_create(&px->th, NULL, proxy_main, px);
}

static void proxy_stop(struct proxy *px)
{
	px->stop = true;
	pthread_join(px->th, NULL);
	close(px->lfd);
}

/* A link cut mid-cycle: the retry resumes from the secondary's checkpoint
 * and does not resend what is durable there. */
static void test_cut_and_resume(void **state)
{
	struct env *e = *state;
	uint64_t size = 96u << 20;
	struct vol *v = mkvol(e->a.s, "v", size, 256u << 10);
	fill(v, 0, (size_t)size, &e->seed); /* 96 MiB incompressible */
	struct proxy px;
	proxy_start(&px, e->b.listen, 60u << 20);
	struct repl_pair_opts po = { .peer = px.addr,
	                             .s = { .period_s = 3600, .bandwidth = 150u << 20 } };
	struct repl_created res;
	struct repl_err err = { "" };
	assert_int_equal(repl_pair_create(e->a.r, "v", &po, &res, &err), 0);
	/* The first attempt is cut after 60 MB and fails; the retry resumes. */
	int rc = repl_pair_sync(e->a.r, "v", &err);
	if (rc == 0) /* the cut came after the initial cycle: it is the next one */
		fail_msg("the cut did not interrupt the cycle");
	assert_non_null(strstr(err.msg, "closed the connection"));
	sync_wait(e, "v");
	check_same(e, "v");
	/* A restart from scratch would have moved 60 + 96 MiB through the
	 * proxy; the resume skips what the checkpoint holds (>= 32 MiB here,
	 * checkpoints come every 64 objects = 16 MiB). */
	assert_true(px.forwarded >= (60ull << 20));
	assert_true(px.forwarded < ((60ull + 96 - 32) << 20));
	proxy_stop(&px);
	vol_close(v);
}

/* The in-flight snapshot of an interrupted cycle is deleted by hand while
 * the secondary holds a checkpoint of its content: the retry must not
 * resume that checkpoint with other content. */
static void test_inflight_snapshot_vanished(void **state)
{
	struct env *e = *state;
	uint64_t size = 32u << 20;
	struct vol *v = mkvol(e->a.s, "v", size, 256u << 10);
	fill(v, 0, (size_t)size, &e->seed);
	struct proxy px;
	proxy_start(&px, e->b.listen, 24u << 20);
	struct repl_pair_opts po = { .peer = px.addr, .s = { .period_s = 3600 } };
	struct repl_created res;
	struct repl_err err = { "" };
	assert_int_equal(repl_pair_create(e->a.r, "v", &po, &res, &err), 0);
	assert_true(repl_pair_sync(e->a.r, "v", &err) < 0); /* cut */
	px.refuse = true;
	char snap[STORE_NAME_MAX + 1];
	pthread_mutex_lock(&e->a.r->mu);
	snprintf(snap, sizeof(snap), "%s", pair_find(e->a.r, "v")->rec.cur_snap);
	pthread_mutex_unlock(&e->a.r->mu);
	assert_int_equal(vol_snap_delete(v, snap), 0);
	fill(v, 0, (size_t)size, &e->seed); /* everything differs now */
	px.refuse = false;
	int ok = -1;
	for (int i = 0; i < 4 && ok; i++)
		ok = repl_pair_sync(e->a.r, "v", &err);
	assert_int_equal(ok, 0);
	check_same(e, "v");
	proxy_stop(&px);
	vol_close(v);
}

/* A dead peer is an error in status and a retry, never a hang. */
static void test_dead_peer_then_back(void **state)
{
	struct env *e = *state;
	struct vol *v = mkvol(e->a.s, "v", 4u << 20, 1u << 20);
	fill(v, 0, 65536, &e->seed);
	create_pair(e, "v", NULL);
	sync_wait(e, "v");
	char addr[64];
	snprintf(addr, sizeof(addr), "%s", e->b.listen);
	site_down(&e->b);
	fill(v, 65536, 65536, &e->seed);
	struct repl_err err;
	struct repl_status st;
	uint64_t t0 = now_mono_ns();
	assert_true(repl_pair_sync(e->a.r, "v", &err) < 0);
	assert_true(now_mono_ns() - t0 < 10000000000ull);
	assert_int_equal(repl_pair_status(e->a.r, "v", &st, &err), 0);
	assert_int_equal(st.state, REPL_ST_ERROR);
	assert_true(st.error[0]);
	assert_true(st.consecutive_failures >= 1);
	assert_true(st.counters.cycles_failed >= 1);
	/* back on the same address: the retry with backoff catches up */
	site_up(&e->b, addr, SECRET);
	sync_wait(e, "v");
	check_same(e, "v");
	assert_int_equal(repl_pair_status(e->a.r, "v", &st, &err), 0);
	assert_string_equal(st.error, "");
	assert_int_equal(st.consecutive_failures, 0);
	assert_int_equal(st.state, REPL_ST_IDLE);
	vol_close(v);
}

/* Restart of the primary mid-life: pairs reload and keep going. */
static void test_restart_primary(void **state)
{
	struct env *e = *state;
	struct vol *v = mkvol(e->a.s, "v", 8u << 20, 1u << 20);
	fill(v, 0, 1u << 20, &e->seed);
	create_pair(e, "v", NULL);
	sync_wait(e, "v");
	vol_close(v);
	site_down(&e->a);
	site_up(&e->a, NULL, SECRET);
	assert_int_equal(vol_open(e->a.s, "v", &v), 0);
	fill(v, 2u << 20, 4096, &e->seed);
	sync_wait(e, "v");
	check_same(e, "v");
	vol_close(v);
}

static void test_pause_resume_rm(void **state)
{
	struct env *e = *state;
	struct vol *v = mkvol(e->a.s, "v", 4u << 20, 1u << 20);
	fill(v, 0, 4096, &e->seed);
	create_pair(e, "v", NULL);
	sync_wait(e, "v");
	struct repl_err err;
	struct repl_status st;
	assert_int_equal(repl_pair_pause(e->a.r, "v", &err), 0);
	assert_true(repl_pair_sync(e->a.r, "v", &err) < 0);
	assert_int_equal(repl_pair_status(e->a.r, "v", &st, &err), 0);
	assert_int_equal(st.state, REPL_ST_PAUSED);
	assert_true(st.paused);
	assert_int_equal(repl_pair_resume(e->a.r, "v", &err), 0);
	sync_wait(e, "v");
	check_same(e, "v");
	struct repl_status *all;
	size_t n;
	assert_int_equal(repl_pair_list(e->a.r, &all, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(all[0].name, "v");
	free(all);
	struct repl_removed rm;
	assert_int_equal(repl_pair_rm(e->a.r, "v", &rm, &err), 0);
	assert_true(rm.told);
	assert_true(rm.kept_snap[0]);
	assert_int_equal(repl_volume_role(e->a.r, "v"), REPL_ROLE_NONE);
	assert_int_equal(repl_volume_role(e->b.r, "v"), REPL_ROLE_NONE);
	assert_true(store_vol_exists(e->b.s, "v")); /* the secondary keeps its volume */
	vol_close(v);
}

static void test_verify_mismatch(void **state)
{
	struct env *e = *state;
	struct vol *v = mkvol(e->a.s, "v", 4u << 20, 1u << 20);
	fill(v, 0, 4u << 20, &e->seed);
	create_pair(e, "v", NULL);
	sync_wait(e, "v");
	/* Forge a different snapshot under the same name on the secondary. */
	char snap[STORE_NAME_MAX + 1];
	last_snap(e->b.r, "v", snap);
	struct vol *vb;
	assert_int_equal(vol_open(e->b.s, "v", &vb), 0);
	assert_int_equal(vol_snap_delete(vb, snap), 0);
	fill(vb, (2u << 20) + 4096, 512, &e->seed);
	assert_int_equal(vol_snap_create(vb, snap), 0);
	vol_close(vb);
	struct repl_verify res;
	struct repl_err err;
	assert_int_equal(repl_pair_verify(e->a.r, "v", NULL, NULL, NULL, &res, &err), 0);
	assert_false(res.match);
	assert_int_equal(res.mismatching_objects, 1);
	assert_int_equal(res.n_mismatch, 1);
	assert_int_equal(res.mismatch[0], 2);
	free(res.mismatch);
	vol_close(v);
}

/* Two pairs in opposite directions between the same two sites. */
static void test_both_directions(void **state)
{
	struct env *e = *state;
	site_down(&e->a);
	site_up(&e->a, "127.0.0.1:0", SECRET);
	struct vol *va = mkvol(e->a.s, "x", 4u << 20, 1u << 20);
	struct vol *vb = mkvol(e->b.s, "y", 4u << 20, 1u << 20);
	fill(va, 0, 65536, &e->seed);
	fill(vb, 4096, 65536, &e->seed);
	create_pair(e, "x", NULL);
	struct repl_pair_opts po = { .peer = e->a.listen, .s = { .period_s = 1 } };
	struct repl_created res;
	struct repl_err err;
	assert_int_equal(repl_pair_create(e->b.r, "y", &po, &res, &err), 0);
	assert_int_equal(repl_pair_sync(e->b.r, "y", &err), 0);
	sync_wait(e, "x");
	check_same(e, "x");
	assert_int_equal(repl_volume_role(e->a.r, "y"), REPL_ROLE_SECONDARY);
	assert_int_equal(repl_volume_role(e->b.r, "x"), REPL_ROLE_SECONDARY);
	/* the 1 s period runs cycles on its own */
	fill(vb, 1u << 20, 4096, &e->seed);
	uint64_t until = now_mono_ns() + 10000000000ull;
	uint64_t cyc = 0;
	while (now_mono_ns() < until) {
		pthread_mutex_lock(&e->b.r->mu);
		cyc = pair_find(e->b.r, "y")->rec.last_cycle;
		pthread_mutex_unlock(&e->b.r->mu);
		if (cyc >= 3)
			break;
		usleep(50000);
	}
	assert_true(cyc >= 3);
	vol_close(va);
	vol_close(vb);
}

int main(int argc, char **argv)
{
	log_set_level(argc > 1 ? LOG_DEBUG : LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_diff_union, setup, teardown),
		cmocka_unit_test_setup_teardown(test_initial_sync_sparse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_last_object_all_zero, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_object_all_zero, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_increment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_initial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_last_object_short, setup, teardown),
		cmocka_unit_test_setup_teardown(test_discard_then_few_writes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_huge_count_last_changed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_cycles, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compress_and_bandwidth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_secret, setup, teardown),
		cmocka_unit_test_setup_teardown(test_secondary_not_empty_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cut_and_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inflight_snapshot_vanished, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_peer_then_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_primary, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_resume_rm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_verify_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_both_directions, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
