/* The "volume" command group. */
#include "daemon/daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "repl/repl.h"

static void json_vol(struct jw *w, const struct vol_info *vi)
{
	jw_obj_begin(w);
	jw_key(w, "name");
	jw_str(w, vi->name);
	jw_key(w, "uuid");
	jw_str(w, vi->uuid);
	jw_key(w, "size");
	jw_u64(w, vi->size);
	jw_key(w, "object_size");
	jw_u64(w, vi->object_size);
	jw_key(w, "block_size");
	jw_u64(w, vi->block_size);
	jw_key(w, "objects");
	jw_u64(w, vi->objects);
	jw_key(w, "allocated_bytes");
	jw_u64(w, vi->allocated_bytes);
	jw_key(w, "snapshots");
	jw_u64(w, vi->snapshots);
	jw_key(w, "parent");
	if (vi->parent[0])
		jw_str(w, vi->parent);
	else
		jw_null(w);
	jw_obj_end(w);
}

static int get_info(struct dreq *r, const char *name, struct vol_info *vi)
{
	struct vol *v;
	if (dreq_open_vol(r, name, NULL, &v))
		return 1;
	int e = vol_info(v, vi);
	vol_close(v);
	if (e < 0)
		return dreq_fail(r, "volume '%s': cannot read its info: %s", name, strerror(-e));
	return 0;
}

static int volume_create(struct dreq *r)
{
	const char *name = ctl_pos(r->cmd, "NAME")->vol;
	int rs = dreq_name_reserved(r, name, "volume");
	if (rs)
		return rs;
	const struct ctl_val *osz = ctl_flag(r->cmd, "object-size");
	const struct ctl_val *bs = ctl_flag(r->cmd, "block-size");
	struct vol_params p = {
		.size = ctl_flag(r->cmd, "size")->u64,
		.object_size = 0,
		.block_size = bs->set ? (uint32_t)bs->u64 : 512,
	};
	if (p.size == 0)
		return dreq_usage(r, "--size must be greater than 0");
	if (p.size % p.block_size)
		return dreq_usage(r, "--size %" PRIu64 " is not a multiple of the block size %" PRIu32,
		                  p.size, p.block_size);
	if (p.size > STORE_MAX_SIZE)
		return dreq_usage(r, "--size %" PRIu64 " is larger than the maximum (16 TiB)", p.size);
	if (osz->set) {
		uint64_t o = osz->u64;
		if (o < STORE_MIN_OBJECT || o > STORE_MAX_OBJECT || (o & (o - 1)))
			return dreq_usage(r, "--object-size must be a power of two from 64K to 64M, not %s",
			                  osz->str);
		p.object_size = (uint32_t)o;
	}
	/* under the groups' lock: no group of this name appears meanwhile */
	daemon_groups_lock();
	int e = daemon_group_exists(r->d, name) ? -EADDRINUSE : store_vol_create(r->store, name, &p);
	daemon_groups_unlock();
	if (e == -EADDRINUSE)
		return dreq_fail(r, "'%s' is a consistency group: groups and volumes share one "
		                    "namespace; choose another volume name", name);
	if (e == -EEXIST)
		return dreq_fail(r, "volume '%s' already exists", name);
	if (e < 0)
		return dreq_fail(r, "cannot create volume '%s': %s", name, strerror(-e));
	log_info("created volume %s (%" PRIu64 " bytes)", name, p.size);
	return 0;
}

static int volume_list(struct dreq *r)
{
	char(*names)[STORE_NAME_MAX + 1] = NULL;
	size_t n = 0;
	int e = store_vol_list(r->store, &names, &n);
	if (e < 0)
		return dreq_fail(r, "cannot list volumes: %s", strerror(-e));
	bool json = ctl_flag(r->cmd, "json")->set;
	struct sbuf b;
	struct jw w;
	sbuf_init(&b);
	jw_init(&w, &b);
	if (json)
		jw_arr_begin(&w);
	else
		sbuf_printf(&b, "%-24s %12s %12s %6s %-36s %s\n", "NAME", "SIZE", "ALLOCATED",
		            "SNAPS", "UUID", "PARENT");
	for (size_t i = 0; i < n; i++) {
		struct vol *v;
		struct vol_info vi;
		/* A volume removed since the listing is simply skipped. */
		if (vol_open(r->store, names[i], &v) < 0)
			continue;
		e = vol_info(v, &vi);
		vol_close(v);
		if (e < 0)
			continue;
		if (json) {
			json_vol(&w, &vi);
		} else {
			char s1[32], s2[32];
			sbuf_printf(&b, "%-24s %12s %12s %6" PRIu32 " %-36s %s\n", vi.name,
			            fmt_bytes(vi.size, s1, sizeof(s1)),
			            fmt_bytes(vi.allocated_bytes, s2, sizeof(s2)), vi.snapshots, vi.uuid,
			            vi.parent[0] ? vi.parent : "-");
		}
	}
	free(names);
	if (json) {
		jw_arr_end(&w);
		sbuf_puts(&b, "\n");
	}
	return dreq_out_sbuf(r, &b);
}

