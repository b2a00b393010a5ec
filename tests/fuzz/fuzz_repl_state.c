/* libFuzzer target: the replication engine's persisted state, as read back
 * after a restart: POOL/pairs/NAME.pair (pair_parse() in src/repl/engine.c)
 * and the secondary's checkpoint POOL/pairs/NAME.ckpt (ckpt_load() in
 * src/repl/engine_recv.c).  Both are static, hence the #include of the
 * source files; read_file and write_file_atomic are redirected to memory so
 * no file is touched.
 *
 * Input: byte 0 even = a .pair file, odd = a .ckpt file; the rest is the
 * file's content.
 *
 * Properties checked: no memory error; an accepted file gives valid names;
 * saving what was loaded (pair_save(), ckpt_save()) and loading that again
 * gives the same state, so a restart never changes a pair. */
#include <stddef.h>
#include <stdint.h>

#define read_file fuzz_read_file
#define write_file_atomic fuzz_write_file_atomic
#include "repl/engine.c"
#include "repl/engine_recv.c"
#undef read_file
#undef write_file_atomic

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the next read_file returns, and what the last write wrote. */
static const uint8_t *g_in;
static size_t g_in_len;
static char g_saved[1 << 16];
static size_t g_saved_len;

int fuzz_read_file(const char *path, size_t max, char **out, size_t *len)
{
	(void)path;
	if (g_in_len > max)
		return -EFBIG;
	char *t = malloc(g_in_len + 1);
	if (!t)
		return -ENOMEM;
	memcpy(t, g_in, g_in_len);
	t[g_in_len] = '\0';
	*out = t;
	*len = g_in_len;
	return 0;
}

int fuzz_write_file_atomic(const char *path, const void *p, size_t len)
{
	(void)path;
	if (len > sizeof(g_saved))
		abort();
	memcpy(g_saved, p, len);
	g_saved_len = len;
	return 0;
}

static bool same_pair(const struct pair *a, const struct pair *b)
{
	return !strcmp(a->name, b->name) && !strcmp(a->id, b->id) && a->role == b->role &&
	       !strcmp(a->peer, b->peer) && !strcmp(a->remote, b->remote) &&
	       a->period_s == b->period_s && a->max_inflight == b->max_inflight &&
	       a->bandwidth == b->bandwidth && a->compress == b->compress &&
	       a->paused == b->paused && a->created == b->created &&
	       !strcmp(a->seed_snap, b->seed_snap) && a->last_cycle == b->last_cycle &&
	       !strcmp(a->last_snap, b->last_snap) && a->last_time == b->last_time &&
	       a->cur_cycle == b->cur_cycle && !strcmp(a->cur_snap, b->cur_snap) &&
	       a->cur_time == b->cur_time && a->has_stats == b->has_stats &&
	       (!a->has_stats ||
	        (a->stats.number == b->stats.number && a->stats.extents == b->stats.extents &&
	         a->stats.data_bytes == b->stats.data_bytes &&
	         a->stats.zero_bytes == b->stats.zero_bytes &&
	         a->stats.wire_bytes == b->stats.wire_bytes));
	/* stats.seconds is written with 3 decimals: not compared */
}

static void fuzz_pair(struct repl *r, const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	struct pair *p = pair_alloc(r);
	if (!p)
		abort();
	if (pair_parse(p, text) == 0) {
		if (!name_valid(p->name) || !p->id[0] ||
		    (p->role != REPL_ROLE_PRIMARY && p->role != REPL_ROLE_SECONDARY))
			abort();
		g_saved_len = 0;
		if (pair_save(p) < 0)
			abort();
		struct pair *q = pair_alloc(r);
		if (!q)
			abort();
		char *again = malloc(g_saved_len + 1);
		if (!again)
			abort();
		memcpy(again, g_saved, g_saved_len);
		again[g_saved_len] = '\0';
		if (pair_parse(q, again) < 0 || !same_pair(p, q))
			abort(); /* a saved pair must load back unchanged */
		free(again);
		pair_put(q);
	}
	pair_put(p);
	free(text);
}

static void fuzz_ckpt(struct repl *r, const uint8_t *data, size_t size)
{
	struct ckpt c, c2;
	g_in = data;
	g_in_len = size;
	if (ckpt_load(r, "vol", &c) < 0)
		return;
	if ((c.base[0] && !name_valid(c.base)) || !name_valid(c.target))
		abort();
	g_saved_len = 0;
	if (ckpt_save(r, "vol", &c) < 0)
		abort();
	g_in = (const uint8_t *)g_saved;
	g_in_len = g_saved_len;
	if (ckpt_load(r, "vol", &c2) < 0 || c.cycle != c2.cycle || strcmp(c.base, c2.base) ||
	    strcmp(c.target, c2.target) || c.next_objno != c2.next_objno ||
	    c.done_objects != c2.done_objects)
		abort(); /* a saved checkpoint must load back unchanged */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct repl r;
	if (!r.pairs_dir[0]) {
		log_set_level(LOG_ERROR);
		snprintf(r.pairs_dir, sizeof(r.pairs_dir), "/nonexistent/pairs");
	}
	if (size < 1)
		return 0;
	if (data[0] & 1)
		fuzz_ckpt(&r, data + 1, size - 1);
	else
		fuzz_pair(&r, data + 1, size - 1);
	return 0;
}
