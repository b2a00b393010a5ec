/* repl: asynchronous snapshot-cycle replication between two ferryd sites.
 *
 * One struct repl per daemon.  It listens for peers (when opts->listen is
 * set), schedules the cycles of the pairs whose primary is here, receives
 * those whose secondary is here, and answers one function per `ferry pair`
 * verb.  Protocol: docs/PROTOCOL.md; states: docs/DESIGN.md.
 *
 * Pair state lives in POOL/pairs/NAME.pair (atomically replaced), and a
 * secondary's resume checkpoint in POOL/pairs/NAME.ckpt.  A pair is named
 * after its local volume; the secondary names it after its own volume.
 *
 * Threading: every function may be called from any thread; the verbs may
 * block on the network, each with a deadline (never indefinitely).
 *
 * Results: a verb returns 0 and fills its result struct, or a negative
 * errno with the reason (one line) in err->msg.  Formatting text or JSON
 * is the caller's business (src/daemon/cmd_pair.c).
 */
#ifndef FERRY_REPL_H
#define FERRY_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "store/store.h"

struct repl;

struct repl_opts {
	const char *listen;        /* "HOST:PORT" to accept peers on, or NULL */
	const uint8_t *secret;     /* shared secret (copied); NULL = no peers */
	size_t secret_len;
	unsigned max_transfers;    /* cycles transferring at once; 0 = 4 */
	unsigned timeout_ms;       /* deadline of every remote op; 0 = 30000 */
	const char *site;          /* this site's name in peers' logs; may be NULL */
	/* The link is TLS 1.3 keyed from the secret unless plaintext (both
	 * sites must agree), or keyed by certificates when tls_cert, tls_key
	 * and tls_ca are all set.  docs/PROTOCOL.md "Security". */
	bool plaintext;
	const char *tls_cert, *tls_key, *tls_ca;
	/* Called (no repl lock held) after a change of whether volume must
	 * refuse writes (repl_volume_read_only, repl_volume_fenced); may be
	 * NULL.  The verb that made the change returns only after the call. */
	void (*on_ro_change)(void *ctx, const char *volume);
	void *ro_ctx;
	/* Called (no repl lock held) when a primary asks this site to make
	 * volume the secondary of a new pair (PAIR_OPEN): 0 lets it, < 0
	 * refuses with the reason in why (e.g. a consistency group's name or
	 * member).  May be NULL; gets ro_ctx. */
	int (*may_pair)(void *ctx, const char *volume, char *why, size_t n);
};

enum repl_role { REPL_ROLE_NONE = 0, REPL_ROLE_PRIMARY, REPL_ROLE_SECONDARY };
const char *repl_role_name(enum repl_role role);   /* "primary", "secondary" */

/* What `pair status` says a pair is doing (docs/DESIGN.md "Pair states"). */
enum repl_state {
	REPL_ST_INITIAL_SYNC = 0, /* nothing synced yet */
	REPL_ST_IDLE,             /* between cycles, all well */
	REPL_ST_SYNCING,          /* a cycle transfers */
	REPL_ST_PAUSED,           /* primary: pair pause */
	REPL_ST_DEMOTING,         /* primary: demote in progress, writes refused */
	REPL_ST_SPLIT_BRAIN,      /* both sites were primary: no cycle runs */
	REPL_ST_RESYNCING,        /* the new primary sends what differs */
	REPL_ST_ERROR,            /* the last cycles failed (see error) */
	REPL_ST_PEER_DOWN,        /* no contact for longer than the peer timeout */
	REPL_ST_COUNT
};
const char *repl_state_name(enum repl_state st); /* "initial-sync", "peer-down", ... */

/* What a primary does on learning that another site holds a newer epoch. */
enum repl_split_policy {
	REPL_SB_FENCE = 0,        /* its LUNs refuse writes until it is demoted */
	REPL_SB_KEEP_WRITING = 1, /* clients go on writing (into split-brain-*) */
};
const char *repl_split_policy_name(enum repl_split_policy p);

/* Settings of a pair.  pair create takes every field (0 = default);
 * pair set changes the fields whose REPL_SET_* bit is in `set`. */
