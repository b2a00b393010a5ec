/* ferryd: owns one pool, answers the ferry CLI on POOL/ferryd.sock.
 *
 * Start-up order matters: the options (command line and --config file) are
 * checked, the pool lock is taken and the TCP addresses are tried before
 * forking, so that most start-up errors are told on the terminal that
 * started ferryd; the store is opened and every listener (services, control
 * socket) is up before the parent returns, or before READY=1 reaches
 * systemd (so that `ferryd --pool X && ferry --pool X ...` works).  A start
 * that fails removes whatever it created (start_undo). */
#include "daemon/daemon.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <malloc.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

/* ---- options ------------------------------------------------------------ */
static int check_level(const char *label, const char *v, char *err, size_t errlen)
{
	enum log_level l;
	if (log_parse_level(v, &l) < 0) {
		snprintf(err, errlen, "bad %s '%s' (error, warn, info or debug)", label, v);
		return 2;
	}
	return 0;
}

static int check_backend(const char *label, const char *v, char *err, size_t errlen)
{
	if (strcmp(v, "local") && strcmp(v, "rbd")) {
		snprintf(err, errlen, "bad %s '%s' (local or rbd)", label, v);
		return 2;
	}
	if (!store_backend_available(v)) {
		snprintf(err, errlen, "this ferryd was built without the %s backend "
		         "(librbd-dev was missing at build time)", v);
		return 2;
	}
	return 0;
}

static int check_max_transfers(const char *label, const char *v, char *err, size_t errlen)
{
	uint64_t n;
	if (parse_u64(v, &n) < 0 || n < 1 || n > 256) {
		snprintf(err, errlen, "bad %s '%s' (1..256)", label, v);
		return 2;
	}
	return 0;
}

/* The directory of a log file must exist: ferryd creates the file only. */
static int check_log_file(const char *label, const char *v, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", v);
	char *slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	struct stat st;
	if (slash && (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))) {
		snprintf(err, errlen, "%s %s: no directory %s", label, v, dir);
		return 1;
	}
	return 0;
}

static int check_secret_file(const char *label, const char *v, char *err, size_t errlen)
{
	(void)label;
	char *secret = NULL;
	size_t len = 0;
	if (daemon_secret_load(v, &secret, &len, err, errlen) < 0)
		return 1;
	memset(secret, 0, len);
	free(secret);
	return 0;
}

static int check_readable(const char *label, const char *v, char *err, size_t errlen)
{
	if (access(v, R_OK) < 0) {
		snprintf(err, errlen, "cannot read %s %s: %s", label, v, strerror(errno));
		return 1;
	}
	return 0;
}

static int check_tls_key(const char *label, const char *v, char *err, size_t errlen)
{
	int st = check_readable(label, v, err, errlen);
	if (st == 0 && daemon_key_mode_check(v, err, errlen) < 0)
		st = 1;
	return st;
}

static int check_group(const char *label, const char *v, char *err, size_t errlen)
{
	if (!getgrnam(v)) {
		snprintf(err, errlen, "%s %s: no such group", label, v);
		return 1;
	}
	return 0;
}

/* The daemon's options: one line each.  Each is also a key of the
 * configuration file (config.c), unless DOPT_CLI_ONLY. */
static struct dopt opts[] = {
	{"pool", "DIR", "the pool directory (created if missing); required", NULL, NULL},
	{"config", "FILE", "read options from this INI file (its keys are these options "
	                   "without --); options given here win", NULL, NULL},
	{"check-config", NULL, "check the options and the --config file, then exit (0 valid, "
	                       "1 not)", NULL, NULL},
	{"foreground", NULL, "do not daemonize (under systemd); log to stderr unless "
	                     "--log-file or --syslog", NULL, NULL},
	{"log-level", "LEVEL", "error, warn, info (default) or debug; re-read on SIGHUP",
	 check_level, NULL},
	{"log-file", "FILE", "log to FILE (default: DIR/ferryd.log when daemonized); reopened "
	                     "on SIGHUP", check_log_file, NULL},
	{"syslog", NULL, "log to syslog (facility daemon) instead of a file", NULL, NULL},
	{"iscsi", "HOST:PORT", "serve the exported volumes over iSCSI on this address", NULL, NULL},
	{"discovery-chap-file", "FILE", "iSCSI discovery needs CHAP: USER:SECRET (a 2nd line: mutual) from FILE, mode 0600", NULL, NULL},
	{"listen", "HOST:PORT", "accept replication peers here (needs --secret-file)", NULL, NULL},
	{"secret-file", "FILE", "shared secret authenticating replication peers (mode 0600 or "
	                        "stricter)", check_secret_file, NULL},
	{"plaintext", NULL, "replication link without TLS (the peer must use it too)", NULL, NULL},
	{"tls-cert", "FILE", "TLS certificate chain (PEM): certificate mode instead of TLS-PSK",
	 check_readable, NULL},
	{"tls-key", "FILE", "private key of --tls-cert (PEM, mode 0600 or stricter)", check_tls_key,
	 NULL},
	{"tls-ca", "FILE", "CA certificate(s) (PEM) that the peer's certificate must chain to",
	 check_readable, NULL},
	{"socket-group", "GROUP", "control socket mode 0660 with this group (default 0600)",
	 check_group, NULL},
	{"max-transfers", "N", "replication cycles transferring at once (default 4)",
	 check_max_transfers, NULL},
	{"metrics", "HOST:PORT", "serve Prometheus metrics at http://HOST:PORT/metrics", NULL, NULL},
	{"backend", "NAME", "where volumes live: local (default: DIR/volumes) or rbd (a Ceph pool)",
	 check_backend, NULL},
	{"rbd-pool", "NAME", "rbd: the RADOS pool holding the volumes' images (required with rbd)",
	 NULL, NULL},
	{"rbd-namespace", "NS", "rbd: the pool's RBD namespace (default: none)", NULL, NULL},
	{"ceph-conf", "FILE", "rbd: Ceph configuration (default: $CEPH_CONF, /etc/ceph/ceph.conf)",
	 check_readable, NULL},
	{"ceph-id", "ID", "rbd: Ceph client name without 'client.' (default: admin)", NULL, NULL},
	{"help", NULL, "show this help", NULL, NULL},
	{"version", NULL, "show the version", NULL, NULL},
};
/* Options that are no configuration file keys. */
static const char *const cli_only[] = {"config", "check-config", "help", "version", NULL};
/* Options whose new value in the configuration file applies on SIGHUP. */
static const char *const reloadable[] = {"log-level", "log-file", NULL};

