/* iSCSI exports: `ferry export add/rm/list` and the iSCSI service of ferryd.
 *
 * An export makes VOLUME (its head) or VOLUME@SNAP (always read-only) a
 * LUN of an iSCSI target.  The daemon owns the store volumes and the SCSI
 * logical units; the iSCSI server (started with --iscsi HOST:PORT) only
 * borrows the logical units.  Exports persist in POOL/exports.conf
 * (replaced atomically, mode 0600 since it holds CHAP secrets) and are
 * restored when ferryd starts.  Without --iscsi they are kept and listed
 * but not served.
 *
 * exports.conf: one export per line, fields separated by spaces, values
 * percent-encoded:
 *   VOLUME[@SNAP] iqn=IQN lun=N ro=0|1 [chap=USER:SECRET] [mutual=USER:SECRET]
 */
#include "daemon/daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "iscsi/iscsi.h"
#include "scsi/scsi.h"

#define EXPORT_IQN_PREFIX "iqn.2026-11.io.ferry:"
#define EXPORTS_FILE "exports.conf"
#define EXPORTS_MAX_BYTES (4u << 20)

struct export {
	char vol[STORE_NAME_MAX + 1];
	char snap[STORE_NAME_MAX + 1];       /* "" = the head */
	char iqn[ISCSI_NAME_MAX + 1];
	uint64_t lun;
	bool ro;                             /* as configured */
	bool secondary_ro;                   /* forced: the volume is a pair's secondary */
	bool chap, mutual;
	char chap_user[ISCSI_CHAP_SECRET_MAX + 1], chap_secret[ISCSI_CHAP_SECRET_MAX + 1];
	char mut_user[ISCSI_CHAP_SECRET_MAX + 1], mut_secret[ISCSI_CHAP_SECRET_MAX + 1];
	struct vol *v;                       /* open while exported (and served) */
	struct scsi_lu *lu;                  /* NULL when not served */
	struct export *next;
};

/* All exports; the lock serializes export commands with each other, with
 * the volume rm check and with start/stop. */
static struct {
	pthread_mutex_t lock;
	struct daemon *d;
	struct iscsi_server *srv;            /* NULL without --iscsi */
	struct export *list;
} g = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* ---- exports.conf ------------------------------------------------------- */
static void enc(struct sbuf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '-' || c == '_' || c == ':' || c == '@')
			sbuf_add(b, s, 1);
		else
			sbuf_printf(b, "%%%02X", c);
	}
}

static int dec(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '%') {
			unsigned v;
			char hx[3] = {0};
			if (i + 2 >= n)
				return -EINVAL;
			hx[0] = s[i + 1];
			hx[1] = s[i + 2];
			if (sscanf(hx, "%2x", &v) != 1 || v == 0)
				return -EINVAL;
			c = (char)v;
			i += 2;
		}
		if (o + 1 >= cap)
			return -ENAMETOOLONG;
		out[o++] = c;
	}
	out[o] = '\0';
	return 0;
}

static int save_locked(void)
{
	struct sbuf b;
	sbuf_init(&b);
	sbuf_puts(&b, "# ferry iSCSI exports (written by ferryd; see `ferry export`)\n");
	for (struct export *e = g.list; e; e = e->next) {
		enc(&b, e->vol);
		if (e->snap[0]) {
			sbuf_puts(&b, "@");
			enc(&b, e->snap);
		}
		sbuf_puts(&b, " iqn=");
		enc(&b, e->iqn);
		sbuf_printf(&b, " lun=%" PRIu64 " ro=%d", e->lun, e->ro ? 1 : 0);
		if (e->chap) {
			sbuf_puts(&b, " chap=");
			enc(&b, e->chap_user);
			sbuf_puts(&b, "%3A"); /* ':' inside a user name stays unambiguous */
			enc(&b, e->chap_secret);
		}
		if (e->mutual) {
			sbuf_puts(&b, " mutual=");
			enc(&b, e->mut_user);
			sbuf_puts(&b, "%3A");
			enc(&b, e->mut_secret);
		}
		sbuf_puts(&b, "\n");
	}
	if (b.err) {
		sbuf_free(&b);
		return -ENOMEM;
	}
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%s", g.d->pool, EXPORTS_FILE);
	int r = write_file_atomic(path, b.p, b.len);
	if (r < 0)
		log_error("cannot write %s: %s", path, strerror(-r));
	sbuf_free(&b);
	return r;
}

