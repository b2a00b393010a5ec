/* volume.meta: a small text file, replaced atomically, with a crc32c line
 * so that a torn or hand-edited file is detected.  The parser is a pure
 * function from bytes to struct so that it can be fuzzed. */
#include "store/store_int.h"

#include "common/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int store_params_check(const struct vol_params *in, struct vol_params *out)
{
	struct vol_params p = *in;
	if (!p.object_size)
		p.object_size = STORE_DEFAULT_OBJECT;
	if (!p.block_size)
		p.block_size = 512;
	if (p.block_size != 512 && p.block_size != 4096) {
		log_error("store: block size %u is not 512 or 4096", p.block_size);
		return -EINVAL;
	}
	if (p.object_size < STORE_MIN_OBJECT || p.object_size > STORE_MAX_OBJECT ||
	    (p.object_size & (p.object_size - 1))) {
		log_error("store: object size %u is not a power of two in 64 KiB..64 MiB",
		          p.object_size);
		return -EINVAL;
	}
	if (p.size == 0 || p.size > STORE_MAX_SIZE || p.size % p.block_size) {
		log_error("store: size %llu is not a multiple of %u in (0, 16 TiB]",
		          (unsigned long long)p.size, p.block_size);
		return -EINVAL;
	}
	*out = p;
	return 0;
}

void store_meta_free(struct store_meta *m)
{
	free(m->snaps);
	m->snaps = NULL;
	m->n_snaps = m->cap_snaps = 0;
}

int store_meta_add_snap(struct store_meta *m, const struct meta_snap *s)
{
	if (m->n_snaps == m->cap_snaps) {
		size_t cap = m->cap_snaps ? m->cap_snaps * 2 : 16;
		struct meta_snap *n = realloc(m->snaps, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		m->snaps = n;
		m->cap_snaps = cap;
	}
	m->snaps[m->n_snaps++] = *s;
	return 0;
}

/* A cursor over the buffer; nothing here relies on NUL termination. */
struct cur {
	const char *p, *end;
};

/* Next line without its '\n'; false at the end or for a line without
 * a terminating newline (a torn file). */
static bool next_line(struct cur *c, const char **ls, size_t *ll)
{
	if (c->p >= c->end)
		return false;
	const char *nl = memchr(c->p, '\n', (size_t)(c->end - c->p));
	if (!nl)
		return false;
	*ls = c->p;
	*ll = (size_t)(nl - c->p);
	c->p = nl + 1;
	return true;
}

/* Splits a line into at most max space-separated fields (exactly one
 * space between fields, none leading or trailing).  Returns the count or
 * -1 for bad spacing / too many fields. */
static int split(const char *s, size_t len, const char **f, size_t *fl, int max)
{
	int n = 0;
	size_t i = 0;
	while (i < len) {
		if (n == max)
			return -1;
		size_t j = i;
		while (j < len && s[j] != ' ')
			j++;
		if (j == i)
			return -1;
		f[n] = s + i;
		fl[n] = j - i;
		n++;
		if (j == len)
			break;
		i = j + 1;
		if (i == len)
			return -1; /* trailing space */
	}
	return n;
}

static bool field_u64(const char *s, size_t len, uint64_t *out)
{
	char tmp[24];
	if (len == 0 || len >= sizeof(tmp) || (len > 1 && s[0] == '0'))
		return false;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	return parse_u64(tmp, out) == 0;
}

static bool field_is(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && memcmp(s, word, len) == 0;
}

static bool uuid_valid(const char *s, size_t len)
{
	if (len != 36)
		return false;
	for (size_t i = 0; i < 36; i++) {
		char c = s[i];
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return false;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
			return false;
		}
	}
	return true;
}

#define FAIL(msg)                                                           \
	do {                                                                    \
		*why = (msg);                                                       \
		rc = -EIO;                                                          \
		goto out;                                                           \
	} while (0)

