/* scsi: SCSI block device semantics (SPC-4 / SBC-3) for a thin-provisioned
 * logical unit backed by a store volume (or a snapshot of one).
 *
 * This module knows nothing of sockets or iSCSI: a transport hands it a
 * CDB plus the data-out bytes and gets back status, sense and data-in.
 * scsi_lu_exec() does blocking disk I/O: call it from a worker thread,
 * never from a network loop.
 */
#ifndef FERRY_SCSI_H
#define FERRY_SCSI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct scsi_lu;

struct scsi_lu_params {
	struct vol *vol;       /* borrowed: the caller keeps it open while the LU lives */
	const char *snap;      /* NULL = the head; a snapshot is always read-only */
	bool read_only;        /* writes fail with DATA PROTECT / WRITE PROTECTED */
	const char *serial;    /* unit serial number (VPD 0x80); copied */
	const uint8_t *naa;    /* 8 bytes: NAA 6-style id for VPD 0x83 (stable per volume) */
};

/* Creates a logical unit.  Caller owns *out and frees it with
 * scsi_lu_destroy() (after every command on it has completed). */
int scsi_lu_create(const struct scsi_lu_params *p, struct scsi_lu **out);
void scsi_lu_destroy(struct scsi_lu *lu);
/* Changes write protection at run time (e.g. a pair being demoted). */
void scsi_lu_set_read_only(struct scsi_lu *lu, bool ro);

enum scsi_dir { SCSI_DIR_NONE = 0, SCSI_DIR_READ = 1, SCSI_DIR_WRITE = 2 };

/* I/O statistics per logical unit, for metrics.  Commands are counted
 * when they execute (not those refused by a unit attention or a
 * reservation conflict); bytes are what crossed the transport (data-in
 * plus data-out); latency is the execution time in the LU (from the
 * worker taking the command to its status), in a histogram whose bucket
 * i counts the commands that took at most scsi_lat_bounds[i] seconds and
 * more than the bound before (the last bucket: more than every bound). */
enum scsi_op_class {
	SCSI_OPC_READ,     /* READ(6..16) */
	SCSI_OPC_WRITE,    /* WRITE, WRITE AND VERIFY, WRITE SAME, COMPARE AND WRITE, ORWRITE */
	SCSI_OPC_UNMAP,    /* UNMAP */
	SCSI_OPC_FLUSH,    /* SYNCHRONIZE CACHE */
	SCSI_OPC_OTHER,    /* everything else */
	SCSI_OPC_N
};
#define SCSI_LAT_BUCKETS 14
extern const double scsi_lat_bounds[SCSI_LAT_BUCKETS];
/* "read", "write", "unmap", "flush", "other" */
const char *scsi_op_class_name(enum scsi_op_class c);

struct scsi_op_stats {
	uint64_t ops;
	uint64_t bytes;
	uint64_t lat_ns;                         /* sum of the latencies */
	uint64_t lat[SCSI_LAT_BUCKETS + 1];      /* per bucket, not cumulative */
};
struct scsi_lu_stats {
	struct scsi_op_stats op[SCSI_OPC_N];
};
/* Copies the counters out without a lock (each value is read atomically;
 * a command completing meanwhile may be in some of them and not others). */
void scsi_lu_stats(const struct scsi_lu *lu, struct scsi_lu_stats *out);

/* SCSI status codes. */
#define SCSI_STATUS_GOOD 0x00
#define SCSI_STATUS_CHECK_CONDITION 0x02
#define SCSI_STATUS_CONDITION_MET 0x04
#define SCSI_STATUS_BUSY 0x08
#define SCSI_STATUS_RESERVATION_CONFLICT 0x18
#define SCSI_STATUS_TASK_SET_FULL 0x28
#define SCSI_STATUS_TASK_ABORTED 0x40

#define SCSI_SENSE_MAX 96

struct scsi_cmd {
	/* in */
	const uint8_t *cdb;
	uint8_t cdb_len;
	uint64_t nexus;            /* identifies the I_T nexus (initiator port) for
	                              reservations and unit attentions */
	const char *initiator;     /* optional (NULL = unknown): the initiator port's
	                              name, "IQN,i,0xISID" or just the IQN; only
	                              read by PERSISTENT RESERVE OUT registrations,
	                              for the TransportIDs of READ FULL STATUS */
	const uint8_t *data_out;   /* the initiator's data, data_out_len bytes */
	uint32_t data_out_len;
	uint8_t *data_in;          /* transport's buffer for data to the initiator */
	uint32_t data_in_cap;      /* its size (the expected transfer length) */
	/* out */
	uint32_t data_in_len;      /* bytes of data_in filled (<= data_in_cap) */
	uint8_t status;
	uint8_t sense[SCSI_SENSE_MAX];
	uint8_t sense_len;
};

/* Direction and length of the data the CDB describes (for a WRITE: the
 * bytes the transport must collect before executing).  block_size is the
 * LU's logical block size.  Returns 0 or -EINVAL for an opcode it does not
 * know (the transport then still calls scsi_lu_exec, which answers with
 * ILLEGAL REQUEST). */
int scsi_cdb_xfer(const uint8_t *cdb, size_t cdb_len, uint32_t block_size,
                  enum scsi_dir *dir, uint32_t *xfer_len);
uint32_t scsi_lu_block_size(const struct scsi_lu *lu);

/* Executes one command.  Blocking; thread-safe (commands on one LU may run
 * concurrently from several workers). */
void scsi_lu_exec(struct scsi_lu *lu, struct scsi_cmd *cmd);

/* True for the READ opcodes (6, 10, 12, 16), whose data a transport may
 * stream in pieces: scsi_lu_exec() with a data_in_cap shorter than the
 * transfer runs the command (every check, then the first data_in_cap
 * bytes), and scsi_lu_read_more() fetches the rest piece by piece. */
bool scsi_cdb_is_read(const uint8_t *cdb, size_t cdb_len);
/* Continues a READ that scsi_lu_exec() admitted and answered GOOD: fills
 * data_in with at most data_in_cap bytes of the command's transfer from
 * byte offset off on (a multiple of the block size).  Makes none of the
 * command's checks again (SAM: a command is admitted once); a read error
 * ends it with CHECK CONDITION like scsi_lu_exec() would.  Blocking. */
void scsi_lu_read_more(struct scsi_lu *lu, struct scsi_cmd *cmd, uint32_t off);

/* REPORT LUNS is answered by the target, not a LU: fills cmd from the
 * list of LUN numbers (single-level LUN format). */
void scsi_report_luns(const uint64_t *luns, size_t n, struct scsi_cmd *cmd);
/* Answers a command addressed to a LUN that does not exist (ILLEGAL
 * REQUEST / LOGICAL UNIT NOT SUPPORTED, or INQUIRY with PQ=3). */
void scsi_no_lun(struct scsi_cmd *cmd);

/* Task management effects. */
void scsi_lu_reset(struct scsi_lu *lu);              /* LUN RESET / TARGET RESET */
void scsi_lu_nexus_gone(struct scsi_lu *lu, uint64_t nexus); /* session ended */

#endif
