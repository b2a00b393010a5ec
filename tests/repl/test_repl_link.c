/* Tests of the replication link: authentication both ways, refusal of a
 * wrong secret / wrong version / garbage with errors on both sides,
 * deadlines, abort, and the bandwidth token bucket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/common.h"
#include "repl/link.h"

struct server {
	int lfd;
	char addr[128];
	const char *secret;
	int timeout_ms;
	int rc;            /* handshake result */
	char err[512];
	bool hold;         /* after a good handshake, wait for one frame */
	int recv_rc;
	pthread_t th;
};

static void *server_main(void *arg)
{
	struct server *s = arg;
	char peer[128];
	int fd = link_accept(s->lfd, 5000, peer, sizeof(peer));
	if (fd < 0) {
		s->rc = fd;
		return NULL;
	}
	struct link *l;
	s->rc = link_from_fd(fd, s->timeout_ms, peer, &l);
	if (s->rc < 0)
		return NULL;
	s->rc = link_handshake_server(l, (const uint8_t *)s->secret, strlen(s->secret), "srv");
	snprintf(s->err, sizeof(s->err), "%s", l->err);
	if (s->rc == 0 && s->hold) {
		struct wire_msg m;
		s->recv_rc = link_expect(l, WIRE_PING, &m, 0);
		if (s->recv_rc == 0) {
			struct wire_msg p = { .type = WIRE_PONG };
			p.u.ping.token = m.u.ping.token + 1;
			link_send(l, &p);
		}
	}
	link_close(l);
	return NULL;
}

static void server_start(struct server *s, const char *secret, int timeout_ms)
{
	memset(s, 0, sizeof(*s));
	s->secret = secret;
	s->timeout_ms = timeout_ms;
	assert_int_equal(link_listen("127.0.0.1:0", &s->lfd, s->addr, sizeof(s->addr)), 0);
	assert_int_equal(pthread_create(&s->th, NULL, server_main, s), 0);
}

static void server_join(struct server *s)
{
	pthread_join(s->th, NULL);
	close(s->lfd);
}

static void test_auth_ok_and_ping(void **st)
{
	(void)st;
	struct server s;
	server_start(&s, "correct horse", 3000);
	s.hold = true;
	struct link *l;
	char err[256];
	assert_int_equal(link_connect(s.addr, 3000, &l, err, sizeof(err)), 0);
	assert_int_equal(link_handshake_client(l, (const uint8_t *)"correct horse", 13, "cli"), 0);
	assert_string_equal(l->remote_site, "srv");
	struct wire_msg m = { .type = WIRE_PING };
	m.u.ping.token = 41;
	assert_int_equal(link_send(l, &m), 0);
	assert_int_equal(link_expect(l, WIRE_PONG, &m, 0), 0);
	assert_int_equal(m.u.ping.token, 42);
	link_close(l);
	server_join(&s);
	assert_int_equal(s.rc, 0);
	assert_int_equal(s.recv_rc, 0);
}

static void test_wrong_secret_refused_both_sides(void **st)
{
	(void)st;
	struct server s;
	server_start(&s, "secret-one", 3000);
	struct link *l;
	char err[256];
	assert_int_equal(link_connect(s.addr, 3000, &l, err, sizeof(err)), 0);
	int rc = link_handshake_client(l, (const uint8_t *)"secret-two", 10, "cli");
	assert_int_equal(rc, -EACCES);
	assert_non_null(strstr(l->err, "secret"));
	link_close(l);
	server_join(&s);
	/* The client checks the server's proof first and tells it why. */
	assert_int_equal(s.rc, -EACCES);
	assert_non_null(strstr(s.err, "secret"));
}

