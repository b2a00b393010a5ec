/* repl link: TCP with deadlines, mutual HMAC authentication. */
#include "repl/link.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "common/common.h"

uint16_t link_test_client_version = WIRE_VERSION;

/* ---- token bucket ------------------------------------------------------ */
#define BUCKET_WINDOW_NS 50000000ull  /* 50 ms of quota at most */

void bucket_init(struct bucket *b, uint64_t rate)
{
	pthread_mutex_init(&b->mu, NULL);
	b->rate = rate;
	b->tokens = 0;
	b->last_ns = now_mono_ns();
}

void bucket_set_rate(struct bucket *b, uint64_t rate)
{
	pthread_mutex_lock(&b->mu);
	b->rate = rate;
	b->tokens = 0;
	b->last_ns = now_mono_ns();
	pthread_mutex_unlock(&b->mu);
}

void bucket_destroy(struct bucket *b) { pthread_mutex_destroy(&b->mu); }

uint64_t bucket_charge(struct bucket *b, size_t n)
{
	pthread_mutex_lock(&b->mu);
	if (!b->rate) {
		pthread_mutex_unlock(&b->mu);
		return 0;
	}
	uint64_t now = now_mono_ns();
	double cap = (double)b->rate * (double)BUCKET_WINDOW_NS / 1e9;
	b->tokens += (double)(now - b->last_ns) * (double)b->rate / 1e9;
	if (b->tokens > cap)
		b->tokens = cap;
	b->last_ns = now;
	b->tokens -= (double)n;
	uint64_t wait = 0;
	if (b->tokens < 0)
		wait = (uint64_t)(-b->tokens * 1e9 / (double)b->rate);
	pthread_mutex_unlock(&b->mu);
	return wait;
}

size_t bucket_chunk(const struct bucket *b)
{
	if (!b || !b->rate)
		return WIRE_DATA_MAX;
	uint64_t c = b->rate * BUCKET_WINDOW_NS / 1000000000ull;
	c &= ~(uint64_t)4095;
	return (size_t)MAX(MIN(c, (uint64_t)WIRE_DATA_MAX), (uint64_t)4096);
}

/* ---- sockets ----------------------------------------------------------- */
int link_parse_addr(const char *hostport, char *host, size_t hlen, char *port, size_t plen)
{
	if (!hostport)
		return -EINVAL;
	const char *colon;
	const char *h = hostport;
	size_t hl;
	if (*h == '[') {
		const char *end = strchr(h, ']');
		if (!end || end[1] != ':')
			return -EINVAL;
		h++;
		hl = (size_t)(end - h);
		colon = end + 1;
	} else {
		colon = strrchr(h, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - h);
	}
	const char *p = colon + 1;
	uint64_t pv;
	if (hl == 0 || hl >= hlen || strlen(p) >= plen || parse_u64(p, &pv) < 0 || pv > 65535)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, p);
	return 0;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

static void addr_str(const struct sockaddr *sa, socklen_t len, char *out, size_t olen)
{
	char h[NI_MAXHOST], p[NI_MAXSERV];
	if (getnameinfo(sa, len, h, sizeof(h), p, sizeof(p), NI_NUMERICHOST | NI_NUMERICSERV)) {
		snprintf(out, olen, "?");
		return;
	}
	if (sa->sa_family == AF_INET6)
		snprintf(out, olen, "[%s]:%s", h, p);
	else
		snprintf(out, olen, "%s:%s", h, p);
}

int link_listen(const char *hostport, int *lfd, char *bound, size_t blen)
{
	char host[256], port[16];
	if (link_parse_addr(hostport, host, sizeof(host), port, sizeof(port)) < 0) {
		log_error("repl: bad listen address '%s' (want HOST:PORT)", hostport);
		return -EINVAL;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
	                          .ai_flags = AI_PASSIVE };
	struct addrinfo *res;
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc) {
		log_error("repl: cannot resolve %s: %s", hostport, gai_strerror(rc));
		return -EADDRNOTAVAIL;
	}
	int err = -EADDRNOTAVAIL;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			err = -errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0 ||
		    set_nonblock(fd) < 0) {
			err = -errno;
			close(fd);
			continue;
		}
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		getsockname(fd, (struct sockaddr *)&ss, &sl);
		addr_str((struct sockaddr *)&ss, sl, bound, blen);
		*lfd = fd;
		freeaddrinfo(res);
		return 0;
	}
	freeaddrinfo(res);
	log_error("repl: cannot listen on %s: %s", hostport, strerror(-err));
	return err;
}

