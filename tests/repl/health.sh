#!/bin/bash
# Health you can trust, on both sites (issue 9): peer-down on the secondary
# within peer-timeout + 5 s of a kill -9 of the primary and idle again after
# its restart; the secondary's RPO lag grows meanwhile; peer_last_contact;
# peer-down on the primary when its secondary is gone; `error` (not
# syncing) once three cycles in a row failed on a wrong secret, with the
# reason, and back by itself; `pair list` columns and `pair list --json` =
# the objects of `pair status --json`.
. "$(dirname "$0")/lib.sh"

expect 0 "site b starts" -- site_start b
expect 0 "site a starts" -- site_start a
B="127.0.0.1:$PORT_b"
M=$((1024 * 1024))

expect 0 "create db" -- fa volume create db --size 16M --object-size 1M
rand_write fa db 0 $M
# A short peer timeout, given as a duration with a suffix.
expect 0 "pair create (peer timeout 8s)" -- \
	fa pair create db --peer "$B" --period 1h --peer-timeout 8s
expect 0 "initial sync" -- fa pair sync db --wait
check_synced db
expect 0 "period 1 s from now on" -- fa pair set db --period 1
expect 0 "status a" -- fa pair status db --json
check "primary: peer timeout 8" test "$(json peer_timeout_s <<<"$OUT")" = 8
contact=$(json peer_last_contact <<<"$OUT")
check "primary: peer_last_contact is a recent unix time ($contact)" \
	python3 -c "import sys,time; t=int(sys.argv[1]); assert abs(time.time()-t) < 30" "$contact"
# The secondary learns the primary's settings at the next contact.
check "secondary learns the peer timeout" wait_json b db "d['peer_timeout_s'] == 8" 15
check "secondary idle" test "$(state_of fb db)" = idle
check "secondary: peer_last_contact set" test "$(fb pair status db --json | json peer_last_contact)" != null

# A default peer timeout is max(3 x period, 30 s).
expect 0 "v2" -- fa volume create v2 --size 4M
expect 0 "pair v2 (period 20)" -- fa pair create v2 --peer "$B" --period 20
check "default peer timeout 60 s for period 20" test "$(fa pair status v2 --json | json peer_timeout_s)" = 60
expect 0 "pair set v2 --period 5" -- fa pair set v2 --period 5
check "default peer timeout 30 s for period 5" test "$(fa pair status v2 --json | json peer_timeout_s)" = 30
expect 0 "rm v2" -- fa pair rm v2

# ---- kill -9 of the primary: the secondary says peer-down in time ------------------
lag0=$(fb pair status db --json | json rpo_lag_s)
expect 0 "kill -9 a" -- site_kill a
t0=$SECONDS
check "secondary peer-down within peer-timeout + 5 s" wait_state b db peer-down 13
echo "secondary peer-down $((SECONDS - t0)) s after the kill (peer timeout 8 s)"
expect 0 "status b" -- fb pair status db --json
check "peer-down names no error (nothing failed here)" test "$(json error <<<"$OUT")" = null
lag1=$(json rpo_lag_s <<<"$OUT")
check "secondary's RPO lag grows while the primary is silent ($lag0 -> $lag1)" test "$lag1" -gt "$lag0"
check "peer-down in pair list" grep -q "^db .*secondary *peer-down" <<<"$(fb pair list)"
check "peer-down logged" grep -q "pair db: idle -> peer-down" "$T/b/ferryd.log"
sleep 2
check "RPO lag still growing" test "$(fb pair status db --json | json rpo_lag_s)" -gt "$lag1"
expect 0 "a restarts" -- site_start a "$PORT_a"
check "secondary idle again after the restart" wait_state b db idle 20
check "RPO lag back to about a period" wait_json b db "d['rpo_lag_s'] <= 3" 10

# ---- the primary when its secondary is gone ---------------------------------------
expect 0 "kill -9 b" -- site_kill b
check "primary error or peer-down while b is gone" \
	wait_json a db "d['state'] in ('error', 'peer-down')" 10
