/* `ferry status [--json]`: the pool at a glance.  The daemon and its
 * listeners, every volume (size, allocation, snapshots), every export (with
 * its target's live sessions) and every pair (role, state, RPO lag).  The
 * JSON has the keys daemon, volumes, exports and pairs
 * (docs/schemas/status.json). */
#include "daemon/daemon.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "repl/repl.h"

static const char *role_name(enum repl_role r)
{
	return r == REPL_ROLE_PRIMARY ? "primary" : r == REPL_ROLE_SECONDARY ? "secondary" : "none";
}

static void jw_str_or_null(struct jw *w, const char *s)
{
	if (s && *s)
		jw_str(w, s);
	else
		jw_null(w);
}

struct exp_ctx {
	struct sbuf *b;
	struct jw *w; /* NULL: text */
	size_t n;
};

static void export_row(void *ctx, const struct export_view *e)
{
	struct exp_ctx *x = ctx;
	x->n++;
	if (x->w) {
		struct jw *w = x->w;
		jw_obj_begin(w);
		jw_key(w, "volume");
		jw_str(w, e->vol);
		jw_key(w, "snapshot");
		jw_str_or_null(w, e->snap);
		jw_key(w, "iqn");
		jw_str(w, e->iqn);
		jw_key(w, "lun");
		jw_u64(w, e->lun);
		jw_key(w, "read_only");
		jw_bool(w, e->read_only);
		jw_key(w, "served");
		jw_bool(w, e->served);
		jw_key(w, "sessions");
		jw_u64(w, e->sessions);
		jw_obj_end(w);
		return;
	}
	if (x->n == 1)
		sbuf_printf(x->b, "\nexports:\n  %-28s %-44s %5s %8s\n", "VOLUME", "TARGET", "LUN",
		            "SESSIONS");
	char n[2 * STORE_NAME_MAX + 2];
	snprintf(n, sizeof(n), "%s%s%s", e->vol, e->snap[0] ? "@" : "", e->snap);
	sbuf_printf(x->b, "  %-28s %-44s %5" PRIu64 " %8u%s%s\n", n, e->iqn, e->lun, e->sessions,
	            e->read_only ? "  read-only" : "", e->served ? "" : "  (not served: no --iscsi)");
}

