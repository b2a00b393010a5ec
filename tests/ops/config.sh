#!/bin/bash
# ferryd --config FILE and --check-config: every option is a key, checked by
# the same code as on the command line; errors name the line; the command
# line wins; relative paths; SIGHUP re-reads the log level and log file and
# reopens the log, the daemon serving on; a bad file on reload is refused.
. "$(dirname "$0")/lib.sh"

make_secret "$T/secret"
mkdir -p "$T/etc" "$T/logs"

# ---- check-config ------------------------------------------------------------
cat >"$T/etc/good.conf" <<EOF
# a comment
; another one
pool = $T/p
log-level = debug

[ferryd]
listen = 127.0.0.1:0
secret-file = ../secret
plaintext = yes
max-transfers = 2  ; inline comment
EOF
expect 0 "check-config of a good file" -- "$FERRYD" --check-config --config "$T/etc/good.conf"
check "says OK" grep -q "configuration OK" <<<"$OUT"
check "check-config creates no pool" test ! -e "$T/p"

# bad_line N REASON-PATTERN LINES...: the file made of LINES is refused
# with exit 1, naming line N and the reason.
bad_line() {
	local n=$1 pat=$2
	shift 2
	printf '%s\n' "$@" >"$T/etc/bad.conf"
	expect_err 1 "^ferryd: $T/etc/bad.conf:$n: $pat" "bad file: $pat" -- \
		"$FERRYD" --check-config --config "$T/etc/bad.conf"
}
bad_line 3 "unknown key 'lissen'" "pool = $T/p" "" "lissen = 127.0.0.1:1"
bad_line 2 "syntax error" "pool = $T/p" "plaintext"
bad_line 3 "unknown section \[other\]" "pool = $T/p" "[other]" "listen = 1"
bad_line 2 "bad log-level 'loud'" "pool = $T/p" "log-level = loud"
bad_line 3 "'log-level' given twice \(first on line 2\)" "pool = $T/p" "log-level = info" "log-level = debug"
bad_line 2 "plaintext: want true or false, not 'maybe'" "pool = $T/p" "plaintext = maybe"
bad_line 2 "'help' is a command-line option only" "pool = $T/p" "help = true"
bad_line 2 "'config' is a command-line option only" "pool = $T/p" "config = other.conf"
bad_line 2 "bad iscsi address 'nohostport'" "pool = $T/p" "iscsi = nohostport"
bad_line 2 "bad max-transfers '0'" "pool = $T/p" "max-transfers = 0"
bad_line 2 "cannot read --secret-file $T/etc/nosuch" "pool = $T/p" "secret-file = nosuch"
bad_line 2 "listen needs --secret-file" "pool = $T/p" "listen = 127.0.0.1:1"
bad_line 2 "line longer than" "pool = $T/p" "tls-ca = /$(printf 'x%.0s' $(seq 300))"
chmod 644 "$T/secret"
bad_line 2 "--secret-file $T/secret is accessible by group or others" "pool = $T/p" "secret-file = $T/secret"
chmod 600 "$T/secret"
printf 'log-level = info\n' >"$T/etc/nopool.conf"
expect_err 1 "no pool: set 'pool = DIR' in" "check-config without a pool" -- \
	"$FERRYD" --check-config --config "$T/etc/nopool.conf"
expect_err 2 "no pool" "start without a pool" -- "$FERRYD" --config "$T/etc/nopool.conf"
expect_err 1 "cannot read $T/etc/none.conf" "missing file" -- \
	"$FERRYD" --check-config --config "$T/etc/none.conf"
printf 'pool = %s\nlissen = x\n' "$T/q" >"$T/etc/bad.conf"
expect_err 1 "bad.conf:2: unknown key 'lissen'" "a bad file stops the start" -- \
	"$FERRYD" --config "$T/etc/bad.conf"
check "a refused start creates no pool" test ! -e "$T/q"

# The command line wins, and its values are checked the same way.
printf 'pool = %s\nlog-level = debug\n' "$T/p" >"$T/etc/over.conf"
expect 0 "command line overrides the file" -- \
	"$FERRYD" --check-config --config "$T/etc/over.conf" --log-level warn
expect_err 2 "bad --log-level 'loud'" "bad value on the command line: usage" -- \
	"$FERRYD" --check-config --config "$T/etc/over.conf" --log-level loud
printf 'pool = %s\nlog-level = loud\n' "$T/p" >"$T/etc/over.conf"
expect_err 1 "over.conf:2: bad log-level" "a bad file value is reported even if overridden" -- \
	"$FERRYD" --check-config --config "$T/etc/over.conf" --log-level warn

