/* libFuzzer target for the SCSI layer's CDB and parameter-list parsing
 * (src/scsi): random CDBs plus data-out bytes run against a logical unit on
 * a small temporary volume, as an initiator's commands arrive over iSCSI.
 *
 * Input layout: byte 0 flags (bits 0-1 nexus, bit 2 the read-only LU, bit 3
 * LUN reset first, bit 4 nexus loss after, bit 5 addressed to a missing
 * LUN), byte 1 CDB length, bytes 2-3
 * data-in buffer size (big endian, at most 64 KiB), then the CDB, then the
 * data-out bytes.
 *
 * Properties checked: no crash or memory error; the answer is well formed
 * (data-in within the buffer, a known status, fixed-format sense exactly
 * when CHECK CONDITION); scsi_cdb_xfer agrees with the CDB length rules. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "scsi/scsi.h"
#include "store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[64];
static struct store *g_store;
static struct vol *g_vol;
static struct scsi_lu *g_lu, *g_ro;

static void cleanup(void)
{
	scsi_lu_destroy(g_lu);
	scsi_lu_destroy(g_ro);
	if (g_vol)
		vol_close(g_vol);
	if (g_store)
		store_close(g_store);
	if (g_dir[0])
		rm_rf(g_dir);
}

static void init_once(void)
{
	if (g_lu)
		return;
	log_set_level(LOG_ERROR);
	snprintf(g_dir, sizeof(g_dir), "/tmp/ferry-fuzz-scsi-XXXXXX");
	if (!mkdtemp(g_dir))
		abort();
	struct vol_params p = { .size = 1u << 20, .object_size = 64u << 10, .block_size = 512 };
	if (store_open(g_dir, &g_store) < 0 || store_vol_create(g_store, "f", &p) < 0 ||
	    vol_open(g_store, "f", &g_vol) < 0)
		abort();
	struct scsi_lu_params lp = { .vol = g_vol, .serial = "FUZZ" };
	if (scsi_lu_create(&lp, &g_lu) < 0)
		abort();
	lp.read_only = true;
	if (scsi_lu_create(&lp, &g_ro) < 0)
		abort();
	atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t in[64u << 10];
	init_once();
	if (size < 4)
		return 0;
	uint8_t flags = data[0];
	size_t cdb_len = data[1] % 17;
	uint32_t cap = (uint32_t)(data[2] << 8 | data[3]);
	if (cap > sizeof(in))
		cap = sizeof(in);
	data += 4;
	size -= 4;
	if (cdb_len > size)
		cdb_len = size;
	struct scsi_lu *lu = (flags & 4) ? g_ro : g_lu;
	uint64_t nexus = flags & 3;
	if (flags & 8)
		scsi_lu_reset(lu);

	struct scsi_cmd c;
	memset(&c, 0, sizeof(c));
	c.cdb = cdb_len ? data : NULL;
	c.cdb_len = (uint8_t)cdb_len;
	c.nexus = nexus;
	c.data_out = size > cdb_len ? data + cdb_len : NULL;
	c.data_out_len = (uint32_t)(size - cdb_len);
	c.data_in = in;
	c.data_in_cap = cap;
	if (flags & 32)
		scsi_no_lun(&c);
	else if (cdb_len && data[0] == 0xa0)
		scsi_report_luns((const uint64_t[]){ 0, 1, 300 }, 3, &c);
	else
		scsi_lu_exec(lu, &c);

	if (c.data_in_len > cap)
		abort();
	if (c.sense_len > SCSI_SENSE_MAX)
		abort();
	switch (c.status) {
	case SCSI_STATUS_GOOD:
	case SCSI_STATUS_RESERVATION_CONFLICT:
		if (c.sense_len)
			abort();
		break;
	case SCSI_STATUS_CHECK_CONDITION:
		if (c.sense_len < 18 || (c.sense[0] & 0x7f) != 0x70 || c.data_in_len)
			abort();
		break;
	default:
		abort();
	}

	enum scsi_dir dir;
	uint32_t xfer;
	if (cdb_len && scsi_cdb_xfer(data, cdb_len, 512, &dir, &xfer) == 0) {
		if ((dir == SCSI_DIR_NONE) != (xfer == 0))
			abort();
	}
	if (flags & 16)
		scsi_lu_nexus_gone(lu, nexus);
	return 0;
}
