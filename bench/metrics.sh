#!/bin/bash
# Cost of ferryd --metrics, on a pool with 50 pairs and 20 exported LUNs:
#   1. GET /metrics: time per scrape (curl, back to back), page size and
#      samples, and ferryd's CPU over windows with no scrape and with one
#      scrape a second, interleaved (A B B A ...).
#   2. iSCSI 4 KiB IOPS on one of the LUNs without and with a 1 s scrape
#      loop, interleaved rounds in the same run: random reads (iscsi-perf,
#      32 in flight) and scattered writes (qemu-img bench, depth 32).
#   bench/metrics.sh BUILD_DIR
# Env: BENCH_PAIRS (50), BENCH_LUNS (20), BENCH_ROUNDS (5), BENCH_SECONDS
# (10: one IOPS measurement), BENCH_CPU_SECONDS (30: one CPU window).
# The machine may be shared: the load average is printed with the results,
# and A/B alternate so that a change of load hits both.
set -u
B=$(cd "${1:?usage: bench/metrics.sh BUILD_DIR}" && pwd)
NP=${BENCH_PAIRS:-50}
NL=${BENCH_LUNS:-20}
ROUNDS=${BENCH_ROUNDS:-5}
DUR=${BENCH_SECONDS:-10}
CPUW=${BENCH_CPU_SECONDS:-30}
T=$(mktemp -d /tmp/ferry-bench-metrics.XXXXXX)
LOOP_PID=
cleanup() {
	[ -n "$LOOP_PID" ] && kill "$LOOP_PID" 2>/dev/null
	for p in a b; do
		[ -f "$T/$p/ferryd.lock" ] && kill -TERM "$(cat "$T/$p/ferryd.lock")" 2>/dev/null
	done
	wait 2>/dev/null
	sleep 1
	rm -rf "$T"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
fa() { "$B/ferry" --pool "$T/a" "$@"; }
med() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int(NR*p/100+0.999); if (i<1) i=1; print a[i]}'; }

IP=$(free_port) MP=$(free_port) LP=$(free_port)
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/secret"
chmod 600 "$T/secret"
"$B/ferryd" --pool "$T/b" --listen 127.0.0.1:$LP --secret-file "$T/secret" --log-level warn || exit 1
"$B/ferryd" --pool "$T/a" --iscsi 127.0.0.1:$IP --metrics 127.0.0.1:$MP --secret-file "$T/secret" \
	--log-level warn || exit 1
PID=$(cat "$T/a/ferryd.lock")
echo "# machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# setup: $NP volumes of 256 MiB, 1 MiB written to each, $NP pairs (period 10 s) to a second"
echo "#        ferryd on loopback, $NL of the volumes exported (one target each)"
head -c 1M /dev/urandom >"$T/d"
for i in $(seq 0 $((NP - 1))); do
	v=$(printf v%02d "$i")
	fa volume create $v --size 256M >/dev/null || exit 1
	fa volume write $v "$T/d" --offset 0 >/dev/null || exit 1
	fa pair create $v --peer 127.0.0.1:$LP --period 10 >/dev/null || exit 1
done
for i in $(seq 0 $((NL - 1))); do
	fa export add "$(printf v%02d "$i")" >/dev/null || exit 1
done
synced() {
	fa pair list --json | python3 -c '
import json, sys
p = json.load(sys.stdin)
sys.exit(0 if all(x["last_synced"] for x in p) else 1)'
}
for _ in $(seq 600); do synced && break; sleep 1; done
synced || { echo "pairs did not sync" >&2; exit 1; }
URL=iscsi://127.0.0.1:$IP/iqn.2026-11.io.ferry:v00/0
# the LUN under test written in full, so that reads are real reads
timeout 300 qemu-img bench -f raw -t none -w -s 1M -d 8 -c 256 "$URL" >/dev/null 2>&1

# ---- 1. scrape time and CPU -------------------------------------------------------
curl -s "http://127.0.0.1:$MP/metrics" -o "$T/page"
samples=$(grep -vc '^#' "$T/page")
echo
echo "## /metrics with $NP pairs and $NL LUNs"
echo "page: $(wc -c <"$T/page") bytes, $samples samples, $(grep -c '^# TYPE' "$T/page") families"
c0=$(awk '{print $14 + $15}' "/proc/$PID/stat")
for _ in $(seq 200); do
	curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$MP/metrics"
done >"$T/times"
c1=$(awk '{print $14 + $15}' "/proc/$PID/stat")
render=$(for _ in $(seq 20); do curl -s "http://127.0.0.1:$MP/metrics" | sed -n 's/^ferry_metrics_render_seconds //p'; done | med)
printf 'scrape (curl time_total, 200 back to back): median %.2f ms, p95 %.2f ms, max %.2f ms\n' \
	"$(awk '{print $1*1000}' "$T/times" | med)" "$(awk '{print $1*1000}' "$T/times" | pct 95)" \
	"$(awk '{print $1*1000}' "$T/times" | sort -n | tail -1)"