static void test_wrong_version_refused_both_sides(void **st)
{
	(void)st;
	struct server s;
	server_start(&s, "k", 3000);
	struct link *l;
	char err[256];
	assert_int_equal(link_connect(s.addr, 3000, &l, err, sizeof(err)), 0);
	link_test_client_version = WIRE_VERSION + 1;
	int rc = link_handshake_client(l, (const uint8_t *)"k", 1, "cli");
	link_test_client_version = WIRE_VERSION;
	assert_int_equal(rc, -EPROTONOSUPPORT);
	assert_non_null(strstr(l->err, "version"));
	link_close(l);
	server_join(&s);
	assert_int_equal(s.rc, -EPROTONOSUPPORT);
	assert_non_null(strstr(s.err, "version"));
}

static void test_garbage_refused(void **st)
{
	(void)st;
	struct server s;
	server_start(&s, "k", 3000);
	struct link *l;
	char err[256];
	assert_int_equal(link_connect(s.addr, 3000, &l, err, sizeof(err)), 0);
	const char *junk = "GET / HTTP/1.0\r\nHost: x\r\n\r\n";
	assert_int_equal(write_full(l->fd, junk, strlen(junk)), 0);
	uint64_t t0 = now_mono_ns();
	server_join(&s);
	assert_int_equal(s.rc, -EPROTO);
	assert_true(now_mono_ns() - t0 < 2000000000ull);
	link_close(l);
}

/* A peer that accepts and never answers: the handshake gives up at the
 * deadline instead of hanging. */
static void test_silent_peer_deadline(void **st)
{
	(void)st;
	int lfd;
	char addr[128];
	assert_int_equal(link_listen("127.0.0.1:0", &lfd, addr, sizeof(addr)), 0);
	struct link *l;
	char err[256];
	assert_int_equal(link_connect(addr, 300, &l, err, sizeof(err)), 0);
	uint64_t t0 = now_mono_ns();
	int rc = link_handshake_client(l, (const uint8_t *)"k", 1, "cli");
	uint64_t dt = now_mono_ns() - t0;
	assert_int_equal(rc, -ETIMEDOUT);
	assert_true(dt >= 250000000ull && dt < 3000000000ull);
	link_close(l);
	close(lfd);
}

static void test_connect_refused(void **st)
{
	(void)st;
	int lfd;
	char addr[128];
	assert_int_equal(link_listen("127.0.0.1:0", &lfd, addr, sizeof(addr)), 0);
	close(lfd); /* nothing listens there any more */
	struct link *l;
	char err[256];
	int rc = link_connect(addr, 1000, &l, err, sizeof(err));
	assert_int_equal(rc, -ECONNREFUSED);
	assert_non_null(strstr(err, "cannot connect"));
	assert_int_equal(link_connect("nonsense", 1000, &l, err, sizeof(err)), -EINVAL);
}

struct aborter {
	struct link *l;
	pthread_t th;
};

static void *abort_main(void *arg)
{
	struct aborter *a = arg;
	usleep(100000);
	link_abort(a->l);
	return NULL;
}

static void test_abort_wakes_recv(void **st)
{
	(void)st;
	int lfd;
	char addr[128];
	assert_int_equal(link_listen("127.0.0.1:0", &lfd, addr, sizeof(addr)), 0);
	struct link *l;
	char err[256];
	assert_int_equal(link_connect(addr, 60000, &l, err, sizeof(err)), 0);
	struct aborter a = { .l = l };
	pthread_create(&a.th, NULL, abort_main, &a);
	uint64_t t0 = now_mono_ns();
	struct wire_msg m;
	int rc = link_recv(l, &m, 0);
	assert_true(rc == -ECANCELED);
	assert_true(now_mono_ns() - t0 < 2000000000ull);
	pthread_join(a.th, NULL);
	link_close(l);
	close(lfd);
}

