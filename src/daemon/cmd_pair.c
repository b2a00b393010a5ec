/* The "pair" command group and the replication service (src/repl).
 *
 * The service owns the daemon's one struct repl: started after the store
 * opens (options --listen HOST:PORT, --secret-file FILE), stopped before it
 * closes.  The handlers turn `ferry pair ...` into repl_pair_*() calls. */
#include "daemon/daemon.h"

#include <errno.h>
#include <inttypes.h>
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
	struct repl_opts o = { .on_ro_change = ro_changed,
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

/* Sends the verb's output; st is the exit status to return. */
static int finish(struct dreq *r, struct sbuf *b, int rc, int fail_status)
{
	int st = 0;
	if (b->err)
		st = dreq_fail(r, "out of memory");
	else if (rc < 0) {
		/* The text is the reason, one line. */
		if (b->len && b->p[b->len - 1] == '\n')
			b->p[--b->len] = '\0';
		st = dreq_fail(r, "%s", b->len ? b->p : strerror(-rc));
		if (fail_status == 2)
			st = 2;
	} else if (b->len && dreq_out(r, b->p, b->len) < 0)
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

static int pair_create(struct dreq *r)
{
	struct repl_pair_opts o = { 0 };
	o.peer = ctl_flag(r->cmd, "peer")->str;
	char host[256], port[16];
	if (split_hostport(o.peer, host, sizeof(host), port, sizeof(port)) < 0 || !host[0])
		return dreq_usage(r, "bad --peer '%s' (want HOST:PORT)", o.peer);
	const struct ctl_val *rn = ctl_flag(r->cmd, "remote-name");
	o.remote_name = rn->set ? rn->str : NULL;
	const struct ctl_val *pe = ctl_flag(r->cmd, "period");
	if (pe->set && pe->u64 < 1)
		return dreq_usage(r, "--period must be at least 1 second");
	o.period_s = pe->set ? pe->u64 : 60;
	const struct ctl_val *mi = ctl_flag(r->cmd, "max-inflight");
	if (mi->set && (mi->u64 < 1 || mi->u64 > 1024))
		return dreq_usage(r, "--max-inflight must be 1..1024");
	o.max_inflight = mi->set ? (uint32_t)mi->u64 : 0;
	if (!ready(r))
		return 1;
	o.bandwidth = ctl_flag(r->cmd, "bandwidth")->u64;
	const struct ctl_val *c = ctl_flag(r->cmd, "compress");
	o.compress = c->set && strcmp(c->str, "zstd") == 0;
	o.force = ctl_flag(r->cmd, "force")->set;
	struct sbuf b;
	sbuf_init(&b);
	int rc = repl_pair_create(g_repl, ctl_pos(r->cmd, "NAME")->str, &o, &b);
	return finish(r, &b, rc, 1);
}

static int pair_list(struct dreq *r)
{
	if (!ready(r))
		return 1;
	struct sbuf b;
	sbuf_init(&b);
	int rc = repl_pair_list(g_repl, ctl_flag(r->cmd, "json")->set, &b);
	return finish(r, &b, rc, 1);
}

static int pair_status(struct dreq *r)
{
	if (!ready(r))
		return 1;
	struct sbuf b;
	sbuf_init(&b);
	int rc = repl_pair_status(g_repl, ctl_pos(r->cmd, "NAME")->str,
	                          ctl_flag(r->cmd, "json")->set, &b);
	return finish(r, &b, rc, 1);
}

/* Waits for a cycle ticket in one-second slices, sending progress so the
 * CLI's deadline holds and a vanished CLI stops the wait. */
static int wait_ticket(struct dreq *r, const char *name, uint64_t ticket, const char *label,
                       struct sbuf *b)
{
	int rc;
	do {
		uint64_t done = 0, total = 0;
		rc = repl_pair_sync_wait(g_repl, name, ticket, 1000, &done, &total, b);
		if (rc == -EINPROGRESS) {
			dreq_progress(r, done, total, label);
			if (dreq_aborted(r)) {
				sbuf_free(b);
				return 1;
			}
		}
	} while (rc == -EINPROGRESS);
	return finish(r, b, rc, 1);
}

static int pair_sync(struct dreq *r)
{
	if (!ready(r))
		return 1;
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	struct sbuf b;
	sbuf_init(&b);
	uint64_t ticket;
	int rc = repl_pair_sync_request(g_repl, name, &ticket, &b);
	if (rc < 0 || !ctl_flag(r->cmd, "wait")->set) {
		if (rc == 0)
			sbuf_printf(&b, "pair %s: cycle requested\n", name);
		return finish(r, &b, rc, 1);
	}
	return wait_ticket(r, name, ticket, "sync", &b);
}

/* The verbs that take only the pair's name and answer with text. */
static int name_verb(struct dreq *r, int (*fn)(struct repl *, const char *, struct sbuf *))
{
	if (!ready(r))
		return 1;
	struct sbuf b;
	sbuf_init(&b);
	int rc = fn(g_repl, ctl_pos(r->cmd, "NAME")->str, &b);
	return finish(r, &b, rc, 1);
}

static int pair_pause(struct dreq *r)
{
	return name_verb(r, repl_pair_pause);
}

static int pair_resume(struct dreq *r)
{
	return name_verb(r, repl_pair_resume);
}

static int pair_verify(struct dreq *r)
{
	if (!ready(r))
		return 1;
	struct sbuf b;
	sbuf_init(&b);
	bool equal = false;
	int rc = repl_pair_verify(g_repl, ctl_pos(r->cmd, "NAME")->str,
	                          ctl_flag(r->cmd, "json")->set, &equal, &b);
	int st = finish(r, &b, rc, 1);
	return st ? st : (equal ? 0 : 1);
}

static int pair_rm(struct dreq *r)
{
	return name_verb(r, repl_pair_rm);
}

static int pair_demote(struct dreq *r)
{
	return name_verb(r, repl_pair_demote);
}

static int pair_promote(struct dreq *r)
{
	if (!ready(r))
		return 1;
	struct sbuf b;
	sbuf_init(&b);
	int rc = repl_pair_promote(g_repl, ctl_pos(r->cmd, "NAME")->str,
	                           ctl_flag(r->cmd, "force")->set, &b);
	return finish(r, &b, rc, 1);
}

static int pair_resync(struct dreq *r)
{
	if (!ready(r))
		return 1;
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	struct sbuf b;
	sbuf_init(&b);
	uint64_t ticket;
	int rc = repl_pair_resync_start(g_repl, name, &ticket, &b);
	if (rc < 0)
		return finish(r, &b, rc, 1);
	return wait_ticket(r, name, ticket, "resync", &b);
}

const struct dgroup dgroup_pair = {
	"pair",
	(const struct dgroup_cmd[]){
		{"create", pair_create},
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
		{NULL, NULL},
	},
};