#define REPL_SET_PERIOD 0x01u
#define REPL_SET_BANDWIDTH 0x02u
#define REPL_SET_COMPRESS 0x04u
#define REPL_SET_INFLIGHT 0x08u
#define REPL_SET_PEER_TIMEOUT 0x10u
#define REPL_SET_SPLIT_BRAIN 0x20u
#define REPL_SET_KEEP 0x40u
#define REPL_SET_KEEP_FOR 0x80u
/* --keep: at most this many recovery points */
#define REPL_KEEP_MAX 10000
struct repl_settings {
	unsigned set;
	uint64_t period_s;         /* 0 = 60; at least 1 */
	uint64_t bandwidth;        /* wire bytes per second; 0 = unlimited */
	bool compress;             /* zstd per data record */
	uint32_t max_inflight;     /* objects in flight; 0 = 8 */
	uint64_t peer_timeout_s;   /* 0 = max(3 x period, 30 s) */
	enum repl_split_policy split_brain;
	uint32_t keep;             /* recovery points on the secondary; 0 = 1 */
	uint64_t keep_for_s;       /* and the points younger than this; 0 = none */
};

struct repl_pair_opts {
	const char *peer;          /* "HOST:PORT" of the secondary's ferryd */
	const char *remote_name;   /* secondary volume; NULL = same name */
	struct repl_settings s;
	bool force;                /* accept a non-empty existing secondary */
};

/* The reason of a failed verb, one line. */
struct repl_err {
	char msg[768];
};

/* Cycle durations are counted in these buckets (upper bounds, seconds;
 * the last bucket is everything above the last bound). */
#define REPL_HIST_BUCKETS 12
extern const double repl_hist_bounds[REPL_HIST_BUCKETS - 1];

struct repl_cycle_stats {
	uint64_t number;
	uint64_t extents;
	uint64_t data_bytes;       /* changed bytes sent as data */
	uint64_t zero_bytes;       /* changed bytes sent as zero records */
	uint64_t wire_bytes;       /* bytes on the link this cycle, both ways */
	double seconds;
};

/* Counters since this ferryd started (for a metrics exporter). */
struct repl_counters {
	uint64_t cycles_ok;
	uint64_t cycles_failed;
	uint64_t cycles_skipped;   /* primary: periodic cycles of an idle pair
	                            * that had nothing to send (no snapshot) */
	uint64_t data_bytes;
	uint64_t zero_bytes;
	uint64_t wire_bytes;
	uint64_t duration_hist[REPL_HIST_BUCKETS]; /* per bucket, not cumulative */
	double duration_sum;                       /* seconds, committed cycles */
};

/* One pair, as `pair status` shows it.  Plain data: copied out under the
 * lock in a few microseconds. */
struct repl_status {
	char name[STORE_NAME_MAX + 1];
	char volume[STORE_NAME_MAX + 1];
	char remote[STORE_NAME_MAX + 1];     /* the other side's volume / pair */
	enum repl_role role;
	enum repl_state state;
	char peer[256];                      /* as the pair file says ("" = calls in) */
	char peer_addr[256];                 /* the other site's --listen */
	const char *connection;              /* dials-peer, peer-calls-in,
	                                      * calls-primary, listens (static) */
	unsigned offers;                     /* peer-calls-in: connections offered */
	bool callback_failing;
	char peer_error[256];                /* primary: last heartbeat failure, "" */
	uint64_t peer_last_contact;          /* unix s of the last contact, 0 = none */
	/* settings */
	uint64_t period_s, bandwidth, peer_timeout_s; /* peer_timeout_s: effective */
	bool peer_timeout_default;
	uint32_t max_inflight;
	bool compress;
	enum repl_split_policy split_brain_policy;
	uint32_t keep;                       /* recovery points (secondary) */
	uint64_t keep_for_s;
	/* cycles */
	bool has_last;
	char last_snap[STORE_NAME_MAX + 1];
	uint64_t last_time, last_cycle;
	uint64_t rpo_lag_s;
	uint64_t last_success;               /* unix s of the last committed cycle
	                                      * seen by this ferryd, 0 = none */
	bool running;                        /* a cycle transfers now */
	uint64_t cycle_number, done_bytes, total_bytes;
	double cycle_elapsed_s;
	bool has_stats;
	struct repl_cycle_stats last;
	char error[512];                     /* last failure, "" = none */
	unsigned consecutive_failures;
	/* role changes */
	bool paused, demoting, peer_demoted, split_brain, needs_resync, resyncing;
	bool fenced;                         /* LUNs refuse writes (split brain) */
	char fence_reason[512];
	char split_reason[256];
	uint64_t epoch, peer_epoch;
	char common_snap[STORE_NAME_MAX + 1];
	char sb_snap[STORE_NAME_MAX + 1];
	uint64_t resync_extents;
	/* verify in progress */
	char verifying[STORE_NAME_MAX + 1];  /* snapshot held by a verify, "" */
	struct repl_counters counters;
};

