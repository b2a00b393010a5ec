/* Model-based test of the store: random operations on small volumes, each
 * checked against an in-memory reference (head, every snapshot, every diff
 * between snapshot pairs, exactly).
 * Some stretches run "on a full disk": snapshot deletes' folds fail (all of
 * them after a few copied runs, or only those of some layers), leaving
 * leftovers that every later operation must read through correctly, until
 * the disk has space again and an open or a delete folds them.
 *   FERRY_SEED=N replays a run, FERRY_OPS=N scales it; FERRY_MODEL_TRACE=1
 *   prints every operation, FERRY_MODEL_PARANOID=1 checks everything after
 *   every operation (to find the first bad step of a failing seed).
 * The same model runs against every backend (FERRY_STORE_BACKEND, see
 * store_test_util.h); what it checks follows the backend's capabilities:
 * diffs are exactly the touched blocks with diff_scope TOUCHED, and with
 * CHANGED every block whose content differs plus only touched ones; the
 * full-disk stretches exercise the local backend's folds only; resizes run
 * where the backend has them (caps.resize). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "store/store_int.h"
#include "store_test_util.h"

#include <errno.h>

#define MAX_SNAPS 6

struct msnap {
	char name[32];
	uint64_t epoch;
	uint8_t *data;
};

struct model {
	struct rng r;
	uint64_t seed;
	char *dir;
	struct store *st;
	struct vol *v;
	uint64_t size;
	uint32_t osz, bs;
	uint64_t nblocks, nobj;
	uint8_t *head;
	struct msnap snaps[MAX_SNAPS];
	size_t n_snaps;
	uint64_t H;
	uint8_t **touched; /* [epoch][block] */
	size_t n_touched;
	uint64_t next_name;
	uint64_t op;
	uint8_t *rbuf;
	struct store_caps caps;
	bool local;       /* the local backend: its internals are checked too */
	bool full;        /* folds fail as on a full disk */
	bool selective;   /* ... only those of layers with odd tags */
	int budget;       /* ... after this many copied runs */
};

static struct model *fault_model;

static int fold_fault(uint64_t folded)
{
	struct model *m = fault_model;
	if (!m || !m->full)
		return 0;
	if (m->selective)
		return folded & 1 ? -ENOSPC : 0;
	return m->budget-- > 0 ? 0 : -ENOSPC;
}

/* Layers no snapshot anchors (left by folds that failed). */
static size_t leftovers(const struct model *m)
{
	const struct vol *v = m->v;
	size_t n = 0;
	for (size_t i = 0; i < v->n_layers; i++) {
		uint64_t t = v->layers[i]->tag;
		bool anchor = t == v->meta.head_epoch;
		for (size_t j = 0; j < v->meta.n_snaps && !anchor; j++)
			anchor = v->meta.snaps[j].epoch == t;
		n += !anchor;
	}
	return n;
}

#define CHECK(m, cond, ...)                                                              \
	do {                                                                                 \
		if (!(cond)) {                                                                   \
			print_message("FAIL seed=%llu op=%llu: ", (unsigned long long)(m)->seed,     \
			              (unsigned long long)(m)->op);                                  \
			print_message(__VA_ARGS__);                                                  \
			print_message("\n");                                                         \
			fail();                                                                      \
		}                                                                                \
	} while (0)

static uint8_t *touched_of(struct model *m, uint64_t ep)
{
	while (m->n_touched <= ep) {
		m->touched = realloc(m->touched, (m->n_touched + 1) * sizeof(*m->touched));
		m->touched[m->n_touched++] = calloc(m->nblocks, 1);
	}
	return m->touched[ep];
}

static void touch(struct model *m, uint64_t off, uint64_t len)
{
	uint8_t *t = touched_of(m, m->H);
	for (uint64_t b = off / STORE_BLOCK; b * STORE_BLOCK < off + len; b++)
		t[b] = 1;
}

static void do_open(struct model *m)
{
	CHECK(m, test_store_open(m->dir, &m->st) == 0, "store_open");
	int rc = vol_open(m->st, "v", &m->v);
	CHECK(m, rc == 0, "vol_open%s: %d", m->full ? " on a full disk" : "", rc);
	store_get_caps(m->st, &m->caps);
	m->local = !strcmp(m->caps.backend, "local");
	if (!m->full && m->local)
		CHECK(m, leftovers(m) == 0, "%zu leftovers after an open with space", leftovers(m));
}

