/* The RBD backend: volumes are images of a Ceph RBD pool (features layering,
 * exclusive-lock, object-map, fast-diff; default striping, so object n of
 * the image is object n of the volume), snapshots are RBD snapshots.
 * docs/CEPH.md explains the design; the points that matter here:
 *
 *  - Gateways.  The store's directory belongs to one gateway (one ferryd);
 *    DIR/gateway.id names it and DIR/gateway.lock (flock) proves that no
 *    other process of the same gateway runs.  Each image carries an
 *    ownership record (image metadata ferry.owner).  A gateway opens only
 *    the images it owns, takes their RBD exclusive lock in the mode that
 *    is never handed over on request, and keeps them open ("pinned") for
 *    as long as the store is open, so that a live holder always shows as
 *    the lock owner with a watch on the image.  Another gateway refuses
 *    the volume (-EBUSY) and names the holder; store_vol_takeover() breaks
 *    a dead holder's lock, which blocklists its client, and rewrites the
 *    record.  Ownership records are only written under the lock.
 *
 *  - Diffs.  rbd_diff_iterate2 at object granularity (fast-diff: from the
 *    object map, no per-object I/O) gives the objects that may have
 *    changed; the same call at byte granularity, on each such object only,
 *    gives its extents, which over-report (a write past an object's end is
 *    reported from the old end, identical rewrites are reported).  Those
 *    extents are narrowed to the exact 4 KiB blocks whose content differs
 *    by reading them at both snapshots, and classified data or zero from
 *    what was read.  Cost: the objects and bytes RBD reports, never the
 *    image size.  Objects are narrowed by a few threads, handed to the
 *    caller in order.
 *
 *  - Rollback copies back what the diff from the snapshot to the head
 *    reports: cost ~ what changed since the snapshot (rbd_snap_rollback
 *    touches every object of the image), not atomic, repeatable.
 *
 *  - librbd's cache is off: what a takeover finds in the cluster is every
 *    write this gateway acknowledged before its last flush, and no other
 *    gateway ever reads stale cached data.  Writes are written behind
 *    (wb_submit): a bounded number in flight, each overlap ordered, all of
 *    them drained by flush, snapshot, rollback, resize and diffs to the head.
 *
 *  - Resize is rbd_resize2 on the head.  RBD snapshots keep the size they
 *    were taken at; the store's have the volume's (store.h vol_resize), so
 *    every read of an image zero-fills past its own end (read_at, narrow).
 */
#include "store/store_int.h"

#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rados/librados.h>
#include <rbd/librbd.h>

#define RBD_FEATURES \
	(RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP | \
	 RBD_FEATURE_FAST_DIFF)
#define RBD_MAX_ORDER 25               /* RBD objects are at most 32 MiB */
#define KEY_UUID "ferry.uuid"
#define KEY_BS "ferry.block_size"
#define KEY_OWNER "ferry.owner"
#define NEW_PREFIX ".ferry-new-"       /* images being created */
#define OWNER_MAX 1024
#define DIFF_THREADS 8
#define DIFF_WINDOW 16                 /* objects narrowed ahead of the caller */
#define DIFF_BUF_BUDGET (64u << 20)    /* narrowing buffers of all threads */
#define WB_MAX_OPS 256                 /* writes in flight per volume */
#define WB_MAX_BYTES (32u << 20)       /* ... and their bytes */

struct rbd_store {
	rados_t cluster;
	rados_ioctx_t io;
	char pool[256];
	char ns[256];
	char gw[37];           /* this gateway's id (DIR/gateway.id) */
	char host[256];
	char addr[256];        /* our client's address, as lock owners show it */
	int gw_lock_fd;
	atomic_bool fenced;    /* blocklisted: refuse everything from now on */
};

/* A snapshot open read-only; freed only under rv->lock held for writing. */
struct rbd_snap {
	struct rbd_snap *next;
	char name[STORE_NAME_MAX + 1];
	uint64_t id;
	rbd_image_t img;
	uint64_t size;         /* the snapshot's own size */
	rados_ioctx_t dio;     /* direct reads at this snapshot (NULL: through
	                          librbd only; see snap_direct) */
	char prefix[64];       /* its data objects' name prefix */
};

struct rbd_vol {
	rbd_image_t img;       /* the head: read-write, exclusive lock held */
	uint64_t size;         /* changed under lock held for writing (resize);
	                          read without it with __atomic_load_n */
	uint32_t osz, bs;
	char uuid[37];
	/* read: reads, writes, diffs; write: rollback, snapshot delete (they
	 * must not run under a reader, nor close a handle in use) */
	pthread_rwlock_t lock;
	pthread_mutex_t mu;    /* the list of open snapshots (insertions) */
	struct rbd_snap *snaps;
	/* Write-behind (see wb_submit): writes in flight, under wb_mu. */
	pthread_mutex_t wb_mu;
	pthread_cond_t wb_cv;
	struct wb_req *wb[WB_MAX_OPS];
	unsigned wb_n;
	uint64_t wb_bytes;
	int wb_err;            /* first failure since the last flush */
	struct dcache *dc;     /* the last diff between two snapshots (under mu) */
};

/* One write in flight: its own copy of the data (the caller's buffer is
 * reused as soon as vol_write returns). */
struct wb_req {
	struct rbd_vol *rv;
	rbd_completion_t c;
	uint64_t off, len;
	uint64_t charge;       /* bytes held: len for data, 0 for zeroes */
	uint8_t data[];
};

static struct rbd_store *RS(const struct store *s)
{
	return s->priv;
}

static struct rbd_vol *RV(const struct vol *v)
{
	return v->priv;
}

/* Notes a fence (this client was blocklisted by a takeover elsewhere) and
 * passes rc on.  Once fenced, every operation fails: the volumes this
 * gateway had are another's now, or will be. */
static int seen(struct store *s, int rc)
{
	if (rc == -ESHUTDOWN && !atomic_exchange(&RS(s)->fenced, true))
		log_error("store: rbd: this gateway was blocklisted (fenced) by the cluster: "
		          "another gateway took its volumes over; restart ferryd to serve again");
	return rc;
}

static int fenced(struct store *s)
{
	return atomic_load(&RS(s)->fenced) ? -ESHUTDOWN : 0;
}

/* ---- ownership records ---------------------------------------------------- */

struct owner {
	char gw[40];
	char host[256];
	char dir[4096];
	char addr[256];
	long pid;
	uint64_t since;
};

/* "gw=..;host=..;pid=..;addr=..;since=..;dir=.." (dir last: it may hold ';'). */
static void owner_format(const struct owner *o, char *buf, size_t n)
{
	snprintf(buf, n, "gw=%s;host=%s;pid=%ld;addr=%s;since=%" PRIu64 ";dir=%s", o->gw, o->host,
	         o->pid, o->addr, o->since, o->dir);
}

static void owner_parse(const char *s, struct owner *o)
{
	memset(o, 0, sizeof(*o));
	while (*s) {
		const char *eq = strchr(s, '=');
		if (!eq)
			break;
		size_t kl = (size_t)(eq - s);
		const char *val = eq + 1;
		size_t vl = !strncmp(s, "dir", kl) && kl == 3 ? strlen(val) : strcspn(val, ";");
#define OWN_FIELD(k, f) \
	if (kl == sizeof(k) - 1 && !strncmp(s, k, kl)) \
		snprintf(f, sizeof(f), "%.*s", (int)vl, val);
		OWN_FIELD("gw", o->gw)
		OWN_FIELD("host", o->host)
		OWN_FIELD("dir", o->dir)
		OWN_FIELD("addr", o->addr)
#undef OWN_FIELD
		if (kl == 3 && !strncmp(s, "pid", 3))
			o->pid = strtol(val, NULL, 10);
		if (kl == 5 && !strncmp(s, "since", 5))
			o->since = strtoull(val, NULL, 10);
		s = val + vl;
		if (*s == ';')
			s++;
	}
}

static void owner_self(struct store *s, struct owner *o)
{
	struct rbd_store *rs = RS(s);
	memset(o, 0, sizeof(*o));
	snprintf(o->gw, sizeof(o->gw), "%s", rs->gw);
	snprintf(o->host, sizeof(o->host), "%s", rs->host);
	snprintf(o->dir, sizeof(o->dir), "%s", s->dir);
	snprintf(o->addr, sizeof(o->addr), "%s", rs->addr);
	o->pid = (long)getpid();
	o->since = now_wall_s();
}

/* Metadata value of key (NUL-terminated) in buf: 0, -ENOENT, or -errno. */
static int meta_get(rbd_image_t img, const char *key, char *buf, size_t n)
{
	/* librbd counts the terminating NUL in len */
	size_t len = n;
	int rc = rbd_metadata_get(img, key, buf, &len);
	if (rc < 0)
		return rc;
	buf[MIN(len, n - 1)] = '\0';
	return 0;
}

static int owner_get(rbd_image_t img, struct owner *o)
{
	char buf[OWNER_MAX + 4096];
	int rc = meta_get(img, KEY_OWNER, buf, sizeof(buf));
	if (rc < 0) {
		memset(o, 0, sizeof(*o));
		return rc;
	}
	owner_parse(buf, o);
	return 0;
}

static int owner_put(rbd_image_t img, const struct owner *o)
{
	char buf[OWNER_MAX + 4096];
	owner_format(o, buf, sizeof(buf));
	return rbd_metadata_set(img, KEY_OWNER, buf);
}

/* Lock owner of img ("" when unlocked) and whether it has a watch on the
 * image (a live client keeps one; a dead one's lapses after the OSDs'
 * watch timeout).  img must be open read-write. */
static int lock_state(rbd_image_t img, char *owner, size_t n, bool *alive)
{
	owner[0] = '\0';
	*alive = false;
	rbd_lock_mode_t mode;
	char *owners[8];
	size_t no = ARRAY_SIZE(owners);
	int rc = rbd_lock_get_owners(img, &mode, owners, &no);
	if (rc == -ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	if (no)
		snprintf(owner, n, "%s", owners[0]);
	rbd_lock_get_owners_cleanup(owners, no);
	if (!owner[0])
		return 0;
	rbd_image_watcher_t w[64];
	size_t nw = ARRAY_SIZE(w);
	rc = rbd_watchers_list(img, w, &nw);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < nw; i++)
		if (!strcmp(w[i].addr, owner))
			*alive = true;
	rbd_watchers_list_cleanup(w, nw);
	return 0;
}