int link_accept(int lfd, int timeout_ms, char *peer, size_t plen)
{
	struct pollfd pfd = { .fd = lfd, .events = POLLIN };
	int n = poll(&pfd, 1, timeout_ms);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ETIMEDOUT;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return -errno;
	addr_str((struct sockaddr *)&ss, sl, peer, plen);
	return fd;
}

static int link_alloc(int fd, int timeout_ms, const char *peer, struct link **out)
{
	struct link *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->rcap = WIRE_FRAME_MAX + 65536;
	l->rbuf = malloc(l->rcap);
	l->wbuf = malloc(WIRE_FRAME_MAX);
	if (!l->rbuf || !l->wbuf) {
		free(l->rbuf);
		free(l->wbuf);
		free(l);
		return -ENOMEM;
	}
	l->fd = fd;
	l->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
	atomic_init(&l->aborted, false);
	snprintf(l->peer, sizeof(l->peer), "%s", peer ? peer : "?");
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	*out = l;
	return 0;
}

int link_from_fd(int fd, int timeout_ms, const char *peer, struct link **out)
{
	int rc = set_nonblock(fd);
	if (rc == 0)
		rc = link_alloc(fd, timeout_ms, peer, out);
	if (rc < 0)
		close(fd);
	return rc;
}

int link_connect(const char *hostport, int timeout_ms, struct link **out,
                 char *err, size_t errlen)
{
	char host[256], port[16];
	if (link_parse_addr(hostport, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(err, errlen, "bad peer address '%s' (want HOST:PORT)", hostport);
		return -EINVAL;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res;
	int grc = getaddrinfo(host, port, &hints, &res);
	if (grc) {
		snprintf(err, errlen, "cannot resolve %s: %s", hostport, gai_strerror(grc));
		return -EHOSTUNREACH;
	}
	int rc = -ECONNREFUSED;
	uint64_t deadline = now_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
			rc = -errno;
			close(fd);
			continue;
		}
		uint64_t now = now_mono_ns();
		int left = now < deadline ? (int)((deadline - now) / 1000000ull) : 0;
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		int n = poll(&pfd, 1, left);
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (n <= 0) {
			rc = n == 0 ? -ETIMEDOUT : -errno;
			close(fd);
			continue;
		}
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			rc = -soerr;
			close(fd);
			continue;
		}
		freeaddrinfo(res);
		rc = link_alloc(fd, timeout_ms, hostport, out);
		if (rc < 0) {
			close(fd);
			snprintf(err, errlen, "out of memory");
		}
		return rc;
	}
	freeaddrinfo(res);
	snprintf(err, errlen, "cannot connect to %s: %s", hostport, strerror(-rc));
	return rc;
}

void link_close(struct link *l)
{
	if (!l)
		return;
	if (l->fd >= 0)
		close(l->fd);
	free(l->rbuf);
	free(l->wbuf);
	free(l);
}

void link_abort(struct link *l)
{
	atomic_store(&l->aborted, true);
	shutdown(l->fd, SHUT_RDWR);
}

static int left_ms(uint64_t deadline)
{
	uint64_t now = now_mono_ns();
	if (now >= deadline)
		return 0;
	return (int)MIN((deadline - now) / 1000000ull + 1, (uint64_t)INT32_MAX);
}

/* Waits for fd readiness before deadline; -ETIMEDOUT / -ECANCELED. */
static int wait_fd(struct link *l, short ev, uint64_t deadline)
{
	for (;;) {
		if (atomic_load(&l->aborted))
			return -ECANCELED;
		int left = left_ms(deadline);
		if (left == 0)
			return -ETIMEDOUT;
		/* Wake up now and then to notice an abort even if shutdown()
		 * did not wake poll (it does on Linux; this is belt and braces). */
		struct pollfd pfd = { .fd = l->fd, .events = ev };
		int n = poll(&pfd, 1, MIN(left, 200));
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0)
			return 0;
	}
}

