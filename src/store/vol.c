/* Volumes: reads resolve each 4 KiB block to the newest layer that defines
 * it; writes go to the head layer; snapshots are epochs; diffs are unions
 * of layer bitmaps.  See docs/FORMAT.md for the on-disk side and the
 * crash-safety argument. */
#include "store/store_int.h"

#include "common/common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEG_MASK ((1ull << SEG_SHIFT) - 1)

static const uint8_t zero_block[STORE_BLOCK];

int (*store_fold_fault)(uint64_t folded);
void (*store_resize_hook)(int step);
void (*store_flatten_hook)(uint64_t objno);

/* ---- helpers ------------------------------------------------------------ */

static int cmp_tag(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static const struct meta_snap *snap_find(const struct vol *v, const char *name, size_t *idx)
{
	for (size_t i = 0; i < v->meta.n_snaps; i++) {
		if (!strcmp(v->meta.snaps[i].name, name)) {
			if (idx)
				*idx = i;
			return &v->meta.snaps[i];
		}
	}
	return NULL;
}

/* Epoch seen by a reader of snap (NULL = head: every layer). */
static int epoch_of(const struct vol *v, const char *snap, uint64_t *ep)
{
	if (!snap) {
		*ep = v->meta.head_epoch;
		return 0;
	}
	const struct meta_snap *s = snap_find(v, snap, NULL);
	if (!s)
		return -ENOENT;
	*ep = s->epoch;
	return 0;
}

/* Number of layers with tag <= ep (they are layers[0 .. n)). */
static size_t layers_upto(const struct vol *v, uint64_t ep)
{
	size_t n = v->n_layers;
	while (n && v->layers[n - 1]->tag > ep)
		n--;
	return n;
}

static struct layer *layer_find(const struct vol *v, uint64_t tag, size_t *idx)
{
	for (size_t i = 0; i < v->n_layers; i++) {
		if (v->layers[i]->tag == tag) {
			if (idx)
				*idx = i;
			return v->layers[i];
		}
	}
	return NULL;
}

static bool layer_has_page(const struct vol *v, const struct layer *l, uint64_t objno)
{
	uint64_t pg = (MAP_HDR + objno * v->rec) / 4096;
	return (__atomic_load_n(&l->pages[pg / 64], __ATOMIC_ACQUIRE) >> (pg % 64)) & 1;
}

/* 4 KiB blocks in object objno (the last object may be shorter). */
static uint32_t obj_blocks(const struct vol *v, uint64_t objno)
{
	uint64_t start = objno * v->meta.object_size;
	uint64_t end = MIN(start + v->meta.object_size, v->meta.size);
	return (uint32_t)DIV_ROUND_UP(end - start, STORE_BLOCK);
}

/* For blocks [i0, i1) of objno: owner[i - i0] = index into layers[0..k) of
 * the newest layer whose present bit is set, or -1. */
static void resolve(const struct vol *v, size_t k, uint64_t objno, uint32_t i0, uint32_t i1,
                    int32_t *owner)
{
	uint32_t left = i1 - i0;
	for (uint32_t i = i0; i < i1; i++)
		owner[i - i0] = -1;
	for (size_t j = k; j-- > 0 && left;) {
		const struct layer *l = v->layers[j];
		if (!layer_has_page(v, l, objno))
			continue;
		const uint8_t *pr = layer_rec(v, l, objno);
		for (uint32_t i = i0; i < i1;) {
			if ((i & 7) == 0 && i + 8 <= i1 &&
			    __atomic_load_n(&pr[i >> 3], __ATOMIC_ACQUIRE) == 0) {
				i += 8;
				continue;
			}
			if (owner[i - i0] < 0 && rec_bit(pr, i)) {
				owner[i - i0] = (int32_t)j;
				left--;
			}
			i++;
		}
	}
}

/* Layer index holding data for the block, or -1 when it reads as zeros. */
static int32_t data_owner(const struct vol *v, int32_t o, uint64_t objno, uint32_t i)
{
	if (o < 0)
		return -1;
	const uint8_t *r = layer_rec(v, v->layers[o], objno);
	return rec_bit(r + v->bpo / 8, i) ? o : -1;
}

/* Where block i is read from, given its owner o (resolve): a layer index
 * (its data), -1 (zeros) or -2 (no layer of this clone decides it: the
 * parent's snapshot does). */
static int32_t block_src(const struct vol *v, int32_t o, uint64_t objno, uint32_t i)
{
	if (o < 0)
		return v->parent ? -2 : -1;
	return data_owner(v, o, objno, i);
}

static int read_epoch(struct vol *v, uint64_t ep, void *buf, uint64_t off, uint64_t len);
static int parent_object_zero(struct vol *v, uint64_t objno, bool *zero);

/* Reads [off, off+len) of a clone's parent at the clone's snapshot.  The
 * parent may have grown since (never shrunk: the snapshot is pinned);
 * past its size the snapshot reads zeros. */
static int parent_read(struct vol *v, uint8_t *buf, uint64_t off, uint64_t len)
{
	struct vol *p = v->parent;
	uint64_t psize = local_vol_size(p);
	uint64_t n = off < psize ? MIN(len, psize - off) : 0;
	if (n < len)
		memset(buf + n, 0, len - n);
	return n ? read_epoch(p, v->meta.parent_epoch, buf, off, n) : 0;
}

static int read_upto(struct vol *v, size_t k, uint8_t *buf, uint64_t off, uint64_t len,
                     int32_t *owner)
{
	const uint64_t osz = v->meta.object_size;
	uint64_t pos = off, end = off + len;
	while (pos < end) {
		uint64_t objno = pos / osz, ostart = objno * osz;
		uint64_t cend = MIN(end, ostart + osz);
		uint32_t i0 = (uint32_t)((pos - ostart) / STORE_BLOCK);
		uint32_t i1 = (uint32_t)DIV_ROUND_UP(cend - ostart, STORE_BLOCK);
		resolve(v, k, objno, i0, i1, owner);
		for (uint32_t i = i0; i < i1;) {
			int32_t d = block_src(v, owner[i - i0], objno, i);
			uint32_t j = i + 1;
			while (j < i1 && block_src(v, owner[j - i0], objno, j) == d)
				j++;
			uint64_t a = MAX(pos, ostart + (uint64_t)i * STORE_BLOCK);
			uint64_t b = MIN(cend, ostart + (uint64_t)j * STORE_BLOCK);
			if (d == -2) {
				int rc = parent_read(v, buf + (a - off), a, b - a);
				if (rc)
					return rc;
			} else if (d < 0) {
				memset(buf + (a - off), 0, b - a);
			} else {
				const struct layer *l = v->layers[d];
				int fd = l->seg_fd[a >> SEG_SHIFT];
				int rc = fd < 0 ? -EIO : pread_full(fd, buf + (a - off), b - a, a & SEG_MASK);
				if (rc) {
					log_error("store: %s: read layer %016llx at %llu: %s", v->name,
					          (unsigned long long)l->tag, (unsigned long long)a,
					          strerror(-rc));
					return rc;
				}
			}
			i = j;
		}
		pos = cend;
	}
	return 0;
}

static int check_range(const struct vol *v, uint64_t off, uint64_t len)
{
	if (off > v->meta.size || len > v->meta.size - off)
		return -ERANGE;
	return 0;
}

/* ---- writing ------------------------------------------------------------ */

static void set_bits(struct vol *v, struct layer *l, uint64_t objno, uint32_t i0, uint32_t i1,
                     bool data)
{
	uint8_t *pr = layer_rec(v, l, objno);
	uint8_t *dr = pr + v->bpo / 8;
	for (uint32_t i = i0; i < i1;) {
		uint32_t n = MIN(8 - (i & 7), i1 - i);
		uint8_t m = (uint8_t)(((1u << n) - 1) << (i & 7));
		/* data bit first: a reader that sees present sees the right kind */
		if (data)
			__atomic_fetch_or(&dr[i >> 3], m, __ATOMIC_RELEASE);
		else
			__atomic_fetch_and(&dr[i >> 3], (uint8_t)~m, __ATOMIC_RELEASE);
		__atomic_fetch_or(&pr[i >> 3], m, __ATOMIC_RELEASE);
		i += n;
	}
}

/* Applies kind to blocks [b, b+n) (volume block numbers) of layer l, whose
 * data (for DATA) is already in place: records first, then punch blocks
 * that held data here and are now zero. */
static int apply_bits(struct vol *v, struct layer *l, uint64_t b, uint64_t n, bool data)
{
	const uint64_t bpo = v->bpo;
	while (n) {
		uint64_t objno = b / bpo;
		uint32_t i0 = (uint32_t)(b % bpo);
		uint32_t i1 = (uint32_t)MIN(bpo, i0 + n);
		int rc = layer_prepare_rec(v, l, objno);
		if (rc)
			return rc;
		if (data) {
			set_bits(v, l, objno, i0, i1, true);
		} else {
			const uint8_t *dr = layer_rec(v, l, objno) + v->bpo / 8;
			uint8_t old[STORE_MAX_OBJECT / STORE_BLOCK / 8];
			memset(old, 0, DIV_ROUND_UP(i1 - i0, 8));
			for (uint32_t i = i0; i < i1; i++)
				if (rec_bit(dr, i))
					old[(i - i0) / 8] |= (uint8_t)(1u << ((i - i0) % 8));
			set_bits(v, l, objno, i0, i1, false);
			for (uint32_t i = i0; i < i1;) {
				if (!((old[(i - i0) / 8] >> ((i - i0) % 8)) & 1)) {
					i++;
					continue;
				}
				uint32_t j = i + 1;
				while (j < i1 && ((old[(j - i0) / 8] >> ((j - i0) % 8)) & 1))
					j++;
				uint64_t a = (objno * bpo + i) * STORE_BLOCK;
				int fd = l->seg_fd[a >> SEG_SHIFT];
				if (fd >= 0 && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				                         (off_t)(a & SEG_MASK),
				                         (off_t)(j - i) * STORE_BLOCK) < 0) {
					/* The block already reads as zeros; only space is
					 * lost, so a failed punch is not an I/O error. */
					log_warn("store: %s: punch hole: %s", l->path, strerror(errno));
				}
				__atomic_fetch_or(&l->seg_dirty, 1u << (a >> SEG_SHIFT), __ATOMIC_RELEASE);
				i = j;
			}
		}
		b += i1 - i0;
		n -= i1 - i0;
	}
	return 0;
}