/* USER:SECRET as given on the command line (split at the first ':'). */
static int split_cred(const char *s, char *user, char *secret)
{
	const char *c = strchr(s, ':');
	if (!c || c == s || !c[1] || (size_t)(c - s) > ISCSI_CHAP_SECRET_MAX ||
	    strlen(c + 1) > ISCSI_CHAP_SECRET_MAX)
		return -EINVAL;
	memcpy(user, s, (size_t)(c - s));
	user[c - s] = '\0';
	strcpy(secret, c + 1);
	return 0;
}

/* The same for the file, where the separator is an encoded "%3A" and
 * user and secret are encoded. */
static int dec_cred(const char *s, char *user, char *secret)
{
	const char *c = strstr(s, "%3A");
	if (!c)
		return -EINVAL;
	if (dec(s, (size_t)(c - s), user, ISCSI_CHAP_SECRET_MAX + 1) < 0 ||
	    dec(c + 3, strlen(c + 3), secret, ISCSI_CHAP_SECRET_MAX + 1) < 0)
		return -EINVAL;
	return 0;
}

static int parse_line(char *line, struct export *e)
{
	memset(e, 0, sizeof(*e));
	char *save = NULL;
	char *tok = strtok_r(line, " \t", &save);
	if (!tok)
		return -EINVAL;
	char name[2 * STORE_NAME_MAX + 8];
	if (dec(tok, strlen(tok), name, sizeof(name)) < 0)
		return -EINVAL;
	char *at = strchr(name, '@');
	if (at) {
		*at = '\0';
		snprintf(e->snap, sizeof(e->snap), "%.64s", at + 1);
		if (!name_valid(e->snap))
			return -EINVAL;
		e->ro = true;
	}
	if (!name_valid(name))
		return -EINVAL;
	snprintf(e->vol, sizeof(e->vol), "%.64s", name);
	while ((tok = strtok_r(NULL, " \t", &save))) {
		char *eq = strchr(tok, '=');
		if (!eq)
			return -EINVAL;
		*eq = '\0';
		const char *v = eq + 1;
		if (!strcmp(tok, "iqn")) {
			if (dec(v, strlen(v), e->iqn, sizeof(e->iqn)) < 0)
				return -EINVAL;
		} else if (!strcmp(tok, "lun")) {
			if (parse_u64(v, &e->lun) < 0 || e->lun > ISCSI_MAX_LUN)
				return -EINVAL;
		} else if (!strcmp(tok, "ro")) {
			e->ro = e->ro || strcmp(v, "1") == 0;
		} else if (!strcmp(tok, "chap")) {
			if (dec_cred(v, e->chap_user, e->chap_secret) < 0)
				return -EINVAL;
			e->chap = true;
		} else if (!strcmp(tok, "mutual")) {
			if (dec_cred(v, e->mut_user, e->mut_secret) < 0)
				return -EINVAL;
			e->mutual = true;
		} /* unknown keys: written by a newer ferryd, ignored */
	}
	return e->iqn[0] ? 0 : -EINVAL;
}

/* ---- serving ------------------------------------------------------------ */
static struct export *find(const char *vol, const char *snap)
{
	for (struct export *e = g.list; e; e = e->next)
		if (!strcmp(e->vol, vol) && !strcmp(e->snap, snap))
			return e;
	return NULL;
}

static struct export *find_target(const char *iqn)
{
	for (struct export *e = g.list; e; e = e->next)
		if (!strcasecmp(e->iqn, iqn))
			return e;
	return NULL;
}

/* A stable 8-byte identifier per volume (and snapshot) for VPD 0x83. */
static void make_naa(const char *uuid, const char *snap, uint8_t naa[8])
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	EVP_MD_CTX *m = EVP_MD_CTX_new();
	if (m && EVP_DigestInit_ex(m, EVP_md5(), NULL) && EVP_DigestUpdate(m, uuid, strlen(uuid)) &&
	    EVP_DigestUpdate(m, "@", 1) && EVP_DigestUpdate(m, snap, strlen(snap)) &&
	    EVP_DigestFinal_ex(m, md, &len) && len >= 8)
		memcpy(naa, md, 8);
	else
		memset(naa, 0, 8);
	EVP_MD_CTX_free(m);
}

/* Opens the volume, builds the LU and, when the server runs, publishes it.
 * On failure nothing is left behind; err gets a one-line reason. */
