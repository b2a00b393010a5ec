/* store: thin-provisioned volumes with snapshots and 4 KiB-exact diffs.
 *
 * This header is the whole interface the rest of ferry uses.  Behind it,
 * a backend keeps the volumes (src/store/backend.h, its operations table):
 *  - local: a pool is a directory; each volume lives in POOL/volumes/NAME/
 *    (O(1) snapshots, diffs from block maps).  See docs/FORMAT.md.
 *  - rbd: volumes are images of a Ceph RBD pool, snapshots are RBD
 *    snapshots; several gateways may share the pool.  See docs/CEPH.md.
 * What a backend can do and what it costs is in struct store_caps.
 *
 * Threading: one struct store may be used from many threads.  A struct vol
 * may be used from many threads at once: reads (of the head or of any
 * snapshot) run concurrently with each other and with writes.
 *
 * Errors: every function returns 0 or a negative errno:
 *   -ENOENT  no such volume / snapshot      -EEXIST  name taken
 *   -EINVAL  bad name, size, alignment      -ERANGE  range past the end
 *   -ENOTEMPTY volume has snapshots (remove without force)
 *   -EBUSY   volume is open elsewhere / in use, or held by another
 *            gateway of a shared pool (store_vol_holder() says which)
 *   -ESHUTDOWN this gateway was fenced (blocklisted) on a shared pool
 *   -ENOSPC, -EIO ... from the file system
 */
#ifndef FERRY_STORE_H
#define FERRY_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_BLOCK 4096u                /* change-tracking granularity */
#define STORE_MAX_SIZE (16ull << 40)     /* 16 TiB */
#define STORE_MIN_OBJECT (64u << 10)
#define STORE_MAX_OBJECT (64u << 20)
#define STORE_DEFAULT_OBJECT (4u << 20)
#define STORE_NAME_MAX 64

struct store;
struct vol;

struct vol_params {
	uint64_t size;        /* bytes, multiple of block_size, <= 16 TiB */
	uint32_t object_size; /* power of two, 64 KiB..64 MiB; 0 = 4 MiB */
	uint32_t block_size;  /* 512 or 4096; 0 = 512 */
};

struct vol_info {
	char name[STORE_NAME_MAX + 1];
	char uuid[37];            /* stable per volume, made at create */
	uint64_t size;
	uint32_t object_size;
	uint32_t block_size;
	uint64_t objects;         /* ceil(size / object_size) */
	uint64_t allocated_bytes; /* data stored, head and snapshots together */
	uint32_t snapshots;
	char parent[2 * STORE_NAME_MAX + 2]; /* "SRC@SNAP" for a clone not yet
	                                        flattened, "" otherwise */
};

struct snap_info {
	char name[STORE_NAME_MAX + 1];
	uint64_t id;              /* increases with creation order, never reused */
	uint64_t ctime;           /* unix seconds */
};

/* ---- pool ------------------------------------------------------------- */
/* Opens (creating if needed) the local store in directory dir.  Caller
 * closes. */
int store_open(const char *dir, struct store **out);

/* Which backend and where; strings are copied by store_open_config. */
struct store_config {
	const char *backend;       /* "local" (or NULL) or "rbd" */
	const char *dir;           /* local: the pool directory.  rbd: the
	                              gateway's own state directory, whose
	                              gateway.id names it to other gateways */
	const char *rbd_pool;      /* rbd: RADOS pool of the images (required) */
	const char *rbd_namespace; /* rbd: NULL or "" = the default namespace */
	const char *ceph_conf;     /* rbd: NULL = Ceph's search ($CEPH_CONF,
	                              /etc/ceph/ceph.conf) */
	const char *ceph_id;       /* rbd: client name without "client." (NULL:
	                              admin) */
};
/* Opens the store described by c.  -EPROTONOSUPPORT: backend unknown or
 * not built in; -EINVAL: a required field is missing; backend errors
 * otherwise (logged).  Caller closes. */
int store_open_config(const struct store_config *c, struct store **out);
/* True when this build has the named backend. */
bool store_backend_available(const char *name);

enum store_diff_scope {
	STORE_DIFF_TOUCHED, /* vol_diff reports exactly the blocks written or
	                       discarded in between (from the block maps) */
	STORE_DIFF_CHANGED, /* it reports every block whose content differs and
	                       maybe some touched ones whose content did not */
};