static int volume_info(struct dreq *r)
{
	const char *name = ctl_pos(r->cmd, "NAME")->vol;
	struct vol_info vi;
	if (get_info(r, name, &vi))
		return 1;
	struct sbuf b;
	sbuf_init(&b);
	if (ctl_flag(r->cmd, "json")->set) {
		struct jw w;
		jw_init(&w, &b);
		json_vol(&w, &vi);
		sbuf_puts(&b, "\n");
	} else {
		char s[32];
		sbuf_printf(&b, "name:            %s\n", vi.name);
		sbuf_printf(&b, "uuid:            %s\n", vi.uuid);
		sbuf_printf(&b, "size:            %" PRIu64 " (%s)\n", vi.size,
		            fmt_bytes(vi.size, s, sizeof(s)));
		sbuf_printf(&b, "object_size:     %" PRIu32 " (%s)\n", vi.object_size,
		            fmt_bytes(vi.object_size, s, sizeof(s)));
		sbuf_printf(&b, "block_size:      %" PRIu32 "\n", vi.block_size);
		sbuf_printf(&b, "objects:         %" PRIu64 "\n", vi.objects);
		sbuf_printf(&b, "allocated_bytes: %" PRIu64 " (%s)\n", vi.allocated_bytes,
		            fmt_bytes(vi.allocated_bytes, s, sizeof(s)));
		sbuf_printf(&b, "snapshots:       %" PRIu32 "\n", vi.snapshots);
		sbuf_printf(&b, "parent:          %s\n", vi.parent[0] ? vi.parent : "-");
	}
	return dreq_out_sbuf(r, &b);
}

static int volume_rm(struct dreq *r)
{
	const char *name = ctl_pos(r->cmd, "NAME")->vol;
	bool force = ctl_flag(r->cmd, "force")->set;
	if (export_volume_in_use(name, NULL))
		return dreq_fail(r, "volume '%s' is exported over iSCSI (ferry export rm it first)", name);
	if (daemon_repl_needs(name, NULL))
		return dreq_fail(r, "volume '%s' is in a replication pair (ferry pair rm it first)", name);
	char grp[STORE_NAME_MAX + 1];
	daemon_groups_lock();
	int e = daemon_group_of(r->d, name, grp) ? -EADDRINUSE : 0;
	if (!e)
		e = store_vol_remove(r->store, name, force);
	daemon_groups_unlock();
	if (e == -EADDRINUSE)
		return dreq_fail(r, "volume '%s' is in consistency group '%s' (ferry group remove %s %s "
		                    "first)", name, grp, grp, name);
	if (e == -ENOENT)
		return dreq_fail(r, "no such volume '%s'", name);
	if (e == -ENOTEMPTY)
		return dreq_fail(r, "volume '%s' has snapshots (use --force to remove them too)", name);
	char who[1536];
	if (e == -EBUSY && store_vol_holder(r->store, name, who, sizeof(who)) == 0)
		return dreq_fail(r, "volume '%s' is held by another gateway: %s", name, who);
	char cl[1024];
	if (e == -EBUSY && daemon_clones_of(r->store, name, NULL, cl, sizeof(cl)))
		return dreq_fail(r, "volume '%s' has clones: %s (remove them, or make them independent "
		                 "with ferry volume flatten, first)", name, cl);
	if (e == -EBUSY)
		return dreq_fail(r, "volume '%s' is in use", name);
	if (e < 0)
		return dreq_fail(r, "cannot remove volume '%s': %s", name, strerror(-e));
	log_info("removed volume %s%s", name, force ? " (forced)" : "");
	return 0;
}

static int range_check(struct dreq *r, const struct vol_info *vi, uint64_t off, uint64_t len)
{
	if (off > vi->size || len > vi->size - off)
		return dreq_fail(r,
		                 "range %" PRIu64 "+%" PRIu64 " is past the end of volume '%s' "
		                 "(size %" PRIu64 ")",
		                 off, len, vi->name, vi->size);
	return 0;
}

