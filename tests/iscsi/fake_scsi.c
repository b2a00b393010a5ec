/* A RAM-disk implementation of the src/scsi/scsi.h interface, so that the
 * iSCSI transport can be tested with real initiators without the store or
 * the real SCSI layer.  Only the commands initiators need to attach and do
 * I/O; everything else gets ILLEGAL REQUEST.  An optional delay makes
 * commands slow, to test task management and a non-blocking loop. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fake_scsi.h"

struct scsi_lu {
	uint8_t *data;
	uint64_t size;
	uint32_t bs;
	unsigned delay_ms;
	bool ro;
	uint8_t naa[8];
	pthread_mutex_t lock;
	uint64_t resets;
	uint64_t nexus_gone;
	uint64_t last_gone;
	bool conflict;
	struct fake_seen seen;
};

struct scsi_lu *fake_lu_create(uint64_t size, uint32_t bs, unsigned delay_ms, uint8_t id)
{
	struct scsi_lu *lu = calloc(1, sizeof(*lu));
	if (!lu)
		return NULL;
	lu->data = calloc(1, size);
	if (!lu->data) {
		free(lu);
		return NULL;
	}
	lu->size = size;
	lu->bs = bs;
	lu->delay_ms = delay_ms;
	uint8_t naa[8] = { 0x60, 0x01, 0x40, 0x5f, 0xe1, 0x72, 0x00, id };
	memcpy(lu->naa, naa, 8);
	pthread_mutex_init(&lu->lock, NULL);
	return lu;
}

void fake_lu_destroy(struct scsi_lu *lu)
{
	if (!lu)
		return;
	free(lu->data);
	pthread_mutex_destroy(&lu->lock);
	free(lu);
}

uint64_t fake_lu_resets(struct scsi_lu *lu)
{
	pthread_mutex_lock(&lu->lock);
	uint64_t r = lu->resets;
	pthread_mutex_unlock(&lu->lock);
	return r;
}

const uint8_t *fake_lu_data(struct scsi_lu *lu)
{
	return lu->data;
}

void fake_lu_seen(struct scsi_lu *lu, struct fake_seen *out)
{
	pthread_mutex_lock(&lu->lock);
	*out = lu->seen;
	pthread_mutex_unlock(&lu->lock);
}

void fake_lu_set_conflict(struct scsi_lu *lu, bool on)
{
	pthread_mutex_lock(&lu->lock);
	lu->conflict = on;
	pthread_mutex_unlock(&lu->lock);
}

uint64_t fake_lu_nexus_gone(struct scsi_lu *lu, uint64_t *last)
{
	pthread_mutex_lock(&lu->lock);
	uint64_t n = lu->nexus_gone;
	if (last)
		*last = lu->last_gone;
	pthread_mutex_unlock(&lu->lock);
	return n;
}

void scsi_lu_set_read_only(struct scsi_lu *lu, bool ro)
{
	lu->ro = ro;
}

uint32_t scsi_lu_block_size(const struct scsi_lu *lu)
{
	return lu->bs;
}

static uint32_t g32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t g64(const uint8_t *p)
{
	return (uint64_t)g32(p) << 32 | g32(p + 4);
}
static void p32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static void p64(uint8_t *p, uint64_t v)
{
	p32(p, (uint32_t)(v >> 32));
	p32(p + 4, (uint32_t)v);
}

int scsi_cdb_xfer(const uint8_t *cdb, size_t cdb_len, uint32_t bs, enum scsi_dir *dir,
                  uint32_t *len)
{
	*dir = SCSI_DIR_NONE;
	*len = 0;
	if (cdb_len < 6)
		return -EINVAL;
	switch (cdb[0]) {
	case 0x00: /* TEST UNIT READY */
	case 0x35: /* SYNCHRONIZE CACHE 10 */
	case 0x91:
		return 0;
	case 0x12: /* INQUIRY */
		*dir = SCSI_DIR_READ;
		*len = (uint32_t)cdb[3] << 8 | cdb[4];
		return 0;
	case 0x1a: /* MODE SENSE 6 */
		*dir = SCSI_DIR_READ;
		*len = cdb[4];
		return 0;
	case 0x5a:
		*dir = SCSI_DIR_READ;
		*len = (uint32_t)cdb[7] << 8 | cdb[8];
		return 0;
	case 0x25:
		*dir = SCSI_DIR_READ;
		*len = 8;
		return 0;
	case 0x9e:
		*dir = SCSI_DIR_READ;
		*len = g32(cdb + 10);
		return 0;
	case 0xa0:
		*dir = SCSI_DIR_READ;
		*len = g32(cdb + 6);
		return 0;
	case 0x28:
		*dir = SCSI_DIR_READ;
		*len = ((uint32_t)cdb[7] << 8 | cdb[8]) * bs;
		return 0;
	case 0x0a:
		*dir = SCSI_DIR_WRITE;
		*len = (cdb[4] ? cdb[4] : 256u) * bs;
		return 0;
	case 0x2a:
		*dir = SCSI_DIR_WRITE;
		*len = ((uint32_t)cdb[7] << 8 | cdb[8]) * bs;
		return 0;
	case 0x88:
		*dir = SCSI_DIR_READ;
		*len = g32(cdb + 10) * bs;
		return 0;
	case 0x8a:
		*dir = SCSI_DIR_WRITE;
		*len = g32(cdb + 10) * bs;
		return 0;
	default:
		return -EINVAL;
	}
}

