/* The command grammar shared by the CLI and the daemon.
 *
 * To add a command group: write its struct ctl_cmd_spec array below and
 * add one line to `groups`; then give the daemon one file of handlers and
 * one line in its dispatch table (src/daemon/dispatch.c). */
#include "ctl/ctl.h"

#include <errno.h>
#include <string.h>

#define F_JSON {"json", CTL_A_BOOL, 0, NULL, NULL, "print JSON instead of a table"}

/* clang-format off */
static const struct ctl_cmd_spec volume_cmds[] = {
	{"create", "create a thin-provisioned volume",
	 {{"NAME", CTL_A_VOL, 0, NULL, NULL, "volume name"}},
	 {{"size", CTL_A_SIZE, CTL_REQUIRED, "SIZE", NULL,
	   "size in bytes or with a K/M/G/T suffix; a multiple of the block size"},
	  {"object-size", CTL_A_SIZE, 0, "SIZE", NULL,
	   "object (stripe unit) size, a power of two from 64K to 64M (default 4M)"},
	  {"block-size", CTL_A_CHOICE, 0, "BS", "512|4096", "logical block size (default 512)"}}},
	{"list", "list volumes",
	 {{0}},
	 {F_JSON}},
	{"info", "show a volume's size, geometry, allocation and snapshot count",
	 {{"NAME", CTL_A_VOL, 0, NULL, NULL, "volume name"}},
	 {F_JSON}},
	{"rm", "remove a volume",
	 {{"NAME", CTL_A_VOL, 0, NULL, NULL, "volume name"}},
	 {{"force", CTL_A_BOOL, 0, NULL, NULL, "remove it with its snapshots"}}},
	{"write", "write the bytes of FILE (default: stdin) at --offset; durable when it returns",
	 {{"NAME", CTL_A_VOL_RW, 0, NULL, NULL, "volume name (snapshots are read-only)"},
	  {"FILE", CTL_A_FILE_IN, CTL_OPTIONAL, NULL, NULL, "input file, or - for stdin"}},
	 {{"offset", CTL_A_SIZE, CTL_REQUIRED, "OFF", NULL, "byte offset in the volume"},
	  {"length", CTL_A_SIZE, 0, "LEN", NULL,
	   "expected input length, checked against the volume before anything is "
	   "written (the CLI sets it when FILE is a regular file)"}}},
	{"discard", "make a byte range read as zeros and free its space",
	 {{"NAME", CTL_A_VOL_RW, 0, NULL, NULL, "volume name (snapshots are read-only)"}},
	 {{"offset", CTL_A_SIZE, CTL_REQUIRED, "OFF", NULL, "byte offset in the volume"},
	  {"length", CTL_A_SIZE, CTL_REQUIRED, "LEN", NULL, "length in bytes"}}},
	{"export", "write the raw image of the volume or snapshot to FILE (default: stdout)",
	 {{"NAME[@SNAP]", CTL_A_VOL_OPT_SNAP, 0, NULL, NULL, "volume, or one of its snapshots"},
	  {"FILE", CTL_A_FILE_OUT, CTL_OPTIONAL, NULL, NULL, "output file, or - for stdout"}},
	 {{0}}},
	{"md5", "print the md5 of the image, like md5sum",
	 {{"NAME[@SNAP]", CTL_A_VOL_OPT_SNAP, 0, NULL, NULL, "volume, or one of its snapshots"}},
	 {{0}}},
	{"resize", "change a volume's size: growing is online (iSCSI initiators are told; a "
	 "pair's secondary follows at the next cycle)",
	 {{"NAME", CTL_A_VOL, 0, NULL, NULL, "volume name"}},
	 {{"size", CTL_A_SIZE, CTL_REQUIRED, "SIZE", NULL,
	   "the new size in bytes or with a K/M/G/T suffix; a multiple of the block size"},
	  {"shrink", CTL_A_BOOL, 0, NULL, NULL,
	   "allow a smaller size: the data past it is dropped (refused for a volume that has "
	   "snapshots, is exported or is in a pair)"}}},
	{"clone", "make NEW a writable thin clone of snapshot SRC@SNAP, at once (no data is "
	 "copied); the snapshot is kept while NEW depends on it",
	 {{"SRC@SNAP", CTL_A_VOL_SNAP, 0, NULL, NULL, "volume and snapshot to clone"},
	  {"NEW", CTL_A_VOL, 0, NULL, NULL, "name of the new volume"}},
	 {{0}}},
	{"flatten", "copy into clone NAME what it still reads from its parent snapshot, making "
	 "it an independent volume (online; shows progress)",
	 {{"NAME", CTL_A_VOL, 0, NULL, NULL, "volume name (a clone)"}},
	 {{0}}},
	{"takeover", "shared (RBD) pool: serve here a volume whose holding ferryd is dead; "
	 "its client is fenced (blocklisted) first",
	 {{"NAME", CTL_A_VOL, 0, NULL, NULL, "volume name"}},
	 {{"wait", CTL_A_U64, 0, "SECONDS", NULL,
	   "wait this long for a killed holder's cluster session to lapse (default 60)"}}},
	{"release", "shared (RBD) pool: stop serving a volume and give it up, so that another "
	 "ferryd can take it (planned move)",
	 {{"NAME", CTL_A_VOL, 0, NULL, NULL, "volume name"}},
	 {{0}}},
};