static int volume_write(struct dreq *r)
{
	const char *name = ctl_pos(r->cmd, "NAME")->vol;
	uint64_t off = ctl_flag(r->cmd, "offset")->u64;
	const struct ctl_val *lenf = ctl_flag(r->cmd, "length");
	if (daemon_volume_is_secondary(name)) /* only replication writes it */
		return dreq_fail(r, "volume '%s' is a replication secondary: read-only", name);
	struct vol *v;
	if (dreq_open_vol(r, name, NULL, &v))
		return 1;
	struct vol_info vi;
	int st = 0, e = vol_info(v, &vi);
	if (e < 0) {
		st = dreq_fail(r, "volume '%s': cannot read its info: %s", name, strerror(-e));
		goto out;
	}
	/* With the length known up front (a regular file), a write that would
	 * not fit changes nothing.  From a pipe, each chunk is checked before
	 * it is written. */
	if (range_check(r, &vi, off, lenf->set ? lenf->u64 : 0)) {
		st = 1;
		goto out;
	}
	uint64_t done = 0;
	for (;;) {
		const uint8_t *data;
		size_t n;
		e = dreq_in(r, &data, &n);
		if (e < 0) {
			st = 1; /* the CLI is gone: nothing to tell it */
			goto out;
		}
		if (e == 0)
			break;
		if (lenf->set && done + n > lenf->u64) {
			st = dreq_fail(r, "input is longer than --length %" PRIu64, lenf->u64);
			goto out;
		}
		if (range_check(r, &vi, off + done, n)) {
			st = 1;
			goto out;
		}
		e = vol_write(v, data, off + done, n);
		if (e < 0) {
			st = dreq_fail(r, "write to '%s' at %" PRIu64 " failed: %s", name, off + done,
			               strerror(-e));
			goto out;
		}
		done += n;
		if (atomic_load(&r->d->stopping)) {
			st = dreq_fail(r, "ferryd is shutting down");
			goto out;
		}
	}
	if (lenf->set && done != lenf->u64) {
		st = dreq_fail(r, "input ended after %" PRIu64 " of --length %" PRIu64 " bytes", done,
		               lenf->u64);
		goto out;
	}
	/* Acknowledged means durable. */
	e = vol_flush(v);
	if (e < 0) {
		st = dreq_fail(r, "flush of '%s' failed: %s", name, strerror(-e));
		goto out;
	}
	log_debug("wrote %" PRIu64 " bytes to %s at %" PRIu64, done, name, off);
out:
	vol_close(v);
	return st;
}

static int volume_discard(struct dreq *r)
{
	const char *name = ctl_pos(r->cmd, "NAME")->vol;
	uint64_t off = ctl_flag(r->cmd, "offset")->u64;
	uint64_t len = ctl_flag(r->cmd, "length")->u64;
	if (len == 0)
		return dreq_usage(r, "--length must be greater than 0");
	if (daemon_volume_is_secondary(name)) /* only replication writes it */
		return dreq_fail(r, "volume '%s' is a replication secondary: read-only", name);
	struct vol *v;
	if (dreq_open_vol(r, name, NULL, &v))
		return 1;
	struct vol_info vi;
	int st = 0, e = vol_info(v, &vi);
	if (e < 0) {
		st = dreq_fail(r, "volume '%s': cannot read its info: %s", name, strerror(-e));
		goto out;
	}
	if (range_check(r, &vi, off, len)) {
		st = 1;
		goto out;
	}
	e = vol_discard(v, off, len);
	if (e == 0)
		e = vol_flush(v);
	if (e < 0)
		st = dreq_fail(r, "discard on '%s' failed: %s", name, strerror(-e));
out:
	vol_close(v);
	return st;
}

/* Reads the image of name[@snap] in chunks of at most CTL_CHUNK and hands
 * each to fn; shared by export and md5. */
