/* repl engine: cycles (send.c, recv.c), role changes (role.c), verify
 * (verify.c) and the verbs of repl.h (verbs.c).  Level 3 of src/repl
 * (see pair.h): it calls into pairs and links below it, never into the
 * scheduler above it, which alone starts cycles.  Private to src/repl. */
#ifndef FERRY_REPL_ENGINE_H
#define FERRY_REPL_ENGINE_H

#include "repl/pair.h"

/* ---- send.c: the primary's side of a cycle ---------------------------------- */
/* One cycle of a primary pair: snapshot, count, connect, check roles,
 * stream, commit.  0, or -errno with the reason in p->error.  The caller
 * (the scheduler) holds a transfer slot.  A periodic cycle of an idle
 * pair (nothing touched since the last synced snapshot, the peer takes
 * SYNCED) is skipped: nothing is written or synced, and it returns
 * SEND_SKIPPED (or SEND_SKIPPED_CHECKED when it sent a heartbeat). */
#define SEND_SKIPPED 1
#define SEND_SKIPPED_CHECKED 2   /* skipped, and a heartbeat went instead */
int send_cycle(struct pair *p);
/* Primary: whether nothing changed on p's volume since its last synced
 * snapshot (a metadata check, docs/DESIGN.md "Idle pairs").  Not under mu. */
bool send_idle(struct pair *p);
/* vol_diff(base ("" = creation), target) with the extents of extra
 * (objno = offset, hash = length, sorted by offset) added as DATA, per
 * object in objno order: what a resync must send. */
int diff_union(struct vol *v, uint64_t object_size, const char *base, const char *target,
               const struct wire_digest *extra, size_t n_extra, diff_cb cb, void *ctx);

/* ---- recv.c: serving a peer --------------------------------------------------- */
/* Serves one accepted connection (handshake, then requests).  Returns 1
 * when the link was kept (a call-back offer: the caller must not close
 * it), else 0 (the caller closes it). */
int serve_conn(struct repl *r, struct link *l);
/* Serves requests on an authenticated link until the peer closes it; the
 * first request may take up to first_ms (0 = the link's deadline).  Same
 * return as serve_conn. */
int serve_requests(struct repl *r, struct link *l, int first_ms);

/* ---- role.c ---------------------------------------------------------------- */
/* Primary, before a cycle: exchanges epochs with the peer (ROLE CHECK).
 * 0 = go on; -ESTALE = split brain (recorded in p); other -errno with
 * the reason in err. */
int role_check(struct pair *p, struct link *l, char *err, size_t errlen);
/* Primary, every heartbeat between cycles: one ROLE CHECK so that a split
 * brain or a dead peer shows within seconds.  Records the outcome (contact,
 * p->peer_err). */
void role_probe(struct pair *p);
/* The same for a pair found idle at idle_since (unix s; send_idle): the
 * check carries SYNCED, so that both sites' last sync time advances.  0 =
 * the peer took it; -ENOTSUP = it did not (a peer of before: the cycle
 * must run in full); other -errno = the check failed (reason in err). */
int role_probe_idle(struct pair *p, uint64_t idle_since, char *err, size_t errlen);
/* Serves ROLE on the receiving side of a connection. */
int handle_role(struct repl *r, struct link *l, const struct wire_msg *m);
/* Serves SYNCED (an idle primary's heartbeat) on the secondary. */
int handle_synced(struct repl *r, struct link *l, const struct wire_msg *m);

/* ---- verify.c ---------------------------------------------------------------- */
struct digest_list {
	struct wire_digest *d;
	size_t n, cap;
};
/* md5 of the whole snapshot and XXH3 of every object that is not all
 * zero.  emit (may be NULL) is called per batch; non-zero stops.
 * progress (may be NULL) gets bytes done / total now and then. */
int verify_compute(struct vol *v, const char *snap, uint8_t md5[16],
                   struct digest_list *out,
                   int (*emit)(void *ctx, const struct wire_digest *d, size_t n),
                   void *ctx, repl_progress_fn progress, void *pctx);
/* Serves VERIFY_REQ on the secondary (holding the snapshot meanwhile). */
int handle_verify(struct repl *r, struct link *l, const struct wire_msg *m);

/* ---- verbs.c ------------------------------------------------------------------ */
/* Removes the local side of pair name (the secondary's part of pair rm,
 * PAIR_REMOVE from the primary, or a --force create replacing it).
 * serving: the link of the request that asks (kept open), or NULL. */
int pair_remove_local(struct repl *r, const char *name, struct link *serving,
                      struct repl_removed *res, struct repl_err *err);
/* Under mu: waits until no scheduler job runs for p and keeps new ones off
 * until pair_exclusive_end. */
void pair_exclusive_begin(struct pair *p);
void pair_exclusive_end(struct pair *p);

#endif
