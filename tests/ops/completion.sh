#!/bin/bash
# bash completion of ferry (contrib/bash-completion/ferry): groups, verbs,
# options and option values from `ferry --help`, and names of volumes,
# snapshots, pairs and exports from a running ferryd (--pool or
# $FERRY_POOL); nothing from a pool without a daemon.  Run with and without
# the bash-completion framework.
. "$(dirname "$0")/lib.sh"
COMP=$FERRY_SRC/contrib/bash-completion/ferry
FW=/usr/share/bash-completion/bash_completion

make_secret "$T/secret"
"$FERRYD" --pool "$T/b" --listen 127.0.0.1:0 --secret-file "$T/secret" || fail "site b"
PB=$(sed -n 's/.*accepting peers on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$T/b/ferryd.log" | tail -n 1)
"$FERRYD" --pool "$POOL" --secret-file "$T/secret" --iscsi "127.0.0.1:$(free_port)" || fail "site a"
expect 0 "volume db" -- ferry volume create db --size 1M
expect 0 "volume web" -- ferry volume create web --size 1M
expect 0 "volume logs" -- ferry volume create logs --size 1M
expect 0 "snapshot" -- ferry snap create db@monday
expect 0 "snapshot" -- ferry snap create db@tuesday
expect 0 "export" -- ferry export add web
expect 0 "pair" -- ferry pair create logs --peer "127.0.0.1:$PB" --period 3600
expect 0 "volume data" -- ferry volume create data --size 1M
expect 0 "group" -- ferry group create dbgroup data
expect 0 "group snapshot" -- ferry snap create dbgroup@s1

# comp [fw|raw] WORDS...: the completions of the last word, sorted, one line.
comp() {
	local mode=$1
	shift
	FERRY_BIN_DIR=$(dirname "$FERRY_BIN") COMP_FILE=$COMP FW=$FW MODE=$mode bash --norc --noprofile -c '
		[ "$MODE" = fw ] && . "$FW"
		. "$COMP_FILE"
		PATH=$FERRY_BIN_DIR:$PATH
		COMP_WORDS=("$@")
		COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		COMP_LINE="$*"
		COMP_POINT=${#COMP_LINE}
		COMPREPLY=()
		_ferry ferry "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
		printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " " | sed "s/ $//"' _ "$@"
}
# is MODE "EXPECTED" WORDS...
is() {
	local mode=$1 want=$2
	shift 2
	local got
	got=$(comp "$mode" "$@")
	check "[$mode] '$*' -> '$want' (got '$got')" test "$got" = "$want"
}

for m in fw raw; do
	is $m "export group pair snap status volume" ferry ""
	is $m "volume" ferry vo
	is $m "--help --pool --version" ferry --
	is $m "clone create discard export flatten info list md5 release resize rm takeover write" ferry volume ""
	is $m "demote" ferry pair de
	is $m "--block-size --help --object-size --size" ferry volume create x --
	is $m "--block-size --help --object-size" ferry volume create x --size 1M --
	is $m "4096 512" ferry volume create x --block-size ""
	is $m "off on" ferry pair create db --compress ""
	is $m "--help --json" ferry pair status db --
	# names from the daemon
	is $m "data db logs web" ferry --pool "$POOL" volume info ""
	# groups: NAME is a group, VOLUME... every volume after it
	is $m "add clone create info list remove rm" ferry group ""
	is $m "dbgroup" ferry --pool "$POOL" group info ""
	is $m "dbgroup" ferry --pool "$POOL" group add d
	is $m "data db" ferry --pool "$POOL" group create g2 web d
	# group clone GROUP@SNAP NEWGROUP: a group, then the first member's snapshots
	is $m "dbgroup@" ferry --pool "$POOL" group clone d
	is $m "dbgroup@s1" ferry --pool "$POOL" group clone dbgroup@
	is $m "" ferry --pool "$POOL" group clone dbgroup@s1 ""
	is $m "data db logs web" ferry "--pool=$POOL" volume md5 ""
	is $m "db@monday db@tuesday" ferry --pool "$POOL" snap rm db@
	is $m "db@tuesday" ferry --pool "$POOL" snap rm db@t
	is $m "db@monday db@tuesday" ferry --pool "$POOL" volume clone db@
	is $m "" ferry --pool "$POOL" volume clone db@monday ""
	is $m "logs" ferry --pool "$POOL" pair status ""
	is $m "web" ferry --pool "$POOL" export rm ""
	is $m "web" ferry --pool "$POOL" export add w
	is $m "db@monday db@tuesday" ferry --pool "$POOL" snap diff db@monday db@
	# the second positional of volume write is a file
	is $m "$T/secret" ferry --pool "$POOL" volume write db "$T/sec"
	# --pool completes directories
	is $m "$T/b" ferry --pool "$T/b"
	# no daemon: no names, no error
	is $m "" ferry --pool "$T/nopool" volume info ""
	# $FERRY_POOL
	got=$(FERRY_POOL=$POOL comp $m ferry pair rm l)
	check "[$m] FERRY_POOL names the pool (got '$got')" test "$got" = "logs"
done

# The file registers itself for the ferry command.
check "complete -F _ferry ferry" \
	bash --norc -c ". '$COMP'; complete -p ferry" 2>/dev/null
got=$(bash --norc -c ". '$COMP'; complete -p ferry")
check "registered as '$got'" grep -q -- "-F _ferry ferry" <<<"$got"
check "bash -n" bash -n "$COMP"

finish
