/* TCP listening sockets from "HOST:PORT" strings. */
#include "common/common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int net_listen(const char *hostport, int backlog, int *fd, char *bound, size_t blen,
               char *err, size_t errlen)
{
	char host[256], port[16];
	if (split_hostport(hostport, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(err, errlen, "bad address '%s' (want HOST:PORT or [IPv6]:PORT)", hostport);
		return -EINVAL;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *ai = NULL;
	int gr = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
	if (gr != 0) {
		snprintf(err, errlen, "cannot resolve '%s': %s", hostport, gai_strerror(gr));
		return -EINVAL;
	}
	int rc = -EADDRNOTAVAIL, s = -1;
	for (struct addrinfo *a = ai; a; a = a->ai_next) {
		s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (s < 0) {
			rc = -errno;
			continue;
		}
		int one = 1;
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s, a->ai_addr, a->ai_addrlen) == 0 && listen(s, backlog) == 0)
			break;
		rc = -errno;
		close(s);
		s = -1;
	}
	freeaddrinfo(ai);
	if (s < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", hostport, strerror(-rc));
		return rc;
	}
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char h[INET6_ADDRSTRLEN] = "?";
	int pt = 0;
	if (getsockname(s, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &a6->sin6_addr, h, sizeof(h));
			pt = ntohs(a6->sin6_port);
		} else {
			struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &a4->sin_addr, h, sizeof(h));
			pt = ntohs(a4->sin_port);
		}
	}
	snprintf(bound, blen, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", h, pt);
	*fd = s;
	return 0;
}
