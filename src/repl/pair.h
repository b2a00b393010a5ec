/* repl pairs: the registry of a daemon's pairs, the one function through
 * which a pair's state changes, the connections to a pair's peer, and the
 * small helpers every layer above shares.
 *
 * Layers of src/repl, each calling only into its own and lower ones
 * (scripts/check-repl-layers.sh checks includes and linked symbols):
 *   0  wire.c link.c gate.c          codec, authenticated connections,
 *                                    admission of unauthenticated ones
 *   1  rec.c                         the record value, codecs, transition rules
 *   2  pair.c conn.c                 registry, pair_change(), dialling, offers
 *   3  send.c recv.c role.c verify.c verbs.c
 *                                    cycles, serving a peer, role changes,
 *                                    verify, the verbs of repl.h
 *   4  sched.c callback.c listen.c repl.c
 *                                    the scheduler (the only place that
 *                                    starts cycles), call-back threads, the
 *                                    listener, start / stop
 * Private to src/repl.
 */
#ifndef FERRY_REPL_PAIR_H
#define FERRY_REPL_PAIR_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "repl/link.h"
#include "repl/rec.h"
#include "repl/repl.h"

#define REPL_WINDOW_BYTES (32ull << 20)  /* byte bound of the read window */
#define REPL_BACKOFF_MAX_S 60
/* A primary between cycles checks its peer (ROLE CHECK) every peer
 * timeout / 3, at most this often, so that a split brain or a dead peer
 * shows within seconds, not at the next period. */
#define REPL_HEARTBEAT_MAX_S 10
/* Call-back links (a secondary without --listen dials its primary and
 * offers the connection): connections a secondary keeps offered per pair,
 * how many a primary holds, and how long either keeps an unused one.  The
 * primary's limit is below the secondary's so that it never hands out a
 * link the secondary is about to give up on. */
#define CB_SLOTS 2
#define PARK_MAX 4
#define PARK_IDLE_MS 45000
#define PARK_USE_MS 30000
/* Snapshots a pair's verifies may hold at once. */
#define HOLD_MAX 4
/* The replication port (listen.c, docs/DESIGN.md "Replication port
 * limits"): authenticated server connections; connections that have not
 * authenticated yet, in all and per source address (gate.h: a newcomer
 * displaces the oldest waiting one rather than being refused); the time
 * one has to complete TLS and the challenge.  SRV_SLOTS also holds the
 * displaced ones while their threads end. */
#define MAX_CONNS 64
#define UNAUTH_MAX 64
#define UNAUTH_PER_SOURCE 8
#define HS_TIMEOUT_MS 5000
#define SRV_SLOTS (MAX_CONNS + 2 * UNAUTH_MAX)
/* Attempts of a dial that the peer refuses for load (conn.c). */
#define DIAL_BUSY_TRIES 3

struct pair_hold {
	char snap[REC_NAME_MAX + 1];
	unsigned n;                       /* verifies holding it */
};

struct pair {
	struct repl *r;
	struct pair *next;
	unsigned refs;                    /* under r->mu */
	bool removed;                     /* pair rm has begun: no new work */

	/* The persisted record.  Read under r->mu; replaced only, and only
	 * whole, by pair_change(). */
	struct pair_rec rec;
	enum repl_state state;            /* the visible state last logged */

	/* Runtime, under r->mu. */
	bool running;                     /* a cycle transfers (either role) */
	uint64_t done_bytes, total_bytes;
	uint64_t cycle_start_ns;          /* for rate and ETA */
	char error[512];                  /* last failure, "" when fine */
	unsigned failures;                /* consecutive failed cycles */
	bool unreached;                   /* primary: the last failure was that
	                                   * the peer could not be connected to */
	uint64_t contact_wall;            /* last successful contact, unix s */
	uint64_t contact_mono;            /* the same, monotonic ns (0 = none) */
	uint64_t last_success;            /* unix s of the last commit seen here */
	char peer_err[256];               /* primary: why the last heartbeat failed */
	struct repl_counters counters;
	/* Idle pairs (docs/DESIGN.md "Idle pairs"): asof_wall (unix s) is the
	 * last time this side learnt that the last synced snapshot of cycle
	 * asof_cycle was still the primary's content (a skipped cycle on the
	 * primary, SYNCED on the secondary); 0 = not since the start. */
	uint64_t asof_wall, asof_cycle;
	/* Primary: the volume's size at the last committed cycle (0 = not
	 * known since the start); whether the peer took the last SYNCED; and
	 * after a refusal (a peer of before knows no SYNCED) no SYNCED, and
	 * no skipped cycle, before synced_retry_ns. */
	uint64_t synced_size;
	bool peer_synced;
	uint64_t synced_retry_ns;
	/* `pair sync` tickets: requests, those covered by a taken snapshot,
	 * by a commit, by a failure; the running cycle covers cur_gen. */
	uint64_t sync_req, sync_taken, sync_done, sync_failed, cur_gen;
	/* primary, during `pair resync`: the old primary's divergent extents
	 * (objno = offset, hash = length), merged into the next cycle */
	struct wire_digest *extra;
	size_t n_extra;
	/* snapshots held by verifies: retention skips them */
	struct pair_hold holds[HOLD_MAX];

