/* Unit tests of the SCSI layer: CDBs straight into scsi_lu_exec against a
 * real store volume in a temporary directory.  vol_flush is wrapped
 * (-Wl,--wrap=vol_flush) to count how often the layer makes writes
 * durable, which is how FUA, SYNCHRONIZE CACHE and WCE=0 are checked. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/common.h"
#include "scsi/scsi.h"
#include "store/store.h"

/* ---- vol_flush counting --------------------------------------------- */
int __real_vol_flush(struct vol *v);
int __wrap_vol_flush(struct vol *v);
static int flush_count;
int __wrap_vol_flush(struct vol *v)
{
	__atomic_add_fetch(&flush_count, 1, __ATOMIC_SEQ_CST);
	return __real_vol_flush(v);
}

/* ---- fixture ------------------------------------------------------------ */
#define VOL_SIZE (8u << 20)
#define OBJ_SIZE (64u << 10)

struct fx {
	char dir[64];
	struct store *st;
	struct vol *vol;
	struct scsi_lu *lu;
	uint32_t bs;
	uint64_t nblocks;
};

static const uint8_t NAA[8] = { 0x60, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07 };

static int setup_bs(void **state, uint32_t bs)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/ferry-scsi-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(store_open(f->dir, &f->st), 0);
	struct vol_params p = { .size = VOL_SIZE, .object_size = OBJ_SIZE, .block_size = bs };
	assert_int_equal(store_vol_create(f->st, "v", &p), 0);
	assert_int_equal(vol_open(f->st, "v", &f->vol), 0);
	struct scsi_lu_params lp = { .vol = f->vol, .serial = "SERIAL42", .naa = NAA };
	assert_int_equal(scsi_lu_create(&lp, &f->lu), 0);
	f->bs = bs;
	f->nblocks = VOL_SIZE / bs;
	flush_count = 0;
	*state = f;
	return 0;
}

static int setup512(void **state) { return setup_bs(state, 512); }
static int setup4k(void **state) { return setup_bs(state, 4096); }

static int teardown(void **state)
{
	struct fx *f = *state;
	scsi_lu_destroy(f->lu);
	vol_close(f->vol);
	store_close(f->st);
	rm_rf(f->dir);
	free(f);
	return 0;
}

/* ---- helpers ------------------------------------------------------------ */
static uint8_t inbuf[1 << 20];

static struct scsi_cmd run(struct scsi_lu *lu, uint64_t nexus, const uint8_t *cdb, size_t cdb_len,
                           const void *out, uint32_t out_len, uint32_t in_cap)
{
	struct scsi_cmd c;
	memset(&c, 0, sizeof(c));
	c.cdb = cdb;
	c.cdb_len = (uint8_t)cdb_len;
	c.nexus = nexus;
	c.data_out = out;
	c.data_out_len = out_len;
	c.data_in = inbuf;
	c.data_in_cap = in_cap;
	memset(inbuf, 0xee, in_cap < sizeof(inbuf) ? in_cap : sizeof(inbuf));
	scsi_lu_exec(lu, &c);
	return c;
}

/* Clears the power-on unit attention of a nexus. */
static void attach(struct scsi_lu *lu, uint64_t nexus)
{
	uint8_t tur[6] = { 0 };
	struct scsi_cmd c = run(lu, nexus, tur, 6, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_CHECK_CONDITION);
	c = run(lu, nexus, tur, 6, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
}

#define assert_sense(c, key, asc, ascq)                                      \
	do {                                                                 \
		assert_int_equal((c).status, SCSI_STATUS_CHECK_CONDITION);   \
		assert_int_equal((c).sense_len, 18);                         \
		assert_int_equal((c).sense[0] & 0x7f, 0x70);                 \
		assert_int_equal((c).sense[2], (key));                       \
		assert_int_equal((c).sense[7], 10);                          \
		assert_int_equal((c).sense[12], (asc));                      \
		assert_int_equal((c).sense[13], (ascq));                     \
	} while (0)

static void be32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }
static void be64(uint8_t *p, uint64_t v) { be32(p, (uint32_t)(v >> 32)); be32(p + 4, (uint32_t)v); }
static void be16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) << 32 | rd32(p + 4); }

static void cdb_rw16(uint8_t *cdb, uint8_t op, uint8_t flags, uint64_t lba, uint32_t n)
{
	memset(cdb, 0, 16);
	cdb[0] = op;
	cdb[1] = flags;
	be64(cdb + 2, lba);
	be32(cdb + 10, n);
}

static void cdb_rw10(uint8_t *cdb, uint8_t op, uint8_t flags, uint32_t lba, uint16_t n)
{
	memset(cdb, 0, 10);
	cdb[0] = op;
	cdb[1] = flags;
	be32(cdb + 2, lba);
	be16(cdb + 7, n);
}

static struct scsi_cmd write16(struct fx *f, uint64_t nexus, uint64_t lba, uint32_t n, const void *data, uint8_t flags)
{
	uint8_t cdb[16];
	cdb_rw16(cdb, 0x8a, flags, lba, n);
	return run(f->lu, nexus, cdb, 16, data, n * f->bs, 0);
}

static struct scsi_cmd read16(struct fx *f, uint64_t nexus, uint64_t lba, uint32_t n)
{
	uint8_t cdb[16];
	cdb_rw16(cdb, 0x88, 0, lba, n);
	return run(f->lu, nexus, cdb, 16, NULL, 0, n * f->bs);
}

/* ---- vol_diff helpers --------------------------------------------------- */
struct diffacc {
	uint64_t zero_bytes, data_bytes;
};

static int diff_cb_acc(void *ctx, const struct diff_object *o)
{
	struct diffacc *a = ctx;
	for (size_t i = 0; i < o->n_extents; i++) {
		if (o->extents[i].kind == EXTENT_ZERO)
			a->zero_bytes += o->extents[i].length;
		else
			a->data_bytes += o->extents[i].length;
	}
	return 0;
}

/* What changed since snapshot `from` as data vs zero bytes. */
static struct diffacc diff_since(struct fx *f, const char *from)
{
	assert_int_equal(vol_snap_create(f->vol, "probe"), 0);
	struct diffacc a = { 0, 0 };
	assert_int_equal(vol_diff(f->vol, from, "probe", diff_cb_acc, &a), 0);
	assert_int_equal(vol_snap_delete(f->vol, "probe"), 0);
	return a;
}

/* ---- tests -------------------------------------------------------------- */