static void holder_describe(const struct owner *o, const char *lock_owner, bool alive, char *buf,
                            size_t n)
{
	char when[64] = "";
	if (o->since) {
		time_t t = (time_t)o->since;
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	const char *state = !lock_owner[0] ? "it does not hold the volume's lock (stopped, or dead)"
	                    : alive        ? "its client holds the volume's lock and is alive"
	                                   : "its client holds the volume's lock but its session "
	                                     "has lapsed (dead)";
	char other[400] = "";
	if (lock_owner[0] && strcmp(lock_owner, o->addr))
		snprintf(other, sizeof(other), " [the lock is held by client %s, not the recorded "
		         "client %s]", lock_owner, o->addr);
	snprintf(buf, n, "ferryd on host %s (state directory %s, pid %ld, client %s, gateway %.8s, "
	         "since %s); %s%s",
	         o->host[0] ? o->host : "?", o->dir[0] ? o->dir : "?", o->pid,
	         o->addr[0] ? o->addr : "?", o->gw, when, state, other);
}

/* ---- volumes ---------------------------------------------------------------- */

/* Caller holds rv->lock (a resize then waits). */
static int check_range(const struct rbd_vol *rv, uint64_t off, uint64_t len)
{
	if (off > rv->size || len > rv->size - off)
		return -ERANGE;
	return 0;
}

/* The size of img: the head's, or a snapshot's own (RBD keeps each
 * snapshot's size: one taken before a grow is shorter than the volume). */
static uint64_t img_size(rbd_image_t img)
{
	uint64_t n = 0;
	return rbd_get_size(img, &n) < 0 ? 0 : n;
}

/* How many of the len bytes at off lie before img's end; the caller
 * zeroes the rest (the store's snapshots have the volume's size, see
 * vol_resize: past a snapshot's own end it reads as zeros). */
static size_t img_clip(rbd_image_t img, uint64_t off, size_t len)
{
	uint64_t end = img_size(img);
	return off >= end ? 0 : (size_t)MIN((uint64_t)len, end - off);
}

static void snap_close(struct rbd_snap *p)
{
	if (p->dio)
		rados_ioctx_destroy(p->dio);
	rbd_close(p->img);
	free(p);
}

/* Direct reads.  Reading a snapshot through librbd costs one RADOS
 * operation per range; narrowing a diff and sending it read many small
 * ranges of each object (one per changed 4 KiB block when writes were
 * scattered), so a cycle was bound by the OSD's operation rate.  RADOS
 * reads any number of ranges of one object in one operation.  For an
 * image with default striping (object n of the image holds bytes
 * n*object_size..), no parent and no separate data pool, the data
 * objects are <prefix>.<objno as %016x>, and reading them at the
 * snapshot's id is what librbd itself does for a snapshot read (an object
 * absent at the snapshot reads as zeros; past its end, zeros).  The head
 * is never read this way: librbd orders head reads after writes. */
static void snap_direct(struct vol *v, struct rbd_snap *p)
{
	struct rbd_store *rs = RS(v->store);
	uint64_t su = 0, sc = 0;
	rbd_linked_image_spec_t pi;
	rbd_snap_spec_t ps;
	if (rbd_get_stripe_unit(p->img, &su) < 0 || su != RV(v)->osz ||
	    rbd_get_stripe_count(p->img, &sc) < 0 || sc != 1 ||
	    rbd_get_data_pool_id(p->img) != rados_ioctx_get_id(rs->io))
		return;
	int rc = rbd_get_parent(p->img, &pi, &ps);
	if (rc == 0) {
		rbd_linked_image_spec_cleanup(&pi);
		rbd_snap_spec_cleanup(&ps);
	}
	if (rc != -ENOENT || rbd_get_block_name_prefix(p->img, p->prefix, sizeof(p->prefix)) < 0)
		return;
	rados_ioctx_t io;
	if (rados_ioctx_create2(rs->cluster, rados_ioctx_get_id(rs->io), &io) < 0)
		return;
	rados_ioctx_set_namespace(io, rs->ns[0] ? rs->ns : NULL);
	rados_ioctx_snap_set_read(io, p->id);
	p->dio = io;
}

/* The snapshot named name, opened read-only on first use.  Caller holds
 * rv->lock (read or write).  NULL name: *out NULL (the head). */
static int snap_get(struct vol *v, const char *name, struct rbd_snap **out)
{
	struct rbd_vol *rv = RV(v);
	*out = NULL;
	if (!name)
		return 0;
	pthread_mutex_lock(&rv->mu);
	for (struct rbd_snap *p = rv->snaps; p; p = p->next) {
		if (!strcmp(p->name, name)) {
			*out = p;
			pthread_mutex_unlock(&rv->mu);
			return 0;
		}
	}
	struct rbd_snap *p = calloc(1, sizeof(*p));
	int rc = p ? 0 : -ENOMEM;
	if (!rc && (rc = rbd_snap_get_id(rv->img, name, &p->id)) < 0)
		log_debug("store: rbd: %s: no snapshot %s: %s", v->name, name, strerror(-rc));
	if (!rc && (rc = rbd_open_read_only(RS(v->store)->io, v->name, &p->img, name)) < 0)
		log_error("store: rbd: %s: cannot open snapshot %s: %s", v->name, name,
		          strerror(-rc));
	if (rc) {
		free(p);
		pthread_mutex_unlock(&rv->mu);
		return seen(v->store, rc);
	}
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->size = img_size(p->img);
	snap_direct(v, p);
	p->next = rv->snaps;
	rv->snaps = p;
	*out = p;
	pthread_mutex_unlock(&rv->mu);
	return 0;
}

/* The image handle of snapshot name (NULL: the head), as snap_get. */
static int snap_handle(struct vol *v, const char *name, rbd_image_t *out)
{
	struct rbd_snap *p;
	int rc = snap_get(v, name, &p);
	*out = rc ? NULL : p ? p->img : RV(v)->img;
	return rc;
}

/* One range to read: len bytes at image offset off into dst. */
struct rrun {
	uint64_t off;
	size_t len;
	uint8_t *dst;
};
#define DIRECT_MAX_RUNS 256    /* ranges per RADOS operation */

/* Reads the n runs (all inside object objno) of snapshot p, which has
 * direct reads, in as few RADOS operations as DIRECT_MAX_RUNS allows. */
static int direct_read(struct rbd_vol *rv, const struct rbd_snap *p, uint64_t objno,
                       const struct rrun *r, size_t n)
{
	char oid[96];
	snprintf(oid, sizeof(oid), "%s.%016" PRIx64, p->prefix, objno);
	const uint64_t o0 = objno * rv->osz;
	size_t got[DIRECT_MAX_RUNS], in[DIRECT_MAX_RUNS];
	int prv[DIRECT_MAX_RUNS];
	for (size_t b = 0; b < n; b += DIRECT_MAX_RUNS) {
		size_t m = MIN(n - b, (size_t)DIRECT_MAX_RUNS), k = 0;
		rados_read_op_t op = rados_create_read_op();
		if (!op)
			return -ENOMEM;
		for (size_t i = 0; i < m; i++) {
			const struct rrun *x = &r[b + i];
			/* zeros past the snapshot's own end (taken before a grow) */
			in[i] = x->off >= p->size ? 0 : (size_t)MIN((uint64_t)x->len, p->size - x->off);
			memset(x->dst + in[i], 0, x->len - in[i]);
			got[i] = 0;
			prv[i] = 0;
			if (in[i]) {
				rados_read_op_read(op, x->off - o0, in[i], (char *)x->dst, &got[i], &prv[i]);
				k++;
			}
		}
		int rc = k ? rados_read_op_operate(op, p->dio, oid, 0) : 0;
		rados_release_read_op(op);
		if (rc == -ENOENT) {
			/* no such object at the snapshot: zeros */
			for (size_t i = 0; i < m; i++)
				memset(r[b + i].dst, 0, in[i]);
			continue;
		}
		if (rc < 0)
			return rc;
		for (size_t i = 0; i < m; i++) {
			if (!in[i])
				continue;
			if (prv[i] < 0)
				return prv[i];
			if (got[i] < in[i])
				memset(r[b + i].dst + got[i], 0, in[i] - got[i]);
		}
	}
	return 0;
}

/* Closes the handle of snapshot name.  Caller holds rv->lock for writing. */
static void snap_forget(struct rbd_vol *rv, const char *name)
{
	pthread_mutex_lock(&rv->mu);
	for (struct rbd_snap **pp = &rv->snaps; *pp; pp = &(*pp)->next) {
		if (!strcmp((*pp)->name, name)) {
			struct rbd_snap *p = *pp;
			*pp = p->next;
			snap_close(p);
			break;
		}
	}
	pthread_mutex_unlock(&rv->mu);
}

static int read_at(rbd_image_t img, void *buf, uint64_t off, size_t len)
{
	uint8_t *p = buf;
	size_t in = img_clip(img, off, len);
	memset(p + in, 0, len - in);
	len = in;
	while (len) {
		ssize_t r = rbd_read(img, off, len, (char *)p);
		if (r < 0)
			return (int)r;
		if (r == 0)
			return -EIO;
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return 0;
}

static int write_at(rbd_image_t img, const void *buf, uint64_t off, size_t len)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t r = rbd_write(img, off, len, (const char *)p);
		if (r < 0)
			return (int)r;
		if (r == 0)
			return -EIO;
		p += r;
		off += (uint64_t)r;
		len -= (size_t)r;
	}
	return 0;
}

static int zero_at(rbd_image_t img, uint64_t off, uint64_t len)
{
	while (len) {
		/* the call takes a size_t and returns what it did as ssize_t */
		size_t n = (size_t)MIN(len, (uint64_t)1 << 30);
		ssize_t r = rbd_write_zeroes(img, off, n, 0, 0);
		if (r < 0)
			return (int)r;
		off += n;
		len -= n;
	}
	return 0;
}

/* ---- write-behind -------------------------------------------------------------
 * vol_write returns once librbd has a write (up to WB_MAX_OPS / WB_MAX_BYTES
 * in flight per volume), not once the cluster has it: the store's contract
 * ("not durable until vol_flush") and the LUNs' write-back cache (WCE=1;
 * FUA, SYNCHRONIZE CACHE and WCE=0 flush) allow it, as the local backend's
 * page cache does, and the cluster's round trip then overlaps the next
 * write.  A request that overlaps one in flight waits for it (librbd does
 * not order a read after a write still updating the object map), as do
 * flush, snapshots, rollback and diffs to the head (wb_drain).  A failure
 * is kept and returned by the next flush. */

static bool wb_overlaps(const struct rbd_vol *rv, uint64_t off, uint64_t len)
{
	for (unsigned i = 0; i < rv->wb_n; i++)
		if (off < rv->wb[i]->off + rv->wb[i]->len && rv->wb[i]->off < off + len)
			return true;
	return false;
}

static void wb_done(rbd_completion_t c, void *arg)
{
	struct wb_req *r = arg;
	struct rbd_vol *rv = r->rv;
	ssize_t ret = rbd_aio_get_return_value(c);
	pthread_mutex_lock(&rv->wb_mu);
	if (ret < 0 && !rv->wb_err)
		rv->wb_err = (int)ret;
	for (unsigned i = 0; i < rv->wb_n; i++) {
		if (rv->wb[i] == r) {
			rv->wb[i] = rv->wb[--rv->wb_n];
			break;
		}
	}
	rv->wb_bytes -= r->charge;
	pthread_cond_broadcast(&rv->wb_cv);
	pthread_mutex_unlock(&rv->wb_mu);
	rbd_aio_release(c);
	free(r);
}

/* Waits until nothing in flight overlaps [off, off+len). */
static void wb_wait_range(struct rbd_vol *rv, uint64_t off, uint64_t len)
{
	pthread_mutex_lock(&rv->wb_mu);
	while (wb_overlaps(rv, off, len))
		pthread_cond_wait(&rv->wb_cv, &rv->wb_mu);
	pthread_mutex_unlock(&rv->wb_mu);
}

/* Waits for every write in flight; returns (and clears) the first failure. */
static int wb_drain(struct rbd_vol *rv)
{
	pthread_mutex_lock(&rv->wb_mu);
	while (rv->wb_n)
		pthread_cond_wait(&rv->wb_cv, &rv->wb_mu);
	int rc = rv->wb_err;
	rv->wb_err = 0;
	pthread_mutex_unlock(&rv->wb_mu);
	return rc;
}

/* Starts a write of len bytes of buf (NULL: zeroes) at off. */
static int wb_submit(struct rbd_vol *rv, const uint8_t *buf, uint64_t off, uint64_t len)
{
	struct wb_req *r = malloc(sizeof(*r) + (buf ? len : 0));
	if (!r)
		return -ENOMEM;
	r->rv = rv;
	r->off = off;
	r->len = len;
	r->charge = buf ? len : 0;
	if (buf)
		memcpy(r->data, buf, len);
	uint64_t charge = r->charge;
	pthread_mutex_lock(&rv->wb_mu);
	while (rv->wb_n == WB_MAX_OPS || (rv->wb_n && rv->wb_bytes + charge > WB_MAX_BYTES) ||
	       wb_overlaps(rv, off, len))
		pthread_cond_wait(&rv->wb_cv, &rv->wb_mu);
	/* Registered before it is submitted (its completion removes it), and
	 * submitted without wb_mu (a completion may run at once). */
	int rc = rbd_aio_create_completion(r, wb_done, &r->c);
	if (rc == 0) {
		rv->wb[rv->wb_n++] = r;
		rv->wb_bytes += charge;
	}
	pthread_mutex_unlock(&rv->wb_mu);
	if (rc < 0) {
		free(r);
		return rc;
	}
	rc = buf ? rbd_aio_write(rv->img, off, (size_t)len, (const char *)r->data, r->c)
	         : rbd_aio_write_zeroes(rv->img, off, (size_t)len, r->c, 0, 0);
	if (rc < 0) {
		pthread_mutex_lock(&rv->wb_mu);
		for (unsigned i = 0; i < rv->wb_n; i++) {
			if (rv->wb[i] == r) {
				rv->wb[i] = rv->wb[--rv->wb_n];
				break;
			}
		}
		rv->wb_bytes -= charge;
		pthread_cond_broadcast(&rv->wb_cv);
		pthread_mutex_unlock(&rv->wb_mu);
		rbd_aio_release(r->c);
		free(r);
	}
	return rc;
}

static void dcache_free(struct dcache *d);

static void vol_free_rbd(struct vol *v)
{
	struct rbd_vol *rv = RV(v);
	if (rv) {
		while (rv->snaps) {
			struct rbd_snap *p = rv->snaps;
			rv->snaps = p->next;
			snap_close(p);
		}
		dcache_free(rv->dc);
		if (rv->img)
			rbd_close(rv->img);
		pthread_rwlock_destroy(&rv->lock);
		pthread_mutex_destroy(&rv->mu);
		pthread_mutex_destroy(&rv->wb_mu);
		pthread_cond_destroy(&rv->wb_cv);
		free(rv);
	}
	free(v);
}

/* A snapshot delete cut by a crash leaves the snapshot in RBD's trash
 * namespace (librbd moves it there first); removing it again finishes the
 * delete, as the local backend finishes its folds at open.  One that
 * cannot go yet (a clone still depends on it) stays, invisible. */