static struct dopts g_opts = {.opt = opts, .n = ARRAY_SIZE(opts), .cli_only = cli_only};
_Static_assert(ARRAY_SIZE(opts) <= DOPT_MAX, "raise DOPT_MAX");

const char *daemon_opt(const char *name)
{
	struct dopt *o = dopt_find(&g_opts, name, strlen(name));
	return o ? o->value : NULL;
}

/* Checks between options.  0, or 1 (2: a usage error) after printing why. */
static int check_combos(struct dopts *s, const char *config)
{
	struct dopt *listen = dopt_find(s, "listen", 6), *sfile = dopt_find(s, "secret-file", 11);
	struct dopt *plain = dopt_find(s, "plaintext", 9), *sys = dopt_find(s, "syslog", 6);
	struct dopt *lfile = dopt_find(s, "log-file", 8);
	char w1[PATH_MAX + 96], w2[PATH_MAX + 96];
	if (listen->value && !sfile->value) {
		fprintf(stderr, "ferryd: %s needs --secret-file (secret-file in a configuration "
		                "file): peers must authenticate\n",
		        dopt_where(s, listen, config, w1, sizeof(w1)));
		return 1;
	}
	static const char *const tls[] = {"tls-cert", "tls-key", "tls-ca"};
	for (size_t i = 0; i < ARRAY_SIZE(tls); i++) {
		struct dopt *o = dopt_find(s, tls[i], strlen(tls[i]));
		if (plain->value && o->value) {
			fprintf(stderr, "ferryd: %s contradicts %s\n",
			        dopt_where(s, plain, config, w1, sizeof(w1)),
			        dopt_where(s, o, config, w2, sizeof(w2)));
			return 1;
		}
	}
	if (sys->value && lfile->value) {
		fprintf(stderr, "ferryd: %s contradicts %s (one log destination)\n",
		        dopt_where(s, sys, config, w1, sizeof(w1)),
		        dopt_where(s, lfile, config, w2, sizeof(w2)));
		return 1;
	}
	const char *be = dopt_find(s, "backend", 7)->value;
	bool rbd = be && !strcmp(be, "rbd");
	if (rbd && !dopt_find(s, "rbd-pool", 8)->value) {
		fprintf(stderr, "ferryd: backend rbd needs --rbd-pool NAME (rbd-pool in a "
		                "configuration file)\n");
		return 2;
	}
	static const char *const rbd_only[] = {"rbd-pool", "rbd-namespace", "ceph-conf", "ceph-id"};
	for (size_t i = 0; i < ARRAY_SIZE(rbd_only); i++) {
		struct dopt *o = dopt_find(s, rbd_only[i], strlen(rbd_only[i]));
		if (!rbd && o->value) {
			fprintf(stderr, "ferryd: %s needs --backend rbd (backend = rbd)\n",
			        dopt_where(s, o, config, w1, sizeof(w1)));
			return 2;
		}
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ferryd --pool DIR [options]\n"
	           "       ferryd --config FILE [options]\n"
	           "       ferryd --check-config --config FILE\n\n"
	           "ferryd owns one pool of volumes and answers the ferry CLI on the Unix\n"
	           "socket DIR/ferryd.sock (mode 0600, or 0660 with --socket-group).\n"
	           "Without --foreground it daemonizes, logs to DIR/ferryd.log and returns\n"
	           "once it is ready.  SIGTERM or SIGINT stop it cleanly; SIGHUP reopens the\n"
	           "log file and re-reads the log level (from --config FILE when given).\n"
	           "One ferryd per pool (lock: DIR/ferryd.lock).  The replication link is\n"
	           "TLS 1.3 keyed from the secret file unless --tls-cert/--tls-key/--tls-ca\n"
	           "give certificates, or --plaintext (on both sites) turns TLS off.\n"
	           "Exit status: 0 ok, 1 start-up failure, 2 usage error.\n\n"
	           "Options (in a --config file: KEY = VALUE, KEY = true for a flag):\n");
	for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
		char lhs[64];
		snprintf(lhs, sizeof(lhs), "--%s%s%s", opts[i].name, opts[i].meta ? " " : "",
		         opts[i].meta ? opts[i].meta : "");
		fprintf(f, "  %-20s %s\n", lhs, opts[i].help);
	}
}