static const struct ctl_cmd_spec snap_cmds[] = {
	{"create", "freeze the volume's current content as a snapshot; for a consistency group, "
	 "every member's at one cut (writes are held for it, not failed)",
	 {{"NAME@SNAP", CTL_A_VOL_SNAP, 0, NULL, NULL,
	   "volume (or consistency group) and new snapshot name"}},
	 {{0}}},
	{"list", "list a volume's snapshots in creation order",
	 {{"NAME", CTL_A_VOL, 0, NULL, NULL, "volume name"}},
	 {F_JSON}},
	{"rm", "delete a snapshot",
	 {{"NAME@SNAP", CTL_A_VOL_SNAP, 0, NULL, NULL, "volume and snapshot name"}},
	 {{0}}},
	{"diff", "list the 4 KiB-exact extents changed from FROM (default: creation) to TO",
	 {{"NAME@FROM", CTL_A_VOL_SNAP, CTL_OPTIONAL, NULL, NULL, "older snapshot"},
	  {"NAME@TO", CTL_A_VOL_SNAP, 0, NULL, NULL, "newer snapshot"}},
	 {F_JSON}},
};

/* Consistency groups (src/daemon/cmd_group.c). */
#define F_GROUP {"NAME", CTL_A_NAME, 0, NULL, NULL, \
	"group name (groups and volumes share one namespace)"}
static const struct ctl_cmd_spec group_cmds[] = {
	{"create", "make a consistency group of volumes: `snap create NAME@SNAP` snapshots them "
	 "all at one cut",
	 {F_GROUP,
	  {"VOLUME...", CTL_A_VOL, CTL_REST, NULL, NULL,
	   "member volumes: each in no other group and in no pair of its own"}},
	 {{0}}},
	{"add", "add a volume to a group",
	 {F_GROUP, {"VOLUME", CTL_A_VOL, 0, NULL, NULL, "volume (in no group, in no pair)"}},
	 {{0}}},
	{"remove", "take a volume out of a group (the volume and its snapshots stay)",
	 {F_GROUP, {"VOLUME", CTL_A_VOL, 0, NULL, NULL, "member volume"}},
	 {{0}}},
	{"rm", "delete a group (its volumes and their snapshots stay)",
	 {F_GROUP},
	 {{0}}},
	{"list", "list the consistency groups",
	 {{0}},
	 {F_JSON}},
	{"info", "show a group's members and its last cut",
	 {F_GROUP},
	 {F_JSON}},
	{"clone", "clone every member M of a group at its group snapshot SNAP as volume "
	 "NEWGROUP-M (thin, at once), and make NEWGROUP a group of the clones",
	 {{"GROUP@SNAP", CTL_A_VOL_SNAP, 0, NULL, NULL,
	   "group and group snapshot (made by snap create GROUP@SNAP)"},
	  {"NEWGROUP", CTL_A_NAME, 0, NULL, NULL,
	   "name of the new group (its volumes are named NEWGROUP-MEMBER)"}},
	 {{0}}},
};

/* Replication pairs (src/repl, src/daemon/cmd_pair.c). */
#define F_PAIR {"NAME", CTL_A_NAME, 0, NULL, NULL, "pair name (the local volume's name)"}
#define F_PERIOD(d) {"period", CTL_A_DURATION, 0, "DUR", NULL, \
	"cycle period: seconds, or with s/m/h (90, 90s, 5m, 1h); at least 1 s" d}
#define F_BANDWIDTH(d) {"bandwidth", CTL_A_SIZE, 0, "RATE", NULL, \
	"wire bytes per second, K/M/G suffix; 0 = no limit" d}
#define F_COMPRESS(d) {"compress", CTL_A_CHOICE, 0, "on|off", "on|off|zstd|none", \
	"zstd-compress data records (zstd = on, none = off)" d}
