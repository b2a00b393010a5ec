/* repl link: TCP with deadlines, TLS 1.3, mutual HMAC authentication. */
#include "repl/link.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "common/common.h"

uint16_t link_test_client_version = WIRE_VERSION;


/* OpenSSL writes with write(2), not send(MSG_NOSIGNAL): a peer that went
 * away raises SIGPIPE.  ferryd ignores SIGPIPE process-wide (a daemon must
 * never die of a vanished peer, and every write of ours checks EPIPE), and
 * then nothing more is needed.  OpenSSL's own socket BIO is kept, rather
 * than a custom one with MSG_NOSIGNAL, because only through it can
 * OpenSSL hand the record layer to the kernel (kTLS).  The link must not
 * depend on the host program, though: where SIGPIPE is not ignored
 * (checked once per connection, link_sigpipe_check), it is blocked around
 * each OpenSSL call and a pending one (ours, from this thread) is
 * consumed.  That costs 3-4 system calls per call, which is why ferryd
 * ignores the signal instead. */
static void link_sigpipe_check(struct link *l)
{
	struct sigaction sa;
	l->mask_sigpipe = !(sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN);
}

static void sigpipe_block(const struct link *l, sigset_t *old)
{
	if (!l->mask_sigpipe)
		return;
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &s, old);
}

static void sigpipe_restore(const struct link *l, const sigset_t *old)
{
	if (!l->mask_sigpipe)
		return;
	int saved = errno;
	if (!sigismember(old, SIGPIPE)) {
		sigset_t s, pend;
		sigemptyset(&s);
		sigaddset(&s, SIGPIPE);
		if (sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE)) {
			struct timespec zero = { 0, 0 };
			(void)sigtimedwait(&s, NULL, &zero);
		}
		pthread_sigmask(SIG_SETMASK, old, NULL);
	}
	errno = saved;
}

/* ---- token bucket ------------------------------------------------------ */
#define BUCKET_WINDOW_NS 50000000ull  /* 50 ms of quota at most */
#define BUCKET_QUANTUM_NS 5000000ull  /* a sender charges ~5 ms at a time */

static uint64_t bucket_now(const struct bucket *b)
{
	return b->now ? b->now(b->clock_ctx) : now_mono_ns();
}

void bucket_init(struct bucket *b, uint64_t rate)
{
	pthread_mutex_init(&b->mu, NULL);
	b->rate = rate;
	b->tokens = 0;
	b->now = NULL;
	b->sleep = NULL;
	b->clock_ctx = NULL;
	b->last_ns = now_mono_ns();
}

void bucket_set_clock(struct bucket *b, uint64_t (*now)(void *ctx),
                      void (*sleep)(void *ctx, uint64_t ns), void *ctx)
{
	pthread_mutex_lock(&b->mu);
	b->now = now;
	b->sleep = sleep;
	b->clock_ctx = ctx;
	b->tokens = 0;
	b->last_ns = bucket_now(b);
	pthread_mutex_unlock(&b->mu);
}

void bucket_set_rate(struct bucket *b, uint64_t rate)
{
	pthread_mutex_lock(&b->mu);
	b->rate = rate;
	b->tokens = 0;
	b->last_ns = bucket_now(b);
	pthread_mutex_unlock(&b->mu);
}

void bucket_destroy(struct bucket *b) { pthread_mutex_destroy(&b->mu); }

uint64_t bucket_charge_at(struct bucket *b, size_t n, uint64_t now)
{
	pthread_mutex_lock(&b->mu);
	if (!b->rate) {
		pthread_mutex_unlock(&b->mu);
		return 0;
	}
	double cap = (double)b->rate * (double)BUCKET_WINDOW_NS / 1e9;
	if (now > b->last_ns)
		b->tokens += (double)(now - b->last_ns) * (double)b->rate / 1e9;
	if (b->tokens > cap)
		b->tokens = cap;
	if (now > b->last_ns)
		b->last_ns = now;
	b->tokens -= (double)n;
	uint64_t wait = 0;
	if (b->tokens < 0)
		wait = (uint64_t)(-b->tokens * 1e9 / (double)b->rate);
	pthread_mutex_unlock(&b->mu);
	return wait;
}

uint64_t bucket_charge(struct bucket *b, size_t n)
{
	return bucket_charge_at(b, n, bucket_now(b));
}

size_t bucket_chunk(const struct bucket *b)
{
	if (!b || !b->rate)
		return WIRE_DATA_MAX;
	uint64_t c = b->rate * BUCKET_WINDOW_NS / 1000000000ull;
	c &= ~(uint64_t)4095;
	return (size_t)MAX(MIN(c, (uint64_t)WIRE_DATA_MAX), (uint64_t)4096);
}

size_t bucket_quantum(struct bucket *b)
{
	if (!b)
		return SIZE_MAX;
	pthread_mutex_lock(&b->mu);
	uint64_t rate = b->rate;
	pthread_mutex_unlock(&b->mu);
	if (!rate)
		return SIZE_MAX;
	uint64_t q = (rate * BUCKET_QUANTUM_NS / 1000000000ull + 4095) & ~(uint64_t)4095;
	return (size_t)MAX(MIN(q, (uint64_t)1 << 20), (uint64_t)4096);
}


/* ---- TLS contexts ------------------------------------------------------ */
struct link_tls {
	SSL_CTX *cli, *srv;
	bool psk;
	uint8_t key[32];          /* the external PSK */
};

