/* ctl: the control protocol between the ferry CLI and ferryd.
 *
 * Three parts, all shared by both ends so that they can never disagree:
 *
 *  1. The frame codec (pure: no I/O, no allocation, fuzzed by
 *     tests/fuzz/fuzz_ctl.c).  A frame is
 *         u32 big-endian payload length | u8 type | payload
 *     REQ carries the argv of one command (u32 argc, then argc
 *     NUL-terminated strings); IN / IN_END stream the CLI's input; OUT and
 *     ERR carry bytes for the CLI's stdout / stderr; PROGRESS carries
 *     (u64 done, u64 total, u8 label length, label); EXIT carries the i32
 *     exit status and ends the exchange.
 *
 *  2. The command grammar: one table of command groups, each a table of
 *     commands with typed positional arguments and flags.  The CLI parses
 *     locally (so usage errors and --help need no daemon) and the daemon
 *     parses again what it receives.  A new command group is one array of
 *     struct ctl_cmd_spec plus one line in the group table (grammar.c).
 *
 *  3. Blocking frame I/O on a socket with a deadline per frame (ctl_send,
 *     ctl_recv), used by both ends.
 *
 * Exchange: the CLI sends REQ; for a command that reads input it then
 * sends IN frames and one IN_END; the daemon answers with any number of
 * OUT / ERR / PROGRESS frames and exactly one EXIT, then closes.
 */
#ifndef FERRY_CTL_H
#define FERRY_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

/* ---- frames ------------------------------------------------------------ */
enum ctl_type {
	CTL_REQ = 1,
	CTL_IN = 2,
	CTL_IN_END = 3,
	CTL_OUT = 4,
	CTL_ERR = 5,
	CTL_PROGRESS = 6,
	CTL_EXIT = 7,
};

#define CTL_HDR_LEN 5u
/* Data moves in chunks of at most CTL_CHUNK bytes; the extra room is for
 * a REQ's argv, which is never larger than that. */
#define CTL_CHUNK (1u << 20)
#define CTL_MAX_PAYLOAD (CTL_CHUNK + 4096u)
#define CTL_MAX_FRAME (CTL_HDR_LEN + CTL_MAX_PAYLOAD)
#define CTL_MAX_ARGC 64u
#define CTL_LABEL_MAX 64u
#define CTL_NAME_MAX 64u /* as name_valid() */

/* A decoded frame.  payload points into the buffer given to the decoder
 * (it is not copied). */
struct ctl_frame {
	uint8_t type;
	uint32_t len;
	const uint8_t *payload;
};

/* Encodes one frame (header + payload) into buf.  Returns the number of
 * bytes written, -EMSGSIZE when len exceeds CTL_MAX_PAYLOAD, -ENOBUFS when
 * cap is too small, -EINVAL for an unknown type. */
int ctl_frame_encode(void *buf, size_t cap, uint8_t type, const void *payload, uint32_t len);
/* Checks a 5-byte header.  0, -EPROTO (unknown type) or -EMSGSIZE. */
int ctl_hdr_decode(const uint8_t hdr[CTL_HDR_LEN], uint8_t *type, uint32_t *len);
/* Decodes the first frame of buf.  Returns the frame's total length
 * (header included), 0 when buf holds only part of a frame, or
 * -EPROTO / -EMSGSIZE for a frame that can never be valid. */
int ctl_frame_decode(const void *buf, size_t len, struct ctl_frame *f);

/* REQ payload.  Encode returns the payload length or -ENOBUFS/-E2BIG
 * (too many arguments). */
int ctl_req_encode(void *buf, size_t cap, int argc, const char *const argv[]);
/* Fills argv[0..*argc) with pointers into payload (which must stay alive)
 * and argv[*argc] = NULL; max is the size of argv.  -EPROTO for malformed
 * payloads (missing NUL, trailing bytes, argc beyond CTL_MAX_ARGC or max-1). */
int ctl_req_decode(const void *payload, size_t len, int *argc, const char **argv, size_t max);

/* PROGRESS payload; label is cut to CTL_LABEL_MAX bytes.  Encode returns
 * the payload length or -ENOBUFS. */
int ctl_progress_encode(void *buf, size_t cap, uint64_t done, uint64_t total, const char *label);
/* label must hold CTL_LABEL_MAX + 1 bytes; it is NUL-terminated. */
int ctl_progress_decode(const void *payload, size_t len, uint64_t *done, uint64_t *total,
                        char *label);

/* EXIT payload: 4 bytes. */
int ctl_exit_encode(void *buf, size_t cap, int32_t status);
int ctl_exit_decode(const void *payload, size_t len, int32_t *status);

