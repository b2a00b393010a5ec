/* repl engine: pair registry and persistence, scheduling, listener, the
 * `ferry pair` verbs.  Cycles are in engine_send.c (primary) and
 * engine_recv.c (secondary); verify digests in engine_verify.c. */
#include "repl/engine.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/common.h"

/* ---- names and files --------------------------------------------------- */
void snap_name(const char *pair, uint64_t cycle, char *out, size_t len)
{
	/* "ferry." + name + "." + 6 digits must stay a valid name (<= 64);
	 * long pair names are shortened and made unique with a CRC. */
	if (strlen(pair) <= 40)
		snprintf(out, len, "ferry.%s.%06" PRIu64, pair, cycle);
	else
		snprintf(out, len, "ferry.%.32s-%08x.%06" PRIu64, pair,
		         crc32c(0, pair, strlen(pair)), cycle);
}

static int pair_path(struct repl *r, const char *name, const char *ext, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s.%s", r->pairs_dir, name, ext);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int pair_ckpt_path(struct repl *r, const char *name, char *buf, size_t len)
{
	return pair_path(r, name, "ckpt", buf, len);
}

static const char *role_str(enum repl_role role)
{
	return role == REPL_ROLE_PRIMARY ? "primary" : "secondary";
}

int pair_save(struct pair *p)
{
	struct sbuf b;
	sbuf_init(&b);
	sbuf_printf(&b, "version=1\nname=%s\nid=%s\nrole=%s\npeer=%s\nremote=%s\n"
	            "period=%" PRIu64 "\nmax_inflight=%u\nbandwidth=%" PRIu64 "\n"
	            "compress=%d\npaused=%d\ncreated=%" PRIu64 "\nseed_snap=%s\n"
	            "last_cycle=%" PRIu64 "\nlast_snap=%s\nlast_time=%" PRIu64 "\n"
	            "cur_cycle=%" PRIu64 "\ncur_snap=%s\ncur_time=%" PRIu64 "\n",
	            p->name, p->id, role_str(p->role), p->peer, p->remote, p->period_s,
	            p->max_inflight, p->bandwidth, p->compress, p->paused, p->created,
	            p->seed_snap, p->last_cycle, p->last_snap, p->last_time,
	            p->cur_cycle, p->cur_snap, p->cur_time);
	sbuf_printf(&b, "epoch=%" PRIu64 "\ndemoting=%d\npeer_demoted=%d\n"
	            "peer_demoted_cycle=%" PRIu64 "\npeer_addr=%s\nsplit_brain=%d\n"
	            "common_snap=%s\nneeds_resync=%d\nsb_snap=%s\npeer_fixed=%d\n", p->epoch,
	            p->demoting, p->peer_demoted, p->peer_demoted_cycle, p->peer_addr,
	            p->split_brain, p->common_snap, p->needs_resync, p->sb_snap, p->peer_fixed);
	if (p->has_stats)
		sbuf_printf(&b, "stats=%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
		            " %" PRIu64 " %.3f\n", p->stats.number, p->stats.extents,
		            p->stats.data_bytes, p->stats.zero_bytes, p->stats.wire_bytes,
		            p->stats.seconds);
	char path[4400];
	int rc = b.err ? b.err : pair_path(p->r, p->name, "pair", path, sizeof(path));
	if (rc == 0)
		rc = write_file_atomic(path, b.p, b.len);
	if (rc < 0)
		log_error("repl: cannot save pair %s: %s", p->name, strerror(-rc));
	sbuf_free(&b);
	return rc;
}

static void copy_name(char *dst, const char *src, bool *ok)
{
	if (*src && !name_valid(src))
		*ok = false;
	snprintf(dst, STORE_NAME_MAX + 1, "%s", src);
}

static int pair_parse(struct pair *p, char *text)
{
	bool ok = true;
	uint64_t v;
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		char *eq = strchr(line, '=');
		if (!eq)
			continue;
		*eq = '\0';
		const char *k = line, *val = eq + 1;
		bool num = parse_u64(val, &v) == 0;
		if (!strcmp(k, "name")) copy_name(p->name, val, &ok);
		else if (!strcmp(k, "id")) snprintf(p->id, sizeof(p->id), "%s", val);
		else if (!strcmp(k, "role")) {
			if (!strcmp(val, "primary")) p->role = REPL_ROLE_PRIMARY;
			else if (!strcmp(val, "secondary")) p->role = REPL_ROLE_SECONDARY;
			else ok = false;
		}
		else if (!strcmp(k, "peer")) snprintf(p->peer, sizeof(p->peer), "%s", val);
		else if (!strcmp(k, "remote")) copy_name(p->remote, val, &ok);
		else if (!strcmp(k, "period") && num) p->period_s = v;
		else if (!strcmp(k, "max_inflight") && num) p->max_inflight = (uint32_t)v;
		else if (!strcmp(k, "bandwidth") && num) p->bandwidth = v;
		else if (!strcmp(k, "compress") && num) p->compress = v != 0;
		else if (!strcmp(k, "paused") && num) p->paused = v != 0;
		else if (!strcmp(k, "created") && num) p->created = v;
		else if (!strcmp(k, "seed_snap")) copy_name(p->seed_snap, val, &ok);
		else if (!strcmp(k, "last_cycle") && num) p->last_cycle = v;
		else if (!strcmp(k, "last_snap")) copy_name(p->last_snap, val, &ok);
		else if (!strcmp(k, "last_time") && num) p->last_time = v;
		else if (!strcmp(k, "cur_cycle") && num) p->cur_cycle = v;
		else if (!strcmp(k, "cur_snap")) copy_name(p->cur_snap, val, &ok);
		else if (!strcmp(k, "cur_time") && num) p->cur_time = v;
		else if (!strcmp(k, "epoch") && num) p->epoch = v;
		else if (!strcmp(k, "demoting") && num) p->demoting = v != 0;
		else if (!strcmp(k, "peer_demoted") && num) p->peer_demoted = v != 0;
		else if (!strcmp(k, "peer_demoted_cycle") && num) p->peer_demoted_cycle = v;
		else if (!strcmp(k, "peer_addr")) snprintf(p->peer_addr, sizeof(p->peer_addr), "%s", val);
		else if (!strcmp(k, "peer_fixed") && num) p->peer_fixed = v != 0;
		else if (!strcmp(k, "split_brain") && num) p->split_brain = v != 0;
		else if (!strcmp(k, "common_snap")) copy_name(p->common_snap, val, &ok);
		else if (!strcmp(k, "needs_resync") && num) p->needs_resync = v != 0;
		else if (!strcmp(k, "sb_snap")) copy_name(p->sb_snap, val, &ok);
		else if (!strcmp(k, "stats")) {
			struct cycle_stats s;
			if (sscanf(val, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %lf",
			           &s.number, &s.extents, &s.data_bytes, &s.zero_bytes,
			           &s.wire_bytes, &s.seconds) == 6) {
				p->stats = s;
				p->has_stats = true;
			}
		}
	}
	if (!ok || !name_valid(p->name) || !p->role || !p->id[0])
		return -EINVAL;
	if (p->period_s < 1)
		p->period_s = REPL_DEFAULT_PERIOD;
	if (!p->max_inflight)
		p->max_inflight = REPL_DEFAULT_INFLIGHT;
	return 0;
}

