/* repl engine internals shared by engine*.c.  Private to src/repl. */
#ifndef FERRY_REPL_ENGINE_H
#define FERRY_REPL_ENGINE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "repl/link.h"
#include "repl/repl.h"

#define PAIR_ID_LEN 32
#define REPL_DEFAULT_PERIOD 60
#define REPL_DEFAULT_INFLIGHT 8
#define REPL_WINDOW_BYTES (32ull << 20)  /* byte bound of the read window */
#define REPL_BACKOFF_MAX_S 60
/* A primary between cycles checks its peer this often (ROLE CHECK), so a
 * split brain or a dead peer shows within seconds, not at the next period. */
#define REPL_HEARTBEAT_S 10
/* Call-back links (a secondary without --listen dials its primary and
 * offers the connection): connections a secondary keeps offered per pair,
 * how many a primary holds, and how long either keeps an unused one.  The
 * primary's limit is below the secondary's so that it never hands out a
 * link the secondary is about to give up on. */
#define CB_SLOTS 2
#define PARK_MAX 4
#define PARK_IDLE_MS 45000
#define PARK_USE_MS 30000

struct cycle_stats {
	uint64_t number;
	uint64_t extents;
	uint64_t data_bytes;   /* changed bytes sent as data */
	uint64_t zero_bytes;   /* changed bytes sent as zero records */
	uint64_t wire_bytes;   /* bytes on the link this cycle, both ways */
	double seconds;
};

struct pair {
	struct repl *r;
	struct pair *next;
	/* persisted (POOL/pairs/NAME.pair) */
	char name[STORE_NAME_MAX + 1];    /* local volume */
	char id[WIRE_NAME_MAX + 1];
	enum repl_role role;
	char peer[WIRE_TEXT_MAX + 1];     /* primary: where to connect; secondary: origin */
	char remote[STORE_NAME_MAX + 1];  /* primary: secondary volume; secondary: primary pair */
	uint64_t period_s;
	uint32_t max_inflight;
	uint64_t bandwidth;
	bool compress;
	bool paused;
	uint64_t created;
	char seed_snap[STORE_NAME_MAX + 1]; /* secondary: empty base of the initial sync */
	uint64_t last_cycle;              /* 0 = never synced */
	char last_snap[STORE_NAME_MAX + 1];
	uint64_t last_time;               /* primary's snapshot time of last_cycle */
	uint64_t cur_cycle;               /* primary: cycle in flight (0 = none) */
	char cur_snap[STORE_NAME_MAX + 1];
	uint64_t cur_time;
	struct cycle_stats stats;         /* of the last committed cycle */
	bool has_stats;
	/* role changes (persisted too) */
	uint64_t epoch;                   /* bumped by promote; exchanged in ROLE */
	bool demoting;                    /* primary: demote asked, writes refused */
	bool peer_demoted;                /* secondary: the primary demoted ... */
	uint64_t peer_demoted_cycle;      /* ... with this cycle last synced */
	char peer_addr[WIRE_TEXT_MAX + 1];/* the other site's --listen, as it said */
	bool peer_fixed;                  /* peer_addr is the operator's --peer:
	                                   * never replaced by what the peer says */
	bool split_brain;                 /* both sides were primary */
	char common_snap[STORE_NAME_MAX + 1]; /* newest snapshot both sides hold */
	bool needs_resync;                /* demoted after a split brain */
	char sb_snap[STORE_NAME_MAX + 1]; /* split-brain-<time>: our divergence */