/* ---- services ----------------------------------------------------------- */
struct dservice {
	const char *name;
	int (*start)(struct daemon *d); /* 0 or negative errno (logged by it) */
	void (*stop)(struct daemon *d);
};

/* Background services started after the store opens, stopped (in reverse
 * order) before it closes: one line each.  None yet. */
static const struct dservice services[] = {
	{"replication", repl_service_start, repl_service_stop},
	{"iscsi", export_service_start, export_service_stop},
	{"metrics", metrics_service_start, metrics_service_stop},
	{NULL, NULL, NULL},
};

/* ---- connections -------------------------------------------------------- */
struct dconn {
	struct daemon *d;
	int fd;
	pthread_t th;
	atomic_bool done;
	struct dconn *next;
};

#define MAX_CONNS 128

static struct dconn *g_conns;
static pthread_mutex_t g_conns_lock = PTHREAD_MUTEX_INITIALIZER;

static void *conn_main(void *arg)
{
	struct dconn *c = arg;
	dispatch_conn(c->d, c->fd);
	/* The peer sees EOF now; the fd itself is closed by the thread that
	 * joins this one, so that shutdown_conns() can never hit a reused fd. */
	shutdown(c->fd, SHUT_RDWR);
	atomic_store(&c->done, true);
	return NULL;
}

/* Joins the threads of finished connections; with all, every one (after
 * their sockets were shut down). */
static size_t reap_conns(bool all)
{
	size_t live = 0;
	pthread_mutex_lock(&g_conns_lock);
	struct dconn **pp = &g_conns;
	while (*pp) {
		struct dconn *c = *pp;
		if (all || atomic_load(&c->done)) {
			*pp = c->next;
			pthread_mutex_unlock(&g_conns_lock);
			pthread_join(c->th, NULL);
			close(c->fd);
			free(c);
			pthread_mutex_lock(&g_conns_lock);
			continue;
		}
		live++;
		pp = &c->next;
	}
	pthread_mutex_unlock(&g_conns_lock);
	return live;
}

static void refuse(int fd, const char *msg)
{
	ctl_send(fd, CTL_ERR, msg, (uint32_t)strlen(msg), 1000);
	uint8_t ex[4];
	ctl_exit_encode(ex, sizeof(ex), 1);
	ctl_send(fd, CTL_EXIT, ex, sizeof(ex), 1000);
	close(fd);
}

/* --socket-group: its members may use the socket too. */
static bool g_sock_group_set;
static gid_t g_sock_gid;

static bool peer_in_group(int fd, const struct ucred *cr)
{
	if (!g_sock_group_set)
		return false;
	if (cr->gid == g_sock_gid)
		return true;
	gid_t groups[256];
	socklen_t gl = sizeof(groups);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &gl) < 0)
		return false;
	for (size_t i = 0; i < gl / sizeof(gid_t); i++)
		if (groups[i] == g_sock_gid)
			return true;
	return false;
}

static void accept_one(struct daemon *d, int lfd)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			log_warn("accept: %s", strerror(errno));
		return;
	}
	struct ucred cr;
	socklen_t crl = sizeof(cr);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crl) < 0 ||
	    (cr.uid != 0 && cr.uid != geteuid() && !peer_in_group(fd, &cr))) {
		log_warn("refused control connection from uid %ld", crl ? (long)cr.uid : -1L);
		refuse(fd, "ferry: permission denied\n");
		return;
	}
	if (reap_conns(false) >= MAX_CONNS) {
		log_warn("refused control connection: %d already open", MAX_CONNS);
		refuse(fd, "ferry: ferryd is busy (too many connections)\n");
		return;
	}
	struct dconn *c = calloc(1, sizeof(*c));
	if (!c) {
		log_error("accept: out of memory");
		close(fd);
		return;
	}
	c->d = d;
	c->fd = fd;
	int e = pthread_create(&c->th, NULL, conn_main, c);
	if (e) {
		log_error("cannot start a connection thread: %s", strerror(e));
		close(fd);
		free(c);
		return;
	}
	pthread_mutex_lock(&g_conns_lock);
	c->next = g_conns;
	g_conns = c;
	pthread_mutex_unlock(&g_conns_lock);
}

