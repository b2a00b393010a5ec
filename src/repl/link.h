/* repl link: one authenticated TCP connection between two sites.
 *
 * The connection is TLS 1.3 (keyed from the shared secret, or from
 * certificates) unless both ends were set up for plaintext; on top of it
 * the HMAC challenge-response runs, bound to the TLS session
 * (docs/PROTOCOL.md, "Security").
 *
 * Every operation has a deadline (poll-based); none blocks forever.  A
 * link may be aborted from another thread (link_abort), which makes the
 * pending and every later operation fail with -ECANCELED quickly.
 * Private to src/repl.
 */
#ifndef FERRY_REPL_LINK_H
#define FERRY_REPL_LINK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "common/common.h"
#include "repl/wire.h"

/* TLS settings shared by every link of a daemon. */
struct link_tls_opts {
	bool plaintext;           /* no TLS at all (both sites must agree) */
	const char *cert;         /* PEM chain; with key and ca: certificate mode */
	const char *key;          /* PEM private key */
	const char *ca;           /* PEM CA(s) the peer's certificate must chain to */
};
struct link_tls;
struct link;
/* Builds the TLS contexts: certificate mode when o->cert is set, else an
 * external PSK derived from secret (HMAC-SHA256 with a fixed label).
 * With o->plaintext, *out is NULL (links stay plaintext) and 0 returns.
 * *out is owned by the caller (link_tls_free); the reason of a failure
 * goes to err[errlen] and is not logged. */
int link_tls_new(const struct link_tls_opts *o, const uint8_t *secret, size_t slen,
                 struct link_tls **out, char *err, size_t errlen);
void link_tls_free(struct link_tls *t);
/* Before the handshake: which TLS settings this link uses (not owned;
 * NULL = plaintext). */
void link_set_tls(struct link *l, struct link_tls *t);

/* Repeated authentication failures from one address slow down the next
 * attempts from it (process-wide table, see link_handshake_server). */
void link_throttle_reset(void);
/* For tests: base delay and cap in ms (defaults 250 and 8000). */
void link_throttle_tune(unsigned base_ms, unsigned cap_ms);

/* Token bucket on wire bytes.  The bucket holds at most 50 ms of quota,
 * so a limited link never bursts a whole second's worth.  Senders charge
 * it in quanta of a few milliseconds (link_send_raw), never a whole
 * object at once, so the rate seen over any half second stays flat. */
struct bucket {
	pthread_mutex_t mu;
	uint64_t rate;      /* bytes per second; 0 = unlimited */
	double tokens;      /* may go negative: the debt is slept off */
	uint64_t last_ns;
	/* The clock and the sleep of the pacing; NULL = CLOCK_MONOTONIC and
	 * nanosleep.  Tests set a fake clock (bucket_set_clock). */
	uint64_t (*now)(void *ctx);
	void (*sleep)(void *ctx, uint64_t ns);
	void *clock_ctx;
};
void bucket_init(struct bucket *b, uint64_t rate);
void bucket_set_rate(struct bucket *b, uint64_t rate);
void bucket_destroy(struct bucket *b);
/* For tests: replaces the clock and the sleep (before any charge). */
void bucket_set_clock(struct bucket *b, uint64_t (*now)(void *ctx),
                      void (*sleep)(void *ctx, uint64_t ns), void *ctx);
/* Charges n bytes; returns how many ns the caller must wait first. */
uint64_t bucket_charge(struct bucket *b, size_t n);
/* The same at a given time of the bucket's clock. */
uint64_t bucket_charge_at(struct bucket *b, size_t n, uint64_t now_ns);
/* Largest frame that keeps sends smooth under this rate (>= 4 KiB). */
size_t bucket_chunk(const struct bucket *b);
/* How many bytes a sender moves per charge: ~5 ms of the rate, in 4 KiB
 * steps, 4 KiB .. 1 MiB; SIZE_MAX when unlimited (or b is NULL). */
size_t bucket_quantum(struct bucket *b);

