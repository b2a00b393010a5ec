/* The "snap" command group. */
#include "daemon/daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int snap_create(struct dreq *r)
{
	const struct ctl_val *t = ctl_pos(r->cmd, "NAME@SNAP");
	int st = dreq_name_reserved(r, t->snap, "snapshot");
	if (st)
		return st;
	if (daemon_group_exists(r->d, t->vol))
		return daemon_group_snap(r, t->vol, t->snap);
	struct vol *v;
	if (dreq_open_vol(r, t->vol, NULL, &v))
		return 1;
	int e = vol_snap_create(v, t->snap);
	if (e == -EEXIST)
		st = dreq_fail(r, "snapshot '%s' already exists", t->str);
	else if (e < 0)
		st = dreq_fail(r, "cannot create snapshot '%s': %s", t->str, strerror(-e));
	else
		log_info("created snapshot %s", t->str);
	vol_close(v);
	return st;
}

static int snap_list(struct dreq *r)
{
	const char *name = ctl_pos(r->cmd, "NAME")->vol;
	struct vol *v;
	if (dreq_open_vol(r, name, NULL, &v))
		return 1;
	struct snap_info *si = NULL;
	size_t n = 0;
	int e = vol_snap_list(v, &si, &n);
	vol_close(v);
	if (e < 0)
		return dreq_fail(r, "cannot list snapshots of '%s': %s", name, strerror(-e));
	struct sbuf b;
	sbuf_init(&b);
	if (ctl_flag(r->cmd, "json")->set) {
		struct jw w;
		jw_init(&w, &b);
		jw_arr_begin(&w);
		for (size_t i = 0; i < n; i++) {
			jw_obj_begin(&w);
			jw_key(&w, "name");
			jw_str(&w, si[i].name);
			jw_key(&w, "id");
			jw_u64(&w, si[i].id);
			jw_key(&w, "ctime");
			jw_u64(&w, si[i].ctime);
			jw_obj_end(&w);
		}
		jw_arr_end(&w);
		sbuf_puts(&b, "\n");
	} else {
		sbuf_printf(&b, "%-24s %8s  %s\n", "NAME", "ID", "CREATED (UTC)");
		for (size_t i = 0; i < n; i++) {
			char ts[32];
			struct tm tm;
			time_t t = (time_t)si[i].ctime;
			gmtime_r(&t, &tm);
			strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
			sbuf_printf(&b, "%-24s %8" PRIu64 "  %s\n", si[i].name, si[i].id, ts);
		}
	}
	free(si);
	return dreq_out_sbuf(r, &b);
}

static int snap_rm(struct dreq *r)
{
	const struct ctl_val *t = ctl_pos(r->cmd, "NAME@SNAP");
	struct vol *v;
	if (export_volume_in_use(t->vol, t->snap))
		return dreq_fail(r, "snapshot '%s' is exported over iSCSI (ferry export rm it first)",
		                 t->str);
	if (daemon_repl_needs(t->vol, t->snap))
		return dreq_fail(r, "snapshot '%s' is in use by replication (pair rm first)", t->str);
	if (dreq_open_vol(r, t->vol, NULL, &v))
		return 1;
	int st = 0, e = vol_snap_delete(v, t->snap);
	char cl[1024];
	if (e == -ENOENT)
		st = dreq_fail(r, "no such snapshot '%s'", t->str);
	else if (e == -EBUSY && daemon_clones_of(r->store, t->vol, t->snap, cl, sizeof(cl)))
		st = dreq_fail(r, "snapshot '%s' has clones: %s (remove them, or make them "
		               "independent with ferry volume flatten, first)", t->str, cl);
	else if (e == -EBUSY)
		st = dreq_fail(r, "snapshot '%s' is in use", t->str);
	else if (e < 0)
		st = dreq_fail(r, "cannot delete snapshot '%s': %s", t->str, strerror(-e));
	else
		log_info("deleted snapshot %s", t->str);
	vol_close(v);
	return st;
}

/* Coalesces the store's per-object extents into volume-wide ones (also
 * across object boundaries) and writes them as JSON or as a table. */
struct diff_out {
	struct dreq *r;
	bool json;
	struct sbuf ext;         /* the extents, as JSON items or table rows */
	struct jw w;
	bool have;               /* pending extent below is valid */
	struct extent pend;
	uint64_t n_ext, data_bytes, zero_bytes;
	uint64_t *zero_objs;
	size_t n_zero, cap_zero;
	uint64_t objects;
};

static void diff_emit(struct diff_out *d)
{
	if (!d->have)
		return;
	const struct extent *e = &d->pend;
	const char *kind = e->kind == EXTENT_ZERO ? "zero" : "data";
	if (d->json) {
		jw_obj_begin(&d->w);
		jw_key(&d->w, "offset");
		jw_u64(&d->w, e->offset);
		jw_key(&d->w, "length");
		jw_u64(&d->w, e->length);
		jw_key(&d->w, "kind");
		jw_str(&d->w, kind);
		jw_obj_end(&d->w);
	} else {
		sbuf_printf(&d->ext, "%16" PRIu64 " %16" PRIu64 "  %s\n", e->offset, e->length, kind);
	}
	if (e->kind == EXTENT_ZERO)
		d->zero_bytes += e->length;
	else
		d->data_bytes += e->length;
	d->n_ext++;
	d->have = false;
}

