#!/usr/bin/env bash
# iSCSI/SCSI conformance: libiscsi's iscsi-test-cu, the whole suite with
# --dataloss, against a thin LUN served by ferry and against tgt (rdwr
# backing file) in the same run; prints the comparison and fails when ferry
# does not pass a test that tgt passes.
#
#   tests/iscsi/conformance.sh BUILD_DIR [--table FILE]
#
# --table FILE  also writes the per-test comparison as a Markdown table.
# Environment:
#   FERRY_CONFORMANCE_SERVER=auto|ferryd|harness   what serves the ferry LUN
#       (auto: ferryd when it has --iscsi and `ferry export add` works,
#       otherwise BUILD_DIR/tests/scsi_target_harness, the same
#       iscsi + scsi + store stack without the daemon)
#   FERRY_CONFORMANCE_SIZE   LUN size (default 64M)
#
# iscsi-test-cu's own summary counts a skipped test as passed, so the
# counts here come from the per-test lines (conformance_parse.awk).  When
# tgtd cannot be started, ferry is compared against the tgt results
# recorded on the reference machine (conformance_tgt_baseline.txt).
# Exit: 0 ok, 1 regression against tgt or setup failure, 77 skipped
# (iscsi-test-cu not installed).
set -u -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: conformance.sh BUILD_DIR [--table FILE]}
build=$(cd "$build" && pwd)
shift
table=""
while [ $# -gt 0 ]; do
	case "$1" in
	--table) table=$2; shift 2 ;;
	*) echo "conformance: unknown argument $1" >&2; exit 1 ;;
	esac
done
server=${FERRY_CONFORMANCE_SERVER:-auto}
size=${FERRY_CONFORMANCE_SIZE:-64M}

if ! command -v iscsi-test-cu >/dev/null 2>&1; then
	echo "conformance: SKIP: iscsi-test-cu not installed (Debian libiscsi-bin)"
	exit 77
fi

tmp=$(mktemp -d /tmp/ferry-conformance.XXXXXX)
pids=()
tgt_ctl=""
cleanup() {
	if [ -n "$tgt_ctl" ]; then
		# tgtd ignores SIGTERM: ask it to exit through its control port
		# (it refuses while a target exists).
		tgtadm -C "$tgt_ctl" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
		tgtadm -C "$tgt_ctl" --op delete --mode system >/dev/null 2>&1 || true
	fi
	for p in "${pids[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$p" 2>/dev/null || break
			kill "$p" 2>/dev/null || true
			sleep 0.1
		done
		kill -9 "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
t_start=$(date +%s)

# A TCP port nobody listens on (127.0.0.1 only); the bind race is narrow
# and a clash shows up as a start-up failure, not as wrong results.
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 40000))
		if ! ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# Waits (bounded) until a command succeeds.
