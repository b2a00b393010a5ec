#!/bin/bash
# The per-cycle log line: at info level only cycles that moved something
# are logged, on both sides; empty cycles (period 1 s: 86,400 a day per
# pair) are logged at debug level.  A periodic cycle with nothing to send
# is skipped altogether (issue 13, idle pairs); a requested one (`pair
# sync`) runs even when empty, so the empty cycles here are requested.
. "$(dirname "$0")/lib.sh"

make_secret "$T/secret"
"$FERRYD" --pool "$T/b" --log-level info --listen 127.0.0.1:0 --secret-file "$T/secret" || fail "site b"
PB=$(sed -n 's/.*accepting peers on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$T/b/ferryd.log" | tail -n 1)
printf 'pool = %s\nlog-level = info\nsecret-file = %s\n' "$T/a" "$T/secret" >"$T/a.conf"
"$FERRYD" --config "$T/a.conf" || fail "site a"
fa() { "$FERRY_BIN" --pool "$T/a" "$@"; }
cycle() { fa pair status db --json | python3 -c 'import json,sys; print((json.load(sys.stdin)["last_synced"] or {}).get("cycle") or 0)'; }
at_least() { [ "$(cycle)" -ge "$1" ]; }
skipped() { fa pair status db --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["cycles_skipped"])'; }
skips_at_least() { [ "$(skipped)" -ge "$1" ]; }
empty_syncs() { for _ in 1 2 3; do fa pair sync db --wait >/dev/null || return 1; done; }
sent() { grep -c "pair db: cycle [0-9]* committed (" "$T/a/ferryd.log"; }
received() { grep -c "pair db: cycle [0-9]* committed as" "$T/b/ferryd.log"; }

expect 0 "volume" -- fa volume create db --size 4M
head -c 64K /dev/urandom >"$T/d"
expect 0 "data" -- fa volume write db --offset 0 "$T/d"
expect 0 "pair, period 1 s" -- fa pair create db --peer "127.0.0.1:$PB" --period 1
check "the initial cycle" wait_for 60 at_least 1
check "idle periodic cycles are skipped" wait_for 60 skips_at_least 2
c=$(cycle)
expect 0 "three requested empty cycles" -- empty_syncs
check "they committed ($c -> $(cycle))" at_least $((c + 3))
check "info: one cycle line on the primary (the one with data), got $(sent)" test "$(sent)" = 1
check "info: one cycle line on the secondary, got $(received)" test "$(received)" = 1

expect 0 "more data" -- fa volume write db --offset 1M "$T/d"
expect 0 "sync" -- fa pair sync db --wait
c=$(cycle)
expect 0 "three more requested empty cycles" -- empty_syncs
check "they committed" at_least $((c + 3))
check "info: a cycle with data is logged (primary: $(sent))" test "$(sent)" = 2
check "info: a cycle with data is logged (secondary: $(received))" test "$(received)" = 2

# At debug level the empty ones are there too.
sed -i 's/^log-level = info/log-level = debug/' "$T/a.conf"
kill -HUP "$(daemon_pid "$T/a")"
check "reloaded" wait_log "$T/a/ferryd.log" "reloaded: log level debug"
c=$(cycle)
expect 0 "requested empty cycles at debug level" -- empty_syncs
check "they committed" at_least $((c + 3))
check "debug: empty cycles logged ($(sent) lines)" test "$(sent)" -ge 4
check "at debug level" grep -q "debug: repl: pair db: cycle [0-9]* committed (" "$T/a/ferryd.log"
check "secondary at info still quiet ($(received))" test "$(received)" = 2

finish