#define F_INFLIGHT(d) {"max-inflight", CTL_A_U64, 0, "N", NULL, \
	"objects read and in flight at once, 1..1024" d}
#define F_PEER_TIMEOUT(d) {"peer-timeout", CTL_A_DURATION, 0, "DUR", NULL, \
	"state peer-down after this long without contact with the other site; " \
	"0 = the default, max(3 x period, 30 s)" d}
#define F_SPLIT_BRAIN(d) {"split-brain", CTL_A_CHOICE, 0, NULL, "fence|keep-writing", \
	"when another site is promoted over this primary: fence (its LUNs refuse " \
	"writes until `pair demote`) or keep-writing" d}
#define F_KEEP(d) {"keep", CTL_A_U64, 0, "N", NULL, \
	"recovery points: the secondary keeps the last N synced cycles, 1..10000 " \
	"(`pair points`; space: what changed between them)" d}
#define F_KEEP_FOR(d) {"keep-for", CTL_A_DURATION, 0, "DUR", NULL, \
	"recovery points: the secondary also keeps the synced cycles of the last DUR " \
	"(2h, 7d); 0 = none" d}
static const struct ctl_cmd_spec pair_cmds[] = {
	{"create", "replicate volume NAME to the ferryd at --peer; starts the initial sync "
	 "(or, after a pair rm, sends only what changed since the snapshot both sites kept)",
	 {F_PAIR},
	 {{"peer", CTL_A_STR, CTL_REQUIRED, "HOST:PORT", NULL, "the secondary site's ferryd --listen"},
	  {"remote-name", CTL_A_NAME, 0, "NAME", NULL, "secondary volume name (default: NAME)"},
	  F_PERIOD(" (default 60)"),
	  F_INFLIGHT(" (default 8)"),
	  F_BANDWIDTH(" (default 0)"),
	  F_COMPRESS(" (default off)"),
	  F_PEER_TIMEOUT(""),
	  F_SPLIT_BRAIN(" (default fence)"),
	  F_KEEP(" (default 1)"),
	  F_KEEP_FOR(" (default 0)"),
	  {"force", CTL_A_BOOL, 0, NULL, NULL, "overwrite an existing non-empty secondary volume"}}},
	{"set", "change a pair's settings on the primary: applies by the next cycle, sends no "
	 "volume data, the secondary takes them at once",
	 {F_PAIR},
	 {F_PERIOD(""), F_BANDWIDTH(""), F_COMPRESS(""), F_INFLIGHT(""), F_PEER_TIMEOUT(""),
	  F_SPLIT_BRAIN(""), F_KEEP(""), F_KEEP_FOR("")}},
	{"list", "list pairs, primary and secondary: NAME ROLE STATE PEER LAST-SYNC RPO-LAG",
	 {{0}},
	 {{"json", CTL_A_BOOL, 0, NULL, NULL,
	   "print a JSON array of the objects `pair status --json` prints"}}},
	{"status", "state, last synced snapshot, RPO lag, peer contact, progress and settings of a "
	 "pair; states: initial-sync, idle, syncing, paused, demoting, split-brain, resyncing, "
	 "error (cycles fail: see error), peer-down (no contact for longer than the peer timeout)",
	 {F_PAIR},
	 {F_JSON}},
	{"sync", "start a cycle now (after any running one)",
	 {F_PAIR},
	 {{"wait", CTL_A_BOOL, 0, NULL, NULL,
	   "return once everything written before is committed on the secondary (exit 0) "
	   "or the cycle failed (exit 1)"}}},
	{"pause", "stop cycles (a running transfer stops and later resumes)",
	 {F_PAIR},
	 {{0}}},
	{"resume", "start cycles again",
	 {F_PAIR},
	 {{0}}},
	{"verify", "compare a synced snapshot on both sites while cycles go on "
	 "(exit 0 match, 1 mismatch, 3 could not verify)",
	 {F_PAIR},
	 {{"snapshot", CTL_A_NAME, 0, "SNAP", NULL,
	   "the snapshot to compare (default: the last synced one); held on both sites "
	   "until the verify ends"},
	  {"json", CTL_A_BOOL, 0, NULL, NULL,
	   "print {snapshot, primary_md5, secondary_md5, objects_compared, "
	   "mismatching_objects, match, seconds}"}}},
	{"rm", "end the pair on both sides; the secondary keeps its volume; both keep the last "
	 "synced snapshot so that a later pair create sends only what changed",
	 {F_PAIR},
	 {{0}}},
	{"demote", "primary: refuse writes, run a final cycle, become the secondary-to-be",
	 {F_PAIR},
	 {{0}}},
	{"promote", "secondary: become primary; the volume turns writable",
	 {F_PAIR},
	 {{"force", CTL_A_BOOL, 0, NULL, NULL,
	   "the primary is lost: take over at the last synced snapshot without its consent "
	   "(refused while the primary answers as primary)"},
	  {"at", CTL_A_NAME, 0, "SNAP", NULL,
	   "take over at this recovery point (`pair points`) instead of the last synced one; "
	   "the later points stay until removed with `snap rm`"}}},
	{"points", "recovery points of a pair on this site, oldest first: the synced cycles the "
	 "secondary keeps (--keep, --keep-for; a primary keeps its last synced one)",
	 {F_PAIR},
	 {{"json", CTL_A_BOOL, 0, NULL, NULL,
	   "print an array of {snapshot, cycle, time, bytes, last, pinned}"}}},
		{"resync", "new primary after a split brain: send the blocks that differ to the demoted "
	 "old primary (refused unless the pair is in split brain)",
	 {F_PAIR},
	 {{0}}},
};
/* clang-format on */

