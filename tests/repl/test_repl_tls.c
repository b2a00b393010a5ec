/* Tests of the secured replication link: TLS 1.3 with the PSK derived
 * from the secret and with certificates, refusals (wrong PSK, foreign CA,
 * TLS / plaintext mismatch either way) with an error on both sides,
 * deadlines with a silent peer during the TLS handshake, the
 * per-address throttle of failed authentications, and a refusal for load
 * that the client reports as such. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/common.h"
#include "repl/link.h"

#define SECRET "tls test secret, 32 bytes long.."

static char dir[256];   /* certificates made by the openssl tool */
static bool have_certs;

/* ---- a server accepting n connections, each served by its own thread --- */
struct conn {
	struct server *s;
	struct link *l;
	int rc;
	char err[512];
	atomic_bool done;      /* the handshake is over (rc, err valid) */
	pthread_t th;
};

struct server {
	int lfd;
	char addr[128];
	const char *secret;
	struct link_tls *tls;
	int timeout_ms;
	int n;                 /* connections to accept */
	struct conn conns[8];
	pthread_t th;
};

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	c->rc = link_handshake_server(c->l, (const uint8_t *)c->s->secret,
	                              strlen(c->s->secret), "srv");
	snprintf(c->err, sizeof(c->err), "%s", c->l->err);
	atomic_store(&c->done, true);
	/* Echo PINGs as PONG(token+1) until the client closes. */
	while (c->rc == 0) {
		struct wire_msg m;
		if (link_expect(c->l, WIRE_PING, &m, 0) < 0)
			break;
		struct wire_msg p = { .type = WIRE_PONG };
		p.u.ping.token = m.u.ping.token + 1;
		if (link_send(c->l, &p) < 0)
			break;
	}
	link_close(c->l);
	return NULL;
}

static void *server_main(void *arg)
{
	struct server *s = arg;
	for (int i = 0; i < s->n; i++) {
		char peer[128];
		int fd = link_accept(s->lfd, 10000, peer, sizeof(peer));
		struct conn *c = &s->conns[i];
		c->s = s;
		if (fd < 0 || link_from_fd(fd, s->timeout_ms, peer, &c->l) < 0) {
			c->rc = -EIO;
			c->th = 0;
			continue;
		}
		link_set_tls(c->l, s->tls);
		pthread_create(&c->th, NULL, conn_main, c);
	}
	return NULL;
}

static void server_start(struct server *s, const char *secret, struct link_tls *t, int n,
                         int timeout_ms)
{
	memset(s, 0, sizeof(*s));
	s->secret = secret;
	s->tls = t;
	s->n = n;
	s->timeout_ms = timeout_ms;
	assert_int_equal(link_listen("127.0.0.1:0", &s->lfd, s->addr, sizeof(s->addr)), 0);
	assert_int_equal(pthread_create(&s->th, NULL, server_main, s), 0);
}

static void server_join(struct server *s)
{
	pthread_join(s->th, NULL);
	for (int i = 0; i < s->n; i++)
		if (s->conns[i].th)
			pthread_join(s->conns[i].th, NULL);
	close(s->lfd);
}

static struct link_tls *psk_tls(const char *secret)
{
	struct link_tls_opts o = { 0 };
	struct link_tls *t;
	char err[256];
	assert_int_equal(link_tls_new(&o, (const uint8_t *)secret, strlen(secret), &t,
	                              err, sizeof(err)), 0);
	assert_non_null(t);
	return t;
}

static struct link_tls *cert_tls(const char *who, const char *ca)
{
	char cert[300], key[300], cafile[300], err[256];
	snprintf(cert, sizeof(cert), "%s/%s.crt", dir, who);
	snprintf(key, sizeof(key), "%s/%s.key", dir, who);
	snprintf(cafile, sizeof(cafile), "%s/%s.crt", dir, ca);
	struct link_tls_opts o = { .cert = cert, .key = key, .ca = cafile };
	struct link_tls *t;
	int rc = link_tls_new(&o, (const uint8_t *)SECRET, strlen(SECRET), &t, err, sizeof(err));
	if (rc < 0)
		fprintf(stderr, "link_tls_new: %s\n", err);
	assert_int_equal(rc, 0);
	return t;
}

