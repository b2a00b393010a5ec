#!/bin/bash
# Exports' credentials and names (issue 14, items 4 and 6), with libiscsi's
# tools as initiators:
#  - every check of an export (IQN, LUN, CHAP) made at `export add` by a
#    ferryd without --iscsi, so that what it records is served later;
#  - CHAP credentials from a file (--chap-file FILE, mode checked, or -
#    for stdin), never on a command line, never in the log;
#  - SendTargets lists a CHAP target only to a discovery session that
#    authenticated with that target's credentials;
#  - optional discovery authentication (ferryd --discovery-chap-file).
. "$(dirname "$0")/../cli/lib.sh"
for tool in iscsi-ls iscsi-inq python3; do
	command -v $tool >/dev/null || { echo "SKIP: $tool missing"; exit 77; }
done
IQN=iqn.2026-11.io.ferry
PORT=$(free_port)
URL=iscsi://127.0.0.1:$PORT
start_iscsi() { "$FERRYD" --pool "$POOL" --log-level debug --iscsi 127.0.0.1:$PORT "$@"; }
cred() { # cred FILE MODE LINE...: a credentials file
	local f=$1 m=$2
	shift 2
	printf '%s\n' "$@" >"$f"
	chmod "$m" "$f"
}
targets() { # targets [USER%SECRET@]: the targets iscsi-ls sees
	timeout 30 iscsi-ls "iscsi://${1:-}127.0.0.1:$PORT" 2>&1 | sed -n 's/^Target:\([^ ]*\) .*/\1/p' | sort | tr '\n' ' '
}

# ---- without --iscsi: everything is checked at export add --------------------
start_daemon || { echo "ferryd did not start" >&2; exit 1; }
for v in open alice bob stdin; do
	expect 0 "create $v" -- ferry volume create $v --size 4M
done
expect_err 2 "bad --iqn 'bad iqn'" "a bad IQN is refused without --iscsi" -- \
	ferry export add open --iqn 'bad iqn'
expect_err 2 "bad --iqn" "a bad month is refused" -- ferry export add open --iqn iqn.2026-13.io.ferry:x
expect_err 2 "bad --iqn" "an eui. name needs 16 hex digits" -- ferry export add open --iqn eui.12345
expect_err 2 "bad --iqn" "a name without a naming authority is refused" -- ferry export add open --iqn iqn.2026-11.
expect_err 2 "at most 16383" "a LUN beyond the flat space is refused" -- ferry export add open --lun 16384
expect_err 2 "at least 12" "a short CHAP secret is refused" -- ferry export add open --chap u:short
expect_err 2 "USER:SECRET" "CHAP without a user is refused" -- ferry export add open --chap :long-enough-secret
expect_err 2 "must differ" "the same mutual secret is refused" -- \
	ferry export add open --chap u:long-enough-secret --mutual-chap t:long-enough-secret
check "nothing was recorded" test "$(ferry export list --json)" = "[]"
expect 0 "eui. name accepted" -- ferry export add open --iqn eui.0123456789ABCDEF
expect 0 "export rm it" -- ferry export rm open
expect 0 "export open (recorded, not served)" -- ferry export add open
check "add says it is only recorded" grep -q "recorded; ferryd serves it when started with --iscsi" <<<"$OUT"

# ---- --chap-file ----------------------------------------------------------------
cred "$T/alice.cred" 644 "alice:alice-secret-01"
expect_err 1 "accessible by group or others" "a group-readable credentials file is refused" -- \
	ferry export add alice --chap-file "$T/alice.cred"
chmod 640 "$T/alice.cred"
expect_err 1 "accessible by group or others" "mode 0640 is refused too" -- \
	ferry export add alice --chap-file "$T/alice.cred"
chmod 600 "$T/alice.cred"
expect_err 2 "replaces --chap" "--chap-file with --chap is refused" -- \
	ferry export add alice --chap-file "$T/alice.cred" --chap x:yyyyyyyyyyyyyy
expect_err 1 "cannot read" "a missing file is refused" -- ferry export add alice --chap-file "$T/nosuch"
cred "$T/three.cred" 600 "a:aaaaaaaaaaaaaaaa" "b:bbbbbbbbbbbbbbbbb" "c:cccccccccccccccc"
expect_err 1 "more than two" "three credential lines are refused" -- \
	ferry export add alice --chap-file "$T/three.cred"
cred "$T/short.cred" 600 "# a comment" "alice:short"
expect_err 2 "at least 12" "a short secret from a file is refused" -- \
	ferry export add alice --chap-file "$T/short.cred"
expect 0 "export alice with --chap-file" -- ferry export add alice --chap-file "$T/alice.cred"
cred "$T/bob.cred" 600 "# initiator, then target (mutual)" "bob:bob-secret-0001" "tgt:target-secret-02"
expect 0 "export bob with mutual CHAP from a file" -- ferry export add bob --chap-file="$T/bob.cred"
expect 0 "export stdin with CHAP from stdin" -- \
	sh -c "printf 'carol:carol-secret-03\r\n' | '$FERRY_BIN' --pool '$POOL' export add stdin --chap-file -"
