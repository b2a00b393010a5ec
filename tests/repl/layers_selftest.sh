#!/bin/bash
# scripts/check-repl-layers.sh can fail: an upward #include and an upward
# call (in a small library built here) must both be reported.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T=$(mktemp -d /tmp/ferry-life-layers.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
mkdir -p "$T/src/repl"
cp "$ROOT"/src/repl/*.[ch] "$T/src/repl/"
"$ROOT/scripts/check-repl-layers.sh" "$T/src" >/dev/null || { echo "FAIL: clean copy refused"; fails=1; }
# pair.c (layer 2) including the scheduler's header (layer 4)
sed -i '0,/#include "repl\/pair.h"/s//#include "repl\/pair.h"\n#include "repl\/sched.h"/' "$T/src/repl/pair.c"
out=$("$ROOT/scripts/check-repl-layers.sh" "$T/src" 2>&1) && { echo "FAIL: upward include passed"; fails=1; }
grep -q "pair.c (layer 2) includes repl/sched.h (layer 4)" <<<"$out" || { echo "FAIL: '$out'"; fails=1; }
# an upward call: pair.o (layer 2) calls sched_start defined in sched.o (layer 4)
mkdir -p "$T/lib" "$T/clean/repl"
cp "$ROOT"/src/repl/*.[ch] "$T/clean/repl/"
printf 'int sched_start(void *r);\nint pair_thing(void) { return sched_start(0); }\n' >"$T/lib/pair.c"
printf 'int sched_start(void *r) { return r != 0; }\n' >"$T/lib/sched.c"
(cd "$T/lib" && cc -c pair.c -o pair.c.o && cc -c sched.c -o sched.c.o && ar rc lib.a pair.c.o sched.c.o) ||
	{ echo "SKIP: no compiler"; exit 77; }
out=$("$ROOT/scripts/check-repl-layers.sh" "$T/clean" "$T/lib/lib.a" 2>&1) && { echo "FAIL: upward call passed"; fails=1; }
grep -q "pair.c (layer 2) calls sched_start of sched.c (layer 4)" <<<"$out" || { echo "FAIL: '$out'"; fails=1; }
[ $fails = 0 ] && echo "layers selftest: ok"
exit $fails
