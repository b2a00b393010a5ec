/* repl listener (level 4, see pair.h): the one accept loop of the
 * replication port.  Each accepted connection gets a thread that runs the
 * handshake and then serves the peer's requests (recv.c); a call-back
 * offer stays open, owned by the pair that keeps it (conn.c).
 *
 * Anyone who can reach the port can connect, so until a connection has
 * authenticated it is only a guest (docs/DESIGN.md "Replication port
 * limits"): it has HS_TIMEOUT_MS to complete TLS and the challenge, and
 * the gate (gate.h) keeps at most UNAUTH_MAX such guests, UNAUTH_PER_SOURCE
 * per source address.  A newcomer is always let in and the oldest guest
 * of the source that holds the most makes room: a real peer authenticates
 * in milliseconds, so a flood, held or churned, only ever displaces the
 * flooder's own connections; within a source the idle ones go first, so
 * that idle connections from the peer's own address cannot displace it.  What a flood would make us log is counted
 * and written as one summary line per LOG_WINDOW_S. */
#include "repl/sched.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include <openssl/crypto.h>

#include "common/common.h"
#include "repl/gate.h"

#define LOG_WINDOW_S 10
#define LOG_BURST 5     /* handshake messages per window shown as they are */
#define TOP_SOURCES 64  /* sources a window counts apart */
#define TOP_SHOWN 8     /* the largest of them a summary names */

struct listener {
	/* Under r->mu. */
	struct gate gate;
	uint64_t next_id;
	uint64_t id[SRV_SLOTS];           /* r->srv[i]'s id in the gate */
	uint8_t key[SRV_SLOTS][GATE_KEY_LEN];
	bool evicted[SRV_SLOTS];          /* displaced from the gate */
	unsigned authed;                  /* authenticated connections */
	/* Under log_mu: this window's counts. */
	pthread_mutex_t log_mu;
	uint64_t win_start;
	unsigned shown, hidden;
	unsigned n_evicted, n_refused, n_timeout, n_failed, n_busy;
	struct {
		uint8_t key[GATE_KEY_LEN];
		unsigned n;
	} top[TOP_SOURCES];
	unsigned n_top, n_top_other;
};

struct conn_arg {
	struct repl *r;
	struct link *l;
	int slot;
	uint64_t id;
};

/* Under log_mu. */
static void count_source(struct listener *s, const uint8_t key[GATE_KEY_LEN])
{
	for (unsigned i = 0; i < s->n_top; i++)
		if (memcmp(s->top[i].key, key, GATE_KEY_LEN) == 0) {
			s->top[i].n++;
			return;
		}
	if (s->n_top < TOP_SOURCES) {
		memcpy(s->top[s->n_top].key, key, GATE_KEY_LEN);
		s->top[s->n_top++].n = 1;
	} else {
		s->n_top_other++;
	}
}

/* Writes the window's summary when it is over (or now, with force) and
 * begins the next one. */
static void summary_flush(struct listener *s, bool force)
{
	pthread_mutex_lock(&s->log_mu);
	uint64_t now = now_mono_ns();
	if (!force && now - s->win_start < (uint64_t)LOG_WINDOW_S * 1000000000ull) {
		pthread_mutex_unlock(&s->log_mu);
		return;
	}
	unsigned secs = (unsigned)((now - s->win_start + 500000000ull) / 1000000000ull);
	if (s->n_evicted || s->n_refused || s->hidden) {
		char src[512] = "";
		size_t off = 0;
		/* The sources of the displaced and refused connections, largest
		 * first (a handful: a small selection sort). */
		unsigned others = s->n_top_other;
		for (unsigned k = 0; k < s->n_top; k++) {
			if (k >= TOP_SHOWN || off >= sizeof(src) - 64) {
				others += s->top[k].n;
				continue;
			}
			unsigned best = k;
			for (unsigned i = k + 1; i < s->n_top; i++)
				if (s->top[i].n > s->top[best].n)
					best = i;
			if (best != k) {
				__typeof__(s->top[0]) t = s->top[k];
				s->top[k] = s->top[best];
				s->top[best] = t;
			}
			char shown[64];
			gate_key_show(s->top[k].key, shown, sizeof(shown));
			off += (size_t)snprintf(src + off, sizeof(src) - off, "%s%s %u", k ? ", " : "",
			                        shown, s->top[k].n);
		}
		if (others && off < sizeof(src) - 32)
			snprintf(src + off, sizeof(src) - off, ", others %u", others);
		char extra[160] = "";
		if (s->n_refused || s->n_busy)
			snprintf(extra, sizeof(extra), ", %u refused while displaced ones ended, %u "
			         "refused over %d authenticated connections", s->n_refused, s->n_busy,
			         MAX_CONNS);
		log_warn("repl: replication port, last %u s: %u unauthenticated connections "
		         "displaced by newer ones (too many unauthenticated connections%s%s), "
		         "%u handshakes timed out, %u failed%s; %u handshake messages not shown",
		         secs, s->n_evicted, src[0] ? "; by source: " : "", src, s->n_timeout,
		         s->n_failed, extra, s->hidden);
	}
	s->win_start = now;
	s->shown = s->hidden = 0;
	s->n_evicted = s->n_refused = s->n_timeout = s->n_failed = s->n_busy = 0;
	s->n_top = s->n_top_other = 0;
	pthread_mutex_unlock(&s->log_mu);
}

