#!/bin/bash
# ferryd killed with SIGKILL at random moments under a write + snapshot
# workload, restarted, and checked:
#  - every snapshot whose `snap create` returned 0 still exists, with the
#    md5 recorded right after its creation;
#  - the head holds every `volume write` that returned 0 (writes are
#    durable when they return), except where a later write to the same
#    place was cut short (its outcome is unknown).
# FERRY_ROUNDS=N sets the number of kill/restart rounds (default 20).
. "$(dirname "$0")/lib.sh"

ROUNDS=${FERRY_ROUNDS:-20}
SLOT=65536
NSLOTS=64
mkdir -p "$T/model" "$T/data"
J=$T/journal
: >"$J"
RANDOM=$$

start_daemon || { echo "ferryd did not start" >&2; exit 1; }
ferry volume create db --size $((SLOT * NSLOTS)) --object-size 64K || exit 1

# The workload: random whole-slot writes and snapshots until ferryd goes
# away.  A journal line is written before ("w") and only after success
# ("W", "S") of each command.
workload() {
	local round=$1 n=0
	while :; do
		n=$((n + 1))
		local slot=$((RANDOM % NSLOTS)) f="$T/data/r${round}_$n"
		if [ $((RANDOM % 4)) = 0 ]; then
			# A slot of zeros now and then: stored as zero ranges.
			head -c $SLOT /dev/zero >"$f"
		else
			head -c $SLOT /dev/urandom >"$f"
		fi
		echo "w $slot $f" >>"$J"
		ferry volume write db --offset $((slot * SLOT)) "$f" 2>/dev/null || break
		echo "W $slot $f" >>"$J"
		if [ $((n % 5)) = 0 ]; then
			local s="r${round}n$n"
			ferry snap create "db@$s" 2>/dev/null || break
			echo "s $s" >>"$J"
			local m
			m=$(ferry volume md5 "db@$s" 2>/dev/null) || break
			echo "S $s ${m%% *}" >>"$J"
		fi
	done
}

# Replays the journal into the model: model/SLOT is the content the head
# must have there; no file means unknown.
replay() {
	rm -f "$T/model"/*
	local op slot f
	while read -r op slot f; do
		case $op in
		w) rm -f "$T/model/$slot" ;;
		W) cp "$f" "$T/model/$slot" ;;
		esac
	done <"$J"
}

verify() { # verify ROUND: checks head and every recorded snapshot
	local op s m got
	replay
	if ! ferry volume export db "$T/head.img"; then
		fail "round $1: export after restart"
		return
	fi
	python3 - "$T/head.img" "$T/model" $SLOT <<'PY' || fail "round $1: head lost acknowledged writes"
import os, sys
img, model, slot = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(img, "rb").read()
bad = [n for n in os.listdir(model)
       if data[int(n) * slot:(int(n) + 1) * slot] != open(os.path.join(model, n), "rb").read()]
if bad:
    print("slots differing from acknowledged writes:", sorted(map(int, bad)), file=sys.stderr)
    sys.exit(1)
PY
	pass
	while read -r op s m; do
		case $op in
		s)
			ferry snap list db --json | grep -q "\"name\":\"$s\"" ||
				fail "round $1: snapshot $s (created with status 0) is gone" ;;
		S)
			got=$(ferry volume md5 "db@$s" 2>&1)
			SNAPS=$((SNAPS + 1))
			if [ "$got" = "$m  db@$s" ]; then pass; else fail "round $1: snapshot $s md5 '$got', recorded $m"; fi ;;
		esac
	done <"$J"
	CHECKED=$((CHECKED + 1))
}

CHECKED=0
SNAPS=0
for round in $(seq 1 "$ROUNDS"); do
	workload "$round" &
	wpid=$!
	# Kill at a random moment 50..550 ms into the workload.
	sleep "0.$(printf '%03d' $((50 + RANDOM % 500)))"
	kill_daemon || fail "round $round: ferryd did not die"
	wait $wpid
	start_daemon || { fail "round $round: restart failed"; break; }
	verify "$round"
	# Keep the check affordable: drop this round's snapshots and data files.
	for s in $(awk '$1 == "s" {print $2}' "$J"); do ferry snap rm "db@$s" >/dev/null || fail "snap rm $s"; done
	replay
	# Collapse the journal to the model: one W per known slot, nothing else.
	: >"$J"
	for f in "$T/model"/*; do
		[ -e "$f" ] || continue
		keep="$T/data/keep_$(basename "$f")"
		cp "$f" "$keep"
		echo "W $(basename "$f") $keep" >>"$J"
	done
	find "$T/data" -name 'r*' -delete
done
writes=$(ls "$T/model" | wc -l)
echo "crash: $ROUNDS rounds, $CHECKED verified, $SNAPS snapshot md5s checked, $writes slots with acknowledged content"
check "ran every round" test "$CHECKED" = "$ROUNDS"
check "snapshots were taken and checked" test "$SNAPS" -gt 0
stop_daemon || fail "final stop"
finish
