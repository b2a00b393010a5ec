/* repl pairs: registry, the transition function, snapshot and file
 * helpers (level 2, see pair.h). */
#include "repl/pair.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"

/* ---- registry ------------------------------------------------------------ */
struct pair *pair_alloc(struct repl *r)
{
	struct pair *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->r = r;
	p->refs = 1;
	pair_rec_init(&p->rec);
	bucket_init(&p->bucket, 0);
	return p;
}

struct pair *pair_find(struct repl *r, const char *name)
{
	for (struct pair *p = r->pairs; p; p = p->next)
		if (!p->removed && !strcmp(p->rec.name, name))
			return p;
	return NULL;
}

void pair_get(struct pair *p)
{
	p->refs++;
}

void pair_put(struct pair *p)
{
	if (--p->refs)
		return;
	free(p->extra);
	bucket_destroy(&p->bucket);
	free(p);
}

/* ---- files ----------------------------------------------------------------- */
int pair_path(struct repl *r, const char *name, const char *ext, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s.%s", r->pairs_dir, name, ext);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int text_save(struct repl *r, const char *name, const char *ext, const char *text,
                     int n)
{
	char path[4400];
	int rc = n < 0 ? n : pair_path(r, name, ext, path, sizeof(path));
	if (rc == 0)
		rc = write_file_atomic(path, text, (size_t)n);
	return rc;
}

static void file_remove(struct repl *r, const char *name, const char *ext)
{
	char path[4400];
	if (pair_path(r, name, ext, path, sizeof(path)) == 0 && unlink(path) == 0)
		(void)fsync_path(r->pairs_dir);
}

/* Reads POOL/pairs/NAME.EXT into a malloc'd string. */
static int text_load(struct repl *r, const char *name, const char *ext, char **text,
                     size_t *len)
{
	char path[4400];
	int rc = pair_path(r, name, ext, path, sizeof(path));
	return rc < 0 ? rc : read_file(path, REC_FILE_MAX, text, len);
}

int ckpt_save(struct repl *r, const char *name, const struct ckpt *c)
{
	char buf[1024];
	return text_save(r, name, "ckpt", buf, ckpt_format(c, buf, sizeof(buf)));
}

int ckpt_load(struct repl *r, const char *name, struct ckpt *c)
{
	char *text;
	size_t len;
	int rc = text_load(r, name, "ckpt", &text, &len);
	if (rc < 0)
		return rc;
	rc = ckpt_parse(text, len, c);
	free(text);
	return rc;
}

void ckpt_remove(struct repl *r, const char *name)
{
	file_remove(r, name, "ckpt");
}

int base_save(struct repl *r, const char *name, const struct pair_base *b)
{
	char buf[1024];
	return text_save(r, name, "base", buf, pair_base_format(b, buf, sizeof(buf)));
}

int base_load(struct repl *r, const char *name, struct pair_base *b)
{
	char *text;
	size_t len;
	int rc = text_load(r, name, "base", &text, &len);
	if (rc < 0)
		return rc;
	rc = pair_base_parse(text, len, b);
	free(text);
	return rc;
}

void base_remove(struct repl *r, const char *name)
{
	file_remove(r, name, "base");
}

static int rec_write(struct repl *r, const struct pair_rec *rec)
{
	char buf[REC_FILE_MAX];
	return text_save(r, rec->name, "pair", buf, pair_rec_format(rec, buf, sizeof(buf)));
}

/* ---- read-only notifications ---------------------------------------------- */
/* Under mu. */
static void ro_queue(struct repl *r, const char *vol)
{
	r->ro_queued++;
	for (size_t i = 0; i < r->ro_n; i++)
		if (!strcmp(r->ro_queue[i], vol))
			return;
	if (r->ro_n == r->ro_cap) {
		size_t cap = r->ro_cap ? 2 * r->ro_cap : 8;
		char (*q)[REC_NAME_MAX + 1] = realloc(r->ro_queue, cap * sizeof(*q));
		if (!q) {
			log_error("repl: out of memory: exports of %s not refreshed", vol);
			return;
		}
		r->ro_queue = q;
		r->ro_cap = cap;
	}
	snprintf(r->ro_queue[r->ro_n++], REC_NAME_MAX + 1, "%s", vol);
}