static void shutdown_conns(void)
{
	pthread_mutex_lock(&g_conns_lock);
	for (struct dconn *c = g_conns; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	pthread_mutex_unlock(&g_conns_lock);
	reap_conns(true);
}

/* ---- start-up ----------------------------------------------------------- */
/* What goes wrong while starting is told where it was started: through a
 * pipe to the waiting parent (daemon mode), or on the original stderr
 * (foreground, when the log goes elsewhere).  Errors and warnings logged
 * until ferryd is ready are collected for that. */
static int g_ready_fd = -1;          /* daemon mode: the pipe to the parent */
static int g_term_fd = -1;           /* the stderr ferryd was started with */
static enum log_dest g_log_dest = LOG_TO_STDERR;
static struct sbuf g_start_msgs;     /* "E message\n" / "W message\n" */

static void start_capture(void *ctx, enum log_level level, const char *msg)
{
	(void)ctx;
	if (level <= LOG_WARN && g_start_msgs.len < 16384)
		sbuf_printf(&g_start_msgs, "%c %s\n", level == LOG_ERROR ? 'E' : 'W', msg);
}

static void startup_fail(const char *fmt, ...) PRINTF_LIKE(1, 2);
static void startup_fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("%s", msg);
}

/* Prints the collected lines as "ferryd: [warning: ]message" on fd. */
static void print_start_msgs(int fd, const char *text)
{
	for (const char *l = text; *l;) {
		const char *nl = strchr(l, '\n');
		size_t len = nl ? (size_t)(nl - l) : strlen(l);
		if (len >= 2 && (l[0] == 'E' || l[0] == 'W'))
			dprintf(fd, "ferryd: %s%.*s\n", l[0] == 'W' ? "warning: " : "", (int)len - 2, l + 2);
		l += len + (nl ? 1 : 0);
	}
}

/* Start-up is over (ok: ferryd is ready).  Tells the parent, or prints
 * what the terminal has not seen yet. */
static void start_report(bool ok)
{
	log_set_hook(NULL, NULL);
	const char *text = g_start_msgs.p ? g_start_msgs.p : "";
	if (g_ready_fd >= 0) {
		if (ok)
			sbuf_puts(&g_start_msgs, "R\n");
		text = g_start_msgs.p ? g_start_msgs.p : "";
		if (write_full(g_ready_fd, text, strlen(text)) < 0)
			log_warn("cannot tell the parent how the start-up went");
		close(g_ready_fd);
		g_ready_fd = -1;
	} else if ((g_log_dest == LOG_TO_FILE || g_log_dest == LOG_TO_SYSLOG) && g_term_fd >= 0) {
		print_start_msgs(g_term_fd, text);
	}
	sbuf_free(&g_start_msgs);
}

/* A failed start leaves nothing behind: the pool directory (and its
 * parents) when ferryd created them, otherwise every entry of the pool
 * that was not there before, and a log file outside the pool that it
 * created. */
static struct {
	bool armed;
	char pool[PATH_MAX];
	char top[PATH_MAX];   /* first component of the pool path that was missing */
	char **had;           /* entries of an existing pool */
	size_t nhad;
	char log[PATH_MAX];   /* a log file outside the pool created by this start */
} g_undo;

static void start_undo_disarm(void)
{
	for (size_t i = 0; i < g_undo.nhad; i++)
		free(g_undo.had[i]);
	free(g_undo.had);
	g_undo.had = NULL;
	g_undo.nhad = 0;
	g_undo.armed = false;
}

static int start_undo_prepare(const char *pool)
{
	snprintf(g_undo.pool, sizeof(g_undo.pool), "%s", pool);
	g_undo.top[0] = g_undo.log[0] = '\0';
	struct stat st;
	if (stat(pool, &st) < 0) {
		char p[PATH_MAX];
		snprintf(p, sizeof(p), "%s", pool);
		for (char *s = p + 1;; s++) {
			if (*s != '/' && *s)
				continue;
			char c = *s;
			*s = '\0';
			if (stat(p, &st) < 0 && errno == ENOENT) {
				snprintf(g_undo.top, sizeof(g_undo.top), "%s", p);
				break;
			}
			*s = c;
			if (!c)
				break;
		}
	} else if (S_ISDIR(st.st_mode)) {
		DIR *dir = opendir(pool);
		struct dirent *de;
		while (dir && (de = readdir(dir))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			char **n = realloc(g_undo.had, (g_undo.nhad + 1) * sizeof(*n));
			if (!n || !(n[g_undo.nhad] = strdup(de->d_name))) {
				if (n)
					g_undo.had = n;
				closedir(dir);
				fprintf(stderr, "ferryd: out of memory\n");
				return -ENOMEM;
			}
			g_undo.had = n;
			g_undo.nhad++;
		}
		if (!dir) {
			fprintf(stderr, "ferryd: cannot read pool directory %s: %s\n", pool,
			        strerror(errno));
			return -errno;
		}
		closedir(dir);
	}
	g_undo.armed = true;
	return 0;
}

