/* repl engine, secondary side: serves one authenticated connection.
 *
 * A cycle is applied to the head of the secondary volume; the last synced
 * snapshot is never written.  Progress is made durable in a checkpoint
 * (POOL/pairs/NAME.ckpt: cycle, base, target, next object, objects done),
 * written only after vol_flush() so that every object before `next` is on
 * disk.  The commit is: flush, snapshot `target`, record it as last synced
 * (pair_change: atomic file replace), drop the checkpoint and the previous
 * snapshot, then acknowledge.
 *
 * Receiving never waits for a checkpoint: a flush thread per cycle makes
 * the data durable and then writes the checkpoint, while this thread goes
 * on reading and applying (vol_flush syncs without blocking writers).  The
 * checkpoint it writes names only objects finished before its flush
 * began, so "every object before next is durable" still holds.  Memory is
 * bounded without a queue: at most one checkpoint is in flight (one due
 * meanwhile is taken at the first object end after it), and the applied
 * data waits in the page cache, whose dirty limit throttles the writes.
 */
#include "repl/engine.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "common/common.h"

/* A checkpoint (flush + atomic file replace) after this much applied data,
 * this many objects, or this much time, whichever comes first: what a
 * resume resends is bounded by these.  The object count only matters for
 * objects with little changed data (scattered small writes): there each
 * checkpoint costs an fsync and a rename for a few KiB, so it is high. */
#define CKPT_EVERY_BYTES (16ull << 20)
#define CKPT_EVERY_OBJECTS 1024
#define CKPT_EVERY_NS 1000000000ull

static bool secondary_phase(enum pair_phase ph)
{
	return ph == PH_SECONDARY || ph == PH_PEER_DEMOTED || ph == PH_NEEDS_RESYNC;
}

/* Finds the secondary pair of volume with pair id; takes a reference and
 * counts the request as contact with the primary.  Reports the reason to
 * the peer when there is none. */
static struct pair *find_secondary(struct repl *r, struct link *l, const char *volume,
                                   const char *id)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_find(r, volume);
	if (p && secondary_phase(p->rec.phase) && !strcmp(p->rec.id, id)) {
		pair_get(p);
		pair_contact(p);
		(void)pair_change(p, NULL, "the primary is back", NULL, 0);
		pthread_mutex_unlock(&r->mu);
		return p;
	}
	bool primary = p && !secondary_phase(p->rec.phase);
	pthread_mutex_unlock(&r->mu);
	if (!p)
		link_send_error(l, ENOENT, "no pair for volume %s on this site", volume);
	else if (primary)
		link_send_error(l, EBUSY, "volume %s is a primary on this site", volume);
	else
		link_send_error(l, ESTALE, "volume %s belongs to another pair", volume);
	log_warn("repl: %s asked for pair volume %s: refused", l->peer, volume);
	return NULL;
}

static void put_pair(struct repl *r, struct pair *p)
{
	pthread_mutex_lock(&r->mu);
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
}

static void send_info(struct link *l, uint64_t cycle, uint64_t time, const char *snap)
{
	struct wire_msg m = { .type = WIRE_PAIR_INFO };
	m.u.pair_info.last_cycle = cycle;
	m.u.pair_info.last_time = time;
	snprintf(m.u.pair_info.last_snap, sizeof(m.u.pair_info.last_snap), "%s", snap);
	(void)link_send(l, &m);
}

static int first_change(void *ctx, const struct diff_object *o)
{
	(void)ctx;
	(void)o;
	return 1;
}

/* Whether the head of v was written after snapshot snap. */
static int head_changed(struct vol *v, const char *snap, bool *changed)
{
	int rc = vol_diff(v, snap, NULL, first_change, NULL);
	*changed = rc == 1;
	return rc < 0 ? rc : 0;
}

