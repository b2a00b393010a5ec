/* repl engine: the `ferry pair` verbs that are not role changes or verify:
 * create (and re-pairing), status, list, set, pause, resume, sync, rm.
 * They change state through pair_change() and wake the scheduler; they
 * never run a cycle themselves. */
#include "repl/engine.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "common/common.h"

const double repl_hist_bounds[REPL_HIST_BUCKETS - 1] = {
	0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600,
};

void pair_exclusive_begin(struct pair *p)
{
	struct repl *r = p->r;
	p->exclusive++;
	while (p->busy) {
		if (p->active)
			link_abort(p->active);
		cond_wait_until(r, now_mono_ns() + 100000000ull);
	}
}

void pair_exclusive_end(struct pair *p)
{
	p->exclusive--;
	pthread_cond_broadcast(&p->r->cv);
}

static void make_id(char *out)
{
	uint8_t raw[16];
	if (RAND_bytes(raw, sizeof(raw)) != 1) {
		uint64_t t = now_mono_ns() ^ ((uint64_t)getpid() << 32);
		memcpy(raw, &t, sizeof(t));
		memcpy(raw + 8, &t, sizeof(t));
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		sprintf(out + 2 * i, "%02x", raw[i]);
}

static void settings_apply(struct pair_rec *c, const struct repl_settings *s, unsigned set)
{
	if (set & REPL_SET_PERIOD)
		c->period_s = s->period_s ? s->period_s : REC_DEFAULT_PERIOD;
	if (set & REPL_SET_BANDWIDTH)
		c->bandwidth = s->bandwidth;
	if (set & REPL_SET_COMPRESS)
		c->compress = s->compress;
	if (set & REPL_SET_INFLIGHT)
		c->max_inflight = s->max_inflight ? s->max_inflight : REC_DEFAULT_INFLIGHT;
	if (set & REPL_SET_PEER_TIMEOUT)
		c->peer_timeout_s = s->peer_timeout_s;
	if (set & REPL_SET_SPLIT_BRAIN)
		c->split_policy = s->split_brain;
	if (set & REPL_SET_KEEP)
		c->keep = s->keep ? s->keep : REC_DEFAULT_KEEP;
	if (set & REPL_SET_KEEP_FOR)
		c->keep_for_s = s->keep_for_s;
}

static void settings_of(const struct pair_rec *c, struct repl_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->period_s = c->period_s;
	s->bandwidth = c->bandwidth;
	s->compress = c->compress;
	s->max_inflight = c->max_inflight;
	s->peer_timeout_s = c->peer_timeout_s;
	s->split_brain = c->split_policy;
	s->keep = c->keep;
	s->keep_for_s = c->keep_for_s;
}

/* ---- create ------------------------------------------------------------------ */
int repl_pair_create(struct repl *r, const char *name, const struct repl_pair_opts *o,
                     struct repl_created *res, struct repl_err *err)
{
	memset(res, 0, sizeof(*res));
	if (!name || !name_valid(name))
		return verb_fail(err, -EINVAL, "invalid pair name '%s'", name ? name : "");
	const char *remote = o->remote_name ? o->remote_name : name;
	if (!name_valid(remote))
		return verb_fail(err, -EINVAL, "invalid remote name '%s'", remote);
	if (!o->peer || !*o->peer)
		return verb_fail(err, -EINVAL, "pair create needs --peer HOST:PORT");
	char h[256], port[16];
	if (link_parse_addr(o->peer, h, sizeof(h), port, sizeof(port)) < 0)
		return verb_fail(err, -EINVAL, "bad --peer '%s' (want HOST:PORT)", o->peer);

	pthread_mutex_lock(&r->mu);
	bool exists = pair_find(r, name) != NULL;
	pthread_mutex_unlock(&r->mu);
	if (exists)
		return verb_fail(err, -EEXIST, "pair %s already exists", name);

	struct vol *v;
	int rc = vol_open(r->store, name, &v);
	if (rc < 0)
		return verb_fail(err, rc, "volume %s: %s", name, strerror(-rc));
	struct vol_info vi;
	rc = vol_info(v, &vi);
	if (rc < 0) {
		vol_close(v);
		return verb_fail(err, rc, "volume %s: %s", name, strerror(-rc));
	}
	struct pair *p = pair_alloc(r);
	if (!p) {
		vol_close(v);
		return verb_fail(err, -ENOMEM, "out of memory");
	}
	struct pair_rec *c = &p->rec;
	c->phase = PH_PRIMARY;
	snprintf(c->name, sizeof(c->name), "%s", name);
	snprintf(c->volume, sizeof(c->volume), "%s", name);
	make_id(c->id);
	rec_text(c->peer, sizeof(c->peer), o->peer);
	/* The operator's address of the secondary stays the way to reach it
	 * after any role change (it may be a proxy or a VIP). */
	rec_text(c->peer_addr, sizeof(c->peer_addr), o->peer);
	c->peer_fixed = true;
	snprintf(c->remote, sizeof(c->remote), "%s", remote);
	settings_apply(c, &o->s, ~0u);
	c->created = now_wall_s();

	/* Re-pairing: the snapshot a `pair rm` kept, if it is still here. */
	struct pair_base base;
	struct snap_info si;
	bool has_base = base_load(r, name, &base) == 0 && vol_snap_get(v, base.snap, &si) == 0 &&
	                (!base.peer_volume[0] || !strcmp(base.peer_volume, remote));

	/* The secondary first: it makes (or checks) its volume and takes the
	 * empty base its initial sync can always roll back to. */
	struct link *l;
	char e[512];
	rc = repl_dial(r, c->peer, &l, e, sizeof(e), NULL);
	if (rc < 0) {
		rc = verb_fail(err, rc, "cannot reach peer %s: %s", c->peer, e);
		goto out;
	}
	struct wire_msg m = { .type = WIRE_PAIR_OPEN };
	snprintf(m.u.pair_open.pair_id, sizeof(m.u.pair_open.pair_id), "%s", c->id);
	snprintf(m.u.pair_open.pair, sizeof(m.u.pair_open.pair), "%s", name);
	snprintf(m.u.pair_open.volume, sizeof(m.u.pair_open.volume), "%s", remote);
	snap_name(name, 0, m.u.pair_open.snap, sizeof(m.u.pair_open.snap));
	snprintf(m.u.pair_open.origin, sizeof(m.u.pair_open.origin), "%s",
	         r->site[0] ? r->site : "?");
	m.u.pair_open.size = vi.size;
	m.u.pair_open.object_size = vi.object_size;
	m.u.pair_open.block_size = vi.block_size;
	m.u.pair_open.flags = WIRE_OPEN_CREATE | (o->force ? WIRE_OPEN_FORCE : 0);
	if (has_base) {
		m.u.pair_open.flags |= WIRE_OPEN_BASE;
		snprintf(m.u.pair_open.base_snap, sizeof(m.u.pair_open.base_snap), "%s", base.snap);
		snprintf(m.u.pair_open.base_id, sizeof(m.u.pair_open.base_id), "%s", base.pair_id);
		m.u.pair_open.base_cycle = base.cycle;
	}
	rc = link_send(l, &m);
	if (rc == 0)
		rc = link_expect(l, WIRE_PAIR_INFO, &m, 0);
	if (rc < 0) {
		rc = verb_fail(err, rc, "peer %s: %s", c->peer, l->err);
		link_close(l);
		goto out;
	}
	link_close(l);
	bool incremental = has_base && m.u.pair_info.last_cycle == base.cycle &&
	                   !strcmp(m.u.pair_info.last_snap, base.snap);
	if (incremental) {
		/* Both sides hold base.snap: the first cycle sends what changed
		 * since, not the whole volume. */
		c->last_cycle = base.cycle;
		snprintf(c->last_snap, sizeof(c->last_snap), "%s", base.snap);
		c->last_time = base.time;
	}
	/* The primary's first snapshot: the first cycle's target. */
	c->cur_cycle = c->last_cycle + 1;
	snap_name(name, c->cur_cycle, c->cur_snap, sizeof(c->cur_snap));
	(void)vol_snap_delete(v, c->cur_snap); /* a leftover of an older pair */
	rc = vol_snap_create(v, c->cur_snap);
	if (rc < 0) {
		rc = verb_fail(err, rc, "cannot snapshot %s: %s", name, strerror(-rc));
		goto out;
	}
	c->cur_time = now_wall_s();
	pthread_mutex_lock(&r->mu);
	if (pair_find(r, name)) {
		pthread_mutex_unlock(&r->mu);
		rc = verb_fail(err, -EEXIST, "pair %s already exists", name);
		goto out;
	}
	rc = pair_add(r, p, e, sizeof(e));
	if (rc == 0) {
		pair_contact(p);
		p->next_due_ns = now_mono_ns();
		snprintf(res->peer, sizeof(res->peer), "%s", c->peer);
		snprintf(res->remote, sizeof(res->remote), "%s", remote);
		res->incremental = incremental;
		if (incremental) {
			snprintf(res->base_snap, sizeof(res->base_snap), "%s", base.snap);
			res->base_cycle = base.cycle;
		}
		p = NULL;
	}
	pairs_unlock(r);
	if (rc < 0) {
		rc = verb_fail(err, rc, "%s", e);
		goto out;
	}
	base_remove(r, name);
out:
	vol_close(v);
	if (p)
		pair_put(p);
	return rc;
}

/* ---- status ------------------------------------------------------------------ */
/* Under mu. */
static const char *connection_of(const struct pair *p)
{
	if (pair_phase_primary(p->rec.phase))
		return p->rec.peer[0] ? "dials-peer" : "peer-calls-in";
	return p->r->listen_req[0] || !p->rec.peer_addr[0] ? "listens" : "calls-primary";
}

/* Under mu: fills st; a visible state that changed by itself since it was
 * last derived (a peer timeout ran out) is logged now. */
static void status_fill(struct pair *p, struct repl_status *st)
{
	const struct pair_rec *c = &p->rec;
	uint64_t now = now_wall_s(), mono = now_mono_ns();
	pair_refresh(p, mono);
	enum repl_state state = p->state;
	memset(st, 0, sizeof(*st));
	snprintf(st->name, sizeof(st->name), "%s", c->name);
	snprintf(st->volume, sizeof(st->volume), "%s", c->volume);
	snprintf(st->remote, sizeof(st->remote), "%s", c->remote);
	st->role = pair_phase_primary(c->phase) ? REPL_ROLE_PRIMARY : REPL_ROLE_SECONDARY;
	st->state = state;
	snprintf(st->peer, sizeof(st->peer), "%s", c->peer);
	snprintf(st->peer_addr, sizeof(st->peer_addr), "%s", c->peer_addr);
	st->connection = connection_of(p);
	st->offers = p->n_parked;
	st->callback_failing = p->cb_failing;
	if (st->role == REPL_ROLE_PRIMARY)
		snprintf(st->peer_error, sizeof(st->peer_error), "%s", p->peer_err);
	st->peer_last_contact = p->contact_wall;
	st->period_s = c->period_s;
	st->bandwidth = c->bandwidth;
	st->peer_timeout_s = pair_rec_peer_timeout(c);
	st->peer_timeout_default = !c->peer_timeout_s;
	st->max_inflight = c->max_inflight;
	st->compress = c->compress;
	st->split_brain_policy = c->split_policy;
	st->keep = c->keep;
	st->keep_for_s = c->keep_for_s;
	st->has_last = c->last_cycle != 0;
	snprintf(st->last_snap, sizeof(st->last_snap), "%s", c->last_snap);
	/* An idle pair's last synced snapshot stays current: its time is
	 * the last time the primary found nothing changed since. */
	st->last_time = pair_synced_time(p);
	st->last_cycle = c->last_cycle;
	/* Data written since the last synced snapshot is what a failover
	 * would lose; before the first sync that is everything since create.
	 * On a secondary whose primary went silent it keeps growing. */
	uint64_t ref = c->last_cycle ? st->last_time : c->created;
	st->rpo_lag_s = now > ref ? now - ref : 0;
	st->last_success = p->last_success;
	st->running = p->running;
	if (p->running) {
		st->cycle_number = pair_phase_primary(c->phase) ? c->cur_cycle : c->last_cycle + 1;
		st->done_bytes = p->done_bytes;
		st->total_bytes = p->total_bytes;
		st->cycle_elapsed_s = (double)(mono - p->cycle_start_ns) / 1e9;
	}
	st->has_stats = c->has_stats;
	st->last = (struct repl_cycle_stats){ c->stats.number, c->stats.extents,
	                                      c->stats.data_bytes, c->stats.zero_bytes,
	                                      c->stats.wire_bytes, c->stats.seconds };
	snprintf(st->error, sizeof(st->error), "%s", p->error);
	st->consecutive_failures = p->failures;
	st->paused = c->phase == PH_PAUSED;
	st->demoting = c->phase == PH_DEMOTING;
	st->peer_demoted = c->phase == PH_PEER_DEMOTED;
	st->split_brain = c->phase == PH_SPLIT_BRAIN || c->phase == PH_RESYNCING ||
	                  c->phase == PH_NEEDS_RESYNC;
	st->needs_resync = c->phase == PH_NEEDS_RESYNC;
	st->resyncing = c->phase == PH_RESYNCING;
	st->fenced = pair_rec_fenced(c);
	if (st->fenced)
		snprintf(st->fence_reason, sizeof(st->fence_reason),
		         "another site holds a newer epoch (%" PRIu64 ", this site %" PRIu64 "): %s",
		         c->peer_epoch, c->epoch, c->reason);
	snprintf(st->split_reason, sizeof(st->split_reason), "%s", c->reason);
	st->epoch = c->epoch;
	st->peer_epoch = c->peer_epoch;
	snprintf(st->common_snap, sizeof(st->common_snap), "%s", c->common_snap);
	snprintf(st->sb_snap, sizeof(st->sb_snap), "%s", c->sb_snap);
	st->resync_extents = p->n_extra;
	for (int i = 0; i < HOLD_MAX; i++)
		if (p->holds[i].n) {
			snprintf(st->verifying, sizeof(st->verifying), "%s", p->holds[i].snap);
			break;
		}
	st->counters = p->counters;
}

int repl_pair_status(struct repl *r, const char *name, struct repl_status *out,
                     struct repl_err *err)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	if (!p) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(err, -ENOENT, "no pair %s", name ? name : "");
	}
	status_fill(p, out);
	pthread_mutex_unlock(&r->mu);
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct repl_status *)a)->name, ((const struct repl_status *)b)->name);
}