/* Loads the pairs of pool_dir (does not start anything).  store is not
 * owned and must outlive the repl.  *out is freed by repl_destroy. */
int repl_create(struct store *store, const char *pool_dir,
                const struct repl_opts *opts, struct repl **out);
/* Starts listening and the scheduler. */
int repl_start(struct repl *r);
/* The bound listen address ("127.0.0.1:40123"), or NULL; owned by r. */
const char *repl_listen_addr(const struct repl *r);
/* Stops every thread and aborts transfers (they resume at the next start
 * from their checkpoints).  Idempotent. */
void repl_stop(struct repl *r);
void repl_destroy(struct repl *r);

/* ---- one function per `ferry pair` verb ------------------------------- */
struct repl_created {
	char peer[256], remote[STORE_NAME_MAX + 1];
	bool incremental;                    /* re-paired from a kept snapshot */
	char base_snap[STORE_NAME_MAX + 1];
	uint64_t base_cycle;
};
int repl_pair_create(struct repl *r, const char *name, const struct repl_pair_opts *o,
                     struct repl_created *res, struct repl_err *err);
int repl_pair_status(struct repl *r, const char *name, struct repl_status *out,
                     struct repl_err *err);
/* Every pair, sorted by name; *out is malloc'd (caller frees), *n may be 0. */
int repl_pair_list(struct repl *r, struct repl_status **out, size_t *n);
/* Changes the settings named in s->set (on the primary).  Takes effect by
 * the next cycle; the secondary learns them at the next contact, which is
 * made at once.  *before / *after: the settings around the change. */
int repl_pair_set(struct repl *r, const char *name, const struct repl_settings *s,
                  struct repl_settings *before, struct repl_settings *after,
                  struct repl_err *err);

/* Starts a cycle now (after any running one): ticket identifies it; then
 * wait up to timeout_ms at a time; -EINPROGRESS means "not yet" with the
 * running cycle's progress in *done / *total (may be NULL).  0 once
 * everything written before the request is committed on the secondary,
 * with the snapshot in *snap (STORE_NAME_MAX + 1) and its *cycle. */
int repl_pair_sync_request(struct repl *r, const char *name, uint64_t *ticket,
                           struct repl_err *err);
int repl_pair_sync_wait(struct repl *r, const char *name, uint64_t ticket,
                        unsigned timeout_ms, uint64_t *done, uint64_t *total,
                        char *snap, uint64_t *cycle, struct repl_err *err);
/* Both in one, waiting as long as it takes. */
int repl_pair_sync(struct repl *r, const char *name, struct repl_err *err);
int repl_pair_pause(struct repl *r, const char *name, struct repl_err *err);
int repl_pair_resume(struct repl *r, const char *name, struct repl_err *err);

/* Compares a snapshot on both sides (md5 + per-object XXH3 digests; only
 * digests cross the link) while cycles go on: the snapshot is held on
 * both sites until the end.  snap NULL = the last synced one.  0 when the
 * comparison ran (res->match tells the outcome); a negative errno when it
 * could not (peer down, snapshot gone...).  progress (may be NULL) is
 * called from the calling thread with bytes hashed here so far. */
struct repl_verify {
	char snapshot[STORE_NAME_MAX + 1];
	char remote[STORE_NAME_MAX + 1];
	char peer[256];
	char primary_md5[33], secondary_md5[33];
	uint64_t objects_compared;
	uint64_t mismatching_objects;
	uint64_t *mismatch;                  /* the first <= 1000 objnos; caller frees */
	size_t n_mismatch;
	bool match;
	double seconds;
};
typedef void (*repl_progress_fn)(void *ctx, uint64_t done, uint64_t total);
int repl_pair_verify(struct repl *r, const char *name, const char *snap,
                     repl_progress_fn progress, void *ctx, struct repl_verify *res,
                     struct repl_err *err);

