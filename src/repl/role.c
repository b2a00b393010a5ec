/* repl engine: role changes — demote, promote [--force], resync — and the
 * epoch exchange (ROLE / ROLE_INFO) that detects a split brain.
 *
 * Every pair carries an epoch, bumped by promote.  A primary sends its
 * epoch in ROLE CHECK before every cycle and at every heartbeat; a side
 * that is primary itself, or that knows a newer epoch, answers so, and
 * both sides then record a split brain (no cycle runs, no data is
 * touched) until an operator demotes one side and runs `pair resync` on
 * the other.  The primary that learns of a newer epoch is fenced (its
 * LUNs refuse writes) unless its split-brain policy is keep-writing.
 *
 * Crash safety: each verb persists its intent (pair_change) before it
 * acts, and every step is idempotent, so a verb interrupted by a crash is
 * finished by running it again.  The states are in docs/DESIGN.md, the
 * messages in docs/PROTOCOL.md section 11.
 */
#include "repl/engine.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"

/* Under mu: records a split brain (once), the newest common snapshot, why,
 * and the epoch the other side claims (fencing when it is newer). */
static void mark_split_brain(struct pair *p, const char *common, const char *why,
                             uint64_t peer_epoch)
{
	struct pair_rec next = p->rec;
	if (next.phase != PH_SPLIT_BRAIN && next.phase != PH_RESYNCING)
		next.phase = PH_SPLIT_BRAIN;
	if (!next.common_snap[0])
		snprintf(next.common_snap, sizeof(next.common_snap), "%s",
		         common[0] ? common : next.last_snap);
	if (!next.reason[0] || next.phase != p->rec.phase)
		rec_text(next.reason, sizeof(next.reason), why);
	if (peer_epoch > next.peer_epoch)
		next.peer_epoch = peer_epoch;
	if (next.phase != p->rec.phase)
		log_error("repl: pair %s: SPLIT BRAIN: %s; no cycle runs until an operator "
		          "demotes one side and resyncs from the other", p->rec.name, why);
	snprintf(p->error, sizeof(p->error), "split brain: %s", why);
	(void)pair_change(p, &next, why, NULL, 0);
}

/* Under mu: a secondary keeps its primary's settings (ROLE from a primary). */
static void learn_settings(struct pair_rec *next, const struct wire_msg *q)
{
	if (q->u.role.period_s)
		next->period_s = q->u.role.period_s;
	if (!q->u.role.has_settings)
		return;
	next->peer_timeout_s = q->u.role.peer_timeout_s;
	next->bandwidth = q->u.role.bandwidth;
	if (q->u.role.max_inflight && q->u.role.max_inflight <= 65536)
		next->max_inflight = q->u.role.max_inflight;
	next->compress = q->u.role.settings_flags & WIRE_RS_COMPRESS;
	next->split_policy = (q->u.role.settings_flags & WIRE_RS_KEEP_WRITING)
	                         ? REPL_SB_KEEP_WRITING : REPL_SB_FENCE;
	/* No retention block: the primary keeps the default (or is of
	 * before recovery points). */
	next->keep = REC_DEFAULT_KEEP;
	next->keep_for_s = 0;
	if (q->u.role.has_retention && q->u.role.keep >= 1 && q->u.role.keep <= REC_KEEP_MAX) {
		next->keep = q->u.role.keep;
		next->keep_for_s = q->u.role.keep_for_s;
	}
}

/* ---- the primary's side of the epoch exchange --------------------------- */
int role_check(struct pair *p, struct link *l, char *err, size_t errlen)
{
	struct repl *r = p->r;
	struct wire_msg m;
	pthread_mutex_lock(&r->mu);
	role_msg_fill(p, p->rec.phase == PH_RESYNCING ? WIRE_ROLE_CHECK_RESYNC
	              : p->rec.phase == PH_DEMOTING ? WIRE_ROLE_CHECK_DEMOTING : WIRE_ROLE_CHECK,
	              &m);
	pthread_mutex_unlock(&r->mu);
	int rc = link_send(l, &m);
	if (rc == 0)
		rc = link_expect(l, WIRE_ROLE_INFO, &m, 0);
	if (rc < 0) {
		snprintf(err, errlen, "peer %s: %s", l->peer, l->err);
		return rc;
	}
	pthread_mutex_lock(&r->mu);
	pair_contact(p);
	const struct pair_rec *c = &p->rec;
	const uint32_t fl = m.u.role_info.flags;
	const uint64_t ep = m.u.role_info.epoch;
	const bool peer_primary = m.u.role_info.role == WIRE_RI_PRIMARY;
	rc = 0;
	if (peer_primary && c->phase == PH_DEMOTING && ep > c->epoch &&
	    !(fl & WIRE_RI_SPLIT_BRAIN)) {
		/* We demoted, the peer was promoted before we heard back. */
		snprintf(err, errlen, "the peer is already primary (epoch %" PRIu64 ")", ep);
		rc = -EALREADY;
	} else if (peer_primary && (fl & WIRE_RI_DEMOTED) && ep < c->epoch &&
	           !(fl & WIRE_RI_SPLIT_BRAIN)) {
		/* It told us it demoted, and crashed before recording it. */
		snprintf(err, errlen, "the old primary %s has not finished its demote "
		         "(run `ferry pair demote %s` there again)", c->peer, c->remote);
		rc = -EAGAIN;
	} else if (peer_primary || ep > c->epoch) {
		char why[300];
		snprintf(why, sizeof(why), "the peer %.200s is %s at epoch %" PRIu64
		         " (this side: primary at epoch %" PRIu64 ")", c->peer,
		         peer_primary ? "primary" : "secondary", ep, c->epoch);
		const char *common = m.u.role_info.last_snap;
		bool have = common[0] && (!strcmp(common, c->last_snap) || !strcmp(common, c->cur_snap));
		mark_split_brain(p, have ? common : "", why, ep);
		snprintf(err, errlen, "split brain: %s", why);
		rc = -ESTALE;
	} else if ((fl & WIRE_RI_NEEDS_RESYNC) && c->phase != PH_RESYNCING) {
		/* The old primary was demoted after a split brain this side
		 * never saw: the pair is in split brain all the same, and only
		 * a resync from here ends it. */
		char why[300];
		snprintf(why, sizeof(why), "the peer was demoted after a split brain and waits "
		         "for `ferry pair resync %s` here", c->name);
		const char *common = m.u.role_info.last_snap;
		bool have = common[0] && (!strcmp(common, c->last_snap) || !strcmp(common, c->cur_snap));
		mark_split_brain(p, have ? common : "", why, ep);
		snprintf(err, errlen, "%s", why);
		rc = -ESTALE;
	}
	pairs_unlock(r);
	return rc;
}

