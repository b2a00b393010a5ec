#!/bin/bash
# ferryd --metrics: GET /metrics from two real ferryd (site a: iSCSI exports
# with I/O from qemu-io and a session held open; site b: the secondary of a
# pair), every page checked by `promtool check metrics`, the values checked
# against what was done; the HTTP corners (404, 405, HEAD); `ferry status`
# in text and JSON on both sites; start-up errors of --metrics.
export FERRY_TEST_TAG=ferry-metrics
. "$(dirname "$0")/../cli/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
for tool in promtool curl qemu-io python3; do
	command -v $tool >/dev/null || { echo "SKIP: $tool missing"; exit 77; }
done
export FERRY_REPL_TIMEOUT_MS=3000
printf 'metrics-test-secret-%s\n' "$RANDOM$RANDOM" >"$T/secret"
chmod 600 "$T/secret"
. "$HERE/lib.sh"

MA=$(free_port) MB=$(free_port) IA=$(free_port) LB=$(free_port)
fa() { "$FERRY_BIN" --pool "$T/a" "$@"; }
fb() { "$FERRY_BIN" --pool "$T/b" "$@"; }
IQN=iqn.2026-11.io.ferry

# scrape PORT FILE: GET /metrics into FILE; promtool must accept it.
scrape() {
	curl -sf --max-time 10 "http://127.0.0.1:$1/metrics" -o "$2" || { fail "GET /metrics on $1"; return 1; }
	local lint
	if ! lint=$(promtool check metrics <"$2" 2>&1); then
		fail "promtool check metrics ($1): $lint"
		return 1
	fi
	pass
}
# val FILE 'METRIC{LABELS}': the sample's value ("" when absent).
val() { grep -F -- "$2 " "$1" | head -n 1 | awk '{print $NF}'; }

# ---- start-up: bad --metrics values fail the start ------------------------------
expect_err 1 "metrics" "bad --metrics address refused" -- "$FERRYD" --pool "$T/bad" --metrics nonsense
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
open(sys.argv[1], "w").write(str(s.getsockname()[1])); time.sleep(120)' "$T/busy" &
PIDS+=($!)
BUSY_PID=$!
wait_for 10 test -s "$T/busy"
expect_err 1 "metrics" "--metrics on a port in use refused" -- "$FERRYD" --pool "$T/bad" --metrics "127.0.0.1:$(cat "$T/busy")"
kill $BUSY_PID
# (a failed start leaves nothing: no pool directory, or one whose lock is free)
check "a failed start leaves no daemon" bash -c "! test -e '$T/bad' || flock -n '$T/bad/ferryd.lock' true"

# ---- site b: the secondary, listens for replication ------------------------------
"$FERRYD" --pool "$T/b" --log-level debug --listen 127.0.0.1:$LB --secret-file "$T/secret" \
	--metrics 127.0.0.1:$MB || { echo "site b did not start" >&2; exit 1; }
# ---- site a: iSCSI + metrics -----------------------------------------------------
"$FERRYD" --pool "$T/a" --log-level debug --iscsi 127.0.0.1:$IA --secret-file "$T/secret" \
	--metrics 127.0.0.1:$MA || { echo "site a did not start" >&2; exit 1; }

scrape $MA "$T/m0"
check "build info" grep -q '^ferry_build_info{version="[^"]*"} 1$' "$T/m0"
check "render time reported" grep -q '^ferry_metrics_render_seconds ' "$T/m0"
check "no pairs yet" test -z "$(grep '^ferry_pair_' "$T/m0")"

expect 0 "create db" -- fa volume create db --size 64M
expect 0 "create logs" -- fa volume create logs --size 16M
expect 0 "export db" -- fa export add db
expect 0 "export logs as LUN 1" -- fa export add logs --iqn $IQN:db --lun 1
expect 0 "qemu-io I/O on LUN 0" -- timeout 60 qemu-io -f raw -c "write -P 0x5a 0 1M" \
	-c "write -P 0x11 4M 64k" -c "read 0 1M" -c "read 4M 64k" -c "discard 8M 1M" -c "flush" \
	iscsi://127.0.0.1:$IA/$IQN:db/0
