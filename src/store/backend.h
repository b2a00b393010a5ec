/* The operations table behind store.h: one per backend (local.c, rbd.c).
 * Private to src/store.
 *
 * backend.c owns what every backend shares: struct store's open-volume
 * table (one struct vol per name, reference counted), name validation,
 * and the public functions, each a call through the table.  A backend
 * fills the table below and keeps its own state in struct store / struct
 * vol (the local backend inline, for history; others behind ->priv).
 *
 * Contract of every operation: the one of the public function it stands
 * for in store.h (same arguments, same errors), with these differences:
 *  - names are already checked with name_valid() where store.h says so;
 *  - vol_load runs under store->mu with no struct vol of that name open;
 *    vol_unload runs once its last reference is gone (it flushes);
 *  - an optional operation left NULL makes its public function return
 *    -EOPNOTSUPP, and its capability flag must be false.
 * Adding an operation (e.g. resize, clone): a slot here, a capability flag
 * in store_caps, the public function in backend.c, and each backend either
 * fills the slot or leaves it NULL.
 */
#ifndef FERRY_STORE_BACKEND_H
#define FERRY_STORE_BACKEND_H

#include "store/store.h"

struct store_ops {
	const char *name;
	struct store_caps caps;

	/* pool */
	int (*open)(struct store *s, const struct store_config *c);
	void (*close)(struct store *s);
	int (*vol_create)(struct store *s, const char *name, const struct vol_params *p);
	int (*vol_remove)(struct store *s, const char *name, bool force);
	int (*vol_list)(struct store *s, char (**names)[STORE_NAME_MAX + 1], size_t *n);
	bool (*vol_exists)(struct store *s, const char *name);
	int (*vol_load)(struct store *s, const char *name, struct vol **out);
	void (*vol_unload)(struct vol *v);
	/* shared pools only (caps.shared) */
	int (*vol_holder)(struct store *s, const char *name, char *buf, size_t n);
	int (*vol_takeover)(struct store *s, const char *name, unsigned wait_ms, char *msg,
	                    size_t n);
	int (*vol_release)(struct store *s, const char *name);

	/* volume */
	int (*info)(struct vol *v, struct vol_info *out);
	int (*read)(struct vol *v, const char *snap, void *buf, uint64_t off, size_t len);
	/* optional: NULL reads the ranges one by one */
	int (*read_extents)(struct vol *v, const char *snap, const struct extent *ext, size_t n,
	                    void *buf);
	int (*write)(struct vol *v, const void *buf, uint64_t off, size_t len);
	int (*write_zeroes)(struct vol *v, uint64_t off, uint64_t len);
	int (*discard)(struct vol *v, uint64_t off, uint64_t len);
	int (*flush)(struct vol *v);
	uint64_t (*size)(struct vol *v); /* cheap: checked before every SCSI command */

	/* snapshots and diffs */
	int (*snap_create)(struct vol *v, const char *name);
	int (*snap_delete)(struct vol *v, const char *name);
	int (*snap_list)(struct vol *v, struct snap_info **out, size_t *n);
	int (*snap_get)(struct vol *v, const char *name, struct snap_info *out);
	int (*rollback)(struct vol *v, const char *name);
	/* optional: NULL where it cannot be told cheaply */
	int (*head_unchanged)(struct vol *v, const char *name, bool *same);
	int (*diff)(struct vol *v, const char *from, const char *to, diff_cb cb, void *ctx);
	int (*object_is_zero)(struct vol *v, const char *snap, uint64_t objno, bool *zero);
	/* optional: NULL where object_is_zero is cheap (zero_exact) */
	int (*object_mapped)(struct vol *v, const char *snap, uint64_t objno, bool *mapped);

	/* optional, with their capability flag (none of them public yet) */
	int (*resize)(struct vol *v, uint64_t new_size);                   /* caps.resize */
	int (*clone)(struct store *s, const char *src, const char *snap, /* caps.clone */
	             const char *dst);
	int (*clones)(struct store *s, const char *src, const char *snap, /* caps.clone */
	              char (**names)[STORE_NAME_MAX + 1], size_t *n);
	int (*flatten)(struct vol *v, store_progress_cb cb, void *ctx);   /* caps.clone */
};

extern const struct store_ops store_local_ops;
#ifdef FERRY_HAVE_RBD
extern const struct store_ops store_rbd_ops;
#endif

/* The open volume called name, or NULL.  Caller holds s->mu. */
struct vol *store_find_open(struct store *s, const char *name);
/* vol_open with s->mu already held (a clone's load opens its parent).
 * The reference is dropped with vol_close (without s->mu). */
int store_vol_get_locked(struct store *s, const char *name, struct vol **out);

#endif
