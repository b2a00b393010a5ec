/* What every backend shares: choosing the backend, the table of open
 * volumes (so that every vol_open of one name shares one object), name
 * checks, and the public functions of store.h, each one call through the
 * operations table (backend.h). */
#include "store/store_int.h"

#include "common/common.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static const struct store_ops *const backends[] = {
	&store_local_ops,
#ifdef FERRY_HAVE_RBD
	&store_rbd_ops,
#endif
};

static const struct store_ops *backend_find(const char *name)
{
	if (!name || !*name)
		name = "local";
	for (size_t i = 0; i < ARRAY_SIZE(backends); i++)
		if (!strcmp(backends[i]->name, name))
			return backends[i];
	return NULL;
}

bool store_backend_available(const char *name)
{
	return backend_find(name) != NULL;
}

int store_random(void *buf, size_t n)
{
	uint8_t *p = buf;
	while (n) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int store_uuid_new(char out[37])
{
	uint8_t u[16];
	int rc = store_random(u, sizeof(u));
	if (rc)
		return rc;
	u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
	u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	         u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
	         u[13], u[14], u[15]);
	return 0;
}

/* ---- pool ----------------------------------------------------------------- */

int store_open_config(const struct store_config *c, struct store **out)
{
	const struct store_ops *ops = backend_find(c->backend);
	if (!ops) {
		log_error("store: backend '%s' is not %s", c->backend,
		          !strcmp(c->backend, "rbd") ? "built in (no librbd at build time)" : "known");
		return -EPROTONOSUPPORT;
	}
	if (!c->dir || !*c->dir) {
		log_error("store: no directory given");
		return -EINVAL;
	}
	struct store *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	/* Bounding the directory once keeps every path below it in range. */
	if (strlen(c->dir) > 3800 || spath(s->dir, sizeof(s->dir), "%s", c->dir)) {
		free(s);
		return -ENAMETOOLONG;
	}
	s->ops = ops;
	pthread_mutex_init(&s->mu, NULL);
	int rc = ops->open(s, c);
	if (rc) {
		pthread_mutex_destroy(&s->mu);
		free(s);
		return rc;
	}
	*out = s;
	return 0;
}

int store_open(const char *dir, struct store **out)
{
	struct store_config c = {.backend = "local", .dir = dir};
	return store_open_config(&c, out);
}

