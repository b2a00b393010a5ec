/* Consistency groups: `ferry group create/add/remove/rm/list/info`, and the
 * cut of `ferry snap create GROUP@SNAP` (vol_snap_create_cut).
 *
 * A group is a name and a set of volumes.  Groups and volumes share one
 * namespace; a volume is in at most one group; a grouped volume has no
 * pair of its own (and a volume in a pair joins no group); a volume in a
 * group cannot be removed (`group remove` it first).  The registry lives
 * in the daemon's pool directory, POOL/groups.conf (the state directory of
 * an RBD gateway, like the pairs), replaced atomically on every change
 * (tmp + fsync + rename + fsync of the directory): after a crash it holds
 * the old or the new registry.  Format (docs/FORMAT.md), one group a line:
 *   NAME VOLUME...
 * with '#' comment lines.  What the last cut took (snapshot, time, hold)
 * is kept in memory only.
 */
#include "daemon/daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GROUPS_FILE "groups.conf"
#define GROUPS_MAX_BYTES (1u << 20)
#define GROUP_MAX_MEMBERS STORE_CUT_MAX

struct group {
	char name[STORE_NAME_MAX + 1];
	char (*vols)[STORE_NAME_MAX + 1];
	size_t n_vols;
	/* the last cut, since ferryd started (0: none) */
	uint64_t cut_time;
	uint64_t cut_ns;
	char cut_snap[STORE_NAME_MAX + 1];
};

static pthread_mutex_t g_mu;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static struct group *g_groups;
static size_t g_n;
static bool g_loaded;
static int g_load_err;

static void mu_init(void)
{
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
	pthread_mutex_init(&g_mu, &a);
	pthread_mutexattr_destroy(&a);
}

void daemon_groups_lock(void)
{
	pthread_once(&g_once, mu_init);
	pthread_mutex_lock(&g_mu);
}

void daemon_groups_unlock(void)
{
	pthread_mutex_unlock(&g_mu);
}

static void groups_free(struct group *g, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(g[i].vols);
	free(g);
}

static int add_member(struct group *g, const char *vol)
{
	if (g->n_vols >= GROUP_MAX_MEMBERS)
		return -E2BIG;
	void *p = realloc(g->vols, (g->n_vols + 1) * sizeof(*g->vols));
	if (!p)
		return -ENOMEM;
	g->vols = p;
	snprintf(g->vols[g->n_vols++], STORE_NAME_MAX + 1, "%s", vol);
	return 0;
}

/* Parses groups.conf (text, NUL-terminated) into *out / *n (caller frees
 * with groups_free).  -EIO with the line in *bad_line for anything that
 * breaks the registry's rules. */
static int groups_parse(char *txt, struct group **out, size_t *n, int *bad_line)
{
	struct group *g = NULL;
	size_t ng = 0;
	int line = 0, rc = 0;
	for (char *l = txt, *next; l && *l; l = next) {
		next = strchr(l, '\n');
		if (next)
			*next++ = '\0';
		line++;
		if (l[0] == '#' || l[strspn(l, " \t\r")] == '\0')
			continue;
		struct group *p = realloc(g, (ng + 1) * sizeof(*g));
		if (!p) {
			rc = -ENOMEM;
			break;
		}
		g = p;
		struct group *cur = &g[ng++];
		memset(cur, 0, sizeof(*cur));
		char *s2 = NULL;
		bool first = true;
		for (char *t = strtok_r(l, " \t\r", &s2); t; t = strtok_r(NULL, " \t\r", &s2)) {
			if (!name_valid(t)) {
				rc = -EIO;
				break;
			}
			if (first) {
				snprintf(cur->name, sizeof(cur->name), "%s", t);
				first = false;
				continue;
			}
			/* a volume in one group only, never named like a group */
			for (size_t i = 0; i < ng && !rc; i++) {
				if (!strcmp(g[i].name, t))
					rc = -EIO;
				for (size_t k = 0; k < g[i].n_vols && !rc; k++)
					if (!strcmp(g[i].vols[k], t))
						rc = -EIO;
			}
			if (!rc)
				rc = add_member(cur, t);
			if (rc)
				break;
		}
		for (size_t i = 0; i + 1 < ng && !rc; i++) {
			if (!strcmp(g[i].name, cur->name))
				rc = -EIO;
			for (size_t k = 0; k < g[i].n_vols && !rc; k++)
				if (!strcmp(g[i].vols[k], cur->name))
					rc = -EIO;
		}
		if (rc)
			break;
	}
	if (rc) {
		*bad_line = line;
		groups_free(g, ng);
		return rc == -E2BIG ? -EIO : rc;
	}
	*out = g;
	*n = ng;
	return 0;
}

