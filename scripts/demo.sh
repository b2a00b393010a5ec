#!/bin/bash
# A few-second tour of ferry: start a ferryd on a temporary pool, create a
# volume, write, snapshot, discard, snapshot, show the 4 KiB-exact diff
# and the md5s, stop.  Usage: scripts/demo.sh BUILD_DIR
set -euo pipefail
B=${1:-build}
FERRYD=$B/ferryd
FERRY=$B/ferry
[ -x "$FERRYD" ] && [ -x "$FERRY" ] || { echo "demo: build first (no $FERRYD / $FERRY)" >&2; exit 1; }

T=$(mktemp -d /tmp/ferry-demo.XXXXXX)
POOL=$T/pool
cleanup() {
	if [ -f "$POOL/ferryd.lock" ]; then
		pid=$(cat "$POOL/ferryd.lock" 2>/dev/null || true)
		[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
	fi
	rm -rf "$T"
}
trap cleanup EXIT

if [ -t 1 ]; then say() { printf "\n\033[1m== %s\033[0m\n" "$*"; }; else say() { printf "\n== %s\n" "$*"; }; fi
run() { printf '$ %s\n' "$*"; "$@"; }
ferry() { run "$FERRY" --pool "$POOL" "$@"; }

say "Start a ferryd on a fresh pool (it daemonizes once its socket is ready)"
run "$FERRYD" --pool "$POOL"

say "Create a 64 MiB thin volume (objects of 4 MiB): nothing is allocated yet"
ferry volume create demo --size 64M
ferry volume info demo

say "Write 5 MiB of random data at offset 2 MiB (streamed, durable when it returns)"
head -c 5M /dev/urandom >"$T/data"
ferry volume write demo --offset 2M "$T/data"

say "Freeze it as snapshot s1"
ferry snap create demo@s1

say "Discard 4 MiB at 3 MiB (reads as zeros, space freed) and write 4 KiB at 40 MiB"
ferry volume discard demo --offset 3M --length 4M
head -c 4K /dev/urandom | "$FERRY" --pool "$POOL" volume write demo --offset 40M
echo "$ ... | ferry --pool $POOL volume write demo --offset 40M"

say "Snapshot s2, and what changed between s1 and s2 (zero ranges are metadata)"
ferry snap create demo@s2
ferry snap diff demo@s1 demo@s2
ferry snap diff demo@s1 demo@s2 --json

say "md5 of each snapshot, and of the exported image of s1 for comparison"
ferry volume md5 demo@s1
ferry volume md5 demo@s2
"$FERRY" --pool "$POOL" volume export demo@s1 | md5sum | sed 's/-$/(export of demo@s1 | md5sum)/'
ferry snap list demo
ferry volume info demo

say "Stop ferryd (SIGTERM: volumes flushed and closed)"
pid=$(cat "$POOL/ferryd.lock")
run kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$pid" 2>/dev/null; then echo "demo: ferryd did not stop" >&2; exit 1; fi
echo "ferryd stopped; the pool was $POOL (removed now)."
