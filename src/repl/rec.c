/* repl record: codecs of the pair files and the rules of their change.
 * Pure (no I/O, no allocation): see rec.h. */
#include "repl/rec.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/common.h"

/* ---- names of things ---------------------------------------------------- */
static const char *const phase_names[PH_COUNT] = {
	[PH_NONE] = "none",
	[PH_PRIMARY] = "primary",
	[PH_PAUSED] = "paused",
	[PH_DEMOTING] = "demoting",
	[PH_SPLIT_BRAIN] = "split-brain",
	[PH_RESYNCING] = "resyncing",
	[PH_SECONDARY] = "secondary",
	[PH_PEER_DEMOTED] = "peer-demoted",
	[PH_NEEDS_RESYNC] = "needs-resync",
};

const char *pair_phase_name(enum pair_phase ph)
{
	return (unsigned)ph < PH_COUNT ? phase_names[ph] : "?";
}

int pair_phase_parse(const char *s, enum pair_phase *out)
{
	for (unsigned i = PH_PRIMARY; i < PH_COUNT; i++)
		if (!strcmp(s, phase_names[i])) {
			*out = (enum pair_phase)i;
			return 0;
		}
	return -EINVAL;
}

bool pair_phase_primary(enum pair_phase ph)
{
	return ph >= PH_PRIMARY && ph <= PH_RESYNCING;
}

static const char *const state_names[REPL_ST_COUNT] = {
	[REPL_ST_INITIAL_SYNC] = "initial-sync",
	[REPL_ST_IDLE] = "idle",
	[REPL_ST_SYNCING] = "syncing",
	[REPL_ST_PAUSED] = "paused",
	[REPL_ST_DEMOTING] = "demoting",
	[REPL_ST_SPLIT_BRAIN] = "split-brain",
	[REPL_ST_RESYNCING] = "resyncing",
	[REPL_ST_ERROR] = "error",
	[REPL_ST_PEER_DOWN] = "peer-down",
};

const char *repl_state_name(enum repl_state st)
{
	return (unsigned)st < REPL_ST_COUNT ? state_names[st] : "?";
}

const char *repl_role_name(enum repl_role role)
{
	return role == REPL_ROLE_PRIMARY ? "primary"
	       : role == REPL_ROLE_SECONDARY ? "secondary" : "none";
}

const char *repl_split_policy_name(enum repl_split_policy p)
{
	return p == REPL_SB_KEEP_WRITING ? "keep-writing" : "fence";
}

/* ---- the transition table ------------------------------------------------ */
/* legal[from][to]: the events behind each entry are in docs/DESIGN.md.
 * Staying in a phase is always legal (the record's other fields change:
 * cycles, settings, addresses). */
#define P PH_PRIMARY
#define Z PH_PAUSED
#define D PH_DEMOTING
#define B PH_SPLIT_BRAIN
#define R PH_RESYNCING
#define S PH_SECONDARY
#define X PH_PEER_DEMOTED
#define N PH_NEEDS_RESYNC
static const bool legal[PH_COUNT][PH_COUNT] = {
	/* create makes a primary; the peer's PAIR_OPEN a secondary */
	[PH_NONE] = {[P] = 1, [S] = 1},
	/* pause, demote, a split brain found, rm */
	[P] = {[P] = 1, [Z] = 1, [D] = 1, [B] = 1, [PH_NONE] = 1},
	/* resume, demote (runs the final cycle), a split brain found, rm */
	[Z] = {[Z] = 1, [P] = 1, [D] = 1, [B] = 1, [PH_NONE] = 1},
	/* told the peer -> secondary; the final cycle met another primary;
	 * a split brain demoted -> waits for a resync */
	[D] = {[D] = 1, [S] = 1, [B] = 1, [N] = 1, [PH_NONE] = 1},
	/* resync starts; demote; rm */
	[B] = {[B] = 1, [R] = 1, [N] = 1, [PH_NONE] = 1},
	/* the resync committed; it failed or the daemon restarted */
	[R] = {[R] = 1, [P] = 1, [B] = 1, [PH_NONE] = 1},
	/* the primary demoted; promote --force (the primary is lost) */
	[S] = {[S] = 1, [X] = 1, [P] = 1, [PH_NONE] = 1},
	/* promote; the primary sends again (its demote is void) */
	[X] = {[X] = 1, [P] = 1, [S] = 1, [PH_NONE] = 1},
	/* the new primary's resync committed here */
	[N] = {[N] = 1, [S] = 1, [PH_NONE] = 1},
};
#undef P
#undef Z
#undef D
#undef B
#undef R
#undef S
#undef X
#undef N