	/* The scheduler's (sched.c), under r->mu. */
	bool busy;                        /* one of its jobs runs for this pair */
	unsigned exclusive;               /* verbs keeping its jobs off */
	uint64_t next_due_ns;             /* monotonic time of the next cycle */
	uint64_t next_probe_ns;           /* primary: next heartbeat */

	/* Links. */
	struct link *active;              /* link of the running cycle, for abort */
	bool ending;                      /* CYCLE_END sent: only the commit's answer
	                                   * is awaited (pause lets it arrive) */
	struct bucket bucket;
	/* Call-back.  Primary: connections the secondary offered, newest
	 * last, with the monotonic time each arrived.  Secondary: the
	 * threads that keep offering, and the link each is serving. */
	struct link *parked[PARK_MAX];
	uint64_t parked_ns[PARK_MAX];
	unsigned n_parked;
	unsigned cb_threads;
	struct link *cb_link[CB_SLOTS];
	bool cb_failing;                  /* log a failing call-back once */
	bool announced;                   /* secondary with a listener: the
	                                   * primary was told our address */
};

struct sched;
struct listener;

struct repl {
	struct store *store;
	char pool[4096];
	char pairs_dir[4200];
	uint8_t *secret;
	size_t secret_len;
	struct link_tls *tls;             /* NULL = plaintext links */
	unsigned max_transfers;
	unsigned transfers;               /* cycles transferring, under mu */
	int timeout_ms;
	char site[WIRE_TEXT_MAX + 1];
	char listen_req[WIRE_TEXT_MAX + 1];
	char listen_addr[WIRE_TEXT_MAX + 1];
	uint64_t started_mono;            /* when repl_start ran */
	bool started, stopping;
	pthread_mutex_t mu;               /* the pairs, their records and runtime */
	pthread_cond_t cv;                /* any change of them */
	struct pair *pairs;
	/* Read-only notifications: pair_change queues, pairs_unlock delivers
	 * (outside mu), one deliverer at a time. */
	char (*ro_queue)[REC_NAME_MAX + 1];
	size_t ro_n, ro_cap;
	uint64_t ro_queued, ro_delivered;
	bool ro_busy;
	void (*on_ro_change)(void *ctx, const char *volume);
	void *ro_ctx;
	int (*may_pair)(void *ctx, const char *volume, char *why, size_t n);
	/* The listener (listen.c). */
	int lfd;
	pthread_t accept_th;
	unsigned conns;                   /* server connection threads */
	struct link *srv[SRV_SLOTS];      /* their links, to abort at stop */
	struct listener *lsn;             /* listen.c: its admission state */
	unsigned cb_threads;              /* call-back threads of all pairs */
	struct sched *sched;              /* sched.c */
};

/* ---- registry (under r->mu unless said otherwise) -------------------------- */
struct pair *pair_alloc(struct repl *r);            /* refs = 1, not in the list */
struct pair *pair_find(struct repl *r, const char *name);
void pair_get(struct pair *p);
void pair_put(struct pair *p);
/* Loads every POOL/pairs/NAME.pair (at create; not under mu). */
int pairs_load(struct repl *r);
/* Releases r->mu, first delivering the read-only notifications that
 * pair_change queued (outside the lock; returns once they, and any
 * queued before, are delivered).  Use it instead of unlocking after a
 * pair_change. */
void pairs_unlock(struct repl *r);

/* ---- the transition function --------------------------------------------- */
/* Under r->mu: the one way a pair's state changes.
 *  next  the new record (NULL: the record stays, only runtime fields
 *        changed, e.g. a cycle started or failed); phase PH_NONE removes
 *        the record file.
 * Checks the change (pair_rec_check), writes the record atomically when it
 * differs, swaps it into p->rec, derives the visible state and logs
 * "pair NAME: idle -> syncing" when it changed, wakes waiters (r->cv), and
 * queues a read-only notification when the volume's write refusal or
 * fencing changed (delivered by pairs_unlock).  On failure nothing
 * changed: -EINVAL for an illegal change, or the write's error; the reason
 * is logged and in err.  why (may be NULL) goes into the log line. */
int pair_change(struct pair *p, const struct pair_rec *next, const char *why, char *err,
                size_t errlen);
/* Under r->mu: adds a new pair to the registry with its first record
 * (p->rec, written now).  0 or the write error. */
int pair_add(struct repl *r, struct pair *p, char *err, size_t errlen);
/* Under r->mu: the run-time inputs of the visible state. */
struct pair_health pair_health_of(const struct pair *p, uint64_t now_mono);
/* Under mu: when the visible state may next change by itself (a peer
 * timeout running out); UINT64_MAX = never. */
uint64_t pair_next_state_change(const struct pair *p);
/* Under mu: derives the visible state again and logs it when a clock
 * changed it (a peer timeout ran out). */
