/* LD_PRELOAD shim for the disk-full test (faults.sh): while the file named
 * by $FERRY_TEST_ENOSPC_FLAG exists, writes (pwrite, pwrite64, write,
 * fallocate) to files under $FERRY_TEST_ENOSPC_DIR fail with ENOSPC, as on
 * a full file system.  Only for tests; never linked into ferry. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static bool full(int fd)
{
	const char *flag = getenv("FERRY_TEST_ENOSPC_FLAG");
	const char *dir = getenv("FERRY_TEST_ENOSPC_DIR");
	if (!flag || !dir || access(flag, F_OK) != 0)
		return false;
	char link[64], path[PATH_MAX];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0)
		return false;
	path[n] = '\0';
	return strncmp(path, dir, strlen(dir)) == 0;
}

#define REAL(name, ret, ...)                                                 \
	static ret (*real_##name)(__VA_ARGS__);                                  \
	if (!real_##name)                                                        \
		real_##name = (ret(*)(__VA_ARGS__))dlsym(RTLD_NEXT, #name)

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite, ssize_t, int, const void *, size_t, off_t);
	if (full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite64, ssize_t, int, const void *, size_t, off_t);
	if (full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return real_pwrite64(fd, buf, n, off);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	REAL(fallocate, int, int, int, off_t, off_t);
	if (full(fd)) {
		errno = ENOSPC;
		return -1;
	}
	return real_fallocate(fd, mode, off, len);
}
