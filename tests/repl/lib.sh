# Helpers of the replication integration tests (sourced): two ferryd on
# loopback (pools $T/a and $T/b), the real CLI, a fault-injecting proxy.
. "$(dirname "${BASH_SOURCE[0]}")/../cli/lib.sh"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Short deadlines so that a dead or stalled peer shows within seconds.
export FERRY_REPL_TIMEOUT_MS=${FERRY_REPL_TIMEOUT_MS:-3000}
printf 'repl-test-secret-%s\n' "$RANDOM$RANDOM" >"$T/secret"
chmod 600 "$T/secret"
PROXY_PID=

repl_cleanup() {
	[ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
	cleanup
}
trap repl_cleanup EXIT

fa() { "$FERRY_BIN" --pool "$T/a" "$@"; }
fb() { "$FERRY_BIN" --pool "$T/b" "$@"; }

# site_start NAME [PORT] [SECRET_FILE]: ferryd on $T/NAME listening on
# 127.0.0.1:PORT (0 = a free one); sets PORT_<NAME> to the bound port.
# With FERRY_A_NOLISTEN set, site a runs without --listen (PORT_a=0): it
# reaches its primary by calling back (docs/PROTOCOL.md 11).
# FERRY_SITE_ARGS_<NAME>: more ferryd options for that site (the RBD runs
# put a site's volumes in a Ceph pool there: tests/repl/rbd_run.sh).
site_start() {
	local name=$1 port=${2:-0} secret=${3:-$T/secret} extra=FERRY_SITE_ARGS_$1
	if [ "$name" = a ] && [ -n "${FERRY_A_NOLISTEN:-}" ]; then
		# shellcheck disable=SC2086
		"$FERRYD" --pool "$T/a" --log-level debug --secret-file "$secret" ${!extra:-} ||
			return 1
		PORT_a=0
		return 0
	fi
	# shellcheck disable=SC2086
	"$FERRYD" --pool "$T/$name" --log-level debug --listen "127.0.0.1:$port" \
		--secret-file "$secret" ${!extra:-} || return 1
	local p
	p=$(sed -n 's/.*replication: accepting peers on 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
		"$T/$name/ferryd.log" | tail -n 1)
	[ -n "$p" ] || return 1
	printf -v "PORT_$name" '%s' "$p"
}

site_kill() { kill_daemon "$T/$1"; }
site_stop() { stop_daemon "$T/$1"; }

# json FIELD.PATH < json: prints a field ("null" for null).
json() {
	python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print("null" if v is None else v)' "$1"
}

last_synced() { # last_synced SITEFUNC NAME
	"$1" pair status "$2" --json | json last_synced.snapshot
}

md5_of() { "$1" volume md5 "$2" | cut -d' ' -f1; }

# check_synced NAME [REMOTE]: the last synced snapshot exists on both sides
# with the same md5, the secondary's head equals it (nothing half-applied),
# and the primary's status agrees with the secondary's.
check_synced() {
	local name=$1 remote=${2:-$1} sa sb ma mb mh
	sa=$(last_synced fa "$name")
	sb=$(last_synced fb "$remote")
	if [ -z "$sa" ] || [ "$sa" = null ] || [ "$sa" != "$sb" ]; then
		fail "$name: last synced differs: primary '$sa', secondary '$sb'"
		return 1
	fi
	ma=$(md5_of fa "$name@$sa")
	mb=$(md5_of fb "$remote@$sa")
	mh=$(md5_of fb "$remote")
	if [ -z "$ma" ] || [ "$ma" != "$mb" ] || [ "$mb" != "$mh" ]; then
		fail "$name@$sa: md5 primary $ma, secondary $mb, secondary head $mh"
		return 1
	fi
	pass
}

# Writes LEN random bytes at OFF (bytes) of a volume on a site.
rand_write() { # rand_write SITEFUNC VOL OFF LEN
	head -c "$4" /dev/urandom >"$T/chunk"
	"$1" volume write "$2" "$T/chunk" --offset "$3" >/dev/null
}

# proxy_start TARGET_PORT: the fault proxy in front of it; sets PROXY_PORT.
proxy_start() {
	echo pass >"$T/proxy.ctl"
	rm -f "$T/proxy.port"
	python3 "$HERE/faultproxy.py" "127.0.0.1:$1" "$T/proxy.port" "$T/proxy.ctl" &
	PROXY_PID=$!
	wait_for 10 test -s "$T/proxy.port" || return 1
	PROXY_PORT=$(cat "$T/proxy.port")
}
proxy() { echo "$*" >"$T/proxy.ctl"; }
proxy_up_bytes() { cut -d' ' -f1 "$T/proxy.port.stats"; }

state_of() { "$1" pair status "$2" --json | json state; }

# json_holds SITE NAME PYEXPR: PYEXPR holds for d, the `pair status --json`
# object of pair NAME on site a or b.
json_holds() {
	"$FERRY_BIN" --pool "$T/$1" pair status "$2" --json 2>/dev/null |
		python3 -c "import json,sys; d=json.load(sys.stdin); assert $3" 2>/dev/null
}
# wait_json SITE NAME PYEXPR SECONDS / wait_state SITE NAME STATE SECONDS:
# bounded waits for a condition on the status.
wait_json() { wait_for "$4" json_holds "$1" "$2" "$3"; }
wait_state() { wait_for "$4" json_holds "$1" "$2" "d['state'] == '$3'"; }

# iscsi_site_start NAME: like site_start, plus --iscsi on a free port
# (ISCSI_<NAME>); a real initiator (qemu-io over libiscsi) can then log in.
IQN=iqn.2026-11.io.ferry
iscsi_site_start() {
	local name=$1 port=${2:-0} ip
	ip=${3:-$(free_port)}
	"$FERRYD" --pool "$T/$name" --log-level debug --listen "127.0.0.1:$port" \
		--iscsi "127.0.0.1:$ip" --secret-file "$T/secret" || return 1
	local p
	p=$(sed -n 's/.*replication: accepting peers on 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
		"$T/$name/ferryd.log" | tail -n 1)
	[ -n "$p" ] || return 1
	printf -v "PORT_$name" '%s' "$p"
	printf -v "ISCSI_$name" '%s' "$ip"
}
# qemu_io PORT VOL CMD: one qemu-io command on LUN 0 of VOL's target.
qemu_io() { timeout 60 qemu-io -f raw -c "$3" "iscsi://127.0.0.1:$1/$IQN:$2/0"; }