void pairs_unlock(struct repl *r)
{
	uint64_t want = r->ro_queued;
	while (r->ro_delivered < want) {
		if (r->ro_busy) {
			pthread_cond_wait(&r->cv, &r->mu);
			continue;
		}
		r->ro_busy = true;
		char (*q)[REC_NAME_MAX + 1] = r->ro_queue;
		size_t n = r->ro_n;
		uint64_t upto = r->ro_queued;
		r->ro_queue = NULL;
		r->ro_n = r->ro_cap = 0;
		pthread_mutex_unlock(&r->mu);
		for (size_t i = 0; i < n; i++)
			if (r->on_ro_change)
				r->on_ro_change(r->ro_ctx, q[i]);
		free(q);
		pthread_mutex_lock(&r->mu);
		r->ro_busy = false;
		r->ro_delivered = upto;
		pthread_cond_broadcast(&r->cv);
	}
	pthread_mutex_unlock(&r->mu);
}

/* ---- health --------------------------------------------------------------- */
uint64_t pair_heartbeat_ns(const struct pair *p)
{
	uint64_t s = pair_rec_peer_timeout(&p->rec) / 3;
	s = MAX(MIN(s, (uint64_t)REPL_HEARTBEAT_MAX_S), (uint64_t)1);
	return s * 1000000000ull;
}

/* Since when the peer has been silent (monotonic ns), for the phases that
 * expect to hear from it; 0 = not watched. */
static uint64_t silent_since(const struct pair *p)
{
	const struct repl *r = p->r;
	if (!r->started || p->removed || p->running)
		return 0;
	if (p->rec.phase != PH_PRIMARY && p->rec.phase != PH_SECONDARY)
		return 0;
	/* A primary whose cycles fail against a peer that answers (wrong
	 * secret, disk full) is in error, not peer-down. */
	if (p->rec.phase == PH_PRIMARY && p->failures && !p->unreached)
		return 0;
	return MAX(p->contact_mono, r->started_mono);
}

static uint64_t timeout_ns(const struct pair *p)
{
	uint64_t t = pair_rec_peer_timeout(&p->rec);
	return t > UINT64_MAX / 1000000000ull ? UINT64_MAX : t * 1000000000ull;
}

struct pair_health pair_health_of(const struct pair *p, uint64_t now)
{
	struct pair_health h = { .running = p->running, .failures = p->failures };
	uint64_t since = silent_since(p);
	h.peer_down = since && now > since && now - since > timeout_ns(p);
	return h;
}

uint64_t pair_next_state_change(const struct pair *p)
{
	uint64_t since = silent_since(p);
	uint64_t t = timeout_ns(p);
	if (!since || since > UINT64_MAX - t - 1)
		return UINT64_MAX;
	return since + t + 1;
}

void pair_refresh(struct pair *p, uint64_t now)
{
	struct pair_health h = pair_health_of(p, now);
	if (p->rec.phase != PH_NONE && pair_state_of(&p->rec, &h) != p->state)
		(void)pair_change(p, NULL, h.peer_down ? "no contact for longer than the peer "
		                  "timeout" : NULL, NULL, 0);
}

uint64_t pair_synced_time(const struct pair *p)
{
	const struct pair_rec *c = &p->rec;
	if (c->last_cycle && p->asof_cycle == c->last_cycle && p->asof_wall > c->last_time)
		return p->asof_wall;
	return c->last_time;
}

void pair_contact(struct pair *p)
{
	p->contact_wall = now_wall_s();
	p->contact_mono = now_mono_ns();
	p->unreached = false;
}