static void finish_snap_deletes(struct vol *v)
{
	struct rbd_vol *rv = RV(v);
	int max = 16, rc;
	rbd_snap_info_t *si;
	for (;;) {
		si = calloc((size_t)max, sizeof(*si));
		if (!si)
			return;
		rc = rbd_snap_list(rv->img, si, &max);
		if (rc != -ERANGE)
			break;
		free(si);
	}
	for (int i = 0; i < rc; i++) {
		rbd_snap_namespace_type_t t;
		if (rbd_snap_get_namespace_type(rv->img, si[i].id, &t) < 0 ||
		    t != RBD_SNAP_NAMESPACE_TYPE_TRASH)
			continue;
		char orig[STORE_NAME_MAX + 64] = "";
		rbd_snap_get_trash_namespace(rv->img, si[i].id, orig, sizeof(orig));
		int e = rbd_snap_remove_by_id(rv->img, si[i].id);
		if (e < 0)
			log_warn("store: rbd: %s: snapshot %s (deleted, in the trash) cannot be removed "
			         "yet: %s", v->name, orig, strerror(-e));
		else
			log_info("store: rbd: %s: finished the delete of snapshot %s", v->name, orig);
	}
	if (rc > 0)
		rbd_snap_list_end(si);
	free(si);
}

/* Takes the exclusive lock of img (opened read-write) for this gateway.
 * A lock left by a dead earlier process of this same gateway (the record
 * names us, and its address holds the lock: we hold gateway.lock, so it
 * is not running) is broken at once instead of waiting for its watch to
 * lapse. */
static int lock_take(struct store *s, const char *name, rbd_image_t img, const struct owner *rec)
{
	struct rbd_store *rs = RS(s);
	char lo[256];
	bool alive;
	int rc = lock_state(img, lo, sizeof(lo), &alive);
	if (rc < 0)
		return rc;
	if (lo[0] && strcmp(lo, rs->addr)) {
		if (!strcmp(rec->gw, rs->gw) && !strcmp(rec->addr, lo)) {
			log_warn("store: rbd: %s: breaking the lock of this gateway's previous "
			         "process (client %s)", name, lo);
			rc = rbd_lock_break(img, RBD_LOCK_MODE_EXCLUSIVE, lo);
			if (rc < 0 && rc != -ENOENT) {
				log_error("store: rbd: %s: cannot break the lock of %s: %s", name, lo,
				          strerror(-rc));
				return rc;
			}
		} else if (alive) {
			log_error("store: rbd: %s: locked by another client (%s)", name, lo);
			return -EBUSY;
		}
		/* Otherwise a dead client of someone else holds it: librbd
		 * breaks that lock itself once its watch has lapsed. */
	}
	rc = rbd_lock_acquire(img, RBD_LOCK_MODE_EXCLUSIVE);
	if (rc == -EROFS)
		rc = -EBUSY;
	if (rc < 0)
		log_error("store: rbd: %s: cannot take the exclusive lock: %s", name, strerror(-rc));
	return rc;
}

/* Opens name for this gateway: checks the record, takes the lock, checks
 * the record again under it and claims the volume when nobody holds it. */
static int rbd_vol_load(struct store *s, const char *name, struct vol **out)
{
	struct rbd_store *rs = RS(s);
	int rc = fenced(s);
	if (rc)
		return rc;
	struct vol *v = calloc(1, sizeof(*v));
	struct rbd_vol *rv = calloc(1, sizeof(*rv));
	if (!v || !rv) {
		free(v);
		free(rv);
		return -ENOMEM;
	}
	v->store = s;
	v->priv = rv;
	snprintf(v->name, sizeof(v->name), "%s", name);
	pthread_rwlock_init(&rv->lock, NULL);
	pthread_mutex_init(&rv->mu, NULL);
	pthread_mutex_init(&rv->wb_mu, NULL);
	pthread_cond_init(&rv->wb_cv, NULL);

	/* A look first, without a watch: a volume held elsewhere is refused
	 * without disturbing its holder. */
	rbd_image_t ro;
	rc = rbd_open_read_only(rs->io, name, &ro, NULL);
	if (rc < 0)
		goto fail;
	char buf[64];
	struct owner rec;
	rc = meta_get(ro, KEY_UUID, rv->uuid, sizeof(rv->uuid));
	if (rc == 0)
		rc = owner_get(ro, &rec);
	if (rc == -ENOENT && rv->uuid[0])
		rc = 0; /* no record: nobody holds it */
	rbd_close(ro);
	if (rc < 0) {
		if (rc == -ENOENT && !rv->uuid[0])
			log_debug("store: rbd: image %s is not a ferry volume", name);
		goto fail;
	}
	if (strcmp(rec.gw, rs->gw)) {
		if (rec.gw[0])
			log_error("store: rbd: volume %s is held by gateway %.8s on host %s (%s)", name,
			          rec.gw, rec.host, rec.dir);
		else
			log_error("store: rbd: volume %s was released: `ferry volume takeover %s` "
			          "serves it here", name, name);
		rc = -EBUSY;
		goto fail;
	}
	rc = rbd_open(rs->io, name, &rv->img, NULL);
	if (rc < 0)
		goto fail;
	rc = lock_take(s, name, rv->img, &rec);
	if (rc < 0)
		goto fail;
	/* Under the lock the record cannot change under us. */
	rc = owner_get(rv->img, &rec);
	if (rc < 0 && rc != -ENOENT)
		goto fail;
	if (strcmp(rec.gw, rs->gw)) {
		log_error("store: rbd: volume %s was taken over by gateway %.8s on host %s", name,
		          rec.gw, rec.host);
		rbd_lock_release(rv->img);
		rc = -EBUSY;
		goto fail;
	}
	struct owner me;
	owner_self(s, &me);
	if (strcmp(rec.addr, me.addr) || rec.pid != me.pid) {
		rc = owner_put(rv->img, &me);
		if (rc < 0)
			goto fail;
	}
	finish_snap_deletes(v);
	rbd_image_info_t st;
	rc = rbd_stat(rv->img, &st, sizeof(st));
	if (rc < 0)
		goto fail;
	rv->size = st.size;
	rv->osz = (uint32_t)st.obj_size;
	rv->bs = 512;
	if (meta_get(rv->img, KEY_BS, buf, sizeof(buf)) == 0 && !strcmp(buf, "4096"))
		rv->bs = 4096;
	/* One reference for the caller, one pins it while the store is open. */
	v->refs = 2;
	*out = v;
	return 0;
fail:
	seen(s, rc);
	vol_free_rbd(v);
	return rc;
}

static void rbd_vol_unload(struct vol *v)
{
	struct rbd_vol *rv = RV(v);
	if (rv->img) {
		int rc = wb_drain(rv);
		if (rc < 0)
			log_error("store: rbd: %s: a write failed before close: %s", v->name,
			          strerror(-rc));
		rc = rbd_flush(rv->img);
		if (rc < 0)
			log_error("store: rbd: %s: flush at close: %s", v->name, strerror(-rc));
		rbd_lock_release(rv->img);
	}
	vol_free_rbd(v);
}

static int rbd_vol_info(struct vol *v, struct vol_info *out);

static int rbd_read_op(struct vol *v, const char *snap, void *buf, uint64_t off, size_t len)
{
	struct rbd_vol *rv = RV(v);
	int rc = fenced(v->store);
	if (rc)
		return rc;
	pthread_rwlock_rdlock(&rv->lock);
	if ((rc = check_range(rv, off, len)) || !len) {
		pthread_rwlock_unlock(&rv->lock);
		return rc;
	}
	rbd_image_t img;
	rc = snap_handle(v, snap, &img);
	if (!rc && !snap)
		wb_wait_range(rv, off, len);
	if (!rc)
		rc = read_at(img, buf, off, len);
	pthread_rwlock_unlock(&rv->lock);
	if (rc < 0 && rc != -ENOENT)
		log_error("store: rbd: %s: read %" PRIu64 "+%zu: %s", v->name, off, len, strerror(-rc));
	return seen(v->store, rc);
}

/* Ranges of one object of a snapshot with direct reads: one RADOS
 * operation; otherwise one read per range. */
static int rbd_read_extents_op(struct vol *v, const char *snap, const struct extent *ext, size_t n,
                               void *buf)
{
	struct rbd_vol *rv = RV(v);
	int rc = fenced(v->store);
	if (rc || !n)
		return rc;
	pthread_rwlock_rdlock(&rv->lock);
	uint64_t objno = ext[0].offset / rv->osz;
	bool one = true;
	for (size_t i = 0; i < n && !rc; i++) {
		rc = check_range(rv, ext[i].offset, ext[i].length);
		one &= ext[i].length && ext[i].offset / rv->osz == objno &&
		       (ext[i].offset + ext[i].length - 1) / rv->osz == objno;
	}
	struct rbd_snap *sp = NULL;
	if (!rc)
		rc = snap_get(v, snap, &sp);
	struct rrun *r = NULL;
	if (!rc && sp && sp->dio && one && (r = malloc(n * sizeof(*r)))) {
		uint8_t *p = buf;
		for (size_t i = 0; i < n; i++) {
			r[i] = (struct rrun){ext[i].offset, (size_t)ext[i].length, p};
			p += ext[i].length;
		}
		rc = direct_read(rv, sp, objno, r, n);
		free(r);
	} else if (!rc) {
		rbd_image_t img = sp ? sp->img : rv->img;
		uint8_t *p = buf;
		for (size_t i = 0; i < n && !rc; i++) {
			if (!sp)
				wb_wait_range(rv, ext[i].offset, ext[i].length);
			rc = read_at(img, p, ext[i].offset, (size_t)ext[i].length);
			p += ext[i].length;
		}
	}
	pthread_rwlock_unlock(&rv->lock);
	if (rc < 0 && rc != -ENOENT)
		log_error("store: rbd: %s: read of %zu ranges from %" PRIu64 ": %s", v->name, n,
		          ext[0].offset, strerror(-rc));
	return seen(v->store, rc);
}

/* Writes buf to the head; all-zero runs of at least ZERO_RUN (or a whole
 * all-zero write) become zeroes, which RBD deallocates: the volume stays
 * thin.  Shorter zero runs go as data: one request beats several. */
#define ZERO_RUN (64u << 10)
static int write_locked(struct vol *v, const uint8_t *buf, uint64_t off, size_t len)
{
	struct rbd_vol *rv = RV(v);
	if (buf_is_zero(buf, len))
		return wb_submit(rv, NULL, off, len);
	size_t data = 0; /* start of the data not written yet */
	size_t pos = (size_t)((STORE_BLOCK - off % STORE_BLOCK) % STORE_BLOCK);
	while (pos + STORE_BLOCK <= len) {
		if (!buf_is_zero(buf + pos, STORE_BLOCK)) {
			pos += STORE_BLOCK;
			continue;
		}
		size_t z = pos + STORE_BLOCK;
		while (z + STORE_BLOCK <= len && buf_is_zero(buf + z, STORE_BLOCK))
			z += STORE_BLOCK;
		if (z - pos >= ZERO_RUN) {
			int rc = pos > data ? wb_submit(rv, buf + data, off + data, pos - data) : 0;
			if (!rc)
				rc = wb_submit(rv, NULL, off + pos, z - pos);
			if (rc)
				return rc;
			data = z;
		}
		pos = z;
	}
	return len > data ? wb_submit(rv, buf + data, off + data, len - data) : 0;
}

static int rbd_write_op(struct vol *v, const void *buf, uint64_t off, size_t len)
{
	struct rbd_vol *rv = RV(v);
	if (!buf && len)
		return -EINVAL;
	int rc = fenced(v->store);
	if (rc)
		return rc;
	pthread_rwlock_rdlock(&rv->lock);
	if ((rc = check_range(rv, off, len)) || !len) {
		pthread_rwlock_unlock(&rv->lock);
		return rc;
	}
	rc = write_locked(v, buf, off, len);
	pthread_rwlock_unlock(&rv->lock);
	if (rc < 0)
		log_error("store: rbd: %s: write %" PRIu64 "+%zu: %s", v->name, off, len,
		          strerror(-rc));
	return seen(v->store, rc);
}

static int rbd_zero_op(struct vol *v, uint64_t off, uint64_t len)
{
	struct rbd_vol *rv = RV(v);
	int rc = fenced(v->store);
	if (rc)
		return rc;
	pthread_rwlock_rdlock(&rv->lock);
	if ((rc = check_range(rv, off, len)) || !len) {
		pthread_rwlock_unlock(&rv->lock);
		return rc;
	}
	rc = wb_submit(rv, NULL, off, len);
	pthread_rwlock_unlock(&rv->lock);
	if (rc < 0)
		log_error("store: rbd: %s: zero %" PRIu64 "+%" PRIu64 ": %s", v->name, off, len,
		          strerror(-rc));
	return seen(v->store, rc);
}

static int rbd_flush_op(struct vol *v)
{
	int rc = fenced(v->store);
	if (rc)
		return rc;
	rc = wb_drain(RV(v));
	int rc2 = rbd_flush(RV(v)->img);
	if (!rc)
		rc = rc2;
	if (rc < 0)
		log_error("store: rbd: %s: flush: %s", v->name, strerror(-rc));
	return seen(v->store, rc);
}

/* ---- snapshots ------------------------------------------------------------- */