static const struct ctl_group_spec group_pair = {"pair", "replication to another site",
                                                 pair_cmds, ARRAY_SIZE(pair_cmds)};

/* clang-format off */
static const struct ctl_cmd_spec export_cmds[] = {
	{"add", "serve a volume (or a snapshot, read-only) as an iSCSI LUN",
	 {{"VOLUME[@SNAP]", CTL_A_VOL_OPT_SNAP, 0, NULL, NULL, "volume, or one of its snapshots"}},
	 {{"iqn", CTL_A_STR, 0, "IQN",  NULL,
	   "target name (default iqn.2026-11.io.ferry:VOLUME); an existing one gets another LUN"},
	  {"lun", CTL_A_U64, 0, "N", NULL, "LUN number in the target (default 0)"},
	  {"chap", CTL_A_STR, 0, "USER:SECRET", NULL,
	   "initiators must log in with CHAP (secret of 12 to 255 characters); visible "
	   "in ps and shell history: prefer --chap-file"},
	  {"mutual-chap", CTL_A_STR, 0, "USER:SECRET", NULL,
	   "the target authenticates back to initiators that ask (needs --chap)"},
	  {"chap-file", CTL_A_STR, 0, "FILE", NULL,
	   "read the CHAP credentials from FILE (- for stdin): a USER:SECRET line, "
	   "optionally a second one for mutual CHAP; FILE must not be accessible by "
	   "group or others"},
	  {"read-only", CTL_A_BOOL, 0, NULL, NULL, "writes fail with DATA PROTECT"}}},
	{"rm", "stop serving an export (waits for its commands in flight; warns of logged-in initiators)",
	 {{"VOLUME[@SNAP]", CTL_A_VOL_OPT_SNAP, 0, NULL, NULL, "exported volume or snapshot"}},
	 {{0}}},
	{"list", "list the iSCSI exports",
	 {{0}},
	 {F_JSON}},
	{"sessions", "list the initiators logged in to the exports (or to NAME's)",
	 {{"NAME", CTL_A_VOL_OPT_SNAP, CTL_OPTIONAL, NULL, NULL, "exported volume or snapshot"}},
	 {F_JSON}},
};
/* clang-format on */
static const struct ctl_group_spec group_export = {"export", "iSCSI exports of volumes",
                                                   export_cmds, ARRAY_SIZE(export_cmds)};
/* clang-format off */
static const struct ctl_cmd_spec status_cmds[] = {
	{"", "the pool at a glance: daemon, volumes, exports, pairs",
	 {{0}},
	 {F_JSON}},
};
/* clang-format on */
static const struct ctl_group_spec group_status = {"status", "the pool at a glance",
                                                   status_cmds, ARRAY_SIZE(status_cmds)};
static const struct ctl_group_spec group_volume = {"volume", "thin-provisioned volumes",
                                                   volume_cmds, ARRAY_SIZE(volume_cmds)};
static const struct ctl_group_spec group_snap = {"snap", "snapshots and their differences",
                                                 snap_cmds, ARRAY_SIZE(snap_cmds)};
static const struct ctl_group_spec group_group = {"group", "consistency groups of volumes",
                                                  group_cmds, ARRAY_SIZE(group_cmds)};

/* The command groups: one line per group. */
static const struct ctl_group_spec *const groups[] = {
	&group_volume,
	&group_snap,
	&group_group,
	&group_pair,
	&group_export,
	&group_status,
};