/* The PSK is never the raw secret: a fixed label separates it from the
 * HMAC challenge-response keyed by the same secret. */
#define PSK_LABEL "ferry-repl v1 tls13 external psk"
#define PSK_IDENTITY "ferry-repl-psk-v1"
/* RFC 5705/8446 exporter label of the channel binding. */
#define EXPORTER_LABEL "EXPORTER-ferry-repl-auth-v1"

static void ssl_reason(char *out, size_t olen)
{
	unsigned long e = ERR_peek_last_error();
	if (!e) {
		snprintf(out, olen, "connection closed during the handshake");
		return;
	}
	const char *r = ERR_reason_error_string(e);
	snprintf(out, olen, "%s", r ? r : "TLS error");
	ERR_clear_error();
}

static SSL_SESSION *psk_session(SSL *ssl, const struct link_tls *t)
{
	static const unsigned char aes128gcm[] = { 0x13, 0x01 }; /* TLS_AES_128_GCM_SHA256 */
	const SSL_CIPHER *c = SSL_CIPHER_find(ssl, aes128gcm);
	SSL_SESSION *s = c ? SSL_SESSION_new() : NULL;
	if (!s)
		return NULL;
	if (!SSL_SESSION_set1_master_key(s, t->key, sizeof(t->key)) ||
	    !SSL_SESSION_set_cipher(s, c) ||
	    !SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION)) {
		SSL_SESSION_free(s);
		return NULL;
	}
	return s;
}

static int psk_use_cb(SSL *ssl, const EVP_MD *md, const unsigned char **id,
                      size_t *idlen, SSL_SESSION **sess)
{
	const struct link_tls *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	SSL_SESSION *s = psk_session(ssl, t);
	if (!s)
		return 0;
	/* After a HelloRetryRequest md is the chosen suite's hash: a PSK
	 * bound to another hash must not be offered. */
	if (md && md != SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(s))) {
		SSL_SESSION_free(s);
		*sess = NULL;
		return 1;
	}
	*id = (const unsigned char *)PSK_IDENTITY;
	*idlen = strlen(PSK_IDENTITY);
	*sess = s;
	return 1;
}

static int psk_find_cb(SSL *ssl, const unsigned char *id, size_t idlen,
                       SSL_SESSION **sess)
{
	const struct link_tls *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
	*sess = NULL;
	if (idlen != strlen(PSK_IDENTITY) || memcmp(id, PSK_IDENTITY, idlen) != 0)
		return 1; /* unknown identity: the handshake fails */
	*sess = psk_session(ssl, t);
	return *sess ? 1 : 0;
}