static int handle_open(struct repl *r, struct link *l, const struct wire_msg *m)
{
	const char *volume = m->u.pair_open.volume;
	bool force = m->u.pair_open.flags & WIRE_OPEN_FORCE;
	bool want_base = m->u.pair_open.flags & WIRE_OPEN_BASE;
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_find(r, volume);
	if (p && secondary_phase(p->rec.phase) && !strcmp(p->rec.id, m->u.pair_open.pair_id)) {
		/* The primary retries a create that we already did. */
		send_info(l, p->rec.last_cycle, p->rec.last_time, p->rec.last_snap);
		pair_contact(p);
		pthread_mutex_unlock(&r->mu);
		return 0;
	}
	bool primary = p && !secondary_phase(p->rec.phase);
	pthread_mutex_unlock(&r->mu);
	if (p && (primary || !force)) {
		link_send_error(l, EEXIST, "volume %s is already in a pair on %s", volume,
		                r->site[0] ? r->site : "the secondary");
		return 0;
	}
	char why[300];
	if (r->may_pair && r->may_pair(r->ro_ctx, volume, why, sizeof(why)) < 0) {
		link_send_error(l, EPERM, "%s", why);
		return 0;
	}
	if (p) {
		/* --force replaces an old pairing */
		struct repl_removed res;
		struct repl_err e;
		(void)pair_remove_local(r, volume, l, &res, &e);
	}
	struct vol_params vp = { .size = m->u.pair_open.size,
	                         .object_size = m->u.pair_open.object_size,
	                         .block_size = m->u.pair_open.block_size };
	struct vol *v;
	int rc;
	bool existed = store_vol_exists(r->store, volume);
	if (!existed) {
		if (!(m->u.pair_open.flags & WIRE_OPEN_CREATE)) {
			link_send_error(l, ENOENT, "no volume %s", volume);
			return 0;
		}
		rc = store_vol_create(r->store, volume, &vp);
		if (rc < 0) {
			link_send_error(l, -rc, "cannot create volume %s: %s", volume, strerror(-rc));
			return 0;
		}
		log_info("repl: created secondary volume %s for %s", volume, l->peer);
	}
	rc = vol_open(r->store, volume, &v);
	if (rc < 0) {
		link_send_error(l, -rc, "cannot open volume %s: %s", volume, strerror(-rc));
		return 0;
	}
	struct vol_info vi;
	rc = vol_info(v, &vi);
	if (rc == 0 && (vi.size != vp.size || vi.object_size != vp.object_size ||
	                (vp.block_size && vi.block_size != vp.block_size))) {
		link_send_error(l, EINVAL, "volume %s exists with another geometry (size %" PRIu64
		                ", object %u, block %u)", volume, vi.size, vi.object_size,
		                vi.block_size);
		goto out;
	}
	/* Re-pairing: both sides kept the last synced snapshot of the pair
	 * that was removed; the new pair starts from it. */
	struct pair_base base;
	struct snap_info si;
	bool incremental = false;
	if (rc == 0 && existed && want_base && base_load(r, volume, &base) == 0 &&
	    !strcmp(base.pair_id, m->u.pair_open.base_id) &&
	    !strcmp(base.snap, m->u.pair_open.base_snap) &&
	    base.cycle == m->u.pair_open.base_cycle && vol_snap_get(v, base.snap, &si) == 0) {
		bool changed = false;
		rc = head_changed(v, base.snap, &changed);
		if (rc == 0 && changed && !force) {
			link_send_error(l, ENOTEMPTY, "secondary volume %s was written after the pair "
			                "was removed (since %s); --force discards those writes",
			                volume, base.snap);
			goto out;
		}
		if (rc == 0 && changed)
			rc = vol_rollback(v, base.snap);
		incremental = rc == 0;
	}
	if (rc == 0 && !incremental && (vi.allocated_bytes || vi.snapshots) && !force) {
		link_send_error(l, ENOTEMPTY, "secondary volume %s exists and is not empty "
		                "(use --force to overwrite it)", volume);
		goto out;
	}
	if (rc == 0 && !incremental && vi.allocated_bytes && force)
		rc = vol_write_zeroes(v, 0, vi.size); /* the initial sync assumes zeros */
	const char *seed = m->u.pair_open.snap;
	if (rc == 0 && !incremental) {
		(void)vol_snap_delete(v, seed);
		rc = vol_snap_create(v, seed);
	}
	if (rc < 0) {
		link_send_error(l, -rc, "cannot prepare volume %s: %s", volume, strerror(-rc));
		goto out;
	}
	struct pair *np = pair_alloc(r);
	if (!np) {
		link_send_error(l, ENOMEM, "out of memory");
		goto out;
	}
	struct pair_rec *c = &np->rec;
	c->phase = PH_SECONDARY;
	snprintf(c->name, sizeof(c->name), "%s", volume);
	snprintf(c->volume, sizeof(c->volume), "%s", volume);
	snprintf(c->id, sizeof(c->id), "%s", m->u.pair_open.pair_id);
	rec_text(c->peer, sizeof(c->peer), m->u.pair_open.origin[0] &&
	         strcmp(m->u.pair_open.origin, "?") ? m->u.pair_open.origin : l->peer);
	snprintf(c->remote, sizeof(c->remote), "%s", m->u.pair_open.pair);
	c->created = now_wall_s();
	if (incremental) {
		c->last_cycle = base.cycle;
		snprintf(c->last_snap, sizeof(c->last_snap), "%s", base.snap);
		c->last_time = base.time;
	} else {
		snprintf(c->seed_snap, sizeof(c->seed_snap), "%s", seed);
	}
	ckpt_remove(r, volume);
	pthread_mutex_lock(&r->mu);
	if (pair_find(r, volume)) {
		pthread_mutex_unlock(&r->mu);
		pair_put(np);
		link_send_error(l, EEXIST, "volume %s is already in a pair", volume);
		goto out;
	}
	char err[400];
	rc = pair_add(r, np, err, sizeof(err));
	if (rc == 0) {
		pair_contact(np);
		send_info(l, c->last_cycle, c->last_time, c->last_snap);
		log_info("repl: pair %s: secondary of %s (%s)%s%s", volume, c->peer, c->remote,
		         incremental ? ", starting from the kept snapshot " : "",
		         incremental ? c->last_snap : "");
	} else {
		link_send_error(l, -rc, "%s", err);
		pair_put(np);
	}
	pairs_unlock(r);
	if (rc == 0)
		base_remove(r, volume); /* used, or superseded by the new pair */
out:
	vol_close(v);
	return 0;
}