static struct pair *pair_alloc(struct repl *r)
{
	struct pair *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->r = r;
	p->refs = 1;
	bucket_init(&p->bucket, 0);
	return p;
}

struct pair *pair_find(struct repl *r, const char *name)
{
	for (struct pair *p = r->pairs; p; p = p->next)
		if (!p->removed && !strcmp(p->name, name))
			return p;
	return NULL;
}

void pair_get(struct pair *p) { p->refs++; }

void pair_put(struct pair *p)
{
	if (--p->refs)
		return;
	free(p->extra);
	bucket_destroy(&p->bucket);
	free(p);
}

static void pair_unlink(struct repl *r, struct pair *p)
{
	for (struct pair **pp = &r->pairs; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			p->next = NULL;
			return;
		}
	}
}

static int load_pairs(struct repl *r)
{
	DIR *d = opendir(r->pairs_dir);
	if (!d)
		return -errno;
	struct dirent *e;
	int rc = 0;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (n < 6 || strcmp(e->d_name + n - 5, ".pair"))
			continue;
		char path[4400];
		snprintf(path, sizeof(path), "%s/%s", r->pairs_dir, e->d_name);
		char *text;
		size_t len;
		rc = read_file(path, 1 << 16, &text, &len);
		if (rc < 0) {
			log_error("repl: cannot read %s: %s", path, strerror(-rc));
			break;
		}
		struct pair *p = pair_alloc(r);
		if (!p) {
			free(text);
			rc = -ENOMEM;
			break;
		}
		rc = pair_parse(p, text);
		free(text);
		if (rc < 0) {
			log_error("repl: %s is damaged; pair not loaded", path);
			pair_put(p);
			rc = 0;
			continue;
		}
		bucket_set_rate(&p->bucket, p->bandwidth);
		p->next = r->pairs;
		r->pairs = p;
		log_info("repl: loaded pair %s (%s, last synced cycle %" PRIu64 ")", p->name,
		         role_str(p->role), p->last_cycle);
	}
	closedir(d);
	return rc;
}

/* ---- lifecycle --------------------------------------------------------- */
int repl_create(struct store *store, const char *pool_dir,
                const struct repl_opts *opts, struct repl **out)
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
		rc = load_pairs(r);
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

#define MAX_CONNS 64

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
	pthread_mutex_lock(&r->mu);
	if (slot >= 0)
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

static void *pair_main(void *arg);

/* Under mu. */
int pair_start_thread(struct repl *r, struct pair *p)
{
	if (p->role != REPL_ROLE_PRIMARY || p->has_thread || !r->started || r->stopping)
		return 0;
	pair_get(p);
	int rc = -pthread_create(&p->th, NULL, pair_main, p);
	if (rc < 0) {
		pair_put(p);
		log_error("repl: cannot start pair %s: %s", p->name, strerror(-rc));
		return rc;
	}
	p->has_thread = true;
	return 0;
}

