/* One control connection: read the REQ, parse it with the shared grammar,
 * run the group's handler, send EXIT.  Also the helpers handlers use to
 * talk to the CLI. */
#include "daemon/daemon.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The command groups the daemon serves: one line per group. */
static const struct dgroup *const groups[] = {
	&dgroup_volume,
	&dgroup_snap,
	&dgroup_group,
	&dgroup_export,
	&dgroup_pair,
	&dgroup_status,
};

static int send_frame(struct dreq *r, uint8_t type, const void *p, size_t len, int timeout_ms)
{
	if (r->io_err)
		return r->io_err;
	int e = ctl_send(r->fd, type, p, (uint32_t)len, timeout_ms);
	if (e < 0) {
		log_debug("control connection: send failed: %s", strerror(-e));
		r->io_err = e;
	}
	return e;
}

int dreq_out(struct dreq *r, const void *p, size_t len)
{
	const uint8_t *b = p;
	while (len) {
		size_t n = MIN(len, (size_t)CTL_CHUNK);
		int e = send_frame(r, CTL_OUT, b, n, DREQ_DATA_TIMEOUT_MS);
		if (e < 0)
			return e;
		b += n;
		len -= n;
	}
	return 0;
}

int dreq_out_sbuf(struct dreq *r, struct sbuf *b)
{
	int st = 0;
	if (b->err)
		st = dreq_fail(r, "out of memory");
	else if (dreq_out(r, b->p ? b->p : "", b->len) < 0)
		st = 1;
	sbuf_free(b);
	return st;
}

int dreq_printf(struct dreq *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char tmp[1024];
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n < sizeof(tmp))
		return dreq_out(r, tmp, (size_t)n);
	va_start(ap, fmt);
	char *big = malloc((size_t)n + 1);
	if (!big) {
		va_end(ap);
		return -ENOMEM;
	}
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	int e = dreq_out(r, big, (size_t)n);
	free(big);
	return e;
}

static void send_err(struct dreq *r, const char *fmt, va_list ap) PRINTF_LIKE(2, 0);
static void send_err(struct dreq *r, const char *fmt, va_list ap)
{
	char msg[1200];
	int n = snprintf(msg, sizeof(msg), "ferry: ");
	n += vsnprintf(msg + n, sizeof(msg) - (size_t)n - 1, fmt, ap);
	if ((size_t)n > sizeof(msg) - 2)
		n = (int)sizeof(msg) - 2;
	msg[n++] = '\n';
	log_debug("command failed: %.*s", n - 1, msg);
	send_frame(r, CTL_ERR, msg, (size_t)n, DREQ_MSG_TIMEOUT_MS);
}

int dreq_fail(struct dreq *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	send_err(r, fmt, ap);
	va_end(ap);
	return 1;
}

int dreq_usage(struct dreq *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	send_err(r, fmt, ap);
	va_end(ap);
	return 2;
}

void dreq_warn(struct dreq *r, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	dreq_fail(r, "warning: %s", msg);
}

int dreq_name_reserved(struct dreq *r, const char *name, const char *what)
{
	if (!name_reserved(name))
		return 0;
	return dreq_usage(r, "%s name '%s' is reserved: replication owns the names starting with "
	                     "%s (it creates and deletes them); choose another name",
	                  what, name, NAME_RESERVED_LIST);
}

void dreq_progress(struct dreq *r, uint64_t done, uint64_t total, const char *label)
{
	uint64_t now = now_mono_ns();
	if (done < total && now - r->last_progress_ns < 200000000ull)
		return;
	r->last_progress_ns = now;
	uint8_t p[17 + CTL_LABEL_MAX];
	int n = ctl_progress_encode(p, sizeof(p), done, total, label);
	if (n > 0)
		send_frame(r, CTL_PROGRESS, p, (size_t)n, DREQ_MSG_TIMEOUT_MS);
}

int dreq_in(struct dreq *r, const uint8_t **data, size_t *len)
{
	if (r->io_err)
		return r->io_err;
	struct ctl_frame f;
	int e = ctl_recv(r->fd, r->rx, &f, DREQ_DATA_TIMEOUT_MS);
	if (e < 0) {
		log_debug("control connection: receive failed: %s", strerror(-e));
		r->io_err = e;
		return e;
	}
	if (f.type == CTL_IN_END)
		return 0;
	if (f.type != CTL_IN) {
		log_warn("control connection: unexpected frame type %u while reading input", f.type);
		r->io_err = -EPROTO;
		return -EPROTO;
	}
	*data = f.payload;
	*len = f.len;
	return 1;
}

