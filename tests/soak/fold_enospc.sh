#!/bin/bash
# Regression test (found by the soak): a snapshot delete whose fold fails
# with ENOSPC leaves an unfolded layer; a later delete of an OLDER snapshot
# used to fold past it (into the next anchor), so the older layer's blocks
# shadowed the leftover's newer ones: after a restart, v@s3 read s1's data.
# Needs root (a small loop-mounted ext4 that can be filled); exit 77 = skip.
. "$(dirname "$0")/../cli/lib.sh"
small_fs_pool 48
PORT=$(free_port)
start() { "$FERRYD" --pool "$POOL" --log-level debug --iscsi "127.0.0.1:$PORT"; }
expect 0 "ferryd starts" -- start
expect 0 "volume" -- ferry volume create v --size 16M
# an export keeps the volume open in ferryd, so the failed fold's leftover
# stays in memory (a reopen would finish it)
expect 0 "export keeps it open" -- ferry export add v
head -c 4M /dev/urandom >"$T/A"
head -c 4M /dev/urandom >"$T/B"
head -c 1M /dev/urandom >"$T/Y"
expect 0 "A at 0" -- ferry volume write v "$T/A" --offset 0
expect 0 "s1" -- ferry snap create v@s1
expect 0 "B at 0" -- ferry volume write v "$T/B" --offset 0
expect 0 "s2" -- ferry snap create v@s2
expect 0 "Y at 8M" -- ferry volume write v "$T/Y" --offset 8M
expect 0 "s3" -- ferry snap create v@s3
want=$(ferry volume md5 v@s3 | cut -d' ' -f1)
# full, except room for volume.meta: the delete commits, its fold fails
avail=$(stat -f -c '%a*%S' "$MNT")
expect 0 "fill the file system" -- fallocate -l $((avail - 256 * 1024)) "$MNT/filler"
expect_err 1 "No space left" "delete of s2 on a full disk reports ENOSPC" -- ferry snap rm v@s2
check "the fold failed (log)" grep -q "merge copy: No space left" "$POOL/ferryd.log"
check "s3 intact on a full disk" test "$(ferry volume md5 v@s3 | cut -d' ' -f1)" = "$want"
rm -f "$MNT/filler"
expect 0 "delete of s1 once there is space" -- ferry snap rm v@s1
check "the leftover was folded first" grep -q "finishing the delete of epoch" "$POOL/ferryd.log"
check "s3 intact after the delete" test "$(ferry volume md5 v@s3 | cut -d' ' -f1)" = "$want"
expect 0 "kill -9" -- kill_daemon
expect 0 "restart" -- start
check "s3 intact after a restart (was s1's data before the fix)" \
	test "$(ferry volume md5 v@s3 | cut -d' ' -f1)" = "$want"
expect 0 "head still readable" -- ferry volume md5 v
finish