expect 0 "list" -- ferry export list --json
check "credentials recorded" python3 -c '
import json, sys
v = {e["volume"]: e for e in json.loads(sys.argv[1])}
assert v["alice"]["chap"] and not v["alice"]["mutual_chap"], v
assert v["bob"]["chap"] and v["bob"]["mutual_chap"], v
assert v["stdin"]["chap"] and not v["open"]["chap"], v
assert not any(e["served"] for e in v.values()), v
' "$OUT"
check "exports.conf is private" test "$(stat -c %a "$POOL/exports.conf")" = 600
stop_daemon || fail "ferryd did not stop"

# ---- with --iscsi: what was recorded is served ----------------------------------
start_iscsi || fail "ferryd --iscsi did not start"
expect 0 "list after restart" -- ferry export list --json
check "every recorded export is served" python3 -c '
import json, sys
v = json.loads(sys.argv[1])
assert len(v) == 4 and all(e["served"] for e in v), v' "$OUT"
expect 0 "CHAP login with the file's secret" -- \
	timeout 30 iscsi-inq "iscsi://alice%alice-secret-01@127.0.0.1:$PORT/$IQN:alice/0"
check "a wrong secret fails" sh -c "! timeout 30 iscsi-inq 'iscsi://alice%alice-secret-02@127.0.0.1:$PORT/$IQN:alice/0' >/dev/null 2>&1"
expect 0 "CHAP from stdin (CRLF line end is not part of the secret)" -- \
	timeout 30 iscsi-inq "iscsi://carol%carol-secret-03@127.0.0.1:$PORT/$IQN:stdin/0"
expect 0 "mutual CHAP from the file's second line" -- \
	timeout 30 iscsi-inq "iscsi://bob%bob-secret-0001@127.0.0.1:$PORT/$IQN:bob/0?target_user=tgt&target_password=target-secret-02"
check "mutual with a wrong target secret fails" sh -c "! timeout 30 iscsi-inq 'iscsi://bob%bob-secret-0001@127.0.0.1:$PORT/$IQN:bob/0?target_user=tgt&target_password=not-the-secret' >/dev/null 2>&1"

# ---- SendTargets lists what the discovery session may log in to ---------------
check "no credentials: only the open target" test "$(targets)" = "$IQN:open "
check "alice's credentials: alice's target too" test "$(targets alice%alice-secret-01@)" = "$IQN:alice $IQN:open "
check "bob's: bob's target, not alice's" test "$(targets bob%bob-secret-0001@)" = "$IQN:bob $IQN:open "
check "a wrong secret lists nothing" test -z "$(targets alice%alice-secret-99@)"
stop_daemon || fail "ferryd did not stop"

# ---- discovery authentication -------------------------------------------------------
cred "$T/disc.cred" 644 "disco:discovery-secret-1"
expect 1 "a group-readable --discovery-chap-file is refused" -- start_iscsi --discovery-chap-file "$T/disc.cred"
check "it says why" grep -q "accessible by group or others" <<<"$ERR"
chmod 600 "$T/disc.cred"
expect 1 "--discovery-chap-file without --iscsi is refused" -- \
	"$FERRYD" --pool "$POOL" --discovery-chap-file "$T/disc.cred"
cred "$T/weak.cred" 600 "disco:short"
expect 1 "a short discovery secret is refused" -- start_iscsi --discovery-chap-file "$T/weak.cred"
expect 0 "ferryd with discovery authentication" -- start_iscsi --discovery-chap-file "$T/disc.cred"
check "discovery without credentials is refused" sh -c "! timeout 30 iscsi-ls $URL >/dev/null 2>&1"
check "discovery credentials: the open target" test "$(targets disco%discovery-secret-1@)" = "$IQN:open "
check "a wrong discovery secret is refused" test -z "$(targets disco%discovery-secret-2@)"
check "a target's credentials also open discovery, listing that target" \
	test "$(targets alice%alice-secret-01@)" = "$IQN:alice $IQN:open "
expect 0 "normal sessions need no discovery credentials" -- timeout 30 iscsi-inq $URL/$IQN:open/0
stop_daemon || fail "ferryd did not stop"
cred "$T/discm.cred" 600 "disco:discovery-secret-1" "portal:portal-secret-22"
expect 0 "ferryd with mutual discovery authentication" -- start_iscsi --discovery-chap-file "$T/discm.cred"
out=$(timeout 30 iscsi-ls "iscsi://disco%discovery-secret-1@127.0.0.1:$PORT?target_user=portal&target_password=portal-secret-22" 2>&1)
check "mutual discovery lists the open target ($out)" grep -q "^Target:$IQN:open " <<<"$out"
check "mutual discovery with a wrong portal secret fails" sh -c "! timeout 30 iscsi-ls 'iscsi://disco%discovery-secret-1@127.0.0.1:$PORT?target_user=portal&target_password=wrong-secret-000' 2>&1 | grep -q '^Target:'"

for s in alice-secret-01 bob-secret-0001 target-secret-02 carol-secret-03 discovery-secret-1 portal-secret-22; do
	check "the secret $s is nowhere in the log" sh -c "! grep -q '$s' '$POOL/ferryd.log'"
done
finish