static SSL_CTX *ctx_new(bool server, char *err, size_t errlen)
{
	SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!c) {
		snprintf(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
	/* No resumption: every connection proves the key afresh, and no
	 * ticket arrives unasked in the middle of a transfer. */
	SSL_CTX_set_options(c, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
#ifdef SSL_OP_ENABLE_KTLS
	/* Kernel TLS where the kernel has it (CONFIG_TLS, "tls" in
	 * net.ipv4.tcp_available_ulp): records are then sealed and opened in
	 * the socket layer, without OpenSSL's extra copy; elsewhere OpenSSL
	 * quietly keeps doing them itself. */
	SSL_CTX_set_options(c, SSL_OP_ENABLE_KTLS);
#endif
#ifdef FERRY_TLS_READ_AHEAD
	/* Off by default (docs/PERFORMANCE.md, "TLS read-ahead"); a build
	 * with -DFERRY_TLS_READ_AHEAD exists only to measure it. */
	SSL_CTX_set_read_ahead(c, 1);
#endif
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
	if (server)
		SSL_CTX_set_num_tickets(c, 0);
	SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE |
	                    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* AES-GCM first: AES-NI makes it the fastest here. */
	if (!SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
	                                 "TLS_CHACHA20_POLY1305_SHA256")) {
		snprintf(err, errlen, "cannot set the TLS 1.3 cipher suites");
		SSL_CTX_free(c);
		return NULL;
	}
	return c;
}

static int ctx_certs(SSL_CTX *c, const struct link_tls_opts *o, char *err, size_t errlen)
{
	char why[256];
	if (SSL_CTX_use_certificate_chain_file(c, o->cert) != 1) {
		ssl_reason(why, sizeof(why));
		snprintf(err, errlen, "--tls-cert %s: %s", o->cert, why);
		return -EINVAL;
	}
	if (SSL_CTX_use_PrivateKey_file(c, o->key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(c) != 1) {
		ssl_reason(why, sizeof(why));
		snprintf(err, errlen, "--tls-key %s: %s", o->key, why);
		return -EINVAL;
	}
	if (SSL_CTX_load_verify_locations(c, o->ca, NULL) != 1) {
		ssl_reason(why, sizeof(why));
		snprintf(err, errlen, "--tls-ca %s: %s", o->ca, why);
		return -EINVAL;
	}
	/* Both directions: the server demands a certificate too. */
	SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	return 0;
}

int link_tls_new(const struct link_tls_opts *o, const uint8_t *secret, size_t slen,
                 struct link_tls **out, char *err, size_t errlen)
{
	*out = NULL;
	if (o && o->plaintext)
		return 0;
	bool certs = o && (o->cert || o->key || o->ca);
	if (certs && (!o->cert || !o->key || !o->ca)) {
		snprintf(err, errlen, "certificate mode needs all of --tls-cert, --tls-key "
		         "and --tls-ca");
		return -EINVAL;
	}
	if (!certs && (!secret || !slen)) {
		snprintf(err, errlen, "TLS with a pre-shared key needs a secret (--secret-file)");
		return -EINVAL;
	}
	struct link_tls *t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int rc = -EINVAL;
	t->cli = ctx_new(false, err, errlen);
	t->srv = t->cli ? ctx_new(true, err, errlen) : NULL;
	if (!t->srv)
		goto fail;
	if (certs) {
		if (ctx_certs(t->cli, o, err, errlen) < 0 || ctx_certs(t->srv, o, err, errlen) < 0)
			goto fail;
	} else {
		t->psk = true;
		unsigned kl = sizeof(t->key);
		if (!HMAC(EVP_sha256(), secret, (int)slen, (const uint8_t *)PSK_LABEL,
		          strlen(PSK_LABEL), t->key, &kl)) {
			snprintf(err, errlen, "cannot derive the TLS key");
			goto fail;
		}
		SSL_CTX_set_psk_use_session_callback(t->cli, psk_use_cb);
		SSL_CTX_set_psk_find_session_callback(t->srv, psk_find_cb);
	}
	SSL_CTX_set_app_data(t->cli, t);
	SSL_CTX_set_app_data(t->srv, t);
	*out = t;
	return 0;
fail:
	link_tls_free(t);
	return rc;
}

void link_tls_free(struct link_tls *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->cli);
	SSL_CTX_free(t->srv);
	OPENSSL_cleanse(t->key, sizeof(t->key));
	free(t);
}

void link_set_tls(struct link *l, struct link_tls *t) { l->tls = t; }

/* ---- authentication-failure throttle ------------------------------------ */
/* Per source address: each failure doubles the delay before the next
 * attempt from that address is served (base, 2 base, 4 base ... cap);
 * one step is forgiven per THROTTLE_DECAY_NS of quiet, and a success
 * clears the address.  Attempts are also serialised: the next one may
 * start only `delay` after the previous one started, so parallel
 * connections do not multiply an attacker's guesses. */
#define THROTTLE_SLOTS 256
#define THROTTLE_DECAY_NS (30ull * 1000000000ull)
struct throttle_ent {
	char addr[64];
	unsigned fails;
	uint64_t last_ns;         /* of the last failure (decay) */
	uint64_t next_ns;         /* earliest start of the next attempt */
};
static pthread_mutex_t throttle_mu = PTHREAD_MUTEX_INITIALIZER;
static struct throttle_ent throttle[THROTTLE_SLOTS];
static unsigned throttle_base_ms = 250, throttle_cap_ms = 8000;

void link_throttle_reset(void)
{
	pthread_mutex_lock(&throttle_mu);
	memset(throttle, 0, sizeof(throttle));
	pthread_mutex_unlock(&throttle_mu);
}

void link_throttle_tune(unsigned base_ms, unsigned cap_ms)
{
	pthread_mutex_lock(&throttle_mu);
	throttle_base_ms = base_ms;
	throttle_cap_ms = cap_ms;
	pthread_mutex_unlock(&throttle_mu);
}

/* "HOST:PORT" / "[V6]:PORT" -> "HOST" */
static void peer_host(const char *peer, char *out, size_t olen)
{
	char port[16];
	if (link_parse_addr(peer, out, olen, port, sizeof(port)) < 0)
		snprintf(out, olen, "%.63s", peer);
}

/* Under throttle_mu.  Decays, and with create takes the oldest slot. */
static struct throttle_ent *throttle_get(const char *addr, uint64_t now, bool create)
{
	struct throttle_ent *victim = &throttle[0];
	for (size_t i = 0; i < THROTTLE_SLOTS; i++) {
		struct throttle_ent *e = &throttle[i];
		if (e->fails && strcmp(e->addr, addr) == 0) {
			uint64_t steps = (now - e->last_ns) / THROTTLE_DECAY_NS;
			if (steps) {
				e->fails = steps >= e->fails ? 0 : e->fails - (unsigned)steps;
				e->last_ns += steps * THROTTLE_DECAY_NS;
			}
			if (e->fails || create)
				return e;
			return NULL;
		}
		if (!e->fails)
			victim = e;
		else if (victim->fails && e->last_ns < victim->last_ns)
			victim = e;
	}
	if (!create)
		return NULL;
	memset(victim, 0, sizeof(*victim));
	snprintf(victim->addr, sizeof(victim->addr), "%s", addr);
	victim->last_ns = now;
	return victim;
}

static uint64_t throttle_delay_ns(unsigned fails)
{
	if (!fails)
		return 0;
	uint64_t ms = (uint64_t)throttle_base_ms << MIN(fails - 1, 20u);
	return MIN(ms, (uint64_t)throttle_cap_ms) * 1000000ull;
}

/* How long the attempt from addr must wait before it is served. */
static uint64_t throttle_enter(const char *addr)
{
	uint64_t now = now_mono_ns(), wait = 0;
	pthread_mutex_lock(&throttle_mu);
	struct throttle_ent *e = throttle_get(addr, now, false);
	if (e) {
		uint64_t start = MAX(now, e->next_ns);
		wait = start - now;
		/* A queue longer than twice the cap is refused outright so that
		 * a flood cannot park connection threads for minutes. */
		if (wait > 2ull * throttle_cap_ms * 1000000ull)
			wait = UINT64_MAX;
		else
			e->next_ns = start + throttle_delay_ns(e->fails);
	}
	pthread_mutex_unlock(&throttle_mu);
	return wait;
}

static void throttle_result(const char *addr, bool ok)
{
	uint64_t now = now_mono_ns();
	pthread_mutex_lock(&throttle_mu);
	struct throttle_ent *e = throttle_get(addr, now, !ok);
	if (e && ok) {
		memset(e, 0, sizeof(*e));
	} else if (e) {
		e->fails++;
		e->last_ns = now;
		e->next_ns = MAX(e->next_ns, now + throttle_delay_ns(e->fails));
	}
	pthread_mutex_unlock(&throttle_mu);
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
		/* A deep backlog: connections a flood makes wait here must not
		 * push a peer's SYN into a retransmission. */
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0 ||
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
	if (l->ssl) {
		/* Best effort close_notify; the socket is non-blocking. */
		if (!atomic_load(&l->aborted) && SSL_is_init_finished(l->ssl)) {
			sigset_t old;
			sigpipe_block(l, &old);
			(void)SSL_shutdown(l->ssl);
			sigpipe_restore(l, &old);
		}
		SSL_free(l->ssl);
		ERR_clear_error();
	}
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

void link_abort_read(struct link *l)
{
	atomic_store(&l->aborted, true);
	shutdown(l->fd, SHUT_RD); /* wakes a poll for input at once */
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
	if (l->hs_deadline_ns && l->hs_deadline_ns < deadline)
		deadline = l->hs_deadline_ns;
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

/* One read or write on the connection, through TLS when it is on.
 * Returns bytes moved (> 0), 0 at the end of the stream, -EAGAIN with
 * *want set to the poll event to wait for, or another -errno with l->err
 * set for TLS errors. */
static ssize_t io_read(struct link *l, void *buf, size_t len, short *want)
{
	if (!l->ssl) {
		ssize_t n = recv(l->fd, buf, len, 0);
		if (n >= 0)
			return n;
		*want = POLLIN;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
	ERR_clear_error();
	sigset_t old;
	sigpipe_block(l, &old); /* a read may answer a KeyUpdate */
	errno = 0;
	int n = SSL_read(l->ssl, buf, (int)MIN(len, (size_t)INT_MAX));
	sigpipe_restore(l, &old);
	if (n > 0)
		return n;
	switch (SSL_get_error(l->ssl, n)) {
	case SSL_ERROR_WANT_READ:
		*want = POLLIN;
		return -EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		*want = POLLOUT;
		return -EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		return errno ? -errno : 0;
	default: {
		char why[200];
		ssl_reason(why, sizeof(why));
		snprintf(l->err, sizeof(l->err), "TLS receive from %s: %s", l->peer, why);
		return -EPROTO;
	}
	}
}

static ssize_t io_write(struct link *l, const void *buf, size_t len, short *want)
{
	if (!l->ssl) {
		ssize_t n = send(l->fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0)
			return n;
		*want = POLLOUT;
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
	ERR_clear_error();
	sigset_t old;
	sigpipe_block(l, &old);
	errno = 0;
	int n = SSL_write(l->ssl, buf, (int)MIN(len, (size_t)INT_MAX));
	sigpipe_restore(l, &old);
	if (n > 0)
		return n;
	switch (SSL_get_error(l->ssl, n)) {
	case SSL_ERROR_WANT_READ:
		*want = POLLIN;
		return -EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		*want = POLLOUT;
		return -EAGAIN;
	case SSL_ERROR_SYSCALL:
		return errno ? -errno : -EPIPE;
	default: {
		char why[200];
		ssl_reason(why, sizeof(why));
		snprintf(l->err, sizeof(l->err), "TLS send to %s: %s", l->peer, why);
		return -EPROTO;
	}
	}
}

static int send_bytes(struct link *l, const uint8_t *p, size_t len)
{
	uint64_t deadline = now_mono_ns() + (uint64_t)l->timeout_ms * 1000000ull;
	while (len) {
		if (atomic_load(&l->aborted))
			return -ECANCELED;
		short want = POLLOUT;
		ssize_t n = io_write(l, p, len, &want);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			l->tx_bytes += (uint64_t)n;
			continue;
		}
		if (n == -EINTR)
			continue;
		if (n == -EAGAIN) {
			int rc = wait_fd(l, want, deadline);
			if (rc < 0) {
				snprintf(l->err, sizeof(l->err), "send to %s: %s", l->peer,
				         rc == -ETIMEDOUT ? "peer stopped reading (deadline passed)"
				                          : strerror(-rc));
				return rc;
			}
			continue;
		}
		int rc = n < 0 ? (int)n : -EPIPE;
		if (atomic_load(&l->aborted))
			rc = -ECANCELED;
		if (rc != -EPROTO)
			snprintf(l->err, sizeof(l->err), "send to %s: %s", l->peer, strerror(-rc));
		return rc;
	}
	return 0;
}

/* Sleeps off bandwidth debt in short slices so an abort is noticed. */
static int pace(struct link *l, size_t n)
{
	struct bucket *b = l->bucket;
	uint64_t wait = bucket_charge(b, n);
	uint64_t end = bucket_now(b) + wait;
	while (wait) {
		if (atomic_load(&l->aborted))
			return -ECANCELED;
		uint64_t slice = MIN(wait, 20000000ull);
		if (b->sleep) {
			b->sleep(b->clock_ctx, slice);
		} else {
			struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)slice };
			nanosleep(&ts, NULL);
		}
		uint64_t now = bucket_now(b);
		wait = now >= end ? 0 : end - now;
	}
	return 0;
}

/* A paced link charges and sends a few milliseconds' worth at a time
 * (bucket_quantum): charging a whole object (up to several MiB) and then
 * sleeping off the debt would send it at line rate, then pause, and the
 * rate seen by the network would swing by the object size. */
int link_send_raw(struct link *l, const void *frames, size_t len)
{
	const uint8_t *p = frames;
	size_t q = l->bucket ? bucket_quantum(l->bucket) : SIZE_MAX;
	do {
		size_t n = MIN(len, q);
		int rc = l->bucket ? pace(l, n) : 0;
		if (rc == 0)
			rc = send_bytes(l, p, n);
		if (rc < 0)
			return rc;
		p += n;
		len -= n;
	} while (len);
	return 0;
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

bool link_buffered(struct link *l)
{
	return l->rend > l->rstart || (l->ssl && SSL_has_pending(l->ssl));
}

/* Reads and drops what the peer sent and we will not read (a close with
 * unread input is a reset, which may destroy what we sent last). */
static void drain_input(struct link *l)
{
	uint8_t scratch[4096];
	for (int i = 0; i < 64; i++)
		if (recv(l->fd, scratch, sizeof(scratch), MSG_DONTWAIT) <= 0)
			break;
}

int link_refuse(struct link *l, int code, const char *fmt, ...)
{
	/* Anything of ours on the wire (a ServerHello, a frame) and the peer
	 * would read the frame as part of that stream. */
	if (l->tx_bytes || (l->ssl && BIO_number_written(SSL_get_wbio(l->ssl)) > 0))
		return -EALREADY;
	struct wire_msg m = { .type = WIRE_ERROR };
	m.u.error.code = code < 0 ? -code : code;
	if (m.u.error.code <= 0 || m.u.error.code > 4095)
		m.u.error.code = EIO;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m.u.error.msg, sizeof(m.u.error.msg), fmt, ap);
	va_end(ap);
	int n = wire_encode(&m, l->wbuf, WIRE_FRAME_MAX);
	if (n < 0)
		return n;
	drain_input(l);
	/* A new connection's send buffer is empty: the frame fits, no wait. */
	(void)send(l->fd, l->wbuf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	shutdown(l->fd, SHUT_WR);
	drain_input(l);
	return 0;
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
		short ev = POLLIN;
		ssize_t n = io_read(l, l->rbuf + l->rend, l->rcap - l->rend, &ev);
		if (n > 0) {
			l->rend += (size_t)n;
			l->rx_bytes += (uint64_t)n;
			continue;
		}
		if (n == 0) {
			snprintf(l->err, sizeof(l->err), "%s closed the connection", l->peer);
			return atomic_load(&l->aborted) ? -ECANCELED : -ECONNRESET;
		}
		if (n == -EINTR)
			continue;
		if (n == -EAGAIN) {
			int rc = wait_fd(l, ev, deadline);
			if (rc < 0) {
				snprintf(l->err, sizeof(l->err), "receive from %s: %s", l->peer,
				         rc == -ETIMEDOUT ? "no answer before the deadline"
				                          : strerror(-rc));
				return rc;
			}
			continue;
		}
		int rc = (int)n;
		if (atomic_load(&l->aborted))
			return -ECANCELED;
		if (rc != -EPROTO)
			snprintf(l->err, sizeof(l->err), "receive from %s: %s", l->peer,
			         strerror(-rc));
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
#define CB_LEN 32

/* cb: the TLS exporter value (channel binding), or NULL on plaintext. */
static void auth_mac(const uint8_t *secret, size_t slen, const char *label,
                     uint16_t version, const uint8_t *nc, const uint8_t *ns,
                     const uint8_t *cb, uint8_t out[WIRE_MAC_LEN])
{
	uint8_t msg[64 + 2 + 2 * WIRE_NONCE_LEN + CB_LEN];
	size_t ll = strlen(label);
	memcpy(msg, label, ll);
	msg[ll] = (uint8_t)version;
	msg[ll + 1] = (uint8_t)(version >> 8);
	memcpy(msg + ll + 2, nc, WIRE_NONCE_LEN);
	memcpy(msg + ll + 2 + WIRE_NONCE_LEN, ns, WIRE_NONCE_LEN);
	size_t mlen = ll + 2 + 2 * WIRE_NONCE_LEN;
	if (cb) {
		memcpy(msg + mlen, cb, CB_LEN);
		mlen += CB_LEN;
	}
	unsigned olen = WIRE_MAC_LEN;
	HMAC(EVP_sha256(), secret, (int)slen, msg, mlen, out, &olen);
}

/* Prefixes a peer's ERROR text so that logs say who refused whom. */
static void refused(struct link *l, int rc)
{
	char tmp[WIRE_TEXT_MAX + 1];
	snprintf(tmp, sizeof(tmp), "%.255s", l->err);
	/* EBUSY: the site refused for load, not because of who we are. */
	snprintf(l->err, sizeof(l->err), "peer %.200s refused %s: %s", l->peer,
	         rc == -EBUSY ? "the connection" : "us", tmp);
}

/* What the server's handshake logs: to the listener's hook when it has
 * one (it rate-limits what a flood of connections would make us write),
 * else to the log.  rc: 0 for a notice, else the failure's -errno. */
static void srv_log(struct link *l, int rc, enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void srv_log(struct link *l, int rc, enum log_level level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (rc == -ETIMEDOUT && l->hs_deadline_ns && now_mono_ns() >= l->hs_deadline_ns) {
		/* Whichever step was waiting, the whole handshake ran out. */
		snprintf(l->err, sizeof(l->err), "%s did not complete the handshake within %d ms",
		         l->peer, l->hs_timeout_ms);
		snprintf(msg, sizeof(msg), "repl: handshake from %s: %s", l->peer, l->err);
	}
	if (rc < 0 && atomic_load(&l->aborted))
		rc = -ECANCELED; /* whatever it looked like, we ended it */
	if (l->hs_log)
		l->hs_log(l->hs_log_ctx, rc, level, msg);
	else
		log_msg(level, "%s", msg);
}

/* Distinct labels per direction so that a proof can never be reflected
 * back at the side that produced it. */
#define LABEL_SERVER "ferry-repl v1 server proof"
#define LABEL_CLIENT "ferry-repl v1 client proof"

static int hmac_client(struct link *l, const uint8_t *secret, size_t slen,
                       const char *site, const uint8_t *cbp)
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
			refused(l, rc);
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
	         m.u.hello_ok.nonce, cbp, want);
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
	         nc, cbp, a.u.auth.mac);
	rc = link_send(l, &a);
	if (rc < 0)
		goto fail;
	rc = link_expect(l, WIRE_AUTH_OK, &m, 0);
	if (rc < 0) {
		if (m.type == WIRE_ERROR)
			refused(l, rc);
		goto fail;
	}
	return 0;
fail:
	log_error("repl: handshake with %s: %s", l->peer, l->err);
	return rc;
}

/* first: the HELLO when the caller already read it, else NULL. */
static int hmac_server(struct link *l, const uint8_t *secret, size_t slen,
                       const char *site, const uint8_t *cbp,
                       const struct wire_msg *first)
{
	struct wire_msg m;
	int rc = 0;
	if (first)
		m = *first;
	else
		rc = link_expect(l, WIRE_HELLO, &m, 0);
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
	         cbp, r.u.hello_ok.mac);
	snprintf(r.u.hello_ok.site, sizeof(r.u.hello_ok.site), "%s", site ? site : "");
	rc = link_send(l, &r);
	if (rc < 0)
		goto fail;
	rc = link_expect(l, WIRE_AUTH, &m, 0);
	if (rc < 0) {
		if (m.type == WIRE_ERROR)
			refused(l, rc);
		goto fail;
	}
	uint8_t want[WIRE_MAC_LEN];
	auth_mac(secret, slen, LABEL_CLIENT, WIRE_VERSION, r.u.hello_ok.nonce, nc, cbp, want);
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
	srv_log(l, rc, LOG_ERROR, "repl: handshake from %s: %s", l->peer, l->err);
	return rc;
}

/* ---- TLS handshake and the TLS / plaintext mismatch -------------------- */
static const uint8_t frame_magic[4] = { 'F', 'R', 'Y', '1' }; /* WIRE_MAGIC */

/* The server ran --plaintext and answered our ClientHello with a ferry
 * ERROR frame: read it so that the user learns why. */
static int tls_refused_by_plaintext_peer(struct link *l)
{
	SSL_free(l->ssl);
	l->ssl = NULL;
	ERR_clear_error();
	struct wire_msg m;
	int rc = link_recv(l, &m, 2000);
	if (rc == 0 && m.type == WIRE_ERROR) {
		/* EPROTO from a --plaintext site; EBUSY from a site refusing
		 * connections for load (link_refuse). */
		snprintf(l->err, sizeof(l->err), "peer %.200s refused %s: %.255s", l->peer,
		         m.u.error.code == EBUSY ? "the connection" : "us", m.u.error.msg);
		return -m.u.error.code;
	}
	snprintf(l->err, sizeof(l->err), "peer %s answered TLS in plaintext "
	         "(it runs with --plaintext?)", l->peer);
	return -EPROTO;
}

static int tls_handshake(struct link *l, bool server)
{
	l->ssl = SSL_new(server ? l->tls->srv : l->tls->cli);
	/* The client reads nothing through OpenSSL until it has seen the
	 * first bytes of the answer: a plaintext site answers with a ferry
	 * ERROR frame, which OpenSSL would swallow as a bad record.  Until
	 * then its read side is an empty memory BIO that says "retry". */
	bool gate = !server;
	if (l->ssl && gate) {
		BIO *w = BIO_new_socket(l->fd, BIO_NOCLOSE);
		BIO *r = BIO_new(BIO_s_mem());
		if (!w || !r) {
			BIO_free(w);
			BIO_free(r);
			SSL_free(l->ssl);
			l->ssl = NULL;
		} else {
			BIO_set_mem_eof_return(r, -1);
			SSL_set_bio(l->ssl, r, w);
		}
	} else if (l->ssl && SSL_set_fd(l->ssl, l->fd) != 1) {
		SSL_free(l->ssl);
		l->ssl = NULL;
	}
	if (!l->ssl) {
		snprintf(l->err, sizeof(l->err), "cannot set up TLS");
		return -ENOMEM;
	}
	link_sigpipe_check(l);
	/* No read-ahead (OpenSSL's default): a 256 KiB read-ahead buffer
	 * saves one recv() per 16 KiB record, but bench/link_bench showed no
	 * gain in the receiver's CPU, with or without a backlog in the
	 * socket, and OpenSSL 3.0 moves the unread rest of that buffer about
	 * (ssl3_read_n) as it goes (docs/PERFORMANCE.md, "TLS"). */
	uint64_t deadline = now_mono_ns() + (uint64_t)l->timeout_ms * 1000000ull;
	const char *dir = server ? "from" : "with";
	for (;;) {
		if (atomic_load(&l->aborted))
			return -ECANCELED;
		ERR_clear_error();
		sigset_t old;
		sigpipe_block(l, &old);
		errno = 0;
		int n = server ? SSL_accept(l->ssl) : SSL_connect(l->ssl);
		sigpipe_restore(l, &old);
		if (n == 1) {
			l->ktls_tx = BIO_get_ktls_send(SSL_get_wbio(l->ssl));
			l->ktls_rx = BIO_get_ktls_recv(SSL_get_rbio(l->ssl));
			log_debug("repl: TLS %s %s: kernel TLS send %s, receive %s", dir, l->peer,
			          l->ktls_tx ? "on" : "off", l->ktls_rx ? "on" : "off");
			return 0;
		}
		int e = SSL_get_error(l->ssl, n);
		short ev;
		if (e == SSL_ERROR_WANT_READ) {
			ev = POLLIN;
		} else if (e == SSL_ERROR_WANT_WRITE) {
			ev = POLLOUT;
		} else {
			char why[200];
			int rc = -EACCES;
			if (e == SSL_ERROR_SSL) {
				ssl_reason(why, sizeof(why));
			} else {
				rc = -ECONNRESET;
				snprintf(why, sizeof(why), "%s", errno ? strerror(errno)
				         : "the peer closed the connection");
			}
			if (atomic_load(&l->aborted))
				return -ECANCELED;
			if (rc == -ECONNRESET)
				/* No alert: a proxy or firewall cutting the connection
				 * looks the same as a peer that refused our key. */
				snprintf(l->err, sizeof(l->err), "TLS handshake %s %.200s: %.120s before "
				         "it completed (the connection was cut on the way, or the other "
				         "site uses another secret or TLS settings)", dir, l->peer, why);
			else if (l->tls->psk)
				snprintf(l->err, sizeof(l->err), "authentication failed (wrong secret?): "
				         "TLS handshake %s %.200s: %.180s; both sites need the same "
				         "secret and TLS settings", dir, l->peer, why);
			else
				snprintf(l->err, sizeof(l->err), "authentication failed: TLS handshake "
				         "%s %.200s: %.180s; check --tls-cert / --tls-ca on both sites",
				         dir, l->peer, why);
			return rc;
		}
		int rc = wait_fd(l, ev, deadline);
		if (rc < 0) {
			snprintf(l->err, sizeof(l->err), "TLS handshake %s %s: %s", dir, l->peer,
			         rc == -ETIMEDOUT ? "no answer before the deadline" : strerror(-rc));
			return rc;
		}
		if (gate && ev == POLLIN) {
			uint8_t pk[4];
			ssize_t k = recv(l->fd, pk, sizeof(pk), MSG_PEEK);
			if (k == (ssize_t)sizeof(pk) && memcmp(pk, frame_magic, sizeof(pk)) == 0)
				return tls_refused_by_plaintext_peer(l);
			if (k > 0 && k < (ssize_t)sizeof(pk) && pk[0] == frame_magic[0]) {
				/* Maybe the start of a frame: wait for the rest. */
				struct timespec ts = { 0, 1000000 };
				nanosleep(&ts, NULL);
				continue;
			}
			BIO *sock = BIO_new_socket(l->fd, BIO_NOCLOSE);
			if (!sock) {
				snprintf(l->err, sizeof(l->err), "cannot set up TLS");
				return -ENOMEM;
			}
			SSL_set0_rbio(l->ssl, sock);
			gate = false;
		}
	}
}

/* RFC 9266-style channel binding: both ends derive the same value from
 * their TLS session; a relay between two TLS sessions sees two values. */
static int tls_binding(struct link *l, uint8_t cb[CB_LEN])
{
	if (SSL_export_keying_material(l->ssl, cb, CB_LEN, EXPORTER_LABEL,
	                               strlen(EXPORTER_LABEL), NULL, 0, 0) != 1) {
		snprintf(l->err, sizeof(l->err), "cannot export the TLS channel binding");
		ERR_clear_error();
		return -EIO;
	}
	return 0;
}

int link_handshake_client(struct link *l, const uint8_t *secret, size_t slen,
                          const char *site)
{
	uint8_t cb[CB_LEN];
	if (l->tls) {
		int rc = tls_handshake(l, false);
		if (rc == 0)
			rc = tls_binding(l, cb);
		if (rc < 0) {
			log_error("repl: handshake with %s: %s", l->peer, l->err);
			return rc;
		}
	}
	return hmac_client(l, secret, slen, site, l->tls ? cb : NULL);
}

/* The client sent a TLS ClientHello to a plaintext site: tell it in a
 * frame it can read (tls_refused_by_plaintext_peer), then wait for it to
 * close so that our unread bytes do not turn the close into a reset that
 * would destroy the frame. */
static void refuse_tls_client(struct link *l)
{
	link_send_error(l, EPROTO, "this site runs with --plaintext and the peer uses TLS: "
	                "give both sites the same --plaintext / TLS settings");
	snprintf(l->err, sizeof(l->err), "peer %s uses TLS but this site runs with "
	         "--plaintext", l->peer);
	shutdown(l->fd, SHUT_WR);
	uint64_t deadline = now_mono_ns() + 1000000000ull;
	uint8_t scratch[4096];
	for (;;) {
		ssize_t n = recv(l->fd, scratch, sizeof(scratch), 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			break;
		if (n < 0 && wait_fd(l, POLLIN, deadline) < 0)
			break;
	}
}

/* A plaintext frame reached a TLS site.  A version mismatch is the more
 * basic problem and is reported as such (by hmac_server). */
static int refuse_plaintext_client(struct link *l, const uint8_t *secret, size_t slen,
                                   const char *site)
{
	struct wire_msg m;
	int rc = link_expect(l, WIRE_HELLO, &m, 0);
	if (rc < 0)
		return rc;
	if (m.u.hello.vmin > WIRE_VERSION || m.u.hello.vmax < WIRE_VERSION)
		return hmac_server(l, secret, slen, site, NULL, &m);
	link_send_error(l, EPROTO, "this site requires TLS and the peer runs with --plaintext: "
	                "give both sites the same --plaintext / TLS settings");
	snprintf(l->err, sizeof(l->err), "peer %s runs with --plaintext but this site "
	         "requires TLS", l->peer);
	return -EPROTO;
}

/* Sleeps ns unless the link is aborted first. */
static int sleep_abortable(struct link *l, uint64_t ns)
{
	uint64_t end = now_mono_ns() + ns;
	for (;;) {
		if (atomic_load(&l->aborted))
			return -ECANCELED;
		uint64_t now = now_mono_ns();
		if (now >= end)
			return 0;
		uint64_t slice = MIN(end - now, 50000000ull);
		struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)slice };
		nanosleep(&ts, NULL);
	}
}