/* Writes n full blocks of data at volume block b into l, then marks them.
 * The data goes first so that a crash never exposes unwritten blocks. */
static int put_data(struct vol *v, struct layer *l, uint64_t b, uint64_t n, const uint8_t *p)
{
	uint64_t a = b * STORE_BLOCK;
	int fd = layer_seg_fd(l, (unsigned)(a >> SEG_SHIFT), true);
	if (fd < 0)
		return fd;
	int rc = pwrite_full(fd, p, n * STORE_BLOCK, a & SEG_MASK);
	if (rc) {
		log_error("store: %s: write: %s", l->path, strerror(-rc));
		return rc;
	}
	__atomic_fetch_or(&l->seg_dirty, 1u << (a >> SEG_SHIFT), __ATOMIC_RELEASE);
	return apply_bits(v, l, b, n, true);
}

static int head_layer(struct vol *v, struct layer **out)
{
	if (v->n_layers && v->layers[v->n_layers - 1]->tag == v->meta.head_epoch) {
		*out = v->layers[v->n_layers - 1];
		return 0;
	}
	if (v->n_layers == v->cap_layers) {
		size_t cap = v->cap_layers ? v->cap_layers * 2 : 8;
		/* readers walk the array: move it under the write lock */
		pthread_rwlock_wrlock(&v->lock);
		struct layer **n = realloc(v->layers, cap * sizeof(*n));
		if (n) {
			v->layers = n;
			v->cap_layers = cap;
		}
		pthread_rwlock_unlock(&v->lock);
		if (!n)
			return -ENOMEM;
	}
	struct layer *l;
	int rc = layer_create(v, v->meta.head_epoch, &l);
	if (rc)
		return rc;
	pthread_rwlock_wrlock(&v->lock);
	v->layers[v->n_layers++] = l;
	pthread_rwlock_unlock(&v->lock);
	*out = l;
	return 0;
}

/* One contiguous run of pending blocks, all of one kind. */
struct run {
	uint64_t b, n;
	const uint8_t *p; /* data: source of block b; NULL: zero run */
	bool active;
};

static int run_flush(struct vol *v, struct layer *l, struct run *r)
{
	if (!r->active)
		return 0;
	r->active = false;
	if (r->p)
		return put_data(v, l, r->b, r->n, r->p);
	return apply_bits(v, l, r->b, r->n, false);
}

/* buf NULL: write zeros.  *owner is scratch, allocated on first need and
 * freed by the caller.  Called with wmu held. */
static int write_locked(struct vol *v, const uint8_t *buf, uint64_t off, uint64_t len,
                        int32_t **owner)
{
	struct layer *l;
	int rc = head_layer(v, &l);
	if (rc)
		return rc;
	uint8_t blk[STORE_BLOCK];
	struct run r = {0};
	const uint64_t vsize = v->meta.size, end = off + len;
	for (uint64_t b = off / STORE_BLOCK; b * STORE_BLOCK < end; b++) {
		uint64_t bs = b * STORE_BLOCK, be = MIN(bs + STORE_BLOCK, vsize);
		uint64_t ws = MAX(bs, off), we = MIN(be, end);
		const uint8_t *p;
		bool stable = false; /* p stays valid after this iteration */
		if (ws == bs && we == be && be - bs == STORE_BLOCK) {
			p = buf ? buf + (bs - off) : zero_block;
			stable = true;
		} else {
			/* partial block: read-modify-write through the layers */
			if (ws != bs || we != be) {
				if (!*owner && !(*owner = malloc(v->bpo * sizeof(int32_t))))
					return -ENOMEM;
				rc = read_upto(v, v->n_layers, blk, bs, be - bs, *owner);
				if (rc)
					return rc;
			}
			memset(blk + (be - bs), 0, STORE_BLOCK - (be - bs));
			if (buf)
				memcpy(blk + (ws - bs), buf + (ws - off), we - ws);
			else
				memset(blk + (ws - bs), 0, we - ws);
			p = blk;
		}
		bool zero = p == zero_block || buf_is_zero(p, STORE_BLOCK);
		const uint8_t *src = zero ? NULL : p;
		bool joins = r.active && r.b + r.n == b && (r.p == NULL) == zero &&
		             (zero || (stable && r.p + r.n * STORE_BLOCK == p)) &&
		             (bs & SEG_MASK) != 0;
		if (!joins) {
			rc = run_flush(v, l, &r);
			if (rc)
				return rc;
			r = (struct run){.b = b, .n = 1, .p = src, .active = true};
		} else {
			r.n++;
		}
		if (!stable && !zero) {
			/* blk is reused by the next block */
			rc = run_flush(v, l, &r);
			if (rc)
				return rc;
		}
	}
	return run_flush(v, l, &r);
}

static int do_write(struct vol *v, const void *buf, uint64_t off, uint64_t len)
{
	int rc = check_range(v, off, len);
	if (rc)
		return rc;
	if (!len)
		return 0;
	int32_t *owner = NULL; /* only partial blocks need it */
	pthread_mutex_lock(&v->wmu);
	rc = write_locked(v, buf, off, len, &owner);
	pthread_mutex_unlock(&v->wmu);
	free(owner);
	return rc;
}

int local_vol_write(struct vol *v, const void *buf, uint64_t off, size_t len)
{
	if (!buf && len)
		return -EINVAL;
	return do_write(v, buf, off, len);
}

int local_vol_write_zeroes(struct vol *v, uint64_t off, uint64_t len)
{
	return do_write(v, NULL, off, len);
}

int local_vol_discard(struct vol *v, uint64_t off, uint64_t len)
{
	return do_write(v, NULL, off, len);
}

/* Reads at epoch ep (a snapshot's, or the head's).  A clone's read of a
 * block none of its layers holds takes its parent's read lock inside its
 * own: locks are always taken child before parent, never the reverse. */
static int read_epoch(struct vol *v, uint64_t ep, void *buf, uint64_t off, uint64_t len)
{
	int32_t *owner = malloc(v->bpo * sizeof(*owner));
	if (!owner)
		return -ENOMEM;
	pthread_rwlock_rdlock(&v->lock);
	int rc = read_upto(v, layers_upto(v, ep), buf, off, len, owner);
	pthread_rwlock_unlock(&v->lock);
	free(owner);
	return rc;
}

int local_vol_read(struct vol *v, const char *snap, void *buf, uint64_t off, size_t len)
{
	int rc = check_range(v, off, len);
	if (rc || !len)
		return rc;
	int32_t *owner = malloc(v->bpo * sizeof(*owner));
	if (!owner)
		return -ENOMEM;
	pthread_rwlock_rdlock(&v->lock);
	uint64_t ep;
	rc = epoch_of(v, snap, &ep);
	if (!rc)
		rc = read_upto(v, layers_upto(v, ep), buf, off, len, owner);
	pthread_rwlock_unlock(&v->lock);
	free(owner);
	return rc;
}

