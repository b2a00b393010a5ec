#!/bin/bash
# Randomized: random writes, zero writes and discards, cycles, and a random
# fault per round (link cut after a random number of bytes, kill -9 of the
# primary or of the secondary at a random moment, a slow link).  After each
# round: the secondary's previous synced snapshot was intact throughout,
# and once the cycle completes md5(primary@S) == md5(secondary@S) ==
# md5(secondary head).  FERRY_ROUNDS and FERRY_SEED override the defaults;
# the seed is printed so a failure can be replayed.
. "$(dirname "$0")/lib.sh"

M=$((1024 * 1024))
SEED=${FERRY_SEED:-$(( $(date +%s) % 32768 ))}
ROUNDS=${FERRY_ROUNDS:-8}
echo "random.sh: seed $SEED, $ROUNDS rounds"
RANDOM=$SEED
SIZE=$((48 * M))

expect 0 "site b" -- site_start b
expect 0 "site a" -- site_start a
expect 0 "proxy" -- proxy_start "$PORT_b"
P="127.0.0.1:$PROXY_PORT"
expect 0 "volume" -- fa volume create r --size $SIZE --object-size 1M
rand_write fa r 0 $((4 * M))
inflight=$((1 + RANDOM % 8))
expect 0 "pair" -- fa pair create r --peer "$P" --period 3600 --max-inflight $inflight --compress zstd
expect 0 "initial sync" -- fa pair sync r --wait
check_synced r

rnd() { echo $(( (RANDOM * 32768 + RANDOM) % $1 )); }

for round in $(seq 1 "$ROUNDS"); do
	for i in $(seq 1 $((1 + RANDOM % 6))); do
		off=$(( $(rnd $((SIZE / 512))) * 512 ))
		len=$(( 512 + $(rnd $((3 * M))) ))
		[ $((off + len)) -gt $SIZE ] && len=$((SIZE - off))
		case $((RANDOM % 4)) in
		0) fa volume discard r --offset "$off" --length "$len" >/dev/null ;;
		*) rand_write fa r "$off" "$len" ;;
		esac
	done
	prev=$(last_synced fb r)
	mprev=$(md5_of fb "r@$prev")
	fault=$((RANDOM % 5))
	case $fault in
	0) ;;
	1) proxy cut-after $((100000 + $(rnd $((3 * M))))) ;;
	2|3)
		proxy throttle 4000000
		fa pair sync r >/dev/null
		# the fault's timing is the random part: 0..0.99 s into the cycle
		sleep "0.$((RANDOM % 100))"
		if [ $fault = 2 ]; then site_kill a; else site_kill b; fi
		# No cycle can commit (and legitimately drop prev) while we look.
		proxy cut
		if [ $fault = 2 ]; then site_start a; else site_start b "$PORT_b"; fi
		# The cycle may have committed before the kill; either way the
		# secondary's last synced snapshot must be whole.
		cur=$(last_synced fb r)
		if [ "$cur" = "$prev" ]; then want=$mprev; else want=$(md5_of fa "r@$cur"); fi
		check "round $round (fault $fault): secondary's last synced ($cur) intact" \
			test "$(md5_of fb "r@$cur")" = "$want"
		proxy pass
		;;
	4) proxy delay 5 ;;
	esac
	ok=1
	for try in 1 2 3 4; do
		if fa pair sync r --wait >/dev/null 2>&1; then ok=0; break; fi
		proxy pass
	done
	proxy pass
	check "round $round (fault $fault): cycle completes" test $ok = 0
	check_synced r || echo "seed $SEED round $round fault $fault" >&2
done
expect 0 "verify" -- fa pair verify r
finish