static int handshake_server(struct link *l, const uint8_t *secret, size_t slen,
                            const char *site, const char *host);

int link_handshake_server(struct link *l, const uint8_t *secret, size_t slen,
                          const char *site)
{
	char host[64];
	peer_host(l->peer, host, sizeof(host));
	uint64_t wait = throttle_enter(host);
	if (wait == UINT64_MAX) {
		snprintf(l->err, sizeof(l->err), "refused %s: too many failed authentications "
		         "from %s, try later", l->peer, host);
		srv_log(l, -EACCES, LOG_WARN, "repl: %s", l->err);
		return -EACCES;
	}
	if (wait) {
		srv_log(l, 0, LOG_WARN, "repl: delaying %s by %" PRIu64 " ms after failed "
		        "authentications from %s", l->peer, (uint64_t)(wait / 1000000u), host);
		if (sleep_abortable(l, wait) < 0)
			return -ECANCELED;
	}
	/* The delay above is ours to impose, the rest is the peer's time. */
	if (l->hs_timeout_ms > 0)
		l->hs_deadline_ns = now_mono_ns() + (uint64_t)l->hs_timeout_ms * 1000000ull;
	int rc = handshake_server(l, secret, slen, site, host);
	if (rc == -ETIMEDOUT && l->hs_deadline_ns && now_mono_ns() >= l->hs_deadline_ns)
		snprintf(l->err, sizeof(l->err), "%s did not complete the handshake within %d ms",
		         l->peer, l->hs_timeout_ms);
	l->hs_deadline_ns = 0;
	return rc;
}