static int serve_export(struct export *e, char *err, size_t errlen)
{
	int r = vol_open(g.d->store, e->vol, &e->v);
	if (r < 0) {
		daemon_open_error(g.d->store, e->vol, r, err, errlen);
		e->v = NULL;
		return r;
	}
	struct vol_info vi;
	if (e->snap[0]) {
		struct snap_info si;
		r = vol_snap_get(e->v, e->snap, &si);
		if (r < 0) {
			snprintf(err, errlen, "no such snapshot '%s@%s'", e->vol, e->snap);
			goto fail;
		}
	}
	r = vol_info(e->v, &vi);
	if (r < 0) {
		snprintf(err, errlen, "cannot read volume '%s': %s", e->vol, strerror(-r));
		goto fail;
	}
	if (!g.srv)
		return 0; /* recorded, served once ferryd runs with --iscsi */
	char serial[80];
	uint8_t naa[8];
	/* A pair's secondary only changes by replication: clients read it. */
	e->secondary_ro = !e->snap[0] && (daemon_volume_is_secondary(e->vol) ||
	                                  daemon_volume_fenced(e->vol));
	snprintf(serial, sizeof(serial), "%.32s%s%.40s", vi.uuid, e->snap[0] ? "@" : "", e->snap);
	make_naa(vi.uuid, e->snap, naa);
	struct scsi_lu_params p = {
		.vol = e->v,
		.snap = e->snap[0] ? e->snap : NULL,
		.read_only = e->ro || e->secondary_ro,
		.serial = serial,
		.naa = naa,
	};
	r = scsi_lu_create(&p, &e->lu);
	if (r < 0) {
		snprintf(err, errlen, "cannot create the SCSI unit for '%s': %s", e->vol, strerror(-r));
		e->lu = NULL;
		goto fail;
	}
	struct export *t = find_target(e->iqn);
	bool new_target = !t || t == e;
	if (new_target) {
		struct iscsi_chap ch = { e->chap_user, e->chap_secret };
		struct iscsi_chap mu = { e->mut_user, e->mut_secret };
		r = iscsi_target_add(g.srv, e->iqn, e->chap ? &ch : NULL, e->mutual ? &mu : NULL);
		if (r < 0) {
			snprintf(err, errlen, "cannot create target %.223s: %.200s", e->iqn,
			         r == -EINVAL ? "bad name or CHAP credentials (secrets are 12 to 255 "
			                        "bytes, the mutual one different)"
			                      : strerror(-r));
			goto fail_lu;
		}
	}
	r = iscsi_lun_add(g.srv, e->iqn, e->lun, e->lu);
	if (r < 0) {
		snprintf(err, errlen, r == -EEXIST ? "LUN %" PRIu64 " of %s is taken"
		                                   : "cannot add LUN %" PRIu64 " to %s",
		         e->lun, e->iqn);
		if (new_target)
			iscsi_target_remove(g.srv, e->iqn);
		goto fail_lu;
	}
	return 0;
fail_lu:
	scsi_lu_destroy(e->lu);
	e->lu = NULL;
fail:
	vol_close(e->v);
	e->v = NULL;
	return r < 0 ? r : -EINVAL;
}

/* Undoes serve_export (waiting for the LUN's in-flight commands). */
static void unserve_export(struct export *e, bool last_of_target)
{
	if (g.srv && e->lu) {
		iscsi_lun_remove(g.srv, e->iqn, e->lun);
		if (last_of_target)
			iscsi_target_remove(g.srv, e->iqn);
	}
	if (e->lu)
		scsi_lu_destroy(e->lu);
	e->lu = NULL;
	if (e->v)
		vol_close(e->v);
	e->v = NULL;
}

static bool target_has_others(const struct export *e)
{
	for (struct export *o = g.list; o; o = o->next)
		if (o != e && !strcasecmp(o->iqn, e->iqn))
			return true;
	return false;
}

/* --discovery-chap-file: discovery sessions must authenticate. */
static int discovery_auth(const char *path)
{
	char err[600], *text = NULL, *chap, *mutual;
	char u[ISCSI_CHAP_SECRET_MAX + 1], sc[ISCSI_CHAP_SECRET_MAX + 1];
	char mu_u[ISCSI_CHAP_SECRET_MAX + 1], mu_s[ISCSI_CHAP_SECRET_MAX + 1];
	size_t len = 0;
	int r = secret_file_read(path, 64 * 1024, &text, &len, err, sizeof(err));
	if (r == 0 && chap_file_split(text, &chap, &mutual, err, sizeof(err)) < 0)
		r = -EINVAL;
	if (r == 0 && (split_cred(chap, u, sc) < 0 || (mutual && split_cred(mutual, mu_u, mu_s) < 0))) {
		snprintf(err, sizeof(err), "a line is not USER:SECRET");
		r = -EINVAL;
	}
	struct iscsi_chap ch = { u, sc }, mu = { mu_u, mu_s };
	bool mut = r == 0 && mutual;
	if (r == 0 && iscsi_chap_check(&ch, mut ? &mu : NULL, err, sizeof(err)) < 0)
		r = -EINVAL;
	if (r == 0)
		r = iscsi_discovery_auth(g.srv, &ch, mut ? &mu : NULL);
	if (text) {
		explicit_bzero(text, len);
		free(text);
	}
	explicit_bzero(sc, sizeof(sc));
	explicit_bzero(mu_s, sizeof(mu_s));
	if (r < 0)
		log_error("--discovery-chap-file %s: %s", path, err);
	else
		log_info("iscsi: discovery sessions must log in with CHAP%s", mut ? " (mutual)" : "");
	return r;
}