static void do_close(struct model *m)
{
	vol_close(m->v);
	store_close(m->st);
}

static void check_content(struct model *m, const char *snap, const uint8_t *ref)
{
	int rc = vol_read(m->v, snap, m->rbuf, 0, m->size);
	CHECK(m, rc == 0, "read %s: %d", snap ? snap : "head", rc);
	if (memcmp(m->rbuf, ref, m->size)) {
		uint64_t i = 0;
		while (m->rbuf[i] == ref[i])
			i++;
		CHECK(m, 0, "content of %s differs at byte %llu (got %02x want %02x)",
		      snap ? snap : "head", (unsigned long long)i, m->rbuf[i], ref[i]);
	}
}

static void check_diff(struct model *m, int fi, int ti)
{
	/* fi/ti: snapshot index, -1 = NULL (creation / head) */
	uint64_t a = fi < 0 ? 0 : m->snaps[fi].epoch;
	uint64_t b = ti < 0 ? m->H : m->snaps[ti].epoch;
	const uint8_t *to = ti < 0 ? m->head : m->snaps[ti].data;
	const uint8_t *from = fi < 0 ? NULL : m->snaps[fi].data;
	struct diff_rec d;
	diff_rec_init(&d, m->size, m->osz);
	int rc = vol_diff(m->v, fi < 0 ? NULL : m->snaps[fi].name, ti < 0 ? NULL : m->snaps[ti].name,
	                  diff_rec_cb, &d);
	const char *fn = fi < 0 ? "-" : m->snaps[fi].name, *tn = ti < 0 ? "head" : m->snaps[ti].name;
	CHECK(m, rc == 0, "diff %s..%s: %d", fn, tn, rc);
	CHECK(m, !d.err[0], "diff %s..%s: %s", fn, tn, d.err);
	for (uint64_t blk = 0; blk < m->nblocks; blk++) {
		bool t = false;
		for (uint64_t e = a + 1; e <= b && !t; e++)
			t = e < m->n_touched && m->touched[e][blk];
		uint64_t bo = blk * STORE_BLOCK, bl = MIN(STORE_BLOCK, m->size - bo);
		uint8_t kind = buf_is_zero(to + bo, bl) ? 2 : 1;
		if (m->caps.diff_scope == STORE_DIFF_TOUCHED) {
			uint8_t want = t ? kind : 0;
			CHECK(m, d.kind[blk] == want, "diff %s..%s block %llu: got %u want %u", fn,
			      tn, (unsigned long long)blk, d.kind[blk], want);
			continue;
		}
		bool changed = from ? memcmp(from + bo, to + bo, bl) != 0 : kind == 1;
		CHECK(m, !changed || d.kind[blk] == kind, "diff %s..%s block %llu (changed): got %u "
		      "want %u", fn, tn, (unsigned long long)blk, d.kind[blk], kind);
		CHECK(m, !d.kind[blk] || (t && d.kind[blk] == kind), "diff %s..%s block %llu: got %u, "
		      "%s", fn, tn, (unsigned long long)blk, d.kind[blk],
		      t ? "wrong kind" : "never touched");
	}
	for (uint64_t o = 0; o < m->nobj; o++) {
		if (!d.obj_zero[o])
			continue;
		uint64_t oo = o * m->osz, ol = MIN(m->osz, m->size - oo);
		uint8_t want = buf_is_zero(to + oo, ol) ? 2 : 1;
		CHECK(m, d.obj_zero[o] == want, "diff %s..%s object %llu all_zero wrong", fn, tn,
		      (unsigned long long)o);
		bool z;
		CHECK(m, vol_object_is_zero(m->v, ti < 0 ? NULL : m->snaps[ti].name, o, &z) == 0,
		      "object_is_zero");
		CHECK(m, z == (want == 2), "object_is_zero(%llu) wrong", (unsigned long long)o);
	}
	diff_rec_free(&d);
}