int store_meta_parse(const void *buf, size_t len, struct store_meta *m, const char **why)
{
	static const char *keys[] = {"uuid", "size", "object_size", "block_size",
	                             "head_epoch", "next_snap_id"};
	const char *dummy;
	if (!why)
		why = &dummy;
	*why = NULL;
	memset(m, 0, sizeof(*m));
	int rc = 0;
	const char *b = buf;
	if (len > META_MAX_BYTES)
		FAIL("file too large");

	/* The checksum line is last and covers everything before it. */
	static const char crc_tag[] = "crc32c ";
	const size_t crc_line = sizeof(crc_tag) - 1 + 8 + 1;
	if (len < crc_line || b[len - 1] != '\n')
		FAIL("truncated (no final checksum line)");
	size_t body = len - crc_line;
	if (body > 0 && b[body - 1] != '\n')
		FAIL("truncated (no final checksum line)");
	if (memcmp(b + body, crc_tag, sizeof(crc_tag) - 1) != 0)
		FAIL("missing checksum line");
	uint32_t want = 0;
	for (size_t i = 0; i < 8; i++) {
		char c = b[body + sizeof(crc_tag) - 1 + i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			FAIL("bad checksum syntax");
		want = want << 4 | d;
	}
	if (crc32c(0, b, body) != want)
		FAIL("checksum mismatch (torn or edited file)");

	/* Plain printable ASCII only: no NUL can cut a field short. */
	for (size_t i = 0; i < body; i++)
		if ((b[i] < ' ' || b[i] > '~') && b[i] != '\n')
			FAIL("unexpected byte");

	struct cur c = {b, b + body};
	const char *ls;
	size_t ll;
	const char *f[5];
	size_t fl[5];
	uint64_t v[ARRAY_SIZE(keys)];
	if (!next_line(&c, &ls, &ll) || split(ls, ll, f, fl, 5) != 2 ||
	    !field_is(f[0], fl[0], "ferry-volume"))
		FAIL("not a ferry volume.meta");
	uint64_t ver;
	if (!field_u64(f[1], fl[1], &ver) || ver != META_VERSION)
		FAIL("unsupported format version");
	for (size_t k = 0; k < ARRAY_SIZE(keys); k++) {
		if (!next_line(&c, &ls, &ll) || split(ls, ll, f, fl, 5) != 2 ||
		    !field_is(f[0], fl[0], keys[k]))
			FAIL("missing or misplaced header field");
		if (k == 0) {
			if (!uuid_valid(f[1], fl[1]))
				FAIL("bad uuid");
			memcpy(m->uuid, f[1], 36);
			m->uuid[36] = '\0';
			v[k] = 0;
		} else if (!field_u64(f[1], fl[1], &v[k])) {
			FAIL("bad number");
		}
	}
	m->size = v[1];
	if (v[2] > UINT32_MAX || v[3] > UINT32_MAX)
		FAIL("bad object or block size");
	m->object_size = (uint32_t)v[2];
	m->block_size = (uint32_t)v[3];
	m->head_epoch = v[4];
	m->next_snap_id = v[5];
	if (m->block_size != 512 && m->block_size != 4096)
		FAIL("bad block size");
	if (m->object_size < STORE_MIN_OBJECT || m->object_size > STORE_MAX_OBJECT ||
	    (m->object_size & (m->object_size - 1)))
		FAIL("bad object size");
	if (m->size == 0 || m->size > STORE_MAX_SIZE || m->size % m->block_size)
		FAIL("bad size");
	if (m->head_epoch == 0 || m->head_epoch >= (1ull << 62))
		FAIL("bad head epoch");
	if (m->next_snap_id == 0 || m->next_snap_id >= (1ull << 62))
		FAIL("bad next snapshot id");

	/* optional: parent SRC SNAP SNAPID EPOCH (a clone) */
	struct cur save = c;
	if (next_line(&c, &ls, &ll) && ll > 7 && !memcmp(ls, "parent ", 7)) {
		uint64_t id, ep;
		if (split(ls, ll, f, fl, 5) != 5 || fl[1] > STORE_NAME_MAX || fl[2] > STORE_NAME_MAX ||
		    !field_u64(f[3], fl[3], &id) || !field_u64(f[4], fl[4], &ep) || id == 0 || ep == 0)
			FAIL("bad parent line");
		memcpy(m->parent, f[1], fl[1]);
		memcpy(m->parent_snap, f[2], fl[2]);
		if (!name_valid(m->parent) || !name_valid(m->parent_snap))
			FAIL("bad parent name");
		m->parent_snap_id = id;
		m->parent_epoch = ep;
	} else {
		c = save;
	}

	while (next_line(&c, &ls, &ll)) {
		struct meta_snap s;
		uint64_t id, ep, ct;
		if (split(ls, ll, f, fl, 5) != 5 || !field_is(f[0], fl[0], "snap"))
			FAIL("bad snapshot line");
		if (!field_u64(f[1], fl[1], &id) || !field_u64(f[2], fl[2], &ep) ||
		    !field_u64(f[3], fl[3], &ct))
			FAIL("bad snapshot number");
		if (fl[4] > STORE_NAME_MAX)
			FAIL("bad snapshot name");
		memset(&s, 0, sizeof(s));
		memcpy(s.name, f[4], fl[4]);
		if (!name_valid(s.name))
			FAIL("bad snapshot name");
		if (id == 0 || id >= m->next_snap_id || ep == 0 || ep >= m->head_epoch)
			FAIL("snapshot id or epoch out of range");
		if (m->n_snaps) {
			const struct meta_snap *p = &m->snaps[m->n_snaps - 1];
			if (id <= p->id || ep <= p->epoch)
				FAIL("snapshots out of order");
		}
		if (m->n_snaps >= STORE_MAX_SNAPS)
			FAIL("too many snapshots");
		for (size_t i = 0; i < m->n_snaps; i++)
			if (!strcmp(m->snaps[i].name, s.name))
				FAIL("duplicate snapshot name");
		s.id = id;
		s.epoch = ep;
		s.ctime = ct;
		if (store_meta_add_snap(m, &s)) {
			rc = -ENOMEM;
			*why = "out of memory";
			goto out;
		}
	}
	if (c.p != c.end)
		FAIL("garbage before the checksum line");
out:
	if (rc)
		store_meta_free(m);
	return rc;
}

int store_meta_format(const struct store_meta *m, char **out, size_t *len)
{
	struct sbuf b;
	sbuf_init(&b);
	sbuf_printf(&b, "ferry-volume %d\nuuid %s\nsize %llu\nobject_size %u\n"
	                "block_size %u\nhead_epoch %llu\nnext_snap_id %llu\n",
	            META_VERSION, m->uuid, (unsigned long long)m->size, m->object_size,
	            m->block_size, (unsigned long long)m->head_epoch,
	            (unsigned long long)m->next_snap_id);
	if (m->parent[0])
		sbuf_printf(&b, "parent %s %s %llu %llu\n", m->parent, m->parent_snap,
		            (unsigned long long)m->parent_snap_id, (unsigned long long)m->parent_epoch);
	for (size_t i = 0; i < m->n_snaps; i++) {
		const struct meta_snap *s = &m->snaps[i];
		sbuf_printf(&b, "snap %llu %llu %llu %s\n", (unsigned long long)s->id,
		            (unsigned long long)s->epoch, (unsigned long long)s->ctime, s->name);
	}
	if (b.err) {
		sbuf_free(&b);
		return -ENOMEM;
	}
	sbuf_printf(&b, "crc32c %08x\n", crc32c(0, b.p, b.len));
	if (b.err) {
		sbuf_free(&b);
		return -ENOMEM;
	}
	*out = sbuf_detach(&b, len);
	return 0;
}

static void fuzz_one(const uint8_t *data, size_t size)
{
	struct store_meta m;
	if (store_meta_parse(data, size, &m, NULL))
		return;
	char *txt;
	size_t n;
	if (store_meta_format(&m, &txt, &n) == 0) {
		/* Every accepted file is canonical: re-formatting gives it back. */
		if (n != size || memcmp(txt, data, n) != 0)
			abort();
		free(txt);
	}
	store_meta_free(&m);
}

int store_meta_fuzz(const uint8_t *data, size_t size)
{
	fuzz_one(data, size);
	/* Also with a valid checksum line appended, so that mutations get past
	 * the checksum and reach the field parser. */
	if (size > 1 << 20)
		return 0;
	uint8_t *b = malloc(size + 32);
	if (!b)
		return 0;
	if (size)
		memcpy(b, data, size);
	int k = snprintf((char *)b + size, 32, "crc32c %08x\n", crc32c(0, data, size));
	fuzz_one(b, size + (size_t)k);
	free(b);
	return 0;
}