/* ---- grammar ----------------------------------------------------------- */
enum ctl_arg_type {
	CTL_A_BOOL,         /* flag without a value */
	CTL_A_SIZE,         /* bytes with an optional K/M/G/T suffix -> u64 */
	CTL_A_U64,          /* plain unsigned integer -> u64 */
	CTL_A_DURATION,     /* seconds: 90, 90s, 5m, 1h, 2d -> u64 seconds */
	CTL_A_CHOICE,       /* one of the '|'-separated spec choices (u64 if numeric) */
	CTL_A_STR,          /* any string */
	CTL_A_NAME,         /* a valid name (pair, export...) */
	CTL_A_VOL,          /* NAME of a volume */
	CTL_A_VOL_RW,       /* NAME of a volume that is written: NAME@SNAP is refused */
	CTL_A_VOL_SNAP,     /* NAME@SNAP */
	CTL_A_VOL_OPT_SNAP, /* NAME or NAME@SNAP */
	CTL_A_FILE_IN,      /* FILE or "-": the CLI streams it as IN frames */
	CTL_A_FILE_OUT,     /* FILE or "-": the CLI writes OUT frames to it */
};

#define CTL_OPTIONAL 0x1u /* positional that may be left out */
#define CTL_REQUIRED 0x2u /* flag that must be given */
#define CTL_HIDDEN 0x4u   /* flag not shown by --help */
#define CTL_REST 0x8u     /* last positional: takes every value left (at least
                           * one); all of them are in ctl_cmd.rest */

struct ctl_arg_spec {
	const char *name; /* positional: metavar ("NAME"); flag: without "--" */
	enum ctl_arg_type type;
	unsigned flags;
	const char *meta;    /* flag value's metavar in help ("SIZE"); a CHOICE shows its
	                      * choices, or meta when meta lists some ("on|off") */
	const char *choices; /* CTL_A_CHOICE: "512|4096" */
	const char *help;
};

#define CTL_MAX_POS 4
#define CTL_MAX_FLAGS 12

struct ctl_cmd_spec {
	const char *verb;
	const char *summary;
	struct ctl_arg_spec pos[CTL_MAX_POS];     /* ends at the first NULL name */
	struct ctl_arg_spec flag[CTL_MAX_FLAGS];  /* ends at the first NULL name */
};

struct ctl_group_spec {
	const char *name;
	const char *summary;
	const struct ctl_cmd_spec *cmds;
	size_t n_cmds;
};

/* One parsed argument.  str points into the argv given to ctl_cmd_parse. */
struct ctl_val {
	bool set;
	const char *str;
	uint64_t u64;                  /* SIZE, U64, numeric CHOICE, BOOL (1) */
	char vol[CTL_NAME_MAX + 1];       /* VOL* types: the volume name */
	char snap[CTL_NAME_MAX + 1];      /* VOL*SNAP types: the snapshot or "" */
	int argi;                      /* index in argv of the value */
};

struct ctl_cmd {
	const struct ctl_group_spec *group; /* NULL: top-level help */
	const struct ctl_cmd_spec *spec;    /* NULL: help of the group */
	bool help;                          /* --help was asked for */
	struct ctl_val pos[CTL_MAX_POS];
	struct ctl_val flag[CTL_MAX_FLAGS];
	/* The values of a CTL_REST positional, in order (checked as its type;
	 * pointers into argv).  pos[] holds the first of them. */
	const char *rest[CTL_MAX_ARGC];
	size_t n_rest;
};

/* Parses argv (argv[0] is the group, e.g. {"volume","create","db",
 * "--size","1G"}) into cmd.  Returns 0 or -EINVAL with a one-line message
 * in err (a usage error).  With --help anywhere, returns 0 with cmd->help
 * set and cmd->group / cmd->spec as far as they could be matched.  cmd
 * points into argv, which must outlive it. */
int ctl_cmd_parse(int argc, const char *const argv[], struct ctl_cmd *cmd, char *err,
                  size_t errlen);
/* The value of the positional / flag called name (a static unset value
 * when the command has no such argument).  Never NULL. */
const struct ctl_val *ctl_pos(const struct ctl_cmd *cmd, const char *name);
const struct ctl_val *ctl_flag(const struct ctl_cmd *cmd, const char *name);
/* The positional of type CTL_A_FILE_IN / CTL_A_FILE_OUT, or NULL when the
 * command takes none (cmd->spec must be set). */
const struct ctl_val *ctl_file_arg(const struct ctl_cmd *cmd, enum ctl_arg_type type);
/* Appends help text for what cmd names (top level, a group or one
 * command) to b.  prog is "ferry". */
void ctl_help(const struct ctl_cmd *cmd, const char *prog, struct sbuf *b);
/* The group table, for listings. */
const struct ctl_group_spec *const *ctl_groups(size_t *n);

/* ---- blocking frame I/O ------------------------------------------------- */
/* Sends one frame on a stream socket (MSG_NOSIGNAL), giving up after
 * timeout_ms of no progress.  0, -ETIMEDOUT, -EPIPE, ... */
int ctl_send(int fd, uint8_t type, const void *payload, uint32_t len, int timeout_ms);
/* Receives one frame into buf (CTL_MAX_FRAME bytes, caller-owned); f's
 * payload points into buf.  0, -ETIMEDOUT, -ECONNRESET on a clean EOF
 * before a header, -EPIPE on EOF inside a frame, -EPROTO / -EMSGSIZE. */
int ctl_recv(int fd, uint8_t *buf, struct ctl_frame *f, int timeout_ms);

#endif