int repl_start(struct repl *r)
{
	if (r->listen_req[0]) {
		if (!r->secret) {
			log_error("repl: --listen needs a secret (--secret-file)");
			return -EINVAL;
		}
		int rc = link_listen(r->listen_req, &r->lfd, r->listen_addr,
		                     sizeof(r->listen_addr));
		if (rc < 0)
			return rc;
		log_info("repl: listening for peers on %s", r->listen_addr);
		rc = -pthread_create(&r->accept_th, NULL, accept_main, r);
		if (rc < 0) {
			close(r->lfd);
			r->lfd = -1;
			return rc;
		}
	}
	pthread_mutex_lock(&r->mu);
	r->started = true;
	uint64_t now = now_mono_ns();
	for (struct pair *p = r->pairs; p; p = p->next) {
		p->next_due_ns = now;
		if (p->role == REPL_ROLE_PRIMARY && p->cur_cycle == 0 && p->last_cycle) {
			/* Keep the schedule across restarts: next cycle one period
			 * after the last synced snapshot. */
			uint64_t wall = now_wall_s();
			uint64_t due = p->last_time + p->period_s;
			if (due > wall)
				p->next_due_ns = now + (due - wall) * 1000000000ull;
		}
		pair_start_thread(r, p);
		callback_update(r, p);
	}
	pthread_mutex_unlock(&r->mu);
	return 0;
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
		p->stop = true;
		if (p->active)
			link_abort(p->active);
		callback_drop(p);
	}
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	if (r->lfd >= 0) {
		pthread_join(r->accept_th, NULL);
		close(r->lfd);
		r->lfd = -1;
	}
	for (;;) {
		pthread_mutex_lock(&r->mu);
		struct pair *p = r->pairs;
		while (p && !p->has_thread)
			p = p->next;
		if (p)
			p->has_thread = false;
		pthread_mutex_unlock(&r->mu);
		if (!p)
			break;
		pthread_join(p->th, NULL);
	}
	/* Server threads: their links are aborted through the pairs they
	 * serve, or time out on their own deadline. */
	pthread_mutex_lock(&r->mu);
	while (r->conns || r->cb_threads) {
		for (struct pair *p = r->pairs; p; p = p->next) {
			if (p->active)
				link_abort(p->active);
			callback_drop(p);
		}
		for (int i = 0; i < MAX_CONNS; i++)
			if (r->srv[i])
				link_abort(r->srv[i]);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&r->cv, &r->mu, &ts);
	}
	pthread_mutex_unlock(&r->mu);
}

void repl_destroy(struct repl *r)
{
	if (!r)
		return;
	repl_stop(r);
	while (r->pairs) {
		struct pair *p = r->pairs;
		r->pairs = p->next;
		pair_put(p);
	}
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	link_tls_free(r->tls);
	if (r->secret)
		OPENSSL_cleanse(r->secret, r->secret_len);
	free(r->secret);
	free(r);
}

/* ---- the primary's scheduler ------------------------------------------- */
void cond_wait_until(struct repl *r, uint64_t due_mono)
{
	uint64_t now = now_mono_ns();
	uint64_t wait = due_mono > now ? due_mono - now : 0;
	if (wait > 1000000000ull)
		wait = 1000000000ull; /* re-check now and then, cheaply */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t ns = (uint64_t)ts.tv_nsec + wait;
	ts.tv_sec += (time_t)(ns / 1000000000ull);
	ts.tv_nsec = (long)(ns % 1000000000ull);
	pthread_cond_timedwait(&r->cv, &r->mu, &ts);
}

static void *pair_main(void *arg)
{
	struct pair *p = arg;
	struct repl *r = p->r;
	role_probe(p);
	pthread_mutex_lock(&r->mu);
	p->next_probe_ns = now_mono_ns() + REPL_HEARTBEAT_S * 1000000000ull;
	while (!p->stop && !r->stopping && !p->removed && p->role == REPL_ROLE_PRIMARY) {
		/* After a split brain only `pair resync` may send again. */
		if (p->paused || (p->split_brain && !p->resyncing)) {
			cond_wait_until(r, now_mono_ns() + 1000000000ull);
			continue;
		}
		uint64_t now = now_mono_ns();
		/* A demoting primary runs only the cycle its demote asks for. */
		bool due = p->sync_req > p->sync_taken || (now >= p->next_due_ns && !p->demoting);
		if (!due && !p->demoting && now >= p->next_probe_ns) {
			p->next_probe_ns = now + REPL_HEARTBEAT_S * 1000000000ull;
			pthread_mutex_unlock(&r->mu);
			role_probe(p);
			pthread_mutex_lock(&r->mu);
			continue;
		}
		if (!due) {
			cond_wait_until(r, p->demoting ? p->next_due_ns
			                               : MIN(p->next_due_ns, p->next_probe_ns));
			continue;
		}
		uint64_t started = now;
		pthread_mutex_unlock(&r->mu);
		int rc = send_cycle(p);
		pthread_mutex_lock(&r->mu);
		/* A cycle is contact enough: the next heartbeat is due a full
		 * interval after it. */
		p->next_probe_ns = now_mono_ns() + REPL_HEARTBEAT_S * 1000000000ull;
		if (rc == 0) {
			p->failures = 0;
			p->error[0] = '\0';
			p->peer_err[0] = '\0';
			/* Cycles start one period apart; one that outlasts the
			 * period is followed right away, never overlapped. */
			p->next_due_ns = started + p->period_s * 1000000000ull;
		} else if (rc == -ECANCELED && (p->stop || p->paused || p->removed ||
		                                r->stopping)) {
			p->next_due_ns = now_mono_ns();
		} else {
			p->failures++;
			unsigned sh = MIN(p->failures - 1, 6u);
			uint64_t backoff = MIN(1ull << sh, (uint64_t)REPL_BACKOFF_MAX_S);
			p->next_due_ns = now_mono_ns() + backoff * 1000000000ull;
			p->sync_failed = p->sync_req;
			/* A fresh `pair sync` request after a failure retries now. */
			p->sync_taken = p->sync_req;
			log_warn("repl: pair %s: cycle failed (%s); retry in %" PRIu64 " s",
			         p->name, p->error, backoff);
		}
		pthread_cond_broadcast(&r->cv);
	}
	pthread_mutex_unlock(&r->mu);
	pthread_mutex_lock(&r->mu);
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* ---- verbs ------------------------------------------------------------- */
int verb_fail(struct sbuf *out, int rc, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sbuf_printf(out, "%s\n", msg);
	return rc;
}

static void make_id(char *out)
{
	uint8_t raw[PAIR_ID_LEN / 2];
	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		uint64_t t = now_mono_ns() ^ ((uint64_t)getpid() << 32);
		memcpy(raw, &t, sizeof(t));
		memcpy(raw + 8, &t, sizeof(t));
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		sprintf(out + 2 * i, "%02x", raw[i]);
}

int repl_dial(struct repl *r, const char *peer, struct link **out, char *err, size_t errlen)
{
	if (!r->secret) {
		snprintf(err, errlen, "no secret configured (--secret-file)");
		return -EINVAL;
	}
	struct link *l;
	int rc = link_connect(peer, r->timeout_ms, &l, err, errlen);
	if (rc < 0)
		return rc;
	link_set_tls(l, r->tls);
	rc = link_handshake_client(l, r->secret, r->secret_len, r->site);
	if (rc < 0) {
		snprintf(err, errlen, "%s", l->err);
		link_close(l);
		return rc;
	}
	*out = l;
	return 0;
}

int pair_dial(struct pair *p, struct link **out, char *err, size_t errlen)
{
	struct repl *r = p->r;
	struct link *stale[PARK_MAX];
	unsigned n_stale = 0;
	struct link *l = NULL;
	char peer[WIRE_TEXT_MAX + 1] = "";
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
		if (p->peer[0]) {
			snprintf(peer, sizeof(peer), "%s", p->peer);
			break;
		}
		if (p->stop || p->removed || r->stopping || now >= until)
			break;
		cond_wait_until(r, until);
	}
	pthread_mutex_unlock(&r->mu);
	for (unsigned i = 0; i < n_stale; i++)
		link_close(stale[i]);
	if (l) {
		*out = l;
		return 0;
	}
	if (peer[0])
		return repl_dial(r, peer, out, err, errlen);
	snprintf(err, errlen, "the peer has no listener this site knows of and has not "
	         "connected to offer one (is its ferryd running, with --secret-file?)");
	return -ENOTCONN;
}