bool dreq_aborted(struct dreq *r)
{
	return r->io_err != 0 || atomic_load(&r->d->stopping);
}

void daemon_open_error(struct store *s, const char *name, int e, char *buf, size_t n)
{
	char who[1536];
	int h = e == -EBUSY ? store_vol_holder(s, name, who, sizeof(who)) : -ENOENT;
	if (e == -ENOENT)
		snprintf(buf, n, "no such volume '%s'", name);
	else if (h == -ENODATA)
		snprintf(buf, n, "volume '%s' was released by its gateway: `ferry volume takeover %s` "
		         "serves it here", name, name);
	else if (h == 0)
		snprintf(buf, n, "volume '%s' is held by another gateway: %s (if it is dead: ferry "
		         "volume takeover %s)", name, who, name);
	else if (e == -ESHUTDOWN)
		snprintf(buf, n, "volume '%s': this ferryd was fenced by the cluster (another gateway "
		         "took its volumes over); restart it", name);
	else
		snprintf(buf, n, "cannot open volume '%s': %s", name, strerror(-e));
}

int dreq_open_vol(struct dreq *r, const char *name, const char *snap, struct vol **v)
{
	int e = vol_open(r->store, name, v);
	if (e < 0) {
		char msg[2048];
		daemon_open_error(r->store, name, e, msg, sizeof(msg));
		return dreq_fail(r, "%s", msg);
	}
	if (snap && *snap) {
		struct snap_info si;
		e = vol_snap_get(*v, snap, &si);
		if (e < 0) {
			vol_close(*v);
			*v = NULL;
			if (e == -ENOENT)
				return dreq_fail(r, "no such snapshot '%s@%s'", name, snap);
			return dreq_fail(r, "cannot look up snapshot '%s@%s': %s", name, snap,
			                 strerror(-e));
		}
	}
	return 0;
}

static int run(struct dreq *r, int argc, const char **argv)
{
	struct ctl_cmd cmd;
	char err[256];
	if (ctl_cmd_parse(argc, argv, &cmd, err, sizeof(err)) < 0)
		return dreq_usage(r, "%s", err);
	if (cmd.help || !cmd.spec)
		return dreq_usage(r, "--help is answered by the ferry CLI itself");
	for (size_t i = 0; i < ARRAY_SIZE(groups); i++) {
		if (strcmp(groups[i]->name, cmd.group->name) != 0)
			continue;
		for (const struct dgroup_cmd *c = groups[i]->cmds; c->verb; c++) {
			if (strcmp(c->verb, cmd.spec->verb) == 0) {
				r->cmd = &cmd;
				log_debug("command: %s %s", cmd.group->name, cmd.spec->verb);
				return c->run(r);
			}
		}
	}
	return dreq_fail(r, "'%s %s' is not served by this ferryd", cmd.group->name,
	                 cmd.spec->verb);
}

void dispatch_conn(struct daemon *d, int fd)
{
	struct dreq r = {.d = d, .store = d->store, .fd = fd};
	r.rx = malloc(CTL_MAX_FRAME);
	uint8_t *req = malloc(CTL_MAX_FRAME);
	if (!r.rx || !req) {
		log_error("control connection: out of memory");
		goto out;
	}
	struct ctl_frame f;
	int e = ctl_recv(fd, req, &f, DREQ_REQ_TIMEOUT_MS);
	if (e < 0) {
		log_debug("control connection: no request: %s", strerror(-e));
		goto out;
	}
	const char *argv[CTL_MAX_ARGC + 1];
	int argc;
	if (f.type != CTL_REQ || ctl_req_decode(f.payload, f.len, &argc, argv, ARRAY_SIZE(argv)) < 0) {
		log_warn("control connection: malformed request (frame type %u)", f.type);
		goto out;
	}
	int status = run(&r, argc, argv);
	uint8_t ex[4];
	ctl_exit_encode(ex, sizeof(ex), status);
	send_frame(&r, CTL_EXIT, ex, sizeof(ex), DREQ_MSG_TIMEOUT_MS);
out:
	free(req);
	free(r.rx);
}