static void test_bucket_smooth(void **st)
{
	(void)st;
	struct bucket b;
	bucket_init(&b, 1000000); /* 1 MB/s */
	assert_int_equal(bucket_chunk(&b), 49152); /* 50 ms of quota, 4K rounded */
	/* Charging 500 KB in 50 KB steps and sleeping as told takes ~0.5 s. */
	uint64_t t0 = now_mono_ns();
	for (int i = 0; i < 10; i++) {
		uint64_t w = bucket_charge(&b, 50000);
		/* never asks for more than one chunk's worth of wait at a time */
		assert_true(w <= 60000000ull);
		struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)w };
		nanosleep(&ts, NULL);
	}
	double dt = (double)(now_mono_ns() - t0) / 1e9;
	assert_true(dt > 0.4 && dt < 0.8);
	bucket_set_rate(&b, 0);
	assert_int_equal(bucket_charge(&b, 1u << 30), 0);
	assert_int_equal(bucket_chunk(NULL), WIRE_DATA_MAX);
	bucket_destroy(&b);
}

/* The bucket's arithmetic on a fake clock: no sleeping, nothing timed. */
static void test_bucket_fake_clock(void **st)
{
	(void)st;
	struct bucket b;
	bucket_init(&b, 1000000);
	uint64_t t = 1000000000ull;
	bucket_set_clock(&b, NULL, NULL, NULL);
	b.last_ns = t;
	/* 1 MB at 1 MB/s from an empty bucket: one second of debt */
	assert_int_equal(bucket_charge_at(&b, 1000000, t), 1000000000ull);
	/* paid off exactly when due */
	assert_int_equal(bucket_charge_at(&b, 0, t + 1000000000ull), 0);
	/* ten idle seconds earn 50 ms of quota, no more */
	t += 11000000000ull;
	assert_int_equal(bucket_charge_at(&b, 50000, t), 0);
	assert_int_equal(bucket_charge_at(&b, 1000, t), 1000000ull);
	/* a clock that steps back earns nothing and costs nothing */
	assert_int_equal(bucket_charge_at(&b, 0, t - 5000000ull), 1000000ull);
	/* quanta: ~5 ms of the rate in 4 KiB steps, 4 KiB .. 1 MiB */
	bucket_set_rate(&b, 20000000);
	assert_int_equal(bucket_quantum(&b), 102400);
	bucket_set_rate(&b, 1000);
	assert_int_equal(bucket_quantum(&b), 4096);
	bucket_set_rate(&b, 10000000000ull);
	assert_int_equal(bucket_quantum(&b), 1u << 20);
	bucket_set_rate(&b, 0);
	assert_true(bucket_quantum(&b) == SIZE_MAX);
	assert_true(bucket_quantum(NULL) == SIZE_MAX);
	bucket_destroy(&b);
}

/* A sender pushing 4 MiB objects through a link paced at 20 MB/s, on a
 * fake clock whose sleeps overshoot like a busy machine's (0-2 ms each,
 * and a 15 ms stall every 40th).  Sends take no fake time at all: the
 * burstiest a sender can be.  The bytes that left in each 0.5 s of fake
 * time must stay within 5% (CV) of their mean, and the mean within 2% of
 * the rate.  Charging whole objects (the old pacing) gives a CV near 20%. */
struct fake_clock {
	uint64_t now;
	uint64_t rng;
	unsigned sleeps;
	struct link *l;
	uint64_t *t, *tx;       /* (fake time, bytes sent by then) at each sleep */
	size_t n, cap;
};

static uint64_t fake_now(void *ctx) { return ((struct fake_clock *)ctx)->now; }

static void fake_sleep(void *ctx, uint64_t ns)
{
	struct fake_clock *f = ctx;
	if (f->n == f->cap) {
		f->cap = f->cap ? 2 * f->cap : 4096;
		f->t = realloc(f->t, f->cap * sizeof(*f->t));
		f->tx = realloc(f->tx, f->cap * sizeof(*f->tx));
		assert_non_null(f->t);
		assert_non_null(f->tx);
	}
	f->t[f->n] = f->now;
	f->tx[f->n++] = f->l->tx_bytes;
	f->rng = f->rng * 6364136223846793005ull + 1442695040888963407ull;
	uint64_t over = (f->rng >> 33) % 2000000ull;
	if (++f->sleeps % 40 == 0)
		over += 15000000ull;
	f->now += ns + over;
}

