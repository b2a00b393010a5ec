#!/bin/bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and runs each one.
# usage: scripts/fuzz.sh [RUNS_PER_TARGET] [TARGET...]
# Grows the corpora in tests/fuzz/corpus/NAME/ with what it finds.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000000}; shift || true
cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DFERRY_FUZZ=ON -DFERRY_SANITIZE=ON \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build-fuzz $(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//') >/dev/null
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(cd build-fuzz/fuzz && ls))
mkdir -p tests/fuzz/artifacts
for t in "${targets[@]}"; do
  name=${t#fuzz_}
  mkdir -p "tests/fuzz/corpus/$name"
  echo "== $t: $runs runs"
  start=$(date +%s)
  ./build-fuzz/fuzz/$t -runs="$runs" -max_len=65536 -artifact_prefix=tests/fuzz/artifacts/ \
      "tests/fuzz/corpus/$name" 2>&1 | tail -n 3
  echo "== $t: done in $(( $(date +%s) - start )) s"
done
