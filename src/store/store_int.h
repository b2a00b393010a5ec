/* store internals: volume.meta codec, layers, the shared volume object.
 * Private to src/store (and its tests); see docs/FORMAT.md. */
#ifndef FERRY_STORE_INT_H
#define FERRY_STORE_INT_H

#include "store/backend.h"
#include "store/store.h"

#include "common/common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define META_VERSION 1
#define META_MAX_BYTES (16u << 20)
#define STORE_MAX_SNAPS 65536u
#define SEG_SHIFT 40                     /* 1 TiB data segment files */
#define MAX_SEGS (STORE_MAX_SIZE >> SEG_SHIFT)
#define MAP_HDR 4096u
#define MAP_MAGIC "FERRYMAP"
#define MAP_VERSION 1u

/* ---- volume.meta ------------------------------------------------------ */
struct meta_snap {
	uint64_t id;
	uint64_t epoch;
	uint64_t ctime;
	char name[STORE_NAME_MAX + 1];
};

struct store_meta {
	char uuid[37];
	uint64_t size;
	uint32_t object_size;
	uint32_t block_size;
	uint64_t head_epoch;
	uint64_t next_snap_id;
	/* A clone (docs/FORMAT.md §3): reads that no layer of this volume
	 * decides fall through to volume parent at snapshot parent_snap
	 * (id parent_snap_id, epoch parent_epoch).  parent[0] == 0: none. */
	char parent[STORE_NAME_MAX + 1];
	char parent_snap[STORE_NAME_MAX + 1];
	uint64_t parent_snap_id;
	uint64_t parent_epoch;
	struct meta_snap *snaps; /* creation order (increasing id and epoch) */
	size_t n_snaps;
	size_t cap_snaps;
};

/* Validates and normalises volume parameters (fills the defaults).
 * 0 or -EINVAL (logged). */
int store_params_check(const struct vol_params *in, struct vol_params *out);
/* Pure parser: bytes -> struct.  On success m->snaps is malloc'd and
 * owned by m (free with store_meta_free).  -EIO for a torn, edited or
 * garbage file, -ENOMEM.  Does not log (the caller logs with the path). */
int store_meta_parse(const void *buf, size_t len, struct store_meta *m, const char **why);
/* Serialises m; *out malloc'd, caller frees.  0 or -ENOMEM. */
int store_meta_format(const struct store_meta *m, char **out, size_t *len);
void store_meta_free(struct store_meta *m);
/* Appends a snapshot; 0 or -ENOMEM. */
int store_meta_add_snap(struct store_meta *m, const struct meta_snap *s);
/* libFuzzer entry: parse, and when it parses, check that format+parse
 * round-trips.  Always returns 0 (aborts on a round-trip mismatch). */
int store_meta_fuzz(const uint8_t *data, size_t size);

/* ---- layers ----------------------------------------------------------- */
struct layer {
	uint64_t tag;
	char path[4096];       /* .../layers/<tag as 16 hex> */
	uint8_t *map;          /* MAP_SHARED mapping of the whole map file */
	size_t map_len;
	uint64_t objects;      /* records in the map (the header's count): the
	                          volume's, except while a resize runs */
	int map_fd;            /* -1 until the layer is written to */
	int seg_fd[MAX_SEGS];  /* -1 when the segment file does not exist */
	uint32_t seg_dirty;    /* segments written since the last sync */
	bool map_dirty;
	bool dir_dirty;        /* files created in the layer dir, not fsynced */
	bool created_dirty;    /* the layer itself not yet fsynced into layers/ */
	uint64_t *pages;       /* bitmap: map page allocated (may hold records) */
	uint64_t *objs;        /* objnos that have a record; sorted unless !sorted */
	size_t n_objs, cap_objs;
	bool sorted;
};

/* One open volume.  The first four fields are every backend's (backend.c);
 * the rest is the local backend's, except priv: other backends' state. */