int repl_pair_create(struct repl *r, const char *name,
                     const struct repl_pair_opts *o, struct sbuf *out)
{
	if (!name_valid(name))
		return verb_fail(out, -EINVAL, "invalid pair name '%s'", name ? name : "");
	const char *remote = o->remote_name ? o->remote_name : name;
	if (!name_valid(remote))
		return verb_fail(out, -EINVAL, "invalid remote name '%s'", remote);
	if (!o->peer || !*o->peer)
		return verb_fail(out, -EINVAL, "pair create needs --peer HOST:PORT");
	char h[256], port[16];
	if (link_parse_addr(o->peer, h, sizeof(h), port, sizeof(port)) < 0)
		return verb_fail(out, -EINVAL, "bad --peer '%s' (want HOST:PORT)", o->peer);

	pthread_mutex_lock(&r->mu);
	bool exists = pair_find(r, name) != NULL;
	pthread_mutex_unlock(&r->mu);
	if (exists)
		return verb_fail(out, -EEXIST, "pair %s already exists", name);

	struct vol *v;
	int rc = vol_open(r->store, name, &v);
	if (rc < 0)
		return verb_fail(out, rc, "volume %s: %s", name, strerror(-rc));
	struct vol_info vi;
	rc = vol_info(v, &vi);
	if (rc < 0) {
		vol_close(v);
		return verb_fail(out, rc, "volume %s: %s", name, strerror(-rc));
	}
	struct pair *p = pair_alloc(r);
	if (!p) {
		vol_close(v);
		return verb_fail(out, -ENOMEM, "out of memory");
	}
	snprintf(p->name, sizeof(p->name), "%s", name);
	make_id(p->id);
	p->role = REPL_ROLE_PRIMARY;
	snprintf(p->peer, sizeof(p->peer), "%s", o->peer);
	/* The operator's address of the secondary stays the way to reach it
	 * after any role change (it may be a proxy or a VIP). */
	snprintf(p->peer_addr, sizeof(p->peer_addr), "%s", o->peer);
	p->peer_fixed = true;
	snprintf(p->remote, sizeof(p->remote), "%s", remote);
	p->period_s = o->period_s ? o->period_s : REPL_DEFAULT_PERIOD;
	p->max_inflight = o->max_inflight ? o->max_inflight : REPL_DEFAULT_INFLIGHT;
	p->bandwidth = o->bandwidth;
	p->compress = o->compress;
	p->created = now_wall_s();
	bucket_set_rate(&p->bucket, p->bandwidth);

	/* The secondary first: it makes (or checks) its volume and takes the
	 * empty base its initial sync can always roll back to. */
	struct link *l;
	char err[512];
	rc = repl_dial(r, p->peer, &l, err, sizeof(err));
	if (rc < 0) {
		rc = verb_fail(out, rc, "cannot reach peer %s: %s", p->peer, err);
		goto out;
	}
	struct wire_msg m = { .type = WIRE_PAIR_OPEN };
	snprintf(m.u.pair_open.pair_id, sizeof(m.u.pair_open.pair_id), "%s", p->id);
	snprintf(m.u.pair_open.pair, sizeof(m.u.pair_open.pair), "%s", name);
	snprintf(m.u.pair_open.volume, sizeof(m.u.pair_open.volume), "%s", remote);
	snap_name(name, 0, m.u.pair_open.snap, sizeof(m.u.pair_open.snap));
	snprintf(m.u.pair_open.origin, sizeof(m.u.pair_open.origin), "%s",
	         r->site[0] ? r->site : "?");
	m.u.pair_open.size = vi.size;
	m.u.pair_open.object_size = vi.object_size;
	m.u.pair_open.block_size = vi.block_size;
	m.u.pair_open.flags = WIRE_OPEN_CREATE | (o->force ? WIRE_OPEN_FORCE : 0);
	rc = link_send(l, &m);
	if (rc == 0)
		rc = link_expect(l, WIRE_PAIR_INFO, &m, 0);
	if (rc < 0) {
		rc = verb_fail(out, rc, "peer %s: %s", p->peer, l->err);
		link_close(l);
		goto out;
	}
	link_close(l);

	/* The primary's first snapshot: the initial sync's target. */
	p->cur_cycle = 1;
	snap_name(name, 1, p->cur_snap, sizeof(p->cur_snap));
	(void)vol_snap_delete(v, p->cur_snap); /* a leftover of an older pair */
	rc = vol_snap_create(v, p->cur_snap);
	if (rc < 0) {
		rc = verb_fail(out, rc, "cannot snapshot %s: %s", name, strerror(-rc));
		goto out;
	}
	p->cur_time = now_wall_s();
	pthread_mutex_lock(&r->mu);
	if (pair_find(r, name)) {
		pthread_mutex_unlock(&r->mu);
		rc = verb_fail(out, -EEXIST, "pair %s already exists", name);
		goto out;
	}
	rc = pair_save(p);
	if (rc == 0) {
		p->next = r->pairs;
		r->pairs = p;
		p->next_due_ns = now_mono_ns();
		pair_start_thread(r, p);
		p = NULL;
	}
	pthread_mutex_unlock(&r->mu);
	if (rc < 0) {
		rc = verb_fail(out, rc, "cannot save pair %s: %s", name, strerror(-rc));
		goto out;
	}
	sbuf_printf(out, "pair %s created: %s -> %s volume %s; initial sync started\n",
	            name, name, o->peer, remote);
out:
	vol_close(v);
	if (p)
		pair_put(p);
	return rc;
}

