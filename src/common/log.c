#include "common/common.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

static enum log_level g_level = LOG_INFO;
static char g_tag[32] = "ferry";
static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_last_error[1024]; /* under g_log_lock */

void log_set_level(enum log_level level) { g_level = level; }
enum log_level log_get_level(void) { return g_level; }

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

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *lv[] = {"error", "warn", "info", "debug"};
	if (level > g_level)
		return;
	char ts[32];
	struct timespec t;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &t);
	gmtime_r(&t.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* One write per line so concurrent threads never interleave. */
	pthread_mutex_lock(&g_log_lock);
	if (level == LOG_ERROR)
		memcpy(g_last_error, msg, sizeof(msg));
	fprintf(stderr, "%s.%03ldZ %s %s: %s\n", ts, t.tv_nsec / 1000000, g_tag,
	        lv[level], msg);
	fflush(stderr);
	pthread_mutex_unlock(&g_log_lock);
}

void log_last_error(char *buf, size_t cap)
{
	pthread_mutex_lock(&g_log_lock);
	snprintf(buf, cap, "%s", g_last_error);
	pthread_mutex_unlock(&g_log_lock);
}
