#!/bin/bash
# End to end with a real Prometheus: it scrapes two ferryd (a primary and
# its secondary) every second and evaluates the shipped alert rules (a test
# copy with the `for:` durations shortened to seconds).  While the pair
# runs, FerryRpoLagHigh is not firing; once the secondary is killed it
# fires for the primary (read through the HTTP API, /api/v1/alerts); once
# the secondary is back it resolves.
export FERRY_TEST_TAG=ferry-metrics
. "$(dirname "$0")/../cli/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
for tool in prometheus curl python3; do
	command -v $tool >/dev/null || { echo "SKIP: $tool missing"; exit 77; }
done
export FERRY_REPL_TIMEOUT_MS=3000
printf 'prom-test-secret-%s\n' "$RANDOM$RANDOM" >"$T/secret"
chmod 600 "$T/secret"
MA=$(free_port) MB=$(free_port) LB=$(free_port) PP=$(free_port)
fa() { "$FERRY_BIN" --pool "$T/a" "$@"; }
PERIOD=2

start_b() {
	"$FERRYD" --pool "$T/b" --log-level debug --listen 127.0.0.1:$LB --secret-file "$T/secret" \
		--metrics 127.0.0.1:$MB
}
start_b || { echo "site b did not start" >&2; exit 1; }
"$FERRYD" --pool "$T/a" --log-level debug --secret-file "$T/secret" --metrics 127.0.0.1:$MA ||
	{ echo "site a did not start" >&2; exit 1; }
expect 0 "create db" -- fa volume create db --size 16M
head -c 1M /dev/urandom >"$T/d"
expect 0 "write db" -- fa volume write db "$T/d" --offset 0
expect 0 "pair create (period $PERIOD)" -- fa pair create db --peer 127.0.0.1:$LB --period $PERIOD
expect 0 "initial sync" -- fa pair sync db --wait

# The shipped rules with every `for:` in seconds: the alert logic is the
# same, the test takes seconds instead of minutes.
sed -E 's/^( *for: *)[0-9]+m$/\13s/' "$HERE/../../contrib/prometheus/ferry-rules.yml" >"$T/rules.yml"
check "the test copy shortened the durations" grep -q "for: 3s" "$T/rules.yml"
check "and nothing else" test "$(diff "$HERE/../../contrib/prometheus/ferry-rules.yml" "$T/rules.yml" | grep -c '^>')" = 3
cat >"$T/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $T/rules.yml
scrape_configs:
  - job_name: ferry
    static_configs:
      - targets: ['127.0.0.1:$MA', '127.0.0.1:$MB']
EOF
prometheus --config.file="$T/prometheus.yml" --storage.tsdb.path="$T/prom" \
	--web.listen-address=127.0.0.1:$PP --log.level=warn >"$T/prometheus.log" 2>&1 &
PIDS+=($!)
API=http://127.0.0.1:$PP/api/v1
ready() { curl -sf --max-time 2 "http://127.0.0.1:$PP/-/ready" >/dev/null; }
check "prometheus ready" wait_for 60 ready

# targets_up: both ferryd scraped and healthy.
targets_up() {
	curl -sf --max-time 2 "$API/targets" | python3 -c '
import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
sys.exit(0 if len(t) == 2 and all(x["health"] == "up" for x in t) else 1)'
}
check "both ferryd scraped" wait_for 60 targets_up

# alert_state NAME: "firing", "pending" or "none" for FerryRpoLagHigh of
# pair db on the primary (instance 127.0.0.1:$MA).
lag_alert() {
	curl -sf --max-time 2 "$API/alerts" | python3 -c '
import json, sys
a = [x for x in json.load(sys.stdin)["data"]["alerts"]
     if x["labels"].get("alertname") == "FerryRpoLagHigh" and x["labels"].get("pair") == "db"
     and x["labels"].get("instance") == sys.argv[1] and x["labels"].get("role") == "primary"]
print(a[0]["state"] if a else "none")' "127.0.0.1:$MA"
}
is_lag_alert() { test "$(lag_alert)" = "$1"; }
# The query API sees the pair's numbers.
query() {
	curl -sf --max-time 2 --data-urlencode "query=$1" "$API/query" | python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")'
}
has_period() { test "$(query "ferry_pair_period_seconds{instance=\"127.0.0.1:$MA\",pair=\"db\"}")" = $PERIOD; }
check "prometheus has the period" wait_for 30 has_period
ok_cycles() { test "$(query "ferry_pair_cycles_total{instance=\"127.0.0.1:$MA\",pair=\"db\",result=\"ok\"}")" -ge 2; }
check "prometheus sees cycles committing" wait_for 30 ok_cycles
check "lag alert not firing while the pair runs" wait_for 30 is_lag_alert none
check "both sites' lag known" test -n "$(query "ferry_pair_rpo_lag_seconds{instance=\"127.0.0.1:$MB\",role=\"secondary\"}")"

t0=$SECONDS
kill_daemon "$T/b"
check "FerryRpoLagHigh fires once the secondary is gone" wait_for 90 is_lag_alert firing
echo "alert fired $((SECONDS - t0)) s after the kill"
curl -sf "$API/alerts" >"$T/alerts.json"
check "the alert says what it is about" python3 -c '
import json, sys
a = [x for x in json.load(open(sys.argv[1]))["data"]["alerts"] if x["labels"]["alertname"] == "FerryRpoLagHigh"
     and x["state"] == "firing" and x["labels"]["role"] == "primary"][0]
assert a["labels"]["severity"] == "critical", a
assert a["labels"]["job"] == "ferry", a
assert "ferry pair db (primary on 127.0.0.1:'$MA')" in a["annotations"]["summary"], a
assert float(a["value"]) > 2 * '$PERIOD', a
' "$T/alerts.json"
failed() { test "$(query "ferry_pair_cycles_total{instance=\"127.0.0.1:$MA\",pair=\"db\",result=\"failed\"}")" -ge 1; }
check "prometheus sees the failed cycles" wait_for 30 failed

start_b || fail "site b did not restart"
check "the alert resolves once the secondary is back" wait_for 90 is_lag_alert none
finish