struct vol {
	struct store *store;
	struct vol *next;      /* store's list of open volumes */
	int refs;
	char name[STORE_NAME_MAX + 1];
	void *priv;            /* backends other than local */
	/* The write gate of a group cut (backend.c): writers count themselves
	 * in gate_inflight; while gate_held is set new ones wait.  Both zero
	 * from calloc: every backend's struct vol starts open. */
	atomic_uint gate_inflight;
	atomic_bool gate_held;
	char dir[4096];
	pthread_mutex_t wmu;   /* serialises writers and structure changes */
	pthread_mutex_t fmu;   /* serialises flushes; taken after wmu, and a
	                          flush may drop wmu while it syncs */
	pthread_rwlock_t lock; /* read: readers; write: layer list changes */
	struct store_meta meta;
	uint64_t objects;
	uint32_t bpo;          /* 4 KiB blocks per object */
	uint32_t rec;          /* map record size: 2 * bpo / 8 */
	struct layer **layers; /* ascending tag */
	size_t n_layers, cap_layers;
	/* Layer directories already renamed out of sight (under wmu), to be
	 * deleted after the locks are dropped: unlinking a big file can take
	 * long (e.g. synchronous discard) and must not stall I/O. */
	char **trash;
	size_t n_trash;
	uint64_t trash_seq;
	/* A clone's parent (meta.parent), open for as long as v is: reads
	 * that no layer of v decides go to it at meta.parent_epoch.  Changed
	 * only by a flatten, under wmu and the write lock. */
	struct vol *parent;
	bool flattening;       /* under wmu */
};

struct store {
	const struct store_ops *ops;
	char dir[4096];        /* local: the pool; others: the gateway's state */
	pthread_mutex_t mu;    /* the list of open volumes; create/remove */
	struct vol *open;
	char vdir[4096];       /* local: dir/volumes */
	void *priv;            /* backends other than local */
};

/* Tests: called on each member's thread of a cut, under the hold, before
 * its snapshot (member: its index); NULL in production. */
extern void (*store_cut_hook)(size_t member);

/* Random bytes from the kernel; 0 or -errno. */
int store_random(void *buf, size_t n);
/* A new random (version 4) UUID, 36 characters + NUL. */
int store_uuid_new(char out[37]);

/* ---- the local backend's operations (store.c, vol.c) -------------------- */
int local_open(struct store *s, const struct store_config *c);
void local_close(struct store *s);
int local_vol_create(struct store *s, const char *name, const struct vol_params *p);
int local_vol_remove(struct store *s, const char *name, bool force);
int local_vol_list(struct store *s, char (**names)[STORE_NAME_MAX + 1], size_t *n);
bool local_vol_exists(struct store *s, const char *name);
int local_vol_info(struct vol *v, struct vol_info *out);
int local_vol_read(struct vol *v, const char *snap, void *buf, uint64_t off, size_t len);
int local_vol_write(struct vol *v, const void *buf, uint64_t off, size_t len);
int local_vol_write_zeroes(struct vol *v, uint64_t off, uint64_t len);
int local_vol_resize(struct vol *v, uint64_t size);
uint64_t local_vol_size(struct vol *v);
int local_vol_discard(struct vol *v, uint64_t off, uint64_t len);
int local_vol_flush(struct vol *v);
int local_snap_create(struct vol *v, const char *name);
int local_snap_delete(struct vol *v, const char *name);
int local_snap_list(struct vol *v, struct snap_info **out, size_t *n);
int local_snap_get(struct vol *v, const char *name, struct snap_info *out);
int local_rollback(struct vol *v, const char *name);
int local_head_unchanged(struct vol *v, const char *name, bool *same);
int local_diff(struct vol *v, const char *from, const char *to, diff_cb cb, void *ctx);
int local_object_is_zero(struct vol *v, const char *snap, uint64_t objno, bool *zero);
int local_vol_clone(struct store *s, const char *src, const char *snap, const char *dst);
int local_vol_clones(struct store *s, const char *src, const char *snap,
                     char (**names)[STORE_NAME_MAX + 1], size_t *n);
int local_vol_flatten(struct vol *v, store_progress_cb cb, void *ctx);
/* Creates volume name from meta m (store.c): built aside, then renamed
 * into place (atomic).  -EEXIST, or an I/O error (logged). */
int local_vol_create_meta(struct store *s, const char *name, const struct store_meta *m);
int local_vol_create_meta_locked(struct store *s, const char *name, const struct store_meta *m);
/* Reads and parses volume name's volume.meta (no log); m owned by the
 * caller (store_meta_free). */