void store_close(struct store *s)
{
	if (!s)
		return;
	/* a backend's close drops the volumes it keeps open itself */
	s->ops->close(s);
	if (s->open)
		log_error("store: closing %s with volume %s still open", s->dir, s->open->name);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

void store_get_caps(const struct store *s, struct store_caps *out)
{
	*out = s->ops->caps;
}

void vol_get_caps(const struct vol *v, struct store_caps *out)
{
	*out = v->store->ops->caps;
}

int store_vol_create(struct store *s, const char *name, const struct vol_params *p)
{
	if (!name_valid(name)) {
		log_error("store: invalid volume name");
		return -EINVAL;
	}
	return s->ops->vol_create(s, name, p);
}

int store_vol_remove(struct store *s, const char *name, bool force)
{
	if (!name_valid(name))
		return -EINVAL;
	return s->ops->vol_remove(s, name, force);
}

int store_vol_list(struct store *s, char (**names)[STORE_NAME_MAX + 1], size_t *n)
{
	return s->ops->vol_list(s, names, n);
}

bool store_vol_exists(struct store *s, const char *name)
{
	return name_valid(name) && s->ops->vol_exists(s, name);
}

int store_vol_holder(struct store *s, const char *name, char *buf, size_t n)
{
	if (!name_valid(name))
		return -EINVAL;
	if (!s->ops->vol_holder)
		return -EOPNOTSUPP;
	return s->ops->vol_holder(s, name, buf, n);
}

int store_vol_takeover(struct store *s, const char *name, unsigned wait_ms, char *msg, size_t n)
{
	char dummy[8];
	if (!msg) {
		msg = dummy;
		n = sizeof(dummy);
	}
	msg[0] = '\0';
	if (!name_valid(name))
		return -EINVAL;
	if (!s->ops->vol_takeover)
		return -EOPNOTSUPP;
	return s->ops->vol_takeover(s, name, wait_ms, msg, n);
}

int store_vol_release(struct store *s, const char *name)
{
	if (!name_valid(name))
		return -EINVAL;
	if (!s->ops->vol_release)
		return -EOPNOTSUPP;
	return s->ops->vol_release(s, name);
}

/* ---- the open volumes --------------------------------------------------- */

struct vol *store_find_open(struct store *s, const char *name)
{
	for (struct vol *v = s->open; v; v = v->next)
		if (!strcmp(v->name, name))
			return v;
	return NULL;
}

int store_vol_get_locked(struct store *s, const char *name, struct vol **out)
{
	struct vol *v = store_find_open(s, name);
	int rc = 0;
	if (v) {
		v->refs++;
	} else {
		rc = s->ops->vol_load(s, name, &v);
		if (!rc) {
			v->next = s->open;
			s->open = v;
		}
	}
	if (!rc)
		*out = v;
	return rc;
}

int vol_open(struct store *s, const char *name, struct vol **out)
{
	if (!name_valid(name))
		return -EINVAL;
	pthread_mutex_lock(&s->mu);
	int rc = store_vol_get_locked(s, name, out);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void vol_close(struct vol *v)
{
	if (!v)
		return;
	struct store *s = v->store;
	pthread_mutex_lock(&s->mu);
	if (--v->refs > 0) {
		pthread_mutex_unlock(&s->mu);
		return;
	}
	for (struct vol **pp = &s->open; *pp; pp = &(*pp)->next) {
		if (*pp == v) {
			*pp = v->next;
			break;
		}
	}
	pthread_mutex_unlock(&s->mu);
	s->ops->vol_unload(v);
}

/* ---- clones --------------------------------------------------------------- */

int store_vol_clone(struct store *s, const char *src, const char *snap, const char *dst)
{
	if (!name_valid(src) || !name_valid(snap) || !name_valid(dst)) {
		log_error("store: clone: invalid name");
		return -EINVAL;
	}
	if (!s->ops->clone)
		return -EOPNOTSUPP;
	return s->ops->clone(s, src, snap, dst);
}

int store_vol_clones(struct store *s, const char *src, const char *snap,
                     char (**names)[STORE_NAME_MAX + 1], size_t *n)
{
	if (!name_valid(src) || (snap && !name_valid(snap)))
		return -EINVAL;
	if (!s->ops->clones)
		return -EOPNOTSUPP;
	return s->ops->clones(s, src, snap, names, n);
}

int vol_flatten(struct vol *v, store_progress_cb cb, void *ctx)
{
	if (!v->store->ops->flatten)
		return -EOPNOTSUPP;
	return v->store->ops->flatten(v, cb, ctx);
}

/* ---- volumes: one call through the table each ---------------------------- */

int vol_info(struct vol *v, struct vol_info *out)
{
	return v->store->ops->info(v, out);
}

int vol_read(struct vol *v, const char *snap, void *buf, uint64_t off, size_t len)
{
	return v->store->ops->read(v, snap, buf, off, len);
}

int vol_read_extents(struct vol *v, const char *snap, const struct extent *ext, size_t n,
                     void *buf)
{
	if (v->store->ops->read_extents)
		return v->store->ops->read_extents(v, snap, ext, n, buf);
	uint8_t *p = buf;
	for (size_t i = 0; i < n; i++) {
		int rc = v->store->ops->read(v, snap, p, ext[i].offset, (size_t)ext[i].length);
		if (rc < 0)
			return rc;
		p += ext[i].length;
	}
	return 0;
}

/* ---- the write gate of a group cut ---------------------------------------
 *
 * A writer announces itself (gate_inflight++) and then looks at gate_held;
 * the cut sets gate_held and then waits for gate_inflight to reach 0.  With
 * sequentially consistent atomics one of the two always sees the other
 * (a writer that sees the gate open was counted before the cut looked), so
 * no write slips past a closed gate and none is waited for forever.  The
 * mutex and condition variable are only touched while a cut runs: the
 * open gate costs a writer two atomic operations.  One pair for the whole
 * process: cuts are rare and short. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;

static void gate_exit(struct vol *v)
{
	if (atomic_fetch_sub(&v->gate_inflight, 1) == 1 && atomic_load(&v->gate_held)) {
		pthread_mutex_lock(&gate_mu);
		pthread_cond_broadcast(&gate_cv);
		pthread_mutex_unlock(&gate_mu);
	}
}

static void gate_enter(struct vol *v)
{
	for (;;) {
		atomic_fetch_add(&v->gate_inflight, 1);
		if (!atomic_load(&v->gate_held))
			return;
		/* a cut is on: step back (waking it if it waits for us) and wait */
		gate_exit(v);
		pthread_mutex_lock(&gate_mu);
		while (atomic_load(&v->gate_held))
			pthread_cond_wait(&gate_cv, &gate_mu);
		pthread_mutex_unlock(&gate_mu);
	}
}