bool pair_phase_legal(enum pair_phase from, enum pair_phase to)
{
	if ((unsigned)from >= PH_COUNT || (unsigned)to >= PH_COUNT)
		return false;
	return legal[from][to];
}

/* ---- validity ------------------------------------------------------------- */
static int why_fail(char *why, size_t n, const char *fmt, ...) PRINTF_LIKE(3, 4);
static int why_fail(char *why, size_t n, const char *fmt, ...)
{
	if (why && n) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static bool opt_name(const char *s)
{
	return !*s || name_valid(s);
}

static bool text_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

void pair_rec_init(struct pair_rec *r)
{
	memset(r, 0, sizeof(*r));
	r->period_s = REC_DEFAULT_PERIOD;
	r->max_inflight = REC_DEFAULT_INFLIGHT;
	r->split_policy = REPL_SB_FENCE;
	r->keep = REC_DEFAULT_KEEP;
}

bool pair_point_kept(const struct pair_rec *r, uint64_t cycle, uint64_t newer,
                     uint64_t age_s)
{
	if (cycle && cycle <= r->pinned_cycle)
		return true;
	if (newer == 0)
		return true; /* the last synced snapshot */
	if (pair_phase_primary(r->phase))
		return false;
	return newer < r->keep || (r->keep_for_s && age_s < r->keep_for_s);
}

int pair_rec_valid(const struct pair_rec *r, char *why, size_t n)
{
	if (r->phase <= PH_NONE || r->phase >= PH_COUNT)
		return why_fail(why, n, "no such phase %d", (int)r->phase);
	if (!name_valid(r->name) || !name_valid(r->volume) || !name_valid(r->id))
		return why_fail(why, n, "bad name, volume or id");
	if (!opt_name(r->remote) || !opt_name(r->seed_snap) || !opt_name(r->last_snap) ||
	    !opt_name(r->cur_snap) || !opt_name(r->common_snap) || !opt_name(r->sb_snap))
		return why_fail(why, n, "bad snapshot or volume name");
	if (!text_ok(r->peer) || !text_ok(r->peer_addr) || !text_ok(r->reason))
		return why_fail(why, n, "control character in a text field");
	if (pair_phase_primary(r->phase) && !r->remote[0])
		return why_fail(why, n, "a primary needs the secondary's volume name");
	if (r->period_s < 1 || r->max_inflight < 1 || r->max_inflight > 65536)
		return why_fail(why, n, "period or max-inflight out of range");
	if (r->split_policy != REPL_SB_FENCE && r->split_policy != REPL_SB_KEEP_WRITING)
		return why_fail(why, n, "bad split-brain policy");
	if (r->keep < 1 || r->keep > REC_KEEP_MAX)
		return why_fail(why, n, "keep %u out of range 1..%u", r->keep, REC_KEEP_MAX);
	if (!r->last_cycle != !r->last_snap[0])
		return why_fail(why, n, "last cycle and last snapshot disagree");
	if (!r->cur_cycle != !r->cur_snap[0])
		return why_fail(why, n, "cycle in flight and its snapshot disagree");
	if (r->cur_cycle && !pair_phase_primary(r->phase))
		return why_fail(why, n, "a secondary has no cycle in flight");
	if (r->cur_cycle && r->cur_cycle <= r->last_cycle)
		return why_fail(why, n, "cycle in flight %" PRIu64 " is not after the last "
		                "synced %" PRIu64, r->cur_cycle, r->last_cycle);
	if (r->has_stats && (!isfinite(r->stats.seconds) || r->stats.seconds < 0 ||
	                     r->stats.seconds > 1e9))
		return why_fail(why, n, "bad cycle duration");
	if (r->n_members > REC_MEMBERS_MAX)
		return why_fail(why, n, "%u members, at most %u", r->n_members, REC_MEMBERS_MAX);
	for (uint32_t i = 0; i < r->n_members; i++) {
		if (!name_valid(r->members[i]))
			return why_fail(why, n, "bad member volume name");
		for (uint32_t k = 0; k < i; k++)
			if (!strcmp(r->members[i], r->members[k]))
				return why_fail(why, n, "member %s twice", r->members[i]);
	}
	return 0;
}

int pair_rec_check(const struct pair_rec *from, const struct pair_rec *to, char *why,
                   size_t n)
{
	enum pair_phase f = from ? from->phase : PH_NONE;
	enum pair_phase t = to ? to->phase : PH_NONE;
	if (!pair_phase_legal(f, t))
		return why_fail(why, n, "illegal transition %s -> %s", pair_phase_name(f),
		                pair_phase_name(t));
	if (t == PH_NONE)
		return 0;
	int rc = pair_rec_valid(to, why, n);
	if (rc < 0)
		return rc;
	if (f == PH_NONE)
		return 0;
	if (strcmp(from->name, to->name) || strcmp(from->volume, to->volume) ||
	    strcmp(from->id, to->id))
		return why_fail(why, n, "a pair's name, volume and id never change");
	if (to->epoch < from->epoch)
		return why_fail(why, n, "epoch would go back from %" PRIu64 " to %" PRIu64,
		                from->epoch, to->epoch);
	if (to->last_cycle < from->last_cycle)
		return why_fail(why, n, "last synced cycle would go back from %" PRIu64
		                " to %" PRIu64, from->last_cycle, to->last_cycle);
	return 0;
}

uint64_t pair_rec_peer_timeout(const struct pair_rec *r)
{
	if (r->peer_timeout_s)
		return r->peer_timeout_s;
	uint64_t p = r->period_s > UINT64_MAX / 3 ? UINT64_MAX : 3 * r->period_s;
	return MAX(p, (uint64_t)REC_MIN_PEER_TIMEOUT);
}

bool pair_rec_read_only(const struct pair_rec *r)
{
	return r->phase == PH_DEMOTING || (r->phase >= PH_SECONDARY && r->phase < PH_COUNT);
}

bool pair_rec_fenced(const struct pair_rec *r)
{
	return (r->phase == PH_SPLIT_BRAIN || r->phase == PH_RESYNCING) &&
	       r->split_policy == REPL_SB_FENCE && r->peer_epoch > r->epoch;
}

void rec_text(char *dst, size_t cap, const char *src)
{
	if (!cap)
		return;
	size_t i = 0;
	for (; src[i] && i + 1 < cap; i++)
		dst[i] = ((unsigned char)src[i] < 0x20 || src[i] == 0x7f) ? '?' : src[i];
	dst[i] = '\0';
}

/* Durations are kept to milliseconds, as the file writes them. */
static bool same_ms(double a, double b)
{
	char x[64], y[64];
	snprintf(x, sizeof(x), "%.3f", a);
	snprintf(y, sizeof(y), "%.3f", b);
	return !strcmp(x, y);
}

static bool members_equal(const struct pair_rec *a, const struct pair_rec *b)
{
	if (a->n_members != b->n_members)
		return false;
	for (uint32_t i = 0; i < a->n_members && i < REC_MEMBERS_MAX; i++)
		if (strcmp(a->members[i], b->members[i]))
			return false;
	return true;
}

bool pair_rec_equal(const struct pair_rec *a, const struct pair_rec *b)
{
	return a->phase == b->phase && !strcmp(a->name, b->name) &&
	       !strcmp(a->volume, b->volume) && !strcmp(a->id, b->id) &&
	       !strcmp(a->peer, b->peer) && !strcmp(a->remote, b->remote) &&
	       !strcmp(a->peer_addr, b->peer_addr) && a->peer_fixed == b->peer_fixed &&
	       a->period_s == b->period_s && a->bandwidth == b->bandwidth &&
	       a->max_inflight == b->max_inflight && a->compress == b->compress &&
	       a->peer_timeout_s == b->peer_timeout_s && a->split_policy == b->split_policy &&
	       a->created == b->created && !strcmp(a->seed_snap, b->seed_snap) &&
	       a->last_cycle == b->last_cycle && !strcmp(a->last_snap, b->last_snap) &&
	       a->last_time == b->last_time && a->cur_cycle == b->cur_cycle &&
	       !strcmp(a->cur_snap, b->cur_snap) && a->cur_time == b->cur_time &&
	       a->has_stats == b->has_stats &&
	       (!a->has_stats ||
	        (a->stats.number == b->stats.number && a->stats.extents == b->stats.extents &&
	         a->stats.data_bytes == b->stats.data_bytes &&
	         a->stats.zero_bytes == b->stats.zero_bytes &&
	         a->stats.wire_bytes == b->stats.wire_bytes &&
	         same_ms(a->stats.seconds, b->stats.seconds))) &&
	       a->epoch == b->epoch && a->peer_epoch == b->peer_epoch &&
	       a->peer_demoted_cycle == b->peer_demoted_cycle &&
	       !strcmp(a->common_snap, b->common_snap) && !strcmp(a->sb_snap, b->sb_snap) &&
	       !strcmp(a->reason, b->reason) && a->keep == b->keep &&
	       a->keep_for_s == b->keep_for_s && a->pinned_cycle == b->pinned_cycle &&
	       members_equal(a, b);
}

/* ---- key=value lines -------------------------------------------------- */
struct kv {
	const char *p, *end;
	char key[32];
	const char *val;
	size_t vlen;
};

/* Next "key=value" line; lines without '=' or with a long key are skipped.
 * false at the end, or when the text holds a NUL (not a text file). */
static bool kv_next(struct kv *it, bool *bad)
{
	while (it->p < it->end) {
		const char *nl = memchr(it->p, '\n', (size_t)(it->end - it->p));
		const char *le = nl ? nl : it->end;
		const char *line = it->p;
		it->p = nl ? nl + 1 : it->end;
		if (memchr(line, '\0', (size_t)(le - line))) {
			*bad = true;
			return false;
		}
		const char *eq = memchr(line, '=', (size_t)(le - line));
		if (!eq || (size_t)(eq - line) >= sizeof(it->key))
			continue;
		memcpy(it->key, line, (size_t)(eq - line));
		it->key[eq - line] = '\0';
		it->val = eq + 1;
		it->vlen = (size_t)(le - it->val);
		return true;
	}
	return false;
}

/* The value as a string of at most max bytes (longer: false). */
static bool kv_str(const struct kv *it, char *dst, size_t max)
{
	if (it->vlen > max)
		return false;
	memcpy(dst, it->val, it->vlen);
	dst[it->vlen] = '\0';
	return true;
}

static bool kv_u64(const struct kv *it, uint64_t *v)
{
	char tmp[24];
	return kv_str(it, tmp, sizeof(tmp) - 1) && parse_u64(tmp, v) == 0;
}

static bool kv_bool(const struct kv *it, bool *v)
{
	uint64_t x;
	if (!kv_u64(it, &x) || x > 1)
		return false;
	*v = x != 0;
	return true;
}

/* A name field: empty or valid. */
static bool kv_name(const struct kv *it, char *dst)
{
	return kv_str(it, dst, REC_NAME_MAX) && opt_name(dst);
}

/* A text field: longer values are cut (as writers cut them). */
static bool kv_text(const struct kv *it, char *dst)
{
	size_t n = MIN(it->vlen, (size_t)REC_TEXT_MAX);
	memcpy(dst, it->val, n);
	dst[n] = '\0';
	return text_ok(dst);
}

static bool kv_is(const struct kv *it, const char *k)
{
	return !strcmp(it->key, k);
}

/* "members=a b c": valid names separated by single spaces, at most
 * REC_MEMBERS_MAX (distinct: pair_rec_valid). */
static bool kv_members(const struct kv *it, struct pair_rec *r)
{
	const char *s = it->val, *end = it->val + it->vlen;
	r->n_members = 0;
	while (s < end) {
		const char *sp = memchr(s, ' ', (size_t)(end - s));
		const char *e = sp ? sp : end;
		size_t n = (size_t)(e - s);
		if (!n || n > REC_NAME_MAX || r->n_members >= REC_MEMBERS_MAX)
			return false;
		char *dst = r->members[r->n_members++];
		memcpy(dst, s, n);
		dst[n] = '\0';
		if (!name_valid(dst))
			return false;
		if (sp && sp + 1 == end)
			return false; /* a trailing space */
		s = sp ? sp + 1 : end;
	}
	return r->n_members > 0;
}

int pair_rec_parse(const char *text, size_t len, struct pair_rec *out)
{
	struct pair_rec r;
	pair_rec_init(&r);
	r.period_s = 0;
	r.max_inflight = 0;
	uint64_t version = 1;
	bool ok = true, bad = false, role_primary = false, role_secondary = false,
	     have_state = false, have_members = false;
	/* version 1 kept the role and its booleans apart */
	bool v1_paused = false, v1_demoting = false, v1_peer_demoted = false,
	     v1_split = false, v1_needs = false;
	struct kv it = { .p = text, .end = text + len };
	uint64_t v;
	while (ok && kv_next(&it, &bad)) {
		if (kv_is(&it, "version")) ok = kv_u64(&it, &version) && version >= 1 && version <= 3;
		else if (kv_is(&it, "name")) ok = kv_name(&it, r.name);
		else if (kv_is(&it, "volume")) ok = kv_name(&it, r.volume);
		else if (kv_is(&it, "id")) ok = kv_name(&it, r.id);
		else if (kv_is(&it, "state")) {
			char s[32];
			ok = kv_str(&it, s, sizeof(s) - 1) && pair_phase_parse(s, &r.phase) == 0;
			have_state = true;
		} else if (kv_is(&it, "role")) {
			char s[16];
			ok = kv_str(&it, s, sizeof(s) - 1);
			role_primary = ok && !strcmp(s, "primary");
			role_secondary = ok && !strcmp(s, "secondary");
			ok = ok && (role_primary || role_secondary);
		}
		else if (kv_is(&it, "peer")) ok = kv_text(&it, r.peer);
		else if (kv_is(&it, "remote")) ok = kv_name(&it, r.remote);
		else if (kv_is(&it, "peer_addr")) ok = kv_text(&it, r.peer_addr);
		else if (kv_is(&it, "peer_fixed")) ok = kv_bool(&it, &r.peer_fixed);
		else if (kv_is(&it, "period")) ok = kv_u64(&it, &r.period_s);
		else if (kv_is(&it, "max_inflight")) {
			ok = kv_u64(&it, &v) && v <= 65536;
			r.max_inflight = (uint32_t)v;
		}
		else if (kv_is(&it, "bandwidth")) ok = kv_u64(&it, &r.bandwidth);
		else if (kv_is(&it, "compress")) ok = kv_bool(&it, &r.compress);
		else if (kv_is(&it, "peer_timeout")) ok = kv_u64(&it, &r.peer_timeout_s);
		else if (kv_is(&it, "split_brain_policy")) {
			char s[16];
			ok = kv_str(&it, s, sizeof(s) - 1);
			if (ok && !strcmp(s, "fence"))
				r.split_policy = REPL_SB_FENCE;
			else if (ok && !strcmp(s, "keep-writing"))
				r.split_policy = REPL_SB_KEEP_WRITING;
			else
				ok = false;
		}
		else if (kv_is(&it, "keep")) {
			ok = kv_u64(&it, &v) && v >= 1 && v <= REC_KEEP_MAX;
			r.keep = (uint32_t)v;
		}
		else if (kv_is(&it, "keep_for")) ok = kv_u64(&it, &r.keep_for_s);
		else if (kv_is(&it, "pinned_cycle")) ok = kv_u64(&it, &r.pinned_cycle);
		else if (kv_is(&it, "members")) { ok = kv_members(&it, &r); have_members = true; }
		else if (kv_is(&it, "created")) ok = kv_u64(&it, &r.created);
		else if (kv_is(&it, "seed_snap")) ok = kv_name(&it, r.seed_snap);
		else if (kv_is(&it, "last_cycle")) ok = kv_u64(&it, &r.last_cycle);
		else if (kv_is(&it, "last_snap")) ok = kv_name(&it, r.last_snap);
		else if (kv_is(&it, "last_time")) ok = kv_u64(&it, &r.last_time);
		else if (kv_is(&it, "cur_cycle")) ok = kv_u64(&it, &r.cur_cycle);
		else if (kv_is(&it, "cur_snap")) ok = kv_name(&it, r.cur_snap);
		else if (kv_is(&it, "cur_time")) ok = kv_u64(&it, &r.cur_time);
		else if (kv_is(&it, "epoch")) ok = kv_u64(&it, &r.epoch);
		else if (kv_is(&it, "peer_epoch")) ok = kv_u64(&it, &r.peer_epoch);
		else if (kv_is(&it, "peer_demoted_cycle")) ok = kv_u64(&it, &r.peer_demoted_cycle);
		else if (kv_is(&it, "common_snap")) ok = kv_name(&it, r.common_snap);
		else if (kv_is(&it, "sb_snap")) ok = kv_name(&it, r.sb_snap);
		else if (kv_is(&it, "reason")) ok = kv_text(&it, r.reason);
		else if (kv_is(&it, "paused")) ok = kv_bool(&it, &v1_paused);
		else if (kv_is(&it, "demoting")) ok = kv_bool(&it, &v1_demoting);
		else if (kv_is(&it, "peer_demoted")) ok = kv_bool(&it, &v1_peer_demoted);
		else if (kv_is(&it, "split_brain")) ok = kv_bool(&it, &v1_split);
		else if (kv_is(&it, "needs_resync")) ok = kv_bool(&it, &v1_needs);
		else if (kv_is(&it, "stats")) {
			char s[200];
			struct rec_stats st;
			char tail;
			ok = kv_str(&it, s, sizeof(s) - 1) &&
			     sscanf(s, "%" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
			            " %lf%c", &st.number, &st.extents, &st.data_bytes,
			            &st.zero_bytes, &st.wire_bytes, &st.seconds, &tail) == 6 &&
			     isfinite(st.seconds) && st.seconds >= 0 && st.seconds <= 1e9;
			if (ok) {
				r.stats = st;
				r.has_stats = true;
			}
		}
		/* unknown keys: written by a newer ferry, ignored */
	}
	if (!ok || bad)
		return -EINVAL;
	/* version 3 is the members' version, and only theirs */
	if ((version == 3) != (have_members && r.n_members > 0))
		return -EINVAL;
	if (!have_state) {
		/* version 1: the role and its booleans */
		if (role_primary)
			r.phase = v1_split ? PH_SPLIT_BRAIN : v1_demoting ? PH_DEMOTING
			          : v1_paused ? PH_PAUSED : PH_PRIMARY;
		else if (role_secondary)
			r.phase = v1_needs ? PH_NEEDS_RESYNC : v1_peer_demoted ? PH_PEER_DEMOTED
			          : PH_SECONDARY;
		else
			return -EINVAL;
	} else if ((role_primary && !pair_phase_primary(r.phase)) ||
	           (role_secondary && pair_phase_primary(r.phase))) {
		return -EINVAL; /* the role line, when present, must agree */
	}
	if (!r.volume[0])
		snprintf(r.volume, sizeof(r.volume), "%s", r.name);
	if (r.period_s < 1)
		r.period_s = REC_DEFAULT_PERIOD;
	if (!r.max_inflight)
		r.max_inflight = REC_DEFAULT_INFLIGHT;
	if (pair_rec_valid(&r, NULL, 0) < 0)
		return -EINVAL;
	*out = r;
	return 0;
}

/* snprintf into buf at *off; false once it no longer fits. */
static bool put(char *buf, size_t cap, size_t *off, const char *fmt, ...) PRINTF_LIKE(4, 5);
static bool put(char *buf, size_t cap, size_t *off, const char *fmt, ...)
{
	if (*off >= cap)
		return false;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + *off, cap - *off, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= cap - *off) {
		*off = cap;
		return false;
	}
	*off += (size_t)n;
	return true;
}

