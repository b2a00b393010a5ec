/* repl engine: `pair verify`.
 *
 * Each side computes, locally, the md5 of the last synced snapshot (the
 * seed's check) and an XXH3-64 digest per object that is not all zero;
 * only the digests cross the link.  All-zero objects are neither read nor
 * hashed with XXH3 (the md5 is fed a static zero buffer for them), so the
 * read and digest work follows the allocated data, not the volume size.
 */
#include "repl/engine.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <xxhash.h>

#include "common/common.h"

static int list_add(struct digest_list *l, const struct wire_digest *d)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		struct wire_digest *n = realloc(l->d, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		l->d = n;
		l->cap = cap;
	}
	l->d[l->n++] = *d;
	return 0;
}

int verify_compute(struct vol *v, const char *snap, uint8_t md5[16],
                   struct digest_list *out,
                   int (*emit)(void *ctx, const struct wire_digest *d, size_t n),
                   void *ctx)
{
	struct vol_info vi;
	int rc = vol_info(v, &vi);
	if (rc < 0)
		return rc;
	uint8_t *buf = malloc(vi.object_size);
	uint8_t *zero = calloc(1, vi.object_size);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	struct wire_digest batch[WIRE_DIGESTS_MAX];
	size_t nb = 0;
	if (!buf || !zero || !md || EVP_DigestInit_ex(md, EVP_md5(), NULL) != 1) {
		rc = -ENOMEM;
		goto out;
	}
	uint64_t last_emit = now_mono_ns();
	for (uint64_t o = 0; o < vi.objects && rc == 0; o++) {
		uint64_t off = o * vi.object_size;
		size_t len = (size_t)MIN((uint64_t)vi.object_size, vi.size - off);
		bool z = false;
		rc = vol_object_is_zero(v, snap, o, &z);
		if (rc < 0)
			break;
		if (z) {
			EVP_DigestUpdate(md, zero, len);
		} else {
			rc = vol_read(v, snap, buf, off, len);
			if (rc < 0)
				break;
			EVP_DigestUpdate(md, buf, len);
			struct wire_digest d = { .objno = o, .hash = XXH3_64bits(buf, len) };
			if (out && (rc = list_add(out, &d)) < 0)
				break;
			batch[nb++] = d;
		}
		/* Batches also go out now and then while only zero objects pass,
		 * so that the peer's deadline sees progress. */
		uint64_t now = now_mono_ns();
		if (emit && (nb == WIRE_DIGESTS_MAX || (now - last_emit > 1000000000ull))) {
			rc = emit(ctx, batch, nb);
			nb = 0;
			last_emit = now;
		}
	}
	if (rc == 0 && emit && nb)
		rc = emit(ctx, batch, nb);
	unsigned mlen = 16;
	if (rc == 0 && EVP_DigestFinal_ex(md, md5, &mlen) != 1)
		rc = -EIO;
out:
	EVP_MD_CTX_free(md);
	free(buf);
	free(zero);
	return rc;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static int add_mismatch(uint64_t **mm, size_t *n, size_t *cap, uint64_t objno)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 64;
		uint64_t *x = realloc(*mm, c * sizeof(*x));
		if (!x)
			return -ENOMEM;
		*mm = x;
		*cap = c;
	}
	(*mm)[(*n)++] = objno;
	return 0;
}