static void start_undo(void)
{
	if (!g_undo.armed)
		return;
	if (g_undo.log[0])
		unlink(g_undo.log);
	if (g_undo.top[0]) {
		rm_rf(g_undo.top);
	} else {
		DIR *dir = opendir(g_undo.pool);
		struct dirent *de;
		while (dir && (de = readdir(dir))) {
			bool had = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");
			for (size_t i = 0; i < g_undo.nhad && !had; i++)
				had = !strcmp(g_undo.had[i], de->d_name);
			char p[PATH_MAX + 256];
			if (!had && (size_t)snprintf(p, sizeof(p), "%s/%s", g_undo.pool, de->d_name) <
			                sizeof(p))
				rm_rf(p);
		}
		if (dir)
			closedir(dir);
	}
	start_undo_disarm();
}

/* Takes POOL/ferryd.lock.  0 with *fd, or 1 after printing why not. */
static int take_lock(const char *pool, int *fd)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof(path), "%s/ferryd.lock", pool);
	int lfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lfd < 0) {
		fprintf(stderr, "ferryd: cannot open %s: %s\n", path, strerror(errno));
		return 1;
	}
	if (flock(lfd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		char pid[32] = "";
		ssize_t n = pread(lfd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		if (e == EWOULDBLOCK)
			fprintf(stderr, "ferryd: pool %s is already served by ferryd pid %s (lock %s)\n",
			        pool, *pid ? pid : "?", path);
		else
			fprintf(stderr, "ferryd: cannot lock %s: %s\n", path, strerror(e));
		close(lfd);
		return 1;
	}
	*fd = lfd;
	return 0;
}

static int write_pid(int lfd)
{
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(lfd, 0) < 0 || pwrite_full(lfd, pid, (size_t)n, 0) < 0)
		return -errno;
	return 0;
}

/* Binds every HOST:PORT option once, so that an address in use or not
 * local is told before forking.  (The services bind again for real; a
 * port taken in between fails there, told all the same.)  0, or 1 after
 * printing why. */
static int try_addresses(const char *config)
{
	for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
		const struct dopt *o = &opts[i];
		char host[256], port[16], where[PATH_MAX + 96];
		if (!o->value || !o->meta || strcmp(o->meta, "HOST:PORT") ||
		    split_hostport(o->value, host, sizeof(host), port, sizeof(port)) < 0)
			continue;
		struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
		                          .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
		struct addrinfo *res;
		int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
		if (rc) {
			fprintf(stderr, "ferryd: %s %s: %s\n",
			        dopt_where(&g_opts, o, config, where, sizeof(where)),
			        o->value, gai_strerror(rc));
			return 1;
		}
		int err = EADDRNOTAVAIL;
		bool ok = false;
		for (struct addrinfo *ai = res; ai && !ok; ai = ai->ai_next) {
			int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
			if (fd < 0) {
				err = errno;
				continue;
			}
			int one = 1;
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
			if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0)
				ok = true;
			else
				err = errno;
			close(fd);
		}
		freeaddrinfo(res);
		if (!ok) {
			fprintf(stderr, "ferryd: cannot listen on %s (%s): %s\n", o->value,
			        dopt_where(&g_opts, o, config, where, sizeof(where)), strerror(err));
			return 1;
		}
	}
	return 0;
}

