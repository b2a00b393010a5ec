/* The pool: a directory of volumes, and the table of open volumes so that
 * every vol_open of one name shares one object. */
#include "store/store_int.h"

#include "common/common.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static int random_bytes(void *buf, size_t n)
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

int store_open(const char *dir, struct store **out)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	/* Bounding the pool path once keeps every path below it in range. */
	if (strlen(dir) > 3800 || spath(s->dir, sizeof(s->dir), "%s", dir)) {
		free(s);
		return -ENAMETOOLONG;
	}
	spath(s->vdir, sizeof(s->vdir), "%s/volumes", dir);
	int rc = mkdir_p(s->vdir, 0700);
	if (rc) {
		log_error("store: mkdir %s: %s", s->vdir, strerror(-rc));
		free(s);
		return rc;
	}
	/* Every layer keeps its data segment files open. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	/* Leftovers of interrupted creates and removes are invisible; drop them. */
	DIR *d = opendir(s->vdir);
	if (d) {
		struct dirent *de;
		char p[8400];
		while ((de = readdir(d))) {
			size_t L = strlen(de->d_name);
			if (!strncmp(de->d_name, ".trash-", 7) ||
			    (de->d_name[0] == '.' && L > 5 && !strcmp(de->d_name + L - 4, ".tmp"))) {
				spath(p, sizeof(p), "%s/%s", s->vdir, de->d_name);
				rm_rf(p);
			}
		}
		closedir(d);
	}
	pthread_mutex_init(&s->mu, NULL);
	*out = s;
	return 0;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	if (s->open)
		log_error("store: closing %s with volume %s still open", s->dir, s->open->name);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

int store_vol_create(struct store *s, const char *name, const struct vol_params *p)
{
	if (!name_valid(name)) {
		log_error("store: invalid volume name");
		return -EINVAL;
	}
	struct vol_params vp;
	int rc = store_params_check(p, &vp);
	if (rc)
		return rc;
	struct store_meta m = {.size = vp.size, .object_size = vp.object_size,
	                       .block_size = vp.block_size, .head_epoch = 1, .next_snap_id = 1};
	uint8_t u[16];
	rc = random_bytes(u, sizeof(u));
	if (rc)
		return rc;
	u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
	u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
	snprintf(m.uuid, sizeof(m.uuid),
	         "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
	         u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
	         u[15]);
	char fin[8400], tmp[8400], pth[8500];
	spath(fin, sizeof(fin), "%s/%s", s->vdir, name);
	spath(tmp, sizeof(tmp), "%s/.%s.tmp", s->vdir, name);
	pthread_mutex_lock(&s->mu);
	struct stat st;
	if (lstat(fin, &st) == 0) {
		rc = -EEXIST;
		goto out;
	}
	rm_rf(tmp);
	spath(pth, sizeof(pth), "%s/layers", tmp);
	rc = mkdir_p(pth, 0700);
	char *txt = NULL;
	size_t n;
	if (!rc)
		rc = store_meta_format(&m, &txt, &n);
	if (!rc) {
		spath(pth, sizeof(pth), "%s/volume.meta", tmp);
		rc = write_file_atomic(pth, txt, n);
		free(txt);
	}
	if (!rc && rename(tmp, fin) < 0)
		rc = -errno;
	if (!rc)
		rc = fsync_path(s->vdir);
	if (rc) {
		log_error("store: creating volume %s: %s", name, strerror(-rc));
		rm_rf(tmp);
	}
out:
	pthread_mutex_unlock(&s->mu);
	return rc;
}

static struct vol *find_open(struct store *s, const char *name)
{
	for (struct vol *v = s->open; v; v = v->next)
		if (!strcmp(v->name, name))
			return v;
	return NULL;
}

int store_vol_remove(struct store *s, const char *name, bool force)
{
	if (!name_valid(name))
		return -EINVAL;
	pthread_mutex_lock(&s->mu);
	int rc = 0;
	char p[8400], t[8400], *txt = NULL;
	size_t n;
	if (find_open(s, name)) {
		rc = -EBUSY;
		goto out;
	}
	spath(p, sizeof(p), "%s/%s/volume.meta", s->vdir, name);
	rc = read_file(p, META_MAX_BYTES, &txt, &n);
	if (rc)
		goto out;
	struct store_meta m;
	const char *why;
	rc = store_meta_parse(txt, n, &m, &why);
	free(txt);
	if (rc == 0) {
		bool has = m.n_snaps > 0;
		store_meta_free(&m);
		if (has && !force) {
			rc = -ENOTEMPTY;
			goto out;
		}
	} else if (!force) {
		log_error("store: %s: %s (remove with force)", p, why);
		goto out;
	}
	uint8_t r[8];
	random_bytes(r, sizeof(r));
	spath(p, sizeof(p), "%s/%s", s->vdir, name);
	spath(t, sizeof(t), "%s/.trash-%s-%02x%02x%02x%02x%02x%02x%02x%02x", s->vdir, name, r[0],
	         r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
	if (rename(p, t) < 0) {
		rc = -errno;
		log_error("store: rename %s: %s", p, strerror(-rc));
		goto out;
	}
	rc = fsync_path(s->vdir);
	int e = rm_rf(t);
	if (e)
		log_warn("store: removing %s: %s", t, strerror(-e));
out:
	pthread_mutex_unlock(&s->mu);
	return rc;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(a, b);
}

int store_vol_list(struct store *s, char (**names)[STORE_NAME_MAX + 1], size_t *n)
{
	DIR *d = opendir(s->vdir);
	if (!d)
		return -errno;
	char(*a)[STORE_NAME_MAX + 1] = NULL;
	size_t k = 0, cap = 0;
	struct dirent *de;
	int rc = 0;
	while ((de = readdir(d))) {
		if (!name_valid(de->d_name) || !store_vol_exists(s, de->d_name))
			continue;
		if (k == cap) {
			cap = cap ? cap * 2 : 16;
			void *nn = realloc(a, cap * sizeof(*a));
			if (!nn) {
				rc = -ENOMEM;
				break;
			}
			a = nn;
		}
		memcpy(a[k++], de->d_name, strlen(de->d_name) + 1); /* name_valid: <= 64 */
	}
	closedir(d);
	if (rc) {
		free(a);
		return rc;
	}
	if (!a && !(a = malloc(sizeof(*a))))
		return -ENOMEM;
	qsort(a, k, sizeof(*a), cmp_name);
	*names = a;
	*n = k;
	return 0;
}

bool store_vol_exists(struct store *s, const char *name)
{
	if (!name_valid(name))
		return false;
	char p[8400];
	struct stat st;
	spath(p, sizeof(p), "%s/%s/volume.meta", s->vdir, name);
	return stat(p, &st) == 0;
}

int vol_open(struct store *s, const char *name, struct vol **out)
{
	if (!name_valid(name))
		return -EINVAL;
	pthread_mutex_lock(&s->mu);
	struct vol *v = find_open(s, name);
	int rc = 0;
	if (v) {
		v->refs++;
	} else {
		rc = vol_load(s, name, &v);
		if (!rc) {
			v->next = s->open;
			s->open = v;
		}
	}
	pthread_mutex_unlock(&s->mu);
	if (!rc)
		*out = v;
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
	vol_flush(v);
	vol_free(v);
}
