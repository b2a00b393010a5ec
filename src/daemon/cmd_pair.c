/* The "pair" command group and the replication service (src/repl).
 *
 * The service owns the daemon's one struct repl: started after the store
 * opens (options --listen HOST:PORT, --secret-file FILE), stopped before it
 * closes.  The handlers turn `ferry pair ...` into repl_pair_*() calls and
 * format what they return as text or JSON. */
#include "daemon/daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "repl/repl.h"

static struct repl *g_repl;

struct repl *daemon_repl(void) { return g_repl; }

bool daemon_volume_is_secondary(const char *name)
{
	/* a secondary, or a primary that is demoting */
	return g_repl && repl_volume_read_only(g_repl, name);
}

bool daemon_volume_fenced(const char *name)
{
	return g_repl && repl_volume_fenced(g_repl, name);
}

bool daemon_repl_needs(const char *volume, const char *snap)
{
	if (!g_repl)
		return false;
	if (!snap || !*snap)
		return repl_volume_role(g_repl, volume) != REPL_ROLE_NONE;
	return repl_snapshot_in_use(g_repl, volume, snap);
}

/* The secret is the file's bytes without trailing whitespace, so that
 * `echo secret > FILE` and `printf secret > FILE` agree. */
int daemon_secret_load(const char *path, char **secret, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		int e = -errno;
		snprintf(err, errlen, "cannot read --secret-file %s: %s", path, strerror(-e));
		return e;
	}
	/* Like ssh with its keys: a secret others can read is no secret. */
	if (st.st_mode & 0077) {
		snprintf(err, errlen, "--secret-file %s is accessible by group or others (mode %04o); "
		         "refusing it: chmod 600 %s", path, (unsigned)(st.st_mode & 07777), path);
		return -EPERM;
	}
	int rc = read_file(path, 4096, secret, len);
	if (rc < 0) {
		snprintf(err, errlen, "cannot read --secret-file %s: %s", path, strerror(-rc));
		return rc;
	}
	while (*len && strchr(" \t\r\n", (*secret)[*len - 1]))
		(*secret)[--*len] = '\0';
	if (*len < 8) {
		snprintf(err, errlen, "--secret-file %s: the secret must have at least 8 bytes", path);
		memset(*secret, 0, *len);
		free(*secret);
		*secret = NULL;
		return -EINVAL;
	}
	return 0;
}

int daemon_key_mode_check(const char *path, char *err, size_t errlen)
{
	struct stat kst;
	if (stat(path, &kst) == 0 && (kst.st_mode & 0077)) {
		snprintf(err, errlen, "--tls-key %s is accessible by group or others (mode %04o); "
		         "refusing it: chmod 600 %s", path, (unsigned)(kst.st_mode & 07777), path);
		return -EPERM;
	}
	return 0;
}

static void ro_changed(void *ctx, const char *volume)
{
	(void)ctx;
	export_refresh_read_only(volume);
}

/* The groups' rules on the secondary's side of a new pair: a group's
 * name is no volume, and a member has no pair of its own. */
static int may_pair(void *ctx, const char *volume, char *why, size_t n)
{
	struct daemon *d = ctx;
	char grp[STORE_NAME_MAX + 1];
	if (daemon_group_exists(d, volume)) {
		snprintf(why, n, "'%s' is a consistency group on the secondary, not a volume", volume);
		return -EPERM;
	}
	if (daemon_group_of(d, volume, grp)) {
		snprintf(why, n, "volume '%s' is in consistency group '%s' on the secondary: a "
		         "grouped volume cannot have a pair of its own", volume, grp);
		return -EPERM;
	}
	return 0;
}

int repl_service_start(struct daemon *d)
{
	const char *listen = daemon_opt("listen");
	const char *sfile = daemon_opt("secret-file");
	char *secret = NULL;
	size_t slen = 0;
	if (listen && !sfile) {
		log_error("--listen needs --secret-file: peers must authenticate");
		return -EINVAL;
	}
	char err[1024];
	if (sfile) {
		int rc = daemon_secret_load(sfile, &secret, &slen, err, sizeof(err));
		if (rc < 0) {
			log_error("%s", err);
			return rc;
		}
	}
	char site[300];
	char host[256] = "";
	gethostname(host, sizeof(host) - 1);
	snprintf(site, sizeof(site), "%s%s%s", host, listen ? " " : "", listen ? listen : "");
	struct repl_opts o = { .on_ro_change = ro_changed, .ro_ctx = d, .may_pair = may_pair,
	                       .listen = listen, .secret = (const uint8_t *)secret,
	                       .secret_len = slen, .site = site,
	                       .plaintext = daemon_opt("plaintext") != NULL,
	                       .tls_cert = daemon_opt("tls-cert"),
	                       .tls_key = daemon_opt("tls-key"),
	                       .tls_ca = daemon_opt("tls-ca") };
	if (o.plaintext && (o.tls_cert || o.tls_key || o.tls_ca)) {
		log_error("--plaintext contradicts --tls-cert/--tls-key/--tls-ca");
		free(secret);
		return -EINVAL;
	}
	if (o.tls_key && daemon_key_mode_check(o.tls_key, err, sizeof(err)) < 0) {
		log_error("%s", err);
		free(secret);
		return -EPERM;
	}
	const char *mt = daemon_opt("max-transfers");
	uint64_t mtv = 0;
	if (mt && (parse_u64(mt, &mtv) < 0 || mtv < 1 || mtv > 256)) {
		log_error("bad --max-transfers '%s' (1..256)", mt);
		free(secret);
		return -EINVAL;
	}
	o.max_transfers = (unsigned)mtv;
	const char *t = getenv("FERRY_REPL_TIMEOUT_MS"); /* tests shorten deadlines */
	uint64_t tv;
	if (t && parse_u64(t, &tv) == 0 && tv > 0 && tv < 3600000)
		o.timeout_ms = (unsigned)tv;
	int rc = repl_create(d->store, d->pool, &o, &g_repl);
	if (secret) {
		memset(secret, 0, slen);
		free(secret);
	}
	if (rc < 0)
		return rc;
	rc = repl_start(g_repl);
	if (rc < 0) {
		repl_destroy(g_repl);
		g_repl = NULL;
		return rc;
	}
	if (repl_listen_addr(g_repl))
		log_info("replication: accepting peers on %s", repl_listen_addr(g_repl));
	return 0;
}

