/* repl call-back threads (level 4, see pair.h): a secondary site with no
 * --listen keeps CB_SLOTS connections open to its primary and serves the
 * primary's requests on them (the primary's side is conn.c); a secondary
 * that does listen sends the same message once, with its address (an
 * announcement, after a start or a demote): the primary learns where to
 * dial it and declines the connection.  docs/PROTOCOL.md section 11,
 * "Connection direction".
 */
#include "repl/sched.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/common.h"

/* Under mu: p needs connections to its primary: offers (no listener
 * here) or the one that announces our listener. */
static bool cb_wanted(const struct repl *r, const struct pair *p)
{
	return r->started && !r->stopping && r->secret && !pair_phase_primary(p->rec.phase) &&
	       p->rec.phase != PH_NONE && !p->removed && p->rec.peer_addr[0] &&
	       (!r->listen_req[0] || !p->announced);
}

static void *callback_main(void *arg)
{
	struct pair *p = arg;
	struct repl *r = p->r;
	uint64_t retry_at = 0;
	unsigned backoff_s = 1;
	pthread_mutex_lock(&r->mu);
	while (cb_wanted(r, p)) {
		if (now_mono_ns() < retry_at) {
			cond_wait_until(r, retry_at);
			continue;
		}
		char peer[WIRE_TEXT_MAX + 1];
		snprintf(peer, sizeof(peer), "%s", p->rec.peer_addr);
		/* With a listener (addr set) this is an announcement: the
		 * primary learns where to dial and answers EALREADY instead of
		 * keeping the connection. */
		struct wire_msg m;
		role_msg_fill(p, WIRE_ROLE_CALLBACK, &m);
		bool announce = r->listen_req[0] != '\0';
		pthread_mutex_unlock(&r->mu);

		struct link *l = NULL;
		char err[512];
		int rc = repl_dial(r, peer, &l, err, sizeof(err), NULL);
		if (rc == 0) {
			rc = link_send(l, &m);
			if (rc == 0)
				rc = link_expect(l, WIRE_ROLE_INFO, &m, 0);
			if (rc < 0) {
				snprintf(err, sizeof(err), "%s", l->err);
				link_close(l);
				l = NULL;
			}
		}
		pthread_mutex_lock(&r->mu);
		uint64_t now = now_mono_ns();
		if (rc == 0 || rc == -EALREADY) {
			/* The primary answered: it is alive. */
			pair_contact(p);
			(void)pair_change(p, NULL, NULL, NULL, 0);
		}
		if (announce && (rc == -EALREADY || rc == 0)) {
			/* Told (0: a primary that keeps offers anyway; it has our
			 * address now all the same). */
			p->announced = true;
			if (l) {
				pthread_mutex_unlock(&r->mu);
				link_close(l);
				pthread_mutex_lock(&r->mu);
			}
			log_debug("repl: pair %s: told the primary %s to dial %s", p->rec.name, peer,
			          r->listen_addr);
			continue;
		}
		if (rc == -EAGAIN) {
			/* The peer is not primary (yet): a switchover in progress.
			 * Ask again soon, so its promote finds a connection. */
			log_debug("repl: pair %s: call-back to %s: %s", p->rec.name, peer, err);
			retry_at = now + 2000000000ull;
			continue;
		}
		if (rc < 0) {
			if (!p->cb_failing)
				log_warn("repl: pair %s: cannot offer a connection to the primary %s: "
				         "%s (retrying)", p->rec.name, peer, err);
			p->cb_failing = true;
			retry_at = now + backoff_s * 1000000000ull;
			backoff_s = MIN(backoff_s * 2, 5u); /* a restarted primary waits <= 5 s */
			continue;
		}
		if (p->cb_failing)
			log_info("repl: pair %s: offering connections to the primary %s again",
			         p->rec.name, peer);
		p->cb_failing = false;
		backoff_s = 1;
		int slot = -1;
		for (int i = 0; i < CB_SLOTS && slot < 0; i++)
			if (!p->cb_link[i])
				slot = i;
		if (slot >= 0)
			p->cb_link[slot] = l;
		bool go = cb_wanted(r, p);
		pthread_mutex_unlock(&r->mu);
		if (go)
			(void)serve_requests(r, l, PARK_IDLE_MS);
		pthread_mutex_lock(&r->mu);
		if (slot >= 0)
			p->cb_link[slot] = NULL;
		pthread_mutex_unlock(&r->mu);
		link_close(l);
		pthread_mutex_lock(&r->mu);
		/* A peer that takes offers and drops them at once must not make
		 * this a busy loop. */
		if (now_mono_ns() - now < 500000000ull)
			retry_at = now_mono_ns() + 500000000ull;
	}
	pthread_mutex_unlock(&r->mu);
	/* This thread's OpenSSL state (error queue) goes now: a daemon that
	 * exits right after repl_stop must not leave it to a thread that has
	 * not finished exiting. */
	OPENSSL_thread_stop();
	pthread_mutex_lock(&r->mu);
	p->cb_threads--;
	r->cb_threads--;
	pthread_cond_broadcast(&r->cv);
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

void callback_update(struct repl *r, struct pair *p)
{
	unsigned want = r->listen_req[0] ? 1 : CB_SLOTS;
	while (cb_wanted(r, p) && p->cb_threads < want) {
		pthread_attr_t at;
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		pthread_t th;
		pair_get(p);
		int rc = pthread_create(&th, &at, callback_main, p);
		pthread_attr_destroy(&at);
		if (rc) {
			pair_put(p);
			log_error("repl: pair %s: cannot start a call-back thread: %s", p->rec.name,
			          strerror(rc));
			return;
		}
		p->cb_threads++;
		r->cb_threads++;
	}
}

