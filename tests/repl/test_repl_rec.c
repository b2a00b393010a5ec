/* The pair record (src/repl/rec.c) and the transition function
 * (pair_change, src/repl/pair.c): every legal and every illegal phase
 * transition, the invariants a change must keep, the codec (round trip,
 * version 1 files, damaged files), the derived visible state, and that a
 * change that cannot be saved changes nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "repl/pair.h"

/* A valid record in phase ph. */
static struct pair_rec rec_in(enum pair_phase ph)
{
	struct pair_rec r;
	pair_rec_init(&r);
	r.phase = ph;
	strcpy(r.name, "db");
	strcpy(r.volume, "db");
	strcpy(r.id, "0123456789abcdef0123456789abcdef");
	strcpy(r.peer, "127.0.0.1:7450");
	strcpy(r.remote, "db");
	r.created = 1000;
	r.last_cycle = 4;
	strcpy(r.last_snap, "ferry.db.000004");
	r.last_time = 2000;
	if (pair_phase_primary(ph)) {
		r.cur_cycle = 5;
		strcpy(r.cur_snap, "ferry.db.000005");
		r.cur_time = 2100;
	}
	r.epoch = 2;
	return r;
}

/* The table of docs/DESIGN.md, written out again on purpose: the test
 * holds the code to the documented rules. */
static const char *const legal_moves[] = {
	"none>primary", "none>secondary",
	"primary>primary", "primary>paused", "primary>demoting", "primary>split-brain",
	"primary>none",
	"paused>paused", "paused>primary", "paused>demoting", "paused>split-brain", "paused>none",
	"demoting>demoting", "demoting>secondary", "demoting>split-brain",
	"demoting>needs-resync", "demoting>none",
	"split-brain>split-brain", "split-brain>resyncing", "split-brain>needs-resync",
	"split-brain>none",
	"resyncing>resyncing", "resyncing>primary", "resyncing>split-brain", "resyncing>none",
	"secondary>secondary", "secondary>peer-demoted", "secondary>primary", "secondary>none",
	"peer-demoted>peer-demoted", "peer-demoted>primary", "peer-demoted>secondary",
	"peer-demoted>none",
	"needs-resync>needs-resync", "needs-resync>secondary", "needs-resync>none",
};

static bool expected_legal(enum pair_phase a, enum pair_phase b)
{
	char m[64];
	snprintf(m, sizeof(m), "%s>%s", pair_phase_name(a), pair_phase_name(b));
	for (size_t i = 0; i < ARRAY_SIZE(legal_moves); i++)
		if (!strcmp(legal_moves[i], m))
			return true;
	return false;
}

static void test_every_transition(void **st)
{
	(void)st;
	unsigned legal = 0, illegal = 0;
	for (int a = PH_NONE; a < PH_COUNT; a++) {
		for (int b = PH_NONE; b < PH_COUNT; b++) {
			struct pair_rec from = rec_in((enum pair_phase)a);
			struct pair_rec to = rec_in((enum pair_phase)b);
			char why[300] = "";
			int rc = pair_rec_check(a == PH_NONE ? NULL : &from, &to, why, sizeof(why));
			bool want = expected_legal((enum pair_phase)a, (enum pair_phase)b);
			assert_int_equal(pair_phase_legal((enum pair_phase)a, (enum pair_phase)b), want);
			if (want) {
				if (rc != 0)
					fail_msg("%s -> %s refused: %s", pair_phase_name(a),
					         pair_phase_name(b), why);
				legal++;
			} else {
				if (rc != -EINVAL)
					fail_msg("%s -> %s accepted", pair_phase_name(a), pair_phase_name(b));
				assert_non_null(strstr(why, "illegal transition"));
				assert_non_null(strstr(why, pair_phase_name(a)));
				illegal++;
			}
		}
	}
	assert_int_equal(legal, ARRAY_SIZE(legal_moves));
	assert_int_equal(legal + illegal, PH_COUNT * PH_COUNT);
	/* out of range phases are never legal */
	assert_false(pair_phase_legal(PH_COUNT, PH_PRIMARY));
	assert_false(pair_phase_legal(PH_PRIMARY, (enum pair_phase)-1));
}