/* ---- the transition function ------------------------------------------------ */
static void log_change(const struct pair *p, enum repl_state from, enum repl_state to,
                       enum pair_phase pfrom, enum pair_phase pto, const char *why)
{
	const char *a = repl_state_name(from), *b = repl_state_name(to);
	if (from == to) {
		/* The same visible state, another phase (secondary ->
		 * peer-demoted): say the phases. */
		a = pair_phase_name(pfrom);
		b = pair_phase_name(pto);
	}
	bool bad = to == REPL_ST_ERROR || to == REPL_ST_PEER_DOWN || to == REPL_ST_SPLIT_BRAIN;
	char ph[80] = "";
	if (from != to && pfrom != pto && pfrom != PH_NONE)
		snprintf(ph, sizeof(ph), " [%s -> %s]", pair_phase_name(pfrom), pair_phase_name(pto));
	log_msg(bad && from != to ? LOG_WARN : LOG_INFO, "pair %s: %s -> %s%s%s%s%s", p->rec.name,
	        a, b, ph, why && *why ? " (" : "", why ? why : "", why && *why ? ")" : "");
}

int pair_change(struct pair *p, const struct pair_rec *next, const char *why, char *err,
                size_t errlen)
{
	struct repl *r = p->r;
	enum pair_phase ph0 = p->rec.phase;
	bool ro0 = ph0 != PH_NONE && pair_rec_read_only(&p->rec);
	bool fe0 = ph0 != PH_NONE && pair_rec_fenced(&p->rec);
	if (next && !pair_rec_equal(&p->rec, next)) {
		char e[300];
		int rc = pair_rec_check(ph0 == PH_NONE ? NULL : &p->rec, next, e, sizeof(e));
		if (rc < 0) {
			log_error("pair %s: change refused: %s", p->rec.name, e);
			if (err)
				snprintf(err, errlen, "pair %s: %s", p->rec.name, e);
			return rc;
		}
		if (next->phase == PH_NONE) {
			file_remove(r, p->rec.name, "pair");
			p->rec.phase = PH_NONE;
		} else {
			rc = rec_write(r, next);
			if (rc < 0) {
				log_error("pair %s: cannot save the pair: %s", p->rec.name,
				          strerror(-rc));
				if (err)
					snprintf(err, errlen, "cannot save pair %s: %s", p->rec.name,
					         strerror(-rc));
				return rc;
			}
			p->rec = *next;
		}
	}
	if (p->rec.phase != PH_NONE) {
		struct pair_health h = pair_health_of(p, now_mono_ns());
		enum repl_state st = pair_state_of(&p->rec, &h);
		if (st != p->state || ph0 != p->rec.phase)
			log_change(p, p->state, st, ph0, p->rec.phase, why);
		p->state = st;
	}
	bool ro1 = p->rec.phase != PH_NONE && pair_rec_read_only(&p->rec);
	bool fe1 = p->rec.phase != PH_NONE && pair_rec_fenced(&p->rec);
	if (ro0 != ro1 || fe0 != fe1)
		ro_queue(r, p->rec.volume);
	if (fe1 && !fe0)
		log_warn("pair %s: FENCED: the LUNs of %s refuse writes (%s); `ferry pair demote "
		         "%s` here ends it", p->rec.name, p->rec.volume, p->rec.reason, p->rec.name);
	pthread_cond_broadcast(&r->cv);
	return 0;
}

int pair_add(struct repl *r, struct pair *p, char *err, size_t errlen)
{
	struct pair_rec first = p->rec;
	p->rec.phase = PH_NONE;
	p->state = REPL_ST_INITIAL_SYNC;
	int rc = pair_change(p, &first, "created", err, errlen);
	if (rc < 0) {
		p->rec = first;
		return rc;
	}
	bucket_set_rate(&p->bucket, p->rec.bandwidth);
	p->next = r->pairs;
	r->pairs = p;
	return 0;
}