static struct layer *head_or_null(struct vol *v)
{
	if (v->n_layers && v->layers[v->n_layers - 1]->tag == v->meta.head_epoch)
		return v->layers[v->n_layers - 1];
	return NULL;
}

/* Called with wmu held (and kept). */
static int flush_locked(struct vol *v)
{
	struct layer *l = head_or_null(v);
	if (!l)
		return 0;
	/* waits for a flush in flight (local_vol_flush), which either made
	 * its part durable or marked it dirty again */
	pthread_mutex_lock(&v->fmu);
	int rc = layer_sync(l);
	pthread_mutex_unlock(&v->fmu);
	return rc;
}

/* The disk wait runs without wmu: writers go on while data written before
 * this call reaches the disk (a secondary keeps receiving while a
 * checkpoint syncs; an initiator's SYNCHRONIZE CACHE does not stall the
 * other writers).  The read lock keeps the layer from being dropped or
 * remapped meanwhile. */
int local_vol_flush(struct vol *v)
{
	pthread_mutex_lock(&v->wmu);
	struct layer *l = head_or_null(v);
	if (!l) {
		pthread_mutex_unlock(&v->wmu);
		return 0;
	}
	pthread_mutex_lock(&v->fmu);
	struct layer_dirty d;
	layer_dirty_take(l, &d);
	pthread_rwlock_rdlock(&v->lock);
	pthread_mutex_unlock(&v->wmu);
	int rc = layer_sync_dirty(l, &d);
	pthread_rwlock_unlock(&v->lock);
	pthread_mutex_unlock(&v->fmu);
	return rc;
}

int local_vol_info(struct vol *v, struct vol_info *out)
{
	memset(out, 0, sizeof(*out));
	pthread_rwlock_rdlock(&v->lock);
	snprintf(out->name, sizeof(out->name), "%s", v->name);
	memcpy(out->uuid, v->meta.uuid, sizeof(out->uuid));
	out->size = v->meta.size;
	out->object_size = v->meta.object_size;
	out->block_size = v->meta.block_size;
	out->objects = v->objects;
	out->snapshots = (uint32_t)v->meta.n_snaps;
	if (v->meta.parent[0])
		snprintf(out->parent, sizeof(out->parent), "%s@%s", v->meta.parent,
		         v->meta.parent_snap);
	for (size_t i = 0; i < v->n_layers; i++)
		out->allocated_bytes += layer_allocated(v->layers[i]);
	pthread_rwlock_unlock(&v->lock);
	return 0;
}

int vol_meta_save(struct vol *v)
{
	char *txt, p[4200];
	size_t n;
	int rc = store_meta_format(&v->meta, &txt, &n);
	if (rc)
		return rc;
	spath(p, sizeof(p), "%s/volume.meta", v->dir);
	rc = write_file_atomic(p, txt, n);
	free(txt);
	if (rc)
		log_error("store: %s: %s", p, strerror(-rc));
	return rc;
}

/* ---- resize ------------------------------------------------------------- */

uint64_t local_vol_size(struct vol *v)
{
	return __atomic_load_n(&v->meta.size, __ATOMIC_RELAXED);
}

/* Removes from layer l everything at or past byte `size`: the tail of the
 * 4 KiB block that holds `size`, the bits of later blocks in the object
 * that straddles it, the records of later objects and the data past the
 * block.  Nobody reads there (reads stop at the volume size), so this may
 * run in any order and be cut anywhere; it matters for what a later grow
 * would otherwise expose.  Called with wmu and the write lock held. */
static int layer_clip(struct vol *v, struct layer *l, uint64_t size)
{
	const uint64_t bpo = v->bpo;
	uint64_t fb = DIV_ROUND_UP(size, STORE_BLOCK);     /* first block wholly past */
	int rc;
	if (size % STORE_BLOCK) {
		uint64_t b = size / STORE_BLOCK, objno = b / bpo;
		uint32_t i = (uint32_t)(b % bpo);
		if (objno < l->objects && layer_has_page(v, l, objno)) {
			const uint8_t *r = layer_rec(v, l, objno);
			int fd = l->seg_fd[size >> SEG_SHIFT];
			if (rec_bit(r, i) && rec_bit(r + bpo / 8, i) && fd >= 0) {
				uint64_t n = (b + 1) * STORE_BLOCK - size;
				rc = pwrite_full(fd, zero_block, n, size & SEG_MASK);
				if (rc) {
					log_error("store: %s: clip: %s", l->path, strerror(-rc));
					return rc;
				}
				l->seg_dirty |= 1u << (size >> SEG_SHIFT);
			}
		}
	}
	/* the rest of the object that holds block fb */
	uint64_t objno = fb / bpo;
	if (fb % bpo && objno < l->objects && layer_has_page(v, l, objno)) {
		uint8_t *pr = layer_rec(v, l, objno), *dr = pr + bpo / 8;
		for (uint32_t i = (uint32_t)(fb % bpo); i < bpo; i++) {
			uint8_t m = (uint8_t)~(1u << (i & 7));
			__atomic_fetch_and(&pr[i >> 3], m, __ATOMIC_RELEASE);
			__atomic_fetch_and(&dr[i >> 3], m, __ATOMIC_RELEASE);
		}
		l->map_dirty = true;
	}
	/* whole objects past it: their records (a map page holds several) */
	uint64_t first = DIV_ROUND_UP(fb, bpo);
	for (size_t k = 0; k < l->n_objs; k++) {
		uint64_t o = l->objs[k];
		if (o >= first && o < l->objects && layer_has_page(v, l, o)) {
			memset(layer_rec(v, l, o), 0, v->rec);
			l->map_dirty = true;
		}
	}
	/* l->objs lists each object with a record once: drop those emptied
	 * above (a later write lists them again; kept, they would be listed
	 * twice and a diff would report them twice) */
	size_t kept = 0;
	for (size_t k = 0; k < l->n_objs; k++) {
		uint64_t o = l->objs[k];
		bool gone = o >= objno && o < l->objects && layer_has_page(v, l, o) &&
		            buf_is_zero(layer_rec(v, l, o), bpo / 8);
		if (!gone)
			l->objs[kept++] = o;
	}
	l->n_objs = kept;
	/* data past the block */
	uint64_t keep = fb * STORE_BLOCK;
	for (unsigned sg = 0; sg < MAX_SEGS; sg++) {
		int fd = l->seg_fd[sg];
		uint64_t start = (uint64_t)sg << SEG_SHIFT;
		if (fd < 0)
			continue;
		uint64_t k = keep <= start ? 0 : MIN(keep - start, 1ull << SEG_SHIFT);
		struct stat st;
		if (fstat(fd, &st) == 0 && (uint64_t)st.st_size > k) {
			if (ftruncate(fd, (off_t)k) < 0) {
				rc = -errno;
				log_error("store: %s/d%u: ftruncate: %s", l->path, sg, strerror(-rc));
				return rc;
			}
			l->seg_dirty |= 1u << sg;
		}
	}
	return layer_sync(l);
}

/* Fits l to the volume's size (an interrupted resize, see vol_resize). */
static int layer_fit(struct vol *v, struct layer *l)
{
	log_info("store: %s: finishing an interrupted resize of layer %016llx", v->name,
	         (unsigned long long)l->tag);
	int rc = layer_clip(v, l, v->meta.size);
	return rc ? rc : layer_set_objects(v, l, v->objects);
}