static int cmp_snap_id(const void *a, const void *b)
{
	const struct snap_info *x = a, *y = b;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* User snapshots in creation (id) order; *out malloc'd. */
static int snaps_get(struct vol *v, struct snap_info **out, size_t *n)
{
	struct rbd_vol *rv = RV(v);
	int max = 16;
	rbd_snap_info_t *si = NULL;
	int rc;
	for (;;) {
		si = calloc((size_t)max, sizeof(*si));
		if (!si)
			return -ENOMEM;
		rc = rbd_snap_list(rv->img, si, &max);
		if (rc != -ERANGE)
			break;
		free(si);
	}
	if (rc < 0) {
		free(si);
		return seen(v->store, rc);
	}
	size_t k = (size_t)rc;
	struct snap_info *a = calloc(k ? k : 1, sizeof(*a));
	if (!a) {
		rbd_snap_list_end(si);
		free(si);
		return -ENOMEM;
	}
	size_t u = 0;
	for (size_t i = 0; i < k; i++) {
		/* only the user's: a delete in progress (or cut by a crash)
		 * parks its snapshot in the trash namespace */
		rbd_snap_namespace_type_t t;
		if (rbd_snap_get_namespace_type(rv->img, si[i].id, &t) < 0 ||
		    t != RBD_SNAP_NAMESPACE_TYPE_USER)
			continue;
		snprintf(a[u].name, sizeof(a[u].name), "%s", si[i].name);
		a[u].id = si[i].id;
		struct timespec ts = {0};
		if (rbd_snap_get_timestamp(rv->img, si[i].id, &ts) == 0)
			a[u].ctime = (uint64_t)ts.tv_sec;
		u++;
	}
	rbd_snap_list_end(si);
	free(si);
	qsort(a, u, sizeof(*a), cmp_snap_id);
	*out = a;
	*n = u;
	return 0;
}

static int rbd_snap_list_op(struct vol *v, struct snap_info **out, size_t *n)
{
	return snaps_get(v, out, n);
}

static int rbd_snap_get_op(struct vol *v, const char *name, struct snap_info *out)
{
	if (!name)
		return -ENOENT;
	struct snap_info *a;
	size_t n;
	int rc = snaps_get(v, &a, &n);
	if (rc)
		return rc;
	rc = -ENOENT;
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(a[i].name, name)) {
			*out = a[i];
			rc = 0;
		}
	}
	free(a);
	return rc;
}

static int rbd_snap_create_op(struct vol *v, const char *name)
{
	struct rbd_vol *rv = RV(v);
	int rc = fenced(v->store);
	if (rc)
		return rc;
	/* what was written before belongs to the snapshot: in the cluster */
	rc = wb_drain(rv);
	if (rc < 0) {
		log_error("store: rbd: %s: snapshot %s: a write failed: %s", v->name, name,
		          strerror(-rc));
		return seen(v->store, rc);
	}
	rc = rbd_snap_create(rv->img, name);
	if (rc < 0 && rc != -EEXIST)
		log_error("store: rbd: %s: snapshot %s: %s", v->name, name, strerror(-rc));
	return seen(v->store, rc);
}

static int children_of(struct store *s, rbd_image_t img, char (**names)[STORE_NAME_MAX + 1],
                       size_t *n, size_t *cap);
static int rbd_vol_clones_op(struct store *s, const char *src, const char *snap,
                             char (**names)[STORE_NAME_MAX + 1], size_t *n);
static void parent_of(rbd_image_t img, char *out, size_t n);

static int rbd_snap_delete_op(struct vol *v, const char *name)
{
	struct rbd_vol *rv = RV(v);
	int rc = fenced(v->store);
	if (rc)
		return rc;
	/* With clone format 2 Ceph would not refuse: it parks a snapshot
	 * with children in its trash.  A clone keeps its snapshot (store.h). */
	rbd_image_t at;
	size_t kids = 0, cap = 0;
	rc = snap_handle(v, name, &at);
	if (rc == 0)
		rc = children_of(v->store, at, NULL, &kids, &cap);
	if (rc == 0 && kids) {
		log_debug("store: rbd: %s: snapshot %s has %zu clone(s): kept", v->name, name, kids);
		return -EBUSY;
	}
	if (rc < 0 && rc != -ENOENT)
		return rc;
	pthread_rwlock_wrlock(&rv->lock);
	snap_forget(rv, name);
	rc = rbd_snap_remove(rv->img, name);
	pthread_rwlock_unlock(&rv->lock);
	if (rc < 0 && rc != -ENOENT)
		log_error("store: rbd: %s: delete snapshot %s: %s", v->name, name, strerror(-rc));
	return seen(v->store, rc);
}

/* ---- diffs ----------------------------------------------------------------- */

struct ext {
	uint64_t off, len;
	bool exists;
};

struct extv {
	struct ext *a;
	size_t n, cap;
	int err;
};

static int ext_cb(uint64_t off, size_t len, int exists, void *arg)
{
	struct extv *e = arg;
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 64;
		struct ext *a = realloc(e->a, cap * sizeof(*a));
		if (!a) {
			e->err = -ENOMEM;
			return -ENOMEM;
		}
		e->a = a;
		e->cap = cap;
	}
	e->a[e->n++] = (struct ext){off, len, exists != 0};
	return 0;
}

/* Counters of what RBD reported and what narrowing kept (for logs and
 * benchmarks): blocks. */
static atomic_uint_fast64_t diff_reported, diff_kept;

/* One object being narrowed. */
struct dobj {
	uint64_t objno;
	int rc;
	bool done;
	bool all_zero;
	struct extent *ext;
	size_t n_ext;
};

struct dctx {
	struct vol *v;
	rbd_image_t to_img, from_img; /* from_img NULL: since creation (zeros) */
	struct rbd_snap *to_snap, *from_snap; /* NULL: the head / since creation */
	const char *from;
	uint64_t *objs;
	size_t n_objs;
	struct dobj *slot;            /* DIFF_WINDOW slots, indexed i % DIFF_WINDOW */
	size_t next;                  /* next object a worker takes */
	size_t emitted;               /* objects handed to the caller */
	bool stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

/* Narrows object objno: RBD's extents for it, then the exact blocks. */
static int narrow(struct dctx *c, uint8_t *tob, uint8_t *fromb, uint8_t *rep, struct extv *ev,
                  rbd_completion_t *comp, struct rrun *runs, struct dobj *d)
{
	struct rbd_vol *rv = RV(c->v);
	const uint64_t osz = rv->osz, size = rv->size;
	uint64_t o0 = d->objno * osz, o1 = MIN(o0 + osz, size);
	uint32_t nb = (uint32_t)DIV_ROUND_UP(o1 - o0, STORE_BLOCK);
	ev->n = 0;
	ev->err = 0;
	int rc = rbd_diff_iterate2(c->to_img, c->from, o0, o1 - o0, 1, 0, ext_cb, ev);
	if (rc < 0)
		return ev->err ? ev->err : rc;
	/* rep[i]: RBD reported block i (as written or as discarded: either
	 * way its content at `to` is read, which costs nothing for objects
	 * the object map knows absent) */
	memset(rep, 0, nb);
	for (size_t i = 0; i < ev->n; i++) {
		uint64_t a = MAX(ev->a[i].off, o0), b = MIN(ev->a[i].off + ev->a[i].len, o1);
		for (uint64_t k = a < b ? (a - o0) / STORE_BLOCK : nb;
		     k < DIV_ROUND_UP(b - o0, STORE_BLOCK); k++)
			rep[k] = 1;
	}
	uint64_t nrep = 0;
	for (uint32_t k = 0; k < nb; k++)
		nrep += rep[k];
	atomic_fetch_add(&diff_reported, nrep);
	/* Read what was reported, at both ends: every run of the object in
	 * one RADOS operation per side (snapshots with direct reads), or all
	 * at once through librbd (aio): the cluster's latency is paid once
	 * per object, not per run. */
	size_t nr = 0;
	for (uint32_t k = 0; k < nb;) {
		if (!rep[k]) {
			k++;
			continue;
		}
		uint32_t j = k;
		while (j < nb && rep[j])
			j++;
		uint64_t a = o0 + (uint64_t)k * STORE_BLOCK, b = MIN(o0 + (uint64_t)j * STORE_BLOCK, o1);
		runs[nr++] = (struct rrun){a, (size_t)(b - a), tob + (a - o0)};
		k = j;
	}
	rc = 0;
	size_t nc = 0;
	for (int side = 0; side < 2 && !rc; side++) {
		rbd_image_t img = side ? c->from_img : c->to_img;
		struct rbd_snap *sp = side ? c->from_snap : c->to_snap;
		uint8_t *base = side ? fromb : tob;
		for (size_t i = 0; i < nr; i++)
			runs[i].dst = base + (runs[i].off - o0);
		if (!img) {
			/* since creation: the older side is zeros */
			for (size_t i = 0; i < nr; i++)
				memset(runs[i].dst, 0, runs[i].len);
			continue;
		}
		if (sp && sp->dio) {
			rc = direct_read(rv, sp, d->objno, runs, nr);
			continue;
		}
		for (size_t i = 0; i < nr && !rc; i++) {
			/* zeros past a snapshot's own end (taken before a grow) */
			size_t in = img_clip(img, runs[i].off, runs[i].len);
			memset(runs[i].dst + in, 0, runs[i].len - in);
			if (!in)
				continue;
			rc = rbd_aio_create_completion(NULL, NULL, &comp[nc]);
			if (rc)
				break;
			rc = rbd_aio_read(img, runs[i].off, in, (char *)runs[i].dst, comp[nc]);
			if (rc < 0) {
				rbd_aio_release(comp[nc]);
				break;
			}
			nc++;
		}
	}
	for (size_t i = 0; i < nc; i++) {
		rbd_aio_wait_for_complete(comp[i]);
		ssize_t r = rbd_aio_get_return_value(comp[i]);
		if (r < 0 && !rc)
			rc = (int)r;
		rbd_aio_release(comp[i]);
	}
	if (rc)
		return rc;
	size_t ne = 0;
	bool any_data = false;
	for (uint32_t k = 0; k < nb; k++) {
		if (!rep[k])
			continue;
		uint64_t a = o0 + (uint64_t)k * STORE_BLOCK;
		uint64_t len = MIN((uint64_t)STORE_BLOCK, o1 - a);
		const uint8_t *tp = tob + (a - o0), *fp = fromb + (a - o0);
		if (!memcmp(tp, fp, len))
			continue;
		enum extent_kind kind = buf_is_zero(tp, len) ? EXTENT_ZERO : EXTENT_DATA;
		any_data |= kind == EXTENT_DATA;
		if (ne && d->ext[ne - 1].kind == kind && d->ext[ne - 1].offset + d->ext[ne - 1].length == a)
			d->ext[ne - 1].length += len;
		else
			d->ext[ne++] = (struct extent){.offset = a, .length = len, .kind = kind};
		atomic_fetch_add(&diff_kept, 1);
	}
	d->n_ext = ne;
	d->all_zero = false;
	if (ne && !any_data) {
		/* Every changed block is zero: the object is all zero iff the
		 * rest reads as zeros too. */
		rc = read_at(c->to_img, tob, o0, (size_t)(o1 - o0));
		if (rc)
			return rc;
		d->all_zero = buf_is_zero(tob, o1 - o0);
	}
	return 0;
}

static void *diff_worker(void *arg)
{
	struct dctx *c = arg;
	struct rbd_vol *rv = RV(c->v);
	uint32_t bpo = rv->osz / STORE_BLOCK;
	uint8_t *tob = malloc(rv->osz), *fromb = malloc(rv->osz), *rep = malloc(bpo);
	/* at most one run per two blocks, read at both ends */
	rbd_completion_t *comp = malloc((bpo + 1) * sizeof(*comp));
	struct rrun *runs = malloc((bpo + 1) * sizeof(*runs));
	struct extv ev = {0};
	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (!c->stop && c->next < c->n_objs && c->next >= c->emitted + DIFF_WINDOW)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->stop || c->next >= c->n_objs)
			break;
		size_t i = c->next++;
		struct dobj *d = &c->slot[i % DIFF_WINDOW];
		d->objno = c->objs[i];
		d->done = false;
		d->n_ext = 0;
		pthread_mutex_unlock(&c->mu);
		int rc = (!tob || !fromb || !rep || !comp || !runs)
		                 ? -ENOMEM
		                 : narrow(c, tob, fromb, rep, &ev, comp, runs, d);
		pthread_mutex_lock(&c->mu);
		d->rc = rc;
		d->done = true;
		pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
	free(ev.a);
	free(tob);
	free(fromb);
	free(rep);
	free(comp);
	free(runs);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The diff engine under rv->lock (read): cb as for vol_diff. */
static int diff_locked(struct vol *v, const char *from, const char *to, diff_cb cb, void *ctx)
{
	struct rbd_vol *rv = RV(v);
	struct dctx c = {.v = v, .from = from};
	int rc = 0;
	if (from) {
		struct snap_info fi, ti;
		if ((rc = rbd_snap_get_op(v, from, &fi)))
			return rc;
		if (to) {
			if ((rc = rbd_snap_get_op(v, to, &ti)))
				return rc;
			if (fi.id > ti.id)
				return -EINVAL;
		}
		if ((rc = snap_get(v, from, &c.from_snap)))
			return rc;
		c.from_img = c.from_snap->img;
	}
	if ((rc = snap_get(v, to, &c.to_snap)))
		return rc;
	c.to_img = c.to_snap ? c.to_snap->img : rv->img;
	/* Objects that may have changed, from the object maps (fast-diff). */
	struct extv ev = {0};
	rc = rbd_diff_iterate2(c.to_img, from, 0, rv->size, 1, 1, ext_cb, &ev);
	if (rc < 0) {
		free(ev.a);
		return ev.err ? ev.err : seen(v->store, rc);
	}
	size_t total = 0;
	for (size_t i = 0; i < ev.n; i++)
		if (ev.a[i].len && ev.a[i].off < rv->size)
			total += (size_t)((MIN(ev.a[i].off + ev.a[i].len, rv->size) - 1) / rv->osz -
			                  ev.a[i].off / rv->osz + 1);
	c.objs = malloc((total ? total : 1) * sizeof(*c.objs));
	if (!c.objs) {
		free(ev.a);
		return -ENOMEM;
	}
	for (size_t i = 0; i < ev.n; i++) {
		if (!ev.a[i].len || ev.a[i].off >= rv->size)
			continue;
		uint64_t last = (MIN(ev.a[i].off + ev.a[i].len, rv->size) - 1) / rv->osz;
		for (uint64_t o = ev.a[i].off / rv->osz; o <= last; o++)
			c.objs[c.n_objs++] = o;
	}
	free(ev.a);
	qsort(c.objs, c.n_objs, sizeof(*c.objs), cmp_u64);
	size_t u = 0;
	for (size_t i = 0; i < c.n_objs; i++)
		if (!u || c.objs[u - 1] != c.objs[i])
			c.objs[u++] = c.objs[i];
	c.n_objs = u;
	if (!c.n_objs) {
		free(c.objs);
		return 0;
	}

	uint32_t bpo = rv->osz / STORE_BLOCK;
	c.slot = calloc(DIFF_WINDOW, sizeof(*c.slot));
	if (!c.slot) {
		free(c.objs);
		return -ENOMEM;
	}
	for (size_t i = 0; i < DIFF_WINDOW && !rc; i++)
		if (!(c.slot[i].ext = malloc(bpo * sizeof(struct extent))))
			rc = -ENOMEM;
	pthread_mutex_init(&c.mu, NULL);
	pthread_cond_init(&c.cv, NULL);
	size_t nt = MIN((size_t)DIFF_THREADS, MAX((size_t)1, DIFF_BUF_BUDGET / (2 * rv->osz)));
	nt = MIN(nt, c.n_objs);
	pthread_t th[DIFF_THREADS];
	size_t started = 0;
	for (; !rc && started < nt; started++)
		if (pthread_create(&th[started], NULL, diff_worker, &c) != 0)
			break;
	if (!rc && !started)
		rc = -EAGAIN;
	pthread_mutex_lock(&c.mu);
	while (!rc && c.emitted < c.n_objs) {
		struct dobj *d = &c.slot[c.emitted % DIFF_WINDOW];
		while (!(c.next > c.emitted && d->done && d->objno == c.objs[c.emitted]))
			pthread_cond_wait(&c.cv, &c.mu);
		if (d->rc) {
			rc = d->rc;
			break;
		}
		if (d->n_ext) {
			struct diff_object o = {.objno = d->objno, .extents = d->ext,
			                        .n_extents = d->n_ext, .all_zero = d->all_zero};
			pthread_mutex_unlock(&c.mu);
			rc = cb(ctx, &o);
			pthread_mutex_lock(&c.mu);
		}
		d->done = false;
		c.emitted++;
		pthread_cond_broadcast(&c.cv);
	}
	c.stop = true;
	pthread_cond_broadcast(&c.cv);
	pthread_mutex_unlock(&c.mu);
	for (size_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&c.mu);
	pthread_cond_destroy(&c.cv);
	for (size_t i = 0; i < DIFF_WINDOW; i++)
		free(c.slot[i].ext);
	free(c.slot);
	free(c.objs);
	return seen(v->store, rc);
}

/* The last diff between two snapshots, kept for its repeat: snapshots do
 * not change, and the replication engine enumerates a cycle's diff before
 * it transfers it (two calls), which would otherwise read everything RBD
 * reports twice.  Keyed by snapshot ids (never reused); bounded. */
#define DCACHE_MAX_EXTENTS (1u << 20)
struct cobj {
	uint64_t objno;
	size_t first;
	uint32_t n;
	bool all_zero;
};
struct dcache {
	uint64_t from_id, to_id;
	int refs;                 /* under rv->mu */
	struct cobj *o;
	size_t n, cap;
	struct extent *e;
	size_t ne, cape;
	bool over;                /* too big: not kept */
};

static void dcache_free(struct dcache *d)
{
	if (d) {
		free(d->o);
		free(d->e);
		free(d);
	}
}

static void dcache_put(struct rbd_vol *rv, struct dcache *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&rv->mu);
	bool last = --d->refs == 0;
	pthread_mutex_unlock(&rv->mu);
	if (last)
		dcache_free(d);
}