/* Becomes the one connection applying to p (a stale one is aborted). */
static int claim(struct repl *r, struct pair *p, struct link *l)
{
	pthread_mutex_lock(&r->mu);
	uint64_t until = now_mono_ns() + 10000000000ull;
	while (p->active && now_mono_ns() < until && !p->removed && !r->stopping) {
		link_abort(p->active);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 50000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&r->cv, &r->mu, &ts);
	}
	int rc = 0;
	if (p->active || p->removed || r->stopping)
		rc = -EBUSY;
	else
		p->active = l;
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static void release(struct repl *r, struct pair *p, struct link *l)
{
	pthread_mutex_lock(&r->mu);
	if (p->active == l)
		p->active = NULL;
	p->running = false;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* The checkpoint thread of one cycle (see the top of the file). */
struct flusher {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool started, busy, stop;
	int err;                  /* first failure, reported by the receiver */
	struct ckpt ck;           /* the checkpoint to write after the flush */
	struct repl *r;
	struct vol *v;
	char name[REC_NAME_MAX + 1];
	uint64_t flushes;
};

static void *flusher_main(void *arg)
{
	struct flusher *f = arg;
	pthread_mutex_lock(&f->mu);
	for (;;) {
		while (!f->busy && !f->stop)
			pthread_cond_wait(&f->cv, &f->mu);
		if (!f->busy)
			break;
		struct ckpt ck = f->ck;
		pthread_mutex_unlock(&f->mu);
		int rc = vol_flush(f->v);
		crash_point("apply-flushed");
		if (rc == 0)
			rc = ckpt_save(f->r, f->name, &ck);
		if (rc == 0)
			crash_point("apply-ckpt-saved");
		pthread_mutex_lock(&f->mu);
		if (rc < 0 && !f->err)
			f->err = rc;
		f->busy = false;
		f->flushes++;
		pthread_cond_broadcast(&f->cv);
	}
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

static int flusher_start(struct flusher *f, struct repl *r, struct vol *v, const char *name)
{
	f->r = r;
	f->v = v;
	snprintf(f->name, sizeof(f->name), "%s", name);
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	int rc = -pthread_create(&f->th, NULL, flusher_main, f);
	if (rc == 0)
		f->started = true;
	else {
		pthread_cond_destroy(&f->cv);
		pthread_mutex_destroy(&f->mu);
	}
	return rc;
}

/* Waits until no checkpoint is in flight; its error, or 0. */
static int flusher_idle(struct flusher *f)
{
	if (!f->started)
		return 0;
	pthread_mutex_lock(&f->mu);
	while (f->busy)
		pthread_cond_wait(&f->cv, &f->mu);
	int rc = f->err;
	pthread_mutex_unlock(&f->mu);
	return rc;
}

/* Hands ck to the thread unless one is in flight: 1 handed, 0 busy (try
 * again later), or the error of an earlier checkpoint. */
static int flusher_offer(struct flusher *f, const struct ckpt *ck)
{
	pthread_mutex_lock(&f->mu);
	int rc = f->err;
	if (rc == 0 && !f->busy) {
		f->ck = *ck;
		f->busy = true;
		pthread_cond_broadcast(&f->cv);
		rc = 1;
	}
	pthread_mutex_unlock(&f->mu);
	return rc;
}

/* Lets a checkpoint in flight finish (it is valid: its data was flushed
 * first), then ends the thread. */
static void flusher_stop(struct flusher *f)
{
	if (!f->started)
		return;
	pthread_mutex_lock(&f->mu);
	f->stop = true;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	pthread_join(f->th, NULL);
	pthread_cond_destroy(&f->cv);
	pthread_mutex_destroy(&f->mu);
	f->started = false;
}

struct apply {
	struct repl *r;
	struct pair *p;
	struct link *l;
	struct vol *v;
	struct vol_info vi;
	struct ckpt ck;
	struct flusher fl;
	uint64_t cur_obj;         /* object receiving records, UINT64_MAX none */
	uint64_t min_obj;         /* next object must be >= this */
	uint8_t *zbuf;
	ZSTD_DCtx *zd;
	uint64_t last_ckpt_ns;
	unsigned since_ckpt;
	uint64_t bytes_since_ckpt;
	uint64_t records, data_bytes, zero_bytes; /* this connection's, for status */
	char drop[STORE_NAME_MAX + 1];  /* snapshot to delete after the ack */
	bool dropping;
	char err[512];
};

/* A record must lie inside its object, which must come in order and not
 * before the resume point: nothing is applied twice out of order or
 * outside the volume. */
static int check_range(struct apply *a, uint64_t objno, uint64_t off, uint64_t len)
{
	uint64_t osz = a->vi.object_size;
	if (objno >= a->vi.objects || off / osz != objno || len > a->vi.size ||
	    off > a->vi.size - len || (off + len - 1) / osz != objno) {
		snprintf(a->err, sizeof(a->err), "record outside object %" PRIu64 " (offset %"
		         PRIu64 ", length %" PRIu64 ")", objno, off, len);
		return -EPROTO;
	}
	if (objno != a->cur_obj) {
		if (objno < a->min_obj) {
			snprintf(a->err, sizeof(a->err), "object %" PRIu64 " out of order", objno);
			return -EPROTO;
		}
		a->cur_obj = objno;
	}
	return 0;
}

static int apply_record(struct apply *a, const struct wire_msg *m)
{
	int rc;
	switch (m->type) {
	case WIRE_DATA: {
		rc = check_range(a, m->u.data.objno, m->u.data.offset, m->u.data.raw_len);
		if (rc < 0)
			return rc;
		const void *src = m->u.data.data;
		if (m->u.data.codec == WIRE_CODEC_ZSTD) {
			size_t n = ZSTD_decompressDCtx(a->zd, a->zbuf, WIRE_DATA_MAX,
			                               m->u.data.data, m->u.data.data_len);
			if (ZSTD_isError(n) || n != m->u.data.raw_len) {
				snprintf(a->err, sizeof(a->err), "bad zstd data for object %" PRIu64,
				         m->u.data.objno);
				return -EPROTO;
			}
			src = a->zbuf;
		}
		rc = vol_write(a->v, src, m->u.data.offset, m->u.data.raw_len);
		a->bytes_since_ckpt += m->u.data.raw_len;
		a->records++;
		a->data_bytes += m->u.data.raw_len;
		if (rc < 0)
			snprintf(a->err, sizeof(a->err), "cannot write volume %s: %s", a->p->rec.volume,
			         strerror(-rc));
		else {
			pthread_mutex_lock(&a->r->mu);
			a->p->done_bytes += m->u.data.raw_len;
			pthread_mutex_unlock(&a->r->mu);
		}
		return rc;
	}
	case WIRE_ZERO:
		rc = check_range(a, m->u.zero.objno, m->u.zero.offset, m->u.zero.length);
		if (rc < 0)
			return rc;
		rc = vol_write_zeroes(a->v, m->u.zero.offset, m->u.zero.length);
		a->records++;
		a->zero_bytes += m->u.zero.length;
		if (rc < 0)
			snprintf(a->err, sizeof(a->err), "cannot zero volume %s: %s", a->p->rec.volume,
			         strerror(-rc));
		else {
			pthread_mutex_lock(&a->r->mu);
			a->p->done_bytes += m->u.zero.length;
			pthread_mutex_unlock(&a->r->mu);
		}
		return rc;
	case WIRE_OBJ_DONE: {
		uint64_t o = m->u.obj_done.objno;
		if (o >= a->vi.objects || (o != a->cur_obj && o < a->min_obj)) {
			snprintf(a->err, sizeof(a->err), "object %" PRIu64 " done out of order", o);
			return -EPROTO;
		}
		a->min_obj = o + 1;
		a->cur_obj = UINT64_MAX;
		a->ck.done_objects++;
		a->ck.next_objno = o + 1;
		a->since_ckpt++;
		uint64_t now = now_mono_ns();
		if (a->since_ckpt >= CKPT_EVERY_OBJECTS || a->bytes_since_ckpt >= CKPT_EVERY_BYTES ||
		    now - a->last_ckpt_ns >= CKPT_EVERY_NS) {
			/* The thread flushes first: the checkpoint promises that
			 * every object before next_objno is durable.  Busy with the
			 * previous one: this one is taken at a later object end. */
			rc = flusher_offer(&a->fl, &a->ck);
			if (rc < 0) {
				snprintf(a->err, sizeof(a->err), "cannot checkpoint %s: %s", a->p->rec.volume,
				         strerror(-rc));
				return rc;
			}
			if (rc == 1) {
				a->since_ckpt = 0;
				a->bytes_since_ckpt = 0;
				a->last_ckpt_ns = now;
			}
		}
		return 0;
	}
	default:
		snprintf(a->err, sizeof(a->err), "unexpected %s in a cycle", wire_type_name(m->type));
		return -EPROTO;
	}
}

static unsigned hist_bucket(double s)
{
	unsigned b = 0;
	while (b < REPL_HIST_BUCKETS - 1 && s > repl_hist_bounds[b])
		b++;
	return b;
}

static int commit(struct apply *a, const struct wire_msg *begin)
{
	struct pair *p = a->p;
	const char *target = begin->u.cycle_begin.target;
	int rc = vol_flush(a->v);
	if (rc == 0) {
		/* A crash after the snapshot and before the record leaves it
		 * behind; the head is complete again, so it is taken anew. */
		(void)vol_snap_delete(a->v, target);
		rc = vol_snap_create(a->v, target);
	}
	if (rc < 0) {
		snprintf(a->err, sizeof(a->err), "cannot commit %s@%s: %s", p->rec.volume, target,
		         strerror(-rc));
		return rc;
	}
	char prev[STORE_NAME_MAX + 1], err[400], why[64];
	pthread_mutex_lock(&a->r->mu);
	struct pair_rec next = p->rec;
	snprintf(prev, sizeof(prev), "%s", next.last_cycle ? next.last_snap : next.seed_snap);
	next.last_cycle = begin->u.cycle_begin.cycle;
	snprintf(next.last_snap, sizeof(next.last_snap), "%s", target);
	next.last_time = begin->u.cycle_begin.time;
	/* On this side "extents" counts the records applied (an extent larger
	 * than a frame comes as several) over the last connection only. */
	struct rec_stats st = { .number = next.last_cycle,
	                        .extents = a->records,
	                        .data_bytes = a->data_bytes,
	                        .zero_bytes = a->zero_bytes,
	                        .wire_bytes = a->l->rx_bytes + a->l->tx_bytes,
	                        .seconds = (double)(now_mono_ns() - p->cycle_start_ns) / 1e9 };
	next.stats = st;
	next.has_stats = true;
	/* A commit after a split brain ends it: this side now holds the new
	 * primary's content (its own divergence stays in its split-brain
	 * snapshot, which is the operator's now). */
	bool resynced = next.phase == PH_NEEDS_RESYNC;
	if (resynced)
		next.phase = PH_SECONDARY;
	next.common_snap[0] = '\0';
	next.sb_snap[0] = '\0';
	next.reason[0] = '\0';
	snprintf(why, sizeof(why), "cycle %" PRIu64 " committed", next.last_cycle);
	p->running = false; /* the transfer is over whatever the record says */
	rc = pair_change(p, &next, resynced ? "resynced from the new primary" : why, err,
	                 sizeof(err));
	if (rc == 0) {
		p->failures = 0;
		p->error[0] = '\0';
		p->last_success = now_wall_s();
		p->counters.cycles_ok++;
		p->counters.data_bytes += st.data_bytes;
		p->counters.zero_bytes += st.zero_bytes;
		p->counters.wire_bytes += st.wire_bytes;
		p->counters.duration_hist[hist_bucket(st.seconds)]++;
		p->counters.duration_sum += st.seconds;
		(void)pair_change(p, NULL, why, NULL, 0);
	}
	pairs_unlock(a->r);
	if (rc < 0) {
		snprintf(a->err, sizeof(a->err), "cannot record the commit: %s", err);
		return rc;
	}
	ckpt_remove(a->r, p->rec.name);
	/* The previous snapshot is dropped after the acknowledgement (see
	 * handle_cycle): deleting it merges layers, which can take long and
	 * is not part of the commit. */
	a->dropping = strcmp(prev, target) != 0;
	log_msg(a->data_bytes || a->zero_bytes ? LOG_INFO : LOG_DEBUG, /* empty: debug */
	        "repl: pair %s: cycle %" PRIu64 " committed as %s", p->rec.name,
	        begin->u.cycle_begin.cycle, target);
	return 0;
}

/* After an error the peer may still be writing: tell it, stop writing,
 * and drain briefly so that our ERROR is not lost to a reset. */
static void refuse_and_drain(struct link *l, int rc, const char *msg)
{
	link_send_error(l, rc, "%s", msg);
	shutdown(l->fd, SHUT_WR);
	uint64_t until = now_mono_ns() + 1000000000ull;
	struct wire_msg m;
	while (now_mono_ns() < until && link_recv(l, &m, 200) == 0)
		;
}

/* Returns < 0 when the connection must end. */
static int handle_cycle(struct repl *r, struct link *l, const struct wire_msg *begin_in)
{
	struct wire_msg begin = *begin_in;
	const struct wire_msg *b = &begin;
	struct pair *p = find_secondary(r, l, b->u.cycle_begin.volume, b->u.cycle_begin.pair_id);
	if (!p)
		return -ENOENT;
	struct apply a;
	memset(&a, 0, sizeof(a));
	a.r = r;
	a.p = p;
	a.l = l;
	a.cur_obj = UINT64_MAX;
	int rc = claim(r, p, l);
	if (rc < 0) {
		link_send_error(l, EBUSY, "pair %s is busy", p->rec.name);
		put_pair(r, p);
		return rc;
	}
	pthread_mutex_lock(&r->mu);
	char name[REC_NAME_MAX + 1], volume[REC_NAME_MAX + 1], remote[REC_NAME_MAX + 1];
	snprintf(name, sizeof(name), "%s", p->rec.name);
	snprintf(volume, sizeof(volume), "%s", p->rec.volume);
	snprintf(remote, sizeof(remote), "%s", p->rec.remote);
	bool done = p->rec.last_cycle == b->u.cycle_begin.cycle &&
	            !strcmp(p->rec.last_snap, b->u.cycle_begin.target);
	char expect[STORE_NAME_MAX + 1], seed[STORE_NAME_MAX + 1];
	snprintf(expect, sizeof(expect), "%s", p->rec.last_cycle ? p->rec.last_snap : "");
	snprintf(seed, sizeof(seed), "%s", p->rec.seed_snap);
	pthread_mutex_unlock(&r->mu);
	rc = vol_open(r->store, volume, &a.v);
	if (rc < 0) {
		snprintf(a.err, sizeof(a.err), "cannot open volume %s: %s", volume, strerror(-rc));
		goto fail;
	}
	rc = vol_info(a.v, &a.vi);
	if (rc < 0)
		goto fail;

	struct wire_msg m = { .type = WIRE_CYCLE_READY };
	m.u.cycle_ready.cycle = b->u.cycle_begin.cycle;
	if (done) {
		m.u.cycle_ready.status = WIRE_READY_COMMITTED;
		rc = link_send(l, &m);
		goto out;
	}
	if (strcmp(expect, b->u.cycle_begin.base)) {
		rc = -ESTALE;
		snprintf(a.err, sizeof(a.err), "cycle base '%.64s' is not this side's last synced "
		         "snapshot '%s'", b->u.cycle_begin.base, expect[0] ? expect : "(none)");
		goto fail;
	}
	/* The primary's volume grew (`ferry volume resize`): this side grows
	 * before applying, so that the records past the old end fit.  Never
	 * smaller: a paired volume is not shrunk. */
	uint64_t want = b->u.cycle_begin.size;
	if (want && want != a.vi.size) {
		if (want < a.vi.size) {
			rc = -EINVAL;
			snprintf(a.err, sizeof(a.err), "the primary volume (%" PRIu64 " bytes) is "
			         "smaller than this secondary (%" PRIu64 " bytes)", want, a.vi.size);
			goto fail;
		}
		rc = vol_resize(a.v, want);
		if (rc == 0)
			rc = vol_info(a.v, &a.vi);
		if (rc < 0) {
			snprintf(a.err, sizeof(a.err), "cannot grow %s to %" PRIu64 " bytes: %s",
			         volume, want, strerror(-rc));
			goto fail;
		}
		log_info("repl: pair %s: volume grown to %" PRIu64 " bytes, as on the primary",
		         name, want);
	}
	struct ckpt ck;
	int crc = ckpt_load(r, name, &ck);
	if (crc == 0 && ck.cycle == b->u.cycle_begin.cycle &&
	    !strcmp(ck.base, b->u.cycle_begin.base) && !strcmp(ck.target, b->u.cycle_begin.target) &&
	    ck.next_objno <= a.vi.objects && ck.done_objects <= b->u.cycle_begin.objects) {
		a.ck = ck;
		m.u.cycle_ready.status = WIRE_READY_RESUME;
		m.u.cycle_ready.resume_objno = ck.next_objno;
		a.min_obj = ck.next_objno;
		log_info("repl: pair %s: resuming cycle %" PRIu64 " at object %" PRIu64
		         " (%" PRIu64 " objects already durable)", name, ck.cycle,
		         ck.next_objno, ck.done_objects);
	} else {
		if (crc != -ENOENT) {
			/* An interrupted cycle that cannot resume: back to the base,
			 * which the interrupted cycle never touched. */
			const char *to = expect[0] ? expect : seed;
			rc = to[0] ? vol_rollback(a.v, to) : -ENOENT;
			if (rc < 0) {
				snprintf(a.err, sizeof(a.err), "cannot roll %s back to %s: %s", volume,
				         to, strerror(-rc));
				goto fail;
			}
			log_info("repl: pair %s: restarting cycle %" PRIu64 " from %s", name,
			         b->u.cycle_begin.cycle, to);
		}
		memset(&a.ck, 0, sizeof(a.ck));
		a.ck.cycle = b->u.cycle_begin.cycle;
		snprintf(a.ck.base, sizeof(a.ck.base), "%.64s", b->u.cycle_begin.base);
		snprintf(a.ck.target, sizeof(a.ck.target), "%.64s", b->u.cycle_begin.target);
		/* Written before anything is applied: from now on the head may
		 * differ from the base, and the checkpoint says so. */
		rc = ckpt_save(r, name, &a.ck);
		if (rc < 0) {
			snprintf(a.err, sizeof(a.err), "cannot write checkpoint: %s", strerror(-rc));
			goto fail;
		}
		m.u.cycle_ready.status = WIRE_READY_FRESH;
	}
	a.zbuf = malloc(WIRE_DATA_MAX);
	a.zd = ZSTD_createDCtx();
	if (!a.zbuf || !a.zd) {
		rc = -ENOMEM;
		snprintf(a.err, sizeof(a.err), "out of memory");
		goto fail;
	}
	rc = flusher_start(&a.fl, r, a.v, name);
	if (rc < 0) {
		snprintf(a.err, sizeof(a.err), "cannot start the checkpoint thread: %s",
		         strerror(-rc));
		goto fail;
	}
	pthread_mutex_lock(&r->mu);
	p->running = true;
	p->done_bytes = 0;
	p->total_bytes = b->u.cycle_begin.bytes;
	p->cycle_start_ns = now_mono_ns();
	(void)pair_change(p, NULL, NULL, NULL, 0);
	pthread_mutex_unlock(&r->mu);
	a.last_ckpt_ns = now_mono_ns();
	rc = link_send(l, &m);
	if (rc < 0)
		goto out;
	for (;;) {
		rc = link_recv(l, &m, 0);
		if (rc < 0) {
			log_warn("repl: pair %s: cycle %" PRIu64 " interrupted: %s", name,
			         b->u.cycle_begin.cycle, l->err);
			goto out;
		}
		if (m.type == WIRE_CYCLE_END)
			break;
		if (m.type == WIRE_ERROR) {
			log_warn("repl: pair %s: primary ended the cycle: %s", name, m.u.error.msg);
			rc = -m.u.error.code;
			goto out;
		}
		rc = apply_record(&a, &m);
		if (rc < 0)
			goto fail;
	}
	if (m.u.cycle_end.cycle != b->u.cycle_begin.cycle ||
	    m.u.cycle_end.objects != b->u.cycle_begin.objects ||
	    a.ck.done_objects != b->u.cycle_begin.objects) {
		rc = -EPROTO;
		snprintf(a.err, sizeof(a.err), "incomplete cycle: %" PRIu64 " of %" PRIu64
		         " objects received", a.ck.done_objects, b->u.cycle_begin.objects);
		goto fail;
	}
	rc = flusher_idle(&a.fl);
	if (rc < 0) {
		snprintf(a.err, sizeof(a.err), "cannot checkpoint %s: %s", volume, strerror(-rc));
		goto fail;
	}
	flusher_stop(&a.fl);
	rc = commit(&a, b);
	if (rc < 0)
		goto fail;
	m = (struct wire_msg){ .type = WIRE_CYCLE_COMMITTED };
	m.u.committed.cycle = b->u.cycle_begin.cycle;
	snprintf(m.u.committed.snap, sizeof(m.u.committed.snap), "%.64s", b->u.cycle_begin.target);
	rc = link_send(l, &m);
	/* The next cycle may start while old snapshots are being deleted. */
	release(r, p, l);
	if (a.dropping)
		drop_pair_snaps(r, p, volume, remote, b->u.cycle_begin.target);
	goto out;
fail:
	log_error("repl: pair %s: cycle %" PRIu64 ": %s", name, b->u.cycle_begin.cycle, a.err);
	pthread_mutex_lock(&r->mu);
	snprintf(p->error, sizeof(p->error), "%s", a.err);
	p->failures++;
	p->counters.cycles_failed++;
	p->running = false;
	(void)pair_change(p, NULL, a.err, NULL, 0);
	pthread_mutex_unlock(&r->mu);
	refuse_and_drain(l, rc, a.err);
	rc = rc < 0 ? rc : -EIO;
out:
	/* A partial transfer stays as far as it was flushed; the checkpoint
	 * on disk says where to resume. */
	flusher_stop(&a.fl);
	if (a.v) {
		(void)vol_flush(a.v);
		vol_close(a.v);
	}
	free(a.zbuf);
	ZSTD_freeDCtx(a.zd);
	release(r, p, l);
	put_pair(r, p);
	return rc;
}

static int handle_remove(struct repl *r, struct link *l, const struct wire_msg *m)
{
	struct pair *p = find_secondary(r, l, m->u.pair_remove.volume, m->u.pair_remove.pair_id);
	if (!p)
		return 0;
	put_pair(r, p);
	struct repl_removed res;
	struct repl_err err;
	int rc = pair_remove_local(r, m->u.pair_remove.volume, l, &res, &err);
	if (rc < 0) {
		link_send_error(l, -rc, "cannot remove pair %s: %s", m->u.pair_remove.volume, err.msg);
		return 0;
	}
	log_info("repl: pair %s removed by the primary %s%s%s", m->u.pair_remove.volume, l->peer,
	         res.kept_snap[0] ? "; kept for re-pairing: " : "", res.kept_snap);
	struct wire_msg ok = { .type = WIRE_OK };
	return link_send(l, &ok);
}

int serve_requests(struct repl *r, struct link *l, int first_ms)
{
	int rc = 0;
	int wait = first_ms;
	while (rc == 0) {
		struct wire_msg m;
		rc = link_recv(l, &m, wait);
		wait = 0;
		if (rc < 0)
			break; /* the peer closed or went quiet: nothing is pending */
		switch (m.type) {
		case WIRE_PING: {
			struct wire_msg pong = { .type = WIRE_PONG };
			pong.u.ping.token = m.u.ping.token;
			rc = link_send(l, &pong);
			break;
		}
		case WIRE_PAIR_OPEN:
			rc = handle_open(r, l, &m);
			break;
		case WIRE_CYCLE_BEGIN:
			rc = handle_cycle(r, l, &m);
			break;
		case WIRE_VERIFY_REQ:
			rc = handle_verify(r, l, &m);
			break;
		case WIRE_PAIR_REMOVE:
			rc = handle_remove(r, l, &m);
			break;
		case WIRE_ROLE:
			if (m.u.role.op == WIRE_ROLE_CALLBACK) {
				/* The link now belongs to the pair that keeps it. */
				if (conn_park(r, l, &m) == 1)
					return 1;
				return 0;
			}
			rc = handle_role(r, l, &m);
			break;
		case WIRE_SYNCED:
			rc = handle_synced(r, l, &m);
			break;
		default:
			link_send_error(l, EPROTO, "unexpected %s", wire_type_name(m.type));
			rc = -EPROTO;
		}
	}
	return 0;
}

int serve_conn(struct repl *r, struct link *l)
{
	link_set_tls(l, r->tls);
	if (link_handshake_server(l, r->secret, r->secret_len, r->site) < 0)
		return 0;
	return serve_requests(r, l, 0);
}