static int diff_cb_fn(void *ctx, const struct diff_object *o)
{
	struct diff_out *d = ctx;
	for (size_t i = 0; i < o->n_extents; i++) {
		const struct extent *e = &o->extents[i];
		if (e->length == 0)
			continue;
		if (d->have && d->pend.kind == e->kind && d->pend.offset + d->pend.length == e->offset) {
			d->pend.length += e->length;
			continue;
		}
		diff_emit(d);
		d->pend = *e;
		d->have = true;
	}
	if (o->all_zero) {
		if (d->n_zero == d->cap_zero) {
			size_t cap = d->cap_zero ? d->cap_zero * 2 : 64;
			uint64_t *p = realloc(d->zero_objs, cap * sizeof(*p));
			if (!p)
				return -ENOMEM;
			d->zero_objs = p;
			d->cap_zero = cap;
		}
		d->zero_objs[d->n_zero++] = o->objno;
	}
	dreq_progress(d->r, o->objno + 1, d->objects, "diff");
	if (d->ext.err)
		return -ENOMEM;
	return dreq_aborted(d->r) ? -ECANCELED : 0;
}

static int snap_diff(struct dreq *r)
{
	const struct ctl_val *from = ctl_pos(r->cmd, "NAME@FROM");
	const struct ctl_val *to = ctl_pos(r->cmd, "NAME@TO");
	if (from->set && strcmp(from->vol, to->vol) != 0)
		return dreq_usage(r, "'%s' and '%s' are snapshots of different volumes", from->str,
		                  to->str);
	struct vol *v;
	if (dreq_open_vol(r, to->vol, to->snap, &v))
		return 1;
	struct diff_out d = {.r = r, .json = ctl_flag(r->cmd, "json")->set};
	struct snap_info sfrom, sto;
	struct vol_info vi;
	int st = 0, e;
	sbuf_init(&d.ext);
	jw_init(&d.w, &d.ext);
	e = vol_snap_get(v, to->snap, &sto);
	if (e == 0 && from->set) {
		e = vol_snap_get(v, from->snap, &sfrom);
		if (e == -ENOENT) {
			st = dreq_fail(r, "no such snapshot '%s'", from->str);
			goto out;
		}
		if (e == 0 && sfrom.id > sto.id) {
			st = dreq_usage(r, "'%s' is newer than '%s' (give the older snapshot first)",
			                from->str, to->str);
			goto out;
		}
	}
	if (e == 0)
		e = vol_info(v, &vi);
	if (e < 0) {
		st = dreq_fail(r, "cannot read snapshots of '%s': %s", to->vol, strerror(-e));
		goto out;
	}
	d.objects = vi.objects;
	if (d.json)
		jw_arr_begin(&d.w);
	e = vol_diff(v, from->set ? from->snap : NULL, to->snap, diff_cb_fn, &d);
	if (e < 0) {
		if (!dreq_aborted(r))
			st = dreq_fail(r, "diff of '%s' failed: %s", to->str, strerror(-e));
		else
			st = 1;
		goto out;
	}
	diff_emit(&d);
	struct sbuf b;
	sbuf_init(&b);
	if (d.json) {
		jw_arr_end(&d.w);
		/* The extents array was written by its own writer; the enclosing
		 * object is assembled around it. */
		sbuf_puts(&b, "{\"extents\":");
		sbuf_add(&b, d.ext.p, d.ext.len);
		sbuf_printf(&b, ",\"data_bytes\":%" PRIu64 ",\"zero_bytes\":%" PRIu64
		                ",\"zero_objects\":[",
		            d.data_bytes, d.zero_bytes);
		for (size_t i = 0; i < d.n_zero; i++)
			sbuf_printf(&b, "%s%" PRIu64, i ? "," : "", d.zero_objs[i]);
		sbuf_puts(&b, "]}\n");
	} else {
		char s1[32], s2[32];
		sbuf_printf(&b, "%16s %16s  %s\n", "OFFSET", "LENGTH", "KIND");
		sbuf_add(&b, d.ext.p ? d.ext.p : "", d.ext.len);
		sbuf_printf(&b,
		            "%" PRIu64 " extent%s: %" PRIu64 " data bytes (%s), %" PRIu64
		            " zero bytes (%s); %zu object%s entirely zero\n",
		            d.n_ext, d.n_ext == 1 ? "" : "s", d.data_bytes,
		            fmt_bytes(d.data_bytes, s1, sizeof(s1)), d.zero_bytes,
		            fmt_bytes(d.zero_bytes, s2, sizeof(s2)), d.n_zero, d.n_zero == 1 ? "" : "s");
		if (d.n_zero) {
			sbuf_puts(&b, "zero objects:");
			for (size_t i = 0; i < d.n_zero; i++)
				sbuf_printf(&b, " %" PRIu64, d.zero_objs[i]);
			sbuf_puts(&b, "\n");
		}
	}
	st = dreq_out_sbuf(r, &b);
out:
	sbuf_free(&d.ext);
	free(d.zero_objs);
	vol_close(v);
	return st;
}

const struct dgroup dgroup_snap = {
	"snap",
	(const struct dgroup_cmd[]){
		{"create", snap_create},
		{"list", snap_list},
		{"rm", snap_rm},
		{"diff", snap_diff},
		{NULL, NULL},
	},
};