struct rec_ctx {
	struct dcache *d;
	diff_cb cb;
	void *ctx;
};

static int rec_cb(void *arg, const struct diff_object *o)
{
	struct rec_ctx *r = arg;
	struct dcache *d = r->d;
	if (!d->over) {
		if (d->ne + o->n_extents > DCACHE_MAX_EXTENTS) {
			d->over = true;
		} else {
			if (d->n == d->cap) {
				size_t cap = d->cap ? d->cap * 2 : 256;
				struct cobj *n = realloc(d->o, cap * sizeof(*n));
				if (n) {
					d->o = n;
					d->cap = cap;
				}
			}
			while (d->ne + o->n_extents > d->cape) {
				size_t cap = d->cape ? d->cape * 2 : 1024;
				struct extent *n = realloc(d->e, cap * sizeof(*n));
				if (!n)
					break;
				d->e = n;
				d->cape = cap;
			}
			if (d->n < d->cap && d->ne + o->n_extents <= d->cape) {
				d->o[d->n++] = (struct cobj){o->objno, d->ne, (uint32_t)o->n_extents,
				                             o->all_zero};
				memcpy(d->e + d->ne, o->extents, o->n_extents * sizeof(*o->extents));
				d->ne += o->n_extents;
			} else {
				d->over = true;
			}
		}
	}
	return r->cb(r->ctx, o);
}

static int rbd_diff_op(struct vol *v, const char *from, const char *to, diff_cb cb, void *ctx)
{
	struct rbd_vol *rv = RV(v);
	int rc = fenced(v->store);
	if (rc)
		return rc;
	uint64_t r0 = atomic_load(&diff_reported), k0 = atomic_load(&diff_kept);
	uint64_t t0 = now_mono_ns();
	if (!to && (rc = wb_drain(rv)) < 0)
		return seen(v->store, rc);
	pthread_rwlock_rdlock(&rv->lock);
	struct snap_info fi = {0}, ti;
	struct dcache *d = NULL;
	if (to && (!from || rbd_snap_get_op(v, from, &fi) == 0) && rbd_snap_get_op(v, to, &ti) == 0 &&
	    fi.id <= ti.id) {
		pthread_mutex_lock(&rv->mu);
		if (rv->dc && rv->dc->from_id == fi.id && rv->dc->to_id == ti.id) {
			d = rv->dc;
			d->refs++;
		}
		pthread_mutex_unlock(&rv->mu);
		if (d) {
			/* a repeat: no I/O */
			for (size_t i = 0; i < d->n && !rc; i++) {
				struct diff_object o = {.objno = d->o[i].objno, .extents = d->e + d->o[i].first,
				                        .n_extents = d->o[i].n, .all_zero = d->o[i].all_zero};
				rc = cb(ctx, &o);
			}
			dcache_put(rv, d);
			pthread_rwlock_unlock(&rv->lock);
			log_debug("store: rbd: %s: diff %s..%s again, from memory", v->name,
			          from ? from : "-", to);
			return rc;
		}
		d = calloc(1, sizeof(*d));
		if (d) {
			d->from_id = fi.id;
			d->to_id = ti.id;
			d->refs = 1;
		}
	}
	if (d) {
		struct rec_ctx r = {.d = d, .cb = cb, .ctx = ctx};
		rc = diff_locked(v, from, to, rec_cb, &r);
		if (rc == 0 && !d->over) {
			pthread_mutex_lock(&rv->mu);
			struct dcache *old = rv->dc;
			rv->dc = d;
			pthread_mutex_unlock(&rv->mu);
			dcache_put(rv, old);
		} else {
			dcache_put(rv, d);
		}
	} else {
		rc = diff_locked(v, from, to, cb, ctx);
	}
	pthread_rwlock_unlock(&rv->lock);
	log_debug("store: rbd: %s: diff %s..%s: RBD reported %" PRIu64 " blocks, %" PRIu64
	          " changed, %.1f ms",
	          v->name, from ? from : "-", to ? to : "head", atomic_load(&diff_reported) - r0,
	          atomic_load(&diff_kept) - k0, (double)(now_mono_ns() - t0) / 1e6);
	return rc;
}

static int sum_cb(uint64_t off, size_t len, int exists, void *arg);

/* Whether the object exists at img (the object map: one small read of the
 * map, not of the object); an absent one reads as zeros. */
static int object_exists(struct vol *v, rbd_image_t img, uint64_t objno, bool *exists)
{
	struct rbd_vol *rv = RV(v);
	uint64_t o0 = objno * rv->osz, o1 = MIN(o0 + rv->osz, rv->size), bytes = 0;
	if (o0 >= img_size(img)) { /* past a snapshot's own end: zeros */
		*exists = false;
		return 0;
	}
	int rc = rbd_diff_iterate2(img, NULL, o0, o1 - o0, 1, 1, sum_cb, &bytes);
	if (!rc)
		*exists = bytes != 0;
	return rc;
}

static int object_zero(struct vol *v, rbd_image_t img, uint64_t objno, bool *zero)
{
	struct rbd_vol *rv = RV(v);
	uint64_t o0 = objno * rv->osz, o1 = MIN(o0 + rv->osz, rv->size);
	bool exists = true;
	int rc = object_exists(v, img, objno, &exists);
	if (rc == 0 && !exists) {
		*zero = true;
		return 0;
	}
	uint8_t *buf = malloc(rv->osz);
	if (!buf)
		return -ENOMEM;
	rc = read_at(img, buf, o0, (size_t)(o1 - o0));
	if (!rc)
		*zero = buf_is_zero(buf, o1 - o0);
	free(buf);
	return rc;
}

/* A question about one object of the head or of snap (object_zero,
 * object_exists), asked under the read lock once written-behind writes
 * to it have reached RBD. */
static int object_query(struct vol *v, const char *snap, uint64_t objno, bool *res,
                        int (*query)(struct vol *, rbd_image_t, uint64_t, bool *))
{
	struct rbd_vol *rv = RV(v);
	int rc = fenced(v->store);
	if (rc)
		return rc;
	pthread_rwlock_rdlock(&rv->lock);
	if (objno >= DIV_ROUND_UP(rv->size, rv->osz)) {
		pthread_rwlock_unlock(&rv->lock);
		return -ERANGE;
	}
	rbd_image_t img;
	rc = snap_handle(v, snap, &img);
	if (!rc && !snap)
		wb_wait_range(rv, objno * rv->osz, rv->osz);
	if (!rc)
		rc = query(v, img, objno, res);
	pthread_rwlock_unlock(&rv->lock);
	return seen(v->store, rc);
}

static int rbd_object_is_zero_op(struct vol *v, const char *snap, uint64_t objno, bool *zero)
{
	return object_query(v, snap, objno, zero, object_zero);
}

static int rbd_object_mapped_op(struct vol *v, const char *snap, uint64_t objno, bool *mapped)
{
	return object_query(v, snap, objno, mapped, object_exists);
}

/* ---- rollback -------------------------------------------------------------- */

struct rb_ctx {
	struct vol *v;
	rbd_image_t snap_img;
	uint8_t *buf;
	uint64_t blocks;
};

static int rollback_cb(void *arg, const struct diff_object *o)
{
	struct rb_ctx *c = arg;
	struct rbd_vol *rv = RV(c->v);
	for (size_t i = 0; i < o->n_extents; i++) {
		const struct extent *e = &o->extents[i];
		/* the head's block differs from the snapshot's: put the
		 * snapshot's back (zeros where it reads as zeros) */
		int rc = read_at(c->snap_img, c->buf, e->offset, (size_t)e->length);
		if (rc)
			return rc;
		rc = buf_is_zero(c->buf, e->length) ? zero_at(rv->img, e->offset, e->length)
		                                   : write_at(rv->img, c->buf, e->offset,
		                                              (size_t)e->length);
		if (rc)
			return rc;
		c->blocks += DIV_ROUND_UP(e->length, STORE_BLOCK);
	}
	return 0;
}