static void test_unit_attention_power_on(void **state)
{
	struct fx *f = *state;
	uint8_t tur[6] = { 0 };
	/* INQUIRY does not report nor clear a pending unit attention. */
	uint8_t inq[6] = { 0x12, 0, 0, 0, 96, 0 };
	struct scsi_cmd c = run(f->lu, 1, inq, 6, NULL, 0, 96);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = run(f->lu, 1, tur, 6, NULL, 0, 0);
	static const uint8_t want[18] = { 0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x00, 0, 0, 0, 0 };
	assert_int_equal(c.status, SCSI_STATUS_CHECK_CONDITION);
	assert_int_equal(c.sense_len, 18);
	assert_memory_equal(c.sense, want, 18);
	c = run(f->lu, 1, tur, 6, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	/* A second nexus has its own attention, reported by REQUEST SENSE. */
	uint8_t rs[6] = { 0x03, 0, 0, 0, 18, 0 };
	c = run(f->lu, 2, rs, 6, NULL, 0, 18);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(c.data_in_len, 18);
	assert_memory_equal(inbuf, want, 18);
	c = run(f->lu, 2, rs, 6, NULL, 0, 18);
	assert_int_equal(inbuf[2], 0);   /* NO SENSE now */
	assert_int_equal(inbuf[12], 0);
	/* Descriptor format when asked. */
	scsi_lu_reset(f->lu);
	rs[1] = 1;
	c = run(f->lu, 2, rs, 6, NULL, 0, 18);
	assert_int_equal(c.data_in_len, 8);
	assert_int_equal(inbuf[0], 0x72);
	assert_int_equal(inbuf[1], 0x06);
	assert_int_equal(inbuf[2], 0x29);
	assert_int_equal(inbuf[3], 0x03);
	/* The reset reached nexus 1 too; a nexus that goes and comes back
	 * starts again with power-on. */
	c = run(f->lu, 1, tur, 6, NULL, 0, 0);
	assert_sense(c, 0x06, 0x29, 0x03);
	scsi_lu_nexus_gone(f->lu, 1);
	c = run(f->lu, 1, tur, 6, NULL, 0, 0);
	assert_sense(c, 0x06, 0x29, 0x00);
}

static void test_invalid_opcode_and_fields(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint8_t bad[6] = { 0x04, 0, 0, 0, 0, 0 };          /* FORMAT UNIT: not supported */
	struct scsi_cmd c = run(f->lu, 1, bad, 6, NULL, 0, 0);
	static const uint8_t want[18] = { 0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00, 0, 0xcf, 0, 0 };
	assert_memory_equal(c.sense, want, 18);
	/* NACA in the control byte. */
	uint8_t tur[6] = { 0, 0, 0, 0, 0, 0x04 };
	c = run(f->lu, 1, tur, 6, NULL, 0, 0);
	assert_sense(c, 5, 0x24, 0x00);
	assert_int_equal(c.sense[15], 0xca);               /* SKSV, C/D, BPV, bit 2 */
	assert_int_equal(c.sense[17], 5);
	/* Unknown service action of SERVICE ACTION IN(16). */
	uint8_t sai[16] = { 0x9e, 0x1f };
	c = run(f->lu, 1, sai, 16, NULL, 0, 32);
	assert_sense(c, 5, 0x24, 0x00);
	assert_int_equal(c.sense[17], 1);
	/* A CDB shorter than its opcode's group. */
	uint8_t r10[10] = { 0x28 };
	c = run(f->lu, 1, r10, 6, NULL, 0, 0);
	assert_sense(c, 5, 0x24, 0x00);
}

static void test_inquiry(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint8_t cdb[6] = { 0x12, 0, 0, 0, 255, 0 };
	struct scsi_cmd c = run(f->lu, 1, cdb, 6, NULL, 0, 255);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(c.data_in_len, 96);
	assert_int_equal(inbuf[0], 0x00);
	assert_int_equal(inbuf[2], 0x06);
	assert_int_equal(inbuf[3], 0x12);
	assert_int_equal(inbuf[4], 91);
	assert_int_equal(inbuf[7], 0x02);
	assert_memory_equal(inbuf + 8, "FERRY   ", 8);
	/* Allocation length truncates. */
	cdb[4] = 5;
	c = run(f->lu, 1, cdb, 6, NULL, 0, 255);
	assert_int_equal(c.data_in_len, 5);
	/* Page code without EVPD. */
	cdb[2] = 0x80;
	cdb[4] = 255;
	c = run(f->lu, 1, cdb, 6, NULL, 0, 255);
	assert_sense(c, 5, 0x24, 0x00);
	assert_int_equal(c.sense[15], 0xc0);
	assert_int_equal(c.sense[17], 2);

	/* VPD 0x00 */
	cdb[1] = 1;
	cdb[2] = 0x00;
	c = run(f->lu, 1, cdb, 6, NULL, 0, 255);
	static const uint8_t p0[] = { 0, 0, 0, 6, 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2 };
	assert_int_equal(c.data_in_len, sizeof(p0));
	assert_memory_equal(inbuf, p0, sizeof(p0));
	/* VPD 0x80 */
	cdb[2] = 0x80;
	c = run(f->lu, 1, cdb, 6, NULL, 0, 255);
	assert_int_equal(inbuf[3], 8);
	assert_memory_equal(inbuf + 4, "SERIAL42", 8);
	/* VPD 0x83: the NAA designator first, stable across LUs. */
	cdb[2] = 0x83;
	c = run(f->lu, 1, cdb, 6, NULL, 0, 255);
	assert_int_equal(inbuf[1], 0x83);
	assert_int_equal(inbuf[4], 0x01);
	assert_int_equal(inbuf[5], 0x03);
	assert_int_equal(inbuf[7], 16);
	assert_memory_equal(inbuf + 8, NAA, 8);
	uint8_t first[64];
	memcpy(first, inbuf, sizeof(first));
	struct scsi_lu *lu2;
	struct scsi_lu_params lp = { .vol = f->vol, .serial = "SERIAL42", .naa = NAA, .read_only = true };
	assert_int_equal(scsi_lu_create(&lp, &lu2), 0);
	c = run(lu2, 1, cdb, 6, NULL, 0, 255);
	assert_memory_equal(inbuf, first, sizeof(first));
	scsi_lu_destroy(lu2);
	/* VPD 0xB0 block limits */
	cdb[2] = 0xb0;
	c = run(f->lu, 1, cdb, 6, NULL, 0, 255);
	assert_int_equal(c.data_in_len, 64);
	assert_int_equal(inbuf[3], 0x3c);
	assert_int_equal(inbuf[5], 128);                         /* max COMPARE AND WRITE */
	assert_int_equal(rd32(inbuf + 8), (32u << 20) / f->bs);  /* max transfer */
	assert_int_equal(rd32(inbuf + 20), (512u << 20) / f->bs); /* max unmap LBAs */
	assert_int_equal(rd32(inbuf + 24), 256);                 /* max unmap descriptors */
	assert_int_equal(rd32(inbuf + 28), 4096 / f->bs);        /* unmap granularity */
	assert_int_equal(rd64(inbuf + 36), (1u << 30) / f->bs);  /* max WRITE SAME */
	/* VPD 0xB1 */
	cdb[2] = 0xb1;
	c = run(f->lu, 1, cdb, 6, NULL, 0, 255);
	assert_int_equal(inbuf[5], 1);
	/* VPD 0xB2: LBPU LBPWS LBPWS10 LBPRZ, thin */
	cdb[2] = 0xb2;
	c = run(f->lu, 1, cdb, 6, NULL, 0, 255);
	static const uint8_t pb2[8] = { 0, 0xb2, 0, 4, 0, 0xe4, 0x02, 0 };
	assert_int_equal(c.data_in_len, 8);
	assert_memory_equal(inbuf, pb2, 8);
	/* Unknown VPD page */
	cdb[2] = 0x99;
	c = run(f->lu, 1, cdb, 6, NULL, 0, 255);
	assert_sense(c, 5, 0x24, 0x00);
}

static void test_read_capacity(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint8_t rc10[10] = { 0x25 };
	struct scsi_cmd c = run(f->lu, 1, rc10, 10, NULL, 0, 8);
	assert_int_equal(c.data_in_len, 8);
	assert_int_equal(rd32(inbuf), f->nblocks - 1);
	assert_int_equal(rd32(inbuf + 4), f->bs);
	rc10[5] = 1;                                    /* LBA without PMI */
	c = run(f->lu, 1, rc10, 10, NULL, 0, 8);
	assert_sense(c, 5, 0x24, 0x00);
	uint8_t rc16[16] = { 0x9e, 0x10 };
	be32(rc16 + 10, 32);
	c = run(f->lu, 1, rc16, 16, NULL, 0, 32);
	assert_int_equal(c.data_in_len, 32);
	assert_int_equal(rd64(inbuf), f->nblocks - 1);
	assert_int_equal(rd32(inbuf + 8), f->bs);
	assert_int_equal(inbuf[13], f->bs == 512 ? 3 : 0);
	assert_int_equal(inbuf[14], 0xc0);               /* LBPME, LBPRZ */
	be32(rc16 + 10, 12);
	c = run(f->lu, 1, rc16, 16, NULL, 0, 32);
	assert_int_equal(c.data_in_len, 12);
}

static void test_read_write_all_sizes(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint32_t bs = f->bs;
	uint8_t *data = malloc(4 * bs);
	for (uint32_t i = 0; i < 4 * bs; i++)
		data[i] = (uint8_t)(i * 7 + 3);
	/* WRITE(6) at LBA 5, READ(10) back */
	uint8_t w6[6] = { 0x0a, 0, 0, 5, 4, 0 };
	struct scsi_cmd c = run(f->lu, 1, w6, 6, data, 4 * bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	uint8_t r10[10];
	cdb_rw10(r10, 0x28, 0, 5, 4);
	c = run(f->lu, 1, r10, 10, NULL, 0, 4 * bs);
	assert_int_equal(c.data_in_len, 4 * bs);
	assert_memory_equal(inbuf, data, 4 * bs);
	/* WRITE(12) / READ(6) */
	uint8_t w12[12] = { 0xaa };
	be32(w12 + 2, 20);
	be32(w12 + 6, 2);
	data[0] ^= 0xff;
	c = run(f->lu, 1, w12, 12, data, 2 * bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	uint8_t r6[6] = { 0x08, 0, 0, 20, 2, 0 };
	c = run(f->lu, 1, r6, 6, NULL, 0, 2 * bs);
	assert_memory_equal(inbuf, data, 2 * bs);
	/* WRITE(10) / READ(12) */
	uint8_t w10[10];
	cdb_rw10(w10, 0x2a, 0, 40, 3);
	c = run(f->lu, 1, w10, 10, data + bs, 3 * bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	uint8_t r12[12] = { 0xa8 };
	be32(r12 + 2, 40);
	be32(r12 + 6, 3);
	c = run(f->lu, 1, r12, 12, NULL, 0, 3 * bs);
	assert_memory_equal(inbuf, data + bs, 3 * bs);
	/* WRITE(16) at the last block, READ(16) */
	c = write16(f, 1, f->nblocks - 1, 1, data, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = read16(f, 1, f->nblocks - 1, 1);
	assert_memory_equal(inbuf, data, bs);
	/* WRITE AND VERIFY(10) */
	uint8_t wv[10];
	cdb_rw10(wv, 0x2e, 0x02, 60, 1);
	c = run(f->lu, 1, wv, 10, data + 2 * bs, bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = read16(f, 1, 60, 1);
	assert_memory_equal(inbuf, data + 2 * bs, bs);
	/* Beyond the end: one block past, and LBA wrap-around. */
	c = read16(f, 1, f->nblocks - 1, 2);
	static const uint8_t oor[18] = { 0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0, 0, 0, 0, 0 };
	assert_memory_equal(c.sense, oor, 18);
	c = write16(f, 1, UINT64_MAX, 1, data, 0);
	assert_sense(c, 5, 0x21, 0x00);
	c = read16(f, 1, f->nblocks, 0);                 /* 0 blocks at the end: fine */
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = read16(f, 1, f->nblocks + 1, 0);
	assert_sense(c, 5, 0x21, 0x00);
	/* RDPROTECT / WRPROTECT: no protection information. */
	cdb_rw10(r10, 0x28, 0x20, 0, 1);
	c = run(f->lu, 1, r10, 10, NULL, 0, bs);
	assert_sense(c, 5, 0x24, 0x00);
	assert_int_equal(c.sense[15], 0xcf);
	assert_int_equal(c.sense[17], 1);
	c = write16(f, 1, 0, 1, data, 0x20);
	assert_sense(c, 5, 0x24, 0x00);
	/* Too short a data-out buffer. */
	cdb_rw10(w10, 0x2a, 0, 0, 2);
	c = run(f->lu, 1, w10, 10, data, bs, 0);
	assert_sense(c, 5, 0x1a, 0x00);
	/* A shorter data-in buffer than the CDB asks for: filled up to it. */
	cdb_rw10(r10, 0x28, 0, 5, 4);
	c = run(f->lu, 1, r10, 10, NULL, 0, bs);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(c.data_in_len, bs);
	assert_int_equal(inbuf[0], data[0] ^ 0xff);   /* WRITE(6) wrote it before the flip */
	assert_memory_equal(inbuf + 1, data + 1, bs - 1);
	free(data);
}

static void test_fua_and_sync_cache(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint8_t *data = calloc(1, f->bs);
	data[0] = 1;
	flush_count = 0;
	struct scsi_cmd c = write16(f, 1, 0, 1, data, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(flush_count, 0);                /* write-back cache */
	c = write16(f, 1, 0, 1, data, 0x08);             /* FUA */
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(flush_count, 1);
	uint8_t w10[10];
	cdb_rw10(w10, 0x2a, 0x08, 1, 1);
	c = run(f->lu, 1, w10, 10, data, f->bs, 0);
	assert_int_equal(flush_count, 2);
	/* WRITE AND VERIFY is durable too; WRITE(6) has no FUA. */
	uint8_t wv[10];
	cdb_rw10(wv, 0x2e, 0x02, 2, 1);
	c = run(f->lu, 1, wv, 10, data, f->bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(flush_count, 3);
	uint8_t w6[6] = { 0x0a, 0, 0, 3, 1, 0 };
	c = run(f->lu, 1, w6, 6, data, f->bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(flush_count, 3);
	flush_count = 2;
	uint8_t sc10[10] = { 0x35 };
	c = run(f->lu, 1, sc10, 10, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(flush_count, 3);
	uint8_t sc16[16] = { 0x91 };
	be64(sc16 + 2, 10);
	be32(sc16 + 10, 10);
	c = run(f->lu, 1, sc16, 16, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(flush_count, 4);
	be64(sc16 + 2, f->nblocks);
	be32(sc16 + 10, 1);
	c = run(f->lu, 1, sc16, 16, NULL, 0, 0);
	assert_sense(c, 5, 0x21, 0x00);
	assert_int_equal(flush_count, 4);
	free(data);
}

static void test_verify(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint32_t bs = f->bs;
	uint8_t *data = malloc(2 * bs);
	memset(data, 0x5a, 2 * bs);
	write16(f, 1, 8, 2, data, 0);
	uint8_t v10[10];
	cdb_rw10(v10, 0x2f, 0x00, 8, 2);              /* BYTCHK=0 */
	struct scsi_cmd c = run(f->lu, 1, v10, 10, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	cdb_rw10(v10, 0x2f, 0x02, 8, 2);              /* BYTCHK=1 */
	c = run(f->lu, 1, v10, 10, data, 2 * bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	data[bs + 3] = 0;
	c = run(f->lu, 1, v10, 10, data, 2 * bs, 0);
	assert_sense(c, 0x0e, 0x1d, 0x00);
	assert_int_equal(c.sense[0], 0xf0);           /* VALID: INFORMATION set */
	assert_int_equal(rd32(c.sense + 3), bs + 3);
	uint8_t v16[16];
	cdb_rw16(v16, 0x8f, 0x06, 8, 2);              /* BYTCHK=3: one block for all */
	c = run(f->lu, 1, v16, 16, data, bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	cdb_rw16(v16, 0x8f, 0x04, 8, 2);              /* BYTCHK=2: reserved */
	c = run(f->lu, 1, v16, 16, data, bs, 0);
	assert_sense(c, 5, 0x24, 0x00);
	cdb_rw16(v16, 0x8f, 0, f->nblocks, 1);
	c = run(f->lu, 1, v16, 16, NULL, 0, 0);
	assert_sense(c, 5, 0x21, 0x00);
	free(data);
}

static void test_zero_writes_are_zero_extents(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint32_t bs = f->bs;
	uint32_t n = (64u << 10) / bs;               /* 64 KiB */
	uint8_t *data = malloc(n * bs);
	memset(data, 0xab, n * bs);
	assert_int_equal(write16(f, 1, 0, n, data, 0).status, SCSI_STATUS_GOOD);
	assert_int_equal(vol_snap_create(f->vol, "s1"), 0);
	/* A zero-filled WRITE, WRITE SAME of zeros, UNMAP: all zero ranges. */
	memset(data, 0, n * bs);
	assert_int_equal(write16(f, 1, 0, 4096 / bs, data, 0).status, SCSI_STATUS_GOOD);
	uint8_t ws[16];
	cdb_rw16(ws, 0x93, 0, 4096 / bs, 4096 / bs);
	struct scsi_cmd c = run(f->lu, 1, ws, 16, data, bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	uint8_t um[10] = { 0x42 };
	be16(um + 7, 24);
	uint8_t pl[24] = { 0 };
	be16(pl, 22);
	be16(pl + 2, 16);
	be64(pl + 8, 2 * 4096 / bs);
	be32(pl + 16, 4096 / bs);
	c = run(f->lu, 1, um, 10, pl, 24, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	struct diffacc a = diff_since(f, "s1");
	assert_int_equal(a.zero_bytes, 3 * 4096);
	assert_int_equal(a.data_bytes, 0);
	c = read16(f, 1, 0, n);
	for (uint32_t i = 0; i < 3 * 4096; i++)
		assert_int_equal(inbuf[i], 0);
	assert_int_equal(inbuf[3 * 4096], 0xab);
	free(data);
}

static void test_write_same(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint32_t bs = f->bs;
	uint8_t *pat = malloc(bs);
	for (uint32_t i = 0; i < bs; i++)
		pat[i] = (uint8_t)i;
	uint8_t ws10[10];
	cdb_rw10(ws10, 0x41, 0, 100, 5);
	struct scsi_cmd c = run(f->lu, 1, ws10, 10, pat, bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = read16(f, 1, 100, 5);
	for (int i = 0; i < 5; i++)
		assert_memory_equal(inbuf + i * bs, pat, bs);
	/* UNMAP deallocates even with a non-zero pattern (LBPRZ: zeros). */
	cdb_rw10(ws10, 0x41, 0x08, 101, 2);
	c = run(f->lu, 1, ws10, 10, pat, bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = read16(f, 1, 100, 4);
	assert_memory_equal(inbuf, pat, bs);
	for (uint32_t i = bs; i < 3 * bs; i++)
		assert_int_equal(inbuf[i], 0);
	assert_memory_equal(inbuf + 3 * bs, pat, bs);
	/* More data than the one block WRITE SAME takes. */
	uint8_t *two = calloc(2, bs);
	cdb_rw10(ws10, 0x41, 0, 0, 1);
	c = run(f->lu, 1, ws10, 10, two, 2 * bs, 0);
	assert_sense(c, 5, 0x24, 0x00);
	free(two);
	/* NDOB + UNMAP deallocates (a 4 KiB-aligned range, so no partial
	 * block has to keep data). */
	cdb_rw10(ws10, 0x41, 0, 96, 16);
	assert_int_equal(run(f->lu, 1, ws10, 10, pat, bs, 0).status, SCSI_STATUS_GOOD);
	assert_int_equal(vol_snap_create(f->vol, "s"), 0);
	uint8_t ws16[16];
	cdb_rw16(ws16, 0x93, 0x09, 96, 16);
	c = run(f->lu, 1, ws16, 16, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = read16(f, 1, 96, 16);
	for (uint32_t i = 0; i < 16 * bs; i++)
		assert_int_equal(inbuf[i], 0);
	struct diffacc a = diff_since(f, "s");
	assert_int_equal(a.data_bytes, 0);
	assert_true(a.zero_bytes > 0);
	/* Beyond the end, ANCHOR, WRPROTECT, missing data. */
	cdb_rw16(ws16, 0x93, 0, f->nblocks - 1, 2);
	c = run(f->lu, 1, ws16, 16, pat, bs, 0);
	assert_sense(c, 5, 0x21, 0x00);
	cdb_rw16(ws16, 0x93, 0x18, 0, 1);
	c = run(f->lu, 1, ws16, 16, pat, bs, 0);
	assert_sense(c, 5, 0x24, 0x00);
	cdb_rw10(ws10, 0x41, 0x20, 0, 1);
	c = run(f->lu, 1, ws10, 10, pat, bs, 0);
	assert_sense(c, 5, 0x24, 0x00);
	cdb_rw10(ws10, 0x41, 0, 0, 1);
	c = run(f->lu, 1, ws10, 10, pat, bs / 2, 0);
	assert_sense(c, 5, 0x1a, 0x00);
	/* 0 blocks = to the end of the LU (WSNZ=0). */
	cdb_rw16(ws16, 0x93, 0x08, f->nblocks - 3, 0);
	memset(pat, 0, bs);
	c = run(f->lu, 1, ws16, 16, pat, bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	free(pat);
}

static void test_unmap_validation(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint32_t bs = f->bs;
	uint8_t *data = malloc(8 * bs);
	memset(data, 0x11, 8 * bs);
	write16(f, 1, 0, 8, data, 0);
	uint8_t um[10] = { 0x42 };
	uint8_t pl[8 + 16 * 2] = { 0 };
	/* Parameter list shorter than its header. */
	be16(um + 7, 6);
	struct scsi_cmd c = run(f->lu, 1, um, 10, pl, 6, 0);
	assert_sense(c, 5, 0x1a, 0x00);
	/* Block descriptor length beyond the list. */
	be16(um + 7, 24);
	be16(pl, 22);
	be16(pl + 2, 32);
	c = run(f->lu, 1, um, 10, pl, 24, 0);
	assert_sense(c, 5, 0x26, 0x00);
	assert_int_equal(c.sense[15], 0x80);        /* SKSV, parameter list */
	assert_int_equal(c.sense[17], 2);
	/* One descriptor in range, one out: nothing is unmapped. */
	be16(um + 7, sizeof(pl));
	be16(pl, sizeof(pl) - 2);
	be16(pl + 2, 32);
	be64(pl + 8, 0);
	be32(pl + 16, 1);
	be64(pl + 24, f->nblocks - 1);
	be32(pl + 32, 2);
	c = run(f->lu, 1, um, 10, pl, sizeof(pl), 0);
	assert_sense(c, 5, 0x21, 0x00);
	c = read16(f, 1, 0, 1);
	assert_int_equal(inbuf[0], 0x11);
	/* ANCHOR is not supported. */
	um[1] = 1;
	c = run(f->lu, 1, um, 10, pl, sizeof(pl), 0);
	assert_sense(c, 5, 0x24, 0x00);
	um[1] = 0;
	/* Zero length list: nothing to do. */
	be16(um + 7, 0);
	c = run(f->lu, 1, um, 10, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	/* Valid: both descriptors in range. */
	be16(um + 7, sizeof(pl));
	be64(pl + 24, 4);
	be32(pl + 32, 2);
	c = run(f->lu, 1, um, 10, pl, sizeof(pl), 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = read16(f, 1, 0, 8);
	assert_int_equal(inbuf[0], 0);
	assert_int_equal(inbuf[bs], 0x11);
	assert_int_equal(inbuf[4 * bs], 0);
	assert_int_equal(inbuf[5 * bs + bs - 1], 0);
	assert_int_equal(inbuf[6 * bs], 0x11);
	free(data);
}

static void test_get_lba_status(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint32_t bs = f->bs;
	uint32_t per4k = 4096 / bs;
	uint8_t *data = malloc(4096);
	memset(data, 0x77, 4096);
	/* Data at 4 KiB blocks 1 and 2; the rest never written. */
	write16(f, 1, per4k, per4k, data, 0);
	write16(f, 1, 2 * per4k, per4k, data, 0);
	uint8_t g[16] = { 0x9e, 0x12 };
	be64(g + 2, 0);
	be32(g + 10, 8 + 16 * 8);
	struct scsi_cmd c = run(f->lu, 1, g, 16, NULL, 0, 8 + 16 * 8);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_true(c.data_in_len >= 8 + 3 * 16);
	uint8_t *d = inbuf + 8;
	assert_int_equal(rd64(d), 0);
	assert_int_equal(rd32(d + 8), per4k);
	assert_int_equal(d[12], 1);                    /* deallocated */
	assert_int_equal(rd64(d + 16), per4k);
	assert_int_equal(rd32(d + 24), 2 * per4k);
	assert_int_equal(d[28], 0);                    /* mapped */
	assert_int_equal(rd64(d + 32), 3 * per4k);
	assert_int_equal(d[44], 1);
	/* After an UNMAP of block 1 the run splits. */
	uint8_t um[10] = { 0x42 };
	uint8_t pl[24] = { 0 };
	be16(um + 7, 24);
	be16(pl, 22);
	be16(pl + 2, 16);
	be64(pl + 8, per4k);
	be32(pl + 16, per4k);
	assert_int_equal(run(f->lu, 1, um, 10, pl, 24, 0).status, SCSI_STATUS_GOOD);
	be64(g + 2, per4k);
	c = run(f->lu, 1, g, 16, NULL, 0, 8 + 16 * 8);
	assert_int_equal(rd64(d), per4k);
	assert_int_equal(rd32(d + 8), per4k);
	assert_int_equal(d[12], 1);
	assert_int_equal(rd64(d + 16), 2 * per4k);
	assert_int_equal(d[28], 0);
	/* Truncation by allocation length: the header still says how long. */
	be32(g + 10, 24);
	be64(g + 2, 0);
	c = run(f->lu, 1, g, 16, NULL, 0, 24);
	assert_int_equal(c.data_in_len, 24);
	/* Beyond the end. */
	be64(g + 2, f->nblocks);
	c = run(f->lu, 1, g, 16, NULL, 0, 24);
	assert_sense(c, 5, 0x21, 0x00);
	free(data);
}

static void test_compare_and_write(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint32_t bs = f->bs;
	uint8_t *buf = calloc(2, 2 * bs);
	/* Unwritten blocks compare equal to zeros. */
	memset(buf + 2 * bs, 0x42, 2 * bs);
	uint8_t caw[16] = { 0x89 };
	be64(caw + 2, 10);
	caw[13] = 2;
	struct scsi_cmd c = run(f->lu, 1, caw, 16, buf, 4 * bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = read16(f, 1, 10, 2);
	assert_int_equal(inbuf[0], 0x42);
	assert_int_equal(inbuf[2 * bs - 1], 0x42);
	/* Miscompare: offset of the first differing byte, no write. */
	memset(buf, 0x42, 2 * bs);
	buf[bs + 9] = 0;
	memset(buf + 2 * bs, 0x43, 2 * bs);
	c = run(f->lu, 1, caw, 16, buf, 4 * bs, 0);
	assert_sense(c, 0x0e, 0x1d, 0x00);
	assert_int_equal(rd32(c.sense + 3), bs + 9);
	c = read16(f, 1, 10, 2);
	assert_int_equal(inbuf[0], 0x42);
	/* Wrong data-out size; too many blocks; FUA flushes. */
	c = run(f->lu, 1, caw, 16, buf, 3 * bs, 0);
	assert_sense(c, 5, 0x1a, 0x00);
	caw[13] = 0;
	c = run(f->lu, 1, caw, 16, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = run(f->lu, 1, caw, 16, buf, 4 * bs, 0);    /* 0 blocks but data */
	assert_sense(c, 5, 0x24, 0x00);
	caw[13] = 129;                                  /* above the limit */
	c = run(f->lu, 1, caw, 16, NULL, 0, 0);
	assert_sense(c, 5, 0x24, 0x00);
	assert_int_equal(c.sense[17], 13);
	be64(caw + 2, f->nblocks - 1);
	caw[13] = 2;
	c = run(f->lu, 1, caw, 16, buf, 4 * bs, 0);
	assert_sense(c, 5, 0x21, 0x00);
	be64(caw + 2, 10);
	caw[1] = 0x08;
	memset(buf, 0x42, 2 * bs);
	flush_count = 0;
	c = run(f->lu, 1, caw, 16, buf, 4 * bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(flush_count, 1);
	free(buf);
}

/* COMPARE AND WRITE as an atomic increment from several threads: a lost
 * update would leave the counter short. */
struct caw_thread {
	struct fx *f;
	uint64_t nexus;
	int iters;
	int done;
};

static void *caw_worker(void *arg)
{
	struct caw_thread *t = arg;
	struct fx *f = t->f;
	uint32_t bs = f->bs;
	uint8_t *buf = malloc(2 * bs);
	uint8_t *rd = malloc(bs);
	uint8_t cdb[16] = { 0x89 };
	be64(cdb + 2, 0);
	cdb[13] = 1;
	uint8_t r16[16];
	cdb_rw16(r16, 0x88, 0, 0, 1);
	while (t->done < t->iters) {
		struct scsi_cmd c;
		memset(&c, 0, sizeof(c));
		c.cdb = r16;
		c.cdb_len = 16;
		c.nexus = t->nexus;
		c.data_in = rd;
		c.data_in_cap = bs;
		scsi_lu_exec(f->lu, &c);
		if (c.status != SCSI_STATUS_GOOD)
			continue;
		uint32_t v = rd32(rd);
		memcpy(buf, rd, bs);
		memcpy(buf + bs, rd, bs);
		be32(buf + bs, v + 1);
		memset(&c, 0, sizeof(c));
		c.cdb = cdb;
		c.cdb_len = 16;
		c.nexus = t->nexus;
		c.data_out = buf;
		c.data_out_len = 2 * bs;
		scsi_lu_exec(f->lu, &c);
		if (c.status == SCSI_STATUS_GOOD)
			t->done++;
	}
	free(buf);
	free(rd);
	return NULL;
}

static void test_compare_and_write_atomic(void **state)
{
	struct fx *f = *state;
	enum { N = 4, ITERS = 200 };
	pthread_t th[N];
	struct caw_thread t[N];
	for (int i = 0; i < N; i++) {
		t[i] = (struct caw_thread){ f, (uint64_t)(10 + i), ITERS, 0 };
		attach(f->lu, t[i].nexus);
	}
	for (int i = 0; i < N; i++)
		assert_int_equal(pthread_create(&th[i], NULL, caw_worker, &t[i]), 0);
	for (int i = 0; i < N; i++)
		pthread_join(th[i], NULL);
	struct scsi_cmd c = read16(f, 10, 0, 1);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(rd32(inbuf), N * ITERS);
}

static void test_orwrite(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint32_t bs = f->bs;
	uint8_t *d = malloc(bs);
	memset(d, 0x0f, bs);
	write16(f, 1, 3, 1, d, 0);
	memset(d, 0xf0, bs);
	uint8_t ow[16];
	cdb_rw16(ow, 0x8b, 0, 3, 1);
	struct scsi_cmd c = run(f->lu, 1, ow, 16, d, bs, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = read16(f, 1, 3, 1);
	assert_int_equal(inbuf[0], 0xff);
	assert_int_equal(inbuf[bs - 1], 0xff);
	free(d);
}

static void test_mode_sense_select(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	/* MODE SENSE(6), all pages, with block descriptor. */
	uint8_t ms6[6] = { 0x1a, 0, 0x3f, 0, 255, 0 };
	struct scsi_cmd c = run(f->lu, 1, ms6, 6, NULL, 0, 255);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	size_t total = 4 + 8 + 12 + 20 + 12 + 12;
	assert_int_equal(c.data_in_len, total);
	assert_int_equal(inbuf[0], total - 1);
	assert_int_equal(inbuf[2], 0x10);                /* DPOFUA, not WP */
	assert_int_equal(inbuf[3], 8);
	assert_int_equal(rd32(inbuf + 4), f->nblocks);
	assert_int_equal(rd32(inbuf + 8) & 0xffffff, f->bs);
	assert_int_equal(inbuf[12], 0x01);
	assert_int_equal(inbuf[24], 0x08);
	assert_int_equal(inbuf[24 + 2], 0x04);           /* WCE */
	assert_int_equal(inbuf[44], 0x0a);
	assert_int_equal(inbuf[56], 0x1c);
	/* DBD, caching page only, changeable values. */
	uint8_t ms10[10] = { 0x5a, 0x08, 0x48, 0, 0, 0, 0, 0, 255, 0 };
	c = run(f->lu, 1, ms10, 10, NULL, 0, 255);
	assert_int_equal(c.data_in_len, 8 + 20);
	assert_int_equal(inbuf[1], 8 + 20 - 2);
	assert_int_equal(inbuf[7], 0);
	assert_int_equal(inbuf[8], 0x08);
	assert_int_equal(inbuf[10], 0x04);
	/* PC=saved: saving is not supported. */
	ms6[2] = 0xc8;
	c = run(f->lu, 1, ms6, 6, NULL, 0, 255);
	assert_sense(c, 5, 0x39, 0x00);
	/* Unknown page, bad subpage. */
	ms6[2] = 0x05;
	c = run(f->lu, 1, ms6, 6, NULL, 0, 255);
	assert_sense(c, 5, 0x24, 0x00);
	ms6[2] = 0x08;
	ms6[3] = 0x01;
	c = run(f->lu, 1, ms6, 6, NULL, 0, 255);
	assert_sense(c, 5, 0x24, 0x00);

	attach(f->lu, 2);
	/* MODE SELECT(6): caching page with WCE=0 -> writes flush. */
	uint8_t pl[4 + 20] = { 0 };
	pl[4] = 0x08;
	pl[5] = 0x12;
	uint8_t sel6[6] = { 0x15, 0x10, 0, 0, sizeof(pl), 0 };
	flush_count = 0;
	c = run(f->lu, 1, sel6, 6, pl, sizeof(pl), 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	ms6[2] = 0x08;
	ms6[3] = 0;
	ms6[1] = 0x08;
	c = run(f->lu, 1, ms6, 6, NULL, 0, 255);
	assert_int_equal(inbuf[4 + 2] & 0x04, 0);
	int before = flush_count;
	uint8_t *d = calloc(1, f->bs);
	d[0] = 9;
	c = write16(f, 1, 0, 1, d, 0);
	assert_int_equal(flush_count, before + 1);
	/* Nexus 2 is told the mode parameters changed, once. */
	uint8_t tur[6] = { 0 };
	c = run(f->lu, 2, tur, 6, NULL, 0, 0);
	assert_sense(c, 6, 0x2a, 0x01);
	c = run(f->lu, 2, tur, 6, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	/* Changing a bit that is not changeable: field pointer to it. */
	pl[4 + 2] = 0x01;                            /* RCD */
	c = run(f->lu, 1, sel6, 6, pl, sizeof(pl), 0);
	assert_sense(c, 5, 0x26, 0x00);
	assert_int_equal(c.sense[15], 0x80);
	assert_int_equal(c.sense[17], 6);
	/* Wrong page length. */
	pl[4 + 2] = 0x04;
	pl[5] = 0x10;
	c = run(f->lu, 1, sel6, 6, pl, sizeof(pl), 0);
	assert_sense(c, 5, 0x26, 0x00);
	/* SP=1 */
	sel6[1] = 0x11;
	pl[5] = 0x12;
	c = run(f->lu, 1, sel6, 6, pl, sizeof(pl), 0);
	assert_sense(c, 5, 0x24, 0x00);
	/* MODE SELECT(10) of the control page with SWP: writes are refused. */
	uint8_t pl10[8 + 12] = { 0 };
	pl10[8] = 0x0a;
	pl10[9] = 0x0a;
	pl10[11] = 0x10;
	pl10[12] = 0x08;
	pl10[16] = 0xff;
	pl10[17] = 0xff;
	uint8_t sel10[10] = { 0x55, 0x10, 0, 0, 0, 0, 0, 0, sizeof(pl10), 0 };
	c = run(f->lu, 1, sel10, 10, pl10, sizeof(pl10), 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = write16(f, 1, 0, 1, d, 0);
	assert_sense(c, 7, 0x27, 0x02);
	ms6[2] = 0x0a;
	c = run(f->lu, 1, ms6, 6, NULL, 0, 255);
	assert_int_equal(inbuf[2] & 0x80, 0x80);       /* WP in the header */
	pl10[12] = 0;
	c = run(f->lu, 1, sel10, 10, pl10, sizeof(pl10), 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = write16(f, 1, 0, 1, d, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	free(d);
}

static void test_misc_commands(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint8_t ssu[6] = { 0x1b, 0, 0, 0, 0x01, 0 };
	struct scsi_cmd c = run(f->lu, 1, ssu, 6, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	ssu[4] = 0x00;                                /* STOP: flushes */
	flush_count = 0;
	c = run(f->lu, 1, ssu, 6, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(flush_count, 1);
	ssu[4] = 0x40;                                /* reserved power condition */
	c = run(f->lu, 1, ssu, 6, NULL, 0, 0);
	assert_sense(c, 5, 0x24, 0x00);
	uint8_t pa[6] = { 0x1e, 0, 0, 0, 1, 0 };
	c = run(f->lu, 1, pa, 6, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	uint8_t pf[10];
	cdb_rw10(pf, 0x34, 0, 0, 8);
	c = run(f->lu, 1, pf, 10, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	cdb_rw10(pf, 0x34, 0, (uint32_t)f->nblocks, 1);
	c = run(f->lu, 1, pf, 10, NULL, 0, 0);
	assert_sense(c, 5, 0x21, 0x00);
	/* REPORT LUNS answered by the target. */
	uint8_t rl[12] = { 0xa0 };
	be32(rl + 6, 64);
	struct scsi_cmd t;
	memset(&t, 0, sizeof(t));
	t.cdb = rl;
	t.cdb_len = 12;
	t.data_in = inbuf;
	t.data_in_cap = 64;
	uint64_t luns[2] = { 0, 3 };
	scsi_report_luns(luns, 2, &t);
	assert_int_equal(t.status, SCSI_STATUS_GOOD);
	assert_int_equal(t.data_in_len, 24);
	assert_int_equal(rd32(inbuf), 16);
	assert_int_equal(inbuf[16 + 1], 3);
	be32(rl + 6, 8);
	scsi_report_luns(luns, 2, &t);
	assert_int_equal(t.status, SCSI_STATUS_CHECK_CONDITION);
	/* A LUN that does not exist. */
	uint8_t inq[6] = { 0x12, 0, 0, 0, 36, 0 };
	memset(&t, 0, sizeof(t));
	t.cdb = inq;
	t.cdb_len = 6;
	t.data_in = inbuf;
	t.data_in_cap = 36;
	scsi_no_lun(&t);
	assert_int_equal(t.status, SCSI_STATUS_GOOD);
	assert_int_equal(inbuf[0], 0x7f);
	uint8_t tur[6] = { 0 };
	t.cdb = tur;
	scsi_no_lun(&t);
	assert_sense(t, 5, 0x25, 0x00);
}

static void test_report_supported_opcodes(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	uint8_t cdb[12] = { 0xa3, 0x0c, 0x00 };
	be32(cdb + 6, 4096);
	struct scsi_cmd c = run(f->lu, 1, cdb, 12, NULL, 0, 4096);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	uint32_t len = rd32(inbuf);
	assert_int_equal(len % 8, 0);
	assert_int_equal(c.data_in_len, len + 4);
	bool saw_caw = false, saw_rc16 = false;
	for (uint32_t o = 4; o < len + 4; o += 8) {
		if (inbuf[o] == 0x89)
			saw_caw = inbuf[o + 7] == 16;
		if (inbuf[o] == 0x9e && inbuf[o + 3] == 0x10)
			saw_rc16 = (inbuf[o + 5] & 1) == 1;
	}
	assert_true(saw_caw);
	assert_true(saw_rc16);
	/* With timeouts descriptors: 20 bytes each. */
	cdb[2] = 0x80;
	c = run(f->lu, 1, cdb, 12, NULL, 0, 4096);
	assert_int_equal(rd32(inbuf) % 20, 0);
	/* One command: READ(10). */
	cdb[2] = 0x01;
	cdb[3] = 0x28;
	c = run(f->lu, 1, cdb, 12, NULL, 0, 4096);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(inbuf[1] & 7, 3);
	assert_int_equal(inbuf[3], 10);
	assert_int_equal(inbuf[4], 0x28);
	/* One command with a service action: READ CAPACITY(16). */
	cdb[2] = 0x02;
	cdb[3] = 0x9e;
	be16(cdb + 4, 0x10);
	c = run(f->lu, 1, cdb, 12, NULL, 0, 4096);
	assert_int_equal(inbuf[1] & 7, 3);
	assert_int_equal(inbuf[3], 16);
	assert_int_equal(inbuf[5] & 0x1f, 0x10);
	/* Reporting option 1 on an opcode with service actions. */
	cdb[2] = 0x01;
	c = run(f->lu, 1, cdb, 12, NULL, 0, 4096);
	assert_sense(c, 5, 0x24, 0x00);
	/* Not supported: support = 1. */
	cdb[3] = 0x04;
	c = run(f->lu, 1, cdb, 12, NULL, 0, 4096);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(inbuf[1] & 7, 1);
}

static void test_read_only_lu(void **state)
{
	struct fx *f = *state;
	uint32_t bs = f->bs;
	uint8_t *d = malloc(2 * bs);
	memset(d, 0x33, 2 * bs);
	attach(f->lu, 1);
	write16(f, 1, 0, 1, d, 0);
	assert_int_equal(vol_snap_create(f->vol, "snap"), 0);
	struct scsi_lu *ro;
	struct scsi_lu_params lp = { .vol = f->vol, .snap = "snap", .serial = "S" };
	assert_int_equal(scsi_lu_create(&lp, &ro), 0);
	attach(ro, 1);
	uint8_t cdbs[][16] = {
		{ 0x0a, 0, 0, 0, 1, 0 },
		{ 0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0 },
		{ 0xaa, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0 },
		{ 0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0 },
		{ 0x2e, 0, 0, 0, 0, 0, 0, 0, 1, 0 },
		{ 0xae, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0 },
		{ 0x8e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0 },
		{ 0x41, 0, 0, 0, 0, 0, 0, 0, 1, 0 },
		{ 0x93, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0 },
		{ 0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0 },
		{ 0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0 },
		{ 0x8b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0 },
	};
	static const uint8_t want[18] = { 0x70, 0, 0x07, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x27, 0x00, 0, 0, 0, 0 };
	for (size_t i = 0; i < sizeof(cdbs) / sizeof(cdbs[0]); i++) {
		struct scsi_cmd c = run(ro, 1, cdbs[i], 16, d, 2 * bs, 0);
		assert_int_equal(c.status, SCSI_STATUS_CHECK_CONDITION);
		assert_memory_equal(c.sense, want, 18);
	}
	/* Reads see the snapshot, not later writes to the head. */
	memset(d, 0x44, bs);
	write16(f, 1, 0, 1, d, 0);
	uint8_t r16[16];
	cdb_rw16(r16, 0x88, 0, 0, 1);
	struct scsi_cmd c = run(ro, 1, r16, 16, NULL, 0, bs);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(inbuf[0], 0x33);
	/* Mode sense reports WP; a snapshot LU cannot be made writable. */
	uint8_t ms6[6] = { 0x1a, 0x08, 0x3f, 0, 255, 0 };
	c = run(ro, 1, ms6, 6, NULL, 0, 255);
	assert_int_equal(inbuf[2] & 0x80, 0x80);
	scsi_lu_set_read_only(ro, false);
	c = run(ro, 1, cdbs[3], 16, d, bs, 0);
	assert_sense(c, 7, 0x27, 0x00);
	scsi_lu_destroy(ro);
	/* The head LU switched to read-only at run time and back. */
	scsi_lu_set_read_only(f->lu, true);
	c = write16(f, 1, 0, 1, d, 0);
	assert_sense(c, 7, 0x27, 0x00);
	scsi_lu_set_read_only(f->lu, false);
	c = write16(f, 1, 0, 1, d, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	free(d);
}

static void test_reserve_release(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	attach(f->lu, 2);
	uint8_t res[6] = { 0x16 }, rel[6] = { 0x17 };
	struct scsi_cmd c = run(f->lu, 1, res, 6, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = run(f->lu, 1, res, 6, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = run(f->lu, 2, res, 6, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_RESERVATION_CONFLICT);
	assert_int_equal(c.sense_len, 0);
	c = read16(f, 2, 0, 1);
	assert_int_equal(c.status, SCSI_STATUS_RESERVATION_CONFLICT);
	uint8_t ms6[6] = { 0x1a, 0, 0x3f, 0, 255, 0 };
	c = run(f->lu, 2, ms6, 6, NULL, 0, 255);
	assert_int_equal(c.status, SCSI_STATUS_RESERVATION_CONFLICT);
	uint8_t inq[6] = { 0x12, 0, 0, 0, 36, 0 };
	c = run(f->lu, 2, inq, 6, NULL, 0, 36);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = run(f->lu, 2, rel, 6, NULL, 0, 0);          /* a no-op */
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = read16(f, 2, 0, 1);
	assert_int_equal(c.status, SCSI_STATUS_RESERVATION_CONFLICT);
	c = read16(f, 1, 0, 1);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	/* The holder's nexus going away releases it. */
	scsi_lu_nexus_gone(f->lu, 1);
	c = read16(f, 2, 0, 1);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	/* RESERVE(10) / RELEASE(10), and a LUN reset releases too. */
	attach(f->lu, 1);
	uint8_t res10[10] = { 0x56 }, rel10[10] = { 0x57 };
	c = run(f->lu, 2, res10, 10, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = read16(f, 1, 0, 1);
	assert_int_equal(c.status, SCSI_STATUS_RESERVATION_CONFLICT);
	c = run(f->lu, 2, rel10, 10, NULL, 0, 0);
	c = read16(f, 1, 0, 1);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = run(f->lu, 2, res10, 10, NULL, 0, 0);
	scsi_lu_reset(f->lu);
	c = read16(f, 1, 0, 1);
	assert_sense(c, 6, 0x29, 0x03);
	c = read16(f, 1, 0, 1);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
}

/* ---- persistent reservations ------------------------------------------- */
static struct scsi_cmd prout(struct fx *f, uint64_t nexus, uint8_t sa, uint8_t type, uint64_t key, uint64_t sakey)
{
	static uint8_t pl[24];
	static uint8_t cdb[10];
	memset(pl, 0, sizeof(pl));
	memset(cdb, 0, sizeof(cdb));
	cdb[0] = 0x5f;
	cdb[1] = sa;
	cdb[2] = type;
	be32(cdb + 5, 24);
	be64(pl, key);
	be64(pl + 8, sakey);
	return run(f->lu, nexus, cdb, 10, pl, 24, 0);
}

static struct scsi_cmd prin(struct fx *f, uint64_t nexus, uint8_t sa)
{
	static uint8_t cdb[10];
	memset(cdb, 0, sizeof(cdb));
	cdb[0] = 0x5e;
	cdb[1] = sa;
	be16(cdb + 7, 1024);
	return run(f->lu, nexus, cdb, 10, NULL, 0, 1024);
}

static bool can_read(struct fx *f, uint64_t nexus)
{
	return read16(f, nexus, 0, 1).status == SCSI_STATUS_GOOD;
}

static bool can_write(struct fx *f, uint64_t nexus)
{
	static uint8_t blk[4096];
	return write16(f, nexus, 0, 1, blk, 0).status == SCSI_STATUS_GOOD;
}

static void test_pr_register_and_keys(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	attach(f->lu, 2);
	struct scsi_cmd c = prin(f, 1, 0x02);          /* REPORT CAPABILITIES */
	assert_int_equal(c.data_in_len, 8);
	assert_int_equal(inbuf[1], 8);
	assert_int_equal(inbuf[3] & 0x81, 0x80);        /* TMV, PTPL_A=0 */
	assert_int_equal(inbuf[4], 0xea);
	assert_int_equal(inbuf[5], 0x01);
	c = prin(f, 1, 0x00);
	assert_int_equal(rd32(inbuf + 4), 0);
	uint32_t gen0 = rd32(inbuf);
	assert_int_equal(prout(f, 1, 0x00, 0, 0, 0xaa).status, SCSI_STATUS_GOOD);
	assert_int_equal(prout(f, 2, 0x00, 0, 0, 0xbb).status, SCSI_STATUS_GOOD);
	/* Registering again with a wrong current key: conflict. */
	assert_int_equal(prout(f, 1, 0x00, 0, 0x12, 0xcc).status, SCSI_STATUS_RESERVATION_CONFLICT);
	c = prin(f, 1, 0x00);
	assert_int_equal(rd32(inbuf), gen0 + 2);
	assert_int_equal(rd32(inbuf + 4), 16);
	assert_int_equal(rd64(inbuf + 8), 0xaa);
	assert_int_equal(rd64(inbuf + 16), 0xbb);
	/* REGISTER AND IGNORE EXISTING KEY replaces. */
	assert_int_equal(prout(f, 1, 0x06, 0, 0x999, 0xa1).status, SCSI_STATUS_GOOD);
	c = prin(f, 1, 0x00);
	assert_int_equal(rd64(inbuf + 8), 0xa1);
	/* Unregister. */
	assert_int_equal(prout(f, 2, 0x00, 0, 0xbb, 0).status, SCSI_STATUS_GOOD);
	c = prin(f, 1, 0x00);
	assert_int_equal(rd32(inbuf + 4), 8);
	/* An unregistered nexus may not reserve; bad lengths and flags. */
	assert_int_equal(prout(f, 2, 0x01, 1, 0, 0).status, SCSI_STATUS_RESERVATION_CONFLICT);
	uint8_t cdb[10] = { 0x5f, 0x00 };
	be32(cdb + 5, 20);
	uint8_t pl[24] = { 0 };
	c = run(f->lu, 1, cdb, 10, pl, 20, 0);
	assert_sense(c, 5, 0x1a, 0x00);
	be32(cdb + 5, 24);
	pl[20] = 0x01;                                 /* APTPL */
	c = run(f->lu, 1, cdb, 10, pl, 24, 0);
	assert_sense(c, 5, 0x26, 0x00);
	/* Unknown PR IN service action. */
	c = prin(f, 1, 0x04);
	assert_sense(c, 5, 0x24, 0x00);
	/* Invalid type, wrong scope. */
	c = prout(f, 1, 0x01, 2, 0xa1, 0);
	assert_sense(c, 5, 0x24, 0x00);
	c = prout(f, 1, 0x01, 0x11, 0xa1, 0);
	assert_sense(c, 5, 0x24, 0x00);
}

static void test_pr_access_types(void **state)
{
	struct fx *f = *state;
	/* nexus 1 holder, 2 registered, 3 not registered */
	attach(f->lu, 1);
	attach(f->lu, 2);
	attach(f->lu, 3);
	assert_int_equal(prout(f, 1, 0x00, 0, 0, 0x1).status, SCSI_STATUS_GOOD);
	assert_int_equal(prout(f, 2, 0x00, 0, 0, 0x2).status, SCSI_STATUS_GOOD);
	static const struct {
		uint8_t type;
		bool reg_read, reg_write, un_read, un_write;
	} cases[] = {
		{ 1, true, false, true, false },     /* WE */
		{ 3, false, false, false, false },   /* EA */
		{ 5, true, true, true, false },      /* WE-RO */
		{ 6, true, true, false, false },     /* EA-RO */
		{ 7, true, true, true, false },      /* WE-AR */
		{ 8, true, true, false, false },     /* EA-AR */
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct scsi_cmd c = prout(f, 1, 0x01, cases[i].type, 0x1, 0);
		assert_int_equal(c.status, SCSI_STATUS_GOOD);
		/* Reserving again with the same type is fine, another is not. */
		assert_int_equal(prout(f, 1, 0x01, cases[i].type, 0x1, 0).status, SCSI_STATUS_GOOD);
		assert_int_equal(prout(f, 1, 0x01, cases[i].type == 1 ? 3 : 1, 0x1, 0).status,
		                 SCSI_STATUS_RESERVATION_CONFLICT);
		c = prin(f, 3, 0x01);                     /* READ RESERVATION */
		assert_int_equal(rd32(inbuf + 4), 16);
		assert_int_equal(rd64(inbuf + 8), cases[i].type >= 7 ? 0 : 1);
		assert_int_equal(inbuf[21], cases[i].type);
		assert_true(can_read(f, 1));
		assert_true(can_write(f, 1));
		assert_int_equal(can_read(f, 2), cases[i].reg_read);
		assert_int_equal(can_write(f, 2), cases[i].reg_write);
		assert_int_equal(can_read(f, 3), cases[i].un_read);
		assert_int_equal(can_write(f, 3), cases[i].un_write);
		/* TEST UNIT READY and INQUIRY are always allowed. */
		uint8_t tur[6] = { 0 };
		assert_int_equal(run(f->lu, 3, tur, 6, NULL, 0, 0).status, SCSI_STATUS_GOOD);
		/* A non-holder's RELEASE is a no-op (for AR types nexus 2 is a
		 * holder, so it uses the holder path below). */
		if (cases[i].type < 7) {
			assert_int_equal(prout(f, 2, 0x02, cases[i].type, 0x2, 0).status, SCSI_STATUS_GOOD);
			assert_int_equal(can_write(f, 3), cases[i].un_write);
		}
		/* Releasing with the wrong type. */
		c = prout(f, 1, 0x02, cases[i].type == 1 ? 3 : 1, 0x1, 0);
		assert_sense(c, 5, 0x26, 0x04);
		assert_int_equal(prout(f, 1, 0x02, cases[i].type, 0x1, 0).status, SCSI_STATUS_GOOD);
		c = prin(f, 3, 0x01);
		assert_int_equal(rd32(inbuf + 4), 0);
		assert_true(can_write(f, 3));
		/* RO / AR releases tell the other registrants. */
		if (cases[i].type >= 5) {
			c = read16(f, 2, 0, 1);
			assert_sense(c, 6, 0x2a, 0x04);
		}
	}
	/* RESERVE(6) while registrations exist: conflict. */
	uint8_t res[6] = { 0x16 };
	assert_int_equal(run(f->lu, 3, res, 6, NULL, 0, 0).status, SCSI_STATUS_RESERVATION_CONFLICT);
}

static void test_pr_preempt_and_clear(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	attach(f->lu, 2);
	attach(f->lu, 3);
	assert_int_equal(prout(f, 1, 0x00, 0, 0, 0x1).status, SCSI_STATUS_GOOD);
	assert_int_equal(prout(f, 2, 0x00, 0, 0, 0x2).status, SCSI_STATUS_GOOD);
	assert_int_equal(prout(f, 3, 0x00, 0, 0, 0x3).status, SCSI_STATUS_GOOD);
	assert_int_equal(prout(f, 1, 0x01, 3, 0x1, 0).status, SCSI_STATUS_GOOD);   /* EA */
	assert_false(can_read(f, 2));
	/* Nexus 2 preempts the holder: 1 loses registration and reservation. */
	struct scsi_cmd c = prout(f, 2, 0x04, 1, 0x2, 0x1);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	c = read16(f, 1, 0, 1);
	assert_sense(c, 6, 0x2a, 0x05);                  /* registrations preempted */
	/* The type changed (EA -> WE): the remaining registrant is told. */
	c = prin(f, 3, 0x01);
	assert_sense(c, 6, 0x2a, 0x04);
	c = prin(f, 3, 0x01);
	assert_int_equal(rd64(inbuf + 8), 0x2);
	assert_int_equal(inbuf[21], 1);
	c = prin(f, 3, 0x00);
	assert_int_equal(rd32(inbuf + 4), 16);
	assert_true(can_read(f, 1));
	assert_false(can_write(f, 1));
	/* Preempting a key nobody has: conflict; a zero key when not the
	 * holder's: invalid field. */
	assert_int_equal(prout(f, 3, 0x04, 1, 0x3, 0x77).status, SCSI_STATUS_RESERVATION_CONFLICT);
	c = prout(f, 3, 0x05, 1, 0x3, 0);
	assert_sense(c, 5, 0x26, 0x00);
	/* PREEMPT AND ABORT of a registration only. */
	assert_int_equal(prout(f, 2, 0x05, 1, 0x2, 0x3).status, SCSI_STATUS_GOOD);
	c = prin(f, 2, 0x00);
	assert_int_equal(rd32(inbuf + 4), 8);
	/* CLEAR from the only registrant left. */
	assert_int_equal(prout(f, 1, 0x00, 0, 0, 0x1).status, SCSI_STATUS_GOOD);
	assert_int_equal(prout(f, 2, 0x03, 0, 0x2, 0).status, SCSI_STATUS_GOOD);
	c = prin(f, 2, 0x00);
	assert_int_equal(rd32(inbuf + 4), 0);
	c = prin(f, 2, 0x01);
	assert_int_equal(rd32(inbuf + 4), 0);
	c = read16(f, 1, 0, 1);
	assert_sense(c, 6, 0x2a, 0x03);                  /* reservations preempted */
	c = read16(f, 3, 0, 1);
	assert_sense(c, 6, 0x2a, 0x05);                  /* from the PREEMPT AND ABORT */
	assert_true(can_write(f, 3));
}

static void test_pr_read_full_status(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	attach(f->lu, 2);
	/* Nexus 1 registers with its port name, nexus 2 without. */
	uint8_t cdb[10] = { 0x5f, 0x00 };
	be32(cdb + 5, 24);
	uint8_t pl[24] = { 0 };
	be64(pl + 8, 0xabc);
	struct scsi_cmd c;
	memset(&c, 0, sizeof(c));
	c.cdb = cdb;
	c.cdb_len = 10;
	c.nexus = 1;
	c.initiator = "iqn.2026-11.test:a,i,0x230000000001";
	c.data_out = pl;
	c.data_out_len = 24;
	scsi_lu_exec(f->lu, &c);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(prout(f, 2, 0x00, 0, 0, 0xdef).status, SCSI_STATUS_GOOD);
	assert_int_equal(prout(f, 1, 0x01, 5, 0xabc, 0).status, SCSI_STATUS_GOOD);
	c = prin(f, 2, 0x03);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	uint32_t add = rd32(inbuf + 4);
	assert_int_equal(c.data_in_len, 8 + add);
	const uint8_t *e = inbuf + 8;
	assert_int_equal(rd64(e), 0xabc);
	assert_int_equal(e[12], 0x01);                   /* R_HOLDER */
	assert_int_equal(e[13], 5);
	uint32_t tl = rd32(e + 20);
	assert_int_equal(tl % 4, 0);
	assert_int_equal(e[24], 0x45);                   /* iSCSI, name + ISID */
	assert_string_equal((const char *)e + 28, "iqn.2026-11.test:a,i,0x230000000001");
	e += 24 + tl;
	assert_int_equal(rd64(e), 0xdef);
	assert_int_equal(e[12], 0);
	assert_int_equal(e[24], 0x05);
	assert_string_equal((const char *)e + 28, "unknown-nexus-2");
	assert_int_equal(8 + add, (size_t)(e + 24 + rd32(e + 20) - inbuf));
}

static void test_cdb_xfer(void **state)
{
	enum scsi_dir dir;
	uint32_t len;
	uint8_t w10[10];
	cdb_rw10(w10, 0x2a, 0, 0, 8);
	assert_int_equal(scsi_cdb_xfer(w10, 10, 512, &dir, &len), 0);
	assert_int_equal(dir, SCSI_DIR_WRITE);
	assert_int_equal(len, 4096);
	uint8_t r6[6] = { 0x08, 0, 0, 0, 0, 0 };
	assert_int_equal(scsi_cdb_xfer(r6, 6, 512, &dir, &len), 0);
	assert_int_equal(dir, SCSI_DIR_READ);
	assert_int_equal(len, 256 * 512);
	uint8_t caw[16] = { 0x89 };
	caw[13] = 3;
	assert_int_equal(scsi_cdb_xfer(caw, 16, 4096, &dir, &len), 0);
	assert_int_equal(len, 6 * 4096);
	uint8_t ws[16] = { 0x93, 0x01 };
	assert_int_equal(scsi_cdb_xfer(ws, 16, 4096, &dir, &len), 0);
	assert_int_equal(dir, SCSI_DIR_NONE);
	uint8_t v[10];
	cdb_rw10(v, 0x2f, 0x02, 0, 2);
	assert_int_equal(scsi_cdb_xfer(v, 10, 512, &dir, &len), 0);
	assert_int_equal(len, 1024);
	uint8_t tur[6] = { 0 };
	assert_int_equal(scsi_cdb_xfer(tur, 6, 512, &dir, &len), 0);
	assert_int_equal(dir, SCSI_DIR_NONE);
	uint8_t bad[6] = { 0x04 };
	assert_int_equal(scsi_cdb_xfer(bad, 6, 512, &dir, &len), -EINVAL);
	assert_int_equal(scsi_cdb_xfer(w10, 6, 512, &dir, &len), -EINVAL);
}

/* A grown volume: every nexus gets CAPACITY DATA HAS CHANGED once, and
 * READ CAPACITY reports the new size (SBC-3 4.6). */
static void test_capacity_change(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	attach(f->lu, 2);
	uint8_t tur[6] = { 0 }, rc16[16] = { 0x9e, 0x10 };
	be32(rc16 + 10, 32);
	assert_int_equal(vol_resize(f->vol, 2 * VOL_SIZE), 0);
	for (uint64_t nx = 1; nx <= 2; nx++) {
		struct scsi_cmd c = run(f->lu, nx, tur, 6, NULL, 0, 0);
		assert_sense(c, 6, 0x2a, 0x09);
		c = run(f->lu, nx, tur, 6, NULL, 0, 0);
		assert_int_equal(c.status, SCSI_STATUS_GOOD);
	}
	struct scsi_cmd c = run(f->lu, 1, rc16, 16, NULL, 0, 32);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	assert_int_equal(rd64(inbuf), 2 * f->nblocks - 1);
	/* the new blocks are there */
	uint8_t r10[10] = { 0x28 };
	be32(r10 + 2, (uint32_t)(2 * f->nblocks - 1));
	r10[8] = 1;
	c = run(f->lu, 1, r10, 10, NULL, 0, f->bs);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
	/* no second attention for the same size */
	c = run(f->lu, 2, tur, 6, NULL, 0, 0);
	assert_int_equal(c.status, SCSI_STATUS_GOOD);
}

/* Counters and the latency histogram per class of command. */
static void test_io_stats(void **state)
{
	struct fx *f = *state;
	attach(f->lu, 1);
	struct scsi_lu_stats st;
	scsi_lu_stats(f->lu, &st);
	assert_int_equal(st.op[SCSI_OPC_READ].ops, 0);
	uint8_t *data = calloc(1, 8 * f->bs);
	data[0] = 1;
	uint8_t w10[10] = { 0x2a }, r10[10] = { 0x28 }, sc[10] = { 0x35 };
	w10[8] = 8;
	r10[8] = 8;
	for (int i = 0; i < 3; i++)
		assert_int_equal(run(f->lu, 1, w10, 10, data, 8 * f->bs, 0).status, SCSI_STATUS_GOOD);
	for (int i = 0; i < 5; i++)
		assert_int_equal(run(f->lu, 1, r10, 10, NULL, 0, 8 * f->bs).status, SCSI_STATUS_GOOD);
	assert_int_equal(run(f->lu, 1, sc, 10, NULL, 0, 0).status, SCSI_STATUS_GOOD);
	scsi_lu_stats(f->lu, &st);
	assert_int_equal(st.op[SCSI_OPC_WRITE].ops, 3);
	assert_int_equal(st.op[SCSI_OPC_WRITE].bytes, 3 * 8 * f->bs);
	assert_int_equal(st.op[SCSI_OPC_READ].ops, 5);
	assert_int_equal(st.op[SCSI_OPC_READ].bytes, 5 * 8 * f->bs);
	assert_int_equal(st.op[SCSI_OPC_FLUSH].ops, 1);
	assert_int_equal(st.op[SCSI_OPC_UNMAP].ops, 0);
	/* the second TUR of attach() executed; its power-on UA did not */
	assert_int_equal(st.op[SCSI_OPC_OTHER].ops, 1);
	for (unsigned k = 0; k < SCSI_OPC_N; k++) {
		uint64_t n = 0;
		for (unsigned b = 0; b <= SCSI_LAT_BUCKETS; b++)
			n += st.op[k].lat[b];
		assert_int_equal(n, st.op[k].ops);
		assert_true(st.op[k].ops == 0 || st.op[k].lat_ns > 0);
	}
	assert_string_equal(scsi_op_class_name(SCSI_OPC_UNMAP), "unmap");
	for (unsigned b = 1; b < SCSI_LAT_BUCKETS; b++)
		assert_true(scsi_lat_bounds[b] > scsi_lat_bounds[b - 1]);
	free(data);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup512, teardown)
#define T4(fn) cmocka_unit_test_setup_teardown(fn, setup4k, teardown)

int main(void)
{
	log_set_level(LOG_ERROR);
	const struct CMUnitTest tests[] = {
		T(test_unit_attention_power_on),
		T(test_invalid_opcode_and_fields),
		T(test_inquiry),
		T4(test_inquiry),
		T(test_read_capacity),
		T4(test_read_capacity),
		T(test_read_write_all_sizes),
		T4(test_read_write_all_sizes),
		T(test_fua_and_sync_cache),
		T(test_verify),
		T(test_zero_writes_are_zero_extents),
		T4(test_zero_writes_are_zero_extents),
		T(test_write_same),
		T4(test_write_same),
		T(test_unmap_validation),
		T(test_get_lba_status),
		T4(test_get_lba_status),
		T(test_compare_and_write),
		T(test_compare_and_write_atomic),
		T(test_orwrite),
		T(test_mode_sense_select),
		T(test_misc_commands),
		T(test_report_supported_opcodes),
		T(test_read_only_lu),
		T(test_reserve_release),
		T(test_pr_register_and_keys),
		T(test_pr_access_types),
		T(test_pr_preempt_and_clear),
		T(test_pr_read_full_status),
		T(test_capacity_change),
		T4(test_capacity_change),
		T(test_io_stats),
		cmocka_unit_test(test_cdb_xfer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
