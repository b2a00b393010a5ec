/* MODE SENSE / MODE SELECT (6 and 10): the pages a Linux initiator and
 * libiscsi look at.  Changeable: WCE (caching), SWP (control), DEXCPT and
 * MRIE (informational exceptions).  Nothing is savable: the values live
 * as long as the LU, so PC=saved and SP=1 are refused as SPC-4 says for a
 * device without saved pages. */
#include <string.h>

#include "common/common.h"
#include "scsi/scsi_int.h"

enum { PC_CURRENT = 0, PC_CHANGEABLE = 1, PC_DEFAULT = 2, PC_SAVED = 3 };

static const uint8_t PAGES[] = { 0x01, 0x08, 0x0a, 0x1c };

/* Builds one page into p (at least 20 bytes).  Returns its length, or 0
 * for a page we do not have.  Caller holds lu->mu. */
static size_t mode_page(const struct scsi_lu *lu, uint8_t code, int pc, uint8_t *p)
{
	bool ch = pc == PC_CHANGEABLE, def = pc == PC_DEFAULT;
	size_t len;
	switch (code) {
	case 0x01: /* read-write error recovery */
		len = 12;
		memset(p, 0, len);
		if (!ch)
			p[2] = 0xc0;            /* AWRE, ARRE */
		break;
	case 0x08: /* caching */
		len = 20;
		memset(p, 0, len);
		if (ch)
			p[2] = 0x04;
		else
			p[2] = (def || lu->wce) ? 0x04 : 0;
		break;
	case 0x0a: /* control */
		len = 12;
		memset(p, 0, len);
		if (ch) {
			p[4] = 0x08;            /* SWP */
		} else {
			p[3] = 0x10;            /* queue algorithm modifier: unrestricted */
			p[4] = (!def && lu->swp) ? 0x08 : 0;
			put_be16(p + 8, 0xffff);  /* busy timeout: unlimited */
		}
		break;
	case 0x1c: /* informational exceptions control */
		len = 12;
		memset(p, 0, len);
		if (ch) {
			p[2] = 0x08;            /* DEXCPT */
			p[3] = 0x0f;            /* MRIE */
		} else {
			p[2] = (def || lu->dexcpt) ? 0x08 : 0;
			p[3] = def ? 0 : lu->mrie;
		}
		break;
	default:
		return 0;
	}
	p[0] = code;
	p[1] = (uint8_t)(len - 2);
	return len;
}

void scsi_mode_sense(struct scsi_lu *lu, struct scsi_cmd *c)
{
	const uint8_t *cdb = c->cdb;
	bool ten = cdb[0] == 0x5a;
	bool dbd = cdb[1] & 0x08;
	bool llbaa = ten && (cdb[1] & 0x10);
	int pc = cdb[2] >> 6;
	uint8_t page = cdb[2] & 0x3f;
	uint8_t sub = cdb[3];
	uint32_t alloc = ten ? get_be16(cdb + 7) : cdb[4];

	if (pc == PC_SAVED) {
		scsi_sense(c, SK_ILLEGAL_REQUEST, ASC_SAVING_NOT_SUPPORTED);
		return;
	}
	if (sub != 0x00 && sub != 0xff) {
		scsi_sense_field(c, ASC_INVALID_FIELD_CDB, true, 3, -1);
		return;
	}
	uint8_t d[256];
	memset(d, 0, sizeof(d));
	size_t hdr = ten ? 8 : 4;
	size_t bdl = dbd ? 0 : (llbaa ? 16 : 8);
	size_t o = hdr + bdl;

	pthread_mutex_lock(&lu->mu);
	bool wp = atomic_load(&lu->read_only) || lu->swp;
	if (page == 0x3f) {
		for (size_t i = 0; i < ARRAY_SIZE(PAGES); i++)
			o += mode_page(lu, PAGES[i], pc, d + o);
	} else {
		size_t n = mode_page(lu, page, pc, d + o);
		if (!n) {
			pthread_mutex_unlock(&lu->mu);
			scsi_sense_field(c, ASC_INVALID_FIELD_CDB, true, 2, 5);
			return;
		}
		o += n;
	}
	pthread_mutex_unlock(&lu->mu);

	uint8_t devspec = (uint8_t)((wp ? 0x80 : 0) | 0x10);   /* WP, DPOFUA */
	if (ten) {
		put_be16(d, (uint16_t)(o - 2));
		d[3] = devspec;
		d[4] = llbaa ? 1 : 0;
		put_be16(d + 6, (uint16_t)bdl);
	} else {
		d[0] = (uint8_t)(o - 1);
		d[2] = devspec;
		d[3] = (uint8_t)bdl;
	}
	if (bdl == 8) {
		uint64_t nb = lu->nblocks;
		put_be32(d + hdr, nb > 0xffffffffu ? 0xffffffffu : (uint32_t)nb);
		put_be32(d + hdr + 4, lu->block_size & 0xffffff);
	} else if (bdl == 16) {
		put_be64(d + hdr, lu->nblocks);
		put_be32(d + hdr + 12, lu->block_size);
	}
	scsi_put_data(c, d, MIN(o, (size_t)alloc));
}