/* Connects from source address src (NULL = any) and runs the client
 * handshake; *ms gets its duration. */
static int client(const char *addr, const char *src, struct link_tls *t, const char *secret,
                  int timeout_ms, struct link **out, char *err, size_t errlen, double *ms)
{
	char host[64], port[16];
	assert_int_equal(link_parse_addr(addr, host, sizeof(host), port, sizeof(port)), 0);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	if (src) {
		struct sockaddr_in sa = { .sin_family = AF_INET };
		inet_pton(AF_INET, src, &sa.sin_addr);
		assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	}
	struct sockaddr_in da = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
	inet_pton(AF_INET, host, &da.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&da, sizeof(da)), 0);
	struct link *l;
	assert_int_equal(link_from_fd(fd, timeout_ms, addr, &l), 0);
	link_set_tls(l, t);
	uint64_t t0 = now_mono_ns();
	int rc = link_handshake_client(l, (const uint8_t *)secret, strlen(secret), "cli");
	if (ms)
		*ms = (double)(now_mono_ns() - t0) / 1e6;
	snprintf(err, errlen, "%s", l->err);
	if (rc == 0 && out)
		*out = l;
	else
		link_close(l);
	return rc;
}

static void ping_pong(struct link *l, int rounds)
{
	for (int i = 0; i < rounds; i++) {
		struct wire_msg m = { .type = WIRE_PING };
		m.u.ping.token = (uint64_t)i * 7;
		assert_int_equal(link_send(l, &m), 0);
		assert_int_equal(link_expect(l, WIRE_PONG, &m, 0), 0);
		assert_int_equal(m.u.ping.token, (uint64_t)i * 7 + 1);
	}
}

static void test_psk_handshake(void **st)
{
	(void)st;
	link_throttle_reset();
	struct link_tls *t = psk_tls(SECRET);
	struct server s;
	server_start(&s, SECRET, t, 1, 3000);
	struct link *l = NULL;
	char err[512];
	assert_int_equal(client(s.addr, NULL, t, SECRET, 3000, &l, err, sizeof(err), NULL), 0);
	assert_non_null(l->ssl);
	assert_int_equal(SSL_version(l->ssl), TLS1_3_VERSION);
	assert_string_equal(SSL_CIPHER_get_name(SSL_get_current_cipher(l->ssl)),
	                    "TLS_AES_128_GCM_SHA256");
	/* psk_dhe_ke: an (EC)DHE group was negotiated, so the secret alone
	 * does not decrypt a recording. */
	assert_true(SSL_get_negotiated_group(l->ssl) > 0);
	ping_pong(l, 200);
	link_close(l);
	server_join(&s);
	assert_int_equal(s.conns[0].rc, 0);
	link_tls_free(t);
}

static void test_wrong_psk_refused(void **st)
{
	(void)st;
	link_throttle_reset();
	struct link_tls *ts = psk_tls(SECRET), *tc = psk_tls("another secret, also long");
	struct server s;
	server_start(&s, SECRET, ts, 1, 3000);
	char err[512];
	int rc = client(s.addr, NULL, tc, "another secret, also long", 3000, NULL, err,
	                sizeof(err), NULL);
	assert_true(rc < 0);
	assert_non_null(strstr(err, "TLS handshake"));
	server_join(&s);
	assert_int_equal(s.conns[0].rc, -EACCES);
	assert_non_null(strstr(s.conns[0].err, "TLS handshake from"));
	link_tls_free(ts);
	link_tls_free(tc);
	link_throttle_reset();
}

