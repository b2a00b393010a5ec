/* Layers: the blocks written during one epoch.  A map file of per-object
 * bitmap records (mmap'd MAP_SHARED so that a bit update is a memory store
 * that survives kill -9) plus sparse data files of 1 TiB segments. */
#include "store/store_int.h"

#include "common/common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

int spath(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	if (r < 0 || (size_t)r >= n) {
		buf[0] = '\0';
		return -ENAMETOOLONG;
	}
	return 0;
}

size_t layer_map_len_for(const struct vol *v, uint64_t objects)
{
	uint64_t n = MAP_HDR + objects * v->rec;
	return (size_t)((n + 4095) & ~4095ull);
}

size_t layer_map_len(const struct vol *v)
{
	return layer_map_len_for(v, v->objects);
}

/* The header records the tag the layer was created with; a snapshot delete
 * may later rename the layer, so the directory name is the truth. */
static void layer_header_encode(const struct vol *v, uint64_t tag, uint64_t objects,
                                uint8_t hdr[MAP_HDR])
{
	memset(hdr, 0, MAP_HDR);
	memcpy(hdr, MAP_MAGIC, 8);
	put_le32(hdr + 8, MAP_VERSION);
	put_le32(hdr + 12, v->rec);
	put_le64(hdr + 16, tag);
	put_le32(hdr + 24, v->meta.object_size);
	put_le32(hdr + 28, v->bpo);
	put_le64(hdr + 32, objects);
	put_le32(hdr + 40, crc32c(0, hdr, 40));
}

/* The object count may exceed the volume's: a resize was interrupted
 * (the layers are extended before volume.meta grows, and volume.meta
 * shrinks before the layers do); the caller fits the layer to the volume
 * (vol_load).  Fewer objects than the volume is corruption. */
static int header_check(const struct vol *v, const uint8_t *hdr, uint64_t *objects)
{
	if (memcmp(hdr, MAP_MAGIC, 8) || get_le32(hdr + 40) != crc32c(0, hdr, 40))
		return -EIO;
	uint64_t n = get_le64(hdr + 32);
	if (get_le32(hdr + 8) != MAP_VERSION || get_le32(hdr + 12) != v->rec ||
	    get_le32(hdr + 24) != v->meta.object_size ||
	    get_le32(hdr + 28) != v->bpo || n < v->objects ||
	    n > DIV_ROUND_UP(STORE_MAX_SIZE, v->meta.object_size))
		return -EIO;
	*objects = n;
	return 0;
}

void layer_free(struct layer *l)
{
	if (!l)
		return;
	if (l->map)
		munmap(l->map, l->map_len);
	if (l->map_fd >= 0)
		close(l->map_fd);
	for (unsigned i = 0; i < MAX_SEGS; i++)
		if (l->seg_fd[i] >= 0)
			close(l->seg_fd[i]);
	free(l->pages);
	free(l->objs);
	free(l);
}

