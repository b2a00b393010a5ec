/* What every backend shares: choosing the backend, the table of open
 * volumes (so that every vol_open of one name shares one object), name
 * checks, and the public functions of store.h, each one call through the
 * operations table (backend.h). */
#include "store/store_int.h"

#include "common/common.h"

#include <errno.h>
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

int vol_write(struct vol *v, const void *buf, uint64_t off, size_t len)
{
	return v->store->ops->write(v, buf, off, len);
}

int vol_write_zeroes(struct vol *v, uint64_t off, uint64_t len)
{
	return v->store->ops->write_zeroes(v, off, len);
}

int vol_discard(struct vol *v, uint64_t off, uint64_t len)
{
	return v->store->ops->discard(v, off, len);
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
