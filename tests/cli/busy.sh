#!/bin/bash
# The control socket at its connection limit (128 commands at once): every
# further command is answered "ferryd is busy" (exit 1), never a broken
# pipe or a hang, and the daemon serves again once the held commands end.
. "$(dirname "$0")/lib.sh"

start_daemon || { echo "ferryd did not start" >&2; exit 1; }
expect 0 "create v" -- ferry volume create v --size 1M

# 128 connections that each send a `volume write` request and then no
# input: each holds a connection thread (waiting for its data) until the
# holder closes them.  HOLD=N: hold N; prints "held" when every request is
# in and the daemon has read them (a 129th command is refused, checked).
cat >"$T/hold.py" <<'PY'
import socket, struct, sys, time
path, n = sys.argv[1], int(sys.argv[2])
argv = [b"volume", b"write", b"v", b"--offset", b"0", b"-"]
payload = struct.pack(">I", len(argv)) + b"".join(a + b"\0" for a in argv)
req = struct.pack(">IB", len(payload), 1) + payload
socks = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(req)
    socks.append(s)
print("held", flush=True)
sys.stdin.read()          # until the test closes our stdin
for s in socks:
    s.close()
PY
hold() { python3 "$T/hold.py" "$POOL/ferryd.sock" "$1"; }

mkfifo "$T/hold_in"
hold 128 <"$T/hold_in" >"$T/hold_out" 2>&1 &
holder=$!
exec 7>"$T/hold_in"          # keeps the holder's stdin open
wait_for 60 grep -q held "$T/hold_out" || fail "the holder did not connect: $(cat "$T/hold_out")"
# the daemon has accepted all 128 once a further command is refused
wait_for 60 sh -c "! '$FERRY_BIN' --pool '$POOL' volume list >/dev/null 2>&1" ||
	fail "a command still succeeds with 128 connections held"

# Many commands at once, each must be refused cleanly.
N=60
for i in $(seq $N); do
	( "$FERRY_BIN" --pool "$POOL" volume info v >"$T/c$i.out" 2>"$T/c$i.err"; echo $? >"$T/c$i.rc" ) &
done
wait_for 120 sh -c "[ \$(ls '$T'/c*.rc 2>/dev/null | wc -l) -ge $N ]" || fail "commands did not finish"
busy=0 other=""
for i in $(seq $N); do
	rc=$(cat "$T/c$i.rc")
	if [ "$rc" = 1 ] && grep -qx "ferry: ferryd is busy (too many connections)" "$T/c$i.err" &&
		[ "$(wc -l <"$T/c$i.err")" = 1 ]; then
		busy=$((busy + 1))
	else
		other="$other [rc $rc: $(cat "$T/c$i.err")]"
	fi
done
check "all $N commands beyond the limit answered 'ferryd is busy' (got $busy;$other)" test $busy = $N
check "no broken pipe" sh -c "! cat '$T'/c*.err | grep -qi 'broken pipe'"

# The holder goes away: commands work again.
exec 7>&-
wait $holder
wait_for 60 sh -c "'$FERRY_BIN' --pool '$POOL' volume info v >/dev/null 2>&1" ||
	fail "ferryd did not serve again after the connections closed"
expect 0 "volume list after the flood" -- ferry volume list
check "ferryd logged the refusals" grep -q "refused control connection: 128 already open" "$POOL/ferryd.log"
finish