	/* runtime, under r->mu */
	bool running;                     /* a cycle transfers (either role) */
	uint64_t done_bytes, total_bytes;
	char error[512];                  /* last failure, "" when fine */
	unsigned failures;                /* consecutive, for the backoff */
	uint64_t next_due_ns;             /* monotonic time of the next cycle */
	uint64_t next_probe_ns;           /* primary: next heartbeat (ROLE CHECK) */
	char peer_err[256];               /* primary: why the last contact failed */
	uint64_t sync_req;                /* generation of `pair sync` requests */
	uint64_t sync_taken;              /* requests covered by a taken snapshot */
	uint64_t sync_done;               /* requests covered by a commit */
	uint64_t sync_failed;             /* requests whose cycle failed */
	bool stop;
	bool removed;
	bool has_thread;
	pthread_t th;
	uint64_t cur_gen;                 /* sync requests the running cycle covers */
	uint64_t cycle_start_ns;          /* for rate and ETA */
	struct link *active;              /* link in use, for abort */
	struct bucket bucket;
	unsigned refs;
	/* primary, during `pair resync`: the old primary's divergent extents
	 * (objno = offset, hash = length), merged into the next cycle */
	struct wire_digest *extra;
	size_t n_extra;
	bool resyncing;
	/* call-back links.  Primary: connections the secondary offered, newest
	 * last, with the monotonic time each arrived.  Secondary: the threads
	 * that keep offering, and the link each is serving (for abort). */
	struct link *parked[PARK_MAX];
	uint64_t parked_ns[PARK_MAX];
	unsigned n_parked;
	unsigned cb_threads;
	struct link *cb_link[CB_SLOTS];
	bool cb_failing;                  /* log a failing call-back once */
	bool announced;                   /* secondary with a listener: the
	                                   * primary was told our address */
	/* counters for repl_metrics (metrics.c), under r->mu, since start */
	struct {
		uint64_t ok, failed;
		uint64_t data_bytes, zero_bytes, wire_bytes;
		uint64_t dur[REPL_DUR_BUCKETS + 1];
		double dur_sum;
	} ctr;
};

struct repl {
	struct store *store;
	char pool[4096];
	char pairs_dir[4200];
	uint8_t *secret;
	size_t secret_len;
	struct link_tls *tls;             /* NULL = plaintext links */
	unsigned max_transfers;
	unsigned transfers;               /* running, under mu */
	int timeout_ms;
	char site[WIRE_TEXT_MAX + 1];
	char listen_req[WIRE_TEXT_MAX + 1];
	char listen_addr[WIRE_TEXT_MAX + 1];
	int lfd;
	bool started, stopping;
	pthread_t accept_th;
	unsigned conns;                   /* server connection threads */
	struct link *srv[64];             /* their links, to abort at stop */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct pair *pairs;
	unsigned cb_threads;              /* call-back threads of all pairs */
	void (*on_ro_change)(void *ctx, const char *volume);
	void *ro_ctx;
};

/* engine.c */
int pair_start_thread(struct repl *r, struct pair *p);     /* under mu */
struct pair *pair_find(struct repl *r, const char *name); /* under mu */
void pair_get(struct pair *p);                             /* under mu */
void pair_put(struct pair *p);                             /* under mu */
int pair_save(struct pair *p);                             /* under mu */
int pair_ckpt_path(struct repl *r, const char *name, char *buf, size_t len);
void snap_name(const char *pair, uint64_t cycle, char *out, size_t len);
/* Deletes the snapshots of volume vol named after pair, except keep (may
 * be NULL); leftovers of crashes between a commit and a deletion go too. */
void drop_pair_snaps(struct repl *r, const char *vol, const char *pair, const char *keep);

/* A verb's failure: the reason as one line in out; returns rc. */
int verb_fail(struct sbuf *out, int rc, const char *fmt, ...) PRINTF_LIKE(3, 4);
/* Under mu: waits on r->cv until due_mono (monotonic ns), at most 1 s
 * at a time (callers re-check their condition). */
void cond_wait_until(struct repl *r, uint64_t due_mono);
/* Connects and authenticates to peer; the reason goes to err. */
int repl_dial(struct repl *r, const char *peer, struct link **out, char *err, size_t errlen);

/* Connects to the peer of p as the client of a request: takes a link the
 * peer offered (call-back) if there is one, else dials p->peer, else waits
 * a little for an offer.  *out is owned by the caller (link_close). */
