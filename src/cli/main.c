/* ferry: the command-line client of ferryd.
 *
 * Parses locally with the shared grammar (usage errors and --help need no
 * daemon), sends the argv to the pool's ferryd, streams FILE/stdin as IN
 * frames when the command reads input, and writes OUT frames to FILE or
 * stdout.  Exit status: 0 success, 1 failure, 2 usage. */
#include "common/common.h"
#include "ctl/ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* How long the CLI waits for the daemon: per frame, not per command (long
 * work sends PROGRESS frames). */
#define CLI_SEND_TIMEOUT_MS 300000
#define CLI_RECV_TIMEOUT_MS 600000

static void top_usage(FILE *f)
{
	struct ctl_cmd none = {0};
	struct sbuf b;
	sbuf_init(&b);
	ctl_help(&none, "ferry", &b);
	fprintf(f,
	        "usage: ferry --pool DIR COMMAND [ARGS...]\n\n"
	        "ferry talks to the ferryd that serves the pool DIR (start one with\n"
	        "'ferryd --pool DIR').  SIZE, OFF and LEN are bytes or take a K/M/G/T\n"
	        "suffix; DUR is seconds or takes an s/m/h suffix (90, 90s, 5m, 1h);\n"
	        "names are [A-Za-z0-9][A-Za-z0-9._-]{0,63}.\n"
	        "Exit status: 0 success, 1 failure, 2 usage error; pair verify: 0 match,\n"
	        "1 mismatch, 3 could not verify.\n\n"
	        "Global options:\n"
	        "  --pool DIR    the pool (default: $FERRY_POOL)\n"
	        "  --help        this help; after a command, that command's help\n"
	        "  --version     print the version\n\n%s",
	        b.p ? b.p : "");
	sbuf_free(&b);
}

/* ---- progress display ---------------------------------------------------- */
struct progress {
	bool tty;
	bool shown;
	uint64_t last_ns;
	uint64_t start_ns;     /* first frame of the current label */
	uint64_t start_done;
	char label[CTL_LABEL_MAX + 1];
};

static void progress_show(struct progress *p, uint64_t done, uint64_t total, const char *label)
{
	if (!p->tty)
		return;
	uint64_t now = now_mono_ns();
	if (p->shown && done < total && now - p->last_ns < 100000000ull)
		return;
	p->last_ns = now;
	if (!p->start_ns || strcmp(p->label, label) || done < p->start_done) {
		p->start_ns = now;
		p->start_done = done;
		snprintf(p->label, sizeof(p->label), "%s", label);
	}
	/* Rate and ETA from what moved since this label's first frame. */
	char a[32], b[32], c[32], rate[64] = "";
	double el = (double)(now - p->start_ns) / 1e9;
	if (el > 0.5 && done > p->start_done) {
		double bps = (double)(done - p->start_done) / el;
		int n = snprintf(rate, sizeof(rate), ", %s/s", fmt_bytes((uint64_t)bps, c, sizeof(c)));
		if (total > done && n > 0)
			snprintf(rate + n, sizeof(rate) - (size_t)n, ", ETA %.0f s",
			         (double)(total - done) / bps);
	}
	fmt_bytes(done, a, sizeof(a));
	if (total) {
		fmt_bytes(total, b, sizeof(b));
		unsigned pct = (unsigned)(total ? (done * 100.0) / (double)total : 0);
		fprintf(stderr, "\r\033[K%s: %s / %s (%u%%%s)", label, a, b, pct, rate);
	} else {
		fprintf(stderr, "\r\033[K%s: %s%s", label, a, rate);
	}
	fflush(stderr);
	p->shown = true;
}

static void progress_clear(struct progress *p)
{
	if (p->shown) {
		fprintf(stderr, "\r\033[K");
		fflush(stderr);
		p->shown = false;
	}
}

