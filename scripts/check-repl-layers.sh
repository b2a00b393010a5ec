#!/bin/bash
# The layers inside src/repl (src/repl/pair.h): a file may include only
# the private headers of its own or a lower layer and, with the built
# library given, call only functions defined in its own or a lower layer.
#   usage: scripts/check-repl-layers.sh SRC_DIR [libferry_repl.a]
set -u
src=${1:-src}/repl
lib=${2:-}
declare -A level=(
  [wire.c]=0 [link.c]=0 [gate.c]=0 [wire.h]=0 [link.h]=0 [gate.h]=0
  [rec.c]=1 [rec.h]=1
  [pair.c]=2 [conn.c]=2 [pair.h]=2
  [send.c]=3 [recv.c]=3 [role.c]=3 [verify.c]=3 [verbs.c]=3 [engine.h]=3
  [sched.c]=4 [callback.c]=4 [listen.c]=4 [repl.c]=4 [sched.h]=4
  [repl.h]=0
)
bad=0
for f in "$src"/*.c "$src"/*.h; do
  b=$(basename "$f")
  if [ -z "${level[$b]+x}" ]; then
    echo "repl-layers: $b has no layer (add it to scripts/check-repl-layers.sh)"; bad=1; continue
  fi
  while read -r inc; do
    h=${inc#repl/}
    [ "$h" = "$inc" ] && continue          # another module: check-layers.sh
    if [ -z "${level[$h]+x}" ]; then
      echo "repl-layers: $b includes unknown repl/$h"; bad=1; continue
    fi
    if [ "${level[$h]}" -gt "${level[$b]}" ]; then
      echo "repl-layers: $b (layer ${level[$b]}) includes repl/$h (layer ${level[$h]})"; bad=1
    fi
  done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
done
if [ -n "$lib" ]; then
  # member.o: defined global symbols, and undefined ones
  declare -A owner=()
  while read -r obj sym; do owner[$sym]=${obj%.c}; done < <(
    nm -A --defined-only -g "$lib" 2>/dev/null |
    sed -n 's/^[^:]*:\([^:]*\)\.o:[0-9a-f]* [TDBR] \(.*\)$/\1 \2/p')
  while read -r obj sym; do
    obj=${obj%.c}
    def=${owner[$sym]:-}
    [ -z "$def" ] && continue              # libc, OpenSSL, store, common...
    if [ -z "${level[$obj.c]+x}" ] || [ -z "${level[$def.c]+x}" ]; then
      echo "repl-layers: $obj.o or $def.o has no layer"; bad=1; continue
    fi
    if [ "${level[$def.c]}" -gt "${level[$obj.c]}" ]; then
      echo "repl-layers: $obj.c (layer ${level[$obj.c]}) calls $sym of $def.c (layer ${level[$def.c]})"
      bad=1
    fi
  done < <(nm -A -u "$lib" 2>/dev/null | sed -n 's/^[^:]*:\([^:]*\)\.o: *U \(.*\)$/\1 \2/p')
  [ ${#owner[@]} -gt 0 ] || { echo "repl-layers: no symbols read from $lib"; bad=1; }
fi
[ $bad = 0 ] && echo "repl-layers: ok"
exit $bad
