/* repl wire codec; see wire.h and docs/PROTOCOL.md. */
#include "repl/wire.h"

#include <errno.h>
#include <string.h>

#include "common/common.h"

/* ---- little-endian cursor ---------------------------------------------- */
struct wr {
	uint8_t *p;
	size_t len, cap;
	bool bad;   /* overflow or out-of-range field: sticky */
	bool nospc; /* the caller's buffer, not the format, was too small */
};

static void put(struct wr *w, const void *src, size_t n)
{
	if (w->bad)
		return;
	if (n > w->cap - w->len) {
		w->bad = true;
		w->nospc = true;
		return;
	}
	memcpy(w->p + w->len, src, n);
	w->len += n;
}

static void put_u8(struct wr *w, uint8_t v) { put(w, &v, 1); }

static void put_u16(struct wr *w, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
	put(w, b, 2);
}

static void put_u32(struct wr *w, uint32_t v)
{
	uint8_t b[4];
	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	put(w, b, 4);
}

static void put_u64(struct wr *w, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	put(w, b, 8);
}

/* Strings travel as u16 length + bytes (no NUL).  max bounds what the
 * receiver accepts, so the sender checks the same bound. */
static void put_str(struct wr *w, const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);
	if (n > max) {
		w->bad = true;
		return;
	}
	put_u16(w, (uint16_t)n);
	put(w, s, n);
}

struct rd {
	const uint8_t *p;
	size_t len, off;
	bool bad;
};

static void get(struct rd *r, void *dst, size_t n)
{
	if (r->bad || n > r->len - r->off) {
		r->bad = true;
		memset(dst, 0, n);
		return;
	}
	memcpy(dst, r->p + r->off, n);
	r->off += n;
}

static uint8_t get_u8(struct rd *r)
{
	uint8_t v;
	get(r, &v, 1);
	return v;
}

static uint16_t get_u16(struct rd *r)
{
	uint8_t b[2];
	get(r, b, 2);
	return (uint16_t)(b[0] | (b[1] << 8));
}

static uint32_t get_u32(struct rd *r)
{
	uint8_t b[4];
	get(r, b, 4);
	return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
	       ((uint32_t)b[3] << 24);
}

static uint64_t get_u64(struct rd *r)
{
	uint8_t b[8];
	get(r, b, 8);
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | b[i];
	return v;
}

/* Copies a string into dst[max+1]; rejects embedded NULs so that what the
 * receiver sees is exactly what was sent. */
static void get_str(struct rd *r, char *dst, size_t max)
{
	uint16_t n = get_u16(r);
	dst[0] = '\0';
	if (r->bad)
		return;
	if (n > max || n > r->len - r->off) {
		r->bad = true;
		return;
	}
	memcpy(dst, r->p + r->off, n);
	dst[n] = '\0';
	if (memchr(dst, '\0', n))
		r->bad = true;
	r->off += n;
}

/* Names that will be joined to a pool path must pass name_valid(); an
 * empty string is allowed only where the field is optional. */
static void check_name(struct rd *r, const char *s, bool optional)
{
	if (optional && !*s)
		return;
	if (!name_valid(s))
		r->bad = true;
}