static void sense(struct scsi_cmd *c, uint8_t key, uint8_t asc, uint8_t ascq)
{
	memset(c->sense, 0, 18);
	c->sense[0] = 0x70;
	c->sense[2] = key;
	c->sense[7] = 10;
	c->sense[12] = asc;
	c->sense[13] = ascq;
	c->sense_len = 18;
	c->status = SCSI_STATUS_CHECK_CONDITION;
}

static void put_in(struct scsi_cmd *c, const uint8_t *d, uint32_t n)
{
	n = n < c->data_in_cap ? n : c->data_in_cap;
	if (!c->data_in)
		n = 0;
	if (n)
		memcpy(c->data_in, d, n);
	c->data_in_len = n;
}

static void rw(struct scsi_lu *lu, struct scsi_cmd *c, uint64_t lba, uint32_t nb, bool wr)
{
	uint64_t off = lba * lu->bs, len = (uint64_t)nb * lu->bs;
	if (lba > lu->size / lu->bs || nb > lu->size / lu->bs - lba) {
		sense(c, 0x05, 0x21, 0x00); /* LBA OUT OF RANGE */
		return;
	}
	if (wr) {
		if (lu->ro) {
			sense(c, 0x07, 0x27, 0x00);
			return;
		}
		if (c->data_out_len < len) {
			sense(c, 0x05, 0x24, 0x00);
			return;
		}
		pthread_mutex_lock(&lu->lock);
		if (len)
			memcpy(lu->data + off, c->data_out, len);
		pthread_mutex_unlock(&lu->lock);
	} else {
		uint64_t n = len < c->data_in_cap ? len : c->data_in_cap;
		if (!c->data_in)
			n = 0;
		pthread_mutex_lock(&lu->lock);
		if (n)
			memcpy(c->data_in, lu->data + off, n);
		pthread_mutex_unlock(&lu->lock);
		c->data_in_len = (uint32_t)n;
	}
}

void scsi_lu_exec(struct scsi_lu *lu, struct scsi_cmd *c)
{
	const uint8_t *cdb = c->cdb;
	uint8_t b[256];
	memset(b, 0, sizeof(b));
	c->status = SCSI_STATUS_GOOD;
	c->sense_len = 0;
	c->data_in_len = 0;
	pthread_mutex_lock(&lu->lock);
	lu->seen.cmds++;
	memset(lu->seen.cdb, 0, sizeof(lu->seen.cdb));
	lu->seen.cdb_len = c->cdb_len;
	memcpy(lu->seen.cdb, cdb, c->cdb_len < 16 ? c->cdb_len : 16);
	lu->seen.nexus = c->nexus;
	snprintf(lu->seen.initiator, sizeof(lu->seen.initiator), "%s",
	         c->initiator ? c->initiator : "");
	lu->seen.data_out_len = c->data_out_len;
	bool conflict = lu->conflict;
	pthread_mutex_unlock(&lu->lock);
	if (conflict && (cdb[0] == 0x0a || cdb[0] == 0x2a || cdb[0] == 0x8a)) {
		c->status = SCSI_STATUS_RESERVATION_CONFLICT;
		return;
	}
	if (lu->delay_ms) {
		struct timespec ts = { lu->delay_ms / 1000, (long)(lu->delay_ms % 1000) * 1000000 };
		nanosleep(&ts, NULL);
	}
	switch (cdb[0]) {
	case 0x00:
	case 0x35:
	case 0x91:
		return;
	case 0x12:
		if (cdb[1] & 1) {
			b[1] = cdb[2];
			if (cdb[2] == 0x00) {
				b[3] = 3;
				b[4] = 0x00;
				b[5] = 0x80;
				b[6] = 0x83;
				put_in(c, b, 7);
			} else if (cdb[2] == 0x80) {
				b[3] = 8;
				memcpy(b + 4, "FAKE0001", 8);
				put_in(c, b, 12);
			} else if (cdb[2] == 0x83) {
				b[3] = 12;
				b[4] = 0x01;
				b[5] = 0x03;
				b[7] = 8;
				memcpy(b + 8, lu->naa, 8);
				put_in(c, b, 16);
			} else {
				sense(c, 0x05, 0x24, 0x00);
			}
			return;
		}
		b[2] = 0x06;
		b[3] = 0x02;
		b[4] = 31;
		b[7] = 0x02;
		memcpy(b + 8, "FERRY   ", 8);
		memcpy(b + 16, "FAKE RAMDISK    ", 16);
		memcpy(b + 32, "0001", 4);
		put_in(c, b, 36);
		return;
	case 0x1a:
		b[0] = 3;
		put_in(c, b, 4);
		return;
	case 0x5a:
		b[1] = 6;
		put_in(c, b, 8);
		return;
	case 0x25: {
		uint64_t last = lu->size / lu->bs - 1;
		p32(b, last > 0xffffffff ? 0xffffffff : (uint32_t)last);
		p32(b + 4, lu->bs);
		put_in(c, b, 8);
		return;
	}
	case 0x9e:
		if ((cdb[1] & 0x1f) != 0x10) {
			sense(c, 0x05, 0x24, 0x00);
			return;
		}
		p64(b, lu->size / lu->bs - 1);
		p32(b + 8, lu->bs);
		put_in(c, b, 32);
		return;
	case 0x28:
		rw(lu, c, g32(cdb + 2), (uint32_t)cdb[7] << 8 | cdb[8], false);
		return;
	case 0x0a:
		rw(lu, c, g32(cdb) & 0x1fffff, cdb[4] ? cdb[4] : 256u, true);
		return;
	case 0x2a:
		rw(lu, c, g32(cdb + 2), (uint32_t)cdb[7] << 8 | cdb[8], true);
		return;
	case 0x88:
		rw(lu, c, g64(cdb + 2), g32(cdb + 10), false);
		return;
	case 0x8a:
		rw(lu, c, g64(cdb + 2), g32(cdb + 10), true);
		return;
	default:
		sense(c, 0x05, 0x20, 0x00); /* INVALID COMMAND OPERATION CODE */
		return;
	}
}

