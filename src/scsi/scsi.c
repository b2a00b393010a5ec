/* scsi: SPC-4 / SBC-3 command set of a thin-provisioned disk on a store
 * volume.  See scsi.h for the contract with the transport and
 * docs/CONFORMANCE.md for what libiscsi's test suite says about it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "scsi/scsi_int.h"

/* Limits advertised in the Block Limits VPD page and enforced here. */
#define MAX_XFER_BYTES (32u << 20)      /* one READ / WRITE (the iSCSI layer's cap) */
#define MAX_CAW_BLOCKS 128u             /* COMPARE AND WRITE */
#define MAX_UNMAP_DESC 256u
#define MAX_UNMAP_BYTES (512ull << 20)  /* per UNMAP descriptor */
#define MAX_WS_BYTES (1ull << 30)       /* per WRITE SAME */
#define WS_CHUNK (1u << 20)             /* WRITE SAME data pattern buffer */
#define LBA_STATUS_SCAN (16u << 20)     /* GET LBA STATUS: bytes read at most */
#define LBA_STATUS_SKIP (1ull << 32)    /* ... and bytes of zero objects skipped */

static const char VENDOR[8] = { 'F', 'E', 'R', 'R', 'Y', ' ', ' ', ' ' };
static const char PRODUCT[16] = { 'T', 'H', 'I', 'N', ' ', 'V', 'O', 'L', 'U', 'M', 'E', ' ', ' ', ' ', ' ', ' ' };
static const char REVISION[4] = { '0', '1', '0', '0' };

/* ---- sense data --------------------------------------------------------- */

static uint8_t *sense_fixed(struct scsi_cmd *c, uint8_t key, uint16_t asc)
{
	uint8_t *s = c->sense;
	memset(s, 0, 18);
	s[0] = 0x70;             /* current error, fixed format */
	s[2] = key & 0x0f;
	s[7] = 10;               /* additional sense length */
	s[12] = (uint8_t)(asc >> 8);
	s[13] = (uint8_t)asc;
	c->sense_len = 18;
	c->status = SCSI_STATUS_CHECK_CONDITION;
	c->data_in_len = 0;
	return s;
}

void scsi_sense(struct scsi_cmd *c, uint8_t key, uint16_t asc)
{
	sense_fixed(c, key, asc);
}

void scsi_sense_field(struct scsi_cmd *c, uint16_t asc, bool in_cdb, uint16_t byte, int bit)
{
	uint8_t *s = sense_fixed(c, SK_ILLEGAL_REQUEST, asc);
	s[15] = 0x80 | (in_cdb ? 0x40 : 0);
	if (bit >= 0)
		s[15] |= 0x08 | (uint8_t)(bit & 7);
	put_be16(s + 16, byte);
}

static void sense_info(struct scsi_cmd *c, uint8_t key, uint16_t asc, uint32_t info)
{
	uint8_t *s = sense_fixed(c, key, asc);
	s[0] |= 0x80;            /* INFORMATION is valid */
	put_be32(s + 3, info);
}