int pair_dial(struct pair *p, struct link **out, char *err, size_t errlen);

/* Under mu: the state `pair status` shows (one of repl_pair_states). */
const char *pair_state(const struct pair *p);
/* metrics.c, under mu: counts a finished cycle of p, committed (st) or
 * failed (st NULL). */
void pair_count_cycle(struct pair *p, const struct cycle_stats *st);

/* engine_callback.c */
/* Under mu: starts the call-back threads p needs (a secondary on a site
 * without --listen whose primary's address is known), or the one that
 * tells the primary this site's --listen once (after a start or a
 * demote, so a primary that knew another address, or none, learns it);
 * they end by themselves when p no longer needs them. */
void callback_update(struct repl *r, struct pair *p);
/* Under mu: closes the links p holds offered (primary side) and aborts
 * the ones its call-back threads serve (secondary side). */
void callback_drop(struct pair *p);
/* Primary side of ROLE CALLBACK: keeps l for p's next requests.  Returns
 * 1 when l was kept (the caller must not close it), 0 when refused. */
int callback_park(struct repl *r, struct link *l, const struct wire_msg *m);
/* The address to reach a peer that announced `announced` (its --listen)
 * on a connection from `conn_peer`: a wildcard host is replaced by the
 * connection's.  0, or -EINVAL when announced is unusable. */
int addr_learned(const char *announced, const char *conn_peer, char *out, size_t len);

/* engine_role.c */
/* Under mu: ROLE(op) describing p, as the side that sends it. */
void role_msg_fill(const struct pair *p, uint32_t op, struct wire_msg *out);
/* Under mu: the ROLE_INFO that describes p (snap: the snapshot to name). */
void role_info_fill(const struct pair *p, const char *snap, struct wire_msg *out);
/* Serves ROLE on the secondary side of a connection. */
int handle_role(struct repl *r, struct link *l, const struct wire_msg *m);
/* Primary, before a cycle: exchanges epochs with the peer (ROLE CHECK).
 * 0 = go on; -ESTALE = split brain (recorded in p); other -errno with
 * the reason in err. */
int role_check(struct pair *p, struct link *l, char *err, size_t errlen);
/* Primary, when its worker starts and every REPL_HEARTBEAT_S between
 * cycles: one ROLE CHECK so that a split brain shows as soon as both sides
 * run, not at the next period.  Records the outcome in p->peer_err. */
void role_probe(struct pair *p);
/* Test-only crash points: _exit(99) when FERRY_TEST_CRASH_AT == step. */
void crash_point(const char *step);

/* engine_send.c: vol_diff(base ("" = creation), target) with the extents
 * of extra (objno = offset, hash = length, sorted by offset) added as DATA,
 * per object in objno order: what a resync must send. */
int diff_union(struct vol *v, uint64_t object_size, const char *base, const char *target,
               const struct wire_digest *extra, size_t n_extra, diff_cb cb, void *ctx);
/* engine_send.c: one cycle of a primary pair; 0 or -errno with p->error. */
int send_cycle(struct pair *p);
/* engine_recv.c: serves one accepted connection (handshake, then
 * requests).  Returns 1 when the link was kept (a call-back offer: the
 * caller must not close it), else 0 (the caller closes it). */
int serve_conn(struct repl *r, struct link *l);
/* Serves requests on an authenticated link until the peer closes it; the
 * first request may take up to first_ms (0 = the link's deadline).  Same
 * return as serve_conn. */
int serve_requests(struct repl *r, struct link *l, int first_ms);
/* engine_verify.c */
struct digest_list {
	struct wire_digest *d;
	size_t n, cap;
};
/* md5 of the whole snapshot and XXH3 of every object that is not all
 * zero.  emit (may be NULL) is called per batch; non-zero stops. */
int verify_compute(struct vol *v, const char *snap, uint8_t md5[16],
                   struct digest_list *out,
                   int (*emit)(void *ctx, const struct wire_digest *d, size_t n),
                   void *ctx);

#endif
