/* repl record: the persisted state of a pair as a plain value, and the
 * rules of how it may change.  The bottom layer of src/repl: pure
 * functions only (no I/O, no allocation, no globals, no locks), so the
 * codecs are fuzzed (tests/fuzz/fuzz_repl_state.c) and the transition
 * rules are unit-tested exhaustively (tests/repl/test_repl_rec.c).
 *
 * Three small text files per pair, each "key=value" lines:
 *   POOL/pairs/NAME.pair  the record (struct pair_rec)
 *   POOL/pairs/NAME.ckpt  a secondary's resume checkpoint (struct ckpt)
 *   POOL/pairs/NAME.base  after `pair rm`: the snapshot kept for re-pairing
 *                          (struct pair_base)
 * docs/DESIGN.md "Pair states" has the table of phases and transitions.
 * Private to src/repl.
 */
#ifndef FERRY_REPL_REC_H
#define FERRY_REPL_REC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "repl/repl.h"

#define REC_NAME_MAX 64   /* as name_valid() and STORE_NAME_MAX */
#define REC_TEXT_MAX 255  /* peers, reasons: as WIRE_TEXT_MAX */
#define REC_FILE_MAX 8192 /* a formatted record always fits */

#define REC_DEFAULT_PERIOD 60
#define REC_DEFAULT_INFLIGHT 8
/* A peer timeout of 0 means the default: max(3 x period, 30 s). */
#define REC_MIN_PEER_TIMEOUT 30
/* Recovery points a secondary keeps (pair create/set --keep N). */
#define REC_DEFAULT_KEEP 1
#define REC_KEEP_MAX 10000
/* Member volumes of a group pair's record (issue 12; group pairs are not
 * built yet: this build writes no record with members and refuses to
 * load one, pairs_load). */
#define REC_MEMBERS_MAX 32

/* The durable part of a pair's state: its role and where it stands in a
 * role change.  The visible state (idle, syncing, error, peer-down, ...)
 * adds what is only known at run time; see pair_state_of(). */
enum pair_phase {
	PH_NONE = 0,      /* no record: before create, after rm */
	PH_PRIMARY,       /* cycles run on their period */
	PH_PAUSED,        /* primary, no cycles (pair pause) */
	PH_DEMOTING,      /* primary refusing writes, final cycle, telling the peer */
	PH_SPLIT_BRAIN,   /* primary that met another primary: no cycle runs */
	PH_RESYNCING,     /* primary sending the union of both divergences */
	PH_SECONDARY,     /* receives cycles; read-only */
	PH_PEER_DEMOTED,  /* secondary whose primary demoted: promote takes over */
	PH_NEEDS_RESYNC,  /* demoted after a split brain: waits for a resync */
	PH_COUNT
};

struct rec_stats {
	uint64_t number;
	uint64_t extents;
	uint64_t data_bytes;   /* changed bytes sent as data */
	uint64_t zero_bytes;   /* changed bytes sent as zero records */
	uint64_t wire_bytes;   /* bytes on the link this cycle, both ways */
	double seconds;        /* kept to milliseconds */
};

/* A pair is named after its local volume today (volume == name); the
 * record keeps the two apart so that a pair can later cover several
 * member volumes (consistency groups). */
struct pair_rec {
	enum pair_phase phase;
	char name[REC_NAME_MAX + 1];
	char volume[REC_NAME_MAX + 1];
	char id[REC_NAME_MAX + 1];           /* random, the same on both sites */
	char peer[REC_TEXT_MAX + 1];         /* primary: where to dial ("" = the peer
	                                      * calls in); secondary: the origin */
	char remote[REC_NAME_MAX + 1];       /* primary: the secondary volume;
	                                      * secondary: the primary's pair name */
	char peer_addr[REC_TEXT_MAX + 1];    /* the other site's --listen */
	bool peer_fixed;                     /* peer_addr is the operator's --peer */
	/* settings (pair create / pair set; a secondary mirrors its primary's) */
	uint64_t period_s;
	uint64_t bandwidth;                  /* bytes/s, 0 = unlimited */
	uint32_t max_inflight;
	bool compress;
	uint64_t peer_timeout_s;             /* 0 = the default */
	enum repl_split_policy split_policy;
	uint32_t keep;                       /* recovery points on the secondary, >= 1 */
	uint64_t keep_for_s;                 /* and those younger than this; 0 = none */
	/* cycles */
	uint64_t created;
	char seed_snap[REC_NAME_MAX + 1];    /* secondary: empty base of the initial sync */
	uint64_t last_cycle;                 /* 0 = never synced */
	char last_snap[REC_NAME_MAX + 1];
	uint64_t last_time;                  /* primary's snapshot time of last_cycle */
	uint64_t cur_cycle;                  /* primary: cycle in flight (0 = none) */
	char cur_snap[REC_NAME_MAX + 1];
	uint64_t cur_time;
	bool has_stats;
	struct rec_stats stats;              /* of the last committed cycle */
	/* role changes */
	uint64_t epoch;                      /* bumped by promote */
	uint64_t peer_epoch;                 /* split brain: the epoch the other
	                                      * primary claimed (fencing) */
	uint64_t peer_demoted_cycle;         /* PEER_DEMOTED: its last synced cycle */
	char common_snap[REC_NAME_MAX + 1];  /* newest snapshot both sides hold */
	char sb_snap[REC_NAME_MAX + 1];      /* split-brain-<time>: our divergence */
	char reason[REC_TEXT_MAX + 1];       /* why the split brain */
	/* recovery points */
	uint64_t pinned_cycle;               /* the operator's: cycle snapshots up to
	                                      * this one are never dropped by retention
	                                      * (promote --at left them); 0 = none */
	/* group pair: the member volumes its last committed cycle covered
	 * (distinct, valid names); 0 = a volume pair.  A record with members
	 * is written as version 3, which a ferry of before refuses. */
	uint32_t n_members;
	char members[REC_MEMBERS_MAX][REC_NAME_MAX + 1];
};

