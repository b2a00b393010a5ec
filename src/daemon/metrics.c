/* ferryd --metrics HOST:PORT: GET /metrics in the Prometheus text format
 * (exposition format 0.0.4), served by libmicrohttpd on one thread of its
 * own.
 *
 * A scrape reads: the store (each volume's size and allocation, as `volume
 * list`), the exports (under the exports' lock, which no I/O waits on) with
 * each LU's counters (relaxed atomics: scsi_lu_stats) and each target's
 * sessions (the iSCSI server's statistics lock, which no I/O waits on), and
 * the pairs (repl_pair_list: the repl lock, held while copying).  Nothing it
 * takes is taken per command on the I/O path.  docs/METRICS.md lists every
 * metric. */
#include "daemon/daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "repl/repl.h"
#include "scsi/scsi.h"

static struct {
	struct daemon *d;
	struct MHD_Daemon *mhd;
	char addr[128];
} g_m;

const char *metrics_addr(void)
{
	return g_m.addr;
}

/* ---- text format -------------------------------------------------------- */
/* A label value: backslash, double quote and newline escaped. */
static void lv(struct sbuf *b, const char *s)
{
	sbuf_puts(b, "\"");
	while (*s) {
		size_t n = strcspn(s, "\\\"\n");
		sbuf_add(b, s, n);
		s += n;
		if (*s) {
			sbuf_puts(b, *s == '\n' ? "\\n" : *s == '"' ? "\\\"" : "\\\\");
			s++;
		}
	}
	sbuf_puts(b, "\"");
}

static void family(struct sbuf *b, const char *name, const char *type, const char *help)
{
	sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A histogram's series: per-bucket counts (not cumulative) in, cumulative
 * _bucket, _sum and _count out.  labels is the inside of {} without the le
 * label ("pair=\"db\""). */
static void histogram(struct sbuf *b, const char *name, const char *labels,
                      const double *bounds, unsigned nb, const uint64_t *counts, double sum)
{
	uint64_t cum = 0;
	for (unsigned i = 0; i <= nb; i++) {
		cum += counts[i];
		if (i < nb)
			sbuf_printf(b, "%s_bucket{%s,le=\"%g\"} %" PRIu64 "\n", name, labels, bounds[i],
			            cum);
		else
			sbuf_printf(b, "%s_bucket{%s,le=\"+Inf\"} %" PRIu64 "\n", name, labels, cum);
	}
	sbuf_printf(b, "%s_sum{%s} %.9f\n", name, labels, sum);
	sbuf_printf(b, "%s_count{%s} %" PRIu64 "\n", name, labels, cum);
}

/* ---- volumes ------------------------------------------------------------ */
static void render_volumes(struct daemon *d, struct sbuf *b)
{
	struct vol_info *vi;
	size_t k = daemon_volume_infos(d->store, &vi);
	family(b, "ferry_volume_size_bytes", "gauge", "Size of the volume in bytes.");
	for (size_t i = 0; i < k; i++) {
		sbuf_puts(b, "ferry_volume_size_bytes{volume=");
		lv(b, vi[i].name);
		sbuf_printf(b, "} %" PRIu64 "\n", vi[i].size);
	}
	family(b, "ferry_volume_allocated_bytes", "gauge",
	       "Bytes of data stored for the volume, head and snapshots together.");
	for (size_t i = 0; i < k; i++) {
		sbuf_puts(b, "ferry_volume_allocated_bytes{volume=");
		lv(b, vi[i].name);
		sbuf_printf(b, "} %" PRIu64 "\n", vi[i].allocated_bytes);
	}
	family(b, "ferry_volume_snapshots", "gauge", "Snapshots of the volume.");
	for (size_t i = 0; i < k; i++) {
		sbuf_puts(b, "ferry_volume_snapshots{volume=");
		lv(b, vi[i].name);
		sbuf_printf(b, "} %" PRIu32 "\n", vi[i].snapshots);
	}
	free(vi);
}

/* ---- exports ------------------------------------------------------------ */
struct lun_row {
	char vol[STORE_NAME_MAX + 1], snap[STORE_NAME_MAX + 1];
	char iqn[256];
	uint64_t lun;
	unsigned sessions;
	struct scsi_lu_stats st;
};

struct lun_rows {
	struct lun_row *r;
	size_t n, cap;
	bool nomem;
};

static void collect_lun(void *ctx, const struct export_view *e)
{
	struct lun_rows *rs = ctx;
	if (!e->served || rs->nomem)
		return;
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? 2 * rs->cap : 16;
		struct lun_row *n = realloc(rs->r, cap * sizeof(*n));
		if (!n) {
			rs->nomem = true;
			return;
		}
		rs->r = n;
		rs->cap = cap;
	}
	struct lun_row *r = &rs->r[rs->n++];
	snprintf(r->vol, sizeof(r->vol), "%s", e->vol);
	snprintf(r->snap, sizeof(r->snap), "%s", e->snap);
	snprintf(r->iqn, sizeof(r->iqn), "%s", e->iqn);
	r->lun = e->lun;
	r->sessions = e->sessions;
	scsi_lu_stats(e->lu, &r->st);
}