static int read_image(struct dreq *r, const struct ctl_val *target, const char *label,
                      int (*fn)(struct dreq *r, void *ctx, const uint8_t *p, size_t n),
                      void *ctx)
{
	struct vol *v;
	const char *snap = target->snap[0] ? target->snap : NULL;
	if (dreq_open_vol(r, target->vol, snap, &v))
		return 1;
	struct vol_info vi;
	int st = 0, e = vol_info(v, &vi);
	uint8_t *buf = NULL;
	if (e < 0) {
		st = dreq_fail(r, "volume '%s': cannot read its info: %s", target->vol, strerror(-e));
		goto out;
	}
	buf = malloc(CTL_CHUNK);
	if (!buf) {
		st = dreq_fail(r, "out of memory");
		goto out;
	}
	for (uint64_t off = 0; off < vi.size;) {
		size_t n = (size_t)MIN((uint64_t)CTL_CHUNK, vi.size - off);
		e = vol_read(v, snap, buf, off, n);
		if (e < 0) {
			st = dreq_fail(r, "read of '%s' at %" PRIu64 " failed: %s", target->str, off,
			               strerror(-e));
			goto out;
		}
		if (fn(r, ctx, buf, n) < 0 || dreq_aborted(r)) {
			st = 1;
			goto out;
		}
		off += n;
		dreq_progress(r, off, vi.size, label);
	}
out:
	free(buf);
	vol_close(v);
	return st;
}

static int export_chunk(struct dreq *r, void *ctx, const uint8_t *p, size_t n)
{
	return dreq_out(r, p, n);
}

static int volume_export(struct dreq *r)
{
	return read_image(r, ctl_pos(r->cmd, "NAME[@SNAP]"), "export", export_chunk, NULL);
}

static int md5_chunk(struct dreq *r, void *ctx, const uint8_t *p, size_t n)
{
	return EVP_DigestUpdate(ctx, p, n) == 1 ? 0 : -EIO;
}

static int volume_md5(struct dreq *r)
{
	const struct ctl_val *t = ctl_pos(r->cmd, "NAME[@SNAP]");
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_md5(), NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		log_error("md5: cannot initialise OpenSSL EVP");
		return dreq_fail(r, "md5 is not available");
	}
	int st = read_image(r, t, "md5", md5_chunk, ctx);
	if (st == 0) {
		unsigned char md[EVP_MAX_MD_SIZE];
		unsigned mdlen = 0;
		if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1) {
			st = dreq_fail(r, "md5 failed");
		} else {
			char hex[2 * EVP_MAX_MD_SIZE + 1];
			for (unsigned i = 0; i < mdlen; i++)
				snprintf(hex + 2 * i, 3, "%02x", md[i]);
			if (dreq_printf(r, "%s  %s\n", hex, t->str) < 0)
				st = 1;
		}
	}
	EVP_MD_CTX_free(ctx);
	return st;
}

static int volume_resize(struct dreq *r)
{
	const char *name = ctl_pos(r->cmd, "NAME")->vol;
	uint64_t size = ctl_flag(r->cmd, "size")->u64;
	bool shrink = ctl_flag(r->cmd, "shrink")->set;
	struct vol_info vi;
	if (get_info(r, name, &vi))
		return 1;
	if (size == 0)
		return dreq_usage(r, "--size must be greater than 0");
	if (size % vi.block_size)
		return dreq_usage(r, "--size %" PRIu64 " is not a multiple of the block size %" PRIu32,
		                  size, vi.block_size);
	if (size > STORE_MAX_SIZE)
		return dreq_usage(r, "--size %" PRIu64 " is larger than the maximum (16 TiB)", size);
	if (daemon_volume_is_secondary(name))
		return dreq_fail(r, "volume '%s' is a replication secondary (or demoting): its size "
		                 "follows the primary's", name);
	char s1[32], s2[32];
	fmt_bytes(vi.size, s1, sizeof(s1));
	fmt_bytes(size, s2, sizeof(s2));
	if (size == vi.size)
		return dreq_printf(r, "volume %s: already %" PRIu64 " bytes (%s)\n", name, size, s2) < 0;
	if (size < vi.size) {
		if (!shrink)
			return dreq_fail(r, "volume '%s' is %" PRIu64 " bytes (%s): shrinking drops the "
			                 "data past %" PRIu64 "; add --shrink to do it", name, vi.size, s1,
			                 size);
		if (export_volume_in_use(name, NULL))
			return dreq_fail(r, "volume '%s' is exported over iSCSI: it is never shrunk while "
			                 "initiators may use it (ferry export rm it first)", name);
		if (daemon_repl_needs(name, NULL))
			return dreq_fail(r, "volume '%s' is in a replication pair: it is never shrunk "
			                 "(ferry pair rm it first)", name);
	}
	struct vol *v;
	if (dreq_open_vol(r, name, NULL, &v))
		return 1;
	int e = vol_resize(v, size);
	vol_close(v);
	if (e == -ENOTEMPTY)
		return dreq_fail(r, "volume '%s' has snapshots: shrinking would cut them too "
		                 "(delete them first)", name);
	if (e == -EOPNOTSUPP) {
		struct store_caps caps;
		store_get_caps(r->store, &caps);
		return dreq_fail(r, "cannot resize volume '%s': the %s backend does not resize "
		                 "volumes yet", name, caps.backend);
	}
	if (e < 0)
		return dreq_fail(r, "cannot resize volume '%s': %s", name, strerror(-e));
	log_info("resized volume %s from %" PRIu64 " to %" PRIu64 " bytes", name, vi.size, size);
	/* A primary's secondary follows with the next cycle: start it now
	 * rather than a period later (until it commits, the two sides'
	 * snapshots differ in size, and `pair verify` says so). */
	bool paired = daemon_repl_needs(name, NULL);
	if (paired) {
		struct repl_err err = { "" };
		uint64_t ticket;
		if (repl_pair_sync_request(daemon_repl(), name, &ticket, &err) < 0)
			log_warn("resize of %s: cannot start a cycle now: %s", name, err.msg);
	}
	return dreq_printf(r, "volume %s: %s -> %s (%" PRIu64 " bytes)%s\n", name, s1, s2, size,
	                   paired ? "; the secondary follows with the next cycle (started now)"
	                          : "") < 0;
}