/* ---- connection --------------------------------------------------------- */
/* 0 with *fd, or the exit status after printing why not. */
static int connect_pool(const char *pool, int *fd)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if ((size_t)snprintf(a.sun_path, sizeof(a.sun_path), "%s/ferryd.sock", pool) >=
	    sizeof(a.sun_path)) {
		fprintf(stderr, "ferry: pool path %s is too long for a Unix socket\n", pool);
		return 1;
	}
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		fprintf(stderr, "ferry: socket: %s\n", strerror(errno));
		return 1;
	}
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = errno;
		close(s);
		if (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR)
			fprintf(stderr, "ferry: no ferryd serves %s (start one with: ferryd --pool %s)\n",
			        pool, pool);
		else
			fprintf(stderr, "ferry: cannot connect to %s: %s\n", a.sun_path, strerror(e));
		return 1;
	}
	*fd = s;
	return 0;
}

struct out_file {
	const char *path; /* NULL: stdout */
	int fd;
	bool failed;
};

/* Opened on the first byte, so that a failed command leaves no file. */
static int out_write(struct out_file *o, const void *p, size_t n)
{
	if (o->failed)
		return -EIO;
	if (o->fd < 0) {
		o->fd = open(o->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (o->fd < 0) {
			fprintf(stderr, "ferry: cannot create %s: %s\n", o->path, strerror(errno));
			o->failed = true;
			return -errno;
		}
	}
	int e = write_full(o->fd, p, n);
	if (e < 0) {
		if (e != -EPIPE)
			fprintf(stderr, "ferry: write to %s failed: %s\n", o->path ? o->path : "stdout",
			        strerror(-e));
		o->failed = true;
	}
	return e;
}

/* Streams in_fd as IN frames then IN_END.  Returns 0, or -EPIPE when the
 * daemon stopped listening (its answer says why), or another error after
 * printing it. */
static int send_input(int s, int in_fd, const char *in_name, uint64_t total,
                      struct progress *pr, uint8_t *buf)
{
	uint64_t sent = 0;
	for (;;) {
		ssize_t n = read(in_fd, buf, CTL_CHUNK);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "ferry: read from %s failed: %s\n", in_name, strerror(errno));
			return -EIO;
		}
		if (n == 0)
			break;
		/* Fill the chunk from pipes that hand out little at a time, so
		 * that frames are large. */
		size_t got = (size_t)n;
		while (got < CTL_CHUNK) {
			ssize_t m = read(in_fd, buf + got, CTL_CHUNK - got);
			if (m < 0 && errno == EINTR)
				continue;
			if (m <= 0)
				break;
			got += (size_t)m;
		}
		int e = ctl_send(s, CTL_IN, buf, (uint32_t)got, CLI_SEND_TIMEOUT_MS);
		if (e == -EPIPE || e == -ECONNRESET)
			return -EPIPE;
		if (e < 0) {
			fprintf(stderr, "ferry: sending to ferryd failed: %s\n", strerror(-e));
			return e;
		}
		sent += got;
		progress_show(pr, sent, total, "write");
	}
	int e = ctl_send(s, CTL_IN_END, NULL, 0, CLI_SEND_TIMEOUT_MS);
	if (e == -EPIPE || e == -ECONNRESET)
		return -EPIPE;
	if (e < 0)
		fprintf(stderr, "ferry: sending to ferryd failed: %s\n", strerror(-e));
	return e;
}

/* Reads frames until EXIT; returns the exit status. */
static int pump(int s, struct out_file *out, struct progress *pr, uint8_t *buf)
{
	for (;;) {
		struct ctl_frame f;
		int e = ctl_recv(s, buf, &f, CLI_RECV_TIMEOUT_MS);
		if (e < 0) {
			progress_clear(pr);
			if (e == -ECONNRESET || e == -EPIPE)
				fprintf(stderr, "ferry: ferryd closed the connection before answering\n");
			else
				fprintf(stderr, "ferry: receiving from ferryd failed: %s\n", strerror(-e));
			return 1;
		}
		switch (f.type) {
		case CTL_OUT:
			if (out_write(out, f.payload, f.len) < 0)
				return 1; /* closing the socket stops the daemon's work */
			break;
		case CTL_ERR:
			progress_clear(pr);
			if (write_full(2, f.payload, f.len) < 0)
				return 1;
			break;
		case CTL_PROGRESS: {
			uint64_t done, total;
			char label[CTL_LABEL_MAX + 1];
			if (ctl_progress_decode(f.payload, f.len, &done, &total, label) == 0)
				progress_show(pr, done, total, label);
			break;
		}
		case CTL_EXIT: {
			int32_t st;
			progress_clear(pr);
			if (ctl_exit_decode(f.payload, f.len, &st) < 0)
				return 1;
			return st;
		}
		default:
			progress_clear(pr);
			fprintf(stderr, "ferry: unexpected frame type %u from ferryd\n", f.type);
			return 1;
		}
	}
}

