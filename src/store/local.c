/* The local backend's operations table: a pool directory of volumes made
 * of layers (store.c, vol.c, layer.c, meta.c; docs/FORMAT.md). */
#include "store/store_int.h"

static int local_vol_load(struct store *s, const char *name, struct vol **out)
{
	return vol_load(s, name, out);
}

static void local_vol_unload(struct vol *v)
{
	local_vol_flush(v);
	vol_free(v);
}

const struct store_ops store_local_ops = {
	.name = "local",
	.caps = {
		.backend = "local",
		.diff_block = STORE_BLOCK,
		.diff_scope = STORE_DIFF_TOUCHED, /* from the layers' block maps */
		.diff_reads_data = false,
		.zero_exact = true,               /* zero ranges are records */
		.rollback_o1 = true,              /* one rename of the head layer */
		.rollback_atomic = true,
		.resize = true,                   /* vol.c: atomic, online grow */
		.clone = true,                    /* vol.c: reads fall through to the parent */
		.shared = false,
		.io_depth = 4,                    /* page cache: a few callers saturate it */
	},
	.open = local_open,
	.close = local_close,
	.vol_create = local_vol_create,
	.vol_remove = local_vol_remove,
	.vol_list = local_vol_list,
	.vol_exists = local_vol_exists,
	.vol_load = local_vol_load,
	.vol_unload = local_vol_unload,
	.info = local_vol_info,
	.read = local_vol_read,
	.write = local_vol_write,
	.write_zeroes = local_vol_write_zeroes,
	.discard = local_vol_discard,
	.flush = local_vol_flush,
	.size = local_vol_size,
	.snap_create = local_snap_create,
	.snap_delete = local_snap_delete,
	.snap_list = local_snap_list,
	.snap_get = local_snap_get,
	.rollback = local_rollback,
	.head_unchanged = local_head_unchanged,
	.diff = local_diff,
	.object_is_zero = local_object_is_zero,
	.resize = local_vol_resize,
	.clone = local_vol_clone,
	.clones = local_vol_clones,
	.flatten = local_vol_flatten,
};
