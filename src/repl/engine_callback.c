/* repl engine: call-back links, for a secondary site with no --listen.
 *
 * The primary opens every connection of a pair.  After a role change the
 * new primary is the site that was primary's peer, and the old primary —
 * now the secondary — may have no listener at all (the brief's user day
 * starts site A without --listen), or sit behind NAT.  Such a secondary
 * keeps CB_SLOTS connections open *to* its primary instead: it dials,
 * authenticates as the client, sends ROLE(CALLBACK) and then serves the
 * requests the primary makes on that connection exactly as if the primary
 * had dialled it.  The primary keeps the offered connections per pair
 * (callback_park) and takes one whenever it needs to talk to the peer
 * (pair_dial).  An offer unused for PARK_USE_MS is dropped by the primary;
 * the secondary gives up waiting at PARK_IDLE_MS and offers a new one, so
 * the primary never picks a connection the secondary is about to close.
 *
 * A secondary that does listen sends the same message once, with its
 * address (an announcement, after a start or a demote): the primary learns
 * where to dial it and declines the connection.  docs/PROTOCOL.md section
 * 11, "Connection direction".
 */
#include "repl/engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/common.h"

/* Under mu: p needs connections to its primary: offers (no listener
 * here) or the one that announces our listener. */
static bool cb_wanted(const struct repl *r, const struct pair *p)
{
	return r->started && !r->stopping && r->secret && p->role == REPL_ROLE_SECONDARY &&
	       !p->removed && !p->stop && p->peer_addr[0] &&
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
		snprintf(peer, sizeof(peer), "%s", p->peer_addr);
		/* With a listener (addr set) this is an announcement: the
		 * primary learns where to dial and answers EALREADY instead of
		 * keeping the connection. */
		struct wire_msg m;
		role_msg_fill(p, WIRE_ROLE_CALLBACK, &m);
		bool announce = r->listen_req[0] != '\0';
		pthread_mutex_unlock(&r->mu);

		struct link *l = NULL;
		char err[512];
		int rc = repl_dial(r, peer, &l, err, sizeof(err));
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
		if (announce && (rc == -EALREADY || rc == 0)) {
			/* Told (0: a primary that keeps offers anyway; it has our
			 * address now all the same). */
			p->announced = true;
			if (l) {
				pthread_mutex_unlock(&r->mu);
				link_close(l);
				pthread_mutex_lock(&r->mu);
			}
			log_debug("repl: pair %s: told the primary %s to dial %s", p->name, peer,
			          r->listen_addr);
			continue;
		}
		if (rc == -EAGAIN) {
			/* The peer is not primary (yet): a switchover in progress.
			 * Ask again soon, so its promote finds a connection. */
			log_debug("repl: pair %s: call-back to %s: %s", p->name, peer, err);
			retry_at = now + 2000000000ull;
			continue;
		}
		if (rc < 0) {
			if (!p->cb_failing)
				log_warn("repl: pair %s: cannot offer a connection to the primary %s: "
				         "%s (retrying)", p->name, peer, err);
			p->cb_failing = true;
			retry_at = now + backoff_s * 1000000000ull;
			backoff_s = MIN(backoff_s * 2, 5u); /* a restarted primary waits <= 5 s */
			continue;
		}
		if (p->cb_failing)
			log_info("repl: pair %s: offering connections to the primary %s again",
			         p->name, peer);
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
			log_error("repl: pair %s: cannot start a call-back thread: %s", p->name,
			          strerror(rc));
			return;
		}
		p->cb_threads++;
		r->cb_threads++;
	}
}

void callback_drop(struct pair *p)
{
	for (unsigned i = 0; i < p->n_parked; i++)
		link_close(p->parked[i]);
	p->n_parked = 0;
	for (int i = 0; i < CB_SLOTS; i++)
		if (p->cb_link[i])
			link_abort(p->cb_link[i]);
	pthread_cond_broadcast(&p->r->cv);
}

