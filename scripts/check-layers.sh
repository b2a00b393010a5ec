#!/bin/bash
# Enforce the module dependency order: a file under src/A/ may include
# another module B only if B is listed for A below, and only through B's
# public header "B/B.h".  Private headers stay inside their module.
set -u
src=${1:-src}
declare -A allow=(
  [common]=""
  [store]="common"
  [ctl]="common"
  [scsi]="common store"
  [iscsi]="common scsi"
  [repl]="common store"
  [daemon]="common store ctl scsi iscsi repl"
  [cli]="common ctl"
)
bad=0
for dir in "$src"/*/; do
  mod=$(basename "$dir")
  if [ -z "${allow[$mod]+x}" ]; then
    echo "layers: unknown module src/$mod (add it to scripts/check-layers.sh)"; bad=1; continue
  fi
  while IFS=: read -r file _ line; do
    inc=$(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' <<<"$line")
    [ -z "$inc" ] && continue
    case "$inc" in */*) ;; *) continue ;; esac
    other=${inc%%/*}
    [ "$other" = "$mod" ] && continue
    if [ -z "${allow[$other]+x}" ]; then continue; fi
    ok=0
    for a in ${allow[$mod]}; do [ "$a" = "$other" ] && ok=1; done
    if [ $ok = 0 ]; then echo "layers: $file includes $inc but $mod may not depend on $other"; bad=1; continue; fi
    if [ "$inc" != "$other/$other.h" ]; then echo "layers: $file includes private header $inc of $other"; bad=1; fi
  done < <(grep -n '#[[:space:]]*include[[:space:]]*"' -r "$dir" --include='*.c' --include='*.h' /dev/null)
done
if [ $bad = 0 ]; then echo "layers: ok"; fi
exit $bad
