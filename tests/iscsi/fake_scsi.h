/* A RAM-disk stand-in for the SCSI layer (tests only). */
#ifndef FERRY_TESTS_FAKE_SCSI_H
#define FERRY_TESTS_FAKE_SCSI_H
#include "scsi/scsi.h"

/* Caller frees with fake_lu_destroy(). */
struct scsi_lu *fake_lu_create(uint64_t size, uint32_t bs, unsigned delay_ms, uint8_t id);
void fake_lu_destroy(struct scsi_lu *lu);
uint64_t fake_lu_resets(struct scsi_lu *lu);
const uint8_t *fake_lu_data(struct scsi_lu *lu);
#endif