int vol_write(struct vol *v, const void *buf, uint64_t off, size_t len)
{
	gate_enter(v);
	int rc = v->store->ops->write(v, buf, off, len);
	gate_exit(v);
	return rc;
}

int vol_write_zeroes(struct vol *v, uint64_t off, uint64_t len)
{
	gate_enter(v);
	int rc = v->store->ops->write_zeroes(v, off, len);
	gate_exit(v);
	return rc;
}

int vol_discard(struct vol *v, uint64_t off, uint64_t len)
{
	gate_enter(v);
	int rc = v->store->ops->discard(v, off, len);
	gate_exit(v);
	return rc;
}

/* One member's snapshot, on a thread of its own under the hold. */
struct cut_job {
	struct vol *v;
	const char *name;
	const struct cut_job *first;
	int rc;
	bool made;
	pthread_t th;
	bool started;
};

void (*store_cut_hook)(size_t member);

static void *cut_job_run(void *arg)
{
	struct cut_job *j = arg;
	if (store_cut_hook)
		store_cut_hook((size_t)(j - j->first));
	j->rc = j->v->store->ops->snap_create(j->v, j->name);
	j->made = j->rc == 0;
	return NULL;
}

int vol_snap_create_cut(struct vol *const *vols, size_t n, const char *name,
                        uint64_t *hold_ns)
{
	if (hold_ns)
		*hold_ns = 0;
	if (!name_valid(name) || n == 0 || n > STORE_CUT_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < i; k++)
			if (vols[k] == vols[i])
				return -EINVAL;
		struct snap_info si;
		if (vols[i]->store->ops->snap_get(vols[i], name, &si) == 0)
			return -EEXIST;
	}
	/* Outside the hold: push what is dirty now to the disk, so that the
	 * snapshots under it flush only what was written since.  Under a heavy
	 * load a flush takes long and the writers dirty more meanwhile: again,
	 * while a pass is slow (at most 3 passes), so the hold flushes little. */
	for (int pass = 0; pass < 3; pass++) {
		uint64_t t = now_mono_ns();
		for (size_t i = 0; i < n; i++) {
			int rc = vol_flush(vols[i]);
			if (rc < 0)
				return rc;
		}
		if (now_mono_ns() - t < 2000000ull)
			break;
	}
	struct cut_job *jobs = calloc(n, sizeof(*jobs));
	if (!jobs)
		return -ENOMEM;
	/* Only one cut at a time holds a volume's gate. */
	static pthread_mutex_t cut_mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&cut_mu);
	uint64_t t0 = now_mono_ns();
	for (size_t i = 0; i < n; i++)
		atomic_store(&vols[i]->gate_held, true);
	/* Drain: every write that entered before the gate closed finishes (and
	 * is in the snapshot); writes acknowledged before the cut already did. */
	pthread_mutex_lock(&gate_mu);
	for (size_t i = 0; i < n; i++)
		while (atomic_load(&vols[i]->gate_inflight))
			pthread_cond_wait(&gate_cv, &gate_mu);
	pthread_mutex_unlock(&gate_mu);
	/* The members in parallel: the hold is the slowest snapshot, not the
	 * sum (it matters on RBD, where each is a cluster round trip). */
	for (size_t i = 0; i < n; i++) {
		jobs[i].v = vols[i];
		jobs[i].name = name;
		jobs[i].first = jobs;
		if (i + 1 < n && pthread_create(&jobs[i].th, NULL, cut_job_run, &jobs[i]) == 0)
			jobs[i].started = true;
		else
			cut_job_run(&jobs[i]);
	}
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		if (jobs[i].started)
			pthread_join(jobs[i].th, NULL);
		if (jobs[i].rc < 0 && !rc)
			rc = jobs[i].rc;
	}
	pthread_mutex_lock(&gate_mu);
	for (size_t i = 0; i < n; i++)
		atomic_store(&vols[i]->gate_held, false);
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
	uint64_t t1 = now_mono_ns();
	pthread_mutex_unlock(&cut_mu);
	if (hold_ns)
		*hold_ns = t1 - t0;
	if (rc < 0) {
		/* all or none: the members that got the snapshot lose it again */
		for (size_t i = 0; i < n; i++)
			if (jobs[i].made && vols[i]->store->ops->snap_delete(vols[i], name) < 0)
				log_error("store: cut %s: could not delete %s@%s again", name,
				          vols[i]->name, name);
	}
	free(jobs);
	return rc;
}

