# Helpers of the operations tests (sourced): those of tests/cli, temp dirs
# named after the ops branch, the source tree in $FERRY_SRC.
FERRY_TEST_TAG=ops
. "$(dirname "${BASH_SOURCE[0]}")/../cli/lib.sh"
FERRY_SRC=${FERRY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}

# Waits (bounded) until FILE contains PATTERN (grep -E).
wait_log() { wait_for "${3:-60}" grep -Eq -- "$2" "$1"; }

# A secret file of mode 0600.
make_secret() { printf 'ops-test-secret-%s\n' "$RANDOM$RANDOM" >"$1"; chmod 600 "$1"; }

# Everything under DIR (names, sorted), to show that nothing was created.
tree_of() { (cd "$1" && find . | sort); }