/* ---- frames ------------------------------------------------------------ */
const char *wire_type_name(unsigned type)
{
	static const char *const names[] = {
		[WIRE_HELLO] = "HELLO", [WIRE_HELLO_OK] = "HELLO_OK",
		[WIRE_AUTH] = "AUTH", [WIRE_AUTH_OK] = "AUTH_OK",
		[WIRE_ERROR] = "ERROR", [WIRE_PING] = "PING", [WIRE_PONG] = "PONG",
		[WIRE_PAIR_OPEN] = "PAIR_OPEN", [WIRE_PAIR_INFO] = "PAIR_INFO",
		[WIRE_CYCLE_BEGIN] = "CYCLE_BEGIN", [WIRE_CYCLE_READY] = "CYCLE_READY",
		[WIRE_DATA] = "DATA", [WIRE_ZERO] = "ZERO", [WIRE_OBJ_DONE] = "OBJ_DONE",
		[WIRE_CYCLE_END] = "CYCLE_END",
		[WIRE_CYCLE_COMMITTED] = "CYCLE_COMMITTED",
		[WIRE_VERIFY_REQ] = "VERIFY_REQ", [WIRE_DIGESTS] = "DIGESTS",
		[WIRE_VERIFY_SUM] = "VERIFY_SUM", [WIRE_PAIR_REMOVE] = "PAIR_REMOVE",
		[WIRE_OK] = "OK", [WIRE_ROLE] = "ROLE", [WIRE_ROLE_INFO] = "ROLE_INFO",
		[WIRE_EXTENTS] = "EXTENTS", [WIRE_SYNCED] = "SYNCED",
	};
	if (type == 0 || type >= ARRAY_SIZE(names) || !names[type])
		return "?";
	return names[type];
}