/* --chap-file FILE: the CLI reads the credentials (refusing a file others
 * may read) and hands them to ferryd as --chap / --mutual-chap over the
 * pool's socket, so that no secret is ever in a process's arguments.
 * Rewrites args in place (room for 3 more); *cred keeps the text the new
 * arguments point into (the caller wipes and frees it).  0 or the exit
 * status after printing why not. */
static int chap_file_args(const struct ctl_cmd *cmd, const char **args, int *nargs, char **cred,
                          size_t *cred_len)
{
	const struct ctl_val *f = ctl_flag(cmd, "chap-file");
	if (!f->set)
		return 0;
	if (ctl_flag(cmd, "chap")->set || ctl_flag(cmd, "mutual-chap")->set) {
		fprintf(stderr, "ferry: --chap-file replaces --chap and --mutual-chap\n");
		return 2;
	}
	char err[512], *chap, *mutual;
	if (secret_file_read(f->str, 64 * 1024, cred, cred_len, err, sizeof(err)) < 0) {
		fprintf(stderr, "ferry: --chap-file: %s\n", err);
		return 1;
	}
	if (chap_file_split(*cred, &chap, &mutual, err, sizeof(err)) < 0) {
		fprintf(stderr, "ferry: --chap-file %s: %s\n", f->str, err);
		return 1;
	}
	/* drop "--chap-file FILE" (or "--chap-file=FILE") */
	int from = strncmp(args[f->argi], "--chap-file=", 12) == 0 ? f->argi : f->argi - 1;
	int gone = f->argi - from + 1;
	for (int i = from; i + gone < *nargs; i++)
		args[i] = args[i + gone];
	*nargs -= gone;
	args[(*nargs)++] = "--chap";
	args[(*nargs)++] = chap;
	if (mutual) {
		args[(*nargs)++] = "--mutual-chap";
		args[(*nargs)++] = mutual;
	}
	return 0;
}

/* args has room for argc + 8 pointers: argv without the global options,
 * plus a --length LEN, or the --chap-file rewrite. */
