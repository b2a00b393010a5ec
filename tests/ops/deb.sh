#!/bin/bash
# make deb (scripts/deb.sh): the Debian package builds with debhelper,
# lintian reports no error, its dependencies are declared (shlibs) and
# resolvable (apt-get --simulate), and its binaries, installed into a
# scratch root with dpkg -x, run: ferryd --version, a daemon on a temporary
# pool driven by the installed ferry, systemd-analyze verify of its units.
. "$(dirname "$0")/lib.sh"

for t in dpkg-buildpackage dh dpkg-deb lintian; do
	command -v $t >/dev/null || { echo "SKIP: $t missing (scripts/deps.sh installs it)"; exit 77; }
done
version=$(sed -n 's/^#define FERRY_VERSION "\(.*\)"/\1/p' "$FERRY_SRC/src/common/common.h")

start=$SECONDS
expect 0 "scripts/deb.sh builds the package" -- "$FERRY_SRC/scripts/deb.sh" "$T/deb"
echo "deb: built in $((SECONDS - start)) s"
deb=$(ls "$T"/deb/ferry_*.deb 2>/dev/null | head -n 1)
check "a .deb ($deb)" test -f "$deb"
[ -f "$deb" ] || finish
check "lintian: no errors" test -z "$(grep '^E:' "$T/deb/lintian.txt")"
grep -E '^[EW]:' "$T/deb/lintian.txt" >&2 || true

check "package ferry" test "$(dpkg-deb -f "$deb" Package)" = ferry
check "version $version" test "$(dpkg-deb -f "$deb" Version | sed 's/-.*//')" = "$version"
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libc6 libssl3 libzstd1 libxxhash0 libisal2 libinih1 libsystemd0; do
	check "Depends: $lib ($depends)" grep -q "$lib" <<<"$depends"
done
contents=$(dpkg-deb -c "$deb" | awk '{ print $6 }')
for f in ./usr/sbin/ferryd ./usr/bin/ferry ./lib/systemd/system/ferryd.service \
	./lib/systemd/system/ferryd@.service ./etc/ferry/ferryd.conf \
	./usr/share/bash-completion/completions/ferry ./usr/share/man/man1/ferry.1.gz \
	./usr/share/man/man8/ferryd.8.gz ./usr/share/man/man5/ferryd.conf.5.gz \
	./usr/share/doc/ferry/copyright ./usr/share/doc/ferry/examples/ferryd.conf; do
	check "package holds $f" grep -qx -- "$f" <<<"$contents"
done
mkdir "$T/ctl"
dpkg-deb -e "$deb" "$T/ctl"
check "conffile /etc/ferry/ferryd.conf" grep -qx /etc/ferry/ferryd.conf "$T/ctl/conffiles"
check "installing does not start ferryd (it needs its configuration)" \
	test -z "$(grep -E 'deb-systemd-invoke (start|restart)' "$T/ctl/postinst")"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
	expect 0 "apt-get --simulate install resolves the dependencies" -- apt-get install -s "$deb"
	check "would install ferry" grep -q "^Inst ferry" <<<"$OUT"
fi

# The installed binaries, from a scratch root.
R=$T/root
expect 0 "dpkg -x" -- dpkg -x "$deb" "$R"
check "shared libraries resolve" test -z "$(ldd "$R/usr/sbin/ferryd" "$R/usr/bin/ferry" | grep 'not found')"
expect 0 "installed ferryd --version" -- "$R/usr/sbin/ferryd" --version
check "ferryd $version" test "$OUT" = "ferryd $version"
make_secret "$T/secret"
cat >"$T/site.conf" <<CONF
pool = $T/pool
secret-file = $T/secret
iscsi = 127.0.0.1:$(free_port)
CONF
expect 0 "installed ferryd --check-config" -- "$R/usr/sbin/ferryd" --check-config --config "$T/site.conf"
expect 0 "installed ferryd starts on a temporary pool" -- "$R/usr/sbin/ferryd" --config "$T/site.conf"
iferry() { "$R/usr/bin/ferry" --pool "$T/pool" "$@"; }
expect 0 "installed ferry volume create" -- iferry volume create db --size 8M
head -c 1M /dev/urandom >"$T/data"
expect 0 "volume write" -- iferry volume write db --offset 0 "$T/data"
truncate -s 8M "$T/data"
expect 0 "volume md5" -- iferry volume md5 db
check "md5 of what was written" test "$OUT" = "$(md5sum <"$T/data" | cut -d' ' -f1)  db"
expect 0 "export add" -- iferry export add db
expect 0 "volume list" -- iferry volume list
check "lists db" grep -q "^db " <<<"$OUT"
stop_daemon "$T/pool" || fail "installed ferryd did not stop on SIGTERM"

if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null && command -v systemd-analyze >/dev/null; then
	expect 0 "systemd-analyze verify the packaged units" -- unshare -m bash -c '
		R=$1; mount --make-rprivate /
		for d in usr/sbin usr/share/man lib/systemd/system; do
			mount -t overlay overlay -o "lowerdir=$R/$d:/$d" "/$d" || exit 99
		done
		systemd-analyze verify /lib/systemd/system/ferryd.service ferryd@b.service' _ "$R"
	check "verify: clean ('$ERR')" test -z "$ERR"
fi

finish
