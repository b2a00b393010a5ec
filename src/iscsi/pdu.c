/* The iSCSI PDU codec: framing, digests, AHS and LUN encoding.  Pure. */
#include <errno.h>
#include <string.h>

#include "common/common.h"
#include "iscsi/pdu.h"

void iscsi_digest(const void *data, size_t len, uint8_t out[4])
{
	/* RFC 7143 sec. 13.1 / RFC 3720 B.4: the CRC32C register is sent least
	 * significant byte first (32 zero bytes digest to aa 36 91 8a). */
	uint32_t c = crc32c(0, data, len);
	out[0] = (uint8_t)c;
	out[1] = (uint8_t)(c >> 8);
	out[2] = (uint8_t)(c >> 16);
	out[3] = (uint8_t)(c >> 24);
}

long iscsi_pdu_wire_len(const uint8_t bhs[ISCSI_BHS_LEN], const struct iscsi_digests *dg,
                        uint32_t max_dlen)
{
	uint32_t ahs = (uint32_t)bhs[4] * 4;
	uint32_t dlen = be24_get(bhs + 5);
	if (dlen > max_dlen)
		return -EMSGSIZE;
	long n = ISCSI_BHS_LEN + ahs;
	if (dg->header)
		n += ISCSI_DIGEST_LEN;
	if (dlen) {
		n += dlen + iscsi_pad4(dlen);
		if (dg->data)
			n += ISCSI_DIGEST_LEN;
	}
	return n;
}

long iscsi_pdu_parse(const uint8_t *buf, size_t len, const struct iscsi_digests *dg,
                     uint32_t max_dlen, struct iscsi_pdu_view *v)
{
	if (len < ISCSI_BHS_LEN)
		return 0;
	long total = iscsi_pdu_wire_len(buf, dg, max_dlen);
	if (total < 0)
		return total;
	if (len < (size_t)total)
		return 0;
	uint32_t ahs_len = (uint32_t)buf[4] * 4;
	size_t off = ISCSI_BHS_LEN + ahs_len;
	if (dg->header) {
		uint8_t d[4];
		iscsi_digest(buf, off, d);
		if (memcmp(d, buf + off, 4) != 0)
			return -EBADMSG;
		off += ISCSI_DIGEST_LEN;
	}
	memset(v, 0, sizeof(*v));
	v->bhs = buf;
	v->ahs = ahs_len ? buf + ISCSI_BHS_LEN : NULL;
	v->ahs_len = ahs_len;
	v->opcode = buf[0] & ISCSI_OP_MASK;
	v->immediate = (buf[0] & ISCSI_OP_IMMEDIATE) != 0;
	v->dlen = be24_get(buf + 5);
	v->data = v->dlen ? buf + off : NULL;
	/* An AHS chain must tile TotalAHSLength exactly. */
	for (uint32_t a = 0; a < ahs_len;) {
		if (ahs_len - a < 4)
			return -EPROTO;
		uint32_t l = be16_get(buf + ISCSI_BHS_LEN + a);
		/* AHSLength counts the type-specific byte, not length/type */
		uint32_t step = (3 + l + 3) & ~3u;
		if (l == 0 || step > ahs_len - a)
			return -EPROTO;
		a += step;
	}
	if (v->dlen && dg->data) {
		uint32_t padded = v->dlen + iscsi_pad4(v->dlen);
		uint8_t d[4];
		iscsi_digest(buf + off, padded, d);
		if (memcmp(d, buf + off + padded, 4) != 0)
			return -EILSEQ;
	}
	return total;
}

size_t iscsi_pdu_hdr_finish(uint8_t bhs[ISCSI_BHS_LEN], uint32_t dlen,
                            const struct iscsi_digests *dg, uint8_t out[ISCSI_BHS_LEN + 4])
{
	bhs[4] = 0;
	be24_put(bhs + 5, dlen);
	memcpy(out, bhs, ISCSI_BHS_LEN);
	if (!dg->header)
		return ISCSI_BHS_LEN;
	iscsi_digest(out, ISCSI_BHS_LEN, out + ISCSI_BHS_LEN);
	return ISCSI_BHS_LEN + ISCSI_DIGEST_LEN;
}

