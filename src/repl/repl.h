/* repl: asynchronous snapshot-cycle replication between two ferryd sites.
 *
 * One struct repl per daemon.  It listens for peers (when opts->listen is
 * set), runs one worker per pair whose primary is here, and answers one
 * function per `ferry pair` verb.  Protocol: docs/PROTOCOL.md.
 *
 * Pair state lives in POOL/pairs/NAME.pair (atomically replaced), and a
 * secondary's resume checkpoint in POOL/pairs/NAME.ckpt.  A pair is named
 * after its local volume; the secondary names it after its own volume.
 *
 * Threading: every function may be called from any thread; the verbs may
 * block on the network, each with a deadline (never indefinitely), except
 * repl_pair_sync(wait=true), which waits until the cycle commits or fails.
 *
 * Output: verbs append human text or JSON (json=true) to *out, which the
 * caller owns; on failure *out holds the reason (one line) and the
 * function returns a negative errno.
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
	/* Called (from the verb's thread, no repl lock held) after a role
	 * change flips whether volume must refuse writes; may be NULL. */
	void (*on_ro_change)(void *ctx, const char *volume);
	void *ro_ctx;
};

struct repl_pair_opts {
	const char *peer;          /* "HOST:PORT" of the secondary's ferryd */
	const char *remote_name;   /* secondary volume; NULL = same name */
	uint64_t period_s;         /* 0 = 60; at least 1 */
	uint32_t max_inflight;     /* objects in flight; 0 = 8 */
	uint64_t bandwidth;        /* wire bytes per second; 0 = unlimited */
	bool compress;             /* zstd per data record */
	bool force;                /* accept a non-empty existing secondary */
};

enum repl_role { REPL_ROLE_NONE = 0, REPL_ROLE_PRIMARY, REPL_ROLE_SECONDARY };

/* Loads the pairs of pool_dir (does not start anything).  store is not
 * owned and must outlive the repl.  *out is freed by repl_destroy. */
int repl_create(struct store *store, const char *pool_dir,
                const struct repl_opts *opts, struct repl **out);
/* Starts listening and the pair workers. */
int repl_start(struct repl *r);
/* The bound listen address ("127.0.0.1:40123"), or NULL; owned by r. */
const char *repl_listen_addr(const struct repl *r);
/* Stops every thread and aborts transfers (they resume at the next start
 * from their checkpoints).  Idempotent. */
void repl_stop(struct repl *r);
void repl_destroy(struct repl *r);

/* ---- one function per `ferry pair` verb ------------------------------- */
int repl_pair_create(struct repl *r, const char *name,
                     const struct repl_pair_opts *o, struct sbuf *out);
int repl_pair_list(struct repl *r, bool json, struct sbuf *out);
int repl_pair_status(struct repl *r, const char *name, bool json, struct sbuf *out);
/* Starts a cycle now (after any running one).  With wait, returns once
 * everything written before the call is committed on the secondary (0),
 * or the cycle failed (-EIO etc., reason in out). */
int repl_pair_sync(struct repl *r, const char *name, bool wait, struct sbuf *out);
/* The same in two steps, for callers that report progress while waiting:
 * request a cycle (ticket identifies it), then wait up to timeout_ms at a
 * time; -EINPROGRESS means "not yet" with the running cycle's progress in
 * *done / *total (may be NULL). */
int repl_pair_sync_request(struct repl *r, const char *name, uint64_t *ticket,
                           struct sbuf *out);
int repl_pair_sync_wait(struct repl *r, const char *name, uint64_t ticket,
                        unsigned timeout_ms, uint64_t *done, uint64_t *total,
                        struct sbuf *out);
int repl_pair_pause(struct repl *r, const char *name, struct sbuf *out);
int repl_pair_resume(struct repl *r, const char *name, struct sbuf *out);
/* Compares the last synced snapshot on both sides (md5 + per-object
 * XXH3 digests; only digests cross the link).  *equal tells the outcome
 * when the function returns 0. */