int repl_pair_verify(struct repl *r, const char *name, bool json, bool *equal,
                     struct sbuf *out)
{
	*equal = false;
	pthread_mutex_lock(&r->mu);
	struct pair *p = name ? pair_find(r, name) : NULL;
	char snap[STORE_NAME_MAX + 1] = "", peer[WIRE_TEXT_MAX + 1] = "",
	     remote[STORE_NAME_MAX + 1] = "";
	enum repl_role role = p ? p->role : REPL_ROLE_NONE;
	if (p) {
		snprintf(snap, sizeof(snap), "%s", p->last_snap);
		snprintf(peer, sizeof(peer), "%s", p->peer);
		snprintf(remote, sizeof(remote), "%s", p->remote);
	}
	pthread_mutex_unlock(&r->mu);
	if (!p) {
		sbuf_printf(out, "no pair %s\n", name ? name : "");
		return -ENOENT;
	}
	if (role != REPL_ROLE_PRIMARY) {
		sbuf_printf(out, "pair %s: run verify on the primary\n", name);
		return -EINVAL;
	}
	if (!snap[0]) {
		sbuf_printf(out, "pair %s: nothing synced yet\n", name);
		return -EAGAIN;
	}
	struct vol *v;
	int rc = vol_open(r->store, name, &v);
	if (rc < 0) {
		sbuf_printf(out, "volume %s: %s\n", name, strerror(-rc));
		return rc;
	}
	uint8_t md5_l[16], md5_r[16];
	struct digest_list loc = { 0 }, rem = { 0 };
	uint64_t *mm = NULL;
	size_t nmm = 0, cmm = 0;
	struct link *l = NULL;
	uint64_t t0 = now_mono_ns();
	rc = verify_compute(v, snap, md5_l, &loc, NULL, NULL);
	vol_close(v);
	if (rc < 0) {
		sbuf_printf(out, "verify of %s@%s failed: %s\n", name, snap, strerror(-rc));
		goto done;
	}
	char err[512];
	/* The pair may have gone meanwhile; hold it while dialling. */
	pthread_mutex_lock(&r->mu);
	p = pair_find(r, name);
	if (p)
		pair_get(p);
	pthread_mutex_unlock(&r->mu);
	rc = -ENOENT;
	snprintf(err, sizeof(err), "the pair was removed");
	if (p) {
		rc = pair_dial(p, &l, err, sizeof(err));
		pthread_mutex_lock(&r->mu);
		pair_put(p);
		pthread_mutex_unlock(&r->mu);
	}
	if (rc < 0) {
		sbuf_printf(out, "cannot reach peer %s: %s\n", peer[0] ? peer : "(calls in)", err);
		goto done;
	}
	struct wire_msg m = { .type = WIRE_VERIFY_REQ };
	snprintf(m.u.verify_req.volume, sizeof(m.u.verify_req.volume), "%s", remote);
	snprintf(m.u.verify_req.snap, sizeof(m.u.verify_req.snap), "%s", snap);
	rc = link_send(l, &m);
	while (rc == 0) {
		rc = link_recv(l, &m, 0);
		if (rc < 0)
			break;
		if (m.type == WIRE_VERIFY_SUM) {
			memcpy(md5_r, m.u.verify_sum.md5, 16);
			if (m.u.verify_sum.objects != rem.n) {
				rc = -EPROTO;
				snprintf(l->err, sizeof(l->err), "digest count mismatch");
			}
			break;
		}
		if (m.type == WIRE_ERROR) {
			rc = -m.u.error.code;
			snprintf(l->err, sizeof(l->err), "secondary: %s", m.u.error.msg);
			break;
		}
		if (m.type != WIRE_DIGESTS) {
			rc = -EPROTO;
			snprintf(l->err, sizeof(l->err), "unexpected %s", wire_type_name(m.type));
			break;
		}
		for (uint32_t i = 0; i < m.u.digests.count && rc == 0; i++) {
			struct wire_digest d = wire_digest_at(&m, i);
			rc = list_add(&rem, &d);
		}
	}
	if (rc < 0) {
		sbuf_printf(out, "verify on peer %s failed: %s\n", peer, l->err);
		goto done;
	}
	/* Both lists come in increasing objno order: merge them. */
	size_t i = 0, j = 0;
	while ((i < loc.n || j < rem.n) && rc == 0) {
		if (j == rem.n || (i < loc.n && loc.d[i].objno < rem.d[j].objno))
			rc = add_mismatch(&mm, &nmm, &cmm, loc.d[i++].objno);
		else if (i == loc.n || rem.d[j].objno < loc.d[i].objno)
			rc = add_mismatch(&mm, &nmm, &cmm, rem.d[j++].objno);
		else {
			if (loc.d[i].hash != rem.d[j].hash)
				rc = add_mismatch(&mm, &nmm, &cmm, loc.d[i].objno);
			i++;
			j++;
		}
	}
	if (rc < 0)
		goto done;
	*equal = nmm == 0 && !memcmp(md5_l, md5_r, 16);
	char hl[33], hr[33];
	hex(md5_l, 16, hl);
	hex(md5_r, 16, hr);
	double secs = (double)(now_mono_ns() - t0) / 1e9;
	if (json) {
		struct jw w;
		jw_init(&w, out);
		jw_obj_begin(&w);
		jw_key(&w, "name"); jw_str(&w, name);
		jw_key(&w, "snapshot"); jw_str(&w, snap);
		jw_key(&w, "primary_md5"); jw_str(&w, hl);
		jw_key(&w, "secondary_md5"); jw_str(&w, hr);
		jw_key(&w, "match"); jw_bool(&w, *equal);
		jw_key(&w, "objects_compared"); jw_u64(&w, MAX(loc.n, rem.n));
		jw_key(&w, "mismatched_objects");
		jw_arr_begin(&w);
		for (size_t k = 0; k < nmm; k++)
			jw_u64(&w, mm[k]);
		jw_arr_end(&w);
		jw_key(&w, "seconds"); jw_double(&w, secs);
		jw_obj_end(&w);
		sbuf_puts(out, "\n");
	} else {
		sbuf_printf(out, "primary   %s  %s@%s\nsecondary %s  %s@%s (%s)\n", hl, name, snap,
		            hr, remote, snap, peer);
		sbuf_printf(out, "%zu non-zero objects compared, %zu mismatching, %.2f s\n",
		            MAX(loc.n, rem.n), nmm, secs);
		for (size_t k = 0; k < nmm && k < 1000; k++)
			sbuf_printf(out, "  mismatch: object %" PRIu64 "\n", mm[k]);
		sbuf_puts(out, *equal ? "match\n" : "MISMATCH\n");
	}
done:
	link_close(l);
	free(loc.d);
	free(rem.d);
	free(mm);
	return rc;
}
