/* repl engine: role changes — demote, promote [--force], resync — and the
 * epoch exchange (ROLE / ROLE_INFO) that detects a split brain.
 *
 * Every pair carries an epoch, bumped by promote.  A primary sends its
 * epoch in ROLE CHECK before every cycle; a side that is primary itself,
 * or that knows a newer epoch, answers so, and both sides then record a
 * split brain (no cycle runs, no data is touched) until an operator
 * demotes one side and runs `pair resync` on the other.
 *
 * Crash safety: each verb persists its intent (atomic pair file replace)
 * before it acts, and every step is idempotent, so a verb interrupted by
 * a crash is finished by running it again.  The state machine is in
 * docs/PROTOCOL.md section 11.
 */
#include "repl/engine.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"

void crash_point(const char *step)
{
	const char *at = getenv("FERRY_TEST_CRASH_AT");
	if (at && !strcmp(at, step)) {
		log_warn("repl: FERRY_TEST_CRASH_AT=%s: exiting now", step);
		_exit(99);
	}
}

static void notify_ro(struct repl *r, const char *vol)
{
	if (r->on_ro_change)
		r->on_ro_change(r->ro_ctx, vol);
}

/* Under mu: records a split brain once, with the newest common snapshot. */
static void mark_split_brain(struct pair *p, const char *common, const char *why)
{
	if (!p->split_brain)
		log_error("repl: pair %s: SPLIT BRAIN: %s; no cycle runs until an operator "
		          "demotes one side and resyncs from the other", p->name, why);
	p->split_brain = true;
	if (!p->common_snap[0])
		snprintf(p->common_snap, sizeof(p->common_snap), "%s",
		         common[0] ? common : p->last_snap);
	snprintf(p->error, sizeof(p->error), "split brain: %s", why);
	(void)pair_save(p);
}

void role_msg_fill(const struct pair *p, uint32_t op, struct wire_msg *out)
{
	struct wire_msg m = { .type = WIRE_ROLE };
	snprintf(m.u.role.volume, sizeof(m.u.role.volume), "%s", p->remote);
	snprintf(m.u.role.pair_id, sizeof(m.u.role.pair_id), "%s", p->id);
	m.u.role.op = op;
	m.u.role.epoch = p->epoch;
	m.u.role.last_cycle = p->last_cycle;
	m.u.role.period_s = p->period_s;
	snprintf(m.u.role.last_snap, sizeof(m.u.role.last_snap), "%s", p->last_snap);
	snprintf(m.u.role.sender_volume, sizeof(m.u.role.sender_volume), "%s", p->name);
	snprintf(m.u.role.addr, sizeof(m.u.role.addr), "%s", p->r->listen_addr);
	*out = m;
}