int export_service_start(struct daemon *d)
{
	pthread_mutex_lock(&g.lock);
	g.d = d;
	const char *hp = daemon_opt("iscsi");
	const char *dfile = daemon_opt("discovery-chap-file");
	if (dfile && !hp) {
		pthread_mutex_unlock(&g.lock);
		log_error("--discovery-chap-file needs --iscsi");
		return -EINVAL;
	}
	if (hp) {
		/* as many workers as the store keeps I/O in flight usefully,
		 * and at least two per core: page-cache I/O is CPU work, and a
		 * worker blocked in writeback or a flush must not idle a core */
		struct store_caps caps;
		store_get_caps(d->store, &caps);
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		unsigned workers = caps.io_depth;
		if (cpus > 0 && (unsigned long)cpus * 2 > workers)
			workers = (unsigned)MIN((unsigned long)cpus * 2, 64ul);
		int r = iscsi_server_create_workers(hp, workers, &g.srv);
		if (r < 0) {
			pthread_mutex_unlock(&g.lock);
			log_error("cannot serve iSCSI on %s: %s", hp, strerror(-r));
			return r;
		}
		if (dfile && (r = discovery_auth(dfile)) < 0) {
			iscsi_server_destroy(g.srv);
			g.srv = NULL;
			pthread_mutex_unlock(&g.lock);
			return r;
		}
	}
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%s", d->pool, EXPORTS_FILE);
	char *text = NULL;
	size_t len = 0;
	int r = read_file(path, EXPORTS_MAX_BYTES, &text, &len);
	if (r == -ENOENT) {
		pthread_mutex_unlock(&g.lock);
		return 0;
	}
	if (r < 0) {
		pthread_mutex_unlock(&g.lock);
		log_error("cannot read %s: %s", path, strerror(-r));
		return r;
	}
	struct export **tail = &g.list;
	int lineno = 0, n = 0;
	for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		lineno++;
		if (line[0] == '#' || !line[0])
			continue;
		struct export *e = malloc(sizeof(*e));
		if (!e)
			break;
		if (parse_line(line, e) < 0) {
			log_error("%s:%d: malformed export, ignored", path, lineno);
			free(e);
			continue;
		}
		char err[1024];
		/* A volume that went away stays listed (and unserved) rather than
		 * silently losing its export. */
		if (serve_export(e, err, sizeof(err)) < 0)
			log_error("export %s%s%s not served: %s", e->vol, e->snap[0] ? "@" : "", e->snap,
			          err);
		else if (g.srv)
			log_info("exporting %s%s%s as %s LUN %" PRIu64 "%s", e->vol, e->snap[0] ? "@" : "",
			         e->snap, e->iqn, e->lun, e->ro ? " (read-only)" : "");
		*tail = e;
		tail = &e->next;
		n++;
	}
	free(text);
	/* A restart that forgot --iscsi would otherwise serve nothing, silently. */
	if (!g.srv && n)
		log_warn("pool %s has %d export%s but ferryd has no iSCSI listener (--iscsi "
		         "HOST:PORT): not served", d->pool, n, n == 1 ? "" : "s");
	pthread_mutex_unlock(&g.lock);
	return 0;
}

void export_service_stop(struct daemon *d)
{
	(void)d;
	pthread_mutex_lock(&g.lock);
	/* the server first: it drains the workers before LUs go away */
	if (g.srv)
		iscsi_server_destroy(g.srv);
	g.srv = NULL;
	while (g.list) {
		struct export *e = g.list;
		g.list = e->next;
		unserve_export(e, false);
		free(e);
	}
	pthread_mutex_unlock(&g.lock);
}

bool export_volume_in_use(const char *vol, const char *snap)
{
	bool used = false;
	pthread_mutex_lock(&g.lock);
	for (struct export *e = g.list; e && !used; e = e->next)
		used = !strcmp(e->vol, vol) && (!snap || !strcmp(e->snap, snap));
	pthread_mutex_unlock(&g.lock);
	return used;
}

/* ---- logged-in initiators ------------------------------------------------ */
struct srow {
	const struct export *e;
	struct iscsi_session_info s;
};

