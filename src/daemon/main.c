/* ferryd: owns one pool, answers the ferry CLI on POOL/ferryd.sock.
 *
 * Start-up order matters: the pool lock is taken before forking (so a
 * second ferryd is refused on the terminal that started it), the store is
 * opened and the socket listens before the parent returns (so that
 * `ferryd --pool X && ferry --pool X ...` works). */
#include "daemon/daemon.h"

#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <limits.h>
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
#include <unistd.h>

/* ---- options ------------------------------------------------------------ */
struct dopt {
	const char *name;  /* without "--" */
	const char *meta;  /* NULL: the option takes no value */
	const char *help;
	int (*check)(const char *v); /* optional validation; prints its own message */
	const char *value; /* what was given (argv string, or "1") */
};

static int check_level(const char *v)
{
	enum log_level l;
	if (log_parse_level(v, &l) < 0) {
		fprintf(stderr, "ferryd: bad --log-level '%s' (error, warn, info or debug)\n", v);
		return -EINVAL;
	}
	return 0;
}

static int check_backend(const char *v)
{
	if (strcmp(v, "local") && strcmp(v, "rbd")) {
		fprintf(stderr, "ferryd: bad --backend '%s' (local or rbd)\n", v);
		return -EINVAL;
	}
	if (!store_backend_available(v)) {
		fprintf(stderr, "ferryd: this ferryd was built without the %s backend "
		        "(librbd-dev was missing at build time)\n", v);
		return -EINVAL;
	}
	return 0;
}

/* The daemon's options: one line each. */
static struct dopt opts[] = {
	{"pool", "DIR", "the pool directory (created if missing); required", NULL, NULL},
	{"foreground", NULL, "do not daemonize; log to stderr", NULL, NULL},
	{"log-level", "LEVEL", "error, warn, info (default) or debug", check_level, NULL},
	{"iscsi", "HOST:PORT", "serve the exported volumes over iSCSI on this address", NULL, NULL},
	{"listen", "HOST:PORT", "accept replication peers here (needs --secret-file)", NULL, NULL},
	{"secret-file", "FILE", "shared secret authenticating replication peers (mode 0600 or stricter)", NULL, NULL},
	{"plaintext", NULL, "replication link without TLS (the peer must use it too)", NULL, NULL},
	{"tls-cert", "FILE", "TLS certificate chain (PEM): certificate mode instead of TLS-PSK", NULL, NULL},
	{"tls-key", "FILE", "private key of --tls-cert (PEM, mode 0600 or stricter)", NULL, NULL},
	{"tls-ca", "FILE", "CA certificate(s) (PEM) that the peer's certificate must chain to", NULL, NULL},
	{"socket-group", "GROUP", "control socket mode 0660 with this group (default 0600)", NULL, NULL},
	{"max-transfers", "N", "replication cycles transferring at once (default 4)", NULL, NULL},
	{"backend", "NAME", "where volumes live: local (default: DIR/volumes) or rbd (a Ceph pool)", check_backend, NULL},
	{"rbd-pool", "NAME", "rbd: the RADOS pool holding the volumes' images (required with rbd)", NULL, NULL},
	{"rbd-namespace", "NS", "rbd: the pool's RBD namespace (default: none)", NULL, NULL},
	{"ceph-conf", "FILE", "rbd: Ceph configuration (default: $CEPH_CONF, /etc/ceph/ceph.conf)", NULL, NULL},
	{"ceph-id", "ID", "rbd: Ceph client name without 'client.' (default: admin)", NULL, NULL},
	{"help", NULL, "show this help", NULL, NULL},
	{"version", NULL, "show the version", NULL, NULL},
};

