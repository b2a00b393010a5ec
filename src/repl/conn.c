/* repl connections to a pair's peer (level 2, see pair.h): dialling, and
 * the connections a secondary without --listen offers its primary.
 *
 * The primary opens every connection of a pair.  After a role change the
 * new primary is the site that was primary's peer, and the old primary —
 * now the secondary — may have no listener at all (the brief's user day
 * starts site A without --listen), or sit behind NAT.  Such a secondary
 * keeps CB_SLOTS connections open *to* its primary instead (callback.c):
 * it dials, authenticates as the client, sends ROLE(CALLBACK) and then
 * serves the requests the primary makes on that connection exactly as if
 * the primary had dialled it.  The primary keeps the offered connections
 * per pair (conn_park) and takes one whenever it needs to talk to the peer
 * (pair_dial).  An offer unused for PARK_USE_MS is dropped by the primary;
 * the secondary gives up waiting at PARK_IDLE_MS and offers a new one, so
 * the primary never picks a connection the secondary is about to close.
 * docs/PROTOCOL.md section 11, "Connection direction".
 */
#include "repl/pair.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/common.h"

int repl_dial(struct repl *r, const char *peer, struct link **out, char *err, size_t errlen,
              bool *reached)
{
	if (reached)
		*reached = false;
	if (!r->secret) {
		snprintf(err, errlen, "no secret configured (--secret-file)");
		return -EINVAL;
	}
	/* A peer whose port is flooded may refuse us for load (EBUSY: too
	 * many unauthenticated connections there); a flood displaces the
	 * oldest waiting connections, so a new attempt a moment later gets
	 * through.  A few, jittered, then the refusal is the error. */
	for (int attempt = 1;; attempt++) {
		struct link *l;
		int rc = link_connect(peer, r->timeout_ms, &l, err, errlen);
		if (rc < 0)
			return rc;
		if (reached)
			*reached = true;
		link_set_tls(l, r->tls);
		rc = link_handshake_client(l, r->secret, r->secret_len, r->site);
		if (rc == 0) {
			*out = l;
			return 0;
		}
		snprintf(err, errlen, "%s", l->err);
		link_close(l);
		if (rc != -EBUSY || attempt == DIAL_BUSY_TRIES)
			return rc;
		uint64_t ms = 50 + now_mono_ns() % 200;
		struct timespec ts = { 0, (long)(ms * 1000000) };
		nanosleep(&ts, NULL);
	}
}

int pair_dial(struct pair *p, struct link **out, char *err, size_t errlen, bool *reached)
{
	struct repl *r = p->r;
	struct link *stale[PARK_MAX];
	unsigned n_stale = 0;
	struct link *l = NULL;
	char peer[WIRE_TEXT_MAX + 1] = "";
	if (reached)
		*reached = false;
	/* A secondary that calls in offers again within ~2 s of a change. */
	uint64_t until = now_mono_ns() + (uint64_t)MIN(r->timeout_ms, 10000) * 1000000ull;
	pthread_mutex_lock(&r->mu);
	for (;;) {
		uint64_t now = now_mono_ns();
		unsigned k = 0;
		for (unsigned i = 0; i < p->n_parked; i++) {
			/* An idle offer has nothing to read: anything there is the
			 * peer closing it (its ferryd died or gave up). */
			struct pollfd pf = { .fd = p->parked[i]->fd, .events = POLLIN | POLLRDHUP };
			bool dead = poll(&pf, 1, 0) != 0;
			if (dead || now - p->parked_ns[i] > PARK_USE_MS * 1000000ull) {
				stale[n_stale++] = p->parked[i];
			} else {
				p->parked[k] = p->parked[i];
				p->parked_ns[k++] = p->parked_ns[i];
			}
		}
		p->n_parked = k;
		if (p->n_parked) {
			l = p->parked[--p->n_parked];
			break;
		}
		if (p->rec.peer[0]) {
			snprintf(peer, sizeof(peer), "%s", p->rec.peer);
			break;
		}
		if (r->stopping || now >= until)
			break;
		cond_wait_until(r, until);
	}
	pthread_mutex_unlock(&r->mu);
	for (unsigned i = 0; i < n_stale; i++)
		link_close(stale[i]);
	if (l) {
		if (reached)
			*reached = true;
		*out = l;
		return 0;
	}
	if (peer[0])
		return repl_dial(r, peer, out, err, errlen, reached);
	snprintf(err, errlen, "the peer has no listener this site knows of and has not "
	         "connected to offer one (is its ferryd running, with --secret-file?)");
	return -ENOTCONN;
}