int pairs_load(struct repl *r)
{
	DIR *d = opendir(r->pairs_dir);
	if (!d)
		return -errno;
	struct dirent *e;
	int rc = 0;
	pthread_mutex_lock(&r->mu);
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (n < 6 || strcmp(e->d_name + n - 5, ".pair"))
			continue;
		char path[4400];
		snprintf(path, sizeof(path), "%s/%s", r->pairs_dir, e->d_name);
		char *text;
		size_t len;
		rc = read_file(path, REC_FILE_MAX, &text, &len);
		if (rc < 0) {
			log_error("repl: cannot read %s: %s", path, strerror(-rc));
			break;
		}
		struct pair *p = pair_alloc(r);
		if (!p) {
			free(text);
			rc = -ENOMEM;
			break;
		}
		rc = pair_rec_parse(text, len, &p->rec);
		free(text);
		if (rc < 0 || strlen(p->rec.name) + 5 != n || strncmp(p->rec.name, e->d_name, n - 5)) {
			log_error("repl: %s is damaged; pair not loaded", path);
			pair_put(p);
			rc = 0;
			continue;
		}
		if (p->rec.n_members) {
			/* The record format has members (issue 12); the cycles of a
			 * group pair are not built: never run one as a volume pair. */
			log_error("repl: %s is a group pair's record, which this ferry cannot run "
			          "yet; pair not loaded", path);
			pair_put(p);
			continue;
		}
		struct pair_health h = { 0 };
		p->state = pair_state_of(&p->rec, &h);
		bucket_set_rate(&p->bucket, p->rec.bandwidth);
		p->next = r->pairs;
		r->pairs = p;
		log_info("repl: loaded pair %s (%s, last synced cycle %" PRIu64 ")", p->rec.name,
		         pair_phase_name(p->rec.phase), p->rec.last_cycle);
		if (p->rec.phase == PH_RESYNCING) {
			/* The old primary's extent list lived in memory only. */
			struct pair_rec next = p->rec;
			next.phase = PH_SPLIT_BRAIN;
			(void)pair_change(p, &next, "the resync was interrupted by a restart: run "
			                  "`pair resync` again", NULL, 0);
		}
	}
	pairs_unlock(r);
	closedir(d);
	return rc;
}

/* ---- snapshots ------------------------------------------------------------ */
void snap_name(const char *pair, uint64_t cycle, char *out, size_t len)
{
	/* "ferry." + name + "." + 6 digits must stay a valid name (<= 64);
	 * long pair names are shortened and made unique with a CRC. */
	if (strlen(pair) <= 40)
		snprintf(out, len, "ferry.%s.%06" PRIu64, pair, cycle);
	else
		snprintf(out, len, "ferry.%.32s-%08x.%06" PRIu64, pair,
		         crc32c(0, pair, strlen(pair)), cycle);
}

bool snap_is_cycle(const char *pair, const char *snap)
{
	char prefix[REC_NAME_MAX + 8];
	snap_name(pair, 0, prefix, sizeof(prefix));
	size_t plen = strlen(prefix) - 6; /* without the cycle digits */
	return !strncmp(snap, prefix, plen) && snap[plen] &&
	       strspn(snap + plen, "0123456789") == strlen(snap + plen);
}

uint64_t snap_cycle_of(const char *snap)
{
	const char *dot = strrchr(snap, '.');
	uint64_t c = 0;
	if (!dot || !dot[1] || strspn(dot + 1, "0123456789") != strlen(dot + 1) ||
	    strlen(dot + 1) > 18)
		return 0;
	for (const char *d = dot + 1; *d; d++)
		c = c * 10 + (uint64_t)(*d - '0');
	return c;
}

bool pair_snap_is_point(const struct pair_rec *c, const char *snap)
{
	return snap_is_cycle(c->name, snap) || (c->remote[0] && snap_is_cycle(c->remote, snap));
}

bool pair_snap_retained(const struct pair *p, const char *snap)
{
	const struct pair_rec *c = &p->rec;
	uint64_t cy = snap_cycle_of(snap);
	if (!cy || cy > c->last_cycle || !pair_snap_is_point(c, snap))
		return false;
	if (cy <= c->pinned_cycle)
		return true;
	return !pair_phase_primary(c->phase) && (c->keep > 1 || c->keep_for_s);
}

bool pair_snap_needed(const struct pair *p, const char *snap)
{
	const struct pair_rec *c = &p->rec;
	if (!strcmp(snap, c->last_snap) || !strcmp(snap, c->cur_snap) ||
	    !strcmp(snap, c->common_snap) || !strcmp(snap, c->sb_snap) ||
	    (!c->last_cycle && !strcmp(snap, c->seed_snap)))
		return true;
	for (int i = 0; i < HOLD_MAX; i++)
		if (p->holds[i].n && !strcmp(p->holds[i].snap, snap))
			return true;
	return false;
}