const char *daemon_opt(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(opts); i++)
		if (strcmp(opts[i].name, name) == 0)
			return opts[i].value;
	return NULL;
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
	{NULL, NULL, NULL},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: ferryd --pool DIR [options]\n\n"
	           "ferryd owns one pool of volumes and answers the ferry CLI on the Unix\n"
	           "socket DIR/ferryd.sock (mode 0600, or 0660 with --socket-group).\n"
	           "Without --foreground it daemonizes, logs to DIR/ferryd.log and returns\n"
	           "once it is ready.  SIGTERM or SIGINT stop it cleanly.  One ferryd per\n"
	           "pool (lock: DIR/ferryd.lock).  The replication link is TLS 1.3 keyed\n"
	           "from the secret file unless --tls-cert/--tls-key/--tls-ca give\n"
	           "certificates, or --plaintext (on both sites) turns TLS off.\n"
	           "With --backend rbd the volumes are images of a Ceph RBD pool and DIR\n"
	           "keeps only this ferryd's own state (socket, pairs, exports, log,\n"
	           "gateway.id); several ferryd may share one RBD pool (docs/CEPH.md).\n\n"
	           "Options:\n");
	for (size_t i = 0; i < ARRAY_SIZE(opts); i++) {
		char lhs[64];
		snprintf(lhs, sizeof(lhs), "--%s%s%s", opts[i].name, opts[i].meta ? " " : "",
		         opts[i].meta ? opts[i].meta : "");
		fprintf(f, "  %-20s %s\n", lhs, opts[i].help);
	}
}

/* 0, 2 (usage: message printed) */
static int parse_opts(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strncmp(a, "--", 2) != 0) {
			fprintf(stderr, "ferryd: unexpected argument '%s' (see ferryd --help)\n", a);
			return 2;
		}
		const char *name = a + 2, *eq = strchr(name, '=');
		size_t nl = eq ? (size_t)(eq - name) : strlen(name);
		struct dopt *o = NULL;
		for (size_t k = 0; k < ARRAY_SIZE(opts); k++)
			if (strlen(opts[k].name) == nl && memcmp(opts[k].name, name, nl) == 0)
				o = &opts[k];
		if (!o) {
			fprintf(stderr, "ferryd: unknown option '%s' (see ferryd --help)\n", a);
			return 2;
		}
		if (!o->meta) {
			if (eq) {
				fprintf(stderr, "ferryd: --%s takes no value\n", o->name);
				return 2;
			}
			o->value = "1";
			continue;
		}
		if (eq) {
			o->value = eq + 1;
		} else if (i + 1 < argc) {
			o->value = argv[++i];
		} else {
			fprintf(stderr, "ferryd: --%s needs a value (%s)\n", o->name, o->meta);
			return 2;
		}
		if (o->check && o->check(o->value) < 0)
			return 2;
	}
	return 0;
}

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
/* Where start-up failures are reported in daemon mode: the pipe to the
 * parent, which prints them on the terminal that started ferryd. */
static int g_ready_fd = -1;

static void startup_fail(const char *fmt, ...) PRINTF_LIKE(1, 2);
static void startup_fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("%s", msg);
	if (g_ready_fd >= 0) {
		if (write_full(g_ready_fd, msg, strlen(msg)) < 0)
			log_debug("cannot report start-up failure to the parent");
		close(g_ready_fd);
		g_ready_fd = -1;
	}
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

/* Runs the daemon once the lock is held and (maybe) after daemonizing.
 * Returns the process exit status. */
static int serve(struct daemon *d, int lock_fd, sigset_t *sigs)
{
	int st = 1, lfd = -1, sfd = -1;
	size_t started = 0;
	if (write_pid(lock_fd) < 0)
		log_warn("cannot record the pid in the lock file: %s", strerror(errno));
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
	log_info("ferryd %s serving pool %s (pid %ld)", FERRY_VERSION, d->pool, (long)getpid());
	if (g_ready_fd >= 0) {
		if (write_full(g_ready_fd, "", 1) < 0)
			log_warn("cannot tell the parent that ferryd is ready");
		close(g_ready_fd);
		g_ready_fd = -1;
	}
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

/* Double fork + setsid.  Returns in the daemon with the log on
 * POOL/ferryd.log; the original process exits once the daemon reports
 * ready (0) or failed (1). */
static void daemonize(const char *pool)
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
		char msg[1024];
		size_t got = 0;
		for (;;) {
			ssize_t n = read(pfd[0], msg + got, sizeof(msg) - 1 - got);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			got += (size_t)n;
			if (got == sizeof(msg) - 1)
				break;
		}
		msg[got] = '\0';
		if (got == 1 && msg[0] == '\0')
			exit(0);
		if (got)
			fprintf(stderr, "ferryd: %s\n", msg);
		else
			fprintf(stderr, "ferryd: the daemon exited during start-up (see %s/ferryd.log)\n",
			        pool);
		exit(1);
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
	char logp[PATH_MAX + 16];
	snprintf(logp, sizeof(logp), "%s/ferryd.log", pool);
	int nul = open("/dev/null", O_RDWR);
	int log = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (nul < 0 || log < 0) {
		startup_fail("cannot open %s: %s", log < 0 ? logp : "/dev/null", strerror(errno));
		_exit(1);
	}
	dup2(nul, 0);
	dup2(nul, 1);
	dup2(log, 2);
	close(nul);
	close(log);
	if (chdir("/") < 0)
		log_warn("chdir /: %s", strerror(errno));
}

