/* repl engine, primary side: one cycle of a pair.
 *
 * snapshot -> count the increment -> take a transfer slot -> connect ->
 * CYCLE_BEGIN/READY (resume point) -> stream the increment through the
 * throttle -> CYCLE_END -> COMMITTED -> drop the previous snapshot.
 *
 * The throttle.  The cycle thread enumerates the diff (vol_diff, in objno
 * order) and admits one job per changed object into a FIFO window of at
 * most max_inflight objects and REPL_WINDOW_BYTES bytes.  Reader threads
 * turn jobs into encoded frames (reads, zero detection, zstd); one sender
 * thread sends them in objno order.  Reading ends when the enumeration is
 * finished and the FIFO is empty: every enumerated object, all-zero or
 * not, goes through the FIFO, so the end never depends on data arriving
 * (the seed's hang cannot happen: an all-zero last object is a job like
 * any other, with no read).
 */
#include "repl/engine.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "common/common.h"

#define SPARE_MAX 8

struct job {
	struct job *next;
	uint64_t objno;
	struct extent *ext;
	size_t n_ext;
	bool all_zero;
	bool taken, ready;
	uint64_t cost;           /* bytes charged to the window */
	uint64_t changed;        /* changed bytes of the object */
	uint64_t data_bytes, zero_bytes;
	uint8_t *frames;
	size_t flen, fcap;
};

struct pipe {
	struct pair *p;
	struct vol *v;
	struct vol_info vi;
	const char *snap;
	struct link *l;
	bool compress;
	size_t chunk;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *head, *tail;
	unsigned inflight, max_inflight;
	uint64_t inflight_bytes, max_bytes;
	uint64_t skip_below;     /* objects before this are durable remotely */
	uint64_t enumerated, accounted, extents, skipped_bytes;
	uint64_t data_bytes, zero_bytes;
	bool enum_done, failed;
	const struct wire_digest *extra; /* resync: extents to add (not owned) */
	size_t n_extra;
	/* Frame buffers of sent jobs, reused by the next ones (under mu):
	 * a fresh 1 MiB buffer per object costs page faults, zeroing and an
	 * munmap or madvise each time. */
	struct { uint8_t *buf; size_t cap; } spare[SPARE_MAX];
	unsigned n_spare;
	int err;
	char errmsg[512];
};

static void pipe_fail(struct pipe *pp, int err, const char *fmt, ...) PRINTF_LIKE(3, 4);
static void pipe_fail(struct pipe *pp, int err, const char *fmt, ...)
{
	pthread_mutex_lock(&pp->mu);
	if (!pp->failed) {
		pp->failed = true;
		pp->err = err;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(pp->errmsg, sizeof(pp->errmsg), fmt, ap);
		va_end(ap);
	}
	pthread_cond_broadcast(&pp->cv);
	pthread_mutex_unlock(&pp->mu);
}

/* pp (may be NULL): keep the frame buffer for reuse; called with pp->mu
 * held then. */
static void job_free(struct pipe *pp, struct job *j)
{
	if (!j)
		return;
	free(j->ext);
	if (pp && j->frames && pp->n_spare < SPARE_MAX) {
		pp->spare[pp->n_spare].buf = j->frames;
		pp->spare[pp->n_spare].cap = j->fcap;
		pp->n_spare++;
	} else {
		free(j->frames);
	}
	free(j);
}

static int job_reserve(struct pipe *pp, struct job *j, size_t more)
{
	if (j->fcap - j->flen >= more)
		return 0;
	/* first frame of the job: room for all its data at once, so that the
	 * buffer is not regrown (and copied) while the object is encoded */
	size_t want = j->flen + more;
	if (!j->frames) {
		want = MAX(want, (size_t)(j->all_zero ? 0 : j->changed) + 65536);
		pthread_mutex_lock(&pp->mu);
		if (pp->n_spare) {
			pp->n_spare--;
			j->frames = pp->spare[pp->n_spare].buf;
			j->fcap = pp->spare[pp->n_spare].cap;
		}
		pthread_mutex_unlock(&pp->mu);
		if (j->fcap - j->flen >= more && j->fcap >= want)
			return 0;
	}
	size_t cap = MAX(j->fcap * 2, want);
	cap = MAX(cap, (size_t)65536);
	uint8_t *n = realloc(j->frames, cap);
	if (!n)
		return -ENOMEM;
	j->frames = n;
	j->fcap = cap;
	return 0;
}

static int job_emit(struct pipe *pp, struct job *j, const struct wire_msg *m, size_t payload)
{
	int rc = job_reserve(pp, j, WIRE_HDR_LEN + 64 + payload);
	if (rc < 0)
		return rc;
	int n = wire_encode(m, j->frames + j->flen, j->fcap - j->flen);
	if (n < 0)
		return n;
	j->flen += (size_t)n;
	return 0;
}

static int emit_zero(struct pipe *pp, struct job *j, uint64_t off, uint64_t len)
{
	struct wire_msg m = { .type = WIRE_ZERO };
	m.u.zero.objno = j->objno;
	m.u.zero.offset = off;
	m.u.zero.length = len;
	j->zero_bytes += len;
	return job_emit(pp, j, &m, 0);
}

