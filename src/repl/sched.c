/* repl scheduler: the one place that starts cycles.
 *
 * A fixed pool of workers shares one view of every pair (under r->mu).  A
 * worker that wakes scans the pairs: it derives the states a clock changes
 * (a peer timeout running out: peer-down), keeps the call-back threads of
 * secondaries going, and takes the most pressing job of a primary that is
 * not busy: a cycle that is due (requested, or its period is up, while a
 * transfer slot is free) or a heartbeat.  Otherwise it sleeps until the
 * earliest due time.  A pair runs at most one job at a time; the verbs
 * that need a pair to themselves (demote, rm, promote) keep jobs off with
 * pair_exclusive_begin().
 */
#include "repl/sched.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/common.h"

struct sched {
	unsigned n;
	pthread_t th[64];
};

enum job { JOB_NONE, JOB_CYCLE, JOB_PROBE };

/* Under mu. */
static bool cycle_due(const struct pair *p, uint64_t now)
{
	enum pair_phase ph = p->rec.phase;
	/* Requests: pair sync, a demote's final cycle, a resync. */
	if (p->sync_req > p->sync_taken &&
	    (ph == PH_PRIMARY || ph == PH_DEMOTING || ph == PH_RESYNCING))
		return true;
	return ph == PH_PRIMARY && now >= p->next_due_ns;
}

/* Under mu: primaries check their peer between cycles, paused or split
 * brained too (the other side learns of a split brain that way). */
static bool probes(const struct pair *p)
{
	enum pair_phase ph = p->rec.phase;
	return ph == PH_PRIMARY || ph == PH_PAUSED || ph == PH_SPLIT_BRAIN;
}

static unsigned backoff_s(unsigned failures)
{
	unsigned sh = MIN(failures - 1, 6u);
	return (unsigned)MIN(1ull << sh, (uint64_t)REPL_BACKOFF_MAX_S);
}

/* Under mu: what a cycle's end means for the schedule. */
static void cycle_done(struct pair *p, int rc, uint64_t started)
{
	struct repl *r = p->r;
	uint64_t now = now_mono_ns();
	if (rc == SEND_SKIPPED || rc == SEND_SKIPPED_CHECKED) {
		/* Nothing had changed.  Maybe a heartbeat with SYNCED went
		 * instead (its outcome is recorded like any heartbeat's). */
		if (rc == SEND_SKIPPED_CHECKED)
			p->next_probe_ns = now + pair_heartbeat_ns(p);
		p->next_due_ns = started + p->rec.period_s * 1000000000ull;
		p->running = false;
		return;
	}
	/* A cycle is contact enough: the next heartbeat is a full interval on. */
	p->next_probe_ns = now + pair_heartbeat_ns(p);
	bool stopped = r->stopping || p->removed || p->exclusive ||
	               p->rec.phase == PH_PAUSED || !pair_phase_primary(p->rec.phase);
	if (rc == 0) {
		/* Cycles start one period apart; one that outlasts the period is
		 * followed right away, never overlapped. */
		p->next_due_ns = started + p->rec.period_s * 1000000000ull;
	} else if (rc == -ECANCELED && stopped) {
		p->next_due_ns = now;
	} else {
		p->failures++;
		p->counters.cycles_failed++;
		unsigned b = backoff_s(p->failures);
		p->next_due_ns = now + b * 1000000000ull;
		p->sync_failed = p->sync_req;
		/* A fresh `pair sync` request after a failure retries now. */
		p->sync_taken = p->sync_req;
		log_warn("repl: pair %s: cycle failed (%s); retry in %u s", p->rec.name, p->error, b);
	}
	p->running = false;
	(void)pair_change(p, NULL, rc < 0 && !stopped ? p->error : NULL, NULL, 0);
}

static void *worker_main(void *arg)
{
	struct repl *r = arg;
	pthread_mutex_lock(&r->mu);
	while (!r->stopping) {
		uint64_t now = now_mono_ns();
		uint64_t wake = now + 1000000000ull;
		struct pair *job = NULL;
		enum job kind = JOB_NONE;
		for (struct pair *p = r->pairs; p; p = p->next) {
			if (p->removed)
				continue;
			/* States a clock changes (a peer timeout ran out). */
			pair_refresh(p, now);
			wake = MIN(wake, pair_next_state_change(p));
			callback_update(r, p);
			if (!pair_phase_primary(p->rec.phase) || p->busy || p->exclusive)
				continue;
			if (cycle_due(p, now)) {
				if (!job && r->transfers < r->max_transfers) {
					job = p;
					kind = JOB_CYCLE;
				}
				continue;
			}
			if (p->rec.phase == PH_PRIMARY)
				wake = MIN(wake, p->next_due_ns);
			if (!probes(p))
				continue;
			if (now >= p->next_probe_ns) {
				if (!job) {
					job = p;
					kind = JOB_PROBE;
				}
			} else {
				wake = MIN(wake, p->next_probe_ns);
			}
		}
		if (!job) {
			cond_wait_until(r, wake);
			continue;
		}
		job->busy = true;
		pair_get(job);
		bool quiet = false;
		if (kind == JOB_CYCLE) {
			r->transfers++;
			pthread_mutex_unlock(&r->mu);
			int rc = send_cycle(job);
			pthread_mutex_lock(&r->mu);
			r->transfers--;
			cycle_done(job, rc, now);
			/* A skipped cycle changed nothing anyone waits for, unless
			 * a verb waits for the pair or a cycle for the slot: the
			 * other workers sleep on (50 idle pairs at 5 s would wake
			 * every worker 10 times a second for nothing). */
			quiet = rc == SEND_SKIPPED && !job->exclusive &&
			        r->transfers + 1 < r->max_transfers;
		} else {
			job->next_probe_ns = now + pair_heartbeat_ns(job);
			pthread_mutex_unlock(&r->mu);
			role_probe(job);
			pthread_mutex_lock(&r->mu);
		}
		job->busy = false;
		pair_put(job);
		if (!quiet)
			pthread_cond_broadcast(&r->cv);
		/* Read-only notifications a job queued (a split brain fences). */
		pairs_unlock(r);
		pthread_mutex_lock(&r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	OPENSSL_thread_stop(); /* see callback_main */
	return NULL;
}

int sched_start(struct repl *r)
{
	struct sched *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	r->sched = s;
	unsigned want = MIN(r->max_transfers + 2, (unsigned)ARRAY_SIZE(s->th));
	for (unsigned i = 0; i < want; i++) {
		int rc = pthread_create(&s->th[i], NULL, worker_main, r);
		if (rc) {
			log_error("repl: cannot start a scheduler worker: %s", strerror(rc));
			if (!s->n)
				return -rc;
			break;
		}
		s->n++;
	}
	return 0;
}

void sched_stop(struct repl *r)
{
	struct sched *s = r->sched;
	if (!s)
		return;
	for (unsigned i = 0; i < s->n; i++)
		pthread_join(s->th[i], NULL);
	free(s);
	r->sched = NULL;
}
