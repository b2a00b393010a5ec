/* repl lifecycle (level 4, see pair.h): create, start, stop, destroy. */
#include "repl/sched.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "common/common.h"

int repl_create(struct store *store, const char *pool_dir, const struct repl_opts *opts,
                struct repl **out)
{
	struct repl *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->store = store;
	r->lfd = -1;
	snprintf(r->pool, sizeof(r->pool), "%s", pool_dir);
	snprintf(r->pairs_dir, sizeof(r->pairs_dir), "%s/pairs", pool_dir);
	r->max_transfers = opts && opts->max_transfers ? opts->max_transfers : 4;
	r->timeout_ms = opts && opts->timeout_ms ? (int)opts->timeout_ms : 30000;
	if (opts && opts->listen)
		snprintf(r->listen_req, sizeof(r->listen_req), "%s", opts->listen);
	if (opts && opts->site)
		snprintf(r->site, sizeof(r->site), "%s", opts->site);
	if (opts) {
		r->on_ro_change = opts->on_ro_change;
		r->ro_ctx = opts->ro_ctx;
		r->may_pair = opts->may_pair;
	}
	if (opts && opts->secret && opts->secret_len) {
		r->secret = malloc(opts->secret_len);
		if (!r->secret) {
			free(r);
			return -ENOMEM;
		}
		memcpy(r->secret, opts->secret, opts->secret_len);
		r->secret_len = opts->secret_len;
	}
	if (r->secret) {
		struct link_tls_opts to = { .plaintext = opts->plaintext, .cert = opts->tls_cert,
		                            .key = opts->tls_key, .ca = opts->tls_ca };
		char terr[512];
		int trc = link_tls_new(&to, r->secret, r->secret_len, &r->tls, terr, sizeof(terr));
		if (trc < 0) {
			log_error("repl: %s", terr);
			OPENSSL_cleanse(r->secret, r->secret_len);
			free(r->secret);
			free(r);
			return trc;
		}
	}
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	int rc = mkdir_p(r->pairs_dir, 0700);
	if (rc == 0)
		rc = pairs_load(r);
	if (rc < 0) {
		log_error("repl: cannot load pairs from %s: %s", r->pairs_dir, strerror(-rc));
		repl_destroy(r);
		return rc;
	}
	*out = r;
	return 0;
}

const char *repl_listen_addr(const struct repl *r)
{
	return r->listen_addr[0] ? r->listen_addr : NULL;
}

int repl_start(struct repl *r)
{
	int rc = listener_start(r);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&r->mu);
	r->started = true;
	uint64_t now = now_mono_ns();
	r->started_mono = now;
	for (struct pair *p = r->pairs; p; p = p->next) {
		p->next_due_ns = now;
		p->next_probe_ns = now; /* a restarted primary checks its peer at once */
		if (pair_phase_primary(p->rec.phase) && p->rec.cur_cycle == 0 && p->rec.last_cycle) {
			/* Keep the schedule across restarts: next cycle one period
			 * after the last synced snapshot. */
			uint64_t wall = now_wall_s();
			uint64_t due = p->rec.last_time + p->rec.period_s;
			if (due > wall)
				p->next_due_ns = now + (due - wall) * 1000000000ull;
		}
		callback_update(r, p);
	}
	pthread_mutex_unlock(&r->mu);
	rc = sched_start(r);
	if (rc < 0) {
		pthread_mutex_lock(&r->mu);
		r->stopping = true;
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
		listener_stop(r);
	}
	return rc;
}

void repl_stop(struct repl *r)
{
	pthread_mutex_lock(&r->mu);
	if (!r->started || r->stopping) {
		pthread_mutex_unlock(&r->mu);
		return;
	}
	r->stopping = true;
	for (struct pair *p = r->pairs; p; p = p->next) {
		if (p->active)
			link_abort(p->active);
		conn_drop(p, NULL);
	}
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	listener_stop(r);
	sched_stop(r);
	/* Server and call-back threads: their links are aborted through the
	 * pairs they serve, or time out on their own deadline. */
	pthread_mutex_lock(&r->mu);
	while (r->conns || r->cb_threads || r->ro_busy) {
		for (struct pair *p = r->pairs; p; p = p->next) {
			if (p->active)
				link_abort(p->active);
			conn_drop(p, NULL);
		}
		listener_abort_conns(r);
		cond_wait_until(r, now_mono_ns() + 100000000ull);
	}
	pthread_mutex_unlock(&r->mu);
}

void repl_destroy(struct repl *r)
{
	if (!r)
		return;
	repl_stop(r);
	listener_free(r);
	while (r->pairs) {
		struct pair *p = r->pairs;
		r->pairs = p->next;
		pair_put(p);
	}
	free(r->ro_queue);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	link_tls_free(r->tls);
	if (r->secret)
		OPENSSL_cleanse(r->secret, r->secret_len);
	free(r->secret);
	free(r);
}