/* Under mu.  Keep repl_pair_states (metrics.c) in step. */
const char *pair_state(const struct pair *p)
{
	if (p->resyncing && p->running)
		return "resyncing";
	if (p->split_brain || p->needs_resync)
		return "split-brain";
	if (p->role == REPL_ROLE_PRIMARY && p->demoting)
		return "demoting";
	if (p->role == REPL_ROLE_PRIMARY && p->paused)
		return "paused";
	if (p->error[0] && !p->running)
		return "error";
	if (p->last_cycle == 0)
		return "initial-sync";
	if (p->running)
		return "syncing";
	return "idle";
}

static double pct(uint64_t done, uint64_t total)
{
	if (!total)
		return 0.0;
	return MIN(100.0, 100.0 * (double)done / (double)total);
}

/* Under mu. */
/* Under mu: who opens the pair's connections (docs/PROTOCOL.md 11). */
static const char *connection_str(const struct pair *p)
{
	if (p->role == REPL_ROLE_PRIMARY)
		return p->peer[0] ? "dials-peer" : "peer-calls-in";
	return p->r->listen_req[0] || !p->peer_addr[0] ? "listens" : "calls-primary";
}

static void status_json(struct jw *w, const struct pair *p)
{
	uint64_t now = now_wall_s();
	jw_obj_begin(w);
	jw_key(w, "name"); jw_str(w, p->name);
	jw_key(w, "role"); jw_str(w, role_str(p->role));
	jw_key(w, "peer"); jw_str(w, p->peer);
	jw_key(w, "connection"); jw_str(w, connection_str(p));
	/* Primary: the last contact with the peer (cycle or heartbeat). */
	jw_key(w, "peer_error");
	if (p->role == REPL_ROLE_PRIMARY && p->peer_err[0])
		jw_str(w, p->peer_err);
	else
		jw_null(w);
	jw_key(w, "remote_name"); jw_str(w, p->remote);
	jw_key(w, "state"); jw_str(w, pair_state(p));
	jw_key(w, "period_s"); jw_u64(w, p->period_s);
	jw_key(w, "last_synced");
	if (p->last_cycle) {
		jw_obj_begin(w);
		jw_key(w, "snapshot"); jw_str(w, p->last_snap);
		jw_key(w, "time"); jw_u64(w, p->last_time);
		jw_key(w, "cycle"); jw_u64(w, p->last_cycle);
		jw_obj_end(w);
	} else {
		jw_null(w);
	}
	/* Data written since the last synced snapshot is what a failover
	 * would lose; before the first sync that is everything since create. */
	uint64_t ref = p->last_cycle ? p->last_time : p->created;
	jw_key(w, "rpo_lag_s"); jw_u64(w, now > ref ? now - ref : 0);
	jw_key(w, "cycle");
	if (p->running) {
		jw_obj_begin(w);
		jw_key(w, "number"); jw_u64(w, p->role == REPL_ROLE_PRIMARY ? p->cur_cycle
		                                                           : p->last_cycle + 1);
		jw_key(w, "done_bytes"); jw_u64(w, p->done_bytes);
		jw_key(w, "total_bytes"); jw_u64(w, p->total_bytes);
		jw_key(w, "percent"); jw_double(w, pct(p->done_bytes, p->total_bytes));
		jw_obj_end(w);
	} else {
		jw_null(w);
	}
	jw_key(w, "last_cycle");
	if (p->has_stats) {
		jw_obj_begin(w);
		jw_key(w, "number"); jw_u64(w, p->stats.number);
		jw_key(w, "extents"); jw_u64(w, p->stats.extents);
		jw_key(w, "data_bytes"); jw_u64(w, p->stats.data_bytes);
		jw_key(w, "zero_bytes"); jw_u64(w, p->stats.zero_bytes);
		jw_key(w, "wire_bytes"); jw_u64(w, p->stats.wire_bytes);
		jw_key(w, "seconds"); jw_double(w, p->stats.seconds);
		jw_obj_end(w);
	} else {
		jw_null(w);
	}
	jw_key(w, "error");
	if (p->error[0])
		jw_str(w, p->error);
	else
		jw_null(w);
	jw_key(w, "paused"); jw_bool(w, p->paused);
	jw_key(w, "max_inflight"); jw_u64(w, p->max_inflight);
	jw_key(w, "bandwidth"); jw_u64(w, p->bandwidth);
	jw_key(w, "compress"); jw_str(w, p->compress ? "zstd" : "none");
	jw_key(w, "epoch"); jw_u64(w, p->epoch);
	jw_key(w, "demoting"); jw_bool(w, p->demoting);
	jw_key(w, "peer_demoted"); jw_bool(w, p->peer_demoted);
	jw_key(w, "split_brain"); jw_bool(w, p->split_brain);
	jw_key(w, "needs_resync"); jw_bool(w, p->needs_resync);
	jw_key(w, "common_snapshot");
	if (p->common_snap[0])
		jw_str(w, p->common_snap);
	else
		jw_null(w);
	jw_key(w, "split_brain_snapshot");
	if (p->sb_snap[0])
		jw_str(w, p->sb_snap);
	else
		jw_null(w);
	jw_key(w, "resync");
	if (p->resyncing) {
		jw_obj_begin(w);
		jw_key(w, "running"); jw_bool(w, p->running);
		jw_key(w, "extra_extents"); jw_u64(w, p->n_extra);
		jw_key(w, "done_bytes"); jw_u64(w, p->running ? p->done_bytes : 0);
		jw_key(w, "total_bytes"); jw_u64(w, p->running ? p->total_bytes : 0);
		jw_key(w, "percent"); jw_double(w, p->running ? pct(p->done_bytes, p->total_bytes) : 0.0);
		jw_obj_end(w);
	} else {
		jw_null(w);
	}
	jw_obj_end(w);
}

