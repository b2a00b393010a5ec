/* ferryd internals shared by main.c, the request helpers and the command
 * group files (cmd_*.c).  Private to src/daemon.
 *
 * Extending the daemon:
 *  - a command group: its grammar in src/ctl/grammar.c, a file
 *    cmd_GROUP.c defining `const struct dgroup dgroup_GROUP`, and one line
 *    in the table of dispatch.c;
 *  - a daemon option: one line in the options table of main.c; read it
 *    with daemon_opt("name").  It is a key of the configuration file
 *    (ferryd --config) as well, with no further work (config.c);
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
	uint64_t start_mono_ns;   /* for the uptime in `ferry status` */
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
/* Sends "ferry: warning: MESSAGE" to the CLI's stderr; the command goes on. */
void dreq_warn(struct dreq *r, const char *fmt, ...) PRINTF_LIKE(2, 3);
/* Refuses (usage error, told to the CLI) a name replication owns for a new
 * volume or snapshot (name_reserved()); what: "volume" or "snapshot".
 * Returns 0 when the name is free to use, else the exit status 2. */
int dreq_name_reserved(struct dreq *r, const char *name, const char *what);
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
/* The clones of vol (at snap; NULL: any snapshot) as "a, b, c" in buf;
 * returns how many there are (0 also when the backend has no clones). */
size_t daemon_clones_of(struct store *s, const char *vol, const char *snap, char *buf, size_t n);

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
extern const struct dgroup dgroup_group;

/* Consistency groups (cmd_group.c).  The registry's lock is recursive:
 * a command that checks a name against the groups and then creates a
 * volume holds it across both (volume create), so no group of that name
 * appears in between. */
void daemon_groups_lock(void);
void daemon_groups_unlock(void);
/* True when a group called name exists. */
bool daemon_group_exists(struct daemon *d, const char *name);
/* True, with its name in grp, when volume vol is in a group. */
bool daemon_group_of(struct daemon *d, const char *vol, char grp[STORE_NAME_MAX + 1]);
/* `snap create GROUP@SNAP`: every member at one cut.  The exit status. */
int daemon_group_snap(struct dreq *r, const char *group, const char *snap);

/* The iSCSI service (cmd_export.c): serves --iscsi HOST:PORT and the
 * exports recorded in POOL/exports.conf. */
int export_service_start(struct daemon *d);
void export_service_stop(struct daemon *d);
/* True while VOLUME (snap NULL: the volume or any of its snapshots;
 * otherwise that snapshot) is exported over iSCSI. */
bool export_volume_in_use(const char *vol, const char *snap);
/* What metrics and `ferry status` show of one export. */
struct scsi_lu;
struct export_view {
	const char *vol, *snap;       /* snap "": the head */
	const char *iqn;
	uint64_t lun;
	bool read_only, served;
	unsigned sessions;            /* normal sessions on the target; 0 when not served */
	const struct scsi_lu *lu;     /* NULL when not served (for scsi_lu_stats) */
};
/* Calls fn for every export, in `export list` order, with the exports'
 * lock held: fn must be quick and must not call back into exports.  The
 * view is valid during the call only.  The I/O path never waits on that
 * lock. */
void export_each(void (*fn)(void *ctx, const struct export_view *e), void *ctx);
/* The address the iSCSI target listens on ("127.0.0.1:3260"), or "" without
 * --iscsi. */
void export_iscsi_addr(char *buf, size_t len);
/* Re-applies the pair's write refusal (daemon_volume_is_secondary) to the
 * served LUNs of vol's head, at run time (after demote / promote). */
void export_refresh_read_only(const char *vol);
/* `pair demote` of vol: warns the CLI of the initiators logged in to the
 * exports of vol's head, whose writes will fail once it is read-only. */
void export_warn_demote(struct dreq *r, const char *vol);
extern const struct dgroup dgroup_pair;

/* The info of every volume of the pool that could be opened (cmd_volume.c;
 * volumes removed since the listing are skipped).  Returns how many; *out
 * (caller frees) holds them, NULL when out of memory. */
size_t daemon_volume_infos(struct store *s, struct vol_info **out);

/* Replication (cmd_pair.c): the service's start/stop, and whether a volume
 * is a replication secondary (read-only for everything but replication). */
