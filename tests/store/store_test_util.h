/* Helpers shared by the store tests: a seeded RNG, temp pools, and a diff
 * collector that checks the callback contract while recording results. */
#ifndef FERRY_STORE_TEST_UTIL_H
#define FERRY_STORE_TEST_UTIL_H

#include "common/common.h"
#include "store/store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct rng {
	uint64_t s;
};

static inline uint64_t rng_next(struct rng *r)
{
	/* splitmix64: tiny, and every seed is a good one */
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline uint64_t rng_below(struct rng *r, uint64_t n)
{
	return n ? rng_next(r) % n : 0;
}

static inline void rng_fill(struct rng *r, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len >= 8) {
		uint64_t x = rng_next(r);
		memcpy(p, &x, 8);
		p += 8;
		len -= 8;
	}
	while (len--)
		*p++ = (uint8_t)(rng_next(r) | 1);
}

static inline uint64_t env_u64(const char *name, uint64_t def)
{
	const char *s = getenv(name);
	uint64_t v;
	return s && parse_u64(s, &v) == 0 ? v : def;
}

static inline bool sanitized(void)
{
	return getenv("FERRY_SANITIZED") != NULL;
}

/* The backend the store tests run against: local, or rbd when
 * FERRY_STORE_BACKEND=rbd (tests/store/rbd_run.sh sets it with
 * FERRY_CEPH_CONF, FERRY_RBD_POOL and FERRY_RBD_NAMESPACE). */
static inline bool test_rbd(void)
{
	const char *b = getenv("FERRY_STORE_BACKEND");
	return b && !strcmp(b, "rbd");
}

/* Opens the store of the backend under test; for rbd, dir holds the
 * gateway's state (its identity). */
static inline int test_store_open(const char *dir, struct store **st)
{
	if (!test_rbd())
		return store_open(dir, st);
	struct store_config c = {
		.backend = "rbd",
		.dir = dir,
		.rbd_pool = getenv("FERRY_RBD_POOL") ? getenv("FERRY_RBD_POOL") : "rbd",
		.rbd_namespace = getenv("FERRY_RBD_NAMESPACE"),
		.ceph_conf = getenv("FERRY_CEPH_CONF"),
	};
	return store_open_config(&c, st);
}

/* Removes the test volume of a backend that keeps it outside dir. */
static inline void test_store_cleanup(const char *dir, const char *vol)
{
	struct store *st;
	if (!test_rbd() || test_store_open(dir, &st))
		return;
	store_vol_remove(st, vol, true);
	store_close(st);
}

static inline char *make_tmpdir(void)
{
	char tmpl[] = "/tmp/ferry-store-XXXXXX";
	char *d = mkdtemp(tmpl);
	return d ? strdup(d) : NULL;
}

/* Per-block result of one vol_diff, with the contract checked on the fly. */
struct diff_rec {
	uint64_t size, object_size;
	uint8_t *kind;        /* per 4 KiB block: 0 not reported, 1 data, 2 zero */
	uint8_t *obj_zero;    /* per object: 0 not reported, 1 all_zero false, 2 true */
	int64_t last_obj;
	char err[256];
	size_t objects;
};

static inline void diff_rec_init(struct diff_rec *d, uint64_t size, uint64_t object_size)
{
	memset(d, 0, sizeof(*d));
	d->size = size;
	d->object_size = object_size;
	d->kind = calloc(DIV_ROUND_UP(size, STORE_BLOCK), 1);
	d->obj_zero = calloc(DIV_ROUND_UP(size, object_size), 1);
	d->last_obj = -1;
}

static inline void diff_rec_free(struct diff_rec *d)
{
	free(d->kind);
	free(d->obj_zero);
}

static inline void diff_fail(struct diff_rec *d, const char *fmt, ...) PRINTF_LIKE(2, 3);
static inline void diff_fail(struct diff_rec *d, const char *fmt, ...)
{
	if (d->err[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d->err, sizeof(d->err), fmt, ap);
	va_end(ap);
}

static inline int diff_rec_cb(void *ctx, const struct diff_object *o)
{
	struct diff_rec *d = ctx;
	if ((int64_t)o->objno <= d->last_obj)
		diff_fail(d, "objects out of order (%llu after %lld)", (unsigned long long)o->objno,
		          (long long)d->last_obj);
	if (o->objno >= DIV_ROUND_UP(d->size, d->object_size)) {
		diff_fail(d, "object %llu past the end", (unsigned long long)o->objno);
		return 0;
	}
	d->last_obj = (int64_t)o->objno;
	d->objects++;
	if (o->n_extents == 0)
		diff_fail(d, "object %llu reported with no extents", (unsigned long long)o->objno);
	d->obj_zero[o->objno] = o->all_zero ? 2 : 1;
	uint64_t ostart = o->objno * d->object_size;
	uint64_t oend = MIN(ostart + d->object_size, d->size);
	for (size_t i = 0; i < o->n_extents; i++) {
		const struct extent *e = &o->extents[i];
		if (e->offset % STORE_BLOCK || e->length == 0 || e->offset < ostart ||
		    e->offset + e->length > oend ||
		    ((e->offset + e->length) % STORE_BLOCK && e->offset + e->length != d->size))
			diff_fail(d, "bad extent %llu+%llu in object %llu",
			          (unsigned long long)e->offset, (unsigned long long)e->length,
			          (unsigned long long)o->objno);
		if (i && (e->offset < o->extents[i - 1].offset + o->extents[i - 1].length ||
		          (e->offset == o->extents[i - 1].offset + o->extents[i - 1].length &&
		           e->kind == o->extents[i - 1].kind)))
			diff_fail(d, "extents unsorted or not coalesced at %llu",
			          (unsigned long long)e->offset);
		for (uint64_t a = e->offset; a < e->offset + e->length && a < d->size;
		     a += STORE_BLOCK)
			d->kind[a / STORE_BLOCK] = e->kind == EXTENT_DATA ? 1 : 2;
	}
	return 0;
}

#endif