static void *drain_main(void *arg)
{
	int fd = *(int *)arg;
	static uint8_t buf[1 << 16];
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	return NULL;
}

static void test_pacing_smooth_fake_clock(void **st)
{
	(void)st;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, drain_main, &sv[1]), 0);
	struct link *l;
	assert_int_equal(link_from_fd(sv[0], 5000, "fake", &l), 0);
	const uint64_t rate = 20000000;
	struct bucket b;
	bucket_init(&b, rate);
	struct fake_clock f = { .now = 1000000000ull, .rng = 42, .l = l };
	bucket_set_clock(&b, fake_now, fake_sleep, &f);
	l->bucket = &b;
	size_t obj = (4u << 20) + 64; /* one object's DATA frames + OBJ_DONE */
	uint8_t *frames = calloc(1, obj);
	assert_non_null(frames);
	const uint64_t t0 = f.now, span = 20000000000ull, win = 500000000ull;
	while (f.now - t0 < span + win)
		assert_int_equal(link_send_raw(l, frames, obj), 0);
	fake_sleep(&f, 0);
	/* bytes sent by the end of each window: the last record at or before it */
	unsigned nwin = (unsigned)(span / win);
	double sum = 0, sum2 = 0, per[64];
	size_t k = 0;
	uint64_t prev = 0;
	for (unsigned w = 0; w <= nwin; w++) {
		uint64_t end = t0 + (uint64_t)w * win;
		while (k + 1 < f.n && f.t[k + 1] <= end)
			k++;
		uint64_t sent = f.t[k] <= end ? f.tx[k] : 0;
		if (w > 0) {
			per[w - 1] = (double)(sent - prev) / ((double)win / 1e9);
			sum += per[w - 1];
		}
		prev = sent;
	}
	double mean = sum / nwin;
	for (unsigned w = 0; w < nwin; w++)
		sum2 += (per[w] - mean) * (per[w] - mean);
	double cv = sqrt(sum2 / nwin) / mean;
	print_message("pacing at %.0f B/s on a fake clock: mean %.0f B/s (%.2f%% off), CV %.2f%%\n",
	              (double)rate, mean, 100.0 * (mean - (double)rate) / (double)rate, 100.0 * cv);
	assert_true(cv <= 0.05);
	assert_true(mean >= 0.98 * (double)rate && mean <= 1.02 * (double)rate);
	link_close(l);
	pthread_join(th, NULL);
	close(sv[1]);
	bucket_destroy(&b);
	free(frames);
	free(f.t);
	free(f.tx);
}

static void test_parse_addr(void **st)
{
	(void)st;
	char h[64], p[16];
	assert_int_equal(link_parse_addr("127.0.0.1:7450", h, sizeof(h), p, sizeof(p)), 0);
	assert_string_equal(h, "127.0.0.1");
	assert_string_equal(p, "7450");
	assert_int_equal(link_parse_addr("[::1]:1", h, sizeof(h), p, sizeof(p)), 0);
	assert_string_equal(h, "::1");
	assert_int_equal(link_parse_addr("host", h, sizeof(h), p, sizeof(p)), -EINVAL);
	assert_int_equal(link_parse_addr(":1", h, sizeof(h), p, sizeof(p)), -EINVAL);
	assert_int_equal(link_parse_addr("h:70000", h, sizeof(h), p, sizeof(p)), -EINVAL);
}

int main(void)
{
	log_set_level(LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_addr),
		cmocka_unit_test(test_auth_ok_and_ping),
		cmocka_unit_test(test_wrong_secret_refused_both_sides),
		cmocka_unit_test(test_wrong_version_refused_both_sides),
		cmocka_unit_test(test_garbage_refused),
		cmocka_unit_test(test_silent_peer_deadline),
		cmocka_unit_test(test_connect_refused),
		cmocka_unit_test(test_abort_wakes_recv),
		cmocka_unit_test(test_bucket_smooth),
		cmocka_unit_test(test_bucket_fake_clock),
		cmocka_unit_test(test_pacing_smooth_fake_clock),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