/* The sessions on the served exports of vol (NULL: every volume) and snap
 * (NULL: the head and every snapshot).  g.lock held; *rows is malloc'd. */
static int collect_sessions(const char *vol, const char *snap, struct srow **rows, size_t *n)
{
	*rows = NULL;
	*n = 0;
	if (!g.srv)
		return 0;
	size_t cap = 0;
	for (struct export *e = g.list; e; e = e->next) {
		if (!e->lu || (vol && strcmp(e->vol, vol)) || (snap && strcmp(e->snap, snap)))
			continue;
		struct iscsi_session_info *v;
		size_t k;
		int rc = iscsi_sessions(g.srv, e->iqn, &v, &k);
		if (rc < 0) {
			free(*rows);
			*rows = NULL;
			*n = 0;
			return rc;
		}
		if (*n + k > cap) {
			cap = 2 * (*n + k);
			struct srow *nr = realloc(*rows, cap * sizeof(**rows));
			if (!nr) {
				free(v);
				free(*rows);
				*rows = NULL;
				*n = 0;
				return -ENOMEM;
			}
			*rows = nr;
		}
		for (size_t i = 0; i < k; i++)
			(*rows)[(*n)++] = (struct srow){ e, v[i] };
		free(v);
	}
	return 0;
}

/* "INITIATOR (ADDRESS), ..." of the rows, at most 8 named. */
static void name_initiators(const struct srow *rows, size_t n, struct sbuf *b)
{
	for (size_t i = 0; i < n && i < 8; i++)
		sbuf_printf(b, "%s%s (%s)", i ? ", " : "", rows[i].s.initiator, rows[i].s.address);
	if (n > 8)
		sbuf_printf(b, " and %zu more", n - 8);
}

void export_warn_demote(struct dreq *r, const char *vol)
{
	if (!daemon_repl_needs(vol, NULL))
		return; /* no pair: demote fails and says so */
	pthread_mutex_lock(&g.lock);
	struct srow *rows;
	size_t n;
	int rc = collect_sessions(vol, "", &rows, &n);
	pthread_mutex_unlock(&g.lock);
	if (rc < 0 || !n) {
		free(rows);
		return;
	}
	struct sbuf b;
	sbuf_init(&b);
	name_initiators(rows, n, &b);
	dreq_warn(r, "%zu initiator session%s logged in to %s (%s LUN %" PRIu64 "%s): %s; demoting "
	          "makes the volume read-only, their writes will fail", n, n == 1 ? " is" : "s are",
	          vol, rows[0].e->iqn, rows[0].e->lun, n > 1 ? "..." : "", b.p ? b.p : "");
	sbuf_free(&b);
	free(rows);
}

static void fmt_time(uint64_t t, char *buf, size_t cap)
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (!gmtime_r(&tt, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, cap, "%llu", (unsigned long long)t);
}

static int export_sessions(struct dreq *r)
{
	const struct ctl_val *name = ctl_pos(r->cmd, "NAME");
	bool json = ctl_flag(r->cmd, "json")->set;
	pthread_mutex_lock(&g.lock);
	if (name->set && !find(name->vol, name->snap)) {
		pthread_mutex_unlock(&g.lock);
		return dreq_fail(r, "%s%s%s is not exported", name->vol, name->snap[0] ? "@" : "",
		                 name->snap);
	}
	struct srow *rows;
	size_t n;
	int rc = collect_sessions(name->set ? name->vol : NULL, name->set ? name->snap : NULL, &rows,
	                          &n);
	pthread_mutex_unlock(&g.lock);
	if (rc < 0)
		return dreq_fail(r, "cannot list the sessions: %s", strerror(-rc));
	struct sbuf b;
	sbuf_init(&b);
	if (json) {
		struct jw w;
		jw_init(&w, &b);
		jw_arr_begin(&w);
		for (size_t i = 0; i < n; i++) {
			const struct srow *x = &rows[i];
			jw_obj_begin(&w);
			jw_key(&w, "initiator");
			jw_str(&w, x->s.initiator);
			jw_key(&w, "isid");
			jw_str(&w, x->s.isid);
			jw_key(&w, "address");
			jw_str(&w, x->s.address);
			jw_key(&w, "target");
			jw_str(&w, x->s.target);
			jw_key(&w, "lun");
			jw_u64(&w, x->e->lun);
			jw_key(&w, "volume");
			jw_str(&w, x->e->vol);
			jw_key(&w, "snapshot");
			if (x->e->snap[0])
				jw_str(&w, x->e->snap);
			else
				jw_null(&w);
			jw_key(&w, "login_time");
			jw_u64(&w, x->s.login_time);
			jw_obj_end(&w);
		}
		jw_arr_end(&w);
		sbuf_puts(&b, "\n");
	} else {
		sbuf_printf(&b, "%-44s %-21s %-40s %4s %-20s %s\n", "INITIATOR", "ADDRESS", "TARGET",
		            "LUN", "EXPORT", "LOGIN");
		for (size_t i = 0; i < n; i++) {
			const struct srow *x = &rows[i];
			char ex[2 * STORE_NAME_MAX + 2], when[32];
			snprintf(ex, sizeof(ex), "%s%s%s", x->e->vol, x->e->snap[0] ? "@" : "",
			         x->e->snap);
			fmt_time(x->s.login_time, when, sizeof(when));
			sbuf_printf(&b, "%-44s %-21s %-40s %4" PRIu64 " %-20s %s\n", x->s.initiator,
			            x->s.address, x->s.target, x->e->lun, ex, when);
		}
	}
	free(rows);
	return dreq_out_sbuf(r, &b);
}