static void encode_payload(struct wr *w, const struct wire_msg *m)
{
	switch (m->type) {
	case WIRE_HELLO:
		put_u16(w, m->u.hello.vmin);
		put_u16(w, m->u.hello.vmax);
		put(w, m->u.hello.nonce, WIRE_NONCE_LEN);
		put_str(w, m->u.hello.site, WIRE_TEXT_MAX);
		break;
	case WIRE_HELLO_OK:
		put_u16(w, m->u.hello_ok.version);
		put(w, m->u.hello_ok.nonce, WIRE_NONCE_LEN);
		put(w, m->u.hello_ok.mac, WIRE_MAC_LEN);
		put_str(w, m->u.hello_ok.site, WIRE_TEXT_MAX);
		break;
	case WIRE_AUTH:
		put(w, m->u.auth.mac, WIRE_MAC_LEN);
		break;
	case WIRE_AUTH_OK:
	case WIRE_OK:
		break;
	case WIRE_ERROR:
		put_u32(w, (uint32_t)m->u.error.code);
		put_str(w, m->u.error.msg, WIRE_TEXT_MAX);
		break;
	case WIRE_PING:
	case WIRE_PONG:
		put_u64(w, m->u.ping.token);
		break;
	case WIRE_PAIR_OPEN:
		put_str(w, m->u.pair_open.pair_id, WIRE_NAME_MAX);
		put_str(w, m->u.pair_open.pair, WIRE_NAME_MAX);
		put_str(w, m->u.pair_open.volume, WIRE_NAME_MAX);
		put_str(w, m->u.pair_open.snap, WIRE_NAME_MAX);
		put_str(w, m->u.pair_open.origin, WIRE_TEXT_MAX);
		put_u64(w, m->u.pair_open.size);
		put_u32(w, m->u.pair_open.object_size);
		put_u32(w, m->u.pair_open.block_size);
		put_u32(w, m->u.pair_open.flags);
		if (m->u.pair_open.flags & WIRE_OPEN_BASE) {
			put_str(w, m->u.pair_open.base_snap, WIRE_NAME_MAX);
			put_str(w, m->u.pair_open.base_id, WIRE_NAME_MAX);
			put_u64(w, m->u.pair_open.base_cycle);
		}
		break;
	case WIRE_PAIR_INFO:
		put_u64(w, m->u.pair_info.last_cycle);
		put_u64(w, m->u.pair_info.last_time);
		put_str(w, m->u.pair_info.last_snap, WIRE_NAME_MAX);
		break;
	case WIRE_CYCLE_BEGIN:
		put_str(w, m->u.cycle_begin.volume, WIRE_NAME_MAX);
		put_str(w, m->u.cycle_begin.pair_id, WIRE_NAME_MAX);
		put_str(w, m->u.cycle_begin.base, WIRE_NAME_MAX);
		put_str(w, m->u.cycle_begin.target, WIRE_NAME_MAX);
		put_u64(w, m->u.cycle_begin.cycle);
		put_u64(w, m->u.cycle_begin.objects);
		put_u64(w, m->u.cycle_begin.bytes);
		put_u64(w, m->u.cycle_begin.time);
		if (m->u.cycle_begin.size)
			put_u64(w, m->u.cycle_begin.size);
		break;
	case WIRE_CYCLE_READY:
		put_u64(w, m->u.cycle_ready.cycle);
		put_u32(w, m->u.cycle_ready.status);
		put_u64(w, m->u.cycle_ready.resume_objno);
		break;
	case WIRE_DATA:
		if (m->u.data.data_len > WIRE_MAX_PAYLOAD - 24 ||
		    m->u.data.raw_len > WIRE_DATA_MAX || m->u.data.raw_len == 0) {
			w->bad = true;
			return;
		}
		put_u64(w, m->u.data.objno);
		put_u64(w, m->u.data.offset);
		put_u32(w, m->u.data.raw_len);
		put_u32(w, m->u.data.codec);
		put(w, m->u.data.data, m->u.data.data_len);
		break;
	case WIRE_ZERO:
		put_u64(w, m->u.zero.objno);
		put_u64(w, m->u.zero.offset);
		put_u64(w, m->u.zero.length);
		break;
	case WIRE_OBJ_DONE:
		put_u64(w, m->u.obj_done.objno);
		break;
	case WIRE_CYCLE_END:
		put_u64(w, m->u.cycle_end.cycle);
		put_u64(w, m->u.cycle_end.objects);
		break;
	case WIRE_CYCLE_COMMITTED:
		put_u64(w, m->u.committed.cycle);
		put_str(w, m->u.committed.snap, WIRE_NAME_MAX);
		break;
	case WIRE_VERIFY_REQ:
		put_str(w, m->u.verify_req.volume, WIRE_NAME_MAX);
		put_str(w, m->u.verify_req.snap, WIRE_NAME_MAX);
		break;
	case WIRE_DIGESTS:
	case WIRE_EXTENTS:
		if (m->u.digests.count > WIRE_DIGESTS_MAX) {
			w->bad = true;
			return;
		}
		put_u32(w, m->u.digests.count);
		put(w, m->u.digests.raw, (size_t)m->u.digests.count * 16);
		break;
	case WIRE_VERIFY_SUM:
		put(w, m->u.verify_sum.md5, 16);
		put_u64(w, m->u.verify_sum.objects);
		break;
	case WIRE_SYNCED:
		put_str(w, m->u.synced.volume, WIRE_NAME_MAX);
		put_str(w, m->u.synced.pair_id, WIRE_NAME_MAX);
		put_u64(w, m->u.synced.last_cycle);
		put_str(w, m->u.synced.last_snap, WIRE_NAME_MAX);
		put_u64(w, m->u.synced.as_of);
		break;
	case WIRE_PAIR_REMOVE:
		put_str(w, m->u.pair_remove.volume, WIRE_NAME_MAX);
		put_str(w, m->u.pair_remove.pair_id, WIRE_NAME_MAX);
		break;
	case WIRE_ROLE:
		put_str(w, m->u.role.volume, WIRE_NAME_MAX);
		put_str(w, m->u.role.pair_id, WIRE_NAME_MAX);
		put_u32(w, m->u.role.op);
		put_u64(w, m->u.role.epoch);
		put_u64(w, m->u.role.last_cycle);
		put_u64(w, m->u.role.period_s);
		put_str(w, m->u.role.last_snap, WIRE_NAME_MAX);
		put_str(w, m->u.role.sender_volume, WIRE_NAME_MAX);
		put_str(w, m->u.role.addr, WIRE_TEXT_MAX);
		if (m->u.role.has_settings) {
			put_u64(w, m->u.role.peer_timeout_s);
			put_u64(w, m->u.role.bandwidth);
			put_u32(w, m->u.role.max_inflight);
			put_u32(w, m->u.role.settings_flags);
			if (m->u.role.has_retention) {
				put_u32(w, m->u.role.keep);
				put_u64(w, m->u.role.keep_for_s);
			}
		}
		break;
	case WIRE_ROLE_INFO:
		put_u32(w, m->u.role_info.role);
		put_u32(w, m->u.role_info.flags);
		put_u64(w, m->u.role_info.epoch);
		put_u64(w, m->u.role_info.last_cycle);
		put_str(w, m->u.role_info.last_snap, WIRE_NAME_MAX);
		break;
	default:
		w->bad = true;
	}
}

