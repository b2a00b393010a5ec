# shellcheck shell=bash
# Helpers of the end-to-end tests (sourced): the seed's scenario with real
# clients.  Site a (pool $T/a) serves iSCSI, site b (pool $T/b) listens for
# replication; both share $T/secret.  Everything a test sets up (loop
# devices, mounts, qemu-storage-daemon) is torn down on exit.
. "$(dirname "${BASH_SOURCE[0]}")/../repl/lib.sh"
IQN_PREFIX=iqn.2026-11.io.ferry
QSD_PID=
LOOPS=()
MOUNTS=()

e2e_cleanup() {
	local m l
	for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
	for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
	qsd_stop
	repl_cleanup
}
trap e2e_cleanup EXIT

skip() { echo "SKIP: $*"; exit 77; }

# e2e_sites: site b listening, site a serving iSCSI; sets PORT_b, ISCSI_PORT.
e2e_sites() {
	site_start b || return 1
	# shellcheck disable=SC2086
	"$FERRYD" --pool "$T/a" --log-level debug --iscsi 127.0.0.1:0 \
		--secret-file "$T/secret" ${FERRY_SITE_ARGS_a:-} || return 1
	ISCSI_PORT=$(sed -n 's/.*iscsi: target listening on .*(port \([0-9]*\)).*/\1/p' \
		"$T/a/ferryd.log" | tail -n 1)
	[ -n "$ISCSI_PORT" ]
}

# lun_url VOL: the iSCSI URL of VOL's default target, LUN 0.
lun_url() { echo "iscsi://127.0.0.1:$ISCSI_PORT/$IQN_PREFIX:$1/0"; }

# tree_gen DIR N SEED: N files of mixed sizes (empty .. 200 KB) in nested
# directories, reproducible from SEED.
tree_gen() {
	python3 - "$1" "$2" "$3" <<'PY'
import os, random, sys
d, n, r = sys.argv[1], int(sys.argv[2]), random.Random(int(sys.argv[3]))
for i in range(n):
    sub = os.path.join(d, "d%02d" % (i % 13), "e%d" % (i % 3))
    os.makedirs(sub, exist_ok=True)
    size = r.choice([0, 1, 511, 4096, 4097, 12345, 65536, 200000])
    with open(os.path.join(sub, "f%04d.bin" % i), "wb") as f:
        f.write(r.randbytes(size))
PY
}