int local_meta_read(struct store *s, const char *name, struct store_meta *m);
/* The clone epoch reserved for a flatten's base layer: a clone starts
 * with head_epoch CLONE_FIRST_EPOCH, and its flatten writes the parent's
 * data into layer CLONE_BASE_TAG below every layer of its own. */
#define CLONE_BASE_TAG 1u
#define CLONE_FIRST_EPOCH 2u

/* Loads volume dir (finishing interrupted snapshot deletes; a fold that
 * cannot run for lack of space is left for later and the load succeeds);
 * *out owned by the caller (vol_free). */
int vol_load(struct store *s, const char *name, struct vol **out);
void vol_free(struct vol *v);
/* Writes v->meta to volume.meta atomically. */
int vol_meta_save(struct vol *v);

/* Fault injection for tests, NULL otherwise: a snapshot delete's fold of
 * the layer tagged `folded` calls it before each run of blocks it copies,
 * and a negative errno it returns fails the fold right there, as a full
 * file system would (leaving the merge half done).  Not thread-safe: set it
 * while no volume is busy. */
extern int (*store_fold_fault)(uint64_t folded);
/* Test hook, NULL otherwise: vol_resize calls it at each step (1: the
 * layers are clipped, 2: the layers have their new size, 3: volume.meta
 * holds the new size) so that a test can kill the process there. */
extern void (*store_resize_hook)(int step);
/* Test hook, NULL otherwise: vol_flatten calls it after copying each
 * object (objno) and with UINT64_MAX just before its commit, so that a
 * test can kill the process there. */
extern void (*store_flatten_hook)(uint64_t objno);

/* snprintf for paths: truncation is an error (-ENAMETOOLONG), not a
 * silently different file. */
int spath(char *buf, size_t n, const char *fmt, ...) PRINTF_LIKE(3, 4);

size_t layer_map_len(const struct vol *v);
size_t layer_map_len_for(const struct vol *v, uint64_t objects);
/* Loads an existing layer / creates a new empty one.  *out owned by the
 * caller (layer_free). */
int layer_load(struct vol *v, uint64_t tag, struct layer **out);
int layer_create(struct vol *v, uint64_t tag, struct layer **out);
void layer_free(struct layer *l);
void layer_sort(struct layer *l);
int layer_open_map_fd(struct layer *l);
/* Must precede the first bit store into objno's record: allocates the map
 * page and indexes the object. */
int layer_prepare_rec(struct vol *v, struct layer *l, uint64_t objno);
/* fd of data segment seg (creating the file if create), or -1 / -errno. */
int layer_seg_fd(struct layer *l, unsigned seg, bool create);
/* fdatasync dirty data, msync the map, fsync new directory entries. */
int layer_sync(struct layer *l);
/* layer_sync in two steps, so that the slow one runs without wmu:
 * layer_dirty_take (under wmu) moves l's dirty state into *d;
 * layer_sync_dirty makes durable everything d names (whatever was written
 * before the take) and, when it fails, marks it dirty in l again.  The
 * caller keeps l alive meanwhile (read lock) and serialises flushes
 * (fmu) so that a flush that finds l clean knows nothing is in flight. */
struct layer_dirty {
	uint32_t segs;
	bool map, dir, created;
};
void layer_dirty_take(struct layer *l, struct layer_dirty *d);
int layer_sync_dirty(struct layer *l, const struct layer_dirty *d);
uint64_t layer_allocated(const struct layer *l);
/* Gives the map room for exactly `objects` records: file, mapping, page
 * bitmap, object index and header (made durable before it returns).
 * Records of objects past the new count must be clear already when
 * shrinking (vol_resize clips first). */
int layer_set_objects(struct vol *v, struct layer *l, uint64_t objects);
/* Renames the layer directory to tag (atomic). */
int layer_rename(struct vol *v, struct layer *l, uint64_t tag);

static inline uint8_t *layer_rec(const struct vol *v, const struct layer *l, uint64_t objno)
{
	return l->map + MAP_HDR + objno * v->rec;
}

static inline bool rec_bit(const uint8_t *bm, uint32_t i)
{
	return (__atomic_load_n(&bm[i >> 3], __ATOMIC_ACQUIRE) >> (i & 7)) & 1;
}

#endif