int wire_encode(const struct wire_msg *m, uint8_t *buf, size_t cap)
{
	if (cap < WIRE_HDR_LEN)
		return -ENOSPC;
	struct wr w = { .p = buf, .len = WIRE_HDR_LEN,
	                .cap = MIN(cap, (size_t)WIRE_FRAME_MAX) };
	encode_payload(&w, m);
	if (w.bad)
		return (w.nospc && cap < WIRE_FRAME_MAX) ? -ENOSPC : -EINVAL;
	uint32_t plen = (uint32_t)(w.len - WIRE_HDR_LEN);
	struct wr h = { .p = buf, .len = 0, .cap = WIRE_HDR_LEN };
	put_u32(&h, WIRE_MAGIC);
	put_u8(&h, (uint8_t)m->type);
	put_u8(&h, 0);
	put_u16(&h, 0);
	put_u32(&h, plen);
	uint32_t crc = crc32c(0, buf, 12);
	crc = crc32c(crc, buf + WIRE_HDR_LEN, plen);
	put_u32(&h, crc);
	return (int)w.len;
}

int wire_encode_digests(const struct wire_digest *d, uint32_t count,
                        uint8_t *buf, size_t cap)
{
	if (count > WIRE_DIGESTS_MAX)
		return -EINVAL;
	uint8_t raw[WIRE_DIGESTS_MAX * 16];
	struct wr w = { .p = raw, .len = 0, .cap = sizeof(raw) };
	for (uint32_t i = 0; i < count; i++) {
		put_u64(&w, d[i].objno);
		put_u64(&w, d[i].hash);
	}
	struct wire_msg m = { .type = WIRE_DIGESTS };
	m.u.digests.count = count;
	m.u.digests.raw = raw;
	return wire_encode(&m, buf, cap);
}

int wire_encode_extents(const struct wire_digest *d, uint32_t count,
                        uint8_t *buf, size_t cap)
{
	int n = wire_encode_digests(d, count, buf, cap);
	if (n >= 0)
		buf[4] = WIRE_EXTENTS; /* same payload; the CRC covers the type */
	if (n >= 0) {
		uint32_t plen = (uint32_t)n - WIRE_HDR_LEN;
		uint32_t crc = crc32c(0, buf, 12);
		crc = crc32c(crc, buf + WIRE_HDR_LEN, plen);
		struct wr h = { .p = buf, .len = 12, .cap = WIRE_HDR_LEN };
		put_u32(&h, crc);
	}
	return n;
}

struct wire_digest wire_digest_at(const struct wire_msg *m, uint32_t i)
{
	struct rd r = { .p = m->u.digests.raw + (size_t)i * 16, .len = 16 };
	struct wire_digest d;
	d.objno = get_u64(&r);
	d.hash = get_u64(&r);
	return d;
}

int wire_header_check(const uint8_t hdr[WIRE_HDR_LEN], uint32_t *payload_len)
{
	struct rd r = { .p = hdr, .len = WIRE_HDR_LEN };
	uint32_t magic = get_u32(&r);
	uint8_t type = get_u8(&r);
	uint8_t flags = get_u8(&r);
	uint16_t reserved = get_u16(&r);
	uint32_t plen = get_u32(&r);
	if (magic != WIRE_MAGIC || type == 0 || type > WIRE_TYPE_MAX || flags ||
	    reserved || plen > WIRE_MAX_PAYLOAD)
		return -EPROTO;
	*payload_len = plen;
	return 0;
}

