/* repl scheduler and threads: level 4 of src/repl (see pair.h), the top.
 * Only this layer starts cycles and threads.  Private to src/repl. */
#ifndef FERRY_REPL_SCHED_H
#define FERRY_REPL_SCHED_H

#include "repl/engine.h"

/* sched.c: a small fixed pool of workers (max_transfers + 2) that runs the
 * due jobs of every pair: cycles (at most max_transfers at once),
 * heartbeats, and the state changes a clock makes (peer timeouts).  An
 * idle pair costs no thread, only a few comparisons per wake-up. */
int sched_start(struct repl *r);
/* Joins the workers (r->stopping is set and broadcast by the caller). */
void sched_stop(struct repl *r);

/* callback.c: under mu, starts the call-back threads p needs (a secondary
 * on a site without --listen whose primary's address is known), or the one
 * that tells the primary this site's --listen once (after a start or a
 * demote); they end by themselves when p no longer needs them. */
void callback_update(struct repl *r, struct pair *p);

/* listen.c: accepting peers on r->listen_req (the one accept loop), one
 * thread per connection; the limits on connections that have not
 * authenticated (pair.h UNAUTH_*, HS_TIMEOUT_MS). */
int listener_start(struct repl *r);
void listener_stop(struct repl *r);
/* Under mu: aborts the server connections (at stop). */
void listener_abort_conns(struct repl *r);
/* Frees the admission state (after repl_stop: no connection thread is
 * left). */
void listener_free(struct repl *r);

#endif