static int listen_sock(struct daemon *d)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		startup_fail("socket: %s", strerror(errno));
		return -1;
	}
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", d->sock_path);
	/* We hold the pool lock, so a socket file left here is stale. */
	unlink(d->sock_path);
	mode_t old = umask(0177);
	int r = bind(fd, (struct sockaddr *)&a, sizeof(a));
	umask(old);
	if (r < 0 || chmod(d->sock_path, 0600) < 0) {
		startup_fail("cannot listen on %s: %s", d->sock_path, strerror(errno));
		close(fd);
		return -1;
	}
	/* Whoever can connect can destroy volumes: root (or the owner) only,
	 * or the one group the administrator named. */
	const char *group = daemon_opt("socket-group");
	if (group) {
		struct group *g = getgrnam(group);
		if (!g) {
			startup_fail("--socket-group %s: no such group", group);
			close(fd);
			return -1;
		}
		g_sock_group_set = true;
		g_sock_gid = g->gr_gid;
		if (chown(d->sock_path, (uid_t)-1, g->gr_gid) < 0 ||
		    chmod(d->sock_path, 0660) < 0) {
			startup_fail("--socket-group %s: cannot give %s to it: %s", group,
			             d->sock_path, strerror(errno));
			close(fd);
			return -1;
		}
	}
	if (listen(fd, 64) < 0) {
		startup_fail("cannot listen on %s: %s", d->sock_path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- logging -------------------------------------------------------------- */
/* The log file: --log-file, else POOL/ferryd.log when daemonized; NULL for
 * syslog or stderr. */
static const char *log_path(const struct daemon *d, char *buf, size_t len)
{
	if (daemon_opt("syslog"))
		return NULL;
	if (daemon_opt("log-file"))
		return daemon_opt("log-file");
	if (daemon_opt("foreground"))
		return NULL;
	snprintf(buf, len, "%s/ferryd.log", d->pool);
	return buf;
}

/* stderr is systemd-journald's stream (sd-daemon(3): $JOURNAL_STREAM). */
static bool stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	return js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
	       (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* Sets the log destination at start-up.  0 or -1 (told). */
static int log_setup(const struct daemon *d)
{
	char buf[PATH_MAX + 16];
	const char *path = log_path(d, buf, sizeof(buf));
	int rc = 0;
	enum log_dest dest;
	if (daemon_opt("syslog")) {
		dest = LOG_TO_SYSLOG;
	} else if (path) {
		struct stat st;
		size_t pl = strlen(d->pool);
		if (stat(path, &st) < 0 && (strncmp(path, d->pool, pl) || path[pl] != '/'))
			snprintf(g_undo.log, sizeof(g_undo.log), "%s", path);
		dest = LOG_TO_FILE;
	} else {
		dest = stderr_is_journal() ? LOG_TO_JOURNAL : LOG_TO_STDERR;
	}
	rc = log_set_dest(dest, path);
	if (rc < 0) {
		g_undo.log[0] = '\0';
		startup_fail("cannot open the log file %s: %s", path, strerror(-rc));
		return -1;
	}
	g_log_dest = dest;
	return 0;
}

/* ---- SIGHUP --------------------------------------------------------------- */
static void apply_log_level(void)
{
	enum log_level l = LOG_INFO;
	const char *lv = daemon_opt("log-level");
	if (lv)
		log_parse_level(lv, &l);
	log_set_level(l);
}

/* Re-reads the configuration file (what can change without a restart:
 * the DOPT_RELOAD options), reopens the log file.  The daemon keeps
 * serving whatever happens here. */
static void reload(struct daemon *d)
{
	sd_notify(0, "RELOADING=1\nSTATUS=reloading");
	const char *config = daemon_opt("config");
	char old_path[PATH_MAX + 16] = "", buf[PATH_MAX + 16];
	const char *restart[ARRAY_SIZE(opts)]; /* changed keys that need a restart */
	size_t nrestart = 0;
	const char *p = log_path(d, buf, sizeof(buf));
	if (p)
		snprintf(old_path, sizeof(old_path), "%s", p);
	if (config) {
		/* The file is read into a copy: the running options change only
		 * if all of it is good. */
		struct dopt *t = malloc(sizeof(opts));
		struct dopts *c = malloc(sizeof(*c));
		char err[PATH_MAX + 1024];
		if (!t || !c) {
			log_error("reload: out of memory");
			free(t);
			free(c);
			goto logs;
		}
		memcpy(t, opts, sizeof(opts));
		*c = g_opts;
		c->opt = t;
		for (size_t i = 0; i < c->n; i++) {
			if (c->src[i] == DOPT_FILE) {
				t[i].value = NULL;
				c->src[i] = DOPT_UNSET;
			}
		}
		/* check_combos prints to stderr, which is the log file or nothing
		 * now: the outcome is logged below. */
		if (dopt_load_file(c, config, err, sizeof(err))) {
			log_error("reload: %s; the running configuration stays", err);
		} else if (check_combos(c, config)) {
			log_error("reload: options of %s contradict each other; the running "
			          "configuration stays", config);
		} else {
			for (size_t i = 0; i < c->n; i++) {
				if (dopt_same(t[i].value, opts[i].value))
					continue;
				bool live = false;
				for (const char *const *n = reloadable; *n; n++)
					live = live || !strcmp(*n, opts[i].name);
				if (live) {
					opts[i].value = t[i].value;
					g_opts.src[i] = c->src[i];
					g_opts.file_line[i] = c->file_line[i];
				} else {
					restart[nrestart++] = opts[i].name;
				}
			}
		}
		free(t);
		free(c);
	}
logs:
	p = log_path(d, buf, sizeof(buf));
	if (g_log_dest == LOG_TO_FILE && p) {
		int rc = strcmp(p, old_path) ? log_set_dest(LOG_TO_FILE, p) : log_reopen();
		if (rc < 0)
			log_error("reload: cannot open the log file %s: %s", p, strerror(-rc));
	}
	apply_log_level();
	log_info("reloaded: log level %s%s%s", log_level_name(log_get_level()),
	         g_log_dest == LOG_TO_FILE ? ", log file " : "", g_log_dest == LOG_TO_FILE ? p : "");
	for (size_t i = 0; i < nrestart; i++)
		log_warn("reload: '%s' changed in %s: restart ferryd to apply it", restart[i], config);
	sd_notifyf(0, "READY=1\nSTATUS=serving pool %s", d->pool);
}

/* ---- serving -------------------------------------------------------------- */
/* Runs the daemon once the lock is held and (maybe) after daemonizing.
 * Returns the process exit status; *ready says whether start-up ended. */
static int serve(struct daemon *d, int lock_fd, sigset_t *sigs, bool *ready)
{
	int st = 1, lfd = -1, sfd = -1;
	size_t started = 0;
	*ready = false;
	if (write_pid(lock_fd) < 0)
		log_warn("cannot record the pid in the lock file: %s", strerror(errno));
	d->start_mono_ns = now_mono_ns();
	struct store_config sc = {
		.backend = daemon_opt("backend"),
		.dir = d->pool,
		.rbd_pool = daemon_opt("rbd-pool"),
		.rbd_namespace = daemon_opt("rbd-namespace"),
		.ceph_conf = daemon_opt("ceph-conf"),
		.ceph_id = daemon_opt("ceph-id"),
	};
	int e = store_open_config(&sc, &d->store);
	if (e < 0) {
		if (sc.backend && !strcmp(sc.backend, "rbd"))
			startup_fail("cannot open RBD pool %s%s%s: %s (details in the log)",
			             sc.rbd_pool, sc.rbd_namespace ? "/" : "",
			             sc.rbd_namespace ? sc.rbd_namespace : "", strerror(-e));
		else
			startup_fail("cannot open the store in %s: %s", d->pool, strerror(-e));
		return 1;
	}
	for (; services[started].name; started++) {
		if (services[started].start(d) < 0) {
			/* the service logged why; start_report() tells the terminal */
			startup_fail("cannot start %s", services[started].name);
			goto out;
		}
	}
	sfd = signalfd(-1, sigs, SFD_CLOEXEC);
	if (sfd < 0) {
		startup_fail("signalfd: %s", strerror(errno));
		goto out;
	}
	lfd = listen_sock(d);
	if (lfd < 0)
		goto out;
	/* Every listener is up: the CLI, iSCSI initiators and peers connect
	 * from here on. */
	log_info("ferryd %s serving pool %s (pid %ld)", FERRY_VERSION, d->pool, (long)getpid());
	*ready = true;
	start_undo_disarm();
	start_report(true);
	sd_notifyf(0, "READY=1\nSTATUS=serving pool %s\nMAINPID=%lu", d->pool,
	           (unsigned long)getpid());
	for (;;) {
		struct pollfd p[2] = {{.fd = lfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
		int n = poll(p, 2, 1000);
		if (n < 0 && errno != EINTR) {
			log_error("poll: %s", strerror(errno));
			goto out;
		}
		if (n > 0 && (p[1].revents & POLLIN)) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				if (si.ssi_signo == SIGHUP) {
					reload(d);
					continue;
				}
				log_info("signal %u: shutting down", si.ssi_signo);
				break;
			}
		}
		if (n > 0 && (p[0].revents & POLLIN))
			accept_one(d, lfd);
		reap_conns(false);
	}
	st = 0;
out:
	if (*ready)
		sd_notify(0, "STOPPING=1\nSTATUS=stopping");
	atomic_store(&d->stopping, true);
	if (lfd >= 0) {
		close(lfd);
		unlink(d->sock_path);
	}
	shutdown_conns();
	while (started > 0) {
		started--;
		if (services[started].stop)
			services[started].stop(d);
	}
	store_close(d->store);
	d->store = NULL;
	if (sfd >= 0)
		close(sfd);
	if (st == 0)
		log_info("stopped");
	return st;
}

/* Double fork + setsid.  Returns in the daemon (stdio on /dev/null, the
 * pipe to the parent in g_ready_fd); the original process prints what the
 * daemon reports and exits 0 once it is ready, 1 if it failed. */
static void daemonize(const char *log_hint)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		fprintf(stderr, "ferryd: pipe: %s\n", strerror(errno));
		exit(1);
	}
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "ferryd: fork: %s\n", strerror(errno));
		exit(1);
	}
	if (pid > 0) {
		close(pfd[1]);
		int wst;
		waitpid(pid, &wst, 0);
		struct sbuf msg;
		sbuf_init(&msg);
		char chunk[4096];
		for (;;) {
			ssize_t n = read(pfd[0], chunk, sizeof(chunk));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			sbuf_add(&msg, chunk, (size_t)n);
		}
		const char *text = msg.p ? msg.p : "";
		size_t len = strlen(text);
		bool ok = len >= 2 && !strcmp(text + len - 2, "R\n") &&
		          (len == 2 || text[len - 3] == '\n');
		print_start_msgs(2, text);
		if (!ok && !len)
			fprintf(stderr, "ferryd: the daemon exited during start-up (see %s)\n", log_hint);
		sbuf_free(&msg);
		exit(ok ? 0 : 1);
	}
	close(pfd[0]);
	if (setsid() < 0)
		_exit(1);
	pid = fork();
	if (pid < 0)
		_exit(1);
	if (pid > 0)
		_exit(0);
	g_ready_fd = pfd[1];
	/* Nothing of the caller's stdio may stay open here: whoever started
	 * ferryd (`out=$(ferryd ...)`, a supervisor) waits for EOF on it. */
	if (g_term_fd >= 0)
		close(g_term_fd);
	g_term_fd = -1;
	int nul = open("/dev/null", O_RDWR);
	if (nul >= 0) {
		dup2(nul, 0);
		dup2(nul, 1);
		dup2(nul, 2);
		if (nul > 2)
			close(nul);
	}
	if (chdir("/") < 0)
		log_warn("chdir /: %s", strerror(errno));
}