static int run(int argc, char **argv, const char **args)
{
	const char *pool = getenv("FERRY_POOL");
	int nargs = 0;
	bool in_cmd = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--pool") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "ferry: --pool needs a value (DIR)\n");
				return 2;
			}
			pool = argv[++i];
			continue;
		}
		if (strncmp(a, "--pool=", 7) == 0) {
			pool = a + 7;
			continue;
		}
		if (!in_cmd && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
			top_usage(stdout);
			return 0;
		}
		if (!in_cmd && strcmp(a, "--version") == 0) {
			printf("ferry %s\n", FERRY_VERSION);
			return 0;
		}
		if (!in_cmd && a[0] == '-') {
			fprintf(stderr, "ferry: unknown option '%s' (see ferry --help)\n", a);
			return 2;
		}
		in_cmd = true;
		args[nargs++] = a;
	}
	if (nargs == 0) {
		top_usage(stderr);
		return 2;
	}

	struct ctl_cmd cmd;
	char err[256];
	if (ctl_cmd_parse(nargs, args, &cmd, err, sizeof(err)) < 0) {
		fprintf(stderr, "ferry: %s\n", err);
		return 2;
	}
	if (cmd.help) {
		struct sbuf b;
		sbuf_init(&b);
		if (!cmd.group)
			top_usage(stdout);
		else
			ctl_help(&cmd, "ferry", &b);
		fputs(b.p ? b.p : "", stdout);
		sbuf_free(&b);
		return 0;
	}
	if (!pool || !*pool) {
		fprintf(stderr, "ferry: --pool DIR is required (see ferry --help)\n");
		return 2;
	}

	/* A vanished daemon or stdout reader must cost an error, not a signal. */
	signal(SIGPIPE, SIG_IGN);

	int in_fd = -1;
	const char *in_name = "stdin";
	uint64_t in_total = 0;
	char lenbuf[32];
	const struct ctl_val *fin = ctl_file_arg(&cmd, CTL_A_FILE_IN);
	if (fin) {
		in_fd = 0;
		if (fin->set && strcmp(fin->str, "-") != 0) {
			in_name = fin->str;
			in_fd = open(fin->str, O_RDONLY | O_CLOEXEC);
			if (in_fd < 0) {
				fprintf(stderr, "ferry: cannot open %s: %s\n", fin->str, strerror(errno));
				return 1;
			}
			args[fin->argi] = "-";
		}
		/* With a regular file the daemon can refuse a write that would not
		 * fit before anything is written. */
		struct stat st;
		if (fstat(in_fd, &st) == 0 && S_ISREG(st.st_mode)) {
			off_t pos = lseek(in_fd, 0, SEEK_CUR);
			in_total = (uint64_t)st.st_size - (pos > 0 ? (uint64_t)pos : 0);
			if (!ctl_flag(&cmd, "length")->set) {
				snprintf(lenbuf, sizeof(lenbuf), "%" PRIu64, in_total);
				args[nargs++] = "--length";
				args[nargs++] = lenbuf;
			}
		}
	}
	struct out_file out = {.path = NULL, .fd = 1};
	const struct ctl_val *fout = ctl_file_arg(&cmd, CTL_A_FILE_OUT);
	if (fout && fout->set && strcmp(fout->str, "-") != 0) {
		out.path = fout->str;
		out.fd = -1;
		args[fout->argi] = "-";
	}

	uint8_t *buf = malloc(CTL_MAX_FRAME);
	if (!buf) {
		fprintf(stderr, "ferry: out of memory\n");
		return 1;
	}
	int s, st = connect_pool(pool, &s);
	if (st) {
		free(buf);
		return st;
	}
	struct progress pr = {.tty = isatty(2) == 1};
	char *cred = NULL;
	size_t cred_len = 0;
	st = chap_file_args(&cmd, args, &nargs, &cred, &cred_len);
	if (st) {
		if (cred) {
			explicit_bzero(cred, cred_len);
			free(cred);
		}
		goto out;
	}
	int n = ctl_req_encode(buf, CTL_MAX_FRAME, nargs, args);
	if (cred) {
		explicit_bzero(cred, cred_len);
		free(cred);
		cred = NULL;
	}
	int e = n < 0 ? n : ctl_send(s, CTL_REQ, buf, (uint32_t)n, CLI_SEND_TIMEOUT_MS);
	if (n > 0)
		explicit_bzero(buf, (size_t)n);
	if (e == -EPIPE || e == -ECONNRESET) {
		/* ferryd answered and closed before reading the request (it is
		 * busy): its answer is still in the socket, and says why */
		st = pump(s, &out, &pr, buf);
		goto out;
	}
	if (e < 0) {
		fprintf(stderr, "ferry: sending the request to ferryd failed: %s\n", strerror(-e));
		st = 1;
		goto out;
	}
	if (in_fd >= 0) {
		e = send_input(s, in_fd, in_name, in_total, &pr, buf);
		if (e < 0 && e != -EPIPE) {
			st = 1;
			goto out;
		}
	}
	st = pump(s, &out, &pr, buf);
	if (st == 0 && out.path && out.fd < 0 && out_write(&out, "", 0) < 0)
		st = 1;
	if (out.path && out.fd >= 0 && close(out.fd) < 0) {
		fprintf(stderr, "ferry: closing %s failed: %s\n", out.path, strerror(errno));
		st = 1;
	}
out:
	close(s);
	if (in_fd > 0)
		close(in_fd);
	free(buf);
	return st;
}

int main(int argc, char **argv)
{
	log_set_tag("ferry");
	const char **args = calloc((size_t)argc + 8, sizeof(*args));
	if (!args) {
		fprintf(stderr, "ferry: out of memory\n");
		return 1;
	}
	int st = run(argc, argv, args);
	free(args);
	if (fflush(stdout) != 0 && st == 0) {
		fprintf(stderr, "ferry: writing to stdout failed\n");
		st = 1;
	}
	return st;
}