static void full_check(struct model *m)
{
	check_content(m, NULL, m->head);
	for (size_t i = 0; i < m->n_snaps; i++)
		check_content(m, m->snaps[i].name, m->snaps[i].data);
	for (int f = -1; f < (int)m->n_snaps; f++) {
		for (int t = f + 1; t < (int)m->n_snaps; t++)
			check_diff(m, f, t);
		check_diff(m, f, -1);
	}
}

static void gen_range(struct model *m, uint64_t *off, uint64_t *len)
{
	uint64_t maxlen = rng_below(&m->r, 4) == 0 ? 2 * m->osz + 3 * STORE_BLOCK : 64 << 10;
	uint64_t l, o;
	switch (rng_below(&m->r, 4)) {
	case 0: /* 4 KiB aligned */
		l = (1 + rng_below(&m->r, maxlen / STORE_BLOCK)) * STORE_BLOCK;
		o = rng_below(&m->r, m->nblocks) * STORE_BLOCK;
		break;
	case 1: /* block_size aligned */
		l = (1 + rng_below(&m->r, maxlen / m->bs)) * m->bs;
		o = rng_below(&m->r, m->size / m->bs) * m->bs;
		break;
	case 2: /* near the end of the volume */
		l = 1 + rng_below(&m->r, 3 * STORE_BLOCK);
		o = m->size > l + 2 * STORE_BLOCK ? m->size - l - rng_below(&m->r, 2 * STORE_BLOCK)
		                                  : 0;
		break;
	default: /* anything */
		l = 1 + rng_below(&m->r, maxlen);
		o = rng_below(&m->r, m->size);
		break;
	}
	if (o >= m->size)
		o = m->size - 1;
	if (l > m->size - o)
		l = m->size - o;
	*off = o;
	*len = l;
}

static void op_write(struct model *m)
{
	uint64_t off, len;
	gen_range(m, &off, &len);
	uint8_t *buf = malloc(len);
	int kind = (int)rng_below(&m->r, 4);
	if (kind == 0) {
		memset(buf, 0, len);
	} else {
		rng_fill(&m->r, buf, len);
		if (kind == 1) /* sprinkle zero 4 KiB blocks */
			for (uint64_t a = 0; a < len; a += STORE_BLOCK)
				if (rng_below(&m->r, 2))
					memset(buf + a, 0, MIN(STORE_BLOCK, len - a));
	}
	if (getenv("FERRY_MODEL_TRACE"))
		print_message("op %llu: write %llu+%llu kind %d\n", (unsigned long long)m->op,
		              (unsigned long long)off, (unsigned long long)len, kind);
	int rc = vol_write(m->v, buf, off, len);
	CHECK(m, rc == 0, "write %llu+%llu: %d", (unsigned long long)off, (unsigned long long)len,
	      rc);
	memcpy(m->head + off, buf, len);
	touch(m, off, len);
	/* read back around it */
	uint64_t a = off > 5000 ? off - 5000 : 0, b = MIN(m->size, off + len + 5000);
	rc = vol_read(m->v, NULL, m->rbuf, a, b - a);
	CHECK(m, rc == 0 && !memcmp(m->rbuf, m->head + a, b - a), "read-back after write %llu+%llu",
	      (unsigned long long)off, (unsigned long long)len);
	free(buf);
}

static void op_zero(struct model *m)
{
	uint64_t off, len;
	gen_range(m, &off, &len);
	if (getenv("FERRY_MODEL_TRACE"))
		print_message("op %llu: zero %llu+%llu\n", (unsigned long long)m->op,
		              (unsigned long long)off, (unsigned long long)len);
	int rc = rng_below(&m->r, 2) ? vol_discard(m->v, off, len) : vol_write_zeroes(m->v, off, len);
	CHECK(m, rc == 0, "discard: %d", rc);
	memset(m->head + off, 0, len);
	touch(m, off, len);
}

static void op_snap(struct model *m)
{
	if (m->n_snaps == MAX_SNAPS)
		return;
	struct msnap *s = &m->snaps[m->n_snaps];
	snprintf(s->name, sizeof(s->name), "s%llu", (unsigned long long)m->next_name++);
	int rc = vol_snap_create(m->v, s->name);
	CHECK(m, rc == 0, "snap create: %d", rc);
	s->epoch = m->H++;
	s->data = malloc(m->size);
	memcpy(s->data, m->head, m->size);
	m->n_snaps++;
	CHECK(m, vol_snap_create(m->v, s->name) == -EEXIST, "duplicate snapshot accepted");
}

