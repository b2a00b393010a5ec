/* Link benchmark: the replication link alone, TLS or plaintext, between
 * two processes over loopback TCP, without disks.  The sender pushes
 * MIB MiB of random data as 1 MiB DATA frames, four frames per
 * link_send_raw call (one 4 MiB object, as the engine sends them), then a
 * PING; the receiver decodes every frame (CRC32C checked) and answers
 * PONG.  Prints the wall time of the transfer and the CPU seconds of each
 * side, so that the cost of TLS is seen apart from the disks.
 *
 *   link_bench MIB [--plaintext] [--rx-delay-us N]
 *
 * --rx-delay-us N: the receiver sleeps N us after every DATA frame, as a
 * secondary does while it writes the frame to its disk, so that a backlog
 * builds up in the socket (this is where TLS read-ahead would differ).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "repl/link.h"

#define SECRET "link-bench-secret-0123456789"

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what, int rc, struct link *l)
{
	fprintf(stderr, "link_bench: %s: %s%s%s\n", what, strerror(rc < 0 ? -rc : rc),
	        l ? ": " : "", l ? l->err : "");
	exit(1);
}

static unsigned rx_delay_us;

static int receiver(int lfd, struct link_tls *tls, int out)
{
	char peer[128];
	int fd = link_accept(lfd, 10000, peer, sizeof(peer));
	if (fd < 0)
		die("accept", fd, NULL);
	struct link *l;
	int rc = link_from_fd(fd, 30000, peer, &l);
	if (rc < 0)
		die("link", rc, NULL);
	link_set_tls(l, tls);
	rc = link_handshake_server(l, (const uint8_t *)SECRET, strlen(SECRET), "rx");
	if (rc < 0)
		die("handshake", rc, l);
	double c0 = cpu_s();
	uint64_t bytes = 0;
	for (;;) {
		struct wire_msg m;
		rc = link_recv(l, &m, 0);
		if (rc < 0)
			die("recv", rc, l);
		if (m.type == WIRE_DATA) {
			bytes += m.u.data.data_len;
			if (rx_delay_us) {
				struct timespec ts = { 0, (long)rx_delay_us * 1000 };
				nanosleep(&ts, NULL);
			}
			continue;
		}
		if (m.type == WIRE_PING) {
			struct wire_msg p = { .type = WIRE_PONG };
			p.u.ping.token = m.u.ping.token;
			rc = link_send(l, &p);
			if (rc < 0)
				die("send", rc, l);
			break;
		}
	}
	dprintf(out, "%.3f %" PRIu64 "\n", cpu_s() - c0, bytes);
	link_close(l);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: link_bench MIB [--plaintext] [--rx-delay-us N]\n");
		return 2;
	}
	uint64_t mib = strtoull(argv[1], NULL, 10);
	bool plain = false;
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--plaintext"))
			plain = true;
		else if (!strcmp(argv[i], "--rx-delay-us") && i + 1 < argc)
			rx_delay_us = (unsigned)strtoul(argv[++i], NULL, 10);
	}
	log_set_level(LOG_WARN);
	signal(SIGPIPE, SIG_IGN); /* as ferryd */
	struct link_tls_opts o = { .plaintext = plain };
	struct link_tls *tls;
	char err[256];
	int rc = link_tls_new(&o, (const uint8_t *)SECRET, strlen(SECRET), &tls, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "link_bench: %s\n", err);
		return 1;
	}
	int lfd;
	char addr[128];
	rc = link_listen("127.0.0.1:0", &lfd, addr, sizeof(addr));
	if (rc < 0)
		die("listen", rc, NULL);
	int pfd[2];
	if (pipe(pfd) < 0)
		die("pipe", errno, NULL);
	pid_t pid = fork();
	if (pid == 0) {
		close(pfd[0]);
		_exit(receiver(lfd, tls, pfd[1]));
	}
	close(pfd[1]);
	close(lfd);

	/* one object: four 1 MiB DATA frames of random bytes */
	size_t cap = 4 * (WIRE_FRAME_MAX + 64), flen = 0;
	uint8_t *frames = malloc(cap), *data = malloc(WIRE_DATA_MAX);
	uint64_t x = 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
	for (size_t i = 0; i + 8 <= WIRE_DATA_MAX; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(data + i, &x, 8);
	}
	for (int i = 0; i < 4; i++) {
		struct wire_msg m = { .type = WIRE_DATA };
		m.u.data.objno = 0;
		m.u.data.offset = (uint64_t)i * WIRE_DATA_MAX;
		m.u.data.raw_len = WIRE_DATA_MAX;
		m.u.data.codec = WIRE_CODEC_NONE;
		m.u.data.data = data;
		m.u.data.data_len = WIRE_DATA_MAX;
		int n = wire_encode(&m, frames + flen, cap - flen);
		if (n < 0)
			die("encode", n, NULL);
		flen += (size_t)n;
	}
	struct link *l;
	rc = link_connect(addr, 10000, &l, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "link_bench: %s\n", err);
		return 1;
	}
	link_set_tls(l, tls);
	rc = link_handshake_client(l, (const uint8_t *)SECRET, strlen(SECRET), "tx");
	if (rc < 0)
		die("handshake", rc, l);
	double c0 = cpu_s();
	uint64_t t0 = now_mono_ns();
	for (uint64_t sent = 0; sent < mib; sent += 4) {
		rc = link_send_raw(l, frames, flen);
		if (rc < 0)
			die("send", rc, l);
	}
	struct wire_msg m = { .type = WIRE_PING };
	m.u.ping.token = 7;
	rc = link_send(l, &m);
	if (rc == 0)
		rc = link_expect(l, WIRE_PONG, &m, 0);
	if (rc < 0)
		die("pong", rc, l);
	double wall = (double)(now_mono_ns() - t0) / 1e9, tx_cpu = cpu_s() - c0;
	char line[128] = "";
	FILE *f = fdopen(pfd[0], "r");
	if (!f || !fgets(line, sizeof(line), f))
		die("receiver", EIO, NULL);
	double rx_cpu = 0;
	uint64_t bytes = 0;
	sscanf(line, "%lf %" SCNu64, &rx_cpu, &bytes);
	int st;
	waitpid(pid, &st, 0);
	printf("link_wall_s %.3f\nsender_cpu_s %.3f\nreceiver_cpu_s %.3f\nbytes %" PRIu64
	       "\nMiBps %.1f\n", wall, tx_cpu, rx_cpu, bytes, (double)bytes / wall / 1048576.0);
	link_close(l);
	link_tls_free(tls);
	free(frames);
	free(data);
	return 0;
}