# ---- every ferryd option is a key, checked by the same code -----------------
mapfile -t options < <("$FERRYD" --help | sed -n 's/^  --\([a-z0-9-]*\).*/\1/p')
check "ferryd --help lists options" test "${#options[@]}" -ge 15
for o in "${options[@]}"; do
	case $o in config | check-config | help | version) continue ;; esac
	flag=0 # a flag's help follows its name; an option's META is upper case
	"$FERRYD" --help | grep -Eq -- "^  --$o +[a-z(]" && flag=1
	if [ $flag = 1 ]; then val=maybe; else val=@@bad@@; fi
	printf 'pool = %s\n%s = %s\n' "$T/p" "$o" "$val" >"$T/etc/key.conf"
	rc_file=0
	"$FERRYD" --check-config --config "$T/etc/key.conf" >/dev/null 2>"$T/key.err" || rc_file=$?
	check "'$o' is a configuration key" test -z "$(grep 'unknown key' "$T/key.err")"
	[ $flag = 1 ] && continue
	rc_cli=0
	(cd "$T/etc" && "$FERRYD" --check-config --pool "$T/p" "--$o" "$val" >/dev/null 2>&1) || rc_cli=$?
	check "'$o': file and command line agree on '$val' (file $rc_file, cli $rc_cli)" \
		test $((rc_file == 0)) = $((rc_cli == 0))
done

# ---- a daemon from a file: relative paths, the log file ------------------------
cat >"$T/etc/a.conf" <<EOF
pool = ../a
log-level = info
log-file = ../logs/a.log
EOF
expect 0 "ferryd --config starts" -- "$FERRYD" --config "$T/etc/a.conf"
check "pool relative to the file" test -S "$T/a/ferryd.sock"
check "log file relative to the file" grep -q "serving pool $T/a" "$T/logs/a.log"
check "no default log in the pool" test ! -e "$T/a/ferryd.log"
pid=$(daemon_pid "$T/a")
fa() { "$FERRY_BIN" --pool "$T/a" "$@"; }
expect 0 "serves" -- fa volume create v1 --size 1M
check "info: debug lines absent" test -z "$(grep 'command: volume create' "$T/logs/a.log")"

# SIGHUP: log level from the file, the daemon keeps serving.
sed -i 's/^log-level = info/log-level = debug/' "$T/etc/a.conf"
kill -HUP "$pid"
check "reload logged" wait_log "$T/logs/a.log" "reloaded: log level debug"
expect 0 "serves after SIGHUP" -- fa volume create v2 --size 1M
check "debug lines after the reload" wait_log "$T/logs/a.log" "command: volume create"
check "same process" test "$(daemon_pid "$T/a")" = "$pid"

# SIGHUP reopens the log file (logrotate without copytruncate).
mv "$T/logs/a.log" "$T/logs/a.log.1"
kill -HUP "$pid"
check "log file reopened" wait_log "$T/logs/a.log" "reloaded"
lines=$(wc -l <"$T/logs/a.log.1")
expect 0 "serves after the rotation" -- fa volume list
check "new lines go to the new file" wait_log "$T/logs/a.log" "command: volume list"
check "the old file gets no more lines" test "$(wc -l <"$T/logs/a.log.1")" = "$lines"

# A new log-file applies; a key that needs a restart is named.
sed -i 's|^log-file = .*|log-file = ../logs/b.log|' "$T/etc/a.conf"
echo "max-transfers = 3" >>"$T/etc/a.conf"
kill -HUP "$pid"
check "new log file used" wait_log "$T/logs/b.log" "reloaded: log level debug, log file $T/logs/b.log"
check "restart-only key named" wait_log "$T/logs/b.log" "'max-transfers' changed in .*restart ferryd"

# A bad file on reload is refused; the running options stay.
echo "lissen = 1" >>"$T/etc/a.conf"
kill -HUP "$pid"
check "bad reload refused with its line" wait_log "$T/logs/b.log" "reload: .*a.conf:5: unknown key 'lissen'.*the running configuration stays"
expect 0 "serves after a bad reload" -- fa volume list
check "still alive" kill -0 "$pid"
check "log file kept" wait_log "$T/logs/b.log" "command: volume list"

# SIGTERM stays graceful.
stop_daemon "$T/a" || fail "SIGTERM"
check "stopped cleanly" grep -q "stopped" "$T/logs/b.log"
check "socket removed" test ! -e "$T/a/ferryd.sock"

# ---- the command line over the file, a flag from the file ------------------------
cat >"$T/etc/f.conf" <<EOF
pool = $T/f
log-level = debug
foreground = true
EOF
"$FERRYD" --config "$T/etc/f.conf" --log-level warn 2>"$T/f.err" &
fpid=$!
wait_for 20 test -S "$T/f/ferryd.sock" || fail "foreground from the file: no socket"
check "foreground = true: not daemonized" test "$(daemon_pid "$T/f")" = "$fpid"
"$FERRY_BIN" --pool "$T/f" volume list >/dev/null
kill -TERM "$fpid"
rc=0
wait "$fpid" || rc=$?
check "foreground: exit 0 on SIGTERM" test $rc = 0
check "--log-level warn beat the file's debug" test -z "$(grep -E 'info|debug' "$T/f.err")"

# ---- syslog ------------------------------------------------------------------
expect_err 1 "contradicts" "syslog and log-file contradict" -- \
	"$FERRYD" --pool "$T/s" --syslog --log-file "$T/logs/s.log"
expect 0 "ferryd --syslog starts" -- "$FERRYD" --pool "$T/s" --syslog
check "--syslog: no log file in the pool" test ! -e "$T/s/ferryd.log"
stop_daemon "$T/s" || fail "stop syslog daemon"

finish