int pair_rec_format(const struct pair_rec *r, char *buf, size_t cap)
{
	size_t o = 0;
	/* The role line stays for readers (and tools) of version 1. */
	if (r->n_members > REC_MEMBERS_MAX)
		return -EINVAL;
	put(buf, cap, &o, "version=%d\nname=%s\nvolume=%s\nid=%s\nstate=%s\nrole=%s\n"
	    "peer=%s\nremote=%s\npeer_addr=%s\npeer_fixed=%d\n", r->n_members ? 3 : 2,
	    r->name, r->volume, r->id,
	    pair_phase_name(r->phase), pair_phase_primary(r->phase) ? "primary" : "secondary",
	    r->peer, r->remote, r->peer_addr, r->peer_fixed);
	put(buf, cap, &o, "period=%" PRIu64 "\nmax_inflight=%u\nbandwidth=%" PRIu64
	    "\ncompress=%d\npeer_timeout=%" PRIu64 "\nsplit_brain_policy=%s\n", r->period_s,
	    r->max_inflight, r->bandwidth, r->compress, r->peer_timeout_s,
	    repl_split_policy_name(r->split_policy));
	put(buf, cap, &o, "keep=%u\nkeep_for=%" PRIu64 "\npinned_cycle=%" PRIu64 "\n", r->keep,
	    r->keep_for_s, r->pinned_cycle);
	for (uint32_t i = 0; i < r->n_members; i++)
		put(buf, cap, &o, "%s%s%s", i ? " " : "members=", r->members[i],
		    i + 1 == r->n_members ? "\n" : "");
	put(buf, cap, &o, "created=%" PRIu64 "\nseed_snap=%s\nlast_cycle=%" PRIu64
	    "\nlast_snap=%s\nlast_time=%" PRIu64 "\ncur_cycle=%" PRIu64 "\ncur_snap=%s\n"
	    "cur_time=%" PRIu64 "\n", r->created, r->seed_snap, r->last_cycle, r->last_snap,
	    r->last_time, r->cur_cycle, r->cur_snap, r->cur_time);
	put(buf, cap, &o, "epoch=%" PRIu64 "\npeer_epoch=%" PRIu64 "\npeer_demoted_cycle=%"
	    PRIu64 "\ncommon_snap=%s\nsb_snap=%s\nreason=%s\n", r->epoch, r->peer_epoch,
	    r->peer_demoted_cycle, r->common_snap, r->sb_snap, r->reason);
	if (r->has_stats)
		put(buf, cap, &o, "stats=%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
		    " %.3f\n", r->stats.number, r->stats.extents, r->stats.data_bytes,
		    r->stats.zero_bytes, r->stats.wire_bytes, r->stats.seconds);
	return o >= cap ? -ENOSPC : (int)o;
}