int vol_resize(struct vol *v, uint64_t size)
{
	if (!v->store->ops->resize)
		return -EOPNOTSUPP;
	return v->store->ops->resize(v, size);
}

uint64_t vol_size(struct vol *v)
{
	return v->store->ops->size(v);
}

int vol_flush(struct vol *v)
{
	return v->store->ops->flush(v);
}

int vol_snap_create(struct vol *v, const char *name)
{
	if (!name_valid(name))
		return -EINVAL;
	return v->store->ops->snap_create(v, name);
}

int vol_snap_delete(struct vol *v, const char *name)
{
	return v->store->ops->snap_delete(v, name);
}

int vol_snap_list(struct vol *v, struct snap_info **out, size_t *n)
{
	return v->store->ops->snap_list(v, out, n);
}

int vol_snap_get(struct vol *v, const char *name, struct snap_info *out)
{
	return v->store->ops->snap_get(v, name, out);
}

int vol_rollback(struct vol *v, const char *name)
{
	return v->store->ops->rollback(v, name);
}

int vol_head_unchanged(struct vol *v, const char *name, bool *same)
{
	*same = false;
	if (!v->store->ops->head_unchanged)
		return -EOPNOTSUPP;
	return v->store->ops->head_unchanged(v, name, same);
}

int vol_diff(struct vol *v, const char *from, const char *to, diff_cb cb, void *ctx)
{
	return v->store->ops->diff(v, from, to, cb, ctx);
}

int vol_object_is_zero(struct vol *v, const char *snap, uint64_t objno, bool *zero)
{
	return v->store->ops->object_is_zero(v, snap, objno, zero);
}

int vol_object_mapped(struct vol *v, const char *snap, uint64_t objno, bool *mapped)
{
	if (v->store->ops->object_mapped)
		return v->store->ops->object_mapped(v, snap, objno, mapped);
	bool zero;
	int rc = v->store->ops->object_is_zero(v, snap, objno, &zero);
	if (!rc)
		*mapped = !zero;
	return rc;
}
