/* repl listener (level 4, see pair.h): the one accept loop of the
 * replication port.  Each accepted connection gets a thread that runs the
 * handshake and then serves the peer's requests (recv.c); a call-back
 * offer stays open, owned by the pair that keeps it (conn.c).  Later
 * hardening (short unauthenticated deadline, per-source limits) belongs
 * here. */
#include "repl/sched.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/common.h"

struct conn_arg {
	struct repl *r;
	struct link *l;
};

static void *conn_main(void *arg)
{
	struct conn_arg *a = arg;
	struct repl *r = a->r;
	int slot = -1;
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < MAX_CONNS && slot < 0; i++)
		if (!r->srv[i])
			slot = i;
	if (slot >= 0)
		r->srv[slot] = a->l;
	bool stop = r->stopping;
	pthread_mutex_unlock(&r->mu);
	/* A call-back offer stays open, owned by the pair that keeps it. */
	int kept = stop ? 0 : serve_conn(r, a->l);
	/* A kept link left r->srv when it was parked (conn_park): it may be
	 * closed by now, and the slot another connection's. */
	pthread_mutex_lock(&r->mu);
	if (slot >= 0 && !kept)
		r->srv[slot] = NULL;
	pthread_mutex_unlock(&r->mu);
	if (!kept)
		link_close(a->l);
	free(a);
	OPENSSL_thread_stop(); /* see callback_main */
	pthread_mutex_lock(&r->mu);
	r->conns--;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct repl *r = arg;
	for (;;) {
		pthread_mutex_lock(&r->mu);
		bool stop = r->stopping;
		pthread_mutex_unlock(&r->mu);
		if (stop)
			break;
		char peer[WIRE_TEXT_MAX + 1];
		int fd = link_accept(r->lfd, 200, peer, sizeof(peer));
		if (fd == -ETIMEDOUT || fd == -EINTR || fd == -EAGAIN || fd == -ECONNABORTED)
			continue;
		if (fd < 0) {
			log_error("repl: accept: %s", strerror(-fd));
			struct timespec ts = { 0, 100000000 };
			nanosleep(&ts, NULL);
			continue;
		}
		pthread_mutex_lock(&r->mu);
		bool full = r->conns >= MAX_CONNS || r->stopping;
		if (!full)
			r->conns++;
		pthread_mutex_unlock(&r->mu);
		if (full) {
			log_warn("repl: refusing %s: too many connections", peer);
			close(fd);
			continue;
		}
		struct conn_arg *a = calloc(1, sizeof(*a));
		int rc = a ? link_from_fd(fd, r->timeout_ms, peer, &a->l) : -ENOMEM;
		pthread_t th;
		if (rc == 0) {
			a->r = r;
			pthread_attr_t at;
			pthread_attr_init(&at);
			pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
			rc = -pthread_create(&th, &at, conn_main, a);
			pthread_attr_destroy(&at);
			if (rc < 0)
				link_close(a->l);
		} else if (!a) {
			close(fd);
		}
		if (rc < 0) {
			log_error("repl: cannot serve %s: %s", peer, strerror(-rc));
			free(a);
			pthread_mutex_lock(&r->mu);
			r->conns--;
			pthread_mutex_unlock(&r->mu);
		}
	}
	return NULL;
}

int listener_start(struct repl *r)
{
	if (!r->listen_req[0])
		return 0;
	if (!r->secret) {
		log_error("repl: --listen needs a secret (--secret-file)");
		return -EINVAL;
	}
	int rc = link_listen(r->listen_req, &r->lfd, r->listen_addr, sizeof(r->listen_addr));
	if (rc < 0)
		return rc;
	log_info("repl: listening for peers on %s", r->listen_addr);
	rc = -pthread_create(&r->accept_th, NULL, accept_main, r);
	if (rc < 0) {
		close(r->lfd);
		r->lfd = -1;
	}
	return rc;
}

void listener_stop(struct repl *r)
{
	if (r->lfd < 0)
		return;
	pthread_join(r->accept_th, NULL);
	close(r->lfd);
	r->lfd = -1;
}

void listener_abort_conns(struct repl *r)
{
	for (int i = 0; i < MAX_CONNS; i++)
		if (r->srv[i])
			link_abort(r->srv[i]);
}