static void op_delete(struct model *m)
{
	if (!m->n_snaps)
		return;
	size_t i = rng_below(&m->r, m->n_snaps);
	if (getenv("FERRY_MODEL_TRACE"))
		print_message("op %llu: delete %s%s\n", (unsigned long long)m->op, m->snaps[i].name,
		              m->full ? " (full)" : "");
	int rc = vol_snap_delete(m->v, m->snaps[i].name);
	/* on a full disk the delete commits even when its fold must wait */
	CHECK(m, rc == 0 || (m->full && rc == -ENOSPC), "snap delete %s: %d", m->snaps[i].name,
	      rc);
	struct snap_info si;
	CHECK(m, vol_snap_get(m->v, m->snaps[i].name, &si) == -ENOENT, "deleted %s still listed",
	      m->snaps[i].name);
	if (!m->full && m->local)
		CHECK(m, leftovers(m) == 0, "%zu leftovers after a delete with space", leftovers(m));
	free(m->snaps[i].data);
	memmove(&m->snaps[i], &m->snaps[i + 1], (m->n_snaps - i - 1) * sizeof(m->snaps[0]));
	m->n_snaps--;
}

static void op_rollback(struct model *m)
{
	if (!m->n_snaps)
		return;
	if (m->n_snaps > 1) {
		int rc = vol_rollback(m->v, m->snaps[0].name);
		CHECK(m, rc == -EBUSY, "rollback past a later snapshot: %d", rc);
	}
	struct msnap *s = &m->snaps[m->n_snaps - 1];
	int rc = vol_rollback(m->v, s->name);
	/* refused (and nothing changed) when it would need a fold that the
	 * full disk does not allow */
	CHECK(m, rc == 0 || (m->full && rc == -ENOSPC), "rollback: %d", rc);
	if (rc)
		return;
	memcpy(m->head, s->data, m->size);
	/* Everything after the snapshot is gone, including the epochs of
	 * snapshots deleted since it was taken. */
	for (uint64_t e = s->epoch + 1; e <= m->H; e++)
		memset(touched_of(m, e), 0, m->nblocks);
}

/* Backends with caps.resize: a new size, often not object or 4 KiB
 * aligned.  Snapshots have the volume's size (zeros past where they were
 * taken); a shrink is refused while there are snapshots. */
static void op_resize(struct model *m)
{
	if (!m->caps.resize)
		return;
	uint64_t mb = 4 + rng_below(&m->r, 13);
	uint64_t size = (mb << 20) - rng_below(&m->r, 64) * m->bs;
	if (rng_below(&m->r, 3) == 0)
		size = (mb << 20) + m->osz / 2 + 3 * m->bs;
	if (getenv("FERRY_MODEL_TRACE"))
		print_message("op %llu: resize %llu -> %llu\n", (unsigned long long)m->op,
		              (unsigned long long)m->size, (unsigned long long)size);
	int rc = vol_resize(m->v, size);
	if (size < m->size && m->n_snaps) {
		CHECK(m, rc == -ENOTEMPTY, "shrink with snapshots: %d", rc);
		CHECK(m, vol_size(m->v) == m->size, "size changed by a refused shrink");
		return;
	}
	CHECK(m, rc == 0, "resize %llu -> %llu: %d", (unsigned long long)m->size,
	      (unsigned long long)size, rc);
	uint64_t old = m->size, nb = DIV_ROUND_UP(size, STORE_BLOCK);
	m->head = realloc(m->head, size);
	m->rbuf = realloc(m->rbuf, size);
	if (size > old)
		memset(m->head + old, 0, size - old);
	for (size_t i = 0; i < m->n_snaps; i++) {
		m->snaps[i].data = realloc(m->snaps[i].data, size);
		if (size > old)
			memset(m->snaps[i].data + old, 0, size - old);
	}
	/* blocks past a shrink's end are gone from every epoch */
	for (size_t e = 0; e < m->n_touched; e++) {
		m->touched[e] = realloc(m->touched[e], nb);
		if (nb > m->nblocks)
			memset(m->touched[e] + m->nblocks, 0, nb - m->nblocks);
	}
	m->size = size;
	m->nblocks = nb;
	m->nobj = DIV_ROUND_UP(size, m->osz);
	CHECK(m, vol_size(m->v) == size, "vol_size after a resize");
	struct vol_info vi;
	CHECK(m, vol_info(m->v, &vi) == 0 && vi.size == size && vi.objects == m->nobj,
	      "vol_info after a resize");
}