/* What the backend of a store can do, and what its operations cost. */
struct store_caps {
	const char *backend;            /* "local", "rbd" */
	uint32_t diff_block;            /* granularity of vol_diff extents (bytes) */
	enum store_diff_scope diff_scope;
	bool diff_reads_data;           /* vol_diff reads data to be exact (its cost
	                                   follows what the backend over-reports) */
	bool zero_exact;                /* zero kinds / all_zero known from metadata */
	bool rollback_o1;               /* vol_rollback takes the same time whatever
	                                   changed (otherwise: ~ what changed) */
	bool rollback_atomic;           /* a crash inside vol_rollback leaves the old
	                                   or the new head; otherwise a mixture that
	                                   the repeated rollback completes */
	bool resize;                    /* volumes can change size */
	bool clone;                     /* O(1) writable clones of a snapshot */
	bool shared;                    /* several gateways use one pool: volumes
	                                   have holders (store_vol_holder/takeover) */
	unsigned io_depth;              /* concurrent I/O callers worth running */
};
/* Fills *out for store s (or the store of volume v).  Never fails. */
void store_get_caps(const struct store *s, struct store_caps *out);
void vol_get_caps(const struct vol *v, struct store_caps *out);
/* Closes the store.  All volumes must have been closed. */
void store_close(struct store *s);

int store_vol_create(struct store *s, const char *name, const struct vol_params *p);
/* Removes a volume.  With snapshots present it fails with -ENOTEMPTY
 * unless force.  Fails with -EBUSY while the volume is open. */
int store_vol_remove(struct store *s, const char *name, bool force);
/* Names of all volumes, sorted.  *names is one malloc'd array of
 * *n entries; free it with free(). */
int store_vol_list(struct store *s, char (**names)[STORE_NAME_MAX + 1], size_t *n);
bool store_vol_exists(struct store *s, const char *name);

/* Shared pools (caps.shared).  A volume belongs to the gateway that
 * created or took it over; other gateways cannot open it (-EBUSY).
 * store_vol_holder: 0 with a one-line description of the gateway that
 * holds name (host, state directory, pid, client address, and whether it
 * looks alive) in buf when another gateway holds it; -ENODATA when nobody
 * does (it was released: takeover claims it); -ENOENT when this gateway
 * does (or no such volume); -EOPNOTSUPP when the pool is not shared.
 * store_vol_takeover: makes this gateway the holder of a volume that was
 * released or whose holder is dead: waits (at most wait_ms) for the holder's session to
 * lapse, fences (blocklists) it so that it can never write again, takes
 * the volume's lock and rewrites the ownership record.  0 (msg says what
 * was done), -EBUSY (holder alive; msg says who), -ENOENT, -EOPNOTSUPP,
 * or the cluster's error.  msg may be NULL. */
int store_vol_holder(struct store *s, const char *name, char *buf, size_t n);
/* Gives a volume this gateway holds back to the pool: its ownership record
 * is cleared and its lock released, so that another gateway's open claims
 * it (a planned move).  -EBUSY while it is open here (beyond the store's
 * own reference), -ENOENT, -EOPNOTSUPP when the pool is not shared. */
int store_vol_release(struct store *s, const char *name);
int store_vol_takeover(struct store *s, const char *name, unsigned wait_ms, char *msg, size_t n);

/* ---- clones ----------------------------------------------------------- */
/* Makes volume dst a writable thin clone of src at snapshot snap
 * (caps.clone): no data is copied, so it takes the same time whatever src
 * holds.  dst has src's size and geometry; it reads as src@snap until
 * written; writes to dst never change src or its snapshots.  While dst
 * has not been flattened, snap cannot be deleted (vol_snap_delete:
 * -EBUSY) nor src removed (store_vol_remove: -EBUSY), and dst cannot be
 * resized.  Snapshots of dst are ordinary snapshots; vol_diff of dst from
 * creation (from = NULL) is refused with -EOPNOTSUPP until it is flattened
 * (a diff between two of its snapshots works).  Atomic: after a crash dst
 * exists completely or not at all.  0, -ENOENT (src or snap), -EEXIST
 * (dst), -EINVAL, -EOPNOTSUPP (backend), -ENOSPC/-EIO. */