/* Ends the pair on both sides; the secondary keeps its volume at its last
 * synced snapshot.  Both sides keep that snapshot (and only it) so that
 * a later pair create sends only what changed since (docs/DESIGN.md
 * "Re-pairing").  Run on a secondary, it ends only the local side. */
struct repl_removed {
	bool told;                           /* the secondary was told */
	char not_told[512];                  /* why not ("" when told) */
	char kept_snap[STORE_NAME_MAX + 1];  /* "" = none kept */
};
int repl_pair_rm(struct repl *r, const char *name, struct repl_removed *res,
                 struct repl_err *err);

/* Role changes (docs/PROTOCOL.md section 11).
 * demote (primary): refuses writes from now on, runs a final cycle, tells
 *   the secondary, becomes the secondary-to-be.  After a split brain it
 *   skips the cycle and waits for `resync` on the new primary.
 * promote (secondary): becomes primary; without force only after the
 *   primary demoted; with force (the primary is lost) the head goes back
 *   to the last synced snapshot and the pair's epoch is bumped so the old
 *   primary finds out.  force is refused while the primary answers.
 * resync (primary after a split brain): sends the union of both sides'
 *   changes since the common snapshot to the demoted old primary, which
 *   first keeps its own in a split-brain-<time> snapshot.
 * Each persists its intent first and can be repeated after a crash. */
struct repl_role_change {
	bool already;                        /* nothing to do: it was so */
	bool split;                          /* demote: after a split brain */
	bool forced;
	char snapshot[STORE_NAME_MAX + 1];   /* last synced / common snapshot */
	uint64_t cycle, epoch;
	char peer[256];                      /* promote: where cycles go, "" = calls in */
	uint64_t resync_extents;             /* resync: the old primary's divergence */
};
int repl_pair_demote(struct repl *r, const char *name, struct repl_role_change *res,
                     struct repl_err *err);
/* at (NULL = the last synced snapshot): promote at that recovery point
 * instead (`pair points`); the later points stay until the operator
 * removes them (`snap rm`). */
int repl_pair_promote(struct repl *r, const char *name, bool force, const char *at,
                      struct repl_role_change *res, struct repl_err *err);

/* Recovery points of a pair on this site (`pair points`): its synced
 * cycle snapshots present here, oldest first.  bytes: the data changed
 * since the previous point (for the oldest: all it holds).  *out is
 * malloc'd (caller frees), *n may be 0. */
struct repl_point {
	char snapshot[STORE_NAME_MAX + 1];
	uint64_t cycle;
	uint64_t time;                       /* unix s: when the snapshot was taken here */
	uint64_t bytes;
	bool last;                           /* the last synced snapshot */
	bool pinned;                         /* left by promote --at: the operator's */
	uint32_t clones;                     /* volumes cloned from it (it is kept
	                                        while they exist, whatever --keep says) */
};
int repl_pair_points(struct repl *r, const char *name, struct repl_point **out, size_t *n,
                     struct repl_err *err);
/* resync in two steps, like sync: fetch the old primary's divergence and
 * request the cycle (ticket), then repl_pair_sync_wait(ticket). */
int repl_pair_resync_start(struct repl *r, const char *name, uint64_t *ticket,
                           struct repl_role_change *res, struct repl_err *err);

/* ---- questions from the rest of the daemon ------------------------------ */
/* True while a volume must refuse writes: a secondary, or a demoting
 * primary. */
bool repl_volume_read_only(struct repl *r, const char *volume);
/* True while the LUNs exporting a volume must refuse writes because its
 * primary learnt that another site holds a newer epoch (split-brain policy
 * fence).  Reads go on; the operator's own `volume write` is not fenced. */
bool repl_volume_fenced(struct repl *r, const char *volume);
/* The role of a volume in a pair, for refusing writes to a secondary. */
enum repl_role repl_volume_role(struct repl *r, const char *volume);
/* True when snapshot snap of volume is one replication needs: the last
 * synced one, a cycle's in-flight target, a secondary's seed, one held by
 * a verify, or the one kept for re-pairing. */
bool repl_snapshot_in_use(struct repl *r, const char *volume, const char *snap);

#endif