/* ---- commands ----------------------------------------------------------- */
static int export_add(struct dreq *r)
{
	const struct ctl_val *name = ctl_pos(r->cmd, "VOLUME[@SNAP]");
	const struct ctl_val *iqn = ctl_flag(r->cmd, "iqn"), *lun = ctl_flag(r->cmd, "lun");
	const struct ctl_val *chap = ctl_flag(r->cmd, "chap");
	const struct ctl_val *mutual = ctl_flag(r->cmd, "mutual-chap");
	if (ctl_flag(r->cmd, "chap-file")->set)
		return dreq_usage(r, "--chap-file is read by the ferry command, which sends the "
		                     "credentials; this ferryd got the file name instead");
	struct export *e = calloc(1, sizeof(*e));
	if (!e)
		return dreq_fail(r, "out of memory");
	snprintf(e->vol, sizeof(e->vol), "%s", name->vol);
	snprintf(e->snap, sizeof(e->snap), "%s", name->snap);
	e->ro = ctl_flag(r->cmd, "read-only")->set || e->snap[0];
	e->lun = lun->set ? lun->u64 : 0;
	if (e->lun > ISCSI_MAX_LUN) {
		free(e);
		return dreq_usage(r, "--lun must be at most %d", ISCSI_MAX_LUN);
	}
	if (iqn->set) {
		/* checked here, the way the iSCSI target will check it, so that an
		 * export recorded without --iscsi is served when it is given */
		if (strlen(iqn->str) > ISCSI_NAME_MAX) {
			free(e);
			return dreq_usage(r, "--iqn is longer than %d bytes", ISCSI_NAME_MAX);
		}
		if (!iscsi_name_valid(iqn->str)) {
			free(e);
			return dreq_usage(r, "bad --iqn '%s': an iSCSI name is iqn.YYYY-MM.reversed.domain"
			                     "[:name], eui. and 16 hex digits, or naa. and 16 or 32, of "
			                     "a-z 0-9 '-' '.' ':'", iqn->str);
		}
		snprintf(e->iqn, sizeof(e->iqn), "%s", iqn->str);
	} else if (e->snap[0]) {
		snprintf(e->iqn, sizeof(e->iqn), EXPORT_IQN_PREFIX "%s.%s", e->vol, e->snap);
	} else {
		snprintf(e->iqn, sizeof(e->iqn), EXPORT_IQN_PREFIX "%s", e->vol);
	}
	if (chap->set && split_cred(chap->str, e->chap_user, e->chap_secret) < 0) {
		free(e);
		return dreq_usage(r, "--chap wants USER:SECRET");
	}
	e->chap = chap->set;
	if (mutual->set && split_cred(mutual->str, e->mut_user, e->mut_secret) < 0) {
		free(e);
		return dreq_usage(r, "--mutual-chap wants USER:SECRET");
	}
	e->mutual = mutual->set;
	if (e->mutual && !e->chap) {
		free(e);
		return dreq_usage(r, "--mutual-chap needs --chap too");
	}
	if (!iscsi_name_valid(e->iqn)) { /* a default name: cannot happen, names are tame */
		free(e);
		return dreq_fail(r, "cannot derive a valid target name from '%s'", e->vol);
	}
	struct iscsi_chap ch = { e->chap_user, e->chap_secret };
	struct iscsi_chap mu = { e->mut_user, e->mut_secret };
	char why[160];
	if (iscsi_chap_check(e->chap ? &ch : NULL, e->mutual ? &mu : NULL, why, sizeof(why)) < 0) {
		explicit_bzero(e, sizeof(*e));
		free(e);
		return dreq_usage(r, "%s", why);
	}
	pthread_mutex_lock(&g.lock);
	int st = 0;
	char err[1024];
	struct export *t = find_target(e->iqn);
	if (find(e->vol, e->snap)) {
		st = dreq_fail(r, "%s%s%s is already exported", e->vol, e->snap[0] ? "@" : "", e->snap);
		goto out;
	}
	if (t) {
		/* another LUN of an existing target: same CHAP settings */
		if (!chap->set && !mutual->set) {
			e->chap = t->chap;
			e->mutual = t->mutual;
			memcpy(e->chap_user, t->chap_user, sizeof(e->chap_user));
			memcpy(e->chap_secret, t->chap_secret, sizeof(e->chap_secret));
			memcpy(e->mut_user, t->mut_user, sizeof(e->mut_user));
			memcpy(e->mut_secret, t->mut_secret, sizeof(e->mut_secret));
		} else if (e->chap != t->chap || e->mutual != t->mutual ||
		           strcmp(e->chap_user, t->chap_user) || strcmp(e->chap_secret, t->chap_secret) ||
		           strcmp(e->mut_user, t->mut_user) || strcmp(e->mut_secret, t->mut_secret)) {
			st = dreq_fail(r, "target %s already exists with other CHAP settings", e->iqn);
			goto out;
		}
		for (struct export *o = g.list; o; o = o->next)
			if (!strcasecmp(o->iqn, e->iqn) && o->lun == e->lun) {
				st = dreq_fail(r, "LUN %" PRIu64 " of %s is taken by %s%s%s", e->lun, e->iqn,
				               o->vol, o->snap[0] ? "@" : "", o->snap);
				goto out;
			}
	}
	if (serve_export(e, err, sizeof(err)) < 0) {
		st = dreq_fail(r, "%s", err);
		goto out;
	}
	e->next = NULL;
	struct export **pp = &g.list;
	while (*pp)
		pp = &(*pp)->next;
	*pp = e;
	if (save_locked() < 0) {
		*pp = NULL;
		unserve_export(e, !t);
		st = dreq_fail(r, "cannot record the export in %s/%s", r->d->pool, EXPORTS_FILE);
		goto out;
	}
	log_info("exported %s%s%s as %s LUN %" PRIu64 "%s%s", e->vol, e->snap[0] ? "@" : "", e->snap,
	         e->iqn, e->lun, e->ro || e->secondary_ro ? " (read-only)" : "",
	         g.srv ? "" : " (not served: no --iscsi)");
	dreq_printf(r, "%s LUN %" PRIu64 "%s%s\n", e->iqn, e->lun,
	            e->secondary_ro ? " (read-only: the volume is a pair's secondary)" : "",
	            g.srv ? "" : " (recorded; ferryd serves it when started with --iscsi)");
	e = NULL;
out:
	pthread_mutex_unlock(&g.lock);
	free(e);
	return st;
}