static int rbd_rollback_op(struct vol *v, const char *name)
{
	struct rbd_vol *rv = RV(v);
	int rc = fenced(v->store);
	if (rc)
		return rc;
	struct snap_info *a;
	size_t n;
	if ((rc = snaps_get(v, &a, &n)))
		return rc;
	size_t idx = n;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(a[i].name, name))
			idx = i;
	free(a);
	if (idx == n)
		return -ENOENT;
	if (idx + 1 != n)
		return -EBUSY; /* as the local backend: later snapshots would lose their base */
	struct rb_ctx c = {.v = v, .buf = malloc(rv->osz)};
	if (!c.buf)
		return -ENOMEM;
	uint64_t t0 = now_mono_ns();
	/* Writers wait; diff workers only read. */
	pthread_rwlock_wrlock(&rv->lock);
	(void)wb_drain(rv); /* what it failed to write is rolled back anyway */
	rc = snap_handle(v, name, &c.snap_img);
	if (!rc)
		rc = diff_locked(v, name, NULL, rollback_cb, &c);
	if (!rc)
		rc = rbd_flush(rv->img);
	pthread_rwlock_unlock(&rv->lock);
	free(c.buf);
	if (rc < 0)
		log_error("store: rbd: %s: rollback to %s: %s (repeat it to finish)", v->name, name,
		          strerror(-rc));
	else
		log_info("store: rbd: %s: rolled back to %s: %" PRIu64 " blocks restored in %.1f ms",
		         v->name, name, c.blocks, (double)(now_mono_ns() - t0) / 1e6);
	return seen(v->store, rc);
}

/* ---- info ------------------------------------------------------------------ */

static int sum_cb(uint64_t off, size_t len, int exists, void *arg)
{
	(void)off;
	if (exists)
		*(uint64_t *)arg += len;
	return 0;
}

static uint64_t rbd_vol_size(struct vol *v)
{
	return __atomic_load_n(&RV(v)->size, __ATOMIC_RELAXED);
}

/* ---- resize ------------------------------------------------------------------
 * rbd_resize2 on the head, under rv->lock held for writing: readers and
 * writers wait, what was written behind is drained and flushed first.
 * Snapshots keep their own size in RBD; reads and diffs treat what lies
 * past a snapshot's end as zeros (read_at, narrow), which is what the
 * store promises (vol_resize).  A shrink is refused while the volume has
 * snapshots, as on the local backend.  Atomic as RBD's header update is;
 * a shrink cut by a crash may have trimmed objects past the new end while
 * the image still has its old size (they then read as zeros). */
/* librbd calls it as a shrink trims (a NULL one crashes it) */
static int resize_progress(uint64_t done, uint64_t total, void *arg)
{
	(void)done;
	(void)total;
	(void)arg;
	return 0;
}

static int rbd_resize_op(struct vol *v, uint64_t size)
{
	struct rbd_vol *rv = RV(v);
	if (size == 0 || size > STORE_MAX_SIZE || size % rv->bs)
		return -EINVAL;
	int rc = fenced(v->store);
	if (rc)
		return rc;
	pthread_rwlock_wrlock(&rv->lock);
	uint64_t old = rv->size;
	if (size == old)
		goto out;
	if (size < old) {
		struct snap_info *a;
		size_t n;
		if ((rc = snaps_get(v, &a, &n)))
			goto out;
		free(a);
		if (n) {
			rc = -ENOTEMPTY; /* they would lose what lies past the new end */
			goto out;
		}
	}
	rc = wb_drain(rv);
	if (!rc)
		rc = rbd_flush(rv->img);
	if (!rc)
		rc = rbd_resize2(rv->img, size, size < old, resize_progress, NULL);
	if (!rc && img_size(rv->img) != size)
		rc = -EIO;
	if (!rc) {
		__atomic_store_n(&rv->size, size, __ATOMIC_RELAXED);
		/* a remembered diff ends at the old size */
		pthread_mutex_lock(&rv->mu);
		struct dcache *d = rv->dc;
		rv->dc = NULL;
		pthread_mutex_unlock(&rv->mu);
		dcache_put(rv, d);
	}
out:
	pthread_rwlock_unlock(&rv->lock);
	if (rc < 0 && rc != -ENOTEMPTY)
		log_error("store: rbd: %s: resize from %" PRIu64 " to %" PRIu64 " bytes: %s", v->name,
		          old, size, strerror(-rc));
	else if (!rc && size != old)
		log_info("store: rbd: %s: resized from %" PRIu64 " to %" PRIu64 " bytes", v->name, old,
		         size);
	return seen(v->store, rc);
}

static int rbd_vol_info(struct vol *v, struct vol_info *out)
{
	struct rbd_vol *rv = RV(v);
	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", v->name);
	memcpy(out->uuid, rv->uuid, sizeof(out->uuid));
	out->object_size = rv->osz;
	out->block_size = rv->bs;
	parent_of(rv->img, out->parent, sizeof(out->parent));
	/* Snapshot deletes and resizes wait for the read lock: the list and
	 * the size stay true. */
	pthread_rwlock_rdlock(&rv->lock);
	out->size = rv->size;
	out->objects = DIV_ROUND_UP(rv->size, rv->osz);
	struct snap_info *a;
	size_t n;
	int rc = snaps_get(v, &a, &n);
	if (rc) {
		pthread_rwlock_unlock(&rv->lock);
		return rc;
	}
	out->snapshots = (uint32_t)n;
	/* Allocation at object granularity (fast-diff): the head's objects
	 * plus those each snapshot's successor rewrote. */
	uint64_t bytes = 0;
	size_t i = 0;
	for (; i <= n && !rc; i++) {
		rbd_image_t img;
		rc = snap_handle(v, i < n ? a[i].name : NULL, &img);
		if (!rc)
			rc = rbd_diff_iterate2(img, i ? a[i - 1].name : NULL, 0, rv->size, 1, 1, sum_cb,
			                       &bytes);
	}
	pthread_rwlock_unlock(&rv->lock);
	if (rc < 0)
		log_error("store: rbd: %s: allocation of %s: %s", v->name,
		          i < n ? a[i].name : "the head", strerror(-rc));
	free(a);
	out->allocated_bytes = MIN(bytes, out->size * (n + 1));
	return seen(v->store, rc < 0 ? rc : 0);
}

/* ---- the pool ---------------------------------------------------------------- */

/* Opens name read-only and reads its ferry metadata: 0 (a ferry volume),
 * -ENOENT (no image, or not a ferry volume), -errno. */
static int peek(struct store *s, const char *name, char *uuid, size_t un, struct owner *rec)
{
	rbd_image_t ro;
	int rc = rbd_open_read_only(RS(s)->io, name, &ro, NULL);
	if (rc < 0)
		return seen(s, rc);
	char tmp[40];
	rc = meta_get(ro, KEY_UUID, uuid ? uuid : tmp, uuid ? un : sizeof(tmp));
	if (!rc && rec) {
		rc = owner_get(ro, rec);
		if (rc == -ENOENT)
			rc = 0;
	}
	rbd_close(ro);
	return rc;
}

/* The end of making an image under its temporary name tmp (create,
 * clone): rc is how far it got (img open if 0, may be NULL otherwise).
 * Writes ferry's metadata and ownership, closes img and renames tmp to
 * name; on any failure removes tmp.  Returns rc or the first error. */
static int new_image_finish(struct store *s, int rc, rbd_image_t img, const char *tmp,
                            const char *name, const char *bs, const char *uuid)
{
	struct rbd_store *rs = RS(s);
	struct owner me;
	owner_self(s, &me);
	if (!rc)
		rc = rbd_metadata_set(img, KEY_BS, bs);
	if (!rc)
		rc = rbd_metadata_set(img, KEY_UUID, uuid);
	if (!rc)
		rc = owner_put(img, &me);
	if (img)
		rbd_close(img);
	if (!rc)
		rc = rbd_rename(rs->io, tmp, name);
	if (rc < 0)
		(void)rbd_remove(rs->io, tmp);
	return rc;
}

static int rbd_vol_create_op(struct store *s, const char *name, const struct vol_params *p)
{
	struct rbd_store *rs = RS(s);
	struct vol_params vp;
	int rc = store_params_check(p, &vp);
	if (rc)
		return rc;
	if ((rc = fenced(s)))
		return rc;
	int order = __builtin_ctz(vp.object_size);
	if (order > RBD_MAX_ORDER) {
		log_error("store: rbd: object size %u is larger than RBD's largest (32 MiB)",
		          vp.object_size);
		return -EINVAL;
	}
	char uuid[37], tmp[STORE_NAME_MAX + 64];
	if ((rc = store_uuid_new(uuid)))
		return rc;
	/* Made under a temporary name and renamed once complete: a crash
	 * leaves no half-made volume (store open removes leftovers). */
	snprintf(tmp, sizeof(tmp), NEW_PREFIX "%.8s-%s", rs->gw, name);
	pthread_mutex_lock(&s->mu);
	rbd_image_t img = NULL;
	rbd_image_options_t o;
	rbd_image_options_create(&o);
	rbd_image_options_set_uint64(o, RBD_IMAGE_OPTION_FEATURES, RBD_FEATURES);
	rbd_image_options_set_uint64(o, RBD_IMAGE_OPTION_ORDER, (uint64_t)order);
	rc = rbd_open_read_only(rs->io, name, &img, NULL);
	if (rc == 0) {
		char u[40];
		if (meta_get(img, KEY_UUID, u, sizeof(u)) < 0)
			log_error("store: rbd: pool %s already has an image %s that is not a ferry "
			          "volume", rs->pool, name);
		rbd_close(img);
		img = NULL;
		rc = -EEXIST;
		goto out;
	}
	if (rc != -ENOENT)
		goto out;
	(void)rbd_remove(rs->io, tmp);
	rc = rbd_create4(rs->io, tmp, vp.size, o);
	if (rc < 0)
		goto out;
	rc = rbd_open(rs->io, tmp, &img, NULL);
	char bs[16];
	snprintf(bs, sizeof(bs), "%u", vp.block_size);
	rc = new_image_finish(s, rc, img, tmp, name, bs, uuid);
	img = NULL;
out:
	rbd_image_options_destroy(o);
	pthread_mutex_unlock(&s->mu);
	if (rc < 0 && rc != -EEXIST)
		log_error("store: rbd: creating volume %s in pool %s: %s", name, rs->pool,
		          strerror(-rc));
	return seen(s, rc);
}