struct reader {
	struct pipe *pp;
	pthread_t th;
	uint8_t *buf;            /* chunk of raw data */
	uint8_t *zbuf;           /* zstd output */
	size_t zcap;
	ZSTD_CCtx *zc;
};

static int emit_data(struct reader *rd, struct job *j, uint64_t off, const uint8_t *data,
                     size_t len)
{
	struct wire_msg m = { .type = WIRE_DATA };
	m.u.data.objno = j->objno;
	m.u.data.offset = off;
	m.u.data.raw_len = (uint32_t)len;
	m.u.data.codec = WIRE_CODEC_NONE;
	m.u.data.data = data;
	m.u.data.data_len = (uint32_t)len;
	if (rd->zc) {
		size_t z = ZSTD_compressCCtx(rd->zc, rd->zbuf, rd->zcap, data, len, 1);
		/* Only worth it when it saves something; incompressible data goes
		 * as it is, so compression never costs wire bytes. */
		if (!ZSTD_isError(z) && z + 64 < len) {
			m.u.data.codec = WIRE_CODEC_ZSTD;
			m.u.data.data = rd->zbuf;
			m.u.data.data_len = (uint32_t)z;
		}
	}
	j->data_bytes += len;
	return job_emit(rd->pp, j, &m, m.u.data.data_len);
}

/* Splits a data chunk into runs of all-zero and non-zero 4 KiB blocks:
 * zero runs travel as ZERO records.  The last block may be short (the
 * volume's end). */
static int emit_chunk(struct reader *rd, struct job *j, uint64_t off, const uint8_t *buf,
                      size_t len)
{
	size_t i = 0;
	while (i < len) {
		size_t b = MIN((size_t)STORE_BLOCK, len - i);
		bool z = buf_is_zero(buf + i, b);
		size_t k = i + b;
		while (k < len) {
			size_t bb = MIN((size_t)STORE_BLOCK, len - k);
			if (buf_is_zero(buf + k, bb) != z)
				break;
			k += bb;
		}
		int rc = z ? emit_zero(rd->pp, j, off + i, k - i)
		           : emit_data(rd, j, off + i, buf + i, k - i);
		if (rc < 0)
			return rc;
		i = k;
	}
	return 0;
}

static int job_encode(struct reader *rd, struct job *j)
{
	struct pipe *pp = rd->pp;
	uint64_t osz = pp->vi.object_size;
	uint64_t ostart = j->objno * osz;
	uint64_t oend = MIN(ostart + osz, pp->vi.size);
	int rc = 0;
	if (j->all_zero) {
		rc = emit_zero(rd->pp, j, ostart, oend - ostart);
		j->zero_bytes = j->changed; /* stats count what changed */
	} else {
		for (size_t e = 0; e < j->n_ext && rc == 0; e++) {
			const struct extent *x = &j->ext[e];
			uint64_t xo = x->offset, xend = MIN(x->offset + x->length, oend);
			if (xo < ostart || xo >= xend) {
				rc = -EIO;
				break;
			}
			if (x->kind == EXTENT_ZERO) {
				rc = emit_zero(rd->pp, j, xo, xend - xo);
				continue;
			}
			/* This data extent and the next ones that fit in the buffer
			 * are read in one request (on RBD: one RADOS operation for
			 * the object, instead of one per extent). */
			size_t k = e, bytes = 0;
			while (k < j->n_ext && j->ext[k].kind == EXTENT_DATA &&
			       j->ext[k].offset >= ostart && j->ext[k].length &&
			       j->ext[k].offset + j->ext[k].length <= oend &&
			       bytes + j->ext[k].length <= pp->chunk)
				bytes += (size_t)j->ext[k++].length;
			if (k > e + 1) {
				rc = vol_read_extents(pp->v, pp->snap, &j->ext[e], k - e, rd->buf);
				const uint8_t *p = rd->buf;
				for (size_t i = e; i < k && rc == 0; i++) {
					rc = emit_chunk(rd, j, j->ext[i].offset, p, (size_t)j->ext[i].length);
					p += j->ext[i].length;
				}
				e = k - 1;
				continue;
			}
			while (xo < xend && rc == 0) {
				size_t n = (size_t)MIN((uint64_t)pp->chunk, xend - xo);
				rc = vol_read(pp->v, pp->snap, rd->buf, xo, n);
				if (rc < 0)
					break;
				rc = emit_chunk(rd, j, xo, rd->buf, n);
				xo += n;
			}
		}
	}
	if (rc == 0) {
		struct wire_msg m = { .type = WIRE_OBJ_DONE };
		m.u.obj_done.objno = j->objno;
		rc = job_emit(pp, j, &m, 0);
	}
	return rc;
}

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	struct pipe *pp = rd->pp;
	pthread_mutex_lock(&pp->mu);
	for (;;) {
		if (pp->failed)
			break;
		struct job *j = pp->head;
		while (j && j->taken)
			j = j->next;
		if (!j) {
			if (pp->enum_done)
				break;
			pthread_cond_wait(&pp->cv, &pp->mu);
			continue;
		}
		j->taken = true;
		pthread_mutex_unlock(&pp->mu);
		int rc = job_encode(rd, j);
		if (rc < 0)
			pipe_fail(pp, rc, "reading object %" PRIu64 " of %s@%s: %s", j->objno,
			          pp->p->rec.name, pp->snap, strerror(-rc));
		pthread_mutex_lock(&pp->mu);
		j->ready = true;
		pthread_cond_broadcast(&pp->cv);
	}
	pthread_mutex_unlock(&pp->mu);
	return NULL;
}