/* ---- checkpoint --------------------------------------------------------- */
int ckpt_parse(const char *text, size_t len, struct ckpt *out)
{
	struct ckpt c;
	memset(&c, 0, sizeof(c));
	unsigned got = 0;
	bool ok = true, bad = false;
	struct kv it = { .p = text, .end = text + len };
	while (ok && kv_next(&it, &bad)) {
		if (kv_is(&it, "cycle")) { ok = kv_u64(&it, &c.cycle); got |= 1; }
		else if (kv_is(&it, "base")) { ok = kv_name(&it, c.base); got |= 2; }
		else if (kv_is(&it, "target")) { ok = kv_name(&it, c.target) && c.target[0]; got |= 4; }
		else if (kv_is(&it, "next_objno")) { ok = kv_u64(&it, &c.next_objno); got |= 8; }
		else if (kv_is(&it, "done_objects")) { ok = kv_u64(&it, &c.done_objects); got |= 16; }
	}
	if (!ok || bad || got != 31)
		return -EINVAL;
	*out = c;
	return 0;
}

int ckpt_format(const struct ckpt *c, char *buf, size_t cap)
{
	size_t o = 0;
	put(buf, cap, &o, "cycle=%" PRIu64 "\nbase=%s\ntarget=%s\nnext_objno=%" PRIu64
	    "\ndone_objects=%" PRIu64 "\n", c->cycle, c->base, c->target, c->next_objno,
	    c->done_objects);
	return o >= cap ? -ENOSPC : (int)o;
}