int repl_service_start(struct daemon *d);
void repl_service_stop(struct daemon *d);
bool daemon_volume_is_secondary(const char *name);
/* True while the LUNs of a volume must refuse writes because its primary
 * was fenced (a newer epoch exists elsewhere; split-brain policy fence). */
bool daemon_volume_fenced(const char *name);
/* True when replication needs the volume (snap NULL/"": it is in a pair)
 * or that snapshot of it (the last synced or in-flight one). */
bool daemon_repl_needs(const char *volume, const char *snap);
struct repl;
struct repl *daemon_repl(void); /* NULL when not running; owned by the service */

/* The metrics service (metrics.c): GET /metrics on --metrics HOST:PORT. */
int metrics_service_start(struct daemon *d);
void metrics_service_stop(struct daemon *d);
/* The address /metrics is served on, or "" without --metrics. */
const char *metrics_addr(void);
/* Appends the Prometheus text exposition of everything to b. */
void metrics_render(struct daemon *d, struct sbuf *b);
extern const struct dgroup dgroup_status;

/* Serves one control connection until its EXIT is sent.  The caller
 * closes fd. */
void dispatch_conn(struct daemon *d, int fd);

/* The value given for daemon option name (NULL when not given; "1" for
 * an option without a value).  The string belongs to argv or lives until
 * the process exits. */
const char *daemon_opt(const char *name);

/* ---- options (the table is in main.c, the parsing in config.c) ---------- */
struct dopt {
	const char *name;  /* without "--"; also the configuration file key */
	const char *meta;  /* NULL: a flag (no value).  "HOST:PORT" values are
	                    * checked as addresses unless check is set; "FILE"
	                    * and "DIR" values are made absolute (relative to the
	                    * working directory, or to the configuration file) */
	const char *help;
	/* Optional check of a value (label: "--name" or "name", for messages).
	 * Returns 0, or the exit status with the reason in err: 2 for a value
	 * of the wrong form, 1 for one that cannot work here (a missing file,
	 * an address that does not resolve). */
	int (*check)(const char *label, const char *v, char *err, size_t errlen);
	const char *value; /* what was given (argv string, file value, or "1") */
};
enum dopt_src { DOPT_UNSET, DOPT_CLI, DOPT_FILE };
#define DOPT_MAX 64
/* The table with where each value came from. */
struct dopts {
	struct dopt *opt;
	size_t n;                       /* at most DOPT_MAX */
	const char *const *cli_only;    /* NULL-terminated names that are no
	                                 * configuration file keys (--config, ...) */
	enum dopt_src src[DOPT_MAX];
	int file_line[DOPT_MAX];        /* line of the key in the file (0: none) */
};
struct dopt *dopt_find(struct dopts *s, const char *name, size_t len);
/* Fills s from argv.  0, or 2 / 1 after printing "ferryd: reason". */
int dopt_parse_argv(struct dopts *s, int argc, char **argv);
/* Fills s from the INI file path (values already given on the command
 * line are checked but kept).  0, or 1 with "PATH:LINE: reason" in err. */
int dopt_load_file(struct dopts *s, const char *path, char *err, size_t errlen);
/* The same from an open stream (path: for messages and relative paths). */
int dopt_load_stream(struct dopts *s, FILE *f, const char *path, char *err, size_t errlen);
/* The check of HOST:PORT values. */
int dopt_check_hostport(const char *label, const char *v, char *err, size_t errlen);
/* "PATH:LINE: name" or "--name", for messages about o. */
const char *dopt_where(const struct dopts *s, const struct dopt *o, const char *config,
                       char *buf, size_t len);
bool dopt_same(const char *a, const char *b);
/* Frees the strings values point to (at exit). */
void dopt_free_all(void);

/* Reads a --secret-file: mode 0600 or stricter, at least 8 bytes without
 * trailing whitespace.  0 with *secret (caller wipes and frees) and *len,
 * or a negative errno with the reason in err. */
int daemon_secret_load(const char *path, char **secret, size_t *len, char *err, size_t errlen);
/* A --tls-key readable by group or others: -EPERM with the reason. */
int daemon_key_mode_check(const char *path, char *err, size_t errlen);

#endif