int store_vol_clone(struct store *s, const char *src, const char *snap, const char *dst);
/* Names of the volumes that are clones of src at snapshot snap (NULL: at
 * any snapshot) and not flattened, sorted.  *names is one malloc'd array
 * (caller frees), *n may be 0.  -EOPNOTSUPP where the backend has no
 * clones. */
int store_vol_clones(struct store *s, const char *src, const char *snap,
                     char (**names)[STORE_NAME_MAX + 1], size_t *n);

/* Progress of long work: done out of total units (bytes or objects). */
typedef void (*store_progress_cb)(void *ctx, uint64_t done, uint64_t total);

/* ---- volume ----------------------------------------------------------- */
/* Opens a volume.  The same volume may be opened several times (each call
 * returns a reference to one shared object); each open needs a close.
 * Finishes interrupted snapshot deletes; one that has no space to finish
 * is left for later (logged) and does not fail the open. */
int vol_open(struct store *s, const char *name, struct vol **out);
void vol_close(struct vol *v);
int vol_info(struct vol *v, struct vol_info *out);

/* Makes clone v independent of its parent: copies what it still reads
 * from the parent's snapshot, then drops the link (atomic commit; a crash
 * before it leaves the clone as it was, and the next flatten starts
 * over).  Reads and writes go on meanwhile.  cb (may be NULL) is called
 * with objects done / total.  0, -EINVAL (not a clone), -EBUSY (a flatten
 * of v is already running), -EOPNOTSUPP, -ENOSPC/-EIO. */
int vol_flatten(struct vol *v, store_progress_cb cb, void *ctx);

/* The volume's size in bytes, without a lock (for a per-command check). */
uint64_t vol_size(struct vol *v);
/* Changes the volume's size to size (> 0, a multiple of the block size,
 * at most STORE_MAX_SIZE).  Snapshots have the volume's size: after a
 * grow, the head and every snapshot read zeros from the old end on, and
 * diffs report nothing there until it is written.  A shrink drops what
 * lies past the new end and is refused with -ENOTEMPTY while the volume
 * has snapshots (they would lose data); policy beyond that (exports,
 * pairs) is the caller's.  Atomic: after a crash the volume has the old
 * or the new size, with the same content up to the smaller one, and zeros
 * past the old end.  Concurrent readers and writers wait for it (a grow
 * costs the number of layers, not the size).  0, -EINVAL, -ENOTEMPTY,
 * -ENOSPC/-EIO. */
int vol_resize(struct vol *v, uint64_t size);

/* Reads len bytes at off from snapshot snap (NULL = the head).  off and
 * len need no alignment.  Unwritten ranges read as zeros. */
int vol_read(struct vol *v, const char *snap, void *buf, uint64_t off, size_t len);
struct extent;
/* Reads the n ranges ext[] (their offset and length; kind is ignored) of
 * snapshot snap (NULL = the head), back to back into buf (which holds the
 * sum of their lengths).  When every range lies in one object, a backend
 * may read them in one request (RBD: one RADOS operation instead of one
 * per range), so callers that read many small ranges of an object should
 * pass them together.  Same errors as vol_read. */
int vol_read_extents(struct vol *v, const char *snap, const struct extent *ext, size_t n,
                     void *buf);
/* Writes to the head.  No alignment needed.  All-zero 4 KiB blocks are
 * stored as zero ranges (no data).  Not durable until vol_flush(). */
int vol_write(struct vol *v, const void *buf, uint64_t off, size_t len);
/* Makes [off, off+len) read as zeros; whole 4 KiB blocks inside the range
 * are freed and recorded as zero ranges.  write_zeroes and discard are the
 * same operation in this backend (both deallocate). */
int vol_write_zeroes(struct vol *v, uint64_t off, uint64_t len);
int vol_discard(struct vol *v, uint64_t off, uint64_t len);
/* Makes every completed write durable (data and metadata). */
int vol_flush(struct vol *v);

/* ---- snapshots -------------------------------------------------------- */
/* Freezes the head as snapshot name, in time independent of the volume's
 * size or written data (it flushes first). */