size_t iscsi_pdu_tail(const void *data, uint32_t dlen, const struct iscsi_digests *dg,
                      uint8_t out[8])
{
	if (!dlen)
		return 0;
	uint32_t pad = iscsi_pad4(dlen);
	memset(out, 0, pad);
	if (!dg->data)
		return pad;
	uint32_t c = crc32c(0, data, dlen);
	if (pad)
		c = crc32c(c, out, pad);
	out[pad + 0] = (uint8_t)c;
	out[pad + 1] = (uint8_t)(c >> 8);
	out[pad + 2] = (uint8_t)(c >> 16);
	out[pad + 3] = (uint8_t)(c >> 24);
	return pad + 4;
}

long iscsi_pdu_build(uint8_t *out, size_t cap, uint8_t bhs[ISCSI_BHS_LEN], const void *data,
                     uint32_t dlen, const struct iscsi_digests *dg)
{
	uint8_t hdr[ISCSI_BHS_LEN + 4], tail[8];
	if (dlen > ISCSI_DLEN_MAX)
		return -ENOSPC;
	size_t h = iscsi_pdu_hdr_finish(bhs, dlen, dg, hdr);
	size_t t = iscsi_pdu_tail(data, dlen, dg, tail);
	if (cap < h + dlen + t)
		return -ENOSPC;
	memcpy(out, hdr, h);
	if (dlen)
		memcpy(out + h, data, dlen);
	memcpy(out + h + dlen, tail, t);
	return (long)(h + dlen + t);
}

int iscsi_ahs_find(const uint8_t *ahs, uint32_t ahs_len, uint8_t type, const uint8_t **p,
                   uint32_t *plen)
{
	for (uint32_t a = 0; a < ahs_len;) {
		if (ahs_len - a < 4)
			return -EPROTO;
		uint32_t l = be16_get(ahs + a);
		uint32_t step = (3 + l + 3) & ~3u;
		if (l == 0 || step > ahs_len - a)
			return -EPROTO;
		if (ahs[a + 2] == type) {
			/* AHSLength counts the reserved byte at offset 3 too. */
			*p = ahs + a + 4;
			*plen = l - 1;
			return 0;
		}
		a += step;
	}
	return -ENOENT;
}

int iscsi_cdb_assemble(const struct iscsi_pdu_view *v, uint8_t *cdb, size_t cap)
{
	const struct iscsi_bhs_scsi_cmd *c = (const void *)v->bhs;
	if (cap < 16)
		return -EPROTO;
	memcpy(cdb, c->cdb, 16);
	const uint8_t *x;
	uint32_t xl;
	int r = iscsi_ahs_find(v->ahs, v->ahs_len, 1, &x, &xl);
	if (r == -ENOENT)
		return 16;
	if (r < 0)
		return r;
	if (xl > cap - 16)
		return -EPROTO;
	memcpy(cdb + 16, x, xl);
	return (int)(16 + xl);
}

uint64_t iscsi_lun_decode(const uint8_t lun[8])
{
	switch (lun[0] >> 6) {
	case 0: /* peripheral device addressing: bus 0 only */
		return lun[0] ? 0xffffffffffffffffull : lun[1];
	case 1: /* flat space addressing */
		return (uint64_t)(lun[0] & 0x3f) << 8 | lun[1];
	default:
		return 0xffffffffffffffffull;
	}
}

void iscsi_lun_encode(uint64_t lun, uint8_t out[8])
{
	memset(out, 0, 8);
	if (lun < 256) {
		out[1] = (uint8_t)lun;
	} else {
		out[0] = (uint8_t)(0x40 | ((lun >> 8) & 0x3f));
		out[1] = (uint8_t)lun;
	}
}