static void decode_payload(struct rd *r, struct wire_msg *m)
{
	switch (m->type) {
	case WIRE_HELLO:
		m->u.hello.vmin = get_u16(r);
		m->u.hello.vmax = get_u16(r);
		get(r, m->u.hello.nonce, WIRE_NONCE_LEN);
		get_str(r, m->u.hello.site, WIRE_TEXT_MAX);
		if (m->u.hello.vmin > m->u.hello.vmax)
			r->bad = true;
		break;
	case WIRE_HELLO_OK:
		m->u.hello_ok.version = get_u16(r);
		get(r, m->u.hello_ok.nonce, WIRE_NONCE_LEN);
		get(r, m->u.hello_ok.mac, WIRE_MAC_LEN);
		get_str(r, m->u.hello_ok.site, WIRE_TEXT_MAX);
		break;
	case WIRE_AUTH:
		get(r, m->u.auth.mac, WIRE_MAC_LEN);
		break;
	case WIRE_AUTH_OK:
	case WIRE_OK:
		break;
	case WIRE_ERROR:
		m->u.error.code = (int32_t)get_u32(r);
		get_str(r, m->u.error.msg, WIRE_TEXT_MAX);
		if (m->u.error.code <= 0 || m->u.error.code > 4095)
			r->bad = true;
		break;
	case WIRE_PING:
	case WIRE_PONG:
		m->u.ping.token = get_u64(r);
		break;
	case WIRE_PAIR_OPEN:
		get_str(r, m->u.pair_open.pair_id, WIRE_NAME_MAX);
		get_str(r, m->u.pair_open.pair, WIRE_NAME_MAX);
		get_str(r, m->u.pair_open.volume, WIRE_NAME_MAX);
		get_str(r, m->u.pair_open.snap, WIRE_NAME_MAX);
		get_str(r, m->u.pair_open.origin, WIRE_TEXT_MAX);
		m->u.pair_open.size = get_u64(r);
		m->u.pair_open.object_size = get_u32(r);
		m->u.pair_open.block_size = get_u32(r);
		m->u.pair_open.flags = get_u32(r);
		check_name(r, m->u.pair_open.pair_id, false);
		check_name(r, m->u.pair_open.pair, false);
		check_name(r, m->u.pair_open.volume, false);
		check_name(r, m->u.pair_open.snap, false);
		if (m->u.pair_open.flags & ~(WIRE_OPEN_CREATE | WIRE_OPEN_FORCE | WIRE_OPEN_BASE))
			r->bad = true;
		if (!r->bad && (m->u.pair_open.flags & WIRE_OPEN_BASE)) {
			get_str(r, m->u.pair_open.base_snap, WIRE_NAME_MAX);
			get_str(r, m->u.pair_open.base_id, WIRE_NAME_MAX);
			m->u.pair_open.base_cycle = get_u64(r);
			check_name(r, m->u.pair_open.base_snap, false);
			check_name(r, m->u.pair_open.base_id, false);
			if (m->u.pair_open.base_cycle == 0)
				r->bad = true;
		}
		break;
	case WIRE_PAIR_INFO:
		m->u.pair_info.last_cycle = get_u64(r);
		m->u.pair_info.last_time = get_u64(r);
		get_str(r, m->u.pair_info.last_snap, WIRE_NAME_MAX);
		check_name(r, m->u.pair_info.last_snap, true);
		break;
	case WIRE_CYCLE_BEGIN:
		get_str(r, m->u.cycle_begin.volume, WIRE_NAME_MAX);
		get_str(r, m->u.cycle_begin.pair_id, WIRE_NAME_MAX);
		get_str(r, m->u.cycle_begin.base, WIRE_NAME_MAX);
		get_str(r, m->u.cycle_begin.target, WIRE_NAME_MAX);
		m->u.cycle_begin.cycle = get_u64(r);
		m->u.cycle_begin.objects = get_u64(r);
		m->u.cycle_begin.bytes = get_u64(r);
		m->u.cycle_begin.time = get_u64(r);
		/* size was added later: absent, or present and not 0 (so that
		 * every frame has one encoding) */
		if (!r->bad && r->len - r->off == 8) {
			m->u.cycle_begin.size = get_u64(r);
			if (!m->u.cycle_begin.size)
				r->bad = true;
		}
		check_name(r, m->u.cycle_begin.volume, false);
		check_name(r, m->u.cycle_begin.pair_id, false);
		check_name(r, m->u.cycle_begin.base, true);
		check_name(r, m->u.cycle_begin.target, false);
		if (m->u.cycle_begin.cycle == 0)
			r->bad = true;
		break;
	case WIRE_CYCLE_READY:
		m->u.cycle_ready.cycle = get_u64(r);
		m->u.cycle_ready.status = get_u32(r);
		m->u.cycle_ready.resume_objno = get_u64(r);
		if (m->u.cycle_ready.status > WIRE_READY_COMMITTED)
			r->bad = true;
		break;
	case WIRE_DATA:
		m->u.data.objno = get_u64(r);
		m->u.data.offset = get_u64(r);
		m->u.data.raw_len = get_u32(r);
		m->u.data.codec = get_u32(r);
		if (r->bad)
			break;
		m->u.data.data = r->p + r->off;
		m->u.data.data_len = (uint32_t)(r->len - r->off);
		r->off = r->len;
		if (m->u.data.raw_len == 0 || m->u.data.raw_len > WIRE_DATA_MAX ||
		    m->u.data.codec > WIRE_CODEC_ZSTD || m->u.data.data_len == 0 ||
		    (m->u.data.codec == WIRE_CODEC_NONE &&
		     m->u.data.data_len != m->u.data.raw_len) ||
		    m->u.data.offset > UINT64_MAX - m->u.data.raw_len)
			r->bad = true;
		break;
	case WIRE_ZERO:
		m->u.zero.objno = get_u64(r);
		m->u.zero.offset = get_u64(r);
		m->u.zero.length = get_u64(r);
		if (m->u.zero.length == 0 ||
		    m->u.zero.offset > UINT64_MAX - m->u.zero.length)
			r->bad = true;
		break;
	case WIRE_OBJ_DONE:
		m->u.obj_done.objno = get_u64(r);
		break;
	case WIRE_CYCLE_END:
		m->u.cycle_end.cycle = get_u64(r);
		m->u.cycle_end.objects = get_u64(r);
		break;
	case WIRE_CYCLE_COMMITTED:
		m->u.committed.cycle = get_u64(r);
		get_str(r, m->u.committed.snap, WIRE_NAME_MAX);
		check_name(r, m->u.committed.snap, false);
		break;
	case WIRE_VERIFY_REQ:
		get_str(r, m->u.verify_req.volume, WIRE_NAME_MAX);
		get_str(r, m->u.verify_req.snap, WIRE_NAME_MAX);
		check_name(r, m->u.verify_req.volume, false);
		check_name(r, m->u.verify_req.snap, false);
		break;
	case WIRE_DIGESTS:
	case WIRE_EXTENTS:
		m->u.digests.count = get_u32(r);
		if (r->bad)
			break;
		if (m->u.digests.count > WIRE_DIGESTS_MAX ||
		    (size_t)m->u.digests.count * 16 != r->len - r->off) {
			r->bad = true;
			break;
		}
		m->u.digests.raw = r->p + r->off;
		r->off = r->len;
		break;
	case WIRE_VERIFY_SUM:
		get(r, m->u.verify_sum.md5, 16);
		m->u.verify_sum.objects = get_u64(r);
		break;
	case WIRE_SYNCED:
		get_str(r, m->u.synced.volume, WIRE_NAME_MAX);
		get_str(r, m->u.synced.pair_id, WIRE_NAME_MAX);
		m->u.synced.last_cycle = get_u64(r);
		get_str(r, m->u.synced.last_snap, WIRE_NAME_MAX);
		m->u.synced.as_of = get_u64(r);
		check_name(r, m->u.synced.volume, false);
		check_name(r, m->u.synced.pair_id, false);
		check_name(r, m->u.synced.last_snap, false);
		if (!m->u.synced.last_cycle || !m->u.synced.as_of)
			r->bad = true;
		break;
	case WIRE_PAIR_REMOVE:
		get_str(r, m->u.pair_remove.volume, WIRE_NAME_MAX);
		get_str(r, m->u.pair_remove.pair_id, WIRE_NAME_MAX);
		check_name(r, m->u.pair_remove.volume, false);
		check_name(r, m->u.pair_remove.pair_id, false);
		break;
	case WIRE_ROLE:
		get_str(r, m->u.role.volume, WIRE_NAME_MAX);
		get_str(r, m->u.role.pair_id, WIRE_NAME_MAX);
		m->u.role.op = get_u32(r);
		m->u.role.epoch = get_u64(r);
		m->u.role.last_cycle = get_u64(r);
		m->u.role.period_s = get_u64(r);
		get_str(r, m->u.role.last_snap, WIRE_NAME_MAX);
		get_str(r, m->u.role.sender_volume, WIRE_NAME_MAX);
		get_str(r, m->u.role.addr, WIRE_TEXT_MAX);
		check_name(r, m->u.role.volume, false);
		check_name(r, m->u.role.pair_id, false);
		check_name(r, m->u.role.last_snap, true);
		check_name(r, m->u.role.sender_volume, false);
		if (m->u.role.op < WIRE_ROLE_CHECK || m->u.role.op > WIRE_ROLE_OP_MAX)
			r->bad = true;
		if (!r->bad && r->off < r->len) {
			m->u.role.has_settings = true;
			m->u.role.peer_timeout_s = get_u64(r);
			m->u.role.bandwidth = get_u64(r);
			m->u.role.max_inflight = get_u32(r);
			m->u.role.settings_flags = get_u32(r);
			if (m->u.role.settings_flags & ~(WIRE_RS_COMPRESS | WIRE_RS_KEEP_WRITING))
				r->bad = true;
		}
		if (!r->bad && r->off < r->len) {
			m->u.role.has_retention = true;
			m->u.role.keep = get_u32(r);
			m->u.role.keep_for_s = get_u64(r);
			if (!m->u.role.keep)
				r->bad = true;
		}
		break;
	case WIRE_ROLE_INFO:
		m->u.role_info.role = get_u32(r);
		m->u.role_info.flags = get_u32(r);
		m->u.role_info.epoch = get_u64(r);
		m->u.role_info.last_cycle = get_u64(r);
		get_str(r, m->u.role_info.last_snap, WIRE_NAME_MAX);
		check_name(r, m->u.role_info.last_snap, true);
		if ((m->u.role_info.role != WIRE_RI_PRIMARY &&
		     m->u.role_info.role != WIRE_RI_SECONDARY) ||
		    (m->u.role_info.flags & ~0x7u))
			r->bad = true;
		break;
	default:
		r->bad = true;
	}
}

int wire_decode(const uint8_t *buf, size_t len, struct wire_msg *out)
{
	if (len < WIRE_HDR_LEN)
		return -EAGAIN;
	uint32_t plen;
	if (wire_header_check(buf, &plen) < 0)
		return -EPROTO;
	if (len - WIRE_HDR_LEN < plen)
		return -EAGAIN;
	struct rd h = { .p = buf + 12, .len = 4 };
	uint32_t want = get_u32(&h);
	uint32_t crc = crc32c(0, buf, 12);
	crc = crc32c(crc, buf + WIRE_HDR_LEN, plen);
	if (crc != want)
		return -EBADMSG;
	memset(out, 0, sizeof(*out));
	out->type = (enum wire_type)buf[4];
	struct rd r = { .p = buf + WIRE_HDR_LEN, .len = plen };
	decode_payload(&r, out);
	/* Trailing bytes would be a second meaning the CRC does not rule out:
	 * a frame is exactly its fields. */
	if (r.bad || r.off != r.len)
		return -EPROTO;
	return (int)(WIRE_HDR_LEN + plen);
}