static void groups_format(const struct group *g, size_t n, struct sbuf *b)
{
	sbuf_puts(b, "# ferry consistency groups: NAME VOLUME... (written by ferryd)\n");
	for (size_t i = 0; i < n; i++) {
		sbuf_puts(b, g[i].name);
		for (size_t k = 0; k < g[i].n_vols; k++)
			sbuf_printf(b, " %s", g[i].vols[k]);
		sbuf_puts(b, "\n");
	}
}

/* Loads the registry once (under g_mu).  0, or the error that makes every
 * group command refuse (a registry that does not parse is never
 * overwritten: the operator fixes it). */
static int load_locked(struct daemon *d)
{
	if (g_loaded)
		return g_load_err;
	char path[PATH_MAX + 32], *txt = NULL;
	size_t len;
	snprintf(path, sizeof(path), "%s/%s", d->pool, GROUPS_FILE);
	int rc = read_file(path, GROUPS_MAX_BYTES, &txt, &len);
	if (rc == -ENOENT) {
		rc = 0;
	} else if (rc == 0) {
		int bad = 0;
		rc = groups_parse(txt, &g_groups, &g_n, &bad);
		if (rc == -EIO)
			log_error("%s: line %d breaks the group rules (a name twice, a volume in two "
			          "groups, or a bad name); group commands refuse until it is fixed",
			          path, bad);
	}
	if (rc && rc != -EIO)
		log_error("%s: %s", path, strerror(-rc));
	free(txt);
	g_loaded = true;
	g_load_err = rc;
	return rc;
}

/* Writes the registry g (n groups) and makes it the current one; on
 * failure nothing changed and g is freed. */
static int save_swap_locked(struct daemon *d, struct group *g, size_t n)
{
	struct sbuf b;
	sbuf_init(&b);
	groups_format(g, n, &b);
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%s", d->pool, GROUPS_FILE);
	int rc = b.err ? -ENOMEM : write_file_atomic(path, b.p, b.len);
	sbuf_free(&b);
	if (rc) {
		log_error("%s: %s", path, strerror(-rc));
		groups_free(g, n);
		return rc;
	}
	groups_free(g_groups, g_n);
	g_groups = g;
	g_n = n;
	return 0;
}

