#!/bin/sh
# Install the Debian packages that the build, the tests and the demo need.
# As root it runs apt-get; otherwise it prints the command to run.
# End-to-end tests and the demo: qemu-system-common has qemu-storage-daemon
# (the LUN as a FUSE file); guestfish (libguestfs-tools) boots a kernel
# from /boot (linux-image-amd64), and its appliance makes XFS only with
# libguestfs-xfs.  Ceph (mon, mgr, osd, the rbd tool, rbd-mirror), librbd
# for the RBD backend, and tgt's RBD backing store: the RBD tests bring up
# throw-away clusters (scripts/ceph-cluster.sh) and skip only where these
# cannot be installed.
set -eu
PKGS="build-essential cmake ninja-build clang libclang-rt-14-dev pkg-config
      libssl-dev libzstd-dev libxxhash-dev libcmocka-dev libisal-dev
      libiscsi-bin libiscsi-dev tgt qemu-utils qemu-block-extra
      python3 rsync e2fsprogs xfsprogs util-linux fio procps iproute2 xxd
      tshark tcpdump
      qemu-system-common libguestfs-tools libguestfs-xfs linux-image-amd64
      ceph ceph-mon ceph-osd ceph-mgr librbd-dev librados-dev rbd-mirror tgt-rbd"
missing=""
for p in $PKGS; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$st" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0
echo "deps: missing:$missing"
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: run as root: apt-get update && apt-get install -y$missing" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