/* An ERROR the secondary sent while we stream (disk full, bad record)
 * must reach the user, not be lost behind a broken pipe. */
static int check_peer(struct link *l)
{
	if (link_buffered(l))
		goto read;
	struct pollfd pfd = { .fd = l->fd, .events = POLLIN };
	if (poll(&pfd, 1, 0) <= 0)
		return 0;
read:;
	struct wire_msg m;
	int rc = link_recv(l, &m, 1000);
	if (rc < 0)
		return rc;
	if (m.type == WIRE_ERROR) {
		snprintf(l->err, sizeof(l->err), "secondary: %s", m.u.error.msg);
		return -m.u.error.code;
	}
	snprintf(l->err, sizeof(l->err), "secondary sent %s during a transfer",
	         wire_type_name(m.type));
	return -EPROTO;
}

static void *sender_main(void *arg)
{
	struct pipe *pp = arg;
	struct pair *p = pp->p;
	struct repl *r = p->r;
	pthread_mutex_lock(&pp->mu);
	for (;;) {
		if (pp->failed)
			break;
		struct job *j = pp->head;
		if (!j) {
			if (pp->enum_done)
				break; /* every enumerated object is accounted for */
			pthread_cond_wait(&pp->cv, &pp->mu);
			continue;
		}
		if (!j->ready) {
			pthread_cond_wait(&pp->cv, &pp->mu);
			continue;
		}
		pp->head = j->next;
		if (!pp->head)
			pp->tail = NULL;
		pthread_mutex_unlock(&pp->mu);
		int rc = link_send_raw(pp->l, j->frames, j->flen);
		if (rc == 0)
			rc = check_peer(pp->l);
		if (rc < 0) {
			/* The peer's own ERROR is the better explanation. */
			if (rc != -ECANCELED && rc != -EPROTO && rc != -EACCES) {
				int prc = check_peer(pp->l);
				if (prc < 0 && strncmp(pp->l->err, "secondary:", 10) == 0)
					rc = prc;
			}
			pipe_fail(pp, rc, "%s", pp->l->err);
		}
		pthread_mutex_lock(&r->mu);
		p->done_bytes += j->changed;
		pthread_mutex_unlock(&r->mu);
		pthread_mutex_lock(&pp->mu);
		pp->inflight--;
		pp->inflight_bytes -= j->cost;
		pp->accounted++;
		pp->data_bytes += j->data_bytes;
		pp->zero_bytes += j->zero_bytes;
		pthread_cond_broadcast(&pp->cv);
		job_free(pp, j);
	}
	pthread_mutex_unlock(&pp->mu);
	return NULL;
}

static uint64_t changed_bytes(const struct diff_object *o)
{
	uint64_t n = 0;
	for (size_t i = 0; i < o->n_extents; i++)
		n += o->extents[i].length;
	return n;
}

/* The diff callback: admits one job per changed object into the window. */
static int enum_cb(void *ctx, const struct diff_object *o)
{
	struct pipe *pp = ctx;
	if (o->objno < pp->skip_below) {
		pp->skipped_bytes += changed_bytes(o);
		return 0;
	}
	struct job *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->objno = o->objno;
	j->all_zero = o->all_zero;
	j->changed = changed_bytes(o);
	if (o->n_extents) {
		j->ext = malloc(o->n_extents * sizeof(*j->ext));
		if (!j->ext) {
			free(j);
			return -ENOMEM;
		}
		memcpy(j->ext, o->extents, o->n_extents * sizeof(*j->ext));
		j->n_ext = o->n_extents;
	}
	if (!j->all_zero)
		for (size_t i = 0; i < j->n_ext; i++)
			if (j->ext[i].kind == EXTENT_DATA)
				j->cost += j->ext[i].length;
	pthread_mutex_lock(&pp->mu);
	/* The window: an object waits while max_inflight objects, or the
	 * byte bound, are in flight (a lone object always fits). */
	while (!pp->failed && (pp->inflight >= pp->max_inflight ||
	                       (pp->inflight && pp->inflight_bytes + j->cost > pp->max_bytes)))
		pthread_cond_wait(&pp->cv, &pp->mu);
	if (pp->failed) {
		pthread_mutex_unlock(&pp->mu);
		job_free(NULL, j);
		return -ECANCELED;
	}
	if (pp->tail)
		pp->tail->next = j;
	else
		pp->head = j;
	pp->tail = j;
	pp->inflight++;
	pp->inflight_bytes += j->cost;
	pp->enumerated++;
	pp->extents += j->n_ext;
	pthread_cond_broadcast(&pp->cv);
	pthread_mutex_unlock(&pp->mu);
	return 0;
}

struct counts {
	uint64_t objects, bytes;
};

static int count_cb(void *ctx, const struct diff_object *o)
{
	struct counts *c = ctx;
	c->objects++;
	c->bytes += changed_bytes(o);
	return 0;
}