/* The pool directory: created if missing, made absolute, writable, and
 * locked.  0 with *lock_fd, or 1 after printing why. */
static int pool_prepare(struct daemon *d, const char *pool, int *lock_fd)
{
	int e = mkdir_p(pool, 0700);
	if (e < 0) {
		fprintf(stderr, "ferryd: cannot create pool directory %s: %s\n", pool, strerror(-e));
		return 1;
	}
	if (!realpath(pool, d->pool)) {
		fprintf(stderr, "ferryd: %s: %s\n", pool, strerror(errno));
		return 1;
	}
	if ((size_t)snprintf(d->sock_path, sizeof(d->sock_path), "%s/ferryd.sock", d->pool) >=
	    sizeof(d->sock_path)) {
		fprintf(stderr, "ferryd: pool path %s is too long for a Unix socket path\n", d->pool);
		return 1;
	}
	if (access(d->pool, W_OK | X_OK) < 0) {
		fprintf(stderr, "ferryd: pool directory %s is not writable: %s\n", d->pool,
		        strerror(errno));
		return 1;
	}
	return take_lock(d->pool, lock_fd);
}

static int run(int argc, char **argv)
{
	int r = dopt_parse_argv(&g_opts, argc, argv);
	if (r)
		return r;
	if (daemon_opt("help")) {
		usage(stdout);
		return 0;
	}
	if (daemon_opt("version")) {
		printf("ferryd %s\n", FERRY_VERSION);
		return 0;
	}
	const char *config = daemon_opt("config");
	bool check_only = daemon_opt("check-config") != NULL;
	if (config) {
		char err[PATH_MAX + 1024];
		if (dopt_load_file(&g_opts, config, err, sizeof(err))) {
			fprintf(stderr, "ferryd: %s\n", err);
			return 1;
		}
	}
	const char *pool = daemon_opt("pool");
	if (!pool || !*pool) {
		if (config)
			fprintf(stderr, "ferryd: no pool: set 'pool = DIR' in %s or give --pool DIR\n",
			        config);
		else
			fprintf(stderr, "ferryd: --pool DIR is required (see ferryd --help)\n");
		return check_only ? 1 : 2;
	}
	int cc = check_combos(&g_opts, config);
	if (cc)
		return cc;
	if (check_only) {
		printf("ferryd: %s: configuration OK\n", config ? config : "command line");
		return 0;
	}
	apply_log_level();

	static struct daemon d;
	if (start_undo_prepare(pool) < 0)
		return 1;
	int lock_fd = -1;
	if (pool_prepare(&d, pool, &lock_fd) || try_addresses(config)) {
		if (lock_fd >= 0)
			close(lock_fd);
		start_undo();
		return 1;
	}

	/* Signals are taken through a signalfd by the main thread; every
	 * thread inherits the blocked mask.  A vanished CLI must cost an
	 * EPIPE, not the process. */
	signal(SIGPIPE, SIG_IGN);
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	char hint[PATH_MAX + 16];
	const char *lp = log_path(&d, hint, sizeof(hint));
	if (!lp)
		lp = "syslog";
	if (!daemon_opt("foreground"))
		daemonize(lp);
	log_set_hook(start_capture, NULL);
	int st = 1;
	bool ready = false;
	if (log_setup(&d) == 0)
		st = serve(&d, lock_fd, &sigs, &ready);
	if (!ready) {
		/* Nothing may stay behind: the services are stopped, the store
		 * closed; remove what this start created, then let go of the pool
		 * and tell why. */
		start_undo();
		close(lock_fd);
		start_report(false);
		return st ? st : 1;
	}
	close(lock_fd);
	return st;
}

int main(int argc, char **argv)
{
	/* The I/O buffers (iSCSI READ pieces and command data up to 1 MiB,
	 * replication frames) are above glibc's default mmap threshold, so
	 * each one was mmap'd, faulted in page by page and unmapped again:
	 * 40% of ferryd's CPU on 1 MiB sequential iSCSI reads (perf,
	 * docs/PERFORMANCE.md).  Keep them in the heap, and keep up to
	 * 64 MiB of freed memory per arena for the next ones. */
	mallopt(M_MMAP_THRESHOLD, 4 << 20);
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
	log_set_tag("ferryd");
	g_term_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
	int st = run(argc, argv);
	log_shutdown();
	dopt_free_all();
	start_undo_disarm();
	if (g_term_fd >= 0)
		close(g_term_fd);
	return st;
}