void repl_service_stop(struct daemon *d)
{
	(void)d;
	repl_destroy(g_repl);
	g_repl = NULL;
}

/* ---- formatting ---------------------------------------------------------- */
static double pct(uint64_t done, uint64_t total)
{
	if (!total)
		return 0.0;
	return MIN(100.0, 100.0 * (double)done / (double)total);
}

static void jw_str_or_null(struct jw *w, const char *s)
{
	if (s && *s)
		jw_str(w, s);
	else
		jw_null(w);
}

static void jw_time_or_null(struct jw *w, uint64_t t)
{
	if (t)
		jw_u64(w, t);
	else
		jw_null(w);
}

/* The object `pair status --json` prints, and `pair list --json` an array of. */
static void status_json(struct jw *w, const struct repl_status *st)
{
	jw_obj_begin(w);
	jw_key(w, "name"); jw_str(w, st->name);
	jw_key(w, "volume"); jw_str(w, st->volume);
	jw_key(w, "role"); jw_str(w, repl_role_name(st->role));
	jw_key(w, "peer"); jw_str(w, st->peer);
	jw_key(w, "connection"); jw_str(w, st->connection);
	/* Primary: why the last heartbeat failed (null when it passed). */
	jw_key(w, "peer_error"); jw_str_or_null(w, st->peer_error);
	jw_key(w, "peer_last_contact"); jw_time_or_null(w, st->peer_last_contact);
	jw_key(w, "peer_timeout_s"); jw_u64(w, st->peer_timeout_s);
	jw_key(w, "remote_name"); jw_str(w, st->remote);
	jw_key(w, "state"); jw_str(w, repl_state_name(st->state));
	jw_key(w, "period_s"); jw_u64(w, st->period_s);
	jw_key(w, "last_synced");
	if (st->has_last) {
		jw_obj_begin(w);
		jw_key(w, "snapshot"); jw_str(w, st->last_snap);
		jw_key(w, "time"); jw_u64(w, st->last_time);
		jw_key(w, "cycle"); jw_u64(w, st->last_cycle);
		jw_obj_end(w);
	} else {
		jw_null(w);
	}
	jw_key(w, "rpo_lag_s"); jw_u64(w, st->rpo_lag_s);
	jw_key(w, "last_success"); jw_time_or_null(w, st->last_success);
	jw_key(w, "cycle");
	if (st->running) {
		double rate = st->cycle_elapsed_s > 0 ? (double)st->done_bytes / st->cycle_elapsed_s : 0;
		jw_obj_begin(w);
		jw_key(w, "number"); jw_u64(w, st->cycle_number);
		jw_key(w, "done_bytes"); jw_u64(w, st->done_bytes);
		jw_key(w, "total_bytes"); jw_u64(w, st->total_bytes);
		jw_key(w, "percent"); jw_double(w, pct(st->done_bytes, st->total_bytes));
		jw_key(w, "elapsed_s"); jw_double(w, st->cycle_elapsed_s);
		jw_key(w, "rate_bps"); jw_u64(w, (uint64_t)rate);
		jw_key(w, "eta_s");
		if (rate > 0 && st->total_bytes >= st->done_bytes)
			jw_double(w, (double)(st->total_bytes - st->done_bytes) / rate);
		else
			jw_null(w);
		jw_obj_end(w);
	} else {
		jw_null(w);
	}
	jw_key(w, "last_cycle");
	if (st->has_stats) {
		jw_obj_begin(w);
		jw_key(w, "number"); jw_u64(w, st->last.number);
		jw_key(w, "extents"); jw_u64(w, st->last.extents);
		jw_key(w, "data_bytes"); jw_u64(w, st->last.data_bytes);
		jw_key(w, "zero_bytes"); jw_u64(w, st->last.zero_bytes);
		jw_key(w, "wire_bytes"); jw_u64(w, st->last.wire_bytes);
		jw_key(w, "seconds"); jw_double(w, st->last.seconds);
		jw_obj_end(w);
	} else {
		jw_null(w);
	}
	jw_key(w, "error"); jw_str_or_null(w, st->error);
	jw_key(w, "consecutive_failures"); jw_u64(w, st->consecutive_failures);
	jw_key(w, "paused"); jw_bool(w, st->paused);
	jw_key(w, "max_inflight"); jw_u64(w, st->max_inflight);
	jw_key(w, "bandwidth"); jw_u64(w, st->bandwidth);
	jw_key(w, "compress"); jw_str(w, st->compress ? "zstd" : "none");
	jw_key(w, "split_brain_policy"); jw_str(w, repl_split_policy_name(st->split_brain_policy));
	jw_key(w, "keep"); jw_u64(w, st->keep);
	jw_key(w, "keep_for"); jw_u64(w, st->keep_for_s);
	jw_key(w, "epoch"); jw_u64(w, st->epoch);
	jw_key(w, "demoting"); jw_bool(w, st->demoting);
	jw_key(w, "peer_demoted"); jw_bool(w, st->peer_demoted);
	jw_key(w, "split_brain"); jw_bool(w, st->split_brain);
	jw_key(w, "split_brain_reason"); jw_str_or_null(w, st->split_reason);
	jw_key(w, "needs_resync"); jw_bool(w, st->needs_resync);
	jw_key(w, "fenced"); jw_bool(w, st->fenced);
	jw_key(w, "fence_reason"); jw_str_or_null(w, st->fence_reason);
	jw_key(w, "common_snapshot"); jw_str_or_null(w, st->common_snap);
	jw_key(w, "split_brain_snapshot"); jw_str_or_null(w, st->sb_snap);
	jw_key(w, "resync");
	if (st->resyncing) {
		jw_obj_begin(w);
		jw_key(w, "running"); jw_bool(w, st->running);
		jw_key(w, "extra_extents"); jw_u64(w, st->resync_extents);
		jw_key(w, "done_bytes"); jw_u64(w, st->running ? st->done_bytes : 0);
		jw_key(w, "total_bytes"); jw_u64(w, st->running ? st->total_bytes : 0);
		jw_key(w, "percent");
		jw_double(w, st->running ? pct(st->done_bytes, st->total_bytes) : 0.0);
		jw_obj_end(w);
	} else {
		jw_null(w);
	}
	jw_key(w, "verifying"); jw_str_or_null(w, st->verifying);
	/* Since this ferryd started (what a metrics exporter reads). */
	jw_key(w, "counters");
	jw_obj_begin(w);
	jw_key(w, "cycles_ok"); jw_u64(w, st->counters.cycles_ok);
	jw_key(w, "cycles_failed"); jw_u64(w, st->counters.cycles_failed);
	jw_key(w, "cycles_skipped"); jw_u64(w, st->counters.cycles_skipped);
	jw_key(w, "data_bytes"); jw_u64(w, st->counters.data_bytes);
	jw_key(w, "zero_bytes"); jw_u64(w, st->counters.zero_bytes);
	jw_key(w, "wire_bytes"); jw_u64(w, st->counters.wire_bytes);
	jw_key(w, "cycle_seconds_sum"); jw_double(w, st->counters.duration_sum);
	jw_key(w, "cycle_seconds_buckets");
	jw_arr_begin(w);
	uint64_t cum = 0;
	for (unsigned b = 0; b < REPL_HIST_BUCKETS; b++) {
		cum += st->counters.duration_hist[b];
		jw_obj_begin(w);
		jw_key(w, "le");
		if (b < REPL_HIST_BUCKETS - 1)
			jw_double(w, repl_hist_bounds[b]);
		else
			jw_str(w, "+Inf");
		jw_key(w, "count"); jw_u64(w, cum);
		jw_obj_end(w);
	}
	jw_arr_end(w);
	jw_obj_end(w);
	jw_obj_end(w);
}

