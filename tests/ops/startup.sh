#!/bin/bash
# Every start-up error of ferryd reaches stderr with exit 1 (before it
# daemonizes where it can be known there, through the parent otherwise),
# and a failed start leaves nothing behind: no pool directory it created,
# no new file in an existing pool, no log file it created.  A pool with
# exports started without --iscsi warns.
. "$(dirname "$0")/lib.sh"

make_secret "$T/secret"

# refused WHAT PATTERN ARGS...: ferryd ARGS exits 1 with PATTERN on stderr,
# and $T/new (the pool of these starts) is not created.
refused() {
	local what=$1 pat=$2
	shift 2
	expect 1 "$what: exit 1" -- "$FERRYD" --pool "$T/new/pool" "$@"
	check "$what: says why ('$pat' in '$ERR')" grep -Eq -- "$pat" <<<"$ERR"
	check "$what: nothing created" test ! -e "$T/new"
}

# ---- option values, before anything is created -------------------------------
chmod 644 "$T/secret"
refused "secret readable by others" "secret-file .* accessible by group or others \(mode 0644\)" \
	--listen 127.0.0.1:0 --secret-file "$T/secret"
chmod 600 "$T/secret"
refused "missing secret file" "cannot read --secret-file $T/nosuch: No such file" \
	--listen 127.0.0.1:0 --secret-file "$T/nosuch"
printf 'short\n' >"$T/short"; chmod 600 "$T/short"
refused "secret too short" "at least 8 bytes" --listen 127.0.0.1:0 --secret-file "$T/short"
refused "missing secret" "--listen needs --secret-file" --listen 127.0.0.1:0
refused "malformed address" "bad --iscsi address 'nohostport'" --iscsi nohostport
refused "port out of range" "bad --listen address" --listen 127.0.0.1:70000 --secret-file "$T/secret"
refused "unresolvable address" "bad --listen address 'nosuch.invalid:7450'" \
	--listen nosuch.invalid:7450 --secret-file "$T/secret"
refused "address not local" "cannot listen on 192.0.2.1:3260 \(--iscsi\): Cannot assign requested address" \
	--iscsi 192.0.2.1:3260
refused "log directory missing" "--log-file $T/nodir/x.log: no directory" --log-file "$T/nodir/x.log"
refused "syslog and log file" "contradicts" --syslog --log-file "$T/x.log"
refused "plaintext and TLS" "contradicts --tls-ca" --secret-file "$T/secret" --plaintext --tls-ca "$T/secret"
refused "no such group" "--socket-group nosuchgroup-ops: no such group" --socket-group nosuchgroup-ops
printf 'key\n' >"$T/key.pem"; chmod 640 "$T/key.pem"
refused "TLS key readable by others" "--tls-key $T/key.pem is accessible by group or others" \
	--secret-file "$T/secret" --tls-key "$T/key.pem"
check "a refused start left no log file" test ! -e "$T/x.log"

# ---- ports in use ------------------------------------------------------------
python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(120)' >"$T/busy.port" &
BUSY_PID=$!
trap 'kill $BUSY_PID 2>/dev/null; cleanup' EXIT
wait_for 20 test -s "$T/busy.port" || fail "no busy port"
BUSY=$(cat "$T/busy.port")
refused "iSCSI port in use" "cannot listen on 127.0.0.1:$BUSY \(--iscsi\): Address already in use" \
	--iscsi "127.0.0.1:$BUSY"
refused "replication port in use" "cannot listen on 127.0.0.1:$BUSY \(--listen\): Address already in use" \
	--listen "127.0.0.1:$BUSY" --secret-file "$T/secret"
expect_err 1 "Address already in use" "in use, from a configuration file" -- \
	"$FERRYD" --pool "$T/new/pool" --config <(printf 'iscsi = 127.0.0.1:%s\n' "$BUSY")
check "port in use, one line on stderr" test "$(wc -l <<<"$ERR")" = 1
check "configuration file: nothing created" test ! -e "$T/new"
kill $BUSY_PID

# ---- an existing pool is left as it was ------------------------------------------
expect 0 "a pool with a volume" -- "$FERRYD" --pool "$T/p"
expect 0 "volume" -- "$FERRY_BIN" --pool "$T/p" volume create v --size 1M
stop_daemon "$T/p" || fail "stop"
rm -f "$T/p/ferryd.log" "$T/p/ferryd.lock"
before=$(tree_of "$T/p")
unchanged() {
	local now
	now=$(tree_of "$T/p")
	check "$1: pool unchanged: $(diff <(echo "$before") <(echo "$now") | tr '\n' ' ')" test "$now" = "$before"
	[ ! -e "$T/p/ferryd.lock" ] || check "$1: lock free" lock_free "$T/p"
}