static void test_cert_handshake(void **st)
{
	(void)st;
	if (!have_certs)
		skip();
	link_throttle_reset();
	struct link_tls *ta = cert_tls("a", "ca"), *tb = cert_tls("b", "ca");
	struct server s;
	server_start(&s, SECRET, tb, 1, 3000);
	struct link *l = NULL;
	char err[512];
	int rc = client(s.addr, NULL, ta, SECRET, 3000, &l, err, sizeof(err), NULL);
	if (rc)
		fprintf(stderr, "client: %s\n", err);
	assert_int_equal(rc, 0);
	assert_int_equal(SSL_version(l->ssl), TLS1_3_VERSION);
	X509 *peer = SSL_get1_peer_certificate(l->ssl);
	assert_non_null(peer);
	char cn[64] = "";
	X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof(cn));
	assert_string_equal(cn, "site-b");
	X509_free(peer);
	ping_pong(l, 20);
	link_close(l);
	server_join(&s);
	assert_int_equal(s.conns[0].rc, 0);
	link_tls_free(ta);
	link_tls_free(tb);
}

/* A certificate from another CA is refused by the server, and the server's
 * certificate is refused by a client that trusts only the other CA. */
static void test_cert_foreign_ca_refused(void **st)
{
	(void)st;
	if (!have_certs)
		skip();
	link_throttle_reset();
	struct link_tls *tb = cert_tls("b", "ca"), *tevil = cert_tls("evil", "evilca");
	struct server s;
	server_start(&s, SECRET, tb, 1, 3000);
	char err[512];
	int rc = client(s.addr, NULL, tevil, SECRET, 3000, NULL, err, sizeof(err), NULL);
	assert_true(rc < 0);
	server_join(&s);
	assert_true(s.conns[0].rc < 0);
	assert_non_null(strstr(s.conns[0].err, "TLS handshake from"));
	link_tls_free(tb);
	link_tls_free(tevil);
	link_throttle_reset();
}

static void test_plaintext_client_tls_server(void **st)
{
	(void)st;
	link_throttle_reset();
	struct link_tls *t = psk_tls(SECRET);
	struct server s;
	server_start(&s, SECRET, t, 1, 3000);
	char err[512];
	int rc = client(s.addr, NULL, NULL, SECRET, 3000, NULL, err, sizeof(err), NULL);
	assert_int_equal(rc, -EPROTO);
	assert_non_null(strstr(err, "requires TLS"));
	server_join(&s);
	assert_int_equal(s.conns[0].rc, -EPROTO);
	assert_non_null(strstr(s.conns[0].err, "runs with --plaintext"));
	link_tls_free(t);
}

static void test_tls_client_plaintext_server(void **st)
{
	(void)st;
	link_throttle_reset();
	struct link_tls *t = psk_tls(SECRET);
	struct server s;
	server_start(&s, SECRET, NULL, 1, 3000);
	char err[512];
	int rc = client(s.addr, NULL, t, SECRET, 3000, NULL, err, sizeof(err), NULL);
	assert_int_equal(rc, -EPROTO);
	assert_non_null(strstr(err, "this site runs with --plaintext"));
	server_join(&s);
	assert_int_equal(s.conns[0].rc, -EPROTO);
	assert_non_null(strstr(s.conns[0].err, "uses TLS"));
	link_tls_free(t);
}

/* The server never says anything: the client's TLS handshake ends at its
 * deadline, not later. */
static void test_silent_server_deadline(void **st)
{
	(void)st;
	struct link_tls *t = psk_tls(SECRET);
	int lfd;
	char addr[128];
	assert_int_equal(link_listen("127.0.0.1:0", &lfd, addr, sizeof(addr)), 0);
	char err[512];
	double ms;
	int rc = client(addr, NULL, t, SECRET, 500, NULL, err, sizeof(err), &ms);
	assert_int_equal(rc, -ETIMEDOUT);
	assert_non_null(strstr(err, "deadline"));
	assert_true(ms >= 450 && ms < 2000);
	close(lfd);
	link_tls_free(t);
}

/* The client starts a TLS record and goes quiet: the server's handshake
 * ends at its deadline. */