/* ---- the snapshot kept for re-pairing ------------------------------------ */
int pair_base_parse(const char *text, size_t len, struct pair_base *out)
{
	struct pair_base b;
	memset(&b, 0, sizeof(b));
	unsigned got = 0;
	bool ok = true, bad = false;
	struct kv it = { .p = text, .end = text + len };
	while (ok && kv_next(&it, &bad)) {
		if (kv_is(&it, "snap")) { ok = kv_name(&it, b.snap) && b.snap[0]; got |= 1; }
		else if (kv_is(&it, "pair_id")) { ok = kv_name(&it, b.pair_id) && b.pair_id[0]; got |= 2; }
		else if (kv_is(&it, "cycle")) { ok = kv_u64(&it, &b.cycle) && b.cycle; got |= 4; }
		else if (kv_is(&it, "time")) ok = kv_u64(&it, &b.time);
		else if (kv_is(&it, "peer_volume")) ok = kv_name(&it, b.peer_volume);
	}
	if (!ok || bad || got != 7)
		return -EINVAL;
	*out = b;
	return 0;
}

int pair_base_format(const struct pair_base *b, char *buf, size_t cap)
{
	size_t o = 0;
	put(buf, cap, &o, "snap=%s\npair_id=%s\ncycle=%" PRIu64 "\ntime=%" PRIu64
	    "\npeer_volume=%s\n", b->snap, b->pair_id, b->cycle, b->time, b->peer_volume);
	return o >= cap ? -ENOSPC : (int)o;
}

/* ---- the visible state ----------------------------------------------------- */
enum repl_state pair_state_of(const struct pair_rec *r, const struct pair_health *h)
{
	switch (r->phase) {
	case PH_SPLIT_BRAIN:
	case PH_NEEDS_RESYNC:
		return REPL_ST_SPLIT_BRAIN;
	case PH_RESYNCING:
		return h->running ? REPL_ST_RESYNCING : REPL_ST_SPLIT_BRAIN;
	case PH_DEMOTING:
		return REPL_ST_DEMOTING;
	case PH_PAUSED:
		return REPL_ST_PAUSED;
	default:
		break;
	}
	if (h->peer_down)
		return REPL_ST_PEER_DOWN;
	/* Three failures in a row: error even while the next try runs. */
	if (h->failures >= PAIR_ERROR_AFTER)
		return REPL_ST_ERROR;
	if (h->running)
		return r->last_cycle ? REPL_ST_SYNCING : REPL_ST_INITIAL_SYNC;
	if (h->failures)
		return REPL_ST_ERROR;
	return r->last_cycle ? REPL_ST_IDLE : REPL_ST_INITIAL_SYNC;
}