/* After a heartbeat's ROLE CHECK: an idle primary tells the secondary that
 * its last synced snapshot is still current (SYNCED), so that the
 * secondary's RPO lag and last sync time stay true without cycles.  A
 * peer of before knows no SYNCED and drops the connection: p->peer_synced
 * stays false and cycles run as they always did; it is asked again after
 * a minute. */
/* 1 = the peer took it, 0 = not sent (not idle, or asked again too
 * soon after a refusal), -1 = refused. */
static int send_synced(struct pair *p, struct link *l, uint64_t idle_since)
{
	struct repl *r = p->r;
	struct wire_msg m = { .type = WIRE_SYNCED };
	pthread_mutex_lock(&r->mu);
	const struct pair_rec *c = &p->rec;
	bool want = c->phase == PH_PRIMARY && now_mono_ns() >= p->synced_retry_ns;
	snprintf(m.u.synced.volume, sizeof(m.u.synced.volume), "%s", c->remote);
	snprintf(m.u.synced.pair_id, sizeof(m.u.synced.pair_id), "%s", c->id);
	snprintf(m.u.synced.last_snap, sizeof(m.u.synced.last_snap), "%s", c->last_snap);
	m.u.synced.last_cycle = c->last_cycle;
	pthread_mutex_unlock(&r->mu);
	/* The time is taken before the check: the volume read as last_snap
	 * at least until then.  idle_since: the caller checked already. */
	m.u.synced.as_of = idle_since ? idle_since : now_wall_s();
	if (!want || (!idle_since && !send_idle(p)))
		return 0;
	int rc = link_send(l, &m);
	struct wire_msg a;
	if (rc == 0)
		rc = link_expect(l, WIRE_OK, &a, 0);
	pthread_mutex_lock(&r->mu);
	if (rc == 0 && p->rec.last_cycle == m.u.synced.last_cycle) {
		/* The primary's own last sync time advances only with the
		 * secondary's word: with the secondary gone, its RPO lag grows. */
		p->peer_synced = true;
		p->asof_wall = MAX(m.u.synced.as_of, p->asof_cycle == p->rec.last_cycle
		                   ? p->asof_wall : 0);
		p->asof_cycle = m.u.synced.last_cycle;
		p->last_success = MAX(p->last_success, m.u.synced.as_of);
	} else if (rc < 0) {
		if (p->peer_synced || !p->synced_retry_ns)
			log_info("repl: pair %s: the peer did not take SYNCED (%s): idle cycles "
			         "run in full", p->rec.name, l->err);
		p->peer_synced = false;
		p->synced_retry_ns = now_mono_ns() + 60 * 1000000000ull;
	}
	pthread_mutex_unlock(&r->mu);
	return rc == 0 ? 1 : rc < 0 ? -1 : 0;
}

/* The heartbeat: dial, ROLE CHECK, and SYNCED when the pair is idle.
 * Returns what dial or ROLE CHECK returned (reason in err); *synced (may be
 * NULL) gets send_synced's answer. */
static int probe(struct pair *p, uint64_t idle_since, int *synced, char *err, size_t errlen)
{
	struct repl *r = p->r;
	struct link *l;
	bool reached = false;
	int sy = 0;
	int rc = pair_dial(p, &l, err, errlen, &reached);
	if (rc == 0) {
		rc = role_check(p, l, err, errlen);
		if (rc == 0)
			sy = send_synced(p, l, idle_since);
		link_close(l);
	}
	if (synced)
		*synced = sy;
	pthread_mutex_lock(&r->mu);
	bool was_ok = !p->peer_err[0];
	if (rc == 0 || rc == -ESTALE || rc == -EALREADY || rc == -EAGAIN) {
		p->peer_err[0] = '\0'; /* reached; a split brain is recorded apart */
	} else {
		snprintf(p->peer_err, sizeof(p->peer_err), "%.255s", err);
		p->unreached = !reached;
	}
	(void)pair_change(p, NULL, p->peer_err[0] ? p->peer_err : NULL, NULL, 0);
	pthread_mutex_unlock(&r->mu);
	if (rc < 0 && rc != -ESTALE && was_ok)
		log_warn("repl: pair %s: peer check failed: %s", p->rec.name, err);
	else if (rc == 0 && !was_ok)
		log_info("repl: pair %s: peer reachable again", p->rec.name);
	return rc;
}

void role_probe(struct pair *p)
{
	char err[512];
	(void)probe(p, 0, NULL, err, sizeof(err));
}

int role_probe_idle(struct pair *p, uint64_t idle_since, char *err, size_t errlen)
{
	int synced;
	int rc = probe(p, idle_since, &synced, err, errlen);
	if (rc == 0 && synced <= 0) {
		snprintf(err, errlen, "the peer did not take SYNCED");
		rc = -ENOTSUP;
	}
	return rc;
}

/* ---- the other side ------------------------------------------------------ */
static void send_role_info(struct link *l, const struct pair *p, const char *snap)
{
	struct wire_msg m;
	role_info_fill(p, snap, &m);
	(void)link_send(l, &m);
}

struct ext_batch {
	struct link *l;
	struct wire_digest d[WIRE_DIGESTS_MAX];
	uint32_t n;
	uint64_t sent;
	int rc;
};