void pair_refresh(struct pair *p, uint64_t now_mono);
/* Under mu: a successful contact with the peer (cycle, heartbeat, or a
 * request the peer made). */
void pair_contact(struct pair *p);
/* Under mu: until when the last synced snapshot is known to be the
 * primary's content (unix s): its snapshot time, or later when an idle
 * check found nothing changed since. */
uint64_t pair_synced_time(const struct pair *p);
/* Under mu: the heartbeat interval of p (ns). */
uint64_t pair_heartbeat_ns(const struct pair *p);

/* ---- snapshots --------------------------------------------------------- */
void snap_name(const char *pair, uint64_t cycle, char *out, size_t len);
/* Whether snap is one of pair's cycle snapshots (ferry.PAIR.NNNNNN). */
bool snap_is_cycle(const char *pair, const char *snap);
/* Under mu: whether p still needs snapshot snap (last synced, in flight,
 * seed, common, split-brain, held by a verify). */
bool pair_snap_needed(const struct pair *p, const char *snap);
/* The cycle number of a cycle snapshot name (the digits after its last
 * '.'), 0 when it has none. */
uint64_t snap_cycle_of(const char *snap);
/* Whether snap is a cycle snapshot of p's on its volume: named after the
 * pair (its own cycles) or after the remote (the primary's, received). */
bool pair_snap_is_point(const struct pair_rec *c, const char *snap);
/* Under mu: whether snap may be a recovery point that retention keeps
 * (decided by drop_pair_snaps, which ranks them); removal by anything
 * else must leave it.  `snap rm` may remove it. */
bool pair_snap_retained(const struct pair *p, const char *snap);
/* Under mu: a verify holds / releases snap (retention keeps it). */
int pair_hold(struct pair *p, const char *snap);
void pair_unhold(struct pair *p, const char *snap);
/* Not under mu: deletes the cycle snapshots of pair on volume vol
 * (ferry.PAIR.*) that p does not need, except keep (may be NULL), and
 * the recovery points its retention (pair_point_kept) no longer keeps;
 * leftovers of crashes go too.  p may be NULL (nothing held, no points
 * kept). */
void drop_pair_snaps(struct repl *r, struct pair *p, const char *vol, const char *pair,
                     const char *keep);

/* ---- files --------------------------------------------------------------- */
int pair_path(struct repl *r, const char *name, const char *ext, char *buf, size_t len);
int ckpt_save(struct repl *r, const char *name, const struct ckpt *c);
/* 0, -ENOENT when there is none, -EINVAL when damaged. */
int ckpt_load(struct repl *r, const char *name, struct ckpt *c);
void ckpt_remove(struct repl *r, const char *name);
int base_save(struct repl *r, const char *name, const struct pair_base *b);
int base_load(struct repl *r, const char *name, struct pair_base *b);
void base_remove(struct repl *r, const char *name);

/* ---- helpers ------------------------------------------------------------- */
/* A verb's failure: the reason in err; returns rc. */
int verb_fail(struct repl_err *err, int rc, const char *fmt, ...) PRINTF_LIKE(3, 4);
/* Under mu: waits on r->cv until due_mono (monotonic ns), at most 1 s at
 * a time (callers re-check their condition). */
void cond_wait_until(struct repl *r, uint64_t due_mono);
/* Test-only crash points: _exit(99) when FERRY_TEST_CRASH_AT == step. */
void crash_point(const char *step);
/* Under mu: ROLE(op) describing p, as the side that sends it. */
void role_msg_fill(const struct pair *p, uint32_t op, struct wire_msg *out);
/* Under mu: the ROLE_INFO that describes p (snap: the snapshot to name). */
void role_info_fill(const struct pair *p, const char *snap, struct wire_msg *out);

/* ---- connections to the peer (conn.c) --------------------------------------- */
/* Connects and authenticates to peer; the reason goes to err.  *reached
 * (may be NULL) tells whether a TCP connection was made. */
int repl_dial(struct repl *r, const char *peer, struct link **out, char *err, size_t errlen,
              bool *reached);
/* Connects to the peer of p as the client of a request: takes a link the
 * peer offered (call-back) if there is one, else dials p's peer, else
 * waits a little for an offer.  *out is owned by the caller (link_close). */
int pair_dial(struct pair *p, struct link **out, char *err, size_t errlen, bool *reached);
/* Primary side of ROLE CALLBACK: keeps l for p's next requests.  Returns
 * 1 when l was kept (the caller must not close it), 0 when refused. */
int conn_park(struct repl *r, struct link *l, const struct wire_msg *m);
/* Under mu: closes the links p holds offered (primary side) and aborts the
 * ones its call-back threads serve (secondary side), except `keep` (the
 * link serving the caller's request; may be NULL). */
void conn_drop(struct pair *p, struct link *keep);
/* The address to reach a peer that announced `announced` (its --listen)
 * on a connection from `conn_peer`: a wildcard host is replaced by the
 * connection's.  0, or -EINVAL when announced is unusable. */
int addr_learned(const char *announced, const char *conn_peer, char *out, size_t len);

#endif