static int send_bytes(struct link *l, const uint8_t *p, size_t len)
{
	uint64_t deadline = now_mono_ns() + (uint64_t)l->timeout_ms * 1000000ull;
	while (len) {
		if (atomic_load(&l->aborted))
			return -ECANCELED;
		ssize_t n = send(l->fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			l->tx_bytes += (uint64_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int rc = wait_fd(l, POLLOUT, deadline);
			if (rc < 0) {
				snprintf(l->err, sizeof(l->err), "send to %s: %s", l->peer,
				         rc == -ETIMEDOUT ? "peer stopped reading (deadline passed)"
				                          : strerror(-rc));
				return rc;
			}
			continue;
		}
		int rc = n < 0 ? -errno : -EPIPE;
		if (atomic_load(&l->aborted))
			rc = -ECANCELED;
		snprintf(l->err, sizeof(l->err), "send to %s: %s", l->peer, strerror(-rc));
		return rc;
	}
	return 0;
}

/* Sleeps off bandwidth debt in short slices so an abort is noticed. */
static int pace(struct link *l, size_t n)
{
	if (!l->bucket)
		return 0;
	uint64_t wait = bucket_charge(l->bucket, n);
	uint64_t end = now_mono_ns() + wait;
	while (wait) {
		if (atomic_load(&l->aborted))
			return -ECANCELED;
		uint64_t slice = MIN(wait, 20000000ull);
		struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)slice };
		nanosleep(&ts, NULL);
		uint64_t now = now_mono_ns();
		wait = now >= end ? 0 : end - now;
	}
	return 0;
}

int link_send_raw(struct link *l, const void *frames, size_t len)
{
	int rc = pace(l, len);
	if (rc < 0)
		return rc;
	return send_bytes(l, frames, len);
}

int link_send(struct link *l, const struct wire_msg *m)
{
	int n = wire_encode(m, l->wbuf, WIRE_FRAME_MAX);
	if (n < 0) {
		log_error("repl: cannot encode %s: %s", wire_type_name(m->type), strerror(-n));
		return n;
	}
	return link_send_raw(l, l->wbuf, (size_t)n);
}

void link_send_error(struct link *l, int err, const char *fmt, ...)
{
	struct wire_msg m = { .type = WIRE_ERROR };
	m.u.error.code = err < 0 ? -err : err;
	if (m.u.error.code <= 0 || m.u.error.code > 4095)
		m.u.error.code = EIO;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m.u.error.msg, sizeof(m.u.error.msg), fmt, ap);
	va_end(ap);
	int saved = l->timeout_ms;
	l->timeout_ms = MIN(saved, 2000);
	(void)link_send(l, &m);
	l->timeout_ms = saved;
}

/* Makes sure rbuf holds at least want bytes from rstart. */
static int fill(struct link *l, size_t want, uint64_t deadline)
{
	if (l->rcap - l->rstart < want) {
		memmove(l->rbuf, l->rbuf + l->rstart, l->rend - l->rstart);
		l->rend -= l->rstart;
		l->rstart = 0;
	}
	while (l->rend - l->rstart < want) {
		if (atomic_load(&l->aborted))
			return -ECANCELED;
		ssize_t n = recv(l->fd, l->rbuf + l->rend, l->rcap - l->rend, 0);
		if (n > 0) {
			l->rend += (size_t)n;
			l->rx_bytes += (uint64_t)n;
			continue;
		}
		if (n == 0) {
			snprintf(l->err, sizeof(l->err), "%s closed the connection", l->peer);
			return atomic_load(&l->aborted) ? -ECANCELED : -ECONNRESET;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			int rc = wait_fd(l, POLLIN, deadline);
			if (rc < 0) {
				snprintf(l->err, sizeof(l->err), "receive from %s: %s", l->peer,
				         rc == -ETIMEDOUT ? "no answer before the deadline"
				                          : strerror(-rc));
				return rc;
			}
			continue;
		}
		int rc = -errno;
		snprintf(l->err, sizeof(l->err), "receive from %s: %s", l->peer, strerror(-rc));
		return rc;
	}
	return 0;
}