static void lun_labels(struct sbuf *b, const struct lun_row *r)
{
	sbuf_puts(b, "target=");
	lv(b, r->iqn);
	sbuf_printf(b, ",lun=\"%" PRIu64 "\"", r->lun);
}

static void render_exports(struct sbuf *b)
{
	struct lun_rows rs = {0};
	export_each(collect_lun, &rs);
	family(b, "ferry_iscsi_sessions", "gauge",
	       "Normal iSCSI sessions logged in to the target.");
	for (size_t i = 0; i < rs.n; i++) {
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++)
			seen = !strcmp(rs.r[j].iqn, rs.r[i].iqn);
		if (seen)
			continue;
		sbuf_puts(b, "ferry_iscsi_sessions{target=");
		lv(b, rs.r[i].iqn);
		sbuf_printf(b, "} %u\n", rs.r[i].sessions);
	}
	family(b, "ferry_lun_info", "gauge", "What a LUN serves (always 1).");
	for (size_t i = 0; i < rs.n; i++) {
		sbuf_puts(b, "ferry_lun_info{");
		lun_labels(b, &rs.r[i]);
		sbuf_puts(b, ",volume=");
		lv(b, rs.r[i].vol);
		sbuf_puts(b, ",snapshot=");
		lv(b, rs.r[i].snap);
		sbuf_puts(b, "} 1\n");
	}
	family(b, "ferry_lun_io_total", "counter",
	       "SCSI commands executed by the LUN, by op (read, write, unmap, flush, other).");
	for (size_t i = 0; i < rs.n; i++)
		for (unsigned k = 0; k < SCSI_OPC_N; k++) {
			sbuf_puts(b, "ferry_lun_io_total{");
			lun_labels(b, &rs.r[i]);
			sbuf_printf(b, ",op=\"%s\"} %" PRIu64 "\n", scsi_op_class_name(k),
			            rs.r[i].st.op[k].ops);
		}
	family(b, "ferry_lun_bytes_total", "counter",
	       "Bytes transferred for the LUN's commands (data-in plus data-out), by op.");
	for (size_t i = 0; i < rs.n; i++)
		for (unsigned k = 0; k < SCSI_OPC_N; k++) {
			sbuf_puts(b, "ferry_lun_bytes_total{");
			lun_labels(b, &rs.r[i]);
			sbuf_printf(b, ",op=\"%s\"} %" PRIu64 "\n", scsi_op_class_name(k),
			            rs.r[i].st.op[k].bytes);
		}
	family(b, "ferry_lun_latency_seconds", "histogram",
	       "Execution time of the LUN's commands in the target, by op.");
	for (size_t i = 0; i < rs.n; i++)
		for (unsigned k = 0; k < SCSI_OPC_N; k++) {
			struct sbuf l;
			sbuf_init(&l);
			lun_labels(&l, &rs.r[i]);
			sbuf_printf(&l, ",op=\"%s\"", scsi_op_class_name(k));
			const struct scsi_op_stats *o = &rs.r[i].st.op[k];
			histogram(b, "ferry_lun_latency_seconds", l.p ? l.p : "", scsi_lat_bounds,
			          SCSI_LAT_BUCKETS, o->lat, (double)o->lat_ns / 1e9);
			sbuf_free(&l);
		}
	if (rs.nomem)
		b->err = -ENOMEM;
	free(rs.r);
}

/* ---- pairs -------------------------------------------------------------- */
static const char *role_name(enum repl_role r)
{
	return r == REPL_ROLE_PRIMARY ? "primary" : r == REPL_ROLE_SECONDARY ? "secondary" : "none";
}

static void pair_label(struct sbuf *b, const struct repl_status *p)
{
	sbuf_puts(b, "pair=");
	lv(b, p->name);
}