static const char *ago(uint64_t t, char *buf, size_t len)
{
	uint64_t now = now_wall_s();
	if (!t)
		snprintf(buf, len, "never");
	else
		snprintf(buf, len, "%" PRIu64 " s ago", now > t ? now - t : 0);
	return buf;
}

static void status_text(struct sbuf *b, const struct repl_status *st)
{
	char t1[32], t2[32], t3[32];
	bool primary = st->role == REPL_ROLE_PRIMARY;
	sbuf_printf(b, "pair %s: %s of %s %s, state %s, period %" PRIu64 " s\n", st->name,
	            repl_role_name(st->role), primary ? "peer" : "primary at",
	            st->peer[0] ? st->peer : "(a peer that calls in)", repl_state_name(st->state),
	            st->period_s);
	if (!strcmp(st->connection, "peer-calls-in"))
		sbuf_printf(b, "  connection: the peer has no listener and connects here "
		            "(%u connection%s offered now)\n", st->offers, st->offers == 1 ? "" : "s");
	else if (!strcmp(st->connection, "calls-primary"))
		sbuf_printf(b, "  connection: no --listen here, so this site connects to the "
		            "primary at %s%s\n", st->peer_addr,
		            st->callback_failing ? " (failing: see the log)" : "");
	if (st->has_last)
		sbuf_printf(b, "  last synced: %s (cycle %" PRIu64 "), RPO lag %" PRIu64 " s\n",
		            st->last_snap, st->last_cycle, st->rpo_lag_s);
	else
		sbuf_printf(b, "  last synced: never (initial sync pending)\n");
	sbuf_printf(b, "  peer: last contact %s, peer timeout %" PRIu64 " s%s\n",
	            ago(st->peer_last_contact, t1, sizeof(t1)), st->peer_timeout_s,
	            st->state == REPL_ST_PEER_DOWN ? " (PEER DOWN)" : "");
	if (st->running) {
		double pc = pct(st->done_bytes, st->total_bytes);
		int fill = (int)(pc / 5.0);
		char bar[21];
		for (int i = 0; i < 20; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[20] = '\0';
		sbuf_printf(b, "  cycle %" PRIu64 ": [%s] %5.1f%%  %s / %s\n", st->cycle_number, bar,
		            pc, fmt_bytes(st->done_bytes, t1, sizeof(t1)),
		            fmt_bytes(st->total_bytes, t2, sizeof(t2)));
		if (st->cycle_elapsed_s <= 0.0 || !st->done_bytes) {
			sbuf_puts(b, "  rate: measuring\n");
		} else {
			double rate = (double)st->done_bytes / st->cycle_elapsed_s;
			double left = st->total_bytes > st->done_bytes
			                  ? (double)(st->total_bytes - st->done_bytes) : 0;
			sbuf_printf(b, "  rate: %s/s, ETA %.0f s\n",
			            fmt_bytes((uint64_t)rate, t1, sizeof(t1)), rate > 0 ? left / rate : 0.0);
		}
	}
	if (st->has_stats)
		sbuf_printf(b, "  last cycle %" PRIu64 ": %" PRIu64 " extents, %s data, %s zeroed, "
		            "%s on the wire, %.2f s\n", st->last.number, st->last.extents,
		            fmt_bytes(st->last.data_bytes, t1, sizeof(t1)),
		            fmt_bytes(st->last.zero_bytes, t2, sizeof(t2)),
		            fmt_bytes(st->last.wire_bytes, t3, sizeof(t3)), st->last.seconds);
	if (st->error[0])
		sbuf_printf(b, "  error: %s%s\n", st->error,
		            st->consecutive_failures > 1 ? " (several cycles in a row)" : "");
	if (primary && st->peer_error[0] && strcmp(st->peer_error, st->error))
		sbuf_printf(b, "  peer check: %s\n", st->peer_error);
	if (st->verifying[0])
		sbuf_printf(b, "  verify running on %s (held on both sites until it ends)\n",
		            st->verifying);
	if (st->demoting)
		sbuf_printf(b, "  demoting: writes refused; `pair demote %s` again finishes it\n",
		            st->name);
	if (st->peer_demoted)
		sbuf_printf(b, "  the primary has demoted: `pair promote %s` takes over\n", st->name);
	if (st->split_brain)
		sbuf_printf(b, "  split brain: both sites were primary; common snapshot %s%s%s\n"
		            "  %s\n", st->common_snap[0] ? st->common_snap : "(unknown)",
		            st->sb_snap[0] ? ", this site's divergence kept in " : "", st->sb_snap,
		            primary ? "run `pair demote` on the other site, then `pair resync` here"
		                    : "waiting for `pair resync` on the new primary");
	if (st->fenced)
		sbuf_printf(b, "  FENCED: the LUNs of %s refuse writes (reads go on): %s; "
		            "`pair demote %s` here ends it\n", st->volume, st->fence_reason, st->name);
	char bw[32];
	if (st->bandwidth)
		snprintf(bw, sizeof(bw), "%s/s", fmt_bytes(st->bandwidth, t1, sizeof(t1)));
	else
		snprintf(bw, sizeof(bw), "unlimited");
	sbuf_printf(b, "  settings: period %" PRIu64 " s, bandwidth %s, compress %s, max-inflight %u, "
	            "peer timeout %" PRIu64 " s%s, split-brain %s\n", st->period_s, bw,
	            st->compress ? "on" : "off", st->max_inflight, st->peer_timeout_s,
	            st->peer_timeout_default ? " (default)" : "",
	            repl_split_policy_name(st->split_brain_policy));
	sbuf_printf(b, "  recovery points: keep %u", st->keep);
	if (st->keep_for_s)
		sbuf_printf(b, " and those of the last %" PRIu64 " s", st->keep_for_s);
	sbuf_printf(b, " (on the secondary; `pair points %s` lists them)\n", st->name);
}

/* Sends b (or the error), returns the exit status. */
static int finish(struct dreq *r, struct sbuf *b, int rc, const struct repl_err *err)
{
	int st = 0;
	if (rc < 0)
		st = dreq_fail(r, "%s", err->msg[0] ? err->msg : strerror(-rc));
	else if (b->err)
		st = dreq_fail(r, "out of memory");
	else if (b->len && dreq_out(r, b->p, b->len) < 0)
		st = 1;
	sbuf_free(b);
	return st;
}

static bool ready(struct dreq *r)
{
	if (g_repl)
		return true;
	dreq_fail(r, "replication is not running in this ferryd");
	return false;
}

/* The settings flags shared by pair create and pair set; 0, or the usage
 * error's exit status (2). */
static int settings_from(struct dreq *r, struct repl_settings *s)
{
	memset(s, 0, sizeof(*s));
	const struct ctl_val *v = ctl_flag(r->cmd, "period");
	if (v->set) {
		if (v->u64 < 1)
			return dreq_usage(r, "--period must be at least 1 second");
		s->period_s = v->u64;
		s->set |= REPL_SET_PERIOD;
	}
	v = ctl_flag(r->cmd, "max-inflight");
	if (v->set) {
		if (v->u64 < 1 || v->u64 > 1024)
			return dreq_usage(r, "--max-inflight must be 1..1024");
		s->max_inflight = (uint32_t)v->u64;
		s->set |= REPL_SET_INFLIGHT;
	}
	v = ctl_flag(r->cmd, "bandwidth");
	if (v->set) {
		s->bandwidth = v->u64;
		s->set |= REPL_SET_BANDWIDTH;
	}
	v = ctl_flag(r->cmd, "compress");
	if (v->set) {
		s->compress = !strcmp(v->str, "on") || !strcmp(v->str, "zstd");
		s->set |= REPL_SET_COMPRESS;
	}
	v = ctl_flag(r->cmd, "peer-timeout");
	if (v->set) {
		s->peer_timeout_s = v->u64;
		s->set |= REPL_SET_PEER_TIMEOUT;
	}
	v = ctl_flag(r->cmd, "split-brain");
	if (v->set) {
		s->split_brain = !strcmp(v->str, "keep-writing") ? REPL_SB_KEEP_WRITING : REPL_SB_FENCE;
		s->set |= REPL_SET_SPLIT_BRAIN;
	}
	v = ctl_flag(r->cmd, "keep");
	if (v->set) {
		if (v->u64 < 1 || v->u64 > REPL_KEEP_MAX)
			return dreq_usage(r, "--keep must be 1..%u (the last synced cycle is always kept)",
			                  REPL_KEEP_MAX);
		s->keep = (uint32_t)v->u64;
		s->set |= REPL_SET_KEEP;
	}
	v = ctl_flag(r->cmd, "keep-for");
	if (v->set) {
		s->keep_for_s = v->u64;
		s->set |= REPL_SET_KEEP_FOR;
	}
	return 0;
}

static int pair_create(struct dreq *r)
{
	struct repl_pair_opts o = { 0 };
	int st = settings_from(r, &o.s);
	if (st)
		return st;
	o.peer = ctl_flag(r->cmd, "peer")->str;
	char host[256], port[16];
	if (split_hostport(o.peer, host, sizeof(host), port, sizeof(port)) < 0 || !host[0])
		return dreq_usage(r, "bad --peer '%s' (want HOST:PORT)", o.peer);
	const struct ctl_val *rn = ctl_flag(r->cmd, "remote-name");
	if (rn->set && dreq_name_reserved(r, rn->str, "volume"))
		return 2;
	o.remote_name = rn->set ? rn->str : NULL;
	o.force = ctl_flag(r->cmd, "force")->set;
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	struct vol *v;
	if (vol_open(r->store, name, &v) == 0) {
		struct vol_info vi;
		int e = vol_info(v, &vi);
		vol_close(v);
		/* Its first cycle would have to send the parent's data, which
		 * no layer of the clone records (docs/DESIGN.md, Clones). */
		if (e == 0 && vi.parent[0])
			return dreq_fail(r, "volume '%s' is a clone of %s: replicate it after `ferry "
			                 "volume flatten %s` (or pair the parent)", name, vi.parent, name);
	}
	char grp[STORE_NAME_MAX + 1];
	if (daemon_group_exists(r->d, name))
		return dreq_fail(r, "'%s' is a consistency group: replicating a group is not "
		                    "implemented yet (pair its volumes one by one, or wait for it)",
		                 name);
	if (daemon_group_of(r->d, name, grp))
		return dreq_fail(r, "volume '%s' is in consistency group '%s': a grouped volume cannot "
		                    "have a pair of its own (ferry group remove %s %s first)",
		                 name, grp, grp, name);
	struct repl_created res;
	struct repl_err err = { "" };
	struct sbuf b;
	sbuf_init(&b);
	int rc = repl_pair_create(g_repl, name, &o, &res, &err);
	if (rc == 0 && res.incremental)
		sbuf_printf(&b, "pair %s created: %s -> %s volume %s; re-paired from %s (cycle %"
		            PRIu64 ", kept on both sites by pair rm): only the changes since travel\n",
		            name, name, res.peer, res.remote, res.base_snap, res.base_cycle);
	else if (rc == 0)
		sbuf_printf(&b, "pair %s created: %s -> %s volume %s; initial sync started\n", name,
		            name, res.peer, res.remote);
	return finish(r, &b, rc, &err);
}

static void setting_line(struct sbuf *b, const char *what, const char *before, const char *after)
{
	sbuf_printf(b, "  %s: %s%s%s\n", what, before, strcmp(before, after) ? " -> " : " (unchanged)",
	            strcmp(before, after) ? after : "");
}

static int pair_set(struct dreq *r)
{
	if (!ready(r))
		return 1;
	struct repl_settings s, a, z;
	int st = settings_from(r, &s);
	if (st)
		return st;
	if (!s.set)
		return dreq_usage(r, "pair set: nothing to change (give --period, --bandwidth, "
		                  "--compress, --max-inflight, --peer-timeout, --split-brain, --keep "
		                  "or --keep-for)");
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	struct repl_err err = { "" };
	struct sbuf b;
	sbuf_init(&b);
	int rc = repl_pair_set(g_repl, name, &s, &z, &a, &err);
	if (rc == 0) {
		char x[48], y[48], t[32];
		sbuf_printf(&b, "pair %s: settings changed (the next cycle uses them; the secondary "
		            "takes them now)\n", name);
		if (s.set & REPL_SET_PERIOD) {
			snprintf(x, sizeof(x), "%" PRIu64 " s", z.period_s);
			snprintf(y, sizeof(y), "%" PRIu64 " s", a.period_s);
			setting_line(&b, "period", x, y);
		}
		if (s.set & REPL_SET_BANDWIDTH) {
			snprintf(x, sizeof(x), "%s", z.bandwidth ? fmt_bytes(z.bandwidth, t, sizeof(t)) : "unlimited");
			snprintf(y, sizeof(y), "%s", a.bandwidth ? fmt_bytes(a.bandwidth, t, sizeof(t)) : "unlimited");
			setting_line(&b, "bandwidth", x, y);
		}
		if (s.set & REPL_SET_COMPRESS)
			setting_line(&b, "compress", z.compress ? "on" : "off", a.compress ? "on" : "off");
		if (s.set & REPL_SET_INFLIGHT) {
			snprintf(x, sizeof(x), "%u", z.max_inflight);
			snprintf(y, sizeof(y), "%u", a.max_inflight);
			setting_line(&b, "max-inflight", x, y);
		}
		if (s.set & REPL_SET_PEER_TIMEOUT) {
			snprintf(x, sizeof(x), z.peer_timeout_s ? "%" PRIu64 " s" : "default", z.peer_timeout_s);
			snprintf(y, sizeof(y), a.peer_timeout_s ? "%" PRIu64 " s" : "default", a.peer_timeout_s);
			setting_line(&b, "peer timeout", x, y);
		}
		if (s.set & REPL_SET_SPLIT_BRAIN)
			setting_line(&b, "split-brain", repl_split_policy_name(z.split_brain),
			             repl_split_policy_name(a.split_brain));
		if (s.set & REPL_SET_KEEP) {
			snprintf(x, sizeof(x), "%u", z.keep);
			snprintf(y, sizeof(y), "%u", a.keep);
			setting_line(&b, "keep (recovery points, from the next cycle)", x, y);
		}
		if (s.set & REPL_SET_KEEP_FOR) {
			snprintf(x, sizeof(x), z.keep_for_s ? "%" PRIu64 " s" : "none", z.keep_for_s);
			snprintf(y, sizeof(y), a.keep_for_s ? "%" PRIu64 " s" : "none", a.keep_for_s);
			setting_line(&b, "keep-for (from the next cycle)", x, y);
		}
	}
	return finish(r, &b, rc, &err);
}

static int pair_list(struct dreq *r)
{
	if (!ready(r))
		return 1;
	struct repl_status *st;
	size_t n;
	int rc = repl_pair_list(g_repl, &st, &n);
	if (rc < 0)
		return dreq_fail(r, "%s", strerror(-rc));
	struct sbuf b;
	sbuf_init(&b);
	if (ctl_flag(r->cmd, "json")->set) {
		struct jw w;
		jw_init(&w, &b);
		jw_arr_begin(&w);
		for (size_t i = 0; i < n; i++)
			status_json(&w, &st[i]);
		jw_arr_end(&w);
		sbuf_puts(&b, "\n");
	} else {
		sbuf_printf(&b, "%-20s %-9s %-12s %-24s %-20s %s\n", "NAME", "ROLE", "STATE", "PEER",
		            "LAST-SYNC", "RPO-LAG");
		for (size_t i = 0; i < n; i++) {
			char when[32] = "never", peer[64];
			if (st[i].has_last) {
				time_t t = (time_t)st[i].last_time;
				struct tm tm;
				gmtime_r(&t, &tm);
				strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
			}
			/* One word per column: a secondary's origin is "host addr". */
			const char *pe = st[i].role == REPL_ROLE_SECONDARY && st[i].peer_addr[0]
			                     ? st[i].peer_addr : st[i].peer;
			snprintf(peer, sizeof(peer), "%.*s", (int)strcspn(pe, " "), pe);
			sbuf_printf(&b, "%-20s %-9s %-12s %-24s %-20s %" PRIu64 "s\n", st[i].name,
			            repl_role_name(st[i].role), repl_state_name(st[i].state),
			            peer[0] ? peer : "(calls-in)", when, st[i].rpo_lag_s);
		}
	}
	free(st);
	struct repl_err none = { "" };
	return finish(r, &b, 0, &none);
}

static int pair_status(struct dreq *r)
{
	if (!ready(r))
		return 1;
	struct repl_status st;
	struct repl_err err = { "" };
	struct sbuf b;
	sbuf_init(&b);
	int rc = repl_pair_status(g_repl, ctl_pos(r->cmd, "NAME")->str, &st, &err);
	if (rc == 0 && ctl_flag(r->cmd, "json")->set) {
		struct jw w;
		jw_init(&w, &b);
		status_json(&w, &st);
		sbuf_puts(&b, "\n");
	} else if (rc == 0) {
		status_text(&b, &st);
	}
	return finish(r, &b, rc, &err);
}

/* Waits for a cycle ticket in one-second slices, sending progress so the
 * CLI's deadline holds and a vanished CLI stops the wait. */
static int wait_ticket(struct dreq *r, const char *name, uint64_t ticket, const char *label,
                       struct sbuf *b)
{
	int rc;
	struct repl_err err = { "" };
	char snap[STORE_NAME_MAX + 1];
	uint64_t cycle = 0;
	do {
		uint64_t done = 0, total = 0;
		rc = repl_pair_sync_wait(g_repl, name, ticket, 1000, &done, &total, snap, &cycle, &err);
		if (rc == -EINPROGRESS) {
			dreq_progress(r, done, total, label);
			if (dreq_aborted(r)) {
				sbuf_free(b);
				return 1;
			}
		}
	} while (rc == -EINPROGRESS);
	if (rc == 0)
		sbuf_printf(b, "pair %s: synced, snapshot %s (cycle %" PRIu64 ")\n", name, snap, cycle);
	return finish(r, b, rc, &err);
}

static int pair_sync(struct dreq *r)
{
	if (!ready(r))
		return 1;
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	struct sbuf b;
	sbuf_init(&b);
	uint64_t ticket;
	struct repl_err err = { "" };
	int rc = repl_pair_sync_request(g_repl, name, &ticket, &err);
	if (rc < 0 || !ctl_flag(r->cmd, "wait")->set) {
		if (rc == 0)
			sbuf_printf(&b, "pair %s: cycle requested\n", name);
		return finish(r, &b, rc, &err);
	}
	return wait_ticket(r, name, ticket, "sync", &b);
}

static int pause_resume(struct dreq *r, bool pause)
{
	if (!ready(r))
		return 1;
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	struct repl_err err = { "" };
	struct sbuf b;
	sbuf_init(&b);
	int rc = pause ? repl_pair_pause(g_repl, name, &err) : repl_pair_resume(g_repl, name, &err);
	if (rc == 0)
		sbuf_printf(&b, "pair %s %s\n", name, pause ? "paused" : "resumed");
	return finish(r, &b, rc, &err);
}

static int pair_pause(struct dreq *r)
{
	return pause_resume(r, true);
}

static int pair_resume(struct dreq *r)
{
	return pause_resume(r, false);
}

static void verify_progress(void *ctx, uint64_t done, uint64_t total)
{
	dreq_progress(ctx, done, total, "verify");
}

/* Exit status: 0 match, 1 mismatch, 3 could not verify. */
static int pair_verify(struct dreq *r)
{
	if (!ready(r))
		return 3;
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	const struct ctl_val *sv = ctl_flag(r->cmd, "snapshot");
	struct repl_verify v;
	struct repl_err err = { "" };
	int rc = repl_pair_verify(g_repl, name, sv->set ? sv->str : NULL, verify_progress, r, &v,
	                          &err);
	if (rc < 0) {
		dreq_fail(r, "could not verify: %s", err.msg[0] ? err.msg : strerror(-rc));
		return 3;
	}
	struct sbuf b;
	sbuf_init(&b);
	if (ctl_flag(r->cmd, "json")->set) {
		struct jw w;
		jw_init(&w, &b);
		jw_obj_begin(&w);
		jw_key(&w, "snapshot"); jw_str(&w, v.snapshot);
		jw_key(&w, "primary_md5"); jw_str(&w, v.primary_md5);
		jw_key(&w, "secondary_md5"); jw_str(&w, v.secondary_md5);
		jw_key(&w, "objects_compared"); jw_u64(&w, v.objects_compared);
		jw_key(&w, "mismatching_objects"); jw_u64(&w, v.mismatching_objects);
		jw_key(&w, "match"); jw_bool(&w, v.match);
		jw_key(&w, "seconds"); jw_double(&w, v.seconds);
		jw_obj_end(&w);
		sbuf_puts(&b, "\n");
	} else {
		sbuf_printf(&b, "primary   %s  %s@%s\nsecondary %s  %s@%s (%s)\n", v.primary_md5,
		            name, v.snapshot, v.secondary_md5, v.remote, v.snapshot, v.peer);
		sbuf_printf(&b, "%" PRIu64 " non-zero objects compared, %" PRIu64 " mismatching, "
		            "%.2f s\n", v.objects_compared, v.mismatching_objects, v.seconds);
		for (size_t k = 0; k < v.n_mismatch; k++)
			sbuf_printf(&b, "  mismatch: object %" PRIu64 "\n", v.mismatch[k]);
		if (v.mismatching_objects > v.n_mismatch)
			sbuf_printf(&b, "  (and %" PRIu64 " more)\n", v.mismatching_objects - v.n_mismatch);
		sbuf_puts(&b, v.match ? "match\n" : "MISMATCH\n");
	}
	free(v.mismatch);
	struct repl_err none = { "" };
	int st = finish(r, &b, 0, &none);
	return st ? 3 : (v.match ? 0 : 1);
}

static int pair_rm(struct dreq *r)
{
	if (!ready(r))
		return 1;
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	struct repl_removed res;
	struct repl_err err = { "" };
	struct sbuf b;
	sbuf_init(&b);
	int rc = repl_pair_rm(g_repl, name, &res, &err);
	if (rc == 0) {
		if (!res.told)
			(void)dreq_fail(r, "warning: the secondary was not told (%s); run `pair rm %s` "
			                "there too", res.not_told, name);
		sbuf_printf(&b, "pair %s removed\n", name);
		if (res.kept_snap[0])
			sbuf_printf(&b, "  kept snapshot %s@%s so that a new pair create sends only what "
			            "changed since (snap rm it to free its space)\n", name, res.kept_snap);
	}
	return finish(r, &b, rc, &err);
}

static int pair_demote(struct dreq *r)
{
	if (!ready(r))
		return 1;
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	export_warn_demote(r, name);
	struct repl_role_change res;
	struct repl_err err = { "" };
	struct sbuf b;
	sbuf_init(&b);
	int rc = repl_pair_demote(g_repl, name, &res, &err);
	if (rc == 0 && res.already)
		sbuf_printf(&b, "pair %s: already a secondary here%s\n", name,
		            res.split ? " (waiting for `pair resync` on the new primary)" : "");
	else if (rc == 0 && res.split)
		sbuf_printf(&b, "pair %s demoted after a split brain: this site is read-only and "
		            "waits for `ferry pair resync %s` on the new primary (common snapshot "
		            "%s)\n", name, name, res.snapshot);
	else if (rc == 0)
		sbuf_printf(&b, "pair %s demoted: %s (cycle %" PRIu64 ") is on both sites; this "
		            "site is now the secondary-to-be, run `ferry pair promote` on the "
		            "other site\n", name, res.snapshot, res.cycle);
	return finish(r, &b, rc, &err);
}

static int pair_promote(struct dreq *r)
{
	if (!ready(r))
		return 1;
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	bool force = ctl_flag(r->cmd, "force")->set;
	const struct ctl_val *atv = ctl_flag(r->cmd, "at");
	const char *at = atv->set ? atv->str : NULL;
	if (at && !name_valid(at))
		return dreq_usage(r, "--at: '%s' is not a snapshot name", at);
	struct repl_role_change res;
	struct repl_err err = { "" };
	struct sbuf b;
	sbuf_init(&b);
	int rc = repl_pair_promote(g_repl, name, force, at, &res, &err);
	if (rc == 0 && res.already)
		sbuf_printf(&b, "pair %s: already primary here\n", name);
	else if (rc == 0)
		sbuf_printf(&b, "pair %s promoted%s: %s is live and writable (epoch %" PRIu64 "); "
		            "cycles now go to %s\n", name, force ? " by force" : "", res.snapshot,
		            res.epoch, res.peer[0] ? res.peer
		                                   : "the old primary, which calls in (it has no --listen)");
	return finish(r, &b, rc, &err);
}

static int pair_points(struct dreq *r)
{
	if (!ready(r))
		return 1;
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	struct repl_point *pt;
	size_t n;
	struct repl_err err = { "" };
	struct sbuf b;
	sbuf_init(&b);
	int rc = repl_pair_points(g_repl, name, &pt, &n, &err);
	if (rc < 0)
		return finish(r, &b, rc, &err);
	if (ctl_flag(r->cmd, "json")->set) {
		struct jw w;
		jw_init(&w, &b);
		jw_arr_begin(&w);
		for (size_t i = 0; i < n; i++) {
			jw_obj_begin(&w);
			jw_key(&w, "snapshot"); jw_str(&w, pt[i].snapshot);
			jw_key(&w, "cycle"); jw_u64(&w, pt[i].cycle);
			jw_key(&w, "time"); jw_u64(&w, pt[i].time);
			jw_key(&w, "bytes"); jw_u64(&w, pt[i].bytes);
			jw_key(&w, "last"); jw_bool(&w, pt[i].last);
			jw_key(&w, "pinned"); jw_bool(&w, pt[i].pinned);
			jw_key(&w, "clones"); jw_u64(&w, pt[i].clones);
			jw_obj_end(&w);
		}
		jw_arr_end(&w);
		sbuf_puts(&b, "\n");
	} else {
		sbuf_printf(&b, "%-32s %8s  %-20s %10s\n", "SNAPSHOT", "CYCLE", "TIME (UTC)", "BYTES");
		for (size_t i = 0; i < n; i++) {
			char ts[32], sz[32];
			struct tm tm;
			time_t t = (time_t)pt[i].time;
			gmtime_r(&t, &tm);
			strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
			char cl[48] = "";
			if (pt[i].clones)
				snprintf(cl, sizeof(cl), "  (clones: %" PRIu32 ", kept while they exist)",
				         pt[i].clones);
			sbuf_printf(&b, "%-32s %8" PRIu64 "  %-20s %10s%s%s%s\n", pt[i].snapshot,
			            pt[i].cycle, ts, fmt_bytes(pt[i].bytes, sz, sizeof(sz)),
			            pt[i].last ? "  (last synced)" : "",
			            pt[i].pinned && !pt[i].last ? "  (kept: promote --at)" : "", cl);
		}
	}
	free(pt);
	return finish(r, &b, 0, &err);
}

static int pair_resync(struct dreq *r)
{
	if (!ready(r))
		return 1;
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	struct sbuf b;
	sbuf_init(&b);
	uint64_t ticket;
	struct repl_role_change res;
	struct repl_err err = { "" };
	int rc = repl_pair_resync_start(g_repl, name, &ticket, &res, &err);
	if (rc < 0)
		return finish(r, &b, rc, &err);
	sbuf_printf(&b, "pair %s: resync started (%" PRIu64 " divergent extents on the old "
	            "primary)\n", name, res.resync_extents);
	return wait_ticket(r, name, ticket, "resync", &b);
}

const struct dgroup dgroup_pair = {
	"pair",
	(const struct dgroup_cmd[]){
		{"create", pair_create},
		{"set", pair_set},
		{"list", pair_list},
		{"status", pair_status},
		{"sync", pair_sync},
		{"pause", pair_pause},
		{"resume", pair_resume},
		{"verify", pair_verify},
		{"rm", pair_rm},
		{"demote", pair_demote},
		{"promote", pair_promote},
		{"resync", pair_resync},
		{"points", pair_points},
		{NULL, NULL},
	},
};
