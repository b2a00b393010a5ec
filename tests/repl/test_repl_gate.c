/* The admission policy of the replication port (src/repl/gate.c): who is
 * displaced when the budgets of not-yet-authenticated connections are
 * full, source keys, and a randomized run against a reference model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl/gate.h"

static void key_of(const char *peer, uint8_t k[GATE_KEY_LEN])
{
	assert_int_equal(gate_key(peer, k, NULL, 0), 0);
}

static void test_init(void **state)
{
	(void)state;
	struct gate g;
	assert_int_equal(gate_init(&g, 0, 1), -EINVAL);
	assert_int_equal(gate_init(&g, 4, 0), -EINVAL);
	assert_int_equal(gate_init(&g, GATE_MAX + 1, 1), -EINVAL);
	assert_int_equal(gate_init(&g, GATE_MAX, 8), 0);
	gate_free(&g);
}

static void test_key(void **state)
{
	(void)state;
	uint8_t a[GATE_KEY_LEN], b[GATE_KEY_LEN];
	char shown[64];
	assert_int_equal(gate_key("192.0.2.7:4000", a, shown, sizeof(shown)), 0);
	assert_string_equal(shown, "192.0.2.7");
	/* The port does not matter; the mapped form is the same source. */
	key_of("192.0.2.7:1", b);
	assert_memory_equal(a, b, GATE_KEY_LEN);
	key_of("[::ffff:192.0.2.7]:9", b);
	assert_memory_equal(a, b, GATE_KEY_LEN);
	key_of("192.0.2.8:4000", b);
	assert_memory_not_equal(a, b, GATE_KEY_LEN);
	/* One IPv6 host may own a /64: it is one source. */
	assert_int_equal(gate_key("[2001:db8:1:2::5]:7", a, shown, sizeof(shown)), 0);
	assert_string_equal(shown, "2001:db8:1:2::/64");
	key_of("[2001:db8:1:2:ffff::1]:7", b);
	assert_memory_equal(a, b, GATE_KEY_LEN);
	key_of("[2001:db8:1:3::5]:7", b);
	assert_memory_not_equal(a, b, GATE_KEY_LEN);
	gate_key_show(a, shown, 8);
	assert_int_equal(strlen(shown), 7); /* truncated, terminated */
	assert_int_equal(gate_key("nohost", a, NULL, 0), -EINVAL);
	assert_int_equal(gate_key("[::1", a, NULL, 0), -EINVAL);
	assert_int_equal(gate_key("example.com:1", a, NULL, 0), -EINVAL);
	assert_int_equal(gate_key(":1", a, NULL, 0), -EINVAL);
	assert_int_equal(gate_key(NULL, a, NULL, 0), -EINVAL);
}

/* One source over its budget displaces its own oldest, never another's. */
static void test_per_source(void **state)
{
	(void)state;
	struct gate g;
	uint8_t att[GATE_KEY_LEN], peer[GATE_KEY_LEN];
	key_of("10.0.0.66:1", att);
	key_of("10.0.0.1:1", peer);
	assert_int_equal(gate_init(&g, 16, 4), 0);
	uint64_t ev;
	gate_admit(&g, peer, 1000, 5, &ev);
	assert_int_equal(ev, 0);
	for (uint64_t id = 1; id <= 4; id++) {
		gate_admit(&g, att, id, id, &ev);
		assert_int_equal(ev, 0);
	}
	assert_int_equal(gate_count(&g, att), 4);
	for (uint64_t id = 5; id <= 100; id++) {
		gate_admit(&g, att, id, 10 + id, &ev);
		assert_int_equal(ev, id - 4); /* its own oldest */
		assert_int_equal(gate_count(&g, att), 4);
		assert_int_equal(gate_count(&g, peer), 1);
	}
	assert_int_equal(gate_leave(&g, 1000), 0);
	assert_int_equal(gate_leave(&g, 1000), -ENOENT);
	assert_int_equal(gate_leave(&g, 3), -ENOENT); /* displaced long ago */
	assert_int_equal(gate_count(&g, peer), 0);
	gate_free(&g);
}

/* A peer shares its address with an idle flood: once it has sent
 * something, only the idle ones are displaced, however fast they come; a
 * source of active ones only gives up its oldest. */
static void test_idle_first(void **state)
{
	(void)state;
	struct gate g;
	uint8_t k[GATE_KEY_LEN];
	key_of("127.0.0.1:1", k);
	assert_int_equal(gate_init(&g, 64, 8), 0);
	uint64_t ev;
	gate_admit(&g, k, 1, 1, &ev); /* the peer, first and oldest */
	gate_active(&g, 1);
	for (uint64_t id = 2; id < 10000; id++) {
		gate_admit(&g, k, id, id, &ev);
		assert_true(ev != 1);
	}
	assert_int_equal(gate_count(&g, k), 8);
	assert_int_equal(gate_leave(&g, 1), 0);
	/* Everyone active: the oldest goes. */
	for (uint64_t id = 20000; id < 20008; id++) {
		gate_admit(&g, k, id, id, &ev);
		gate_active(&g, id);
	}
	gate_admit(&g, k, 30000, 30000, &ev);
	assert_int_equal(ev, 20000);
	gate_active(&g, 424242); /* not there: nothing happens */
	assert_int_equal(gate_count(&g, k), 8);
	gate_free(&g);
}