static void fmt_age(uint64_t s, char *buf, size_t len)
{
	if (s < 120)
		snprintf(buf, len, "%" PRIu64 "s", s);
	else if (s < 7200)
		snprintf(buf, len, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
	else if (s < 172800)
		snprintf(buf, len, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s / 60 % 60);
	else
		snprintf(buf, len, "%" PRIu64 "d%02" PRIu64 "h", s / 86400, s / 3600 % 24);
}

static int status_run(struct dreq *r)
{
	bool json = ctl_flag(r->cmd, "json")->set;
	struct daemon *d = r->d;
	struct sbuf b;
	struct jw w;
	sbuf_init(&b);
	jw_init(&w, &b);

	/* gather first: volumes and pairs */
	struct vol_info *vi;
	size_t kv = daemon_volume_infos(d->store, &vi);
	struct repl_status *pm = NULL;
	size_t np = 0;
	struct repl *rp = daemon_repl();
	if (rp && repl_pair_list(rp, &pm, &np) < 0)
		np = 0;
	char iscsi[300];
	export_iscsi_addr(iscsi, sizeof(iscsi));
	const char *repl_addr = rp ? repl_listen_addr(rp) : NULL;
	uint64_t up = (now_mono_ns() - d->start_mono_ns) / 1000000000ull;

	if (json) {
		jw_obj_begin(&w);
		jw_key(&w, "daemon");
		jw_obj_begin(&w);
		jw_key(&w, "version");
		jw_str(&w, FERRY_VERSION);
		jw_key(&w, "pid");
		jw_u64(&w, (uint64_t)getpid());
		jw_key(&w, "pool");
		jw_str(&w, d->pool);
		jw_key(&w, "uptime_s");
		jw_u64(&w, up);
		jw_key(&w, "listeners");
		jw_obj_begin(&w);
		jw_key(&w, "control");
		jw_str(&w, d->sock_path);
		jw_key(&w, "iscsi");
		jw_str_or_null(&w, iscsi);
		jw_key(&w, "replication");
		jw_str_or_null(&w, repl_addr);
		jw_key(&w, "metrics");
		jw_str_or_null(&w, metrics_addr());
		jw_obj_end(&w);
		jw_obj_end(&w);
		jw_key(&w, "volumes");
		jw_arr_begin(&w);
		for (size_t i = 0; i < kv; i++) {
			jw_obj_begin(&w);
			jw_key(&w, "name");
			jw_str(&w, vi[i].name);
			jw_key(&w, "size");
			jw_u64(&w, vi[i].size);
			jw_key(&w, "allocated_bytes");
			jw_u64(&w, vi[i].allocated_bytes);
			jw_key(&w, "snapshots");
			jw_u64(&w, vi[i].snapshots);
			jw_obj_end(&w);
		}
		jw_arr_end(&w);
		jw_key(&w, "exports");
		jw_arr_begin(&w);
		struct exp_ctx x = {&b, &w, 0};
		export_each(export_row, &x);
		jw_arr_end(&w);
		jw_key(&w, "pairs");
		jw_arr_begin(&w);
		for (size_t i = 0; i < np; i++) {
			jw_obj_begin(&w);
			jw_key(&w, "name");
			jw_str(&w, pm[i].name);
			jw_key(&w, "role");
			jw_str(&w, role_name(pm[i].role));
			jw_key(&w, "state");
			jw_str(&w, repl_state_name(pm[i].state));
			jw_key(&w, "peer");
			jw_str(&w, pm[i].peer);
			jw_key(&w, "period_s");
			jw_u64(&w, pm[i].period_s);
			jw_key(&w, "rpo_lag_s");
			jw_u64(&w, pm[i].rpo_lag_s);
			jw_key(&w, "last_sync_time");
			if (pm[i].has_last)
				jw_u64(&w, pm[i].last_time);
			else
				jw_null(&w);
			jw_key(&w, "error");
			jw_str_or_null(&w, pm[i].error);
			jw_obj_end(&w);
		}
		jw_arr_end(&w);
		jw_obj_end(&w);
		sbuf_puts(&b, "\n");
	} else {
		char age[32];
		fmt_age(up, age, sizeof(age));
		sbuf_printf(&b, "ferryd %s, pid %ld, pool %s, up %s\n", FERRY_VERSION, (long)getpid(),
		            d->pool, age);
		sbuf_printf(&b, "  control      %s\n", d->sock_path);
		sbuf_printf(&b, "  iscsi        %s\n", iscsi[0] ? iscsi : "- (no --iscsi)");
		sbuf_printf(&b, "  replication  %s\n",
		            repl_addr ? repl_addr : "- (no --listen: connects out)");
		sbuf_printf(&b, "  metrics      %s\n",
		            metrics_addr()[0] ? metrics_addr() : "- (no --metrics)");
		sbuf_printf(&b, "\nvolumes:%s\n", kv ? "" : " none");
		if (kv)
			sbuf_printf(&b, "  %-28s %12s %12s %6s\n", "NAME", "SIZE", "ALLOCATED", "SNAPS");
		for (size_t i = 0; i < kv; i++) {
			char s1[32], s2[32];
			sbuf_printf(&b, "  %-28s %12s %12s %6" PRIu32 "\n", vi[i].name,
			            fmt_bytes(vi[i].size, s1, sizeof(s1)),
			            fmt_bytes(vi[i].allocated_bytes, s2, sizeof(s2)), vi[i].snapshots);
		}
		struct exp_ctx x = {&b, NULL, 0};
		export_each(export_row, &x);
		if (!x.n)
			sbuf_puts(&b, "\nexports: none\n");
		sbuf_printf(&b, "\npairs:%s\n", np ? "" : " none");
		if (np)
			sbuf_printf(&b, "  %-28s %-9s %-12s %9s  %s\n", "NAME", "ROLE", "STATE", "RPO LAG",
			            "PEER");
		for (size_t i = 0; i < np; i++) {
			fmt_age(pm[i].rpo_lag_s, age, sizeof(age));
			sbuf_printf(&b, "  %-28s %-9s %-12s %9s  %s\n", pm[i].name,
			            role_name(pm[i].role), repl_state_name(pm[i].state), age,
			            pm[i].peer[0] ? pm[i].peer : "(calls in)");
			if (pm[i].error[0])
				sbuf_printf(&b, "    error: %s\n", pm[i].error);
		}
	}
	free(vi);
	free(pm);
	return dreq_out_sbuf(r, &b);
}

const struct dgroup dgroup_status = {
	"status",
	(const struct dgroup_cmd[]){
		{"", status_run},
		{NULL, NULL},
	},
};
