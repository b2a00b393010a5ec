#!/bin/sh
# Install the Debian packages that the build, the tests and the demo need.
# As root it runs apt-get; otherwise it prints the command to run.
# End-to-end tests and the demo: qemu-system-common has qemu-storage-daemon
# (the LUN as a FUSE file); guestfish (libguestfs-tools) boots a kernel
# from /boot (linux-image-amd64), and its appliance makes XFS only with
# libguestfs-xfs.  Operations: libinih (ferryd --config), libsystemd
# (sd_notify), systemd (systemd-analyze verify of the units), debhelper,
# dpkg-dev, fakeroot and lintian (make deb), bash-completion, man-db (the
# man pages are checked with man --warnings).  Metrics: libmicrohttpd serves /metrics; the tests run
# promtool and a real Prometheus (package prometheus, which Debian would
# start as a service: never here, policy-rc.d or no systemd) and validate
# every --json output with python3-jsonschema.
# libguestfs-xfs.  Ceph (mon, mgr, osd, the rbd tool, rbd-mirror), librbd
# for the RBD backend, and tgt's RBD backing store: the RBD tests bring up
# throw-away clusters (scripts/ceph-cluster.sh) and skip only where these
# cannot be installed.
set -eu
PKGS="build-essential cmake ninja-build clang libclang-rt-14-dev pkg-config
      libssl-dev libzstd-dev libxxhash-dev libcmocka-dev libisal-dev
      libinih-dev libsystemd-dev systemd debhelper dpkg-dev fakeroot lintian bash-completion man-db
      libiscsi-bin libiscsi-dev tgt qemu-utils qemu-block-extra
      python3 rsync e2fsprogs xfsprogs util-linux fio procps iproute2 xxd
      tshark tcpdump
      libmicrohttpd-dev prometheus python3-jsonschema
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
# The tests start their own Prometheus on a free port; the package's
# service must not start (it would take port 9090).  policy-rc.d is
# Debian's switch for that, set only for this install.
rcd=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  rcd=/usr/sbin/policy-rc.d
fi
trap '[ -z "$rcd" ] || rm -f "$rcd"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
