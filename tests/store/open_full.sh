#!/bin/bash
# RELIABILITY.md finding 2, end to end: after a snapshot delete whose fold
# failed for lack of space, the volume must still open while the file
# system stays full (snap list, volume md5 of the head and of every
# snapshot, export, after a daemon restart too), reading what it read
# before the delete; once there is space, the next open folds the leftover.
# Each CLI command opens and closes the volume (no export keeps it open), so
# every step goes through vol_open's repair.
# Needs root (a small loop-mounted ext4 that can be filled); exit 77 = skip.
. "$(dirname "$0")/../cli/lib.sh"
small_fs_pool 48
PORT=$(free_port)
start() { "$FERRYD" --pool "$POOL" --log-level debug --iscsi "127.0.0.1:$PORT"; }
md5() { ferry volume md5 "$1" | cut -d' ' -f1; }
# Layer directories that neither a snapshot nor the head anchors.
leftovers() {
	python3 - "$POOL/volumes/v" <<'EOF'
import os, sys
d = sys.argv[1]
anchors = set()
for line in open(os.path.join(d, "volume.meta")):
    f = line.split()
    if f[0] == "head_epoch":
        anchors.add(int(f[1]))
    elif f[0] == "snap":
        anchors.add(int(f[2]))
print(sum(1 for n in os.listdir(os.path.join(d, "layers"))
          if len(n) == 16 and int(n, 16) not in anchors))
EOF
}

expect 0 "ferryd starts" -- start
expect 0 "volume" -- ferry volume create v --size 16M
head -c 4M /dev/urandom >"$T/A"
head -c 4M /dev/urandom >"$T/B"
head -c 1M /dev/urandom >"$T/Y"
head -c 64K /dev/urandom >"$T/Z"
expect 0 "A at 0" -- ferry volume write v "$T/A" --offset 0
expect 0 "s1" -- ferry snap create v@s1
expect 0 "B at 0" -- ferry volume write v "$T/B" --offset 0
expect 0 "s2" -- ferry snap create v@s2
expect 0 "Y at 8M" -- ferry volume write v "$T/Y" --offset 8M
expect 0 "s3" -- ferry snap create v@s3
expect 0 "Z at 12M (head)" -- ferry volume write v "$T/Z" --offset 12M
want1=$(md5 v@s1)
want3=$(md5 v@s3)
wanth=$(md5 v)
# full, except room for volume.meta: the delete commits, its fold fails
avail=$(stat -f -c '%a*%S' "$MNT")
expect 0 "fill the file system" -- fallocate -l $((avail - 256 * 1024)) "$MNT/filler"
expect_err 1 "No space left" "delete of s2 on a full disk reports ENOSPC" -- ferry snap rm v@s2
check "the fold failed (log)" grep -q "merge copy: No space left" "$POOL/ferryd.log"
check "one leftover layer" test "$(leftovers)" = 1
# before the fix, each of these failed: "cannot open volume 'v': No space left on device"
expect 0 "snap list on a full disk" -- ferry snap list v
check "s2 is gone, s1 and s3 listed" test "$(echo "$OUT" | awk 'NR>1{print $1}' | tr '\n' ' ')" = "s1 s3 "
check "md5 of s1 on a full disk" test "$(md5 v@s1)" = "$want1"
check "md5 of s3 on a full disk" test "$(md5 v@s3)" = "$want3"
check "md5 of the head on a full disk" test "$(md5 v)" = "$wanth"
check "the open said why it did not fold" grep -q "not folded yet" "$POOL/ferryd.log"
expect 0 "kill -9" -- kill_daemon
expect 0 "restart on a full disk" -- start
check "md5 of s3 after a restart, still full" test "$(md5 v@s3)" = "$want3"
check "md5 of the head after a restart, still full" test "$(md5 v)" = "$wanth"
expect 0 "export on a full disk" -- ferry export add v
expect 0 "export removed" -- ferry export rm v
check "still one leftover layer" test "$(leftovers)" = 1
rm -f "$MNT/filler"
check "md5 of s3 once there is space (the open folds)" test "$(md5 v@s3)" = "$want3"
check "the leftover was folded" test "$(leftovers)" = 0
check "folded by the open (log)" grep -q "finishing the delete of epoch" "$POOL/ferryd.log"
check "md5 of s1 after the fold" test "$(md5 v@s1)" = "$want1"
check "md5 of the head after the fold" test "$(md5 v)" = "$wanth"
finish