/* All taken: the source that holds the most gives up its oldest, so the
 * newcomer of a small source (a peer) gets in and older small ones stay. */
static void test_global(void **state)
{
	(void)state;
	struct gate g;
	uint8_t k[8][GATE_KEY_LEN];
	char peer[32];
	for (int i = 0; i < 8; i++) {
		snprintf(peer, sizeof(peer), "10.0.1.%d:5", i + 1);
		key_of(peer, k[i]);
	}
	assert_int_equal(gate_init(&g, 8, 8), 0);
	uint64_t ev, t = 0;
	/* Source 0 holds 5, sources 1..3 one each. */
	for (uint64_t id = 1; id <= 5; id++) {
		gate_admit(&g, k[0], id, ++t, &ev);
		assert_int_equal(ev, 0);
	}
	for (int s = 1; s <= 3; s++) {
		gate_admit(&g, k[s], 100 + s, ++t, &ev);
		assert_int_equal(ev, 0);
	}
	/* Full: a peer from source 4 displaces source 0's oldest. */
	gate_admit(&g, k[4], 200, ++t, &ev);
	assert_int_equal(ev, 1);
	assert_int_equal(gate_count(&g, k[0]), 4);
	/* Churn from source 0 keeps displacing source 0. */
	for (uint64_t id = 6; id < 50; id++) {
		gate_admit(&g, k[0], id, ++t, &ev);
		assert_int_equal(ev, id - 4);
	}
	for (int s = 1; s <= 4; s++)
		assert_int_equal(gate_count(&g, k[s]), 1);
	/* Equal holders: the one whose oldest is oldest gives way. */
	gate_free(&g);
	assert_int_equal(gate_init(&g, 4, 4), 0);
	gate_admit(&g, k[1], 1, 10, &ev);
	gate_admit(&g, k[2], 2, 11, &ev);
	gate_admit(&g, k[1], 3, 12, &ev);
	gate_admit(&g, k[2], 4, 13, &ev);
	gate_admit(&g, k[3], 5, 14, &ev);
	assert_int_equal(ev, 1); /* k[1] and k[2] hold 2 each; k[1]'s oldest is older */
	gate_admit(&g, k[3], 6, 15, &ev);
	assert_int_equal(ev, 2); /* now k[2] holds the most */
	gate_free(&g);
}

/* Random admissions and leaves against a reference model (a list in
 * admission order): the budgets hold, and the displaced one is exactly the
 * one the rule names. */
struct ref {
	int src;
	uint64_t id, t;
	bool active;
};
static void test_model(void **state)
{
	(void)state;
	enum { MAX = 24, PER = 5, NSRC = 7 };
	uint8_t k[NSRC][GATE_KEY_LEN];
	char peer[32];
	for (int i = 0; i < NSRC; i++) {
		snprintf(peer, sizeof(peer), "[2001:db8:%d::1]:5", i + 1);
		key_of(peer, k[i]);
	}
	struct gate g;
	assert_int_equal(gate_init(&g, MAX, PER), 0);
	struct ref ref[MAX];
	int n = 0;
	uint64_t next = 1, t = 0;
	srand(14);
	for (int step = 0; step < 200000; step++) {
		t++;
		if (n && rand() % 5 == 0) {
			int i = rand() % n;
			gate_active(&g, ref[i].id);
			ref[i].active = true;
			continue;
		}
		if (n && rand() % 3 == 0) {
			int i = rand() % n;
			assert_int_equal(gate_leave(&g, ref[i].id), 0);
			memmove(&ref[i], &ref[i + 1], (size_t)(n - i - 1) * sizeof(ref[0]));
			n--;
			continue;
		}
		int s = rand() % 4 ? 0 : rand() % NSRC; /* source 0 floods */
		int cnt[NSRC] = { 0 };
		for (int i = 0; i < n; i++)
			cnt[ref[i].src]++;
		int victim_src = -1;
		if (cnt[s] >= PER) {
			victim_src = s;
		} else if (n >= MAX) {
			/* The most held; ties: the oldest oldest (ref is in
			 * admission order, so the first seen). */
			for (int i = 0; i < n; i++) {
				int c = ref[i].src;
				if (victim_src < 0 || cnt[c] > cnt[victim_src])
					victim_src = c;
			}
		}
		/* Within the source: the oldest idle one, else the oldest. */
		uint64_t want = 0;
		int vi = -1;
		for (int i = 0; victim_src >= 0 && i < n; i++)
			if (ref[i].src == victim_src && (vi < 0 || (ref[vi].active && !ref[i].active)))
				vi = i;
		if (vi >= 0) {
			want = ref[vi].id;
			memmove(&ref[vi], &ref[vi + 1], (size_t)(n - vi - 1) * sizeof(ref[0]));
			n--;
		}
		uint64_t ev;
		gate_admit(&g, k[s], next, t, &ev);
		assert_int_equal(ev, want);
		ref[n++] = (struct ref){ s, next, t, false };
		next++;
		assert_true(n <= MAX);
		for (int i = 0; i < NSRC; i++)
			assert_true(gate_count(&g, k[i]) <= PER);
	}
	assert_int_equal((int)g.n, n);
	gate_free(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init),
		cmocka_unit_test(test_key),
		cmocka_unit_test(test_per_source),
		cmocka_unit_test(test_idle_first),
		cmocka_unit_test(test_global),
		cmocka_unit_test(test_model),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