int vol_snap_create(struct vol *v, const char *name);
/* A consistency group's cut: snapshot name of every volume of vols[0..n)
 * (distinct, n <= STORE_CUT_MAX) at one instant.  Every write that
 * returned before the call is in every snapshot; none that starts after
 * the gates close is in any: new writes (vol_write, vol_write_zeroes,
 * vol_discard) on the members wait (they are held, not failed) until every
 * snapshot is made, while reads go on.  *hold_ns (may be NULL) is how long
 * writes were held.  All or none: when one member fails, the snapshots
 * made are deleted again.  -EEXIST (nothing done) when a member already
 * has name; else what vol_snap_create returns. */
#define STORE_CUT_MAX 256
int vol_snap_create_cut(struct vol *const *vols, size_t n, const char *name,
                        uint64_t *hold_ns);
/* Deletes a snapshot; no other snapshot's content nor the head changes.
 * -ENOSPC after the snapshot is gone: the delete is done but its layer
 * could not be folded yet (space not back); the next delete or open
 * retries, and the volume reads correctly meanwhile. */
int vol_snap_delete(struct vol *v, const char *name);
/* Snapshots in creation order; *out malloc'd, caller frees. */
int vol_snap_list(struct vol *v, struct snap_info **out, size_t *n);
/* Looks one snapshot up.  0 or -ENOENT. */
int vol_snap_get(struct vol *v, const char *name, struct snap_info *out);
/* Makes the head equal to snapshot name again, dropping every write made
 * since (used for promotion after a failover).  Snapshots are untouched.
 * -ENOSPC (nothing changed) when it first needs a pending fold that has no
 * space to run (a newer snapshot was deleted on a full disk). */
int vol_rollback(struct vol *v, const char *name);
/* Whether the head still reads exactly as snapshot name because nothing
 * was written, zeroed or discarded since: name is the newest snapshot and
 * no block has been touched after it.  A cheap metadata check (no I/O, no
 * flush) that replication uses to skip empty cycles.  *same = false means
 * "maybe changed" (a write in flight counts as a change).  The size is
 * not part of it (see vol_resize).  0, -ENOENT (no such snapshot: *same is
 * false), or -EOPNOTSUPP on backends that cannot tell cheaply (rbd). */
int vol_head_unchanged(struct vol *v, const char *name, bool *same);

/* ---- diff ------------------------------------------------------------- */
enum extent_kind { EXTENT_DATA = 0, EXTENT_ZERO = 1 };

struct extent {
	uint64_t offset;  /* bytes, volume-relative, 4 KiB aligned */
	uint64_t length;  /* bytes; only the volume's last extent may end
	                     unaligned (at the volume size) */
	enum extent_kind kind; /* ZERO: reads as zeros at the later snapshot */
};

/* What changed in one object between two points. */
struct diff_object {
	uint64_t objno;
	const struct extent *extents; /* sorted, coalesced, inside the object */
	size_t n_extents;
	bool all_zero;                /* the whole object reads as zeros at `to` */
};

/* Called once per changed object, in increasing objno order.  Return 0 to
 * go on, anything else to stop (that value is returned by vol_diff). */
typedef int (*diff_cb)(void *ctx, const struct diff_object *obj);

/* The 4 KiB blocks that changed after snapshot from (NULL = since the
 * volume was created) up to snapshot to (NULL = the head, which is only
 * meaningful while nothing writes), each with its kind at `to`.  Which
 * blocks: every block touched (written or discarded) in between with
 * caps.diff_scope TOUCHED; every block whose content differs (and perhaps
 * some touched ones) with CHANGED.  Never reports less than what changed.
 * Cost is proportional to what changed, not to the volume size. */
int vol_diff(struct vol *v, const char *from, const char *to, diff_cb cb, void *ctx);

/* True when the whole object reads as zeros at snap (NULL = head). */
int vol_object_is_zero(struct vol *v, const char *snap, uint64_t objno, bool *zero);
/* False when the whole object reads as zeros at snap (NULL = head); true
 * when it may hold data.  From metadata only: cheap on every backend (the
 * exact vol_object_is_zero reads data where caps.zero_exact is false). */
int vol_object_mapped(struct vol *v, const char *snap, uint64_t objno, bool *mapped);

#endif