static void refused(const struct pair_rec *a, const struct pair_rec *b, const char *why_part)
{
	char why[300] = "";
	assert_int_equal(pair_rec_check(a, b, why, sizeof(why)), -EINVAL);
	if (!strstr(why, why_part))
		fail_msg("reason '%s' lacks '%s'", why, why_part);
}

static void test_invariants(void **st)
{
	(void)st;
	struct pair_rec a = rec_in(PH_PRIMARY), b;
	b = a;
	strcpy(b.name, "other");
	refused(&a, &b, "never change");
	b = a;
	strcpy(b.id, "feedface");
	refused(&a, &b, "never change");
	b = a;
	strcpy(b.volume, "vol2");
	refused(&a, &b, "never change");
	b = a;
	b.epoch = 1;
	refused(&a, &b, "epoch would go back");
	b = a;
	b.last_cycle = 3;
	strcpy(b.last_snap, "ferry.db.000003");
	refused(&a, &b, "would go back");
	b = a;
	b.period_s = 0;
	refused(&a, &b, "period");
	b = a;
	b.max_inflight = 0;
	refused(&a, &b, "max-inflight");
	b = a;
	b.last_snap[0] = '\0';
	refused(&a, &b, "disagree");
	b = a;
	b.cur_cycle = 4;
	strcpy(b.cur_snap, "ferry.db.000004");
	refused(&a, &b, "not after");
	b = a;
	strcpy(b.cur_snap, "../x");
	refused(&a, &b, "bad snapshot");
	b = a;
	strcpy(b.reason, "a\nb");
	refused(&a, &b, "control character");
	b = a;
	b.remote[0] = '\0';
	refused(&a, &b, "secondary's volume");
	/* a secondary never has a cycle in flight */
	struct pair_rec s = rec_in(PH_SECONDARY), t = s;
	t.cur_cycle = 5;
	strcpy(t.cur_snap, "ferry.db.000005");
	refused(&s, &t, "no cycle in flight");
	/* a legal change of other fields */
	b = a;
	b.period_s = 5;
	b.peer_timeout_s = 20;
	b.split_policy = REPL_SB_KEEP_WRITING;
	assert_int_equal(pair_rec_check(&a, &b, NULL, 0), 0);
	/* removal needs a record */
	b.phase = PH_NONE;
	assert_int_equal(pair_rec_check(&a, &b, NULL, 0), 0);
	assert_int_equal(pair_rec_check(NULL, &b, NULL, 0), -EINVAL);
	assert_int_equal(pair_rec_check(NULL, NULL, NULL, 0), -EINVAL);
}

