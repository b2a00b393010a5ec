/* A minimal iSCSI target for conformance runs: one thin volume in a
 * temporary pool, served as LUN 0 of one target through ferry_iscsi +
 * ferry_scsi + ferry_store, exactly the stack ferryd uses, without the
 * daemon's control plane.
 *
 *   scsi_target_harness --pool DIR --listen 127.0.0.1:0 --iqn IQN
 *                       [--size BYTES] [--block-size 512|4096] [--read-only]
 *                       [--port-file FILE]
 *
 * Prints "port N" on stdout (and into --port-file) once listening; runs
 * until SIGTERM or SIGINT. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "iscsi/iscsi.h"
#include "scsi/scsi.h"
#include "store/store.h"

static int usage(void)
{
	fprintf(stderr, "usage: scsi_target_harness --pool DIR --listen HOST:PORT --iqn IQN "
	                "[--size BYTES] [--block-size N] [--read-only] [--port-file FILE]\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *pool = NULL, *listen = NULL, *iqn = NULL, *port_file = NULL;
	uint64_t size = 64ull << 20, bs = 512;
	bool ro = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--read-only")) {
			ro = true;
			continue;
		}
		if (!v)
			return usage();
		i++;
		if (!strcmp(a, "--pool"))
			pool = v;
		else if (!strcmp(a, "--listen"))
			listen = v;
		else if (!strcmp(a, "--iqn"))
			iqn = v;
		else if (!strcmp(a, "--port-file"))
			port_file = v;
		else if (!strcmp(a, "--size")) {
			if (parse_size(v, &size) < 0)
				return usage();
		} else if (!strcmp(a, "--block-size")) {
			if (parse_u64(v, &bs) < 0)
				return usage();
		} else
			return usage();
	}
	if (!pool || !listen || !iqn)
		return usage();
	log_set_tag("harness");

	/* Blocked before any thread starts, so only sigwait sees them. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct store *st = NULL;
	struct vol *vol = NULL;
	struct scsi_lu *lu = NULL;
	struct iscsi_server *srv = NULL;
	int r = store_open(pool, &st);
	if (r < 0)
		goto fail;
	if (!store_vol_exists(st, "conf")) {
		struct vol_params p = { .size = size, .object_size = 0, .block_size = (uint32_t)bs };
		if ((r = store_vol_create(st, "conf", &p)) < 0)
			goto fail;
	}
	if ((r = vol_open(st, "conf", &vol)) < 0)
		goto fail;
	static const uint8_t naa[8] = { 0x60, 0x0f, 0xe2, 0x72, 0x00, 0x00, 0x00, 0x01 };
	struct scsi_lu_params lp = { .vol = vol, .read_only = ro, .serial = "ferry-conformance", .naa = naa };
	if ((r = scsi_lu_create(&lp, &lu)) < 0)
		goto fail;
	if ((r = iscsi_server_create(listen, &srv)) < 0)
		goto fail;
	if ((r = iscsi_target_add(srv, iqn, NULL, NULL)) < 0)
		goto fail;
	if ((r = iscsi_lun_add(srv, iqn, 0, lu)) < 0)
		goto fail;
	printf("port %d\n", iscsi_server_port(srv));
	fflush(stdout);
	if (port_file) {
		char buf[32];
		int n = snprintf(buf, sizeof(buf), "%d\n", iscsi_server_port(srv));
		if ((r = write_file_atomic(port_file, buf, (size_t)n)) < 0)
			goto fail;
	}
	int sig;
	sigwait(&set, &sig);
	log_info("signal %d: stopping", sig);
	iscsi_lun_remove(srv, iqn, 0);
	iscsi_server_destroy(srv);
	scsi_lu_destroy(lu);
	vol_flush(vol);
	vol_close(vol);
	store_close(st);
	return 0;
fail:
	log_error("harness: %s", strerror(-r));
	if (srv)
		iscsi_server_destroy(srv);
	scsi_lu_destroy(lu);
	if (vol)
		vol_close(vol);
	if (st)
		store_close(st);
	return 1;
}
