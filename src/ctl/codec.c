/* The control frame codec: pure functions over caller buffers, so that
 * the fuzzer can drive them with no socket behind. */
#include "ctl/ctl.h"

#include <errno.h>
#include <string.h>

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_u64(uint8_t *p, uint64_t v)
{
	put_u32(p, (uint32_t)(v >> 32));
	put_u32(p + 4, (uint32_t)v);
}

static uint64_t get_u64(const uint8_t *p)
{
	return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

static bool type_valid(uint8_t t)
{
	return t >= CTL_REQ && t <= CTL_EXIT;
}

int ctl_frame_encode(void *buf, size_t cap, uint8_t type, const void *payload, uint32_t len)
{
	if (!type_valid(type))
		return -EINVAL;
	if (len > CTL_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (cap < CTL_HDR_LEN + (size_t)len)
		return -ENOBUFS;
	uint8_t *p = buf;
	put_u32(p, len);
	p[4] = type;
	if (len)
		memmove(p + CTL_HDR_LEN, payload, len);
	return (int)(CTL_HDR_LEN + len);
}

int ctl_hdr_decode(const uint8_t hdr[CTL_HDR_LEN], uint8_t *type, uint32_t *len)
{
	uint32_t l = get_u32(hdr);
	if (l > CTL_MAX_PAYLOAD)
		return -EMSGSIZE;
	if (!type_valid(hdr[4]))
		return -EPROTO;
	/* Fixed-size payloads are checked here so that a reader never waits
	 * for bytes that a valid peer would not send. */
	if ((hdr[4] == CTL_EXIT && l != 4) || (hdr[4] == CTL_IN_END && l != 0) ||
	    (hdr[4] == CTL_PROGRESS && (l < 17 || l > 17 + CTL_LABEL_MAX)))
		return -EPROTO;
	*type = hdr[4];
	*len = l;
	return 0;
}

int ctl_frame_decode(const void *buf, size_t len, struct ctl_frame *f)
{
	const uint8_t *p = buf;
	if (len < CTL_HDR_LEN)
		return 0;
	uint8_t type;
	uint32_t plen;
	int r = ctl_hdr_decode(p, &type, &plen);
	if (r < 0)
		return r;
	if (len - CTL_HDR_LEN < plen)
		return 0;
	f->type = type;
	f->len = plen;
	f->payload = p + CTL_HDR_LEN;
	return (int)(CTL_HDR_LEN + plen);
}

int ctl_req_encode(void *buf, size_t cap, int argc, const char *const argv[])
{
	if (argc < 0 || (unsigned)argc > CTL_MAX_ARGC)
		return -E2BIG;
	size_t need = 4;
	for (int i = 0; i < argc; i++)
		need += strlen(argv[i]) + 1;
	if (need > CTL_MAX_PAYLOAD)
		return -E2BIG;
	if (need > cap)
		return -ENOBUFS;
	uint8_t *p = buf;
	put_u32(p, (uint32_t)argc);
	size_t off = 4;
	for (int i = 0; i < argc; i++) {
		size_t n = strlen(argv[i]) + 1;
		memcpy(p + off, argv[i], n);
		off += n;
	}
	return (int)off;
}

int ctl_req_decode(const void *payload, size_t len, int *argc, const char **argv, size_t max)
{
	const uint8_t *p = payload;
	if (len < 4 || max == 0)
		return -EPROTO;
	uint32_t n = get_u32(p);
	if (n > CTL_MAX_ARGC || n > max - 1)
		return -EPROTO;
	size_t off = 4;
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *nul = memchr(p + off, 0, len - off);
		if (!nul)
			return -EPROTO;
		argv[i] = (const char *)(p + off);
		off = (size_t)(nul - p) + 1;
	}
	if (off != len)
		return -EPROTO;
	argv[n] = NULL;
	*argc = (int)n;
	return 0;
}

int ctl_progress_encode(void *buf, size_t cap, uint64_t done, uint64_t total, const char *label)
{
	size_t l = label ? strnlen(label, CTL_LABEL_MAX) : 0;
	if (cap < 17 + l)
		return -ENOBUFS;
	uint8_t *p = buf;
	put_u64(p, done);
	put_u64(p + 8, total);
	p[16] = (uint8_t)l;
	if (l)
		memcpy(p + 17, label, l);
	return (int)(17 + l);
}

int ctl_progress_decode(const void *payload, size_t len, uint64_t *done, uint64_t *total,
                        char *label)
{
	const uint8_t *p = payload;
	if (len < 17)
		return -EPROTO;
	size_t l = p[16];
	if (l > CTL_LABEL_MAX || len != 17 + l)
		return -EPROTO;
	*done = get_u64(p);
	*total = get_u64(p + 8);
	memcpy(label, p + 17, l);
	label[l] = '\0';
	return 0;
}

int ctl_exit_encode(void *buf, size_t cap, int32_t status)
{
	if (cap < 4)
		return -ENOBUFS;
	put_u32(buf, (uint32_t)status);
	return 4;
}

int ctl_exit_decode(const void *payload, size_t len, int32_t *status)
{
	if (len != 4)
		return -EPROTO;
	*status = (int32_t)get_u32(payload);
	return 0;
}
