# Helpers of the metrics tests (sourced after tests/cli/lib.sh): iSCSI
# sessions held open by iscsi_session.py, and background processes that
# are killed at exit.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PIDS=()
metrics_cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	cleanup
}
trap metrics_cleanup EXIT

declare -A SIN SOUT SPID
# session NAME HOST PORT IQN: logs in and keeps the session open; talk to
# it with `ask NAME CMD` (commands: see iscsi_session.py).  False when the
# login failed.
session() {
	local name=$1 fin fout line
	mkfifo "$T/sess-$name.in" "$T/sess-$name.out"
	python3 "$HERE/iscsi_session.py" "$2" "$3" "$4" <"$T/sess-$name.in" >"$T/sess-$name.out" &
	SPID[$name]=$!
	PIDS+=($!)
	exec {fin}>"$T/sess-$name.in"
	exec {fout}<"$T/sess-$name.out"
	SIN[$name]=$fin
	SOUT[$name]=$fout
	read -r -t 30 line <&"$fout"
	[ "$line" = ready ]
}
ask() { # ask NAME CMD: prints the answer line
	local line
	echo "$2" >&"${SIN[$1]}"
	read -r -t 30 line <&"${SOUT[$1]}" || line="(no answer)"
	echo "$line"
}
# session_end NAME: logs out and waits for the helper to exit.
session_end() {
	ask "$1" quit >/dev/null
	exec {SIN[$1]}>&- {SOUT[$1]}<&-
	wait "${SPID[$1]}" 2>/dev/null
}
