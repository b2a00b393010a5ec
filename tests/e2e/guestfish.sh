#!/bin/bash
# The seed's scenario with a real Linux kernel as the client: guestfish
# (libguestfs, direct backend, TCG: KVM cannot start a guest here) adds the
# LUN as iscsi://127.0.0.1:PORT/IQN/0 --format=raw, the guest's kernel runs
# mkfs (ext4 or xfs: the argument after the build dir), mounts, copies in a
# tree of a few hundred files, unmounts -- while the pair runs cycles every
# 2 s.  Then pair sync --wait: md5 of the last synced snapshot equal on both
# sides, and the secondary's copy, loop-mounted read-only, passes
# e2fsck -fn / xfs_repair -n and diff -r against the source tree.
. "$(dirname "$0")/lib.sh"
FS=${2:-ext4}
case $FS in ext4) ;; xfs) ;; *) echo "usage: $0 BUILD_DIR ext4|xfs" >&2; exit 2 ;; esac
if [ -n "${FERRY_SANITIZED:-}" ]; then
	skip "guestfish ($FS) not run under the sanitizers (FERRY_SANITIZED=1): ~15 s of TCG boot per run; the normal build runs it"
fi
[ "$(id -u)" -eq 0 ] || skip "needs root (loop devices, mount)"
command -v guestfish >/dev/null || skip "guestfish missing (libguestfs-tools, scripts/deps.sh)"
ls /boot/vmlinuz-* >/dev/null 2>&1 || skip "no kernel in /boot for the libguestfs appliance (linux-image-amd64)"
if [ "$FS" = xfs ]; then
	command -v xfs_repair >/dev/null || skip "xfsprogs missing"
	# Debian ships the appliance's XFS support separately.
	dpkg-query -W -f='${Status}' libguestfs-xfs 2>/dev/null | grep -q "install ok installed" ||
		skip "libguestfs-xfs missing (the appliance has no mkfs.xfs)"
fi
losetup -f >/dev/null 2>&1 || skip "no free loop device"
export LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg
export LIBGUESTFS_CACHEDIR=${LIBGUESTFS_CACHEDIR:-/var/tmp}

expect 0 "sites start" -- e2e_sites || exit 1
# xfsprogs refuses file systems below 300 MB.
expect 0 "create vol" -- fa volume create vol --size 512M
expect 0 "export vol" -- fa export add vol
expect 0 "pair create (period 2 s)" -- fa pair create vol --peer "127.0.0.1:$PORT_b" --period 2
tree_gen "$T/src" 300 7

t0=$SECONDS
if ! timeout 240 guestfish --format=raw -a "$(lun_url vol)" >"$T/gf.out" 2>&1 <<EOS
run
mkfs $FS /dev/sda
mount /dev/sda /
copy-in $T/src /
umount-all
shutdown
EOS
then
	cat "$T/gf.out" >&2
	# Was it the appliance or us?  libguestfs-test-tool boots without any
	# of ferry in the way.
	if ! timeout 240 libguestfs-test-tool >"$T/lgtt.out" 2>&1; then
		tail -n 25 "$T/lgtt.out"
		skip "libguestfs cannot boot its appliance here (libguestfs-test-tool fails, tail above)"
	fi
	fail "guestfish on the ferry LUN failed while libguestfs-test-tool passes"
	finish
fi
echo "guestfish ($FS: boot, mkfs, copy-in, umount) took $((SECONDS - t0)) s; cycles so far: $(fa pair status vol --json | json last_synced.cycle)"
pass

converge vol && check_fs "$T/secondary.img" "$FS" "$T/src" src
echo "$(cycle_summary vol); final sync --wait took ${SYNC_SECONDS} s"
finish