/* The handshake's log (link.h hs_log): the first LOG_BURST messages of a
 * window as they are, the rest counted into the summary. */
static void hs_log(void *ctx, int rc, enum log_level level, const char *msg)
{
	struct listener *s = ctx;
	if (rc == -ECANCELED)
		return; /* displaced (counted at the time) or stopping */
	pthread_mutex_lock(&s->log_mu);
	if (rc == -ETIMEDOUT)
		s->n_timeout++;
	else if (rc < 0)
		s->n_failed++;
	bool show = s->shown < LOG_BURST;
	if (show)
		s->shown++;
	else
		s->hidden++;
	pthread_mutex_unlock(&s->log_mu);
	if (show)
		log_msg(level, "%s", msg);
}

/* link.h hs_active: the peer has sent its first bytes. */
static void conn_active(void *arg)
{
	struct conn_arg *a = arg;
	pthread_mutex_lock(&a->r->mu);
	gate_active(&a->r->lsn->gate, a->id);
	pthread_mutex_unlock(&a->r->mu);
}

static void *conn_main(void *arg)
{
	struct conn_arg *a = arg;
	struct repl *r = a->r;
	struct listener *s = r->lsn;
	struct link *l = a->l;
	pthread_mutex_lock(&r->mu);
	bool stop = r->stopping;
	pthread_mutex_unlock(&r->mu);
	int rc = -ECANCELED;
	if (!stop) {
		link_set_tls(l, r->tls);
		l->hs_timeout_ms = HS_TIMEOUT_MS;
		l->hs_log = hs_log;
		l->hs_log_ctx = s;
		l->hs_active = conn_active;
		l->hs_active_ctx = a;
		rc = link_handshake_server(l, r->secret, r->secret_len, r->site);
	}
	pthread_mutex_lock(&r->mu);
	bool evicted = s->evicted[a->slot];
	if (!evicted)
		gate_leave(&s->gate, a->id);
	bool busy = rc == 0 && !evicted && s->authed >= MAX_CONNS;
	bool authed = rc == 0 && !evicted && !busy && !r->stopping;
	if (authed)
		s->authed++;
	pthread_mutex_unlock(&r->mu);
	if (evicted && rc < 0) {
		/* The peer learns why, when nothing of the handshake went out. */
		link_refuse(l, EBUSY, "too many unauthenticated connections; try again later");
	} else if (busy) {
		link_send_error(l, EBUSY, "too many connections; try again later");
		pthread_mutex_lock(&s->log_mu);
		s->n_busy++;
		pthread_mutex_unlock(&s->log_mu);
	}
	/* A call-back offer stays open, owned by the pair that keeps it. */
	int kept = authed ? serve_requests(r, l, 0) : 0;
	/* A kept link left r->srv when it was parked (conn_park): it may be
	 * closed by now, and the slot another connection's. */
	pthread_mutex_lock(&r->mu);
	if (authed)
		s->authed--;
	if (!kept)
		r->srv[a->slot] = NULL;
	pthread_mutex_unlock(&r->mu);
	if (!kept)
		link_close(l);
	free(a);
	OPENSSL_thread_stop(); /* see callback_main */
	pthread_mutex_lock(&r->mu);
	r->conns--;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* Takes a newly accepted connection l into a slot and the gate, displacing
 * a guest when the gate is full.  Under r->mu.  The slot, or -EBUSY. */
static int admit(struct repl *r, struct link *l, const uint8_t key[GATE_KEY_LEN], uint64_t *id)
{
	struct listener *s = r->lsn;
	if (r->stopping || r->conns >= SRV_SLOTS)
		return -EBUSY;
	int slot = -1;
	for (int i = 0; i < SRV_SLOTS && slot < 0; i++)
		if (!r->srv[i])
			slot = i;
	if (slot < 0)
		return -EBUSY;
	*id = ++s->next_id;
	r->srv[slot] = l;
	s->id[slot] = *id;
	memcpy(s->key[slot], key, GATE_KEY_LEN);
	s->evicted[slot] = false;
	uint64_t gone;
	gate_admit(&s->gate, key, *id, now_mono_ns(), &gone);
	if (gone) {
		for (int i = 0; i < SRV_SLOTS; i++)
			if (r->srv[i] && s->id[i] == gone && !s->evicted[i]) {
				s->evicted[i] = true;
				/* Its thread still tells the peer (link_refuse). */
				link_abort_read(r->srv[i]);
				pthread_mutex_lock(&s->log_mu);
				s->n_evicted++;
				count_source(s, s->key[i]);
				pthread_mutex_unlock(&s->log_mu);
				break;
			}
	}
	r->conns++;
	return slot;
}

static void *accept_main(void *arg)
{
	struct repl *r = arg;
	struct listener *s = r->lsn;
	for (;;) {
		pthread_mutex_lock(&r->mu);
		bool stop = r->stopping;
		pthread_mutex_unlock(&r->mu);
		if (stop)
			break;
		summary_flush(s, false);
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
		uint8_t key[GATE_KEY_LEN];
		if (gate_key(peer, key, NULL, 0) < 0)
			memset(key, 0, sizeof(key)); /* not an IP peer: one source */
		struct link *l = NULL;
		int rc = link_from_fd(fd, r->timeout_ms, peer, &l);
		if (rc < 0) {
			log_error("repl: cannot serve %s: %s", peer, strerror(-rc));
			continue; /* link_from_fd closed fd */
		}
		/* A peer sends at once; often its first bytes are here already. */
		uint8_t b;
		bool active = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
		uint64_t id = 0;
		pthread_mutex_lock(&r->mu);
		int slot = admit(r, l, key, &id);
		if (slot >= 0 && active)
			gate_active(&s->gate, id);
		pthread_mutex_unlock(&r->mu);
		if (slot < 0) {
			/* Only while displaced threads are still ending. */
			pthread_mutex_lock(&s->log_mu);
			s->n_refused++;
			count_source(s, key);
			pthread_mutex_unlock(&s->log_mu);
			link_refuse(l, EBUSY, "too many unauthenticated connections; try again later");
			link_close(l);
			continue;
		}
		struct conn_arg *a = calloc(1, sizeof(*a));
		rc = a ? 0 : -ENOMEM;
		if (a) {
			*a = (struct conn_arg){ .r = r, .l = l, .slot = slot, .id = id };
			pthread_t th;
			pthread_attr_t at;
			pthread_attr_init(&at);
			pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
			rc = -pthread_create(&th, &at, conn_main, a);
			pthread_attr_destroy(&at);
		}
		if (rc < 0) {
			log_error("repl: cannot serve %s: %s", peer, strerror(-rc));
			free(a);
			pthread_mutex_lock(&r->mu);
			gate_leave(&s->gate, id);
			r->srv[slot] = NULL;
			r->conns--;
			pthread_mutex_unlock(&r->mu);
			link_close(l);
		}
	}
	summary_flush(s, true);
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
	if (!r->lsn) {
		struct listener *s = calloc(1, sizeof(*s));
		if (!s)
			return -ENOMEM;
		int rc = gate_init(&s->gate, UNAUTH_MAX, UNAUTH_PER_SOURCE);
		if (rc < 0) {
			free(s);
			return rc;
		}
		pthread_mutex_init(&s->log_mu, NULL);
		s->win_start = now_mono_ns();
		r->lsn = s;
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
	for (int i = 0; i < SRV_SLOTS; i++)
		if (r->srv[i])
			link_abort(r->srv[i]);
}

void listener_free(struct repl *r)
{
	struct listener *s = r->lsn;
	if (!s)
		return;
	gate_free(&s->gate);
	pthread_mutex_destroy(&s->log_mu);
	free(s);
	r->lsn = NULL;
}