/* ---- resync: the increment plus the old primary's divergence ----------- */
struct uobj {
	uint64_t objno;
	struct extent *ext;
	size_t n;
	bool all_zero;
};

struct ucollect {
	struct uobj *o;
	size_t n, cap;
};

static int collect_cb(void *ctx, const struct diff_object *o)
{
	struct ucollect *c = ctx;
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 64;
		struct uobj *no = realloc(c->o, cap * sizeof(*no));
		if (!no)
			return -ENOMEM;
		c->o = no;
		c->cap = cap;
	}
	struct uobj *u = &c->o[c->n];
	memset(u, 0, sizeof(*u));
	u->objno = o->objno;
	u->all_zero = o->all_zero;
	if (o->n_extents) {
		u->ext = malloc(o->n_extents * sizeof(*u->ext));
		if (!u->ext)
			return -ENOMEM;
		memcpy(u->ext, o->extents, o->n_extents * sizeof(*u->ext));
		u->n = o->n_extents;
	}
	c->n++;
	return 0;
}

static int ext_cmp(const void *a, const void *b)
{
	const struct extent *x = a, *y = b;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Emits one object: ext (sorted here) coalesced; where a DATA and a ZERO
 * extent overlap the merged range is DATA (the reader sends zero blocks
 * of it as ZERO records anyway). */
static int emit_merged(uint64_t objno, struct extent *ext, size_t n, bool all_zero,
                       diff_cb cb, void *ctx)
{
	qsort(ext, n, sizeof(*ext), ext_cmp);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (k && ext[i].offset <= ext[k - 1].offset + ext[k - 1].length) {
			struct extent *l = &ext[k - 1];
			uint64_t end = MAX(l->offset + l->length, ext[i].offset + ext[i].length);
			if (l->kind != ext[i].kind)
				l->kind = EXTENT_DATA;
			l->length = end - l->offset;
		} else {
			ext[k++] = ext[i];
		}
	}
	struct diff_object d = { .objno = objno, .extents = ext, .n_extents = k,
	                         .all_zero = all_zero };
	return cb(ctx, &d);
}

/* Like vol_diff(base, target), with the extents of extra (objno = offset,
 * hash = length, sorted by offset) added as DATA: every block either side
 * changed since the common snapshot. */
int diff_union(struct vol *v, uint64_t object_size, const char *base,
                      const char *target, const struct wire_digest *extra, size_t n_extra,
                      diff_cb cb, void *ctx)
{
	struct ucollect c = { 0 };
	int rc = vol_diff(v, base[0] ? base : NULL, target, collect_cb, &c);
	size_t i = 0, xi = 0;
	uint64_t xoff = n_extra ? extra[0].objno : 0; /* progress inside extra[xi] */
	struct extent *tmp = NULL;
	size_t tcap = 0;
	while (rc == 0 && (i < c.n || xi < n_extra)) {
		uint64_t xobj = xi < n_extra ? xoff / object_size : UINT64_MAX;
		uint64_t dobj = i < c.n ? c.o[i].objno : UINT64_MAX;
		uint64_t obj = MIN(xobj, dobj);
		size_t tn = 0;
		if (dobj == obj) {
			if (tcap < c.o[i].n + 16) {
				tcap = c.o[i].n + 16;
				struct extent *nt = realloc(tmp, tcap * sizeof(*nt));
				if (!nt) {
					rc = -ENOMEM;
					break;
				}
				tmp = nt;
			}
			memcpy(tmp, c.o[i].ext, c.o[i].n * sizeof(*tmp));
			tn = c.o[i].n;
		}
		uint64_t oend = (obj + 1) * object_size;
		while (xi < n_extra && xoff / object_size == obj) {
			uint64_t xend = extra[xi].objno + extra[xi].hash;
			if (xend <= xoff) { /* covered by the previous one */
				if (++xi < n_extra)
					xoff = MAX(extra[xi].objno, xoff);
				continue;
			}
			uint64_t e = MIN(xend, oend);
			if (tn == tcap) {
				tcap = tcap ? 2 * tcap : 16;
				struct extent *nt = realloc(tmp, tcap * sizeof(*nt));
				if (!nt) {
					rc = -ENOMEM;
					break;
				}
				tmp = nt;
			}
			tmp[tn++] = (struct extent){ .offset = xoff, .length = e - xoff,
			                             .kind = EXTENT_DATA };
			xoff = e;
			if (xoff >= xend && ++xi < n_extra)
				xoff = MAX(extra[xi].objno, xoff);
		}
		if (rc == 0)
			rc = emit_merged(obj, tmp, tn, dobj == obj && c.o[i].all_zero, cb, ctx);
		if (dobj == obj)
			i++;
	}
	free(tmp);
	for (size_t k = 0; k < c.n; k++)
		free(c.o[k].ext);
	free(c.o);
	return rc;
}

/* The increment of this cycle: the diff, plus a resync's extents. */
static int increment(struct pipe *pp, struct vol *v, const char *base, const char *target,
                     diff_cb cb, void *ctx)
{
	if (pp->extra)
		return diff_union(v, pp->vi.object_size, base, target, pp->extra, pp->n_extra,
		                  cb, ctx);
	return vol_diff(v, base[0] ? base : NULL, target, cb, ctx);
}