check "primary peer-down within peer-timeout + 5 s" wait_state a db peer-down 13
check "primary: the reason is in error" test "$(fa pair status db --json | json error)" != null
expect 0 "b restarts" -- site_start b "$PORT_b"
check "primary idle again" wait_state a db idle 40
check "error cleared" test "$(fa pair status db --json | json error)" = null

# ---- three failed cycles in a row: error, not syncing; back by itself --------------
printf 'another-secret-%s\n' "$RANDOM" >"$T/secret2"
chmod 600 "$T/secret2"
expect 0 "b restarts with another secret" -- sh -c "kill -TERM \$(cat '$T/b/ferryd.lock')"
wait_for 20 lock_free "$T/b"
expect 0 "b up (wrong secret)" -- site_start b "$PORT_b" "$T/secret2"
rand_write fa db $((2 * M)) 4096
check "error after three failures" \
	wait_json a db "d['state'] == 'error' and d['consecutive_failures'] >= 3" 40
expect 0 "status" -- fa pair status db --json
check "the reason names the secret" grep -qi "secret" <<<"$(json error <<<"$OUT")"
# It stays error between and during the retries, never syncing.
bad=0
for i in 1 2 3 4 5 6 7 8 9 10; do
	s=$(fa pair list | awk '$1 == "db" { print $3 }')
	[ "$s" = error ] || bad=1
	sleep 0.3
done
check "pair list says error through the retries" test $bad = 0
check "not peer-down: the peer answers" test "$(state_of fa db)" = error
expect 0 "b restarts with the right secret" -- sh -c "kill -TERM \$(cat '$T/b/ferryd.lock')"
wait_for 20 lock_free "$T/b"
expect 0 "b up" -- site_start b "$PORT_b"
check "back to idle by itself" wait_state a db idle 90
check "error gone" test "$(fa pair status db --json | json error)" = null
check "error -> idle logged" grep -q "pair db: error -> idle" "$T/a/ferryd.log"
# A long period from here: check_synced needs the snapshot to stay.
expect 0 "pair set --period 1h" -- fa pair set db --period 1h
expect 0 "sync" -- fa pair sync db --wait
check_synced db

# ---- pair list: columns, and --json = the status objects -------------------------
expect 0 "list a" -- fa pair list
check "header" grep -Eq "^NAME +ROLE +STATE +PEER +LAST-SYNC +RPO-LAG$" <<<"$(head -n 1 <<<"$OUT")"
row=$(grep "^db " <<<"$OUT")
check "row: name role state peer last-sync rpo-lag ($row)" \
	python3 -c "import sys,re; f=sys.argv[1].split(); assert f[0]=='db' and f[1]=='primary' and f[2]=='idle' and f[3]=='$B' and re.match(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', f[4]) and re.match(r'\d+s$', f[5]), f" "$row"
expect 0 "list b" -- fb pair list
check "secondary row" grep -Eq "^db +secondary +idle +[^ ]+ +[0-9T:Z-]+ +[0-9]+s$" <<<"$OUT"
expect 0 "list --json" -- fa pair list --json
echo "$OUT" >"$T/list.json"
fa pair status db --json >"$T/status.json"
check "list --json is an array of the status objects" python3 -c '
import json, sys
l = json.load(open(sys.argv[1])); s = json.load(open(sys.argv[2]))
assert isinstance(l, list) and len(l) == 1
assert sorted(l[0].keys()) == sorted(s.keys()), set(l[0]) ^ set(s)
for k in ("name", "role", "state", "peer", "remote_name", "period_s", "peer_timeout_s", "epoch"):
    assert l[0][k] == s[k], k
' "$T/list.json" "$T/status.json"
check "status json has the new fields" python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
for k in ("peer_last_contact", "peer_timeout_s", "fenced", "fence_reason", "split_brain_policy",
          "consecutive_failures", "counters"):
    assert k in s, k
c = s["counters"]
assert c["cycles_ok"] >= 1 and c["cycles_failed"] >= 3 and c["wire_bytes"] > 0, c
assert c["cycle_seconds_buckets"][-1]["le"] == "+Inf" and c["cycle_seconds_buckets"][-1]["count"] == c["cycles_ok"]
' "$T/status.json"

finish