const struct ctl_group_spec *const *ctl_groups(size_t *n)
{
	*n = ARRAY_SIZE(groups);
	return groups;
}

static size_t n_pos(const struct ctl_cmd_spec *s)
{
	size_t n = 0;
	while (n < CTL_MAX_POS && s->pos[n].name)
		n++;
	return n;
}

static size_t n_flags(const struct ctl_cmd_spec *s)
{
	size_t n = 0;
	while (n < CTL_MAX_FLAGS && s->flag[n].name)
		n++;
	return n;
}

/* A group that is itself one command ("ferry status"): one spec, verb "". */
static bool group_is_command(const struct ctl_group_spec *g)
{
	return g->n_cmds == 1 && !g->cmds[0].verb[0];
}

static const struct ctl_group_spec *find_group(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(groups); i++)
		if (strcmp(groups[i]->name, name) == 0)
			return groups[i];
	return NULL;
}

static const struct ctl_cmd_spec *find_cmd(const struct ctl_group_spec *g, const char *verb)
{
	for (size_t i = 0; i < g->n_cmds; i++)
		if (strcmp(g->cmds[i].verb, verb) == 0)
			return &g->cmds[i];
	return NULL;
}

static bool choice_ok(const char *choices, const char *v)
{
	size_t vl = strlen(v);
	const char *p = choices;
	while (*p) {
		const char *bar = strchr(p, '|');
		size_t l = bar ? (size_t)(bar - p) : strlen(p);
		if (l == vl && memcmp(p, v, l) == 0)
			return true;
		if (!bar)
			break;
		p = bar + 1;
	}
	return false;
}

static int split_vol(const char *s, struct ctl_val *v, bool want_snap, bool snap_ok,
                     const char *what, char *err, size_t errlen)
{
	const char *at = strchr(s, '@');
	size_t vl = at ? (size_t)(at - s) : strlen(s);
	if (at && !snap_ok) {
		snprintf(err, errlen, "%s: bad volume name '%s' (a snapshot is not allowed here)",
		         what, s);
		return -EINVAL;
	}
	if (!at && want_snap) {
		snprintf(err, errlen, "%s: expected NAME@SNAP, got '%s'", what, s);
		return -EINVAL;
	}
	if (vl > CTL_NAME_MAX) {
		snprintf(err, errlen, "%s: bad volume name in '%s' (at most %u characters)", what, s,
		         CTL_NAME_MAX);
		return -EINVAL;
	}
	memcpy(v->vol, s, vl);
	v->vol[vl] = '\0';
	if (!name_valid(v->vol)) {
		snprintf(err, errlen,
		         "%s: bad volume name '%s' (names are [A-Za-z0-9][A-Za-z0-9._-]{0,63})",
		         what, v->vol);
		return -EINVAL;
	}
	v->snap[0] = '\0';
	if (at) {
		const char *sn = at + 1;
		if (!name_valid(sn)) {
			snprintf(err, errlen,
			         "%s: bad snapshot name '%s' (names are [A-Za-z0-9][A-Za-z0-9._-]{0,63})",
			         what, sn);
			return -EINVAL;
		}
		snprintf(v->snap, sizeof(v->snap), "%s", sn);
	}
	return 0;
}

/* Converts s for spec into v; what names the argument in messages. */
static int convert(const struct ctl_arg_spec *a, const char *s, struct ctl_val *v,
                   const char *what, char *err, size_t errlen)
{
	int r;
	v->str = s;
	v->set = true;
	switch (a->type) {
	case CTL_A_BOOL:
		v->u64 = 1;
		return 0;
	case CTL_A_SIZE:
		r = parse_size(s, &v->u64);
		if (r < 0) {
			snprintf(err, errlen, "%s: bad size '%s' (bytes, or a number with K/M/G/T)%s",
			         what, s, r == -ERANGE ? ": too large" : "");
			return -EINVAL;
		}
		return 0;
	case CTL_A_U64:
		if (parse_u64(s, &v->u64) < 0) {
			snprintf(err, errlen, "%s: bad number '%s'", what, s);
			return -EINVAL;
		}
		return 0;
	case CTL_A_DURATION:
		r = parse_duration(s, &v->u64);
		if (r < 0) {
			snprintf(err, errlen, "%s: bad duration '%s' (seconds, or a number with s/m/h/d: "
			         "90, 90s, 5m, 1h)%s", what, s, r == -ERANGE ? ": too large" : "");
			return -EINVAL;
		}
		return 0;
	case CTL_A_CHOICE:
		if (!choice_ok(a->choices, s)) {
			snprintf(err, errlen, "%s: bad value '%s' (one of %s)", what, s, a->choices);
			return -EINVAL;
		}
		if (parse_u64(s, &v->u64) < 0)
			v->u64 = 0;
		return 0;
	case CTL_A_STR:
		return 0;
	case CTL_A_NAME:
		if (!name_valid(s)) {
			snprintf(err, errlen,
			         "%s: bad name '%s' (names are [A-Za-z0-9][A-Za-z0-9._-]{0,63})", what, s);
			return -EINVAL;
		}
		return 0;
	case CTL_A_VOL:
		return split_vol(s, v, false, false, what, err, errlen);
	case CTL_A_VOL_RW:
		if (strchr(s, '@')) {
			snprintf(err, errlen, "%s: snapshots are read-only", s);
			return -EINVAL;
		}
		return split_vol(s, v, false, false, what, err, errlen);
	case CTL_A_VOL_SNAP:
		return split_vol(s, v, true, true, what, err, errlen);
	case CTL_A_VOL_OPT_SNAP:
		return split_vol(s, v, false, true, what, err, errlen);
	case CTL_A_FILE_IN:
	case CTL_A_FILE_OUT:
		if (!*s) {
			snprintf(err, errlen, "%s: empty file name", what);
			return -EINVAL;
		}
		return 0;
	}
	snprintf(err, errlen, "%s: internal error: unknown argument type", what);
	return -EINVAL;
}

