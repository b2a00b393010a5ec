/* Private to src/scsi: the logical unit's state shared by the command
 * handlers (scsi.c), the mode pages (scsi_mode.c) and reservations /
 * unit attentions (scsi_pr.c). */
#ifndef FERRY_SCSI_INT_H
#define FERRY_SCSI_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "scsi/scsi.h"

/* Sense keys (SPC-4 table 48). */
#define SK_NO_SENSE 0x0
#define SK_NOT_READY 0x2
#define SK_MEDIUM_ERROR 0x3
#define SK_HARDWARE_ERROR 0x4
#define SK_ILLEGAL_REQUEST 0x5
#define SK_UNIT_ATTENTION 0x6
#define SK_DATA_PROTECT 0x7
#define SK_ABORTED_COMMAND 0xb
#define SK_MISCOMPARE 0xe

/* Additional sense codes (ASC << 8 | ASCQ). */
#define ASC_NONE 0x0000
#define ASC_PARAM_LIST_LENGTH 0x1a00
#define ASC_INVALID_OPCODE 0x2000
#define ASC_LBA_OUT_OF_RANGE 0x2100
#define ASC_INVALID_FIELD_CDB 0x2400
#define ASC_LUN_NOT_SUPPORTED 0x2500
#define ASC_INVALID_FIELD_PARAM 0x2600
#define ASC_WRITE_PROTECTED 0x2700
#define ASC_SW_WRITE_PROTECTED 0x2702
#define ASC_SPACE_ALLOC_FAILED 0x2707
#define ASC_POWER_ON_RESET 0x2900
#define ASC_BUS_DEVICE_RESET 0x2903
#define ASC_I_T_NEXUS_LOSS 0x2907
#define ASC_MODE_PARAMS_CHANGED 0x2a01
#define ASC_CAPACITY_CHANGED 0x2a09
#define ASC_RESERVATIONS_PREEMPTED 0x2a03
#define ASC_RESERVATIONS_RELEASED 0x2a04
#define ASC_REGISTRATIONS_PREEMPTED 0x2a05
#define ASC_SAVING_NOT_SUPPORTED 0x3900
#define ASC_MISCOMPARE_VERIFY 0x1d00
#define ASC_WRITE_ERROR 0x0c00
#define ASC_READ_ERROR 0x1100
#define ASC_INTERNAL_FAILURE 0x4400
#define ASC_INSUFFICIENT_REG_RES 0x5504

#define PR_MAX_REGS 64
#define UA_MAX_NEXUS 256

#define PR_NAME_MAX 256

struct pr_reg {
	uint64_t nexus;
	uint64_t key;
	char name[PR_NAME_MAX]; /* initiator port name at registration ("" = unknown) */
};

/* Per I_T nexus state: pending unit attentions (a small FIFO of codes). */
struct nexus_state {
	uint64_t nexus;
	uint16_t ua[4];
	uint8_t n_ua;
};

struct scsi_lu {
	struct vol *vol;
	char *snap;
	atomic_bool read_only;
	char serial[65];
	uint8_t naa[8];
	uint32_t block_size;
	/* Follows the volume's size: checked against vol_size() under mu by
	 * every command, which then raises CAPACITY DATA HAS CHANGED. */
	_Atomic uint64_t nblocks;
	uint32_t object_size;
	bool zero_exact;     /* the store knows zeros from metadata (caps) */

	/* COMPARE AND WRITE / ORWRITE take it exclusively, every other
	 * write shared, so a read-compare-write never interleaves with a
	 * write to the same blocks. */
	pthread_rwlock_t io_lock;

	/* Read on every write without the lock; changed under mu. */
	atomic_bool wce;    /* caching page: write-back cache enabled */
	atomic_bool swp;    /* control page: software write protect */

	pthread_mutex_t mu; /* everything below */
	bool dexcpt;        /* informational exceptions: disabled */
	uint8_t mrie;

	/* SPC-2 RESERVE/RELEASE */
	bool res2_held;
	uint64_t res2_nexus;

	/* SPC-4 persistent reservations (not persisted across restarts:
	 * PTPL is not supported and REPORT CAPABILITIES says so). */
	struct pr_reg regs[PR_MAX_REGS];
	size_t n_regs;
	uint32_t pr_generation;
	bool pr_held;
	uint64_t pr_holder;  /* nexus; meaningless for the all-registrants types */
	uint8_t pr_type;

	struct nexus_state nx[UA_MAX_NEXUS];
	size_t n_nx;

	/* I/O statistics (scsi_lu_stats): relaxed atomics, so that reading
	 * them takes no lock the commands wait on. */
	struct {
		atomic_uint_fast64_t ops, bytes, lat_ns;
		atomic_uint_fast64_t lat[SCSI_LAT_BUCKETS + 1];
	} st[SCSI_OPC_N];
};

/* scsi.c: sense data helpers. */
void scsi_sense(struct scsi_cmd *c, uint8_t key, uint16_t asc);
/* ILLEGAL REQUEST with a sense-key specific field pointer: in_cdb selects
 * CDB vs parameter list, bit < 0 means no bit pointer. */
void scsi_sense_field(struct scsi_cmd *c, uint16_t asc, bool in_cdb, uint16_t byte, int bit);
void scsi_put_data(struct scsi_cmd *c, const void *buf, size_t len);

static inline uint16_t get_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t get_be24(const uint8_t *p) { return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2]; }
static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t get_be64(const uint8_t *p) { return (uint64_t)get_be32(p) << 32 | get_be32(p + 4); }
static inline void put_be16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void put_be64(uint8_t *p, uint64_t v) { put_be32(p, (uint32_t)(v >> 32)); put_be32(p + 4, (uint32_t)v); }

/* scsi_mode.c */
void scsi_mode_sense(struct scsi_lu *lu, struct scsi_cmd *c);
void scsi_mode_select(struct scsi_lu *lu, struct scsi_cmd *c);

/* scsi_pr.c.  Access classes for the reservation checks. */
enum scsi_access { ACC_ALWAYS, ACC_READ, ACC_WRITE };
/* Under lu->mu: registers the nexus on first sight (power-on UA) and
 * reports a pending unit attention or a reservation conflict into c.
 * Returns true when the command may go on. */
bool scsi_admit(struct scsi_lu *lu, struct scsi_cmd *c, enum scsi_access acc, bool report_ua);
void scsi_request_sense(struct scsi_lu *lu, struct scsi_cmd *c);
void scsi_pr_in(struct scsi_lu *lu, struct scsi_cmd *c);
void scsi_pr_out(struct scsi_lu *lu, struct scsi_cmd *c);
void scsi_reserve(struct scsi_lu *lu, struct scsi_cmd *c);
void scsi_release(struct scsi_lu *lu, struct scsi_cmd *c);
/* Under lu->mu: queues a unit attention for every known nexus but skip. */
void scsi_ua_all(struct scsi_lu *lu, uint16_t asc, uint64_t skip, bool use_skip);

#endif