int link_recv(struct link *l, struct wire_msg *m, int timeout_ms)
{
	int t = timeout_ms > 0 ? timeout_ms : l->timeout_ms;
	uint64_t deadline = now_mono_ns() + (uint64_t)t * 1000000ull;
	int rc = fill(l, WIRE_HDR_LEN, deadline);
	if (rc < 0)
		return rc;
	uint32_t plen;
	if (wire_header_check(l->rbuf + l->rstart, &plen) < 0) {
		snprintf(l->err, sizeof(l->err), "%s sent a malformed frame header "
		         "(not a ferry replication peer?)", l->peer);
		return -EPROTO;
	}
	rc = fill(l, WIRE_HDR_LEN + plen, deadline);
	if (rc < 0)
		return rc;
	rc = wire_decode(l->rbuf + l->rstart, l->rend - l->rstart, m);
	if (rc < 0) {
		snprintf(l->err, sizeof(l->err), "%s sent a bad frame: %s", l->peer,
		         rc == -EBADMSG ? "CRC32C mismatch" : "malformed fields");
		return rc == -EAGAIN ? -EPROTO : rc;
	}
	l->rstart += (size_t)rc;
	return 0;
}

int link_expect(struct link *l, enum wire_type type, struct wire_msg *m, int timeout_ms)
{
	int rc = link_recv(l, m, timeout_ms);
	if (rc < 0)
		return rc;
	if (m->type == type)
		return 0;
	if (m->type == WIRE_ERROR) {
		snprintf(l->err, sizeof(l->err), "%s", m->u.error.msg);
		return -m->u.error.code;
	}
	snprintf(l->err, sizeof(l->err), "%s sent %s where %s was expected", l->peer,
	         wire_type_name(m->type), wire_type_name(type));
	return -EPROTO;
}

/* ---- authentication ---------------------------------------------------- */
static void auth_mac(const uint8_t *secret, size_t slen, const char *label,
                     uint16_t version, const uint8_t *nc, const uint8_t *ns,
                     uint8_t out[WIRE_MAC_LEN])
{
	uint8_t msg[64 + 2 + 2 * WIRE_NONCE_LEN];
	size_t ll = strlen(label);
	memcpy(msg, label, ll);
	msg[ll] = (uint8_t)version;
	msg[ll + 1] = (uint8_t)(version >> 8);
	memcpy(msg + ll + 2, nc, WIRE_NONCE_LEN);
	memcpy(msg + ll + 2 + WIRE_NONCE_LEN, ns, WIRE_NONCE_LEN);
	unsigned olen = WIRE_MAC_LEN;
	HMAC(EVP_sha256(), secret, (int)slen, msg, ll + 2 + 2 * WIRE_NONCE_LEN, out, &olen);
}

/* Prefixes a peer's ERROR text so that logs say who refused whom. */
static void refused(struct link *l)
{
	char tmp[WIRE_TEXT_MAX + 1];
	snprintf(tmp, sizeof(tmp), "%.255s", l->err);
	snprintf(l->err, sizeof(l->err), "peer %.200s refused us: %s", l->peer, tmp);
}

/* Distinct labels per direction so that a proof can never be reflected
 * back at the side that produced it. */
#define LABEL_SERVER "ferry-repl v1 server proof"
#define LABEL_CLIENT "ferry-repl v1 client proof"

