/* repl engine: `pair verify`, on a live pair.
 *
 * Each side computes, locally, the md5 of the snapshot (the seed's check)
 * and an XXH3-64 digest per object that is not all zero; only the digests
 * cross the link.  All-zero objects are neither read nor hashed with XXH3
 * (the md5 is fed a static zero buffer for them), so the read and digest
 * work follows the allocated data, not the volume size.
 *
 * Cycles go on meanwhile: the snapshot under verification is held on both
 * sites (pair_hold) so that retention, which drops the previous cycle
 * snapshot at each commit, leaves it alone; the verify deletes it at its
 * end when no cycle needs it any more.  Both sides hash at the same time:
 * the secondary streams its digests while the primary computes its own.
 */
#include "repl/engine.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
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
                   void *ctx, repl_progress_fn progress, void *pctx)
{
	struct vol_info vi;
	int rc = vol_info(v, &vi);
	if (rc < 0)
		return rc;
	uint8_t *buf = malloc(vi.object_size);
	uint8_t *zero = calloc(1, vi.object_size);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	struct wire_digest *batch = malloc(WIRE_DIGESTS_MAX * sizeof(*batch));
	size_t nb = 0;
	if (!buf || !zero || !md || !batch || EVP_DigestInit_ex(md, EVP_md5(), NULL) != 1) {
		rc = -ENOMEM;
		goto out;
	}
	uint64_t last_emit = now_mono_ns(), last_progress = 0;
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
		if (progress && now - last_progress > 200000000ull) {
			progress(pctx, off + len, vi.size);
			last_progress = now;
		}
	}
	if (rc == 0 && emit && nb)
		rc = emit(ctx, batch, nb);
	if (rc == 0 && progress)
		progress(pctx, vi.size, vi.size);
	unsigned mlen = 16;
	if (rc == 0 && EVP_DigestFinal_ex(md, md5, &mlen) != 1)
		rc = -EIO;
out:
	EVP_MD_CTX_free(md);
	free(batch);
	free(buf);
	free(zero);
	return rc;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

/* Under mu: ends p's hold of snap; true when the snapshot should go now
 * (a cycle snapshot retention skipped because of the hold). */
static bool unhold_stale(struct pair *p, const char *pair_name, const char *snap)
{
	pair_unhold(p, snap);
	return snap_is_cycle(pair_name, snap) && !pair_snap_needed(p, snap) &&
	       !pair_snap_retained(p, snap);
}

static void drop_snap(struct repl *r, const char *volume, const char *snap)
{
	struct vol *v;
	if (vol_open(r->store, volume, &v) == 0) {
		(void)vol_snap_delete(v, snap);
		vol_close(v);
	}
}

/* ---- the secondary's side ---------------------------------------------------- */
struct emit_ctx {
	struct link *l;
	uint64_t sent;
};

static int emit_digests(void *ctx, const struct wire_digest *d, size_t n)
{
	struct emit_ctx *e = ctx;
	int len = wire_encode_digests(d, (uint32_t)n, e->l->wbuf, WIRE_FRAME_MAX);
	if (len < 0)
		return len;
	e->sent += n;
	return link_send_raw(e->l, e->l->wbuf, (size_t)len);
}

int handle_verify(struct repl *r, struct link *l, const struct wire_msg *m)
{
	const char *volume = m->u.verify_req.volume, *snap = m->u.verify_req.snap;
	pthread_mutex_lock(&r->mu);
	struct pair *p = pair_find(r, volume);
	bool ok = p && !pair_phase_primary(p->rec.phase);
	int hrc = ok ? pair_hold(p, snap) : 0;
	char vol[REC_NAME_MAX + 1] = "", pname[REC_NAME_MAX + 1] = "";
	if (ok) {
		pair_get(p);
		pair_contact(p);
		snprintf(vol, sizeof(vol), "%s", p->rec.volume);
		snprintf(pname, sizeof(pname), "%s", p->rec.remote);
		if (hrc < 0)
			pair_put(p);
	}
	pthread_mutex_unlock(&r->mu);
	if (!ok) {
		link_send_error(l, ENOENT, "no secondary volume %s on this site", volume);
		return 0;
	}
	if (hrc < 0) {
		link_send_error(l, EBUSY, "too many verifies of %s at once", volume);
		return 0;
	}
	struct vol *v = NULL;
	int rc = vol_open(r->store, vol, &v);
	struct snap_info si;
	if (rc < 0) {
		link_send_error(l, -rc, "cannot open %s: %s", vol, strerror(-rc));
		rc = 0;
	} else if (vol_snap_get(v, snap, &si) < 0) {
		link_send_error(l, ENOENT, "no snapshot %s@%s on the secondary", vol, snap);
	} else {
		/* An empty batch first: the primary learns at once that the
		 * snapshot is here and held. */
		struct emit_ctx e = { .l = l };
		uint8_t md5[16];
		rc = emit_digests(&e, NULL, 0);
		if (rc == 0)
			rc = verify_compute(v, snap, md5, NULL, emit_digests, &e, NULL, NULL);
		if (rc < 0) {
			link_send_error(l, -rc, "verify of %s@%s failed: %s", vol, snap, strerror(-rc));
		} else {
			struct wire_msg s = { .type = WIRE_VERIFY_SUM };
			memcpy(s.u.verify_sum.md5, md5, 16);
			s.u.verify_sum.objects = e.sent;
			rc = link_send(l, &s);
		}
	}
	if (v)
		vol_close(v);
	pthread_mutex_lock(&r->mu);
	bool stale = unhold_stale(p, pname, snap);
	pair_put(p);
	pthread_mutex_unlock(&r->mu);
	if (stale)
		drop_snap(r, vol, snap);
	return rc;
}

