#!/bin/bash
# The seed's scenario with the host kernel as the client: qemu-storage-daemon
# exports the LUN as a FUSE file, a buffered loop device makes it a block
# device (never --direct-io=on: qemu 7.2's FUSE export corrupts concurrent
# direct I/O), mkfs.ext4, mount, copy a tree of a few hundred files, fio
# with verify, umount -- while the pair runs cycles every second.  Then
# pair sync --wait: md5 of the last synced snapshot equal on both sides, and
# the secondary's copy, loop-mounted read-only, passes e2fsck -fn and
# diff -r against the source tree.
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" -eq 0 ] || skip "needs root (loop devices, mount)"
[ -c /dev/fuse ] || skip "no /dev/fuse"
for tool in qemu-storage-daemon losetup mkfs.ext4 e2fsck fio python3; do
	command -v $tool >/dev/null || skip "$tool missing (scripts/deps.sh)"
done
[ -e /dev/loop-control ] && losetup -f >/dev/null 2>&1 || skip "no free loop device"

expect 0 "sites start" -- e2e_sites || exit 1
expect 0 "create vol" -- fa volume create vol --size 256M
expect 0 "export vol" -- fa export add vol
expect 0 "pair create (period 1 s)" -- fa pair create vol --peer "127.0.0.1:$PORT_b" --period 1
tree_gen "$T/src" 400 4
t0=$SECONDS

expect 0 "qemu-storage-daemon FUSE export of the LUN" -- qsd_start "$(lun_url vol)" "$T/lun.img" || exit 1
check "FUSE file has the LUN's size" test "$(stat -c %s "$T/lun.img")" = $((256 << 20))
loop_attach "$T/lun.img" || { fail "losetup"; finish; }
check "loop device is buffered" test "$(cat /sys/block/${LOOP#/dev/}/loop/dio)" = 0
expect 0 "mkfs.ext4" -- mkfs.ext4 -q -F -L ferry "$LOOP"
mount_at "$LOOP" "$T/mnt" || { fail "mount"; finish; }
expect 0 "cp -a the tree" -- cp -a "$T/src" "$T/mnt/src"
expect 0 "fio randwrite with verify" -- fio --name=verify --filename="$T/mnt/fio.dat" --size=16M \
	--rw=randwrite --bs=4k --ioengine=psync --direct=1 --verify=crc32c --do_verify=1 --verify_state_save=0 \
	--end_fsync=1
# Again with the FUSE file's page cache dropped: reads go through iSCSI.
expect 0 "drop the FUSE file's page cache" -- dd if="$T/lun.img" iflag=nocache count=0 status=none
expect 0 "fio verify_only, reading through iSCSI" -- fio --name=verify --filename="$T/mnt/fio.dat" \
	--size=16M --rw=randwrite --bs=4k --ioengine=psync --direct=1 --verify=crc32c --verify_only --verify_state_save=0
# Freed blocks must reach site b as zero ranges: 48 MiB written, removed
# with the fio file, fstrim (loop discard -> FUSE punch hole -> UNMAP).
expect 0 "48 MiB junk file" -- dd if=/dev/urandom of="$T/mnt/junk" bs=1M count=48 conv=fsync status=none
expect 0 "rm junk and the fio file" -- rm "$T/mnt/junk" "$T/mnt/fio.dat"
# ext4 frees the blocks of removed files when the journal commits: until
# then fstrim skips them.
expect 0 "sync (commit the removals)" -- sync -f "$T/mnt"
expect 0 "fstrim" -- fstrim -v "$T/mnt"
echo "$OUT"
expect 0 "umount" -- umount_at "$T/mnt"
expect 0 "losetup -d" -- loop_detach "$LOOP"
expect 0 "qemu-storage-daemon stops" -- qsd_stop
echo "client done in $((SECONDS - t0)) s; cycles so far: $(fa pair status vol --json | json last_synced.cycle)"

converge vol && check_fs "$T/secondary.img" ext4 "$T/src" src
src_bytes=$(du -sb "$T/src" | cut -f1)
expect 0 "site b: snap diff of $SNAP" -- fb snap diff "vol@$SNAP" --json
data_b=$(python3 -c 'import json,sys
print(sum(e["length"] for e in json.loads(sys.argv[1])["extents"] if e["kind"] == "data"))' "$OUT")
echo "source tree $src_bytes B; client wrote about $((src_bytes + (64 << 20))) B; data extents of $SNAP on site b: $data_b B"
# 64 MiB of the writes were freed: what remains is the tree and the ext4
# metadata (inode tables, bitmaps, directories; the journal's blocks).
check "the freed 64 MiB are zero ranges on site b ($data_b B of data)" \
	test "$data_b" -lt $((src_bytes + (16 << 20)))
echo "$(cycle_summary vol); final sync --wait took ${SYNC_SECONDS} s"
finish