static bool is_help(const char *s)
{
	return strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0;
}

int ctl_cmd_parse(int argc, const char *const argv[], struct ctl_cmd *cmd, char *err,
                  size_t errlen)
{
	memset(cmd, 0, sizeof(*cmd));
	if (errlen)
		err[0] = '\0';
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (is_help(argv[i]))
			cmd->help = true;
	}
	if (argc < 1 || (cmd->help && is_help(argv[0]))) {
		if (cmd->help)
			return 0;
		snprintf(err, errlen, "missing command (see ferry --help)");
		return -EINVAL;
	}
	cmd->group = find_group(argv[0]);
	if (!cmd->group) {
		if (cmd->help)
			return 0;
		snprintf(err, errlen, "unknown command '%s' (see ferry --help)", argv[0]);
		return -EINVAL;
	}
	const struct ctl_cmd_spec *s;
	int first = 2; /* argv index of the first argument */
	if (group_is_command(cmd->group)) {
		s = &cmd->group->cmds[0];
		first = 1;
	} else {
		if (argc < 2 || (cmd->help && is_help(argv[1]))) {
			if (cmd->help)
				return 0;
			snprintf(err, errlen, "missing command after '%s' (see ferry %s --help)",
			         argv[0], argv[0]);
			return -EINVAL;
		}
		s = find_cmd(cmd->group, argv[1]);
		if (!s) {
			if (cmd->help)
				return 0;
			snprintf(err, errlen, "unknown command '%s %s' (see ferry %s --help)", argv[0],
			         argv[1], argv[0]);
			return -EINVAL;
		}
	}
	cmd->spec = s;
	if (cmd->help)
		return 0;
	/* "volume create", or "status" for a group that is one command */
	char cname[2 * CTL_NAME_MAX + 2];
	snprintf(cname, sizeof(cname), "%s%s%s", argv[0], first == 2 ? " " : "",
	         first == 2 ? argv[1] : "");

	size_t np = n_pos(s), nf = n_flags(s);
	bool rest = np && (s->pos[np - 1].flags & CTL_REST);
	int posi[CTL_MAX_ARGC + 1];
	size_t ngiven = 0;
	bool only_pos = false;
	for (int i = first; i < argc; i++) {
		const char *a = argv[i];
		if (!only_pos && strcmp(a, "--") == 0) {
			only_pos = true;
			continue;
		}
		if (!only_pos && a[0] == '-' && a[1] != '\0') {
			const char *name = a + (a[1] == '-' ? 2 : 1);
			const char *eq = strchr(name, '=');
			size_t nl = eq ? (size_t)(eq - name) : strlen(name);
			size_t k = 0;
			for (; k < nf; k++)
				if (a[1] == '-' && strlen(s->flag[k].name) == nl &&
				    memcmp(s->flag[k].name, name, nl) == 0)
					break;
			if (k == nf) {
				snprintf(err, errlen, "unknown option '%.*s' for '%s' (see ferry %s --help)",
				         (int)(nl + (size_t)(name - a)), a, cname, cname);
				return -EINVAL;
			}
			const struct ctl_arg_spec *f = &s->flag[k];
			char what[48];
			snprintf(what, sizeof(what), "--%s", f->name);
			if (cmd->flag[k].set) {
				snprintf(err, errlen, "%s given twice", what);
				return -EINVAL;
			}
			const char *val;
			int vi = i;
			if (f->type == CTL_A_BOOL) {
				if (eq) {
					snprintf(err, errlen, "%s takes no value", what);
					return -EINVAL;
				}
				val = a;
			} else if (eq) {
				val = eq + 1;
			} else {
				if (i + 1 >= argc) {
					snprintf(err, errlen, "%s needs a value (%s)", what,
					         f->meta ? f->meta : "VALUE");
					return -EINVAL;
				}
				val = argv[++i];
				vi = i;
			}
			if (convert(f, val, &cmd->flag[k], what, err, errlen) < 0)
				return -EINVAL;
			cmd->flag[k].argi = vi;
			continue;
		}
		if (ngiven >= np && !rest) {
			snprintf(err, errlen, "unexpected argument '%s' for '%s'", a, cname);
			return -EINVAL;
		}
		if (ngiven >= ARRAY_SIZE(posi)) {
			snprintf(err, errlen, "too many arguments for '%s'", cname);
			return -EINVAL;
		}
		posi[ngiven++] = i;
	}

	size_t nreq = 0;
	for (size_t k = 0; k < np; k++)
		if (!(s->pos[k].flags & CTL_OPTIONAL))
			nreq++;
	if (ngiven < nreq) {
		/* With too few values every optional positional is left out,
		 * so the missing one is the (ngiven+1)-th required one. */
		size_t used = 0;
		for (size_t k = 0; k < np; k++) {
			if (s->pos[k].flags & CTL_OPTIONAL)
				continue;
			if (used++ == ngiven) {
				snprintf(err, errlen, "missing %s for '%s'", s->pos[k].name, cname);
				break;
			}
		}
		return -EINVAL;
	}
	/* Optional positionals take values only when there are more values
	 * than required ones, in order: "snap diff A@x A@y" fills FROM, "snap
	 * diff A@y" leaves it out. */
	size_t opt_fill = ngiven - nreq, next = 0;
	for (size_t k = 0; k < np && next < ngiven; k++) {
		if (s->pos[k].flags & CTL_OPTIONAL) {
			if (!opt_fill)
				continue;
			opt_fill--;
		}
		int i = posi[next++];
		if (convert(&s->pos[k], argv[i], &cmd->pos[k], s->pos[k].name, err, errlen) < 0)
			return -EINVAL;
		cmd->pos[k].argi = i;
		if (s->pos[k].flags & CTL_REST) {
			cmd->rest[cmd->n_rest++] = argv[i];
			for (; next < ngiven; next++) {
				struct ctl_val tmp;
				memset(&tmp, 0, sizeof(tmp));
				if (convert(&s->pos[k], argv[posi[next]], &tmp, s->pos[k].name, err,
				            errlen) < 0)
					return -EINVAL;
				cmd->rest[cmd->n_rest++] = argv[posi[next]];
			}
		}
	}
	for (size_t k = 0; k < nf; k++) {
		if ((s->flag[k].flags & CTL_REQUIRED) && !cmd->flag[k].set) {
			snprintf(err, errlen, "missing --%s %s for '%s'", s->flag[k].name,
			         s->flag[k].meta ? s->flag[k].meta : "VALUE", cname);
			return -EINVAL;
		}
	}
	return 0;
}

