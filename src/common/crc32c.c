#include "common/common.h"

#include <isa-l/crc.h>

uint32_t crc32c(uint32_t crc, const void *data, size_t len)
{
	/* isa-l's crc32_iscsi neither pre- nor post-inverts; do it here so
	 * that chaining works like zlib's crc32(). */
	uint32_t c = ~crc;
	const unsigned char *p = data;
	while (len) {
		int n = len > (1u << 30) ? (1 << 30) : (int)len;
		c = crc32_iscsi((unsigned char *)p, n, c);
		p += n;
		len -= (size_t)n;
	}
	return ~c;
}