int repl_pair_list(struct repl *r, struct repl_status **out, size_t *n)
{
	pthread_mutex_lock(&r->mu);
	size_t k = 0;
	for (struct pair *p = r->pairs; p; p = p->next)
		if (!p->removed)
			k++;
	struct repl_status *st = calloc(k ? k : 1, sizeof(*st));
	if (!st) {
		pthread_mutex_unlock(&r->mu);
		return -ENOMEM;
	}
	size_t i = 0;
	for (struct pair *p = r->pairs; p; p = p->next)
		if (!p->removed)
			status_fill(p, &st[i++]);
	pthread_mutex_unlock(&r->mu);
	qsort(st, i, sizeof(*st), by_name);
	*out = st;
	*n = i;
	return 0;
}

/* ---- settings ------------------------------------------------------------------ */
int repl_pair_set(struct repl *r, const char *name, const struct repl_settings *s,
                  struct repl_settings *before, struct repl_settings *after,
                  struct repl_err *err)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	if (!p) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(err, -ENOENT, "no pair %s", name ? name : "");
	}
	if (!pair_phase_primary(p->rec.phase)) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(err, -EINVAL, "pair %s: run pair set on the primary (a secondary keeps "
		            "its primary's settings)", name);
	}
	settings_of(&p->rec, before);
	struct pair_rec next = p->rec;
	settings_apply(&next, s, s->set);
	char e[400];
	int rc = pair_change(p, &next, "pair set", e, sizeof(e));
	if (rc == 0) {
		bucket_set_rate(&p->bucket, p->rec.bandwidth);
		uint64_t now = now_mono_ns();
		if (s->set & REPL_SET_PERIOD) {
			/* A shorter period applies to the cycle already scheduled. */
			uint64_t due = now + p->rec.period_s * 1000000000ull;
			if (due < p->next_due_ns)
				p->next_due_ns = due;
		}
		/* The secondary learns the settings at the next contact: now. */
		p->next_probe_ns = now;
		pthread_cond_broadcast(&r->cv);
	}
	settings_of(&p->rec, after);
	pairs_unlock(r);
	return rc < 0 ? verb_fail(err, rc, "%s", e) : 0;
}

