#!/bin/bash
# No volume data crosses the replication link in clear: a pair syncs a
# volume full of a recognizable pattern while tcpdump (or tshark) captures
# the link's port on loopback.  With TLS (the default) the pattern must be
# absent from the capture; with --plaintext on both sites it must be there
# (so the test can fail).  Exits 77 (skipped) only when capturing on lo is
# impossible here.
. "$(dirname "$0")/lib.sh"

PATTERN="FERRY-CLEARTEXT-CANARY-4f1c9e"
# 1 MiB of the pattern, uncompressed on the wire (no --compress).
python3 -c "import sys; p=b'$PATTERN-'; sys.stdout.buffer.write((p * (1048576 // len(p) + 1))[:1048576])" >"$T/pattern"

CAP_PID=
capture_start() { # capture_start PORT FILE
	rm -f "$2" "$T/cap.err"
	# tcpdump first: -U writes every packet as it comes, while tshark's
	# dumpcap buffers, and a capture stopped right after the transfer was
	# sometimes empty (1 run in 5-8 here).
	if command -v tcpdump >/dev/null; then
		tcpdump -i lo -U -w "$2" "tcp port $1" >/dev/null 2>"$T/cap.err" &
	else
		tshark -i lo -f "tcp port $1" -w "$2" >/dev/null 2>"$T/cap.err" &
	fi
	CAP_PID=$!
	# Ready once it says it is capturing/listening.
	wait_for 20 grep -Eqi "capturing on|listening on" "$T/cap.err"
}
capture_stop() {
	[ -n "$CAP_PID" ] || return 0
	# SIGTERM, not SIGINT: a background job of a non-interactive shell
	# starts with SIGINT ignored, and a signal that arrives before tshark
	# installs its handler would be lost.  Both flush the file.
	local kids
	kids=$(pgrep -P "$CAP_PID")
	kill -TERM "$CAP_PID" 2>/dev/null
	if ! wait_for 15 proc_gone "$CAP_PID"; then
		echo "capture process $CAP_PID ignored SIGTERM: killed" >&2
		kill -KILL "$CAP_PID" $kids 2>/dev/null
	fi
	wait "$CAP_PID" 2>/dev/null
	CAP_PID=
}
trap 'capture_stop; repl_cleanup' EXIT

if ! command -v tshark >/dev/null && ! command -v tcpdump >/dev/null; then
	echo "SKIP: neither tshark nor tcpdump is installed (scripts/deps.sh)"
	exit 77
fi
# Can we capture on lo at all?  (Not in a container without CAP_NET_RAW.)
PROBE_PORT=$(free_port)
if ! capture_start "$PROBE_PORT" "$T/probe.pcap"; then
	echo "SKIP: cannot capture on lo here: $(head -c 300 "$T/cap.err")"
	capture_stop
	exit 77
fi
capture_stop

# sync_with_capture TAG [DAEMON OPTIONS...]: fresh sites a and b with the
# options, a pair, the pattern volume synced while capturing.
sync_with_capture() {
	local tag=$1
	shift
	site_stop a 2>/dev/null
	site_stop b 2>/dev/null
	rm -rf "$T/a" "$T/b"
	"$FERRYD" --pool "$T/b" --log-level debug --listen 127.0.0.1:0 \
		--secret-file "$T/secret" "$@" || return 1
	PORT_b=$(sed -n 's/.*accepting peers on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$T/b/ferryd.log" | tail -n 1)
	"$FERRYD" --pool "$T/a" --log-level debug --secret-file "$T/secret" "$@" || return 1
	fa volume create v --size 4M --object-size 1M >/dev/null || return 1
	fa volume write v "$T/pattern" --offset 0 >/dev/null || return 1
	capture_start "$PORT_b" "$T/$tag.pcap" || return 1
	fa pair create v --peer "127.0.0.1:$PORT_b" --period 3600 >/dev/null || return 1
	fa pair sync v --wait >/dev/null || return 1
	# The capture writes behind the traffic: give it a moment to hold the
	# transfer before stopping it (bounded; judged by the checks below).
	wait_for 5 sh -c "[ \$(stat -c %s '$T/$tag.pcap' 2>/dev/null || echo 0) -gt 700000 ]" || true
	capture_stop
	check_synced v
}

hits() { grep -a -o "$PATTERN" "$1" | wc -l; }

expect 0 "TLS pair synced while capturing" -- sync_with_capture tls
if [ "$(stat -c %s "$T/tls.pcap")" -le 700000 ]; then
	# Seen once under heavy parallel load: a capture with no packets in it.
	# Without the transfer in it the check below proves nothing: once more.
	echo "TLS capture incomplete ($(stat -c %s "$T/tls.pcap") bytes): capturing once more"
	expect 0 "TLS pair synced while capturing (again)" -- sync_with_capture tls
fi
tls_bytes=$(stat -c %s "$T/tls.pcap")
tls_hits=$(hits "$T/tls.pcap")
echo "TLS capture: $tls_bytes bytes, pattern found $tls_hits times"
check "capture holds the transfer (> 700 KB of the 1 MiB)" test "$tls_bytes" -gt 700000
check "no volume data in clear with TLS" test "$tls_hits" -eq 0

expect 0 "plaintext pair synced while capturing" -- sync_with_capture plain --plaintext
plain_hits=$(hits "$T/plain.pcap")
echo "plaintext capture: $(stat -c %s "$T/plain.pcap") bytes, pattern found $plain_hits times"
check "the pattern is visible with --plaintext (the check can fail)" test "$plain_hits" -gt 1000

finish
