#!/bin/bash
# Fault soak of ferry replication (see soak.py for what it does and checks).
#   tests/soak/soak.sh [BUILD_DIR] [--long]
# Short version (ctest soak_short): FERRY_SOAK_ROUNDS rounds, default 12
# (7 under FERRY_SANITIZED=1), capped at ~1.2 min.  --long: until
# FERRY_SOAK_ROUNDS rounds or FERRY_SOAK_MINUTES (default 60) minutes.
# FERRY_SEED replays the sequence of choices.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
args=()
for a in "$@"; do
	case $a in
	--long) args+=(--long) ;;
	*) FERRY_BUILD=$a ;;
	esac
done
FERRY_BUILD=${FERRY_BUILD:-}
[ -n "$FERRY_BUILD" ] || { echo "usage: $0 BUILD_DIR [--long] (or FERRY_BUILD=...)" >&2; exit 2; }
exec python3 "$HERE/soak.py" "$FERRY_BUILD" "${args[@]}"
