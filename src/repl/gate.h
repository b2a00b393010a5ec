/* repl gate: who may hold a connection to the replication port before
 * authenticating.  A pure value (no I/O, no clock, no lock: the caller
 * passes the time and holds its own lock), so that the policy can be
 * tested alone (tests/repl/test_repl_gate.c).  Used by listen.c.
 *
 * Budgets: at most `max` connections that have not authenticated yet, at
 * most `per_source` of them from one source (an IPv4 address, or the /64
 * of an IPv6 one: one host may own a whole /64).  A new connection is
 * always admitted; when a budget is full, one that waits already goes:
 *   - its source is at per_source: one of that source;
 *   - all are taken: one of the source that holds the most;
 * within that source the oldest that has sent nothing yet, else the oldest
 * (gate_active).  So a flood only ever displaces the flooder's own
 * connections, and a peer that authenticates in milliseconds is never the
 * oldest of anything: holding or churning connections cannot keep it out,
 * and idle ones cannot even when they come from the peer's own address
 * at any rate.  Authenticated
 * connections are outside the gate (listen.c counts them separately).
 * Private to src/repl.
 */
#ifndef FERRY_REPL_GATE_H
#define FERRY_REPL_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GATE_KEY_LEN 16
#define GATE_MAX 1024                 /* the largest max gate_init takes */

struct gate_conn {
	uint8_t key[GATE_KEY_LEN];        /* the source */
	uint64_t id;                      /* the caller's handle, never 0 */
	uint64_t t;                       /* admitted at (caller's clock) */
	bool active;                      /* it has sent something */
};
struct gate_src {
	uint8_t key[GATE_KEY_LEN];
	unsigned n;                       /* its connections in the gate */
	uint64_t oldest_t;                /* admission time of the oldest */
};
struct gate {
	unsigned max, per_source;
	unsigned n, n_src;
	struct gate_conn *conn;           /* [max], unordered */
	struct gate_src *src;             /* [max], unordered */
};

/* 0, -EINVAL (max or per_source 0, max > GATE_MAX) or -ENOMEM.  The
 * arrays are owned by g (gate_free). */
int gate_init(struct gate *g, unsigned max, unsigned per_source);
void gate_free(struct gate *g);

/* The source key of a peer "HOST:PORT" / "[V6]:PORT" (an IPv4-mapped IPv6
 * address is its IPv4 address).  shown (may be NULL) gets the source as
 * logs show it ("192.0.2.7", "2001:db8:1:2::/64").  0 or -EINVAL. */
int gate_key(const char *peer, uint8_t key[GATE_KEY_LEN], char *shown, size_t shown_len);
/* The source as logs show it (see gate_key), into shown (NUL-terminated,
 * truncated to shown_len). */
void gate_key_show(const uint8_t key[GATE_KEY_LEN], char *shown, size_t shown_len);

/* Admits connection id (not in the gate yet) from key at time now.  When
 * a budget was full, *evicted is the id of the connection that had to
 * make room (it left the gate: the caller closes it), else 0. */
void gate_admit(struct gate *g, const uint8_t key[GATE_KEY_LEN], uint64_t id, uint64_t now,
                uint64_t *evicted);
/* id has sent its first bytes: displaced only after its source's idle
 * ones.  No-op when id is not in the gate. */
void gate_active(struct gate *g, uint64_t id);
/* id leaves the gate (authenticated, failed, closed).  0, or -ENOENT when
 * it is not there (it was evicted). */
int gate_leave(struct gate *g, uint64_t id);
/* Connections of source key in the gate. */
unsigned gate_count(const struct gate *g, const uint8_t key[GATE_KEY_LEN]);

#endif
