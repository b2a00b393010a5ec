/* common: logging, parsing, small I/O helpers, a JSON writer, checksums.
 *
 * Every other module may depend on this one; it depends on nothing of ours.
 * Conventions used across ferry:
 *  - functions return 0 (or a count) on success and a negative errno on
 *    failure; errors are logged once, where they are detected;
 *  - a function that returns allocated memory says who frees it.
 */
#ifndef FERRY_COMMON_H
#define FERRY_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FERRY_VERSION "0.1.0"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define UNUSED __attribute__((unused))
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))

/* ---- logging ---------------------------------------------------------- */
enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "error", "warn", "info", "debug".  Returns 0 or -EINVAL. */
int log_parse_level(const char *s, enum log_level *out);
const char *log_level_name(enum log_level level); /* "error", ... (static) */
/* Prefix every line with this tag (e.g. "ferryd"); the string is copied. */
void log_set_tag(const char *tag);
/* Where lines go.  LOG_TO_FILE opens path (O_APPEND, created mode 0640) and
 * puts it on fd 2, so that anything else written to stderr lands there too;
 * LOG_TO_JOURNAL is stderr read by systemd-journald (no time stamp, a
 * "<N>" priority prefix); LOG_TO_SYSLOG uses syslog(3), facility daemon,
 * ident = the tag.  0 or a negative errno (the destination is unchanged). */
enum log_dest { LOG_TO_STDERR, LOG_TO_FILE, LOG_TO_JOURNAL, LOG_TO_SYSLOG };
int log_set_dest(enum log_dest dest, const char *path);
/* Reopens the log file (after logrotate moved it); 0 or a negative errno,
 * in which case lines keep going to the old file. */
int log_reopen(void);
/* Calls fn (under the log lock: fn must not log) with every line that is
 * written, without its time stamp; NULL removes the hook.  ferryd uses it
 * to show start-up errors on the terminal that started it. */
void log_set_hook(void (*fn)(void *ctx, enum log_level level, const char *msg), void *ctx);
/* Frees what the log holds (path copy) and goes back to stderr. */
void log_shutdown(void);
void log_msg(enum log_level level, const char *fmt, ...) PRINTF_LIKE(2, 3);
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                      \
	do {                                                                    \
		if (log_get_level() >= LOG_DEBUG)                                   \
			log_msg(LOG_DEBUG, __VA_ARGS__);                                \
	} while (0)

/* ---- parsing ---------------------------------------------------------- */
/* Plain bytes or a K/M/G/T suffix (powers of 1024, optional "iB"/"B").
 * Returns 0, -EINVAL for bad syntax, -ERANGE for overflow. */
int parse_size(const char *s, uint64_t *out);
/* Unsigned decimal integer, whole string.  0, -EINVAL or -ERANGE. */
int parse_u64(const char *s, uint64_t *out);
/* A duration in seconds: "90", "90s", "5m", "1h", "2d".  0, -EINVAL for
 * bad syntax, -ERANGE for overflow. */
int parse_duration(const char *s, uint64_t *secs);
/* "HOST:PORT" or "[V6ADDR]:PORT" (HOST may be empty: every address) into
 * host and port (decimal, 0..65535).  0 or -EINVAL. */
int split_hostport(const char *s, char *host, size_t hcap, char *port, size_t pcap);
/* Names of volumes, snapshots, pairs: [A-Za-z0-9][A-Za-z0-9._-]{0,63}.
 * Such a name can never be "." or ".." or contain '/', so it can never
 * escape the directory it is joined to. */
bool name_valid(const char *s);
/* Name prefixes replication owns: it names its cycle snapshots
 * "ferry.<pair>.<cycle>" and keeps a demoted primary's divergent data in
 * "split-brain-<time>", and deletes or replaces what it finds under these
 * names.  ferryd's commands refuse them for the volumes and snapshots users
 * create (replication itself goes straight to the store).  Returns the
 * prefix s starts with, or NULL.  NAME_RESERVED_LIST is for messages. */
const char *name_reserved(const char *s);
#define NAME_RESERVED_LIST "'ferry.' and 'split-brain-'"
/* Formats n bytes as "1.5 GiB" into buf (at least 16 bytes). */
const char *fmt_bytes(uint64_t n, char *buf, size_t len);