wait_for() {
	local tries=$1
	shift
	for _ in $(seq "$tries"); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

run_suite() { # name url
	local log=$tmp/$1.log
	timeout 900 iscsi-test-cu --dataloss -t ALL "$2" >"$log" 2>&1
	local rc=$?
	awk -f "$here/conformance_parse.awk" "$log" | sort >"$tmp/$1.res"
	local n
	n=$(wc -l <"$tmp/$1.res")
	if [ "$n" -lt 200 ]; then
		echo "conformance: $1: only $n test results (iscsi-test-cu rc $rc); log tail:" >&2
		tail -20 "$log" >&2
		return 1
	fi
}

# ---- ferry ------------------------------------------------------------------
ferryd=$build/ferryd
ferry=$build/ferry
harness=$build/tests/scsi_target_harness
use_ferryd=0
if [ "$server" != harness ] && [ -x "$ferryd" ] && [ -x "$ferry" ] &&
   "$ferryd" --help 2>&1 | grep -q -- '--iscsi' && "$ferry" --help 2>&1 | grep -q 'export'; then
	use_ferryd=1
fi
if [ "$server" = ferryd ] && [ $use_ferryd = 0 ]; then
	echo "conformance: ferryd has no --iscsi / ferry no export command" >&2
	exit 1
fi

start_ferry_ferryd() {
	local port
	port=$(free_port) || return 1
	mkdir -p "$tmp/pool"
	"$ferryd" --pool "$tmp/pool" --foreground --iscsi "127.0.0.1:$port" >"$tmp/ferryd.log" 2>&1 &
	server_pid=$!
	server_log=$tmp/ferryd.log
	pids+=($!)
	wait_for 100 "$ferry" --pool "$tmp/pool" volume list || return 1
	"$ferry" --pool "$tmp/pool" volume create conf --size "$size" >/dev/null || return 1
	"$ferry" --pool "$tmp/pool" export add conf >/dev/null || return 1
	ferry_url="iscsi://127.0.0.1:$port/iqn.2026-11.io.ferry:conf/0"
}

start_ferry_harness() {
	[ -x "$harness" ] || { echo "conformance: $harness not built" >&2; return 1; }
	"$harness" --pool "$tmp/hpool" --listen 127.0.0.1:0 --iqn iqn.2026-11.io.ferry:conf \
		--size "$size" --port-file "$tmp/hport" >"$tmp/harness.log" 2>&1 &
	server_pid=$!
	server_log=$tmp/harness.log
	pids+=($!)
	wait_for 100 test -s "$tmp/hport" || { cat "$tmp/harness.log" >&2; return 1; }
	ferry_url="iscsi://127.0.0.1:$(cat "$tmp/hport")/iqn.2026-11.io.ferry:conf/0"
}

ferry_url=""
server_pid=""
server_log=""
if [ $use_ferryd = 1 ]; then
	if ! start_ferry_ferryd; then
		echo "conformance: ferryd did not come up; log:" >&2
		tail -20 "$tmp/ferryd.log" >&2
		[ "$server" = ferryd ] && exit 1
		use_ferryd=0
	fi
fi
if [ $use_ferryd = 0 ]; then
	start_ferry_harness || exit 1
fi
what=$([ $use_ferryd = 1 ] && echo "ferryd --iscsi" || echo "scsi_target_harness")
echo "conformance: ferry ($what) at $ferry_url"
t0=$(date +%s)
run_suite ferry "$ferry_url" || exit 1
t_ferry=$(($(date +%s) - t0))

# ---- extras: what -t ALL skips only for want of a second URL or of a
# write-protected LUN; ferry's own claims, so any failure fails the run.
start_ro() {
	if [ $use_ferryd = 1 ]; then
		"$ferry" --pool "$tmp/pool" volume create ro --size 4M >/dev/null &&
			"$ferry" --pool "$tmp/pool" export add ro --read-only >/dev/null || return 1
		ro_url="iscsi://127.0.0.1:${ferry_url#iscsi://127.0.0.1:}"
		ro_url="${ro_url%%/iqn.*}/iqn.2026-11.io.ferry:ro/0"
	else
		"$harness" --pool "$tmp/ropool" --listen 127.0.0.1:0 --iqn iqn.2026-11.io.ferry:ro \
			--size 4M --read-only --port-file "$tmp/roport" >"$tmp/ro.log" 2>&1 &
		pids+=($!)
		wait_for 100 test -s "$tmp/roport" || return 1
		ro_url="iscsi://127.0.0.1:$(cat "$tmp/roport")/iqn.2026-11.io.ferry:ro/0"
	fi
}
timeout 300 iscsi-test-cu --dataloss -t ALL.MultipathIO "$ferry_url" "$ferry_url" >"$tmp/mp.log" 2>&1
awk -f "$here/conformance_parse.awk" "$tmp/mp.log" >"$tmp/extra.res"
if start_ro; then
	timeout 300 iscsi-test-cu --dataloss -t ALL.ReadOnly "$ro_url" >"$tmp/ro-suite.log" 2>&1
	awk -f "$here/conformance_parse.awk" "$tmp/ro-suite.log" >>"$tmp/extra.res"
else
	echo "ReadOnly.ReadOnlySBC FAIL" >>"$tmp/extra.res"
	echo "conformance: could not export a read-only LUN" >&2
fi

# The target must stop cleanly after the whole suite: under ASan/UBSan a
# leak or error report makes its exit status non-zero.
if [ -n "$server_pid" ]; then
	kill -TERM "$server_pid"
	wait "$server_pid"
	hrc=$?
	if [ $hrc -ne 0 ]; then
		echo "conformance: the target exited with status $hrc after the suite; log tail:" >&2
		tail -40 "$server_log" >&2
		exit 1
	fi
fi

# ---- tgt --------------------------------------------------------------------
tgt_source="tgt (tgtd, this run)"
start_tgt() {
	command -v tgtd >/dev/null 2>&1 && command -v tgtadm >/dev/null 2>&1 || return 1
	local port ctl
	port=$(free_port) || return 1
	# The control port names tgtd's IPC socket; pick one nobody uses.
	for _ in $(seq 50); do
		ctl=$((1000 + RANDOM % 30000))
		[ -e "/var/run/tgtd/socket.$ctl" ] || break
	done
	truncate -s "$size" "$tmp/tgt.img" || return 1
	tgtd -f --iscsi "portal=127.0.0.1:$port" -C "$ctl" >"$tmp/tgtd.log" 2>&1 &
	pids+=($!)
	tgt_ctl=$ctl
	wait_for 100 tgtadm -C "$ctl" --op show --mode sys || return 1
	tgtadm -C "$ctl" --lld iscsi --op new --mode target --tid 1 \
		-T iqn.2026-11.io.ferry.conformance:tgt || return 1
	tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 \
		-b "$tmp/tgt.img" --bstype rdwr || return 1
	tgtadm -C "$ctl" --lld iscsi --op bind --mode target --tid 1 -I ALL || return 1
	tgt_url="iscsi://127.0.0.1:$port/iqn.2026-11.io.ferry.conformance:tgt/1"
}
t_tgt=0
if start_tgt; then
	echo "conformance: tgt at $tgt_url"
	t0=$(date +%s)
	if ! run_suite tgt "$tgt_url"; then
		echo "conformance: tgt run failed; using the recorded baseline" >&2
		tgt_source="tgt (recorded baseline)"
		sort "$here/conformance_tgt_baseline.txt" >"$tmp/tgt.res"
	fi
	t_tgt=$(($(date +%s) - t0))
else
	echo "conformance: tgtd could not be started; comparing with the recorded baseline" >&2
	tail -5 "$tmp/tgtd.log" >&2 2>/dev/null || true
	tgt_source="tgt (recorded baseline)"
	sort "$here/conformance_tgt_baseline.txt" >"$tmp/tgt.res"
fi

# ---- comparison ---------------------------------------------------------------
join -a1 -a2 -e MISSING -o 0,1.2,2.2 "$tmp/tgt.res" "$tmp/ferry.res" >"$tmp/cmp"
count() { awk -v c="$2" -v r="$1" '$c == r' "$tmp/cmp" | wc -l; }
printf '\n%-22s %8s %8s %8s %8s\n' "" tests passed failed skipped
for side in tgt ferry; do
	col=$([ $side = tgt ] && echo 2 || echo 3)
	label=$([ $side = tgt ] && echo "$tgt_source" || echo "ferry ($what)")
	printf '%-22s %8d %8d %8d %8d\n' "${label:0:22}" \
		$(($(count PASS $col) + $(count FAIL $col) + $(count SKIP $col))) \
		"$(count PASS $col)" "$(count FAIL $col)" "$(count SKIP $col)"
done
echo
echo "ferry does not pass (tgt's result in brackets):"
awk '$3 != "PASS" { printf "  %-45s %s [tgt %s]\n", $1, $3, $2 }' "$tmp/cmp"
regress=$(awk '$2 == "PASS" && $3 != "PASS" { print $1 }' "$tmp/cmp")
echo
echo "extra runs against ferry (MultipathIO with two sessions, ReadOnly on a read-only LUN):"
awk '{ printf "  %-45s %s\n", $1, $2 }' "$tmp/extra.res"
extra_bad=$(awk '$2 == "FAIL" { print $1 }' "$tmp/extra.res")
[ "$(grep -c PASS "$tmp/extra.res")" -ge 5 ] || extra_bad="$extra_bad (extras-did-not-run)"
t_total=$(($(date +%s) - t_start))
echo
echo "time: ferry suite ${t_ferry}s, tgt suite ${t_tgt}s, total ${t_total}s"

if [ -n "$table" ]; then
	{
		echo "| test | tgt | ferry |"
		echo "| --- | --- | --- |"
		awk '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$tmp/cmp"
	} >"$table"
fi

if [ -n "$extra_bad" ]; then
	echo "conformance: FAIL: extra runs:" $extra_bad
	exit 1
fi
if [ -n "$regress" ]; then
	echo "conformance: FAIL: ferry does not pass what tgt passes:" $regress
	exit 1
fi
fp=$(count PASS 3)
ff=$(count FAIL 3)
fs=$(count SKIP 3)
echo "conformance: ok: no test that tgt passes fails on ferry"
echo "ferry: $fp passed, $ff failed, $fs skipped"
exit 0