int repl_pair_verify(struct repl *r, const char *name, bool json, bool *equal,
                     struct sbuf *out);
/* Ends the pair on both sides; the secondary keeps its volume (at its last
 * synced snapshot).  Run on a secondary, it ends only the local side. */
int repl_pair_rm(struct repl *r, const char *name, struct sbuf *out);

/* Role changes (docs/PROTOCOL.md section 11).
 * demote (primary): refuses writes from now on, runs a final cycle, tells
 *   the secondary, becomes the secondary-to-be.  After a split brain it
 *   skips the cycle and waits for `resync` on the new primary.
 * promote (secondary): becomes primary; without force only after the
 *   primary demoted; with force the head goes back to the last synced
 *   snapshot and the pair's epoch is bumped so the old primary finds out.
 * resync (primary after a split brain): sends the union of both sides'
 *   changes since the common snapshot to the demoted old primary, which
 *   first keeps its own in a split-brain-<time> snapshot.
 * Each persists its intent first and can be repeated after a crash. */
int repl_pair_demote(struct repl *r, const char *name, struct sbuf *out);
int repl_pair_promote(struct repl *r, const char *name, bool force, struct sbuf *out);
int repl_pair_resync(struct repl *r, const char *name, struct sbuf *out);
/* resync in two steps, like sync: fetch the old primary's divergence and
 * request the cycle (ticket), then repl_pair_sync_wait(ticket). */
int repl_pair_resync_start(struct repl *r, const char *name, uint64_t *ticket,
                           struct sbuf *out);
/* True while a volume must refuse writes: a secondary, or a demoting
 * primary. */
bool repl_volume_read_only(struct repl *r, const char *volume);

/* The role of a volume in a pair, for refusing writes to a secondary. */
enum repl_role repl_volume_role(struct repl *r, const char *volume);
/* True when snapshot snap of volume is one replication needs: the last
 * synced one, a cycle's in-flight target, or a secondary's seed. */
bool repl_snapshot_in_use(struct repl *r, const char *volume, const char *snap);

/* ---- metrics ----------------------------------------------------------- */
/* Buckets of the cycle duration histogram (upper bounds, seconds). */
#define REPL_DUR_BUCKETS 12
extern const double repl_dur_bounds[REPL_DUR_BUCKETS];
/* Every state a pair can show (pair status "state"), NULL-terminated, so
 * that a metric can say 0 for the states it is not in. */
extern const char *const repl_pair_states[];

/* One pair's numbers, copied out under the repl lock.  Counters count
 * since this ferryd started, on the side that reports them: the primary
 * counts the cycles it ran (failed: any attempt that ended in an error,
 * the peer unreachable included), the secondary the cycles it applied. */
struct repl_pair_metrics {
	char name[STORE_NAME_MAX + 1];
	enum repl_role role;
	const char *state;             /* one of repl_pair_states (static) */
	char peer[256];                /* primary: --peer; secondary: the origin */
	char error[512];               /* last failure, "" when fine */
	uint64_t period_s;             /* 0 = not known (a secondary before contact) */
	uint64_t rpo_lag_s;            /* now - time of the last synced snapshot
	                                * (before the first sync: since creation) */
	uint64_t last_sync_time;       /* unix seconds; 0 = never synced */
	uint64_t cycles_ok, cycles_failed;
	uint64_t data_bytes, zero_bytes, wire_bytes;   /* of the cycles ok */
	uint64_t dur[REPL_DUR_BUCKETS + 1];            /* per bucket, not cumulative */
	double dur_sum;                                /* seconds */
};
/* Every pair's numbers; *out is malloc'd (free it), *n may be 0.  Holds
 * the repl lock only while copying (no I/O, no allocation under it beyond
 * the array). */
int repl_metrics(struct repl *r, struct repl_pair_metrics **out, size_t *n);

#endif