static int objs_push(struct layer *l, uint64_t objno)
{
	if (l->n_objs == l->cap_objs) {
		size_t cap = l->cap_objs ? l->cap_objs * 2 : 64;
		uint64_t *n = realloc(l->objs, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		l->objs = n;
		l->cap_objs = cap;
	}
	if (l->n_objs && l->objs[l->n_objs - 1] > objno)
		l->sorted = false;
	l->objs[l->n_objs++] = objno;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

void layer_sort(struct layer *l)
{
	if (!l->sorted && l->n_objs) {
		qsort(l->objs, l->n_objs, sizeof(*l->objs), cmp_u64);
		l->sorted = true;
	}
}

static struct layer *layer_alloc(struct vol *v, uint64_t tag, uint64_t objects)
{
	struct layer *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->tag = tag;
	l->map_fd = -1;
	l->sorted = true;
	for (unsigned i = 0; i < MAX_SEGS; i++)
		l->seg_fd[i] = -1;
	spath(l->path, sizeof(l->path), "%s/layers/%016llx", v->dir, (unsigned long long)tag);
	l->objects = objects;
	l->map_len = layer_map_len_for(v, objects);
	size_t pages = l->map_len / 4096;
	l->pages = calloc((pages + 63) / 64, sizeof(uint64_t));
	if (!l->pages) {
		free(l);
		return NULL;
	}
	return l;
}

static bool rec_has_present(const struct vol *v, const uint8_t *r)
{
	return !buf_is_zero(r, v->bpo / 8);
}

/* Builds the in-memory index (allocated map pages, objects with records)
 * by walking only the allocated parts of the sparse map file, so opening
 * costs what was written, not the volume size. */
static int layer_scan(struct vol *v, struct layer *l, int fd)
{
	off_t pos = MAP_HDR;
	off_t end = (off_t)l->map_len;
	while (pos < end) {
		off_t d = lseek(fd, pos, SEEK_DATA);
		if (d < 0) {
			if (errno == ENXIO)
				break;
			return -errno;
		}
		off_t h = lseek(fd, d, SEEK_HOLE);
		if (h < 0)
			return -errno;
		if (h > end)
			h = end;
		for (uint64_t pg = (uint64_t)d / 4096; pg < ((uint64_t)h + 4095) / 4096; pg++)
			l->pages[pg / 64] |= 1ull << (pg % 64);
		uint64_t first = ((uint64_t)d < MAP_HDR ? 0 : ((uint64_t)d - MAP_HDR) / v->rec);
		uint64_t last = ((uint64_t)h - MAP_HDR + v->rec - 1) / v->rec;
		if (last > l->objects)
			last = l->objects;
		for (uint64_t o = first; o < last; o++) {
			if (rec_has_present(v, l->map + MAP_HDR + o * v->rec)) {
				int rc = objs_push(l, o);
				if (rc)
					return rc;
			}
		}
		pos = h;
	}
	return 0;
}

int layer_load(struct vol *v, uint64_t tag, struct layer **out)
{
	char dir[4200], p[4200];
	spath(dir, sizeof(dir), "%s/layers/%016llx", v->dir, (unsigned long long)tag);
	spath(p, sizeof(p), "%s/map", dir);
	int fd = open(p, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int rc = -errno;
		log_error("store: %s: open: %s", p, strerror(-rc));
		return rc;
	}
	struct stat st;
	uint8_t hdr[MAP_HDR];
	uint64_t objects = 0;
	if (fstat(fd, &st) < 0 || pread_full(fd, hdr, sizeof(hdr), 0) ||
	    header_check(v, hdr, &objects) ||
	    (uint64_t)st.st_size != layer_map_len_for(v, objects)) {
		log_error("store: %s: bad layer map header or size", p);
		close(fd);
		return -EIO;
	}
	struct layer *l = layer_alloc(v, tag, objects);
	if (!l) {
		close(fd);
		return -ENOMEM;
	}
	int rc;
	l->map = mmap(NULL, l->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (l->map == MAP_FAILED) {
		rc = -errno;
		l->map = NULL;
		log_error("store: %s: mmap: %s", p, strerror(-rc));
		close(fd);
		goto fail;
	}
	rc = layer_scan(v, l, fd);
	close(fd);
	if (rc) {
		log_error("store: %s: scan: %s", p, strerror(-rc));
		goto fail;
	}
	for (unsigned s = 0; s < MAX_SEGS; s++) {
		spath(p, sizeof(p), "%s/d%u", l->path, s);
		l->seg_fd[s] = open(p, O_RDWR | O_CLOEXEC);
		if (l->seg_fd[s] < 0 && errno != ENOENT) {
			rc = -errno;
			log_error("store: %s: open: %s", p, strerror(-rc));
			goto fail;
		}
	}
	*out = l;
	return 0;
fail:
	layer_free(l);
	return rc;
}

int layer_create(struct vol *v, uint64_t tag, struct layer **out)
{
	char tmp[4200], p[4200], fin[4200];
	spath(fin, sizeof(fin), "%s/layers/%016llx", v->dir, (unsigned long long)tag);
	spath(tmp, sizeof(tmp), "%s.tmp", fin);
	rm_rf(tmp);
	if (mkdir(tmp, 0700) < 0) {
		int e = -errno;
		log_error("store: mkdir %s: %s", tmp, strerror(-e));
		return e;
	}
	spath(p, sizeof(p), "%s/map", tmp);
	int fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int rc = 0;
	if (fd < 0) {
		rc = -errno;
	} else {
		uint8_t hdr[MAP_HDR];
		layer_header_encode(v, tag, v->objects, hdr);
		rc = pwrite_full(fd, hdr, sizeof(hdr), 0);
		if (!rc && ftruncate(fd, (off_t)layer_map_len(v)) < 0)
			rc = -errno;
		/* The header is durable before the name is, so a bad header
		 * is always corruption, never a half-created layer. */
		if (!rc && fdatasync(fd) < 0)
			rc = -errno;
		close(fd);
	}
	if (!rc && rename(tmp, fin) < 0)
		rc = -errno;
	if (rc) {
		log_error("store: creating layer %s: %s", fin, strerror(-rc));
		rm_rf(tmp);
		return rc;
	}
	rc = layer_load(v, tag, out);
	if (rc)
		return rc;
	/* The directory entries are made durable by the next flush: until
	 * then, losing the whole layer only loses unflushed writes. */
	(*out)->created_dirty = true;
	return 0;
}

int layer_open_map_fd(struct layer *l)
{
	if (l->map_fd >= 0)
		return 0;
	char p[4200];
	spath(p, sizeof(p), "%s/map", l->path);
	l->map_fd = open(p, O_RDWR | O_CLOEXEC);
	if (l->map_fd < 0) {
		int e = -errno;
		log_error("store: %s: open: %s", p, strerror(-e));
		return e;
	}
	return 0;
}

int layer_prepare_rec(struct vol *v, struct layer *l, uint64_t objno)
{
	uint64_t off = MAP_HDR + objno * v->rec;
	uint64_t pg = off / 4096;
	uint64_t *w = &l->pages[pg / 64];
	uint64_t bit = 1ull << (pg % 64);
	int rc;
	if (!(__atomic_load_n(w, __ATOMIC_ACQUIRE) & bit)) {
		/* Allocate the page now so that a full disk is an error here
		 * rather than a SIGBUS on the store into the mapping. */
		rc = layer_open_map_fd(l);
		if (rc)
			return rc;
		if (fallocate(l->map_fd, 0, (off_t)(pg * 4096), 4096) < 0) {
			rc = -errno;
			log_error("store: %s/map: fallocate: %s", l->path, strerror(-rc));
			return rc;
		}
		__atomic_fetch_or(w, bit, __ATOMIC_RELEASE);
	}
	if (!rec_has_present(v, l->map + off)) {
		rc = objs_push(l, objno);
		if (rc)
			return rc;
	}
	__atomic_store_n(&l->map_dirty, true, __ATOMIC_RELEASE);
	return 0;
}

int layer_seg_fd(struct layer *l, unsigned seg, bool create)
{
	if (l->seg_fd[seg] >= 0 || !create)
		return l->seg_fd[seg];
	char p[4200];
	spath(p, sizeof(p), "%s/d%u", l->path, seg);
	int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = -errno;
		log_error("store: %s: create: %s", p, strerror(-e));
		return e;
	}
	l->seg_fd[seg] = fd;
	__atomic_store_n(&l->dir_dirty, true, __ATOMIC_RELEASE);
	return fd;
}

void layer_dirty_take(struct layer *l, struct layer_dirty *d)
{
	d->segs = __atomic_exchange_n(&l->seg_dirty, 0, __ATOMIC_ACQ_REL);
	d->map = __atomic_exchange_n(&l->map_dirty, false, __ATOMIC_ACQ_REL);
	d->dir = __atomic_exchange_n(&l->dir_dirty, false, __ATOMIC_ACQ_REL);
	d->created = __atomic_exchange_n(&l->created_dirty, false, __ATOMIC_ACQ_REL);
}

/* A failed sync leaves everything it was to sync dirty again, for the
 * next flush to retry (atomically: writers may be marking meanwhile). */
static int dirty_restore(struct layer *l, const struct layer_dirty *d, int rc)
{
	__atomic_fetch_or(&l->seg_dirty, d->segs, __ATOMIC_ACQ_REL);
	if (d->map)
		__atomic_store_n(&l->map_dirty, true, __ATOMIC_RELEASE);
	if (d->dir)
		__atomic_store_n(&l->dir_dirty, true, __ATOMIC_RELEASE);
	if (d->created)
		__atomic_store_n(&l->created_dirty, true, __ATOMIC_RELEASE);
	return rc;
}

int layer_sync_dirty(struct layer *l, const struct layer_dirty *d)
{
	int rc = 0;
	for (unsigned s = 0; s < MAX_SEGS; s++) {
		if (!(d->segs & (1u << s)))
			continue;
		if (fdatasync(l->seg_fd[s]) < 0) {
			rc = -errno;
			log_error("store: %s/d%u: fdatasync: %s", l->path, s, strerror(-rc));
			return dirty_restore(l, d, rc);
		}
	}
	if (d->map || d->created) {
		if (msync(l->map, l->map_len, MS_SYNC) < 0) {
			rc = -errno;
			log_error("store: %s/map: msync: %s", l->path, strerror(-rc));
			return dirty_restore(l, d, rc);
		}
	}
	if (d->dir || d->created) {
		rc = fsync_path(l->path);
		if (rc) {
			log_error("store: fsync %s: %s", l->path, strerror(-rc));
			return dirty_restore(l, d, rc);
		}
	}
	if (d->created) {
		char p[4200];
		snprintf(p, sizeof(p), "%s", l->path);
		*strrchr(p, '/') = '\0';
		rc = fsync_path(p);
		if (rc) {
			log_error("store: fsync %s: %s", p, strerror(-rc));
			return dirty_restore(l, d, rc);
		}
	}
	return 0;
}

int layer_sync(struct layer *l)
{
	struct layer_dirty d;
	layer_dirty_take(l, &d);
	return layer_sync_dirty(l, &d);
}

uint64_t layer_allocated(const struct layer *l)
{
	uint64_t n = 0;
	struct stat st;
	for (unsigned s = 0; s < MAX_SEGS; s++)
		if (l->seg_fd[s] >= 0 && fstat(l->seg_fd[s], &st) == 0)
			n += (uint64_t)st.st_blocks * 512;
	return n;
}

int layer_rename(struct vol *v, struct layer *l, uint64_t tag)
{
	char p[4200];
	spath(p, sizeof(p), "%s/layers/%016llx", v->dir, (unsigned long long)tag);
	if (rename(l->path, p) < 0) {
		int e = -errno;
		log_error("store: rename %s -> %s: %s", l->path, p, strerror(-e));
		return e;
	}
	spath(l->path, sizeof(l->path), "%s", p);
	l->tag = tag;
	return 0;
}

int layer_set_objects(struct vol *v, struct layer *l, uint64_t objects)
{
	if (objects == l->objects)
		return 0;
	int rc = layer_open_map_fd(l);
	if (rc)
		return rc;
	size_t old_len = l->map_len, len = layer_map_len_for(v, objects);
	size_t old_words = (old_len / 4096 + 63) / 64, words = (len / 4096 + 63) / 64;
	if (words > old_words) {
		uint64_t *pg = realloc(l->pages, words * sizeof(*pg));
		if (!pg)
			return -ENOMEM;
		memset(pg + old_words, 0, (words - old_words) * sizeof(*pg));
		l->pages = pg;
	}
	/* The mapping never reaches past the end of the file: a store there
	 * would be a SIGBUS.  Growing: the file first; shrinking: the mapping. */
	if (len > old_len && ftruncate(l->map_fd, (off_t)len) < 0) {
		rc = -errno;
		log_error("store: %s/map: ftruncate: %s", l->path, strerror(-rc));
		return rc;
	}
	if (len != old_len) {
		void *m = mremap(l->map, old_len, len, MREMAP_MAYMOVE);
		if (m == MAP_FAILED) {
			rc = -errno;
			log_error("store: %s/map: mremap: %s", l->path, strerror(-rc));
			return rc;
		}
		l->map = m;
		l->map_len = len;
	}
	if (len < old_len) {
		if (ftruncate(l->map_fd, (off_t)len) < 0) {
			rc = -errno;
			log_error("store: %s/map: ftruncate: %s", l->path, strerror(-rc));
			return rc;
		}
		/* pages past the end are gone: forget them */
		size_t np = len / 4096;
		for (size_t pg = np; pg < (old_len / 4096); pg++)
			l->pages[pg / 64] &= ~(1ull << (pg % 64));
	}
	size_t k = 0;
	for (size_t i = 0; i < l->n_objs; i++)
		if (l->objs[i] < objects)
			l->objs[k++] = l->objs[i];
	l->n_objs = k;
	uint8_t hdr[MAP_HDR];
	layer_header_encode(v, l->tag, objects, hdr);
	rc = pwrite_full(l->map_fd, hdr, sizeof(hdr), 0);
	if (!rc && fdatasync(l->map_fd) < 0)
		rc = -errno;
	if (rc) {
		log_error("store: %s/map: header: %s", l->path, strerror(-rc));
		return rc;
	}
	l->objects = objects;
	return 0;
}