static void render_pairs(struct sbuf *b)
{
	struct repl_status *pm = NULL;
	size_t n = 0;
	struct repl *r = daemon_repl();
	if (r && repl_pair_list(r, &pm, &n) < 0) {
		b->err = -ENOMEM;
		return;
	}
	family(b, "ferry_pair_info", "gauge", "A replication pair and its peer (always 1).");
	for (size_t i = 0; i < n; i++) {
		sbuf_puts(b, "ferry_pair_info{");
		pair_label(b, &pm[i]);
		sbuf_printf(b, ",role=\"%s\",peer=", role_name(pm[i].role));
		lv(b, pm[i].peer);
		sbuf_puts(b, "} 1\n");
	}
	family(b, "ferry_pair_rpo_lag_seconds", "gauge",
	       "Age of the last synced snapshot: the data a failover would lose.");
	for (size_t i = 0; i < n; i++) {
		sbuf_puts(b, "ferry_pair_rpo_lag_seconds{");
		pair_label(b, &pm[i]);
		sbuf_printf(b, ",role=\"%s\"} %" PRIu64 "\n", role_name(pm[i].role), pm[i].rpo_lag_s);
	}
	family(b, "ferry_pair_period_seconds", "gauge", "Cycle period of the pair.");
	for (size_t i = 0; i < n; i++) {
		if (!pm[i].period_s)
			continue; /* a secondary that has not heard it yet */
		sbuf_puts(b, "ferry_pair_period_seconds{");
		pair_label(b, &pm[i]);
		sbuf_printf(b, "} %" PRIu64 "\n", pm[i].period_s);
	}
	family(b, "ferry_pair_state", "gauge",
	       "1 for the state the pair is in (as `ferry pair status`), 0 for the others.");
	for (size_t i = 0; i < n; i++) {
		bool listed = false;
		for (unsigned k = 0; k < REPL_ST_COUNT; k++) {
			bool cur = k == (unsigned)pm[i].state;
			listed |= cur;
			sbuf_puts(b, "ferry_pair_state{");
			pair_label(b, &pm[i]);
			sbuf_printf(b, ",state=\"%s\"} %d\n", repl_state_name((enum repl_state)k), cur);
		}
		if (!listed) {
			sbuf_puts(b, "ferry_pair_state{");
			pair_label(b, &pm[i]);
			sbuf_puts(b, ",state=");
			lv(b, repl_state_name(pm[i].state));
			sbuf_puts(b, "} 1\n");
		}
	}
	family(b, "ferry_pair_last_sync_timestamp_seconds", "gauge",
	       "Unix time of the last synced snapshot (absent before the first sync).");
	for (size_t i = 0; i < n; i++) {
		if (!pm[i].has_last)
			continue;
		sbuf_puts(b, "ferry_pair_last_sync_timestamp_seconds{");
		pair_label(b, &pm[i]);
		sbuf_printf(b, "} %" PRIu64 "\n", pm[i].last_time);
	}
	family(b, "ferry_pair_cycles_total", "counter",
	       "Cycles since ferryd started, by result (ok: committed; failed: ended in an error; "
	       "skipped: due, but nothing had changed since the last synced snapshot).");
	for (size_t i = 0; i < n; i++) {
		sbuf_puts(b, "ferry_pair_cycles_total{");
		pair_label(b, &pm[i]);
		sbuf_printf(b, ",result=\"ok\"} %" PRIu64 "\n", pm[i].counters.cycles_ok);
		sbuf_puts(b, "ferry_pair_cycles_total{");
		pair_label(b, &pm[i]);
		sbuf_printf(b, ",result=\"failed\"} %" PRIu64 "\n", pm[i].counters.cycles_failed);
		sbuf_puts(b, "ferry_pair_cycles_total{");
		pair_label(b, &pm[i]);
		sbuf_printf(b, ",result=\"skipped\"} %" PRIu64 "\n", pm[i].counters.cycles_skipped);
	}
	family(b, "ferry_pair_cycle_bytes_total", "counter",
	       "Bytes of committed cycles: data (changed bytes sent as data), zero (changed "
	       "bytes sent as zero records), wire (bytes on the link, both ways).");
	for (size_t i = 0; i < n; i++) {
		const char *kinds[3] = {"data", "zero", "wire"};
		uint64_t v[3] = {pm[i].counters.data_bytes, pm[i].counters.zero_bytes,
		                 pm[i].counters.wire_bytes};
		for (int k = 0; k < 3; k++) {
			sbuf_puts(b, "ferry_pair_cycle_bytes_total{");
			pair_label(b, &pm[i]);
			sbuf_printf(b, ",kind=\"%s\"} %" PRIu64 "\n", kinds[k], v[k]);
		}
	}
	family(b, "ferry_pair_cycle_duration_seconds", "histogram",
	       "Duration of committed cycles, from the snapshot to the commit.");
	for (size_t i = 0; i < n; i++) {
		struct sbuf l;
		sbuf_init(&l);
		pair_label(&l, &pm[i]);
		histogram(b, "ferry_pair_cycle_duration_seconds", l.p ? l.p : "", repl_hist_bounds,
		          REPL_HIST_BUCKETS - 1, pm[i].counters.duration_hist,
		          pm[i].counters.duration_sum);
		sbuf_free(&l);
	}
	free(pm);
}

