/* libFuzzer target: the replication engine's persisted state, as read back
 * after a restart: the pair record (POOL/pairs/NAME.pair), the secondary's
 * checkpoint (NAME.ckpt) and the snapshot kept for re-pairing (NAME.base).
 * All three are pure codecs in src/repl/rec.c (no I/O, no allocation).
 *
 * Input: byte 0 selects the file: odd = a .ckpt, even with bit 1 set = a
 * .base, else a .pair; the rest is the file's content.
 *
 * Properties checked: no memory error; an accepted file is a valid record
 * (names valid, fields consistent); formatting what was parsed and parsing
 * that again gives the same value and the same bytes, so a restart never
 * changes a pair; the transition check agrees with the phase table for
 * every phase the parsed record could move to. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "repl/rec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_a[REC_FILE_MAX], g_b[REC_FILE_MAX];

static void fuzz_pair(const char *text, size_t len)
{
	struct pair_rec r, q;
	if (pair_rec_parse(text, len, &r) < 0)
		return;
	if (pair_rec_valid(&r, NULL, 0) < 0 || !name_valid(r.name) || !name_valid(r.id))
		abort();
	int n = pair_rec_format(&r, g_a, sizeof(g_a));
	if (n < 0 || pair_rec_parse(g_a, (size_t)n, &q) < 0 || !pair_rec_equal(&r, &q))
		abort(); /* a saved pair must load back unchanged */
	int m = pair_rec_format(&q, g_b, sizeof(g_b));
	if (m != n || memcmp(g_a, g_b, (size_t)n))
		abort();
	/* The transition rules on a real record: a change to another phase
	 * is accepted only where the table says so. */
	char why[300];
	for (int ph = PH_NONE; ph < PH_COUNT; ph++) {
		q = r;
		q.phase = (enum pair_phase)ph;
		int rc = pair_rec_check(&r, &q, why, sizeof(why));
		if (rc == 0 && !pair_phase_legal(r.phase, q.phase))
			abort();
		if (rc < 0 && !why[0])
			abort(); /* a refusal always says why */
	}
	if (pair_rec_check(NULL, &r, why, sizeof(why)) == 0 &&
	    r.phase != PH_PRIMARY && r.phase != PH_SECONDARY)
		abort();
	for (unsigned k = 0; k < 8; k++) {
		struct pair_health h = { .running = k & 1, .failures = (k & 2) ? PAIR_ERROR_AFTER : 0,
		                         .peer_down = k & 4 };
		if ((unsigned)pair_state_of(&r, &h) >= REPL_ST_COUNT)
			abort();
	}
	(void)pair_rec_peer_timeout(&r);
	(void)pair_rec_fenced(&r);
}

static void fuzz_ckpt(const char *text, size_t len)
{
	struct ckpt c, d;
	if (ckpt_parse(text, len, &c) < 0)
		return;
	if ((c.base[0] && !name_valid(c.base)) || !name_valid(c.target))
		abort();
	int n = ckpt_format(&c, g_a, sizeof(g_a));
	if (n < 0 || ckpt_parse(g_a, (size_t)n, &d) < 0 || c.cycle != d.cycle ||
	    strcmp(c.base, d.base) || strcmp(c.target, d.target) ||
	    c.next_objno != d.next_objno || c.done_objects != d.done_objects)
		abort(); /* a saved checkpoint must load back unchanged */
}

static void fuzz_base(const char *text, size_t len)
{
	struct pair_base b, c;
	if (pair_base_parse(text, len, &b) < 0)
		return;
	if (!name_valid(b.snap) || !name_valid(b.pair_id) || !b.cycle)
		abort();
	int n = pair_base_format(&b, g_a, sizeof(g_a));
	if (n < 0 || pair_base_parse(g_a, (size_t)n, &c) < 0 || strcmp(b.snap, c.snap) ||
	    strcmp(b.pair_id, c.pair_id) || b.cycle != c.cycle || b.time != c.time ||
	    strcmp(b.peer_volume, c.peer_volume))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	if (data[0] & 1)
		fuzz_ckpt(text, len);
	else if (data[0] & 2)
		fuzz_base(text, len);
	else
		fuzz_pair(text, len);
	return 0;
}