int callback_park(struct repl *r, struct link *l, const struct wire_msg *m)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_find(r, m->u.role.volume);
	if (!p || strcmp(p->id, m->u.role.pair_id)) {
		pthread_mutex_unlock(&r->mu);
		link_send_error(l, p ? ESTALE : ENOENT, "volume %s %s", m->u.role.volume,
		                p ? "belongs to another pair" : "is in no pair on this site");
		return 0;
	}
	if (p->role != REPL_ROLE_PRIMARY || p->removed) {
		pthread_mutex_unlock(&r->mu);
		link_send_error(l, EAGAIN, "%s is not primary here: nothing to send",
		                m->u.role.volume);
		return 0;
	}
	char learned[WIRE_TEXT_MAX + 1] = "";
	if (m->u.role.addr[0] &&
	    addr_learned(m->u.role.addr, l->peer, learned, sizeof(learned)) < 0)
		learned[0] = '\0';
	if (learned[0] || m->u.role.addr[0]) {
		/* The secondary listens: dial it there (unless the operator
		 * named the address), rather than keep its connection. */
		if (!p->peer_fixed && learned[0] &&
		    (strcmp(p->peer, learned) || strcmp(p->peer_addr, learned))) {
			log_info("repl: pair %s: the secondary listens on %s; dialling it there",
			         p->name, learned);
			snprintf(p->peer_addr, sizeof(p->peer_addr), "%s", learned);
			snprintf(p->peer, sizeof(p->peer), "%s", learned);
			(void)pair_save(p);
		}
		char dial[WIRE_TEXT_MAX + 1];
		snprintf(dial, sizeof(dial), "%s", p->peer);
		pthread_mutex_unlock(&r->mu);
		link_send_error(l, EALREADY, "this site connects to you at %s", dial);
		return 0;
	}
	if (!p->peer_fixed && p->peer[0]) {
		/* It used to listen and does not any more: its offers are the
		 * only way to reach it now. */
		log_info("repl: pair %s: the secondary has no listener any more (was %s); "
		         "using the connections it offers", p->name, p->peer);
		p->peer[0] = '\0';
		p->peer_addr[0] = '\0';
		(void)pair_save(p);
	}
	struct wire_msg info;
	role_info_fill(p, p->common_snap[0] ? p->common_snap : p->last_snap, &info);
	pair_get(p);
	pthread_mutex_unlock(&r->mu);
	int rc = link_send(l, &info);
	pthread_mutex_lock(&r->mu);
	struct link *drop = NULL;
	bool keep = rc == 0 && p->role == REPL_ROLE_PRIMARY && !p->removed && !r->stopping;
	if (keep) {
		if (p->n_parked == PARK_MAX) {
			drop = p->parked[0];
			memmove(p->parked, p->parked + 1, (PARK_MAX - 1) * sizeof(p->parked[0]));
			memmove(p->parked_ns, p->parked_ns + 1, (PARK_MAX - 1) * sizeof(p->parked_ns[0]));
			p->n_parked--;
		}
		p->parked[p->n_parked] = l;
		p->parked_ns[p->n_parked] = now_mono_ns();
		p->n_parked++;
		pthread_cond_broadcast(&r->cv);
	}
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
	if (drop)
		link_close(drop);
	if (keep)
		log_debug("repl: pair %s: connection offered by %s", m->u.role.volume, l->peer);
	return keep ? 1 : 0;
}

int addr_learned(const char *announced, const char *conn_peer, char *out, size_t len)
{
	char h[256], port[16];
	if (!announced[0] || link_parse_addr(announced, h, sizeof(h), port, sizeof(port)) < 0)
		return -EINVAL;
	if (!h[0] || !strcmp(h, "0.0.0.0") || !strcmp(h, "::") || !strcmp(h, "*")) {
		char ch[256], cport[16];
		if (link_parse_addr(conn_peer, ch, sizeof(ch), cport, sizeof(cport)) < 0)
			return -EINVAL;
		snprintf(h, sizeof(h), "%s", ch);
	}
	int n = snprintf(out, len, strchr(h, ':') ? "[%s]:%s" : "%s:%s", h, port);
	return n > 0 && (size_t)n < len ? 0 : -EINVAL;
}
