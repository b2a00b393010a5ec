#!/bin/bash
# ferryd's life: help without a daemon, no-daemon message, start-up,
# socket permissions, second ferryd refused, clients that misbehave,
# SIGTERM/SIGINT shutdown, restart after SIGKILL.
. "$(dirname "$0")/lib.sh"

# ---- without a daemon -----------------------------------------------------
expect 0 "ferry --help" -- "$FERRY_BIN" --help
check "top help lists commands" grep -q "volume create NAME --size SIZE" <<<"$OUT"
check "top help lists snap diff" grep -q "snap diff \[NAME@FROM\] NAME@TO" <<<"$OUT"
expect 0 "ferry volume create --help" -- ferry volume create --help
check "command help" grep -q "usage: ferry --pool DIR volume create NAME --size SIZE" <<<"$OUT"
expect 0 "ferry snap --help" -- ferry snap --help
check "group help" grep -q "diff" <<<"$OUT"
expect 0 "ferryd --help" -- "$FERRYD" --help
check "ferryd help" grep -q -- "--pool DIR" <<<"$OUT"
expect 0 "--version" -- "$FERRY_BIN" --version
expect_err 1 "^ferry: no ferryd serves $POOL \(start one with: ferryd --pool $POOL\)$" \
	"no daemon" -- ferry volume list
expect_err 2 "unknown command" "usage errors need no daemon" -- ferry volume frob
check "no daemon: pool not created by the CLI" test ! -e "$POOL"
expect_err 2 "--pool DIR is required" "ferryd without --pool" -- "$FERRYD"
expect_err 2 "unknown option '--frob'" "ferryd unknown option" -- "$FERRYD" --pool "$POOL" --frob
expect_err 2 "bad --log-level" "ferryd bad log level" -- "$FERRYD" --pool "$POOL" --log-level loud

touch "$T/afile"
expect_err 1 "cannot create pool directory" "pool that is a file" -- "$FERRYD" --pool "$T/afile/pool"

# A failure after daemonizing reaches the terminal through the parent.
mkdir -p "$T/bad/ferryd.sock/x"
expect_err 1 "^ferryd: cannot listen on .*ferryd.sock" "daemon start-up failure reported" -- "$FERRYD" --pool "$T/bad"
check "failed daemon released the lock" lock_free "$T/bad"

# ---- start, lock, socket ----------------------------------------------------
expect 0 "ferryd starts (creates the pool)" -- "$FERRYD" --pool "$POOL"
check "daemon returned with the socket ready" test -S "$POOL/ferryd.sock"
check "socket is 0600" test "$(stat -c %a "$POOL/ferryd.sock")" = 600
pid=$(daemon_pid)
check "lock file names a live pid" kill -0 "$pid"
check "daemonized into its own session" test "$(ps -o sid= -p "$pid" | tr -d ' ')" != "$(ps -o sid= -p $$ | tr -d ' ')"
check "daemonized: stdio detached" test "$(readlink /proc/$pid/fd/0)" = /dev/null
expect 0 "command right after start" -- ferry volume create v --size 8M
expect_err 1 "already served by ferryd pid $pid" "second ferryd refused" -- "$FERRYD" --pool "$POOL"
expect_err 1 "already served by ferryd pid $pid" "second foreground ferryd refused" -- \
	"$FERRYD" --pool "$POOL" --foreground
check "first ferryd still alive" kill -0 "$pid"

# ---- misbehaving clients ---------------------------------------------------
head -c 4M /dev/urandom >"$T/d4m"
expect 0 "fill v" -- ferry volume write v --offset 0 "$T/d4m"
# A reader that goes away in the middle of an export.
expect 1 "export into a closed pipe fails (no SIGPIPE death)" -- \
	bash -c "set -o pipefail; '$FERRY_BIN' --pool '$POOL' volume export v | head -c 100 >/dev/null"
# Garbage, a half frame, a lying length, a bad argv, a silent client.
check "garbage clients" python3 - "$POOL/ferryd.sock" <<'PY'
import socket, struct, sys
path = sys.argv[1]
def conn():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(path); s.settimeout(15); return s
silent = conn()                                   # says nothing, stays open
for junk in [b"\xff" * 64, b"\0\0\0\5\4ab", struct.pack(">IB", 1 << 30, 1),
             struct.pack(">IB", 5, 1) + b"\0\0\0\9x", struct.pack(">IB", 4, 7) + b"\0\0\0\0"]:
    s = conn(); s.sendall(junk)
    try: s.shutdown(socket.SHUT_WR)
    except OSError: pass
    try:
        while s.recv(4096): pass                  # the daemon must close it
    except ConnectionResetError:
        pass                                      # closed with our bytes unread
    s.close()