/* ---- time ------------------------------------------------------------- */
uint64_t now_mono_ns(void);  /* CLOCK_MONOTONIC */
uint64_t now_wall_s(void);   /* CLOCK_REALTIME, seconds */

/* ---- I/O helpers (retry on EINTR and short transfers) ------------------ */
int read_full(int fd, void *buf, size_t len);          /* -EPIPE on early EOF */
int write_full(int fd, const void *buf, size_t len);
int pread_full(int fd, void *buf, size_t len, uint64_t off); /* short -> zero-fill */
int pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
/* fsync the directory at path. */
int fsync_path(const char *path);
/* Replace path with data atomically and durably (tmp + fsync + rename +
 * fsync of the directory). */
int write_file_atomic(const char *path, const void *data, size_t len);
/* Reads a whole (small) file; *out is malloc'd and NUL-terminated, the
 * caller frees it.  Fails with -EFBIG beyond max bytes. */
int read_file(const char *path, size_t max, char **out, size_t *len);
/* Reads a file that holds a secret: refuses one that group or others may
 * access (mode & 077, like ssh its keys: chmod 600 it) or that is not a
 * regular file; "-" reads standard input instead (no mode to check).  At
 * most max bytes.  *out is malloc'd and NUL-terminated; the caller wipes
 * and frees it.  0, or a negative errno with a one-line reason in err. */
int secret_file_read(const char *path, size_t max, char **out, size_t *len, char *err,
                     size_t errlen);
/* Splits the text of a CHAP credentials file in place: the first line that
 * is neither empty nor a '#' comment is the initiator's USER:SECRET, an
 * optional second one the mutual USER:SECRET (what the target answers
 * with); line ends (LF or CRLF) and trailing blanks are not part of a
 * secret.  *mutual is NULL without a second line.  0, or -EINVAL with a
 * reason in err (nothing, or more than two lines). */
int chap_file_split(char *text, char **chap, char **mutual, char *err, size_t errlen);
/* mkdir -p. */
int mkdir_p(const char *path, unsigned mode);
/* rm -rf of a directory tree (no symlink following). */
int rm_rf(const char *path);
/* true when every byte of buf is zero; fast for large buffers. */
bool buf_is_zero(const void *buf, size_t len);

/* ---- growable string / JSON writer ------------------------------------ */
struct sbuf {
	char *p;     /* NUL-terminated; owned by the sbuf */
	size_t len;
	size_t cap;
	int err;     /* sticky -ENOMEM */
};
void sbuf_init(struct sbuf *b);
void sbuf_free(struct sbuf *b);
void sbuf_add(struct sbuf *b, const void *data, size_t len);
void sbuf_puts(struct sbuf *b, const char *s);
void sbuf_printf(struct sbuf *b, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* Hands the buffer to the caller (who frees it) and resets b. */
char *sbuf_detach(struct sbuf *b, size_t *len);

/* A streaming JSON writer on top of sbuf.  Commas are inserted for you. */
struct jw {
	struct sbuf *b;
	int depth;
	uint64_t first; /* bit d set: nothing written yet at depth d */
	bool after_key;
};
void jw_init(struct jw *w, struct sbuf *b);
void jw_obj_begin(struct jw *w);
void jw_obj_end(struct jw *w);
void jw_arr_begin(struct jw *w);
void jw_arr_end(struct jw *w);
void jw_key(struct jw *w, const char *k);
void jw_str(struct jw *w, const char *s);
void jw_u64(struct jw *w, uint64_t v);
void jw_i64(struct jw *w, int64_t v);
void jw_double(struct jw *w, double v);
void jw_bool(struct jw *w, bool v);
void jw_null(struct jw *w);

/* ---- TCP --------------------------------------------------------------- */
/* Listens on hostport (port 0: a free one).  0 with *fd (the caller's) and
 * the address actually bound in bound ("127.0.0.1:9273"); otherwise a
 * negative errno with a one-line reason in err. */
int net_listen(const char *hostport, int backlog, int *fd, char *bound, size_t blen,
               char *err, size_t errlen);

/* ---- checksums -------------------------------------------------------- */
/* CRC32C (Castagnoli), the iSCSI digest.  Start with crc = 0 for a fresh
 * checksum; feeding the result back in continues it. */
uint32_t crc32c(uint32_t crc, const void *data, size_t len);

#endif