scrape $MA "$T/m1"
L="target=\"$IQN:db\",lun=\"0\""
w=$(val "$T/m1" "ferry_lun_io_total{$L,op=\"write\"}")
r=$(val "$T/m1" "ferry_lun_io_total{$L,op=\"read\"}")
check "writes counted ($w)" test "${w:-0}" -ge 2
check "reads counted ($r)" test "${r:-0}" -ge 2
check "write bytes = 1M + 64K" test "$(val "$T/m1" "ferry_lun_bytes_total{$L,op=\"write\"}")" = $((1048576 + 65536))
check "read bytes = 1M + 64K" test "$(val "$T/m1" "ferry_lun_bytes_total{$L,op=\"read\"}")" = $((1048576 + 65536))
check "unmap counted" test "$(val "$T/m1" "ferry_lun_io_total{$L,op=\"unmap\"}")" -ge 1
check "flush counted" test "$(val "$T/m1" "ferry_lun_io_total{$L,op=\"flush\"}")" -ge 1
check "latency count = writes" test "$(val "$T/m1" "ferry_lun_latency_seconds_count{$L,op=\"write\"}")" = "$w"
check "latency +Inf bucket = writes" test "$(val "$T/m1" "ferry_lun_latency_seconds_bucket{$L,op=\"write\",le=\"+Inf\"}")" = "$w"
check "LUN 1 listed, idle" test "$(val "$T/m1" "ferry_lun_io_total{target=\"$IQN:db\",lun=\"1\",op=\"write\"}")" = 0
check "LUN info names the volume" grep -q "^ferry_lun_info{$L,volume=\"db\",snapshot=\"\"} 1$" "$T/m1"
check "no session after qemu-io" test "$(val "$T/m1" "ferry_iscsi_sessions{target=\"$IQN:db\"}")" = 0
check "one sessions line per target" test "$(grep -c '^ferry_iscsi_sessions{' "$T/m1")" = 1
check "volume size" test "$(val "$T/m1" 'ferry_volume_size_bytes{volume="db"}')" = 67108864
alloc=$(val "$T/m1" 'ferry_volume_allocated_bytes{volume="db"}')
check "allocated bytes ($alloc): what was written (1M + 64K)" \
	test "$alloc" -ge $((1048576 + 65536)) -a "$alloc" -lt $((2 << 20))
check "volume logs listed" grep -q '^ferry_volume_allocated_bytes{volume="logs"} 0$' "$T/m1"

