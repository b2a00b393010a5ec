/* The local backend's pool: a directory of volumes (POOL/volumes/NAME). */
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


int local_open(struct store *s, const struct store_config *c)
{
	spath(s->vdir, sizeof(s->vdir), "%s/volumes", s->dir);
	int rc = mkdir_p(s->vdir, 0700);
	if (rc) {
		log_error("store: mkdir %s: %s", s->vdir, strerror(-rc));
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
	return 0;
}

void local_close(struct store *s)
{
	(void)s;
}

int local_vol_create(struct store *s, const char *name, const struct vol_params *p)
{
	struct vol_params vp;
	int rc = store_params_check(p, &vp);
	if (rc)
		return rc;
	struct store_meta m = {.size = vp.size, .object_size = vp.object_size,
	                       .block_size = vp.block_size, .head_epoch = 1, .next_snap_id = 1};
	rc = store_uuid_new(m.uuid);
	if (rc)
		return rc;
	return local_vol_create_meta(s, name, &m);
}

int local_vol_create_meta(struct store *s, const char *name, const struct store_meta *m)
{
	pthread_mutex_lock(&s->mu);
	int rc = local_vol_create_meta_locked(s, name, m);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

int local_vol_create_meta_locked(struct store *s, const char *name, const struct store_meta *m)
{
	int rc;
	char fin[8400], tmp[8400], pth[8500];
	spath(fin, sizeof(fin), "%s/%s", s->vdir, name);
	spath(tmp, sizeof(tmp), "%s/.%s.tmp", s->vdir, name);
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
		rc = store_meta_format(m, &txt, &n);
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
	return rc;
}

/* Reads and parses volume name's volume.meta.  m owned by the caller. */
int local_meta_read(struct store *s, const char *name, struct store_meta *m)
{
	char p[8400], *txt = NULL;
	size_t n;
	spath(p, sizeof(p), "%s/%s/volume.meta", s->vdir, name);
	int rc = read_file(p, META_MAX_BYTES, &txt, &n);
	if (rc)
		return rc;
	const char *why;
	rc = store_meta_parse(txt, n, m, &why);
	free(txt);
	return rc;
}

int local_vol_clones(struct store *s, const char *src, const char *snap,
                     char (**names)[STORE_NAME_MAX + 1], size_t *n)
{
	char(*all)[STORE_NAME_MAX + 1] = NULL;
	size_t na = 0, k = 0;
	/* The clones' own volume.meta is the one truth (each is created and
	 * flattened atomically there): nothing in the parent can go stale. */
	int rc = local_vol_list(s, &all, &na);
	if (rc)
		return rc;
	for (size_t i = 0; i < na; i++) {
		struct store_meta m;
		if (local_meta_read(s, all[i], &m))
			continue;
		bool hit = !strcmp(m.parent, src) && (!snap || !strcmp(m.parent_snap, snap));
		store_meta_free(&m);
		if (hit)
			memmove(all[k++], all[i], sizeof(all[i]));
	}
	*names = all;
	*n = k;
	return 0;
}

int local_vol_remove(struct store *s, const char *name, bool force)
{
	pthread_mutex_lock(&s->mu);
	int rc = 0;
	char p[8400], t[8400], *txt = NULL;
	size_t n;
	if (store_find_open(s, name)) {
		rc = -EBUSY;
		goto out;
	}
	char(*cl)[STORE_NAME_MAX + 1] = NULL;
	size_t ncl = 0;
	if (local_vol_clones(s, name, NULL, &cl, &ncl) == 0) {
		free(cl);
		if (ncl) {
			rc = -EBUSY; /* store_vol_clones names them */
			goto out;
		}
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
	store_random(r, sizeof(r));
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

int local_vol_list(struct store *s, char (**names)[STORE_NAME_MAX + 1], size_t *n)
{
	DIR *d = opendir(s->vdir);
	if (!d)
		return -errno;
	char(*a)[STORE_NAME_MAX + 1] = NULL;
	size_t k = 0, cap = 0;
	struct dirent *de;
	int rc = 0;
	while ((de = readdir(d))) {
		if (!name_valid(de->d_name) || !local_vol_exists(s, de->d_name))
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

bool local_vol_exists(struct store *s, const char *name)
{
	char p[8400];
	struct stat st;
	spath(p, sizeof(p), "%s/%s/volume.meta", s->vdir, name);
	return stat(p, &st) == 0;
}