void conn_drop(struct pair *p, struct link *keep)
{
	for (unsigned i = 0; i < p->n_parked; i++)
		link_close(p->parked[i]);
	p->n_parked = 0;
	for (int i = 0; i < CB_SLOTS; i++)
		if (p->cb_link[i] && p->cb_link[i] != keep)
			link_abort(p->cb_link[i]);
	pthread_cond_broadcast(&p->r->cv);
}

int conn_park(struct repl *r, struct link *l, const struct wire_msg *m)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_find(r, m->u.role.volume);
	if (!p || strcmp(p->rec.id, m->u.role.pair_id)) {
		pthread_mutex_unlock(&r->mu);
		link_send_error(l, p ? ESTALE : ENOENT, "volume %s %s", m->u.role.volume,
		                p ? "belongs to another pair" : "is in no pair on this site");
		return 0;
	}
	if (!pair_phase_primary(p->rec.phase)) {
		pthread_mutex_unlock(&r->mu);
		link_send_error(l, EAGAIN, "%s is not primary here: nothing to send",
		                m->u.role.volume);
		return 0;
	}
	/* An offer or an announcement is contact: the secondary is alive. */
	pair_contact(p);
	(void)pair_change(p, NULL, "the peer connected", NULL, 0);
	char learned[WIRE_TEXT_MAX + 1] = "";
	if (m->u.role.addr[0] &&
	    addr_learned(m->u.role.addr, l->peer, learned, sizeof(learned)) < 0)
		learned[0] = '\0';
	if (learned[0] || m->u.role.addr[0]) {
		/* The secondary listens: dial it there (unless the operator
		 * named the address), rather than keep its connection. */
		if (!p->rec.peer_fixed && learned[0] &&
		    (strcmp(p->rec.peer, learned) || strcmp(p->rec.peer_addr, learned))) {
			log_info("repl: pair %s: the secondary listens on %s; dialling it there",
			         p->rec.name, learned);
			struct pair_rec next = p->rec;
			rec_text(next.peer_addr, sizeof(next.peer_addr), learned);
			rec_text(next.peer, sizeof(next.peer), learned);
			(void)pair_change(p, &next, "the secondary announced its address", NULL, 0);
		}
		char dial[WIRE_TEXT_MAX + 1];
		snprintf(dial, sizeof(dial), "%s", p->rec.peer);
		pairs_unlock(r);
		link_send_error(l, EALREADY, "this site connects to you at %s", dial);
		return 0;
	}
	if (!p->rec.peer_fixed && p->rec.peer[0]) {
		/* It used to listen and does not any more: its offers are the
		 * only way to reach it now. */
		log_info("repl: pair %s: the secondary has no listener any more (was %s); "
		         "using the connections it offers", p->rec.name, p->rec.peer);
		struct pair_rec next = p->rec;
		next.peer[0] = '\0';
		next.peer_addr[0] = '\0';
		(void)pair_change(p, &next, "the secondary stopped listening", NULL, 0);
	}
	struct wire_msg info;
	role_info_fill(p, p->rec.common_snap[0] ? p->rec.common_snap : p->rec.last_snap, &info);
	pair_get(p);
	pairs_unlock(r);
	int rc = link_send(l, &info);
	/* Once parked the link belongs to the pair: another thread may take
	 * and close it at once, so nothing of it is used after that. */
	char from[WIRE_TEXT_MAX + 1];
	snprintf(from, sizeof(from), "%s", l->peer);
	pthread_mutex_lock(&r->mu);
	struct link *drop = NULL;
	bool keep = rc == 0 && pair_phase_primary(p->rec.phase) && !p->removed && !r->stopping;
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
		/* Nor is it a server connection to abort at stop any more. */
		for (int i = 0; i < SRV_SLOTS; i++)
			if (r->srv[i] == l)
				r->srv[i] = NULL;
		pthread_cond_broadcast(&r->cv);
	}
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
	if (drop)
		link_close(drop);
	if (keep)
		log_debug("repl: pair %s: connection offered by %s", m->u.role.volume, from);
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