static int rbd_vol_remove_op(struct store *s, const char *name, bool force)
{
	struct rbd_store *rs = RS(s);
	int rc = fenced(s);
	if (rc)
		return rc;
	pthread_mutex_lock(&s->mu);
	struct vol *v = store_find_open(s, name);
	if (v && v->refs > 1) {
		rc = -EBUSY;
		goto out;
	}
	struct owner rec;
	rc = peek(s, name, NULL, 0, &rec);
	if (rc < 0)
		goto out;
	char(*cl)[STORE_NAME_MAX + 1] = NULL;
	size_t ncl = 0;
	rc = rbd_vol_clones_op(s, name, NULL, &cl, &ncl);
	free(cl);
	if (rc == 0 && ncl)
		rc = -EBUSY; /* store_vol_clones names them */
	if (rc < 0)
		goto out;
	if (rec.gw[0] && strcmp(rec.gw, rs->gw)) {
		log_error("store: rbd: volume %s is held by gateway %.8s on host %s: not removed",
		          name, rec.gw, rec.host);
		rc = -EBUSY;
		goto out;
	}
	if (v) { /* only the pin: unpin, keeping the lock until the end */
		for (struct vol **pp = &s->open; *pp; pp = &(*pp)->next) {
			if (*pp == v) {
				*pp = v->next;
				break;
			}
		}
	} else {
		pthread_mutex_unlock(&s->mu);
		rc = vol_open(s, name, &v);
		pthread_mutex_lock(&s->mu);
		if (rc < 0) {
			v = NULL;
			goto out;
		}
		if (v->refs > 2) {
			pthread_mutex_unlock(&s->mu);
			vol_close(v);
			pthread_mutex_lock(&s->mu);
			v = NULL;
			rc = -EBUSY;
			goto out;
		}
		for (struct vol **pp = &s->open; *pp; pp = &(*pp)->next) {
			if (*pp == v) {
				*pp = v->next;
				break;
			}
		}
	}
	struct snap_info *a;
	size_t n;
	rc = snaps_get(v, &a, &n);
	if (rc < 0)
		goto back;
	if (n && !force) {
		free(a);
		rc = -ENOTEMPTY;
		goto back;
	}
	for (size_t i = 0; i < n && !rc; i++) {
		snap_forget(RV(v), a[i].name);
		rc = rbd_snap_remove(RV(v)->img, a[i].name);
		if (rc == -ENOENT)
			rc = 0;
	}
	free(a);
	if (rc < 0)
		goto back;
	rbd_vol_unload(v);
	v = NULL;
	rc = rbd_remove(rs->io, name);
	if (rc == -ENOENT)
		rc = 0;
	goto out;
back:
	/* not removed: pinned again */
	v->next = s->open;
	s->open = v;
	v->refs = 1;
out:
	pthread_mutex_unlock(&s->mu);
	if (rc < 0 && rc != -ENOENT && rc != -EBUSY && rc != -ENOTEMPTY)
		log_error("store: rbd: removing volume %s: %s", name, strerror(-rc));
	return seen(s, rc);
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Image names of the pool (namespace); *out malloc'd, caller frees. */
static int image_names(struct store *s, rbd_image_spec_t **out, size_t *n)
{
	size_t max = 64;
	for (;;) {
		rbd_image_spec_t *a = calloc(max, sizeof(*a));
		if (!a)
			return -ENOMEM;
		size_t m = max;
		int rc = rbd_list2(RS(s)->io, a, &m);
		if (rc == -ERANGE) {
			free(a);
			max = m > max ? m : max * 2;
			continue;
		}
		if (rc < 0) {
			free(a);
			return seen(s, rc);
		}
		*out = a;
		*n = m;
		return 0;
	}
}

static int rbd_vol_list_op(struct store *s, char (**names)[STORE_NAME_MAX + 1], size_t *n)
{
	rbd_image_spec_t *im;
	size_t ni;
	int rc = image_names(s, &im, &ni);
	if (rc)
		return rc;
	char(*a)[STORE_NAME_MAX + 1] = calloc(ni ? ni : 1, sizeof(*a));
	size_t k = 0;
	for (size_t i = 0; a && i < ni; i++)
		if (name_valid(im[i].name) && peek(s, im[i].name, NULL, 0, NULL) == 0)
			snprintf(a[k++], sizeof(a[0]), "%s", im[i].name);
	rbd_image_spec_list_cleanup(im, ni);
	free(im);
	if (!a)
		return -ENOMEM;
	qsort(a, k, sizeof(*a), cmp_name);
	*names = a;
	*n = k;
	return 0;
}

static bool rbd_vol_exists_op(struct store *s, const char *name)
{
	return peek(s, name, NULL, 0, NULL) == 0;
}

static int rbd_vol_holder_op(struct store *s, const char *name, char *buf, size_t n)
{
	struct rbd_store *rs = RS(s);
	struct owner rec;
	int rc = peek(s, name, NULL, 0, &rec);
	if (rc < 0)
		return rc;
	if (!rec.gw[0])
		return -ENODATA;
	if (!strcmp(rec.gw, rs->gw))
		return -ENOENT;
	/* lock owners are only known to a read-write handle (it does not
	 * take the lock by being open) */
	rbd_image_t img;
	rc = rbd_open(rs->io, name, &img, NULL);
	if (rc < 0)
		return seen(s, rc);
	char lo[256];
	bool alive;
	rc = lock_state(img, lo, sizeof(lo), &alive);
	rbd_close(img);
	if (rc < 0)
		return seen(s, rc);
	holder_describe(&rec, lo, alive, buf, n);
	return 0;
}

static int rbd_vol_takeover_op(struct store *s, const char *name, unsigned wait_ms, char *msg,
                               size_t n)
{
	struct rbd_store *rs = RS(s);
	int rc = fenced(s);
	if (rc)
		return rc;
	struct owner rec;
	rc = peek(s, name, NULL, 0, &rec);
	if (rc < 0)
		return rc;
	if (!strcmp(rec.gw, rs->gw)) {
		struct vol *v;
		rc = vol_open(s, name, &v);
		if (rc == 0) {
			vol_close(v);
			snprintf(msg, n, "volume %s is held by this gateway already", name);
		}
		return rc;
	}
	rbd_image_t img;
	rc = rbd_open(rs->io, name, &img, NULL);
	if (rc < 0)
		return seen(s, rc);
	char lo[256], desc[1024];
	bool alive = false;
	uint64_t until = now_mono_ns() + (uint64_t)wait_ms * 1000000ull;
	for (;;) {
		rc = lock_state(img, lo, sizeof(lo), &alive);
		if (rc < 0 || !lo[0] || !alive || now_mono_ns() >= until)
			break;
		/* a killed holder's watch lapses after the OSD watch timeout */
		struct timespec ts = {0, 250000000};
		nanosleep(&ts, NULL);
	}
	if (rc < 0)
		goto out;
	if (lo[0] && alive) {
		holder_describe(&rec, lo, alive, desc, sizeof(desc));
		snprintf(msg, n, "volume %s is held by a live %s; stop that ferryd (or wait until it "
		         "is dead) first", name, desc);
		rc = -EBUSY;
		goto out;
	}
	char fenced_addr[256] = "";
	if (lo[0]) {
		/* Breaking the lock blocklists the dead holder's client: even if
		 * it was not dead after all, it can never write again. */
		rc = rbd_lock_break(img, RBD_LOCK_MODE_EXCLUSIVE, lo);
		if (rc < 0 && rc != -ENOENT) {
			snprintf(msg, n, "cannot break the lock of %s on %s: %s", lo, name,
			         strerror(-rc));
			goto out;
		}
		snprintf(fenced_addr, sizeof(fenced_addr), "%s", lo);
	}
	rc = rbd_lock_acquire(img, RBD_LOCK_MODE_EXCLUSIVE);
	if (rc < 0) {
		snprintf(msg, n, "cannot take the lock of %s: %s", name, strerror(-rc));
		goto out;
	}
	struct owner cur;
	rc = owner_get(img, &cur);
	if (rc < 0 && rc != -ENOENT)
		goto out;
	if (strcmp(cur.gw, rec.gw)) {
		snprintf(msg, n, "volume %s changed holder during the takeover (now gateway %.8s on "
		         "%s)", name, cur.gw, cur.host);
		rc = -EBUSY;
		goto out;
	}
	struct owner me;
	owner_self(s, &me);
	rc = owner_put(img, &me);
	if (rc < 0)
		goto out;
	if (!rec.gw[0]) {
		log_info("store: rbd: claimed released volume %s", name);
		snprintf(msg, n, "volume %s (released) is served here now", name);
	} else {
		log_warn("store: rbd: volume %s taken over from gateway %.8s (host %s, %s)%s%s",
		         name, rec.gw, rec.host, rec.dir, fenced_addr[0] ? "; fenced client " : "",
		         fenced_addr);
		snprintf(msg, n, "volume %s taken over from ferryd on host %s (%s)%s%s", name,
		         rec.host, rec.dir, fenced_addr[0] ? "; its client was blocklisted: " : "",
		         fenced_addr);
	}
out:
	rbd_close(img);
	if (rc == 0) {
		/* pin it here, under the lock we just took (released by close:
		 * the load takes it again, with the record naming us) */
		struct vol *v;
		rc = vol_open(s, name, &v);
		if (rc == 0)
			vol_close(v);
	}
	return seen(s, rc);
}

static int rbd_vol_release_op(struct store *s, const char *name)
{
	int rc = fenced(s);
	if (rc)
		return rc;
	pthread_mutex_lock(&s->mu);
	struct vol *v = store_find_open(s, name);
	if (!v) {
		/* not pinned: only ours if the record says so */
		struct owner rec;
		rc = peek(s, name, NULL, 0, &rec);
		pthread_mutex_unlock(&s->mu);
		if (rc < 0)
			return rc;
		if (rec.gw[0] && strcmp(rec.gw, RS(s)->gw))
			return -EBUSY;
		return 0; /* nobody holds it */
	}
	if (v->refs > 1) {
		pthread_mutex_unlock(&s->mu);
		return -EBUSY;
	}
	for (struct vol **pp = &s->open; *pp; pp = &(*pp)->next) {
		if (*pp == v) {
			*pp = v->next;
			break;
		}
	}
	/* Cleared under our lock; the unload then flushes and lets go. */
	rc = rbd_metadata_remove(RV(v)->img, KEY_OWNER);
	if (rc == -ENOENT)
		rc = 0;
	if (rc < 0) {
		v->next = s->open;
		s->open = v;
		pthread_mutex_unlock(&s->mu);
		log_error("store: rbd: %s: cannot clear its ownership record: %s", name, strerror(-rc));
		return seen(s, rc);
	}
	rbd_vol_unload(v);
	pthread_mutex_unlock(&s->mu);
	log_info("store: rbd: released volume %s", name);
	return 0;
}

/* ---- open / close ------------------------------------------------------------ */

static int gateway_identity(struct store *s)
{
	struct rbd_store *rs = RS(s);
	char p[4200];
	int rc = mkdir_p(s->dir, 0700);
	if (rc)
		return rc;
	spath(p, sizeof(p), "%s/gateway.lock", s->dir);
	rs->gw_lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (rs->gw_lock_fd < 0)
		return -errno;
	if (flock(rs->gw_lock_fd, LOCK_EX | LOCK_NB) < 0) {
		log_error("store: rbd: %s is in use by another process of this gateway", p);
		return -EBUSY;
	}
	spath(p, sizeof(p), "%s/gateway.id", s->dir);
	char *txt = NULL;
	size_t n;
	rc = read_file(p, 64, &txt, &n);
	if (rc == 0) {
		snprintf(rs->gw, sizeof(rs->gw), "%.*s", (int)MIN(n, 36u), txt);
		free(txt);
		if (strlen(rs->gw) != 36) {
			log_error("store: rbd: %s is damaged", p);
			return -EIO;
		}
	} else if (rc == -ENOENT) {
		if ((rc = store_uuid_new(rs->gw)))
			return rc;
		char line[40];
		snprintf(line, sizeof(line), "%s\n", rs->gw);
		rc = write_file_atomic(p, line, strlen(line));
		if (rc)
			return rc;
	} else {
		return rc;
	}
	if (gethostname(rs->host, sizeof(rs->host)) < 0)
		snprintf(rs->host, sizeof(rs->host), "?");
	return 0;
}

/* Removes images this gateway left half-created. */
static void drop_leftovers(struct store *s)
{
	struct rbd_store *rs = RS(s);
	rbd_image_spec_t *im;
	size_t ni;
	if (image_names(s, &im, &ni))
		return;
	char pre[64];
	snprintf(pre, sizeof(pre), NEW_PREFIX "%.8s-", rs->gw);
	for (size_t i = 0; i < ni; i++) {
		if (strncmp(im[i].name, pre, strlen(pre)))
			continue;
		int rc = rbd_remove(rs->io, im[i].name);
		log_info("store: rbd: removed unfinished volume image %s: %s", im[i].name,
		         rc < 0 ? strerror(-rc) : "ok");
	}
	rbd_image_spec_list_cleanup(im, ni);
	free(im);
}

/* Opens (and so locks) every volume whose record names this gateway, so
 * that other gateways see it alive from the start. */
static void claim_own(struct store *s)
{
	struct rbd_store *rs = RS(s);
	rbd_image_spec_t *im;
	size_t ni;
	if (image_names(s, &im, &ni))
		return;
	size_t claimed = 0;
	for (size_t i = 0; i < ni; i++) {
		struct owner rec;
		if (!name_valid(im[i].name) || peek(s, im[i].name, NULL, 0, &rec) ||
		    strcmp(rec.gw, rs->gw))
			continue;
		struct vol *v;
		int rc = vol_open(s, im[i].name, &v);
		if (rc < 0) {
			log_warn("store: rbd: cannot open this gateway's volume %s: %s", im[i].name,
			         strerror(-rc));
			continue;
		}
		vol_close(v);
		claimed++;
	}
	rbd_image_spec_list_cleanup(im, ni);
	free(im);
	if (claimed)
		log_info("store: rbd: holding %zu volume(s) of pool %s", claimed, rs->pool);
}

static void rbd_close_op(struct store *s);

static int rbd_open_op(struct store *s, const struct store_config *c)
{
	if (!c->rbd_pool || !*c->rbd_pool) {
		log_error("store: rbd: no RADOS pool given");
		return -EINVAL;
	}
	struct rbd_store *rs = calloc(1, sizeof(*rs));
	if (!rs)
		return -ENOMEM;
	rs->gw_lock_fd = -1;
	s->priv = rs;
	snprintf(rs->pool, sizeof(rs->pool), "%s", c->rbd_pool);
	snprintf(rs->ns, sizeof(rs->ns), "%s", c->rbd_namespace ? c->rbd_namespace : "");
	int rc = gateway_identity(s);
	if (rc) {
		log_error("store: rbd: gateway identity in %s: %s", s->dir, strerror(-rc));
		goto fail;
	}
	char who[128];
	snprintf(who, sizeof(who), "client.%s", c->ceph_id && *c->ceph_id ? c->ceph_id : "admin");
	rc = rados_create2(&rs->cluster, "ceph", who, 0);
	if (rc < 0) {
		log_error("store: rbd: rados_create2(%s): %s", who, strerror(-rc));
		goto fail;
	}
	rc = rados_conf_read_file(rs->cluster, c->ceph_conf && *c->ceph_conf ? c->ceph_conf : NULL);
	if (rc < 0) {
		log_error("store: rbd: cannot read the Ceph configuration %s: %s",
		          c->ceph_conf && *c->ceph_conf ? c->ceph_conf : "(default search)",
		          strerror(-rc));
		goto fail;
	}
	rados_conf_parse_env(rs->cluster, NULL);
	/* See the top of this file for the cache; the timeouts bound start-up
	 * and monitor commands when the cluster is unreachable. */
	rados_conf_set(rs->cluster, "rbd_cache", "false");
	rados_conf_set(rs->cluster, "client_mount_timeout", "30");
	rados_conf_set(rs->cluster, "rados_mon_op_timeout", "30");
	rc = rados_connect(rs->cluster);
	if (rc < 0) {
		log_error("store: rbd: cannot connect to the Ceph cluster as %s: %s", who,
		          strerror(-rc));
		goto fail;
	}
	rc = rados_ioctx_create(rs->cluster, rs->pool, &rs->io);
	if (rc < 0) {
		log_error("store: rbd: pool %s: %s", rs->pool, rc == -ENOENT ? "no such pool"
		                                                             : strerror(-rc));
		goto fail;
	}
	rados_ioctx_set_namespace(rs->io, rs->ns[0] ? rs->ns : NULL);
	char *addrs = NULL;
	if (rados_getaddrs(rs->cluster, &addrs) == 0 && addrs) {
		snprintf(rs->addr, sizeof(rs->addr), "%s", addrs);
		rados_buffer_free(addrs);
	}
	rbd_image_spec_t *im;
	size_t ni;
	rc = image_names(s, &im, &ni);
	if (rc < 0) {
		log_error("store: rbd: cannot list images of pool %s%s%s: %s", rs->pool,
		          rs->ns[0] ? " namespace " : "", rs->ns,
		          rc == -ENOENT ? "no such namespace (rbd namespace create)" : strerror(-rc));
		goto fail;
	}
	rbd_image_spec_list_cleanup(im, ni);
	free(im);
	drop_leftovers(s);
	log_info("store: rbd: gateway %.8s connected to pool %s%s%s as %s (%s)", rs->gw, rs->pool,
	         rs->ns[0] ? "/" : "", rs->ns, who, rs->addr);
	claim_own(s);
	return 0;
fail:
	rbd_close_op(s);
	return rc;
}

static void rbd_close_op(struct store *s)
{
	struct rbd_store *rs = RS(s);
	if (!rs)
		return;
	/* Unpin the volumes held for the life of the store. */
	pthread_mutex_lock(&s->mu);
	for (struct vol **pp = &s->open; *pp;) {
		struct vol *v = *pp;
		if (v->refs == 1) {
			*pp = v->next;
			rbd_vol_unload(v);
		} else {
			pp = &v->next;
		}
	}
	pthread_mutex_unlock(&s->mu);
	if (rs->io)
		rados_ioctx_destroy(rs->io);
	if (rs->cluster)
		rados_shutdown(rs->cluster);
	if (rs->gw_lock_fd >= 0)
		close(rs->gw_lock_fd);
	free(rs);
	s->priv = NULL;
}


/* ---- clones (clone format 2: no snapshot protection) ---------------------------- */

/* The children of the image img at the snapshot it is set to: their names
 * appended to *names (when names is not NULL), their count added to *n.
 * Every child counts, also one in another pool or in the trash: Ceph
 * would park the snapshot in its trash rather than delete it. */
static int children_of(struct store *s, rbd_image_t img, char (**names)[STORE_NAME_MAX + 1],
                       size_t *n, size_t *cap)
{
	size_t max = 8;
	rbd_linked_image_spec_t *c = NULL;
	int rc;
	for (;;) {
		c = calloc(max, sizeof(*c));
		if (!c)
			return -ENOMEM;
		rc = rbd_list_children3(img, c, &max);
		if (rc != -ERANGE)
			break;
		free(c);
	}
	if (rc < 0) {
		free(c);
		return seen(s, rc);
	}
	for (size_t i = 0; i < max; i++) {
		if (names) {
			if (*n == *cap) {
				size_t nc = *cap ? *cap * 2 : 8;
				void *x = realloc(*names, nc * sizeof(**names));
				if (!x) {
					rc = -ENOMEM;
					break;
				}
				*names = x;
				*cap = nc;
			}
			snprintf((*names)[*n], STORE_NAME_MAX + 1, "%s", c[i].image_name);
		}
		(*n)++;
	}
	rbd_linked_image_spec_list_cleanup(c, max);
	free(c);
	return rc < 0 ? rc : 0;
}

static int rbd_vol_clones_op(struct store *s, const char *src, const char *snap,
                             char (**names)[STORE_NAME_MAX + 1], size_t *n)
{
	int rc = fenced(s);
	if (rc)
		return rc;
	rbd_image_t img;
	rc = rbd_open_read_only(RS(s)->io, src, &img, NULL);
	if (rc < 0)
		return seen(s, rc);
	int max = 16;
	rbd_snap_info_t *si = NULL;
	for (;;) {
		si = calloc((size_t)max, sizeof(*si));
		if (!si) {
			rbd_close(img);
			return -ENOMEM;
		}
		rc = rbd_snap_list(img, si, &max);
		if (rc != -ERANGE)
			break;
		free(si);
	}
	char(*a)[STORE_NAME_MAX + 1] = NULL;
	size_t k = 0, cap = 0;
	int ns = rc;
	for (int i = 0; i < ns && rc >= 0; i++) {
		if (snap && strcmp(si[i].name, snap))
			continue;
		rc = rbd_snap_set(img, si[i].name);
		if (rc >= 0)
			rc = children_of(s, img, &a, &k, &cap);
	}
	if (ns >= 0)
		rbd_snap_list_end(si);
	free(si);
	rbd_close(img);
	if (rc < 0) {
		free(a);
		return seen(s, rc);
	}
	if (!a && !(a = malloc(sizeof(*a))))
		return -ENOMEM;
	qsort(a, k, sizeof(*a), cmp_name);
	*names = a;
	*n = k;
	return 0;
}

static int rbd_vol_clone_op(struct store *s, const char *src, const char *snap, const char *dst)
{
	struct rbd_store *rs = RS(s);
	int rc = fenced(s);
	if (rc)
		return rc;
	if (!strcmp(src, dst))
		return -EINVAL;
	rbd_image_t p;
	rc = rbd_open_read_only(rs->io, src, &p, snap);
	if (rc < 0)
		return seen(s, rc);
	rbd_image_info_t pi;
	char bs[16], uuid[37], tmp[STORE_NAME_MAX + 64];
	rc = rbd_stat(p, &pi, sizeof(pi));
	if (rc >= 0)
		rc = meta_get(p, KEY_BS, bs, sizeof(bs));
	rbd_close(p);
	if (rc < 0)
		return seen(s, rc == -ENOENT ? -EIO : rc);
	if ((rc = store_uuid_new(uuid)))
		return rc;
	/* Like a create: made under a temporary name and renamed once
	 * complete, so a crash leaves no half-made clone. */
	snprintf(tmp, sizeof(tmp), NEW_PREFIX "%.8s-%s", rs->gw, dst);
	pthread_mutex_lock(&s->mu);
	rbd_image_t img = NULL;
	rbd_image_options_t o;
	rbd_image_options_create(&o);
	rbd_image_options_set_uint64(o, RBD_IMAGE_OPTION_FEATURES, RBD_FEATURES);
	rbd_image_options_set_uint64(o, RBD_IMAGE_OPTION_ORDER, (uint64_t)pi.order);
	rbd_image_options_set_uint64(o, RBD_IMAGE_OPTION_CLONE_FORMAT, 2);
	rc = rbd_open_read_only(rs->io, dst, &img, NULL);
	if (rc == 0) {
		rbd_close(img);
		img = NULL;
		rc = -EEXIST;
		goto out;
	}
	if (rc != -ENOENT)
		goto out;
	(void)rbd_remove(rs->io, tmp);
	rc = rbd_clone3(rs->io, src, snap, rs->io, tmp, o);
	if (rc < 0)
		goto out;
	rc = rbd_open(rs->io, tmp, &img, NULL);
	/* RBD gives a clone its snapshot's size; the store's contract (and
	 * the local backend) is src's size now, past the snapshot's end
	 * reading zeros. */
	if (!rc) {
		rbd_image_t h;
		uint64_t now_size = 0;
		rc = rbd_open_read_only(rs->io, src, &h, NULL);
		if (!rc) {
			rc = rbd_get_size(h, &now_size);
			rbd_close(h);
		}
		if (!rc && now_size != pi.size)
			rc = rbd_resize2(img, now_size, now_size < pi.size, resize_progress, NULL);
	}
	/* (a clone starts with its parent's image metadata: replaced here) */
	rc = new_image_finish(s, rc, img, tmp, dst, bs, uuid);
	img = NULL;
out:
	rbd_image_options_destroy(o);
	pthread_mutex_unlock(&s->mu);
	if (rc < 0 && rc != -EEXIST && rc != -ENOENT)
		log_error("store: rbd: cloning %s@%s to %s: %s", src, snap, dst, strerror(-rc));
	return seen(s, rc);
}

struct flatten_ctx {
	store_progress_cb cb;
	void *ctx;
};

static int flatten_progress(uint64_t done, uint64_t total, void *arg)
{
	struct flatten_ctx *f = arg;
	if (f->cb)
		f->cb(f->ctx, done, total);
	return 0;
}

static int rbd_flatten_op(struct vol *v, store_progress_cb cb, void *ctx)
{
	struct rbd_vol *rv = RV(v);
	int rc = fenced(v->store);
	if (rc)
		return rc;
	rbd_linked_image_spec_t pimg;
	rbd_snap_spec_t psnap;
	rc = rbd_get_parent(rv->img, &pimg, &psnap);
	if (rc == -ENOENT)
		return -EINVAL; /* not a clone */
	if (rc < 0)
		return seen(v->store, rc);
	rbd_linked_image_spec_cleanup(&pimg);
	rbd_snap_spec_cleanup(&psnap);
	struct flatten_ctx f = {cb, ctx};
	pthread_rwlock_rdlock(&rv->lock);
	rc = rbd_flatten_with_progress(rv->img, flatten_progress, &f);
	pthread_rwlock_unlock(&rv->lock);
	if (rc < 0)
		log_error("store: rbd: %s: flatten: %s", v->name, strerror(-rc));
	return seen(v->store, rc);
}

/* "SRC@SNAP" of a clone in out (n bytes), "" for a volume without parent. */
static void parent_of(rbd_image_t img, char *out, size_t n)
{
	rbd_linked_image_spec_t pimg;
	rbd_snap_spec_t psnap;
	out[0] = '\0';
	if (rbd_get_parent(img, &pimg, &psnap) < 0)
		return;
	snprintf(out, n, "%s@%s", pimg.image_name, psnap.name);
	rbd_linked_image_spec_cleanup(&pimg);
	rbd_snap_spec_cleanup(&psnap);
}

const struct store_ops store_rbd_ops = {
	.name = "rbd",
	.caps = {
		.backend = "rbd",
		.diff_block = STORE_BLOCK,
		.diff_scope = STORE_DIFF_CHANGED, /* narrowed by content */
		.diff_reads_data = true,
		.zero_exact = false,              /* zeros are found by reading */
		.rollback_o1 = false,             /* ~ what changed since the snapshot */
		.rollback_atomic = false,         /* repeatable */
		.resize = true,                   /* rbd_resize2; snapshots keep theirs */
		.clone = true,                    /* rbd_clone3, clone format 2 */
		.shared = true,
		.io_depth = 32,                   /* network round trips: keep many in flight */
	},
	.open = rbd_open_op,
	.close = rbd_close_op,
	.vol_create = rbd_vol_create_op,
	.vol_remove = rbd_vol_remove_op,
	.vol_list = rbd_vol_list_op,
	.vol_exists = rbd_vol_exists_op,
	.vol_load = rbd_vol_load,
	.vol_unload = rbd_vol_unload,
	.vol_holder = rbd_vol_holder_op,
	.vol_takeover = rbd_vol_takeover_op,
	.vol_release = rbd_vol_release_op,
	.info = rbd_vol_info,
	.read = rbd_read_op,
	.read_extents = rbd_read_extents_op,
	.write = rbd_write_op,
	.write_zeroes = rbd_zero_op,
	.discard = rbd_zero_op,
	.flush = rbd_flush_op,
	.size = rbd_vol_size,
	.snap_create = rbd_snap_create_op,
	.snap_delete = rbd_snap_delete_op,
	.snap_list = rbd_snap_list_op,
	.snap_get = rbd_snap_get_op,
	.rollback = rbd_rollback_op,
	.diff = rbd_diff_op,
	.object_is_zero = rbd_object_is_zero_op,
	.object_mapped = rbd_object_mapped_op,
	.resize = rbd_resize_op,
	.clone = rbd_vol_clone_op,
	.clones = rbd_vol_clones_op,
	.flatten = rbd_flatten_op,
};