static int handshake_server(struct link *l, const uint8_t *secret, size_t slen,
                            const char *site, const char *host)
{
	/* The first byte tells a TLS ClientHello (record type 22) from a
	 * ferry frame. */
	uint64_t deadline = now_mono_ns() + (uint64_t)l->timeout_ms * 1000000ull;
	uint8_t b = 0;
	int rc = 0;
	for (;;) {
		ssize_t n = recv(l->fd, &b, 1, MSG_PEEK);
		if (n == 1) {
			if (l->hs_active)
				l->hs_active(l->hs_active_ctx);
			break;
		}
		if (n == 0) {
			rc = -ECONNRESET;
			snprintf(l->err, sizeof(l->err), "%s closed the connection", l->peer);
		} else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
			rc = wait_fd(l, POLLIN, deadline);
			if (rc == 0)
				continue;
			snprintf(l->err, sizeof(l->err), "receive from %s: %s", l->peer,
			         rc == -ETIMEDOUT ? "no answer before the deadline"
			                          : strerror(-rc));
		} else {
			rc = -errno;
			snprintf(l->err, sizeof(l->err), "receive from %s: %s", l->peer,
			         strerror(-rc));
		}
		srv_log(l, rc, LOG_ERROR, "repl: handshake from %s: %s", l->peer, l->err);
		return rc;
	}
	bool is_tls = b == 22;
	if (is_tls && !l->tls) {
		refuse_tls_client(l);
		srv_log(l, -EPROTO, LOG_ERROR, "repl: handshake from %s: %s", l->peer, l->err);
		return -EPROTO;
	}
	if (!is_tls && l->tls) {
		rc = refuse_plaintext_client(l, secret, slen, site);
		if (rc != -EPROTONOSUPPORT) /* hmac_server logged that one */
			srv_log(l, rc, LOG_ERROR, "repl: handshake from %s: %s", l->peer, l->err);
		return rc;
	}
	uint8_t cb[CB_LEN];
	if (l->tls) {
		rc = tls_handshake(l, true);
		if (rc == 0)
			rc = tls_binding(l, cb);
		if (rc < 0) {
			srv_log(l, rc, LOG_ERROR, "repl: handshake from %s: %s", l->peer, l->err);
			if (rc == -EACCES)
				throttle_result(host, false);
			return rc;
		}
	}
	rc = hmac_server(l, secret, slen, site, l->tls ? cb : NULL, NULL);
	if (rc == 0 || rc == -EACCES)
		throttle_result(host, rc == 0);
	return rc;
}