/* ---- the primary's side of the epoch exchange --------------------------- */
int role_check(struct pair *p, struct link *l, char *err, size_t errlen)
{
	struct repl *r = p->r;
	struct wire_msg m;
	pthread_mutex_lock(&r->mu);
	role_msg_fill(p, p->resyncing ? WIRE_ROLE_CHECK_RESYNC
	              : p->demoting ? WIRE_ROLE_CHECK_DEMOTING : WIRE_ROLE_CHECK, &m);
	pthread_mutex_unlock(&r->mu);
	int rc = link_send(l, &m);
	if (rc == 0)
		rc = link_expect(l, WIRE_ROLE_INFO, &m, 0);
	if (rc < 0) {
		snprintf(err, errlen, "peer %s: %s", l->peer, l->err);
		return rc;
	}
	pthread_mutex_lock(&r->mu);
	rc = 0;
	if (m.u.role_info.role == WIRE_RI_PRIMARY && p->demoting &&
	    m.u.role_info.epoch > p->epoch && !(m.u.role_info.flags & WIRE_RI_SPLIT_BRAIN)) {
		/* We demoted, the peer was promoted before we heard back. */
		snprintf(err, errlen, "the peer is already primary (epoch %" PRIu64 ")",
		         m.u.role_info.epoch);
		rc = -EALREADY;
	} else if (m.u.role_info.role == WIRE_RI_PRIMARY &&
	           (m.u.role_info.flags & WIRE_RI_DEMOTED) && m.u.role_info.epoch < p->epoch &&
	           !(m.u.role_info.flags & WIRE_RI_SPLIT_BRAIN)) {
		/* It told us it demoted, and crashed before recording it. */
		snprintf(err, errlen, "the old primary %s has not finished its demote "
		         "(run `ferry pair demote %s` there again)", p->peer, p->remote);
		rc = -EAGAIN;
	} else if (m.u.role_info.role == WIRE_RI_PRIMARY || m.u.role_info.epoch > p->epoch) {
		char why[300];
		snprintf(why, sizeof(why), "the peer %.200s is %s at epoch %" PRIu64
		         " (this side: primary at epoch %" PRIu64 ")", p->peer,
		         m.u.role_info.role == WIRE_RI_PRIMARY ? "primary" : "secondary",
		         m.u.role_info.epoch, p->epoch);
		const char *common = m.u.role_info.last_snap;
		bool have = m.u.role_info.last_snap[0] && (!strcmp(common, p->last_snap) ||
		                                          !strcmp(common, p->cur_snap));
		mark_split_brain(p, have ? common : "", why);
		snprintf(err, errlen, "split brain: %s", why);
		rc = -ESTALE;
	} else if ((m.u.role_info.flags & WIRE_RI_NEEDS_RESYNC) && !p->resyncing) {
		snprintf(err, errlen, "the peer waits for a resync after a split brain "
		         "(run `ferry pair resync %s` here)", p->name);
		rc = -ESTALE;
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

void role_probe(struct pair *p)
{
	struct repl *r = p->r;
	pthread_mutex_lock(&r->mu);
	bool go = p->role == REPL_ROLE_PRIMARY && !p->split_brain && !p->removed &&
	          !r->stopping;
	pthread_mutex_unlock(&r->mu);
	if (!go)
		return;
	struct link *l;
	char err[512];
	int rc = pair_dial(p, &l, err, sizeof(err));
	if (rc == 0) {
		rc = role_check(p, l, err, sizeof(err));
		link_close(l);
	}
	pthread_mutex_lock(&r->mu);
	bool was_ok = !p->peer_err[0];
	if (rc == 0 || rc == -ESTALE)
		p->peer_err[0] = '\0'; /* reached; a split brain is recorded apart */
	else
		snprintf(p->peer_err, sizeof(p->peer_err), "%.255s", err);
	pthread_mutex_unlock(&r->mu);
	if (rc < 0 && rc != -ESTALE && was_ok)
		log_warn("repl: pair %s: peer check failed: %s", p->name, err);
	else if (rc == 0 && !was_ok)
		log_info("repl: pair %s: peer reachable again", p->name);
}

/* ---- the other side ------------------------------------------------------ */
void role_info_fill(const struct pair *p, const char *snap, struct wire_msg *out)
{
	struct wire_msg m = { .type = WIRE_ROLE_INFO };
	m.u.role_info.role = p->role == REPL_ROLE_PRIMARY ? WIRE_RI_PRIMARY : WIRE_RI_SECONDARY;
	m.u.role_info.flags = (p->demoting ? WIRE_RI_DEMOTED : 0) |
	                      (p->split_brain ? WIRE_RI_SPLIT_BRAIN : 0) |
	                      (p->needs_resync ? WIRE_RI_NEEDS_RESYNC : 0);
	m.u.role_info.epoch = p->epoch;
	m.u.role_info.last_cycle = p->last_cycle;
	snprintf(m.u.role_info.last_snap, sizeof(m.u.role_info.last_snap), "%s", snap);
	*out = m;
}

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
	char base[STORE_NAME_MAX + 1], sb[STORE_NAME_MAX + 1];
	snprintf(base, sizeof(base), "%s", p->last_snap);
	pthread_mutex_unlock(&r->mu);
	if (strcmp(base, m->u.role.last_snap)) {
		link_send_error(l, ESTALE, "resync base %s is not %s's last synced snapshot %s",
		                m->u.role.last_snap, p->name, base[0] ? base : "(none)");
		return 0;
	}
	pthread_mutex_lock(&r->mu);
	bool take = !p->sb_snap[0];
	if (take)
		snprintf(p->sb_snap, sizeof(p->sb_snap), "split-brain-%" PRIu64, now_wall_s());
	snprintf(sb, sizeof(sb), "%s", p->sb_snap);
	pthread_mutex_unlock(&r->mu);
	int rc = 0;
	if (take) {
		/* The name first: a crash after the snapshot then finds it and
		 * never takes a second one. */
		pthread_mutex_lock(&r->mu);
		rc = pair_save(p);
		if (rc < 0)
			p->sb_snap[0] = '\0';
		pthread_mutex_unlock(&r->mu);
		if (rc < 0) {
			link_send_error(l, -rc, "cannot save the pair: %s", strerror(-rc));
			return 0;
		}
	}
	struct vol *v;
	rc = vol_open(r->store, p->name, &v);
	if (rc < 0) {
		link_send_error(l, -rc, "cannot open %s: %s", p->name, strerror(-rc));
		return 0;
	}
	struct snap_info si;
	if (vol_snap_get(v, sb, &si) < 0) {
		/* Nothing writes a demoted secondary, so the head is still
		 * the divergent content even after a crash before the record. */
		rc = vol_snap_create(v, sb);
		if (rc < 0) {
			vol_close(v);
			link_send_error(l, -rc, "cannot snapshot %s@%s: %s", p->name, sb, strerror(-rc));
			return 0;
		}
		log_warn("repl: pair %s: this site's changes since %s are kept in %s@%s", p->name,
		         base, p->name, sb);
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
	         p->name, b->sent, base, l->peer);
	free(b);
	if (rc < 0) {
		link_send_error(l, -rc, "diff of %s: %s", p->name, strerror(-rc));
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
	if (!p || strcmp(p->id, q->u.role.pair_id)) {
		pthread_mutex_unlock(&r->mu);
		link_send_error(l, p ? ESTALE : ENOENT, "volume %s %s", q->u.role.volume,
		                p ? "belongs to another pair" : "is in no pair on this site");
		return 0;
	}
	/* Where to reach the peer after a promote: what it announced, unless
	 * the operator named the address (a proxy, a VIP, NAT). */
	char learned[WIRE_TEXT_MAX + 1] = "";
	if (!p->peer_fixed && q->u.role.addr[0] &&
	    addr_learned(q->u.role.addr, l->peer, learned, sizeof(learned)) < 0)
		learned[0] = '\0';
	bool learn_addr = learned[0] && strcmp(p->peer_addr, learned);
	/* A secondary keeps the primary's period for the day it is promoted. */
	bool learn_period = p->role == REPL_ROLE_SECONDARY && q->u.role.period_s &&
	                    q->u.role.period_s != p->period_s;
	if (learn_addr)
		snprintf(p->peer_addr, sizeof(p->peer_addr), "%s", learned);
	if (learn_period)
		p->period_s = q->u.role.period_s;
	if (learn_addr || learn_period)
		(void)pair_save(p);
	uint32_t op = q->u.role.op;
	if (op == WIRE_ROLE_RESYNC) {
		bool ok = p->role == REPL_ROLE_SECONDARY;
		if (ok)
			pair_get(p);
		pthread_mutex_unlock(&r->mu);
		if (!ok) {
			link_send_error(l, EBUSY, "%s is still primary here: run `ferry pair demote %s` "
			                "on this site first", p->name, p->name);
			return 0;
		}
		int rc = serve_resync(r, l, p, q);
		pthread_mutex_lock(&r->mu);
		pair_put(p);
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	if (op == WIRE_ROLE_DEMOTED) {
		if (p->role != REPL_ROLE_SECONDARY) {
			pthread_mutex_unlock(&r->mu);
			link_send_error(l, EBUSY, "%s is primary here too", p->name);
			return 0;
		}
		if (p->last_cycle != q->u.role.last_cycle || strcmp(p->last_snap, q->u.role.last_snap)) {
			char here[STORE_NAME_MAX + 1];
			snprintf(here, sizeof(here), "%s", p->last_snap);
			pthread_mutex_unlock(&r->mu);
			link_send_error(l, ESTALE, "not in sync: the primary's last synced snapshot is "
			                "%s, here %s", q->u.role.last_snap, here[0] ? here : "(none)");
			return 0;
		}
		p->peer_demoted = true;
		p->peer_demoted_cycle = q->u.role.last_cycle;
		if (q->u.role.epoch > p->epoch)
			p->epoch = q->u.role.epoch;
		snprintf(p->remote, sizeof(p->remote), "%s", q->u.role.sender_volume);
		int rc = pair_save(p);
		if (rc == 0)
			send_role_info(l, p, p->last_snap);
		pthread_mutex_unlock(&r->mu);
		if (rc < 0)
			link_send_error(l, -rc, "cannot save the pair: %s", strerror(-rc));
		else
			log_info("repl: pair %s: the primary %s demoted at cycle %" PRIu64
			         "; `pair promote %s` takes over", p->name, l->peer,
			         q->u.role.last_cycle, p->name);
		return 0;
	}
	/* CHECK, CHECK_DEMOTING, CHECK_RESYNC: a primary about to send. */
	if (p->role == REPL_ROLE_PRIMARY) {
		/* Not a split brain: our own demote's final cycle reaching the
		 * side promoted meanwhile, or that side's check reaching us while
		 * we finish a demote it was promoted from (same last snapshot). */
		bool benign = (op == WIRE_ROLE_CHECK_DEMOTING && q->u.role.epoch < p->epoch) ||
		              (p->demoting && q->u.role.epoch > p->epoch &&
		               !strcmp(q->u.role.last_snap, p->last_snap));
		if (!benign) {
			char why[300];
			snprintf(why, sizeof(why), "%.200s claims primary at epoch %" PRIu64
			         " while this side is primary at epoch %" PRIu64, l->peer,
			         q->u.role.epoch, p->epoch);
			const char *c = q->u.role.last_snap;
			bool have = c[0] && (!strcmp(c, p->last_snap) || !strcmp(c, p->cur_snap));
			mark_split_brain(p, have ? c : "", why);
			if (p->active)
				link_abort(p->active);
		}
		send_role_info(l, p, p->common_snap[0] ? p->common_snap : p->last_snap);
		pthread_mutex_unlock(&r->mu);
		return 0;
	}
	if (p->needs_resync && op != WIRE_ROLE_CHECK_RESYNC) {
		send_role_info(l, p, p->last_snap);
		pthread_mutex_unlock(&r->mu);
		return 0;
	}
	bool dirty = false;
	if (q->u.role.epoch > p->epoch) {
		p->epoch = q->u.role.epoch;
		dirty = true;
	}
	if (op == WIRE_ROLE_CHECK && p->peer_demoted && q->u.role.epoch >= p->epoch) {
		/* The primary is sending normally again: the demote is void. */
		p->peer_demoted = false;
		dirty = true;
	}
	if (dirty)
		(void)pair_save(p);
	send_role_info(l, p, p->last_snap);
	pthread_mutex_unlock(&r->mu);
	return 0;
}

/* ---- verbs ---------------------------------------------------------------- */

/* Stops the worker of a pair that is no longer primary in memory. */
static void join_worker(struct repl *r, struct pair *p)
{
	pthread_mutex_lock(&r->mu);
	pthread_cond_broadcast(&r->cv);
	if (p->active)
		link_abort(p->active);
	bool join = p->has_thread;
	p->has_thread = false;
	pthread_mutex_unlock(&r->mu);
	if (join)
		pthread_join(p->th, NULL);
}

static int tell_demoted(struct repl *r, struct pair *p, char *err, size_t errlen)
{
	struct wire_msg m;
	pthread_mutex_lock(&r->mu);
	role_msg_fill(p, WIRE_ROLE_DEMOTED, &m);
	pthread_mutex_unlock(&r->mu);
	struct link *l;
	int rc = pair_dial(p, &l, err, errlen);
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

int repl_pair_demote(struct repl *r, const char *name, struct sbuf *out)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	if (!p) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(out, -ENOENT, "no pair %s", name ? name : "");
	}
	if (p->role == REPL_ROLE_SECONDARY) {
		pthread_mutex_unlock(&r->mu);
		sbuf_printf(out, "pair %s: already a secondary here%s\n", name,
		            p->needs_resync ? " (waiting for `pair resync` on the new primary)" : "");
		return 0;
	}
	if (!p->last_cycle && !p->split_brain) {
		pthread_mutex_unlock(&r->mu);
		return verb_fail(out, -EAGAIN, "pair %s: the initial sync has not completed; "
		            "nothing to hand over yet", name);
	}
	pair_get(p);
	int rc = 0;
	if (!p->demoting) {
		p->demoting = true;
		rc = pair_save(p);
		if (rc < 0)
			p->demoting = false;
	}
	pthread_mutex_unlock(&r->mu);
	if (rc < 0) {
		rc = verb_fail(out, rc, "cannot save pair %s: %s", name, strerror(-rc));
		goto out;
	}
	notify_ro(r, name);
	crash_point("demote-intent");

	char err[600];
	pthread_mutex_lock(&r->mu);
	bool split = p->split_brain;
	bool paused = p->paused;
	pthread_mutex_unlock(&r->mu);
	if (paused) {
		rc = verb_fail(out, -EAGAIN, "pair %s is paused: `pair resume %s`, then demote again "
		          "(writes stay refused)", name, name);
		goto out;
	}
	bool peer_promoted = false;
	if (!split) {
		struct sbuf tmp;
		sbuf_init(&tmp);
		rc = repl_pair_sync(r, name, true, &tmp);
		pthread_mutex_lock(&r->mu);
		split = p->split_brain;
		peer_promoted = rc < 0 && strstr(p->error, "already primary") != NULL;
		snprintf(err, sizeof(err), "%s", p->error);
		pthread_mutex_unlock(&r->mu);
		sbuf_free(&tmp);
		if (rc < 0 && !split && !peer_promoted) {
			rc = verb_fail(out, rc, "pair %s: the final cycle failed (%s); writes stay refused, "
			          "run `pair demote %s` again", name, err, name);
			goto out;
		}
		rc = 0;
	}
	crash_point("demote-synced");
	if (!split && !peer_promoted) {
		rc = tell_demoted(r, p, err, sizeof(err));
		if (rc < 0) {
			rc = verb_fail(out, rc, "pair %s: cannot tell the secondary (%s); writes stay "
			          "refused, run `pair demote %s` again", name, err, name);
			goto out;
		}
	}
	crash_point("demote-told");

	pthread_mutex_lock(&r->mu);
	p->role = REPL_ROLE_SECONDARY;
	pthread_mutex_unlock(&r->mu);
	join_worker(r, p);
	pthread_mutex_lock(&r->mu);
	char drop[STORE_NAME_MAX + 1] = "";
	if (split) {
		/* Our last record may lag the common snapshot by the cycle the
		 * secondary committed as we crashed: that one is our cur_snap. */
		if (p->common_snap[0] && strcmp(p->common_snap, p->last_snap) &&
		    !strcmp(p->common_snap, p->cur_snap)) {
			snprintf(p->last_snap, sizeof(p->last_snap), "%s", p->cur_snap);
			p->last_cycle = p->cur_cycle;
			p->last_time = p->cur_time;
		}
		p->needs_resync = true;
	}
	if (p->cur_snap[0] && strcmp(p->cur_snap, p->last_snap))
		snprintf(drop, sizeof(drop), "%s", p->cur_snap);
	p->cur_cycle = 0;
	p->cur_snap[0] = '\0';
	p->demoting = false;
	p->peer_demoted = false;
	p->error[0] = '\0';
	rc = pair_save(p);
	if (rc < 0) {
		/* The file still says demoting primary: a repeat finishes. */
		p->role = REPL_ROLE_PRIMARY;
		p->demoting = true;
	}
	if (rc == 0) {
		/* The offers the old secondary made to us are of no use now; if
		 * this site has no listener, it offers its own to the new
		 * primary instead. */
		callback_drop(p);
		p->announced = false;
		callback_update(r, p);
	}
	uint64_t cycle = p->last_cycle;
	char last[STORE_NAME_MAX + 1];
	snprintf(last, sizeof(last), "%s", p->last_snap);
	pthread_mutex_unlock(&r->mu);
	if (rc < 0) {
		rc = verb_fail(out, rc, "cannot save pair %s: %s", name, strerror(-rc));
		goto out;
	}
	crash_point("demote-done");
	if (drop[0]) {
		struct vol *v;
		if (vol_open(r->store, name, &v) == 0) {
			(void)vol_snap_delete(v, drop);
			vol_close(v);
		}
	}
	notify_ro(r, name);
	if (split)
		sbuf_printf(out, "pair %s demoted after a split brain: this site is read-only and "
		            "waits for `ferry pair resync %s` on the new primary (common snapshot "
		            "%s)\n", name, name, last);
	else
		sbuf_printf(out, "pair %s demoted: %s (cycle %" PRIu64 ") is on both sites; this "
		            "site is now the secondary-to-be, run `ferry pair promote` on the "
		            "other site\n", name, last, cycle);
out:
	pthread_mutex_lock(&r->mu);
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int repl_pair_promote(struct repl *r, const char *name, bool force, struct sbuf *out)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	int rc = 0;
	if (!p)
		rc = verb_fail(out, -ENOENT, "no pair %s", name ? name : "");
	else if (p->role == REPL_ROLE_PRIMARY && p->demoting)
		rc = verb_fail(out, -EBUSY, "pair %s is demoting on this site (finish it with `pair "
		          "demote %s`)", name, name);
	else if (p->role == REPL_ROLE_PRIMARY) {
		pthread_mutex_unlock(&r->mu);
		sbuf_printf(out, "pair %s: already primary here\n", name);
		return 0;
	} else if (p->needs_resync)
		rc = verb_fail(out, -EBUSY, "pair %s: this site was demoted after a split brain; run "
		          "`pair resync %s` on the other site", name, name);
	else if (!p->last_cycle)
		rc = verb_fail(out, -EAGAIN, "pair %s: nothing was ever synced here, there is nothing "
		          "to promote", name);
	else if (!force && !(p->peer_demoted && p->peer_demoted_cycle == p->last_cycle))
		rc = verb_fail(out, -EBUSY, "pair %s: the primary has not demoted (run `ferry pair demote "
		          "%s` on it first; if it is lost, `pair promote %s --force` takes over "
		          "at the last synced snapshot %s)", name, p->remote, name, p->last_snap);
	if (rc < 0) {
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	pair_get(p);
	/* A cycle being applied must be gone before the head is rolled back. */
	uint64_t until = now_mono_ns() + 10000000000ull;
	while (p->active && now_mono_ns() < until) {
		link_abort(p->active);
		pthread_mutex_unlock(&r->mu);
		struct timespec ts = { 0, 20000000 };
		nanosleep(&ts, NULL);
		pthread_mutex_lock(&r->mu);
	}
	bool busy = p->active != NULL;
	char last[STORE_NAME_MAX + 1];
	snprintf(last, sizeof(last), "%s", p->last_snap);
	pthread_mutex_unlock(&r->mu);
	if (busy) {
		rc = verb_fail(out, -EBUSY, "pair %s: a cycle is still being applied; try again", name);
		goto out;
	}
	crash_point("promote-begin");
	/* The last synced snapshot is what becomes live: a half-applied cycle
	 * is discarded.  Idempotent, so a crash before the record is fine. */
	struct vol *v;
	rc = vol_open(r->store, name, &v);
	if (rc == 0) {
		rc = vol_rollback(v, last);
		vol_close(v);
	}
	if (rc < 0) {
		rc = verb_fail(out, rc, "pair %s: cannot roll back to %s: %s", name, last, strerror(-rc));
		goto out;
	}
	char path[4400];
	if (pair_ckpt_path(r, name, path, sizeof(path)) == 0 && unlink(path) == 0)
		(void)fsync_path(r->pairs_dir);
	crash_point("promote-rolledback");
	pthread_mutex_lock(&r->mu);
	struct pair saved = *p;
	p->role = REPL_ROLE_PRIMARY;
	p->epoch++;
	/* Empty when the old primary has no listener: it calls us instead. */
	snprintf(p->peer, sizeof(p->peer), "%s", p->peer_addr);
	if (force)
		snprintf(p->common_snap, sizeof(p->common_snap), "%s", p->last_snap);
	else
		p->common_snap[0] = '\0';
	p->cur_cycle = 0;
	p->cur_snap[0] = '\0';
	p->peer_demoted = false;
	p->paused = false;
	p->error[0] = '\0';
	p->failures = 0;
	p->stop = false;
	p->next_due_ns = now_mono_ns();
	rc = pair_save(p);
	if (rc < 0) {
		p->role = saved.role;
		p->epoch = saved.epoch;
		memcpy(p->peer, saved.peer, sizeof(p->peer));
		memcpy(p->common_snap, saved.common_snap, sizeof(p->common_snap));
		p->peer_demoted = saved.peer_demoted;
	} else {
		callback_drop(p); /* our offers to the old primary: it is secondary now */
		pair_start_thread(r, p);
	}
	uint64_t epoch = p->epoch;
	char peer[WIRE_TEXT_MAX + 1];
	snprintf(peer, sizeof(peer), "%s", p->peer);
	pthread_mutex_unlock(&r->mu);
	if (rc < 0) {
		rc = verb_fail(out, rc, "cannot save pair %s: %s", name, strerror(-rc));
		goto out;
	}
	crash_point("promote-done");
	notify_ro(r, name);
	sbuf_printf(out, "pair %s promoted%s: %s is live and writable (epoch %" PRIu64 "); "
	            "cycles now go to %s\n", name, force ? " by force" : "", last, epoch,
	            peer[0] ? peer : "the old primary, which calls in (it has no --listen)");
out:
	pthread_mutex_lock(&r->mu);
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int repl_pair_resync_start(struct repl *r, const char *name, uint64_t *ticket,
                           struct sbuf *out)
{
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	int rc = 0;
	if (!p)
		rc = verb_fail(out, -ENOENT, "no pair %s", name ? name : "");
	else if (p->role != REPL_ROLE_PRIMARY || p->demoting)
		rc = verb_fail(out, -EINVAL, "pair %s: run resync on the new primary", name);
	else if (!p->last_cycle)
		rc = verb_fail(out, -EAGAIN, "pair %s: never synced, no common snapshot", name);
	if (rc < 0) {
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	pair_get(p);
	struct wire_msg m;
	char peer[WIRE_TEXT_MAX + 1];
	snprintf(peer, sizeof(peer), "%s", p->peer);
	role_msg_fill(p, WIRE_ROLE_RESYNC, &m);
	pthread_mutex_unlock(&r->mu);

	struct wire_digest *ext = NULL;
	size_t n = 0, cap = 0;
	char err[512];
	struct link *l = NULL;
	rc = pair_dial(p, &l, err, sizeof(err));
	if (rc < 0) {
		rc = verb_fail(out, rc, "pair %s: cannot reach the old primary %s: %s", name,
		          peer[0] ? peer : "(it calls in)", err);
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
		rc = verb_fail(out, rc, "pair %s: resync refused by %s: %s", name, peer, l->err);
		goto out;
	}
	crash_point("resync-listed");
	pthread_mutex_lock(&r->mu);
	if (!p->resyncing && p->cur_cycle && p->cur_snap[0]) {
		/* A cycle snapshot taken before the split brain (the worker's
		 * try while the old primary was away) lacks our writes since;
		 * dropping it makes the resync one cycle over today's head
		 * (send_cycle retakes it under the next cycle number). */
		char cur[STORE_NAME_MAX + 1];
		snprintf(cur, sizeof(cur), "%s", p->cur_snap);
		pthread_mutex_unlock(&r->mu);
		struct vol *v;
		if (vol_open(r->store, name, &v) == 0) {
			(void)vol_snap_delete(v, cur);
			vol_close(v);
		}
		pthread_mutex_lock(&r->mu);
	}
	free(p->extra);
	p->extra = ext;
	p->n_extra = n;
	ext = NULL;
	p->resyncing = true;
	p->failures = 0;
	*ticket = ++p->sync_req;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	log_info("repl: pair %s: resync towards %s: %zu divergent extents on the old primary",
	         name, peer, n);
	sbuf_printf(out, "pair %s: resync started (%zu divergent extents on the old primary)\n",
	            name, n);
out:
	free(ext);
	if (l)
		link_close(l);
	pthread_mutex_lock(&r->mu);
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int repl_pair_resync(struct repl *r, const char *name, struct sbuf *out)
{
	uint64_t ticket;
	int rc = repl_pair_resync_start(r, name, &ticket, out);
	if (rc < 0)
		return rc;
	do
		rc = repl_pair_sync_wait(r, name, ticket, 1000, NULL, NULL, out);
	while (rc == -EINPROGRESS);
	return rc;
}