/* ---- the primary's side ------------------------------------------------------- */
/* Receives the secondary's digests while the primary hashes its own. */
struct remote {
	struct link *l;
	pthread_t th;
	struct digest_list d;
	uint8_t md5[16];
	int rc;
};

static void *remote_main(void *arg)
{
	struct remote *rm = arg;
	struct link *l = rm->l;
	struct wire_msg m;
	int rc = 0;
	while (rc == 0) {
		rc = link_recv(l, &m, 0);
		if (rc < 0)
			break;
		if (m.type == WIRE_VERIFY_SUM) {
			memcpy(rm->md5, m.u.verify_sum.md5, 16);
			if (m.u.verify_sum.objects != rm->d.n) {
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
			rc = list_add(&rm->d, &d);
		}
	}
	rm->rc = rc;
	OPENSSL_thread_stop();
	return NULL;
}

/* One try: 1 = the secondary no longer holds the (automatically chosen)
 * snapshot, a commit raced the request: try again with the next one. */
static int verify_once(struct repl *r, struct pair *p, const char *snap, bool auto_snap,
                       repl_progress_fn progress, void *pctx, struct repl_verify *res,
                       struct repl_err *err)
{
	pthread_mutex_lock(&r->mu);
	char volume[REC_NAME_MAX + 1], remote[REC_NAME_MAX + 1], peer[WIRE_TEXT_MAX + 1];
	snprintf(volume, sizeof(volume), "%s", p->rec.volume);
	snprintf(remote, sizeof(remote), "%s", p->rec.remote);
	snprintf(peer, sizeof(peer), "%s", p->rec.peer[0] ? p->rec.peer : "(calls in)");
	pthread_mutex_unlock(&r->mu);
	snprintf(res->snapshot, sizeof(res->snapshot), "%s", snap);
	snprintf(res->remote, sizeof(res->remote), "%s", remote);
	snprintf(res->peer, sizeof(res->peer), "%s", peer);

	struct vol *v;
	int rc = vol_open(r->store, volume, &v);
	if (rc < 0)
		return verb_fail(err, rc, "volume %s: %s", volume, strerror(-rc));
	struct snap_info si;
	if (vol_snap_get(v, snap, &si) < 0) {
		vol_close(v);
		return verb_fail(err, -ENOENT, "pair %s: no snapshot %s@%s here", p->rec.name, volume,
		            snap);
	}
	uint64_t t0 = now_mono_ns();
	struct link *l = NULL;
	char e[512];
	rc = pair_dial(p, &l, e, sizeof(e), NULL);
	if (rc < 0) {
		vol_close(v);
		return verb_fail(err, rc, "pair %s: cannot reach the peer %s: %s", p->rec.name, peer, e);
	}
	struct wire_msg m = { .type = WIRE_VERIFY_REQ };
	snprintf(m.u.verify_req.volume, sizeof(m.u.verify_req.volume), "%s", remote);
	snprintf(m.u.verify_req.snap, sizeof(m.u.verify_req.snap), "%s", snap);
	struct remote rm = { .l = l };
	rc = link_send(l, &m);
	if (rc == 0)
		rc = link_recv(l, &m, 0);
	if (rc == 0 && m.type == WIRE_ERROR) {
		rc = -m.u.error.code;
		snprintf(l->err, sizeof(l->err), "secondary: %s", m.u.error.msg);
	} else if (rc == 0 && m.type != WIRE_DIGESTS) {
		rc = -EPROTO;
		snprintf(l->err, sizeof(l->err), "unexpected %s", wire_type_name(m.type));
	}
	for (uint32_t i = 0; rc == 0 && i < m.u.digests.count; i++) {
		struct wire_digest d = wire_digest_at(&m, i);
		rc = list_add(&rm.d, &d);
	}
	if (rc == -ENOENT && auto_snap) {
		vol_close(v);
		link_close(l);
		free(rm.d.d);
		return 1;
	}
	if (rc < 0) {
		verb_fail(err, rc, "pair %s: verify on the peer %s failed: %s", p->rec.name, peer, l->err);
		goto done;
	}
	rc = pthread_create(&rm.th, NULL, remote_main, &rm);
	if (rc) {
		rc = verb_fail(err, -rc, "cannot start a thread: %s", strerror(rc));
		goto done;
	}
	struct digest_list loc = { 0 };
	uint8_t md5_l[16];
	int lrc = verify_compute(v, snap, md5_l, &loc, NULL, NULL, progress, pctx);
	if (lrc < 0)
		link_abort(l); /* the peer's stream is of no use now */
	pthread_join(rm.th, NULL);
	if (lrc < 0) {
		rc = verb_fail(err, lrc, "pair %s: verify of %s@%s failed here: %s", p->rec.name, volume,
		          snap, strerror(-lrc));
		free(loc.d);
		goto done;
	}
	if (rm.rc < 0) {
		rc = verb_fail(err, rm.rc, "pair %s: verify on the peer %s failed: %s", p->rec.name, peer,
		          l->err);
		free(loc.d);
		goto done;
	}
	/* Both lists come in increasing objno order: merge them. */
	size_t i = 0, j = 0, cap = 0;
	while (i < loc.n || j < rm.d.n) {
		uint64_t o;
		bool diff;
		if (j == rm.d.n || (i < loc.n && loc.d[i].objno < rm.d.d[j].objno)) {
			o = loc.d[i++].objno;
			diff = true;
		} else if (i == loc.n || rm.d.d[j].objno < loc.d[i].objno) {
			o = rm.d.d[j++].objno;
			diff = true;
		} else {
			o = loc.d[i].objno;
			diff = loc.d[i].hash != rm.d.d[j].hash;
			i++;
			j++;
		}
		if (!diff)
			continue;
		res->mismatching_objects++;
		if (res->n_mismatch < 1000) {
			if (res->n_mismatch == cap) {
				cap = cap ? 2 * cap : 64;
				uint64_t *x = realloc(res->mismatch, cap * sizeof(*x));
				if (!x) {
					rc = verb_fail(err, -ENOMEM, "out of memory");
					break;
				}
				res->mismatch = x;
			}
			res->mismatch[res->n_mismatch++] = o;
		}
	}
	res->objects_compared = MAX(loc.n, rm.d.n);
	free(loc.d);
	if (rc < 0)
		goto done;
	res->match = res->mismatching_objects == 0 && !memcmp(md5_l, rm.md5, 16);
	hex(md5_l, 16, res->primary_md5);
	hex(rm.md5, 16, res->secondary_md5);
	res->seconds = (double)(now_mono_ns() - t0) / 1e9;
done:
	vol_close(v);
	link_close(l);
	free(rm.d.d);
	return rc;
}

int repl_pair_verify(struct repl *r, const char *name, const char *snap,
                     repl_progress_fn progress, void *pctx, struct repl_verify *res,
                     struct repl_err *err)
{
	memset(res, 0, sizeof(*res));
	for (int attempt = 0;; attempt++) {
		pthread_mutex_lock(&r->mu);
		struct pair *p = name ? pair_find(r, name) : NULL;
		int rc = 0;
		if (!p)
			rc = verb_fail(err, -ENOENT, "no pair %s", name ? name : "");
		else if (!pair_phase_primary(p->rec.phase))
			rc = verb_fail(err, -EINVAL, "pair %s: run verify on the primary", name);
		else if (!snap && !p->rec.last_cycle)
			rc = verb_fail(err, -EAGAIN, "pair %s: nothing synced yet", name);
		char s[REC_NAME_MAX + 1] = "", pname[REC_NAME_MAX + 1] = "";
		if (rc == 0) {
			/* A cycle the primary gave up on (pause, lost link) may
			 * have committed on the secondary, which then holds the
			 * in-flight snapshot and no longer the last synced one:
			 * every other attempt tries the in-flight one. */
			const char *pick = p->rec.last_snap;
			if (attempt % 2 == 1 && p->rec.cur_cycle && p->rec.cur_snap[0])
				pick = p->rec.cur_snap;
			snprintf(s, sizeof(s), "%s", snap ? snap : pick);
			snprintf(pname, sizeof(pname), "%s", p->rec.name);
			rc = pair_hold(p, s);
			if (rc < 0)
				verb_fail(err, rc, "pair %s: too many verifies at once", name);
			else
				pair_get(p);
		}
		pthread_mutex_unlock(&r->mu);
		if (rc < 0)
			return rc;
		rc = verify_once(r, p, s, !snap, progress, pctx, res, err);
		pthread_mutex_lock(&r->mu);
		bool stale = unhold_stale(p, pname, s);
		char volume[REC_NAME_MAX + 1];
		snprintf(volume, sizeof(volume), "%s", p->rec.volume);
		pair_put(p);
		pthread_mutex_unlock(&r->mu);
		if (stale)
			drop_snap(r, volume, s);
		if (rc != 1)
			return rc;
		if (attempt >= 8)
			return verb_fail(err, -ENOENT, "pair %s: the secondary dropped each snapshot before "
			            "the verify could hold it (cycles commit too fast?)", name);
		free(res->mismatch);
		memset(res, 0, sizeof(*res));
		log_info("repl: pair %s: %s was replaced on the secondary before the verify "
		         "reached it; verifying the next one", name, s);
	}
}
