#!/bin/bash
# ferry on Ceph RBD, measured against what Ceph users have today, in one run:
#
#  1. iSCSI on an RBD image: ferry (ferryd --backend rbd --iscsi) vs tgt's
#     RBD backing store (Debian tgt-rbd, --bstype rbd) vs `rbd bench` on
#     the image directly (librbd without any target: the limit).
#     1 MiB sequential write / read at QD8 (MB/s) and 4 KiB scattered write
#     / read at QD32 (IOPS), qemu-img bench as the iSCSI client (data: a
#     non-zero byte pattern; reads only of written data).
#  2. Incremental replication between two clusters: 1% of a 4 GiB image
#     (random data) changed in random 4 KiB blocks of random bytes; ferry
#     (`pair sync --wait`: snapshot, diff, transfer, commit) vs `rbd snap
#     create` + `rbd export-diff | rbd import-diff` vs rbd-mirror in
#     snapshot mode (when it can be set up here): seconds and bytes.
#  3. Diff precision: blocks RBD's diff reports / blocks changed, before
#     (`rbd diff`, the extents rbd_diff_iterate2 gives) and after ferry's
#     narrowing (`ferry snap diff`), on a sparse image and on a written one
#     with identical rewrites mixed in.
#
# Interleaved rounds (the order of the contenders rotates), median and
# min..max.  The machine is shared: the load average is printed with every
# round.
#
#   bench/rbd.sh BUILD_DIR [RESULTS_MD]
# Environment: BENCH_ROUNDS (3), BENCH_PARTS (iscsi,repl,precision), BENCH_SETTLE (0),
#   BENCH_LUN_MB (1024), BENCH_4K_COUNT (10000), BENCH_REPL_GB (4),
#   BENCH_CEPH_A / BENCH_CEPH_B: ceph.conf of running clusters to use
#   (default: two throw-away clusters made here with scripts/ceph-cluster.sh,
#   with Ceph's default 1 s paxos interval, removed at the end).
# PID lists ($(ceph_pids), $fpids) are split into words on purpose.
# shellcheck disable=SC2046,SC2086
set -u
B=$(cd "${1:?usage: bench/rbd.sh BUILD_DIR [RESULTS_MD]}" && pwd)
OUT=${2:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${BENCH_ROUNDS:-3}
PARTS=${BENCH_PARTS:-iscsi,repl,precision}
LUN_MB=${BENCH_LUN_MB:-1024}
N4K=${BENCH_4K_COUNT:-10000}
REPL_GB=${BENCH_REPL_GB:-4}
CHG=$(( REPL_GB * (1 << 30) / 4096 / 100 ))   # 1% of the blocks
T=$(mktemp -d /tmp/ferry-ceph-bench.XXXXXX)
TGT_CTL= ; TGT_PID= ; MIRROR_PID=
made_clusters=()
for tool in qemu-img rbd ceph python3; do
	command -v $tool >/dev/null || { echo "bench/rbd.sh: $tool missing (scripts/deps.sh)" >&2; exit 1; }
done
[ -x "$B/bench/rbd_change" ] || { echo "bench/rbd.sh: $B/bench/rbd_change not built (librbd-dev?)" >&2; exit 1; }

cleanup() {
	local l
	for l in "$T"/*/ferryd.lock; do
		[ -f "$l" ] && kill -TERM "$(cat "$l")" 2>/dev/null
	done
	if [ -n "$TGT_CTL" ]; then
		tgtadm -C "$TGT_CTL" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1
		tgtadm -C "$TGT_CTL" --lld iscsi --op delete --mode target --tid 2 --force >/dev/null 2>&1
		tgtadm -C "$TGT_CTL" --op delete --mode system >/dev/null 2>&1
		sleep 0.3
		[ -n "$TGT_PID" ] && kill -KILL "$TGT_PID" 2>/dev/null
	fi
	[ -n "$MIRROR_PID" ] && kill -TERM "$MIRROR_PID" 2>/dev/null
	sleep 1
	for c in "${made_clusters[@]}"; do
		"$ROOT/scripts/ceph-cluster.sh" down "$c" >/dev/null 2>&1
	done
	rm -rf "$T"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(now)"; }
rate() { python3 -c "import sys; print('%.0f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$@"; }
# stats V...: "median (min..max)"
stats() { python3 -c '
import sys, statistics
v = [float(x) for x in sys.argv[1:] if x not in ("", "n/a")]
if not v: print("n/a"); sys.exit()
fmt = (lambda x: "%.0f" % x) if max(v) >= 100 else (lambda x: "%.2f" % x)
print("%s (%s..%s)" % (fmt(statistics.median(v)), fmt(min(v)), fmt(max(v))))' "$@"; }
median() { python3 -c '
import sys, statistics
v = [float(x) for x in sys.argv[1:] if x not in ("", "n/a")]
print(statistics.median(v) if v else "")' "$@"; }
# CPU seconds used so far by PIDS (user + system)
cpu_of() { local p t=0; for p in "$@"; do [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done
	python3 -c "print($t / $(getconf CLK_TCK))"; }
# CPU seconds of this shell's waited-for children so far: `times >FILE`
# (in this shell, not in a $(...) subshell), then child_cpu FILE
child_cpu() { tail -1 "$1" | python3 -c '
import re, sys
print(sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", sys.stdin.read())))'; }
sub() { python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }
ratio() { python3 -c "import sys; a,b=sys.argv[1],sys.argv[2]; print('%.2fx' % (float(a)/float(b)) if a and b and float(b) else 'n/a')" "$1" "$2"; }

# ---- clusters ------------------------------------------------------------------
CA=${BENCH_CEPH_A:-}; CB=${BENCH_CEPH_B:-}
up() { # DIR
	CEPH_CLUSTER_PAXOS=1 CEPH_CLUSTER_OSD_SIZE=30G "$ROOT/scripts/ceph-cluster.sh" up "$1" rbd >&2 ||
		{ echo "bench/rbd.sh: cluster $1 did not come up" >&2; exit 1; }
	made_clusters+=("$1")
}
if [ -z "$CA" ]; then up "$T/ca"; CA=$T/ca/ceph.conf; fi
if [[ $PARTS == *repl* ]] && [ -z "$CB" ]; then up "$T/cb"; CB=$T/cb/ceph.conf; fi
RB() { timeout 600 rbd --conf "$CA" "$@"; }
echo "# bench/rbd.sh: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB, $(uname -r), Ceph $(ceph --version | awk '{print $3}'), $(date -u +%Y-%m-%dT%H:%MZ); load at start $(load)"
FEAT="--image-feature layering,exclusive-lock,object-map,fast-diff"
RES=$T/results.md
: >"$RES"
ferryd_a() { "$B/ferryd" --pool "$T/fa" --backend rbd --rbd-pool rbd --ceph-conf "$CA" --log-level warn "$@"; }
fa() { "$B/ferry" --pool "$T/fa" "$@"; }
stop_fa() {
	local pid
	pid=$(cat "$T/fa/ferryd.lock")
	kill -TERM "$pid"
	for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
	return 1
}

# ---- 1. iSCSI ---------------------------------------------------------------------
if [[ $PARTS == *iscsi* ]]; then
	command -v tgtd >/dev/null && [ -f /usr/lib/tgt/backing-store/bs_rbd.so ] ||
		{ echo "bench/rbd.sh: tgt-rbd missing (scripts/deps.sh)" >&2; exit 1; }
	FP=$(free_port)
	ferryd_a --iscsi 127.0.0.1:$FP || exit 1
	fa volume create blun --size ${LUN_MB}M >/dev/null || exit 1
	fa export add blun >/dev/null || exit 1
	RB create --size ${LUN_MB}M $FEAT rbd/tlun || exit 1
	RB create --size ${LUN_MB}M $FEAT rbd/tlun2 || exit 1
	# tgt-rbd as Debian ships it keeps librbd's cache on (writeback after the
	# first flush); ferry keeps it off (docs/CEPH.md).  Both are measured.
	cp "$CA" "$T/nocache.conf"
	printf '[client]\nrbd cache = false\n' >>"$T/nocache.conf"
	RB create --size ${LUN_MB}M $FEAT rbd/rlun || exit 1
	TP=$(free_port); TGT_CTL=$(( (RANDOM % 10000) + 20000 ))
	tgtd -f -C $TGT_CTL --iscsi portal=127.0.0.1:$TP >"$T/tgtd.log" 2>&1 &
	TGT_PID=$!
	for _ in $(seq 100); do tgtadm -C $TGT_CTL --op show --mode sys >/dev/null 2>&1 && break; sleep 0.05; done
	tgtadm -C $TGT_CTL --lld iscsi --op new --mode target --tid 1 -T iqn.2026-11.io.ferry.bench:tgtrbd &&
	tgtadm -C $TGT_CTL --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 --bstype rbd \
		-b rbd/tlun --bsopts "conf=$CA;id=admin" &&
	tgtadm -C $TGT_CTL --lld iscsi --op bind --mode target --tid 1 -I ALL &&
	tgtadm -C $TGT_CTL --lld iscsi --op new --mode target --tid 2 -T iqn.2026-11.io.ferry.bench:tgtrbd2 &&
	tgtadm -C $TGT_CTL --lld iscsi --op new --mode logicalunit --tid 2 --lun 1 --bstype rbd \
		-b rbd/tlun2 --bsopts "conf=$T/nocache.conf;id=admin" &&
	tgtadm -C $TGT_CTL --lld iscsi --op bind --mode target --tid 2 -I ALL ||
		{ echo "bench/rbd.sh: tgt-rbd setup failed" >&2; tail "$T/tgtd.log" >&2; exit 1; }
	declare -A URL=([ferry]=iscsi://127.0.0.1:$FP/iqn.2026-11.io.ferry:blun/0
	                [tgt]=iscsi://127.0.0.1:$TP/iqn.2026-11.io.ferry.bench:tgtrbd/1
	                [tgtnc]=iscsi://127.0.0.1:$TP/iqn.2026-11.io.ferry.bench:tgtrbd2/1)
	STEP=$((4096 * 7919))
	qb() { # URL ARGS: seconds
		timeout 600 qemu-img bench -f raw -t none "$@" 2>&1 | sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p'
	}
	rbdb() { # ARGS: ops/sec
		timeout 600 rbd --conf "$CA" bench rbd/rlun "$@" 2>&1 | tr '\r' '\n' | sed -n 's/^elapsed: *[0-9.]* *ops: *[0-9]* *ops\/sec: *\([0-9.]*\).*/\1/p'
	}
	run() { # WHO WORKLOAD -> MB/s or IOPS
		local who=$1 w=$2 s
		if [ "$who" = rbd ]; then
			case $w in
			seqw) s=$(rbdb --io-type write --io-size 1M --io-threads 8 --io-pattern seq --io-total ${LUN_MB}M) ;;
			seqr) s=$(rbdb --io-type read --io-size 1M --io-threads 8 --io-pattern seq --io-total ${LUN_MB}M) ;;
			rw) s=$(rbdb --io-type write --io-size 4K --io-threads 32 --io-pattern rand --io-total $((N4K * 4))K) ;;
			rr) s=$(rbdb --io-type read --io-size 4K --io-threads 32 --io-pattern rand --io-total $((N4K * 4))K) ;;
			esac
			[ -n "$s" ] && python3 -c "print('%.0f' % (float('$s') * (1.048576 if '$w'.startswith('seq') else 1)))"
			return
		fi
		local u=${URL[$who]}
		case $w in
		seqw) s=$(qb -w -s 1M -d 8 -c $LUN_MB --pattern=0xa5 "$u"); rate $((LUN_MB * 1048576 / 1000000)) "$s" ;;
		seqr) s=$(qb -s 1M -d 8 -c $LUN_MB "$u"); rate $((LUN_MB * 1048576 / 1000000)) "$s" ;;
		rw) s=$(qb -w -s 4K -d 32 -c $N4K -S $STEP --pattern=0x5a "$u"); rate $N4K "$s" ;;
		rr) s=$(qb -s 4K -d 32 -c $N4K -S $STEP "$u"); rate $N4K "$s" ;;
		esac
	}
	# Everything is written once before anything is read.
	for who in ferry tgt tgtnc rbd; do run $who seqw >/dev/null; done
	declare -A V
	order=(ferry tgt tgtnc rbd)
	for r in $(seq "$ROUNDS"); do
		echo "iscsi round $r (load $(load))"
		for w in seqw seqr rw rr; do
			for who in "${order[@]}"; do
				x=$(run $who $w)
				V[$who,$w]="${V[$who,$w]:-} $x"
				echo "  $w $who $x"
			done
		done
		order=("${order[@]:1}" "${order[0]}")
	done
	{
		echo "### iSCSI on an RBD image (${LUN_MB} MiB, ${ROUNDS} interleaved rounds, median (min..max))"
		echo
		echo "| workload | ferry (ferryd --backend rbd) | tgt-rbd, librbd cache on (Debian default) | tgt-rbd, cache off (as ferry) | rbd bench (librbd, no target) | ferry / tgt-rbd | ferry / tgt-rbd cache off | ferry / rbd bench |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|"
		for w in seqw seqr rw rr; do
			case $w in
			seqw) l="1 MiB sequential write, QD8, MB/s" ;; seqr) l="1 MiB sequential read, QD8, MB/s" ;;
			rw) l="4 KiB scattered write, QD32, IOPS" ;; rr) l="4 KiB scattered read, QD32, IOPS" ;;
			esac
			# shellcheck disable=SC2086
			echo "| $l | $(stats ${V[ferry,$w]}) | $(stats ${V[tgt,$w]}) | $(stats ${V[tgtnc,$w]}) | $(stats ${V[rbd,$w]}) | $(ratio "$(median ${V[ferry,$w]})" "$(median ${V[tgt,$w]})") | $(ratio "$(median ${V[ferry,$w]})" "$(median ${V[tgtnc,$w]})") | $(ratio "$(median ${V[ferry,$w]})" "$(median ${V[rbd,$w]})") |"
		done
		echo
	} | tee -a "$RES"
	tgtadm -C $TGT_CTL --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1
	tgtadm -C $TGT_CTL --lld iscsi --op delete --mode target --tid 2 --force >/dev/null 2>&1
	tgtadm -C $TGT_CTL --op delete --mode system >/dev/null 2>&1
	TGT_CTL=
	stop_fa
	RB rm rbd/tlun >/dev/null 2>&1; RB rm rbd/tlun2 >/dev/null 2>&1; RB rm rbd/rlun >/dev/null 2>&1