int link_handshake_client(struct link *l, const uint8_t *secret, size_t slen,
                          const char *site)
{
	struct wire_msg m = { .type = WIRE_HELLO };
	uint8_t nc[WIRE_NONCE_LEN];
	if (RAND_bytes(nc, sizeof(nc)) != 1) {
		snprintf(l->err, sizeof(l->err), "no randomness for the nonce");
		log_error("repl: %s", l->err);
		return -EIO;
	}
	m.u.hello.vmin = link_test_client_version;
	m.u.hello.vmax = link_test_client_version;
	memcpy(m.u.hello.nonce, nc, sizeof(nc));
	snprintf(m.u.hello.site, sizeof(m.u.hello.site), "%s", site ? site : "");
	int rc = link_send(l, &m);
	if (rc < 0)
		goto fail;
	rc = link_expect(l, WIRE_HELLO_OK, &m, 0);
	if (rc < 0) {
		if (m.type == WIRE_ERROR)
			refused(l);
		goto fail;
	}
	if (m.u.hello_ok.version != link_test_client_version) {
		rc = -EPROTONOSUPPORT;
		snprintf(l->err, sizeof(l->err), "peer %s chose protocol version %u, "
		         "this site speaks %u", l->peer, m.u.hello_ok.version,
		         link_test_client_version);
		link_send_error(l, rc, "protocol version mismatch: this site speaks %u",
		                link_test_client_version);
		goto fail;
	}
	uint8_t want[WIRE_MAC_LEN];
	auth_mac(secret, slen, LABEL_SERVER, m.u.hello_ok.version, nc,
	         m.u.hello_ok.nonce, want);
	if (CRYPTO_memcmp(want, m.u.hello_ok.mac, WIRE_MAC_LEN) != 0) {
		rc = -EACCES;
		snprintf(l->err, sizeof(l->err), "peer %s failed authentication "
		         "(its secret differs from ours)", l->peer);
		link_send_error(l, rc, "authentication failed: your proof does not match "
		                "our secret (wrong secret)");
		goto fail;
	}
	snprintf(l->remote_site, sizeof(l->remote_site), "%s", m.u.hello_ok.site);
	struct wire_msg a = { .type = WIRE_AUTH };
	auth_mac(secret, slen, LABEL_CLIENT, m.u.hello_ok.version, m.u.hello_ok.nonce,
	         nc, a.u.auth.mac);
	rc = link_send(l, &a);
	if (rc < 0)
		goto fail;
	rc = link_expect(l, WIRE_AUTH_OK, &m, 0);
	if (rc < 0) {
		if (m.type == WIRE_ERROR)
			refused(l);
		goto fail;
	}
	return 0;
fail:
	log_error("repl: handshake with %s: %s", l->peer, l->err);
	return rc;
}

int link_handshake_server(struct link *l, const uint8_t *secret, size_t slen,
                          const char *site)
{
	struct wire_msg m;
	int rc = link_expect(l, WIRE_HELLO, &m, 0);
	if (rc < 0)
		goto fail;
	if (m.u.hello.vmin > WIRE_VERSION || m.u.hello.vmax < WIRE_VERSION) {
		rc = -EPROTONOSUPPORT;
		snprintf(l->err, sizeof(l->err), "peer %s speaks protocol versions %u..%u, "
		         "this site speaks %u", l->peer, m.u.hello.vmin, m.u.hello.vmax,
		         WIRE_VERSION);
		link_send_error(l, rc, "protocol version mismatch: you speak %u..%u, "
		                "this site speaks %u", m.u.hello.vmin, m.u.hello.vmax,
		                WIRE_VERSION);
		goto fail;
	}
	snprintf(l->remote_site, sizeof(l->remote_site), "%s", m.u.hello.site);
	uint8_t nc[WIRE_NONCE_LEN];
	memcpy(nc, m.u.hello.nonce, sizeof(nc));
	struct wire_msg r = { .type = WIRE_HELLO_OK };
	r.u.hello_ok.version = WIRE_VERSION;
	if (RAND_bytes(r.u.hello_ok.nonce, WIRE_NONCE_LEN) != 1) {
		rc = -EIO;
		snprintf(l->err, sizeof(l->err), "no randomness for the nonce");
		goto fail;
	}
	auth_mac(secret, slen, LABEL_SERVER, WIRE_VERSION, nc, r.u.hello_ok.nonce,
	         r.u.hello_ok.mac);
	snprintf(r.u.hello_ok.site, sizeof(r.u.hello_ok.site), "%s", site ? site : "");
	rc = link_send(l, &r);
	if (rc < 0)
		goto fail;
	rc = link_expect(l, WIRE_AUTH, &m, 0);
	if (rc < 0) {
		if (m.type == WIRE_ERROR)
			refused(l);
		goto fail;
	}
	uint8_t want[WIRE_MAC_LEN];
	auth_mac(secret, slen, LABEL_CLIENT, WIRE_VERSION, r.u.hello_ok.nonce, nc, want);
	if (CRYPTO_memcmp(want, m.u.auth.mac, WIRE_MAC_LEN) != 0) {
		rc = -EACCES;
		snprintf(l->err, sizeof(l->err), "peer %s failed authentication "
		         "(wrong secret)", l->peer);
		link_send_error(l, rc, "authentication failed: wrong secret");
		goto fail;
	}
	struct wire_msg ok = { .type = WIRE_AUTH_OK };
	rc = link_send(l, &ok);
	if (rc < 0)
		goto fail;
	return 0;
fail:
	log_error("repl: handshake from %s: %s", l->peer, l->err);
	return rc;
}