/* Streams the increment; 0 when every object was sent. */
static int stream(struct pipe *pp, const char *base, unsigned readers)
{
	struct reader rd[8];
	memset(rd, 0, sizeof(rd));
	pthread_t sender;
	unsigned started = 0;
	int rc = 0;
	for (unsigned i = 0; i < readers; i++) {
		rd[i].pp = pp;
		rd[i].buf = malloc(pp->chunk);
		if (pp->compress) {
			rd[i].zcap = ZSTD_compressBound(pp->chunk);
			rd[i].zbuf = malloc(rd[i].zcap);
			rd[i].zc = ZSTD_createCCtx();
		}
		if (!rd[i].buf || (pp->compress && (!rd[i].zbuf || !rd[i].zc))) {
			rc = -ENOMEM;
			break;
		}
		if (pthread_create(&rd[i].th, NULL, reader_main, &rd[i]) != 0) {
			rc = -EAGAIN;
			break;
		}
		started++;
	}
	bool sender_up = false;
	if (rc == 0) {
		if (pthread_create(&sender, NULL, sender_main, pp) == 0)
			sender_up = true;
		else
			rc = -EAGAIN;
	}
	if (rc == 0) {
		rc = increment(pp, pp->v, base, pp->snap, enum_cb, pp);
		if (rc < 0 && rc != -ECANCELED)
			pipe_fail(pp, rc, "diff of %s: %s", pp->p->rec.name, strerror(-rc));
	} else {
		pipe_fail(pp, rc, "cannot start the transfer threads: %s", strerror(-rc));
	}
	pthread_mutex_lock(&pp->mu);
	pp->enum_done = true;
	pthread_cond_broadcast(&pp->cv);
	pthread_mutex_unlock(&pp->mu);
	if (sender_up)
		pthread_join(sender, NULL);
	for (unsigned i = 0; i < started; i++)
		pthread_join(rd[i].th, NULL);
	for (unsigned i = 0; i < readers; i++) {
		free(rd[i].buf);
		free(rd[i].zbuf);
		ZSTD_freeCCtx(rd[i].zc);
	}
	while (pp->head) {
		struct job *j = pp->head;
		pp->head = j->next;
		job_free(NULL, j);
	}
	while (pp->n_spare)
		free(pp->spare[--pp->n_spare].buf);
	if (pp->failed)
		return pp->err < 0 ? pp->err : -EIO;
	if (pp->accounted != pp->enumerated) {
		/* Cannot happen by construction; checked because it is the
		 * invariant the whole design rests on. */
		pipe_fail(pp, -EIO, "internal: %" PRIu64 " objects enumerated, %" PRIu64
		          " sent", pp->enumerated, pp->accounted);
		return -EIO;
	}
	return 0;
}

static void set_error(struct pair *p, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void set_error(struct pair *p, const char *fmt, ...)
{
	pthread_mutex_lock(&p->r->mu);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->error, sizeof(p->error), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&p->r->mu);
}

/* Under mu: the cycle must stop (pause, split brain, rm, daemon stop). */
static bool cancelled(const struct pair *p)
{
	return p->r->stopping || p->removed || p->rec.phase == PH_PAUSED ||
	       p->rec.phase == PH_SPLIT_BRAIN || !pair_phase_primary(p->rec.phase);
}

/* Takes the cycle's snapshot unless an interrupted cycle left one, and
 * records it as the cycle in flight. */
static int cycle_snapshot(struct pair *p, struct vol *v)
{
	struct repl *r = p->r;
	char snap[REC_NAME_MAX + 1];
	pthread_mutex_lock(&r->mu);
	uint64_t cycle = p->rec.cur_cycle;
	if (cycle) {
		snprintf(snap, sizeof(snap), "%s", p->rec.cur_snap);
		pthread_mutex_unlock(&r->mu);
		struct snap_info si;
		if (vol_snap_get(v, snap, &si) == 0)
			return 0;
		/* The snapshot is gone (removed by hand, or a resync dropped a
		 * stale one).  The secondary may hold a checkpoint of its
		 * content, so the new one must not look like it: it gets the
		 * next cycle number and name. */
		pthread_mutex_lock(&r->mu);
		cycle = p->rec.cur_cycle + 1;
		log_warn("repl: pair %s: in-flight snapshot %s vanished; restarting as cycle %" PRIu64,
		         p->rec.name, snap, cycle);
	} else {
		cycle = p->rec.last_cycle + 1;
	}
	snap_name(p->rec.name, cycle, snap, sizeof(snap));
	uint64_t covered = p->sync_req;
	pthread_mutex_unlock(&r->mu);
	(void)vol_snap_delete(v, snap); /* a leftover never recorded as in flight */
	int rc = vol_snap_create(v, snap);
	pthread_mutex_lock(&r->mu);
	if (rc == 0) {
		struct pair_rec next = p->rec;
		next.cur_cycle = cycle;
		snprintf(next.cur_snap, sizeof(next.cur_snap), "%s", snap);
		next.cur_time = now_wall_s();
		char err[400];
		rc = pair_change(p, &next, NULL, err, sizeof(err));
		if (rc == 0) {
			p->cur_gen = covered;
			if (covered > p->sync_taken)
				p->sync_taken = covered;
		} else {
			snprintf(p->error, sizeof(p->error), "%s", err);
		}
	} else {
		snprintf(p->error, sizeof(p->error), "cannot snapshot %s: %s", p->rec.volume,
		         strerror(-rc));
	}
	pairs_unlock(r);
	return rc;
}