expect 1 "port in use, existing pool" -- "$FERRYD" --pool "$T/p" --iscsi "192.0.2.1:3260"
unchanged "address not local"

# Not writable: a read-only bind mount as root (root ignores modes), else a mode.
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
	expect 1 "pool not writable" -- unshare -m sh -c \
		"mount --bind '$T/p' '$T/p' && mount -o remount,bind,ro '$T/p' && exec '$FERRYD' --pool '$T/p'"
else
	chmod 555 "$T/p"
	expect 1 "pool not writable" -- "$FERRYD" --pool "$T/p"
	chmod 755 "$T/p"
fi
check "not writable: says so ('$ERR')" grep -q "pool directory $T/p is not writable" <<<"$ERR"
unchanged "not writable"

# Failures found after forking (the services, the control socket) come back
# through the parent, after the daemon removed what it created.
printf 'not a certificate\n' >"$T/bad.pem"; chmod 600 "$T/bad.pem"
expect 1 "bad TLS certificate (found by the replication service)" -- \
	"$FERRYD" --pool "$T/p" --secret-file "$T/secret" --tls-cert "$T/bad.pem" --tls-key "$T/bad.pem" \
	--tls-ca "$T/bad.pem"
check "service failure: the reason ('$ERR')" grep -q "tls-cert $T/bad.pem" <<<"$ERR"
check "service failure: what failed" grep -q "^ferryd: cannot start replication$" <<<"$ERR"
unchanged "service failure"
expect 1 "same in a new pool" -- "$FERRYD" --pool "$T/new/pool" --secret-file "$T/secret" \
	--tls-cert "$T/bad.pem" --tls-key "$T/bad.pem" --tls-ca "$T/bad.pem"
check "service failure: no pool left" test ! -e "$T/new"
mkdir "$T/p/ferryd.sock"
before=$(tree_of "$T/p")
expect_err 1 "^ferryd: cannot listen on $T/p/ferryd.sock" "control socket failure" -- "$FERRYD" --pool "$T/p"
unchanged "control socket failure"
expect 1 "in the foreground, with a log file outside the pool" -- \
	"$FERRYD" --pool "$T/p" --foreground --log-file "$T/fg.log"
check "foreground failure told on stderr ('$ERR')" grep -q "^ferryd: cannot listen on $T/p/ferryd.sock" <<<"$ERR"
check "foreground failure: log file removed" test ! -e "$T/fg.log"
unchanged "foreground failure"
rmdir "$T/p/ferryd.sock"

# ---- the daemon lets go of the caller's stdout and stderr ------------------------------
# (a caller reading them, like $(...) or a supervisor, waits for their end)
rc=0
out=$(timeout 30 "$FERRYD" --pool "$T/held" 2>&1) || rc=$?
check "daemonized ferryd returns through a pipe (exit $rc, '$out')" test $rc = 0
stop_daemon "$T/held" || fail "stop held"

# ---- a pool with exports and no iSCSI listener warns ------------------------------
PORT=$(free_port)
expect 0 "start with --iscsi" -- "$FERRYD" --pool "$T/p" --iscsi "127.0.0.1:$PORT"
check "no warning with --iscsi" test -z "$ERR"
expect 0 "export" -- "$FERRY_BIN" --pool "$T/p" export add v
stop_daemon "$T/p" || fail "stop"
expect 0 "restart without --iscsi" -- "$FERRYD" --pool "$T/p"
check "warning printed ('$ERR')" \
	grep -q "^ferryd: warning: pool $T/p has 1 export but ferryd has no iSCSI listener (--iscsi HOST:PORT): not served$" <<<"$ERR"
check "warning logged" grep -q "warn: pool $T/p has 1 export but" "$T/p/ferryd.log"
stop_daemon "$T/p" || fail "stop"
"$FERRYD" --pool "$T/p" --foreground --log-file "$T/fg.log" 2>"$T/fg.err" &
fpid=$!
wait_for 20 test -S "$T/p/ferryd.sock" || fail "foreground daemon"
check "foreground with a log file: warning on stderr too" wait_log "$T/fg.err" "^ferryd: warning: pool .* has 1 export"
kill -TERM $fpid; wait $fpid

finish
