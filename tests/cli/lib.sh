# Shared helpers of the ferry CLI integration tests (sourced).
# Binaries come from $FERRY_BUILD (set by CMake) or the first argument.
set -u
FERRY_BUILD=${FERRY_BUILD:-${1:-}}
[ -n "$FERRY_BUILD" ] || { echo "usage: $0 BUILD_DIR (or FERRY_BUILD=...)" >&2; exit 2; }
FERRYD=$FERRY_BUILD/ferryd
FERRY_BIN=$FERRY_BUILD/ferry
[ -x "$FERRYD" ] && [ -x "$FERRY_BIN" ] || { echo "no ferryd/ferry in $FERRY_BUILD" >&2; exit 2; }

T=$(mktemp -d "/tmp/ferry-test${FERRY_TEST_TAG:+-$FERRY_TEST_TAG}.XXXXXX")
POOL=$T/pool
FAILS=0
CHECKS=0

cleanup() {
	# Stop every ferryd this test started (their pids are in the lock files).
	for lock in "$T"/*/ferryd.lock; do
		[ -f "$lock" ] || continue
		pid=$(cat "$lock" 2>/dev/null)
		[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	done
	# FERRY_TEST_KEEP=1: leave the pools and logs for a post-mortem
	[ -n "${FERRY_TEST_KEEP:-}" ] && { echo "kept $T" >&2; return; }
	rm -rf "$T"
}
trap cleanup EXIT

ferry() { "$FERRY_BIN" --pool "$POOL" "$@"; }

pass() { CHECKS=$((CHECKS + 1)); }
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); CHECKS=$((CHECKS + 1)); }

# expect RC DESCRIPTION -- CMD...: runs CMD, checks its exit status; the
# command's stdout is in $OUT and stderr in $ERR afterwards.
expect() {
	local want=$1 what=$2
	shift 3
	local rc=0
	"$@" >"$T/out" 2>"$T/err" || rc=$?
	OUT=$(cat "$T/out")
	ERR=$(cat "$T/err")
	if [ "$rc" != "$want" ]; then
		fail "$what: exit $rc, expected $want (cmd: $*; stderr: $ERR)"
		return 1
	fi
	pass
	return 0
}

# expect_err RC PATTERN DESCRIPTION -- CMD...: also checks that stderr is
# one line matching PATTERN (grep -E).
expect_err() {
	local want=$1 pat=$2 what=$3
	shift 4
	expect "$want" "$what" -- "$@" || return 1
	if ! grep -Eq -- "$pat" <<<"$ERR"; then
		fail "$what: stderr '$ERR' does not match '$pat'"
		return 1
	fi
	if [ "$(wc -l <"$T/err")" -ne 1 ]; then
		fail "$what: stderr is not one line: '$ERR'"
		return 1
	fi
	return 0
}

check() { # check DESCRIPTION CONDITION...
	local what=$1
	shift
	if "$@"; then pass; else fail "$what"; fi
}

# Waits (bounded) until CMD succeeds.
wait_for() { # wait_for SECONDS CMD...
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -ge $deadline ] && return 1
		sleep 0.05
	done
}

# FERRY_DAEMON_ARGS: extra ferryd options for every daemon a test starts
# (the RBD runs of the tests give the backend there, see tests/rbd_lib.sh).
start_daemon() { # start_daemon [POOL]: returns once the socket is ready
	# shellcheck disable=SC2086
	"$FERRYD" --pool "${1:-$POOL}" --log-level debug ${FERRY_DAEMON_ARGS:-}
}

daemon_pid() { cat "${1:-$POOL}/ferryd.lock"; }

# True once no process holds the pool lock (a killed ferryd is gone).
lock_free() { flock -n "${1:-$POOL}/ferryd.lock" true; }

# A free TCP port on 127.0.0.1 (tests never use fixed ports).
free_port() {
	python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# small_fs_pool MIB: POOL on a fresh loop-mounted ext4 of MIB MiB at $T/m
# (a file system a test can fill), unmounted at exit after the pool's
# ferryd is killed.  Exits 77 (skipped) where that is impossible here.
small_fs_pool() {
	[ "$(id -u)" = 0 ] || { echo "SKIP: needs root for a loop mount"; exit 77; }
	MNT=$T/m
	truncate -s "${1}M" "$T/img"
	mkfs.ext4 -q -F -m 0 "$T/img" || { echo "SKIP: mkfs.ext4"; exit 77; }
	mkdir "$MNT"
	mount -o loop "$T/img" "$MNT" || { echo "SKIP: cannot loop-mount"; exit 77; }
	POOL=$MNT/pool
	trap small_fs_cleanup EXIT
}
small_fs_cleanup() {
	[ -f "$POOL/ferryd.lock" ] && kill -KILL "$(cat "$POOL/ferryd.lock")" 2>/dev/null &&
		wait_for 20 lock_free
	umount "$MNT"
	cleanup
}

kill_daemon() { # kill_daemon [POOL]: SIGKILL, then wait until the lock is free
	kill -KILL "$(daemon_pid "${1:-}")" && wait_for 20 lock_free "${1:-}"
}

stop_daemon() { # stop_daemon [POOL]: SIGTERM, then wait for the process to exit
	local p=${1:-$POOL} pid
	pid=$(daemon_pid "$p")
	kill -TERM "$pid" || return 1
	wait_for 20 lock_free "$p" && wait_for 20 proc_gone "$pid"
}

# True once pid has exited (a zombie counts: its exit handlers have run).
proc_gone() {
	! kill -0 "$1" 2>/dev/null || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

# Everything observable about the pool, to show that a refused command
# changed nothing.
pool_state() {
	ferry volume list --json
	local v
	for v in $(ferry volume list --json | python3 -c 'import json,sys; print(" ".join(x["name"] for x in json.load(sys.stdin)))'); do
		ferry snap list "$v" --json
		ferry volume md5 "$v"
	done
}

finish() {
	# A daemonized ferryd reports sanitizer findings only in its log.
	local log
	for log in "$T"/*/ferryd.log; do
		[ -f "$log" ] || continue
		if grep -Eq "ERROR: [A-Za-z]+Sanitizer|runtime error:" "$log"; then
			fail "sanitizer report in $log"
			grep -E -A30 "ERROR: [A-Za-z]+Sanitizer|runtime error:" "$log" | head -60 >&2
		fi
	done
	if [ "$FAILS" -ne 0 ]; then
		echo "$0: $FAILS of $CHECKS checks failed" >&2
		[ -f "$POOL/ferryd.log" ] && { echo "--- ferryd.log (tail)"; tail -n 30 "$POOL/ferryd.log"; } >&2
		exit 1
	fi
	echo "$0: all $CHECKS checks passed"
	exit 0
}
