/* A client that cannot cheat, for the group cut test (group_cut.sh) and
 * the group benchmark: over iSCSI (libiscsi, its own sessions), write
 * record n to LUN 1, wait for the acknowledgement, then write record n to
 * LUN 2, for n = 1, 2, ... until STOPFILE exists.  Record n is one 512-byte
 * block holding n (u64, little endian) 64 times, at block (n - 1) mod
 * SLOTS: the volumes are rings, so the writer can run as long as the test
 * wants.  Prints the last n written to both LUNs at the end.
 *
 *   group_writer PORTAL IQN1 IQN2 SLOTS STOPFILE
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* libiscsi's headers, by full path (CMakeLists.txt says why) */
#include LIBISCSI_H
#include LIBISCSI_LL_H

#define BLK 512u

static struct iscsi_context *login(const char *portal, const char *iqn)
{
	struct iscsi_context *c = iscsi_create_context("iqn.2026-11.io.ferry:test-group-writer");
	if (!c)
		return NULL;
	iscsi_set_targetname(c, iqn);
	iscsi_set_session_type(c, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(c, ISCSI_HEADER_DIGEST_NONE);
	if (iscsi_full_connect_sync(c, portal, 0) != 0) {
		fprintf(stderr, "group_writer: login to %s %s: %s\n", portal, iqn, iscsi_get_error(c));
		iscsi_destroy_context(c);
		return NULL;
	}
	return c;
}

static int put(struct iscsi_context *c, uint64_t lba, unsigned char *b)
{
	struct scsi_task *t = iscsi_write16_sync(c, 0, lba, b, BLK, BLK, 0, 0, 0, 0, 0);
	if (!t) {
		fprintf(stderr, "group_writer: write: %s\n", iscsi_get_error(c));
		return -1;
	}
	int ok = t->status == SCSI_STATUS_GOOD;
	if (!ok)
		fprintf(stderr, "group_writer: write status %d: %s\n", t->status, iscsi_get_error(c));
	scsi_free_scsi_task(t);
	return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: group_writer PORTAL IQN1 IQN2 SLOTS STOPFILE\n");
		return 2;
	}
	uint64_t slots = strtoull(argv[4], NULL, 10);
	struct iscsi_context *c1 = login(argv[1], argv[2]), *c2 = login(argv[1], argv[3]);
	if (!c1 || !c2 || !slots)
		return 1;
	unsigned char b[BLK];
	uint64_t n, done = 0;
	int rc = 0;
	for (n = 1; access(argv[5], F_OK) != 0; n++) {
		for (unsigned i = 0; i < BLK; i += 8)
			for (unsigned k = 0; k < 8; k++)
				b[i + k] = (unsigned char)(n >> (8 * k));
		uint64_t lba = (n - 1) % slots;
		if (put(c1, lba, b) || put(c2, lba, b)) {
			rc = 1;
			break;
		}
		done = n;
	}
	printf("%" PRIu64 "\n", done);
	iscsi_logout_sync(c1);
	iscsi_logout_sync(c2);
	iscsi_destroy_context(c1);
	iscsi_destroy_context(c2);
	return rc;
}
