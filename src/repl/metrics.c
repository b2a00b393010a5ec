/* Per-pair numbers for the daemon's /metrics (repl_metrics): counters kept
 * in struct pair (pair_count_cycle, called where a cycle commits or fails
 * in engine_send.c and engine_recv.c) and the live status, copied out under
 * the repl lock. */
#include "repl/engine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const double repl_dur_bounds[REPL_DUR_BUCKETS] = {
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
};

/* What pair_state() yields, plus the states of the state machine to come
 * (error and peer-down), so that dashboards and alerts can name them now. */
const char *const repl_pair_states[] = {
	"initial-sync", "idle", "syncing", "paused", "error", "peer-down",
	"split-brain", "demoting", "resyncing", NULL,
};

void pair_count_cycle(struct pair *p, const struct cycle_stats *st)
{
	if (!st) {
		p->ctr.failed++;
		return;
	}
	p->ctr.ok++;
	p->ctr.data_bytes += st->data_bytes;
	p->ctr.zero_bytes += st->zero_bytes;
	p->ctr.wire_bytes += st->wire_bytes;
	unsigned b = 0;
	while (b < REPL_DUR_BUCKETS && st->seconds > repl_dur_bounds[b])
		b++;
	p->ctr.dur[b]++;
	p->ctr.dur_sum += st->seconds;
}

int repl_metrics(struct repl *r, struct repl_pair_metrics **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&r->mu);
	size_t k = 0;
	for (struct pair *p = r->pairs; p; p = p->next)
		k += !p->removed;
	struct repl_pair_metrics *a = calloc(k ? k : 1, sizeof(*a));
	if (!a) {
		pthread_mutex_unlock(&r->mu);
		return -ENOMEM;
	}
	uint64_t now = now_wall_s();
	size_t i = 0;
	for (struct pair *p = r->pairs; p && i < k; p = p->next) {
		if (p->removed)
			continue;
		struct repl_pair_metrics *m = &a[i++];
		snprintf(m->name, sizeof(m->name), "%s", p->name);
		m->role = p->role;
		m->state = pair_state(p);
		snprintf(m->peer, sizeof(m->peer), "%s", p->peer);
		snprintf(m->error, sizeof(m->error), "%s", p->error);
		m->period_s = p->period_s;
		/* as `pair status`: what a failover would lose */
		uint64_t ref = p->last_cycle ? p->last_time : p->created;
		m->rpo_lag_s = now > ref ? now - ref : 0;
		m->last_sync_time = p->last_cycle ? p->last_time : 0;
		m->cycles_ok = p->ctr.ok;
		m->cycles_failed = p->ctr.failed;
		m->data_bytes = p->ctr.data_bytes;
		m->zero_bytes = p->ctr.zero_bytes;
		m->wire_bytes = p->ctr.wire_bytes;
		memcpy(m->dur, p->ctr.dur, sizeof(m->dur));
		m->dur_sum = p->ctr.dur_sum;
	}
	pthread_mutex_unlock(&r->mu);
	*out = a;
	*n = i;
	return 0;
}
