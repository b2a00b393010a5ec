#!/bin/bash
# Pacing: how smooth a bandwidth-limited initial sync is on the wire.
#   bench/pacing.sh BUILD_DIR [RESULTS_FILE]     (BENCH_A=MAIN_BUILD adds A)
# Two real ferryd (TLS), a volume of BENCH_PACING_MIB (default 400) MiB of
# random data, `pair create --bandwidth BENCH_RATE` (default 20000000
# bytes/s); rsync of the same file to a local rsync daemon with
# --bwlimit at the same rate is the reference.  bench/rate_sampler.py reads
# the connection's acknowledged bytes (ss -tin bytes_acked) every 0.5 s;
# over the steady part (every window but the first and the last of the
# transfer) it reports the mean rate and the coefficient of variation of
# the 0.5 s rates.  Goals (issue 13): CV <= 5 %, mean within 2 % of the rate.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_setup pacing "$1"
OUT=${2:-}
RSYNC_PID=
trap 'ferryd_stop_all; [ -n "$RSYNC_PID" ] && kill "$RSYNC_PID" 2>/dev/null; rm -rf "$T"' EXIT
MIB=${BENCH_PACING_MIB:-400}
RATE=${BENCH_RATE:-20000000}
INT=0.5

secret_file "$T/secret"
head -c "$((MIB << 20))" /dev/urandom >"$T/data"
echo "# $MIB MiB of random data at $RATE bytes/s, samples every $INT s"

sample() { # PORT TAG ROUND: starts the sampler; SAMPLER=pid
	python3 bench/rate_sampler.py "$1" "$INT" 600 "$T/samples.$2.$3" >"$T/stats.$2.$3" &
	SAMPLER=$!
}
sampled() { # TAG ROUND: records the sampler's figures
	wait "$SAMPLER"
	local mean cv n
	read -r _ mean _ cv _ n _ <"$T/stats.$1.$2"
	echo "# $1 round $2: $(cat "$T/stats.$1.$2")"
	record rate_MBps "$1" "$2" "$(python3 -c "print('%.3f' % ($mean / 1e6))")" MB/s "$L"
	record rate_cv_pct "$1" "$2" "$(python3 -c "print('%.2f' % ($cv * 100))")" % "$L"
	record rate_off_pct "$1" "$2" "$(python3 -c "print('%.2f' % (100.0 * ($mean - $RATE) / $RATE))")" % "$L"
}

run_ferry() { # ROUND BUILD
	local r=$1 v=$2 pb
	rm -rf "$T/pa" "$T/pb"
	pb=$(free_port)
	ferryd_start "$v" "$T/pa" --secret-file "$T/secret"
	ferryd_start "$v" "$T/pb" --listen "127.0.0.1:$pb" --secret-file "$T/secret"
	"${BUILD[$v]}/ferry" --pool "$T/pa" volume create v --size "${MIB}M" >/dev/null
	"${BUILD[$v]}/ferry" --pool "$T/pa" volume write v --offset 0 "$T/data" >/dev/null
	settle
	L=$(load1)
	sample "$pb" "$v" "$r"
	"${BUILD[$v]}/ferry" --pool "$T/pa" pair create v --peer "127.0.0.1:$pb" --period 3600 \
		--bandwidth "$RATE" >/dev/null
	pair_wait_synced "$v" "$T/pa" v 1
	kill -TERM "$SAMPLER" 2>/dev/null || true
	sampled "$v" "$r"
	ferryd_stop "$T/pa" "$T/pb"
}

RP=$(free_port)
mkdir -p "$T/rs"
cat >"$T/rsyncd.conf" <<CONF
use chroot = no
uid = $(id -un)
gid = $(id -gn)
pid file = $T/rsyncd.pid
[m]
path = $T/rs
read only = no
CONF
rsync --daemon --no-detach --config="$T/rsyncd.conf" --port="$RP" --address=127.0.0.1 &
RSYNC_PID=$!
for _ in $(seq 50); do rsync "rsync://127.0.0.1:$RP/" >/dev/null 2>&1 && break; sleep 0.1; done

run_rsync() { # ROUND
	rm -f "$T/rs/data"
	settle
	L=$(load1)
	sample "$RP" rsync "$1"
	# rsync's RATE unit is KiB/s unless suffixed; "KB" is 1000 bytes.
	rsync --bwlimit="$((RATE / 1000))KB" "$T/data" "rsync://127.0.0.1:$RP/m/data"
	kill -TERM "$SAMPLER" 2>/dev/null || true
	sampled rsync "$1"
}

reference rate_MBps rsync higher
variants="rsync $BUILDS"
for r in $(seq "$BENCH_ROUNDS"); do
	for x in $(order "$r" $variants); do
		case $x in
		rsync) run_rsync "$r" ;;
		*) run_ferry "$r" "$x" ;;
		esac
	done
done
summarize "$OUT"