void metrics_render(struct daemon *d, struct sbuf *b)
{
	uint64_t t0 = now_mono_ns();
	family(b, "ferry_build_info", "gauge", "The version of ferryd (always 1).");
	sbuf_puts(b, "ferry_build_info{version=");
	lv(b, FERRY_VERSION);
	sbuf_puts(b, "} 1\n");
	render_volumes(d, b);
	render_exports(b);
	render_pairs(b);
	family(b, "ferry_metrics_render_seconds", "gauge",
	       "Time ferryd took to produce this page (without this line).");
	sbuf_printf(b, "ferry_metrics_render_seconds %.6f\n", (double)(now_mono_ns() - t0) / 1e9);
}

/* ---- HTTP --------------------------------------------------------------- */
static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
	if (!r) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, "Allow", "GET, HEAD");
	enum MHD_Result ok = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ok;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
	(void)version;
	(void)upload;
	(void)upload_size;
	(void)con_cls;
	static char not_allowed[] = "only GET and HEAD\n";
	static char not_found[] = "not found: metrics are at /metrics\n";
	static char index_page[] = "ferryd: metrics are at /metrics\n";
	const char *text = "text/plain; charset=utf-8";
	if (strcmp(method, "GET") && strcmp(method, "HEAD"))
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, text, not_allowed,
		             sizeof(not_allowed) - 1, MHD_RESPMEM_PERSISTENT);
	if (!strcmp(url, "/"))
		return reply(c, MHD_HTTP_OK, text, index_page, sizeof(index_page) - 1,
		             MHD_RESPMEM_PERSISTENT);
	if (strcmp(url, "/metrics"))
		return reply(c, MHD_HTTP_NOT_FOUND, text, not_found, sizeof(not_found) - 1,
		             MHD_RESPMEM_PERSISTENT);
	struct sbuf b;
	sbuf_init(&b);
	metrics_render(cls, &b);
	if (b.err) {
		sbuf_free(&b);
		log_warn("metrics: out of memory rendering /metrics");
		static char oom[] = "out of memory\n";
		return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, text, oom, sizeof(oom) - 1,
		             MHD_RESPMEM_PERSISTENT);
	}
	size_t len;
	char *body = sbuf_detach(&b, &len);
	return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body ? body : "",
	             body ? len : 0, body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) PRINTF_LIKE(2, 0);
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	log_warn("metrics: %s", msg);
}

int metrics_service_start(struct daemon *d)
{
	const char *hp = daemon_opt("metrics");
	g_m.addr[0] = '\0';
	if (!hp)
		return 0;
	int fd;
	char err[512];
	int rc = net_listen(hp, 64, &fd, g_m.addr, sizeof(g_m.addr), err, sizeof(err));
	if (rc < 0) {
		log_error("--metrics: %s", err);
		g_m.addr[0] = '\0';
		return rc;
	}
	g_m.d = d;
	g_m.mhd = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
	                           answer, d, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	                           MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
	                           MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
	                           MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
	if (!g_m.mhd) {
		log_error("--metrics %s: cannot start the HTTP server", hp);
		close(fd);
		g_m.addr[0] = '\0';
		return -EIO;
	}
	log_info("metrics: serving http://%s/metrics", g_m.addr);
	return 0;
}

void metrics_service_stop(struct daemon *d)
{
	(void)d;
	if (g_m.mhd)
		MHD_stop_daemon(g_m.mhd); /* closes the listening socket too */
	g_m.mhd = NULL;
	g_m.addr[0] = '\0';
}