static unsigned hist_bucket(double s)
{
	unsigned b = 0;
	while (b < REPL_HIST_BUCKETS - 1 && s > repl_hist_bounds[b])
		b++;
	return b;
}

/* Records the commit: the new snapshot is the last synced one, and only
 * now is the previous one dropped. */
static int commit_local(struct pair *p, struct vol *v, const struct rec_stats *st,
                        uint64_t size)
{
	struct repl *r = p->r;
	char prev[REC_NAME_MAX + 1], last[REC_NAME_MAX + 1], err[400], why[64];
	pthread_mutex_lock(&r->mu);
	struct pair_rec next = p->rec;
	snprintf(prev, sizeof(prev), "%s", next.last_snap);
	next.last_cycle = next.cur_cycle;
	snprintf(next.last_snap, sizeof(next.last_snap), "%s", next.cur_snap);
	next.last_time = next.cur_time;
	next.cur_cycle = 0;
	next.cur_snap[0] = '\0';
	next.cur_time = 0;
	next.stats = *st;
	next.has_stats = true;
	bool resync = next.phase == PH_RESYNCING;
	if (resync) {
		/* Both sides hold the same snapshot again: the divergence is
		 * resolved (the old primary's is kept in its split-brain snapshot). */
		next.phase = PH_PRIMARY;
		next.common_snap[0] = '\0';
		next.sb_snap[0] = '\0';
		next.reason[0] = '\0';
		next.peer_epoch = 0;
	}
	snprintf(why, sizeof(why), "cycle %" PRIu64 " committed", st->number);
	/* The transfer is over whatever the record says: not "syncing" any
	 * more for whoever wakes on this commit. */
	p->running = false;
	int rc = pair_change(p, &next, resync ? "resync complete" : why, err, sizeof(err));
	if (rc < 0) {
		snprintf(p->error, sizeof(p->error), "%s", err);
		pairs_unlock(r);
		return rc;
	}
	if (resync) {
		free(p->extra);
		p->extra = NULL;
		p->n_extra = 0;
	}
	p->error[0] = '\0';
	p->failures = 0;
	p->peer_err[0] = '\0';
	p->last_success = now_wall_s();
	p->synced_size = size;
	pair_contact(p);
	p->counters.cycles_ok++;
	p->counters.data_bytes += st->data_bytes;
	p->counters.zero_bytes += st->zero_bytes;
	p->counters.wire_bytes += st->wire_bytes;
	p->counters.duration_hist[hist_bucket(st->seconds)]++;
	p->counters.duration_sum += st->seconds;
	if (p->cur_gen > p->sync_done)
		p->sync_done = p->cur_gen;
	(void)pair_change(p, NULL, why, NULL, 0);
	snprintf(last, sizeof(last), "%s", p->rec.last_snap);
	bool drop_prev = prev[0] && strcmp(prev, last) && !pair_snap_needed(p, prev) &&
	                 !pair_snap_retained(p, prev);
	pairs_unlock(r);
	if (drop_prev)
		(void)vol_snap_delete(v, prev);
	/* and whatever a crash between a commit and a deletion left */
	drop_pair_snaps(r, p, p->rec.volume, p->rec.name, last);
	log_msg(st->data_bytes || st->zero_bytes ? LOG_INFO : LOG_DEBUG, /* empty: debug */
	        "repl: pair %s: cycle %" PRIu64 " committed (%s)", p->rec.name, st->number, last);
	return 0;
}

bool send_idle(struct pair *p)
{
	struct repl *r = p->r;
	char volume[REC_NAME_MAX + 1], last[REC_NAME_MAX + 1];
	pthread_mutex_lock(&r->mu);
	const struct pair_rec *c = &p->rec;
	/* Only a pair at rest: synced, no cycle in flight (it must be
	 * finished), none failing (a committed cycle clears the error), no
	 * resync, and the size of the last cycle known (a resize travels
	 * with a cycle). */
	bool rest = c->phase == PH_PRIMARY && c->last_cycle && c->last_snap[0] &&
	            !c->cur_cycle && !p->failures && !p->n_extra && p->synced_size;
	uint64_t size = p->synced_size;
	snprintf(volume, sizeof(volume), "%s", c->volume);
	snprintf(last, sizeof(last), "%s", c->last_snap);
	pthread_mutex_unlock(&r->mu);
	struct vol *v;
	if (!rest || vol_open(r->store, volume, &v) < 0)
		return false;
	bool same = false;
	if (vol_head_unchanged(v, last, &same) < 0 || vol_size(v) != size)
		same = false;
	vol_close(v);
	return same;
}

/* A periodic cycle of a pair at rest: nothing to send, so no snapshot.
 * While the peer answers heartbeats and takes SYNCED, the cycle is only
 * noted (the primary's last sync time advances; the next heartbeat, at
 * most every 10 s, carries SYNCED to the secondary): no connection at
 * all.  Otherwise (the first time, after a failed heartbeat, or when a
 * heartbeat is due anyway) the heartbeat with SYNCED goes now, and a
 * failed one is a failed cycle (reason in p->error), as a cycle against
 * that peer would have been.  SEND_SKIPPED or SEND_SKIPPED_CHECKED; 0 =
 * run the cycle in full (something changed, a request, a peer that knows
 * no SYNCED); -errno = the heartbeat failed. */
