#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_level = LOG_INFO;
static char g_tag[32] = "ferry";
static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;
/* Where lines go (under g_log_lock).  A log file is kept on fd 2, so that
 * whatever else writes to stderr (a sanitizer report, a library) lands in
 * the same file. */
static enum log_dest g_dest = LOG_TO_STDERR;
static char *g_path;              /* LOG_TO_FILE: for log_reopen() */
static void (*g_hook)(void *ctx, enum log_level level, const char *msg);
static void *g_hook_ctx;

void log_set_level(enum log_level level) { atomic_store(&g_level, (int)level); }
enum log_level log_get_level(void) { return (enum log_level)atomic_load(&g_level); }

void log_set_tag(const char *tag)
{
	snprintf(g_tag, sizeof(g_tag), "%s", tag);
}

int log_parse_level(const char *s, enum log_level *out)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		if (strcmp(s, names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

const char *log_level_name(enum log_level level)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	return (unsigned)level < ARRAY_SIZE(names) ? names[level] : "?";
}

/* Opens path for appending and puts it on fd 2.  Under g_log_lock or
 * before threads exist. */
static int open_on_stderr(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	if (fd != 2) {
		if (dup2(fd, 2) < 0) {
			int e = -errno;
			close(fd);
			return e;
		}
		close(fd);
	}
	return 0;
}

int log_set_dest(enum log_dest dest, const char *path)
{
	char *p = NULL;
	if (dest == LOG_TO_FILE) {
		if (!path || !(p = strdup(path)))
			return path ? -ENOMEM : -EINVAL;
	}
	pthread_mutex_lock(&g_log_lock);
	int rc = dest == LOG_TO_FILE ? open_on_stderr(p) : 0;
	if (rc == 0) {
		if (g_dest == LOG_TO_SYSLOG && dest != LOG_TO_SYSLOG)
			closelog();
		if (dest == LOG_TO_SYSLOG && g_dest != LOG_TO_SYSLOG)
			openlog(g_tag, LOG_PID | LOG_NDELAY, LOG_DAEMON);
		g_dest = dest;
		free(g_path);
		g_path = p;
		p = NULL;
	}
	pthread_mutex_unlock(&g_log_lock);
	free(p);
	return rc;
}

int log_reopen(void)
{
	pthread_mutex_lock(&g_log_lock);
	int rc = g_dest == LOG_TO_FILE ? open_on_stderr(g_path) : 0;
	pthread_mutex_unlock(&g_log_lock);
	return rc;
}

void log_set_hook(void (*fn)(void *ctx, enum log_level level, const char *msg), void *ctx)
{
	pthread_mutex_lock(&g_log_lock);
	g_hook = fn;
	g_hook_ctx = ctx;
	pthread_mutex_unlock(&g_log_lock);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *lv[] = {"error", "warn", "info", "debug"};
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	if ((int)level > atomic_load(&g_level))
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* One write per line so concurrent threads never interleave. */
	pthread_mutex_lock(&g_log_lock);
	if (g_dest == LOG_TO_SYSLOG) {
		syslog(prio[level], "%s", msg);
	} else if (g_dest == LOG_TO_JOURNAL) {
		/* The journal stamps the time itself and reads the priority from
		 * the "<N>" prefix (sd-daemon(3)). */
		fprintf(stderr, "<%d>%s\n", prio[level], msg);
		fflush(stderr);
	} else {
		char ts[32];
		struct timespec t;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &t);
		gmtime_r(&t.tv_sec, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ldZ %s %s: %s\n", ts, t.tv_nsec / 1000000, g_tag, lv[level],
		        msg);
		fflush(stderr);
	}
	if (g_hook)
		g_hook(g_hook_ctx, level, msg);
	pthread_mutex_unlock(&g_log_lock);
}

void log_shutdown(void)
{
	pthread_mutex_lock(&g_log_lock);
	if (g_dest == LOG_TO_SYSLOG)
		closelog();
	g_dest = LOG_TO_STDERR;
	free(g_path);
	g_path = NULL;
	g_hook = NULL;
	pthread_mutex_unlock(&g_log_lock);
}