static const struct ctl_val unset_val;

const struct ctl_val *ctl_pos(const struct ctl_cmd *cmd, const char *name)
{
	if (cmd->spec)
		for (size_t k = 0; k < n_pos(cmd->spec); k++)
			if (strcmp(cmd->spec->pos[k].name, name) == 0)
				return &cmd->pos[k];
	return &unset_val;
}

const struct ctl_val *ctl_flag(const struct ctl_cmd *cmd, const char *name)
{
	if (cmd->spec)
		for (size_t k = 0; k < n_flags(cmd->spec); k++)
			if (strcmp(cmd->spec->flag[k].name, name) == 0)
				return &cmd->flag[k];
	return &unset_val;
}

const struct ctl_val *ctl_file_arg(const struct ctl_cmd *cmd, enum ctl_arg_type type)
{
	if (cmd->spec)
		for (size_t k = 0; k < n_pos(cmd->spec); k++)
			if (cmd->spec->pos[k].type == type)
				return &cmd->pos[k];
	return NULL;
}

static bool is_file(const struct ctl_arg_spec *a)
{
	return a->type == CTL_A_FILE_IN || a->type == CTL_A_FILE_OUT;
}

static void usage_line(const struct ctl_group_spec *g, const struct ctl_cmd_spec *s,
                       struct sbuf *b)
{
	sbuf_printf(b, "%s%s%s", g->name, s->verb[0] ? " " : "", s->verb);
	for (size_t k = 0; k < n_pos(s); k++)
		if (!is_file(&s->pos[k]))
			sbuf_printf(b, (s->pos[k].flags & CTL_OPTIONAL) ? " [%s]" : " %s", s->pos[k].name);
	for (size_t k = 0; k < n_flags(s); k++) {
		const struct ctl_arg_spec *f = &s->flag[k];
		if (f->flags & CTL_HIDDEN)
			continue;
		bool req = f->flags & CTL_REQUIRED;
		const char *meta = f->type == CTL_A_CHOICE && !(f->meta && strchr(f->meta, '|')) ? f->choices : f->meta;
		if (f->type == CTL_A_BOOL)
			sbuf_printf(b, " [--%s]", f->name);
		else
			sbuf_printf(b, req ? " --%s %s" : " [--%s %s]", f->name, meta ? meta : "VALUE");
	}
	/* FILE last, as in "volume write NAME --offset OFF [FILE|-]". */
	for (size_t k = 0; k < n_pos(s); k++)
		if (is_file(&s->pos[k]))
			sbuf_printf(b, (s->pos[k].flags & CTL_OPTIONAL) ? " [%s|-]" : " %s|-",
			            s->pos[k].name);
}