static int skip_cycle(struct pair *p)
{
	struct repl *r = p->r;
	pthread_mutex_lock(&r->mu);
	uint64_t mono = now_mono_ns();
	bool want = mono >= p->synced_retry_ns && p->sync_req <= p->sync_taken;
	bool check = !p->peer_synced || p->peer_err[0] || mono >= p->next_probe_ns;
	uint64_t cycle = p->rec.last_cycle;
	pthread_mutex_unlock(&r->mu);
	uint64_t t = now_wall_s();
	if (!want || !send_idle(p))
		return 0;
	if (check) {
		char err[512];
		int rc = role_probe_idle(p, t, err, sizeof(err));
		if (rc == -ENOTSUP)
			return 0;
		if (rc < 0) {
			set_error(p, "%s", err);
			return rc;
		}
	}
	pthread_mutex_lock(&r->mu);
	p->counters.cycles_skipped++;
	if (!check && p->rec.last_cycle == cycle && p->asof_cycle == cycle) {
		/* The secondary confirmed this snapshot (SYNCED) and answered
		 * the last heartbeat: the copy is current as of t.  Should it
		 * be gone, the next heartbeat fails and the skips stop. */
		p->asof_wall = MAX(p->asof_wall, t);
		p->last_success = MAX(p->last_success, t);
	}
	pthread_mutex_unlock(&r->mu);
	return check ? SEND_SKIPPED_CHECKED : SEND_SKIPPED;
}