static void test_silent_client_deadline(void **st)
{
	(void)st;
	link_throttle_reset();
	struct link_tls *t = psk_tls(SECRET);
	struct server s;
	server_start(&s, SECRET, t, 1, 500);
	char host[64], port[16];
	assert_int_equal(link_parse_addr(s.addr, host, sizeof(host), port, sizeof(port)), 0);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in da = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
	inet_pton(AF_INET, host, &da.sin_addr);
	assert_int_equal(connect(fd, (struct sockaddr *)&da, sizeof(da)), 0);
	uint8_t rec[3] = { 22, 3, 1 }; /* the start of a ClientHello record */
	assert_int_equal(write(fd, rec, sizeof(rec)), 3);
	uint64_t t0 = now_mono_ns();
	server_join(&s);
	double ms = (double)(now_mono_ns() - t0) / 1e6;
	assert_int_equal(s.conns[0].rc, -ETIMEDOUT);
	assert_true(ms < 2500);
	close(fd);
	link_tls_free(t);
}

/* A listener refusing a connection for load (link_refuse) before any
 * byte of its handshake went out: the client, TLS or plaintext, says the
 * peer refused the connection and why, not a TLS error. */
struct refuser {
	int lfd;
	int rc;
};
static void *refuser_main(void *arg)
{
	struct refuser *r = arg;
	char peer[128];
	struct link *l;
	int fd = link_accept(r->lfd, 10000, peer, sizeof(peer));
	r->rc = fd < 0 ? fd : link_from_fd(fd, 3000, peer, &l);
	if (r->rc < 0)
		return NULL;
	/* Let the client's first flight arrive: it is drained, not reset. */
	struct timespec ts = { 0, 100000000 };
	nanosleep(&ts, NULL);
	r->rc = link_refuse(l, EBUSY, "too many unauthenticated connections; try again later");
	link_close(l);
	return NULL;
}

static void test_refused_for_load(void **st)
{
	(void)st;
	for (int tls = 0; tls < 2; tls++) {
		struct link_tls *t = tls ? psk_tls(SECRET) : NULL;
		struct refuser r = { 0 };
		char addr[128];
		assert_int_equal(link_listen("127.0.0.1:0", &r.lfd, addr, sizeof(addr)), 0);
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, refuser_main, &r), 0);
		char err[512];
		int rc = client(addr, NULL, t, SECRET, 3000, NULL, err, sizeof(err), NULL);
		pthread_join(th, NULL);
		assert_int_equal(r.rc, 0);
		assert_int_equal(rc, -EBUSY);
		assert_non_null(strstr(err, "refused the connection: too many unauthenticated "
		                            "connections"));
		assert_null(strstr(err, "TLS"));
		close(r.lfd);
		link_tls_free(t);
	}
}

/* N failed authentications from 127.0.0.1 delay the next attempt from it
 * by base * 2^(N-1); 127.0.0.2 is served at once; a success clears it. */
static void test_auth_failures_throttled(void **st)
{
	(void)st;
	link_throttle_reset();
	link_throttle_tune(200, 2000);
	struct link_tls *t = psk_tls(SECRET), *bad = psk_tls("not the secret at all");
	struct server s;
	server_start(&s, SECRET, t, 6, 5000);
	char err[512];
	double ms[3];
	for (int i = 0; i < 3; i++) {
		assert_true(client(s.addr, "127.0.0.1", bad, "not the secret at all", 5000, NULL,
		                   err, sizeof(err), &ms[i]) < 0);
		/* The client may see the alert before the server counted the
		 * failure: wait (bounded) for the server's verdict. */
		for (int k = 0; k < 500 && !atomic_load(&s.conns[i].done); k++)
			usleep(2000);
	}
	/* the 2nd and 3rd attempts already waited 200 and 400 ms */
	assert_true(ms[1] >= 150);
	assert_true(ms[2] >= 320);
	double other, good, again;
	assert_int_equal(client(s.addr, "127.0.0.2", t, SECRET, 5000, NULL, err, sizeof(err),
	                        &other), 0);
	assert_int_equal(client(s.addr, "127.0.0.1", t, SECRET, 5000, NULL, err, sizeof(err),
	                        &good), 0);
	/* The client is done before the server has counted the success: wait
	 * (bounded) for the server's verdict, as above. */
	for (int k = 0; k < 500 && !atomic_load(&s.conns[4].done); k++)
		usleep(2000);
	assert_int_equal(client(s.addr, "127.0.0.1", t, SECRET, 5000, NULL, err, sizeof(err),
	                        &again), 0);
	print_message("throttle: bad attempts %.0f %.0f %.0f ms; other address %.0f ms; "
	              "4th from the same %.0f ms; after success %.0f ms\n",
	              ms[0], ms[1], ms[2], other, good, again);
	assert_true(other < 500);     /* another address is not slowed down (800 if it were) */
	assert_true(good >= 700);     /* 3 failures: 800 ms after the 3rd */
	assert_true(again < 500);     /* the success cleared the address (800 if not) */
	server_join(&s);
	for (int i = 0; i < 3; i++)
		assert_int_equal(s.conns[i].rc, -EACCES);
	link_tls_free(t);
	link_tls_free(bad);
	link_throttle_tune(250, 8000);
	link_throttle_reset();
}

