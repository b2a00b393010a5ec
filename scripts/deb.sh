#!/bin/bash
# make deb: builds the Debian package of ferry with debhelper from a copy
# of the source tree, then checks it with lintian (no errors allowed).
# usage: scripts/deb.sh [OUTDIR]      (default build/deb)
# The .deb lands in OUTDIR; OUTDIR/lintian.txt holds lintian's report.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$root/build/deb}")
version=$(sed -n 's/^#define FERRY_VERSION "\(.*\)"/\1/p' "$root/src/common/common.h")
debver=$(dpkg-parsechangelog -l "$root/debian/changelog" -S Version)
if [ "${debver%%-*}" != "$version" ]; then
	echo "deb: debian/changelog says $debver, src/common/common.h says $version" >&2
	exit 1
fi
for t in dpkg-buildpackage dh lintian; do
	command -v $t >/dev/null || { echo "deb: $t is missing (scripts/deps.sh installs it)" >&2; exit 1; }
done

# A copy of the tree (what git tracks plus new files, else all but builds):
# dpkg-buildpackage writes next to the source directory.
src=$out/src/ferry-$version
rm -rf "$out/src"
mkdir -p "$src"
cd "$root"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
		[ -e "$f" ] && printf '%s\0' "$f"
	done | tar --null -T - -cf - | tar -C "$src" -xf -
else
	tar --exclude='./build*' --exclude=./.git -cf - . | tar -C "$src" -xf -
fi
cd "$src"
export DEB_BUILD_OPTIONS="nocheck parallel=${DEB_JOBS:-2} ${DEB_BUILD_OPTIONS:-}"
nice dpkg-buildpackage -us -uc -b >"$out/build.log" 2>&1 || {
	tail -n 40 "$out/build.log" >&2
	echo "deb: dpkg-buildpackage failed (log: $out/build.log)" >&2
	exit 1
}
deb=$(ls "$out"/src/ferry_"$version"*_*.deb)
mv "$deb" "$out/"
deb=$out/$(basename "$deb")
cd "$out"
rm -rf "$out/src"
rc=0
lintian --fail-on error --info "$deb" >"$out/lintian.txt" 2>&1 || rc=$?
cat "$out/lintian.txt"
if [ $rc -ne 0 ]; then
	echo "deb: lintian reports errors (exit $rc)" >&2
	exit 1
fi
echo "deb: $deb"