/* Backends with caps.clone: a clone of a random snapshot reads as the
 * snapshot, takes writes without changing the model's volume, keeps its
 * snapshot from being deleted, and (half the time) is flattened first;
 * removing it frees the snapshot again. */
static void op_clone(struct model *m)
{
	if (!m->caps.clone || !m->n_snaps)
		return;
	struct msnap *s = &m->snaps[rng_below(&m->r, m->n_snaps)];
	bool flatten = rng_below(&m->r, 2);
	if (getenv("FERRY_MODEL_TRACE"))
		print_message("op %llu: clone %s%s\n", (unsigned long long)m->op, s->name,
		              flatten ? " + flatten" : "");
	(void)store_vol_remove(m->st, "c", true); /* a leftover of a failed run */
	int rc = store_vol_clone(m->st, "v", s->name, "c");
	CHECK(m, rc == 0, "clone %s: %d", s->name, rc);
	struct vol *c;
	CHECK(m, vol_open(m->st, "c", &c) == 0, "open the clone");
	uint8_t *want = malloc(m->size);
	memcpy(want, s->data, m->size);
	CHECK(m, vol_read(c, NULL, m->rbuf, 0, m->size) == 0 && !memcmp(m->rbuf, want, m->size),
	      "the clone of %s reads as it", s->name);
	for (int i = 0; i < 3; i++) {
		uint64_t off = rng_below(&m->r, m->size);
		uint64_t len = 1 + rng_below(&m->r, MIN(m->size - off, 3 * (uint64_t)m->osz));
		rng_fill(&m->r, want + off, len);
		CHECK(m, vol_write(c, want + off, off, len) == 0, "clone write");
	}
	rc = vol_snap_delete(m->v, s->name);
	CHECK(m, rc == -EBUSY, "delete of a cloned snapshot: %d", rc);
	if (flatten) {
		rc = vol_flatten(c, NULL, NULL);
		CHECK(m, rc == 0, "flatten: %d", rc);
		struct vol_info vi;
		CHECK(m, vol_info(c, &vi) == 0 && !vi.parent[0], "a parent after the flatten");
	}
	CHECK(m, vol_read(c, NULL, m->rbuf, 0, m->size) == 0 && !memcmp(m->rbuf, want, m->size),
	      "the clone reads its writes over %s", s->name);
	CHECK(m, vol_read(m->v, s->name, m->rbuf, 0, m->size) == 0 &&
	         !memcmp(m->rbuf, s->data, m->size), "%s unchanged by its clone", s->name);
	vol_close(c);
	free(want);
	if (flatten) {
		char(*names)[STORE_NAME_MAX + 1];
		size_t n;
		CHECK(m, store_vol_clones(m->st, "v", s->name, &names, &n) == 0 && n == 0,
		      "a flattened clone still counts");
		free(names);
	}
	CHECK(m, store_vol_remove(m->st, "c", true) == 0, "remove the clone");
}