/* A secondary's resume point (written after vol_flush only). */
struct ckpt {
	uint64_t cycle;
	char base[REC_NAME_MAX + 1];
	char target[REC_NAME_MAX + 1];
	uint64_t next_objno;
	uint64_t done_objects;
};

/* What `pair rm` keeps on each side for a later `pair create` to start
 * from instead of a full copy: the last synced snapshot and the identity
 * of the pair that made it. */
struct pair_base {
	char snap[REC_NAME_MAX + 1];
	char pair_id[REC_NAME_MAX + 1];
	uint64_t cycle;
	uint64_t time;
	char peer_volume[REC_NAME_MAX + 1];
};

/* ---- phases ----------------------------------------------------------- */
const char *pair_phase_name(enum pair_phase ph);          /* "split-brain" */
int pair_phase_parse(const char *s, enum pair_phase *out); /* 0 or -EINVAL */
/* PRIMARY .. RESYNCING: cycles go from here to the peer. */
bool pair_phase_primary(enum pair_phase ph);
/* Whether a transition between two phases is legal at all (the table of
 * docs/DESIGN.md); PH_NONE stands for "no record". */
bool pair_phase_legal(enum pair_phase from, enum pair_phase to);

/* ---- the record ------------------------------------------------------- */
/* A record as pair create makes it: defaults filled in. */
void pair_rec_init(struct pair_rec *r);
/* Retention of a recovery point: whether the cycle snapshot of `cycle`
 * (<= r->last_cycle), with `newer` synced points after it and created
 * age_s seconds ago, stays.  A primary keeps only its last synced one
 * (what the next cycle needs); a secondary the last `keep` and those
 * younger than `keep_for_s`; both what promote --at pinned. */
bool pair_point_kept(const struct pair_rec *r, uint64_t cycle, uint64_t newer,
                     uint64_t age_s);
/* Whether r is a consistent record (names valid, settings in range, cycle
 * fields agree, role fields present).  0, or -EINVAL with the reason. */
int pair_rec_valid(const struct pair_rec *r, char *why, size_t n);
/* The one check of every change: from (NULL = no record yet) may become to
 * (phase PH_NONE = removal).  0, or -EINVAL with the reason in why. */
int pair_rec_check(const struct pair_rec *from, const struct pair_rec *to, char *why,
                   size_t n);
/* The effective peer timeout: the setting, or max(3 x period, 30 s). */
uint64_t pair_rec_peer_timeout(const struct pair_rec *r);
/* True when the volume must refuse writes from clients: a secondary or a
 * demoting primary. */
bool pair_rec_read_only(const struct pair_rec *r);
/* True when the LUNs of a primary that learnt another site holds a newer
 * epoch must refuse writes (split-brain policy fence). */
bool pair_rec_fenced(const struct pair_rec *r);
bool pair_rec_equal(const struct pair_rec *a, const struct pair_rec *b);
/* Copies src into a text field (cap bytes) with control characters made
 * '?', so that what came from the network always fits the file format. */
void rec_text(char *dst, size_t cap, const char *src);

/* Text form.  parse reads version 1 (the booleans of before), 2 and 3
 * (2 with the members line of a group pair);
 * returns 0 with *out filled and valid, or -EINVAL.  format returns the
 * length written (NUL-terminated) or -ENOSPC; parse(format(r)) == r. */
int pair_rec_parse(const char *text, size_t len, struct pair_rec *out);
int pair_rec_format(const struct pair_rec *r, char *buf, size_t cap);

int ckpt_parse(const char *text, size_t len, struct ckpt *out);
int ckpt_format(const struct ckpt *c, char *buf, size_t cap);
int pair_base_parse(const char *text, size_t len, struct pair_base *out);
int pair_base_format(const struct pair_base *b, char *buf, size_t cap);

/* ---- the visible state -------------------------------------------------- */
/* What only the running daemon knows, as the state derivation needs it. */
struct pair_health {
	bool running;          /* a cycle is transferring */
	unsigned failures;     /* consecutive failed cycles */
	bool peer_down;        /* no contact for longer than the peer timeout */
};
/* After this many failed cycles in a row a pair is in state error even
 * while it retries. */
#define PAIR_ERROR_AFTER 3
enum repl_state pair_state_of(const struct pair_rec *r, const struct pair_health *h);

#endif