int main(int argc, char **argv)
{
	log_set_tag("ferryd");
	int r = parse_opts(argc, argv);
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
	const char *pool = daemon_opt("pool");
	if (!pool || !*pool) {
		fprintf(stderr, "ferryd: --pool DIR is required (see ferryd --help)\n");
		return 2;
	}
	const char *be = daemon_opt("backend");
	bool rbd = be && !strcmp(be, "rbd");
	if (rbd && !daemon_opt("rbd-pool")) {
		fprintf(stderr, "ferryd: --backend rbd needs --rbd-pool NAME (see ferryd --help)\n");
		return 2;
	}
	static const char *const rbd_only[] = { "rbd-pool", "rbd-namespace", "ceph-conf", "ceph-id" };
	for (size_t i = 0; i < ARRAY_SIZE(rbd_only); i++) {
		if (!rbd && daemon_opt(rbd_only[i])) {
			fprintf(stderr, "ferryd: --%s needs --backend rbd\n", rbd_only[i]);
			return 2;
		}
	}
	const char *lv = daemon_opt("log-level");
	if (lv) {
		enum log_level l;
		log_parse_level(lv, &l);
		log_set_level(l);
	}

	static struct daemon d;
	int e = mkdir_p(pool, 0700);
	if (e < 0) {
		fprintf(stderr, "ferryd: cannot create pool directory %s: %s\n", pool, strerror(-e));
		return 1;
	}
	if (!realpath(pool, d.pool)) {
		fprintf(stderr, "ferryd: %s: %s\n", pool, strerror(errno));
		return 1;
	}
	if ((size_t)snprintf(d.sock_path, sizeof(d.sock_path), "%s/ferryd.sock", d.pool) >=
	    sizeof(d.sock_path)) {
		fprintf(stderr, "ferryd: pool path %s is too long for a Unix socket path\n", d.pool);
		return 1;
	}
	int lock_fd;
	if (take_lock(d.pool, &lock_fd))
		return 1;

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

	/* The daemon works from "/": file options given relative to where it
	 * was started must keep meaning those files. */
	static const char *const file_opts[] = { "secret-file", "tls-cert", "tls-key", "tls-ca",
	                                          "ceph-conf" };
	static char abs_paths[ARRAY_SIZE(file_opts)][4096];
	char cwd[2048];
	for (size_t i = 0; i < ARRAY_SIZE(file_opts); i++) {
		for (size_t j = 0; j < ARRAY_SIZE(opts); j++) {
			if (strcmp(opts[j].name, file_opts[i]) || !opts[j].value ||
			    opts[j].value[0] == '/' || !getcwd(cwd, sizeof(cwd)))
				continue;
			if ((size_t)snprintf(abs_paths[i], sizeof(abs_paths[i]), "%s/%s", cwd,
			                     opts[j].value) < sizeof(abs_paths[i]))
				opts[j].value = abs_paths[i];
		}
	}
	if (!daemon_opt("foreground"))
		daemonize(d.pool);
	int st = serve(&d, lock_fd, &sigs);
	close(lock_fd);
	return st;
}