size_t daemon_clones_of(struct store *s, const char *vol, const char *snap, char *buf, size_t n)
{
	char(*names)[STORE_NAME_MAX + 1] = NULL;
	size_t k = 0;
	buf[0] = '\0';
	if (store_vol_clones(s, vol, snap, &names, &k) < 0)
		return 0;
	size_t o = 0;
	for (size_t i = 0; i < k && o + 1 < n; i++) {
		int w = snprintf(buf + o, n - o, "%s%s", i ? ", " : "", names[i]);
		if (w < 0)
			break;
		o += (size_t)w;
	}
	free(names);
	return k;
}

static int volume_clone(struct dreq *r)
{
	const struct ctl_val *src = ctl_pos(r->cmd, "SRC@SNAP");
	const char *name = ctl_pos(r->cmd, "NEW")->vol;
	int rs = dreq_name_reserved(r, name, "volume");
	if (rs)
		return rs;
	struct store_caps caps;
	store_get_caps(r->store, &caps);
	if (!caps.clone)
		return dreq_fail(r, "the %s backend does not make clones", caps.backend);
	if (!store_vol_exists(r->store, src->vol))
		return dreq_fail(r, "no such volume '%s'", src->vol);
	if (store_vol_exists(r->store, name))
		return dreq_fail(r, "volume '%s' already exists", name);
	uint64_t t0 = now_mono_ns();
	int e = store_vol_clone(r->store, src->vol, src->snap, name);
	double ms = (double)(now_mono_ns() - t0) / 1e6;
	if (e == -EEXIST)
		return dreq_fail(r, "volume '%s' already exists", name);
	if (e == -ENOENT)
		return dreq_fail(r, "no such snapshot '%s'", src->str);
	if (e == -EOPNOTSUPP)
		return dreq_fail(r, "the %s backend does not make clones", caps.backend);
	if (e < 0)
		return dreq_fail(r, "cannot clone '%s' to '%s': %s", src->str, name, strerror(-e));
	log_info("cloned %s to volume %s in %.2f ms", src->str, name, ms);
	return dreq_printf(r, "volume %s: clone of %s (%.2f ms); %s is kept while %s depends on "
	                   "it (ferry volume flatten %s makes it independent)\n", name, src->str,
	                   ms, src->str, name, name) < 0;
}

static void flatten_progress(void *ctx, uint64_t done, uint64_t total)
{
	dreq_progress(ctx, done, total, "flatten");
}

static int volume_flatten(struct dreq *r)
{
	const char *name = ctl_pos(r->cmd, "NAME")->vol;
	struct vol_info vi;
	if (get_info(r, name, &vi))
		return 1;
	if (!vi.parent[0])
		return dreq_printf(r, "volume %s: not a clone (nothing to flatten)\n", name) < 0;
	struct vol *v;
	if (dreq_open_vol(r, name, NULL, &v))
		return 1;
	uint64_t t0 = now_mono_ns();
	int e = vol_flatten(v, flatten_progress, r);
	vol_close(v);
	double s = (double)(now_mono_ns() - t0) / 1e9;
	if (e == -EBUSY)
		return dreq_fail(r, "volume '%s' is being flattened already", name);
	if (e == -EINVAL) /* flattened in between */
		return dreq_printf(r, "volume %s: not a clone (nothing to flatten)\n", name) < 0;
	if (e == -EOPNOTSUPP)
		return dreq_fail(r, "cannot flatten volume '%s': the backend does not do it", name);
	if (e < 0)
		return dreq_fail(r, "cannot flatten volume '%s': %s (it is still a clone of %s)", name,
		                 strerror(-e), vi.parent);
	log_info("flattened volume %s (was a clone of %s) in %.1f s", name, vi.parent, s);
	return dreq_printf(r, "volume %s: independent of %s now (%.1f s)\n", name, vi.parent, s) < 0;
}