printf 'render inside ferryd (ferry_metrics_render_seconds): median %.2f ms\n' "$(awk -v r="$render" 'BEGIN{print r*1000}')"
awk -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" \
	'BEGIN{printf "ferryd CPU per scrape (user+sys over the 200, pairs cycling meanwhile): %.2f ms\n", (b-a)/hz/200*1000}'

ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
scrape_loop() { while :; do curl -s -o /dev/null "http://127.0.0.1:$MP/metrics"; sleep 1; done; }
cpu_window() { # cpu_window scrape|idle -> % of one core over CPUW seconds
	local t0 t1 w0 w1
	[ "$1" = scrape ] && { scrape_loop & LOOP_PID=$!; }
	t0=$(ticks); w0=$(date +%s.%N)
	sleep "$CPUW"
	t1=$(ticks); w1=$(date +%s.%N)
	[ "$1" = scrape ] && { kill $LOOP_PID; wait $LOOP_PID 2>/dev/null; LOOP_PID=; }
	awk -v a="$t0" -v b="$t1" -v s="$w0" -v e="$w1" -v hz="$(getconf CLK_TCK)" \
		'BEGIN{printf "%.3f\n", (b-a)/hz/(e-s)*100}'
}
: >"$T/cpu_idle"; : >"$T/cpu_scrape"
for r in 1 2 3; do
	if [ $((r % 2)) = 1 ]; then
		cpu_window idle >>"$T/cpu_idle"; cpu_window scrape >>"$T/cpu_scrape"
	else
		cpu_window scrape >>"$T/cpu_scrape"; cpu_window idle >>"$T/cpu_idle"
	fi
done
echo "ferryd CPU (% of one core, ${CPUW} s windows, 3 each, interleaved):"
echo "  no scrapes:      $(tr '\n' ' ' <"$T/cpu_idle") -> median $(med <"$T/cpu_idle")"
echo "  1 scrape/s:      $(tr '\n' ' ' <"$T/cpu_scrape") -> median $(med <"$T/cpu_scrape")"

# ---- 2. IOPS with and without a scrape loop ------------------------------------------
rd() { timeout $((DUR + 60)) iscsi-perf -r -m 32 -b 8 -t $DUR "$URL" 2>&1 | tr '\r' '\n' |
	sed -n 's/^ *iops average \([0-9]*\).*/\1/p' | tail -1; }
N4K=${BENCH_4K_COUNT:-40000}
wr() {
	local s
	s=$(timeout 300 qemu-img bench -f raw -t none -w -s 4K -d 32 -c $N4K -S $((4096 * 7919)) "$URL" 2>&1 |
		sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p')
	awk -v n=$N4K -v s="$s" 'BEGIN{printf "%.0f\n", n/s}'
}
: >"$T/rA"; : >"$T/rB"; : >"$T/wA"; : >"$T/wB"
one() { # one A|B
	[ "$1" = B ] && { scrape_loop & LOOP_PID=$!; }
	rd >>"$T/r$1"
	wr >>"$T/w$1"
	[ "$1" = B ] && { kill $LOOP_PID; wait $LOOP_PID 2>/dev/null; LOOP_PID=; }
}
for r in $(seq $ROUNDS); do
	if [ $((r % 2)) = 1 ]; then one A; one B; else one B; one A; fi
done
echo
echo "## iSCSI 4 KiB IOPS on LUN v00, A = no scrapes, B = GET /metrics every second ($ROUNDS rounds, alternating order)"
for k in r w; do
	name=$([ $k = r ] && echo "random read, iscsi-perf -m 32, ${DUR} s" || echo "scattered write, qemu-img bench -d 32, $N4K ops")
	ma=$(med <"$T/${k}A"); mb=$(med <"$T/${k}B")
	echo "$name:"
	echo "  A: $(tr '\n' ' ' <"$T/${k}A")-> median $ma (min $(sort -n "$T/${k}A" | head -1), max $(sort -n "$T/${k}A" | tail -1))"
	echo "  B: $(tr '\n' ' ' <"$T/${k}B")-> median $mb (min $(sort -n "$T/${k}B" | head -1), max $(sort -n "$T/${k}B" | tail -1))"
	awk -v a="$ma" -v b="$mb" 'BEGIN{printf "  B/A of the medians = %.3f (%+.1f%%)\n", b/a, (b/a-1)*100}'
	# each round's B against its own A (run back to back): less exposed
	# to load that changes over minutes
	paste "$T/${k}A" "$T/${k}B" | awk '{print $2/$1}' >"$T/${k}ratio"
	echo "  per-round B/A: $(awk '{printf "%.2f ", $1}' "$T/${k}ratio")-> median $(med <"$T/${k}ratio")"
done
echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