int send_cycle(struct pair *p)
{
	struct repl *r = p->r;
	struct vol *v;
	char volume[REC_NAME_MAX + 1];
	int rc = skip_cycle(p);
	if (rc)
		return rc;
	pthread_mutex_lock(&r->mu);
	snprintf(volume, sizeof(volume), "%s", p->rec.volume);
	pthread_mutex_unlock(&r->mu);
	rc = vol_open(r->store, volume, &v);
	if (rc < 0) {
		set_error(p, "cannot open volume %s: %s", volume, strerror(-rc));
		return rc;
	}
	struct pipe pp;
	memset(&pp, 0, sizeof(pp));
	pthread_mutex_init(&pp.mu, NULL);
	pthread_cond_init(&pp.cv, NULL);
	struct link *l = NULL;
	uint64_t t0 = now_mono_ns();

	/* The size after the snapshot: a resize since the last cycle travels
	 * with this one (CYCLE_BEGIN size). */
	rc = cycle_snapshot(p, v);
	if (rc == 0)
		rc = vol_info(v, &pp.vi);
	if (rc < 0)
		goto out;

	pthread_mutex_lock(&r->mu);
	char base[REC_NAME_MAX + 1], target[REC_NAME_MAX + 1], peer[WIRE_TEXT_MAX + 1];
	char remote[REC_NAME_MAX + 1], id[REC_NAME_MAX + 1];
	snprintf(base, sizeof(base), "%s", p->rec.last_snap);
	snprintf(target, sizeof(target), "%s", p->rec.cur_snap);
	snprintf(peer, sizeof(peer), "%s", p->rec.peer);
	snprintf(remote, sizeof(remote), "%s", p->rec.remote);
	snprintf(id, sizeof(id), "%s", p->rec.id);
	uint64_t cycle = p->rec.cur_cycle, ctime = p->rec.cur_time;
	pp.max_inflight = p->rec.max_inflight ? p->rec.max_inflight : REC_DEFAULT_INFLIGHT;
	pp.compress = p->rec.compress;
	bucket_set_rate(&p->bucket, p->rec.bandwidth);
	struct wire_digest *extra = NULL;
	bool resync = p->rec.phase == PH_RESYNCING;
	if (resync && p->n_extra) {
		/* A copy: a repeated `pair resync` may replace p->extra. */
		extra = malloc(p->n_extra * sizeof(*extra));
		if (extra) {
			memcpy(extra, p->extra, p->n_extra * sizeof(*extra));
			pp.extra = extra;
			pp.n_extra = p->n_extra;
		}
	}
	bool nomem = resync && p->n_extra && !extra;
	pthread_mutex_unlock(&r->mu);
	if (nomem) {
		rc = -ENOMEM;
		set_error(p, "out of memory");
		goto out;
	}

	/* Count first: the end of the transfer is defined by this count, and
	 * the progress total by these bytes. */
	struct counts c = { 0, 0 };
	rc = increment(&pp, v, base, target, count_cb, &c);
	if (rc < 0) {
		set_error(p, "diff of %s: %s", volume, strerror(-rc));
		goto out;
	}
	pthread_mutex_lock(&r->mu);
	p->running = true;
	p->done_bytes = 0;
	p->total_bytes = c.bytes;
	p->cycle_start_ns = now_mono_ns();
	(void)pair_change(p, NULL, NULL, NULL, 0);
	pthread_mutex_unlock(&r->mu);

	char err[512];
	bool reached = false;
	rc = pair_dial(p, &l, err, sizeof(err), &reached);
	if (rc < 0) {
		pthread_mutex_lock(&r->mu);
		p->unreached = !reached;
		pthread_mutex_unlock(&r->mu);
		set_error(p, "peer %s: %s", peer[0] ? peer : "(calls in)", err);
		goto out;
	}
	pthread_mutex_lock(&r->mu);
	bool cancel = cancelled(p);
	if (!cancel)
		p->active = l;
	pthread_mutex_unlock(&r->mu);
	if (cancel) {
		rc = -ECANCELED;
		goto out;
	}
	l->bucket = &p->bucket;
	rc = role_check(p, l, err, sizeof(err));
	if (rc < 0) {
		set_error(p, "%s", err);
		goto out;
	}

	struct wire_msg m = { .type = WIRE_CYCLE_BEGIN };
	snprintf(m.u.cycle_begin.volume, sizeof(m.u.cycle_begin.volume), "%s", remote);
	snprintf(m.u.cycle_begin.pair_id, sizeof(m.u.cycle_begin.pair_id), "%s", id);
	snprintf(m.u.cycle_begin.base, sizeof(m.u.cycle_begin.base), "%s", base);
	snprintf(m.u.cycle_begin.target, sizeof(m.u.cycle_begin.target), "%s", target);
	m.u.cycle_begin.cycle = cycle;
	m.u.cycle_begin.objects = c.objects;
	m.u.cycle_begin.bytes = c.bytes;
	m.u.cycle_begin.time = ctime;
	m.u.cycle_begin.size = pp.vi.size;
	rc = link_send(l, &m);
	if (rc == 0)
		rc = link_expect(l, WIRE_CYCLE_READY, &m, 0);
	if (rc < 0) {
		set_error(p, "peer %s: %s", peer, l->err);
		goto out;
	}
	struct rec_stats st = { .number = cycle };
	if (m.u.cycle_ready.status == WIRE_READY_COMMITTED) {
		/* We crashed or lost the link after the secondary committed. */
		st.seconds = (double)(now_mono_ns() - t0) / 1e9;
		rc = commit_local(p, v, &st, pp.vi.size);
		goto out;
	}
	if (m.u.cycle_ready.cycle != cycle ||
	    (m.u.cycle_ready.status == WIRE_READY_RESUME &&
	     m.u.cycle_ready.resume_objno > pp.vi.objects)) {
		rc = -EPROTO;
		set_error(p, "peer %s offered an invalid resume point (cycle %" PRIu64
		          ", object %" PRIu64 " of %" PRIu64 ")", peer, m.u.cycle_ready.cycle,
		          m.u.cycle_ready.resume_objno, pp.vi.objects);
		link_send_error(l, rc, "invalid resume point");
		goto out;
	}
	if (m.u.cycle_ready.status == WIRE_READY_RESUME) {
		pp.skip_below = m.u.cycle_ready.resume_objno;
		log_info("repl: pair %s: cycle %" PRIu64 " resumes at object %" PRIu64,
		         p->rec.name, cycle, pp.skip_below);
	}

	pp.p = p;
	pp.v = v;
	pp.snap = target;
	pp.l = l;
	pp.chunk = MIN(bucket_chunk(&p->bucket), (size_t)pp.vi.object_size);
	pp.max_bytes = MAX(REPL_WINDOW_BYTES, (uint64_t)pp.vi.object_size);
	unsigned readers = MIN(pp.max_inflight, 4u);
	rc = stream(&pp, base, readers);
	if (rc < 0) {
		set_error(p, "cycle %" PRIu64 ": %s", cycle, pp.errmsg);
		goto out;
	}
	pthread_mutex_lock(&r->mu);
	p->done_bytes += pp.skipped_bytes;
	pthread_mutex_unlock(&r->mu);

	pthread_mutex_lock(&r->mu);
	p->ending = true;
	pthread_mutex_unlock(&r->mu);
	m = (struct wire_msg){ .type = WIRE_CYCLE_END };
	m.u.cycle_end.cycle = cycle;
	m.u.cycle_end.objects = c.objects;
	rc = link_send(l, &m);
	if (rc == 0)
		rc = link_expect(l, WIRE_CYCLE_COMMITTED, &m, 0);
	if (rc == 0 && (m.u.committed.cycle != cycle || strcmp(m.u.committed.snap, target))) {
		rc = -EPROTO;
		snprintf(l->err, sizeof(l->err), "commit acknowledged for another cycle");
	}
	if (rc < 0) {
		set_error(p, "peer %s: commit of cycle %" PRIu64 ": %s", peer, cycle, l->err);
		goto out;
	}
	st.extents = pp.extents;
	st.data_bytes = pp.data_bytes;
	st.zero_bytes = pp.zero_bytes;
	st.wire_bytes = l->tx_bytes + l->rx_bytes;
	st.seconds = (double)(now_mono_ns() - t0) / 1e9;
	rc = commit_local(p, v, &st, pp.vi.size);
out:
	if (l) {
		pthread_mutex_lock(&r->mu);
		p->active = NULL;
		p->ending = false;
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
		link_close(l);
	}
	free((void *)pp.extra);
	pthread_mutex_destroy(&pp.mu);
	pthread_cond_destroy(&pp.cv);
	vol_close(v);
	return rc;
}
