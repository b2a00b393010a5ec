#!/bin/bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and runs each one for a
# fixed number of executions.
#
# usage: scripts/fuzz.sh [RUNS_PER_TARGET] [TARGET...]
#   RUNS_PER_TARGET  executions per target (default 1000000; the campaign
#                    recorded in docs/RELIABILITY.md used 10000000)
#   TARGET           fuzz_NAME or NAME; default: every tests/fuzz/fuzz_*.c
# environment:
#   FUZZ_BUILD=DIR   build directory (default build-fuzz)
#   FUZZ_MAX_LEN=N   largest input (default: per target, see max_len_of)
#   FUZZ_JOBS=N      parallel libFuzzer workers per target (default 1; the
#                    runs are split between them)
#   FUZZ_MERGE=1     afterwards, add to tests/fuzz/corpus/NAME only those
#                    inputs of the run that reach new coverage (-merge=1),
#                    so the checked-in corpus stays small
#
# The run itself grows a work corpus in $FUZZ_BUILD/corpus/NAME (seeded
# from the checked-in one), never the checked-in corpus directly.  Crashes
# land in $FUZZ_BUILD/artifacts/; the full libFuzzer log of each target is
# $FUZZ_BUILD/logs/NAME.log.  One summary line per target:
#   == NAME: runs=EXECUTED time=SECONDS exec/s=N corpus=FILES/BYTES result=clean|CRASH
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs=${1:-1000000}; shift || true
build=$(realpath -m "${FUZZ_BUILD:-build-fuzz}")
jobs=${FUZZ_JOBS:-1}

all=($(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//'))
cmake -S . -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DFERRY_FUZZ=ON -DFERRY_SANITIZE=ON \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=()
for t in "$@"; do targets+=("fuzz_${t#fuzz_}"); done
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
ninja -j2 -C "$build" "${targets[@]}" >/dev/null

# Largest input per target: big enough for the parser's own limits to be
# reached (PDU data segments, frames), no bigger, since long inputs slow
# every execution down.
max_len_of() {
  case $1 in
    iscsi_text|daemon_exports|repl_state) echo 8192 ;;
    store_meta) echo 16384 ;;
    *) echo 65536 ;;
  esac
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$build/artifacts" "$build/logs" "$build/corpus"
status=0
for t in "${targets[@]}"; do
  name=${t#fuzz_}
  seed=tests/fuzz/corpus/$name
  work=$build/corpus/$name
  log=$build/logs/$name.log
  max_len=${FUZZ_MAX_LEN:-$(max_len_of "$name")}
  mkdir -p "$seed" "$work"
  start=$(date +%s)
  rc=0
  if [ "$jobs" -gt 1 ]; then
    # -runs is per worker with -jobs; split so the total is $runs.
    # The workers log to fuzz-N.log in the current directory; the master
    # copies each into its own output when the worker exits.
    (cd "$build/logs" && "$build/fuzz/$t" -jobs="$jobs" -workers="$jobs" \
        -runs=$(( (runs + jobs - 1) / jobs )) -max_len=$max_len -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$build/artifacts/$name-" \
        "$work" "$root/$seed") >"$log" 2>&1 || rc=$?
    rm -f "$build"/logs/fuzz-*.log
  else
    "$build/fuzz/$t" -runs="$runs" -max_len=$max_len -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$build/artifacts/$name-" "$work" "$seed" >"$log" 2>&1 || rc=$?
  fi
  secs=$(( $(date +%s) - start ))
  execs=$(grep -ah 'stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
  result=clean
  if [ $rc -ne 0 ] || grep -aqE '^(==[0-9]+==ERROR|SUMMARY: )|runtime error:' "$log"; then
    result=CRASH
    status=1
  fi
  if [ "${FUZZ_MERGE:-0}" = 1 ] && [ $result = clean ]; then
    # Additive merge: keeps the named seeds and adds only the work-corpus
    # inputs that reach new coverage (libFuzzer picks the smallest ones).
    "$build/fuzz/$t" -merge=1 -max_len=$max_len -timeout=10 "$seed" "$work" \
        >"$build/logs/$name.merge.log" 2>&1
    if [ "$(find "$seed" -type f | wc -l)" -gt 500 ]; then
      # Too many for a fast replay: keep the hand-written seeds (names
      # that are not libFuzzer's SHA-1s) plus what adds new edges only,
      # ignoring hit counts.
      fresh=$(mktemp -d "$build/merge-$name.XXXXXX")
      old=$(mktemp -d "$build/merge-$name-old.XXXXXX")
      find "$seed" -type f -regextype egrep ! -regex '.*/[0-9a-f]{40}' -exec cp {} "$fresh"/ \;
      find "$seed" -type f -regextype egrep -regex '.*/[0-9a-f]{40}' -exec mv {} "$old"/ \;
      "$build/fuzz/$t" -merge=1 -use_counters=0 -max_len=$max_len -timeout=10 "$fresh" \
          "$old" "$work" >>"$build/logs/$name.merge.log" 2>&1
      find "$seed" -type f -exec rm -f {} +
      cp "$fresh"/* "$seed"/
      rm -rf "$fresh" "$old"
    fi
  fi
  files=$(find "$seed" -type f | wc -l)
  bytes=$(du -sb "$seed" | cut -f1)
  echo "== $name: runs=$execs time=${secs}s exec/s=$(( execs / (secs > 0 ? secs : 1) ))" \
       "corpus=$files files/$bytes bytes result=$result"
  if [ $result = CRASH ]; then
    grep -hE 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | head -n 5 || true
  fi
done
exit $status