int local_vol_resize(struct vol *v, uint64_t size)
{
	if (size == 0 || size > STORE_MAX_SIZE || size % v->meta.block_size)
		return -EINVAL;
	pthread_mutex_lock(&v->wmu);
	pthread_rwlock_wrlock(&v->lock);
	int rc = 0;
	uint64_t old = v->meta.size, old_objects = v->objects;
	if (v->parent && size != old) {
		/* Its reads fall through to the parent within its size: a grow
		 * after a shrink would show the parent's bytes again. */
		log_error("store: %s: a clone is resized only after a flatten", v->name);
		rc = -EBUSY;
		goto out;
	}
	uint64_t objects = DIV_ROUND_UP(size, v->meta.object_size);
	if (size == old)
		goto out;
	if (size < old && v->meta.n_snaps) {
		rc = -ENOTEMPTY; /* they would lose what lies past the new end */
		goto out;
	}
	/* Commit point: volume.meta.  Growing, every layer is made ready
	 * first: cleared past the old end (what an earlier shrink may have
	 * left there, maybe cut by a crash) and given room for the new
	 * objects; a crash before the commit leaves layers longer than the
	 * volume, which the next open fits back.  Shrinking, volume.meta
	 * goes first; the layers follow, and an open finishes what a crash
	 * interrupted (or the next grow clears it). */
	if (size > old) {
		for (size_t i = 0; i < v->n_layers && !rc; i++)
			rc = layer_clip(v, v->layers[i], old);
		if (store_resize_hook)
			store_resize_hook(1);
		for (size_t i = 0; i < v->n_layers && !rc; i++)
			rc = layer_set_objects(v, v->layers[i], objects);
		if (store_resize_hook)
			store_resize_hook(2);
		if (rc)
			goto undo;
	}
	__atomic_store_n(&v->meta.size, size, __ATOMIC_RELAXED);
	rc = vol_meta_save(v);
	if (rc) {
		__atomic_store_n(&v->meta.size, old, __ATOMIC_RELAXED);
		goto undo;
	}
	v->objects = objects;
	if (store_resize_hook)
		store_resize_hook(3);
	if (size < old) {
		int e = 0;
		for (size_t i = 0; i < v->n_layers && !e; i++) {
			e = layer_clip(v, v->layers[i], size);
			if (!e)
				e = layer_set_objects(v, v->layers[i], objects);
		}
		if (e) /* done all the same: an open or the next grow finishes it */
			log_warn("store: %s: shrunk, but the space past the end is not all back "
			         "yet: %s", v->name, strerror(-e));
	}
	log_info("store: %s: resized from %llu to %llu bytes", v->name, (unsigned long long)old,
	         (unsigned long long)size);
	goto out;
undo:
	for (size_t i = 0; i < v->n_layers; i++)
		(void)layer_set_objects(v, v->layers[i], old_objects);
out:
	pthread_rwlock_unlock(&v->lock);
	pthread_mutex_unlock(&v->wmu);
	return rc;
}

/* ---- snapshots ---------------------------------------------------------- */

int local_snap_create(struct vol *v, const char *name)
{
	if (!name_valid(name))
		return -EINVAL;
	pthread_mutex_lock(&v->wmu);
	/* meta only changes under wmu: no read lock needed to look at it */
	int rc = 0;
	if (snap_find(v, name, NULL)) {
		pthread_mutex_unlock(&v->wmu);
		return -EEXIST;
	}
	if (v->meta.n_snaps >= STORE_MAX_SNAPS) {
		log_error("store: %s: too many snapshots", v->name);
		pthread_mutex_unlock(&v->wmu);
		return -ENOSPC;
	}
	/* Flush before taking the write lock, so readers wait only for the
	 * metadata update, not for the data to reach the disk.  Writers are
	 * held off by wmu, so nothing new gets dirty in between. */
	rc = flush_locked(v);
	if (rc) {
		pthread_mutex_unlock(&v->wmu);
		return rc;
	}
	pthread_rwlock_wrlock(&v->lock);
	struct meta_snap s = {.id = v->meta.next_snap_id, .epoch = v->meta.head_epoch,
	                      .ctime = now_wall_s()};
	snprintf(s.name, sizeof(s.name), "%s", name);
	rc = store_meta_add_snap(&v->meta, &s);
	if (rc)
		goto out;
	v->meta.head_epoch++;
	v->meta.next_snap_id++;
	rc = vol_meta_save(v);
	if (rc) {
		v->meta.n_snaps--;
		v->meta.head_epoch--;
		v->meta.next_snap_id--;
		goto out;
	}
	/* The old head layer is now read-only: index it once for diffs. */
	if (v->n_layers && v->layers[v->n_layers - 1]->tag == s.epoch)
		layer_sort(v->layers[v->n_layers - 1]);
out:
	pthread_rwlock_unlock(&v->lock);
	pthread_mutex_unlock(&v->wmu);
	return rc;
}

