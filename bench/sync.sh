#!/bin/bash
# Initial sync with two real ferryd over loopback, TLS and --plaintext,
# against `cp --sparse=always` + fsync of the same sparse image.
#   bench/sync.sh BUILD_DIR [RESULTS_FILE]      (BENCH_A=MAIN_BUILD adds A)
# The volume (BENCH_SYNC_MIB, default 4096 MiB) holds random data in every
# other 1 MiB extent (half the volume) and never-written holes in between;
# it is loaded once over iSCSI (qemu-img convert, holes skipped) into a
# primary pool that every variant reuses.  Each ferry run: a fresh
# secondary pool, page cache dropped, then the time from `pair create` to
# the pair idle with cycle 1 committed (the secondary has fsynced it), and
# the CPU seconds of each ferryd in that time; then `pair rm` (which drops
# the primary's snapshot).  The cp run: page cache dropped, then
# `cp --sparse=always IMG NEW && sync NEW` (sync FILE = fsync).
# Metrics: sync_s (wall), cpu_primary_s, cpu_secondary_s, and per build
# and round tls_over_plain = TLS wall / plaintext wall.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_setup sync "$1"
OUT=${2:-}
trap 'ferryd_stop_all; rm -rf "$T"' EXIT
MIB=${BENCH_SYNC_MIB:-4096}

secret_file "$T/secret"
sparse_image "$T/img" "$MIB"
IP=$(free_port)
ferryd_start B "$T/pa" --iscsi "127.0.0.1:$IP" --secret-file "$T/secret"
"$B/ferry" --pool "$T/pa" volume create v --size "${MIB}M" >/dev/null
"$B/ferry" --pool "$T/pa" export add v >/dev/null
iscsi_load "iscsi://127.0.0.1:$IP/iqn.2026-11.io.ferry:v/0" "$T/img"
"$B/ferry" --pool "$T/pa" export rm v >/dev/null
ferryd_stop "$T/pa"
echo "# volume ${MIB} MiB: $((MIB / 2)) MiB random data in 1 MiB extents, holes between"

run_ferry() { # ROUND BUILD MODE
	local r=$1 v=$2 mode=$3 flags=() pb t0 t1 ca cb pa_pid pb_pid
	[ "$mode" = plain ] && flags=(--plaintext)
	rm -rf "$T/pb"
	ferryd_start "$v" "$T/pa" --secret-file "$T/secret" "${flags[@]}"
	pb=$(free_port)
	ferryd_start "$v" "$T/pb" --listen "127.0.0.1:$pb" --secret-file "$T/secret" "${flags[@]}"
	pa_pid=$(ferryd_pid "$T/pa"); pb_pid=$(ferryd_pid "$T/pb")
	settle
	local l=$(load1)
	ca=$(cpu_s "$pa_pid"); cb=$(cpu_s "$pb_pid"); t0=$(now)
	"${BUILD[$v]}/ferry" --pool "$T/pa" pair create v --peer "127.0.0.1:$pb" --period 3600 >/dev/null
	pair_wait_synced "$v" "$T/pa" v 1
	t1=$(now)
	record sync_s "$v-$mode" "$r" "$(elapsed "$t0" "$t1")" s "$l"
	record cpu_primary_s "$v-$mode" "$r" "$(sub "$(cpu_s "$pa_pid")" "$ca")" s "$l"
	record cpu_secondary_s "$v-$mode" "$r" "$(sub "$(cpu_s "$pb_pid")" "$cb")" s "$l"
	if [ "$r" = 1 ]; then
		pair_json "$v" "$T/pa" v | python3 -c '
import json, sys
c = json.load(sys.stdin)["last_cycle"]
print("# %s: wire %d bytes for %d data bytes (%.4fx), %d zero bytes, cycle %.2f s" % (
    sys.argv[1], c["wire_bytes"], c["data_bytes"], c["wire_bytes"] / max(c["data_bytes"], 1),
    c["zero_bytes"], c["seconds"]))' "$v-$mode"
	fi
	"${BUILD[$v]}/ferry" --pool "$T/pa" pair rm v >/dev/null
	ferryd_stop "$T/pa" "$T/pb"
	eval "WALL_${v}_${mode}=$(elapsed "$t0" "$t1")"
}

run_cp() { # ROUND
	rm -f "$T/cp.img"
	settle
	local l=$(load1) t0 t1
	t0=$(now)
	cp --sparse=always "$T/img" "$T/cp.img"
	sync "$T/cp.img"
	t1=$(now)
	record sync_s cp "$1" "$(elapsed "$t0" "$t1")" s "$l"
	rm -f "$T/cp.img"
}

reference sync_s cp lower
variants="cp"
for v in $BUILDS; do variants="$variants $v-tls $v-plain"; done
for r in $(seq "$BENCH_ROUNDS"); do
	for x in $(order "$r" $variants); do
		case $x in
		cp) run_cp "$r" ;;
		*) run_ferry "$r" "${x%-*}" "${x#*-}" ;;
		esac
	done
	for v in $BUILDS; do
		eval "tw=\$WALL_${v}_tls pw=\$WALL_${v}_plain"
		record tls_over_plain "$v" "$r" "$(python3 -c "print('%.3f' % ($tw / $pw))")" x
	done
done
summarize "$OUT"