static void sense_lba(struct scsi_cmd *c)
{
	scsi_sense(c, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
}

static void sense_cdb(struct scsi_cmd *c, uint16_t byte, int bit)
{
	scsi_sense_field(c, ASC_INVALID_FIELD_CDB, true, byte, bit);
}

/* Maps a store error to sense data (logged once here). */
static void sense_errno(struct scsi_cmd *c, int err, bool writing)
{
	switch (err) {
	case -ERANGE:
		sense_lba(c);
		return;
	case -ENOSPC:
	case -EDQUOT:
		log_warn("scsi: out of space on the backing store");
		scsi_sense(c, SK_DATA_PROTECT, ASC_SPACE_ALLOC_FAILED);
		return;
	case -EIO:
		log_error("scsi: %s error from the store", writing ? "write" : "read");
		scsi_sense(c, SK_MEDIUM_ERROR, writing ? ASC_WRITE_ERROR : ASC_READ_ERROR);
		return;
	default:
		log_error("scsi: store %s failed: %s", writing ? "write" : "read", strerror(-err));
		scsi_sense(c, SK_HARDWARE_ERROR, ASC_INTERNAL_FAILURE);
		return;
	}
}

void scsi_put_data(struct scsi_cmd *c, const void *buf, size_t len)
{
	size_t n = MIN(len, (size_t)c->data_in_cap);
	if (n && c->data_in)
		memcpy(c->data_in, buf, n);
	c->data_in_len = c->data_in ? (uint32_t)n : 0;
}

/* ---- CDB decoding ------------------------------------------------------- */

/* The LBA / length fields of the block commands, by CDB layout. */
struct rw {
	uint64_t lba;
	uint32_t n;
	uint8_t flags;  /* byte 1 */
};

static bool decode_rw(const uint8_t *cdb, struct rw *rw)
{
	switch (cdb[0]) {
	case 0x08: case 0x0a: /* READ(6) / WRITE(6) */
		rw->lba = get_be24(cdb + 1) & 0x1fffff;
		rw->n = cdb[4] ? cdb[4] : 256;
		rw->flags = 0;
		return true;
	case 0x28: case 0x2a: case 0x2e: case 0x2f: case 0x34: case 0x41:
		rw->lba = get_be32(cdb + 2);
		rw->n = get_be16(cdb + 7);
		rw->flags = cdb[1];
		return true;
	case 0xa8: case 0xaa: case 0xae: case 0xaf:
		rw->lba = get_be32(cdb + 2);
		rw->n = get_be32(cdb + 6);
		rw->flags = cdb[1];
		return true;
	case 0x88: case 0x8a: case 0x8b: case 0x8e: case 0x8f: case 0x90: case 0x93:
		rw->lba = get_be64(cdb + 2);
		rw->n = get_be32(cdb + 10);
		rw->flags = cdb[1];
		return true;
	case 0x89: /* COMPARE AND WRITE */
		rw->lba = get_be64(cdb + 2);
		rw->n = cdb[13];
		rw->flags = cdb[1];
		return true;
	default:
		return false;
	}
}

/* Byte offset of the TRANSFER LENGTH field, for field pointers. */
static uint16_t xfer_len_byte(uint8_t op)
{
	switch (op >> 5) {
	case 0: return 4;
	case 1: case 2: return 7;
	case 5: return 6;
	default: return 10;
	}
}

static size_t cdb_len_of(uint8_t op)
{
	switch (op >> 5) {
	case 0: return 6;
	case 1: case 2: return 10;
	case 4: return 16;
	case 5: return 12;
	default: return 0;
	}
}

int scsi_cdb_xfer(const uint8_t *cdb, size_t cdb_len, uint32_t block_size,
                  enum scsi_dir *dir, uint32_t *xfer_len)
{
	*dir = SCSI_DIR_NONE;
	*xfer_len = 0;
	if (!cdb || cdb_len < 1 || cdb_len < cdb_len_of(cdb[0]) || cdb_len_of(cdb[0]) == 0)
		return -EINVAL;
	struct rw rw;
	uint64_t bytes;
	switch (cdb[0]) {
	case 0x08: case 0x28: case 0xa8: case 0x88: /* READ */
		decode_rw(cdb, &rw);
		*dir = SCSI_DIR_READ;
		bytes = (uint64_t)rw.n * block_size;
		break;
	case 0x0a: case 0x2a: case 0xaa: case 0x8a: /* WRITE */
	case 0x2e: case 0xae: case 0x8e:            /* WRITE AND VERIFY */
	case 0x8b:                                  /* ORWRITE */
		decode_rw(cdb, &rw);
		*dir = SCSI_DIR_WRITE;
		bytes = (uint64_t)rw.n * block_size;
		break;
	case 0x2f: case 0xaf: case 0x8f: /* VERIFY: data only with BYTCHK */
		decode_rw(cdb, &rw);
		switch ((cdb[1] >> 1) & 3) {
		case 1: bytes = (uint64_t)rw.n * block_size; break;
		case 3: bytes = rw.n ? block_size : 0; break;
		default: bytes = 0; break;
		}
		*dir = bytes ? SCSI_DIR_WRITE : SCSI_DIR_NONE;
		break;
	case 0x89: /* COMPARE AND WRITE: verify data then write data */
		*dir = SCSI_DIR_WRITE;
		bytes = 2ull * cdb[13] * block_size;
		break;
	case 0x41: case 0x93: /* WRITE SAME: one block unless NDOB */
		*dir = (cdb[0] == 0x93 && (cdb[1] & 1)) ? SCSI_DIR_NONE : SCSI_DIR_WRITE;
		bytes = *dir == SCSI_DIR_WRITE ? block_size : 0;
		break;
	case 0x42: /* UNMAP */
		*dir = SCSI_DIR_WRITE;
		bytes = get_be16(cdb + 7);
		break;
	case 0x15: /* MODE SELECT(6) */
		*dir = SCSI_DIR_WRITE;
		bytes = cdb[4];
		break;
	case 0x55: /* MODE SELECT(10) */
		*dir = SCSI_DIR_WRITE;
		bytes = get_be16(cdb + 7);
		break;
	case 0x5f: /* PERSISTENT RESERVE OUT */
		*dir = SCSI_DIR_WRITE;
		bytes = get_be32(cdb + 5);
		break;
	case 0x12: /* INQUIRY */
	case 0x5a: /* MODE SENSE(10) */
	case 0x5e: /* PERSISTENT RESERVE IN */
		*dir = SCSI_DIR_READ;
		bytes = get_be16(cdb + (cdb[0] == 0x12 ? 3 : 7));
		break;
	case 0x03: case 0x1a: /* REQUEST SENSE, MODE SENSE(6) */
		*dir = SCSI_DIR_READ;
		bytes = cdb[4];
		break;
	case 0x25: /* READ CAPACITY(10) */
		*dir = SCSI_DIR_READ;
		bytes = 8;
		break;
	case 0x37: /* READ DEFECT DATA(10) */
		*dir = SCSI_DIR_READ;
		bytes = get_be16(cdb + 7);
		break;
	case 0xb7: /* READ DEFECT DATA(12) */
	case 0xa0: /* REPORT LUNS */
	case 0xa3: /* MAINTENANCE IN */
		*dir = SCSI_DIR_READ;
		bytes = get_be32(cdb + 6);
		break;
	case 0x9e: /* SERVICE ACTION IN(16) */
		*dir = SCSI_DIR_READ;
		bytes = get_be32(cdb + 10);
		break;
	case 0x00: case 0x16: case 0x17: case 0x1b: case 0x1e:
	case 0x35: case 0x91: case 0x56: case 0x57: case 0x34: case 0x90:
		bytes = 0;
		break;
	default:
		return -EINVAL;
	}
	if (bytes > UINT32_MAX)
		bytes = UINT32_MAX;
	*xfer_len = (uint32_t)bytes;
	if (!bytes)
		*dir = SCSI_DIR_NONE;
	return 0;
}

/* ---- LU lifetime -------------------------------------------------------- */

int scsi_lu_create(const struct scsi_lu_params *p, struct scsi_lu **out)
{
	*out = NULL;
	if (!p || !p->vol)
		return -EINVAL;
	struct vol_info vi;
	int r = vol_info(p->vol, &vi);
	if (r < 0) {
		log_error("scsi: vol_info: %s", strerror(-r));
		return r;
	}
	if (vi.block_size != 512 && vi.block_size != 4096) {
		log_error("scsi: volume %s has unsupported block size %u", vi.name, vi.block_size);
		return -EINVAL;
	}
	struct scsi_lu *lu = calloc(1, sizeof(*lu));
	if (!lu)
		return -ENOMEM;
	if (p->snap && !(lu->snap = strdup(p->snap))) {
		free(lu);
		return -ENOMEM;
	}
	lu->vol = p->vol;
	atomic_init(&lu->read_only, p->read_only || p->snap != NULL);
	snprintf(lu->serial, sizeof(lu->serial), "%s", p->serial ? p->serial : vi.uuid);
	if (p->naa) {
		memcpy(lu->naa, p->naa, 8);
	} else {
		/* No id given: derive one from the serial so it stays stable. */
		uint32_t a = crc32c(0, lu->serial, strlen(lu->serial));
		uint32_t b = crc32c(a, "ferry", 5);
		put_be32(lu->naa, a);
		put_be32(lu->naa + 4, b);
		lu->naa[0] = (uint8_t)(0x60 | (lu->naa[0] & 0x0f));
	}
	lu->block_size = vi.block_size;
	lu->nblocks = vi.size / vi.block_size;
	lu->object_size = vi.object_size;
	struct store_caps caps;
	vol_get_caps(lu->vol, &caps);
	lu->zero_exact = caps.zero_exact;
	atomic_init(&lu->wce, true);
	atomic_init(&lu->swp, false);
	lu->dexcpt = true;
	pthread_rwlock_init(&lu->io_lock, NULL);
	pthread_mutex_init(&lu->mu, NULL);
	*out = lu;
	return 0;
}

void scsi_lu_destroy(struct scsi_lu *lu)
{
	if (!lu)
		return;
	pthread_rwlock_destroy(&lu->io_lock);
	pthread_mutex_destroy(&lu->mu);
	free(lu->snap);
	free(lu);
}

void scsi_lu_set_read_only(struct scsi_lu *lu, bool ro)
{
	/* A snapshot can never become writable. */
	atomic_store(&lu->read_only, ro || lu->snap != NULL);
}

uint32_t scsi_lu_block_size(const struct scsi_lu *lu)
{
	return lu->block_size;
}

/* ---- helpers for the block commands ------------------------------------- */

static bool range_ok(const struct scsi_lu *lu, struct scsi_cmd *c, uint64_t lba, uint64_t n)
{
	if (lba > lu->nblocks || n > lu->nblocks - lba) {
		sense_lba(c);
		return false;
	}
	return true;
}

/* Fails the command when writes are not allowed; returns true if they are. */
static bool writable(struct scsi_lu *lu, struct scsi_cmd *c)
{
	if (atomic_load(&lu->read_only)) {
		scsi_sense(c, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
		return false;
	}
	if (atomic_load(&lu->swp)) {
		scsi_sense(c, SK_DATA_PROTECT, ASC_SW_WRITE_PROTECTED);
		return false;
	}
	return true;
}

static bool wce(struct scsi_lu *lu)
{
	return atomic_load(&lu->wce);
}

/* After a write: FUA or a write-through cache (WCE=0) means durable now. */
static void finish_write(struct scsi_lu *lu, struct scsi_cmd *c, bool fua)
{
	if (fua || !wce(lu)) {
		int r = vol_flush(lu->vol);
		if (r < 0)
			sense_errno(c, r, true);
	}
}

static int lu_read(struct scsi_lu *lu, void *buf, uint64_t lba, size_t len)
{
	return vol_read(lu->vol, lu->snap, buf, lba * lu->block_size, len);
}

/* ---- commands ----------------------------------------------------------- */

static void cmd_tur(struct scsi_lu *lu, struct scsi_cmd *c)
{
}

static void inquiry_std(struct scsi_lu *lu, struct scsi_cmd *c, uint16_t alloc)
{
	uint8_t d[96] = { 0 };
	d[0] = 0x00;             /* connected, direct access block device */
	d[2] = 0x06;             /* SPC-4 */
	d[3] = 0x12;             /* HISUP, response data format 2 */
	d[4] = sizeof(d) - 5;
	d[7] = 0x02;             /* CMDQUE */
	memcpy(d + 8, VENDOR, 8);
	memcpy(d + 16, PRODUCT, 16);
	memcpy(d + 32, REVISION, 4);
	/* version descriptors: SAM-5, iSCSI, SPC-4, SBC-3 */
	put_be16(d + 58, 0x00a0);
	put_be16(d + 60, 0x0960);
	put_be16(d + 62, 0x0460);
	put_be16(d + 64, 0x04c0);
	scsi_put_data(c, d, MIN(sizeof(d), (size_t)alloc));
}

static size_t vpd_devid(struct scsi_lu *lu, uint8_t *d)
{
	size_t o = 4;
	/* NAA designator, binary, LU association.  An NAA 6 id is 16 bytes:
	 * the 8 given ones followed by a zero extension. */
	bool naa6 = (lu->naa[0] >> 4) == 6;
	uint8_t len = naa6 ? 16 : 8;
	d[o] = 0x01;
	d[o + 1] = 0x03;
	d[o + 3] = len;
	memcpy(d + o + 4, lu->naa, 8);
	o += 4u + len;
	/* T10 vendor id designator, ASCII: vendor + serial. */
	size_t sl = strlen(lu->serial);
	d[o] = 0x02;
	d[o + 1] = 0x01;
	d[o + 3] = (uint8_t)(8 + sl);
	memcpy(d + o + 4, VENDOR, 8);
	memcpy(d + o + 12, lu->serial, sl);
	o += 12 + sl;
	return o;
}

static void inquiry_vpd(struct scsi_lu *lu, struct scsi_cmd *c, uint8_t page, uint16_t alloc)
{
	uint8_t d[256] = { 0 };
	size_t len;
	d[0] = 0x00;
	d[1] = page;
	switch (page) {
	case 0x00: {
		static const uint8_t pages[] = { 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2 };
		memcpy(d + 4, pages, sizeof(pages));
		len = 4 + sizeof(pages);
		break;
	}
	case 0x80: {
		size_t sl = strlen(lu->serial);
		memcpy(d + 4, lu->serial, sl);
		len = 4 + sl;
		break;
	}
	case 0x83:
		len = vpd_devid(lu, d);
		break;
	case 0xb0: {
		uint32_t bs = lu->block_size;
		uint32_t gran = STORE_BLOCK / bs;
		len = 64;
		d[4] = 0;                                  /* WSNZ=0: 0 blocks = to the end */
		d[5] = MAX_CAW_BLOCKS;
		put_be16(d + 6, (uint16_t)gran);           /* optimal transfer granularity */
		put_be32(d + 8, MAX_XFER_BYTES / bs);      /* maximum transfer length */
		put_be32(d + 12, (1u << 20) / bs);         /* optimal transfer length */
		put_be32(d + 20, (uint32_t)(MAX_UNMAP_BYTES / bs)); /* max unmap LBA count */
		put_be32(d + 24, MAX_UNMAP_DESC);
		put_be32(d + 28, gran);                    /* optimal unmap granularity */
		put_be32(d + 32, 0x80000000u);             /* UGAVALID, alignment 0 */
		put_be64(d + 36, MAX_WS_BYTES / bs);       /* maximum WRITE SAME length */
		break;
	}
	case 0xb1:
		len = 64;
		put_be16(d + 4, 0x0001);                   /* non-rotating medium */
		break;
	case 0xb2:
		len = 8;
		d[4] = 0;                                  /* threshold exponent */
		d[5] = 0x80 | 0x40 | 0x20 | 0x04;          /* LBPU LBPWS LBPWS10, LBPRZ */
		d[6] = 0x02;                               /* provisioning type: thin */
		break;
	default:
		sense_cdb(c, 2, -1);
		return;
	}
	put_be16(d + 2, (uint16_t)(len - 4));
	scsi_put_data(c, d, MIN(len, (size_t)alloc));
}

static void cmd_inquiry(struct scsi_lu *lu, struct scsi_cmd *c)
{
	const uint8_t *cdb = c->cdb;
	if (cdb[1] & 0xfe) {                 /* CMDDT / obsolete bits */
		sense_cdb(c, 1, 1);
		return;
	}
	if (!(cdb[1] & 1)) {
		if (cdb[2]) {
			sense_cdb(c, 2, -1);
			return;
		}
		inquiry_std(lu, c, get_be16(cdb + 3));
		return;
	}
	inquiry_vpd(lu, c, cdb[2], get_be16(cdb + 3));
}

static void cmd_read_capacity10(struct scsi_lu *lu, struct scsi_cmd *c)
{
	const uint8_t *cdb = c->cdb;
	if (!(cdb[8] & 1) && get_be32(cdb + 2)) {   /* PMI=0 needs LBA 0 */
		sense_cdb(c, 2, -1);
		return;
	}
	uint8_t d[8];
	uint64_t last = lu->nblocks ? lu->nblocks - 1 : 0;
	put_be32(d, last > 0xffffffffu ? 0xffffffffu : (uint32_t)last);
	put_be32(d + 4, lu->block_size);
	scsi_put_data(c, d, sizeof(d));
}

static void cmd_read_capacity16(struct scsi_lu *lu, struct scsi_cmd *c)
{
	uint8_t d[32] = { 0 };
	put_be64(d, lu->nblocks ? lu->nblocks - 1 : 0);
	put_be32(d + 8, lu->block_size);
	/* Logical blocks per physical block: the store's 4 KiB granule. */
	uint8_t exp = 0;
	for (uint32_t b = lu->block_size; b < STORE_BLOCK; b <<= 1)
		exp++;
	d[13] = exp;
	d[14] = 0x80 | 0x40;     /* LBPME, LBPRZ */
	uint32_t alloc = get_be32(c->cdb + 10);
	scsi_put_data(c, d, MIN((size_t)alloc, sizeof(d)));
}

static void cmd_read(struct scsi_lu *lu, struct scsi_cmd *c)
{
	struct rw rw;
	decode_rw(c->cdb, &rw);
	if (rw.flags & 0xe0) {                 /* RDPROTECT: no protection info */
		sense_cdb(c, 1, 7);
		return;
	}
	if (!range_ok(lu, c, rw.lba, rw.n))
		return;
	uint64_t len = (uint64_t)rw.n * lu->block_size;
	if (len > MAX_XFER_BYTES) {
		sense_cdb(c, xfer_len_byte(c->cdb[0]), -1);
		return;
	}
	/* The transport's buffer may be shorter (an initiator asking for
	 * less): fill what fits, it reports the residual. */
	size_t n = (size_t)MIN(len, (uint64_t)c->data_in_cap);
	if (!c->data_in)
		n = 0;
	if (n) {
		int r = lu_read(lu, c->data_in, rw.lba, n);
		if (r < 0) {
			sense_errno(c, r, false);
			return;
		}
	}
	c->data_in_len = (uint32_t)n;
}

bool scsi_cdb_is_read(const uint8_t *cdb, size_t cdb_len)
{
	if (!cdb || cdb_len < 1)
		return false;
	switch (cdb[0]) {
	case 0x08: case 0x28: case 0xa8: case 0x88:
		return cdb_len >= cdb_len_of(cdb[0]);
	default:
		return false;
	}
}

void scsi_lu_read_more(struct scsi_lu *lu, struct scsi_cmd *c, uint32_t off)
{
	c->status = SCSI_STATUS_GOOD;
	c->sense_len = 0;
	c->data_in_len = 0;
	struct rw rw;
	if (!scsi_cdb_is_read(c->cdb, c->cdb_len) || !decode_rw(c->cdb, &rw) ||
	    off % lu->block_size) {
		scsi_sense(c, SK_HARDWARE_ERROR, ASC_INTERNAL_FAILURE);
		return;
	}
	uint64_t len = (uint64_t)rw.n * lu->block_size;
	if (off >= len || !c->data_in)
		return;
	size_t n = (size_t)MIN(len - off, (uint64_t)c->data_in_cap);
	int r = lu_read(lu, c->data_in, rw.lba + off / lu->block_size, n);
	if (r < 0) {
		sense_errno(c, r, false);
		return;
	}
	c->data_in_len = (uint32_t)n;
}

/* Blocks actually supplied by the initiator for an n-block write: the
 * transport may have collected less than the CDB asks for. */
static bool data_out_ok(struct scsi_cmd *c, uint64_t need)
{
	if (c->data_out_len < need || (need && !c->data_out)) {
		/* SAM: a data-out buffer shorter than the CDB describes. */
		scsi_sense(c, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH);
		return false;
	}
	return true;
}

/* The checks every data-writing command makes before touching the volume:
 * write protection, WRPROTECT/ORPROTECT (no protection information here),
 * LBA range, transfer length, data-out size.  False when the command is
 * already answered (sense set) or has nothing to write. */
static bool write_prologue(struct scsi_lu *lu, struct scsi_cmd *c, struct rw *rw, size_t *len)
{
	decode_rw(c->cdb, rw);
	if (!writable(lu, c))
		return false;
	if (rw->flags & 0xe0) {
		sense_cdb(c, 1, 7);
		return false;
	}
	if (!range_ok(lu, c, rw->lba, rw->n))
		return false;
	uint64_t n = (uint64_t)rw->n * lu->block_size;
	if (n > MAX_XFER_BYTES) {
		sense_cdb(c, xfer_len_byte(c->cdb[0]), -1);
		return false;
	}
	if (!n || !data_out_ok(c, n))
		return false;
	*len = (size_t)n;
	return true;
}

static void cmd_write(struct scsi_lu *lu, struct scsi_cmd *c)
{
	struct rw rw;
	size_t len;
	if (!write_prologue(lu, c, &rw, &len))
		return;
	pthread_rwlock_rdlock(&lu->io_lock);
	int r = vol_write(lu->vol, c->data_out, rw.lba * lu->block_size, len);
	pthread_rwlock_unlock(&lu->io_lock);
	if (r < 0) {
		sense_errno(c, r, true);
		return;
	}
	/* WRITE AND VERIFY verifies against the medium, so its data must be
	 * on stable storage when it completes: it always flushes.  WRITE(6)
	 * has no FUA bit; the others have it in byte 1 bit 3. */
	bool verify = c->cdb[0] == 0x2e || c->cdb[0] == 0xae || c->cdb[0] == 0x8e;
	bool fua = verify || (c->cdb[0] != 0x0a && (rw.flags & 0x08));
	finish_write(lu, c, fua);
}

static void cmd_verify(struct scsi_lu *lu, struct scsi_cmd *c)
{
	struct rw rw;
	decode_rw(c->cdb, &rw);
	if (rw.flags & 0xe0) {                 /* VRPROTECT */
		sense_cdb(c, 1, 7);
		return;
	}
	uint8_t bytchk = (rw.flags >> 1) & 3;
	if (bytchk == 2) {
		sense_cdb(c, 1, 2);
		return;
	}
	if (!range_ok(lu, c, rw.lba, rw.n))
		return;
	if (!bytchk || !rw.n)
		return;                            /* the medium is always readable */
	uint32_t bs = lu->block_size;
	uint64_t len = (uint64_t)rw.n * bs;
	if (len > MAX_XFER_BYTES) {
		sense_cdb(c, xfer_len_byte(c->cdb[0]), -1);
		return;
	}
	if (!data_out_ok(c, bytchk == 1 ? len : bs))
		return;
	uint8_t *buf = malloc((size_t)len);
	if (!buf) {
		scsi_sense(c, SK_HARDWARE_ERROR, ASC_INTERNAL_FAILURE);
		return;
	}
	int r = lu_read(lu, buf, rw.lba, (size_t)len);
	if (r < 0) {
		sense_errno(c, r, false);
		free(buf);
		return;
	}
	for (uint64_t i = 0; i < len; i++) {
		uint8_t want = bytchk == 1 ? c->data_out[i] : c->data_out[i % bs];
		if (buf[i] != want) {
			sense_info(c, SK_MISCOMPARE, ASC_MISCOMPARE_VERIFY, (uint32_t)i);
			break;
		}
	}
	free(buf);
}

static void cmd_compare_and_write(struct scsi_lu *lu, struct scsi_cmd *c)
{
	struct rw rw;
	decode_rw(c->cdb, &rw);
	if (!writable(lu, c))
		return;
	if (rw.flags & 0xe0) {
		sense_cdb(c, 1, 7);
		return;
	}
	if (rw.n > MAX_CAW_BLOCKS) {
		sense_cdb(c, 13, -1);
		return;
	}
	if (!range_ok(lu, c, rw.lba, rw.n))
		return;
	if (!rw.n) {
		/* Nothing to compare, yet data came: the CDB cannot describe
		 * what the initiator meant (e.g. 256 blocks wrapped to 0). */
		if (c->data_out_len)
			sense_cdb(c, 13, -1);
		return;
	}
	size_t len = (size_t)rw.n * lu->block_size;
	if (c->data_out_len != 2 * len || !c->data_out) {
		scsi_sense(c, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH);
		return;
	}
	uint8_t *buf = malloc(len);
	if (!buf) {
		scsi_sense(c, SK_HARDWARE_ERROR, ASC_INTERNAL_FAILURE);
		return;
	}
	pthread_rwlock_wrlock(&lu->io_lock);
	int r = lu_read(lu, buf, rw.lba, len);
	if (r < 0) {
		sense_errno(c, r, false);
	} else {
		size_t i = 0;
		while (i < len && buf[i] == c->data_out[i])
			i++;
		if (i < len)
			sense_info(c, SK_MISCOMPARE, ASC_MISCOMPARE_VERIFY, (uint32_t)i);
		else if ((r = vol_write(lu->vol, c->data_out + len, rw.lba * lu->block_size, len)) < 0)
			sense_errno(c, r, true);
	}
	pthread_rwlock_unlock(&lu->io_lock);
	free(buf);
	if (c->status == SCSI_STATUS_GOOD)
		finish_write(lu, c, rw.flags & 0x08);
}

static void cmd_orwrite(struct scsi_lu *lu, struct scsi_cmd *c)
{
	struct rw rw;
	size_t len;
	if (!write_prologue(lu, c, &rw, &len))
		return;
	uint8_t *buf = malloc(len);
	if (!buf) {
		scsi_sense(c, SK_HARDWARE_ERROR, ASC_INTERNAL_FAILURE);
		return;
	}
	pthread_rwlock_wrlock(&lu->io_lock);
	int r = lu_read(lu, buf, rw.lba, len);
	if (r < 0) {
		sense_errno(c, r, false);
	} else {
		for (size_t i = 0; i < len; i++)
			buf[i] |= c->data_out[i];
		if ((r = vol_write(lu->vol, buf, rw.lba * lu->block_size, len)) < 0)
			sense_errno(c, r, true);
	}
	pthread_rwlock_unlock(&lu->io_lock);
	free(buf);
	if (c->status == SCSI_STATUS_GOOD)
		finish_write(lu, c, rw.flags & 0x08);
}

static void cmd_write_same(struct scsi_lu *lu, struct scsi_cmd *c)
{
	struct rw rw;
	decode_rw(c->cdb, &rw);
	bool ws16 = c->cdb[0] == 0x93;
	bool unmap = rw.flags & 0x08;
	bool ndob = ws16 && (rw.flags & 0x01);
	if (!writable(lu, c))
		return;
	if (rw.flags & 0xe0) {
		sense_cdb(c, 1, 7);
		return;
	}
	if (rw.flags & 0x10) {                 /* ANCHOR: not supported */
		sense_cdb(c, 1, 4);
		return;
	}
	if (!ws16 && (rw.flags & 0x01)) {      /* obsolete bits of WRITE SAME(10) */
		sense_cdb(c, 1, 0);
		return;
	}
	if (rw.lba > lu->nblocks) {
		sense_lba(c);
		return;
	}
	uint64_t n = rw.n ? rw.n : lu->nblocks - rw.lba;   /* WSNZ=0 */
	if (!range_ok(lu, c, rw.lba, n))
		return;
	uint32_t bs = lu->block_size;
	if (n * bs > MAX_WS_BYTES) {
		sense_cdb(c, xfer_len_byte(c->cdb[0]), -1);
		return;
	}
	if (!n)
		return;
	if (!ndob && !data_out_ok(c, bs))
		return;
	if (!ndob && c->data_out_len != bs) {
		/* More than the one block WRITE SAME takes. */
		sense_cdb(c, xfer_len_byte(c->cdb[0]), -1);
		return;
	}
	const uint8_t *pat = ndob ? NULL : c->data_out;
	uint64_t off = rw.lba * bs, len = n * bs;
	int r;
	pthread_rwlock_rdlock(&lu->io_lock);
	if (unmap || !pat || buf_is_zero(pat, bs)) {
		/* UNMAP deallocates whatever the pattern (as Linux LIO does; we
		 * report LBPRZ=1, so the blocks then read as zeros), and an
		 * all-zero pattern is a zero range in the store either way: it
		 * replicates as a zero record, not as data. */
		r = unmap ? vol_discard(lu->vol, off, len) : vol_write_zeroes(lu->vol, off, len);
	} else {
		size_t chunk = (size_t)MIN(len, (uint64_t)WS_CHUNK);
		uint8_t *buf = malloc(chunk);
		r = buf ? 0 : -ENOMEM;
		for (size_t i = 0; buf && i < chunk; i += bs)
			memcpy(buf + i, pat, bs);
		for (uint64_t done = 0; r == 0 && done < len; done += chunk) {
			size_t part = (size_t)MIN((uint64_t)chunk, len - done);
			r = vol_write(lu->vol, buf, off + done, part);
		}
		free(buf);
	}
	pthread_rwlock_unlock(&lu->io_lock);
	if (r < 0) {
		sense_errno(c, r, true);
		return;
	}
	finish_write(lu, c, false);
}

static void cmd_unmap(struct scsi_lu *lu, struct scsi_cmd *c)
{
	const uint8_t *cdb = c->cdb;
	if (!writable(lu, c))
		return;
	if (cdb[1] & 0x01) {                   /* ANCHOR */
		sense_cdb(c, 1, 0);
		return;
	}
	uint32_t plen = get_be16(cdb + 7);
	if (plen == 0)
		return;
	if (plen < 8) {
		scsi_sense(c, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH);
		return;
	}
	if (!data_out_ok(c, plen))
		return;
	const uint8_t *p = c->data_out;
	uint32_t bdl = get_be16(p + 2);
	if (get_be16(p) < 6 || bdl > plen - 8) {
		scsi_sense_field(c, ASC_INVALID_FIELD_PARAM, false, bdl > plen - 8 ? 2 : 0, -1);
		return;
	}
	uint32_t nd = bdl / 16;
	if (nd > MAX_UNMAP_DESC) {
		scsi_sense_field(c, ASC_INVALID_FIELD_PARAM, false, 2, -1);
		return;
	}
	uint32_t bs = lu->block_size;
	/* Validate every descriptor before touching anything. */
	for (uint32_t i = 0; i < nd; i++) {
		const uint8_t *d = p + 8 + 16 * i;
		uint64_t lba = get_be64(d);
		uint32_t n = get_be32(d + 8);
		if (!range_ok(lu, c, lba, n))
			return;
		if ((uint64_t)n * bs > MAX_UNMAP_BYTES) {
			scsi_sense_field(c, ASC_INVALID_FIELD_PARAM, false, (uint16_t)(8 + 16 * i + 8), -1);
			return;
		}
	}
	pthread_rwlock_rdlock(&lu->io_lock);
	int r = 0;
	for (uint32_t i = 0; i < nd && r == 0; i++) {
		const uint8_t *d = p + 8 + 16 * i;
		uint32_t n = get_be32(d + 8);
		if (n)
			r = vol_discard(lu->vol, get_be64(d) * bs, (uint64_t)n * bs);
	}
	pthread_rwlock_unlock(&lu->io_lock);
	if (r < 0)
		sense_errno(c, r, true);
	else
		finish_write(lu, c, false);
}

static void cmd_sync_cache(struct scsi_lu *lu, struct scsi_cmd *c)
{
	uint64_t lba, n;
	if (c->cdb[0] == 0x35) {
		lba = get_be32(c->cdb + 2);
		n = get_be16(c->cdb + 7);
	} else {
		lba = get_be64(c->cdb + 2);
		n = get_be32(c->cdb + 10);
	}
	if (!range_ok(lu, c, lba, n))
		return;
	if (lu->snap)
		return;   /* a snapshot is immutable: nothing to make durable */
	/* IMMED is honoured by completing only once durable: still correct. */
	int r = vol_flush(lu->vol);
	if (r < 0)
		sense_errno(c, r, true);
}

static void cmd_prefetch(struct scsi_lu *lu, struct scsi_cmd *c)
{
	struct rw rw;
	decode_rw(c->cdb, &rw);
	range_ok(lu, c, rw.lba, rw.n);
}

/* One GET LBA STATUS descriptor run: [lba, lba+n) all mapped or all not. */
struct lba_run {
	uint64_t lba, n;
	bool dealloc;
};

/* The store keeps all-zero 4 KiB blocks as zero ranges (no data) and we
 * report LBPRZ=1, so "deallocated" is exactly "reads as zeros" at the
 * store's granularity; this classifies by reading (skipping whole zero
 * objects through vol_object_is_zero).  It stops after LBA_STATUS_SCAN
 * bytes read or LBA_STATUS_SKIP bytes skipped, which the standard
 * allows (the initiator asks again from where the answer ends). */
/* Where zeros are found only by reading (RBD: over the network), reading
 * to classify would cost an initiator that asks before each read (qemu
 * does) its reads twice over.  There the store's object map answers
 * instead: an object that does not exist is deallocated (reads as zeros),
 * one that exists is reported mapped (it may hold zeros too, which
 * "mapped" allows).  At most LBA_STATUS_OBJECTS objects per command. */
#define LBA_STATUS_OBJECTS 64
static int lba_status_map(struct scsi_lu *lu, uint64_t lba, struct lba_run *runs, size_t max,
                          size_t *n_runs)
{
	uint32_t bs = lu->block_size;
	size_t nr = 0;
	int r = 0;
	for (unsigned k = 0; k < LBA_STATUS_OBJECTS && lba < lu->nblocks; k++) {
		uint64_t objno = lba * bs / lu->object_size;
		bool mapped;
		r = vol_object_mapped(lu->vol, lu->snap, objno, &mapped);
		if (r < 0)
			break;
		uint64_t nb = MIN((objno + 1) * lu->object_size / bs, lu->nblocks) - lba;
		if (nr && runs[nr - 1].dealloc == !mapped) {
			runs[nr - 1].n += nb;
		} else {
			if (nr == max)
				break;
			runs[nr++] = (struct lba_run){ lba, nb, !mapped };
		}
		lba += nb;
	}
	*n_runs = nr;
	return r < 0 ? r : 0;
}

static int lba_status_scan(struct scsi_lu *lu, uint64_t lba, struct lba_run *runs, size_t max, size_t *n_runs)
{
	if (!lu->zero_exact)
		return lba_status_map(lu, lba, runs, max, n_runs);
	uint32_t bs = lu->block_size;
	uint64_t end = lu->nblocks;
	uint64_t read_budget = LBA_STATUS_SCAN, skip_budget = LBA_STATUS_SKIP;
	size_t nr = 0;
	uint8_t *buf = malloc(1u << 20);
	if (!buf)
		return -ENOMEM;
	int r = 0;
	while (lba < end && nr <= max) {
		uint64_t off = lba * bs;
		uint64_t objno = off / lu->object_size;
		uint64_t obj_end = (objno + 1) * lu->object_size;
		bool zero = false;
		if (off % lu->object_size == 0 && skip_budget) {
			r = vol_object_is_zero(lu->vol, lu->snap, objno, &zero);
			if (r < 0)
				break;
		}
		uint64_t nb;      /* blocks classified in this step */
		if (zero) {
			nb = MIN(obj_end / bs, end) - lba;
			skip_budget = skip_budget > nb * bs ? skip_budget - nb * bs : 0;
			if (nr && runs[nr - 1].dealloc && runs[nr - 1].lba + runs[nr - 1].n == lba) {
				runs[nr - 1].n += nb;
			} else {
				if (nr == max)
					break;
				runs[nr++] = (struct lba_run){ lba, nb, true };
			}
			lba += nb;
			continue;
		}
		if (!read_budget)
			break;
		uint64_t len = MIN((uint64_t)(1u << 20), MIN(obj_end, end * bs) - off);
		len -= len % bs;
		if (!len)
			len = bs;
		r = vol_read(lu->vol, lu->snap, buf, off, (size_t)len);
		if (r < 0)
			break;
		read_budget = read_budget > len ? read_budget - len : 0;
		nb = len / bs;
		for (uint64_t i = 0; i < nb; i++) {
			bool z = buf_is_zero(buf + i * bs, bs);
			if (nr && runs[nr - 1].dealloc == z && runs[nr - 1].lba + runs[nr - 1].n == lba + i) {
				runs[nr - 1].n++;
			} else {
				if (nr == max)
					goto out;
				runs[nr++] = (struct lba_run){ lba + i, 1, z };
			}
		}
		lba += nb;
	}
out:
	free(buf);
	*n_runs = nr;
	return r < 0 ? r : 0;
}

static void cmd_get_lba_status(struct scsi_lu *lu, struct scsi_cmd *c)
{
	uint64_t lba = get_be64(c->cdb + 2);
	uint32_t alloc = get_be32(c->cdb + 10);
	if (lba >= lu->nblocks) {
		sense_lba(c);
		return;
	}
	/* A short allocation length truncates (SBC); one descriptor at least
	 * is worked out so the header's length says what was cut. */
	size_t max = alloc > 8 ? (alloc - 8) / 16 : 0;
	if (max == 0)
		max = 1;
	if (max > 256)
		max = 256;
	struct lba_run runs[256];
	size_t nr = 0;
	int r = lba_status_scan(lu, lba, runs, max, &nr);
	if (r < 0) {
		sense_errno(c, r, false);
		return;
	}
	size_t len = 8 + 16 * nr;
	uint8_t *d = calloc(1, len);
	if (!d) {
		scsi_sense(c, SK_HARDWARE_ERROR, ASC_INTERNAL_FAILURE);
		return;
	}
	put_be32(d, (uint32_t)(len - 4));
	for (size_t i = 0; i < nr; i++) {
		uint8_t *e = d + 8 + 16 * i;
		put_be64(e, runs[i].lba);
		uint64_t n = runs[i].n > 0xffffffffu ? 0xffffffffu : runs[i].n;
		put_be32(e + 8, (uint32_t)n);
		e[12] = runs[i].dealloc ? 1 : 0;
	}
	scsi_put_data(c, d, MIN(len, (size_t)alloc));
	free(d);
}

static void cmd_start_stop(struct scsi_lu *lu, struct scsi_cmd *c)
{
	uint8_t pc = c->cdb[4] >> 4;
	switch (pc) {
	case 0x0: case 0x1: case 0x2: case 0x3: case 0x5: case 0x7: case 0xa: case 0xb:
		break;
	default:
		sense_cdb(c, 4, 7);
		return;
	}
	/* A disk that never spins down: stopping it only makes cached writes
	 * durable, unless NO_FLUSH asks not to. */
	if (pc == 0 && !(c->cdb[4] & 0x01) && !(c->cdb[4] & 0x04) && !atomic_load(&lu->read_only)) {
		int r = vol_flush(lu->vol);
		if (r < 0)
			sense_errno(c, r, true);
	}
}

static void cmd_prevent_allow(struct scsi_lu *lu, struct scsi_cmd *c)
{
	/* Not a removable medium (RMB=0): accepted, there is nothing to lock. */
}

static void cmd_read_defect(struct scsi_lu *lu, struct scsi_cmd *c)
{
	/* A thin volume has no defects: an empty list in the format asked. */
	uint8_t d[8] = { 0 };
	size_t len;
	if (c->cdb[0] == 0x37) {
		d[1] = c->cdb[2] & 0x1f;
		len = 4;
	} else {
		d[1] = c->cdb[1] & 0x1f;
		len = 8;
	}
	scsi_put_data(c, d, len);
}

/* Answers REPORT LUNS when a transport hands it to a LU anyway. */
static void cmd_report_luns_lu(struct scsi_lu *lu, struct scsi_cmd *c)
{
	uint64_t lun0 = 0;
	scsi_report_luns(&lun0, 1, c);
}

static void cmd_report_opcodes(struct scsi_lu *lu, struct scsi_cmd *c);
static void cmd_report_tmf(struct scsi_lu *lu, struct scsi_cmd *c);

static void cmd_mode_sense(struct scsi_lu *lu, struct scsi_cmd *c) { scsi_mode_sense(lu, c); }
static void cmd_mode_select(struct scsi_lu *lu, struct scsi_cmd *c) { scsi_mode_select(lu, c); }
static void cmd_request_sense(struct scsi_lu *lu, struct scsi_cmd *c) { scsi_request_sense(lu, c); }
static void cmd_pr_in(struct scsi_lu *lu, struct scsi_cmd *c) { scsi_pr_in(lu, c); }
static void cmd_pr_out(struct scsi_lu *lu, struct scsi_cmd *c) { scsi_pr_out(lu, c); }
static void cmd_reserve(struct scsi_lu *lu, struct scsi_cmd *c) { scsi_reserve(lu, c); }
static void cmd_release(struct scsi_lu *lu, struct scsi_cmd *c) { scsi_release(lu, c); }

/* ---- the command table -------------------------------------------------- */

struct cmd_desc {
	uint8_t op;
	int16_t sa;             /* -1: the opcode has no service action */
	uint8_t cdb_len;
	uint8_t acc;            /* enum scsi_access */
	bool no_ua;             /* INQUIRY, REPORT LUNS, REQUEST SENSE */
	void (*fn)(struct scsi_lu *, struct scsi_cmd *);
	uint8_t usage[16];      /* CDB usage data (REPORT SUPPORTED OPCODES) */
};

#define U6(...) { __VA_ARGS__ }
static const struct cmd_desc CMDS[] = {
	{ 0x00, -1, 6, ACC_ALWAYS, false, cmd_tur, U6(0x00, 0, 0, 0, 0, 0x07) },
	{ 0x03, -1, 6, ACC_ALWAYS, true, cmd_request_sense, U6(0x03, 0x01, 0, 0, 0xff, 0x07) },
	{ 0x08, -1, 6, ACC_READ, false, cmd_read, U6(0x08, 0x1f, 0xff, 0xff, 0xff, 0x07) },
	{ 0x0a, -1, 6, ACC_WRITE, false, cmd_write, U6(0x0a, 0x1f, 0xff, 0xff, 0xff, 0x07) },
	{ 0x12, -1, 6, ACC_ALWAYS, true, cmd_inquiry, U6(0x12, 0x01, 0xff, 0xff, 0xff, 0x07) },
	{ 0x15, -1, 6, ACC_WRITE, false, cmd_mode_select, U6(0x15, 0x11, 0, 0, 0xff, 0x07) },
	{ 0x16, -1, 6, ACC_WRITE, false, cmd_reserve, U6(0x16, 0, 0, 0, 0, 0x07) },
	{ 0x17, -1, 6, ACC_WRITE, false, cmd_release, U6(0x17, 0, 0, 0, 0, 0x07) },
	{ 0x1a, -1, 6, ACC_READ, false, cmd_mode_sense, U6(0x1a, 0x08, 0xff, 0xff, 0xff, 0x07) },
	{ 0x1b, -1, 6, ACC_WRITE, false, cmd_start_stop, U6(0x1b, 0x01, 0, 0x0f, 0xf7, 0x07) },
	{ 0x1e, -1, 6, ACC_ALWAYS, false, cmd_prevent_allow, U6(0x1e, 0, 0, 0, 0x03, 0x07) },
	{ 0x25, -1, 10, ACC_ALWAYS, false, cmd_read_capacity10, U6(0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0x07) },
	{ 0x28, -1, 10, ACC_READ, false, cmd_read, U6(0x28, 0xfa, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07) },
	{ 0x2a, -1, 10, ACC_WRITE, false, cmd_write, U6(0x2a, 0xfa, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07) },
	{ 0x2e, -1, 10, ACC_WRITE, false, cmd_write, U6(0x2e, 0xf2, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07) },
	{ 0x2f, -1, 10, ACC_READ, false, cmd_verify, U6(0x2f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07) },
	{ 0x34, -1, 10, ACC_READ, false, cmd_prefetch, U6(0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07) },
	{ 0x35, -1, 10, ACC_WRITE, false, cmd_sync_cache, U6(0x35, 0x02, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07) },
	{ 0x37, -1, 10, ACC_READ, false, cmd_read_defect, U6(0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0x07) },
	{ 0x41, -1, 10, ACC_WRITE, false, cmd_write_same, U6(0x41, 0xe8, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x07) },
	{ 0x42, -1, 10, ACC_WRITE, false, cmd_unmap, U6(0x42, 0x01, 0, 0, 0, 0, 0x3f, 0xff, 0xff, 0x07) },
	{ 0x55, -1, 10, ACC_WRITE, false, cmd_mode_select, U6(0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07) },
	{ 0x56, -1, 10, ACC_WRITE, false, cmd_reserve, U6(0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0x07) },
	{ 0x57, -1, 10, ACC_WRITE, false, cmd_release, U6(0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0x07) },
	{ 0x5a, -1, 10, ACC_READ, false, cmd_mode_sense, U6(0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0x07) },
	{ 0x5e, 0x00, 10, ACC_ALWAYS, false, cmd_pr_in, U6(0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07) },
	{ 0x5e, 0x01, 10, ACC_ALWAYS, false, cmd_pr_in, U6(0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07) },
	{ 0x5e, 0x02, 10, ACC_ALWAYS, false, cmd_pr_in, U6(0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07) },
	{ 0x5e, 0x03, 10, ACC_ALWAYS, false, cmd_pr_in, U6(0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07) },
	{ 0x5f, 0x00, 10, ACC_ALWAYS, false, cmd_pr_out, U6(0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07) },
	{ 0x5f, 0x01, 10, ACC_ALWAYS, false, cmd_pr_out, U6(0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07) },
	{ 0x5f, 0x02, 10, ACC_ALWAYS, false, cmd_pr_out, U6(0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07) },
	{ 0x5f, 0x03, 10, ACC_ALWAYS, false, cmd_pr_out, U6(0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07) },
	{ 0x5f, 0x04, 10, ACC_ALWAYS, false, cmd_pr_out, U6(0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07) },
	{ 0x5f, 0x05, 10, ACC_ALWAYS, false, cmd_pr_out, U6(0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07) },
	{ 0x5f, 0x06, 10, ACC_ALWAYS, false, cmd_pr_out, U6(0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07) },
	{ 0x88, -1, 16, ACC_READ, false, cmd_read, U6(0x88, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07) },
	{ 0x89, -1, 16, ACC_WRITE, false, cmd_compare_and_write, U6(0x89, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x3f, 0x07) },
	{ 0x8a, -1, 16, ACC_WRITE, false, cmd_write, U6(0x8a, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07) },
	{ 0x8b, -1, 16, ACC_WRITE, false, cmd_orwrite, U6(0x8b, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07) },
	{ 0x8e, -1, 16, ACC_WRITE, false, cmd_write, U6(0x8e, 0xf2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07) },
	{ 0x8f, -1, 16, ACC_READ, false, cmd_verify, U6(0x8f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07) },
	{ 0x90, -1, 16, ACC_READ, false, cmd_prefetch, U6(0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07) },
	{ 0x91, -1, 16, ACC_WRITE, false, cmd_sync_cache, U6(0x91, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07) },
	{ 0x93, -1, 16, ACC_WRITE, false, cmd_write_same, U6(0x93, 0xe9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07) },
	{ 0x9e, 0x10, 16, ACC_ALWAYS, false, cmd_read_capacity16, U6(0x9e, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07) },
	{ 0x9e, 0x12, 16, ACC_READ, false, cmd_get_lba_status, U6(0x9e, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07) },
	{ 0xa0, -1, 12, ACC_ALWAYS, true, cmd_report_luns_lu, U6(0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07) },
	{ 0xa3, 0x0c, 12, ACC_ALWAYS, false, cmd_report_opcodes, U6(0xa3, 0x1f, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07) },
	{ 0xa3, 0x0d, 12, ACC_ALWAYS, false, cmd_report_tmf, U6(0xa3, 0x1f, 0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07) },
	{ 0xa8, -1, 12, ACC_READ, false, cmd_read, U6(0xa8, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07) },
	{ 0xaa, -1, 12, ACC_WRITE, false, cmd_write, U6(0xaa, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07) },
	{ 0xae, -1, 12, ACC_WRITE, false, cmd_write, U6(0xae, 0xf2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07) },
	{ 0xaf, -1, 12, ACC_READ, false, cmd_verify, U6(0xaf, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07) },
	{ 0xb7, -1, 12, ACC_READ, false, cmd_read_defect, U6(0xb7, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07) },
};

/* Opcodes whose service action lives in byte 1 (bits 4:0). */
static bool has_sa(uint8_t op)
{
	return op == 0x5e || op == 0x5f || op == 0x9e || op == 0xa3;
}

static const struct cmd_desc *find_cmd(uint8_t op, int sa)
{
	for (size_t i = 0; i < ARRAY_SIZE(CMDS); i++)
		if (CMDS[i].op == op && (CMDS[i].sa < 0 || CMDS[i].sa == sa))
			return &CMDS[i];
	return NULL;
}

static bool op_known(uint8_t op)
{
	for (size_t i = 0; i < ARRAY_SIZE(CMDS); i++)
		if (CMDS[i].op == op)
			return true;
	return false;
}

static size_t put_timeouts(uint8_t *p)
{
	memset(p, 0, 12);
	put_be16(p, 0x0a);
	put_be32(p + 4, 0);       /* nominal: not specified */
	put_be32(p + 8, 30);      /* recommended: 30 s */
	return 12;
}

static void cmd_report_opcodes(struct scsi_lu *lu, struct scsi_cmd *c)
{
	const uint8_t *cdb = c->cdb;
	bool rctd = cdb[2] & 0x80;
	uint8_t opt = cdb[2] & 0x07;
	uint8_t op = cdb[3];
	uint16_t sa = get_be16(cdb + 4);
	uint32_t alloc = get_be32(cdb + 6);
	uint8_t d[4 + ARRAY_SIZE(CMDS) * 20];
	size_t len = 0;
	memset(d, 0, sizeof(d));
	if (opt == 0) {
		len = 4;
		for (size_t i = 0; i < ARRAY_SIZE(CMDS); i++) {
			uint8_t *e = d + len;
			e[0] = CMDS[i].op;
			put_be16(e + 2, CMDS[i].sa < 0 ? 0 : (uint16_t)CMDS[i].sa);
			e[5] = (uint8_t)((rctd ? 0x02 : 0) | (CMDS[i].sa >= 0 ? 0x01 : 0));
			put_be16(e + 6, CMDS[i].cdb_len);
			len += 8;
			if (rctd)
				len += put_timeouts(d + len);
		}
		put_be32(d, (uint32_t)(len - 4));
	} else if (opt <= 3) {
		const struct cmd_desc *cd = NULL;
		if (opt == 1 && has_sa(op)) {
			sense_cdb(c, 2, 2);
			return;
		}
		if (opt == 2 && !has_sa(op)) {
			sense_cdb(c, 2, 2);
			return;
		}
		if (opt == 1 || (opt == 3 && !has_sa(op)))
			cd = has_sa(op) ? NULL : find_cmd(op, -1);
		else
			cd = sa <= 0x1f ? find_cmd(op, sa) : NULL;
		if (cd && cd->sa < 0 && opt == 3 && sa) {
			cd = NULL;      /* a service action on an opcode without */
		}
		d[1] = (uint8_t)((rctd ? 0x80 : 0) | (cd ? 0x03 : 0x01));
		len = 4;
		if (cd) {
			put_be16(d + 2, cd->cdb_len);
			memcpy(d + 4, cd->usage, cd->cdb_len);
			if (cd->sa >= 0) {
				d[5] = (uint8_t)((d[5] & 0xe0) | cd->sa);
			}
			len += cd->cdb_len;
			if (rctd)
				len += put_timeouts(d + len);
		}
	} else {
		sense_cdb(c, 2, 2);
		return;
	}
	scsi_put_data(c, d, MIN(len, (size_t)alloc));
}

static void cmd_report_tmf(struct scsi_lu *lu, struct scsi_cmd *c)
{
	/* ABORT TASK, ABORT TASK SET, LUN RESET, TARGET RESET (warm/cold via
	 * the transport); no CLEAR ACA, CLEAR TASK SET, QUERY TASK. */
	uint8_t d[4] = { 0xc8, 0x00, 0, 0 };
	d[0] = 0x80 | 0x40 | 0x08 | 0x02;   /* ATS ATSS LURS TRS */
	scsi_put_data(c, d, MIN(sizeof(d), (size_t)get_be32(c->cdb + 6)));
}

/* ---- entry points ------------------------------------------------------- */

/* ---- statistics --------------------------------------------------------- */

const double scsi_lat_bounds[SCSI_LAT_BUCKETS] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5,
};

const char *scsi_op_class_name(enum scsi_op_class c)
{
	static const char *const names[SCSI_OPC_N] = {"read", "write", "unmap", "flush", "other"};
	return (unsigned)c < SCSI_OPC_N ? names[c] : "other";
}

static enum scsi_op_class op_class(const struct cmd_desc *cd)
{
	if (cd->fn == cmd_read)
		return SCSI_OPC_READ;
	if (cd->fn == cmd_write || cd->fn == cmd_write_same || cd->fn == cmd_compare_and_write ||
	    cd->fn == cmd_orwrite)
		return SCSI_OPC_WRITE;
	if (cd->fn == cmd_unmap)
		return SCSI_OPC_UNMAP;
	if (cd->fn == cmd_sync_cache)
		return SCSI_OPC_FLUSH;
	return SCSI_OPC_OTHER;
}

static void stat_add(struct scsi_lu *lu, enum scsi_op_class k, uint64_t bytes, uint64_t ns)
{
	unsigned b = 0;
	double s = (double)ns / 1e9;
	while (b < SCSI_LAT_BUCKETS && s > scsi_lat_bounds[b])
		b++;
	atomic_fetch_add_explicit(&lu->st[k].ops, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&lu->st[k].bytes, bytes, memory_order_relaxed);
	atomic_fetch_add_explicit(&lu->st[k].lat_ns, ns, memory_order_relaxed);
	atomic_fetch_add_explicit(&lu->st[k].lat[b], 1, memory_order_relaxed);
}

void scsi_lu_stats(const struct scsi_lu *lu, struct scsi_lu_stats *out)
{
	for (unsigned k = 0; k < SCSI_OPC_N; k++) {
		struct scsi_op_stats *o = &out->op[k];
		o->ops = atomic_load_explicit(&lu->st[k].ops, memory_order_relaxed);
		o->bytes = atomic_load_explicit(&lu->st[k].bytes, memory_order_relaxed);
		o->lat_ns = atomic_load_explicit(&lu->st[k].lat_ns, memory_order_relaxed);
		for (unsigned b = 0; b <= SCSI_LAT_BUCKETS; b++)
			o->lat[b] = atomic_load_explicit(&lu->st[k].lat[b], memory_order_relaxed);
	}
}

void scsi_lu_exec(struct scsi_lu *lu, struct scsi_cmd *c)
{
	c->status = SCSI_STATUS_GOOD;
	c->sense_len = 0;
	c->data_in_len = 0;
	if (!c->cdb || c->cdb_len < 1) {
		scsi_sense(c, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
		return;
	}
	uint8_t op = c->cdb[0];
	size_t need = cdb_len_of(op);
	if (need == 0 || !op_known(op)) {
		scsi_sense_field(c, ASC_INVALID_OPCODE, true, 0, 7);
		return;
	}
	if (c->cdb_len < need) {
		sense_cdb(c, 0, -1);
		return;
	}
	int sa = has_sa(op) ? (c->cdb[1] & 0x1f) : -1;
	const struct cmd_desc *cd = find_cmd(op, sa);
	if (!cd) {
		sense_cdb(c, 1, 4);                /* unsupported service action */
		return;
	}
	uint8_t control = c->cdb[need - 1];
	if (control & 0x05) {                  /* NACA, LINK */
		sense_cdb(c, (uint16_t)(need - 1), (control & 0x04) ? 2 : 0);
		return;
	}
	pthread_mutex_lock(&lu->mu);
	/* The volume was resized (ferry volume resize, or a replication
	 * secondary following its primary): SBC-3 4.6, every I_T nexus
	 * learns it from CAPACITY DATA HAS CHANGED. */
	uint64_t nb = vol_size(lu->vol) / lu->block_size;
	if (nb != lu->nblocks) {
		log_info("scsi: %s: capacity now %llu blocks (was %llu)", lu->serial,
		         (unsigned long long)nb, (unsigned long long)lu->nblocks);
		lu->nblocks = nb;
		scsi_ua_all(lu, ASC_CAPACITY_CHANGED, 0, false);
	}
	bool go = scsi_admit(lu, c, (enum scsi_access)cd->acc, !cd->no_ua);
	pthread_mutex_unlock(&lu->mu);
	if (!go)
		return;
	uint64_t t0 = now_mono_ns();
	cd->fn(lu, c);
	stat_add(lu, op_class(cd), (uint64_t)c->data_in_len + c->data_out_len, now_mono_ns() - t0);
}

void scsi_report_luns(const uint64_t *luns, size_t n, struct scsi_cmd *c)
{
	c->status = SCSI_STATUS_GOOD;
	c->sense_len = 0;
	c->data_in_len = 0;
	if (!c->cdb || c->cdb_len < 12) {
		sense_cdb(c, 0, -1);
		return;
	}
	uint8_t sel = c->cdb[2];
	uint32_t alloc = get_be32(c->cdb + 6);
	if (sel != 0x00 && sel != 0x01 && sel != 0x02 && sel != 0x10 && sel != 0x11 && sel != 0x12) {
		sense_cdb(c, 2, -1);
		return;
	}
	if (alloc < 16) {
		sense_cdb(c, 6, -1);
		return;
	}
	/* Well-known LUNs (select 1) we have none of. */
	size_t count = sel == 0x01 ? 0 : n;
	size_t len = 8 + 8 * count;
	uint8_t *d = calloc(1, len);
	if (!d) {
		scsi_sense(c, SK_HARDWARE_ERROR, ASC_INTERNAL_FAILURE);
		return;
	}
	put_be32(d, (uint32_t)(8 * count));
	for (size_t i = 0; i < count; i++) {
		uint8_t *e = d + 8 + 8 * i;
		if (luns[i] < 256) {
			e[1] = (uint8_t)luns[i];       /* peripheral device addressing */
		} else {
			e[0] = (uint8_t)(0x40 | ((luns[i] >> 8) & 0x3f));   /* flat space */
			e[1] = (uint8_t)luns[i];
		}
	}
	scsi_put_data(c, d, MIN(len, (size_t)alloc));
	free(d);
}

void scsi_no_lun(struct scsi_cmd *c)
{
	c->status = SCSI_STATUS_GOOD;
	c->sense_len = 0;
	c->data_in_len = 0;
	if (c->cdb && c->cdb_len >= 6 && c->cdb[0] == 0x12) {
		if (c->cdb[1] & 1) {
			/* No VPD for a LUN that does not exist. */
			sense_cdb(c, 1, 0);
			return;
		}
		uint8_t d[36] = { 0 };
		d[0] = 0x7f;        /* PQ=3: not capable of supporting a device */
		d[2] = 0x06;
		d[3] = 0x12;
		d[4] = sizeof(d) - 5;
		memcpy(d + 8, VENDOR, 8);
		memcpy(d + 16, PRODUCT, 16);
		memcpy(d + 32, REVISION, 4);
		scsi_put_data(c, d, MIN(sizeof(d), (size_t)get_be16(c->cdb + 3)));
		return;
	}
	if (c->cdb && c->cdb_len >= 6 && c->cdb[0] == 0x03) {
		/* REQUEST SENSE to a missing LUN reports why. */
		uint8_t s[18] = { 0x70, 0, SK_ILLEGAL_REQUEST, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x25, 0x00 };
		scsi_put_data(c, s, MIN(sizeof(s), (size_t)c->cdb[4]));
		return;
	}
	scsi_sense(c, SK_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED);
}

void scsi_lu_reset(struct scsi_lu *lu)
{
	pthread_mutex_lock(&lu->mu);
	/* A LUN reset releases SPC-2 reservations (not persistent ones) and
	 * every nexus learns of it through a unit attention. */
	lu->res2_held = false;
	scsi_ua_all(lu, ASC_BUS_DEVICE_RESET, 0, false);
	pthread_mutex_unlock(&lu->mu);
}

void scsi_lu_nexus_gone(struct scsi_lu *lu, uint64_t nexus)
{
	pthread_mutex_lock(&lu->mu);
	if (lu->res2_held && lu->res2_nexus == nexus)
		lu->res2_held = false;
	for (size_t i = 0; i < lu->n_nx; i++) {
		if (lu->nx[i].nexus == nexus) {
			lu->nx[i] = lu->nx[--lu->n_nx];
			break;
		}
	}
	pthread_mutex_unlock(&lu->mu);
}