static int ext_flush(struct ext_batch *b)
{
	if (!b->n)
		return 0;
	int len = wire_encode_extents(b->d, b->n, b->l->wbuf, WIRE_FRAME_MAX);
	int rc = len < 0 ? len : link_send_raw(b->l, b->l->wbuf, (size_t)len);
	b->sent += b->n;
	b->n = 0;
	return rc;
}

static int ext_cb(void *ctx, const struct diff_object *o)
{
	struct ext_batch *b = ctx;
	for (size_t i = 0; i < o->n_extents; i++) {
		b->d[b->n++] = (struct wire_digest){ o->extents[i].offset, o->extents[i].length };
		if (b->n == WIRE_DIGESTS_MAX) {
			int rc = ext_flush(b);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* RESYNC on the demoted old primary: keep the divergence in a snapshot
 * (once: a repeated resync reuses it), then list what changed since the
 * common snapshot. */
static int serve_resync(struct repl *r, struct link *l, struct pair *p,
                        const struct wire_msg *m)
{
	pthread_mutex_lock(&r->mu);
	char base[STORE_NAME_MAX + 1], sb[STORE_NAME_MAX + 1], vol[STORE_NAME_MAX + 1];
	snprintf(base, sizeof(base), "%s", p->rec.last_snap);
	snprintf(vol, sizeof(vol), "%s", p->rec.volume);
	if (strcmp(base, m->u.role.last_snap)) {
		pthread_mutex_unlock(&r->mu);
		link_send_error(l, ESTALE, "resync base %s is not %s's last synced snapshot %s",
		                m->u.role.last_snap, p->rec.name, base[0] ? base : "(none)");
		return 0;
	}
	int rc = 0;
	if (!p->rec.sb_snap[0]) {
		/* The name first: a crash after the snapshot then finds it and
		 * never takes a second one. */
		struct pair_rec next = p->rec;
		snprintf(next.sb_snap, sizeof(next.sb_snap), "split-brain-%" PRIu64, now_wall_s());
		char err[400];
		rc = pair_change(p, &next, NULL, err, sizeof(err));
		if (rc < 0) {
			pthread_mutex_unlock(&r->mu);
			link_send_error(l, -rc, "%s", err);
			return 0;
		}
	}
	snprintf(sb, sizeof(sb), "%s", p->rec.sb_snap);
	pthread_mutex_unlock(&r->mu);
	struct vol *v;
	rc = vol_open(r->store, vol, &v);
	if (rc < 0) {
		link_send_error(l, -rc, "cannot open %s: %s", vol, strerror(-rc));
		return 0;
	}
	struct snap_info si;
	if (vol_snap_get(v, sb, &si) < 0) {
		/* Nothing writes a demoted secondary, so the head is still
		 * the divergent content even after a crash before the record. */
		rc = vol_snap_create(v, sb);
		if (rc < 0) {
			vol_close(v);
			link_send_error(l, -rc, "cannot snapshot %s@%s: %s", vol, sb, strerror(-rc));
			return 0;
		}
		log_warn("repl: pair %s: this site's changes since %s are kept in %s@%s",
		         p->rec.name, base, vol, sb);
	}
	crash_point("resync-snap");
	struct ext_batch *b = calloc(1, sizeof(*b));
	if (!b) {
		vol_close(v);
		link_send_error(l, ENOMEM, "out of memory");
		return 0;
	}
	b->l = l;
	rc = vol_diff(v, base, sb, ext_cb, b);
	if (rc == 0)
		rc = ext_flush(b);
	vol_close(v);
	log_info("repl: pair %s: resync: %" PRIu64 " divergent extents since %s sent to %s",
	         p->rec.name, b->sent, base, l->peer);
	free(b);
	if (rc < 0) {
		link_send_error(l, -rc, "diff of %s: %s", vol, strerror(-rc));
		return rc;
	}
	pthread_mutex_lock(&r->mu);
	send_role_info(l, p, base);
	pthread_mutex_unlock(&r->mu);
	return 0;
}

int handle_role(struct repl *r, struct link *l, const struct wire_msg *m)
{
	const struct wire_msg *q = m;
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_find(r, q->u.role.volume);
	if (!p || strcmp(p->rec.id, q->u.role.pair_id)) {
		pthread_mutex_unlock(&r->mu);
		link_send_error(l, p ? ESTALE : ENOENT, "volume %s %s", q->u.role.volume,
		                p ? "belongs to another pair" : "is in no pair on this site");
		return 0;
	}
	uint32_t op = q->u.role.op;
	if (op == WIRE_ROLE_QUERY) {
		/* A secondary asks before a forced promote: just say. */
		send_role_info(l, p, p->rec.last_snap);
		pthread_mutex_unlock(&r->mu);
		return 0;
	}
	pair_contact(p);
	const bool secondary = !pair_phase_primary(p->rec.phase);
	struct pair_rec next = p->rec;
	/* Where to reach the peer after a promote: what it announced, unless
	 * the operator named the address (a proxy, a VIP, NAT). */
	char learned[WIRE_TEXT_MAX + 1] = "";
	if (!next.peer_fixed && q->u.role.addr[0] &&
	    addr_learned(q->u.role.addr, l->peer, learned, sizeof(learned)) < 0)
		learned[0] = '\0';
	if (learned[0] && strcmp(next.peer_addr, learned))
		rec_text(next.peer_addr, sizeof(next.peer_addr), learned);
	/* A secondary keeps its primary's settings, for its own peer timeout
	 * and for the day it is promoted. */
	if (secondary && q->u.role.epoch >= next.epoch)
		learn_settings(&next, q); /* not from a superseded primary */
	(void)pair_change(p, &next, NULL, NULL, 0);
	if (op == WIRE_ROLE_RESYNC) {
		if (secondary)
			pair_get(p);
		pairs_unlock(r);
		if (!secondary) {
			link_send_error(l, EBUSY, "%s is still primary here: run `ferry pair demote %s` "
			                "on this site first", q->u.role.volume, q->u.role.volume);
			return 0;
		}
		int rc = serve_resync(r, l, p, q);
		pthread_mutex_lock(&r->mu);
		pair_put(p);
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	if (op == WIRE_ROLE_DEMOTED) {
		if (!secondary) {
			pairs_unlock(r);
			link_send_error(l, EBUSY, "%s is primary here too", q->u.role.volume);
			return 0;
		}
		if (p->rec.last_cycle != q->u.role.last_cycle ||
		    strcmp(p->rec.last_snap, q->u.role.last_snap)) {
			char here[STORE_NAME_MAX + 1];
			snprintf(here, sizeof(here), "%s", p->rec.last_snap);
			pairs_unlock(r);
			link_send_error(l, ESTALE, "not in sync: the primary's last synced snapshot is "
			                "%s, here %s", q->u.role.last_snap, here[0] ? here : "(none)");
			return 0;
		}
		next = p->rec;
		if (next.phase == PH_SECONDARY)
			next.phase = PH_PEER_DEMOTED;
		next.peer_demoted_cycle = q->u.role.last_cycle;
		if (q->u.role.epoch > next.epoch)
			next.epoch = q->u.role.epoch;
		snprintf(next.remote, sizeof(next.remote), "%s", q->u.role.sender_volume);
		char err[400];
		int rc = pair_change(p, &next, "the primary demoted", err, sizeof(err));
		if (rc == 0)
			send_role_info(l, p, p->rec.last_snap);
		char name[STORE_NAME_MAX + 1];
		snprintf(name, sizeof(name), "%s", p->rec.name);
		pairs_unlock(r);
		if (rc < 0)
			link_send_error(l, -rc, "%s", err);
		else
			log_info("repl: pair %s: the primary %s demoted at cycle %" PRIu64
			         "; `pair promote %s` takes over", name, l->peer,
			         q->u.role.last_cycle, name);
		return 0;
	}
	/* CHECK, CHECK_DEMOTING, CHECK_RESYNC: a primary about to send. */
	if (!secondary) {
		/* Not a split brain: our own demote's final cycle reaching the
		 * side promoted meanwhile, or that side's check reaching us while
		 * we finish a demote it was promoted from (same last snapshot). */
		const struct pair_rec *c = &p->rec;
		bool benign = (op == WIRE_ROLE_CHECK_DEMOTING && q->u.role.epoch < c->epoch) ||
		              (c->phase == PH_DEMOTING && q->u.role.epoch > c->epoch &&
		               !strcmp(q->u.role.last_snap, c->last_snap));
		if (!benign) {
			char why[300];
			snprintf(why, sizeof(why), "%.200s claims primary at epoch %" PRIu64
			         " while this side is primary at epoch %" PRIu64, l->peer,
			         q->u.role.epoch, c->epoch);
			const char *s = q->u.role.last_snap;
			bool have = s[0] && (!strcmp(s, c->last_snap) || !strcmp(s, c->cur_snap));
			mark_split_brain(p, have ? s : "", why, q->u.role.epoch);
			if (p->active)
				link_abort(p->active);
		}
		send_role_info(l, p, p->rec.common_snap[0] ? p->rec.common_snap : p->rec.last_snap);
		pairs_unlock(r);
		return 0;
	}
	if (p->rec.phase == PH_NEEDS_RESYNC && op != WIRE_ROLE_CHECK_RESYNC) {
		send_role_info(l, p, p->rec.last_snap);
		pairs_unlock(r);
		return 0;
	}
	next = p->rec;
	if (q->u.role.epoch > next.epoch)
		next.epoch = q->u.role.epoch;
	if (op == WIRE_ROLE_CHECK && next.phase == PH_PEER_DEMOTED &&
	    q->u.role.epoch >= next.epoch)
		next.phase = PH_SECONDARY; /* the primary sends again: its demote is void */
	(void)pair_change(p, &next, NULL, NULL, 0);
	send_role_info(l, p, p->rec.last_snap);
	pairs_unlock(r);
	return 0;
}

int handle_synced(struct repl *r, struct link *l, const struct wire_msg *m)
{
	const struct wire_msg *q = m;
	/* Test-only: behave as a peer of before, which knows no SYNCED and
	 * drops the connection without an answer (tests/repl/idle.sh). */
	if (getenv("FERRY_TEST_NO_SYNCED"))
		return -EPROTO;
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_find(r, q->u.synced.volume);
	if (!p || strcmp(p->rec.id, q->u.synced.pair_id)) {
		pthread_mutex_unlock(&r->mu);
		link_send_error(l, p ? ESTALE : ENOENT, "volume %s %s", q->u.synced.volume,
		                p ? "belongs to another pair" : "is in no pair on this site");
		return 0;
	}
	const struct pair_rec *c = &p->rec;
	if (c->phase != PH_SECONDARY || p->running || c->last_cycle != q->u.synced.last_cycle ||
	    strcmp(c->last_snap, q->u.synced.last_snap)) {
		char here[STORE_NAME_MAX + 1];
		snprintf(here, sizeof(here), "%s", c->last_snap);
		bool sec = c->phase == PH_SECONDARY;
		pthread_mutex_unlock(&r->mu);
		link_send_error(l, ESTALE, sec ? "not in sync: the primary's last synced snapshot "
		                "is %s, here %s" : "%s is not a secondary here%s",
		                sec ? q->u.synced.last_snap : q->u.synced.volume,
		                sec ? (here[0] ? here : "(none)") : "");
		return 0;
	}
	/* Memory only: after a restart the snapshot's own time holds until
	 * the next heartbeat; nothing is written, nothing synced. */
	pair_contact(p);
	if (p->asof_cycle != c->last_cycle)
		p->asof_wall = 0;
	p->asof_wall = MAX(p->asof_wall, q->u.synced.as_of);
	p->asof_cycle = c->last_cycle;
	p->last_success = now_wall_s();
	(void)pair_change(p, NULL, NULL, NULL, 0);
	pairs_unlock(r);
	struct wire_msg ok = { .type = WIRE_OK };
	return link_send(l, &ok);
}

/* ---- verbs ---------------------------------------------------------------- */
static int tell_demoted(struct pair *p, char *err, size_t errlen)
{
	struct repl *r = p->r;
	struct wire_msg m;
	pthread_mutex_lock(&r->mu);
	role_msg_fill(p, WIRE_ROLE_DEMOTED, &m);
	pthread_mutex_unlock(&r->mu);
	struct link *l;
	int rc = pair_dial(p, &l, err, errlen, NULL);
	if (rc < 0)
		return rc;
	rc = link_send(l, &m);
	if (rc == 0)
		rc = link_expect(l, WIRE_ROLE_INFO, &m, 0);
	if (rc < 0)
		snprintf(err, errlen, "%s", l->err);
	link_close(l);
	return rc;
}

static void drop_snapshot(struct repl *r, const char *vol, const char *snap)
{
	struct vol *v;
	if (snap[0] && vol_open(r->store, vol, &v) == 0) {
		(void)vol_snap_delete(v, snap);
		vol_close(v);
	}
}

int repl_pair_demote(struct repl *r, const char *name, struct repl_role_change *res,
                     struct repl_err *err)
{
	memset(res, 0, sizeof(*res));
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	if (!p) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(err, -ENOENT, "no pair %s", name ? name : "");
	}
	enum pair_phase ph = p->rec.phase;
	if (!pair_phase_primary(ph)) {
		res->already = true;
		res->split = ph == PH_NEEDS_RESYNC;
		snprintf(res->snapshot, sizeof(res->snapshot), "%s", p->rec.last_snap);
		res->cycle = p->rec.last_cycle;
		pthread_mutex_unlock(&r->mu);
		return 0;
	}
	if (ph == PH_RESYNCING) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(err, -EBUSY, "pair %s: a resync from this site is running; let it "
		            "finish (pair status %s)", name, name);
	}
	if (!p->rec.last_cycle && ph != PH_SPLIT_BRAIN) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(err, -EAGAIN, "pair %s: the initial sync has not completed; nothing to "
		            "hand over yet", name);
	}
	pair_get(p);
	int rc = 0;
	char e[600];
	if (ph == PH_PRIMARY || ph == PH_PAUSED) {
		/* The intent first: from here on writes are refused, and a crash
		 * leaves a demoting primary that a repeat finishes. */
		struct pair_rec next = p->rec;
		next.phase = PH_DEMOTING;
		rc = pair_change(p, &next, "pair demote", e, sizeof(e));
	}
	pairs_unlock(r);
	if (rc < 0) {
		rc = verb_fail(err, rc, "%s", e);
		goto out;
	}
	crash_point("demote-intent");

	pthread_mutex_lock(&r->mu);
	bool split = p->rec.phase == PH_SPLIT_BRAIN;
	pthread_mutex_unlock(&r->mu);
	bool peer_promoted = false;
	if (!split) {
		struct repl_err se;
		rc = repl_pair_sync(r, name, &se);
		pthread_mutex_lock(&r->mu);
		split = p->rec.phase == PH_SPLIT_BRAIN;
		peer_promoted = rc < 0 && strstr(p->error, "already primary") != NULL;
		snprintf(e, sizeof(e), "%.380s", p->error[0] ? p->error : se.msg);
		pthread_mutex_unlock(&r->mu);
		if (rc < 0 && !split && !peer_promoted) {
			rc = verb_fail(err, rc, "pair %s: the final cycle failed (%s); writes stay refused, "
			          "run `pair demote %s` again", name, e, name);
			goto out;
		}
		rc = 0;
	}
	crash_point("demote-synced");
	if (!split && !peer_promoted) {
		rc = tell_demoted(p, e, sizeof(e));
		if (rc < 0) {
			rc = verb_fail(err, rc, "pair %s: cannot tell the secondary (%s); writes stay "
			          "refused, run `pair demote %s` again", name, e, name);
			goto out;
		}
	}
	crash_point("demote-told");

	pthread_mutex_lock(&r->mu);
	pair_exclusive_begin(p);
	struct pair_rec next = p->rec;
	char drop[STORE_NAME_MAX + 1] = "";
	split = next.phase == PH_SPLIT_BRAIN;
	if (split) {
		/* Our last record may lag the common snapshot by the cycle the
		 * secondary committed as we crashed: that one is our cur_snap. */
		if (next.common_snap[0] && strcmp(next.common_snap, next.last_snap) &&
		    !strcmp(next.common_snap, next.cur_snap)) {
			snprintf(next.last_snap, sizeof(next.last_snap), "%s", next.cur_snap);
			next.last_cycle = next.cur_cycle;
			next.last_time = next.cur_time;
		}
		next.phase = PH_NEEDS_RESYNC;
	} else {
		next.phase = PH_SECONDARY;
		next.common_snap[0] = '\0';
		next.reason[0] = '\0';
		next.peer_epoch = 0;
	}
	if (next.cur_snap[0] && strcmp(next.cur_snap, next.last_snap))
		snprintf(drop, sizeof(drop), "%s", next.cur_snap);
	next.cur_cycle = 0;
	next.cur_snap[0] = '\0';
	next.cur_time = 0;
	next.peer_demoted_cycle = 0;
	rc = pair_change(p, &next, split ? "demoted after a split brain" : "demoted", e, sizeof(e));
	if (rc == 0) {
		/* The offers the old secondary made to us are of no use now; if
		 * this site has no listener, it offers its own to the new
		 * primary instead (the scheduler starts that). */
		conn_drop(p, NULL);
		p->announced = false;
		p->error[0] = '\0';
		p->failures = 0;
		p->peer_err[0] = '\0';
		pair_contact(p); /* the demote just spoke to the peer */
		(void)pair_change(p, NULL, NULL, NULL, 0);
	}
	pair_exclusive_end(p);
	res->split = split;
	res->cycle = p->rec.last_cycle;
	snprintf(res->snapshot, sizeof(res->snapshot), "%s", p->rec.last_snap);
	char vol[STORE_NAME_MAX + 1];
	snprintf(vol, sizeof(vol), "%s", p->rec.volume);
	pairs_unlock(r);
	if (rc < 0) {
		rc = verb_fail(err, rc, "%s", e);
		goto out;
	}
	crash_point("demote-done");
	drop_snapshot(r, vol, drop);
out:
	pthread_mutex_lock(&r->mu);
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

/* Before a forced promote: whether the primary is alive and primary.
 * 1 = it answers as primary (epoch in *epoch), 0 = not (or unreachable).
 * A primary this site cannot dial (it has no listener) is given one
 * heartbeat interval to show up. */
static int primary_answers(struct pair *p, uint64_t *epoch, char *where, size_t wlen)
{
	struct repl *r = p->r;
	pthread_mutex_lock(&r->mu);
	char addr[WIRE_TEXT_MAX + 1];
	snprintf(addr, sizeof(addr), "%s", p->rec.peer_addr);
	struct wire_msg m;
	role_msg_fill(p, WIRE_ROLE_QUERY, &m);
	uint64_t hb = pair_heartbeat_ns(p);
	uint64_t seen = p->contact_mono;
	pthread_mutex_unlock(&r->mu);
	if (addr[0]) {
		snprintf(where, wlen, "%s", addr);
		struct link *l;
		char err[512];
		if (repl_dial(r, addr, &l, err, sizeof(err), NULL) < 0)
			return 0;
		int rc = link_send(l, &m);
		if (rc == 0)
			rc = link_expect(l, WIRE_ROLE_INFO, &m, 0);
		link_close(l);
		if (rc < 0 || m.u.role_info.role != WIRE_RI_PRIMARY ||
		    (m.u.role_info.flags & WIRE_RI_DEMOTED))
			return 0;
		*epoch = m.u.role_info.epoch;
		return 1;
	}
	/* No address: the primary dials us.  If it was heard from lately, wait
	 * for its next heartbeat; one that does not come means it is gone. */
	snprintf(where, wlen, "%s", p->rec.peer);
	uint64_t now = now_mono_ns();
	if (!seen || now - seen > 2 * hb + 2000000000ull)
		return 0;
	uint64_t until = now + hb + 2000000000ull;
	pthread_mutex_lock(&r->mu);
	while (p->contact_mono == seen && now_mono_ns() < until && !r->stopping)
		cond_wait_until(r, until);
	bool heard = p->contact_mono != seen;
	*epoch = p->rec.epoch;
	pthread_mutex_unlock(&r->mu);
	return heard ? 1 : 0;
}

/* ---- promote at an earlier recovery point ---------------------------------- */
struct restore_ctx {
	struct extent *ext;
	size_t n, cap;
};

/* The store's diff runs under the volume's lock: the extents are
 * collected first and copied after. */
static int restore_collect(void *ctx, const struct diff_object *o)
{
	struct restore_ctx *c = ctx;
	for (size_t i = 0; i < o->n_extents; i++) {
		if (c->n && c->ext[c->n - 1].offset + c->ext[c->n - 1].length == o->extents[i].offset) {
			c->ext[c->n - 1].length += o->extents[i].length;
			continue;
		}
		if (c->n == c->cap) {
			size_t cap = c->cap ? 2 * c->cap : 256;
			struct extent *e = realloc(c->ext, cap * sizeof(*e));
			if (!e)
				return -ENOMEM;
			c->ext = e;
			c->cap = cap;
		}
		c->ext[c->n++] = o->extents[i];
	}
	return 0;
}

/* Every block that changed after the point gets the point's content back
 * in the head: the head reads as the point, and a diff from the last
 * synced snapshot (the next cycle's base, the resync's common snapshot)
 * reports every block that went back. */
static int restore_point(struct vol *v, const char *point, const char *last)
{
	struct restore_ctx c = { 0 };
	int rc = vol_diff(v, point, last, restore_collect, &c);
	const size_t cap = 1u << 20;
	uint8_t *buf = rc == 0 ? malloc(cap) : NULL;
	if (rc == 0 && !buf)
		rc = -ENOMEM;
	for (size_t i = 0; i < c.n && rc == 0; i++) {
		uint64_t off = c.ext[i].offset, left = c.ext[i].length;
		while (left && rc == 0) {
			size_t len = left < cap ? (size_t)left : cap;
			rc = vol_read(v, point, buf, off, len);
			if (rc == 0)
				rc = vol_write(v, buf, off, len);
			off += len;
			left -= len;
		}
	}
	free(buf);
	free(c.ext);
	if (rc == 0)
		rc = vol_flush(v);
	return rc;
}

/* Whether snap is a recovery point of p on this site (`pair points`). */
static int check_point(struct repl *r, const struct pair_rec *c, const char *snap,
                       struct repl_err *err)
{
	uint64_t cy = snap_cycle_of(snap);
	struct snap_info si;
	struct vol *v;
	int rc = -ENOENT;
	if (name_valid(snap) && cy && cy <= c->last_cycle && pair_snap_is_point(c, snap) &&
	    vol_open(r->store, c->volume, &v) == 0) {
		rc = vol_snap_get(v, snap, &si);
		vol_close(v);
	}
	if (rc < 0)
		return verb_fail(err, -ENOENT, "pair %s: no recovery point '%s' on this site (`ferry "
		                 "pair points %s` lists them)", c->name, snap, c->name);
	return 0;
}

int repl_pair_promote(struct repl *r, const char *name, bool force, const char *at,
                      struct repl_role_change *res, struct repl_err *err)
{
	memset(res, 0, sizeof(*res));
	res->forced = force;
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	int rc = 0;
	enum pair_phase ph = p ? p->rec.phase : PH_NONE;
	if (!p)
		rc = verb_fail(err, -ENOENT, "no pair %s", name ? name : "");
	else if (ph == PH_DEMOTING)
		rc = verb_fail(err, -EBUSY, "pair %s is demoting on this site (finish it with `pair "
		          "demote %s`)", name, name);
	else if (pair_phase_primary(ph) && at)
		rc = verb_fail(err, -EINVAL, "pair %s is primary here already: --at is for a "
		          "secondary (roll a primary back with `volume` and `snap` commands)", name);
	else if (pair_phase_primary(ph)) {
		res->already = true;
		res->epoch = p->rec.epoch;
		snprintf(res->snapshot, sizeof(res->snapshot), "%s", p->rec.last_snap);
		pthread_mutex_unlock(&r->mu);
		return 0;
	} else if (ph == PH_NEEDS_RESYNC)
		rc = verb_fail(err, -EBUSY, "pair %s: this site was demoted after a split brain; run "
		          "`pair resync %s` on the other site", name, name);
	else if (!p->rec.last_cycle)
		rc = verb_fail(err, -EAGAIN, "pair %s: nothing was ever synced here, there is nothing "
		          "to promote", name);
	else if (!force && !(ph == PH_PEER_DEMOTED &&
	                     p->rec.peer_demoted_cycle == p->rec.last_cycle))
		rc = verb_fail(err, -EBUSY, "pair %s: the primary has not demoted (run `ferry pair demote "
		          "%s` on it first; if it is lost, `pair promote %s --force` takes over "
		          "at the last synced snapshot %s)", name, p->rec.remote, name,
		          p->rec.last_snap);
	if (rc < 0) {
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	pair_get(p);
	bool planned = ph == PH_PEER_DEMOTED && p->rec.peer_demoted_cycle == p->rec.last_cycle;
	struct pair_rec seen = p->rec;
	pthread_mutex_unlock(&r->mu);
	if (at && (rc = check_point(r, &seen, at, err)) < 0) {
		pthread_mutex_lock(&r->mu);
		pair_put(p);
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	if (force && !planned) {
		/* --force is for a primary that is lost, not one that answers. */
		uint64_t ep = 0;
		char where[WIRE_TEXT_MAX + 1] = "";
		if (primary_answers(p, &ep, where, sizeof(where))) {
			pthread_mutex_lock(&r->mu);
			rc = verb_fail(err, -EBUSY, "pair %s: the primary %s answers as primary (epoch %"
			          PRIu64 "): run `ferry pair demote %s` on it, then `pair promote %s` "
			          "here (--force is for a primary that is lost)", name,
			          where[0] ? where : "(it connects here)", ep, p->rec.remote, name);
			pair_put(p);
			pthread_mutex_unlock(&r->mu);
			return rc;
		}
	}
	pthread_mutex_lock(&r->mu);
	pair_exclusive_begin(p);
	bool excl = true;
	/* A cycle being applied must be gone before the head is rolled back. */
	uint64_t until = now_mono_ns() + 10000000000ull;
	while (p->active && now_mono_ns() < until) {
		link_abort(p->active);
		cond_wait_until(r, now_mono_ns() + 20000000ull);
	}
	bool busy = p->active != NULL;
	char last[STORE_NAME_MAX + 1], vol[STORE_NAME_MAX + 1];
	snprintf(last, sizeof(last), "%s", p->rec.last_snap);
	snprintf(vol, sizeof(vol), "%s", p->rec.volume);
	pthread_mutex_unlock(&r->mu);
	if (busy) {
		rc = verb_fail(err, -EBUSY, "pair %s: a cycle is still being applied; try again", name);
		goto out;
	}
	if (at && !strcmp(at, last))
		at = NULL; /* the last synced one: a plain promote */
	crash_point("promote-begin");
	/* The last synced snapshot is what becomes live: a half-applied cycle
	 * is discarded (and with --at, every block changed after that point
	 * is copied back from it).  Not atomic, and need not be: until the
	 * record below says primary nothing writes here, and a promote run
	 * again rolls the head back first.  Meanwhile a checkpoint that
	 * matches no cycle (cycle 0) replaces the one of an interrupted
	 * cycle: a cycle arriving after a crash then rolls the head back
	 * before it applies anything, instead of resuming on a head that no
	 * longer holds what the old checkpoint promised.  It goes once the
	 * record says primary. */
	struct ckpt intent = { .cycle = 0 };
	snprintf(intent.base, sizeof(intent.base), "%s", last);
	snprintf(intent.target, sizeof(intent.target), "%s", at ? at : last);
	rc = ckpt_save(r, name, &intent);
	if (rc < 0) {
		rc = verb_fail(err, rc, "pair %s: cannot record the promote: %s", name, strerror(-rc));
		goto out;
	}
	struct vol *v;
	rc = vol_open(r->store, vol, &v);
	if (rc == 0) {
		rc = vol_rollback(v, last);
		vol_close(v);
	}
	if (rc < 0) {
		rc = verb_fail(err, rc, "pair %s: cannot roll back to %s: %s", name, last, strerror(-rc));
		goto out;
	}
	if (at) {
		rc = vol_open(r->store, vol, &v);
		if (rc == 0) {
			rc = restore_point(v, at, last);
			vol_close(v);
		}
		if (rc < 0) {
			rc = verb_fail(err, rc, "pair %s: cannot go back to %s: %s", name, at,
			               strerror(-rc));
			goto out;
		}
		crash_point("promote-restored");
	}
	crash_point("promote-rolledback");
	pthread_mutex_lock(&r->mu);
	struct pair_rec next = p->rec;
	next.phase = PH_PRIMARY;
	next.epoch++;
	/* Empty when the old primary has no listener: it calls us instead. */
	snprintf(next.peer, sizeof(next.peer), "%s", next.peer_addr);
	if (force && !planned)
		snprintf(next.common_snap, sizeof(next.common_snap), "%s", next.last_snap);
	else
		next.common_snap[0] = '\0';
	next.cur_cycle = 0;
	next.cur_snap[0] = '\0';
	next.cur_time = 0;
	next.peer_demoted_cycle = 0;
	next.sb_snap[0] = '\0';
	next.reason[0] = '\0';
	next.peer_epoch = 0;
	/* The points after the one promoted at are the operator's now: no
	 * retention drops them (the last synced one stays the base of the
	 * next cycle and of a resync: the head differs from it exactly by
	 * what went back). */
	if (at && next.last_cycle > next.pinned_cycle)
		next.pinned_cycle = next.last_cycle;
	char e[400];
	rc = pair_change(p, &next, force && !planned ? "promoted by force" : "promoted", e,
	                 sizeof(e));
	if (rc == 0)
		ckpt_remove(r, name);
	if (rc == 0) {
		p->error[0] = '\0';
		p->failures = 0;
		p->next_due_ns = now_mono_ns();
		p->next_probe_ns = 0;
		conn_drop(p, NULL); /* our offers to the old primary: it is secondary now */
		(void)pair_change(p, NULL, NULL, NULL, 0);
	}
	pair_exclusive_end(p);
	excl = false;
	res->epoch = p->rec.epoch;
	snprintf(res->snapshot, sizeof(res->snapshot), "%s", at ? at : last);
	snprintf(res->peer, sizeof(res->peer), "%s", p->rec.peer);
	pairs_unlock(r);
	if (rc < 0) {
		rc = verb_fail(err, rc, "%s", e);
		goto out;
	}
	crash_point("promote-done");
out:
	pthread_mutex_lock(&r->mu);
	if (excl)
		pair_exclusive_end(p);
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int repl_pair_resync_start(struct repl *r, const char *name, uint64_t *ticket,
                           struct repl_role_change *res, struct repl_err *err)
{
	memset(res, 0, sizeof(*res));
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	int rc = 0;
	enum pair_phase ph = p ? p->rec.phase : PH_NONE;
	if (!p)
		rc = verb_fail(err, -ENOENT, "no pair %s", name ? name : "");
	else if (!pair_phase_primary(ph) || ph == PH_DEMOTING)
		rc = verb_fail(err, -EINVAL, "pair %s: run resync on the new primary%s", name,
		          ph == PH_NEEDS_RESYNC ? " (this site waits for it)" : "");
	else if (ph != PH_SPLIT_BRAIN && ph != PH_RESYNCING)
		rc = verb_fail(err, -EINVAL, "pair %s: not in split brain, nothing to resync (resync "
		          "is for a pair whose sites were both primary; state %s)", name,
		          repl_state_name(p->state));
	else if (!p->rec.last_cycle)
		rc = verb_fail(err, -EAGAIN, "pair %s: never synced, no common snapshot", name);
	if (rc < 0) {
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	pair_get(p);
	struct wire_msg m;
	char peer[WIRE_TEXT_MAX + 1];
	snprintf(peer, sizeof(peer), "%s", p->rec.peer);
	role_msg_fill(p, WIRE_ROLE_RESYNC, &m);
	pthread_mutex_unlock(&r->mu);

	struct wire_digest *ext = NULL;
	size_t n = 0, cap = 0;
	char e[512];
	struct link *l = NULL;
	rc = pair_dial(p, &l, e, sizeof(e), NULL);
	if (rc < 0) {
		rc = verb_fail(err, rc, "pair %s: cannot reach the old primary %s: %s", name,
		          peer[0] ? peer : "(it calls in)", e);
		goto out;
	}
	rc = link_send(l, &m);
	while (rc == 0) {
		rc = link_recv(l, &m, 0);
		if (rc < 0)
			break;
		if (m.type == WIRE_ROLE_INFO)
			break;
		if (m.type == WIRE_ERROR) {
			snprintf(l->err, sizeof(l->err), "%s", m.u.error.msg);
			rc = m.u.error.code > 0 ? -m.u.error.code : -EIO;
			break;
		}
		if (m.type != WIRE_EXTENTS) {
			snprintf(l->err, sizeof(l->err), "unexpected %s", wire_type_name(m.type));
			rc = -EPROTO;
			break;
		}
		if (n + m.u.digests.count > cap) {
			size_t nc = MAX(cap * 2, n + m.u.digests.count + 64);
			struct wire_digest *ne = realloc(ext, nc * sizeof(*ne));
			if (!ne) {
				rc = -ENOMEM;
				snprintf(l->err, sizeof(l->err), "out of memory");
				break;
			}
			ext = ne;
			cap = nc;
		}
		for (uint32_t i = 0; i < m.u.digests.count; i++) {
			struct wire_digest d = wire_digest_at(&m, i);
			/* Sorted, non-empty, inside the offsets we can address:
			 * the union merge relies on it. */
			if (d.hash == 0 || d.objno > UINT64_MAX - d.hash ||
			    (n && d.objno < ext[n - 1].objno)) {
				rc = -EPROTO;
				snprintf(l->err, sizeof(l->err), "bad extent list");
				break;
			}
			ext[n++] = d;
		}
	}
	if (rc < 0) {
		rc = verb_fail(err, rc, "pair %s: resync refused by %s: %s", name, peer, l->err);
		goto out;
	}
	crash_point("resync-listed");
	pthread_mutex_lock(&r->mu);
	if (p->rec.phase != PH_RESYNCING && p->rec.cur_cycle) {
		/* A cycle snapshot taken before the split brain (the scheduler's
		 * try while the old primary was away) lacks our writes since;
		 * dropping it makes the resync one cycle over today's head
		 * (send_cycle retakes it under the next cycle number). */
		char cur[STORE_NAME_MAX + 1], vol[STORE_NAME_MAX + 1];
		snprintf(cur, sizeof(cur), "%s", p->rec.cur_snap);
		snprintf(vol, sizeof(vol), "%s", p->rec.volume);
		pthread_mutex_unlock(&r->mu);
		drop_snapshot(r, vol, cur);
		pthread_mutex_lock(&r->mu);
	}
	struct pair_rec next = p->rec;
	next.phase = PH_RESYNCING;
	rc = pair_change(p, &next, "pair resync", e, sizeof(e));
	if (rc == 0) {
		free(p->extra);
		p->extra = ext;
		p->n_extra = n;
		ext = NULL;
		p->failures = 0;
		*ticket = ++p->sync_req;
		res->resync_extents = n;
		snprintf(res->snapshot, sizeof(res->snapshot), "%s", p->rec.common_snap);
		pthread_cond_broadcast(&r->cv);
	}
	pairs_unlock(r);
	if (rc < 0) {
		rc = verb_fail(err, rc, "%s", e);
		goto out;
	}
	log_info("repl: pair %s: resync towards %s: %zu divergent extents on the old primary",
	         name, peer, n);
out:
	free(ext);
	if (l)
		link_close(l);
	pthread_mutex_lock(&r->mu);
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
	return rc;
}