static void test_codec(void **st)
{
	(void)st;
	struct pair_rec a = rec_in(PH_SPLIT_BRAIN), b;
	a.has_stats = true;
	a.stats = (struct rec_stats){ 4, 10, 4096, 8192, 20000, 1.25 };
	strcpy(a.common_snap, "ferry.db.000003");
	strcpy(a.sb_snap, "split-brain-123");
	strcpy(a.reason, "the peer 127.0.0.1:1 is primary at epoch 3");
	a.peer_epoch = 3;
	a.peer_timeout_s = 45;
	a.bandwidth = 1 << 20;
	a.compress = true;
	a.split_policy = REPL_SB_KEEP_WRITING;
	a.peer_fixed = true;
	strcpy(a.peer_addr, "[::1]:7450");
	char buf[REC_FILE_MAX], buf2[REC_FILE_MAX];
	int n = pair_rec_format(&a, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(pair_rec_parse(buf, (size_t)n, &b), 0);
	assert_true(pair_rec_equal(&a, &b));
	assert_int_equal(pair_rec_format(&b, buf2, sizeof(buf2)), n);
	assert_memory_equal(buf, buf2, (size_t)n);
	assert_int_equal(pair_rec_format(&a, buf, 100), -ENOSPC);
	/* version 1: the role and its booleans become one phase */
	struct {
		const char *lines;
		enum pair_phase ph;
	} v1[] = {
		{ "role=primary\n", PH_PRIMARY },
		{ "role=primary\npaused=1\n", PH_PAUSED },
		{ "role=primary\ndemoting=1\n", PH_DEMOTING },
		{ "role=primary\nsplit_brain=1\ndemoting=1\n", PH_SPLIT_BRAIN },
		{ "role=secondary\n", PH_SECONDARY },
		{ "role=secondary\npeer_demoted=1\n", PH_PEER_DEMOTED },
		{ "role=secondary\nsplit_brain=1\nneeds_resync=1\n", PH_NEEDS_RESYNC },
	};
	for (size_t i = 0; i < ARRAY_SIZE(v1); i++) {
		char t[512];
		int k = snprintf(t, sizeof(t), "version=1\nname=db\nid=abc123\n%sremote=db\n"
		                 "period=0\nmax_inflight=0\nlast_cycle=2\nlast_snap=ferry.db.000002\n",
		                 v1[i].lines);
		assert_int_equal(pair_rec_parse(t, (size_t)k, &b), 0);
		assert_int_equal(b.phase, v1[i].ph);
		assert_string_equal(b.volume, "db");
		assert_int_equal(b.period_s, REC_DEFAULT_PERIOD);     /* defaults filled */
		assert_int_equal(b.max_inflight, REC_DEFAULT_INFLIGHT);
	}
	/* damaged files are refused whole */
	const char *bad[] = {
		"version=2\nname=db\nstate=primary\nremote=db\n",              /* no id */
		"version=2\nname=db\nid=x\nstate=flying\nremote=db\n",         /* no such state */
		"version=2\nname=db\nid=x\nstate=secondary\nrole=primary\n",   /* disagree */
		"version=3\nname=db\nid=x\nstate=primary\nremote=db\n",        /* from the future */
		"version=2\nname=../db\nid=x\nstate=primary\nremote=db\n",     /* escapes */
		"version=2\nname=db\nid=x\nstate=primary\nremote=db\nperiod=12x\n",
		"version=2\nname=db\nid=x\nstate=primary\nremote=db\ncompress=2\n",
		"version=2\nname=db\nid=x\nstate=primary\nremote=db\nstats=1 2 3 4 5 nan\n",
		"version=2\nname=db\nid=x\nstate=primary\nremote=db\nlast_cycle=3\n",
		"",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		if (pair_rec_parse(bad[i], strlen(bad[i]), &b) == 0)
			fail_msg("accepted damaged record %zu", i);
	char nul[] = "version=2\nname=db\0x\nid=x\nstate=primary\nremote=db\n";
	assert_int_equal(pair_rec_parse(nul, sizeof(nul) - 1, &b), -EINVAL);

	/* checkpoint and kept snapshot */
	struct ckpt c = { 7, "ferry.db.000006", "ferry.db.000007", 12, 9 }, c2;
	n = ckpt_format(&c, buf, sizeof(buf));
	assert_int_equal(ckpt_parse(buf, (size_t)n, &c2), 0);
	assert_int_equal(c2.next_objno, 12);
	assert_string_equal(c2.target, "ferry.db.000007");
	assert_int_equal(ckpt_parse("cycle=1\nbase=\n", 14, &c2), -EINVAL);
	struct pair_base pb = { "ferry.db.000009", "abc", 9, 1234, "dbr" }, pb2;
	n = pair_base_format(&pb, buf, sizeof(buf));
	assert_int_equal(pair_base_parse(buf, (size_t)n, &pb2), 0);
	assert_string_equal(pb2.snap, pb.snap);
	assert_int_equal(pb2.cycle, 9);
	assert_string_equal(pb2.peer_volume, "dbr");
	assert_int_equal(pair_base_parse("snap=x\ncycle=0\npair_id=a\n", 24, &pb2), -EINVAL);
}

/* A group pair's members (issue 12): a record without them is written as
 * before (version 2, no members line, byte for byte); with them as version
 * 3; they travel through the file in order; bad lists are refused. */
static void test_members(void **st)
{
	(void)st;
	struct pair_rec a = rec_in(PH_SECONDARY), b;
	char buf[REC_FILE_MAX];
	int n = pair_rec_format(&a, buf, sizeof(buf));
	assert_true(n > 0);
	assert_non_null(strstr(buf, "version=2\n"));
	assert_null(strstr(buf, "members="));
	assert_int_equal(pair_rec_parse(buf, (size_t)n, &b), 0);
	assert_int_equal(b.n_members, 0);
	a.n_members = 3;
	snprintf(a.members[0], sizeof(a.members[0]), "data");
	snprintf(a.members[1], sizeof(a.members[1]), "log");
	snprintf(a.members[2], sizeof(a.members[2]), "a.b-c_d");
	n = pair_rec_format(&a, buf, sizeof(buf));
	assert_true(n > 0);
	assert_non_null(strstr(buf, "version=3\n"));
	assert_non_null(strstr(buf, "\nmembers=data log a.b-c_d\n"));
	assert_int_equal(pair_rec_parse(buf, (size_t)n, &b), 0);
	assert_true(pair_rec_equal(&a, &b));
	b.n_members = 2;
	assert_false(pair_rec_equal(&a, &b));
	b = a;
	snprintf(b.members[1], sizeof(b.members[1]), "log2");
	assert_false(pair_rec_equal(&a, &b));
	/* the most members fit a record */
	a.n_members = REC_MEMBERS_MAX;
	for (unsigned i = 0; i < REC_MEMBERS_MAX; i++)
		snprintf(a.members[i], sizeof(a.members[i]), "%.56s%08u",
		         "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm", i);
	n = pair_rec_format(&a, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(pair_rec_parse(buf, (size_t)n, &b), 0);
	assert_true(pair_rec_equal(&a, &b));
	char why[128];
	b = a;
	snprintf(b.members[5], sizeof(b.members[5]), "%s", b.members[2]);
	assert_int_equal(pair_rec_valid(&b, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "twice"));
	b = a;
	b.n_members = REC_MEMBERS_MAX + 1;
	assert_int_equal(pair_rec_valid(&b, why, sizeof(why)), -EINVAL);
	b = a;
	b.members[0][0] = '.';
	assert_int_equal(pair_rec_valid(&b, why, sizeof(why)), -EINVAL);
	const char *bad[] = {
		"version=3\nname=g\nvolume=g\nid=x\nstate=secondary\n",   /* 3 without members */
		"version=2\nname=g\nvolume=g\nid=x\nstate=secondary\nmembers=a b\n", /* members in 2 */
		"version=3\nname=g\nvolume=g\nid=x\nstate=secondary\nmembers=\n",
		"version=3\nname=g\nvolume=g\nid=x\nstate=secondary\nmembers=a  b\n",
		"version=3\nname=g\nvolume=g\nid=x\nstate=secondary\nmembers=a b \n",
		"version=3\nname=g\nvolume=g\nid=x\nstate=secondary\nmembers= a\n",
		"version=3\nname=g\nvolume=g\nid=x\nstate=secondary\nmembers=a a\n",
		"version=3\nname=g\nvolume=g\nid=x\nstate=secondary\nmembers=a ../b\n",
		"version=4\nname=g\nvolume=g\nid=x\nstate=secondary\nmembers=a\n",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		if (pair_rec_parse(bad[i], strlen(bad[i]), &b) == 0)
			fail_msg("accepted bad members %zu", i);
	const char *good = "version=3\nname=g\nvolume=g\nid=x\nstate=secondary\nmembers=a b\n";
	assert_int_equal(pair_rec_parse(good, strlen(good), &b), 0);
	assert_int_equal(b.n_members, 2);
	assert_string_equal(b.members[1], "b");
}

/* Recovery points: the retention fields travel through the file, files
 * of before mean keep 1, bad values are refused, and the retention rule. */
static void test_points(void **st)
{
	(void)st;
	struct pair_rec a = rec_in(PH_SECONDARY), b;
	assert_int_equal(a.keep, 1); /* pair_rec_init: today's behaviour */
	a.keep = 5;
	a.keep_for_s = 7 * 86400;
	a.pinned_cycle = 3;
	char buf[REC_FILE_MAX];
	int n = pair_rec_format(&a, buf, sizeof(buf));
	assert_true(n > 0);
	assert_non_null(strstr(buf, "keep=5\nkeep_for=604800\npinned_cycle=3\n"));
	assert_int_equal(pair_rec_parse(buf, (size_t)n, &b), 0);
	assert_true(pair_rec_equal(&a, &b));
	assert_int_equal(b.keep, 5);
	assert_int_equal(b.keep_for_s, 604800);
	assert_int_equal(b.pinned_cycle, 3);
	b.keep = 4;
	assert_false(pair_rec_equal(&a, &b));
	b = a;
	b.pinned_cycle = 0;
	assert_false(pair_rec_equal(&a, &b));
	/* a file of before: keep 1, nothing pinned */
	const char *old = "version=2\nname=db\nid=x\nstate=secondary\nremote=db\n";
	assert_int_equal(pair_rec_parse(old, strlen(old), &b), 0);
	assert_int_equal(b.keep, 1);
	assert_int_equal(b.keep_for_s, 0);
	assert_int_equal(b.pinned_cycle, 0);
	const char *bad[] = {
		"version=2\nname=db\nid=x\nstate=secondary\nkeep=0\n",
		"version=2\nname=db\nid=x\nstate=secondary\nkeep=10001\n",
		"version=2\nname=db\nid=x\nstate=secondary\nkeep=3x\n",
		"version=2\nname=db\nid=x\nstate=secondary\nkeep_for=-1\n",
		"version=2\nname=db\nid=x\nstate=secondary\npinned_cycle=x\n",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		if (pair_rec_parse(bad[i], strlen(bad[i]), &b) == 0)
			fail_msg("accepted bad retention %zu", i);
	char why[128];
	b = a;
	b.keep = 0;
	assert_int_equal(pair_rec_valid(&b, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "keep"));
	b.keep = REC_KEEP_MAX;
	assert_int_equal(pair_rec_valid(&b, why, sizeof(why)), 0);

	/* retention: newer = the synced points after this one */
	struct pair_rec s = rec_in(PH_SECONDARY);
	assert_true(pair_point_kept(&s, 4, 0, 0));      /* the last synced: always */
	assert_false(pair_point_kept(&s, 3, 1, 0));     /* keep 1: today's behaviour */
	s.keep = 3;
	assert_true(pair_point_kept(&s, 3, 1, 0));
	assert_true(pair_point_kept(&s, 2, 2, 0));
	assert_false(pair_point_kept(&s, 1, 3, 0));
	s.keep_for_s = 3600;                            /* or younger than an hour */
	assert_true(pair_point_kept(&s, 1, 3, 3599));
	assert_false(pair_point_kept(&s, 1, 3, 3600));
	s.pinned_cycle = 1;                             /* promote --at left it */
	assert_true(pair_point_kept(&s, 1, 3, 1000000));
	struct pair_rec p = rec_in(PH_PRIMARY);         /* a primary: the last synced only */
	p.keep = 10;
	p.keep_for_s = 3600;
	assert_true(pair_point_kept(&p, 4, 0, 0));
	assert_false(pair_point_kept(&p, 3, 1, 0));
	p.pinned_cycle = 3;
	assert_true(pair_point_kept(&p, 3, 1, 0));
	assert_false(pair_point_kept(&p, 0, 1, 0));     /* not a cycle: never pinned */

	/* names of points */
	assert_int_equal(snap_cycle_of("ferry.db.000042"), 42);
	assert_int_equal(snap_cycle_of("ferry.db."), 0);
	assert_int_equal(snap_cycle_of("nodot"), 0);
	assert_int_equal(snap_cycle_of("ferry.db.12a"), 0);
	assert_int_equal(snap_cycle_of("ferry.db.9999999999999999999"), 0); /* too long */
	struct pair_rec q = rec_in(PH_SECONDARY);
	strcpy(q.remote, "prod");
	assert_true(pair_snap_is_point(&q, "ferry.db.000001"));   /* its own cycles */
	assert_true(pair_snap_is_point(&q, "ferry.prod.000007")); /* the primary's */
	assert_false(pair_snap_is_point(&q, "ferry.other.000007"));
	assert_false(pair_snap_is_point(&q, "mysnap"));
}

static void test_state_of(void **st)
{
	(void)st;
	struct pair_health ok = { 0 }, run = { .running = true }, one = { .failures = 1 },
	                   three = { .failures = 3 }, three_run = { .running = true, .failures = 3 },
	                   down = { .peer_down = true };
	struct pair_rec r = rec_in(PH_PRIMARY);
	assert_int_equal(pair_state_of(&r, &ok), REPL_ST_IDLE);
	assert_int_equal(pair_state_of(&r, &run), REPL_ST_SYNCING);
	assert_int_equal(pair_state_of(&r, &one), REPL_ST_ERROR);
	assert_int_equal(pair_state_of(&r, &three), REPL_ST_ERROR);
	/* three failures in a row: error even while the next try runs */
	assert_int_equal(pair_state_of(&r, &three_run), REPL_ST_ERROR);
	assert_int_equal(pair_state_of(&r, &down), REPL_ST_PEER_DOWN);
	r.last_cycle = 0;
	r.last_snap[0] = '\0';
	assert_int_equal(pair_state_of(&r, &ok), REPL_ST_INITIAL_SYNC);
	assert_int_equal(pair_state_of(&r, &run), REPL_ST_INITIAL_SYNC);
	r = rec_in(PH_PAUSED);
	assert_int_equal(pair_state_of(&r, &down), REPL_ST_PAUSED);
	r = rec_in(PH_DEMOTING);
	assert_int_equal(pair_state_of(&r, &run), REPL_ST_DEMOTING);
	r = rec_in(PH_SPLIT_BRAIN);
	assert_int_equal(pair_state_of(&r, &down), REPL_ST_SPLIT_BRAIN);
	r = rec_in(PH_RESYNCING);
	assert_int_equal(pair_state_of(&r, &ok), REPL_ST_SPLIT_BRAIN);
	assert_int_equal(pair_state_of(&r, &run), REPL_ST_RESYNCING);
	r = rec_in(PH_SECONDARY);
	assert_int_equal(pair_state_of(&r, &ok), REPL_ST_IDLE);
	assert_int_equal(pair_state_of(&r, &run), REPL_ST_SYNCING);
	assert_int_equal(pair_state_of(&r, &down), REPL_ST_PEER_DOWN);
	r = rec_in(PH_NEEDS_RESYNC);
	assert_int_equal(pair_state_of(&r, &ok), REPL_ST_SPLIT_BRAIN);
	for (int s = 0; s < REPL_ST_COUNT; s++)
		assert_string_not_equal(repl_state_name((enum repl_state)s), "?");
	assert_string_equal(repl_state_name(REPL_ST_PEER_DOWN), "peer-down");
}

static void test_timeout_and_fence(void **st)
{
	(void)st;
	struct pair_rec r = rec_in(PH_PRIMARY);
	r.period_s = 5;
	assert_int_equal(pair_rec_peer_timeout(&r), 30);
	r.period_s = 60;
	assert_int_equal(pair_rec_peer_timeout(&r), 180);
	r.peer_timeout_s = 7;
	assert_int_equal(pair_rec_peer_timeout(&r), 7);
	r = rec_in(PH_SPLIT_BRAIN);
	r.peer_epoch = r.epoch + 1;
	assert_true(pair_rec_fenced(&r));
	r.split_policy = REPL_SB_KEEP_WRITING;
	assert_false(pair_rec_fenced(&r));
	r.split_policy = REPL_SB_FENCE;
	r.peer_epoch = r.epoch - 1; /* we are the newer primary */
	assert_false(pair_rec_fenced(&r));
	r = rec_in(PH_PRIMARY);
	r.peer_epoch = 99;
	assert_false(pair_rec_fenced(&r));
	assert_false(pair_rec_read_only(&r));
	r.phase = PH_DEMOTING;
	assert_true(pair_rec_read_only(&r));
	r = rec_in(PH_PEER_DEMOTED);
	assert_true(pair_rec_read_only(&r));
}

/* ---- the transition function with its file and notifications ---------- */
static char g_notified[8][REC_NAME_MAX + 1];
static int g_n_notified;

static void on_ro(void *ctx, const char *vol)
{
	(void)ctx;
	snprintf(g_notified[g_n_notified++ % 8], REC_NAME_MAX + 1, "%s", vol);
}

static void read_rec(const char *dir, struct pair_rec *out)
{
	char path[512], *text;
	size_t len;
	snprintf(path, sizeof(path), "%s/db.pair", dir);
	assert_int_equal(read_file(path, REC_FILE_MAX, &text, &len), 0);
	assert_int_equal(pair_rec_parse(text, len, out), 0);
	free(text);
}

static void test_pair_change(void **st)
{
	(void)st;
	char dir[] = "/tmp/ferry-life-rec.XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct repl *r = calloc(1, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	snprintf(r->pairs_dir, sizeof(r->pairs_dir), "%s", dir);
	r->on_ro_change = on_ro;
	struct pair *p = pair_alloc(r);
	p->rec = rec_in(PH_PRIMARY);
	char err[300];
	pthread_mutex_lock(&r->mu);
	assert_int_equal(pair_add(r, p, err, sizeof(err)), 0);
	pairs_unlock(r);
	struct pair_rec disk;
	read_rec(dir, &disk);
	assert_true(pair_rec_equal(&disk, &p->rec));
	assert_int_equal(p->state, REPL_ST_IDLE);

	/* legal: demote's intent; the volume turns read-only, notified after
	 * the lock is released */
	g_n_notified = 0;
	struct pair_rec next = p->rec;
	next.phase = PH_DEMOTING;
	pthread_mutex_lock(&r->mu);
	assert_int_equal(pair_change(p, &next, "test", err, sizeof(err)), 0);
	assert_int_equal(g_n_notified, 0);
	pairs_unlock(r);
	assert_int_equal(g_n_notified, 1);
	assert_string_equal(g_notified[0], "db");
	assert_int_equal(p->state, REPL_ST_DEMOTING);
	read_rec(dir, &disk);
	assert_int_equal(disk.phase, PH_DEMOTING);

	/* illegal: a demoting primary cannot resume; nothing changes */
	next = p->rec;
	next.phase = PH_PRIMARY;
	next.period_s = 5;
	pthread_mutex_lock(&r->mu);
	assert_int_equal(pair_change(p, &next, NULL, err, sizeof(err)), -EINVAL);
	pairs_unlock(r);
	assert_non_null(strstr(err, "illegal transition demoting -> primary"));
	assert_int_equal(p->rec.phase, PH_DEMOTING);
	assert_int_equal(p->rec.period_s, REC_DEFAULT_PERIOD);
	read_rec(dir, &disk);
	assert_true(pair_rec_equal(&disk, &p->rec));

	/* a save that fails (the directory is gone) changes nothing either:
	 * no field of the record moves, and the notification does not come */
	struct pair_rec before = p->rec;
	snprintf(r->pairs_dir, sizeof(r->pairs_dir), "%s/gone", dir);
	next = p->rec;
	next.phase = PH_SECONDARY;
	next.cur_cycle = 0;
	next.cur_snap[0] = '\0';
	g_n_notified = 0;
	pthread_mutex_lock(&r->mu);
	assert_true(pair_change(p, &next, NULL, err, sizeof(err)) < 0);
	pairs_unlock(r);
	assert_true(pair_rec_equal(&p->rec, &before));
	assert_int_equal(p->state, REPL_ST_DEMOTING);
	assert_int_equal(g_n_notified, 0);
	snprintf(r->pairs_dir, sizeof(r->pairs_dir), "%s", dir);

	/* the same change once the directory is back */
	pthread_mutex_lock(&r->mu);
	assert_int_equal(pair_change(p, &next, NULL, err, sizeof(err)), 0);
	pairs_unlock(r);
	assert_int_equal(p->rec.phase, PH_SECONDARY);

	/* removal deletes the file and makes the volume writable again */
	next = p->rec;
	next.phase = PH_NONE;
	g_n_notified = 0;
	pthread_mutex_lock(&r->mu);
	assert_int_equal(pair_change(p, &next, "rm", err, sizeof(err)), 0);
	pairs_unlock(r);
	assert_int_equal(g_n_notified, 1);
	char path[512];
	snprintf(path, sizeof(path), "%s/db.pair", dir);
	assert_int_not_equal(access(path, F_OK), 0);

	pair_put(p);
	free(r->ro_queue);
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	free(r);
	rm_rf(dir);
}

int main(void)
{
	log_set_level(LOG_ERROR + (getenv("FERRY_TEST_VERBOSE") ? 3 : 0));
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_transition),
		cmocka_unit_test(test_invariants),
		cmocka_unit_test(test_codec),
		cmocka_unit_test(test_points),
		cmocka_unit_test(test_members),
		cmocka_unit_test(test_state_of),
		cmocka_unit_test(test_timeout_and_fence),
		cmocka_unit_test(test_pair_change),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
