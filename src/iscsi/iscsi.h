/* iscsi: an iSCSI target (RFC 7143) serving SCSI logical units.
 *
 * The transport knows nothing of the store: it holds the struct scsi_lu
 * pointers its caller hands it and runs their commands.  One epoll thread
 * owns every socket and PDU; a small worker pool runs scsi_lu_exec() (which
 * blocks on disk I/O) and hands completions back through an eventfd, so
 * disk I/O never blocks the network.  A malformed or hostile PDU ends at
 * most its own connection.
 *
 * Supported: SendTargets discovery, normal sessions (one connection each,
 * ErrorRecoveryLevel 0), AuthMethod None and CHAP (MD5, one-way or mutual,
 * per target), header/data digests (CRC32C), immediate and unsolicited
 * data, R2T, the CmdSN window, NOP, Text, Logout and task management.
 *
 * Every function is thread-safe and may be called while sessions run.
 */
#ifndef FERRY_ISCSI_H
#define FERRY_ISCSI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scsi/scsi.h"

#define ISCSI_NAME_MAX 223          /* RFC 7143: iSCSI names are <= 223 bytes */
#define ISCSI_CHAP_SECRET_MIN 12    /* RFC 7143 12.1.3 asks for >= 96 bits */
#define ISCSI_CHAP_SECRET_MAX 255
#define ISCSI_MAX_LUN 16383         /* flat space addressing */

struct iscsi_server;

/* Credentials for CHAP: user name and secret (both NUL-terminated; copied). */
struct iscsi_chap {
	const char *user;
	const char *secret;
};

/* Starts a target listening on "HOST:PORT" ("[v6]:PORT" for IPv6; PORT 0
 * picks a free port, see iscsi_server_port()).  Spawns the network thread
 * and the workers.  Caller owns *out and frees it with
 * iscsi_server_destroy().  Returns 0, -EINVAL for a bad address, or the
 * socket error (e.g. -EADDRINUSE). */
int iscsi_server_create(const char *listen_hostport, struct iscsi_server **out);
/* The same with `workers` threads running commands (0: the default, 4; at
 * most 64).  A store that waits on the network (RBD) keeps a queue depth
 * busy only with as many threads as commands in flight. */
int iscsi_server_create_workers(const char *listen_hostport, unsigned workers,
                                struct iscsi_server **out);
/* Closes every connection, waits for in-flight commands and frees srv.
 * The logical units handed in stay the caller's. */
void iscsi_server_destroy(struct iscsi_server *srv);
/* The TCP port actually listened on. */
int iscsi_server_port(const struct iscsi_server *srv);

/* Adds a target.  chap (may be NULL) makes initiators authenticate with
 * CHAP; mutual (may be NULL; requires chap) makes the target authenticate
 * back.  Strings are copied.  0, -EEXIST, or -EINVAL (bad name or secret:
 * secrets are 12..255 bytes, and the mutual secret must differ). */
int iscsi_target_add(struct iscsi_server *srv, const char *iqn, const struct iscsi_chap *chap,
                     const struct iscsi_chap *mutual);
/* Removes a target that has no LUN left, closing its sessions.  0,
 * -ENOENT, or -EBUSY while it still has LUNs. */
int iscsi_target_remove(struct iscsi_server *srv, const char *iqn);

/* Makes lu visible as LUN lun of target iqn.  lu is borrowed: the caller
 * keeps it alive until iscsi_lun_remove() returned.  0, -ENOENT (no
 * target), -EEXIST (LUN taken), -EINVAL (lun > ISCSI_MAX_LUN). */
int iscsi_lun_add(struct iscsi_server *srv, const char *iqn, uint64_t lun, struct scsi_lu *lu);
/* Hides a LUN and waits until no command runs on it any more; afterwards
 * the caller may destroy the lu.  0 or -ENOENT. */
int iscsi_lun_remove(struct iscsi_server *srv, const char *iqn, uint64_t lun);

/* True for a name ferry accepts for a target: "iqn.YYYY-MM.reversed.domain"
 * with an optional ":anything", "eui." and 16 hex digits, or "naa." and 16
 * or 32 hex digits (RFC 7143 4.2.7); the characters are a-z 0-9 '-' '.'
 * ':' (upper case and '_' are tolerated: names compare folded, and volume
 * names may hold '_'); at most ISCSI_NAME_MAX bytes.  The daemon checks
 * exports with it before the server ever sees them. */
bool iscsi_name_valid(const char *name);

/* Checks CHAP credentials as iscsi_target_add() will: chap (may be NULL)
 * and mutual (may be NULL; needs chap).  A user is 1..255 bytes without
 * control characters, a secret ISCSI_CHAP_SECRET_MIN..MAX bytes, and the
 * mutual secret differs from the initiator's.  0, or -EINVAL with a
 * one-line reason in err. */
int iscsi_chap_check(const struct iscsi_chap *chap, const struct iscsi_chap *mutual, char *err,
                     size_t errlen);

/* Discovery authentication: with chap set, a discovery session must log in
 * with CHAP, using these credentials or those of any target (mutual: the
 * target answers back with them when asked); NULL turns it off.  Either
 * way SendTargets lists a CHAP target only to a discovery session that
 * authenticated with that target's own user and secret (docs/ISCSI.md).
 * Strings are copied.  0 or -EINVAL (see iscsi_chap_check). */
int iscsi_discovery_auth(struct iscsi_server *srv, const struct iscsi_chap *chap,
                         const struct iscsi_chap *mutual);

/* One logged-in session (full feature phase), as iscsi_sessions() saw it. */
struct iscsi_session_info {
	char initiator[ISCSI_NAME_MAX + 1]; /* InitiatorName */
	char isid[13];                      /* ISID, 12 hex digits */
	char address[64];                   /* the initiator's "ip:port" ("[v6]:port") */
	char portal[64];                    /* the address it reached */
	char target[ISCSI_NAME_MAX + 1];    /* "" for a discovery session */
	uint64_t login_time;                /* unix seconds */
	uint16_t tsih;
	bool discovery;
};

/* A copy of the sessions logged in now: every one (iqn NULL) or those of
 * target iqn (no discovery sessions then), oldest first.  *out is malloc'd
 * (NULL when *n is 0) and the caller frees it.  Takes only the session
 * registry's lock, which the network thread holds just long enough to add
 * or drop an entry at login and logout: a query never waits for I/O and
 * never delays a command.  0 or -ENOMEM. */
int iscsi_sessions(struct iscsi_server *srv, const char *iqn, struct iscsi_session_info **out,
                   size_t *n);

/* Counters for tests and status output.  Memory for command data is
 * bounded (docs/ISCSI.md "Memory"): read_buffered never exceeds 8 MiB per
 * connection, nor 128 MiB plus 256 KiB per connection in all. */
struct iscsi_stats {
	uint64_t sessions;       /* live sessions, discovery included */
	uint64_t logins;         /* successful logins since start */
	uint64_t login_failures;
	uint64_t commands;       /* SCSI commands completed */
	uint64_t conn_errors;    /* connections dropped for protocol errors */
	uint64_t read_buffered;  /* bytes of READ (data-in) buffers now held */
	uint64_t write_buffered; /* bytes of WRITE data buffers now reserved */
};
void iscsi_server_stats(struct iscsi_server *srv, struct iscsi_stats *out);
/* Live normal sessions (full feature phase) logged in to target iqn.  Takes
 * only a statistics lock that no command waits on (for metrics scrapes). */
unsigned iscsi_target_sessions(struct iscsi_server *srv, const char *iqn);

#endif