# qsd_start URL FILE: qemu-storage-daemon exports the LUN as the FUSE file
# FILE (the iSCSI node opened with O_DIRECT semantics: no cache in qsd).
qsd_start() {
	local url=$1 file=$2 rest host port iqn lun
	rest=${url#iscsi://}
	host=${rest%%/*}; rest=${rest#*/}
	iqn=${rest%/*}; lun=${rest##*/}
	port=${host#*:}; host=${host%:*}
	: >"$file"
	qemu-storage-daemon \
		--blockdev "driver=iscsi,node-name=lun,transport=tcp,portal=$host:$port,target=$iqn,lun=$lun,cache.direct=on,discard=unmap" \
		--export "type=fuse,id=fuse0,node-name=lun,mountpoint=$file,writable=on" \
		--pidfile "$T/qsd.pid" --daemonize || return 1
	QSD_PID=$(cat "$T/qsd.pid")
}

qsd_stop() {
	[ -n "$QSD_PID" ] || return 0
	kill -TERM "$QSD_PID" 2>/dev/null
	wait_for 20 proc_gone "$QSD_PID"
	QSD_PID=
}

loop_attach() { # loop_attach FILE [ro]: buffered loop device; sets LOOP
	local ro=()
	[ "${2:-}" = ro ] && ro=(-r)
	LOOP=$(losetup -f --show "${ro[@]}" "$1") || return 1
	LOOPS+=("$LOOP")
}

loop_detach() { # loop_detach DEV
	losetup -d "$1" || return 1
	local keep=() l
	for l in "${LOOPS[@]}"; do [ "$l" = "$1" ] || keep+=("$l"); done
	LOOPS=("${keep[@]}")
	# losetup -d returns before the device is released.
	wait_for 20 sh -c "! losetup '$1' >/dev/null 2>&1"
}

mount_at() { # mount_at DEV DIR [OPTIONS]
	mkdir -p "$2"
	mount ${3:+-o "$3"} "$1" "$2" || return 1
	MOUNTS+=("$2")
}

umount_at() { # umount_at DIR
	umount "$1" || return 1
	local keep=() m
	for m in "${MOUNTS[@]}"; do [ "$m" = "$1" ] || keep+=("$m"); done
	MOUNTS=("${keep[@]}")
}

# converge NAME: the run's end.  pair sync --wait (bounded), then pause the
# pair so that no later cycle rotates the snapshot away while it is read;
# md5 of the last synced snapshot on both sides and of the secondary's head
# must be equal.  Sets SNAP and MD5; exports the secondary's snapshot to
# $T/secondary.img.
converge() {
	local name=$1 mb mh t0=$SECONDS
	expect 0 "$name: pair sync --wait" -- timeout 120 "$FERRY_BIN" --pool "$T/a" pair sync "$name" --wait || return 1
	SYNC_SECONDS=$((SECONDS - t0))
	expect 0 "$name: pause" -- fa pair pause "$name" || return 1
	SNAP=$(last_synced fa "$name")
	check "$name: secondary has the same last synced snapshot" test "$(last_synced fb "$name")" = "$SNAP"
	MD5=$(md5_of fa "$name@$SNAP")
	mb=$(md5_of fb "$name@$SNAP")
	mh=$(md5_of fb "$name")
	echo "md5 primary   $name@$SNAP: $MD5"
	echo "md5 secondary $name@$SNAP: $mb"
	check "$name@$SNAP: md5 primary == secondary" test -n "$MD5" -a "$MD5" = "$mb"
	check "$name: secondary head == its last synced snapshot" test "$mb" = "$mh"
	expect 0 "$name: export the secondary's snapshot" -- fb volume export "$name@$SNAP" "$T/secondary.img" || return 1
	check "$name: exported image md5 == $MD5" test "$(md5sum <"$T/secondary.img" | cut -d' ' -f1)" = "$MD5"
}

# check_fs IMG TYPE SRCDIR SUBDIR: the image, loop-mounted read-only, is a
# clean file system of TYPE (ext4|xfs) whose SUBDIR equals SRCDIR.
check_fs() {
	local img=$1 type=$2 src=$3 sub=$4 opts
	loop_attach "$img" ro || { fail "loop device for $img"; return 1; }
	case $type in
	ext4) expect 0 "e2fsck -fn" -- e2fsck -fn "$LOOP" || tail -n 20 <<<"$OUT" >&2
	      opts=ro,noload ;;
	xfs) expect 0 "xfs_repair -n" -- xfs_repair -n "$LOOP" || tail -n 20 <<<"$OUT" >&2
	     opts=ro,norecovery ;;
	esac
	if mount_at "$LOOP" "$T/check" "$opts"; then
		expect 0 "diff -r against the source" -- diff -r "$src" "$T/check/$sub"
		[ -n "$OUT" ] && head -n 20 <<<"$OUT" >&2
		umount_at "$T/check"
	else
		fail "mount -t $type -o $opts the secondary's image"
	fi
	loop_detach "$LOOP"
}

# cycle_summary NAME: the last cycle's numbers, one line.
cycle_summary() {
	fa pair status "$1" --json | python3 -c '
import json, sys
c = json.load(sys.stdin)["last_cycle"]
print("cycle %d: %d extents, data %d B, zero %d B, wire %d B, %.3f s" % (
    c["number"], c["extents"], c["data_bytes"], c["zero_bytes"], c["wire_bytes"], c["seconds"]))'
}