int pair_hold(struct pair *p, const char *snap)
{
	int free_slot = -1;
	for (int i = 0; i < HOLD_MAX; i++) {
		if (p->holds[i].n && !strcmp(p->holds[i].snap, snap)) {
			p->holds[i].n++;
			return 0;
		}
		if (!p->holds[i].n && free_slot < 0)
			free_slot = i;
	}
	if (free_slot < 0)
		return -EBUSY;
	snprintf(p->holds[free_slot].snap, sizeof(p->holds[free_slot].snap), "%s", snap);
	p->holds[free_slot].n = 1;
	return 0;
}

void pair_unhold(struct pair *p, const char *snap)
{
	for (int i = 0; i < HOLD_MAX; i++)
		if (p->holds[i].n && !strcmp(p->holds[i].snap, snap)) {
			p->holds[i].n--;
			return;
		}
}

void drop_pair_snaps(struct repl *r, struct pair *p, const char *vol, const char *pair,
                     const char *keep)
{
	struct vol *v;
	if (vol_open(r->store, vol, &v) < 0)
		return;
	struct snap_info *s;
	size_t n;
	if (vol_snap_list(v, &s, &n) == 0) {
		uint64_t now = now_wall_s();
		/* Newest first: a point's rank is the number of synced points
		 * after it (cycle numbers grow with creation). */
		uint64_t newer = 0;
		for (size_t j = n; j-- > 0;) {
			struct snap_info *si = &s[j];
			if (!snap_is_cycle(pair, si->name) || (keep && !strcmp(si->name, keep))) {
				if (keep && !strcmp(si->name, keep))
					newer++;
				continue;
			}
			bool needed = false;
			if (p) {
				uint64_t cy = snap_cycle_of(si->name);
				pthread_mutex_lock(&r->mu);
				needed = pair_snap_needed(p, si->name);
				if (!needed && cy && cy <= p->rec.last_cycle)
					needed = pair_point_kept(&p->rec, cy, newer,
					                         now > si->ctime ? now - si->ctime : 0);
				if (cy && cy <= p->rec.last_cycle)
					newer++;
				pthread_mutex_unlock(&r->mu);
			}
			/* -EBUSY: a point with clones stays (store.h) until they are
			 * removed or flattened; this runs after every commit, so it
			 * goes at the first one after that, and the cycle never fails
			 * for it. */
			if (!needed)
				(void)vol_snap_delete(v, si->name);
		}
		free(s);
	}
	vol_close(v);
}

/* ---- helpers -------------------------------------------------------------- */
int verb_fail(struct repl_err *err, int rc, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return rc;
}

void cond_wait_until(struct repl *r, uint64_t due_mono)
{
	uint64_t now = now_mono_ns();
	uint64_t wait = due_mono > now ? due_mono - now : 0;
	if (wait > 1000000000ull)
		wait = 1000000000ull; /* re-check now and then, cheaply */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t ns = (uint64_t)ts.tv_nsec + wait;
	ts.tv_sec += (time_t)(ns / 1000000000ull);
	ts.tv_nsec = (long)(ns % 1000000000ull);
	pthread_cond_timedwait(&r->cv, &r->mu, &ts);
}

void crash_point(const char *step)
{
	const char *at = getenv("FERRY_TEST_CRASH_AT");
	if (at && !strcmp(at, step)) {
		log_warn("repl: FERRY_TEST_CRASH_AT=%s: exiting now", step);
		_exit(99);
	}
}