/* Under mu. */
static void status_text(struct sbuf *b, const struct pair *p)
{
	char t1[32], t2[32], t3[32];
	uint64_t now = now_wall_s();
	sbuf_printf(b, "pair %s: %s of %s %s, state %s, period %" PRIu64 " s\n", p->name,
	            role_str(p->role), p->role == REPL_ROLE_PRIMARY ? "peer" : "primary at",
	            p->peer[0] ? p->peer : "(a peer that calls in)", pair_state(p), p->period_s);
	if (!strcmp(connection_str(p), "peer-calls-in"))
		sbuf_printf(b, "  connection: the peer has no listener and connects here "
		            "(%u connection%s offered now)\n", p->n_parked, p->n_parked == 1 ? "" : "s");
	else if (!strcmp(connection_str(p), "calls-primary"))
		sbuf_printf(b, "  connection: no --listen here, so this site connects to the "
		            "primary at %s%s\n", p->peer_addr,
		            p->cb_failing ? " (failing: see the log)" : "");
	if (p->last_cycle)
		sbuf_printf(b, "  last synced: %s (cycle %" PRIu64 "), RPO lag %" PRIu64 " s\n",
		            p->last_snap, p->last_cycle,
		            now > p->last_time ? now - p->last_time : 0);
	else
		sbuf_printf(b, "  last synced: never (initial sync pending)\n");
	if (p->running) {
		double pc = pct(p->done_bytes, p->total_bytes);
		int fill = (int)(pc / 5.0);
		char bar[21];
		for (int i = 0; i < 20; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[20] = '\0';
		sbuf_printf(b, "  cycle %" PRIu64 ": [%s] %5.1f%%  %s / %s\n",
		            p->role == REPL_ROLE_PRIMARY ? p->cur_cycle : p->last_cycle + 1,
		            bar, pc, fmt_bytes(p->done_bytes, t1, sizeof(t1)),
		            fmt_bytes(p->total_bytes, t2, sizeof(t2)));
	}
	if (p->has_stats)
		sbuf_printf(b, "  last cycle %" PRIu64 ": %" PRIu64 " extents, %s data, %s zeroed, "
		            "%s on the wire, %.2f s\n", p->stats.number, p->stats.extents,
		            fmt_bytes(p->stats.data_bytes, t1, sizeof(t1)),
		            fmt_bytes(p->stats.zero_bytes, t2, sizeof(t2)),
		            fmt_bytes(p->stats.wire_bytes, t3, sizeof(t3)), p->stats.seconds);
	if (p->error[0])
		sbuf_printf(b, "  error: %s\n", p->error);
	if (p->role == REPL_ROLE_PRIMARY && p->peer_err[0] && strcmp(p->peer_err, p->error))
		sbuf_printf(b, "  peer check: %s\n", p->peer_err);
	if (p->demoting)
		sbuf_printf(b, "  demoting: writes refused; `pair demote %s` again finishes it\n",
		            p->name);
	if (p->peer_demoted)
		sbuf_printf(b, "  the primary has demoted: `pair promote %s` takes over\n", p->name);
	if (p->split_brain || p->needs_resync)
		sbuf_printf(b, "  split brain: both sites were primary; common snapshot %s%s%s\n"
		            "  %s\n", p->common_snap[0] ? p->common_snap : "(unknown)",
		            p->sb_snap[0] ? ", this site's divergence kept in " : "", p->sb_snap,
		            p->role == REPL_ROLE_PRIMARY
		                ? "run `pair demote` on the other site, then `pair resync` here"
		                : "waiting for `pair resync` on the new primary");
}

/* Under mu: rate and ETA of a running cycle. */
static void progress_text(const struct pair *p, struct sbuf *b)
{
	double el = (double)(now_mono_ns() - p->cycle_start_ns) / 1e9;
	if (el <= 0.0 || !p->done_bytes) {
		sbuf_puts(b, "  rate: measuring\n");
		return;
	}
	double rate = (double)p->done_bytes / el;
	double left = p->total_bytes > p->done_bytes ? (double)(p->total_bytes - p->done_bytes) : 0;
	char t[32];
	sbuf_printf(b, "  rate: %s/s, ETA %.0f s\n", fmt_bytes((uint64_t)rate, t, sizeof(t)),
	            rate > 0 ? left / rate : 0.0);
}

int repl_pair_list(struct repl *r, bool json, struct sbuf *out)
{
	pthread_mutex_lock(&r->mu);
	if (json) {
		struct jw w;
		jw_init(&w, out);
		jw_arr_begin(&w);
		for (struct pair *p = r->pairs; p; p = p->next)
			if (!p->removed)
				status_json(&w, p);
		jw_arr_end(&w);
		sbuf_puts(out, "\n");
	} else {
		for (struct pair *p = r->pairs; p; p = p->next)
			if (!p->removed)
				sbuf_printf(out, "%-20s %-9s %-12s %s\n", p->name, role_str(p->role),
				            pair_state(p), p->peer);
	}
	pthread_mutex_unlock(&r->mu);
	return 0;
}

int repl_pair_status(struct repl *r, const char *name, bool json, struct sbuf *out)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	if (!p) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(out, -ENOENT, "no pair %s", name ? name : "");
	}
	if (json) {
		struct jw w;
		jw_init(&w, out);
		status_json(&w, p);
		sbuf_puts(out, "\n");
	} else {
		status_text(out, p);
		if (p->running)
			progress_text(p, out);
	}
	pthread_mutex_unlock(&r->mu);
	return 0;
}