/* A deep copy of the registry, to change and then save_swap_locked. */
static int copy_locked(struct group **out)
{
	struct group *g = calloc(g_n ? g_n : 1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	for (size_t i = 0; i < g_n; i++) {
		g[i] = g_groups[i];
		g[i].vols = NULL;
		g[i].n_vols = 0;
		for (size_t k = 0; k < g_groups[i].n_vols; k++)
			if (add_member(&g[i], g_groups[i].vols[k])) {
				groups_free(g, i + 1);
				return -ENOMEM;
			}
	}
	*out = g;
	return 0;
}

static struct group *find_locked(const char *name)
{
	for (size_t i = 0; i < g_n; i++)
		if (!strcmp(g_groups[i].name, name))
			return &g_groups[i];
	return NULL;
}

static const struct group *group_of_locked(const char *vol)
{
	for (size_t i = 0; i < g_n; i++)
		for (size_t k = 0; k < g_groups[i].n_vols; k++)
			if (!strcmp(g_groups[i].vols[k], vol))
				return &g_groups[i];
	return NULL;
}

bool daemon_group_exists(struct daemon *d, const char *name)
{
	daemon_groups_lock();
	bool yes = load_locked(d) == 0 && find_locked(name);
	daemon_groups_unlock();
	return yes;
}

bool daemon_group_of(struct daemon *d, const char *vol, char grp[STORE_NAME_MAX + 1])
{
	daemon_groups_lock();
	const struct group *g = load_locked(d) == 0 ? group_of_locked(vol) : NULL;
	if (g)
		snprintf(grp, STORE_NAME_MAX + 1, "%s", g->name);
	daemon_groups_unlock();
	return g != NULL;
}

/* Under the groups lock: 0 if name is free for a new group, else the
 * failed request's status (a group or a volume has it). */
static int new_name_fails(struct dreq *r, const char *name)
{
	if (find_locked(name))
		return dreq_fail(r, "group '%s' already exists", name);
	if (store_vol_exists(r->store, name))
		return dreq_fail(r, "'%s' is a volume: groups and volumes share one namespace; "
		                    "choose another group name", name);
	return 0;
}

static int load_or_fail(struct dreq *r)
{
	int rc = load_locked(r->d);
	if (rc)
		return dreq_fail(r, "cannot read %s/%s: %s (see the ferryd log)", r->d->pool,
		                 GROUPS_FILE, rc == -EIO ? "it breaks the group rules" : strerror(-rc));
	return 0;
}

/* May vol join a group?  0, or the exit status after telling the CLI. */
static int member_check(struct dreq *r, const char *vol)
{
	if (find_locked(vol))
		return dreq_fail(r, "'%s' is a consistency group, not a volume", vol);
	if (!store_vol_exists(r->store, vol))
		return dreq_fail(r, "no such volume '%s'", vol);
	const struct group *g = group_of_locked(vol);
	if (g)
		return dreq_fail(r, "volume '%s' is already in group '%s' (a volume belongs to at "
		                    "most one group)", vol, g->name);
	if (daemon_repl_needs(vol, NULL))
		return dreq_fail(r, "volume '%s' is in a replication pair: a grouped volume cannot "
		                    "have a pair of its own (ferry pair rm it first)", vol);
	return 0;
}

static int group_create(struct dreq *r)
{
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	int st = dreq_name_reserved(r, name, "group");
	if (st)
		return st;
	for (size_t i = 0; i < r->cmd->n_rest; i++)
		for (size_t k = 0; k < i; k++)
			if (!strcmp(r->cmd->rest[i], r->cmd->rest[k]))
				return dreq_usage(r, "volume '%s' given twice", r->cmd->rest[i]);
	if (r->cmd->n_rest > GROUP_MAX_MEMBERS)
		return dreq_usage(r, "at most %u volumes in a group", GROUP_MAX_MEMBERS);
	daemon_groups_lock();
	if ((st = load_or_fail(r)))
		goto out;
	if ((st = new_name_fails(r, name)))
		goto out;
	for (size_t i = 0; i < r->cmd->n_rest; i++)
		if ((st = member_check(r, r->cmd->rest[i])))
			goto out;
	struct group *g;
	if (copy_locked(&g)) {
		st = dreq_fail(r, "out of memory");
		goto out;
	}
	struct group *ng = realloc(g, (g_n + 1) * sizeof(*g));
	if (!ng) {
		groups_free(g, g_n);
		st = dreq_fail(r, "out of memory");
		goto out;
	}
	g = ng;
	memset(&g[g_n], 0, sizeof(g[g_n]));
	snprintf(g[g_n].name, sizeof(g[g_n].name), "%s", name);
	for (size_t i = 0; i < r->cmd->n_rest; i++)
		if (add_member(&g[g_n], r->cmd->rest[i])) {
			groups_free(g, g_n + 1);
			st = dreq_fail(r, "out of memory");
			goto out;
		}
	int rc = save_swap_locked(r->d, g, g_n + 1);
	if (rc)
		st = dreq_fail(r, "cannot save the groups: %s", strerror(-rc));
	else
		log_info("created group %s (%zu volume%s)", name, r->cmd->n_rest,
		         r->cmd->n_rest == 1 ? "" : "s");
out:
	daemon_groups_unlock();
	return st;
}

/* add (true) or remove (false) one member. */
static int group_change(struct dreq *r, bool add)
{
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	const char *vol = ctl_pos(r->cmd, "VOLUME")->vol;
	int st;
	daemon_groups_lock();
	if ((st = load_or_fail(r)))
		goto out;
	struct group *cur = find_locked(name);
	if (!cur) {
		st = dreq_fail(r, "no such group '%s'", name);
		goto out;
	}
	size_t gi = (size_t)(cur - g_groups), at = cur->n_vols;
	for (size_t k = 0; k < cur->n_vols; k++)
		if (!strcmp(cur->vols[k], vol))
			at = k;
	if (add && at < cur->n_vols) {
		st = dreq_fail(r, "volume '%s' is already in group '%s'", vol, name);
		goto out;
	}
	if (!add && at == cur->n_vols) {
		st = dreq_fail(r, "volume '%s' is not in group '%s'", vol, name);
		goto out;
	}
	if (add && (st = member_check(r, vol)))
		goto out;
	struct group *g;
	if (copy_locked(&g)) {
		st = dreq_fail(r, "out of memory");
		goto out;
	}
	int rc = 0;
	if (add) {
		rc = add_member(&g[gi], vol);
	} else {
		memmove(&g[gi].vols[at], &g[gi].vols[at + 1],
		        (g[gi].n_vols - at - 1) * sizeof(*g[gi].vols));
		g[gi].n_vols--;
	}
	if (rc) {
		groups_free(g, g_n);
		st = dreq_fail(r, "cannot add '%s': %s", vol, strerror(-rc));
		goto out;
	}
	rc = save_swap_locked(r->d, g, g_n);
	if (rc)
		st = dreq_fail(r, "cannot save the groups: %s", strerror(-rc));
	else
		log_info("group %s: %s volume %s", name, add ? "added" : "removed", vol);
out:
	daemon_groups_unlock();
	return st;
}

static int group_add(struct dreq *r)
{
	return group_change(r, true);
}

static int group_remove(struct dreq *r)
{
	return group_change(r, false);
}

static int group_rm(struct dreq *r)
{
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	int st;
	daemon_groups_lock();
	if ((st = load_or_fail(r)))
		goto out;
	struct group *cur = find_locked(name);
	if (!cur) {
		st = dreq_fail(r, "no such group '%s'", name);
		goto out;
	}
	size_t gi = (size_t)(cur - g_groups);
	struct group *g;
	if (copy_locked(&g)) {
		st = dreq_fail(r, "out of memory");
		goto out;
	}
	free(g[gi].vols);
	memmove(&g[gi], &g[gi + 1], (g_n - gi - 1) * sizeof(*g));
	int rc = save_swap_locked(r->d, g, g_n - 1);
	if (rc)
		st = dreq_fail(r, "cannot save the groups: %s", strerror(-rc));
	else
		log_info("removed group %s (its volumes stay)", name);
out:
	daemon_groups_unlock();
	return st;
}

static void json_group(struct jw *w, const struct group *g, bool cut)
{
	jw_obj_begin(w);
	jw_key(w, "name");
	jw_str(w, g->name);
	jw_key(w, "volumes");
	jw_arr_begin(w);
	for (size_t k = 0; k < g->n_vols; k++)
		jw_str(w, g->vols[k]);
	jw_arr_end(w);
	if (cut) {
		jw_key(w, "last_cut");
		if (!g->cut_time) {
			jw_null(w);
		} else {
			jw_obj_begin(w);
			jw_key(w, "snapshot");
			jw_str(w, g->cut_snap);
			jw_key(w, "time");
			jw_u64(w, g->cut_time);
			jw_key(w, "cut_ms");
			jw_double(w, (double)g->cut_ns / 1e6);
			jw_obj_end(w);
		}
	}
	jw_obj_end(w);
}

static int group_list(struct dreq *r)
{
	bool json = ctl_flag(r->cmd, "json")->set;
	struct sbuf b;
	sbuf_init(&b);
	daemon_groups_lock();
	int st = load_or_fail(r);
	if (!st) {
		if (json) {
			struct jw w;
			jw_init(&w, &b);
			jw_arr_begin(&w);
			for (size_t i = 0; i < g_n; i++)
				json_group(&w, &g_groups[i], false);
			jw_arr_end(&w);
			sbuf_puts(&b, "\n");
		} else {
			sbuf_printf(&b, "%-24s %s\n", "NAME", "VOLUMES");
			for (size_t i = 0; i < g_n; i++) {
				sbuf_printf(&b, "%-24s", g_groups[i].name);
				for (size_t k = 0; k < g_groups[i].n_vols; k++)
					sbuf_printf(&b, "%s%s", k ? "," : " ", g_groups[i].vols[k]);
				sbuf_puts(&b, g_groups[i].n_vols ? "\n" : " -\n");
			}
		}
	}
	daemon_groups_unlock();
	if (st) {
		sbuf_free(&b);
		return st;
	}
	return dreq_out_sbuf(r, &b);
}

static int group_info(struct dreq *r)
{
	const char *name = ctl_pos(r->cmd, "NAME")->str;
	bool json = ctl_flag(r->cmd, "json")->set;
	struct sbuf b;
	sbuf_init(&b);
	daemon_groups_lock();
	int st = load_or_fail(r);
	const struct group *g = st ? NULL : find_locked(name);
	if (!st && !g)
		st = dreq_fail(r, "no such group '%s'", name);
	if (g && json) {
		struct jw w;
		jw_init(&w, &b);
		json_group(&w, g, true);
		sbuf_puts(&b, "\n");
	} else if (g) {
		sbuf_printf(&b, "name:      %s\nvolumes:   ", g->name);
		for (size_t k = 0; k < g->n_vols; k++)
			sbuf_printf(&b, "%s%s", k ? " " : "", g->vols[k]);
		sbuf_puts(&b, g->n_vols ? "\n" : "(none)\n");
		if (g->cut_time) {
			char ts[32];
			struct tm tm;
			time_t t = (time_t)g->cut_time;
			gmtime_r(&t, &tm);
			strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
			sbuf_printf(&b, "last cut:  %s at %s UTC, writes held %.3f ms\n", g->cut_snap, ts,
			            (double)g->cut_ns / 1e6);
		} else {
			sbuf_puts(&b, "last cut:  none since ferryd started\n");
		}
	}
	daemon_groups_unlock();
	if (st) {
		sbuf_free(&b);
		return st;
	}
	return dreq_out_sbuf(r, &b);
}

/* `group clone GROUP@SNAP NEW`: each member M's snapshot SNAP cloned as
 * volume NEW-M (store_vol_clone, O(1) each), then NEW registered as a group
 * of those clones.  No cut is needed: the snapshots of one group snapshot
 * are immutable and were taken at one cut, so the clones are consistent
 * with each other.  Every name is checked before anything is made; all or
 * nothing: when a clone or the registry save fails, the clones made are
 * removed again.  The groups lock is held throughout (recursive), so the
 * membership and the namespace of groups cannot change meanwhile. */
static int group_clone(struct dreq *r)
{
	const struct ctl_val *src = ctl_pos(r->cmd, "GROUP@SNAP");
	const char *name = ctl_pos(r->cmd, "NEWGROUP")->str;
	int st = dreq_name_reserved(r, name, "group");
	if (st)
		return st;
	struct store_caps caps;
	store_get_caps(r->store, &caps);
	if (!caps.clone)
		return dreq_fail(r, "the %s backend does not make clones", caps.backend);
	char(*names)[STORE_NAME_MAX + 1] = NULL;
	size_t made = 0, nv = 0;
	struct group *g = NULL;
	daemon_groups_lock();
	if ((st = load_or_fail(r)))
		goto out;
	const struct group *sg = find_locked(src->vol);
	if (!sg) {
		st = store_vol_exists(r->store, src->vol)
		         ? dreq_fail(r, "'%s' is a volume, not a consistency group (ferry volume "
		                        "clone clones one volume)", src->vol)
		         : dreq_fail(r, "no such group '%s'", src->vol);
		goto out;
	}
	if (!sg->n_vols) {
		st = dreq_fail(r, "group '%s' has no volumes", src->vol);
		goto out;
	}
	if ((st = new_name_fails(r, name)))
		goto out;
	nv = sg->n_vols;
	names = calloc(nv, sizeof(*names));
	if (!names) {
		st = dreq_fail(r, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nv; i++) {
		const char *m = sg->vols[i];
		int w = snprintf(names[i], sizeof(names[i]), "%s-%s", name, m);
		if (w < 0 || (size_t)w >= sizeof(names[i]) || !name_valid(names[i])) {
			st = dreq_fail(r, "clone name '%s-%s' is not a valid volume name (at most %u "
			                  "characters): choose a shorter group name", name, m,
			               CTL_NAME_MAX);
			goto out;
		}
		if (name_reserved(names[i])) {
			st = dreq_name_reserved(r, names[i], "volume");
			goto out;
		}
		if (find_locked(names[i])) {
			st = dreq_fail(r, "clone name '%s' is a consistency group: groups and volumes "
			                  "share one namespace; choose another group name", names[i]);
			goto out;
		}
		if (store_vol_exists(r->store, names[i])) {
			st = dreq_fail(r, "volume '%s' already exists: choose another group name",
			               names[i]);
			goto out;
		}
		struct vol *v;
		int e = vol_open(r->store, m, &v);
		if (e < 0) {
			char msg[2048];
			daemon_open_error(r->store, m, e, msg, sizeof(msg));
			st = dreq_fail(r, "%s", msg);
			goto out;
		}
		struct snap_info si;
		e = vol_snap_get(v, src->snap, &si);
		vol_close(v);
		if (e == -ENOENT) {
			st = dreq_fail(r, "volume '%s' of group '%s' has no snapshot '%s' (a group "
			                  "snapshot is made by ferry snap create %s@SNAP)", m, src->vol,
			               src->snap, src->vol);
			goto out;
		}
		if (e < 0) {
			st = dreq_fail(r, "cannot look up snapshot '%s@%s': %s", m, src->snap,
			               strerror(-e));
			goto out;
		}
	}
	uint64_t t0 = now_mono_ns();
	for (; made < nv; made++) {
		int e = store_vol_clone(r->store, sg->vols[made], src->snap, names[made]);
		if (e < 0) {
			if (e == -EEXIST)
				st = dreq_fail(r, "volume '%s' already exists (made meanwhile)",
				               names[made]);
			else
				st = dreq_fail(r, "cannot clone '%s@%s' to '%s': %s", sg->vols[made],
				               src->snap, names[made], strerror(-e));
			goto out;
		}
	}
	double ms = (double)(now_mono_ns() - t0) / 1e6;
	if (copy_locked(&g)) {
		st = dreq_fail(r, "out of memory");
		goto out;
	}
	struct group *ng = realloc(g, (g_n + 1) * sizeof(*g));
	if (!ng) {
		groups_free(g, g_n);
		g = NULL;
		st = dreq_fail(r, "out of memory");
		goto out;
	}
	g = ng;
	memset(&g[g_n], 0, sizeof(g[g_n]));
	snprintf(g[g_n].name, sizeof(g[g_n].name), "%s", name);
	for (size_t i = 0; i < nv; i++)
		if (add_member(&g[g_n], names[i])) {
			groups_free(g, g_n + 1);
			g = NULL;
			st = dreq_fail(r, "out of memory");
			goto out;
		}
	int rc = save_swap_locked(r->d, g, g_n + 1); /* frees g on failure */
	g = NULL;
	if (rc) {
		st = dreq_fail(r, "cannot save the groups: %s", strerror(-rc));
		goto out;
	}
	log_info("cloned group %s@%s to group %s (%zu volumes) in %.2f ms", src->vol, src->snap,
	         name, nv, ms);
	dreq_printf(r, "group %s: %zu clone%s of %s@%s (%.2f ms):", name, nv, nv == 1 ? "" : "s",
	            src->vol, src->snap, ms);
	for (size_t i = 0; i < nv; i++)
		dreq_printf(r, " %s", names[i]);
	dreq_printf(r, "; the snapshots are kept while the clones depend on them\n");
	made = 0; /* keep them */
out:
	/* all or nothing: remove the clones made before the failure */
	for (size_t i = made; i-- > 0;) {
		int e = store_vol_remove(r->store, names[i], true);
		if (e < 0)
			log_error("group clone %s: cannot remove clone %s again: %s", name, names[i],
			          strerror(-e));
	}
	daemon_groups_unlock();
	free(names);
	return st;
}

int daemon_group_snap(struct dreq *r, const char *name, const char *snap)
{
	int st;
	struct vol **v = NULL;
	size_t n = 0;
	daemon_groups_lock();
	if ((st = load_or_fail(r)))
		goto out;
	struct group *g = find_locked(name);
	if (!g) {
		st = dreq_fail(r, "no such group '%s'", name);
		goto out;
	}
	if (!g->n_vols) {
		st = dreq_fail(r, "group '%s' has no volumes", name);
		goto out;
	}
	v = calloc(g->n_vols, sizeof(*v));
	if (!v) {
		st = dreq_fail(r, "out of memory");
		goto out;
	}
	for (; n < g->n_vols; n++)
		if (dreq_open_vol(r, g->vols[n], NULL, &v[n])) {
			st = 1;
			goto out;
		}
	/* The membership cannot change during the cut: the lock is held. */
	uint64_t hold = 0;
	int e = vol_snap_create_cut(v, n, snap, &hold);
	if (e == -EEXIST) {
		st = dreq_fail(r, "snapshot '%s' already exists on a volume of group '%s'", snap, name);
	} else if (e < 0) {
		st = dreq_fail(r, "cannot snapshot group '%s' as '%s': %s (no member kept it)", name,
		               snap, strerror(-e));
	} else {
		g->cut_time = now_wall_s();
		g->cut_ns = hold;
		snprintf(g->cut_snap, sizeof(g->cut_snap), "%s", snap);
		log_info("group %s: snapshot %s of %zu volumes at one cut, writes held %.3f ms", name,
		         snap, n, (double)hold / 1e6);
		dreq_printf(r, "%s@%s: %zu volume%s at one cut; writes held %.3f ms\n", name, snap, n,
		            n == 1 ? "" : "s", (double)hold / 1e6);
	}
out:
	daemon_groups_unlock();
	for (size_t i = 0; i < n; i++)
		vol_close(v[i]);
	free(v);
	return st;
}

const struct dgroup dgroup_group = {
	"group",
	(const struct dgroup_cmd[]){
		{"create", group_create},
		{"add", group_add},
		{"remove", group_remove},
		{"rm", group_rm},
		{"list", group_list},
		{"info", group_info},
		{"clone", group_clone},
		{NULL, NULL},
	},
};