bool scsi_cdb_is_read(const uint8_t *cdb, size_t cdb_len)
{
	return cdb && ((cdb_len >= 10 && cdb[0] == 0x28) || (cdb_len >= 16 && cdb[0] == 0x88));
}

void scsi_lu_read_more(struct scsi_lu *lu, struct scsi_cmd *c, uint32_t off)
{
	const uint8_t *cdb = c->cdb;
	c->status = SCSI_STATUS_GOOD;
	c->sense_len = 0;
	c->data_in_len = 0;
	uint64_t lba = cdb[0] == 0x28 ? g32(cdb + 2) : g64(cdb + 2);
	uint32_t nb = cdb[0] == 0x28 ? ((uint32_t)cdb[7] << 8 | cdb[8]) : g32(cdb + 10);
	if (off % lu->bs || off >= (uint64_t)nb * lu->bs) {
		sense(c, 0x04, 0x44, 0x00); /* INTERNAL TARGET FAILURE */
		return;
	}
	if (lu->delay_ms) {
		struct timespec ts = { lu->delay_ms / 1000, (long)(lu->delay_ms % 1000) * 1000000 };
		nanosleep(&ts, NULL);
	}
	rw(lu, c, lba + off / lu->bs, nb - off / lu->bs, false);
}

void scsi_report_luns(const uint64_t *luns, size_t n, struct scsi_cmd *c)
{
	uint8_t *b = calloc(1, 8 + 8 * n);
	if (!b) {
		sense(c, 0x0b, 0x55, 0x03);
		return;
	}
	p32(b, (uint32_t)(8 * n));
	for (size_t i = 0; i < n; i++) {
		if (luns[i] < 256)
			b[8 + 8 * i + 1] = (uint8_t)luns[i];
		else {
			b[8 + 8 * i] = (uint8_t)(0x40 | (luns[i] >> 8));
			b[8 + 8 * i + 1] = (uint8_t)luns[i];
		}
	}
	c->status = SCSI_STATUS_GOOD;
	c->sense_len = 0;
	put_in(c, b, (uint32_t)(8 + 8 * n));
	free(b);
}

void scsi_no_lun(struct scsi_cmd *c)
{
	c->data_in_len = 0;
	c->sense_len = 0;
	c->status = SCSI_STATUS_GOOD;
	if (c->cdb[0] == 0x12) {
		uint8_t b[36] = { 0x7f };
		put_in(c, b, 36);
		return;
	}
	sense(c, 0x05, 0x25, 0x00);
}

void scsi_lu_reset(struct scsi_lu *lu)
{
	pthread_mutex_lock(&lu->lock);
	lu->resets++;
	pthread_mutex_unlock(&lu->lock);
}

void scsi_lu_nexus_gone(struct scsi_lu *lu, uint64_t nexus)
{
	pthread_mutex_lock(&lu->lock);
	lu->nexus_gone++;
	lu->last_gone = nexus;
	pthread_mutex_unlock(&lu->lock);
}