static int export_rm(struct dreq *r)
{
	const struct ctl_val *name = ctl_pos(r->cmd, "VOLUME[@SNAP]");
	pthread_mutex_lock(&g.lock);
	struct export **pp = &g.list;
	while (*pp && (strcmp((*pp)->vol, name->vol) || strcmp((*pp)->snap, name->snap)))
		pp = &(*pp)->next;
	struct export *e = *pp;
	if (!e) {
		pthread_mutex_unlock(&g.lock);
		return dreq_fail(r, "%s%s%s is not exported", name->vol, name->snap[0] ? "@" : "",
		                 name->snap);
	}
	/* who is logged in: warned about, and the removal still goes on */
	struct srow *rows;
	size_t nrows;
	if (collect_sessions(e->vol, e->snap, &rows, &nrows) < 0)
		nrows = 0;
	bool last = !target_has_others(e);
	*pp = e->next;
	if (save_locked() < 0) {
		e->next = *pp;
		*pp = e;
		pthread_mutex_unlock(&g.lock);
		free(rows);
		return dreq_fail(r, "cannot update %s/%s", r->d->pool, EXPORTS_FILE);
	}
	if (nrows) {
		struct sbuf b;
		sbuf_init(&b);
		name_initiators(rows, nrows, &b);
		if (last)
			dreq_warn(r, "closing %zu session%s logged in to %s: %s", nrows,
			          nrows == 1 ? "" : "s", e->iqn, b.p ? b.p : "");
		else
			dreq_warn(r, "%zu session%s logged in to %s lose%s LUN %" PRIu64 ": %s", nrows,
			          nrows == 1 ? "" : "s", e->iqn, nrows == 1 ? "s" : "", e->lun,
			          b.p ? b.p : "");
		sbuf_free(&b);
	}
	free(rows);
	unserve_export(e, last);
	pthread_mutex_unlock(&g.lock);
	log_info("unexported %s%s%s (%s LUN %" PRIu64 ")", e->vol, e->snap[0] ? "@" : "", e->snap,
	         e->iqn, e->lun);
	free(e);
	return 0;
}