static void run_one(uint64_t seed, uint64_t ops)
{
	struct model M = {0}, *m = &M;
	m->seed = seed;
	m->r.s = seed;
	m->dir = make_tmpdir();
	assert_non_null(m->dir);
	static const uint32_t osizes[] = {64 << 10, 128 << 10, 256 << 10, 1 << 20};
	m->osz = osizes[rng_below(&m->r, 4)];
	m->bs = rng_below(&m->r, 2) ? 512 : 4096;
	uint64_t mb = 8 + rng_below(&m->r, 9);
	m->size = (mb << 20) - rng_below(&m->r, 64) * m->bs; /* often not object aligned */
	if (rng_below(&m->r, 3) == 0)
		m->size = (mb << 20) + m->osz / 2 + 3 * m->bs;
	m->nblocks = DIV_ROUND_UP(m->size, STORE_BLOCK);
	m->nobj = DIV_ROUND_UP(m->size, m->osz);
	m->head = calloc(m->size, 1);
	m->rbuf = malloc(m->size);
	m->H = 1;
	print_message("model: seed=%llu size=%llu object=%u block=%u ops=%llu\n",
	              (unsigned long long)seed, (unsigned long long)m->size, m->osz, m->bs,
	              (unsigned long long)ops);
	struct store *st;
	assert_int_equal(test_store_open(m->dir, &st), 0);
	struct vol_params p = {.size = m->size, .object_size = m->osz, .block_size = m->bs};
	assert_int_equal(store_vol_create(st, "v", &p), 0);
	store_close(st);
	do_open(m);
	fault_model = m;
	store_fold_fault = fold_fault;
	for (m->op = 0; m->op < ops; m->op++) {
		uint64_t x = rng_below(&m->r, 100);
		if (getenv("FERRY_MODEL_TRACE"))
			print_message("op %llu: x=%llu snaps=%zu H=%llu\n", (unsigned long long)m->op,
			              (unsigned long long)x, m->n_snaps, (unsigned long long)m->H);
		bool full = m->op % 40 == 39 || getenv("FERRY_MODEL_PARANOID");
		if (x < 45) {
			op_write(m);
		} else if (x < 60) {
			op_zero(m);
		} else if (x < 64) {
			CHECK(m, vol_flush(m->v) == 0, "flush");
		} else if (x < 74) {
			op_snap(m);
		} else if (x < 82) {
			op_delete(m);
			full = true;
		} else if (x < 84) {
			op_rollback(m);
			full = true;
		} else if (x < 88) {
			do_close(m);
			do_open(m);
			full = true;
		} else if (x < 90) {
			m->full = m->local && !m->full; /* only the local backend folds */
			m->selective = rng_below(&m->r, 3) == 0;
			m->budget = (int)rng_below(&m->r, 4);
			if (getenv("FERRY_MODEL_TRACE"))
				print_message("op %llu: disk %s\n", (unsigned long long)m->op,
				              m->full ? (m->selective ? "full (odd tags)" : "full") : "has space");
		} else if (x < 92 && m->caps.resize) {
			op_resize(m);
			full = true;
		} else if (x < 93) {
			op_clone(m);
		} else {
			int f = (int)rng_below(&m->r, m->n_snaps + 1) - 1;
			int t = f + 1 + (int)rng_below(&m->r, m->n_snaps - (size_t)(f + 1) + 1);
			check_diff(m, f, t >= (int)m->n_snaps ? -1 : t);
		}
		if (full)
			full_check(m);
	}
	full_check(m);
	m->full = false;
	do_close(m);
	do_open(m); /* folds every leftover */
	full_check(m);
	do_close(m);
	store_fold_fault = NULL;
	fault_model = NULL;
	test_store_cleanup(m->dir, "v");
	assert_int_equal(rm_rf(m->dir), 0);
	for (size_t i = 0; i < m->n_snaps; i++)
		free(m->snaps[i].data);
	for (size_t i = 0; i < m->n_touched; i++)
		free(m->touched[i]);
	free(m->touched);
	free(m->head);
	free(m->rbuf);
	free(m->dir);
}

static void test_model(void **state)
{
	(void)state;
	uint64_t seed = env_u64("FERRY_SEED", now_mono_ns() ^ (uint64_t)getpid());
	/* a cluster round trip per operation: fewer of them on rbd */
	uint64_t ops = env_u64("FERRY_OPS", test_rbd() ? 400 : sanitized() ? 2000 : 4000);
	print_message("test_store_model: FERRY_SEED=%llu FERRY_OPS=%llu\n",
	              (unsigned long long)seed, (unsigned long long)ops);
	log_set_level(LOG_WARN);
	/* a few volumes with different geometry; each run's seed is derived */
	for (uint64_t i = 0; i < 4; i++)
		run_one(seed + i * 0x1000193ull, ops / 4);
}

int main(void)
{
	/* Line-buffered even into ctest's pipe: a run killed by its timeout
	 * still shows how far it got (seed, run, last op with
	 * FERRY_MODEL_TRACE=1). */
	setvbuf(stdout, NULL, _IOLBF, 0);
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_model)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
