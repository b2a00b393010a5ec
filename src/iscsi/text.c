/* iSCSI text key=value codec (RFC 7143 sec. 6).  Pure and bounded. */
#include <errno.h>
#include <string.h>

#include "iscsi/pdu.h"

static bool key_char_ok(char c)
{
	/* RFC 7143 6.1: key names use letters, digits, '.', '-', '+', '@', '_'
	 * (and ':' in X- vendor keys). */
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '-' || c == '+' || c == '@' || c == '_' || c == ':';
}

int iscsi_text_parse(const char *data, size_t len, struct iscsi_kv *kv, size_t cap)
{
	size_t n = 0, i = 0;
	while (i < len) {
		if (data[i] == '\0') { /* NUL padding after the last pair */
			i++;
			continue;
		}
		const char *end = memchr(data + i, '\0', len - i);
		if (!end)
			return -EPROTO;
		size_t plen = (size_t)(end - (data + i));
		const char *eq = memchr(data + i, '=', plen);
		if (!eq)
			return -EINVAL;
		size_t klen = (size_t)(eq - (data + i));
		size_t vlen = plen - klen - 1;
		if (klen == 0 || klen > ISCSI_KEY_MAX || vlen > ISCSI_VALUE_MAX)
			return -EINVAL;
		for (size_t k = 0; k < klen; k++)
			if (!key_char_ok(data[i + k]))
				return -EINVAL;
		if (n == cap)
			return -E2BIG;
		kv[n].key = data + i;
		kv[n].klen = (uint32_t)klen;
		kv[n].val = eq + 1;
		kv[n].vlen = (uint32_t)vlen;
		n++;
		i += plen + 1;
	}
	return (int)n;
}

bool iscsi_kv_key_is(const struct iscsi_kv *kv, const char *key)
{
	size_t l = strlen(key);
	return kv->klen == l && memcmp(kv->key, key, l) == 0;
}

int iscsi_kv_value(const struct iscsi_kv *kv, char *out, size_t cap)
{
	if (kv->vlen >= cap)
		return -ENAMETOOLONG;
	memcpy(out, kv->val, kv->vlen);
	out[kv->vlen] = '\0';
	return 0;
}

int iscsi_text_add(char *buf, size_t cap, size_t *len, const char *key, const char *val)
{
	size_t kl = strlen(key), vl = strlen(val);
	if (*len > cap || cap - *len < kl + vl + 2)
		return -ENOSPC;
	memcpy(buf + *len, key, kl);
	buf[*len + kl] = '=';
	memcpy(buf + *len + kl + 1, val, vl);
	buf[*len + kl + 1 + vl] = '\0';
	*len += kl + vl + 2;
	return 0;
}

int iscsi_text_number(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	int base = 10;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		int d;
		if (*s >= '0' && *s <= '9')
			d = *s - '0';
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = *s - 'a' + 10;
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = *s - 'A' + 10;
		else
			return -EINVAL;
		if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
			return -EINVAL;
		v = v * (uint64_t)base + (uint64_t)d;
	}
	*out = v;
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int b64val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int iscsi_text_binary(const char *s, uint8_t *out, size_t cap)
{
	size_t n = 0;
	if (s[0] != '0' || !s[1])
		return -EINVAL;
	if (s[1] == 'x' || s[1] == 'X') {
		s += 2;
		size_t l = strlen(s);
		if (l == 0)
			return -EINVAL;
		/* An odd digit count means a leading zero nibble was dropped. */
		int hi = -1;
		if (l & 1)
			hi = 0;
		for (; *s; s++) {
			int d = hexval(*s);
			if (d < 0)
				return -EINVAL;
			if (hi < 0) {
				hi = d;
				continue;
			}
			if (n == cap)
				return -ENOSPC;
			out[n++] = (uint8_t)(hi << 4 | d);
			hi = -1;
		}
		return (int)n;
	}
	if (s[1] == 'b' || s[1] == 'B') {
		s += 2;
		uint32_t acc = 0;
		int bits = 0, pads = 0;
		for (; *s; s++) {
			if (*s == '=') {
				pads++;
				continue;
			}
			int d = b64val(*s);
			if (d < 0 || pads)
				return -EINVAL;
			acc = (acc << 6) | (uint32_t)d;
			bits += 6;
			if (bits >= 8) {
				bits -= 8;
				if (n == cap)
					return -ENOSPC;
				out[n++] = (uint8_t)(acc >> bits);
			}
		}
		return n ? (int)n : -EINVAL;
	}
	return -EINVAL;
}

void iscsi_text_hex(const uint8_t *in, size_t n, char *out)
{
	static const char hx[] = "0123456789abcdef";
	out[0] = '0';
	out[1] = 'x';
	for (size_t i = 0; i < n; i++) {
		out[2 + 2 * i] = hx[in[i] >> 4];
		out[3 + 2 * i] = hx[in[i] & 15];
	}
	out[2 + 2 * n] = '\0';
}