# A session held open is counted, and gone after its logout.
check "session logged in" session s 127.0.0.1 $IA $IQN:db
scrape $MA "$T/m2"
check "one session counted" test "$(val "$T/m2" "ferry_iscsi_sessions{target=\"$IQN:db\"}")" = 1
expect 0 "status --json" -- fa status --json
check "status shows the session" python3 -c '
import json, sys
s = json.loads(sys.argv[1])
e = {x["volume"]: x for x in s["exports"]}
assert e["db"]["sessions"] == 1 and e["db"]["served"] and e["logs"]["lun"] == 1, e
' "$OUT"
session_end s
sessions_gone() { scrape $MA "$T/m3" >/dev/null && test "$(val "$T/m3" "ferry_iscsi_sessions{target=\"$IQN:db\"}")" = 0; }
check "session gone after logout" wait_for 20 sessions_gone

# ---- HTTP corners ------------------------------------------------------------------
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
check "404 elsewhere" test "$(code "http://127.0.0.1:$MA/nope")" = 404
check "405 for POST" test "$(code -X POST -d x "http://127.0.0.1:$MA/metrics")" = 405
check "HEAD answered" test "$(code -I "http://127.0.0.1:$MA/metrics")" = 200
check "/ points at /metrics" sh -c "curl -sf http://127.0.0.1:$MA/ | grep -q /metrics"
ctype=$(curl -s -o /dev/null -w '%{content_type}' "http://127.0.0.1:$MA/metrics")
check "content type ($ctype)" test "$ctype" = "text/plain; version=0.0.4; charset=utf-8"

# ---- a pair: metrics on both sites ------------------------------------------------------
head -c 3M /dev/urandom >"$T/data"
expect 0 "write data" -- fa volume write logs "$T/data" --offset 0
expect 0 "pair create (period 1)" -- fa pair create logs --peer 127.0.0.1:$LB --period 1
expect 0 "pair sync --wait" -- fa pair sync logs --wait
scrape $MA "$T/pa"
scrape $MB "$T/pb"
P='pair="logs"'
check "primary: state idle or syncing" sh -c "grep -Eq '^ferry_pair_state\{$P,state=\"(idle|syncing)\"\} 1$' '$T/pa'"
check "primary: one current state" test "$(grep "^ferry_pair_state{$P," "$T/pa" | awk '$NF == 1' | wc -l)" = 1
for s in idle syncing paused error peer-down split-brain demoting; do
	check "state $s listed" grep -q "^ferry_pair_state{$P,state=\"$s\"} [01]$" "$T/pa"
done
check "primary: period 1" test "$(val "$T/pa" "ferry_pair_period_seconds{$P}")" = 1
check "primary: role label" grep -q "^ferry_pair_rpo_lag_seconds{$P,role=\"primary\"} [0-9]" "$T/pa"
check "secondary: role label" grep -q "^ferry_pair_rpo_lag_seconds{$P,role=\"secondary\"} [0-9]" "$T/pb"
ok_a=$(val "$T/pa" "ferry_pair_cycles_total{$P,result=\"ok\"}")
ok_b=$(val "$T/pb" "ferry_pair_cycles_total{$P,result=\"ok\"}")
check "primary: cycles ok ($ok_a)" test "${ok_a:-0}" -ge 1
check "secondary: cycles ok ($ok_b)" test "${ok_b:-0}" -ge 1
data=$(val "$T/pa" "ferry_pair_cycle_bytes_total{$P,kind=\"data\"}")
wire=$(val "$T/pa" "ferry_pair_cycle_bytes_total{$P,kind=\"wire\"}")
check "primary: data bytes = what was written ($data)" test "$data" = $((3 << 20))
check "primary: wire bytes >= data ($wire)" test "$wire" -ge "$data"
check "secondary: data bytes ($(val "$T/pb" "ferry_pair_cycle_bytes_total{$P,kind=\"data\"}"))" \
	test "$(val "$T/pb" "ferry_pair_cycle_bytes_total{$P,kind=\"data\"}")" = $((3 << 20))
check "duration count = cycles ok" test "$(val "$T/pa" "ferry_pair_cycle_duration_seconds_count{$P}")" = "$ok_a"
ts=$(val "$T/pa" "ferry_pair_last_sync_timestamp_seconds{$P}")
now=$(date +%s)
check "last sync timestamp recent ($ts, now $now)" test $((now - ts)) -lt 60
tb=$(val "$T/pb" "ferry_pair_last_sync_timestamp_seconds{$P}")
# the same snapshot time on both sides, or a later cycle committed between the two scrapes
check "secondary: last sync time of the primary's snapshots ($tb, primary $ts)" \
	test -n "$tb" -a "${tb:-0}" -ge "$ts" -a $((${tb:-0} - ts)) -lt 30
check "failed cycles 0" test "$(val "$T/pa" "ferry_pair_cycles_total{$P,result=\"failed\"}")" = 0

# Site b gone: the primary's failed cycles count up, its state says why.
kill_daemon "$T/b"
failing() { scrape $MA "$T/pf" >/dev/null && test "$(val "$T/pf" "ferry_pair_cycles_total{$P,result=\"failed\"}")" -ge 1; }
check "failed cycles counted with the peer gone" wait_for 60 failing
expect 0 "status with a failing pair" -- fa status
check "status text names the pair" grep -Eq "^  logs +primary " <<<"$OUT"
check "status text shows the error" grep -q "error: " <<<"$OUT"
check "status text lists the exports" grep -q "$IQN:db" <<<"$OUT"
check "status text lists the listeners" grep -q "metrics      127.0.0.1:$MA" <<<"$OUT"

# ---- no --metrics: no listener, status says so ---------------------------------------------
"$FERRYD" --pool "$T/c" || { echo "site c did not start" >&2; exit 1; }
expect 0 "status without metrics" -- "$FERRY_BIN" --pool "$T/c" status --json
check "status: metrics null, iscsi null" python3 -c '
import json, sys
s = json.loads(sys.argv[1])
l = s["daemon"]["listeners"]
assert l["metrics"] is None and l["iscsi"] is None and l["replication"] is None, l
assert s["volumes"] == [] and s["exports"] == [] and s["pairs"] == [], s
' "$OUT"
finish