void scsi_mode_select(struct scsi_lu *lu, struct scsi_cmd *c)
{
	const uint8_t *cdb = c->cdb;
	bool ten = cdb[0] == 0x55;
	uint32_t plen = ten ? get_be16(cdb + 7) : cdb[4];
	if (cdb[1] & 0x01) {                  /* SP: nothing is savable */
		scsi_sense_field(c, ASC_INVALID_FIELD_CDB, true, 1, 0);
		return;
	}
	if (plen == 0)
		return;
	size_t hdr = ten ? 8 : 4;
	if (plen < hdr || c->data_out_len < plen || !c->data_out) {
		scsi_sense(c, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH);
		return;
	}
	const uint8_t *p = c->data_out;
	size_t bdl = ten ? get_be16(p + 6) : p[3];
	size_t want_bdl = ten && (p[4] & 1) ? 16 : 8;
	if (bdl && (bdl != want_bdl || hdr + bdl > plen)) {
		scsi_sense_field(c, ASC_INVALID_FIELD_PARAM, false, ten ? 6 : 3, -1);
		return;
	}
	if (bdl) {
		const uint8_t *b = p + hdr;
		uint32_t blen = bdl == 8 ? get_be24(b + 5) : get_be32(b + 12);
		if (blen != lu->block_size) {
			scsi_sense_field(c, ASC_INVALID_FIELD_PARAM, false, (uint16_t)(hdr + (bdl == 8 ? 5 : 12)), -1);
			return;
		}
	}

	/* Check every page against the changeable mask first, apply after:
	 * a parameter list is taken whole or not at all. */
	bool wce, swp, dexcpt;
	uint8_t mrie;
	pthread_mutex_lock(&lu->mu);
	wce = lu->wce;
	swp = lu->swp;
	dexcpt = lu->dexcpt;
	mrie = lu->mrie;
	size_t o = hdr + bdl;
	while (o < plen) {
		if (plen - o < 2) {
			pthread_mutex_unlock(&lu->mu);
			scsi_sense(c, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH);
			return;
		}
		uint8_t code = p[o] & 0x3f;
		uint8_t cur[20], chg[20];
		size_t n = (p[o] & 0x40) ? 0 : mode_page(lu, code, PC_CURRENT, cur);
		if (!n) {
			pthread_mutex_unlock(&lu->mu);
			scsi_sense_field(c, ASC_INVALID_FIELD_PARAM, false, (uint16_t)o, 5);
			return;
		}
		if (p[o + 1] != n - 2) {
			pthread_mutex_unlock(&lu->mu);
			scsi_sense_field(c, ASC_INVALID_FIELD_PARAM, false, (uint16_t)(o + 1), -1);
			return;
		}
		if (plen - o < n) {
			pthread_mutex_unlock(&lu->mu);
			scsi_sense(c, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH);
			return;
		}
		mode_page(lu, code, PC_CHANGEABLE, chg);
		for (size_t i = 2; i < n; i++) {
			if ((p[o + i] ^ cur[i]) & ~chg[i]) {
				pthread_mutex_unlock(&lu->mu);
				scsi_sense_field(c, ASC_INVALID_FIELD_PARAM, false, (uint16_t)(o + i), -1);
				return;
			}
		}
		switch (code) {
		case 0x08: wce = p[o + 2] & 0x04; break;
		case 0x0a: swp = p[o + 4] & 0x08; break;
		case 0x1c: dexcpt = p[o + 2] & 0x08; mrie = p[o + 3] & 0x0f; break;
		default: break;
		}
		o += n;
	}
	bool changed = lu->wce != wce || lu->swp != swp || lu->dexcpt != dexcpt || lu->mrie != mrie;
	lu->wce = wce;
	lu->swp = swp;
	lu->dexcpt = dexcpt;
	lu->mrie = mrie;
	/* The other initiators learn of it at their next command (SPC-4
	 * 6.11: MODE PARAMETERS CHANGED). */
	if (changed)
		scsi_ua_all(lu, ASC_MODE_PARAMS_CHANGED, c->nexus, true);
	pthread_mutex_unlock(&lu->mu);
	/* Turning the write cache off must not leave earlier writes volatile. */
	if (!wce && !lu->snap && !atomic_load(&lu->read_only)) {
		int r = vol_flush(lu->vol);
		if (r < 0) {
			log_error("scsi: flush after MODE SELECT: %d", r);
			scsi_sense(c, SK_MEDIUM_ERROR, ASC_WRITE_ERROR);
		}
	}
}
