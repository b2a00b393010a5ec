/* libFuzzer target: the iSCSI PDU codec.  The first byte picks the digest
 * settings; the rest is a byte stream parsed PDU by PDU, as the server's
 * receive path does, including CDB assembly and LUN decoding. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "iscsi/pdu.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct iscsi_digests dg = { .header = data[0] & 1, .data = (data[0] >> 1) & 1 };
	uint32_t max_dlen = (data[0] & 4) ? 8192 : 262144;
	data++;
	size--;
	size_t off = 0;
	while (off < size) {
		struct iscsi_pdu_view v;
		long n = iscsi_pdu_parse(data + off, size - off, &dg, max_dlen, &v);
		if (n <= 0)
			break;
		if (v.opcode == ISCSI_OP_SCSI_CMD) {
			uint8_t cdb[260];
			(void)iscsi_cdb_assemble(&v, cdb, sizeof(cdb));
		}
		const uint8_t *p;
		uint32_t pl;
		(void)iscsi_ahs_find(v.ahs, v.ahs_len, 2, &p, &pl);
		uint8_t lun[8];
		iscsi_lun_encode(iscsi_lun_decode(v.bhs + 8) & 0x3fff, lun);
		/* rebuilding the PDU must give a parseable one of the same shape */
		uint8_t bhs[ISCSI_BHS_LEN], out[ISCSI_BHS_LEN + 4 + 16384 + 8];
		memcpy(bhs, v.bhs, ISCSI_BHS_LEN);
		if (v.dlen <= 16384) {
			long b = iscsi_pdu_build(out, sizeof(out), bhs, v.data, v.dlen, &dg);
			if (b > 0) {
				struct iscsi_pdu_view w;
				if (iscsi_pdu_parse(out, (size_t)b, &dg, max_dlen, &w) != b ||
				    w.dlen != v.dlen || (v.dlen && memcmp(w.data, v.data, v.dlen)))
					__builtin_trap();
			}
		}
		off += (size_t)n;
	}
	return 0;
}