static int copy_range(int in, int out, uint64_t ioff, uint64_t ooff, uint64_t len)
{
	loff_t io = (loff_t)ioff, oo = (loff_t)ooff;
	while (len) {
		ssize_t r = copy_file_range(in, &io, out, &oo, len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len -= (uint64_t)r;
	}
	if (!len)
		return 0;
	/* Fallback (old kernels, odd file systems, EOF in a sparse source). */
	uint8_t tmp[64 << 10];
	while (len) {
		size_t n = (size_t)MIN(len, sizeof(tmp));
		int rc = pread_full(in, tmp, n, (uint64_t)io);
		if (!rc)
			rc = pwrite_full(out, tmp, n, (uint64_t)oo);
		if (rc)
			return rc;
		io += (loff_t)n;
		oo += (loff_t)n;
		len -= n;
	}
	return 0;
}

/* Copies src's blocks into dst: all of them (overwrite) or only those dst
 * does not define.  Data first, then records, then punches.  Redoing it
 * after a crash gives the same result. */
static int merge_into(struct vol *v, struct layer *dst, struct layer *src, bool overwrite)
{
	for (size_t k = 0; k < src->n_objs; k++) {
		uint64_t objno = src->objs[k];
		const uint8_t *sp = layer_rec(v, src, objno);
		const uint8_t *sd = sp + v->bpo / 8;
		bool dhas = layer_has_page(v, dst, objno);
		const uint8_t *dp = layer_rec(v, dst, objno);
		uint32_t nb = obj_blocks(v, objno);
		for (uint32_t i = 0; i < nb;) {
			bool take = rec_bit(sp, i) && (overwrite || !dhas || !rec_bit(dp, i));
			if (!take) {
				i++;
				continue;
			}
			bool data = rec_bit(sd, i);
			uint32_t j = i + 1;
			while (j < nb && rec_bit(sp, j) && (overwrite || !dhas || !rec_bit(dp, j)) &&
			       rec_bit(sd, j) == data)
				j++;
			uint64_t b = objno * v->bpo + i;
			uint64_t a = b * STORE_BLOCK;
			unsigned seg = (unsigned)(a >> SEG_SHIFT);
			int rc = store_fold_fault ? store_fold_fault(overwrite ? dst->tag : src->tag)
			                          : 0;
			if (rc) {
				log_error("store: %s: merge copy: %s (injected)", dst->path,
				          strerror(-rc));
				return rc;
			}
			if (data) {
				int in = src->seg_fd[seg];
				int out = layer_seg_fd(dst, seg, true);
				if (in < 0 || out < 0)
					return in < 0 ? -EIO : out;
				rc = copy_range(in, out, a & SEG_MASK, a & SEG_MASK,
				                (uint64_t)(j - i) * STORE_BLOCK);
				if (rc) {
					log_error("store: %s: merge copy: %s", dst->path, strerror(-rc));
					return rc;
				}
				dst->seg_dirty |= 1u << seg;
			}
			rc = apply_bits(v, dst, b, j - i, data);
			if (rc)
				return rc;
			dhas = true;
			i = j;
		}
	}
	layer_sort(dst);
	return 0;
}

static int layers_dir_sync(struct vol *v)
{
	char p[4200];
	spath(p, sizeof(p), "%s/layers", v->dir);
	int rc = fsync_path(p);
	if (rc)
		log_error("store: fsync %s: %s", p, strerror(-rc));
	return rc;
}

static void layer_remove_at(struct vol *v, size_t idx)
{
	layer_free(v->layers[idx]);
	memmove(&v->layers[idx], &v->layers[idx + 1],
	        (v->n_layers - idx - 1) * sizeof(v->layers[0]));
	v->n_layers--;
}

/* Renames layer dir path to a fresh trash name (atomic: the layer is gone
 * for every later open) and queues the tree for deletion. */
static int to_trash(struct vol *v, const char *path)
{
	char t[4200];
	spath(t, sizeof(t), "%s/layers/trash-%llu", v->dir, (unsigned long long)++v->trash_seq);
	rm_rf(t);
	if (rename(path, t) < 0) {
		int e = -errno;
		log_error("store: rename %s -> %s: %s", path, t, strerror(-e));
		return e;
	}
	char **n = realloc(v->trash, (v->n_trash + 1) * sizeof(*n));
	char *d = strdup(t);
	if (!n || !d) {
		free(d);
		if (n)
			v->trash = n;
		rm_rf(t); /* no memory to defer it: do it now */
		return 0;
	}
	v->trash = n;
	v->trash[v->n_trash++] = d;
	return 0;
}

/* Deletes queued trash; call without the volume locks. */
static void trash_empty(struct vol *v)
{
	pthread_mutex_lock(&v->wmu);
	char **t = v->trash;
	size_t n = v->n_trash;
	v->trash = NULL;
	v->n_trash = 0;
	pthread_mutex_unlock(&v->wmu);
	for (size_t i = 0; i < n; i++) {
		int rc = rm_rf(t[i]);
		if (rc)
			log_warn("store: removing %s: %s", t[i], strerror(-rc));
		free(t[i]);
	}
	free(t);
}

/* Moves a layer out of sight atomically (rename into trash). */
static int layer_trash(struct vol *v, size_t idx)
{
	int rc = to_trash(v, v->layers[idx]->path);
	if (rc)
		return rc;
	layer_remove_at(v, idx);
	return layers_dir_sync(v);
}

/* Folds layer s (no longer an anchor) into the next anchor n.  Called with
 * wmu and the write lock held, after volume.meta no longer lists s. */
static int fold_layer(struct vol *v, uint64_t s, uint64_t n)
{
	size_t is, in;
	struct layer *ls = layer_find(v, s, &is);
	if (!ls)
		return 0;
	struct layer *ln = layer_find(v, n, &in);
	int rc;
	if (!ln) {
		rc = layer_rename(v, ls, n);
		return rc ? rc : layers_dir_sync(v);
	}
	if (ln->n_objs <= ls->n_objs) {
		/* newer into older: cost follows the (small) newer layer */
		rc = merge_into(v, ls, ln, true);
		if (rc) {
			/* The half-merged layer may stay for long (until there is
			 * space): make what was merged durable like the rest. */
			(void)layer_sync(ls);
			return rc;
		}
		rc = layer_sync(ls);
		if (!rc)
			rc = layer_sync(ln); /* n may be the head with unflushed data */
		if (rc)
			return rc;
		rc = to_trash(v, ln->path);
		if (rc)
			return rc;
		layer_remove_at(v, in);
		rc = layer_rename(v, ls, n);
		return rc ? rc : layers_dir_sync(v);
	}
	/* older into newer: copy only what the newer layer lacks */
	rc = merge_into(v, ln, ls, false);
	if (rc) {
		(void)layer_sync(ln); /* as above: blocks it got must not tear */
		return rc;
	}
	rc = layer_sync(ln);
	if (!rc)
		rc = layer_trash(v, is);
	return rc;
}

static int finish_folds(struct vol *v, uint64_t above, uint64_t quiet);

/* A fold that cannot run for lack of space leaves its layer in place: the
 * volume stays correct (see finish_folds), only the space is not back. */
static bool fold_can_wait(int rc)
{
	return rc == -ENOSPC || rc == -EDQUOT;
}

int local_snap_delete(struct vol *v, const char *name)
{
	pthread_mutex_lock(&v->wmu);
	/* A clone reads through this snapshot's epoch: it stays until its
	 * clones are removed or flattened.  Asked before the write lock, so
	 * that readers do not wait for the scan of the volumes; no clone can
	 * appear meanwhile (a clone of an open volume is made under its wmu).
	 * The meta only changes under wmu. */
	int rc = 0;
	if (snap_find(v, name, NULL)) {
		char(*cl)[STORE_NAME_MAX + 1] = NULL;
		size_t ncl = 0;
		rc = local_vol_clones(v->store, v->name, name, &cl, &ncl);
		free(cl);
		if (rc == 0 && ncl) {
			log_debug("store: %s: snapshot %s has %zu clone(s): kept", v->name, name, ncl);
			rc = -EBUSY;
		} else if (rc) {
			log_error("store: %s: cannot tell whether snapshot %s has clones: %s", v->name,
			          name, strerror(-rc));
		}
		if (rc) {
			pthread_mutex_unlock(&v->wmu);
			return rc;
		}
	}
	pthread_rwlock_wrlock(&v->lock);
	size_t idx;
	const struct meta_snap *sp = snap_find(v, name, &idx);
	if (!sp) {
		rc = -ENOENT;
		goto out;
	}
	struct meta_snap s = *sp;
	memmove(&v->meta.snaps[idx], &v->meta.snaps[idx + 1],
	        (v->meta.n_snaps - idx - 1) * sizeof(s));
	v->meta.n_snaps--;
	rc = vol_meta_save(v);
	if (rc) {
		memmove(&v->meta.snaps[idx + 1], &v->meta.snaps[idx],
		        (v->meta.n_snaps - idx) * sizeof(s));
		v->meta.snaps[idx] = s;
		v->meta.n_snaps++;
		goto out;
	}
	/* The delete is committed.  Its layer and any leftover of an earlier
	 * delete are folded now, in the one order that is safe with leftovers
	 * whose fold still cannot run. */
	uint64_t t0 = now_mono_ns();
	rc = finish_folds(v, 0, s.epoch);
	log_debug("store: %s: deleted snapshot %s, layers folded in %.1f ms", v->name, s.name,
	          (double)(now_mono_ns() - t0) / 1e6);
	/* An error says this delete's space is not back (the snapshot is gone
	 * all the same); another delete's leftover that is still waiting was
	 * logged where it failed and is not this caller's failure. */
	if (rc && !layer_find(v, s.epoch, NULL))
		rc = 0;
out:
	pthread_rwlock_unlock(&v->lock);
	pthread_mutex_unlock(&v->wmu);
	trash_empty(v);
	return rc;
}

int local_snap_list(struct vol *v, struct snap_info **out, size_t *n)
{
	pthread_rwlock_rdlock(&v->lock);
	size_t k = v->meta.n_snaps;
	struct snap_info *a = calloc(k ? k : 1, sizeof(*a));
	if (!a) {
		pthread_rwlock_unlock(&v->lock);
		return -ENOMEM;
	}
	for (size_t i = 0; i < k; i++) {
		snprintf(a[i].name, sizeof(a[i].name), "%s", v->meta.snaps[i].name);
		a[i].id = v->meta.snaps[i].id;
		a[i].ctime = v->meta.snaps[i].ctime;
	}
	pthread_rwlock_unlock(&v->lock);
	*out = a;
	*n = k;
	return 0;
}

int local_snap_get(struct vol *v, const char *name, struct snap_info *out)
{
	pthread_rwlock_rdlock(&v->lock);
	const struct meta_snap *s = name ? snap_find(v, name, NULL) : NULL;
	if (s) {
		memset(out, 0, sizeof(*out));
		snprintf(out->name, sizeof(out->name), "%s", s->name);
		out->id = s->id;
		out->ctime = s->ctime;
	}
	pthread_rwlock_unlock(&v->lock);
	return s ? 0 : -ENOENT;
}

int local_head_unchanged(struct vol *v, const char *name, bool *same)
{
	*same = false;
	/* wmu: writers hold it while they touch the head's records, and
	 * snapshot create/delete and rollback while they change the layers. */
	pthread_mutex_lock(&v->wmu);
	size_t idx;
	const struct meta_snap *s = snap_find(v, name, &idx);
	int rc = s ? 0 : -ENOENT;
	if (s && idx + 1 == v->meta.n_snaps) {
		/* The newest snapshot: only layers above its epoch (the head's,
		 * or a deleted newer snapshot's waiting to be folded) can hold
		 * blocks the snapshot does not. */
		bool touched = false;
		for (size_t n = v->n_layers; n && v->layers[n - 1]->tag > s->epoch; n--)
			touched |= v->layers[n - 1]->n_objs != 0;
		*same = !touched;
	}
	pthread_mutex_unlock(&v->wmu);
	return rc;
}

int local_rollback(struct vol *v, const char *name)
{
	pthread_mutex_lock(&v->wmu);
	pthread_rwlock_wrlock(&v->lock);
	size_t idx;
	int rc = 0;
	const struct meta_snap *s = snap_find(v, name, &idx);
	if (!s) {
		rc = -ENOENT;
	} else if (idx + 1 != v->meta.n_snaps) {
		rc = -EBUSY; /* later snapshots would lose their base */
	} else {
		/* One rename takes every write since the snapshot away
		 * atomically, if one layer holds them all: the head, or a
		 * leftover of a delete of a newer snapshot.  With both, the
		 * leftover is folded into the head first; when that cannot run
		 * (no space), two renames could be cut in between and leave
		 * the head a mixture, so the rollback is refused. */
		uint64_t ep = s->epoch;
		if (v->n_layers - layers_upto(v, ep) > 1) {
			rc = finish_folds(v, ep, 0);
			if (!rc && v->n_layers - layers_upto(v, ep) > 1) {
				/* finish_folds succeeded, so only the head is left */
				log_error("store: %s: rollback: layers left above epoch %llu",
				          v->name, (unsigned long long)ep);
				rc = -EIO;
			}
		}
		if (!rc && v->n_layers > layers_upto(v, ep))
			rc = layer_trash(v, v->n_layers - 1);
	}
	pthread_rwlock_unlock(&v->lock);
	pthread_mutex_unlock(&v->wmu);
	trash_empty(v);
	return rc;
}

/* ---- diff --------------------------------------------------------------- */

struct diff_scratch {
	int32_t *owner;
	uint8_t *touched;
	struct extent *ext;
};

static int diff_object(struct vol *v, size_t lo, size_t hi, uint64_t objno,
                       struct diff_scratch *sc, diff_cb cb, void *ctx)
{
	uint32_t nb = obj_blocks(v, objno);
	memset(sc->touched, 0, nb);
	bool any = false;
	for (size_t j = lo; j < hi; j++) {
		const struct layer *l = v->layers[j];
		if (!layer_has_page(v, l, objno))
			continue;
		const uint8_t *pr = layer_rec(v, l, objno);
		for (uint32_t i = 0; i < nb; i++) {
			if (rec_bit(pr, i)) {
				sc->touched[i] = 1;
				any = true;
			}
		}
	}
	if (!any)
		return 0;
	resolve(v, hi, objno, 0, nb, sc->owner);
	bool all_zero = true, fall = false;
	size_t ne = 0;
	const uint64_t base = objno * v->meta.object_size;
	for (uint32_t i = 0; i < nb; i++) {
		bool data = data_owner(v, sc->owner[i], objno, i) >= 0;
		if (data)
			all_zero = false;
		if (sc->owner[i] < 0)
			fall = true; /* never a touched block: those have an owner */
		if (!sc->touched[i])
			continue;
		enum extent_kind kind = data ? EXTENT_DATA : EXTENT_ZERO;
		uint64_t a = base + (uint64_t)i * STORE_BLOCK;
		uint64_t len = MIN(STORE_BLOCK, v->meta.size - a);
		if (ne && sc->ext[ne - 1].kind == kind &&
		    sc->ext[ne - 1].offset + sc->ext[ne - 1].length == a) {
			sc->ext[ne - 1].length += len;
		} else {
			sc->ext[ne++] = (struct extent){.offset = a, .length = len, .kind = kind};
		}
	}
	if (all_zero && fall && v->parent) {
		int rc = parent_object_zero(v, objno, &all_zero);
		if (rc)
			return rc;
	}
	struct diff_object d = {.objno = objno, .extents = sc->ext, .n_extents = ne,
	                        .all_zero = all_zero};
	return cb(ctx, &d);
}

int local_diff(struct vol *v, const char *from, const char *to, diff_cb cb, void *ctx)
{
	struct diff_scratch sc = {
		.owner = malloc(v->bpo * sizeof(int32_t)),
		.touched = malloc(v->bpo),
		.ext = malloc(v->bpo * sizeof(struct extent)),
	};
	uint64_t *objs = NULL;
	int rc = 0;
	if (!sc.owner || !sc.touched || !sc.ext) {
		rc = -ENOMEM;
		goto out_free;
	}
	/* The head layer changes under writers: diffing to the head holds
	 * them off (and lets us sort the head's object list). */
	if (!to)
		pthread_mutex_lock(&v->wmu);
	pthread_rwlock_rdlock(&v->lock);
	uint64_t a = 0, b;
	if (!from && v->parent) {
		/* From creation, a clone's content includes its parent's, which
		 * no layer of its own records: flatten it first. */
		log_error("store: %s: a diff from creation of a clone (of %s@%s) needs a flatten "
		          "first", v->name, v->meta.parent, v->meta.parent_snap);
		rc = -EOPNOTSUPP;
		goto out;
	}
	if (from)
		rc = epoch_of(v, from, &a);
	if (!rc)
		rc = epoch_of(v, to, &b);
	if (rc)
		goto out;
	if (a > b) {
		rc = -EINVAL;
		goto out;
	}
	size_t lo = layers_upto(v, a), hi = layers_upto(v, b);
	size_t total = 0;
	for (size_t j = lo; j < hi; j++) {
		layer_sort(v->layers[j]);
		total += v->layers[j]->n_objs;
	}
	objs = malloc((total ? total : 1) * sizeof(*objs));
	if (!objs) {
		rc = -ENOMEM;
		goto out;
	}
	/* Merge the per-layer sorted lists; cost follows what changed. */
	size_t n = 0;
	if (hi - lo == 1) {
		if (total)
			memcpy(objs, v->layers[lo]->objs, total * sizeof(*objs));
		n = total;
	} else {
		for (size_t j = lo; j < hi; j++) {
			if (v->layers[j]->n_objs)
				memcpy(objs + n, v->layers[j]->objs, v->layers[j]->n_objs * sizeof(*objs));
			n += v->layers[j]->n_objs;
		}
		if (n)
			qsort(objs, n, sizeof(*objs), cmp_tag);
		size_t u = 0;
		for (size_t i = 0; i < n; i++)
			if (!u || objs[u - 1] != objs[i])
				objs[u++] = objs[i];
		n = u;
	}
	for (size_t i = 0; i < n && !rc; i++)
		rc = diff_object(v, lo, hi, objs[i], &sc, cb, ctx);
out:
	pthread_rwlock_unlock(&v->lock);
	if (!to)
		pthread_mutex_unlock(&v->wmu);
out_free:
	free(objs);
	free(sc.owner);
	free(sc.touched);
	free(sc.ext);
	return rc;
}

static int object_zero_epoch(struct vol *v, uint64_t ep, uint64_t objno, bool *zero);

/* Whether a clone's parent snapshot reads object objno as zeros. */
static int parent_object_zero(struct vol *v, uint64_t objno, bool *zero)
{
	struct vol *p = v->parent;
	if (objno >= p->objects || objno * p->meta.object_size >= local_vol_size(p)) {
		*zero = true;
		return 0;
	}
	return object_zero_epoch(p, v->meta.parent_epoch, objno, zero);
}

/* Called with the read lock held.  Blocks that fall through to a clone's
 * parent count as data when the parent's object is not all zeros (a
 * cheap upper bound: may say "data" for an object that reads as zeros). */
static int object_zero_locked(struct vol *v, uint64_t ep, uint64_t objno, int32_t *owner,
                              bool *zero)
{
	uint32_t nb = obj_blocks(v, objno);
	resolve(v, layers_upto(v, ep), objno, 0, nb, owner);
	*zero = true;
	bool fall = false;
	for (uint32_t i = 0; i < nb && *zero; i++) {
		if (owner[i] < 0)
			fall = true;
		else if (data_owner(v, owner[i], objno, i) >= 0)
			*zero = false;
	}
	if (*zero && fall && v->parent)
		return parent_object_zero(v, objno, zero);
	return 0;
}

static int object_zero_epoch(struct vol *v, uint64_t ep, uint64_t objno, bool *zero)
{
	int32_t *owner = malloc(v->bpo * sizeof(*owner));
	if (!owner)
		return -ENOMEM;
	pthread_rwlock_rdlock(&v->lock);
	int rc = object_zero_locked(v, ep, objno, owner, zero);
	pthread_rwlock_unlock(&v->lock);
	free(owner);
	return rc;
}

int local_object_is_zero(struct vol *v, const char *snap, uint64_t objno, bool *zero)
{
	if (objno >= v->objects)
		return -ERANGE;
	int32_t *owner = malloc(v->bpo * sizeof(*owner));
	if (!owner)
		return -ENOMEM;
	pthread_rwlock_rdlock(&v->lock);
	uint64_t ep;
	int rc = epoch_of(v, snap, &ep);
	if (!rc)
		rc = object_zero_locked(v, ep, objno, owner, zero);
	pthread_rwlock_unlock(&v->lock);
	free(owner);
	return rc;
}

/* ---- load / repair ------------------------------------------------------ */

static bool is_hex16(const char *s)
{
	if (strlen(s) != 16)
		return false;
	for (int i = 0; i < 16; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Index of the first snapshot with epoch >= ep (snapshots are in
 * increasing epoch order), or n_snaps. */
static size_t snap_lower_bound(const struct vol *v, uint64_t ep)
{
	size_t lo = 0, hi = v->meta.n_snaps;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v->meta.snaps[mid].epoch < ep)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool is_anchor(const struct vol *v, uint64_t tag)
{
	if (tag == v->meta.head_epoch)
		return true;
	size_t i = snap_lower_bound(v, tag);
	return i < v->meta.n_snaps && v->meta.snaps[i].epoch == tag;
}

static uint64_t next_anchor(const struct vol *v, uint64_t tag)
{
	size_t i = snap_lower_bound(v, tag + 1);
	return i < v->meta.n_snaps ? v->meta.snaps[i].epoch : v->meta.head_epoch;
}

/* Folds every layer that no snapshot anchors any more (a deleted snapshot's
 * layer: after a delete, a crash in one, or a fold that failed for lack of
 * space) whose tag is > above into its next anchor.
 *
 * Such a leftover t, with P < t < N for the anchors around it, needs no
 * fold to read correctly: readers at P or older never see it, readers at N
 * or newer see N's blocks first and t's below them, exactly as after the
 * fold; a diff (a, b] between anchors contains t iff it contains N.  So the
 * volume is usable with leftovers in place.  What must never happen is a
 * fold that lands past an unfolded newer leftover of the same interval
 * (the older blocks would shadow the newer ones): leftovers are folded
 * newest first, and once one fails, the older ones up to the same anchor
 * wait too.  Other intervals are independent and are still folded.
 *
 * Returns 0 or an error (each is logged where it happened): the first one
 * that is not for lack of space if any, so that such an error is never
 * taken for "the fold can wait".  quiet is the epoch whose fold the caller
 * reports itself (0: none). */
static int finish_folds(struct vol *v, uint64_t above, uint64_t quiet)
{
	int first = 0;
	uint64_t blocked = 0; /* anchors are >= 1 */
	for (size_t i = v->n_layers; i-- > 0;) {
		uint64_t t = v->layers[i]->tag;
		if (t <= above)
			break;
		if (is_anchor(v, t))
			continue;
		uint64_t n = next_anchor(v, t);
		if (n == blocked)
			continue;
		if (t != quiet)
			log_info("store: %s: finishing the delete of epoch %llu", v->name,
			         (unsigned long long)t);
		int rc = fold_layer(v, t, n);
		if (rc) {
			if (!first || (fold_can_wait(first) && !fold_can_wait(rc)))
				first = rc;
			blocked = n;
		}
		if (i > v->n_layers)
			i = v->n_layers;
	}
	return first;
}

static size_t count_leftovers(const struct vol *v)
{
	size_t n = 0;
	for (size_t i = 0; i < v->n_layers; i++)
		n += !is_anchor(v, v->layers[i]->tag);
	return n;
}

static int load_layers(struct vol *v)
{
	char p[4200];
	spath(p, sizeof(p), "%s/layers", v->dir);
	DIR *d = opendir(p);
	if (!d) {
		int e = -errno;
		log_error("store: opendir %s: %s", p, strerror(-e));
		return e;
	}
	uint64_t *tags = NULL;
	size_t nt = 0, ct = 0;
	int rc = 0;
	struct dirent *de;
	bool removed = false;
	while ((de = readdir(d))) {
		const char *nm = de->d_name;
		size_t L = strlen(nm);
		if (!strcmp(nm, ".") || !strcmp(nm, ".."))
			continue;
		if (!strncmp(nm, "trash-", 6) || (L > 4 && !strcmp(nm + L - 4, ".tmp"))) {
			/* leftovers of an interrupted delete or layer creation */
			if (spath(p, sizeof(p), "%s/layers/%s", v->dir, nm) == 0)
				rm_rf(p);
			removed = true;
			continue;
		}
		if (!is_hex16(nm)) {
			log_warn("store: %s: ignoring unknown entry layers/%s", v->name, nm);
			continue;
		}
		if (nt == ct) {
			ct = ct ? ct * 2 : 16;
			uint64_t *n = realloc(tags, ct * sizeof(*n));
			if (!n) {
				rc = -ENOMEM;
				break;
			}
			tags = n;
		}
		tags[nt++] = strtoull(nm, NULL, 16);
	}
	closedir(d);
	if (rc)
		goto out;
	if (nt)
		qsort(tags, nt, sizeof(*tags), cmp_tag);
	v->layers = calloc(nt ? nt : 1, sizeof(*v->layers));
	if (!v->layers) {
		rc = -ENOMEM;
		goto out;
	}
	v->cap_layers = nt ? nt : 1;
	for (size_t i = 0; i < nt; i++) {
		if (tags[i] > v->meta.head_epoch) {
			log_error("store: %s: layer %016llx is newer than the head epoch", v->name,
			          (unsigned long long)tags[i]);
			rc = -EIO;
			goto out;
		}
		struct layer *l;
		rc = layer_load(v, tags[i], &l);
		if (rc)
			goto out;
		v->layers[v->n_layers++] = l;
		if (l->objects != v->objects && (rc = layer_fit(v, l)))
			goto out;
	}
	if (removed && (rc = layers_dir_sync(v)))
		goto out;
	rc = finish_folds(v, 0, 0);
	if (fold_can_wait(rc)) {
		/* Refusing the open would make a full disk take the volume
		 * away (exports, md5, the next replication cycle) although it
		 * reads correctly; the fold is retried at the next delete or
		 * open. */
		log_warn("store: %s: opened with %zu snapshot delete(s) not folded yet (%s); "
		         "retried at the next snapshot delete or open",
		         v->name, count_leftovers(v), strerror(-rc));
		rc = 0;
	}
out:
	free(tags);
	return rc;
}

void vol_free(struct vol *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->n_layers; i++)
		layer_free(v->layers[i]);
	free(v->layers);
	for (size_t i = 0; i < v->n_trash; i++)
		free(v->trash[i]);
	free(v->trash);
	store_meta_free(&v->meta);
	if (v->parent)
		vol_close(v->parent); /* never called with the store's mu held */
	pthread_mutex_destroy(&v->wmu);
	pthread_mutex_destroy(&v->fmu);
	pthread_rwlock_destroy(&v->lock);
	free(v);
}

/* A clone's parent is opened with its own load (under the store's mu,
 * which vol_load runs under); it is checked first from its volume.meta, so
 * that nothing can fail once the reference is taken. */
static int load_parent(struct vol *v)
{
	struct store_meta pm;
	const struct store_meta *m = &v->meta;
	int rc = local_meta_read(v->store, m->parent, &pm);
	if (rc) {
		log_error("store: %s: its parent volume %s cannot be read: %s", v->name, m->parent,
		          strerror(-rc));
		return rc == -ENOENT ? -EIO : rc;
	}
	bool ok = false;
	for (size_t i = 0; i < pm.n_snaps; i++)
		if (!strcmp(pm.snaps[i].name, m->parent_snap))
			ok = pm.snaps[i].id == m->parent_snap_id && pm.snaps[i].epoch == m->parent_epoch;
	ok = ok && pm.object_size == m->object_size;
	store_meta_free(&pm);
	if (!ok) {
		log_error("store: %s: its parent snapshot %s@%s (id %llu, epoch %llu) is gone or "
		          "differs", v->name, m->parent, m->parent_snap,
		          (unsigned long long)m->parent_snap_id, (unsigned long long)m->parent_epoch);
		return -EIO;
	}
	return store_vol_get_locked(v->store, m->parent, &v->parent);
}

int vol_load(struct store *s, const char *name, struct vol **out)
{
	struct vol *v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	pthread_mutex_init(&v->wmu, NULL);
	pthread_mutex_init(&v->fmu, NULL);
	pthread_rwlock_init(&v->lock, NULL);
	v->store = s;
	v->refs = 1;
	snprintf(v->name, sizeof(v->name), "%s", name);
	if (spath(v->dir, sizeof(v->dir), "%s/%s", s->vdir, name)) {
		vol_free(v);
		return -ENAMETOOLONG;
	}
	char p[4200], *txt = NULL;
	size_t n;
	spath(p, sizeof(p), "%s/volume.meta", v->dir);
	int rc = read_file(p, META_MAX_BYTES, &txt, &n);
	if (rc) {
		if (rc != -ENOENT)
			log_error("store: %s: %s", p, strerror(-rc));
		goto fail;
	}
	const char *why;
	rc = store_meta_parse(txt, n, &v->meta, &why);
	free(txt);
	if (rc) {
		log_error("store: %s: %s", p, why ? why : strerror(-rc));
		goto fail;
	}
	v->objects = DIV_ROUND_UP(v->meta.size, v->meta.object_size);
	v->bpo = v->meta.object_size / STORE_BLOCK;
	v->rec = v->bpo / 4;
	rc = load_layers(v);
	trash_empty(v);
	if (rc)
		goto fail;
	if (v->meta.parent[0] && (rc = load_parent(v)))
		goto fail;
	*out = v;
	return 0;
fail:
	vol_free(v);
	return rc;
}

/* ---- clones ------------------------------------------------------------- */

/* The clone's volume.meta: src's geometry, parent snapshot sn. */
static int clone_meta(const struct store_meta *src, const char *sname, const struct meta_snap *sn,
                      struct store_meta *m)
{
	*m = (struct store_meta){.size = src->size, .object_size = src->object_size,
	                         .block_size = src->block_size, .head_epoch = CLONE_FIRST_EPOCH,
	                         .next_snap_id = 1, .parent_snap_id = sn->id,
	                         .parent_epoch = sn->epoch};
	snprintf(m->parent, sizeof(m->parent), "%s", sname);
	snprintf(m->parent_snap, sizeof(m->parent_snap), "%s", sn->name);
	return store_uuid_new(m->uuid);
}

int local_vol_clone(struct store *s, const char *src, const char *snap, const char *dst)
{
	if (!strcmp(src, dst))
		return -EINVAL;
	struct store_meta m;
	int rc;
	/* Serialised with the snapshot's delete, which runs on the open
	 * volume under its wmu.  Not open: nobody can open it while the
	 * store's mu is held, so its volume.meta is the truth for the whole
	 * create (and loading a big volume is not paid for a clone). */
	pthread_mutex_lock(&s->mu);
	struct vol *sv = store_find_open(s, src);
	if (!sv) {
		struct store_meta pm;
		rc = local_meta_read(s, src, &pm);
		if (rc == 0) {
			const struct meta_snap *sn = NULL;
			for (size_t i = 0; i < pm.n_snaps && !sn; i++)
				if (!strcmp(pm.snaps[i].name, snap))
					sn = &pm.snaps[i];
			rc = sn ? clone_meta(&pm, src, sn, &m) : -ENOENT;
			store_meta_free(&pm);
		}
		if (rc == 0)
			rc = local_vol_create_meta_locked(s, dst, &m);
		pthread_mutex_unlock(&s->mu);
		goto done;
	}
	sv->refs++;
	pthread_mutex_unlock(&s->mu);
	pthread_mutex_lock(&sv->wmu);
	const struct meta_snap *sn = snap_find(sv, snap, NULL);
	rc = sn ? clone_meta(&sv->meta, src, sn, &m) : -ENOENT;
	if (!rc)
		rc = local_vol_create_meta(s, dst, &m);
	pthread_mutex_unlock(&sv->wmu);
	vol_close(sv);
done:
	if (!rc)
		log_info("store: %s: cloned from %s@%s", dst, src, snap);
	return rc;
}

/* Copies into l every block that the parent's snapshot holds as data in
 * object objno (buf: one object).  The data goes before the bits, as for
 * every write (put_data). */
static int flatten_object(struct vol *v, struct layer *l, uint64_t objno, uint8_t *buf)
{
	bool zero;
	int rc = parent_object_zero(v, objno, &zero);
	if (rc || zero)
		return rc;
	uint64_t off = objno * v->meta.object_size;
	uint64_t len = MIN((uint64_t)v->meta.object_size, v->meta.size - off);
	rc = parent_read(v, buf, off, len);
	if (rc)
		return rc;
	uint32_t nb = (uint32_t)DIV_ROUND_UP(len, STORE_BLOCK);
	if (len % STORE_BLOCK) /* the volume's last block: whole blocks are stored */
		memset(buf + len, 0, nb * STORE_BLOCK - len);
	uint64_t b0 = off / STORE_BLOCK;
	for (uint32_t i = 0; i < nb;) {
		if (buf_is_zero(buf + (size_t)i * STORE_BLOCK, STORE_BLOCK)) {
			i++;
			continue;
		}
		uint32_t j = i + 1;
		while (j < nb && !buf_is_zero(buf + (size_t)j * STORE_BLOCK, STORE_BLOCK))
			j++;
		rc = put_data(v, l, b0 + i, j - i, buf + (size_t)i * STORE_BLOCK);
		if (rc)
			return rc;
		i = j;
	}
	return 0;
}

int local_vol_flatten(struct vol *v, store_progress_cb cb, void *ctx)
{
	pthread_mutex_lock(&v->wmu);
	int rc = 0;
	if (!v->parent)
		rc = -EINVAL;
	else if (v->flattening)
		rc = -EBUSY;
	else if (layer_find(v, CLONE_BASE_TAG, NULL) || v->meta.head_epoch < CLONE_FIRST_EPOCH)
		rc = -EAGAIN; /* an earlier flatten's base not folded yet (no space) */
	if (!rc)
		v->flattening = true;
	uint64_t objects = v->objects;
	pthread_mutex_unlock(&v->wmu);
	if (rc) {
		if (rc == -EAGAIN)
			log_error("store: %s: an earlier flatten's base layer waits for space to be "
			          "folded; retry after freeing space", v->name);
		return rc;
	}
	/* The base layer is built beside the live layer list, with the tag
	 * reserved below every layer of the clone.  Its blocks hold exactly
	 * the parent's bytes, so whatever a crash leaves of it reads the same
	 * as the parent: an open simply folds it into the clone's first
	 * anchor, and the next flatten starts over.  The copy reads only the
	 * parent's (pinned) snapshot: the clone's I/O goes on meanwhile. */
	struct layer *l = NULL;
	uint8_t *buf = malloc(v->meta.object_size);
	uint64_t t0 = now_mono_ns();
	if (!buf)
		rc = -ENOMEM;
	if (!rc)
		rc = layer_create(v, CLONE_BASE_TAG, &l);
	for (uint64_t o = 0; o < objects && !rc; o++) {
		rc = flatten_object(v, l, o, buf);
		if (cb && !rc)
			cb(ctx, o + 1, objects);
		if (store_flatten_hook)
			store_flatten_hook(o);
	}
	if (!rc)
		rc = layer_sync(l);
	if (!rc)
		rc = layers_dir_sync(v); /* the base's name is durable before the commit */
	free(buf);
	if (!rc && store_flatten_hook)
		store_flatten_hook(UINT64_MAX);
	pthread_mutex_lock(&v->wmu);
	if (rc)
		goto out;
	if (v->n_layers == v->cap_layers) {
		size_t cap = v->cap_layers ? v->cap_layers * 2 : 8;
		struct layer **n = realloc(v->layers, cap * sizeof(*n));
		pthread_rwlock_wrlock(&v->lock);
		if (n) {
			v->layers = n;
			v->cap_layers = cap;
		}
		pthread_rwlock_unlock(&v->lock);
		if (!n) {
			rc = -ENOMEM;
			goto out;
		}
	}
	pthread_rwlock_wrlock(&v->lock);
	memmove(v->layers + 1, v->layers, v->n_layers * sizeof(*v->layers));
	v->layers[0] = l;
	v->n_layers++;
	struct store_meta old = v->meta;
	v->meta.parent[0] = '\0';
	v->meta.parent_snap[0] = '\0';
	v->meta.parent_snap_id = 0;
	v->meta.parent_epoch = 0;
	/* Commit point: volume.meta without the parent line. */
	rc = vol_meta_save(v);
	struct vol *p = NULL;
	if (rc) {
		memcpy(v->meta.parent, old.parent, sizeof(old.parent));
		memcpy(v->meta.parent_snap, old.parent_snap, sizeof(old.parent_snap));
		v->meta.parent_snap_id = old.parent_snap_id;
		v->meta.parent_epoch = old.parent_epoch;
		/* the base layer stays: it reads as the parent does */
	} else {
		p = v->parent;
		v->parent = NULL;
		l = NULL;
		/* The base is a leftover below the first anchor: fold it there,
		 * so that the clone's layers are what a volume's always are. */
		int e = finish_folds(v, 0, CLONE_BASE_TAG);
		if (e)
			log_warn("store: %s: flattened; the base layer is not folded yet (%s), "
			         "retried at the next open or snapshot delete", v->name, strerror(-e));
	}
	pthread_rwlock_unlock(&v->lock);
	if (!rc)
		log_info("store: %s: flattened (independent of %s@%s) in %.1f s", v->name, old.parent,
		         old.parent_snap, (double)(now_mono_ns() - t0) / 1e9);
	if (p) {
		v->flattening = false;
		pthread_mutex_unlock(&v->wmu);
		trash_empty(v);
		vol_close(p);
		return 0;
	}
out:
	if (rc && l && v->n_layers && v->layers[0] == l) {
		/* the commit failed after l joined the list: it stays there */
		l = NULL;
	}
	v->flattening = false;
	pthread_mutex_unlock(&v->wmu);
	if (l) {
		char path[4200];
		snprintf(path, sizeof(path), "%s", l->path);
		layer_free(l);
		rm_rf(path); /* harmless if it stayed: it reads as the parent */
	}
	return rc;
}
