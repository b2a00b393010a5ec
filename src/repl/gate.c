/* repl gate: the admission policy for connections that have not
 * authenticated yet (see gate.h).  Linear scans: the gate holds at most a
 * few hundred entries and runs once per accepted connection. */
#include "repl/gate.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gate_init(struct gate *g, unsigned max, unsigned per_source)
{
	memset(g, 0, sizeof(*g));
	if (!max || !per_source || max > GATE_MAX)
		return -EINVAL;
	g->conn = calloc(max, sizeof(*g->conn));
	g->src = calloc(max, sizeof(*g->src));
	if (!g->conn || !g->src) {
		gate_free(g);
		return -ENOMEM;
	}
	g->max = max;
	g->per_source = per_source;
	return 0;
}

void gate_free(struct gate *g)
{
	free(g->conn);
	free(g->src);
	memset(g, 0, sizeof(*g));
}

int gate_key(const char *peer, uint8_t key[GATE_KEY_LEN], char *shown, size_t shown_len)
{
	char host[64];
	const char *h = peer, *end;
	if (!peer)
		return -EINVAL;
	if (*h == '[') {
		h++;
		end = strchr(h, ']');
	} else {
		end = strrchr(h, ':');
	}
	if (!end || end == h || (size_t)(end - h) >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, (size_t)(end - h));
	host[end - h] = '\0';
	struct in_addr v4;
	struct in6_addr v6;
	memset(key, 0, GATE_KEY_LEN);
	if (inet_pton(AF_INET, host, &v4) == 1) {
		/* The IPv4 address in its mapped form: the same key as
		 * ::ffff:a.b.c.d from a dual-stack socket. */
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &v4, 4);
	} else if (inet_pton(AF_INET6, host, &v6) == 1) {
		memcpy(key, &v6, 16);
		if (!IN6_IS_ADDR_V4MAPPED(&v6))
			memset(key + 8, 0, 8); /* the /64 */
	} else {
		return -EINVAL;
	}
	if (shown && shown_len)
		gate_key_show(key, shown, shown_len);
	return 0;
}

void gate_key_show(const uint8_t key[GATE_KEY_LEN], char *shown, size_t shown_len)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	char buf[INET6_ADDRSTRLEN] = "?";
	if (memcmp(key, mapped, sizeof(mapped)) == 0) {
		inet_ntop(AF_INET, key + 12, buf, sizeof(buf));
		snprintf(shown, shown_len, "%s", buf);
	} else {
		inet_ntop(AF_INET6, key, buf, sizeof(buf));
		snprintf(shown, shown_len, "%s/64", buf);
	}
}

static struct gate_src *src_find(const struct gate *g, const uint8_t key[GATE_KEY_LEN])
{
	for (unsigned i = 0; i < g->n_src; i++)
		if (memcmp(g->src[i].key, key, GATE_KEY_LEN) == 0)
			return &g->src[i];
	return NULL;
}

unsigned gate_count(const struct gate *g, const uint8_t key[GATE_KEY_LEN])
{
	const struct gate_src *s = src_find(g, key);
	return s ? s->n : 0;
}

/* Index of the oldest connection of source key (one exists); with
 * idle_first, the oldest idle one when there is one. */
static unsigned oldest_of(const struct gate *g, const uint8_t key[GATE_KEY_LEN], bool idle_first)
{
	unsigned best = g->n;
	for (unsigned i = 0; i < g->n; i++) {
		const struct gate_conn *c = &g->conn[i];
		if (memcmp(c->key, key, GATE_KEY_LEN) != 0)
			continue;
		if (best == g->n) {
			best = i;
			continue;
		}
		const struct gate_conn *b = &g->conn[best];
		if (idle_first && b->active != c->active) {
			if (!c->active)
				best = i;
		} else if (c->t < b->t) {
			best = i;
		}
	}
	return best;
}

/* Removes conn[i] (swap with the last) and counts it off its source. */
static void conn_remove(struct gate *g, unsigned i)
{
	struct gate_conn gone = g->conn[i];
	g->conn[i] = g->conn[--g->n];
	struct gate_src *s = src_find(g, gone.key);
	if (!s)
		return;
	if (--s->n == 0)
		*s = g->src[--g->n_src];
	else if (gone.t == s->oldest_t)
		s->oldest_t = g->conn[oldest_of(g, s->key, false)].t;
}

void gate_admit(struct gate *g, const uint8_t key[GATE_KEY_LEN], uint64_t id, uint64_t now,
                uint64_t *evicted)
{
	*evicted = 0;
	const uint8_t *victim_src = NULL;
	struct gate_src *mine = src_find(g, key);
	if (mine && mine->n >= g->per_source) {
		victim_src = key;
	} else if (g->n >= g->max) {
		/* The source holding the most; among equals the one whose
		 * oldest connection is oldest (the newcomer's own source
		 * included: then it displaces its own). */
		const struct gate_src *big = &g->src[0];
		for (unsigned i = 1; i < g->n_src; i++) {
			const struct gate_src *s = &g->src[i];
			if (s->n > big->n || (s->n == big->n && s->oldest_t < big->oldest_t))
				big = s;
		}
		victim_src = big->key;
	}
	if (victim_src) {
		uint8_t vk[GATE_KEY_LEN];
		memcpy(vk, victim_src, GATE_KEY_LEN); /* src[] moves in conn_remove */
		unsigned i = oldest_of(g, vk, true);
		*evicted = g->conn[i].id;
		conn_remove(g, i);
		mine = src_find(g, key);
	}
	struct gate_conn *c = &g->conn[g->n++];
	memcpy(c->key, key, GATE_KEY_LEN);
	c->id = id;
	c->t = now;
	c->active = false;
	if (!mine) {
		mine = &g->src[g->n_src++];
		memcpy(mine->key, key, GATE_KEY_LEN);
		mine->n = 0;
		mine->oldest_t = now;
	}
	if (now < mine->oldest_t)
		mine->oldest_t = now;
	mine->n++;
}

void gate_active(struct gate *g, uint64_t id)
{
	for (unsigned i = 0; i < g->n; i++)
		if (g->conn[i].id == id)
			g->conn[i].active = true;
}

int gate_leave(struct gate *g, uint64_t id)
{
	for (unsigned i = 0; i < g->n; i++)
		if (g->conn[i].id == id) {
			conn_remove(g, i);
			return 0;
		}
	return -ENOENT;
}
