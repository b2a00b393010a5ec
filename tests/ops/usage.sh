#!/bin/bash
# Every usage error exits 2, consistently: malformed arguments, and
# arguments that are wrong whatever the pool holds (sizes, lengths, object
# sizes, --peer, CHAP secrets), for ferry and for ferryd's command line;
# runtime failures (the pool's state) stay 1.
. "$(dirname "$0")/lib.sh"

make_secret "$T/secret"
expect 0 "start" -- "$FERRYD" --pool "$POOL" --secret-file "$T/secret"
expect 0 "a volume" -- ferry volume create db --size 1M

# usage PATTERN WHAT -- CMD: exit 2, one line matching PATTERN.
usage() { expect_err 2 "$@"; }
usage "bad size '12Q'" "size suffix" -- ferry volume create z --size 12Q
usage "too large" "size overflow" -- ferry volume create z --size 99999999999T
usage "greater than 0" "size 0" -- ferry volume create z --size 0
usage "not a multiple of the block size 512" "size not a block multiple" -- ferry volume create z --size 1000
usage "not a multiple of the block size 4096" "size not a 4K multiple" -- \
	ferry volume create z --size 6144 --block-size 4096
usage "larger than the maximum" "size above 16 TiB" -- ferry volume create z --size 17T
usage "power of two" "object size not a power of two" -- ferry volume create z --size 1M --object-size 100K
usage "power of two" "object size too large" -- ferry volume create z --size 1M --object-size 128M
usage "one of 512|4096" "block size" -- ferry volume create z --size 1M --block-size 1024
usage "bad size 'x'" "offset" -- ferry volume discard db --offset x --length 1
usage "--length must be greater than 0" "discard length 0" -- ferry volume discard db --offset 0 --length 0
usage "--length must be greater than 0" "discard length 0 of a missing volume" -- \
	ferry volume discard nosuch --offset 0 --length 0
usage "bad --peer 'nohostport'" "peer without a port" -- ferry pair create db --peer nohostport
usage "bad --peer ':7450'" "peer without a host" -- ferry pair create db --peer :7450
usage "bad --peer '127.0.0.1:99999'" "peer port out of range" -- ferry pair create db --peer 127.0.0.1:99999
usage "--period must be at least 1" "period 0" -- ferry pair create db --peer 127.0.0.1:1 --period 0
usage "--max-inflight must be 1..1024" "max-inflight 0" -- ferry pair create db --peer 127.0.0.1:1 --max-inflight 0
usage "bad duration" "period not a duration" -- ferry pair create db --peer 127.0.0.1:1 --period soon
usage "at least 12" "short CHAP secret" -- ferry export add db --chap user:short
usage "must differ" "mutual CHAP secret equal" -- \
	ferry export add db --chap user:aaaaaaaaaaaaaa --mutual-chap t:aaaaaaaaaaaaaa
usage "--lun must be at most" "LUN out of range" -- ferry export add db --lun 99999
usage "unknown option" "unknown option" -- ferry volume create z --size 1M --frob
usage "missing --size" "missing size" -- ferry volume create z
usage "bad volume name" "bad name" -- ferry volume create ../x --size 1M

# Failures that depend on the pool stay 1.
expect_err 1 "past the end" "range past the end" -- ferry volume discard db --offset 1M --length 4K
expect_err 1 "no such volume" "missing volume" -- ferry volume discard nosuch --offset 0 --length 4K
expect_err 1 "already exists" "duplicate" -- ferry volume create db --size 1M

# ferryd's command line.
expect_err 2 "unknown option '--frob'" "ferryd unknown option" -- "$FERRYD" --pool "$T/x" --frob
expect_err 2 "--iscsi needs a value" "ferryd missing value" -- "$FERRYD" --pool "$T/x" --iscsi
expect_err 2 "--foreground takes no value" "ferryd flag with a value" -- "$FERRYD" --pool "$T/x" --foreground=1
expect_err 2 "bad --log-level" "ferryd bad log level" -- "$FERRYD" --pool "$T/x" --log-level loud
expect_err 2 "bad --max-transfers 'many'" "ferryd bad number" -- "$FERRYD" --pool "$T/x" --max-transfers many
expect_err 2 "--pool given twice" "ferryd option twice" -- "$FERRYD" --pool "$T/x" --pool "$T/y"
expect_err 2 "--pool DIR is required" "ferryd without a pool" -- "$FERRYD"
expect_err 2 "unexpected argument" "ferryd stray argument" -- "$FERRYD" --pool "$T/x" extra
check "usage errors create nothing" test ! -e "$T/x"

finish
