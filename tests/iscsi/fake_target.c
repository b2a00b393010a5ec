/* iscsi_fake_target: the real iSCSI transport serving RAM disks from the
 * fake SCSI layer, for transport tests with real initiators.
 *   iscsi_fake_target --listen 127.0.0.1:0 --port-file F
 *       [--size BYTES] [--bs 512|4096] [--delay-ms N]
 *       --target IQN [--luns N] [--chap USER:SECRET] [--mutual USER:SECRET] ...
 * Options after --target apply to that target.  Runs until SIGTERM/SIGINT,
 * then prints the server's counters as one line on stdout. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "fake_scsi.h"
#include "iscsi/iscsi.h"

#define MAX_T 8
#define MAX_L 8

struct tdef {
	const char *iqn;
	int luns;
	char chap_u[256], chap_s[256], mut_u[256], mut_s[256];
	bool chap, mutual;
};

static bool split(const char *s, char *u, char *p)
{
	const char *c = strchr(s, ':');
	if (!c || (size_t)(c - s) >= 256 || strlen(c + 1) >= 256)
		return false;
	memcpy(u, s, (size_t)(c - s));
	u[c - s] = '\0';
	strcpy(p, c + 1);
	return true;
}

int main(int argc, char **argv)
{
	const char *listen = "127.0.0.1:0", *port_file = NULL;
	uint64_t size = 64ull << 20;
	uint32_t bs = 512;
	unsigned delay = 0;
	struct tdef t[MAX_T];
	int nt = 0;
	memset(t, 0, sizeof(t));
	log_set_tag("fake-target");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			goto usage;
		i++;
		if (!strcmp(a, "--listen"))
			listen = v;
		else if (!strcmp(a, "--port-file"))
			port_file = v;
		else if (!strcmp(a, "--size"))
			parse_size(v, &size);
		else if (!strcmp(a, "--bs"))
			bs = (uint32_t)atoi(v);
		else if (!strcmp(a, "--delay-ms"))
			delay = (unsigned)atoi(v);
		else if (!strcmp(a, "--log-level")) {
			enum log_level l;
			if (log_parse_level(v, &l) == 0)
				log_set_level(l);
		} else if (!strcmp(a, "--target") && nt < MAX_T) {
			t[nt].iqn = v;
			t[nt].luns = 1;
			nt++;
		} else if (!strcmp(a, "--luns") && nt)
			t[nt - 1].luns = atoi(v);
		else if (!strcmp(a, "--chap") && nt)
			t[nt - 1].chap = split(v, t[nt - 1].chap_u, t[nt - 1].chap_s);
		else if (!strcmp(a, "--mutual") && nt)
			t[nt - 1].mutual = split(v, t[nt - 1].mut_u, t[nt - 1].mut_s);
		else
			goto usage;
	}
	if (!nt)
		goto usage;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct iscsi_server *srv;
	if (iscsi_server_create(listen, &srv) < 0)
		return 1;
	struct scsi_lu *lus[MAX_T][MAX_L] = { { 0 } };
	for (int i = 0; i < nt; i++) {
		struct iscsi_chap ch = { t[i].chap_u, t[i].chap_s }, mu = { t[i].mut_u, t[i].mut_s };
		if (iscsi_target_add(srv, t[i].iqn, t[i].chap ? &ch : NULL, t[i].mutual ? &mu : NULL) < 0)
			return 1;
		for (int l = 0; l < t[i].luns && l < MAX_L; l++) {
			lus[i][l] = fake_lu_create(size, bs, delay, (uint8_t)(i * MAX_L + l));
			if (!lus[i][l] || iscsi_lun_add(srv, t[i].iqn, (uint64_t)l, lus[i][l]) < 0)
				return 1;
		}
	}
	if (port_file) {
		char tmp[4096];
		snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
		FILE *f = fopen(tmp, "w");
		if (!f)
			return 1;
		fprintf(f, "%d\n", iscsi_server_port(srv));
		fclose(f);
		rename(tmp, port_file);
	}
	int sig;
	sigwait(&set, &sig);
	for (int i = 0; i < nt; i++)
		for (int l = 0; l < t[i].luns && l < MAX_L; l++)
			iscsi_lun_remove(srv, t[i].iqn, (uint64_t)l);
	struct iscsi_stats st;
	iscsi_server_stats(srv, &st);
	printf("sessions=%llu logins=%llu login_failures=%llu commands=%llu conn_errors=%llu\n",
	       (unsigned long long)st.sessions, (unsigned long long)st.logins,
	       (unsigned long long)st.login_failures, (unsigned long long)st.commands,
	       (unsigned long long)st.conn_errors);
	for (int i = 0; i < nt; i++)
		iscsi_target_remove(srv, t[i].iqn);
	iscsi_server_destroy(srv);
	for (int i = 0; i < nt; i++)
		for (int l = 0; l < MAX_L; l++)
			fake_lu_destroy(lus[i][l]);
	return 0;
usage:
	fprintf(stderr, "usage: iscsi_fake_target [--listen H:P] [--port-file F] [--size N] "
	                "[--bs N] [--delay-ms N] --target IQN [--luns N] [--chap U:S] "
	                "[--mutual U:S]...\n");
	return 2;
}
