/* Blocking frame I/O with a deadline per frame: a stalled peer costs a
 * timeout, never a stuck thread. */
#include "ctl/ctl.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* Waits until fd is ready for events or the deadline passes. */
static int wait_fd(int fd, short events, uint64_t deadline_ns)
{
	for (;;) {
		uint64_t now = now_mono_ns();
		if (now >= deadline_ns)
			return -ETIMEDOUT;
		uint64_t left_ms = (deadline_ns - now + 999999) / 1000000;
		struct pollfd p = {.fd = fd, .events = events};
		int r = poll(&p, 1, (int)MIN(left_ms, (uint64_t)60000));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r > 0)
			return 0; /* readable, writable, or an error the next call reports */
	}
}

static uint64_t deadline_of(int timeout_ms)
{
	return now_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
}

int ctl_send(int fd, uint8_t type, const void *payload, uint32_t len, int timeout_ms)
{
	uint8_t hdr[CTL_HDR_LEN];
	int r = ctl_frame_encode(hdr, sizeof(hdr), type, NULL, 0);
	if (r < 0)
		return r;
	if (len > CTL_MAX_PAYLOAD)
		return -EMSGSIZE;
	hdr[0] = (uint8_t)(len >> 24);
	hdr[1] = (uint8_t)(len >> 16);
	hdr[2] = (uint8_t)(len >> 8);
	hdr[3] = (uint8_t)len;
	struct iovec iov[2] = {
		{.iov_base = hdr, .iov_len = sizeof(hdr)},
		{.iov_base = (void *)payload, .iov_len = len},
	};
	size_t total = sizeof(hdr) + len, sent = 0;
	uint64_t deadline = deadline_of(timeout_ms);
	while (sent < total) {
		struct iovec v[2];
		int nv = 0;
		size_t skip = sent;
		for (int i = 0; i < 2; i++) {
			if (skip >= iov[i].iov_len) {
				skip -= iov[i].iov_len;
				continue;
			}
			v[nv].iov_base = (uint8_t *)iov[i].iov_base + skip;
			v[nv].iov_len = iov[i].iov_len - skip;
			skip = 0;
			nv++;
		}
		struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)nv};
		ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				r = wait_fd(fd, POLLOUT, deadline);
				if (r < 0)
					return r;
				continue;
			}
			return -errno;
		}
		sent += (size_t)n;
		/* Progress moves the deadline: it bounds a stall, not a transfer. */
		deadline = deadline_of(timeout_ms);
	}
	return 0;
}

/* Reads exactly len bytes.  eof_ok: a clean EOF before the first byte
 * is reported as -ECONNRESET rather than -EPIPE. */
static int recv_exact(int fd, uint8_t *p, size_t len, int timeout_ms, bool eof_ok)
{
	size_t got = 0;
	uint64_t deadline = deadline_of(timeout_ms);
	while (got < len) {
		ssize_t n = recv(fd, p + got, len - got, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				int r = wait_fd(fd, POLLIN, deadline);
				if (r < 0)
					return r;
				continue;
			}
			return -errno;
		}
		if (n == 0)
			return (got == 0 && eof_ok) ? -ECONNRESET : -EPIPE;
		got += (size_t)n;
		deadline = deadline_of(timeout_ms);
	}
	return 0;
}

int ctl_recv(int fd, uint8_t *buf, struct ctl_frame *f, int timeout_ms)
{
	int r = recv_exact(fd, buf, CTL_HDR_LEN, timeout_ms, true);
	if (r < 0)
		return r;
	uint8_t type;
	uint32_t len;
	r = ctl_hdr_decode(buf, &type, &len);
	if (r < 0)
		return r;
	if (len) {
		r = recv_exact(fd, buf + CTL_HDR_LEN, len, timeout_ms, false);
		if (r < 0)
			return r;
	}
	f->type = type;
	f->len = len;
	f->payload = buf + CTL_HDR_LEN;
	return 0;
}