struct link {
	int fd;
	int timeout_ms;           /* deadline of each send/recv */
	atomic_bool aborted;
	struct bucket *bucket;    /* not owned; NULL = unlimited */
	uint64_t tx_bytes, rx_bytes;
	uint8_t *rbuf;            /* received bytes [rstart, rend) */
	size_t rstart, rend, rcap;
	uint8_t *wbuf;            /* one encoded frame */
	char peer[WIRE_TEXT_MAX + 1];      /* "HOST:PORT" of the other end */
	char remote_site[WIRE_TEXT_MAX + 1];
	char err[512];            /* last error, human readable */
	struct link_tls *tls;     /* not owned; NULL = plaintext */
	SSL *ssl;                 /* once the TLS handshake has begun */
	bool mask_sigpipe;        /* SIGPIPE is not ignored: block it around OpenSSL */
	bool ktls_tx, ktls_rx;    /* the kernel does the TLS records (kTLS) */
	/* Server handshake only (set before link_handshake_server):
	 * hs_timeout_ms > 0 bounds the whole handshake, from the end of the
	 * authentication-failure delay, on top of the per-operation deadline
	 * (a slow sender cannot stretch it frame by frame); hs_log, when set,
	 * receives what the handshake would log (rc 0: a notice, else the
	 * failure's -errno) so that a listener can rate-limit it; hs_active
	 * (when set) learns that the peer has begun its part. */
	int hs_timeout_ms;
	uint64_t hs_deadline_ns;  /* 0 = none */
	void (*hs_log)(void *ctx, int rc, enum log_level level, const char *msg);
	void *hs_log_ctx;
	/* Called once, when the peer's first byte has arrived. */
	void (*hs_active)(void *ctx);
	void *hs_active_ctx;
};

/* Splits "HOST:PORT" or "[V6]:PORT".  0 or -EINVAL. */
int link_parse_addr(const char *hostport, char *host, size_t hlen, char *port, size_t plen);

/* Listens on hostport (port 0 = any free port).  *lfd is owned by the
 * caller; the bound "HOST:PORT" goes to bound[blen]. */
int link_listen(const char *hostport, int *lfd, char *bound, size_t blen);
/* Waits up to timeout_ms for a connection on lfd.  Returns the new fd,
 * -ETIMEDOUT, or another -errno. */
int link_accept(int lfd, int timeout_ms, char *peer, size_t plen);

/* Connects to hostport within timeout_ms.  *out is owned by the caller
 * (link_close).  On failure out->err is not available, so the message is
 * written to err[errlen]. */
int link_connect(const char *hostport, int timeout_ms, struct link **out,
                 char *err, size_t errlen);
/* Wraps an accepted fd (the link takes ownership of fd). */
int link_from_fd(int fd, int timeout_ms, const char *peer, struct link **out);
void link_close(struct link *l);
/* Thread-safe: wakes and fails every pending and later operation. */
void link_abort(struct link *l);
/* Thread-safe: like link_abort, but keeps the sending side open so that
 * the thread using l can still tell the peer why (link_refuse). */
void link_abort_read(struct link *l);
/* Server side, on a connection refused before authenticating: when this
 * side has sent nothing yet, sends ERROR(code, message) in plaintext (a TLS
 * client recognises it by its magic in place of a ServerHello, like the
 * --plaintext refusal) after draining what the peer sent, so that the
 * close is not a reset that could destroy the frame; the caller then
 * closes l.  0, or -EALREADY when bytes of the handshake already went out
 * (nothing is sent: a frame would corrupt the peer's TLS stream). */
int link_refuse(struct link *l, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* TLS handshake (when link_set_tls gave settings), then the mutual
 * challenge-response with HMAC-SHA256 over both nonces, the version and
 * the TLS session's exporter value; the secret never crosses.  A TLS /
 * plaintext mismatch between the sites is refused with a clear error.
 * The server delays peers whose address failed authentication recently.  On failure l->err says why, the
 * other side is told (an ERROR frame) and the error is logged. */
int link_handshake_client(struct link *l, const uint8_t *secret, size_t slen,
                          const char *site);
int link_handshake_server(struct link *l, const uint8_t *secret, size_t slen,
                          const char *site);
/* For tests: the version range this side offers as a client. */
extern uint16_t link_test_client_version;

/* True when received bytes wait in the link's buffers (its own, or
 * records TLS read ahead), which poll() on l->fd would not show. */
bool link_buffered(struct link *l);

int link_send(struct link *l, const struct wire_msg *m);
/* Sends already-encoded frames (charged to the bucket). */
int link_send_raw(struct link *l, const void *frames, size_t len);
/* Receives one frame (deadline l->timeout_ms, or timeout_ms if > 0).
 * Pointers inside *m are valid until the next receive. */
int link_recv(struct link *l, struct wire_msg *m, int timeout_ms);
/* Receives and insists on a type: an ERROR frame becomes its negative
 * code with the text in l->err, another type becomes -EPROTO. */
int link_expect(struct link *l, enum wire_type type, struct wire_msg *m,
                int timeout_ms);
/* Sends an ERROR frame (best effort; errors of the send are ignored). */
void link_send_error(struct link *l, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
