/* ferryd internals shared by main.c, the request helpers and the command
 * group files (cmd_*.c).  Private to src/daemon.
 *
 * Extending the daemon:
 *  - a command group: its grammar in src/ctl/grammar.c, a file
 *    cmd_GROUP.c defining `const struct dgroup dgroup_GROUP`, and one line
 *    in the table of dispatch.c;
 *  - a daemon option: one line in the options table of main.c; read it
 *    with daemon_opt("name");
 *  - a background service (replication, iSCSI): one line in the services
 *    table of main.c; start runs once the store is open, stop before it
 *    closes.
 */
#ifndef FERRY_DAEMON_H
#define FERRY_DAEMON_H

#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "ctl/ctl.h"
#include "store/store.h"

/* Deadlines (ms) for a stalled CLI.  The CLI itself may be waiting on a
 * slow stdin or stdout, hence the generous data deadline. */
#define DREQ_REQ_TIMEOUT_MS 10000
#define DREQ_DATA_TIMEOUT_MS 300000
#define DREQ_MSG_TIMEOUT_MS 30000

struct daemon {
	char pool[PATH_MAX];   /* absolute */
	char sock_path[108];
	struct store *store;
	atomic_bool stopping;
};

/* One command being served on one control connection. */
struct dreq {
	struct daemon *d;
	struct store *store;
	int fd;
	const struct ctl_cmd *cmd;
	uint8_t *rx;           /* CTL_MAX_FRAME bytes, for IN frames */
	int io_err;            /* sticky: the connection failed */
	uint64_t last_progress_ns;
};

/* Sends len bytes to the CLI's stdout, in frames of at most CTL_CHUNK.
 * 0 or a negative errno (also left in r->io_err). */
int dreq_out(struct dreq *r, const void *p, size_t len);
int dreq_printf(struct dreq *r, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* Sends what a handler built in b, frees b's buffer, and returns the exit
 * status: 0, or 1 (out of memory, told to the CLI; or the CLI is gone). */
int dreq_out_sbuf(struct dreq *r, struct sbuf *b);
/* Sends "ferry: MESSAGE" to the CLI's stderr.  Returns 1, the exit status
 * of a runtime failure, so that handlers can `return dreq_fail(...)`. */
int dreq_fail(struct dreq *r, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* Same, for a usage error: returns 2. */
int dreq_usage(struct dreq *r, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* Progress of long work, at most a few frames per second (the CLI draws
 * it when its stderr is a tty).  Errors are sticky in r->io_err. */
void dreq_progress(struct dreq *r, uint64_t done, uint64_t total, const char *label);
/* Next input chunk: 1 with *data and *len (pointing into r->rx, valid until
 * the next call), 0 at IN_END, negative errno on failure. */
int dreq_in(struct dreq *r, const uint8_t **data, size_t *len);
/* True when the handler should stop early: the client is gone or the
 * daemon is shutting down. */
bool dreq_aborted(struct dreq *r);
/* Why vol_open(s, name) failed with e, in one line for the CLI (naming the
 * gateway that holds the volume on a shared pool). */
void daemon_open_error(struct store *s, const char *name, int e, char *buf, size_t n);
/* Opens volume name (checking that snap exists when non-empty).  Returns
 * 0 with *v (caller closes with vol_close), or 1 after telling the CLI. */
int dreq_open_vol(struct dreq *r, const char *name, const char *snap, struct vol **v);

/* A command group: verbs and their handlers.  A handler returns the exit
 * status of the command (0, 1 runtime failure, 2 usage). */
struct dgroup_cmd {
	const char *verb;
	int (*run)(struct dreq *r);
};
struct dgroup {
	const char *name;
	const struct dgroup_cmd *cmds; /* ends with a NULL verb */
};
extern const struct dgroup dgroup_volume;
extern const struct dgroup dgroup_snap;
extern const struct dgroup dgroup_export;

/* The iSCSI service (cmd_export.c): serves --iscsi HOST:PORT and the
 * exports recorded in POOL/exports.conf. */
int export_service_start(struct daemon *d);
void export_service_stop(struct daemon *d);
/* True while VOLUME (snap NULL: the volume or any of its snapshots;
 * otherwise that snapshot) is exported over iSCSI. */
bool export_volume_in_use(const char *vol, const char *snap);
/* Re-applies the pair's write refusal (daemon_volume_is_secondary) to the
 * served LUNs of vol's head, at run time (after demote / promote). */
void export_refresh_read_only(const char *vol);
extern const struct dgroup dgroup_pair;

/* Replication (cmd_pair.c): the service's start/stop, and whether a volume
 * is a replication secondary (read-only for everything but replication). */
int repl_service_start(struct daemon *d);
void repl_service_stop(struct daemon *d);
bool daemon_volume_is_secondary(const char *name);
/* True when replication needs the volume (snap NULL/"": it is in a pair)
 * or that snapshot of it (the last synced or in-flight one). */
bool daemon_repl_needs(const char *volume, const char *snap);
struct repl;
struct repl *daemon_repl(void); /* NULL when not running; owned by the service */

/* Serves one control connection until its EXIT is sent.  The caller
 * closes fd. */
void dispatch_conn(struct daemon *d, int fd);

/* The value given for daemon option name (NULL when not given; "1" for
 * an option without a value).  The string belongs to argv. */
const char *daemon_opt(const char *name);

#endif