static int volume_takeover(struct dreq *r)
{
	const char *name = ctl_pos(r->cmd, "NAME")->vol;
	const struct ctl_val *w = ctl_flag(r->cmd, "wait");
	uint64_t wait_s = w->set ? w->u64 : 60;
	struct store_caps caps;
	store_get_caps(r->store, &caps);
	if (!caps.shared)
		return dreq_fail(r, "volume takeover needs a shared pool (ferryd --backend rbd); this "
		                 "pool is %s", caps.backend);
	if (wait_s > 3600)
		return dreq_fail(r, "--wait is at most 3600 seconds");
	if (!store_vol_exists(r->store, name))
		return dreq_fail(r, "no such volume '%s'", name);
	char msg[2048];
	int e = store_vol_takeover(r->store, name, (unsigned)(wait_s * 1000), msg, sizeof(msg));
	if (e == -ENOENT)
		return dreq_fail(r, "no such volume '%s'", name);
	if (e < 0)
		return dreq_fail(r, "cannot take volume '%s' over: %s", name,
		                 msg[0] ? msg : strerror(-e));
	log_info("%s", msg);
	return dreq_printf(r, "%s\n", msg) < 0 ? 1 : 0;
}

static int volume_release(struct dreq *r)
{
	const char *name = ctl_pos(r->cmd, "NAME")->vol;
	struct store_caps caps;
	store_get_caps(r->store, &caps);
	if (!caps.shared)
		return dreq_fail(r, "volume release needs a shared pool (ferryd --backend rbd); this "
		                 "pool is %s", caps.backend);
	if (!store_vol_exists(r->store, name))
		return dreq_fail(r, "no such volume '%s'", name);
	if (export_volume_in_use(name, NULL))
		return dreq_fail(r, "volume '%s' is exported over iSCSI (ferry export rm it first)", name);
	if (daemon_repl_needs(name, NULL))
		return dreq_fail(r, "volume '%s' is in a replication pair (ferry pair rm it first)", name);
	int e = store_vol_release(r->store, name);
	char who[1536];
	if (e == -EBUSY && store_vol_holder(r->store, name, who, sizeof(who)) == 0)
		return dreq_fail(r, "volume '%s' is held by another gateway: %s", name, who);
	if (e == -EBUSY)
		return dreq_fail(r, "volume '%s' is in use", name);
	if (e < 0)
		return dreq_fail(r, "cannot release volume '%s': %s", name, strerror(-e));
	log_info("released volume %s", name);
	return dreq_printf(r, "volume %s released: another ferryd on this pool can serve it now\n",
	                   name) < 0 ? 1 : 0;
}

size_t daemon_volume_infos(struct store *s, struct vol_info **out)
{
	char(*names)[STORE_NAME_MAX + 1] = NULL;
	size_t n = 0, k = 0;
	if (store_vol_list(s, &names, &n) < 0)
		n = 0;
	struct vol_info *vi = calloc(n ? n : 1, sizeof(*vi));
	for (size_t i = 0; vi && i < n; i++) {
		struct vol *v;
		if (vol_open(s, names[i], &v) < 0)
			continue; /* removed since the listing */
		if (vol_info(v, &vi[k]) == 0)
			k++;
		vol_close(v);
	}
	free(names);
	*out = vi;
	return k;
}

const struct dgroup dgroup_volume = {
	"volume",
	(const struct dgroup_cmd[]){
		{"create", volume_create},
		{"list", volume_list},
		{"info", volume_info},
		{"rm", volume_rm},
		{"write", volume_write},
		{"discard", volume_discard},
		{"export", volume_export},
		{"md5", volume_md5},
		{"resize", volume_resize},
		{"clone", volume_clone},
		{"flatten", volume_flatten},
		{"takeover", volume_takeover},
		{"release", volume_release},
		{NULL, NULL},
	},
};