/* Appends "  LHS  text" with text wrapped to 80 columns under column 25. */
static void help_item(struct sbuf *b, const char *lhs, const char *text, const char *suffix)
{
	char full[512];
	snprintf(full, sizeof(full), "%s%s", text, suffix);
	sbuf_printf(b, "  %-22s", lhs);
	size_t col = 24 + (strlen(lhs) > 22 ? strlen(lhs) - 22 : 0);
	const char *p = full;
	bool first = true;
	while (*p) {
		size_t w = strcspn(p, " ");
		if (!first && col + 1 + w > 79) {
			sbuf_printf(b, "\n%24s", "");
			col = 24;
			first = true;
		}
		sbuf_printf(b, " %.*s", (int)w, p);
		col += 1 + w;
		first = false;
		p += w;
		while (*p == ' ')
			p++;
	}
	sbuf_puts(b, "\n");
}

void ctl_help(const struct ctl_cmd *cmd, const char *prog, struct sbuf *b)
{
	if (!cmd->group) {
		sbuf_printf(b, "Commands (run '%s GROUP COMMAND --help' for details):\n", prog);
		for (size_t i = 0; i < ARRAY_SIZE(groups); i++) {
			const struct ctl_group_spec *g = groups[i];
			for (size_t j = 0; j < g->n_cmds; j++) {
				sbuf_puts(b, "  ");
				usage_line(g, &g->cmds[j], b);
				sbuf_puts(b, "\n");
			}
		}
		return;
	}
	const struct ctl_group_spec *g = cmd->group;
	if (!cmd->spec) {
		sbuf_printf(b, "%s %s: %s\n\nCommands:\n", prog, g->name, g->summary);
		for (size_t j = 0; j < g->n_cmds; j++)
			sbuf_printf(b, "  %-8s %s\n", g->cmds[j].verb, g->cmds[j].summary);
		sbuf_printf(b, "\nRun '%s %s COMMAND --help' for its arguments.\n", prog, g->name);
		return;
	}
	const struct ctl_cmd_spec *s = cmd->spec;
	sbuf_printf(b, "usage: %s --pool DIR ", prog);
	usage_line(g, s, b);
	sbuf_printf(b, "\n\n%s.\n", s->summary);
	if (n_pos(s) || n_flags(s))
		sbuf_puts(b, "\n");
	for (size_t k = 0; k < n_pos(s); k++)
		help_item(b, s->pos[k].name, s->pos[k].help, "");
	for (size_t k = 0; k < n_flags(s); k++) {
		const struct ctl_arg_spec *f = &s->flag[k];
		if (f->flags & CTL_HIDDEN)
			continue;
		char lhs[64];
		const char *meta = f->type == CTL_A_CHOICE && !(f->meta && strchr(f->meta, '|')) ? f->choices : f->meta;
		if (f->type == CTL_A_BOOL)
			snprintf(lhs, sizeof(lhs), "--%s", f->name);
		else
			snprintf(lhs, sizeof(lhs), "--%s %s", f->name, meta ? meta : "VALUE");
		help_item(b, lhs, f->help, (f->flags & CTL_REQUIRED) ? " (required)" : "");
	}
}
