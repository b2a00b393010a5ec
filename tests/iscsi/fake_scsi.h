/* A RAM-disk stand-in for the SCSI layer (tests only). */
#ifndef FERRY_TESTS_FAKE_SCSI_H
#define FERRY_TESTS_FAKE_SCSI_H
#include "scsi/scsi.h"

/* Caller frees with fake_lu_destroy(). */
struct scsi_lu *fake_lu_create(uint64_t size, uint32_t bs, unsigned delay_ms, uint8_t id);
void fake_lu_destroy(struct scsi_lu *lu);
uint64_t fake_lu_resets(struct scsi_lu *lu);
const uint8_t *fake_lu_data(struct scsi_lu *lu);

/* What the last scsi_lu_exec() on a LU was handed. */
struct fake_seen {
	uint64_t cmds;            /* scsi_lu_exec calls so far */
	uint8_t cdb[16];
	uint8_t cdb_len;
	uint64_t nexus;
	char initiator[256];      /* "" when cmd.initiator was NULL */
	uint32_t data_out_len;
};
void fake_lu_seen(struct scsi_lu *lu, struct fake_seen *out);
/* While on, every WRITE gets RESERVATION CONFLICT (as if another nexus
 * held a reservation): stands for the SCSI layer's access checks. */
void fake_lu_set_conflict(struct scsi_lu *lu, bool on);
/* scsi_lu_nexus_gone calls so far, and the nexus of the last one. */
uint64_t fake_lu_nexus_gone(struct scsi_lu *lu, uint64_t *last);
#endif
