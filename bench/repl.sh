#!/bin/bash
# Replication benchmarks (issue 3, item 6); results go to docs/PERFORMANCE.md.
# usage: bench/repl.sh BUILD_DIR   (BENCH_REPL_SIZE=4G by default)
#  1. initial sync of a volume half random data, half zeros, over loopback,
#     against `cp --sparse=always` of the same raw image; also with two
#     real ferryd, with the peak RSS (VmHWM) of each daemon;
#  2. an incremental cycle after 1% of the volume changed in random 4 KiB
#     writes, against `rsync --inplace --no-whole-file` of the raw image to
#     a local rsync daemon; wire bytes against changed bytes;
#  3. a cycle after 1 GiB was discarded: wire bytes;
#  4. a 1 s period under a steady 10 MB/s random write load.
set -euo pipefail
B=$(cd "${1:-build}" && pwd)
SIZE=${BENCH_REPL_SIZE:-4G}
LOAD_S=${BENCH_REPL_LOAD_S:-15}
T=$(mktemp -d /var/tmp/ferry-repl-bench.XXXXXX)
RSYNC_PID=
cleanup() {
	for l in "$T"/*/ferryd.lock; do
		[ -f "$l" ] && kill -TERM "$(cat "$l")" 2>/dev/null || true
	done
	[ -n "$RSYNC_PID" ] && kill "$RSYNC_PID" 2>/dev/null || true
	rm -rf "$T"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
val() { awk -v k="$1" '$1==k{print $2}' "$T/results"; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
ratio() { printf "%.2f" "$(echo "$1 / $2" | bc -l)"; }
human() { numfmt --to=iec-i --suffix=B "$1"; }

bytes=$(numfmt --from=iec "${SIZE%B}")
echo "volume $SIZE ($bytes bytes): first half random, second half zeros"

# ---- 1. initial sync --------------------------------------------------------------
P=$(free_port)
"$B/bench/repl_bench" init "$T/p" "$P" "$SIZE" "$T/img" >"$T/results"
cp_s=$(secs cp --sparse=always "$T/img" "$T/old.img")
init_s=$(val initial_cycle_seconds)
echo "initial sync (in-process engine over loopback TCP): $init_s s, cp --sparse=always: $cp_s s"
echo "  throughput ratio (cp time / sync time): $(ratio "$cp_s" "$init_s")  (goal >= 0.7)"
echo "  wire bytes $(human "$(val initial_wire_bytes)"), data $(human "$(val initial_data_bytes)"), zero records $(human "$(val initial_zero_bytes)")"

# the same with two real ferryd (the CLI loads the image first)
printf 'bench-secret-%s\n' "$RANDOM$RANDOM" >"$T/secret"
chmod 600 "$T/secret"
PB=$(free_port)
"$B/ferryd" --pool "$T/da" --secret-file "$T/secret"
"$B/ferryd" --pool "$T/db" --listen "127.0.0.1:$PB" --secret-file "$T/secret"
fa() { "$B/ferry" --pool "$T/da" "$@"; }
fa volume create v --size "$SIZE" >/dev/null
fa volume write v "$T/img" --offset 0 >/dev/null
t0=$(date +%s.%N)
fa pair create v --peer "127.0.0.1:$PB" --period 3600 >/dev/null
until [ "$(fa pair status v --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" = idle ]; do sleep 0.1; done
t1=$(date +%s.%N)
d_s=$(echo "$t1 - $t0" | bc -l)
hwm() { awk '/VmHWM/{print $2 * 1024}' "/proc/$(cat "$1/ferryd.lock")/status"; }
echo "initial sync, two ferryd: $(printf %.2f "$d_s") s, ratio to cp $(ratio "$cp_s" "$d_s")"
echo "  peak RSS: primary ferryd $(human "$(hwm "$T/da")"), secondary ferryd $(human "$(hwm "$T/db")")"
kill -TERM "$(cat "$T/da/ferryd.lock")" "$(cat "$T/db/ferryd.lock")"
rm -f "$T/da/ferryd.lock" "$T/db/ferryd.lock"

# ---- 2. incremental: 1% in random 4 KiB writes -----------------------------------------------
"$B/bench/repl_bench" incr "$T/p" "$P" "$T/img" >>"$T/results"
RP=$(free_port)
mkdir -p "$T/rs"
mv "$T/old.img" "$T/rs/img"
cat >"$T/rsyncd.conf" <<CONF
use chroot = no
uid = $(id -un)
gid = $(id -gn)
pid file = $T/rsyncd.pid
[m]
path = $T/rs
read only = no
CONF
rsync --daemon --no-detach --config="$T/rsyncd.conf" --port="$RP" --address=127.0.0.1 &
RSYNC_PID=$!
for _ in $(seq 50); do rsync "rsync://127.0.0.1:$RP/" >/dev/null 2>&1 && break; sleep 0.1; done
rs_s=$(secs rsync --inplace --no-whole-file "$T/img" "rsync://127.0.0.1:$RP/m/img")
cmp -s "$T/img" "$T/rs/img" || echo "  (warning: rsync result differs)"
inc_s=$(val incr_cycle_seconds)
chg=$(val incr_changed_bytes)
wire=$(val incr_wire_bytes)
echo "incremental cycle after 1% random 4 KiB writes: $inc_s s, rsync --inplace --no-whole-file: $rs_s s"
echo "  speed-up over rsync: $(ratio "$rs_s" "$inc_s")x  (goal >= 20x)"
echo "  wire $(human "$wire") for $(human "$chg") changed: $(printf %.3f "$(echo "$wire / $chg" | bc -l)")x  (goal <= 1.05x)"

# ---- 3. discard of 1 GiB -------------------------------------------------------------------------
"$B/bench/repl_bench" discard "$T/p" "$P" >>"$T/results"
echo "cycle after discarding $(human "$(val discard_discarded_bytes)"): wire $(human "$(val discard_wire_bytes)") ($(val discard_wire_bytes) bytes, goal < 1 MiB), $(val discard_cycle_seconds) s"

# ---- 4. 10 MB/s steady load, 1 s period --------------------------------------------------------
"$B/bench/repl_bench" load "$T/p" "$P" "$LOAD_S" >>"$T/results"
echo "10 MB/s random 4 KiB writes, period 1 s, $LOAD_S s: $(val load_cycles) cycles, longest $(val load_max_cycle_seconds) s, max RPO lag $(val load_max_rpo_lag_s) s"