# A valid request whose client vanishes before reading the answer.
req = b"".join(x.encode() + b"\0" for x in ["volume", "export", "v", "-"])
s = conn(); s.sendall(struct.pack(">IB", 4 + len(req), 1) + struct.pack(">I", 4) + req); s.close()
# A write whose client vanishes half-way through its input.
req = b"".join(x.encode() + b"\0" for x in ["volume", "write", "v", "--offset", "0"])
s = conn(); s.sendall(struct.pack(">IB", 4 + len(req), 1) + struct.pack(">I", 5) + req)
s.sendall(struct.pack(">IB", 1000, 2) + b"x" * 10); s.close()
silent.close()
PY
check "ferryd survived misbehaving clients" kill -0 "$pid"
expect 0 "and still answers" -- ferry volume md5 v
cp "$T/d4m" "$T/v.img"; truncate -s 8M "$T/v.img"
check "v unchanged by the vanished writer" test "$OUT" = "$(md5sum <"$T/v.img" | cut -d' ' -f1)  v"
# Several clients at once (one thread per connection).
for i in 1 2 3 4; do ferry volume md5 v >"$T/par$i" & done
wait
for i in 1 2 3 4; do check "parallel client $i" cmp -s "$T/par$i" <(echo "$(md5sum <"$T/v.img" | cut -d' ' -f1)  v"); done

# Progress on a terminal (script(1) gives the CLI a tty), none otherwise.
if command -v script >/dev/null; then
	expect 0 "md5 on a tty" -- script -qec "'$FERRY_BIN' --pool '$POOL' volume md5 v" /dev/null
	check "progress drawn on a tty" grep -q "md5: 8.0 MiB / 8.0 MiB (100%)" <<<"$OUT"
	expect 0 "write on a tty" -- script -qec "'$FERRY_BIN' --pool '$POOL' volume write v --offset 0 '$T/d4m'" /dev/null
	check "write progress drawn on a tty" grep -q "write: 4.0 MiB / 4.0 MiB (100%)" <<<"$OUT"
fi
expect 0 "md5 without a tty" -- ferry volume md5 v
check "no progress without a tty" test -z "$ERR"

# ---- SIGTERM: clean stop, data kept --------------------------------------
stop_daemon || fail "ferryd did not stop on SIGTERM"
check "socket removed on shutdown" test ! -e "$POOL/ferryd.sock"
check "shutdown logged" grep -q "stopped" "$POOL/ferryd.log"
expect_err 1 "no ferryd serves" "stopped daemon" -- ferry volume list
expect 0 "restart" -- "$FERRYD" --pool "$POOL"
expect 0 "data kept across restart" -- ferry volume md5 v
check "md5 after restart" test "$OUT" = "$(md5sum <"$T/v.img" | cut -d' ' -f1)  v"

# ---- SIGKILL leaves a stale socket; the next ferryd takes over -----------
kill_daemon || fail "SIGKILL"
check "stale socket left behind" test -S "$POOL/ferryd.sock"
expect_err 1 "no ferryd serves" "dead daemon" -- ferry volume list
expect 0 "restart after SIGKILL" -- "$FERRYD" --pool "$POOL"
expect 0 "answers after SIGKILL restart" -- ferry volume md5 v
check "md5 after SIGKILL" test "$OUT" = "$(md5sum <"$T/v.img" | cut -d' ' -f1)  v"
stop_daemon || fail "stop"

# ---- foreground: logs to stderr, exit 0 on SIGTERM and SIGINT --------------
for sig in TERM INT; do
	"$FERRYD" --pool "$POOL" --foreground 2>"$T/fg.log" &
	fpid=$!
	wait_for 20 ferry volume list >/dev/null 2>&1 || fail "foreground ferryd not answering"
	check "foreground pid in lock file" test "$(daemon_pid)" = "$fpid"
	kill -$sig $fpid
	rc=0
	wait $fpid || rc=$?
	check "SIG$sig: exit 0 (got $rc)" test $rc = 0
	check "SIG$sig: socket gone" test ! -e "$POOL/ferryd.sock"
	check "SIG$sig: logged to stderr" grep -q "ferryd info: stopped" "$T/fg.log"
done

finish
