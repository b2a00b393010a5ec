#!/bin/bash
# make install PREFIX=/usr DESTDIR=DIR puts every file in Debian's place;
# the installed units pass `systemd-analyze verify` with their binaries and
# man pages present (a private mount namespace lays the DESTDIR tree over
# /usr/sbin, /usr/share/man and /lib/systemd/system), and fail it without
# them; the example configuration checks out; a second install keeps the
# administrator's configuration; the man pages render without warnings and
# ferryd.8 / ferryd.conf.5 cover every option of ferryd --help.
. "$(dirname "$0")/lib.sh"

R=$T/root
expect 0 "make install PREFIX=/usr DESTDIR=$R" -- \
	make -s -C "$FERRY_SRC" install BUILD="$FERRY_BUILD" PREFIX=/usr DESTDIR="$R"
want="./etc/ferry/ferryd.conf
./lib/systemd/system/ferryd.service
./lib/systemd/system/ferryd@.service
./usr/bin/ferry
./usr/sbin/ferryd
./usr/share/bash-completion/completions/ferry
./usr/share/doc/ferry/README.md
./usr/share/doc/ferry/examples/ferryd.conf"
for page in "$FERRY_SRC"/doc/*.[1-8]; do
	want+=$'\n'"./usr/share/man/man${page##*.}/$(basename "$page")"
done
for f in "$FERRY_SRC"/contrib/prometheus/*; do
	[ -f "$f" ] && want+=$'\n'"./usr/share/ferry/prometheus/$(basename "$f")"
done
got=$(cd "$R" && find . -type f | sort)
want=$(sort <<<"$want")
check "installed files: $(diff <(echo "$want") <(echo "$got") | tr '\n' ' ')" test "$got" = "$want"
check "man pages: ferry.1 ferryd.8 ferryd.conf.5" test -f "$R/usr/share/man/man1/ferry.1" -a \
	-f "$R/usr/share/man/man8/ferryd.8" -a -f "$R/usr/share/man/man5/ferryd.conf.5"
check "ferryd runs" "$R/usr/sbin/ferryd" --version
check "ferry runs" "$R/usr/bin/ferry" --version
check "ferryd.service runs the installed ferryd on /etc/ferry/ferryd.conf" grep -qx \
	"ExecStart=/usr/sbin/ferryd --foreground --config /etc/ferry/ferryd.conf" "$R/lib/systemd/system/ferryd.service"
check "ferryd@.service: one daemon per /etc/ferry/NAME.conf" grep -qx \
	"ExecStart=/usr/sbin/ferryd --foreground --config /etc/ferry/%i.conf" "$R/lib/systemd/system/ferryd@.service"
for u in ferryd.service ferryd@.service; do
	check "$u: Type=notify" grep -qx "Type=notify" "$R/lib/systemd/system/$u"
	check "$u: ExecReload sends SIGHUP" grep -qx 'ExecReload=/bin/kill -HUP $MAINPID' "$R/lib/systemd/system/$u"
done
expect 0 "the example configuration checks out" -- \
	"$R/usr/sbin/ferryd" --check-config --config "$R/etc/ferry/ferryd.conf"

# systemd-analyze verify, binaries present.
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null && command -v systemd-analyze >/dev/null; then
	verify() { # verify OVERLAY_DIRS... -- UNITS...: systemd-analyze verify in a namespace
		local dirs=()
		while [ "$1" != -- ]; do dirs+=("$1"); shift; done
		shift
		unshare -m bash -c '
			R=$1; shift; mount --make-rprivate /
			while [ "$1" != -- ]; do
				mount -t overlay overlay -o "lowerdir=$R/$1:/$1" "/$1" || exit 99
				shift
			done
			shift
			systemd-analyze verify "$@"' _ "$R" "${dirs[@]}" -- "$@"
	}
	expect 0 "systemd-analyze verify ferryd.service ferryd@.service ferryd@site-b.service" -- \
		verify usr/sbin usr/share/man lib/systemd/system -- \
		/lib/systemd/system/ferryd.service /lib/systemd/system/ferryd@.service ferryd@site-b.service
	check "verify: no complaint ('$ERR')" test -z "$ERR"
	if [ ! -e /usr/sbin/ferryd ]; then
		expect 1 "verify fails without the binary (the check bites)" -- \
			verify usr/share/man lib/systemd/system -- /lib/systemd/system/ferryd.service
		check "names the missing ferryd ('$ERR')" grep -q "/usr/sbin/ferryd" <<<"$ERR"
	fi
	check "security: ProtectSystem, PrivateTmp, NoNewPrivileges" \
		grep -qx "ProtectSystem=full" "$R/lib/systemd/system/ferryd.service"
else
	echo "SKIP: systemd-analyze verify needs root, unshare -m and systemd"
fi

# A second install keeps the administrator's configuration.
echo "pool = /srv/mine" >"$R/etc/ferry/ferryd.conf"
expect 0 "second install" -- make -s -C "$FERRY_SRC" install BUILD="$FERRY_BUILD" PREFIX=/usr DESTDIR="$R"
check "configuration kept" test "$(cat "$R/etc/ferry/ferryd.conf")" = "pool = /srv/mine"

# Another prefix: everything below it.
L=$T/local
expect 0 "make install PREFIX=/usr/local" -- \
	make -s -C "$FERRY_SRC" install BUILD="$FERRY_BUILD" PREFIX=/usr/local DESTDIR="$L"
check "/usr/local: unit below the prefix, naming its ferryd" grep -qx \
	"ExecStart=/usr/local/sbin/ferryd --foreground --config /usr/local/etc/ferry/ferryd.conf" \
	"$L/usr/local/lib/systemd/system/ferryd.service"
check "/usr/local: configuration in PREFIX/etc" test -f "$L/usr/local/etc/ferry/ferryd.conf"

# Man pages: no warnings from man, and ferryd's pages cover every option.
for page in "$FERRY_SRC"/doc/*.[1-8]; do
	w=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >/dev/null)
	check "$(basename "$page"): man --warnings clean ('$w')" test -z "$w"
done
plain() { sed 's/\\-/-/g; s/\\f[BIRP]//g' "$1"; }
mapfile -t options < <("$FERRYD" --help | sed -n 's/^  --\([a-z0-9-]*\).*/\1/p')
for o in "${options[@]}"; do
	check "ferryd.8 documents --$o" grep -q -- "--$o" <(plain "$FERRY_SRC/doc/ferryd.8")
	case $o in config | check-config | help | version) continue ;; esac
	check "ferryd.conf.5 documents the key $o" grep -q -- "\"$o = \"" <(plain "$FERRY_SRC/doc/ferryd.conf.5")
done
for w in SIGHUP SIGTERM SIGINT "EXIT STATUS" FILES SYSTEMD ferryd.conf "ferryd@"; do
	check "ferryd.8 covers $w" grep -q -- "$w" <(plain "$FERRY_SRC/doc/ferryd.8")
done

finish