static void test_bad_options(void **st)
{
	(void)st;
	struct link_tls *t = (struct link_tls *)1;
	char err[256];
	struct link_tls_opts half = { .cert = "/nonexistent.crt" };
	assert_int_equal(link_tls_new(&half, (const uint8_t *)SECRET, 8, &t, err, sizeof(err)),
	                 -EINVAL);
	assert_non_null(strstr(err, "--tls-key"));
	struct link_tls_opts missing = { .cert = "/nonexistent.crt", .key = "/k", .ca = "/c" };
	assert_int_equal(link_tls_new(&missing, (const uint8_t *)SECRET, 8, &t, err,
	                              sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "--tls-cert /nonexistent.crt"));
	struct link_tls_opts plain = { .plaintext = true };
	assert_int_equal(link_tls_new(&plain, NULL, 0, &t, err, sizeof(err)), 0);
	assert_null(t);
}

static int run(const char *cmd)
{
	char full[2048];
	snprintf(full, sizeof(full), "cd %s && (%s) >/dev/null 2>&1", dir, cmd);
	return system(full);
}

static int setup(void **st)
{
	(void)st;
	snprintf(dir, sizeof(dir), "/tmp/ferry-tls-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	/* Two CAs; a and b signed by ca, evil by evilca. */
	const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
	char cmd[1024];
	have_certs = true;
	const char *cas[] = { "ca", "evilca" };
	for (int i = 0; i < 2 && have_certs; i++) {
		snprintf(cmd, sizeof(cmd), "openssl req -x509 %s -keyout %s.key -out %s.crt "
		         "-days 2 -subj /CN=%s", ec, cas[i], cas[i], cas[i]);
		have_certs = run(cmd) == 0;
	}
	const char *leaves[][2] = { { "a", "ca" }, { "b", "ca" }, { "evil", "evilca" } };
	for (int i = 0; i < 3 && have_certs; i++) {
		snprintf(cmd, sizeof(cmd), "openssl req %s -keyout %s.key -out %s.csr "
		         "-subj /CN=site-%s && openssl x509 -req -in %s.csr -CA %s.crt "
		         "-CAkey %s.key -CAcreateserial -out %s.crt -days 2", ec, leaves[i][0],
		         leaves[i][0], leaves[i][0], leaves[i][0], leaves[i][1], leaves[i][1],
		         leaves[i][0]);
		have_certs = run(cmd) == 0;
	}
	if (!have_certs)
		fprintf(stderr, "openssl tool failed: certificate tests skipped\n");
	return 0;
}

static int teardown(void **st)
{
	(void)st;
	rm_rf(dir);
	return 0;
}

int main(void)
{
	log_set_level(LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_options),
		cmocka_unit_test(test_psk_handshake),
		cmocka_unit_test(test_wrong_psk_refused),
		cmocka_unit_test(test_cert_handshake),
		cmocka_unit_test(test_cert_foreign_ca_refused),
		cmocka_unit_test(test_plaintext_client_tls_server),
		cmocka_unit_test(test_tls_client_plaintext_server),
		cmocka_unit_test(test_silent_server_deadline),
		cmocka_unit_test(test_silent_client_deadline),
		cmocka_unit_test(test_auth_failures_throttled),
		cmocka_unit_test(test_refused_for_load),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