static int export_list(struct dreq *r)
{
	bool json = ctl_flag(r->cmd, "json")->set;
	struct sbuf b;
	sbuf_init(&b);
	pthread_mutex_lock(&g.lock);
	if (json) {
		struct jw w;
		jw_init(&w, &b);
		jw_arr_begin(&w);
		for (struct export *e = g.list; e; e = e->next) {
			jw_obj_begin(&w);
			jw_key(&w, "volume");
			jw_str(&w, e->vol);
			jw_key(&w, "snapshot");
			if (e->snap[0])
				jw_str(&w, e->snap);
			else
				jw_null(&w);
			jw_key(&w, "iqn");
			jw_str(&w, e->iqn);
			jw_key(&w, "lun");
			jw_u64(&w, e->lun);
			jw_key(&w, "read_only");
			jw_bool(&w, e->ro || e->secondary_ro);
			jw_key(&w, "chap");
			jw_bool(&w, e->chap);
			jw_key(&w, "mutual_chap");
			jw_bool(&w, e->mutual);
			jw_key(&w, "served");
			jw_bool(&w, e->lu != NULL);
			jw_obj_end(&w);
		}
		jw_arr_end(&w);
		sbuf_puts(&b, "\n");
	} else {
		sbuf_printf(&b, "%-24s %-44s %5s %-3s %-6s %s\n", "VOLUME", "TARGET", "LUN", "RO", "AUTH",
		            "SERVED");
		for (struct export *e = g.list; e; e = e->next) {
			char n[2 * STORE_NAME_MAX + 2];
			snprintf(n, sizeof(n), "%s%s%s", e->vol, e->snap[0] ? "@" : "", e->snap);
			sbuf_printf(&b, "%-24s %-44s %5" PRIu64 " %-3s %-6s %s\n", n, e->iqn, e->lun,
			            e->ro || e->secondary_ro ? "yes" : "no", e->mutual ? "mutual" : e->chap ? "chap" : "none",
			            e->lu ? "yes" : "no");
		}
	}
	pthread_mutex_unlock(&g.lock);
	int st = 0;
	if (b.err)
		st = dreq_fail(r, "out of memory");
	else if (dreq_out(r, b.p, b.len) < 0)
		st = 1;
	sbuf_free(&b);
	return st;
}

static const struct dgroup_cmd export_cmds[] = {
	{"add", export_add},
	{"rm", export_rm},
	{"list", export_list},
	{"sessions", export_sessions},
	{NULL, NULL},
};

const struct dgroup dgroup_export = {"export", export_cmds};

void export_each(void (*fn)(void *ctx, const struct export_view *e), void *ctx)
{
	pthread_mutex_lock(&g.lock);
	for (struct export *e = g.list; e; e = e->next) {
		struct export_view x = {
			.vol = e->vol, .snap = e->snap, .iqn = e->iqn, .lun = e->lun,
			.read_only = e->ro || e->secondary_ro, .served = e->lu != NULL,
			.sessions = g.srv && e->lu ? iscsi_target_sessions(g.srv, e->iqn) : 0,
			.lu = e->lu,
		};
		fn(ctx, &x);
	}
	pthread_mutex_unlock(&g.lock);
}

void export_iscsi_addr(char *buf, size_t len)
{
	pthread_mutex_lock(&g.lock);
	const char *hp = daemon_opt("iscsi");
	char host[256], port[16];
	if (!g.srv || !hp || split_hostport(hp, host, sizeof(host), port, sizeof(port)) < 0)
		snprintf(buf, len, "%s", g.srv && hp ? hp : "");
	else
		snprintf(buf, len, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
		         iscsi_server_port(g.srv));
	pthread_mutex_unlock(&g.lock);
}

void export_refresh_read_only(const char *vol)
{
	pthread_mutex_lock(&g.lock);
	for (struct export *e = g.list; e; e = e->next) {
		if (e->snap[0] || strcmp(e->vol, vol))
			continue;
		e->secondary_ro = daemon_volume_is_secondary(e->vol) || daemon_volume_fenced(e->vol);
		if (e->lu)
			scsi_lu_set_read_only(e->lu, e->ro || e->secondary_ro);
		log_info("export %s LUN %" PRIu64 ": %s", e->iqn, e->lun,
		         e->ro || e->secondary_ro ? "read-only" : "writable");
	}
	pthread_mutex_unlock(&g.lock);
}