int repl_pair_sync_request(struct repl *r, const char *name, uint64_t *ticket,
                           struct sbuf *out)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	int rc = 0;
	if (!p)
		rc = verb_fail(out, -ENOENT, "no pair %s", name ? name : "");
	else if (p->role != REPL_ROLE_PRIMARY)
		rc = verb_fail(out, -EINVAL, "pair %s: run sync on the primary", name);
	else if (p->paused)
		rc = verb_fail(out, -EAGAIN, "pair %s is paused (pair resume first)", name);
	else if (p->split_brain && !p->resyncing)
		rc = verb_fail(out, -ESTALE, "pair %s: split brain (common snapshot %s): no cycle runs; "
		          "demote one side, then `pair resync` on the other", name,
		          p->common_snap[0] ? p->common_snap : "unknown");
	if (rc == 0) {
		*ticket = ++p->sync_req;
		pthread_cond_broadcast(&r->cv);
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int repl_pair_sync_wait(struct repl *r, const char *name, uint64_t ticket,
                        unsigned timeout_ms, uint64_t *done, uint64_t *total,
                        struct sbuf *out)
{
	uint64_t until = now_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	int rc = -EINPROGRESS;
	if (!p) {
		rc = verb_fail(out, -ENOENT, "pair %s was removed", name ? name : "");
		goto out;
	}
	pair_get(p); /* rm may unlink it while we wait */
	for (;;) {
		if (p->sync_done >= ticket) {
			sbuf_printf(out, "pair %s: synced, snapshot %s (cycle %" PRIu64 ")\n", name,
			            p->last_snap, p->last_cycle);
			rc = 0;
			break;
		}
		if (p->sync_failed >= ticket) {
			rc = verb_fail(out, -EIO, "pair %s: cycle failed: %s", name, p->error);
			break;
		}
		if (p->split_brain && !p->resyncing) {
			rc = verb_fail(out, -ESTALE, "pair %s: split brain: %s", name, p->error);
			break;
		}
		if (p->removed || p->stop || p->paused || r->stopping) {
			rc = verb_fail(out, -ECANCELED, "pair %s: sync interrupted (paused, removed or "
			          "daemon stopping)", name);
			break;
		}
		if (now_mono_ns() >= until)
			break;
		cond_wait_until(r, MIN(until, now_mono_ns() + 1000000000ull));
	}
	if (done)
		*done = p->running ? p->done_bytes : 0;
	if (total)
		*total = p->running ? p->total_bytes : 0;
	pair_put(p);
out:
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int repl_pair_sync(struct repl *r, const char *name, bool wait, struct sbuf *out)
{
	uint64_t ticket;
	int rc = repl_pair_sync_request(r, name, &ticket, out);
	if (rc < 0)
		return rc;
	if (!wait) {
		sbuf_printf(out, "pair %s: cycle requested\n", name);
		return 0;
	}
	do
		rc = repl_pair_sync_wait(r, name, ticket, 1000, NULL, NULL, out);
	while (rc == -EINPROGRESS);
	return rc;
}

static int set_paused(struct repl *r, const char *name, bool paused, struct sbuf *out)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	int rc = 0;
	if (!p)
		rc = verb_fail(out, -ENOENT, "no pair %s", name ? name : "");
	else if (p->role != REPL_ROLE_PRIMARY)
		rc = verb_fail(out, -EINVAL, "pair %s: pause and resume run on the primary", name);
	if (rc < 0) {
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	p->paused = paused;
	rc = pair_save(p);
	/* A running transfer stops now; its checkpoint makes the resume cheap. */
	if (paused && p->active)
		link_abort(p->active);
	if (!paused) {
		p->failures = 0;
		p->next_due_ns = now_mono_ns();
	}
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	if (rc < 0)
		return verb_fail(out, rc, "cannot save pair %s: %s", name, strerror(-rc));
	sbuf_printf(out, "pair %s %s\n", name, paused ? "paused" : "resumed");
	return 0;
}

int repl_pair_pause(struct repl *r, const char *name, struct sbuf *out)
{
	return set_paused(r, name, true, out);
}

int repl_pair_resume(struct repl *r, const char *name, struct sbuf *out)
{
	return set_paused(r, name, false, out);
}

enum repl_role repl_volume_role(struct repl *r, const char *volume)
{
	if (!r || !volume)
		return REPL_ROLE_NONE;
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_find(r, volume);
	enum repl_role role = p ? p->role : REPL_ROLE_NONE;
	pthread_mutex_unlock(&r->mu);
	return role;
}

bool repl_volume_read_only(struct repl *r, const char *volume)
{
	if (!r || !volume)
		return false;
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_find(r, volume);
	bool ro = p && (p->role == REPL_ROLE_SECONDARY || p->demoting);
	pthread_mutex_unlock(&r->mu);
	return ro;
}

bool repl_snapshot_in_use(struct repl *r, const char *volume, const char *snap)
{
	if (!r || !volume || !snap)
		return false;
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_find(r, volume);
	bool used = p && (!strcmp(p->last_snap, snap) || !strcmp(p->cur_snap, snap) ||
	                  !strcmp(p->common_snap, snap) || !strcmp(p->sb_snap, snap) ||
	                  (p->role == REPL_ROLE_SECONDARY && !p->last_cycle &&
	                   !strcmp(p->seed_snap, snap)));
	pthread_mutex_unlock(&r->mu);
	return used;
}

/* Deletes every snapshot named after the pair (ferry.PAIR.*) but keep. */
void drop_pair_snaps(struct repl *r, const char *vol, const char *pair, const char *keep)
{
	struct vol *v;
	if (vol_open(r->store, vol, &v) < 0)
		return;
	struct snap_info *s;
	size_t n;
	char prefix[STORE_NAME_MAX + 1];
	snap_name(pair, 0, prefix, sizeof(prefix));
	size_t plen = strlen(prefix) - 6; /* without the cycle digits */
	if (vol_snap_list(v, &s, &n) == 0) {
		for (size_t i = 0; i < n; i++)
			if (!strncmp(s[i].name, prefix, plen) && s[i].name[plen] &&
			    strspn(s[i].name + plen, "0123456789") == strlen(s[i].name + plen) &&
			    (!keep || strcmp(s[i].name, keep)))
				(void)vol_snap_delete(v, s[i].name);
		free(s);
	}
	vol_close(v);
}

int repl_pair_rm(struct repl *r, const char *name, struct sbuf *out)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	if (!p) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(out, -ENOENT, "no pair %s", name ? name : "");
	}
	p->removed = true;
	p->stop = true;
	if (p->active)
		link_abort(p->active);
	/* Our own call-back threads end (the pair is gone); the offers the
	 * peer made stay until the PAIR_REMOVE below has used one. */
	for (int i = 0; i < CB_SLOTS; i++)
		if (p->cb_link[i])
			link_abort(p->cb_link[i]);
	pthread_cond_broadcast(&r->cv);
	bool joined = p->has_thread;
	p->has_thread = false;
	pair_get(p);
	/* A secondary's transfer must be gone before its head is rolled back. */
	uint64_t until = now_mono_ns() + 10000000000ull;
	while (p->active && now_mono_ns() < until) {
		link_abort(p->active);
		cond_wait_until(r, now_mono_ns() + 50000000ull);
	}
	pthread_mutex_unlock(&r->mu);
	if (joined)
		pthread_join(p->th, NULL);

	char warn[600] = "";
	if (p->role == REPL_ROLE_PRIMARY) {
		struct link *l;
		char err[512];
		int rc = pair_dial(p, &l, err, sizeof(err));
		if (rc == 0) {
			struct wire_msg m = { .type = WIRE_PAIR_REMOVE };
			snprintf(m.u.pair_remove.volume, sizeof(m.u.pair_remove.volume), "%s", p->remote);
			snprintf(m.u.pair_remove.pair_id, sizeof(m.u.pair_remove.pair_id), "%s", p->id);
			rc = link_send(l, &m);
			if (rc == 0)
				rc = link_expect(l, WIRE_OK, &m, 0);
			if (rc < 0)
				snprintf(err, sizeof(err), "%s", l->err);
			link_close(l);
		}
		if (rc < 0)
			snprintf(warn, sizeof(warn), "warning: the secondary was not told (%.500s); "
			         "run `pair rm` there too\n", err);
		drop_pair_snaps(r, p->name, p->name, NULL);
	} else {
		struct vol *v;
		/* The secondary keeps its volume at its last synced content. */
		if (p->last_cycle && vol_open(r->store, p->name, &v) == 0) {
			(void)vol_rollback(v, p->last_snap);
			vol_close(v);
		}
	}
	char path[4400];
	if (pair_path(r, p->name, "pair", path, sizeof(path)) == 0)
		unlink(path);
	if (pair_ckpt_path(r, p->name, path, sizeof(path)) == 0)
		unlink(path);
	(void)fsync_path(r->pairs_dir);
	pthread_mutex_lock(&r->mu);
	callback_drop(p);
	pair_unlink(r, p);
	p->refs--;   /* the list's reference; ours keeps p alive */
	pair_put(p); /* ours */
	pthread_mutex_unlock(&r->mu);
	sbuf_puts(out, warn);
	sbuf_printf(out, "pair %s removed\n", name);
	return 0;
}