/* ---- pause / resume --------------------------------------------------------------- */
static int set_paused(struct repl *r, const char *name, bool paused, struct repl_err *err)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	int rc = 0;
	enum pair_phase ph = p ? p->rec.phase : PH_NONE;
	if (!p)
		rc = verb_fail(err, -ENOENT, "no pair %s", name ? name : "");
	else if (!pair_phase_primary(ph))
		rc = verb_fail(err, -EINVAL, "pair %s: pause and resume run on the primary", name);
	else if (ph != PH_PRIMARY && ph != PH_PAUSED)
		rc = verb_fail(err, -EBUSY, "pair %s is in state %s: pause and resume do not apply", name,
		          repl_state_name(p->state));
	if (rc < 0 || (ph == PH_PAUSED) == paused) {
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	struct pair_rec next = p->rec;
	next.phase = paused ? PH_PAUSED : PH_PRIMARY;
	char e[400];
	rc = pair_change(p, &next, paused ? "pair pause" : "pair resume", e, sizeof(e));
	if (rc == 0) {
		/* A running transfer stops now; its checkpoint makes the resume
		 * cheap. */
		if (paused && p->active && p->ending) {
			/* CYCLE_END is out: the secondary may have committed
			 * already.  Let the cycle hear the answer, so that both
			 * sites name the same last synced snapshot once pause
			 * returns (bounded; the link's timeouts bound it too). */
			uint64_t until = now_mono_ns() + 30000000000ull;
			pair_get(p);
			while (p->active && p->ending && now_mono_ns() < until)
				cond_wait_until(r, until);
			pair_put(p);
		}
		if (paused && p->active)
			link_abort(p->active);
		if (!paused) {
			p->failures = 0;
			p->next_due_ns = now_mono_ns();
			(void)pair_change(p, NULL, NULL, NULL, 0);
		}
	}
	pairs_unlock(r);
	return rc < 0 ? verb_fail(err, rc, "%s", e) : 0;
}