void role_msg_fill(const struct pair *p, uint32_t op, struct wire_msg *out)
{
	const struct pair_rec *c = &p->rec;
	struct wire_msg m = { .type = WIRE_ROLE };
	snprintf(m.u.role.volume, sizeof(m.u.role.volume), "%s", c->remote);
	snprintf(m.u.role.pair_id, sizeof(m.u.role.pair_id), "%s", c->id);
	m.u.role.op = op;
	m.u.role.epoch = c->epoch;
	m.u.role.last_cycle = c->last_cycle;
	m.u.role.period_s = c->period_s;
	snprintf(m.u.role.last_snap, sizeof(m.u.role.last_snap), "%s", c->last_snap);
	snprintf(m.u.role.sender_volume, sizeof(m.u.role.sender_volume), "%s", c->name);
	snprintf(m.u.role.addr, sizeof(m.u.role.addr), "%s", p->r->listen_addr);
	if (pair_phase_primary(c->phase)) {
		/* The secondary keeps its primary's settings: its own peer
		 * timeout, and the settings it will use once promoted. */
		m.u.role.has_settings = true;
		m.u.role.peer_timeout_s = c->peer_timeout_s;
		m.u.role.bandwidth = c->bandwidth;
		m.u.role.max_inflight = c->max_inflight;
		m.u.role.settings_flags = (c->compress ? WIRE_RS_COMPRESS : 0) |
		                          (c->split_policy == REPL_SB_KEEP_WRITING
		                               ? WIRE_RS_KEEP_WRITING : 0);
		/* Only when not the default: a peer of before (which rejects
		 * the longer frame) works on as long as nobody keeps more. */
		m.u.role.has_retention = c->keep != 1 || c->keep_for_s;
		m.u.role.keep = c->keep;
		m.u.role.keep_for_s = c->keep_for_s;
	}
	*out = m;
}

void role_info_fill(const struct pair *p, const char *snap, struct wire_msg *out)
{
	const struct pair_rec *c = &p->rec;
	struct wire_msg m = { .type = WIRE_ROLE_INFO };
	m.u.role_info.role = pair_phase_primary(c->phase) ? WIRE_RI_PRIMARY : WIRE_RI_SECONDARY;
	m.u.role_info.flags = (c->phase == PH_DEMOTING ? WIRE_RI_DEMOTED : 0) |
	                      (c->phase == PH_SPLIT_BRAIN || c->phase == PH_RESYNCING ||
	                               c->phase == PH_NEEDS_RESYNC
	                           ? WIRE_RI_SPLIT_BRAIN : 0) |
	                      (c->phase == PH_NEEDS_RESYNC ? WIRE_RI_NEEDS_RESYNC : 0);
	m.u.role_info.epoch = c->epoch;
	m.u.role_info.last_cycle = c->last_cycle;
	snprintf(m.u.role_info.last_snap, sizeof(m.u.role_info.last_snap), "%s", snap);
	*out = m;
}

/* ---- questions from the daemon -------------------------------------------- */
/* Under mu: the pair of a volume, also one whose removal has begun but
 * whose record is still there (a secondary rolling back stays read-only). */
static struct pair *pair_of_volume(struct repl *r, const char *volume)
{
	struct pair *any = NULL;
	for (struct pair *p = r->pairs; p; p = p->next) {
		if (p->rec.phase == PH_NONE || strcmp(p->rec.volume, volume))
			continue;
		if (!p->removed)
			return p;
		any = p;
	}
	return any;
}

enum repl_role repl_volume_role(struct repl *r, const char *volume)
{
	if (!r || !volume)
		return REPL_ROLE_NONE;
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_of_volume(r, volume);
	enum repl_role role = !p ? REPL_ROLE_NONE
	                      : pair_phase_primary(p->rec.phase) ? REPL_ROLE_PRIMARY
	                                                         : REPL_ROLE_SECONDARY;
	pthread_mutex_unlock(&r->mu);
	return role;
}

bool repl_volume_read_only(struct repl *r, const char *volume)
{
	if (!r || !volume)
		return false;
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_of_volume(r, volume);
	bool ro = p && pair_rec_read_only(&p->rec);
	pthread_mutex_unlock(&r->mu);
	return ro;
}

bool repl_volume_fenced(struct repl *r, const char *volume)
{
	if (!r || !volume)
		return false;
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_of_volume(r, volume);
	bool f = p && pair_rec_fenced(&p->rec);
	pthread_mutex_unlock(&r->mu);
	return f;
}

bool repl_snapshot_in_use(struct repl *r, const char *volume, const char *snap)
{
	if (!r || !volume || !snap)
		return false;
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_of_volume(r, volume);
	bool used = p && pair_snap_needed(p, snap);
	pthread_mutex_unlock(&r->mu);
	return used;
}