fi

# ---- 2. replication between two clusters --------------------------------------------
if [[ $PARTS == *repl* ]]; then
	RBB() { timeout 600 rbd --conf "$CB" "$@"; }
	SZ=${REPL_GB}G
	secret=$T/secret; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret"; chmod 600 "$secret"
	BP=$(free_port)
	"$B/ferryd" --pool "$T/fb" --backend rbd --rbd-pool rbd --ceph-conf "$CB" --log-level warn \
		--listen 127.0.0.1:$BP --secret-file "$secret" || exit 1
	start_fa() { ferryd_a --secret-file "$secret"; }
	start_fa || exit 1
	fa volume create rv --size $SZ >/dev/null || exit 1
	RB create --size $SZ $FEAT rbd/xv || exit 1
	RBB create --size $SZ $FEAT rbd/xv || exit 1
	echo "repl: filling two $SZ images with random data (load $(load))"
	stop_fa || exit 1
	"$B/bench/rbd_change" "$CA" rbd rv --fill --seed 7 >/dev/null || exit 1
	"$B/bench/rbd_change" "$CA" rbd xv --fill --seed 7 >/dev/null || exit 1
	start_fa || exit 1
	t0=$(now)
	fa pair create rv --peer 127.0.0.1:$BP --period 3600 >/dev/null || exit 1
	timeout 3600 "$B/ferry" --pool "$T/fa" pair sync rv --wait >/dev/null || { echo "initial sync failed" >&2; exit 1; }
	init_ferry=$(since "$t0")
	t0=$(now)
	RB snap create --no-progress rbd/xv@s0 &&
		RB export-diff --no-progress rbd/xv@s0 - | RBB import-diff --no-progress - rbd/xv || exit 1
	init_rbd=$(since "$t0")
	echo "repl: initial copy: ferry ${init_ferry} s, export-diff|import-diff ${init_rbd} s"

	# rbd-mirror, snapshot mode (B pulls from A), if it can be set up here.
	# Completion: B holds a complete non-primary copy of A's newest mirror
	# snapshot (rbd-mirror's status reporting did not work here).
	MIRROR=0
	primary_snap() { # newest mirror snapshot id of A's mv
		RB snap ls --all rbd/mv --format json 2>/dev/null | python3 -c '
import json, sys
try:
    snaps = json.load(sys.stdin)
except ValueError:  # no image (yet): no output
    snaps = []
ids = [s["id"] for s in snaps if s["namespace"].get("type") == "mirror"]
print(max(ids) if ids else "")'
	}
	mirror_done() { # SNAP_ID
		RBB snap ls --all rbd/mv --format json 2>/dev/null | python3 -c '
import json, sys
sid = int(sys.argv[1])
try:
    snaps = json.load(sys.stdin)
except ValueError:  # not replicated to B yet: no output
    sys.exit(1)
ok = any(s["namespace"].get("type") == "mirror" and s["namespace"].get("primary_snap_id") == sid
         and s["namespace"].get("complete") for s in snaps)
sys.exit(0 if ok else 1)' "$1"
	}
	wait_mirror() { # SNAP_ID SECONDS
		local end=$((SECONDS + $2))
		until mirror_done "$1"; do [ $SECONDS -ge $end ] && return 1; sleep 0.1; done
	}
	if command -v rbd-mirror >/dev/null; then
		(
			set -e
			RB mirror pool enable rbd image
			RBB mirror pool enable rbd image
			RB mirror pool peer bootstrap create --site-name site-a rbd >"$T/token"
			RBB mirror pool peer bootstrap import --site-name site-b --direction rx-only rbd "$T/token"
			RB create --size $SZ $FEAT rbd/mv
			"$B/bench/rbd_change" "$CA" rbd mv --fill --seed 7 >/dev/null
		) >"$T/mirror-setup.log" 2>&1 && MIRROR=1
		if [ $MIRROR = 1 ]; then
			# (its pool replayers find their own cluster through CEPH_CONF)
			CEPH_CONF=$CB rbd-mirror --conf "$CB" --id admin -f >"$T/rbd-mirror.log" 2>&1 &
			MIRROR_PID=$!
			# rbd-mirror registers itself on A as a peer; mirror snapshots
			# made before that name no peer and are never copied
			end=$((SECONDS + 120))
			until RB mirror pool info rbd 2>/dev/null | grep -q 'Direction: tx-only'; do
				[ $SECONDS -ge $end ] && { MIRROR=0; break; }
				sleep 0.5
			done
		fi
		if [ $MIRROR = 1 ]; then
			t0=$(now)
			if RB mirror image enable rbd/mv snapshot >/dev/null && wait_mirror "$(primary_snap)" 900; then
				echo "repl: rbd-mirror initial sync $(since "$t0") s"
			else
				MIRROR=0
				echo "repl: rbd-mirror did not sync; left out" >&2
			fi
		else
			echo "repl: rbd-mirror could not be set up:" >&2; tail -3 "$T/mirror-setup.log" >&2
		fi
	fi

	# Ceph daemons of both clusters (their command lines name the conf)
	ceph_pids() { pgrep -f -- "^ceph-(mon|mgr|osd) --conf ($CA|$CB)"; }
	# BENCH_SETTLE=1: each round starts after both clusters' snapshot
	# trimming (snaptrim) has finished, at most 60 s: ferry and rbd-mirror
	# delete the previous cycle's snapshot after each cycle and the OSDs
	# trim its clones in the background.  Off by default: these OSDs sit
	# on a file, count as rotational and sleep 5 s between trims
	# (osd_snap_trim_sleep_hdd), so trimming takes minutes but little CPU.
	settle() {
		[ "${BENCH_SETTLE:-0}" = 1 ] || return 0
		local end=$((SECONDS + 60)) c
		for c in "$CA" "$CB"; do
			while timeout 30 ceph --conf "$c" pg stat 2>/dev/null | grep -q snaptrim; do
				[ $SECONDS -ge $end ] && { echo "  (snaptrim still running after 60 s)" >&2; return; }
				sleep 0.5
			done
		done
	}
	declare -A RT RW RC RK
	order=(ferry rbd mirror)
	for r in $(seq "$ROUNDS"); do
		seed=$((1000 + r))
		echo "repl round $r: $CHG random 4 KiB blocks (load $(load))"
		for who in "${order[@]}"; do
			[ $who = mirror ] && [ $MIRROR != 1 ] && continue
			settle
			k0=$(cpu_of $(ceph_pids))
			case $who in
			ferry)
				stop_fa && "$B/bench/rbd_change" "$CA" rbd rv --blocks $CHG --seed $seed >/dev/null &&
					start_fa || exit 1
				fpids="$(cat "$T/fa/ferryd.lock") $(cat "$T/fb/ferryd.lock")"
				k0=$(cpu_of $(ceph_pids)); c0=$(cpu_of $fpids)
				t0=$(now)
				timeout 600 "$B/ferry" --pool "$T/fa" pair sync rv --wait >/dev/null || { echo "sync failed" >&2; exit 1; }
				t=$(since "$t0")
				c=$(sub "$c0" "$(cpu_of $fpids)")
				wb=$(fa pair status rv --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["last_cycle"]["wire_bytes"])')
				;;
			rbd)
				"$B/bench/rbd_change" "$CA" rbd xv --blocks $CHG --seed $seed >/dev/null || exit 1
				k0=$(cpu_of $(ceph_pids)); times >"$T/times0"
				t0=$(now)
				RB snap create --no-progress rbd/xv@s$r &&
					RB export-diff --no-progress --from-snap s$((r - 1)) rbd/xv@s$r - |
					tee >(wc -c >"$T/wb") | RBB import-diff --no-progress - rbd/xv ||
					{ echo "export-diff failed" >&2; exit 1; }
				t=$(since "$t0")
				times >"$T/times1"
				c=$(sub "$(child_cpu "$T/times0")" "$(child_cpu "$T/times1")")
				sleep 0.2
				wb=$(cat "$T/wb")
				;;
			mirror)
				"$B/bench/rbd_change" "$CA" rbd mv --blocks $CHG --seed $seed >/dev/null || exit 1
				k0=$(cpu_of $(ceph_pids)); c0=$(cpu_of $MIRROR_PID)
				t0=$(now)
				if RB mirror image snapshot rbd/mv >/dev/null && wait_mirror "$(primary_snap)" 600; then
					t=$(since "$t0")
				else
					echo "rbd-mirror round failed" >&2
					t=n/a
				fi
				# rbd-mirror's own CPU (the rbd CLI polls are not counted)
				c=$(sub "$c0" "$(cpu_of $MIRROR_PID)")
				wb=n/a
				;;
			esac
			k=$(sub "$k0" "$(cpu_of $(ceph_pids))")
			RT[$who]="${RT[$who]:-} $t"
			RW[$who]="${RW[$who]:-} $wb"
			RC[$who]="${RC[$who]:-} $c"
			RK[$who]="${RK[$who]:-} $k"
			echo "  $who: $t s, $wb bytes, CPU s: $c (tool), $k (Ceph daemons) (load $(load))"
		done
		order=("${order[@]:1}" "${order[0]}")
	done
	# the copies are equal (not timed)
	fa pair verify rv >/dev/null && vf="pair verify: equal" || vf="pair verify FAILED"
	ma=$(RB export rbd/xv@s$ROUNDS - 2>/dev/null | md5sum | cut -d' ' -f1)
	mb=$(RBB export rbd/xv@s$ROUNDS - 2>/dev/null | md5sum | cut -d' ' -f1)
	[ "$ma" = "$mb" ] && vr="md5 equal" || vr="md5 DIFFERS"
	chb=$((CHG * 4096))
	{
		echo "### Incremental replication between two clusters: 1% of a ${REPL_GB} GiB image ($CHG random 4 KiB blocks, $chb bytes) per round, ${ROUNDS} interleaved rounds"
		echo
		echo "| | seconds, median (min..max) | wire bytes / changed bytes | ferry is faster by | CPU s, tool | CPU s, Ceph daemons |"
		echo "|---|---:|---:|---:|---:|---:|"
		# shellcheck disable=SC2086
		wf=$(median ${RW[ferry]}); wr=$(median ${RW[rbd]})
		# shellcheck disable=SC2086
		echo "| ferry pair sync --wait ($vf) | $(stats ${RT[ferry]}) | $(python3 -c "print('%.3f' % ($wf / $chb))") | | $(stats ${RC[ferry]}) | $(stats ${RK[ferry]}) |"
		# shellcheck disable=SC2086
		echo "| rbd snap create + export-diff \\| import-diff ($vr) | $(stats ${RT[rbd]}) | $(python3 -c "print('%.3f' % ($wr / $chb))") | $(ratio "$(median ${RT[rbd]})" "$(median ${RT[ferry]})") | $(stats ${RC[rbd]}) | $(stats ${RK[rbd]}) |"
		if [ $MIRROR = 1 ]; then
			# shellcheck disable=SC2086
			echo "| rbd-mirror, snapshot mode (mirror image snapshot until replayed) | $(stats ${RT[mirror]}) | n/a | $(ratio "$(median ${RT[mirror]})" "$(median ${RT[ferry]})") | $(stats ${RC[mirror]}) | $(stats ${RK[mirror]}) |"
		else
			echo "| rbd-mirror, snapshot mode | could not be set up here | | | | |"
		fi
		echo
		echo "Initial copy of the ${REPL_GB} GiB image: ferry ${init_ferry} s, export-diff | import-diff ${init_rbd} s."
		echo "CPU s, tool: both ferryd (ferry); the rbd export-diff and import-diff processes; the rbd-mirror daemon."
		echo "CPU s, Ceph daemons: the mon, mgr and OSD of both clusters during the round.$([ "${BENCH_SETTLE:-0}" = 1 ] && echo " Each round started after both clusters' snapshot trimming had finished (or 60 s).")"
		echo
	} | tee -a "$RES"
	[ -n "$MIRROR_PID" ] && kill -TERM "$MIRROR_PID" 2>/dev/null; MIRROR_PID=
	stop_fa
