#!/bin/bash
# A throw-away single-node Ceph cluster for tests and benchmarks:
# one mon, one mgr, one OSD (bluestore on a sparse file), pool size 1,
# no systemd, every file under DIR, loopback only.
#
#   scripts/ceph-cluster.sh up DIR [POOL...]   start (or find running) a cluster in DIR;
#                                              creates the RBD pools named (default: rbd)
#   scripts/ceph-cluster.sh down DIR           stop it and delete DIR
#   scripts/ceph-cluster.sh stop DIR           stop it, keep DIR (logs)
#   scripts/ceph-cluster.sh status DIR         exit 0 when it answers
#
# After `up`, DIR/ceph.conf is the client configuration (it names the admin
# keyring DIR/keyring) and DIR/env has CEPH_CONF=... for `source`.  Running
# `up` twice on one DIR is safe: the second call finds the cluster answering
# and only adds missing pools; a DIR left by a killed run (daemons gone) is
# wiped and started afresh.  The mon listens on a free loopback port chosen
# at start; the mgr and the OSD bind to free ports of their own.
# Exit status: 0 ok, 1 failure (see DIR/log), 77 Ceph is not installed.
#
# Knobs: CEPH_CLUSTER_OSD_SIZE (sparse block file, default 20G),
# CEPH_CLUSTER_MEM (osd_memory_target, default 512M), CEPH_CLUSTER_TIMEOUT
# (seconds to wait for the cluster, default 120), CEPH_CLUSTER_PAXOS (mon
# paxos propose interval, default 0.05 s so that snapshot creates and
# deletes take milliseconds in tests; Ceph's default, 1 s, for benchmarks).
set -u
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
shift 2

for b in ceph ceph-mon ceph-mgr ceph-osd ceph-authtool monmaptool rbd; do
	command -v "$b" >/dev/null 2>&1 || { echo "ceph-cluster: $b is not installed" >&2; exit 77; }
done

TIMEOUT=${CEPH_CLUSTER_TIMEOUT:-120}
log() { echo "ceph-cluster: $*" >&2; }

c() { timeout 30 ceph --conf "$dir/ceph.conf" "$@"; }

answers() {
	[ -f "$dir/ceph.conf" ] || return 1
	timeout 15 ceph --conf "$dir/ceph.conf" --connect-timeout 5 health >/dev/null 2>&1
}