int repl_pair_pause(struct repl *r, const char *name, struct repl_err *err)
{
	return set_paused(r, name, true, err);
}

int repl_pair_resume(struct repl *r, const char *name, struct repl_err *err)
{
	return set_paused(r, name, false, err);
}

/* ---- sync -------------------------------------------------------------------------- */
int repl_pair_sync_request(struct repl *r, const char *name, uint64_t *ticket,
                           struct repl_err *err)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	int rc = 0;
	enum pair_phase ph = p ? p->rec.phase : PH_NONE;
	if (!p)
		rc = verb_fail(err, -ENOENT, "no pair %s", name ? name : "");
	else if (!pair_phase_primary(ph))
		rc = verb_fail(err, -EINVAL, "pair %s: run sync on the primary", name);
	else if (ph == PH_PAUSED)
		rc = verb_fail(err, -EAGAIN, "pair %s is paused (pair resume first)", name);
	else if (ph == PH_SPLIT_BRAIN)
		rc = verb_fail(err, -ESTALE, "pair %s: split brain (common snapshot %s): no cycle runs; "
		          "demote one side, then `pair resync` on the other", name,
		          p->rec.common_snap[0] ? p->rec.common_snap : "unknown");
	if (rc == 0) {
		*ticket = ++p->sync_req;
		pthread_cond_broadcast(&r->cv);
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int repl_pair_sync_wait(struct repl *r, const char *name, uint64_t ticket,
                        unsigned timeout_ms, uint64_t *done, uint64_t *total, char *snap,
                        uint64_t *cycle, struct repl_err *err)
{
	uint64_t until = now_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	int rc = -EINPROGRESS;
	if (!p) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(err, -ENOENT, "pair %s was removed", name ? name : "");
	}
	pair_get(p); /* rm may unlink it while we wait */
	for (;;) {
		if (p->sync_done >= ticket) {
			if (snap)
				snprintf(snap, STORE_NAME_MAX + 1, "%s", p->rec.last_snap);
			if (cycle)
				*cycle = p->rec.last_cycle;
			rc = 0;
			break;
		}
		if (p->sync_failed >= ticket) {
			rc = verb_fail(err, -EIO, "pair %s: cycle failed: %s", name, p->error);
			break;
		}
		if (p->rec.phase == PH_SPLIT_BRAIN) {
			rc = verb_fail(err, -ESTALE, "pair %s: split brain: %s", name,
			          p->error[0] ? p->error : p->rec.reason);
			break;
		}
		if (p->removed || r->stopping || p->rec.phase == PH_PAUSED ||
		    !pair_phase_primary(p->rec.phase)) {
			rc = verb_fail(err, -ECANCELED, "pair %s: sync interrupted (paused, removed, demoted "
			          "or daemon stopping)", name);
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
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int repl_pair_sync(struct repl *r, const char *name, struct repl_err *err)
{
	uint64_t ticket;
	int rc = repl_pair_sync_request(r, name, &ticket, err);
	while (rc == 0 || rc == -EINPROGRESS)
		if ((rc = repl_pair_sync_wait(r, name, ticket, 1000, NULL, NULL, NULL, NULL, err)) == 0)
			break;
	return rc;
}

/* ---- rm ------------------------------------------------------------------------------ */
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

/* Under mu, p referenced by the caller: the record goes (the volume turns
 * writable), p leaves the registry, its links go (but keep). */
static void forget(struct pair *p, struct link *keep, const char *why)
{
	struct repl *r = p->r;
	conn_drop(p, keep);
	struct pair_rec next = p->rec;
	next.phase = PH_NONE;
	(void)pair_change(p, &next, why, NULL, 0);
	log_info("pair %s: removed", p->rec.name);
	pair_unlink(r, p);
	p->refs--; /* the list's reference; the caller's keeps p alive */
}

/* Not under mu: keeps the last synced snapshot for re-pairing and drops
 * the pair's other cycle snapshots. */
static void keep_base(struct repl *r, const struct pair_rec *c, const char *snap_owner,
                      const char *peer_volume, struct repl_removed *res)
{
	if (c->last_cycle) {
		struct pair_base b = { .cycle = c->last_cycle, .time = c->last_time };
		snprintf(b.snap, sizeof(b.snap), "%s", c->last_snap);
		snprintf(b.pair_id, sizeof(b.pair_id), "%s", c->id);
		snprintf(b.peer_volume, sizeof(b.peer_volume), "%s", peer_volume);
		if (base_save(r, c->name, &b) == 0)
			snprintf(res->kept_snap, sizeof(res->kept_snap), "%s", c->last_snap);
	}
	drop_pair_snaps(r, NULL, c->volume, snap_owner, res->kept_snap[0] ? res->kept_snap : NULL);
}

int pair_remove_local(struct repl *r, const char *name, struct link *serving,
                      struct repl_removed *res, struct repl_err *err)
{
	memset(res, 0, sizeof(*res));
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	if (!p) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(err, -ENOENT, "no pair %s", name ? name : "");
	}
	pair_get(p);
	p->removed = true; /* no new request finds it */
	conn_drop(p, serving);
	pair_exclusive_begin(p);
	/* A transfer must be gone before the head is rolled back. */
	uint64_t until = now_mono_ns() + 10000000000ull;
	while (p->active && p->active != serving && now_mono_ns() < until) {
		link_abort(p->active);
		cond_wait_until(r, now_mono_ns() + 50000000ull);
	}
	struct pair_rec c = p->rec;
	pthread_mutex_unlock(&r->mu);
	/* Still read-only while it rolls back: the record has not gone yet. */
	struct vol *v;
	if (!pair_phase_primary(c.phase) && c.last_cycle && vol_open(r->store, c.volume, &v) == 0) {
		/* The secondary keeps its volume at its last synced content. */
		(void)vol_rollback(v, c.last_snap);
		vol_close(v);
	}
	ckpt_remove(r, c.name);
	pthread_mutex_lock(&r->mu);
	/* The link serving the primary's PAIR_REMOVE must live to say OK. */
	forget(p, serving, "pair rm");
	pair_exclusive_end(p);
	pairs_unlock(r);
	keep_base(r, &c, pair_phase_primary(c.phase) ? c.name : c.remote, c.remote, res);
	pthread_mutex_lock(&r->mu);
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
	return 0;
}

int repl_pair_rm(struct repl *r, const char *name, struct repl_removed *res,
                 struct repl_err *err)
{
	memset(res, 0, sizeof(*res));
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	if (!p) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(err, -ENOENT, "no pair %s", name ? name : "");
	}
	if (!pair_phase_primary(p->rec.phase)) {
		pthread_mutex_unlock(&r->mu);
		int rc = pair_remove_local(r, name, NULL, res, err);
		res->told = true; /* nothing to tell: this is the secondary */
		return rc;
	}
	pair_get(p);
	/* No cycle or heartbeat from now on; a running one is aborted. */
	pair_exclusive_begin(p);
	struct pair_rec c = p->rec;
	pthread_mutex_unlock(&r->mu);

	struct link *l;
	char e[512];
	int rc = pair_dial(p, &l, e, sizeof(e), NULL);
	if (rc == 0) {
		struct wire_msg m = { .type = WIRE_PAIR_REMOVE };
		snprintf(m.u.pair_remove.volume, sizeof(m.u.pair_remove.volume), "%s", c.remote);
		snprintf(m.u.pair_remove.pair_id, sizeof(m.u.pair_remove.pair_id), "%s", c.id);
		rc = link_send(l, &m);
		if (rc == 0)
			rc = link_expect(l, WIRE_OK, &m, 0);
		if (rc < 0)
			snprintf(e, sizeof(e), "%s", l->err);
		link_close(l);
	}
	res->told = rc == 0;
	if (rc < 0)
		snprintf(res->not_told, sizeof(res->not_told), "%.500s", e);
	pthread_mutex_lock(&r->mu);
	p->removed = true;
	forget(p, NULL, "pair rm");
	pair_exclusive_end(p);
	pairs_unlock(r);
	ckpt_remove(r, c.name);
	keep_base(r, &c, c.name, c.remote, res);
	pthread_mutex_lock(&r->mu);
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
	return 0;
}

/* ---- recovery points ------------------------------------------------------------ */
struct bytes_ctx {
	uint64_t bytes;
};

static int count_data(void *ctx, const struct diff_object *o)
{
	struct bytes_ctx *b = ctx;
	for (size_t i = 0; i < o->n_extents; i++)
		if (o->extents[i].kind == EXTENT_DATA)
			b->bytes += o->extents[i].length;
	return 0;
}

int repl_pair_points(struct repl *r, const char *name, struct repl_point **out, size_t *n,
                     struct repl_err *err)
{
	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	if (!p) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(err, -ENOENT, "no pair %s", name ? name : "");
	}
	struct pair_rec c = p->rec;
	pthread_mutex_unlock(&r->mu);
	struct vol *v;
	int rc = vol_open(r->store, c.volume, &v);
	if (rc < 0)
		return verb_fail(err, rc, "volume %s: %s", c.volume, strerror(-rc));
	struct snap_info *s;
	size_t ns;
	rc = vol_snap_list(v, &s, &ns);
	if (rc < 0) {
		vol_close(v);
		return verb_fail(err, rc, "volume %s: %s", c.volume, strerror(-rc));
	}
	struct repl_point *pts = calloc(ns ? ns : 1, sizeof(*pts));
	if (!pts) {
		free(s);
		vol_close(v);
		return verb_fail(err, -ENOMEM, "out of memory");
	}
	size_t k = 0;
	/* Creation order is cycle order: a point's bytes are what changed
	 * since the one before it (layers hold only that). */
	for (size_t i = 0; i < ns && rc == 0; i++) {
		uint64_t cy = snap_cycle_of(s[i].name);
		if (!cy || cy > c.last_cycle || !pair_snap_is_point(&c, s[i].name))
			continue;
		struct repl_point *pt = &pts[k];
		snprintf(pt->snapshot, sizeof(pt->snapshot), "%s", s[i].name);
		pt->cycle = cy;
		pt->time = s[i].ctime;
		pt->last = !strcmp(s[i].name, c.last_snap);
		pt->pinned = cy <= c.pinned_cycle;
		char(*cl)[STORE_NAME_MAX + 1] = NULL;
		size_t ncl = 0;
		if (store_vol_clones(r->store, c.volume, s[i].name, &cl, &ncl) == 0)
			pt->clones = (uint32_t)ncl;
		free(cl);
		struct bytes_ctx b = { 0 };
		rc = vol_diff(v, k ? pts[k - 1].snapshot : NULL, s[i].name, count_data, &b);
		pt->bytes = b.bytes;
		k++;
	}
	free(s);
	vol_close(v);
	if (rc < 0) {
		free(pts);
		return verb_fail(err, rc, "volume %s: %s", c.volume, strerror(-rc));
	}
	*out = pts;
	*n = k;
	return 0;
}