fi

# ---- 3. diff precision ------------------------------------------------------------------
if [[ $PARTS == *precision* ]]; then
	[ -f "$T/fa/ferryd.lock" ] && kill -0 "$(cat "$T/fa/ferryd.lock")" 2>/dev/null || ferryd_a || exit 1
	# blocks RBD reports (rbd diff: the extents of rbd_diff_iterate2, whole_object off)
	rbd_blocks() { # FROM IMAGE@TO [--whole-object]: blocks, or n/a (reason on stderr)
		local _
		for _ in 1 2; do
			# shellcheck disable=SC2086
			RB diff --from-snap "$1" "$2" ${3:-} --format json >"$T/rdiff" 2>"$T/rdiff.err" &&
			python3 -c '
import json, sys
blocks = set()
for e in json.load(open(sys.argv[1])):
    for b in range(e["offset"] // 4096, (e["offset"] + e["length"] + 4095) // 4096):
        blocks.add(b)
print(len(blocks))' "$T/rdiff" 2>>"$T/rdiff.err" && return
		done
		echo "bench/rbd.sh: rbd diff --from-snap $1 $2 ${3:-} failed: $(tail -2 "$T/rdiff.err")" >&2
		echo n/a
	}
	ferry_blocks() { # VOL@FROM VOL@TO (the seconds it took in $T/ft)
		local t0 out
		t0=$(now)
		out=$(fa snap diff "$1" "$2" --json) || return 1
		since "$t0" >"$T/ft"
		python3 -c 'import json,sys; print(sum((e["length"] + 4095) // 4096 for e in json.loads(sys.argv[1])["extents"]))' "$out"
	}
	prec() { [ "$1" = n/a ] && echo n/a || python3 -c "print('%.2f' % ($1 / $2))"; }
	{
		echo "### Diff precision (blocks reported / blocks changed; 1.00 is exact)"
		echo
		echo "| image, change | changed blocks | RBD (rbd diff, byte extents) | RBD whole-object (fast-diff) | ferry snap diff (narrowed) | ferry snap diff time |"
		echo "|---|---:|---:|---:|---:|---:|"
	} | tee -a "$RES"
	case1() { # NAME SIZE FILL BLOCKS SAME
		local v=$1
		fa volume create "$v" --size "$2" >/dev/null || return 1
		stop_fa
		[ "$3" = fill ] && { "$B/bench/rbd_change" "$CA" rbd "$v" --fill --seed 3 >/dev/null || return 1; }
		ferryd_a || return 1
		fa snap create "$v@p0" >/dev/null
		stop_fa
		"$B/bench/rbd_change" "$CA" rbd "$v" --blocks "$4" --same "$5" --seed 5 >/dev/null || return 1
		ferryd_a || return 1
		fa snap create "$v@p1" >/dev/null
		local rb wo fb
		rb=$(rbd_blocks p0 "rbd/$v@p1")
		wo=$(rbd_blocks p0 "rbd/$v@p1" --whole-object)
		fb=$(ferry_blocks "$v@p0" "$v@p1")
		echo "| $6 | $4 | $rb ($(prec "$rb" "$4")) | $wo ($(prec "$wo" "$4")) | $fb ($(prec "$fb" "$4")) | $(cat "$T/ft") s |" | tee -a "$RES"
	}
	case1 sp 4G sparse 1024 0 "4 GiB sparse, 1024 random 4 KiB writes"
	case1 wr 1G fill 2621 2621 "1 GiB written, 1% random 4 KiB writes + 1% identical rewrites"
	echo | tee -a "$RES"
	stop_fa
fi

echo "Load at the end: $(load).  Commands: bench/rbd.sh $B (BENCH_ROUNDS=$ROUNDS BENCH_PARTS=$PARTS)." | tee -a "$RES"
[ -n "$OUT" ] && cp "$RES" "$OUT"
exit 0