# Daemons of this cluster: their pid files under DIR/run.
stop_daemons() {
	local pf pid n
	for pf in "$dir"/run/*.pid; do
		[ -f "$pf" ] || continue
		pid=$(cat "$pf" 2>/dev/null)
		[ -n "$pid" ] || continue
		# Only a process started from this DIR (its command line names it).
		if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/ceph.conf"; then
			kill -TERM "$pid" 2>/dev/null
		fi
	done
	for pf in "$dir"/run/*.pid; do
		[ -f "$pf" ] || continue
		pid=$(cat "$pf" 2>/dev/null)
		[ -n "$pid" ] || continue
		n=0
		while [ -d "/proc/$pid" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
		if [ -d "/proc/$pid" ] &&
		   tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/ceph.conf"; then
			kill -KILL "$pid" 2>/dev/null
		fi
		rm -f "$pf"
	done
}

free_port() {
	python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

wait_until() { # SECONDS CMD...
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -ge $end ] && return 1
		sleep 0.5
	done
}

make_pools() {
	local p
	for p in "$@"; do
		if ! c osd pool ls 2>/dev/null | grep -qx -- "$p"; then
			c osd pool create "$p" 16 16 replicated --autoscale-mode=off >/dev/null 2>&1 ||
				{ log "cannot create pool $p"; return 1; }
			c osd pool set "$p" size 1 --yes-i-really-mean-it >/dev/null 2>&1
			timeout 60 rbd --conf "$dir/ceph.conf" pool init "$p" ||
				{ log "rbd pool init $p failed"; return 1; }
		fi
	done
	return 0
}

osd_up() { c osd stat 2>/dev/null | grep -q '1 up'; }
pgs_clean() {
	# every PG active (a fresh pool's PGs peer within seconds)
	! c pg stat 2>/dev/null | grep -qE 'creating|peering|unknown|activating|inactive'
}

up() {
	local pools=("$@")
	[ ${#pools[@]} -gt 0 ] || pools=(rbd)
	if answers && osd_up; then
		make_pools "${pools[@]}" || return 1
		wait_until "$TIMEOUT" pgs_clean || { log "PGs not active"; return 1; }
		return 0
	fi
	# Nothing answers: whatever is in DIR is a leftover.
	if [ -d "$dir" ]; then
		stop_daemons
		rm -rf "$dir"
	fi
	mkdir -p "$dir"/{run,log,mon,mgr,osd} || return 1
	dir=$(cd "$dir" && pwd)
	local fsid port osd_uuid
	fsid=$(cat /proc/sys/kernel/random/uuid)
	port=$(free_port)
	cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/keyring
run dir = $dir/run
pid file = $dir/run/\$name.pid
mon cluster log file = $dir/log/cluster.log
crash dir = $dir/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
# a killed client's watch lapses after this (takeover tests wait for it)
osd client watch timeout = 10
mon warn on insecure global id reclaim allowed = false
[client]
# clients (ferryd, rbd, tests) run many at once: no admin socket, one log
admin socket =
log file = $dir/log/client.log
[mon]
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
# how long a map change (a snapshot's id, a blocklist entry) waits to be
# proposed: Ceph's default is 1 s; CEPH_CLUSTER_PAXOS sets it
paxos propose interval = ${CEPH_CLUSTER_PAXOS:-0.05}
mon data = $dir/mon/\$name
mon data avail warn = 2
mon data avail crit = 1
[mgr]
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
mgr data = $dir/mgr/\$name
keyring = $dir/mgr/\$name/keyring
[osd]
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
osd data = $dir/osd/\$name
keyring = $dir/osd/\$name/keyring
osd objectstore = bluestore
bluestore block path = $dir/osd/\$name.block
bluestore block create = true
bluestore block size = ${CEPH_CLUSTER_OSD_SIZE:-20G}
bluestore block db create = false
bluestore block wal create = false
bluestore fsck on mount = false
osd memory target = ${CEPH_CLUSTER_MEM:-512M}
osd op num shards = 1
osd op num threads per shard = 2
osd max object name len = 256
osd max object namespace len = 64
EOF
	echo "export CEPH_CONF=$dir/ceph.conf" >"$dir/env"
	ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null &&
	ceph-authtool --create-keyring "$dir/keyring" --gen-key -n client.admin \
		--cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null &&
	ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/keyring" >/dev/null &&
	monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap" >/dev/null ||
		{ log "keyring/monmap creation failed"; return 1; }
	# The mon keyring stays outside the mon data dir: --mkfs refuses a data
	# dir that already holds one.
	ceph-mon --conf "$dir/ceph.conf" --mkfs -i a --monmap "$dir/monmap" \
		--keyring "$dir/mon.keyring" >"$dir/log/mkfs-mon.log" 2>&1 ||
		{ log "ceph-mon --mkfs failed (see $dir/log/mkfs-mon.log)"; return 1; }
	ceph-mon --conf "$dir/ceph.conf" -i a 2>>"$dir/log/start.log" || { log "ceph-mon did not start"; return 1; }
	wait_until "$TIMEOUT" answers || { log "mon does not answer on port $port"; return 1; }

	mkdir -p "$dir/mgr/mgr.x"
	c auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
		-o "$dir/mgr/mgr.x/keyring" >/dev/null || { log "mgr key"; return 1; }
	ceph-mgr --conf "$dir/ceph.conf" -i x 2>>"$dir/log/start.log" || { log "ceph-mgr did not start"; return 1; }

	osd_uuid=$(cat /proc/sys/kernel/random/uuid)
	local id
	id=$(c osd new "$osd_uuid") || { log "osd new failed"; return 1; }
	mkdir -p "$dir/osd/osd.$id"
	c auth get-or-create "osd.$id" osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' \
		-o "$dir/osd/osd.$id/keyring" >/dev/null || { log "osd key"; return 1; }
	ceph-osd --conf "$dir/ceph.conf" -i "$id" --mkfs --osd-uuid "$osd_uuid" \
		>"$dir/log/mkfs-osd.log" 2>&1 || { log "ceph-osd --mkfs failed (see $dir/log/mkfs-osd.log)"; return 1; }
	ceph-osd --conf "$dir/ceph.conf" -i "$id" 2>>"$dir/log/start.log" || { log "ceph-osd did not start"; return 1; }
	wait_until "$TIMEOUT" osd_up || { log "osd.$id is not up (see $dir/log)"; return 1; }
	make_pools "${pools[@]}" || return 1
	wait_until "$TIMEOUT" pgs_clean || { log "PGs not active (see $dir/log)"; return 1; }
	return 0
}

case "$cmd" in
up)
	t0=$SECONDS
	if up "$@"; then
		log "cluster in $dir up ($((SECONDS - t0)) s): CEPH_CONF=$dir/ceph.conf"
		exit 0
	fi
	exit 1
	;;
stop)
	[ -d "$dir" ] && stop_daemons
	exit 0
	;;
down)
	if [ -d "$dir" ]; then
		stop_daemons
		rm -rf "$dir"
	fi
	exit 0
	;;
status)
	answers
	exit $?
	;;
*)
	echo "usage: $0 up|down|stop|status DIR [POOL...]" >&2
	exit 2
	;;
esac
